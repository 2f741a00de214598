// The WebSocket transport (RFC 6455) for any sans-io session: the collaboration session,
// the terminal session, and the gateway's relay to a sandbox host (the one client side,
// websocket_connect). The transport owns the socket, the handshake, pings, the
// limits on message size and on unsent bytes, and an ordered send queue; the session sees
// messages in and sends messages out through a thread-safe `WebSocket`, and never sees Beast
// (websocket.cpp is the one translation unit that does).
//
//   server.add_upgrade("/v1/collab", http::websocket_endpoint(options, [&] {
//     return std::make_shared<MyHandler>(...);   // one per connection
//   }));
#pragma once

#include "platform/http.hpp"
#include "platform/http_server.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln {
class Runtime;
}
namespace kiln::metrics {
class Counter;
template <class T>
class Family;
}  // namespace kiln::metrics

namespace kiln::http {

struct WebSocketMetrics {
  metrics::Counter* messages_out = nullptr;                  // messages written
  metrics::Family<metrics::Counter>* closes = nullptr;       // {code}: closes this side sent
  metrics::Family<metrics::Counter>* limit_trips = nullptr;  // {limit}: message_bytes label
                                                             // `frame_bytes`, `queue_bytes`
};

struct WebSocketOptions {
  // Required of the client in Sec-WebSocket-Protocol and echoed; empty: none asked for.
  std::string subprotocol;
  std::chrono::milliseconds handshake_timeout{10'000};
  // A peer silent this long is dropped; pings go out at half of it. 0: no idle limit.
  std::chrono::milliseconds idle_timeout{60'000};
  // A message (all its frames) larger than this closes with `too_large_code`; the rest of it
  // is read and discarded in 4 KiB pieces (memory stays flat whatever the peer sends).
  std::size_t max_message_bytes = 1u << 20;
  std::uint16_t too_large_code = 1009;  // RFC 6455 7.4.1: message too big
  // Bytes queued and not yet written; more closes with `slow_consumer_code`, dropping the
  // queue. One message larger than this still goes when nothing else waits.
  std::size_t max_queue_bytes = 4u << 20;
  std::uint16_t slow_consumer_code = 1008;  // policy violation
  // A slow consumer's close frame waits this long behind what it does not read; then its
  // TCP connection is cut.
  std::chrono::milliseconds slow_consumer_grace{30'000};
  WebSocketMetrics metrics;
};

// The connection as a session sees it. Thread-safe; never blocks; nothing happens after the
// connection is gone.
class WebSocket {
 public:
  virtual ~WebSocket() = default;
  // Queues a text message (written in order, one at a time).
  virtual void send(std::shared_ptr<const std::string> message) = 0;
  // Writes what is queued, then the close frame with `code` and `reason` (cut to 123 bytes
  // at a UTF-8 character's boundary); `drop_queued` discards what is queued first. The first
  // close wins. A code RFC 6455 7.4 lets an endpoint send (1000-1003, 1007-1014, 3000-4999)
  // goes as it is, 1005 as a close frame without a code, any other as 1000.
  virtual void close(std::uint16_t code, std::string reason, bool drop_queued = false) = 0;
  // Runs `fn` later on the connection's strand (where the handler is called), never inline.
  virtual void post(std::function<void()> fn) = 0;
  // Runs `fn` on the strand after `delay` unless the connection ends first. One timer per
  // connection: a later call replaces a pending one.
  virtual void after(std::chrono::milliseconds delay, std::function<void()> fn) = 0;
  // The peer's address ("ip:port").
  [[nodiscard]] virtual const std::string& remote() const = 0;
};

// A refusal before the handshake: answered as application/problem+json and the connection
// closed.
struct WebSocketRefusal {
  int status = 503;
  std::string detail;
};

// One per connection. Every call but admit() runs on the connection's strand, one at a time.
class WebSocketHandler {
 public:
  virtual ~WebSocketHandler() = default;
  // The upgrade request, before the handshake: nullopt to go on, or a refusal.
  virtual std::optional<WebSocketRefusal> admit(const Request& head) = 0;
  // The handshake completed: messages may be sent.
  virtual void on_open(std::shared_ptr<WebSocket> socket) = 0;
  // A whole message (`binary`: opcode 2). Not called after a close was asked for.
  virtual void on_message(std::string_view data, bool binary) = 0;
  // How the connection ended, just before on_closed: the peer's close frame (its code and
  // reason), or 1006 (RFC 6455 7.1.5: no close frame) and what happened instead: refused,
  // unreachable, reset, timed out. Not called for a close this side started and the peer
  // answered.
  virtual void on_peer_closed(std::uint16_t code, std::string_view reason) {
    (void)code;
    (void)reason;
  }
  // The connection is gone (or the handshake failed). Called once, after an admit that went
  // on; the handler must drop its WebSocket here.
  virtual void on_closed() = 0;
};

// Where a client connection goes: plain ws:// (Kiln's nodes talk to each other inside the
// cluster's network), with extra request headers (Authorization).
struct WebSocketTarget {
  std::string host;
  std::uint16_t port = 0;
  std::string path = "/";  // origin-form: path and query
  std::vector<std::pair<std::string, std::string>> headers;
  std::chrono::milliseconds connect_timeout{5'000};  // resolve, connect and handshake
};

// Opens a client connection to `target` on the runtime's loop and runs `handler` on it as
// an endpoint's handler is run: on_open once the handshake (with options.subprotocol, which
// the server must echo) completed, then on_message, then on_peer_closed and on_closed.
// admit() is not called. A connection that cannot be made calls on_peer_closed(1006, why)
// and on_closed. The options' limits apply to what the server sends.
void websocket_connect(Runtime& runtime, WebSocketOptions options, WebSocketTarget target,
                       std::shared_ptr<WebSocketHandler> handler);

// An upgrade handler for HttpServer::add_upgrade that runs a WebSocket per connection with
// `make()`'s handler. The subprotocol is checked (400 without it) before admit().
UpgradeHandler websocket_endpoint(WebSocketOptions options,
                                  std::function<std::shared_ptr<WebSocketHandler>()> make);

}  // namespace kiln::http
