#include "engines/redis_engine.hpp"

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

namespace {

// KEYS meta snap log; ARGV new_epoch retention has_loader. The state to start a node's
// copy from; {'absent'} when the room is not in Redis and the node can load it from the
// database (has_loader '1'): then it seeds the room (kSeed) and loads again.
const redis::Script kLoad(R"lua(
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then return {'absent'} end
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
local m = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'snap_seq')
local seq = tonumber(m[2] or '0')
local snap_seq = tonumber(m[3] or '0')
local from = math.min(snap_seq, math.max(seq - tonumber(ARGV[2]), 0)) + 1
local snap = redis.call('GET', KEYS[2]) or ''
local log = redis.call('XRANGE', KEYS[3], from .. '-0', '+')
return {m[1], seq, snap_seq, snap, log}
)lua");

// KEYS meta snap log; ARGV epoch seq snapshot. Starts a room from its stored snapshot,
// unless another node did first. A log left without its meta is stale: dropped.
const redis::Script kSeed(R"lua(
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'seq', ARGV[2], 'snap_seq', ARGV[2])
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3]) end
return 1
)lua");

// KEYS meta snap log. The room's state for the persister, or {} when Redis does not hold it.
const redis::Script kRead(R"lua(
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local m = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'snap_seq')
local snap_seq = tonumber(m[3] or '0')
local snap = redis.call('GET', KEYS[2]) or ''
local log = redis.call('XRANGE', KEYS[3], (snap_seq + 1) .. '-0', '+')
return {m[1], tonumber(m[2] or '0'), snap_seq, snap, log}
)lua");

// KEYS dirty; ARGV room seq. Clears the room's dirty mark unless a later batch marked it.
const redis::Script kMarkStored(R"lua(
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) <= tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) return 1 end
return 0
)lua");

// KEYS meta log; ARGV expected_seq epoch channel message... Appends the messages (a group,
// seqs expected_seq+1...) and publishes each iff the room is at expected_seq of the same
// epoch: {1, seq} appended; {0, seq} another node appended first; {-1, 0} the epoch
// changed or the keys are gone.
const redis::Script kAppend(R"lua(
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch or epoch ~= ARGV[2] then return {-1, 0} end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
if seq ~= tonumber(ARGV[1]) then return {0, seq} end
for i = 4, #ARGV do
  seq = seq + 1
  redis.call('XADD', KEYS[2], seq .. '-0', 'm', ARGV[i])
  redis.call('SPUBLISH', ARGV[3], ARGV[i])
end
redis.call('HSET', KEYS[1], 'seq', seq)
return {1, seq}
)lua");

// KEYS meta; ARGV observed_seq new_epoch. Redis is behind what this node saw (a failover
// lost acknowledged batches): start a new epoch, once, so every client resynchronises.
const redis::Script kHistoryLost(R"lua(
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
if seq < tonumber(ARGV[1]) then redis.call('HSET', KEYS[1], 'epoch', ARGV[2]) return 1 end
return 0
)lua");

// KEYS meta snap log; ARGV snap_seq snapshot retention. Stores a newer snapshot and trims
// the log to what loading and resuming still need.
const redis::Script kSnapshot(R"lua(
local cur = tonumber(redis.call('HGET', KEYS[1], 'snap_seq') or '0')
local s = tonumber(ARGV[1])
if s <= cur then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], 'snap_seq', s)
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local keep_from = math.min(s, seq - tonumber(ARGV[3])) + 1
if keep_from > 1 then redis.call('XTRIM', KEYS[3], 'MINID', keep_from .. '-0') end
return 1
)lua");

// KEYS members presence eph; ARGV session member_json expiry_ms max_members channel message.
const redis::Script kJoin(R"lua(
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then
  return {0}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local members = redis.call('HGETALL', KEYS[1])
local eph = redis.call('HGETALL', KEYS[3])
redis.call('SPUBLISH', ARGV[5], ARGV[6])
return {1, members, eph}
)lua");

// KEYS members presence eph; ARGV channel now_ms session... Removes the sessions named (or,
// with now_ms set, every session whose presence expired) and tells the room who left.
const redis::Script kLeave(R"lua(
local list = {}
if ARGV[2] ~= '' then
  list = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
else
  for i = 3, #ARGV do list[#list + 1] = ARGV[i] end
end
local gone = {}
for _, s in ipairs(list) do
  if redis.call('HDEL', KEYS[1], s) == 1 then gone[#gone + 1] = s end
  redis.call('ZREM', KEYS[2], s)
  for _, f in ipairs(redis.call('HKEYS', KEYS[3])) do
    if string.sub(f, 1, #s + 1) == s .. ':' then redis.call('HDEL', KEYS[3], f) end
  end
end
if #gone > 0 then redis.call('SPUBLISH', ARGV[1], 'p\n' .. cjson.encode({l = gone})) end
return #gone
)lua");

// KEYS members eph; ARGV channel message (field data)... Stores latest eph of members only.
const redis::Script kEph(R"lua(
local any = false
for i = 3, #ARGV, 2 do
  local session = string.match(ARGV[i], '^([^:]*):')
  if session and redis.call('HEXISTS', KEYS[1], session) == 1 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    any = true
  end
end
if any then redis.call('SPUBLISH', ARGV[1], ARGV[2]) end
return 1
)lua");

std::string str(const json::value& v) {
  return v.is_string() ? std::string(v.get_string()) : std::string();
}

// A string field of a JSON object, or "" (messages on a channel are trusted but checked).
std::string field(const json::value& v, std::string_view name) {
  const auto* o = v.if_object();
  const auto* f = o ? o->if_contains(name) : nullptr;
  return f ? str(*f) : std::string();
}

std::uint64_t to_u64(std::string_view s) {
  std::uint64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

std::uint64_t reply_u64(const Reply& r) {
  if (r.type == Reply::Type::Integer) return static_cast<std::uint64_t>(r.integer);
  return to_u64(r.str);
}

// An 'o' message (published and stored in the log): fields separated by '\n'; the frame
// is JSON, so it holds no raw newline.
struct OpsMessage {
  std::uint64_t seq = 0;
  std::string user, session;
  std::int64_t request_id = 0;
  std::string frame;
};

std::string encode_ops(const OpsMessage& m) {
  return "o\n" + std::to_string(m.seq) + "\n" + m.user + "\n" + m.session + "\n" +
         std::to_string(m.request_id) + "\n" + m.frame;
}

std::optional<OpsMessage> decode_ops(std::string_view s) {
  std::vector<std::string_view> parts;
  for (int i = 0; i < 5; ++i) {
    auto nl = s.find('\n');
    if (nl == std::string_view::npos) return std::nullopt;
    parts.push_back(s.substr(0, nl));
    s.remove_prefix(nl + 1);
  }
  if (parts[0] != "o") return std::nullopt;
  OpsMessage m;
  m.seq = to_u64(parts[1]);
  m.user = parts[2];
  m.session = parts[3];
  std::from_chars(parts[4].data(), parts[4].data() + parts[4].size(), m.request_id);
  m.frame = s;
  return m;
}

// A room rebuilt from a kLoad/kRead reply {epoch, seq, snap_seq, snap, log}: the snapshot
// with the logged batches after it applied in order, and the log's frames for resuming.
struct Rebuilt {
  collab::Scene scene;
  std::string epoch;
  std::uint64_t seq = 0;
  std::deque<std::shared_ptr<const std::string>> log;
};

// nullopt when the stored snapshot is unreadable.
std::optional<Rebuilt> rebuild(const Reply& r, std::size_t max_entities, std::size_t retention) {
  Rebuilt out{collab::Scene(max_entities), r.elements[0].str, reply_u64(r.elements[2]), {}};
  const std::uint64_t snap_seq = out.seq;
  if (!r.elements[3].str.empty()) {
    boost::system::error_code ec;
    auto snap = json::parse(r.elements[3].str, ec);
    if (ec || collab::Scene::from_snapshot(snap, out.scene)) return std::nullopt;
  }
  std::deque<std::shared_ptr<const std::string>> older;  // resume tail before snap_seq
  for (const auto& entry : r.elements[4].elements) {
    if (entry.elements.size() < 2 || entry.elements[1].elements.size() < 2) continue;
    auto m = decode_ops(entry.elements[1].elements[1].str);
    if (!m) continue;
    if (m->seq <= snap_seq) {
      older.push_back(std::make_shared<const std::string>(m->frame));
      continue;
    }
    if (m->seq != out.seq + 1) break;
    std::vector<collab::Op> ops;
    boost::system::error_code ec;
    auto v = json::parse(m->frame, ec);
    if (ec || !v.is_object() || !v.as_object().contains("ops") ||
        collab::parse_batch(v.at("ops"), SIZE_MAX, ops) || out.scene.apply(ops)) {
      break;
    }
    out.seq = m->seq;
    out.log.push_back(std::make_shared<const std::string>(m->frame));
  }
  // The resume window: the log's tail, up to the retention.
  for (auto it = older.rbegin(); it != older.rend(); ++it) out.log.push_front(*it);
  while (out.log.size() > retention) out.log.pop_front();
  return out;
}

}  // namespace

struct RedisRoomEngine::Impl : std::enable_shared_from_this<Impl> {
  struct Submission {
    collab::Member author;
    std::int64_t request_id = 0;
    std::shared_ptr<std::vector<collab::Op>> ops;
    std::function<void(Error)> refused;
  };

  struct PendingJoin {
    collab::Member member;
    std::optional<collab::Since> since;
    std::function<void(collab::JoinResult)> done;
  };

  struct Room {
    std::string id;
    std::mutex mu;
    enum class State { Subscribing, Loading, Ready } state = State::Subscribing;
    collab::Scene scene;
    std::string epoch;
    std::uint64_t seq = 0;
    std::deque<std::shared_ptr<const std::string>> log;  // frames of (seq - log.size(), seq]
    std::map<std::uint64_t, OpsMessage> early;           // arrived ahead of a gap
    bool filling = false;
    std::vector<PendingJoin> joins;
    std::map<std::string, collab::Member> local;  // this node's members, by session
    std::string sub_endpoint;      // the node its channel is subscribed on (under Impl::mu)
    std::set<std::uint64_t> held;  // own batches awaiting replicas: not delivered yet
    std::deque<Submission> queue;  // this node's batches not yet appended, in arrival order
    bool appending = false;        // a group is with Redis
    std::uint64_t wait_seq = 0;    // the copy must reach it before the next group goes
    bool catch_up_armed = false;
    int joining = 0;                   // joins queued or waiting for Redis
    std::atomic<bool> evicted{false};  // dropped from the node: a join must make a new one
    Room(std::string r, std::size_t max_entities) : id(std::move(r)), scene(max_entities) {}
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

  // Applies one accepted batch to the copy and hands it to the hub. Room lock held.
  bool apply(Room& room, const OpsMessage& m) {
    boost::system::error_code ec;
    auto v = json::parse(m.frame, ec);
    std::vector<collab::Op> ops;
    if (ec || !v.is_object() || !v.as_object().contains("ops") ||
        collab::parse_batch(v.at("ops"), SIZE_MAX, ops) || room.scene.apply(ops)) {
      log::error("redis engine: a logged batch does not apply; reloading the room",
                 {{"room", room.id}, {"seq", static_cast<std::int64_t>(m.seq)}});
      return false;
    }
    room.seq = m.seq;
    auto frame = std::make_shared<const std::string>(m.frame);
    room.log.push_back(frame);
    while (room.log.size() > options.limits.log_retention) room.log.pop_front();
    if (auto* s = sink.load()) {
      s->on_ops(collab::OpsEvent{room.id, m.seq, m.user, m.session, m.request_id, frame});
    }
    // Every snapshot_every batches, the author's node stores a snapshot, which lets the log
    // be trimmed and keeps loading a room cheap.
    if (m.seq % options.snapshot_every == 0 && room.local.count(m.session) != 0) {
      const std::string id = room.id;
      client->eval(kSnapshot, {key(id, "meta"), key(id, "snap"), key(id, "log")},
                   {std::to_string(m.seq), json::serialize(room.scene.snapshot()),
                    std::to_string(options.limits.log_retention)},
                   [id](Reply r) {
                     if (r.is_error())
                       log::warn("redis engine: snapshot failed", {{"room", id}, {"error", r.str}});
                   });
    }
    return true;
  }

  void on_ops_message(const std::shared_ptr<Room>& room, OpsMessage m) {
    std::lock_guard lock(room->mu);
    if (room->state != Room::State::Ready || m.seq > room->seq + 1 ||
        room->held.count(m.seq) != 0) {
      room->early.emplace(m.seq, std::move(m));
      if (room->state == Room::State::Ready && room->early.begin()->first > room->seq + 1)
        fill(room);
      return;
    }
    if (m.seq <= room->seq) return;  // a duplicate (resubscribe, fill overlap)
    if (!apply(*room, m)) {
      reload(room);
      return;
    }
    drain_early(room);
  }

  // Applies buffered messages that have become next in line. Room lock held.
  // Then sends the next group if it was waiting for the copy.
  void drain_early(const std::shared_ptr<Room>& room) {
    while (!room->early.empty()) {
      auto it = room->early.begin();
      if (it->first <= room->seq) {
        room->early.erase(it);
        continue;
      }
      if (it->first != room->seq + 1 || room->held.count(it->first) != 0) break;
      auto m = std::move(it->second);
      room->early.erase(it);
      if (!apply(*room, m)) return;
    }
    pump(room);
  }

  // Fetches the batches between the copy's seq and the first early message. Room lock held.
  void fill(const std::shared_ptr<Room>& room) {
    if (room->filling) return;
    room->filling = true;
    const std::uint64_t from = room->seq + 1;
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
                if (!room->early.empty()) s->fill(room);
              }
            });
            return;
          }
          bool first = true;
          for (const auto& entry : r.elements) {
            if (entry.elements.size() < 2 || entry.elements[1].elements.size() < 2) continue;
            auto m = decode_ops(entry.elements[1].elements[1].str);
            if (!m) continue;
            if (first && m->seq != from && m->seq > room->seq + 1) {
              // The log no longer holds what we missed: start over from Redis.
              // The hub sees the jump and tells the members to resume.
              self->reload(room);
              return;
            }
            first = false;
            room->early.emplace(m->seq, std::move(*m));
          }
          self->drain_early(room);
          if (!room->early.empty() && room->early.begin()->first > room->seq + 1) self->fill(room);
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
                      if (seq > room->seq) self->fill(room);
                      if (seq < room->seq) self->history_lost(room);
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
    room->scene = std::move(rb->scene);
    room->epoch = std::move(rb->epoch);
    room->seq = rb->seq;
    room->log = std::move(rb->log);
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
    const auto observed = room->seq;
    client->eval(kHistoryLost, {key(room->id, "meta")}, {std::to_string(observed), make_epoch()},
                 [weak, room, observed](Reply r) {
                   auto self = weak.lock();
                   // 0: Redis is not behind after all (the seq we compared was stale).
                   if (!self || r.is_error() || r.integer != 1) return;
                   log::warn(
                       "redis engine: the room's history went backwards; starting a new epoch",
                       {{"room", room->id}, {"seq", static_cast<std::int64_t>(observed)}});
                   if (self->options.on_history_lost) self->options.on_history_lost();
                   std::lock_guard lock(room->mu);
                   if (auto* s = self->sink.load()) s->on_reset(room->id);
                   self->reload(room);
                 });
  }

  // The queue stays: it is validated against the reloaded copy.
  void reload(const std::shared_ptr<Room>& room) {
    room->state = Room::State::Loading;
    room->early.clear();
    room->held.clear();
    room->wait_seq = 0;
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
            res.error = collab::fail(
                Code::TooLarge, "the room holds at most " +
                                    std::to_string(self->options.limits.max_members) + " members");
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
          res.epoch = room->epoch;
          res.seq = room->seq;
          const std::uint64_t oldest = room->seq - room->log.size();
          const auto& since = pj.since;
          if (since && since->epoch == room->epoch && since->seq <= room->seq &&
              since->seq >= oldest) {
            res.recovered = true;
            res.ops.assign(room->log.begin() + static_cast<std::ptrdiff_t>(since->seq - oldest),
                           room->log.end());
          } else {
            res.snapshot = std::make_shared<const json::object>(room->scene.snapshot());
          }
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
          !room->queue.empty() || room->appending || room->state != Room::State::Ready ||
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
          slot = std::make_shared<Room>(id, options.limits.max_entities);
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
    if (room->queue.size() >= options.max_queued) {
      // The room receives more than Redis takes: back-pressure, with a time to retry.
      if (options.on_busy) options.on_busy();
      sub.refused(collab::fail(Code::Unavailable,
                               "the room has " + std::to_string(room->queue.size()) +
                                   " batches waiting on this node; send again later",
                               options.busy_retry_after.count()));
      return;
    }
    room->queue.push_back(std::move(sub));
    pump(room);
  }

  // Sends the next group when nothing is with Redis and the copy is current. Room lock held.
  void pump(const std::shared_ptr<Room>& room) {
    while (!room->appending && room->state == Room::State::Ready && !room->queue.empty() &&
           room->seq >= room->wait_seq && room->held.empty()) {
      auto group = take_group(*room);
      if (group->empty()) continue;  // every batch at the head was refused
      send_group(room, std::move(group));
    }
  }

  // Validates the queue's head in order; refuses what does not apply; returns the rest.
  std::shared_ptr<std::vector<Submission>> take_group(Room& room) {
    const std::size_t n = std::min(room.queue.size(), options.max_group);
    std::vector<const std::vector<collab::Op>*> batches;
    batches.reserve(n);
    for (std::size_t i = 0; i < n; ++i) batches.push_back(room.queue[i].ops.get());
    auto verdicts = room.scene.validate_sequence(batches);
    auto group = std::make_shared<std::vector<Submission>>();
    for (std::size_t i = 0; i < n; ++i) {
      if (verdicts[i]) {
        room.queue[i].refused(std::move(verdicts[i]));
      } else {
        group->push_back(std::move(room.queue[i]));
      }
    }
    room.queue.erase(room.queue.begin(), room.queue.begin() + static_cast<std::ptrdiff_t>(n));
    return group;
  }

  // Room lock held.
  void send_group(const std::shared_ptr<Room>& room,
                  std::shared_ptr<std::vector<Submission>> group) {
    const std::uint64_t expected = room->seq;
    std::vector<std::string> args{std::to_string(expected), room->epoch, key(room->id, "ch")};
    args.reserve(3 + group->size());
    for (std::size_t i = 0; i < group->size(); ++i) {
      const auto& sub = (*group)[i];
      json::array arr;
      arr.reserve(sub.ops->size());
      for (const auto& op : *sub.ops) arr.push_back(collab::to_json(op));
      const std::uint64_t seq = expected + 1 + i;
      args.push_back(
          encode_ops(OpsMessage{seq, sub.author.user, sub.author.session, sub.request_id,
                                collab::encode::ops(room->id, seq, sub.author.user, arr)}));
      // With ack durability, this node holds its own batches back until the replicas have
      // them (marked before the append, whose messages may arrive before the reply).
      if (options.ack_replicas > 0) room->held.insert(seq);
    }
    room->appending = true;
    if (options.on_group) options.on_group(group->size());
    std::weak_ptr<Impl> weak = shared_from_this();
    const auto id = room->id;
    client->eval(kAppend, {key(id, "meta"), key(id, "log")}, std::move(args),
                 [weak, room, group, expected](Reply r) {
                   if (auto self = weak.lock()) self->group_answered(room, *group, expected, r);
                 });
  }

  void group_answered(const std::shared_ptr<Room>& room, std::vector<Submission>& group,
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
      // this node, so the authors are told the truth, and resume tells them the rest.
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
      room->wait_seq = last;
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
      if (room->state == Room::State::Ready) {
        if (auto* s = sink.load()) s->on_reset(room->id);
        reload(room);
      }
      return;
    }
    // Someone else appended first: back to the head of the queue, in order; revalidated
    // once the copy has caught up.
    if (options.on_conflict) options.on_conflict();
    for (auto it = group.rbegin(); it != group.rend(); ++it) room->queue.push_front(std::move(*it));
    const auto redis_seq = reply_u64(r.elements[1]);
    if (redis_seq > room->seq) {
      room->wait_seq = std::max(room->wait_seq, redis_seq);
      arm_catch_up(room);
    } else if (redis_seq < room->seq) {
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
      if (room->state != Room::State::Ready) return;
      if (room->seq < room->wait_seq) {
        self->fill(room);
        self->arm_catch_up(room);
      } else if (!room->queue.empty() && !room->appending) {
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
    bool any = false;
    for (auto seq = first; seq <= last; ++seq) any = room->held.erase(seq) != 0 || any;
    if (any) drain_early(room);
  }
};

RedisRoomEngine::RedisRoomEngine(Runtime& runtime, std::shared_ptr<redis::Client> client,
                                 RedisEngineOptions options,
                                 std::function<std::string()> make_epoch)
    : impl_(std::make_shared<Impl>(runtime, std::move(client), std::move(options),
                                   std::move(make_epoch))) {}

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
  impl_->submit(room, Impl::Submission{author, request_id,
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

namespace {

// Runs one command and waits for its reply; throws when it fails (persister thread only).
Reply wait_reply(const std::function<void(redis::Client::Callback)>& send) {
  auto p = std::make_shared<std::promise<Reply>>();
  auto f = p->get_future();
  send([p](Reply r) { p->set_value(std::move(r)); });
  if (f.wait_for(std::chrono::seconds(30)) != std::future_status::ready)
    throw std::runtime_error("redis: no reply within 30 s");
  auto r = f.get();
  if (r.is_error()) throw std::runtime_error("redis: " + r.str);
  return r;
}

}  // namespace

std::vector<collab::RoomVersion> RedisRoomEngine::dirty_rooms(std::size_t limit) {
  const auto dirty = impl_->options.prefix + ":dirty";
  auto r = wait_reply([&](auto cb) {
    impl_->client->command(
        dirty,
        {"ZRANGE", dirty, "0", std::to_string(std::max<std::size_t>(limit, 1) - 1), "WITHSCORES"},
        std::move(cb));
  });
  std::vector<collab::RoomVersion> out;
  for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2)
    out.push_back(collab::RoomVersion{r.elements[i].str, to_u64(r.elements[i + 1].str)});
  return out;
}

std::vector<collab::RoomVersion> RedisRoomEngine::all_rooms() {
  // SCAN every primary for the rooms' meta keys, then ask each room's seq.
  const std::string head = impl_->options.prefix + ":{";
  const std::string tail = "}:meta";
  std::vector<std::string> rooms;
  for (const auto& node : impl_->client->primaries()) {
    std::string cursor = "0";
    do {
      auto r = wait_reply([&](auto cb) {
        impl_->client->command_at(
            node, {"SCAN", cursor, "MATCH", head + "*" + tail, "COUNT", "1000"}, std::move(cb));
      });
      if (r.elements.size() < 2) throw std::runtime_error("redis: unexpected SCAN reply");
      cursor = r.elements[0].str;
      for (const auto& k : r.elements[1].elements) {
        const auto& key = k.str;
        if (key.size() > head.size() + tail.size() && key.starts_with(head) && key.ends_with(tail))
          rooms.push_back(key.substr(head.size(), key.size() - head.size() - tail.size()));
      }
    } while (cursor != "0");
  }
  std::sort(rooms.begin(), rooms.end());
  rooms.erase(std::unique(rooms.begin(), rooms.end()), rooms.end());
  // Pipelined: every HGET sent, then every reply awaited.
  std::vector<std::future<Reply>> replies;
  replies.reserve(rooms.size());
  for (const auto& room : rooms) {
    auto p = std::make_shared<std::promise<Reply>>();
    replies.push_back(p->get_future());
    const auto meta = impl_->key(room, "meta");
    impl_->client->command(meta, {"HGET", meta, "seq"},
                           [p](Reply r) { p->set_value(std::move(r)); });
  }
  std::vector<collab::RoomVersion> out;
  for (std::size_t i = 0; i < rooms.size(); ++i) {
    if (replies[i].wait_for(std::chrono::seconds(30)) != std::future_status::ready)
      throw std::runtime_error("redis: no reply within 30 s");
    auto r = replies[i].get();
    if (r.is_error()) throw std::runtime_error("redis: " + r.str);
    out.push_back(collab::RoomVersion{rooms[i], reply_u64(r)});
  }
  return out;
}

std::optional<collab::RoomState> RedisRoomEngine::read_room(const std::string& room) {
  auto r = wait_reply([&](auto cb) {
    impl_->client->eval(
        kRead, {impl_->key(room, "meta"), impl_->key(room, "snap"), impl_->key(room, "log")}, {},
        std::move(cb));
  });
  if (r.elements.size() < 5) return std::nullopt;
  auto rb = rebuild(r, impl_->options.limits.max_entities, 0);
  if (!rb) throw std::runtime_error("the room's snapshot in Redis is unreadable: " + room);
  return collab::RoomState{room, rb->epoch, rb->seq, json::serialize(rb->scene.snapshot())};
}

void RedisRoomEngine::mark_stored(const std::string& room, std::uint64_t seq) {
  const auto dirty = impl_->options.prefix + ":dirty";
  wait_reply([&](auto cb) {
    impl_->client->eval(kMarkStored, {dirty}, {room, std::to_string(seq)}, std::move(cb));
  });
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
