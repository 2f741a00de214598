// The HTTP server's inside, shared by its translation units (http_server.cpp: listening,
// connections, drain, routed requests; http_stream_session.cpp: streamed ones). Beast and
// Asio live here and in those two files only.
#pragma once

#include "platform/http_server.hpp"
#include "platform/http_stream.hpp"

#include "platform/http_framing.hpp"

#include "platform/http_upgrade.hpp"
#include "platform/log.hpp"
#include "platform/metrics.hpp"
#include "platform/runtime_asio.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

namespace kiln::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace detail {

constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

// After an error response the client may still be sending (an oversized body): read and
// discard a bounded amount so that closing does not reset the connection before the
// client has read the response.
constexpr std::size_t kLingerBytes = 1 << 20;
constexpr std::chrono::seconds kLingerTime{2};

struct Connection {
  explicit Connection(tcp::socket s) : executor(s.get_executor()), stream(std::move(s)) {}
  asio::any_io_executor executor;  // the connection's strand; outlives a moved-out stream
  beast::tcp_stream stream;
  bool idle = true;       // only touched on the strand
  bool upgraded = false;  // the stream was handed to an upgrade handler; only on the strand
};

inline std::string method_label(std::string_view m) {
  for (const char* known : {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}) {
    if (m == known) return known;
  }
  return "other";
}

// What to answer when reading a request failed; 0 means close without a word.
struct ReadFailure {
  int status = 0;
  const char* reason = "";
};

inline ReadFailure classify(const error_code& ec) {
  if (ec == bhttp::error::header_limit) return {431, "header_too_large"};
  if (ec == bhttp::error::body_limit) return {413, "body_too_large"};
  if (ec == bhttp::error::end_of_stream || ec == bhttp::error::partial_message ||
      ec == asio::error::eof || ec == asio::error::connection_reset ||
      ec == asio::error::operation_aborted) {
    return {0, "closed"};
  }
  if (ec.category() == bhttp::make_error_code(bhttp::error::bad_method).category()) {
    return {400, "malformed"};
  }
  return {0, "io_error"};
}

// Holds a gauge up for as long as it lives.
struct GaugeHold {
  explicit GaugeHold(metrics::Gauge& g) : gauge(g) { gauge.inc(); }
  ~GaugeHold() { gauge.dec(); }
  GaugeHold(const GaugeHold&) = delete;
  GaugeHold& operator=(const GaugeHold&) = delete;
  metrics::Gauge& gauge;
};

inline std::string hyphenated(std::string_view reason) {
  std::string out(reason);
  std::replace(out.begin(), out.end(), '_', '-');
  return out;
}

// A Request from Beast's header section (the body is left to the caller).
inline Request request_of(const bhttp::request<bhttp::string_body>& breq,
                          const std::string& remote) {
  Request req;
  req.method = std::string(breq.method_string());
  req.target = std::string(breq.target());
  auto q = req.target.find('?');
  req.path = req.target.substr(0, q);
  if (q != std::string::npos) req.query = req.target.substr(q + 1);
  for (const auto& f : breq) {
    req.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
  }
  req.remote = remote;
  req.request_id = accept_or_make_request_id(req.header("X-Request-Id"));
  return req;
}

}  // namespace detail

using namespace detail;

struct Server::Impl : std::enable_shared_from_this<Impl> {
  Impl(Runtime& rt, ServerOptions opts, Router r, StreamHandler* s, metrics::Registry& reg)
      : runtime(rt),
        options(std::move(opts)),
        router(std::move(r)),
        stream(s),
        accept_strand(asio::make_strand(rt.impl().io)),
        acceptor(accept_strand),
        requests(reg.counter("kiln_http_requests_total", "HTTP requests answered.",
                             {"route", "method", "status"})),
        duration(reg.histogram("kiln_http_request_duration_seconds",
                               "Time from a request's last byte to its response's last byte.",
                               {"route"}, metrics::latency_buckets())),
        open(s != nullptr
                 ? reg.gauge(s->metrics_prefix() + "_open_connections",
                             "Connections open now on this listener.")
                       .get()
                 : reg.gauge("kiln_http_open_connections", "HTTP connections open now.").get()),
        in_progress(reg.gauge("kiln_http_requests_in_progress",
                              "Requests whose first byte has arrived and whose response is not "
                              "yet sent.")
                        .get()),
        accepted(reg.counter("kiln_http_connections_total", "HTTP connections accepted.").get()),
        rejected(reg.counter("kiln_http_rejected_total",
                             "Requests or connections refused by a limit or malformed.",
                             {"reason"})) {
    if (stream != nullptr) {
      const auto p = stream->metrics_prefix();
      stream_requests = &reg.counter(p + "_requests_total", "Requests, by method and status.",
                                     {"method", "status"});
      bytes_in = &reg.counter(p + "_bytes_received_total", "Body bytes received.").get();
      bytes_out = &reg.counter(p + "_bytes_sent_total", "Body bytes sent.").get();
    }
  }

  Runtime& runtime;
  ServerOptions options;
  Router router;
  StreamHandler* stream;  // every request streamed to it (no router); null: routed
  asio::strand<asio::io_context::executor_type> accept_strand;
  tcp::acceptor acceptor;
  std::uint16_t bound_port = 0;

  std::atomic<bool> draining{false};
  mutable std::mutex mu;
  std::unordered_map<std::uint64_t, std::shared_ptr<Connection>> conns;
  std::uint64_t next_id = 0;
  std::function<void()> on_empty;
  std::vector<std::pair<std::string, UpgradeHandler>> upgrades;

  metrics::Family<metrics::Counter>& requests;
  metrics::Family<metrics::Histogram>& duration;
  metrics::Gauge& open;
  metrics::Gauge& in_progress;
  metrics::Counter& accepted;
  metrics::Family<metrics::Counter>& rejected;
  // A streamed listener's own (`<prefix>_requests_total{method,status}`, bytes both ways).
  metrics::Family<metrics::Counter>* stream_requests = nullptr;
  metrics::Counter* bytes_in = nullptr;
  metrics::Counter* bytes_out = nullptr;

  asio::awaitable<void> accept_loop();
  asio::awaitable<void> session(std::uint64_t id, std::shared_ptr<Connection> c);
  // A streamed listener's connection (http_stream_session.cpp).
  asio::awaitable<void> stream_session(std::shared_ptr<Connection> c);
  asio::awaitable<bool> send_answer(Connection& c, StreamAnswer a, const Request& head,
                                    bool keep_alive);
  asio::awaitable<void> linger(Connection& c, beast::flat_buffer& buffer);
  asio::awaitable<void> refuse(tcp::socket socket);
  asio::awaitable<void> answer_and_linger(Connection& c, beast::flat_buffer& buffer, int status,
                                          std::string_view reason);
  // Sends `resp` with `Connection: close`, then reads and discards what the client still
  // sends for a bounded time (so that a close does not reset the answer away).
  asio::awaitable<void> close_with(Connection& c, beast::flat_buffer& buffer, Response resp,
                                   const std::string& route, const std::string& method);
  Response dispatch(const Request& req, std::string& route);
  // The answer the header section alone decides for a request whose body is still to come
  // (no route; the router's header check), with its route label; nullopt: read the body.
  std::optional<std::pair<Response, std::string>> decide_from_header(
      const bhttp::request<bhttp::string_body>& breq, const std::string& remote);
  asio::awaitable<Response> call_async(const AsyncHandler& handler, const Request& req);
  void forget(std::uint64_t id);
};

}  // namespace kiln::http
