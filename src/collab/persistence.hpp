// How room engines meet the database. Two directions:
//  - RoomLoader: an engine asked for a room it does not hold (first join after a restart,
//    or after Redis lost the room) starts it from the latest stored snapshot, with a new
//    epoch so that clients resynchronise.
//  - PersistSource: the write-behind persister asks the engine which rooms changed since
//    they were last stored, reads their state, and tells the engine what is stored.
#pragma once

#include "platform/result.hpp"

#include <boost/assert/source_location.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace kiln::collab {

struct StoredRoom {
  std::uint64_t seq = 0;
  std::string snapshot;  // Scene::snapshot() as JSON
  std::string epoch;     // the epoch the room had when stored ("" when unknown)
};

// Calls `done` exactly once, from any thread: the latest stored snapshot, nullopt when none
// is stored, or a non-empty error when the database cannot say (the join then fails with
// `unavailable`: starting the room empty would fork its history).
using RoomLoader = std::function<void(
    const std::string& room,
    std::function<void(std::optional<StoredRoom> stored, std::string error)> done)>;

struct RoomVersion {
  std::string room;
  std::uint64_t seq = 0;
};

struct RoomState {
  std::string room;
  std::string epoch;
  std::uint64_t seq = 0;
  std::string snapshot;  // JSON
};

// Why the engine could not answer the persister. Either way the room stays dirty and a
// later pass tries again; the persister reports the detail (health, log, metrics).
struct SourceError {
  enum class Code {
    unavailable,  // no answer in time, or an error reply (Redis down, failing over)
    unreadable,   // the room's stored state cannot be read back (corrupt)
  };
  Code code;
  std::string detail;
};

template <class T>
using SourceResult = kiln::Result<T, SourceError>;

// What SourceResult::value() throws on an error (found by argument-dependent lookup).
[[noreturn]] inline void throw_exception_from_error(const SourceError& e,
                                                    const boost::source_location&) {
  throw std::runtime_error(e.detail);
}

// The engine as the persister sees it. Every call blocks (call them from the persister's own
// thread, never from an event loop's) and answers a value or a SourceError; none throws.
class PersistSource {
 public:
  virtual ~PersistSource() = default;
  // Rooms marked changed and not yet marked stored, with the seq of the newest mark (at
  // most `limit`).
  virtual SourceResult<std::vector<RoomVersion>> dirty_rooms(std::size_t limit) = 0;
  // Every room the engine holds, with its seq: the reconciliation that finds a room whose
  // dirty mark went missing.
  virtual SourceResult<std::vector<RoomVersion>> all_rooms() = 0;
  // The room's state now; nullopt when the engine does not hold it.
  virtual SourceResult<std::optional<RoomState>> read_room(const std::string& room) = 0;
  // The room is stored at `seq`: clears its dirty mark unless a later change marked it.
  virtual SourceResult<void> mark_stored(const std::string& room, std::uint64_t seq) = 0;
};

}  // namespace kiln::collab
