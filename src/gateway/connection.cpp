// A collaboration connection: the sans-io Session on the platform's WebSocket transport
// (platform/websocket.hpp), registered with the gateway for drain and access rechecks. No
// Beast here: the transport is platform/websocket.cpp.
#include "gateway/gateway_impl.hpp"
#include "platform/ids.hpp"
#include "platform/websocket.hpp"

namespace kiln::gateway {

using collab::Close;

namespace {

class CollabConnection final : public http::WebSocketHandler,
                               public Transport,
                               public Connection,
                               public std::enable_shared_from_this<CollabConnection> {
 public:
  explicit CollabConnection(std::shared_ptr<Gateway::Impl> gw) : gw_(std::move(gw)) {}

  // http::WebSocketHandler
  std::optional<http::WebSocketRefusal> admit(const http::Request&) override {
    if (gw_->add(this, weak_from_this())) {
      admitted_ = true;
      return std::nullopt;
    }
    gw_->limit_trips.with({"sessions"}).inc();
    return http::WebSocketRefusal{503, "the gateway is full or restarting"};
  }

  void on_open(std::shared_ptr<http::WebSocket> socket) override {
    auto session = std::make_shared<Session>(gw_->ctx, weak_from_this(), ids::random_hex(8),
                                             std::chrono::steady_clock::now());
    {
      std::lock_guard lock(mu_);
      socket_ = socket;
      session_ = session;
    }
    socket->after(std::chrono::duration_cast<std::chrono::milliseconds>(gw_->options.hello_timeout),
                  [session] { session->on_hello_timeout(); });
  }

  void on_message(std::string_view data, bool binary) override {
    if (binary) {
      close(Close::Protocol, "binary frames are not part of kiln.v1");
      return;
    }
    session_->on_text(data, std::chrono::steady_clock::now());
  }

  void on_closed() override {
    std::shared_ptr<Session> session;
    {
      std::lock_guard lock(mu_);
      socket_.reset();  // the transport holds this handler: no cycle is left
      session = session_;
    }
    if (session) session->on_closed();
    if (admitted_) gw_->remove(this);
  }

  // Transport (the session's view)
  void send(std::shared_ptr<const std::string> frame) override {
    if (auto s = socket()) s->send(std::move(frame));
  }
  void close(Close code, std::string reason) override {
    if (auto s = socket())
      s->close(static_cast<std::uint16_t>(code), std::move(reason), code == Close::SlowConsumer);
  }
  void run(std::function<void()> fn) override {
    if (auto s = socket()) s->post(std::move(fn));
  }

  // Connection (the gateway's registry)
  void drain_close(std::int64_t after_ms) override {
    send(std::make_shared<const std::string>(collab::encode::reconnect(after_ms)));
    close(Close::Restarting, "restarting");
  }
  void with_session(std::function<void(Session&)> fn) override {
    auto s = socket();
    if (!s) return;
    s->post([self = shared_from_this(), fn = std::move(fn)] {
      if (auto session = self->session()) fn(*session);
    });
  }
  std::shared_ptr<Session> session() override {
    std::lock_guard lock(mu_);
    return session_;
  }

 private:
  std::shared_ptr<http::WebSocket> socket() {
    std::lock_guard lock(mu_);
    return socket_;
  }

  std::shared_ptr<Gateway::Impl> gw_;
  bool admitted_ = false;  // strand only
  std::mutex mu_;
  std::shared_ptr<http::WebSocket> socket_;  // from on_open to on_closed
  std::shared_ptr<Session> session_;
};

}  // namespace

http::UpgradeHandler collab_endpoint(const std::shared_ptr<Gateway::Impl>& gw) {
  http::WebSocketOptions o;
  o.subprotocol = std::string(collab::kSubprotocol);
  o.idle_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(gw->options.heartbeat * 2);
  o.max_message_bytes = gw->options.max_frame_bytes;
  o.too_large_code = static_cast<std::uint16_t>(Close::TooLarge);
  o.max_queue_bytes = gw->options.max_queue_bytes;
  o.slow_consumer_code = static_cast<std::uint16_t>(Close::SlowConsumer);
  o.metrics.messages_out = &gw->frames_out;
  o.metrics.closes = &gw->closes;
  o.metrics.limit_trips = &gw->limit_trips;
  return http::websocket_endpoint(std::move(o),
                                  [gw] { return std::make_shared<CollabConnection>(gw); });
}

}  // namespace kiln::gateway
