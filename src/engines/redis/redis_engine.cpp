#include "engines/redis/redis_engine.hpp"

#include "engines/redis/redis_scripts.hpp"
#include "engines/redis/room_copy.hpp"

#include "collab/scene.hpp"
#include "platform/log.hpp"
#include "platform/runtime.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <charconv>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>

namespace kiln::engines {

using collab::Code;
using collab::Error;
using redis::Reply;
namespace json = boost::json;

using namespace scripts;

struct RedisRoomEngine::Impl : std::enable_shared_from_this<Impl> {
  struct PendingJoin {
    collab::Member member;
    std::optional<collab::Since> since;
    std::function<void(collab::JoinResult)> done;
  };

  struct Room {
    std::string id;
    std::mutex mu;
    enum class State { Subscribing, Loading, Ready } state = State::Subscribing;
    RoomCopy copy;  // scene, seq, resume window, buffered and held batches, submit queue
    bool filling = false;
    std::vector<PendingJoin> joins;
    std::map<std::string, collab::Member> local;  // this node's members, by session
    std::string sub_endpoint;  // the node its channel is subscribed on (under Impl::mu)
    bool appending = false;    // a group is with Redis
    bool catch_up_armed = false;
    int joining = 0;                   // joins queued or waiting for Redis
    std::atomic<bool> evicted{false};  // dropped from the node: a join must make a new one
    Room(std::string r, std::size_t max_entities, std::size_t retention)
        : id(r), copy(std::move(r), max_entities, retention) {}
    bool ready() const { return state == State::Ready; }
  };

  Impl(Runtime& rt, std::shared_ptr<redis::Client> c, RedisEngineOptions o,
       std::function<std::string()> e)
      : runtime(rt), client(std::move(c)), options(std::move(o)), make_epoch(std::move(e)) {}

  Runtime& runtime;
  std::shared_ptr<redis::Client> client;
  RedisEngineOptions options;
  std::function<std::string()> make_epoch;
  std::atomic<collab::RoomEvents*> sink{nullptr};
  collab::RoomLoader loader;  // set before the first join

  std::mutex mu;  // rooms, subscribers
  std::unordered_map<std::string, std::shared_ptr<Room>> rooms;
  std::map<std::string, std::shared_ptr<redis::Connection>> subscribers;  // by endpoint
  bool closed = false;

  std::string key(const std::string& room, const char* what) const {
    return options.prefix + ":{" + room + "}:" + what;
  }

  std::shared_ptr<Room> find(const std::string& id) {
    std::lock_guard lock(mu);
    auto it = rooms.find(id);
    return it == rooms.end() ? nullptr : it->second;
  }

  // --- subscription ------------------------------------------------------------------

  // The subscriber connection to one node (created on first use).
  std::shared_ptr<redis::Connection> subscriber_at(const redis::Endpoint& ep) {
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
  void subscribe(const std::shared_ptr<Room>& room, redis::Connection::Callback done,
                 std::optional<redis::Endpoint> at = std::nullopt, int attempt = 0) {
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

  std::vector<std::shared_ptr<Room>> rooms_on(const redis::Endpoint& ep) {
    std::vector<std::shared_ptr<Room>> out;
    std::lock_guard lock(mu);
    for (auto& [id, room] : rooms) {
      if (room->sub_endpoint == ep.str()) out.push_back(room);
    }
    return out;
  }

  // After a subscriber reconnects to the same node: subscribe again, fill what was missed.
  void resubscribe(const redis::Endpoint& ep) {
    for (auto& room : rooms_on(ep)) {
      subscribe(room, [](Reply) {});
      check_seq(room);
    }
  }

  // After a subscriber lost its node: once the slot map names another node for a room,
  // subscribe there and fill the gap; until then, try again.
  void relocate(const redis::Endpoint& ep) {
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

  void on_push(const Reply& r) {
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

  void deliver_eph(collab::RoomEvents& s, const std::string& room, std::string_view body) {
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

  void deliver_presence(collab::RoomEvents& s, const std::string& room, std::string_view body) {
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

  // --- the node's copy of a room -----------------------------------------------------

  // What the copy hands on as it applies a batch: the hub gets it; every snapshot_every
  // batches the author's node stores a snapshot in Redis, which lets the log be trimmed and
  // keeps loading the room cheap. Room lock held while it runs.
  RoomCopy::Applied applied_fn(Room& room) {
    return [this, &room](const collab::OpsEvent& ev) {
      if (auto* s = sink.load()) s->on_ops(ev);
      if (ev.seq % options.snapshot_every == 0 && room.local.count(ev.author_session) != 0)
        store_snapshot(room, ev.seq);
    };
  }

  void store_snapshot(Room& room, std::uint64_t seq) {
    const std::string id = room.id;
    client->eval(kSnapshot, {key(id, "meta"), key(id, "snap"), key(id, "log")},
                 {std::to_string(seq), json::serialize(room.copy.scene().snapshot()),
                  std::to_string(options.limits.log_retention)},
                 [id](Reply r) {
                   if (r.is_error())
                     log::warn("redis engine: snapshot failed", {{"room", id}, {"error", r.str}});
                 });
  }

  // A logged batch that does not apply to the copy: the copy is wrong; start it again.
  void broken(const std::shared_ptr<Room>& room) {
    log::error("redis engine: a logged batch does not apply; reloading the room",
               {{"room", room->id}, {"seq", static_cast<std::int64_t>(room->copy.seq() + 1)}});
    reload(room);
  }

  void on_ops_message(const std::shared_ptr<Room>& room, OpsMessage m) {
    std::lock_guard lock(room->mu);
    switch (room->copy.receive(std::move(m), room->ready(), applied_fn(*room))) {
      case RoomCopy::Arrival::Buffered:
        if (room->ready() && room->copy.gap()) fill(room);
        return;
      case RoomCopy::Arrival::Duplicate:
        return;
      case RoomCopy::Arrival::Broken:
        broken(room);
        return;
      case RoomCopy::Arrival::Applied:
        pump(room);
        return;
    }
  }

  // Applies buffered messages that have become next in line, then sends the next group if
  // it was waiting for the copy. Room lock held.
  void drain_early(const std::shared_ptr<Room>& room) {
    if (!room->copy.drain(applied_fn(*room))) {
      broken(room);
      return;
    }
    pump(room);
  }

  // Fetches the batches between the copy's seq and the first early message. Room lock held.
  void fill(const std::shared_ptr<Room>& room) {
    if (room->filling) return;
    room->filling = true;
    const std::uint64_t from = room->copy.seq() + 1;
    std::weak_ptr<Impl> weak = shared_from_this();
    client->command(
        key(room->id, "log"),
        {"XRANGE", key(room->id, "log"), std::to_string(from) + "-0", "+", "COUNT", "1000"},
        [weak, room, from](Reply r) {
          auto self = weak.lock();
          if (!self) return;
          std::lock_guard lock(room->mu);
          room->filling = false;
          if (r.is_error()) {
            log::warn("redis engine: gap fill failed", {{"room", room->id}, {"error", r.str}});
            self->runtime.after(std::chrono::milliseconds(100), [weak, room] {
              if (auto s = weak.lock()) {
                std::lock_guard l(room->mu);
                if (room->copy.gap() || room->copy.behind()) s->fill(room);
              }
            });
            return;
          }
          bool first = true;
          for (const auto& entry : r.elements) {
            if (entry.elements.size() < 2 || entry.elements[1].elements.size() < 2) continue;
            auto m = decode_ops(entry.elements[1].elements[1].str);
            if (!m) continue;
            if (first && m->seq != from && m->seq > room->copy.seq() + 1) {
              // The log no longer holds what we missed: start over from Redis.
              // The hub sees the jump and tells the members to resume.
              self->reload(room);
              return;
            }
            first = false;
            if (room->copy.receive(std::move(*m), room->ready(), self->applied_fn(*room)) ==
                RoomCopy::Arrival::Broken) {
              self->broken(room);
              return;
            }
          }
          self->drain_early(room);
          if (room->ready() && room->copy.gap()) self->fill(room);
        });
  }

  // Asks Redis for the room's seq and fills when the copy is behind (after a lost
  // subscription).
  void check_seq(const std::shared_ptr<Room>& room) {
    std::weak_ptr<Impl> weak = shared_from_this();
    client->command(key(room->id, "meta"), {"HGET", key(room->id, "meta"), "seq"},
                    [weak, room](Reply r) {
                      auto self = weak.lock();
                      if (!self || r.is_error() || r.is_nil()) return;
                      const auto seq = reply_u64(r);
                      std::lock_guard lock(room->mu);
                      if (room->state != Room::State::Ready) return;
                      if (seq > room->copy.seq()) self->fill(room);
                      if (seq < room->copy.seq()) self->history_lost(room);
                    });
  }

  // Loads the room from Redis (after subscribing, so nothing published meanwhile is lost).
  void load(const std::shared_ptr<Room>& room) {
    std::weak_ptr<Impl> weak = shared_from_this();
    client->eval(kLoad, {key(room->id, "meta"), key(room->id, "snap"), key(room->id, "log")},
                 {make_epoch(), std::to_string(options.limits.log_retention), loader ? "1" : "0"},
                 [weak, room](Reply r) {
                   auto self = weak.lock();
                   if (!self) return;
                   if (r.elements.size() == 1 && r.elements[0].str == "absent") {
                     self->load_stored(room);
                     return;
                   }
                   if (r.is_error() || r.elements.size() < 5) {
                     log::warn("redis engine: loading a room failed",
                               {{"room", room->id}, {"error", r.str}});
                     self->fail_joins(room, "room engine unavailable: " + r.str);
                     return;
                   }
                   self->loaded(room, r);
                 });
  }

  // The room is not in Redis: seed it from the latest stored snapshot (a new epoch), then
  // load it as usual. Nodes racing to seed it agree: the first seed wins.
  void load_stored(const std::shared_ptr<Room>& room) {
    std::weak_ptr<Impl> weak = shared_from_this();
    loader(room->id, [weak, room](std::optional<collab::StoredRoom> stored, std::string error) {
      auto self = weak.lock();
      if (!self) return;
      if (!error.empty()) {
        log::warn("redis engine: cannot load a room from the database",
                  {{"room", room->id}, {"error", error}});
        self->fail_joins(room, "cannot load the room: " + error);
        return;
      }
      const auto seq = stored ? stored->seq : 0;
      self->client->eval(
          kSeed,
          {self->key(room->id, "meta"), self->key(room->id, "snap"), self->key(room->id, "log")},
          {self->make_epoch(), std::to_string(seq), stored ? stored->snapshot : std::string()},
          [weak, room](Reply r) {
            auto self = weak.lock();
            if (!self) return;
            if (r.is_error()) {
              self->fail_joins(room, "room engine unavailable: " + r.str);
              return;
            }
            self->load(room);
          });
    });
  }

  void loaded(const std::shared_ptr<Room>& room, const Reply& r) {
    std::unique_lock lock(room->mu);
    auto rb = rebuild(r, options.limits.max_entities, options.limits.log_retention);
    if (!rb) {
      lock.unlock();
      fail_joins(room, "the room's snapshot in Redis is unreadable");
      return;
    }
    room->copy.reset(std::move(*rb));
    room->state = Room::State::Ready;
    drain_early(room);
    auto joins = std::move(room->joins);
    room->joins.clear();
    lock.unlock();
    for (auto& j : joins) add_member(room, std::move(j));
  }

  // Redis has fewer batches than this node applied: they were lost with a primary. Mark a
  // new epoch, reload, and have every local member resynchronise. Room lock held.
  // The seq compared may be stale (read before batches this node has applied since), so
  // only the script, which compares with Redis's seq now, decides; and only then is it
  // logged and counted.
  void history_lost(const std::shared_ptr<Room>& room) {
    std::weak_ptr<Impl> weak = shared_from_this();
    const auto observed = room->copy.seq();
    client->eval(kHistoryLost, {key(room->id, "meta")},
                 {std::to_string(observed), make_epoch(), room->copy.epoch()},
                 [weak, room, observed](Reply r) {
                   auto self = weak.lock();
                   // 0: Redis is not behind after all (the seq we compared was stale).
                   if (!self || r.is_error() || r.integer == 0) return;
                   if (r.integer == 1) {  // this node started the new epoch: said once
                     log::warn(
                         "redis engine: the room's history went backwards; starting a new epoch",
                         {{"room", room->id}, {"seq", static_cast<std::int64_t>(observed)}});
                     if (self->options.on_history_lost) self->options.on_history_lost();
                   }
                   std::lock_guard lock(room->mu);
                   if (auto* s = self->sink.load()) s->on_reset(room->id);
                   self->reload(room);
                 });
  }

  // The queue stays: it is validated against the reloaded copy.
  void reload(const std::shared_ptr<Room>& room) {
    room->state = Room::State::Loading;
    room->copy.forget_pending();
    load(room);
  }

  void fail_joins(const std::shared_ptr<Room>& room, const std::string& why) {
    std::vector<PendingJoin> joins;
    {
      std::lock_guard lock(room->mu);
      joins.swap(room->joins);
      room->joining -= static_cast<int>(joins.size());
      if (room->state != Room::State::Ready) {
        std::lock_guard l(mu);
        rooms.erase(room->id);
      }
    }
    for (auto& j : joins) {
      collab::JoinResult res;
      res.error = collab::fail(Code::Unavailable, why);
      j.done(std::move(res));
    }
  }

  // Registers the member in Redis, then answers from the copy (room ready).
  void add_member(const std::shared_ptr<Room>& room, PendingJoin j) {
    const auto expiry =
        std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::system_clock::now().time_since_epoch() + options.presence_ttl)
            .count();
    json::object me{{"u", j.member.user}, {"n", j.member.name}, {"node", j.member.node}};
    json::object joined_msg{
        {"j", json::array{json::object{
                  {"u", j.member.user}, {"s", j.member.session}, {"n", j.member.name}}}}};
    std::weak_ptr<Impl> weak = shared_from_this();
    auto shared_join = std::make_shared<PendingJoin>(std::move(j));
    client->eval(
        kJoin, {key(room->id, "members"), key(room->id, "presence"), key(room->id, "eph")},
        {shared_join->member.session, json::serialize(me), std::to_string(expiry),
         std::to_string(options.limits.max_members), key(room->id, "ch"),
         "p\n" + json::serialize(joined_msg)},
        [weak, room, shared_join](Reply r) {
          auto self = weak.lock();
          if (!self) return;
          auto& pj = *shared_join;
          collab::JoinResult res;
          if (r.is_error() || r.elements.empty() || r.elements[0].integer == 0) {
            {
              std::lock_guard lock(room->mu);
              --room->joining;
            }
            self->schedule_evict(room);
          }
          if (r.is_error() || r.elements.empty()) {
            res.error = collab::fail(Code::Unavailable, "room engine unavailable: " + r.str);
            pj.done(std::move(res));
            return;
          }
          if (r.elements[0].integer == 0) {
            res.error = collab::fail_limit("members_per_room", Code::TooLarge,
                                           "the room holds at most " +
                                               std::to_string(self->options.limits.max_members) +
                                               " members");
            pj.done(std::move(res));
            return;
          }
          // Presence from Redis: every member but the joiner, with their eph.
          std::map<std::string, collab::encode::PresenceMember> members;
          const auto& mh = r.elements[1].elements;
          for (std::size_t i = 0; i + 1 < mh.size(); i += 2) {
            if (mh[i].str == pj.member.session) continue;
            boost::system::error_code ec;
            auto v = json::parse(mh[i + 1].str, ec);
            if (ec || !v.is_object()) continue;
            members[mh[i].str] =
                collab::encode::PresenceMember{field(v, "u"), mh[i].str, field(v, "n"), {}};
          }
          const auto& eh = r.elements[2].elements;
          for (std::size_t i = 0; i + 1 < eh.size(); i += 2) {
            auto colon = eh[i].str.find(':');
            if (colon == std::string::npos) continue;
            auto it = members.find(eh[i].str.substr(0, colon));
            if (it != members.end())
              it->second.eph.emplace_back(eh[i].str.substr(colon + 1), eh[i + 1].str);
          }
          std::lock_guard lock(room->mu);
          room->local[pj.member.session] = pj.member;
          --room->joining;
          res = room->copy.answer(pj.since);
          for (auto& [s, m] : members) res.presence.push_back(std::move(m));
          // Under the room lock: no later batch reaches the hub before this answer.
          pj.done(std::move(res));
        });
  }

  // Drops the room from this node once no member of it is here (after evict_after).
  void schedule_evict(const std::shared_ptr<Room>& room) {
    std::weak_ptr<Impl> weak = shared_from_this();
    runtime.after(options.evict_after, [weak, room] {
      if (auto self = weak.lock()) self->evict(room);
    });
  }

  void evict(const std::shared_ptr<Room>& room) {
    {
      std::lock_guard lock(room->mu);
      if (!room->local.empty() || room->joining > 0 || !room->joins.empty() ||
          room->copy.queued() != 0 || room->appending || room->state != Room::State::Ready ||
          room->evicted.load()) {
        return;
      }
      room->evicted.store(true);
    }
    // Under `mu`, so that a join that makes a new copy subscribes after this unsubscribe
    // on the same connection (commands keep their order).
    std::lock_guard lock(mu);
    auto it = rooms.find(room->id);
    if (it == rooms.end() || it->second != room) return;
    rooms.erase(it);
    auto sub = subscribers.find(room->sub_endpoint);
    if (sub != subscribers.end())
      sub->second->command({"SUNSUBSCRIBE", key(room->id, "ch")}, [](Reply) {});
  }

  void join(const std::string& id, const collab::Member& member,
            const std::optional<collab::Since>& since,
            std::function<void(collab::JoinResult)> done) {
    std::shared_ptr<Room> room;
    bool created = false;
    for (;;) {
      {
        std::lock_guard lock(mu);
        auto& slot = rooms[id];
        if (!slot || slot->evicted.load()) {
          slot =
              std::make_shared<Room>(id, options.limits.max_entities, options.limits.log_retention);
          created = true;
        }
        room = slot;
      }
      std::lock_guard lock(room->mu);
      if (room->evicted.load()) {  // evicted between the two locks: take a new one
        created = false;
        continue;
      }
      ++room->joining;
      if (room->state != Room::State::Ready) {
        room->joins.push_back(PendingJoin{member, since, std::move(done)});
      } else {
        lock_free_add(room, PendingJoin{member, since, std::move(done)});
      }
      break;
    }
    if (!created) return;
    // Subscribe first, then load: anything published in between is buffered as early.
    std::weak_ptr<Impl> weak = shared_from_this();
    subscribe(room, [weak, room](Reply r) {
      auto self = weak.lock();
      if (!self) return;
      if (r.is_error()) {
        self->fail_joins(room, "cannot subscribe to the room: " + r.str);
        return;
      }
      {
        std::lock_guard lock(room->mu);
        room->state = Room::State::Loading;
      }
      self->load(room);
    });
  }

  // add_member must not run under the room lock (its reply takes it): defer it.
  void lock_free_add(const std::shared_ptr<Room>& room, PendingJoin j) {
    auto shared = std::make_shared<PendingJoin>(std::move(j));
    std::weak_ptr<Impl> weak = shared_from_this();
    runtime.post([weak, room, shared] {
      if (auto self = weak.lock()) self->add_member(room, std::move(*shared));
    });
  }

  void remove_sessions(const std::string& room_id, std::vector<std::string> sessions,
                       const std::string& now_ms) {
    std::vector<std::string> args{key(room_id, "ch"), now_ms};
    args.insert(args.end(), sessions.begin(), sessions.end());
    client->eval(kLeave, {key(room_id, "members"), key(room_id, "presence"), key(room_id, "eph")},
                 std::move(args), [room_id](Reply r) {
                   if (r.is_error())
                     log::warn("redis engine: leave failed", {{"room", room_id}, {"error", r.str}});
                 });
  }

  // --- the submit pipeline ------------------------------------------------------------
  // Batches wait in the room's queue in arrival order. One group at a time is with Redis:
  // the queue's head validated in order against the copy (each against the state the
  // earlier ones leave), appended together if the room is still at the copy's seq. On a
  // conflict the group goes back to the head of the queue, the copy catches up, and the
  // queue is validated again, in the same order. So one author's batches (one session is on
  // one node) land in the order sent, and contention costs latency, never a refusal.

  void submit(const std::string& id, Submission sub) {
    auto room = find(id);
    if (!room) {
      sub.refused(collab::fail(Code::Forbidden, "join the room first"));
      return;
    }
    std::lock_guard lock(room->mu);
    const auto waiting = room->copy.queued();
    auto refused = sub.refused;
    if (!room->copy.enqueue(std::move(sub), options.max_queued)) {
      // The room receives more than Redis takes: back-pressure, with a time to retry.
      if (options.on_busy) options.on_busy();
      refused(collab::fail_limit("room_queue", Code::Unavailable,
                                 "the room has " + std::to_string(waiting) +
                                     " batches waiting on this node; send again later",
                                 options.busy_retry_after.count()));
      return;
    }
    pump(room);
  }

  // Sends the next group when nothing is with Redis and the copy is current. Room lock held.
  void pump(const std::shared_ptr<Room>& room) {
    while (!room->appending && room->ready() && room->copy.may_send()) {
      auto group = room->copy.take_group(options.max_group);
      for (auto& [sub, why] : group.refused) sub.refused(std::move(why));
      if (!group.batches.empty()) send_group(room, std::move(group));
    }
  }

  // Room lock held.
  void send_group(const std::shared_ptr<Room>& room, RoomCopy::Group group) {
    const std::uint64_t expected = room->copy.seq();
    std::vector<std::string> args{std::to_string(expected), room->copy.epoch(),
                                  key(room->id, "ch")};
    args.reserve(3 + group.messages.size());
    for (auto& m : group.messages) args.push_back(std::move(m));
    // With ack durability, this node holds its own batches back until the replicas have
    // them (marked before the append, whose messages may arrive before the reply).
    if (options.ack_replicas > 0) {
      for (std::size_t i = 1; i <= group.batches.size(); ++i) room->copy.hold(expected + i);
    }
    room->appending = true;
    if (options.on_group) options.on_group(group.batches.size());
    std::weak_ptr<Impl> weak = shared_from_this();
    const auto id = room->id;
    auto batches = std::make_shared<std::vector<Submission>>(std::move(group.batches));
    client->eval(kAppend, {key(id, "meta"), key(id, "log")}, std::move(args),
                 [weak, room, batches, expected](Reply r) {
                   if (auto self = weak.lock())
                     self->group_answered(room, std::move(*batches), expected, r);
                 });
  }

  void group_answered(const std::shared_ptr<Room>& room, std::vector<Submission> group,
                      std::uint64_t expected, const Reply& r) {
    const bool answered = !r.is_error() && r.elements.size() >= 2;
    const auto outcome = answered ? r.elements[0].integer : 0;
    const std::uint64_t last = expected + group.size();
    if (options.ack_replicas > 0) {
      if (outcome == 1) {
        await_replicas(room, expected + 1, last);
      } else {
        release(room, expected + 1, last);
      }
    }
    std::lock_guard lock(room->mu);
    room->appending = false;
    if (!answered) {
      // Redis did not answer (down, or a timeout): whether the group landed is unknown to
      // this node, so the authors are told so; resuming tells them the rest.
      log::warn("redis engine: appending batches failed", {{"room", room->id}, {"error", r.str}});
      for (auto& sub : group)
        sub.refused(collab::fail(Code::Unavailable, "room engine unavailable: " + r.str,
                                 options.busy_retry_after.count()));
      arm_catch_up(room);
      return;
    }
    if (outcome == 1) {
      // The group is in: its batches come back on the channel, which acks them. The next
      // group waits until the copy holds them (a fair start against the other nodes).
      room->copy.wait_for(last);
      mark_dirty(room->id, last);
      arm_catch_up(room);
      pump(room);
      return;
    }
    if (outcome == -1) {
      // A new epoch (another node saw history lost) or the keys are gone: this node's copy
      // is void and its members resynchronise. The group is not in; it is refused.
      for (auto& sub : group)
        sub.refused(collab::fail(Code::Unavailable, "the room restarted; join it again", 100));
      if (room->ready()) {
        if (auto* s = sink.load()) s->on_reset(room->id);
        reload(room);
      }
      return;
    }
    // Someone else appended first: back to the head of the queue, in order; validated
    // again once the copy has caught up.
    if (options.on_conflict) options.on_conflict();
    room->copy.requeue(std::move(group));
    const auto redis_seq = reply_u64(r.elements[1]);
    if (redis_seq > room->copy.seq()) {
      room->copy.wait_for(redis_seq);
      arm_catch_up(room);
    } else if (redis_seq < room->copy.seq()) {
      history_lost(room);
    }
    pump(room);
  }

  // The copy normally catches up from the channel within a millisecond; if it has not
  // after catch_up_after (a lost message, a moved subscription), it reads the log.
  void arm_catch_up(const std::shared_ptr<Room>& room) {
    if (room->catch_up_armed) return;
    room->catch_up_armed = true;
    std::weak_ptr<Impl> weak = shared_from_this();
    runtime.after(options.catch_up_after, [weak, room] {
      auto self = weak.lock();
      if (!self) return;
      std::lock_guard lock(room->mu);
      room->catch_up_armed = false;
      if (!room->ready()) return;
      if (room->copy.behind()) {
        self->fill(room);
        self->arm_catch_up(room);
      } else {
        self->pump(room);
      }
    });
  }

  // Marks the room for the persister. Not atomic with the append (another slot in a
  // Cluster): a mark lost with this node is found by the persister's reconciliation.
  void mark_dirty(const std::string& id, std::uint64_t seq) {
    const auto dirty = options.prefix + ":dirty";
    client->command(dirty, {"ZADD", dirty, "GT", std::to_string(seq), id}, [id](Reply z) {
      if (z.is_error())
        log::warn("redis engine: dirty mark failed", {{"room", id}, {"error", z.str}});
    });
  }

  // WAIT on the connection that carried the append (one per node): every earlier write on
  // it, ours included, must reach the replicas. Then the batch is delivered.
  void await_replicas(const std::shared_ptr<Room>& room, std::uint64_t first, std::uint64_t last) {
    std::weak_ptr<Impl> weak = shared_from_this();
    client->command(key(room->id, "meta"),
                    {"WAIT", std::to_string(options.ack_replicas),
                     std::to_string(options.wait_timeout.count())},
                    [weak, room, first, last](Reply r) {
                      auto self = weak.lock();
                      if (!self) return;
                      if (r.is_error() || r.integer < self->options.ack_replicas) {
                        log::warn(
                            "redis engine: replicas did not confirm a batch in time; acking anyway",
                            {{"room", room->id},
                             {"seq", static_cast<std::int64_t>(last)},
                             {"replicas", static_cast<std::int64_t>(r.integer)}});
                        if (self->options.on_wait_timeout) self->options.on_wait_timeout();
                      }
                      self->release(room, first, last);
                    });
  }

  void release(const std::shared_ptr<Room>& room, std::uint64_t first, std::uint64_t last) {
    std::lock_guard lock(room->mu);
    if (room->copy.release(first, last)) drain_early(room);
  }
};

RedisRoomEngine::RedisRoomEngine(Runtime& runtime, std::shared_ptr<redis::Client> client,
                                 RedisEngineOptions options,
                                 std::function<std::string()> make_epoch)
    : impl_(std::make_shared<Impl>(runtime, client, options, std::move(make_epoch))),
      persist_(std::move(client), options.prefix, options.limits.max_entities) {}

RedisRoomEngine::~RedisRoomEngine() {
  close();
}

void RedisRoomEngine::set_events(collab::RoomEvents* sink) {
  impl_->sink.store(sink);
}

void RedisRoomEngine::join(const std::string& room, const collab::Member& member,
                           const std::optional<collab::Since>& since,
                           std::function<void(collab::JoinResult)> done) {
  impl_->join(room, member, since, std::move(done));
}

void RedisRoomEngine::leave(const std::string& room_id, const std::string& session) {
  if (auto room = impl_->find(room_id)) {
    bool empty = false;
    {
      std::lock_guard lock(room->mu);
      room->local.erase(session);
      empty = room->local.empty() && room->joining == 0;
    }
    if (empty) impl_->schedule_evict(room);
  }
  impl_->remove_sessions(room_id, {session}, "");
}

void RedisRoomEngine::submit(const std::string& room, const collab::Member& author,
                             std::int64_t request_id, std::vector<collab::Op> ops,
                             std::function<void(collab::Error)> refused) {
  impl_->submit(room, Submission{author, request_id,
                                 std::make_shared<std::vector<collab::Op>>(std::move(ops)),
                                 std::move(refused)});
}

void RedisRoomEngine::publish_eph(collab::EphBatch batch) {
  json::array entries;
  std::vector<std::string> args{impl_->key(batch.room, "ch"), ""};
  for (const auto& e : batch.entries) {
    entries.push_back(json::object{{"u", e.user}, {"s", e.session}, {"k", e.kind}, {"d", e.data}});
    args.push_back(e.session + ":" + e.kind);
    args.push_back(e.data);
  }
  args[1] =
      "e\n" + json::serialize(json::object{{"n", batch.origin_node}, {"b", std::move(entries)}});
  const auto room = batch.room;
  impl_->client->eval(
      kEph, {impl_->key(room, "members"), impl_->key(room, "eph")}, std::move(args),
      [room](Reply r) {
        if (r.is_error())
          log::warn("redis engine: eph publish failed", {{"room", room}, {"error", r.str}});
      });
}

void RedisRoomEngine::tick() {
  const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  const auto expiry = now + impl_->options.presence_ttl.count();
  std::vector<std::shared_ptr<Impl::Room>> rooms;
  {
    std::lock_guard lock(impl_->mu);
    for (auto& [id, r] : impl_->rooms) rooms.push_back(r);
  }
  for (auto& room : rooms) {
    std::vector<std::string> sessions;
    {
      std::lock_guard lock(room->mu);
      for (auto& [s, m] : room->local) sessions.push_back(s);
    }
    if (!sessions.empty()) {
      std::vector<std::string> args{"ZADD", impl_->key(room->id, "presence"), "XX"};
      for (const auto& s : sessions) {
        args.push_back(std::to_string(expiry));
        args.push_back(s);
      }
      impl_->client->command(impl_->key(room->id, "presence"), std::move(args), [](Reply) {});
    }
    // Members whose node stopped refreshing them are removed, and the room told.
    impl_->remove_sessions(room->id, {}, std::to_string(now));
  }
}

void RedisRoomEngine::set_loader(collab::RoomLoader loader) {
  impl_->loader = std::move(loader);
}

std::vector<collab::RoomVersion> RedisRoomEngine::dirty_rooms(std::size_t limit) {
  return persist_.dirty_rooms(limit);
}

std::vector<collab::RoomVersion> RedisRoomEngine::all_rooms() {
  return persist_.all_rooms();
}

std::optional<collab::RoomState> RedisRoomEngine::read_room(const std::string& room) {
  return persist_.read_room(room);
}

void RedisRoomEngine::mark_stored(const std::string& room, std::uint64_t seq) {
  persist_.mark_stored(room, seq);
}

std::size_t RedisRoomEngine::rooms() const {
  std::lock_guard lock(impl_->mu);
  return impl_->rooms.size();
}

void RedisRoomEngine::close() {
  std::lock_guard lock(impl_->mu);
  if (impl_->closed) return;
  impl_->closed = true;
  for (auto& [ep, c] : impl_->subscribers) c->close();
}

}  // namespace kiln::engines
