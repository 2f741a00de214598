// The distributed room engine: room state, log, members and fan-out in Redis 7
// (standalone or Cluster), so that any gateway node serves any room.
//
// Keyspace (docs/redis-keyspace.md); every key of a room carries the hash tag {<room>}:
//   <prefix>:{R}:meta     hash   epoch, seq, snap_seq
//   <prefix>:{R}:snap     string scene snapshot at snap_seq (JSON)
//   <prefix>:{R}:log      stream one entry per accepted batch, id "<seq>-0"
//   <prefix>:{R}:members  hash   session -> {"u":user,"n":name,"node":node}
//   <prefix>:{R}:presence zset   session -> expiry (ms since the epoch)
//   <prefix>:{R}:eph      hash   "<session>:<kind>" -> latest ephemeral data
//   <prefix>:{R}:ch       shard channel (SPUBLISH) for ops, eph and presence messages
//   <prefix>:dirty        zset   room -> seq of its newest batch not yet marked stored
//
// Batches queue per room on the node that received them. The queue's head is validated
// in order against this node's copy of the scene at seq S and appended as one group by a
// Lua script only if the room is still at S (compare-and-set): the appends, the new seq
// and the publishes happen atomically in Redis. On a conflict the group goes back to the
// head of the queue, the node catches up and validates again in the same order, so one
// session's batches land in the order sent. Every node keeps its copy current from the
// channel, detects a gap by seq and fills it from the log before delivering anything later.
#pragma once

#include "clients/redis/client.hpp"
#include "collab/persistence.hpp"
#include "collab/room_engine.hpp"
#include "engines/redis/redis_persist_source.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace kiln {
class Runtime;
}

namespace kiln::engines {

struct RedisEngineOptions {
  std::string prefix = "kiln";
  std::string node = "node";
  collab::EngineLimits limits;
  std::chrono::milliseconds presence_ttl{30'000};
  std::size_t snapshot_every = 500;  // batches between snapshots written to Redis
  // Ack durability: 0 acks once the batch is in the primary's memory; N waits (WAIT N)
  // until N replicas have it, at most wait_timeout, before this node delivers it.
  int ack_replicas = 0;
  std::chrono::milliseconds wait_timeout{1'000};
  std::function<void()> on_wait_timeout;  // counts acks sent without the replicas' word
  // The submit pipeline: at most max_group batches per append, at most max_queued waiting
  // per room on this node (beyond: nack unavailable with after_ms = busy_retry_after).
  std::size_t max_group = 256;
  std::size_t max_queued = 10'000;
  std::chrono::milliseconds busy_retry_after{250};
  // After an append or a conflict, the log is read if the channel has not brought the
  // copy up to date within this long.
  std::chrono::milliseconds catch_up_after{100};
  std::function<void(std::size_t)> on_group;  // a group of n batches was sent
  std::function<void()> on_conflict;          // another node appended first
  std::function<void()> on_busy;              // a batch was refused: the queue was full
  std::function<void()> on_history_lost;      // Redis was behind this node: a new epoch
  // A room with no member on this node is dropped from it (copy and subscription) after
  // this long, so that a node's memory does not grow with every room it ever served.
  std::chrono::milliseconds evict_after{30'000};
  redis::ConnectionOptions connection;  // for the subscriber connections
};

class RedisRoomEngine final : public collab::RoomEngine, public collab::PersistSource {
 public:
  RedisRoomEngine(Runtime& runtime, std::shared_ptr<redis::Client> client,
                  RedisEngineOptions options, std::function<std::string()> make_epoch);
  ~RedisRoomEngine() override;

  void set_events(collab::RoomEvents* sink) override;
  void join(const std::string& room, const collab::Member& member,
            const std::optional<collab::Since>& since,
            std::function<void(collab::JoinResult)> done) override;
  void leave(const std::string& room, const std::string& session) override;
  void submit(const std::string& room, const collab::Member& author, std::int64_t request_id,
              std::vector<collab::Op> ops, std::function<void(collab::Error)> refused) override;
  void publish_eph(collab::EphBatch batch) override;

  // Where rooms absent from Redis come from (the database); set before the first join.
  void set_loader(collab::RoomLoader loader);

  // PersistSource (blocking: the persister's thread only): RedisPersistSource's.
  collab::SourceResult<std::vector<collab::RoomVersion>> dirty_rooms(std::size_t limit) override;
  collab::SourceResult<std::vector<collab::RoomVersion>> all_rooms() override;
  collab::SourceResult<std::optional<collab::RoomState>> read_room(
      const std::string& room) override;
  collab::SourceResult<void> mark_stored(const std::string& room, std::uint64_t seq) override;

  // Refreshes this node's members' presence and reaps members of dead nodes; the owner
  // calls it every presence_ttl / 3.
  void tick();
  void close();
  // Rooms this node holds a copy of (for tests and metrics).
  [[nodiscard]] std::size_t rooms() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
  RedisPersistSource persist_;
};

}  // namespace kiln::engines
