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

#include <algorithm>
#include <array>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

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

// RFC 6455 5.2: a server frame's header (FIN, the opcode, unmasked, the payload length)
// into `h` (10 bytes at most); returns its size.
std::size_t frame_header(unsigned char* h, unsigned opcode, std::size_t size) {
  std::size_t n = 0;
  h[n++] = static_cast<unsigned char>(0x80 | opcode);
  if (size < 126) {
    h[n++] = static_cast<unsigned char>(size);
  } else if (size < 65536) {
    h[n++] = 126;
    h[n++] = static_cast<unsigned char>(size >> 8);
    h[n++] = static_cast<unsigned char>(size);
  } else {
    h[n++] = 127;
    for (int i = 7; i >= 0; --i) h[n++] = static_cast<unsigned char>(size >> (8 * i));
  }
  return n;
}

// A control frame (ping, pong, close: RFC 6455 5.5), whole.
std::string control_frame(unsigned opcode, std::string_view payload) {
  unsigned char h[10];
  const auto n = frame_header(h, opcode, payload.size());
  std::string out(reinterpret_cast<const char*>(h), n);
  return out.append(payload);
}

// RFC 3629 well-formed UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF (what
// a text message must be: RFC 6455 8.1).
bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1Fu;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0Fu;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07u;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (std::size_t k = 1; k < len; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3Fu);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += len;
  }
  return true;
}

// RFC 6455 7.4: a close code an endpoint may put on the wire (1005, 1006 and 1015 say what
// happened without a frame and are never sent; 1004 is reserved).
bool sendable_close_code(std::uint16_t code) {
  return (code >= 1000 && code <= 1014 && code != 1004 && code != 1005 && code != 1006) ||
         (code >= 3000 && code <= 4999);
}

// A close frame's reason: 123 bytes at most (RFC 6455 5.5: a control frame's payload is 125
// bytes, two of them the code), cut at a UTF-8 character's boundary so it stays text.
std::string close_reason(std::string_view reason) {
  constexpr std::size_t kMax = 123;
  if (reason.size() <= kMax) return std::string(reason);
  std::size_t cut = kMax;
  while (cut > 0 && (static_cast<unsigned char>(reason[cut]) & 0xC0) == 0x80) --cut;
  return std::string(reason.substr(0, cut));
}

// The read buffer of the thread running a connection's strand now (used between two waits
// only; not inlined, so no caller keeps another thread's address).
[[gnu::noinline]] std::span<char> read_chunk() {
  static thread_local std::array<char, 64 * 1024> chunk;
  return chunk;
}

// The messages a connection has yet to write, in order. Allocates nothing until used and
// keeps at most 64 slots (1 KiB) once emptied (std::deque allocates about 600 bytes when
// constructed: at 10,000 idle connections per node, 6 MB for nothing).
class MessageQueue {
 public:
  [[nodiscard]] bool empty() const { return head_ == items_.size(); }
  void push_back(std::shared_ptr<const std::string> m) { items_.push_back(std::move(m)); }
  // The oldest message, removed (the queue is not empty).
  std::shared_ptr<const std::string> pop_front() {
    auto m = std::move(items_[head_++]);
    if (head_ == items_.size()) {
      clear();
    } else if (head_ >= 64 && head_ * 2 >= items_.size()) {  // amortized: never all empty slots
      items_.erase(items_.begin(), items_.begin() + static_cast<std::ptrdiff_t>(head_));
      head_ = 0;
    }
    return m;
  }
  void clear() {
    items_.clear();
    head_ = 0;
    if (items_.capacity() > 64) std::vector<std::shared_ptr<const std::string>>().swap(items_);
  }

 private:
  std::vector<std::shared_ptr<const std::string>> items_;
  std::size_t head_ = 0;
};

// How a framed connection's reading ended: the peer's close frame (`closed`: its code and
// reason; `we_closed_first`: it answered ours), or 1006 and what happened instead.
struct Ended {
  bool closed = false;
  bool we_closed_first = false;
  std::uint16_t code = 1006;
  std::string reason;
};

class Connection final : public WebSocket, public std::enable_shared_from_this<Connection> {
 public:
  Connection(std::shared_ptr<const WebSocketOptions> options,
             std::shared_ptr<WebSocketHandler> handler, beast::tcp_stream stream,
             std::string remote)
      : options_(std::move(options)),
        o_(*options_),
        handler_(std::move(handler)),
        ex_(stream.get_executor()),
        ws_(std::in_place, std::move(stream)),
        sock_(ex_),
        timer_(ex_),
        cut_timer_(ex_),
        idle_timer_(ex_),
        remote_(std::move(remote)) {}

  // The upgrade request is let go once the handshake is done.
  asio::awaitable<void> run(std::shared_ptr<Upgrade> up);
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
      const auto code = o_.slow_consumer_code;
      close_.emplace(sendable_close_code(code) ? code : std::uint16_t{1008}, "slow consumer");
      // Its close frame waits behind a write the peer does not read: past a grace period
      // the TCP connection is cut (the peer sees it end without a close frame).
      asio::post(ex_, [self = shared_from_this()] {
        if (self->ended_) return;
        self->cutting_ = true;
        self->cut_timer_.expires_after(self->o_.slow_consumer_grace);
        self->cut_timer_.async_wait([self](const beast::error_code& ec) {
          if (!ec && !self->ended_) self->cut();
        });
      });
    } else {
      queue_.push_back(std::move(message));
    }
    wake_locked();
  }

  void close(std::uint16_t code, std::string reason, bool drop_queued) override {
    if (code != 1005 && !sendable_close_code(code)) code = 1000;
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
    asio::post(ex_, [self = shared_from_this(), fn = std::move(fn)] { fn(); });
  }

  void after(std::chrono::milliseconds delay, std::function<void()> fn) override {
    asio::post(ex_, [self = shared_from_this(), delay, fn = std::move(fn)] {
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
    if (framed_) {
      asio::post(ex_, [self = shared_from_this()] { self->framed_write(); });
    } else {
      asio::post(ex_, [self = shared_from_this()] { self->write_next(); });
    }
  }

  asio::awaitable<void> reject(bhttp::status status, std::string_view detail);
  void set_timeouts(beast::role_type role);
  // A client connection after its handshake (or a connection whose handshake failed): reads
  // until it ends, then tells the handler how.
  asio::awaitable<void> serve();
  // The end of any connection: timers stopped, queues dropped, the handler told (its
  // on_peer_closed when `report`) and let go.
  void conclude(std::uint16_t code, const std::string& why, bool report);
  void write_next();
  asio::awaitable<beast::error_code> read_loop();

  // A server connection after its handshake: RFC 6455 frames read and written on the socket
  // by hand (Beast's stream did the handshake; a client connection stays on Beast's stream).
  // One write path per connection: every queued frame gathered into one non-blocking
  // sendmsg on the strand, the reactor only when the kernel's buffer is full; reads wait
  // for readiness and read into a per-thread buffer, so an idle connection holds none.
  asio::ip::tcp::socket& socket() { return sock_; }
  // Ends the TCP connection now (the peer sees it end without a close frame).
  void cut() {
    beast::error_code ignored;
    if (ws_) {
      beast::get_lowest_layer(*ws_).close();
    } else {
      sock_.close(ignored);
    }
  }
  // Holds the connection for the pending callback of a framed connection's main line (its
  // read wait, then its drain wait). Destroyed without running (the loop stopped first), it
  // lets the handler go: else the cycle handler -> WebSocket -> handler outlives the loop.
  // on_closed is not called on that path: what it would touch may be gone already.
  struct Hold {
    std::shared_ptr<Connection> c;
    explicit Hold(std::shared_ptr<Connection> conn) : c(std::move(conn)) {}
    Hold(Hold&&) noexcept = default;
    Hold& operator=(Hold&&) = delete;
    ~Hold() {
      if (c) c->handler_.reset();
    }
    std::shared_ptr<Connection> release() { return std::move(c); }
  };
  // A framed connection is driven by callbacks, not a coroutine: an idle connection holds a
  // pending readiness wait and no coroutine frames. start_framed runs after the handshake.
  void start_framed();
  void wait_readable();
  void on_readable(const beast::error_code& ec);
  // Reading is over: the close frame queued, if any, is written first (the writer cancels
  // the wait), then the connection ends.
  void finish(Ended end);
  void linger(Ended end, bool report);
  void linger_wait(Ended end, bool report);
  // Takes bytes read: frames parsed, messages handed on; a value when reading is over.
  std::optional<Ended> take(std::string_view bytes);
  std::optional<Ended> begin_frame();  // the header is whole: checked, the payload next
  std::optional<Ended> end_frame();    // the payload is whole: acted on
  std::optional<Ended> framed_fail(std::uint16_t code, std::string reason);
  void framed_write();
  void queue_control(std::string frame);
  void start_idle_timer();
  // What is reported when a handler threw out of the read path: the connection closed
  // with 1011 (RFC 6455 7.4.1: an unexpected condition), logged, nothing skipped.
  Ended threw(std::exception_ptr e);

  std::shared_ptr<const WebSocketOptions> options_;  // the endpoint's, shared
  const WebSocketOptions& o_;
  std::shared_ptr<WebSocketHandler> handler_;
  asio::any_io_executor ex_;  // the connection's strand
  // Beast's stream: the handshake, and a client connection's whole life. A server
  // connection moves its socket to sock_ after the handshake and drops the stream (its
  // buffers and timers are kilobytes an idle connection need not hold).
  std::optional<websocket::stream<beast::tcp_stream>> ws_;
  asio::ip::tcp::socket sock_;
  asio::steady_timer timer_;
  asio::steady_timer cut_timer_;   // a slow consumer's connection is cut when it fires
  asio::steady_timer idle_timer_;  // framed: pings a silent peer, then drops it
  std::string remote_;
  bool ended_ = false;            // strand only: the connection is over
  std::string handshake_failed_;  // strand only: why there was no connection
  // Framed reading (strand only). The frame being read: its header's bytes so far (14 at
  // most, RFC 6455 5.2), then its opcode, FIN, mask, the payload bytes still to come and
  // where the next one falls in the mask. A payload is unmasked into the message (or a
  // control frame's payload) as it arrives: a connection holds no more than the message.
  std::array<unsigned char, 14> head_{};
  std::uint8_t head_size_ = 0;
  bool in_payload_ = false, fin_ = false;
  std::uint8_t opcode_ = 0;
  std::array<unsigned char, 4> mask_{};
  std::uint8_t mask_at_ = 0;
  std::uint64_t left_ = 0;
  std::string control_payload_;  // 125 bytes at most
  std::string message_;          // max_message_bytes at most
  bool in_message_ = false, binary_ = false, discarding_ = false, timed_out_ = false;
  bool reading_over_ = false;  // the idle timer stops; finish() owns idle_timer_ now
  bool draining_ = false;      // reading is over; finish() waits for the writer's last frames
  bool pinged_ = false;        // a ping went to the peer since its last read
  bool cutting_ = false;       // cut_timer_ runs for a slow consumer: not re-armed
  std::chrono::steady_clock::time_point last_read_;
  // Framed writing (strand only): what a short write left, the messages being written.
  std::string unsent_;
  std::vector<std::shared_ptr<const std::string>> batch_;

  std::mutex mu_;
  MessageQueue queue_;
  std::size_t queued_bytes_ = 0;
  std::size_t in_flight_ = 0;  // the message being written (under mu_)
  bool started_ = false;       // the handshake is done: messages may be written
  bool writing_ = false;       // a write chain is running
  bool close_sent_ = false;
  bool dead_ = false;
  bool framed_ = false;  // set with started_: the framed write path
  // Framed: a pong and our ping at most, written before messages (a newer ping's pong
  // replaces one not yet written: RFC 6455 5.5.3 allows it, and a ping flood to a peer that
  // does not read cannot grow memory).
  std::vector<std::string> control_;
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
  auto& stream = ws_->next_layer();
  stream.expires_after(std::chrono::seconds(5));
  co_await bhttp::async_write(stream, res, nothrow);
  beast::error_code ignored;
  stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
}

asio::awaitable<void> Connection::run(std::shared_ptr<Upgrade> up) {
  if (!o_.subprotocol.empty() &&
      !offers_subprotocol(up->request[bhttp::field::sec_websocket_protocol], o_.subprotocol)) {
    co_await reject(bhttp::status::bad_request,
                    "the WebSocket subprotocol " + o_.subprotocol + " is required");
    co_return;
  }
  if (auto refused = handler_->admit(head_of(*up))) {
    co_await reject(static_cast<bhttp::status>(refused->status), refused->detail);
    co_return;
  }
  // A loop that stops during the handshake destroys this coroutine unfinished: the handler
  // goes then too (as Hold does after it).
  struct DropHandler {
    std::shared_ptr<WebSocketHandler>& handler;
    bool armed = true;
    ~DropHandler() {
      if (armed) handler.reset();
    }
  } drop{handler_};
  set_timeouts(beast::role_type::server);
  ws_->set_option(websocket::stream_base::decorator([p = o_.subprotocol](auto& res) {
    res.set(bhttp::field::server, "kiln");
    if (!p.empty()) res.set(bhttp::field::sec_websocket_protocol, p);
  }));
  auto [ec] = co_await ws_->async_accept(up->request, nothrow);
  up.reset();
  if (ec) {
    handshake_failed_ = "handshake failed: " + ec.message();
    co_await serve();
    co_return;
  }
  sock_ = ws_->next_layer().release_socket();
  ws_.reset();
  start_framed();      // this coroutine ends: the connection keeps no frame of it
  drop.armed = false;  // the callbacks' Hold has taken over
}

void Connection::set_timeouts(beast::role_type role) {
  ws_->next_layer().expires_never();  // the websocket stream keeps its own timeouts
  auto timeouts = websocket::stream_base::timeout::suggested(role);
  timeouts.handshake_timeout = o_.handshake_timeout;
  timeouts.keep_alive_pings = false;
  // A server connection is framed by hand after its handshake and keeps its own idle timer.
  if (role == beast::role_type::client && o_.idle_timeout.count() > 0) {
    timeouts.idle_timeout = o_.idle_timeout;  // pings at half of it: a silent peer is dropped
    timeouts.keep_alive_pings = true;
  } else {
    timeouts.idle_timeout = websocket::stream_base::none();
  }
  ws_->set_option(timeouts);
  // The message size is enforced in read_loop with the endpoint's close code; Beast's own
  // limit (which closes with 1009 and reads no further) is turned off.
  ws_->read_message_max(0);
  ws_->auto_fragment(false);
}

asio::awaitable<void> Connection::serve() {
  if (!handshake_failed_.empty()) {
    conclude(1006, handshake_failed_, true);
    co_return;
  }
  {
    std::lock_guard lock(mu_);
    started_ = true;
    wake_locked();
  }
  handler_->on_open(shared_from_this());
  std::uint16_t code = 1006;
  std::string why;
  beast::error_code ec;
  std::optional<Ended> failed;
  try {
    ec = co_await read_loop();
  } catch (...) {
    failed = threw(std::current_exception());
  }
  if (failed) {
    why = std::move(failed->reason);
  } else if (ec == websocket::error::closed) {
    code = static_cast<std::uint16_t>(ws_->reason().code);
    why = std::string(ws_->reason().reason.data(), ws_->reason().reason.size());
  } else {
    why = ec.message();
  }
  bool report = true;  // on_peer_closed: not for a close this side started and the peer answered
  {
    std::lock_guard lock(mu_);
    report = !close_sent_;
  }
  conclude(code, why, report);
}

void Connection::conclude(std::uint16_t code, const std::string& why, bool report) {
  ended_ = true;
  timer_.cancel();
  cut_timer_.cancel();
  idle_timer_.cancel();
  {
    std::lock_guard lock(mu_);
    dead_ = true;
    queue_.clear();
    control_.clear();
    queued_bytes_ = 0;
  }
  // Called from plain callbacks on the server's side: an exception must not leave the
  // event loop (it would end the node), and the handler is let go whatever happens.
  auto handler = std::move(handler_);
  try {
    if (report) handler->on_peer_closed(code, why);
    handler->on_closed();
  } catch (...) {
    log::exception(std::current_exception(), "websocket handler failed at the end");
  }
}

Ended Connection::threw(std::exception_ptr e) {
  log::exception(e, "websocket handler failed");
  close(1011, "internal error", /*drop_queued=*/true);
  std::string what = "internal error";
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    what += ": ";
    what += x.what();
  } catch (...) {
  }
  return Ended{false, false, 1006, std::move(what)};
}

asio::awaitable<void> Connection::run_client(WebSocketTarget target) {
  struct DropHandler {
    std::shared_ptr<WebSocketHandler>& handler;
    ~DropHandler() { handler.reset(); }
  } drop{handler_};
  auto& tcp = beast::get_lowest_layer(*ws_);
  tcp.expires_after(target.connect_timeout);
  asio::ip::tcp::resolver resolver(ex_);
  auto [rec, results] =
      co_await resolver.async_resolve(target.host, std::to_string(target.port), nothrow);
  if (rec) {
    handshake_failed_ = "cannot resolve " + target.host + ": " + rec.message();
  } else if (auto [cec, ep] = co_await tcp.async_connect(results, nothrow); cec) {
    handshake_failed_ = "cannot connect to " + target.host + ":" + std::to_string(target.port) +
                        ": " + cec.message();
  } else {
    remote_ = ep.address().to_string() + ":" + std::to_string(ep.port());
    ws_->set_option(websocket::stream_base::decorator(
        [p = o_.subprotocol, h = target.headers](websocket::request_type& req) {
          req.set(bhttp::field::user_agent, "kiln");
          if (!p.empty()) req.set(bhttp::field::sec_websocket_protocol, p);
          for (const auto& [name, value] : h) req.set(name, value);
        }));
    websocket::response_type res;
    tcp.expires_after(target.connect_timeout);
    auto [hec] = co_await ws_->async_handshake(res, target.host + ":" + std::to_string(target.port),
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
      auto [ec, n] = co_await ws_->async_read_some(buf, kReadChunk, nothrow);
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
      if (ws_->is_message_done()) break;
    }
    if (discarding) continue;
    {
      std::lock_guard lock(mu_);
      if (close_) discarding = true;
    }
    if (discarding) continue;
    const auto data = buf.cdata();
    try {
      handler_->on_message(std::string_view(static_cast<const char*>(data.data()), data.size()),
                           ws_->got_binary());
    } catch (...) {
      // Closed with 1011; reading goes on (and drops) until the peer answers the close.
      threw(std::current_exception());
      discarding = true;
    }
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
      message = queue_.pop_front();
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
    std::string reason = close_reason(closing->second);
    ws_->async_close(
        websocket::close_reason(static_cast<websocket::close_code>(closing->first), reason),
        [self](const beast::error_code&) {
          std::lock_guard lock(self->mu_);
          self->writing_ = false;
        });
    return;
  }
  ws_->text(true);
  ws_->async_write(asio::buffer(*message),
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

// Reads per readiness: a peer that floods is read a megabyte at a time and the strand goes
// back to the reactor between, so it cannot starve its neighbours.
constexpr int kReadsPerWake = 16;

void Connection::start_framed() {
  {
    std::lock_guard lock(mu_);
    framed_ = true;
    started_ = true;
    wake_locked();
  }
  beast::error_code ec;
  socket().non_blocking(true, ec);
  last_read_ = std::chrono::steady_clock::now();
  try {
    handler_->on_open(shared_from_this());
  } catch (...) {
    finish(threw(std::current_exception()));
    return;
  }
  start_idle_timer();
  wait_readable();
}

void Connection::wait_readable() {
  socket().async_wait(asio::socket_base::wait_read,
                      [hold = Hold(shared_from_this())](const beast::error_code& ec) mutable {
                        hold.release()->on_readable(ec);
                      });
}

// Reads what is there into the thread's buffer until the socket is empty, then waits for
// readiness again: between messages a connection holds no read buffer at all (an
// incomplete header's bytes only). Ends at the peer's close frame, an error, or the idle
// limit.
void Connection::on_readable(const beast::error_code& wec) {
  if (timed_out_) {
    finish(Ended{
        false, false, 1006,
        "timed out: nothing from the peer for " + std::to_string(o_.idle_timeout.count()) + " ms"});
    return;
  }
  if (wec) {
    finish(Ended{false, false, 1006, wec.message()});
    return;
  }
  const auto chunk = read_chunk();
  beast::error_code ec;
  for (int reads = 0; reads < kReadsPerWake; ++reads) {
    const std::size_t n = socket().read_some(asio::buffer(chunk.data(), chunk.size()), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) break;
    if (ec) {
      finish(Ended{false, false, 1006, ec.message()});
      return;
    }
    last_read_ = std::chrono::steady_clock::now();
    pinged_ = false;
    std::optional<Ended> end;
    try {
      end = take(std::string_view(chunk.data(), n));
    } catch (...) {
      end = threw(std::current_exception());
    }
    if (end) {
      finish(std::move(*end));
      return;
    }
    if (n < chunk.size()) break;
  }
  wait_readable();
}

// After our close frame: the send side shut (the peer reads the frame, then the end of the
// stream), what the peer still sends read and dropped until it closes or kLinger passes,
// then the socket closed. Closing with unread bytes would send an RST, and the peer could
// lose the close frame still in flight.
constexpr auto kLinger = std::chrono::seconds(2);

void Connection::linger(Ended end, bool report) {
  beast::error_code ignored;
  socket().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
  idle_timer_.expires_after(kLinger);
  idle_timer_.async_wait([self = shared_from_this()](const beast::error_code& ec) {
    beast::error_code e;
    if (!ec) self->socket().cancel(e);  // the pending wait ends: closed below
  });
  linger_wait(std::move(end), report);
}

void Connection::linger_wait(Ended end, bool report) {
  socket().async_wait(
      asio::socket_base::wait_read, [hold = Hold(shared_from_this()), end = std::move(end),
                                     report](const beast::error_code& ec) mutable {
        auto self = hold.release();
        if (!ec) {
          const auto chunk = read_chunk();
          beast::error_code rec;
          for (int reads = 0; reads < kReadsPerWake && !rec; ++reads)
            self->socket().read_some(asio::buffer(chunk.data(), chunk.size()), rec);
          if (!rec || rec == asio::error::would_block || rec == asio::error::try_again) {
            self->linger_wait(std::move(end), report);
            return;
          }
        }
        // The peer's end of the stream, an error, or kLinger passed.
        self->idle_timer_.cancel();
        beast::error_code ignored;
        self->socket().close(ignored);
        self->conclude(end.code, end.reason, report);
      });
}

void Connection::finish(Ended end) {
  reading_over_ = true;
  idle_timer_.cancel();
  bool sent = false, writing = false;
  {
    std::lock_guard lock(mu_);
    sent = close_sent_;
    writing = writing_ && !dead_ && close_.has_value();
  }
  // on_peer_closed: not for a close this side started and the peer answered.
  const bool report = end.closed ? !end.we_closed_first : !sent;
  auto done = [report](Connection& c, Ended& e) {
    bool linger = false;
    {
      std::lock_guard lock(c.mu_);
      linger = c.close_sent_ && !c.dead_;
    }
    if (linger) {
      c.linger(std::move(e), report);
      return;
    }
    beast::error_code ignored;
    c.socket().close(ignored);
    c.conclude(e.code, e.reason, report);
  };
  if (!writing) {
    done(*this, end);
    return;
  }
  // A close frame queued (the answer to the peer's, or ours after a protocol error) is
  // written before the connection goes: the writer cancels this wait when it is done.
  draining_ = true;
  idle_timer_.expires_after(o_.handshake_timeout);
  idle_timer_.async_wait([hold = Hold(shared_from_this()), end = std::move(end),
                          done](const beast::error_code&) mutable { done(*hold.release(), end); });
}

// A frame that breaks RFC 6455: closed with `code` (1002 protocol error, 1007 not UTF-8),
// reading over.
std::optional<Ended> Connection::framed_fail(std::uint16_t code, std::string reason) {
  close(code, reason, /*drop_queued=*/true);
  return Ended{false, false, 1006, std::move(reason)};
}

std::optional<Ended> Connection::take(std::string_view bytes) {
  std::size_t at = 0;
  while (at < bytes.size()) {
    if (!in_payload_) {
      // The header, gathered across reads: two bytes say how long the rest of it is.
      while (head_size_ < 2 && at < bytes.size())
        head_[head_size_++] = static_cast<unsigned char>(bytes[at++]);
      if (head_size_ < 2) break;
      const unsigned len7 = head_[1] & 0x7fu;
      const std::size_t need = 2 +
                               (len7 == 126   ? 2
                                : len7 == 127 ? 8
                                              : 0) +
                               ((head_[1] & 0x80) != 0 ? 4 : 0);
      while (head_size_ < need && at < bytes.size())
        head_[head_size_++] = static_cast<unsigned char>(bytes[at++]);
      if (head_size_ < need) break;
      if (auto end = begin_frame()) return end;
    }
    // The payload, unmasked as it arrives; a message over the limit is read and dropped.
    const auto k = static_cast<std::size_t>(std::min<std::uint64_t>(left_, bytes.size() - at));
    const bool control = opcode_ >= 8;
    if (control || !discarding_) {
      std::string& into = control ? control_payload_ : message_;
      const auto from = into.size();
      // Grown by doubling, never past the limit (a message just under it would hold twice).
      if (!control && from + k > into.capacity())
        into.reserve(std::min(std::max(from + k, 2 * into.capacity()), o_.max_message_bytes));
      into.append(bytes.data() + at, k);
      for (std::size_t i = 0; i < k; ++i)
        into[from + i] = static_cast<char>(static_cast<unsigned char>(into[from + i]) ^
                                           mask_[(mask_at_ + i) & 3u]);
      mask_at_ = static_cast<std::uint8_t>((mask_at_ + k) & 3u);
    }
    at += k;
    left_ -= k;
    if (left_ > 0) break;
    in_payload_ = false;
    if (auto end = end_frame()) return end;
  }
  return std::nullopt;
}

std::optional<Ended> Connection::begin_frame() {
  const unsigned char* b = head_.data();
  head_size_ = 0;
  fin_ = (b[0] & 0x80) != 0;
  opcode_ = b[0] & 0x0f;
  std::uint64_t len = b[1] & 0x7f;
  std::size_t at = 2;
  if (len == 126) {
    len = (std::uint64_t{b[2]} << 8) | b[3];
    at = 4;
  } else if (len == 127) {
    len = 0;
    for (int i = 0; i < 8; ++i) len = (len << 8) | b[2 + i];
    at = 10;
  }
  if ((b[0] & 0x70) != 0) return framed_fail(1002, "a frame with reserved bits set");
  if ((b[1] & 0x80) == 0) return framed_fail(1002, "an unmasked frame from a client");
  // RFC 6455 5.2: a 64-bit length's most significant bit is 0.
  if ((len >> 63) != 0) return framed_fail(1002, "a frame length with its top bit set");
  const bool control = opcode_ >= 8;
  if (control && (opcode_ > 10 || !fin_ || len > 125))
    return framed_fail(1002, "a bad control frame (opcode " + std::to_string(opcode_) + ")");
  if (!control && opcode_ > 2)
    return framed_fail(1002, "an unknown opcode " + std::to_string(opcode_));
  if (opcode_ == 0 && !in_message_) return framed_fail(1002, "a continuation of no message");
  if ((opcode_ == 1 || opcode_ == 2) && in_message_)
    return framed_fail(1002, "a new message inside a fragmented one");
  std::copy_n(b + at, 4, mask_.begin());
  mask_at_ = 0;
  left_ = len;
  in_payload_ = true;
  if (control) return std::nullopt;
  // message_ never holds more than the limit, so the subtraction cannot wrap.
  if (!discarding_ && len > o_.max_message_bytes - message_.size()) {
    if (o_.metrics.limit_trips) o_.metrics.limit_trips->with({"frame_bytes"}).inc();
    close(o_.too_large_code,
          "message larger than " + std::to_string(o_.max_message_bytes) + " bytes", false);
    discarding_ = true;
    std::string().swap(message_);
  }
  if (opcode_ != 0) binary_ = opcode_ == 2;
  in_message_ = !fin_;
  return std::nullopt;
}

std::optional<Ended> Connection::end_frame() {
  if (opcode_ == 9) {
    queue_control(control_frame(0xA, control_payload_));  // RFC 6455 5.5.3: the same data
  } else if (opcode_ == 8) {
    // RFC 6455 5.5.1: answered with a close frame, then the connection ends.
    const auto& p = control_payload_;
    if (p.size() == 1) return framed_fail(1002, "a close frame of one byte");
    Ended e{true, false, 1005, ""};
    std::uint16_t answer = 1005;  // no code: answered with an empty close frame
    if (p.size() >= 2) {
      e.code = static_cast<std::uint16_t>((static_cast<unsigned char>(p[0]) << 8) |
                                          static_cast<unsigned char>(p[1]));
      e.reason = p.substr(2);
      // Echoed (RFC 6455 5.5.1); a code a peer may not send is answered with 1002, a
      // reason that is not UTF-8 with 1007 (RFC 6455 5.5.1, 8.1).
      answer = !sendable_close_code(e.code) ? std::uint16_t{1002}
               : !valid_utf8(e.reason)      ? std::uint16_t{1007}
                                            : e.code;
    }
    control_payload_.clear();
    std::lock_guard lock(mu_);
    e.we_closed_first = close_sent_;
    if (!close_) {
      queue_.clear();
      queued_bytes_ = 0;
      close_.emplace(answer, "");
      wake_locked();
    }
    return e;
  } else if (opcode_ < 8 && fin_) {
    if (!discarding_) {
      std::lock_guard lock(mu_);
      discarding_ = close_.has_value();  // nothing more for the handler after a close
    }
    if (!discarding_) {
      if (!binary_ && !valid_utf8(message_))
        return framed_fail(1007, "a text message that is not UTF-8");
      handler_->on_message(message_, binary_);
    }
    if (message_.capacity() > kKeepBuffer) {
      std::string().swap(message_);
    } else {
      message_.clear();
    }
  }
  control_payload_.clear();  // a pong's payload (ours carry none) is not looked at
  return std::nullopt;
}

void Connection::queue_control(std::string frame) {
  std::lock_guard lock(mu_);
  if (dead_ || close_sent_) return;
  // One pong (the newest ping's answer) and one ping of ours wait at most.
  for (auto& waiting : control_) {
    if (waiting.front() == frame.front()) {
      waiting = std::move(frame);
      return;
    }
  }
  control_.push_back(std::move(frame));
  wake_locked();
}

// The idle limit, from the last read: a ping once the peer has been silent half of it, the
// connection cut once silent all of it (its answer to the ping is a read too). The timer
// is not moved by each read: when it fires it is re-armed for the deadline the last read
// set.
void Connection::start_idle_timer() {
  if (o_.idle_timeout.count() <= 0) return;
  const auto half = o_.idle_timeout / 2;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_read_ >= o_.idle_timeout) {
    timed_out_ = true;
    beast::error_code ignored;
    socket().cancel(ignored);
    return;
  }
  if (now - last_read_ >= half && !pinged_) {
    pinged_ = true;
    queue_control(control_frame(0x9, ""));
  }
  idle_timer_.expires_at(last_read_ + (pinged_ ? o_.idle_timeout : half));
  // A completion queued before finish() took the timer over must not re-arm it (that would
  // cancel finish()'s wait for the last frames).
  idle_timer_.async_wait([self = shared_from_this()](const beast::error_code& ec) {
    if (!ec && !self->reading_over_) self->start_idle_timer();
  });
}

// The framed write path (strand): control frames, then queued messages, then (the queue
// empty) the close frame, gathered into one non-blocking sendmsg; what the kernel does not
// take is kept and written when the socket is writable again.
void Connection::framed_write() {
  auto& sock = socket();
  constexpr std::size_t kMax = 64;  // buffers per sendmsg (IOV_MAX is 1024)
  // Per thread, not per call (the strand runs this on one thread at a time, and nothing
  // here suspends): the gather list is not rebuilt from zero for every message.
  static thread_local std::array<asio::const_buffer, kMax> bufs;
  static thread_local std::array<std::array<unsigned char, 10>, kMax / 2> heads;
  // Rounds per turn: a connection whose queue keeps filling while its peer keeps reading
  // goes back to the strand's queue between, so its reads and timers run too.
  constexpr int kRoundsPerTurn = 16;
  for (int round = 0;; ++round) {
    if (round == kRoundsPerTurn) {
      asio::post(ex_, [self = shared_from_this()] { self->framed_write(); });
      return;
    }
    std::size_t nb = 0, messages = 0;
    std::string closing;
    batch_.clear();
    std::vector<std::string> controls;
    {
      std::lock_guard lock(mu_);
      if (dead_) {
        writing_ = false;
        return;
      }
      in_flight_ = unsent_.size();
      if (!unsent_.empty()) bufs[nb++] = asio::buffer(unsent_);
      const auto take = std::min(control_.size(), kMax - nb);
      controls.assign(
          std::make_move_iterator(control_.begin()),
          std::make_move_iterator(control_.begin() + static_cast<std::ptrdiff_t>(take)));
      control_.erase(control_.begin(), control_.begin() + static_cast<std::ptrdiff_t>(take));
      for (const auto& c : controls) bufs[nb++] = asio::buffer(c);
      while (!queue_.empty() && nb + 2 <= kMax) {
        auto m = queue_.pop_front();
        queued_bytes_ -= m->size();
        auto& h = heads[messages++];
        bufs[nb++] = asio::buffer(h.data(), frame_header(h.data(), 0x1, m->size()));
        bufs[nb++] = asio::buffer(*m);
        batch_.push_back(std::move(m));
      }
      if (queue_.empty() && nb < kMax && close_ && !close_sent_) {
        close_sent_ = true;
        std::string payload;
        if (close_->first != 1005) {
          payload = {static_cast<char>(close_->first >> 8),
                     static_cast<char>(close_->first & 0xff)};
          payload += close_reason(close_->second);
        }
        closing = control_frame(0x8, payload);
        bufs[nb++] = asio::buffer(closing);
        if (o_.metrics.closes) o_.metrics.closes->with({std::to_string(close_->first)}).inc();
      }
      if (nb == 0) {
        writing_ = false;
        in_flight_ = 0;
        if (draining_) idle_timer_.cancel();  // finish() waits for the last frames
        return;
      }
    }
    std::size_t total = 0;
    for (std::size_t i = 0; i < nb; ++i) total += bufs[i].size();
    beast::error_code ec;
    std::size_t n = sock.write_some(std::span(bufs.data(), nb), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      n = 0;
    } else if (ec) {
      std::lock_guard lock(mu_);
      dead_ = true;
      writing_ = false;
      if (draining_) idle_timer_.cancel();
      return;
    }
    if (o_.metrics.messages_out && messages > 0) o_.metrics.messages_out->inc(messages);
    if (!closing.empty() && !cutting_) {
      // The peer answers our close frame, or is cut after the handshake timeout (a slow
      // consumer's grace, already running, is not extended).
      cutting_ = true;
      cut_timer_.expires_after(o_.handshake_timeout);
      cut_timer_.async_wait([self = shared_from_this()](const beast::error_code& e) {
        if (!e && !self->ended_) {
          beast::error_code ignored;
          self->socket().close(ignored);
        }
      });
    }
    if (n == total) {
      unsent_.clear();
      if (unsent_.capacity() > kKeepBuffer) std::string().swap(unsent_);
      continue;  // more may have been queued meanwhile
    }
    // A short write: the rest, in order, waits for the socket to be writable.
    std::string rest;
    rest.reserve(total - n);
    std::size_t skip = n;
    for (std::size_t i = 0; i < nb; ++i) {
      const auto* p = static_cast<const char*>(bufs[i].data());
      const auto size = bufs[i].size();
      if (skip >= size) {
        skip -= size;
        continue;
      }
      rest.append(p + skip, size - skip);
      skip = 0;
    }
    unsent_ = std::move(rest);
    batch_.clear();
    {
      std::lock_guard lock(mu_);
      in_flight_ = unsent_.size();
    }
    sock.async_wait(asio::socket_base::wait_write,
                    [self = shared_from_this()](const beast::error_code& e) {
                      if (e) {
                        std::lock_guard lock(self->mu_);
                        self->dead_ = true;
                        self->writing_ = false;
                        if (self->draining_) self->idle_timer_.cancel();
                        return;
                      }
                      self->framed_write();
                    });
    return;
  }
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
    auto owned = std::shared_ptr<Upgrade>(std::move(up));
    asio::co_spawn(
        executor,
        [conn, owned = std::move(owned)]() mutable -> asio::awaitable<void> {
          co_await conn->run(std::move(owned));
        },
        [conn](std::exception_ptr e) { log::exception(e, "websocket session failed"); });
  };
}

}  // namespace kiln::http
