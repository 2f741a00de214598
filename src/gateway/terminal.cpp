#include "gateway/terminal.hpp"
#include "gateway/terminal_relay.hpp"
#include "gateway/terminal_tracker.hpp"

#include "auth/jwt.hpp"
#include "platform/codec.hpp"
#include "platform/log.hpp"
#include "sandbox/remote/remote.hpp"
#include "sandbox/sessions.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <chrono>
#include <deque>
#include <mutex>
#include <vector>

namespace kiln::gateway {
namespace {

namespace json = boost::json;
using sandbox::Exit;

enum Close : std::uint16_t {
  kNormal = 1000,
  kRestart = 1012,
  kTryLater = 1013,
  kSlowConsumer = 1008,
  kInvalid = 4000,
  kUnauthenticated = 4001,
  kNoSession = 4004,
  kTooMany = 4029,
  kBadOffset = 4400,
};

std::shared_ptr<const std::string> frame(json::object o) {
  return std::make_shared<const std::string>(json::serialize(o));
}

std::shared_ptr<const std::string> out_frame(std::uint64_t offset, std::string_view bytes) {
  return frame({{"t", "out"}, {"offset", offset}, {"data", codec::base64(bytes)}});
}

std::shared_ptr<const std::string> exit_frame(const Exit& e) {
  return frame({{"t", "exit"},
                {"code", e.code},
                {"signal", e.signal},
                {"reason", sandbox::to_string(e.reason)},
                {"message", e.message}});
}

std::int64_t system_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A relay's target and the loop its host connections run on.
struct RelayTo {
  Runtime& runtime;
  TerminalRelay target;
};

// One connection: unauthenticated until its attach frame, then a view of one session (here,
// or a sandbox host's through an Upstream).
class TerminalConnection final : public http::WebSocketHandler,
                                 public detail::Downstream,
                                 public std::enable_shared_from_this<TerminalConnection> {
 public:
  TerminalConnection(std::shared_ptr<const TerminalOptions> o, const auth::Verifier* v,
                     sandbox::Sessions* s, std::shared_ptr<const RelayTo> relay,
                     std::shared_ptr<detail::Tracker> tracker)
      : owned_(std::move(o)),
        options_(*owned_),
        verifier_(v),
        sessions_(s),
        relay_(std::move(relay)),
        tracker_(std::move(tracker)) {
    std::lock_guard lock(tracker_->mu);
    ++tracker_->live;
  }
  ~TerminalConnection() override {
    if (claimed_) tracker_->release(user_);
    tracker_->gone();
  }

  std::optional<http::WebSocketRefusal> admit(const http::Request& head) override {
    if (!options_.trusted_key.empty() && !sandbox::remote::authorized(head, options_.trusted_key))
      return http::WebSocketRefusal{
          401, "this endpoint takes the cluster's service key (api.service_key)"};
    return {};
  }

  void on_open(std::shared_ptr<http::WebSocket> socket) override {
    socket_ = std::move(socket);
    std::weak_ptr<TerminalConnection> weak = shared_from_this();
    socket_->after(options_.hello_timeout, [weak] {
      if (auto self = weak.lock(); self && self->state_ == State::waiting)
        self->close(kUnauthenticated, "no attach frame in time");
    });
  }

  void on_message(std::string_view data, bool binary) override {
    // While the attach's token is checked, every frame waits as it came (even one that is
    // not JSON): handled in order once the attach is answered.
    if (state_ == State::checking) {
      if (held_.size() >= kMaxHeld)
        return close(kInvalid, "too many frames before the attach was answered");
      held_.emplace_back(std::string(data), binary);
      return;
    }
    if (binary) return close(kInvalid, "kiln.term.v1 frames are JSON text");
    // Relayed: every frame after the attach goes to the host as it is, which checks it in
    // order after its answer to the attach (a bad one closes 4000 there, passed on).
    if (relay_ && state_ == State::attached) {
      if (!upstream_->send(std::string(data)))
        close(kInvalid, "too many frames before the sandbox host answered");
      return;
    }
    boost::system::error_code ec;
    auto v = json::parse(data, ec);
    if (ec) return close(kInvalid, "not valid JSON (" + ec.message() + ")");
    const auto* o = v.if_object();
    const auto* t = o ? o->if_contains("t") : nullptr;
    if (!t || !t->is_string()) return close(kInvalid, "a frame is a JSON object with a \"t\"");
    const auto type = std::string_view(t->as_string());
    if (state_ == State::waiting) {
      if (type != "attach") return close(kUnauthenticated, "the first frame is an attach");
      return attach(*o);
    }
    if (state_ != State::attached) return;
    if (type == "in") {
      const auto* d = o->if_contains("data");
      if (!d || !d->is_string()) return close(kInvalid, "in: \"data\" is a string");
      if (auto r = sessions_->input(user_, session_, std::string_view(d->as_string())); !r)
        socket_->send(frame({{"t", "error"}, {"message", r.error().detail}}));
    } else if (type == "resize") {
      const auto* rows = o->if_contains("rows");
      const auto* cols = o->if_contains("cols");
      if (!rows || !cols || !rows->is_int64() || !cols->is_int64() || rows->as_int64() < 1 ||
          cols->as_int64() < 1 || rows->as_int64() > 1000 || cols->as_int64() > 1000)
        return close(kInvalid, "resize: \"rows\" and \"cols\" are integers 1-1000");
      sandbox::Terminal size{static_cast<std::uint16_t>(rows->as_int64()),
                             static_cast<std::uint16_t>(cols->as_int64())};
      if (auto r = sessions_->resize(user_, session_, size); !r)
        socket_->send(frame({{"t", "error"}, {"message", r.error().detail}}));
    } else if (type == "attach") {
      close(kInvalid, "already attached");
    } else {
      close(kInvalid, "unknown frame type");
    }
  }

  // The attached user (empty before the attach is answered). Any thread.
  std::string user() {
    std::lock_guard lock(mu_);
    return attached_user_;
  }

  // From any thread (a drain).
  void shut(std::uint16_t code, const std::string& reason) {
    std::lock_guard lock(mu_);
    if (socket_) socket_->close(code, reason);
  }

  void on_closed() override {
    std::shared_ptr<void> handle;
    {
      std::lock_guard lock(mu_);
      handle = std::move(handle_);
      socket_.reset();
      state_ = State::closed;
    }
    // Detached (the session goes on) outside mu_: detaching takes the session's lock, which
    // its reader holds while it calls deliver(), which takes mu_.
    handle.reset();
    if (upstream_) upstream_->leave();
  }

  // A relay: the host's frame for the client, as it is. Any thread.
  void from_upstream(std::string_view data) override {
    std::lock_guard lock(mu_);
    if (socket_) socket_->send(std::make_shared<const std::string>(data));
  }
  // A relay: the host's connection ended (`opened`: it had been made); the client's closes
  // with the host's code, or 1013 when there was none to pass on. Any thread.
  void upstream_ended(bool opened, std::uint16_t code, const std::string& reason) override {
    std::lock_guard lock(mu_);
    if (!socket_) return;
    if (!opened) {
      // The operator's to mend (the reason names no secret: the host's status or the
      // network's words).
      log::warn("terminals: the sandbox host refused or did not answer a relay",
                {{"session", session_}, {"reason", reason.substr(0, 200)}});
      if (reason.find("HTTP 401") != std::string::npos)
        return socket_->close(kTryLater,
                              "the sandbox host refused this gateway's service key "
                              "(api.service_key must be the same on both)");
      socket_->close(kTryLater, "the sandbox host did not answer: " + reason);
    } else if (!detail::sendable(code)) {
      socket_->close(kTryLater, "the connection to the sandbox host was lost: " + reason);
    } else {
      socket_->close(code, reason);
    }
  }

 private:
  enum class State { waiting, checking, attached, closed };

  void close(std::uint16_t code, std::string reason) {
    if (socket_) socket_->close(code, std::move(reason));
    state_ = State::closed;
  }

  void attach(const json::object& o) {
    const auto* token = o.if_contains("token");
    const auto* session = o.if_contains("session");
    const auto* offset = o.if_contains("offset");
    if (options_.trusted_key.empty() && (!token || !token->is_string()))
      return close(kUnauthenticated, "attach: a \"token\"");
    if (!session || !session->is_string() || session->as_string().empty() ||
        session->as_string().size() > 64)
      return close(kInvalid, "attach: a \"session\" id");
    std::uint64_t from = 0;
    if (offset) {
      if (offset->is_uint64()) {
        from = offset->as_uint64();
      } else if (offset->is_int64() && offset->as_int64() >= 0) {
        from = static_cast<std::uint64_t>(offset->as_int64());
      } else {
        return close(kInvalid, "attach: \"offset\" is a byte offset (0 or more)");
      }
    }
    if (!options_.trusted_key.empty()) {  // a sandbox host: the relay names the user
      const auto* user = o.if_contains("user");
      if (!user || !user->is_string() ||
          !sandbox::remote::valid_user(std::string_view(user->as_string())))
        return close(kInvalid, "attach: a \"user\" (the service key acts for one)");
      user_ = std::string(user->as_string());
      session_ = std::string(session->as_string());
      state_ = State::checking;
      return attach_now(from);
    }
    const auto r = verifier_->verify(std::string_view(token->as_string()),
                                     options_.now_unix ? options_.now_unix() : system_now());
    if (!r.ok) {
      const bool jwt = std::count(token->as_string().begin(), token->as_string().end(), '.') == 2;
      return close(kUnauthenticated, jwt ? r.error
                                         : "attach with a user's token (a JWT): terminal sessions "
                                           "belong to users, the service key has none");
    }
    user_ = r.claims.sub;
    session_ = std::string(session->as_string());
    state_ = State::checking;
    if (!options_.revocation_check) return attach_now(from);  // nothing held yet
    std::weak_ptr<TerminalConnection> weak = shared_from_this();
    auto socket = socket_;
    options_.revocation_check(user_, r.claims.ver, [weak, socket, from](bool revoked) {
      socket->post([weak, from, revoked] {
        auto self = weak.lock();
        if (!self || self->state_ != State::checking) return;
        if (revoked) return self->close(kUnauthenticated, "this token was revoked");
        self->attach_now(from);
        self->replay_held();
      });
    });
  }

  // Output before the backlog is sent waits behind it (the session's reader may call the
  // listener as soon as attach() returns).
  void attach_now(std::uint64_t from) {
    if (!tracker_->claim(user_, options_.max_connections_per_user))
      return close(kTooMany, "this user has " + std::to_string(options_.max_connections_per_user) +
                                 " terminal connections here already: close one");
    claimed_ = true;
    if (relay_) return relay(from);
    std::weak_ptr<TerminalConnection> weak = shared_from_this();
    sandbox::Listener listener{[weak](std::uint64_t offset, std::string_view bytes) {
                                 if (auto self = weak.lock())
                                   self->deliver(out_frame(offset, bytes), false);
                               },
                               [weak](const Exit& e) {
                                 if (auto self = weak.lock()) self->deliver(exit_frame(e), true);
                               }};
    auto a = sessions_->attach(user_, session_, from, std::move(listener));
    if (!a) {
      if (a.error().code == sandbox::Errc::invalid) return close(kBadOffset, a.error().detail);
      return close(kNoSession, a.error().detail);
    }
    std::lock_guard lock(mu_);
    handle_ = std::move(a->handle);
    attached_user_ = user_;
    const auto& b = a->backlog;
    socket_->send(frame({{"t", "attached"},
                         {"session", session_},
                         {"from", b.from},
                         {"lost", b.lost},
                         {"end", b.from + b.bytes.size()}}));
    for (std::size_t at = 0; at < b.bytes.size(); at += 16 * 1024)
      socket_->send(out_frame(b.from + at, std::string_view(b.bytes).substr(at, 16 * 1024)));
    state_ = State::attached;
    if (a->exit) pending_.emplace_back(exit_frame(*a->exit), true);
    flush_locked();
  }

  // The host's connection: opened now, the attach sent first once it is made; the client's
  // frames go after it.
  void relay(std::uint64_t from) {
    // The session's id names its host; the host knows it by the rest.
    const TerminalRelay::Host* host = nullptr;
    auto parts = sandbox::remote::split_id(session_);
    if (parts) {
      for (const auto& h : relay_->target.hosts)
        if (h.key == parts->first) host = &h;
    }
    if (!host) return close(kNoSession, "no such session");
    upstream_ = std::make_shared<detail::Upstream>(
        weak_from_this(),
        json::serialize(json::object{
            {"t", "attach"}, {"user", user_}, {"session", parts->second}, {"offset", from}}),
        session_);
    {
      std::lock_guard lock(mu_);
      attached_user_ = user_;
    }
    state_ = State::attached;
    http::WebSocketOptions o;
    o.subprotocol = kTerminalSubprotocol;
    o.idle_timeout = options_.idle_timeout;
    o.max_message_bytes = 1u << 20;  // the host's out frames: 16 KiB of output, base64
    http::WebSocketTarget t;
    t.host = host->host;
    t.port = host->port;
    t.path = sandbox::remote::kTermPath;
    t.headers = {{"Authorization", "Bearer " + relay_->target.service_key}};
    t.connect_timeout = relay_->target.connect_timeout;
    http::websocket_connect(relay_->runtime, std::move(o), std::move(t), upstream_);
  }

  // Frames that came while the token was checked, in order (on the strand, after attach).
  void replay_held() {
    auto held = std::move(held_);
    held_.clear();
    for (const auto& [f, binary] : held) {
      if (state_ != State::attached) break;
      on_message(f, binary);
    }
  }

  void deliver(std::shared_ptr<const std::string> f, bool last) {
    std::lock_guard lock(mu_);
    pending_.emplace_back(std::move(f), last);
    if (state_ == State::attached) flush_locked();
  }

  void flush_locked() {
    for (auto& [f, last] : pending_) {
      if (!socket_) break;
      socket_->send(std::move(f));
      if (last) socket_->close(kNormal, "the session ended");
    }
    pending_.clear();
  }

  std::shared_ptr<const TerminalOptions> owned_;
  const TerminalOptions& options_;
  const auth::Verifier* verifier_;        // null: trusted
  sandbox::Sessions* sessions_;           // local and trusted
  std::shared_ptr<const RelayTo> relay_;  // relay
  std::shared_ptr<detail::Tracker> tracker_;
  bool claimed_ = false;  // counted in tracker_->attached (user_ set for good then)
  std::shared_ptr<detail::Upstream> upstream_;  // strand only (set before any frame is relayed)
  std::shared_ptr<http::WebSocket> socket_;
  State state_ = State::waiting;  // strand only
  std::string user_, session_;
  std::mutex mu_;  // pending_, handle_, socket_ from the session's reader thread
  std::deque<std::pair<std::shared_ptr<const std::string>, bool>> pending_;
  std::shared_ptr<void> handle_;
  std::string attached_user_;  // under mu_: revoke() reads it from another thread
  static constexpr std::size_t kMaxHeld = 64;
  std::vector<std::pair<std::string, bool>> held_;  // strand only: (frame, binary)
};

}  // namespace

struct TerminalEndpoint::Impl {
  Impl(TerminalOptions o, const auth::Verifier* v, sandbox::Sessions* s,
       std::shared_ptr<const RelayTo> r)
      : options(std::make_shared<const TerminalOptions>(std::move(o))),
        verifier(v),
        sessions(s),
        relay(std::move(r)) {}
  std::shared_ptr<const TerminalOptions> options;
  const auth::Verifier* verifier;  // null: trusted
  sandbox::Sessions* sessions;
  std::shared_ptr<const RelayTo> relay;
  std::shared_ptr<detail::Tracker> tracker = std::make_shared<detail::Tracker>();
  std::mutex mu;
  std::vector<std::weak_ptr<TerminalConnection>> live;
  // The live connections; `forget`: no longer tracked (a drain: none is closed twice).
  std::vector<std::shared_ptr<TerminalConnection>> connections(bool forget);
};

TerminalEndpoint::TerminalEndpoint(TerminalOptions options, const auth::Verifier* verifier,
                                   sandbox::Sessions& sessions)
    : impl_(std::make_shared<Impl>(std::move(options), verifier, &sessions, nullptr)) {}

TerminalEndpoint::TerminalEndpoint(TerminalOptions options, const auth::Verifier& verifier,
                                   Runtime& runtime, TerminalRelay relay)
    : impl_(std::make_shared<Impl>(std::move(options), &verifier, nullptr,
                                   std::make_shared<const RelayTo>(runtime, std::move(relay)))) {}

TerminalEndpoint::~TerminalEndpoint() = default;

namespace {
// Refuses every upgrade with 503 and the reason (terminals off on this node).
class Unavailable final : public http::WebSocketHandler {
 public:
  explicit Unavailable(std::string why) : why_(std::move(why)) {}
  std::optional<http::WebSocketRefusal> admit(const http::Request&) override {
    return http::WebSocketRefusal{503, "Terminals are not enabled on this node: " + why_};
  }
  void on_open(std::shared_ptr<http::WebSocket>) override {}
  void on_message(std::string_view, bool) override {}
  void on_closed() override {}

 private:
  std::string why_;
};
}  // namespace

http::UpgradeHandler terminal_unavailable(std::string why) {
  http::WebSocketOptions o;
  o.subprotocol = kTerminalSubprotocol;
  return http::websocket_endpoint(
      std::move(o), [why = std::move(why)] { return std::make_shared<Unavailable>(why); });
}

http::UpgradeHandler TerminalEndpoint::handler() const {
  const auto& options = *impl_->options;
  http::WebSocketOptions o;
  o.subprotocol = kTerminalSubprotocol;
  o.idle_timeout = options.idle_timeout;
  o.max_message_bytes = options.max_message_bytes;
  o.too_large_code = kInvalid;
  o.max_queue_bytes = options.max_queue_bytes;
  o.slow_consumer_code = kSlowConsumer;
  // A terminal client that does not read gets nothing from a close frame it cannot read:
  // cut soon, so that its session counts it detached (the idle limit starts) at once.
  o.slow_consumer_grace = std::chrono::seconds(5);
  return http::websocket_endpoint(std::move(o), [impl = impl_] {
    auto c = std::make_shared<TerminalConnection>(impl->options, impl->verifier, impl->sessions,
                                                  impl->relay, impl->tracker);
    std::lock_guard lock(impl->mu);
    std::erase_if(impl->live, [](const auto& w) { return w.expired(); });
    impl->live.push_back(c);
    return c;
  });
}

std::vector<std::shared_ptr<TerminalConnection>> TerminalEndpoint::Impl::connections(bool forget) {
  std::vector<std::shared_ptr<TerminalConnection>> all;
  std::lock_guard lock(mu);
  for (auto& w : live)
    if (auto c = w.lock()) all.push_back(std::move(c));
  if (forget) live.clear();
  return all;
}

std::size_t TerminalEndpoint::revoke(const std::string& user) {
  std::size_t n = 0;
  for (auto& c : impl_->connections(false)) {
    if (c->user() != user) continue;
    c->shut(kUnauthenticated, "your tokens were revoked");
    ++n;
  }
  return n;
}

void TerminalEndpoint::drain(const std::string& reason, std::function<void()> done) {
  {
    std::lock_guard lock(impl_->tracker->mu);
    if (impl_->tracker->live > 0) impl_->tracker->on_empty = std::move(done);
  }
  if (done) done();  // none was open
  close_all(reason);
}

std::size_t TerminalEndpoint::close_all(const std::string& reason) {
  auto all = impl_->connections(true);
  for (auto& c : all) c->shut(kRestart, reason);
  return all.size();
}

}  // namespace kiln::gateway
