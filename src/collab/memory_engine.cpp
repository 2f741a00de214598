#include "collab/memory_engine.hpp"

#include <boost/json/array.hpp>

namespace kiln::collab {

struct MemoryRoomEngine::Room {
  explicit Room(std::size_t max_entities, std::string e)
      : scene(max_entities), epoch(std::move(e)) {}
  std::mutex mu;
  Scene scene;
  std::string epoch;
  std::uint64_t seq = 0;
  std::deque<std::shared_ptr<const std::string>> log;     // frames of seq (seq-log.size(), seq]
  std::map<std::string, encode::PresenceMember> members;  // by session
};

MemoryRoomEngine::MemoryRoomEngine(EngineLimits limits, std::function<std::string()> make_epoch)
    : limits_(limits), make_epoch_(std::move(make_epoch)) {}

MemoryRoomEngine::~MemoryRoomEngine() = default;

MemoryRoomEngine::Room& MemoryRoomEngine::room(const std::string& id) {
  std::lock_guard lock(mu_);
  auto& slot = rooms_[id];
  if (!slot) slot = std::make_unique<Room>(limits_.max_entities, make_epoch_());
  return *slot;
}

std::size_t MemoryRoomEngine::room_count() const {
  std::lock_guard lock(mu_);
  return rooms_.size();
}

void MemoryRoomEngine::join(const std::string& id, const Member& member,
                            const std::optional<Since>& since,
                            std::function<void(JoinResult)> done) {
  Room& r = room(id);
  std::lock_guard lock(r.mu);
  JoinResult result;
  if (r.members.size() >= limits_.max_members && r.members.count(member.session) == 0) {
    result.error = fail(Code::TooLarge, "the room holds at most " +
                                            std::to_string(limits_.max_members) + " members");
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
  done(std::move(result));
  if (sink_) sink_->on_presence(PresenceEvent{id, {me}, {}});
}

void MemoryRoomEngine::leave(const std::string& id, const std::string& session) {
  Room& r = room(id);
  std::lock_guard lock(r.mu);
  if (r.members.erase(session) == 0) return;
  if (sink_) sink_->on_presence(PresenceEvent{id, {}, {session}});
}

void MemoryRoomEngine::submit(const std::string& id, const Member& author, std::int64_t request_id,
                              std::vector<Op> ops, std::function<void(Error)> refused) {
  Room& r = room(id);
  std::lock_guard lock(r.mu);
  if (auto e = r.scene.apply(ops)) {
    refused(std::move(e));
    return;
  }
  ++r.seq;
  boost::json::array arr;
  arr.reserve(ops.size());
  for (const auto& op : ops) arr.push_back(to_json(op));
  auto frame = std::make_shared<const std::string>(encode::ops(id, r.seq, author.user, arr));
  r.log.push_back(frame);
  while (r.log.size() > limits_.log_retention) r.log.pop_front();
  if (sink_) sink_->on_ops(OpsEvent{id, r.seq, author.user, author.session, request_id, frame});
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
  if (sink_) sink_->on_eph(batch);
}

}  // namespace kiln::collab
