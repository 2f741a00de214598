// The WebSocket transport: the one translation unit that instantiates Beast's websocket
// stream. Sessions (the collaboration session, later the terminal) live behind
// WebSocketHandler and never see it.
#include "platform/websocket.hpp"
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
#include <boost/beast/http/write.hpp>
#include <boost/beast/websocket.hpp>

#include <deque>
#include <mutex>

namespace kiln::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace websocket = beast::websocket;

namespace {

constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);
// Reads grow the buffer 4 KiB at a time, and a buffer grown by a large message is given
// back afterwards: an idle connection must cost little memory (10,000 per node).
constexpr std::size_t kReadChunk = 4 * 1024;
constexpr std::size_t kKeepBuffer = 16 * 1024;

bool offers_subprotocol(std::string_view header, std::string_view wanted) {
  while (!header.empty()) {
    auto comma = header.find(',');
    auto token = header.substr(0, comma);
    while (!token.empty() && (token.front() == ' ' || token.front() == '\t'))
      token.remove_prefix(1);
    while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) token.remove_suffix(1);
    if (token == wanted) return true;
    if (comma == std::string_view::npos) break;
    header.remove_prefix(comma + 1);
  }
  return false;
}

Request head_of(const Upgrade& up) {
  Request req;
  req.method = std::string(up.request.method_string());
  req.target = std::string(up.request.target());
  const auto q = req.target.find('?');
  req.path = req.target.substr(0, q);
  if (q != std::string::npos) req.query = req.target.substr(q + 1);
  for (const auto& f : up.request)
    req.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
  req.remote = up.remote;
  req.request_id = up.request_id;
  return req;
}

class Connection final : public WebSocket, public std::enable_shared_from_this<Connection> {
 public:
  Connection(std::shared_ptr<const WebSocketOptions> options,
             std::shared_ptr<WebSocketHandler> handler, beast::tcp_stream stream,
             std::string remote)
      : options_(std::move(options)),
        o_(*options_),
        handler_(std::move(handler)),
        ws_(std::move(stream)),
        timer_(ws_.get_executor()),
        cut_timer_(ws_.get_executor()),
        remote_(std::move(remote)) {}

  asio::awaitable<void> run(Upgrade& up);
  asio::awaitable<void> run_client(WebSocketTarget target);

  void send(std::shared_ptr<const std::string> message) override {
    std::lock_guard lock(mu_);
    if (dead_ || close_) return;
    const bool first = queue_.empty() && in_flight_ == 0;
    queued_bytes_ += message->size();
    if (queued_bytes_ > o_.max_queue_bytes && !first) {
      // A consumer that cannot keep up is closed, never allowed to grow memory.
      queue_.clear();
      queued_bytes_ = 0;
      if (o_.metrics.limit_trips) o_.metrics.limit_trips->with({"queue_bytes"}).inc();
      close_.emplace(o_.slow_consumer_code, "slow consumer");
      // Its close frame waits behind a write the peer does not read: past a grace period
      // the TCP connection is cut (the peer sees it end without a close frame).
      asio::post(ws_.get_executor(), [self = shared_from_this()] {
        if (self->ended_) return;
        self->cut_timer_.expires_after(self->o_.slow_consumer_grace);
        self->cut_timer_.async_wait([self](const beast::error_code& ec) {
          if (!ec && !self->ended_) beast::get_lowest_layer(self->ws_).close();
        });
      });
    } else {
      queue_.push_back(std::move(message));
    }
    wake_locked();
  }

  void close(std::uint16_t code, std::string reason, bool drop_queued) override {
    std::lock_guard lock(mu_);
    if (dead_ || close_) return;
    if (drop_queued) {
      queue_.clear();
      queued_bytes_ = 0;
    }
    close_.emplace(code, std::move(reason));
    wake_locked();
  }

  void post(std::function<void()> fn) override {
    asio::post(ws_.get_executor(), [self = shared_from_this(), fn = std::move(fn)] { fn(); });
  }

  void after(std::chrono::milliseconds delay, std::function<void()> fn) override {
    asio::post(ws_.get_executor(), [self = shared_from_this(), delay, fn = std::move(fn)] {
      if (self->ended_) return;
      self->timer_.expires_after(delay);
      self->timer_.async_wait([self, fn](const beast::error_code& ec) {
        if (!ec && !self->ended_) fn();
      });
    });
  }

  const std::string& remote() const override { return remote_; }

 private:
  // Starts the write chain if it is not running (mu_ held).
  void wake_locked() {
    if (writing_ || !started_) return;
    writing_ = true;
    asio::post(ws_.get_executor(), [self = shared_from_this()] { self->write_next(); });
  }

  asio::awaitable<void> reject(bhttp::status status, std::string_view detail);
  void set_timeouts(beast::role_type role);
  // After the handshake: reads until the connection ends, then tells the handler how.
  asio::awaitable<void> serve();
  void write_next();
  asio::awaitable<beast::error_code> read_loop();

  std::shared_ptr<const WebSocketOptions> options_;  // the endpoint's, shared
  const WebSocketOptions& o_;
  std::shared_ptr<WebSocketHandler> handler_;
  websocket::stream<beast::tcp_stream> ws_;
  asio::steady_timer timer_;
  asio::steady_timer cut_timer_;  // a slow consumer's connection is cut when it fires
  std::string remote_;
  bool ended_ = false;            // strand only: the read loop is over
  std::string handshake_failed_;  // strand only: why there was no connection

  std::mutex mu_;
  std::deque<std::shared_ptr<const std::string>> queue_;
  std::size_t queued_bytes_ = 0;
  std::size_t in_flight_ = 0;  // the message being written (under mu_)
  bool started_ = false;       // the handshake is done: messages may be written
  bool writing_ = false;       // a write chain is running
  bool close_sent_ = false;
  bool dead_ = false;
  std::optional<std::pair<std::uint16_t, std::string>> close_;
};

asio::awaitable<void> Connection::reject(bhttp::status status, std::string_view detail) {
  bhttp::response<bhttp::string_body> res{status, 11};
  res.set(bhttp::field::content_type, "application/problem+json");
  res.set(bhttp::field::connection, "close");
  // The same problem shape as every other refusal (RFC 9457, with a title).
  res.body() =
      Response::problem(static_cast<int>(status), "https://kiln.dev/problems/websocket", "", detail)
          .body;
  res.prepare_payload();
  auto& stream = ws_.next_layer();
  stream.expires_after(std::chrono::seconds(5));
  co_await bhttp::async_write(stream, res, nothrow);
  beast::error_code ignored;
  stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
}

asio::awaitable<void> Connection::run(Upgrade& up) {
  if (!o_.subprotocol.empty() &&
      !offers_subprotocol(up.request[bhttp::field::sec_websocket_protocol], o_.subprotocol)) {
    co_await reject(bhttp::status::bad_request,
                    "the WebSocket subprotocol " + o_.subprotocol + " is required");
    co_return;
  }
  if (auto refused = handler_->admit(head_of(up))) {
    co_await reject(static_cast<bhttp::status>(refused->status), refused->detail);
    co_return;
  }
  // A loop that stops before this connection ended destroys this coroutine unfinished: the
  // handler goes then too, or the cycle handler -> WebSocket -> handler outlives the loop.
  // on_closed is not called on that path: what it would touch may be gone already.
  struct DropHandler {
    std::shared_ptr<WebSocketHandler>& handler;
    ~DropHandler() { handler.reset(); }
  } drop{handler_};
  set_timeouts(beast::role_type::server);
  ws_.set_option(websocket::stream_base::decorator([p = o_.subprotocol](auto& res) {
    res.set(bhttp::field::server, "kiln");
    if (!p.empty()) res.set(bhttp::field::sec_websocket_protocol, p);
  }));
  auto [ec] = co_await ws_.async_accept(up.request, nothrow);
  if (ec) handshake_failed_ = "handshake failed: " + ec.message();
  co_await serve();
}

void Connection::set_timeouts(beast::role_type role) {
  ws_.next_layer().expires_never();  // the websocket stream keeps its own timeouts
  auto timeouts = websocket::stream_base::timeout::suggested(role);
  timeouts.handshake_timeout = o_.handshake_timeout;
  if (o_.idle_timeout.count() > 0) {
    timeouts.idle_timeout = o_.idle_timeout;  // pings at half of it: a silent peer is dropped
    timeouts.keep_alive_pings = true;
  } else {
    timeouts.idle_timeout = websocket::stream_base::none();
  }
  ws_.set_option(timeouts);
  // The message size is enforced in read_loop with the endpoint's close code; Beast's own
  // limit (which closes with 1009 and reads no further) is turned off.
  ws_.read_message_max(0);
  ws_.auto_fragment(false);
}

asio::awaitable<void> Connection::serve() {
  std::uint16_t code = 1006;
  std::string why = handshake_failed_;
  if (handshake_failed_.empty()) {
    {
      std::lock_guard lock(mu_);
      started_ = true;
      wake_locked();
    }
    handler_->on_open(shared_from_this());
    const auto ec = co_await read_loop();
    if (ec == websocket::error::closed) {
      code = static_cast<std::uint16_t>(ws_.reason().code);
      why = std::string(ws_.reason().reason.data(), ws_.reason().reason.size());
    } else {
      why = ec.message();
    }
  }
  ended_ = true;
  timer_.cancel();
  cut_timer_.cancel();
  bool we_closed = false;
  {
    std::lock_guard lock(mu_);
    dead_ = true;
    queue_.clear();
    queued_bytes_ = 0;
    we_closed = close_sent_;
  }
  if (!we_closed) handler_->on_peer_closed(code, why);
  handler_->on_closed();
  handler_.reset();
}

asio::awaitable<void> Connection::run_client(WebSocketTarget target) {
  struct DropHandler {
    std::shared_ptr<WebSocketHandler>& handler;
    ~DropHandler() { handler.reset(); }
  } drop{handler_};
  auto& tcp = beast::get_lowest_layer(ws_);
  tcp.expires_after(target.connect_timeout);
  asio::ip::tcp::resolver resolver(ws_.get_executor());
  auto [rec, results] =
      co_await resolver.async_resolve(target.host, std::to_string(target.port), nothrow);
  if (rec) {
    handshake_failed_ = "cannot resolve " + target.host + ": " + rec.message();
  } else if (auto [cec, ep] = co_await tcp.async_connect(results, nothrow); cec) {
    handshake_failed_ = "cannot connect to " + target.host + ":" + std::to_string(target.port) +
                        ": " + cec.message();
  } else {
    remote_ = ep.address().to_string() + ":" + std::to_string(ep.port());
    ws_.set_option(websocket::stream_base::decorator(
        [p = o_.subprotocol, h = target.headers](websocket::request_type& req) {
          req.set(bhttp::field::user_agent, "kiln");
          if (!p.empty()) req.set(bhttp::field::sec_websocket_protocol, p);
          for (const auto& [name, value] : h) req.set(name, value);
        }));
    websocket::response_type res;
    tcp.expires_after(target.connect_timeout);
    auto [hec] = co_await ws_.async_handshake(res, target.host + ":" + std::to_string(target.port),
                                              target.path, nothrow);
    if (hec == websocket::error::upgrade_declined) {
      handshake_failed_ =
          "refused: HTTP " + std::to_string(res.result_int()) + " " + res.body().substr(0, 200);
    } else if (hec) {
      handshake_failed_ = "handshake failed: " + hec.message();
    } else if (!o_.subprotocol.empty() &&
               res[bhttp::field::sec_websocket_protocol] != o_.subprotocol) {
      handshake_failed_ = "the server did not speak " + o_.subprotocol;
    }
    if (handshake_failed_.empty()) set_timeouts(beast::role_type::client);
  }
  co_await serve();
}

asio::awaitable<beast::error_code> Connection::read_loop() {
  beast::flat_buffer buf;
  const std::size_t max = o_.max_message_bytes;
  bool discarding = false;  // after a close request: read only to finish the handshake
  for (;;) {
    buf.clear();
    if (buf.capacity() > kKeepBuffer) buf.shrink_to_fit();
    std::size_t total = 0;
    for (;;) {
      auto [ec, n] = co_await ws_.async_read_some(buf, kReadChunk, nothrow);
      if (ec) co_return ec;  // closed, reset, or timed out
      total += n;
      if (discarding || total > max) {
        buf.clear();  // flat memory whatever the peer sends
        if (!discarding) {
          if (o_.metrics.limit_trips) o_.metrics.limit_trips->with({"frame_bytes"}).inc();
          close(o_.too_large_code, "message larger than " + std::to_string(max) + " bytes", false);
          discarding = true;
        }
      }
      if (ws_.is_message_done()) break;
    }
    if (discarding) continue;
    {
      std::lock_guard lock(mu_);
      if (close_) discarding = true;
    }
    if (discarding) continue;
    const auto data = buf.cdata();
    handler_->on_message(std::string_view(static_cast<const char*>(data.data()), data.size()),
                         ws_.got_binary());
  }
}

// The write path is a plain callback chain, not a coroutine: at tens of thousands of
// messages per second the coroutine and timer machinery per message cost more than the
// write. Runs on the connection's strand; `writing_` (under mu_) says a chain is running.
void Connection::write_next() {
  std::shared_ptr<const std::string> message;
  std::optional<std::pair<std::uint16_t, std::string>> closing;
  {
    std::lock_guard lock(mu_);
    if (dead_) {
      writing_ = false;
      return;
    }
    in_flight_ = 0;  // the previous write, if any, is done
    if (!queue_.empty()) {
      message = std::move(queue_.front());
      queue_.pop_front();
      queued_bytes_ -= message->size();
      in_flight_ = message->size();
    } else if (close_ && !close_sent_) {
      closing = close_;
      close_sent_ = true;
    } else {
      writing_ = false;
      return;
    }
  }
  auto self = shared_from_this();
  if (closing) {
    if (o_.metrics.closes) o_.metrics.closes->with({std::to_string(closing->first)}).inc();
    std::string reason = closing->second.substr(0, 120);  // a close reason fits 123 bytes
    ws_.async_close(
        websocket::close_reason(static_cast<websocket::close_code>(closing->first), reason),
        [self](const beast::error_code&) {
          std::lock_guard lock(self->mu_);
          self->writing_ = false;
        });
    return;
  }
  ws_.text(true);
  ws_.async_write(asio::buffer(*message),
                  [self, message](const beast::error_code& ec, std::size_t) {
                    if (ec) {
                      std::lock_guard lock(self->mu_);
                      self->dead_ = true;
                      self->writing_ = false;
                      return;
                    }
                    if (self->o_.metrics.messages_out) self->o_.metrics.messages_out->inc();
                    self->write_next();
                  });
}

}  // namespace

void websocket_connect(Runtime& runtime, WebSocketOptions options, WebSocketTarget target,
                       std::shared_ptr<WebSocketHandler> handler) {
  auto shared = std::make_shared<const WebSocketOptions>(std::move(options));
  auto executor = asio::make_strand(runtime.impl().io);
  auto conn = std::make_shared<Connection>(shared, std::move(handler), beast::tcp_stream(executor),
                                           target.host + ":" + std::to_string(target.port));
  asio::co_spawn(
      executor,
      [conn, target = std::move(target)]() mutable -> asio::awaitable<void> {
        co_await conn->run_client(std::move(target));
      },
      [conn](std::exception_ptr e) { log::exception(e, "websocket client failed"); });
}

UpgradeHandler websocket_endpoint(WebSocketOptions options,
                                  std::function<std::shared_ptr<WebSocketHandler>()> make) {
  auto shared = std::make_shared<const WebSocketOptions>(std::move(options));
  return [shared, make = std::move(make)](std::unique_ptr<Upgrade> up) {
    auto executor = up->stream.get_executor();
    auto conn = std::make_shared<Connection>(shared, make(), std::move(up->stream), up->remote);
    // The upgrade (its request) lives as long as the coroutine.
    auto owned = std::shared_ptr<Upgrade>(std::move(up));
    asio::co_spawn(
        executor, [conn, owned]() -> asio::awaitable<void> { co_await conn->run(*owned); },
        [conn](std::exception_ptr e) { log::exception(e, "websocket session failed"); });
  };
}

}  // namespace kiln::http
