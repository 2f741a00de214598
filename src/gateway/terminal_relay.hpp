// The terminal endpoint's relay to a sandbox host (terminal.cpp's, nothing else's): one
// host connection per relayed client connection. The attach frame goes first, then the
// client's frames in order; what the host sends goes to the client as it is (its answer to
// the attach given the id the client knows), and how the host's connection ended.
#pragma once

#include "platform/websocket.hpp"

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::gateway::detail {

// The client's side, as the relay tells it (any thread).
class Downstream {
 public:
  virtual ~Downstream() = default;
  // A frame of the host's, for the client.
  virtual void from_upstream(std::string_view data) = 0;
  // The host's connection ended: `opened` whether it had been made; the host's close code
  // and reason (1006 and why when there was none).
  virtual void upstream_ended(bool opened, std::uint16_t code, const std::string& reason) = 0;
};

// Whether the host's close code may be passed on to the client (RFC 6455 7.4: 1005, 1006
// and 1015 are never sent).
inline bool sendable(std::uint16_t code) {
  return code == 1000 || (code >= 1001 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}

class Upstream final : public http::WebSocketHandler {
 public:
  // `attach`: the frame that goes first; `session`: the id the client knows.
  Upstream(std::weak_ptr<Downstream> down, std::string attach, std::string session)
      : down_(std::move(down)), attach_(std::move(attach)), session_(std::move(session)) {}
  std::optional<http::WebSocketRefusal> admit(const http::Request&) override { return {}; }
  void on_open(std::shared_ptr<http::WebSocket> socket) override;
  void on_message(std::string_view data, bool binary) override;
  void on_peer_closed(std::uint16_t code, std::string_view reason) override;
  void on_closed() override;
  // The client's frame, in order; false when too many wait for the host's handshake.
  bool send(std::string frame);
  // The client is gone: the host's connection closes (the session goes on).
  void leave();

 private:
  std::weak_ptr<Downstream> down_;
  std::string attach_, session_;
  bool first_ = true;  // the next message is the host's answer to the attach
  std::mutex mu_;
  std::shared_ptr<http::WebSocket> socket_;
  std::vector<std::shared_ptr<const std::string>> waiting_;
  bool opened_ = false, left_ = false;
  std::uint16_t code_ = 1006;
  std::string reason_;
};

}  // namespace kiln::gateway::detail
