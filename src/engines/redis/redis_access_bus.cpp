#include "engines/redis/redis_access_bus.hpp"

#include "platform/log.hpp"

#include <boost/json.hpp>

#include <future>

namespace kiln::engines {

namespace json = boost::json;

struct RedisAccessBus::State : std::enable_shared_from_this<State> {
  std::shared_ptr<redis::Client> client;
  std::shared_ptr<redis::Connection> sub;
  std::string channel;
  std::chrono::milliseconds publish_wait{1'000};
  std::mutex mu;
  std::vector<Handler> handlers;
  bool subscribed = false;

  void deliver(const redis::Reply& r) {
    if (r.elements.size() < 3 || r.elements[0].str != "message" || r.elements[1].str != channel)
      return;
    auto change = decode(r.elements[2].str);
    if (!change) {
      log::warn("access bus: unreadable message", {{"channel", channel}});
      return;
    }
    std::vector<Handler> hs;
    {
      std::lock_guard lock(mu);
      hs = handlers;
    }
    for (auto& h : hs) h(*change);
  }

  void subscribe_now() {
    sub->command({"SUBSCRIBE", channel}, [ch = channel](redis::Reply r) {
      if (r.is_error())
        log::warn("access bus: SUBSCRIBE failed", {{"channel", ch}, {"error", r.str}});
    });
  }
};

RedisAccessBus::RedisAccessBus(Runtime& runtime, std::shared_ptr<redis::Client> client,
                               redis::ConnectionOptions subscribe_at, std::string prefix)
    : state_(std::make_shared<State>()) {
  state_->client = std::move(client);
  state_->channel = prefix + ":access";
  state_->publish_wait = subscribe_at.command_timeout + std::chrono::milliseconds(100);
  state_->sub = redis::Connection::create(runtime, std::move(subscribe_at));
  std::weak_ptr<State> weak = state_;
  state_->sub->on_push([weak](const redis::Reply& r) {
    if (auto s = weak.lock()) s->deliver(r);
  });
  auto first = std::make_shared<bool>(true);
  state_->sub->on_state([weak, first](bool up) {
    auto s = weak.lock();
    if (!s || !up) return;
    if (*first) {
      *first = false;
      return;
    }
    s->subscribe_now();  // the connection came back: subscribe again
  });
}

RedisAccessBus::~RedisAccessBus() {
  close();
}

void RedisAccessBus::close() {
  state_->sub->close();
}

void RedisAccessBus::publish(const collab::AccessChange& change) {
  const auto& ch = state_->channel;
  auto taken = std::make_shared<std::promise<void>>();
  auto future = taken->get_future();
  state_->client->command(ch, {"PUBLISH", ch, encode(change)}, [ch, taken](redis::Reply r) {
    if (r.is_error()) log::warn("access bus: PUBLISH failed", {{"channel", ch}, {"error", r.str}});
    taken->set_value();
  });
  // The caller (an API request) answers once Redis has passed the change on to the
  // subscribers, so a client that acts on the answer finds the gateways told.
  if (future.wait_for(state_->publish_wait) != std::future_status::ready)
    log::warn("access bus: PUBLISH unanswered; the gateways read it within their access TTL",
              {{"channel", ch}});
}

void RedisAccessBus::subscribe(Handler handler) {
  bool first = false;
  {
    std::lock_guard lock(state_->mu);
    state_->handlers.push_back(std::move(handler));
    first = !std::exchange(state_->subscribed, true);
  }
  if (first) state_->subscribe_now();
}

namespace {

using Kind = collab::AccessChange::Kind;
constexpr std::pair<Kind, std::string_view> kKinds[] = {
    {Kind::Role, "role"},
    {Kind::ProjectDeleted, "project_deleted"},
    {Kind::Revoked, "revoked"},
    {Kind::SceneDeleted, "scene_deleted"},
    {Kind::SceneCreated, "scene_created"},
    {Kind::Notify, "notify"},
};

}  // namespace

std::string RedisAccessBus::encode(const collab::AccessChange& c) {
  std::string_view kind = "role";
  for (const auto& [k, name] : kKinds) {
    if (k == c.kind) kind = name;
  }
  json::object o{{"k", kind}, {"u", c.user}, {"p", c.project}, {"r", c.role}};
  if (!c.scene.empty()) o["s"] = c.scene;
  if (!c.payload.empty()) o["n"] = c.payload;
  return json::serialize(o);
}

std::optional<collab::AccessChange> RedisAccessBus::decode(std::string_view text) {
  boost::system::error_code ec;
  auto v = json::parse(text, ec);
  if (ec || !v.is_object()) return std::nullopt;
  const auto& o = v.as_object();
  auto str = [&](const char* f) -> std::optional<std::string> {
    const auto* x = o.if_contains(f);
    if (!x || !x->is_string()) return std::nullopt;
    return std::string(x->get_string());
  };
  auto k = str("k"), u = str("u"), p = str("p"), r = str("r");
  if (!k || !u || !p || !r) return std::nullopt;
  collab::AccessChange c;
  bool known = false;
  for (const auto& [kind, name] : kKinds) {
    if (name == *k) {
      c.kind = kind;
      known = true;
    }
  }
  if (!known) return std::nullopt;
  c.user = *u;
  c.project = *p;
  c.role = *r;
  c.scene = str("s").value_or("");
  c.payload = str("n").value_or("");
  if (c.kind == Kind::Notify && c.payload.empty()) return std::nullopt;
  return c;
}

}  // namespace kiln::engines
