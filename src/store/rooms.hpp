// The rooms repository: what the write-behind persister stores (room_snapshots) and the
// lease that gives one worker a room at a time (room_leases, on the database's clock).
// Every method blocks and throws sql::Error.
#pragma once

#include "store/database.hpp"

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace kiln::store {

struct RoomSnapshot {
  std::string room;
  std::uint64_t seq = 0;
  std::string epoch;
  std::string body;  // the scene's snapshot, JSON
  std::int64_t stored_at = 0;
};

enum class SaveResult {
  Stored,    // a new snapshot row
  NotNewer,  // one at this seq or later is stored already: nothing written
  LeaseLost  // another worker holds the room now: nothing written
};

class Rooms {
 public:
  explicit Rooms(Database& db) : db_(db) {}

  // Takes or renews the room's lease for `ttl` (database clock). False when another holder
  // has an unexpired lease.
  bool acquire_lease(const std::string& room, const std::string& holder,
                     std::chrono::milliseconds ttl);
  // In one transaction: checks that `holder` still holds the lease (and renews it), stores
  // the snapshot only if newer than every stored one, and keeps only the newest `keep`.
  SaveResult save_snapshot(const RoomSnapshot& snapshot, const std::string& holder,
                           std::chrono::milliseconds lease_ttl, std::size_t keep);
  // The newest stored snapshot (from the primary: a replica might be behind).
  std::optional<RoomSnapshot> latest_snapshot(const std::string& room);
  // The newest stored seq of each room named that has one.
  std::map<std::string, std::uint64_t> stored_seqs(const std::vector<std::string>& rooms);

 private:
  Database& db_;
};

}  // namespace kiln::store
