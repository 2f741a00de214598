// A gateway node's copy of one room held in Redis, as pure state: the scene at `seq`, the
// resume window, messages that arrived ahead of a gap, this node's own batches held back
// until replicas confirm them, and the submit queue with its group-commit rules
// (docs/redis-keyspace.md, "How a batch is accepted"). No I/O, no locks: the engine calls
// it under the room's lock and does the Redis calls. Tested in room_copy_test.cpp.
#pragma once

#include "collab/room_engine.hpp"
#include "collab/scene.hpp"
#include "engines/redis/redis_messages.hpp"

#include <deque>
#include <functional>
#include <map>
#include <set>

namespace kiln::engines {

// A batch this node received, waiting for its append.
struct Submission {
  collab::Member author;
  std::int64_t request_id = 0;
  std::shared_ptr<std::vector<collab::Op>> ops;
  std::function<void(collab::Error)> refused;
};

class RoomCopy {
 public:
  RoomCopy(std::string room, std::size_t max_entities, std::size_t retention)
      : room_(std::move(room)), scene_(max_entities), retention_(retention) {}

  [[nodiscard]] const std::string& room() const { return room_; }
  [[nodiscard]] const std::string& epoch() const { return epoch_; }
  [[nodiscard]] std::uint64_t seq() const { return seq_; }
  [[nodiscard]] const collab::Scene& scene() const { return scene_; }

  // Starts from a (re)load. Messages buffered meanwhile stay, for drain().
  void reset(Rebuilt rb);
  // Before a reload: what was buffered or held refers to the copy being dropped. The queue
  // stays (it is validated against the reloaded copy).
  void forget_pending();

  // --- batches arriving (the channel, the log) -----------------------------------------
  using Applied = std::function<void(const collab::OpsEvent&)>;
  enum class Arrival {
    Applied,    // it was next: applied (with any buffered ones it unblocked)
    Buffered,   // ahead of a gap, or held: kept until its turn
    Duplicate,  // at or below seq: dropped
    Broken      // a batch that does not apply: the copy must be reloaded
  };
  // `ready` false (the copy is loading): every message is buffered.
  Arrival receive(OpsMessage m, bool ready, const Applied& applied);
  // Applies buffered messages that became next in line; false when one does not apply.
  bool drain(const Applied& applied);
  // A buffered message waits for an earlier one that has not arrived.
  [[nodiscard]] bool gap() const;

  // --- this node's batches held for replicas -------------------------------------------
  void hold(std::uint64_t seq) { held_.insert(seq); }
  // True when any of [first, last] was held (then drain()).
  bool release(std::uint64_t first, std::uint64_t last);

  // --- the submit queue ----------------------------------------------------------------
  // False when `max` batches wait already.
  bool enqueue(Submission s, std::size_t max);
  [[nodiscard]] std::size_t queued() const { return queue_.size(); }
  // Whether the next group may go: something waits, the copy holds this node's previous
  // group (wait_for), and nothing of this node is held for replicas.
  [[nodiscard]] bool may_send() const;
  struct Group {
    std::vector<Submission> batches;                            // to append, in order
    std::vector<std::pair<Submission, collab::Error>> refused;  // with why
    std::vector<std::string> messages;  // encoded, seqs seq()+1... (valid until the copy moves)
  };
  // The queue's head (at most `max`), validated in order against the copy, each against
  // the state the earlier accepted ones leave.
  Group take_group(std::size_t max);
  // A group that lost the compare-and-set goes back to the head of the queue, in order.
  void requeue(std::vector<Submission> group);
  // The next group waits until the copy reaches `seq` (the previous group, or the seq a
  // conflict reported).
  void wait_for(std::uint64_t seq) { wait_seq_ = std::max(wait_seq_, seq); }
  [[nodiscard]] bool behind() const { return seq_ < wait_seq_; }
  // Every queued batch, removed (the room is gone from this node).
  std::deque<Submission> take_queue() { return std::exchange(queue_, {}); }

  // --- joins -----------------------------------------------------------------------------
  // The state a joiner starts from: the missed frames when `since` is of this epoch and in
  // the window, else the snapshot. (Presence is the engine's.)
  [[nodiscard]] collab::JoinResult answer(const std::optional<collab::Since>& since) const;

 private:
  bool apply(const OpsMessage& m, const Applied& applied);

  std::string room_;
  collab::Scene scene_;
  std::size_t retention_;
  std::string epoch_;
  std::uint64_t seq_ = 0;
  std::deque<std::shared_ptr<const std::string>> log_;  // frames of (seq - log.size(), seq]
  std::map<std::uint64_t, OpsMessage> early_;           // arrived ahead of a gap
  std::set<std::uint64_t> held_;
  std::deque<Submission> queue_;
  std::uint64_t wait_seq_ = 0;
};

}  // namespace kiln::engines
