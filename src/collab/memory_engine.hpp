// The embedded room engine of `kiln serve`: every room in this process's memory.
// Each room has its own mutex; events are delivered to the sink while it is held, which
// is what gives each room one total order of joins, batches and leaves.
#pragma once

#include "collab/room_engine.hpp"
#include "collab/scene.hpp"

#include <deque>
#include <map>
#include <mutex>
#include <unordered_map>

namespace kiln::collab {

class MemoryRoomEngine final : public RoomEngine {
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

 private:
  struct Room;
  Room& room(const std::string& id);

  EngineLimits limits_;
  std::function<std::string()> make_epoch_;
  RoomEvents* sink_ = nullptr;
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::unique_ptr<Room>> rooms_;
};

}  // namespace kiln::collab
