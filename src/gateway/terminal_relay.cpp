#include "gateway/terminal_relay.hpp"

#include <boost/json.hpp>

namespace kiln::gateway::detail {

namespace json = boost::json;

namespace {
constexpr std::uint16_t kNormal = 1000;
constexpr std::size_t kMaxWaiting = 64;  // frames before the host's handshake
}  // namespace

void Upstream::on_open(std::shared_ptr<http::WebSocket> socket) {
  std::lock_guard lock(mu_);
  opened_ = true;
  if (left_) return socket->close(kNormal, "the client left");
  socket_ = std::move(socket);
  socket_->send(std::make_shared<const std::string>(std::move(attach_)));
  for (auto& f : waiting_) socket_->send(std::move(f));
  waiting_.clear();
}

void Upstream::on_message(std::string_view data, bool) {
  auto d = down_.lock();
  if (!d) return;
  if (std::exchange(first_, false)) {  // {"t":"attached","session":<the host's id>,...}
    boost::system::error_code ec;
    auto v = json::parse(data, ec);
    if (auto* o = ec ? nullptr : v.if_object(); o && o->contains("session")) {
      (*o)["session"] = session_;
      return d->from_upstream(json::serialize(*o));
    }
  }
  d->from_upstream(data);
}

void Upstream::on_peer_closed(std::uint16_t code, std::string_view reason) {
  std::lock_guard lock(mu_);
  code_ = code;
  reason_ = std::string(reason);
}

void Upstream::on_closed() {
  bool opened = false;
  std::uint16_t code = 0;
  std::string reason;
  {
    std::lock_guard lock(mu_);
    socket_.reset();
    opened = opened_;
    code = code_;
    reason = reason_;
  }
  if (auto d = down_.lock()) d->upstream_ended(opened, code, reason);
}

bool Upstream::send(std::string frame) {
  std::lock_guard lock(mu_);
  auto f = std::make_shared<const std::string>(std::move(frame));
  if (socket_) {
    socket_->send(std::move(f));
  } else if (!left_) {
    if (waiting_.size() >= kMaxWaiting) return false;
    waiting_.push_back(std::move(f));
  }
  return true;
}

void Upstream::leave() {
  std::lock_guard lock(mu_);
  left_ = true;
  waiting_.clear();
  if (socket_) socket_->close(kNormal, "the client left");
}

}  // namespace kiln::gateway::detail
