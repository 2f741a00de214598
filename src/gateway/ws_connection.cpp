// The WebSocket transport: the one translation unit of the gateway that instantiates
// Beast's websocket stream. Protocol logic lives in Session (sans-io).
#include "gateway/gateway_impl.hpp"
#include "platform/http.hpp"
#include "platform/http_upgrade.hpp"
#include "platform/ids.hpp"
#include "platform/log.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/websocket.hpp>

#include <deque>
#include <optional>

namespace kiln::gateway {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace websocket = beast::websocket;
using collab::Close;

namespace {

constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);
// Reads grow the buffer 4 KiB at a time, and a buffer grown by a large frame is given back
// afterwards: an idle connection must cost little memory (10,000 per node).
constexpr std::size_t kReadChunk = 4 * 1024;
constexpr std::size_t kKeepBuffer = 16 * 1024;

bool offers_subprotocol(std::string_view header) {
  while (!header.empty()) {
    auto comma = header.find(',');
    auto token = header.substr(0, comma);
    while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
    while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
    if (token == collab::kSubprotocol) return true;
    if (comma == std::string_view::npos) break;
    header.remove_prefix(comma + 1);
  }
  return false;
}

void log_failure(std::exception_ptr e, const char* what) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    log::error(what, {{"error", ex.what()}});
  }
}

class WsConnection final : public Transport,
                           public Connection,
                           public std::enable_shared_from_this<WsConnection> {
 public:
  WsConnection(std::shared_ptr<Gateway::Impl> gw, beast::tcp_stream stream, std::string remote)
      : gw_(std::move(gw)),
        ws_(std::move(stream)),
        hello_timer_(ws_.get_executor()),
        remote_(std::move(remote)) {}

  asio::awaitable<void> run(bhttp::request<bhttp::string_body> req);

  void send(std::shared_ptr<const std::string> frame) override {
    std::lock_guard lock(mu_);
    if (dead_ || close_) return;
    // The limit bounds what piles up unsent; one frame larger than it (a big scene's
    // `joined`) still goes when nothing is waiting.
    const bool first = queue_.empty() && in_flight_ == 0;
    queued_bytes_ += frame->size();
    if (queued_bytes_ > gw_->options.max_queue_bytes && !first) {
      // A consumer that cannot keep up is closed, never allowed to grow memory.
      queue_.clear();
      queued_bytes_ = 0;
      gw_->limit_trips.with({"queue_bytes"}).inc();
      close_.emplace(Close::SlowConsumer, "slow consumer");
    } else {
      queue_.push_back(std::move(frame));
    }
    wake_locked();
  }

  void close(Close code, std::string reason) override {
    std::lock_guard lock(mu_);
    if (dead_ || close_) return;
    if (code == Close::SlowConsumer) {
      queue_.clear();
      queued_bytes_ = 0;
    }
    close_.emplace(code, std::move(reason));
    wake_locked();
  }

  void drain_close(std::int64_t after_ms) override {
    send(std::make_shared<const std::string>(collab::encode::reconnect(after_ms)));
    close(Close::Restarting, "restarting");
  }

  void run(std::function<void()> fn) override {
    asio::post(ws_.get_executor(), [self = shared_from_this(), fn = std::move(fn)] { fn(); });
  }

  void with_session(std::function<void(Session&)> fn) override {
    asio::post(ws_.get_executor(), [self = shared_from_this(), fn = std::move(fn)] {
      if (self->session_) fn(*self->session_);
    });
  }
  std::shared_ptr<Session> session() override {
    std::lock_guard lock(mu_);
    return published_session_;
  }

 private:
  // Starts the write chain if it is not running (mu_ held).
  void wake_locked() {
    if (writing_ || !started_) return;
    writing_ = true;
    asio::post(ws_.get_executor(), [self = shared_from_this()] { self->write_next(); });
  }

  asio::awaitable<void> reject(bhttp::status status, std::string_view detail);
  void write_next();
  asio::awaitable<void> read_loop();

  std::shared_ptr<Gateway::Impl> gw_;
  websocket::stream<beast::tcp_stream> ws_;
  asio::steady_timer hello_timer_;
  std::string remote_;
  std::shared_ptr<Session> session_;
  std::shared_ptr<Session> published_session_;  // session_ for other threads (mu_)

  std::mutex mu_;
  std::deque<std::shared_ptr<const std::string>> queue_;
  std::size_t queued_bytes_ = 0;
  std::size_t in_flight_ = 0;  // the frame being written (under mu_)
  bool started_ = false;       // the handshake is done: frames may be written
  bool writing_ = false;       // a write chain is running
  bool close_sent_ = false;
  bool dead_ = false;
  std::optional<std::pair<Close, std::string>> close_;
};

asio::awaitable<void> WsConnection::reject(bhttp::status status, std::string_view detail) {
  bhttp::response<bhttp::string_body> res{status, 11};
  res.set(bhttp::field::content_type, "application/problem+json");
  res.set(bhttp::field::connection, "close");
  // The same problem shape as every other refusal (RFC 9457, with a title).
  res.body() = http::Response::problem(static_cast<int>(status),
                                       "https://kiln.dev/problems/websocket", "", detail)
                   .body;
  res.prepare_payload();
  auto& stream = ws_.next_layer();
  stream.expires_after(std::chrono::seconds(5));
  co_await bhttp::async_write(stream, res, nothrow);
  beast::error_code ignored;
  stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
}

asio::awaitable<void> WsConnection::run(bhttp::request<bhttp::string_body> req) {
  if (!offers_subprotocol(req[bhttp::field::sec_websocket_protocol])) {
    co_await reject(bhttp::status::bad_request, "the WebSocket subprotocol kiln.v1 is required");
    co_return;
  }
  if (!gw_->add(this, weak_from_this())) {
    gw_->limit_trips.with({"sessions"}).inc();
    co_await reject(bhttp::status::service_unavailable, "the gateway is full or restarting");
    co_return;
  }
  const auto heartbeat = gw_->options.heartbeat;
  ws_.next_layer().expires_never();  // the websocket stream keeps its own timeouts
  websocket::stream_base::timeout timeouts;
  timeouts.handshake_timeout = std::chrono::seconds(10);
  timeouts.idle_timeout = heartbeat * 2;  // pings at half of it: a silent peer is dropped
  timeouts.keep_alive_pings = true;
  ws_.set_option(timeouts);
  ws_.set_option(websocket::stream_base::decorator([](websocket::response_type& res) {
    res.set(bhttp::field::server, "kiln");
    res.set(bhttp::field::sec_websocket_protocol, collab::kSubprotocol);
  }));
  // Frame size is enforced in read_loop with close code 4009; Beast's own limit (which
  // closes with 1009) is turned off so that ours is the one clients see.
  ws_.read_message_max(0);
  ws_.auto_fragment(false);

  auto [ec] = co_await ws_.async_accept(req, nothrow);
  if (ec) {
    gw_->remove(this);
    co_return;
  }
  session_ = std::make_shared<Session>(gw_->ctx, weak_from_this(), ids::random_hex(8),
                                       std::chrono::steady_clock::now());
  auto self = shared_from_this();
  {
    std::lock_guard lock(mu_);
    started_ = true;
    published_session_ = session_;
    wake_locked();
  }
  hello_timer_.expires_after(gw_->options.hello_timeout);
  hello_timer_.async_wait([self](const beast::error_code& tec) {
    if (!tec) self->session_->on_hello_timeout();
  });

  co_await read_loop();

  hello_timer_.cancel();
  session_->on_closed();
  {
    std::lock_guard lock(mu_);
    dead_ = true;
    queue_.clear();
    queued_bytes_ = 0;
  }
  gw_->remove(this);
}

asio::awaitable<void> WsConnection::read_loop() {
  beast::flat_buffer buf;
  const std::size_t max_frame = gw_->options.max_frame_bytes;
  bool discarding = false;  // after a close request: read only to finish the handshake
  for (;;) {
    buf.clear();
    if (buf.capacity() > kKeepBuffer) buf.shrink_to_fit();
    std::size_t total = 0;
    for (;;) {
      auto [ec, n] = co_await ws_.async_read_some(buf, kReadChunk, nothrow);
      if (ec) co_return;  // closed, reset, or timed out
      total += n;
      if (discarding || total > max_frame) {
        buf.clear();  // flat memory whatever the peer sends
        if (!discarding) {
          gw_->limit_trips.with({"frame_bytes"}).inc();
          close(Close::TooLarge, "frame larger than " + std::to_string(max_frame) + " bytes");
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
    if (ws_.got_binary()) {
      close(Close::Protocol, "binary frames are not part of kiln.v1");
      discarding = true;
      continue;
    }
    const auto data = buf.cdata();
    session_->on_text(std::string_view(static_cast<const char*>(data.data()), data.size()),
                      std::chrono::steady_clock::now());
  }
}

// The write path is a plain callback chain, not a coroutine: at tens of thousands of
// frames per second the coroutine and timer machinery per frame cost more than the write.
// Runs on the connection's strand; `writing_` (under mu_) says a chain is running.
void WsConnection::write_next() {
  std::shared_ptr<const std::string> frame;
  std::optional<std::pair<Close, std::string>> closing;
  {
    std::lock_guard lock(mu_);
    if (dead_) {
      writing_ = false;
      return;
    }
    in_flight_ = 0;  // the previous write, if any, is done
    if (!queue_.empty()) {
      frame = std::move(queue_.front());
      queue_.pop_front();
      queued_bytes_ -= frame->size();
      in_flight_ = frame->size();
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
    gw_->closes.with({std::to_string(static_cast<int>(closing->first))}).inc();
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
  ws_.async_write(asio::buffer(*frame), [self, frame](const beast::error_code& ec, std::size_t) {
    if (ec) {
      std::lock_guard lock(self->mu_);
      self->dead_ = true;
      self->writing_ = false;
      return;
    }
    self->gw_->frames_out.inc();
    self->write_next();
  });
}

}  // namespace

void start_connection(std::shared_ptr<Gateway::Impl> gw, std::unique_ptr<http::Upgrade> up) {
  auto executor = up->stream.get_executor();
  auto conn = std::make_shared<WsConnection>(std::move(gw), std::move(up->stream), up->remote);
  asio::co_spawn(executor, conn->run(std::move(up->request)),
                 [conn](std::exception_ptr e) { log_failure(e, "websocket session failed"); });
}

}  // namespace kiln::gateway
