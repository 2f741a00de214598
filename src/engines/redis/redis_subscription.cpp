// The Redis room engine: one subscriber connection per Redis node, the room channels on
// it, and what arrives on them (ops, eph, presence), moved when the cluster moves a slot.
#include "engines/redis/redis_engine_impl.hpp"

namespace kiln::engines {

using namespace scripts;

// The subscriber connection to one node (created on first use).
std::shared_ptr<redis::Connection> RedisRoomEngine::Impl::subscriber_at(const redis::Endpoint& ep) {
  std::lock_guard lock(mu);
  auto& conn = subscribers[ep.str()];
  if (!conn) {
    auto o = options.connection;
    o.endpoint = ep;
    conn = redis::Connection::create(runtime, o);
    std::weak_ptr<Impl> weak = shared_from_this();
    conn->on_push([weak](const Reply& r) {
      if (auto self = weak.lock()) self->on_push(r);
    });
    auto first = std::make_shared<bool>(true);
    conn->on_state([weak, ep, first](bool up) {
      auto self = weak.lock();
      if (!self) return;
      if (!up) {
        // The node may be gone for good (a failed primary): move its rooms' subscriptions
        // to whichever node now serves their slot.
        self->runtime.after(std::chrono::milliseconds(300), [weak, ep] {
          if (auto s = weak.lock()) s->relocate(ep);
        });
        return;
      }
      if (*first) {
        *first = false;
        return;
      }
      self->resubscribe(ep);  // the same node came back
    });
  }
  return conn;
}

// Subscribes the room's channel on the node that serves its slot now. A node that is
// not the owner answers MOVED (the slot map was not loaded yet, or is stale): follow it.
void RedisRoomEngine::Impl::subscribe(const std::shared_ptr<Room>& room,
                                      redis::Connection::Callback done,
                                      std::optional<redis::Endpoint> at, int attempt) {
  const auto channel = key(room->id, "ch");
  const auto ep = at ? *at : client->endpoint_for(channel);
  {
    std::lock_guard lock(mu);
    room->sub_endpoint = ep.str();
  }
  std::weak_ptr<Impl> weak = shared_from_this();
  subscriber_at(ep)->command(
      {"SSUBSCRIBE", channel}, [weak, room, done = std::move(done), attempt](Reply r) mutable {
        auto self = weak.lock();
        if (!self) return;
        if (auto redirect = redis::parse_redirect(r); redirect && attempt < 5) {
          self->subscribe(room, std::move(done), redirect->to, attempt + 1);
          return;
        }
        done(std::move(r));
      });
}

std::vector<std::shared_ptr<RedisRoomEngine::Impl::Room>> RedisRoomEngine::Impl::rooms_on(
    const redis::Endpoint& ep) {
  std::vector<std::shared_ptr<Room>> out;
  std::lock_guard lock(mu);
  for (auto& [id, room] : rooms) {
    if (room->sub_endpoint == ep.str()) out.push_back(room);
  }
  return out;
}

// After a subscriber reconnects to the same node: subscribe again, fill what was missed.
void RedisRoomEngine::Impl::resubscribe(const redis::Endpoint& ep) {
  for (auto& room : rooms_on(ep)) {
    subscribe(room, [](Reply) {});
    check_seq(room);
  }
}

// After a subscriber lost its node: once the slot map names another node for a room,
// subscribe there and fill the gap; until then, try again.
void RedisRoomEngine::Impl::relocate(const redis::Endpoint& ep) {
  if (closed) return;
  auto affected = rooms_on(ep);
  if (affected.empty()) return;
  bool waiting = false;
  for (auto& room : affected) {
    check_seq(room);  // also makes the cluster client refresh its slot map
    if (client->endpoint_for(key(room->id, "ch")) == ep) {
      waiting = true;
      continue;
    }
    std::weak_ptr<Impl> weak = shared_from_this();
    log::warn("redis engine: moving a room's subscription",
              {{"room", room->id}, {"from", ep.str()}});
    subscribe(room, [weak, room](Reply r) {
      auto self = weak.lock();
      if (self && !r.is_error()) self->check_seq(room);
    });
  }
  const auto conn = subscriber_at(ep);
  if (waiting && !conn->up()) {
    std::weak_ptr<Impl> weak = shared_from_this();
    runtime.after(std::chrono::milliseconds(500), [weak, ep] {
      if (auto s = weak.lock()) s->relocate(ep);
    });
  }
}

void RedisRoomEngine::Impl::on_push(const Reply& r) {
  if (r.elements.size() >= 2 && r.elements[0].str == "sunsubscribe") {
    // The server dropped our subscription (its slot moved): subscribe where it is now.
    const std::string& channel = r.elements[1].str;
    auto open = channel.find('{');
    auto close = channel.rfind('}');
    if (open == std::string::npos || close == std::string::npos || close <= open) return;
    if (auto room = find(channel.substr(open + 1, close - open - 1))) {
      std::weak_ptr<Impl> weak = shared_from_this();
      subscribe(room, [weak, room](Reply) {
        if (auto self = weak.lock()) self->check_seq(room);
      });
    }
    return;
  }
  if (r.elements.size() < 3 || r.elements[0].str != "smessage") return;
  const std::string& channel = r.elements[1].str;
  // channel = <prefix>:{<room>}:ch
  auto open = channel.find('{');
  auto close = channel.rfind('}');
  if (open == std::string::npos || close == std::string::npos || close <= open) return;
  auto room = find(channel.substr(open + 1, close - open - 1));
  if (!room) return;
  const std::string& payload = r.elements[2].str;
  if (payload.empty()) return;
  auto* s = sink.load();
  switch (payload[0]) {
    case 'o':
      if (auto m = decode_ops(payload)) on_ops_message(room, std::move(*m));
      break;
    case 'e':
      if (s) deliver_eph(*s, room->id, payload.substr(2));
      break;
    case 'p':
      if (s) deliver_presence(*s, room->id, payload.substr(2));
      break;
    default:
      break;
  }
}

void RedisRoomEngine::Impl::deliver_eph(collab::RoomEvents& s, const std::string& room,
                                        std::string_view body) {
  boost::system::error_code ec;
  auto v = json::parse(body, ec);
  if (ec || !v.is_object()) return;
  collab::EphBatch b{room, field(v, "n"), {}};
  const auto* entries = v.as_object().if_contains("b");
  if (entries == nullptr || !entries->is_array()) return;
  for (const auto& e : entries->get_array()) {
    b.entries.push_back(
        collab::encode::EphEntry{field(e, "u"), field(e, "s"), field(e, "k"), field(e, "d")});
  }
  auto r = find(room);
  if (!r) return;
  std::lock_guard lock(r->mu);
  s.on_eph(b);
}

void RedisRoomEngine::Impl::deliver_presence(collab::RoomEvents& s, const std::string& room,
                                             std::string_view body) {
  boost::system::error_code ec;
  auto v = json::parse(body, ec);
  if (ec || !v.is_object()) return;
  collab::PresenceEvent ev{room, {}, {}};
  if (auto* j = v.as_object().if_contains("j"); j && j->is_array()) {
    for (const auto& m : j->get_array()) {
      ev.joined.push_back({field(m, "u"), field(m, "s"), field(m, "n"), {}});
    }
  }
  if (auto* l = v.as_object().if_contains("l"); l && l->is_array()) {
    for (const auto& x : l->get_array()) ev.left.push_back(str(x));
  }
  auto r = find(room);
  if (!r) return;
  std::lock_guard lock(r->mu);
  s.on_presence(ev);
}

}  // namespace kiln::engines
