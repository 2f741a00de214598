// The Redis room engine: a node's copy of each room (subscribe, load, catch up, fill
// gaps), its members, and eviction when the last one leaves.
#include "engines/redis/redis_engine_impl.hpp"

namespace kiln::engines {

using namespace scripts;

// What the copy hands on as it applies a batch: the hub gets it; every snapshot_every
// batches the author's node stores a snapshot in Redis, which lets the log be trimmed and
// keeps loading the room cheap. Room lock held while it runs.
RoomCopy::Applied RedisRoomEngine::Impl::applied_fn(Room& room) {
  return [this, &room](const collab::OpsEvent& ev) {
    if (auto* s = sink.load()) s->on_ops(ev);
    if (ev.seq % options.snapshot_every == 0 && room.local.count(ev.author_session) != 0)
      store_snapshot(room, ev.seq);
  };
}

void RedisRoomEngine::Impl::store_snapshot(Room& room, std::uint64_t seq) {
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
void RedisRoomEngine::Impl::broken(const std::shared_ptr<Room>& room) {
  log::error("redis engine: a logged batch does not apply; reloading the room",
             {{"room", room->id}, {"seq", static_cast<std::int64_t>(room->copy.seq() + 1)}});
  reload(room);
}

void RedisRoomEngine::Impl::on_ops_message(const std::shared_ptr<Room>& room, OpsMessage m) {
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
void RedisRoomEngine::Impl::drain_early(const std::shared_ptr<Room>& room) {
  if (!room->copy.drain(applied_fn(*room))) {
    broken(room);
    return;
  }
  pump(room);
}

// Fetches the batches between the copy's seq and the first early message. Room lock held.
void RedisRoomEngine::Impl::fill(const std::shared_ptr<Room>& room) {
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
void RedisRoomEngine::Impl::check_seq(const std::shared_ptr<Room>& room) {
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
void RedisRoomEngine::Impl::load(const std::shared_ptr<Room>& room) {
  std::weak_ptr<Impl> weak = shared_from_this();
  client->eval(
      kLoad, {key(room->id, "meta"), key(room->id, "snap"), key(room->id, "log")},
      {make_epoch(), std::to_string(options.limits.log_retention), loader ? "1" : "0"},
      [weak, room](Reply r) {
        auto self = weak.lock();
        if (!self) return;
        if (r.elements.size() == 1 && r.elements[0].str == "absent") {
          self->load_stored(room);
          return;
        }
        if (r.is_error() || r.elements.size() < 5) {
          log::warn("redis engine: loading a room failed", {{"room", room->id}, {"error", r.str}});
          self->fail_joins(room, "room engine unavailable: " + r.str);
          return;
        }
        self->loaded(room, r);
      });
}

// The room is not in Redis: seed it from the latest stored snapshot (a new epoch), then
// load it as usual. Nodes racing to seed it agree: the first seed wins.
void RedisRoomEngine::Impl::load_stored(const std::shared_ptr<Room>& room) {
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

void RedisRoomEngine::Impl::loaded(const std::shared_ptr<Room>& room, const Reply& r) {
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
void RedisRoomEngine::Impl::history_lost(const std::shared_ptr<Room>& room) {
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
void RedisRoomEngine::Impl::reload(const std::shared_ptr<Room>& room) {
  room->state = Room::State::Loading;
  room->copy.forget_pending();
  load(room);
}

void RedisRoomEngine::Impl::fail_joins(const std::shared_ptr<Room>& room, const std::string& why) {
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
void RedisRoomEngine::Impl::add_member(const std::shared_ptr<Room>& room, PendingJoin j) {
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
  client->eval(kJoin, {key(room->id, "members"), key(room->id, "presence"), key(room->id, "eph")},
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
                   res.error = collab::fail_limit(
                       "members_per_room", Code::TooLarge,
                       "the room holds at most " +
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
                 res = room->copy.answer(pj.since);
                 for (auto& [s, m] : members) res.presence.push_back(std::move(m));
                 // Under the room lock: no later batch reaches the hub before this answer.
                 pj.done(std::move(res));
               });
}

// Drops the room from this node once no member of it is here (after evict_after).
void RedisRoomEngine::Impl::schedule_evict(const std::shared_ptr<Room>& room) {
  std::weak_ptr<Impl> weak = shared_from_this();
  runtime.after(options.evict_after, [weak, room] {
    if (auto self = weak.lock()) self->evict(room);
  });
}

void RedisRoomEngine::Impl::evict(const std::shared_ptr<Room>& room) {
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

void RedisRoomEngine::Impl::join(const std::string& id, const collab::Member& member,
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
void RedisRoomEngine::Impl::lock_free_add(const std::shared_ptr<Room>& room, PendingJoin j) {
  auto shared = std::make_shared<PendingJoin>(std::move(j));
  std::weak_ptr<Impl> weak = shared_from_this();
  runtime.post([weak, room, shared] {
    if (auto self = weak.lock()) self->add_member(room, std::move(*shared));
  });
}

void RedisRoomEngine::Impl::remove_sessions(const std::string& room_id,
                                            std::vector<std::string> sessions,
                                            const std::string& now_ms) {
  std::vector<std::string> args{key(room_id, "ch"), now_ms};
  args.insert(args.end(), sessions.begin(), sessions.end());
  client->eval(kLeave, {key(room_id, "members"), key(room_id, "presence"), key(room_id, "eph")},
               std::move(args), [room_id](Reply r) {
                 if (r.is_error())
                   log::warn("redis engine: leave failed", {{"room", room_id}, {"error", r.str}});
               });
}

}  // namespace kiln::engines
