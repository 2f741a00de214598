// The embedded room engine of `kiln serve`: every room in this process's memory.
// Each room has its own mutex; events are delivered to the sink while it is held, which
// is what gives each room one total order of joins, batches and leaves.
#pragma once

#include "collab/persistence.hpp"
#include "collab/room_engine.hpp"
#include "collab/scene.hpp"

#include <deque>
#include <map>
#include <mutex>
#include <unordered_map>

namespace kiln::collab {

// With a loader (kiln serve on a database), a room it does not hold starts from the latest
// stored snapshot; the persister reads dirty rooms through PersistSource.
class MemoryRoomEngine final : public RoomEngine, public PersistSource {
 public:
  // `make_epoch` gives each new room its epoch (injected so tests can fix it).
  MemoryRoomEngine(EngineLimits limits, std::function<std::string()> make_epoch);
  ~MemoryRoomEngine() override;

  void set_events(RoomEvents* sink) override { sink_ = sink; }
  void join(const std::string& room, const Member& member, const std::optional<Since>& since,
            std::function<void(JoinResult)> done) override;
  void leave(const std::string& room, const std::string& session) override;
  void submit(const std::string& room, const Member& author, std::int64_t request_id,
              std::vector<Op> ops, std::function<void(Error)> refused) override;
  void publish_eph(EphBatch batch) override;

  [[nodiscard]] std::size_t room_count() const;

  // Set before the first join.
  void set_loader(RoomLoader loader) { loader_ = std::move(loader); }

  std::vector<RoomVersion> dirty_rooms(std::size_t limit) override;
  std::vector<RoomVersion> all_rooms() override;
  std::optional<RoomState> read_room(const std::string& room) override;
  void mark_stored(const std::string& room, std::uint64_t seq) override;

 private:
  struct Room;
  struct PendingJoin;
  Room& room(const std::string& id);
  void join_loaded(Room& r, const std::string& id, const Member& member,
                   const std::optional<Since>& since, std::function<void(JoinResult)>& done);
  void load(Room& r, const std::string& id);
  std::vector<std::pair<std::string, Room*>> snapshot_rooms() const;

  EngineLimits limits_;
  std::function<std::string()> make_epoch_;
  RoomEvents* sink_ = nullptr;
  RoomLoader loader_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::unique_ptr<Room>> rooms_;
};

}  // namespace kiln::collab
