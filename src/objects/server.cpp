// The one translation unit of the object store that instantiates Beast.
#include "objects/server.hpp"

#include "platform/http_framing.hpp"

#include "platform/ids.hpp"
#include "platform/log.hpp"
#include "platform/metrics.hpp"
#include "platform/runtime_asio.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include <atomic>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

namespace kiln::objects {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kChunk = 64 * 1024;

std::string method_label(std::string_view m) {
  for (const char* known : {"GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"}) {
    if (m == known) return known;
  }
  return "other";
}

}  // namespace

struct Server::Impl : std::enable_shared_from_this<Server::Impl> {
  Impl(Runtime& rt, S3Api& a, ServerOptions o, metrics::Registry& reg)
      : runtime(rt),
        api(a),
        options(std::move(o)),
        acceptor(rt.impl().io),
        requests(reg.counter("kiln_objects_requests_total",
                             "Object store requests, by method and status.", {"method", "status"})),
        bytes_in(reg.counter("kiln_objects_bytes_received_total", "Body bytes received.").get()),
        bytes_out(reg.counter("kiln_objects_bytes_sent_total", "Body bytes sent.").get()),
        open(reg.gauge("kiln_objects_open_connections", "Object store connections open now.")
                 .get()) {}

  Runtime& runtime;
  S3Api& api;
  ServerOptions options;
  tcp::acceptor acceptor;
  metrics::Family<metrics::Counter>& requests;
  metrics::Counter& bytes_in;
  metrics::Counter& bytes_out;
  metrics::Gauge& open;
  std::uint16_t bound_port = 0;

  std::mutex mu;
  std::unordered_map<std::uint64_t, std::shared_ptr<beast::tcp_stream>> conns;
  std::unordered_set<beast::tcp_stream*> idle;  // waiting for a request: a drain closes them
  std::uint64_t next_id = 0;
  std::atomic<bool> draining{false};
  std::function<void()> on_empty;

  void forget(std::uint64_t id) {
    std::function<void()> done;
    {
      std::lock_guard lock(mu);
      conns.erase(id);
      if (draining && conns.empty() && on_empty) done = std::exchange(on_empty, {});
    }
    open.dec();
    if (done) asio::post(runtime.impl().io, std::move(done));
  }

  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, socket] =
          co_await acceptor.async_accept(asio::make_strand(runtime.impl().io), nothrow);
      if (ec || draining) co_return;
      socket.set_option(tcp::no_delay(true), ec);
      std::uint64_t id = 0;
      auto stream = std::make_shared<beast::tcp_stream>(std::move(socket));
      {
        std::lock_guard lock(mu);
        if (conns.size() >= options.max_connections) {
          stream->close();
          continue;
        }
        id = ++next_id;
        conns.emplace(id, stream);
      }
      open.inc();
      auto self = shared_from_this();
      asio::co_spawn(stream->get_executor(), session(stream), [self, id](std::exception_ptr e) {
        if (e) {
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& ex) {
            log::error("object store session failed", {{"error", ex.what()}});
          }
        }
        self->forget(id);
      });
    }
  }

  // Writes a response: headers, then the XML body or the file range, streamed.
  asio::awaitable<bool> respond(beast::tcp_stream& stream, S3Response r, bool head, bool keep_alive,
                                const std::string& request_id) {
    // An error document names the request, as the x-amz-request-id header does (S3).
    if (r.status >= 300 && r.body.ends_with("</Error>"))
      r.body.insert(r.body.size() - 8, "<RequestId>" + request_id + "</RequestId>");
    const bool from_file = !r.file.empty() && !r.head_only && !head;
    bhttp::response<bhttp::buffer_body> res{static_cast<bhttp::status>(r.status), 11};
    res.set(bhttp::field::server, "kiln");
    res.set("x-amz-request-id", request_id);
    for (const auto& [k, v] : r.headers) {
      // Never a header line the value could split (RFC 9110 section 5.5); the sources
      // validate what they echo, this is the last guard.
      if (v.find_first_of("\r\n") != std::string::npos) {
        log::error("object store: dropped a response header with CR or LF",
                   {{"request_id", request_id}, {"header", k}});
        continue;
      }
      res.set(k, v);
    }
    res.keep_alive(keep_alive);
    int fd = -1;
    if (!r.file.empty()) {
      res.content_length(r.length);
      if (from_file) {
        // The descriptor the lookup opened (the object it named, whatever happened since).
        fd = r.data ? ::dup(r.data->fd()) : ::open(r.file.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
          // Deleted between the lookup and now.
          auto e = api.error(404, "NoSuchKey", "The specified key does not exist.", "");
          co_return co_await respond(stream, e, head, keep_alive, request_id);
        }
      }
    } else {
      res.content_length(head ? 0 : r.body.size());
      if (head && r.head_only) res.content_length(0);
    }
    res.body().data = nullptr;
    res.body().more = from_file || (!head && !r.body.empty());
    bhttp::response_serializer<bhttp::buffer_body> sr{res};
    stream.expires_after(options.io_timeout);
    auto [hec, hn] = co_await bhttp::async_write_header(stream, sr, nothrow);
    if (hec) {
      if (fd >= 0) ::close(fd);
      co_return false;
    }
    auto send = [&](const char* data, std::size_t size, bool more) -> asio::awaitable<bool> {
      res.body().data = const_cast<char*>(data);
      res.body().size = size;
      res.body().more = more;
      stream.expires_after(options.io_timeout);
      auto [ec, n] = co_await bhttp::async_write(stream, sr, nothrow);
      if (ec == bhttp::error::need_buffer) ec = {};
      bytes_out.inc(size);
      co_return !ec;
    };
    bool ok = true;
    if (from_file) {
      std::string buf(kChunk, '\0');
      std::uint64_t offset = r.offset, left = r.length;
      while (ok && left > 0) {
        const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(left, kChunk));
        const ssize_t n = ::pread(fd, buf.data(), want, static_cast<off_t>(offset));
        if (n <= 0) {
          ok = false;  // the length was promised: cut the connection
          break;
        }
        offset += static_cast<std::uint64_t>(n);
        left -= static_cast<std::uint64_t>(n);
        ok = co_await send(buf.data(), static_cast<std::size_t>(n), left > 0);
      }
      ::close(fd);
      if (ok && left == 0 && !sr.is_done()) ok = co_await send(nullptr, 0, false);
    } else if (!head && !r.body.empty()) {
      ok = co_await send(r.body.data(), r.body.size(), false);
    }
    co_return ok;
  }

  // After an answer to a request whose bytes were not all read: stop sending, then read and
  // discard a bounded amount, so that closing does not reset the connection (and destroy
  // the answer) before the client has read it.
  asio::awaitable<void> linger(beast::tcp_stream& stream, beast::flat_buffer& buffer) {
    error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
    std::size_t discarded = 0;
    stream.expires_after(std::chrono::seconds(2));
    while (discarded < (8u << 20)) {
      buffer.clear();
      auto [rec, n] = co_await stream.async_read_some(buffer.prepare(kChunk), nothrow);
      if (rec) break;
      discarded += n;
    }
  }

  asio::awaitable<void> session(std::shared_ptr<beast::tcp_stream> stream_ptr) {
    auto& stream = *stream_ptr;
    beast::flat_buffer buffer;
    for (;;) {
      bhttp::request_parser<bhttp::buffer_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(options.max_header_bytes));
      parser.body_limit(boost::none);  // the store's limits apply, chunk by chunk
      stream.expires_after(options.idle_timeout);
      {
        std::lock_guard lock(mu);
        if (draining && buffer.size() == 0) break;
        idle.insert(&stream);
      }
      auto [hec, hn] = co_await bhttp::async_read_header(stream, buffer, parser, nothrow);
      {
        std::lock_guard lock(mu);
        idle.erase(&stream);
      }
      // A header section too large or malformed (not a client that went away): say so, as S3
      // does, then close.
      const bool refused_head =
          hec.category() == bhttp::make_error_code(bhttp::error::bad_method).category() &&
          hec != bhttp::error::end_of_stream && hec != bhttp::error::partial_message;
      if (refused_head) {
        const bool big = hec == bhttp::error::header_limit;
        auto e =
            big ? api.error(400, "RequestHeaderSectionTooLarge",
                            "Your request header section exceeds the maximum allowed size.", "")
                : api.error(400, "BadRequest", "The request could not be parsed.", "");
        requests.with({"other", "400"}).inc();
        if (co_await respond(stream, e, false, false, ids::random_hex(8)))
          co_await linger(stream, buffer);
        break;
      }
      if (hec) break;
      auto& req = parser.get();
      {
        // Unambiguous framing before any body byte is read (RFC 9112 section 6).
        std::vector<std::pair<std::string_view, std::string_view>> fields;
        for (const auto& f : req) fields.emplace_back(f.name_string(), f.value());
        if (auto bad = http::framing_error(fields)) {
          auto e = api.error(bad->status, bad->status == 501 ? "NotImplemented" : "BadRequest",
                             "The request's framing is refused: " + bad->reason + ".", "");
          requests.with({"other", std::to_string(bad->status)}).inc();
          if (co_await respond(stream, e, false, false, ids::random_hex(8)))
            co_await linger(stream, buffer);
          break;
        }
      }
      const std::string request_id = ids::random_hex(8);
      S3Request sr;
      sr.method = std::string(req.method_string());
      const std::string_view target = req.target();
      const auto qpos = target.find('?');
      sr.path = std::string(target.substr(0, qpos));
      if (qpos != std::string_view::npos) sr.query = std::string(target.substr(qpos + 1));
      for (const auto& f : req)
        sr.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
      sr.now_unix = std::chrono::duration_cast<std::chrono::seconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
      const bool head = sr.method == "HEAD";
      bool keep_alive = req.keep_alive() && !draining;
      auto begun = api.begin(sr);
      S3Response resp;
      bool body_left = !parser.is_done();
      if (auto* sink = std::get_if<std::unique_ptr<BodySink>>(&begun)) {
        if (req[bhttp::field::expect] == "100-continue") {
          bhttp::response<bhttp::empty_body> cont{bhttp::status::continue_, 11};
          auto [cec, cn] = co_await bhttp::async_write(stream, cont, nothrow);
          if (cec) break;
        }
        std::string buf(kChunk, '\0');
        // Beast reads at most the buffer's free capacity (at least 512 bytes) per call:
        // without room for a whole chunk, a body arrives in ~1 KiB reads, each a syscall,
        // an epoll round and a timer reset (a single PUT ran at a third of the speed).
        buffer.reserve(kChunk);
        bool failed_io = false;
        try {
          while (!parser.is_done()) {
            req.body().data = buf.data();
            req.body().size = buf.size();
            stream.expires_after(options.io_timeout);
            auto [ec, n] = co_await bhttp::async_read(stream, buffer, parser, nothrow);
            if (ec == bhttp::error::need_buffer) ec = {};
            if (ec) {
              failed_io = true;  // the client went away: nothing is published
              break;
            }
            const auto got = buf.size() - req.body().size;
            bytes_in.inc(got);
            (*sink)->write(std::string_view(buf.data(), got));
          }
          if (failed_io) break;
          resp = (*sink)->finish();
        } catch (const Error& e) {
          resp = api.error(e.status(), e.code(), e.what(), sr.path);
          keep_alive = keep_alive && parser.is_done();  // unread body: close after answering
        } catch (const std::exception& e) {
          log::error("object store request failed",
                     {{"request_id", request_id}, {"error", e.what()}});
          resp = api.error(500, "InternalError",
                           "We encountered an internal error. Please try again.", sr.path);
          keep_alive = false;
        }
        body_left = !parser.is_done();
      } else {
        resp = std::get<S3Response>(std::move(begun));
        // A body nobody wants (an error before the upload): do not read it, close after.
        if (body_left) keep_alive = false;
      }
      api.add_cors(sr, resp);
      requests.with({method_label(sr.method), std::to_string(resp.status)}).inc();
      const bool ok = co_await respond(stream, resp, head, keep_alive, request_id);
      // The client may still be sending the body we refused.
      if (ok && body_left) co_await linger(stream, buffer);
      if (!ok || !keep_alive || body_left) break;
    }
    error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream.close();
  }
};

Server::Server(Runtime& runtime, S3Api& api, ServerOptions options, metrics::Registry& registry)
    : impl_(std::make_shared<Impl>(runtime, api, std::move(options), registry)) {}

Server::~Server() {
  close_all();
}

void Server::start() {
  auto& a = impl_->acceptor;
  tcp::endpoint ep{asio::ip::make_address(impl_->options.host), impl_->options.port};
  a.open(ep.protocol());
  a.set_option(tcp::acceptor::reuse_address(true));
  error_code ec;
  a.bind(ep, ec);
  if (ec) {
    throw std::runtime_error("cannot listen on " + impl_->options.host + ":" +
                             std::to_string(impl_->options.port) + ": " + ec.message());
  }
  a.listen(asio::socket_base::max_listen_connections);
  impl_->bound_port = a.local_endpoint().port();
  auto self = impl_;
  asio::co_spawn(a.get_executor(), self->accept_loop(), [self](std::exception_ptr) {});
}

std::uint16_t Server::port() const {
  return impl_->bound_port;
}

void Server::drain(std::function<void()> on_empty) {
  auto self = impl_;
  asio::post(self->acceptor.get_executor(), [self] {
    error_code ignored;
    self->acceptor.close(ignored);
  });
  std::lock_guard lock(self->mu);
  self->draining = true;
  self->on_empty = std::move(on_empty);
  if (self->conns.empty()) asio::post(self->runtime.impl().io, std::exchange(self->on_empty, {}));
  // Idle keep-alive connections close now; busy ones finish their request first.
  for (auto& [id, s] : self->conns) {
    if (self->idle.contains(s.get())) asio::post(s->get_executor(), [s] { s->cancel(); });
  }
}

void Server::close_all() {
  std::vector<std::shared_ptr<beast::tcp_stream>> all;
  {
    std::lock_guard lock(impl_->mu);
    for (auto& [id, s] : impl_->conns) all.push_back(s);
  }
  for (auto& s : all) {
    asio::post(s->get_executor(), [s] { s->close(); });
  }
}

}  // namespace kiln::objects
