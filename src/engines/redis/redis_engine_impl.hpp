// The Redis room engine's inside (redis_engine.cpp: the public face and lifetime;
// redis_subscription.cpp: channels and what arrives on them; redis_rooms.cpp: a node's copy
// of each room, loading, members, eviction; redis_submit.cpp: the submit pipeline). Private
// to engines/redis.
#pragma once

#include "engines/redis/redis_engine.hpp"

#include "engines/redis/redis_scripts.hpp"
#include "engines/redis/room_copy.hpp"

#include "collab/scene.hpp"
#include "platform/log.hpp"
#include "platform/runtime.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <charconv>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>

namespace kiln::engines {

using collab::Code;
using collab::Error;
using redis::Reply;
namespace json = boost::json;

struct RedisRoomEngine::Impl : std::enable_shared_from_this<Impl> {
  struct PendingJoin {
    collab::Member member;
    std::optional<collab::Since> since;
    std::function<void(collab::JoinResult)> done;
  };

  struct Room {
    std::string id;
    std::mutex mu;
    enum class State { Subscribing, Loading, Ready } state = State::Subscribing;
    RoomCopy copy;  // scene, seq, resume window, buffered and held batches, submit queue
    bool filling = false;
    std::vector<PendingJoin> joins;
    std::map<std::string, collab::Member> local;  // this node's members, by session
    std::string sub_endpoint;  // the node its channel is subscribed on (under Impl::mu)
    bool appending = false;    // a group is with Redis
    bool catch_up_armed = false;
    int joining = 0;                   // joins queued or waiting for Redis
    std::atomic<bool> evicted{false};  // dropped from the node: a join must make a new one
    Room(std::string r, std::size_t max_entities, std::size_t retention)
        : id(r), copy(std::move(r), max_entities, retention) {}
    bool ready() const { return state == State::Ready; }
  };

  Impl(Runtime& rt, std::shared_ptr<redis::Client> c, RedisEngineOptions o,
       std::function<std::string()> e)
      : runtime(rt), client(std::move(c)), options(std::move(o)), make_epoch(std::move(e)) {}

  Runtime& runtime;
  std::shared_ptr<redis::Client> client;
  RedisEngineOptions options;
  std::function<std::string()> make_epoch;
  std::atomic<collab::RoomEvents*> sink{nullptr};
  collab::RoomLoader loader;  // set before the first join

  std::mutex mu;  // rooms, subscribers
  std::unordered_map<std::string, std::shared_ptr<Room>> rooms;
  std::map<std::string, std::shared_ptr<redis::Connection>> subscribers;  // by endpoint
  bool closed = false;

  std::string key(const std::string& room, const char* what) const {
    return options.prefix + ":{" + room + "}:" + what;
  }

  std::shared_ptr<Room> find(const std::string& id) {
    std::lock_guard lock(mu);
    auto it = rooms.find(id);
    return it == rooms.end() ? nullptr : it->second;
  }

  // --- subscription ------------------------------------------------------------------
  std::shared_ptr<redis::Connection> subscriber_at(const redis::Endpoint& ep);
  void subscribe(const std::shared_ptr<Room>& room, redis::Connection::Callback done,
                 std::optional<redis::Endpoint> at = std::nullopt, int attempt = 0);
  std::vector<std::shared_ptr<Room>> rooms_on(const redis::Endpoint& ep);
  void resubscribe(const redis::Endpoint& ep);
  void relocate(const redis::Endpoint& ep);
  void on_push(const Reply& r);
  void deliver_eph(collab::RoomEvents& s, const std::string& room, std::string_view body);
  void deliver_presence(collab::RoomEvents& s, const std::string& room, std::string_view body);

  // --- the node's copy of a room -----------------------------------------------------
  RoomCopy::Applied applied_fn(Room& room);
  void store_snapshot(Room& room, std::uint64_t seq);
  void broken(const std::shared_ptr<Room>& room);
  void on_ops_message(const std::shared_ptr<Room>& room, OpsMessage m);
  void drain_early(const std::shared_ptr<Room>& room);
  void fill(const std::shared_ptr<Room>& room);
  void check_seq(const std::shared_ptr<Room>& room);
  void load(const std::shared_ptr<Room>& room);
  void load_stored(const std::shared_ptr<Room>& room);
  void loaded(const std::shared_ptr<Room>& room, const Reply& r);
  void history_lost(const std::shared_ptr<Room>& room);
  void reload(const std::shared_ptr<Room>& room);
  void fail_joins(const std::shared_ptr<Room>& room, const std::string& why);
  void add_member(const std::shared_ptr<Room>& room, PendingJoin j);
  void schedule_evict(const std::shared_ptr<Room>& room);
  void evict(const std::shared_ptr<Room>& room);
  void join(const std::string& id, const collab::Member& member,
            const std::optional<collab::Since>& since,
            std::function<void(collab::JoinResult)> done);
  void lock_free_add(const std::shared_ptr<Room>& room, PendingJoin j);
  void remove_sessions(const std::string& room_id, std::vector<std::string> sessions,
                       const std::string& now_ms);

  // --- the submit pipeline ------------------------------------------------------------
  // Batches wait in the room's queue in arrival order. One group at a time is with Redis:
  // the queue's head validated in order against the copy (each against the state the
  // earlier ones leave), appended together if the room is still at the copy's seq. On a
  // conflict the group goes back to the head of the queue, the copy catches up, and the
  // queue is validated again, in the same order. So one author's batches (one session is on
  // one node) land in the order sent, and contention costs latency, never a refusal.
  void submit(const std::string& id, Submission sub);
  void pump(const std::shared_ptr<Room>& room);
  void send_group(const std::shared_ptr<Room>& room, RoomCopy::Group group);
  void group_answered(const std::shared_ptr<Room>& room, std::vector<Submission> group,
                      std::uint64_t expected, const Reply& r);
  void arm_catch_up(const std::shared_ptr<Room>& room);
  void mark_dirty(const std::string& id, std::uint64_t seq);
  void await_replicas(const std::shared_ptr<Room>& room, std::uint64_t first, std::uint64_t last);
  void release(const std::shared_ptr<Room>& room, std::uint64_t first, std::uint64_t last);
};

}  // namespace kiln::engines
