// The write-behind persister's view of rooms held in Redis (collab::PersistSource): the
// dirty set, a SCAN of every primary for reconciliation, a room's state rebuilt from its
// snapshot and log, and the compare-and-clear of its dirty mark. Needs only a Redis client,
// so a `kiln worker` reads rooms without holding copies of them.
#pragma once

#include "clients/redis/client.hpp"
#include "collab/persistence.hpp"

#include <memory>
#include <string>

namespace kiln::engines {

class RedisPersistSource final : public collab::PersistSource {
 public:
  RedisPersistSource(std::shared_ptr<redis::Client> client, std::string prefix,
                     std::size_t max_entities);

  // Each blocks (at most 30 s per reply) and throws std::runtime_error when Redis does not
  // answer: the persister's thread only, never an event loop's.
  collab::SourceResult<std::vector<collab::RoomVersion>> dirty_rooms(std::size_t limit) override;
  collab::SourceResult<std::vector<collab::RoomVersion>> all_rooms() override;
  collab::SourceResult<std::optional<collab::RoomState>> read_room(
      const std::string& room) override;
  collab::SourceResult<void> mark_stored(const std::string& room, std::uint64_t seq) override;

 private:
  std::string key(const std::string& room, const char* what) const;

  std::shared_ptr<redis::Client> client_;
  std::string prefix_;
  std::size_t max_entities_;
};

}  // namespace kiln::engines
