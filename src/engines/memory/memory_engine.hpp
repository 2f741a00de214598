// The embedded room engine of `kiln serve`: every room in this process's memory.
// Each room has its own mutex; events are delivered to the sink while it is held, which
// is what gives each room one total order of joins, batches and leaves.
#pragma once

#include "collab/batch_log.hpp"
#include "collab/persistence.hpp"
#include "collab/room_engine.hpp"
#include "collab/scene.hpp"

#include <atomic>
#include <deque>
#include <map>
#include <mutex>
#include <unordered_map>

namespace kiln::engines {

// With a loader (kiln serve on a database), a room it does not hold starts from the latest
// stored snapshot; the persister reads dirty rooms through collab::PersistSource.
class MemoryRoomEngine final : public collab::RoomEngine, public collab::PersistSource {
 public:
  // `make_epoch` gives each new room its epoch (injected so tests can fix it).
  MemoryRoomEngine(collab::EngineLimits limits, std::function<std::string()> make_epoch);
  ~MemoryRoomEngine() override;

  void set_events(collab::RoomEvents* sink) override { sink_.store(sink); }
  void join(const std::string& room, const collab::Member& member,
            const std::optional<collab::Since>& since,
            std::function<void(collab::JoinResult)> done) override;
  void leave(const std::string& room, const std::string& session) override;
  void submit(const std::string& room, const collab::Member& author, std::int64_t request_id,
              std::vector<collab::Op> ops, std::function<void(collab::Error)> refused) override;
  void publish_eph(collab::EphBatch batch) override;

  [[nodiscard]] std::size_t room_count() const;

  // Set before the first join.
  void set_loader(collab::RoomLoader loader) { loader_ = std::move(loader); }

  // Durable acks (kiln serve; set before the first join, after the loader): every accepted
  // batch is appended to `log` and nobody hears of it (ack, peers, a joiner's snapshot)
  // until it is durable. A room's epoch then survives restarts: it is kept from the stored
  // snapshot and the log. `recovered` is what the log held at start: each room in it is
  // loaded now (its stored snapshot, then its logged batches after it), so the persister
  // stores it and the log can be truncated.
  // `keep_epochs` false (the log cannot vouch for every ack: interval fsync and a machine
  // restart): every room starts a new epoch, after replaying what the log holds.
  void set_batch_log(collab::BatchLog* log, std::vector<collab::LoggedBatch> recovered,
                     bool keep_epochs = true);
  // Called (room lock held) when a room's logged batches do not continue its stored
  // snapshot (a gap, or one that does not apply): the room starts a new epoch.
  void set_on_replay_gap(std::function<void(const std::string& room)> fn) {
    on_replay_gap_ = std::move(fn);
  }

  collab::SourceResult<std::vector<collab::RoomVersion>> dirty_rooms(std::size_t limit) override;
  collab::SourceResult<std::vector<collab::RoomVersion>> all_rooms() override;
  collab::SourceResult<std::optional<collab::RoomState>> read_room(
      const std::string& room) override;
  collab::SourceResult<void> mark_stored(const std::string& room, std::uint64_t seq) override;

 private:
  struct Room;
  struct PendingJoin;
  Room& room(const std::string& id);
  void join_loaded(Room& r, const std::string& id, const collab::Member& member,
                   const std::optional<collab::Since>& since,
                   std::function<void(collab::JoinResult)>& done);
  void load(Room& r, const std::string& id);
  // Applies what the log holds after the stored snapshot. Room lock held. Fails only when a
  // new epoch had to be started and the log could not record it.
  collab::Error replay_logged(Room& r, const std::string& id, const std::string& stored_epoch);
  std::vector<std::pair<std::string, Room*>> snapshot_rooms() const;

  collab::EngineLimits limits_;
  std::function<std::string()> make_epoch_;
  std::atomic<collab::RoomEvents*> sink_{nullptr};
  collab::BatchLog* log_ = nullptr;
  bool keep_epochs_ = true;
  std::function<void(const std::string&)> on_replay_gap_;
  std::mutex recovered_mu_;
  std::unordered_map<std::string, std::vector<collab::LoggedBatch>> recovered_;  // until loaded
  collab::RoomLoader loader_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::unique_ptr<Room>> rooms_;
};

}  // namespace kiln::engines
