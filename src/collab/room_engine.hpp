// The room engine port: where a room's state, log, members and fan-out live. The gateway
// never assumes that state is in its own memory: the embedded engine keeps it in process
// (`MemoryRoomEngine`), the distributed one in Redis. Both pass one conformance suite.
#pragma once

#include "collab/errors.hpp"
#include "collab/ops.hpp"
#include "collab/protocol.hpp"

#include <boost/json/object.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kiln::collab {

struct Member {
  std::string session;
  std::string user;
  std::string name;
  std::string node;
};

// An accepted batch, as every node receives it.
struct OpsEvent {
  std::string room;
  std::uint64_t seq = 0;
  std::string author_user;
  std::string author_session;
  std::int64_t request_id = 0;               // the author's `id`, for the ack
  std::shared_ptr<const std::string> frame;  // the `ops` frame peers receive
};

// One node's coalesced ephemeral updates for one room and one tick.
struct EphBatch {
  std::string room;
  std::string origin_node;
  std::vector<encode::EphEntry> entries;
};

struct PresenceEvent {
  std::string room;
  std::vector<encode::PresenceMember> joined;
  std::vector<std::string> left;  // session ids
};

struct JoinResult {
  Error error;
  std::string epoch;
  std::uint64_t seq = 0;
  bool recovered = false;
  std::vector<std::shared_ptr<const std::string>> ops;  // recovered: frames after since.seq
  std::shared_ptr<const boost::json::object> snapshot;  // not recovered: state at seq
  std::vector<encode::PresenceMember> presence;         // members present, with their eph
};

// Where an engine delivers events: the node's hub. For each room, ops events arrive in
// seq order; an engine may deliver an event twice or (after losing its subscription)
// skip ahead, and the hub detects both by seq.
class RoomEvents {
 public:
  virtual ~RoomEvents() = default;
  virtual void on_ops(const OpsEvent& ev) = 0;
  virtual void on_eph(const EphBatch& batch) = 0;
  virtual void on_presence(const PresenceEvent& ev) = 0;
  // The room's history was lost (a new epoch): every local member must resynchronise.
  virtual void on_reset(const std::string& room) = 0;
};

struct EngineLimits {
  std::size_t log_retention = 10'000;  // batches kept for resume
  std::size_t max_entities = 100'000;  // per room
  std::size_t max_members = 200;       // per room
};

class RoomEngine {
 public:
  virtual ~RoomEngine() = default;
  virtual void set_events(RoomEvents* sink) = 0;

  // Adds the member and answers with the state to start from. `done` is called exactly
  // once, from any thread. Every ops event with a larger seq than result.seq reaches the
  // sink after `done` has returned.
  virtual void join(const std::string& room, const Member& member,
                    const std::optional<Since>& since, std::function<void(JoinResult)> done) = 0;
  virtual void leave(const std::string& room, const std::string& session) = 0;

  // Validates and applies the batch atomically. Accepted: an OpsEvent reaches the sink
  // (the author's node acks from it). Refused: `refused` is called with the reason.
  virtual void submit(const std::string& room, const Member& author, std::int64_t request_id,
                      std::vector<Op> ops, std::function<void(Error)> refused) = 0;

  // Stores each entry as its member's latest ephemeral state and fans the batch out.
  virtual void publish_eph(EphBatch batch) = 0;
};

}  // namespace kiln::collab
