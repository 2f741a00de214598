#include "engines/memory/memory_engine.hpp"

#include <boost/json/array.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

namespace kiln::engines {

using namespace collab;  // the port's vocabulary

struct MemoryRoomEngine::PendingJoin {
  Member member;
  std::optional<Since> since;
  std::function<void(JoinResult)> done;
};

struct MemoryRoomEngine::Room {
  Room(std::size_t max_entities, std::string e, bool needs_load)
      : scene(max_entities), epoch(std::move(e)), loaded(!needs_load) {}
  std::mutex mu;
  Scene scene;
  std::string epoch;
  std::uint64_t seq = 0;
  std::uint64_t stored_seq = 0;                           // the newest seq the persister stored
  bool loaded;                                            // false until the stored snapshot is in
  std::vector<PendingJoin> pending;                       // joins waiting for the load
  std::deque<std::shared_ptr<const std::string>> log;     // frames of seq (seq-log.size(), seq]
  std::map<std::string, encode::PresenceMember> members;  // by session
};

MemoryRoomEngine::MemoryRoomEngine(EngineLimits limits, std::function<std::string()> make_epoch)
    : limits_(limits), make_epoch_(std::move(make_epoch)) {}

MemoryRoomEngine::~MemoryRoomEngine() = default;

MemoryRoomEngine::Room& MemoryRoomEngine::room(const std::string& id) {
  std::lock_guard lock(mu_);
  auto& slot = rooms_[id];
  if (!slot) slot = std::make_unique<Room>(limits_.max_entities, make_epoch_(), bool(loader_));
  return *slot;
}

void MemoryRoomEngine::load(Room& r, const std::string& id) {
  loader_(id, [this, &r, id](std::optional<StoredRoom> stored, std::string error) {
    std::unique_lock lock(r.mu);
    std::string stored_epoch;
    if (error.empty() && stored) {
      boost::system::error_code ec;
      auto v = boost::json::parse(stored->snapshot, ec);
      Scene scene(SIZE_MAX);  // stored under the limits of its day: read whatever they were
      if (ec || Scene::from_snapshot(v, scene)) {
        error = "the room's stored snapshot is unreadable";
      } else {
        scene.set_max_entities(limits_.max_entities);
        r.scene = std::move(scene);
        r.seq = stored->seq;
        r.stored_seq = stored->seq;
        stored_epoch = stored->epoch;
      }
    }
    auto pending = std::move(r.pending);
    r.pending.clear();
    if (!error.empty()) {
      // Not loaded: the next join tries again.
      lock.unlock();
      for (auto& j : pending) {
        JoinResult res;
        res.error = fail(Code::Unavailable, "cannot load the room: " + error);
        j.done(std::move(res));
      }
      return;
    }
    if (log_ && error.empty()) {
      if (!stored) {  // a failed load may have replayed into it before
        r.scene = Scene(limits_.max_entities);
        r.seq = 0;
      }
      if (auto e = replay_logged(r, id, stored_epoch)) {
        error = "cannot start the room's new epoch: " + e.message;
      } else {
        log_->stored(id, r.stored_seq);
      }
    }
    if (!error.empty()) {
      lock.unlock();
      for (auto& j : pending) {
        JoinResult res;
        res.error = fail(Code::Unavailable, "cannot load the room: " + error, 1'000);
        j.done(std::move(res));
      }
      return;
    }
    r.loaded = true;
    for (auto& j : pending) join_loaded(r, id, j.member, j.since, j.done);
  });
}

// The room's logged records, in the order written, on top of its stored snapshot. A record
// with an empty frame starts an epoch: the history continues under it from that seq (a
// room given a new epoch keeps its state). Records of an epoch the room's history does not
// pass through belong to another history (the journal was off meanwhile): not applied.
Error MemoryRoomEngine::replay_logged(Room& r, const std::string& id,
                                      const std::string& stored_epoch) {
  std::vector<LoggedBatch> logged;
  {
    std::lock_guard lock(recovered_mu_);
    if (auto it = recovered_.find(id); it != recovered_.end()) {
      logged = std::move(it->second);
      recovered_.erase(it);
    }
  }
  std::string epoch = stored_epoch;                       // of the state at r.seq; "" before any
  std::deque<std::shared_ptr<const std::string>> window;  // frames of (seq - size, seq]
  std::uint64_t window_end = 0;
  // An epoch whose history broke off here (a gap, or a batch that does not apply): what
  // follows in it cannot be trusted, unless a later epoch start continues from here.
  std::string stalled;
  // Batches accepted once are replayed whatever the limits are now (a lowered
  // room.max_entities must not drop acknowledged batches).
  r.scene.set_max_entities(SIZE_MAX);
  for (const auto& b : logged) {
    if (b.frame.empty()) {
      if (b.seq == r.seq) {
        epoch = b.epoch;
        stalled.clear();
      }
      if (b.seq == window_end) window.clear();  // the window does not cross epochs
      continue;
    }
    if (!epoch.empty() && b.epoch != epoch) continue;
    if (b.seq <= r.seq) {  // already in the snapshot: the resume window only
      if (b.seq != window_end + 1) window.clear();
      window.push_back(std::make_shared<const std::string>(b.frame));
      window_end = b.seq;
      continue;
    }
    if (!stalled.empty()) continue;
    std::vector<Op> ops;
    if (b.seq != r.seq + 1 || !parse_ops_frame(b.frame, ops) || r.scene.apply(ops)) {
      stalled = b.epoch;
      continue;
    }
    if (window_end != r.seq) window.clear();
    epoch = b.epoch;
    r.seq = b.seq;
    window.push_back(std::make_shared<const std::string>(b.frame));
    window_end = b.seq;
  }
  r.scene.set_max_entities(limits_.max_entities);
  if (window_end != r.seq) window.clear();
  while (window.size() > limits_.log_retention) window.pop_front();
  const bool lost = !stalled.empty();
  const bool fresh = lost || !keep_epochs_;
  if (lost && on_replay_gap_) on_replay_gap_(id);
  if (!fresh) {
    r.epoch = epoch.empty() ? r.epoch : epoch;
    r.log = std::move(window);
    return {};
  }
  // Clients may hold batches this node cannot give back: a new epoch makes them resync. It
  // is logged first, so that the next start continues this history under it.
  r.epoch = make_epoch_();
  r.log.clear();
  auto e = log_->append(LoggedBatch{id, r.epoch, r.seq, ""}, nullptr);
  if (e) {
    std::lock_guard lock(recovered_mu_);  // the next load replays them again
    recovered_[id] = std::move(logged);
  }
  return e;
}

void MemoryRoomEngine::set_batch_log(BatchLog* log, std::vector<LoggedBatch> recovered,
                                     bool keep_epochs) {
  log_ = log;
  keep_epochs_ = keep_epochs;
  std::vector<std::string> rooms;
  {
    std::lock_guard lock(recovered_mu_);
    for (auto& b : recovered) {
      auto& list = recovered_[b.room];
      if (list.empty()) rooms.push_back(b.room);
      list.push_back(std::move(b));
    }
  }
  for (const auto& id : rooms) {
    Room& r = room(id);
    std::unique_lock lock(r.mu);
    if (r.loaded) {
      // No loader, so nothing stored to start from (tests; kiln serve always has one).
      // Failing to record a new epoch leaves the records for a later start.
      (void)replay_logged(r, id, "");
      continue;
    }
    if (!r.pending.empty()) continue;  // a join is loading it already
    lock.unlock();
    load(r, id);
  }
}

std::vector<std::pair<std::string, MemoryRoomEngine::Room*>> MemoryRoomEngine::snapshot_rooms()
    const {
  std::lock_guard lock(mu_);
  std::vector<std::pair<std::string, Room*>> out;
  out.reserve(rooms_.size());
  for (const auto& [id, r] : rooms_) out.emplace_back(id, r.get());
  return out;
}

SourceResult<std::vector<RoomVersion>> MemoryRoomEngine::dirty_rooms(std::size_t limit) {
  std::vector<RoomVersion> out;
  for (auto& [id, r] : snapshot_rooms()) {
    std::lock_guard lock(r->mu);
    if (r->loaded && r->seq > r->stored_seq) out.push_back(RoomVersion{id, r->seq});
    if (out.size() >= limit) break;
  }
  return out;
}

SourceResult<std::vector<RoomVersion>> MemoryRoomEngine::all_rooms() {
  std::vector<RoomVersion> out;
  for (auto& [id, r] : snapshot_rooms()) {
    std::lock_guard lock(r->mu);
    if (r->loaded) out.push_back(RoomVersion{id, r->seq});
  }
  return out;
}

SourceResult<std::optional<RoomState>> MemoryRoomEngine::read_room(const std::string& id) {
  Room* r = nullptr;
  {
    std::lock_guard lock(mu_);
    auto it = rooms_.find(id);
    if (it == rooms_.end()) return std::optional<RoomState>();
    r = it->second.get();
  }
  std::lock_guard lock(r->mu);
  if (!r->loaded) return std::optional<RoomState>();
  return std::optional<RoomState>(
      RoomState{id, r->epoch, r->seq, boost::json::serialize(r->scene.snapshot())});
}

SourceResult<void> MemoryRoomEngine::mark_stored(const std::string& id, std::uint64_t seq) {
  Room* r = nullptr;
  {
    std::lock_guard lock(mu_);
    auto it = rooms_.find(id);
    if (it == rooms_.end()) return {};
    r = it->second.get();
  }
  std::lock_guard lock(r->mu);
  r->stored_seq = std::max(r->stored_seq, seq);
  if (log_) log_->stored(id, seq);
  return {};
}

std::size_t MemoryRoomEngine::room_count() const {
  std::lock_guard lock(mu_);
  return rooms_.size();
}

void MemoryRoomEngine::join(const std::string& id, const Member& member,
                            const std::optional<Since>& since,
                            std::function<void(JoinResult)> done) {
  Room& r = room(id);
  std::unique_lock lock(r.mu);
  if (!r.loaded) {
    r.pending.push_back(PendingJoin{member, since, std::move(done)});
    if (r.pending.size() == 1) {
      lock.unlock();
      load(r, id);  // may complete on this thread, before returning
    }
    return;
  }
  join_loaded(r, id, member, since, done);
}

// Room lock held.
void MemoryRoomEngine::join_loaded(Room& r, const std::string& id, const Member& member,
                                   const std::optional<Since>& since,
                                   std::function<void(JoinResult)>& done) {
  JoinResult result;
  if (r.members.size() >= limits_.max_members && r.members.count(member.session) == 0) {
    result.error =
        fail_limit("members_per_room", Code::TooLarge,
                   "the room holds at most " + std::to_string(limits_.max_members) + " members");
    done(std::move(result));
    return;
  }
  result.epoch = r.epoch;
  result.seq = r.seq;
  const std::uint64_t oldest_kept = r.seq - r.log.size();  // seqs after this are in the log
  if (since && since->epoch == r.epoch && since->seq <= r.seq && since->seq >= oldest_kept) {
    result.recovered = true;
    result.ops.assign(r.log.begin() + static_cast<std::ptrdiff_t>(since->seq - oldest_kept),
                      r.log.end());
  } else {
    result.snapshot = std::make_shared<const boost::json::object>(r.scene.snapshot());
  }
  for (const auto& [session, m] : r.members) result.presence.push_back(m);
  encode::PresenceMember me{member.user, member.session, member.name, {}};
  r.members[member.session] = me;
  auto answer = [this, done = std::move(done), result = std::move(result), id, me]() mutable {
    done(std::move(result));
    if (auto* s = sink_.load()) s->on_presence(PresenceEvent{id, {me}, {}});
  };
  if (log_) {
    // The state given may hold batches not yet durable: answered once they are, in line
    // with the room's ops events.
    log_->after_durable(std::move(answer));
  } else {
    answer();
  }
}

void MemoryRoomEngine::leave(const std::string& id, const std::string& session) {
  Room& r = room(id);
  std::lock_guard lock(r.mu);
  if (!r.loaded) {
    // Left before the room finished loading: that join ends here, so no ghost is added.
    auto it = std::find_if(r.pending.begin(), r.pending.end(),
                           [&](const PendingJoin& j) { return j.member.session == session; });
    if (it != r.pending.end()) {
      auto done = std::move(it->done);
      r.pending.erase(it);
      JoinResult res;
      res.error = fail(Code::Unavailable, "left before the room was loaded");
      done(std::move(res));
    }
    return;
  }
  if (r.members.erase(session) == 0) return;
  if (auto* s = sink_.load()) s->on_presence(PresenceEvent{id, {}, {session}});
}

void MemoryRoomEngine::submit(const std::string& id, const Member& author, std::int64_t request_id,
                              std::vector<Op> ops, std::function<void(Error)> refused) {
  Room& r = room(id);
  std::lock_guard lock(r.mu);
  if (!r.loaded) {
    refused(fail(Code::Unavailable, "the room is loading; join it first"));
    return;
  }
  if (auto e = log_ ? r.scene.validate(ops) : r.scene.apply(ops)) {
    refused(std::move(e));
    return;
  }
  const std::uint64_t seq = r.seq + 1;
  boost::json::array arr;
  arr.reserve(ops.size());
  for (const auto& op : ops) arr.push_back(to_json(op));
  auto frame = std::make_shared<const std::string>(encode::ops(id, seq, author.user, arr));
  OpsEvent ev{id, seq, author.user, author.session, request_id, frame};
  if (log_) {
    // Nobody hears of the batch before it is on disk; a log that cannot take it refuses it
    // before anything changed.
    auto deliver = [this, ev] {
      if (auto* s = sink_.load()) s->on_ops(ev);
    };
    if (auto e = log_->append(LoggedBatch{id, r.epoch, seq, *frame}, std::move(deliver))) {
      refused(std::move(e));
      return;
    }
    r.scene.apply(ops);  // validated above, under the same lock: cannot fail
  }
  r.seq = seq;
  r.log.push_back(frame);
  while (r.log.size() > limits_.log_retention) r.log.pop_front();
  if (!log_) {
    if (auto* s = sink_.load()) s->on_ops(ev);
  }
}

void MemoryRoomEngine::publish_eph(EphBatch batch) {
  Room& r = room(batch.room);
  std::lock_guard lock(r.mu);
  // Entries of sessions that left meanwhile are dropped: no ghost cursors.
  std::erase_if(batch.entries,
                [&](const encode::EphEntry& e) { return r.members.count(e.session) == 0; });
  if (batch.entries.empty()) return;
  for (const auto& e : batch.entries) {
    auto& kinds = r.members[e.session].eph;
    auto it = std::find_if(kinds.begin(), kinds.end(),
                           [&](const auto& kv) { return kv.first == e.kind; });
    if (it == kinds.end()) {
      kinds.emplace_back(e.kind, e.data);
    } else {
      it->second = e.data;
    }
  }
  if (auto* s = sink_.load()) s->on_eph(batch);
}

}  // namespace kiln::engines
