// The Redis room engine: the submit pipeline (group commit by script, conflicts, replicas).
#include "engines/redis/redis_engine_impl.hpp"

namespace kiln::engines {

using namespace scripts;

void RedisRoomEngine::Impl::submit(const std::string& id, Submission sub) {
  auto room = find(id);
  if (!room) {
    sub.refused(collab::fail(Code::Forbidden, "join the room first"));
    return;
  }
  std::lock_guard lock(room->mu);
  const auto waiting = room->copy.queued();
  auto refused = sub.refused;
  if (!room->copy.enqueue(std::move(sub), options.max_queued)) {
    // The room receives more than Redis takes: back-pressure, with a time to retry.
    if (options.on_busy) options.on_busy();
    refused(collab::fail_limit("room_queue", Code::Unavailable,
                               "the room has " + std::to_string(waiting) +
                                   " batches waiting on this node; send again later",
                               options.busy_retry_after.count()));
    return;
  }
  pump(room);
}

// Sends the next group when nothing is with Redis and the copy is current. Room lock held.
void RedisRoomEngine::Impl::pump(const std::shared_ptr<Room>& room) {
  while (!room->appending && room->ready() && room->copy.may_send()) {
    auto group = room->copy.take_group(options.max_group);
    for (auto& [sub, why] : group.refused) sub.refused(std::move(why));
    if (!group.batches.empty()) send_group(room, std::move(group));
  }
}

// Room lock held.
void RedisRoomEngine::Impl::send_group(const std::shared_ptr<Room>& room, RoomCopy::Group group) {
  const std::uint64_t expected = room->copy.seq();
  std::vector<std::string> args{std::to_string(expected), room->copy.epoch(), key(room->id, "ch")};
  args.reserve(3 + group.messages.size());
  for (auto& m : group.messages) args.push_back(std::move(m));
  // With ack durability, this node holds its own batches back until the replicas have
  // them (marked before the append, whose messages may arrive before the reply).
  if (options.ack_replicas > 0) {
    for (std::size_t i = 1; i <= group.batches.size(); ++i) room->copy.hold(expected + i);
  }
  room->appending = true;
  if (options.on_group) options.on_group(group.batches.size());
  std::weak_ptr<Impl> weak = shared_from_this();
  const auto id = room->id;
  auto batches = std::make_shared<std::vector<Submission>>(std::move(group.batches));
  client->eval(kAppend, {key(id, "meta"), key(id, "log")}, std::move(args),
               [weak, room, batches, expected](Reply r) {
                 if (auto self = weak.lock())
                   self->group_answered(room, std::move(*batches), expected, r);
               });
}

void RedisRoomEngine::Impl::group_answered(const std::shared_ptr<Room>& room,
                                           std::vector<Submission> group, std::uint64_t expected,
                                           const Reply& r) {
  const bool answered = !r.is_error() && r.elements.size() >= 2;
  const auto outcome = answered ? r.elements[0].integer : 0;
  const std::uint64_t last = expected + group.size();
  if (options.ack_replicas > 0) {
    if (outcome == 1) {
      await_replicas(room, expected + 1, last);
    } else {
      release(room, expected + 1, last);
    }
  }
  std::lock_guard lock(room->mu);
  room->appending = false;
  if (!answered) {
    // Redis did not answer (down, or a timeout): whether the group landed is unknown to
    // this node, so the authors are told so; resuming tells them the rest.
    log::warn("redis engine: appending batches failed", {{"room", room->id}, {"error", r.str}});
    for (auto& sub : group)
      sub.refused(collab::fail(Code::Unavailable, "room engine unavailable: " + r.str,
                               options.busy_retry_after.count()));
    arm_catch_up(room);
    return;
  }
  if (outcome == 1) {
    // The group is in: its batches come back on the channel, which acks them. The next
    // group waits until the copy holds them (a fair start against the other nodes).
    room->copy.wait_for(last);
    mark_dirty(room->id, last);
    arm_catch_up(room);
    pump(room);
    return;
  }
  if (outcome == -1) {
    // A new epoch (another node saw history lost) or the keys are gone: this node's copy
    // is void and its members resynchronise. The group is not in; it is refused.
    for (auto& sub : group)
      sub.refused(collab::fail(Code::Unavailable, "the room restarted; join it again", 100));
    if (room->ready()) {
      if (auto* s = sink.load()) s->on_reset(room->id);
      reload(room);
    }
    return;
  }
  // Someone else appended first: back to the head of the queue, in order; validated
  // again once the copy has caught up.
  if (options.on_conflict) options.on_conflict();
  room->copy.requeue(std::move(group));
  const auto redis_seq = reply_u64(r.elements[1]);
  if (redis_seq > room->copy.seq()) {
    room->copy.wait_for(redis_seq);
    arm_catch_up(room);
  } else if (redis_seq < room->copy.seq()) {
    history_lost(room);
  }
  pump(room);
}

// The copy normally catches up from the channel within a millisecond; if it has not
// after catch_up_after (a lost message, a moved subscription), it reads the log.
void RedisRoomEngine::Impl::arm_catch_up(const std::shared_ptr<Room>& room) {
  if (room->catch_up_armed) return;
  room->catch_up_armed = true;
  std::weak_ptr<Impl> weak = shared_from_this();
  runtime.after(options.catch_up_after, [weak, room] {
    auto self = weak.lock();
    if (!self) return;
    std::lock_guard lock(room->mu);
    room->catch_up_armed = false;
    if (!room->ready()) return;
    if (room->copy.behind()) {
      self->fill(room);
      self->arm_catch_up(room);
    } else {
      self->pump(room);
    }
  });
}

// Marks the room for the persister. Not atomic with the append (another slot in a
// Cluster): a mark lost with this node is found by the persister's reconciliation.
void RedisRoomEngine::Impl::mark_dirty(const std::string& id, std::uint64_t seq) {
  const auto dirty = options.prefix + ":dirty";
  client->command(dirty, {"ZADD", dirty, "GT", std::to_string(seq), id}, [id](Reply z) {
    if (z.is_error())
      log::warn("redis engine: dirty mark failed", {{"room", id}, {"error", z.str}});
  });
}

// WAIT on the connection that carried the append (one per node): every earlier write on
// it, ours included, must reach the replicas. Then the batch is delivered.
void RedisRoomEngine::Impl::await_replicas(const std::shared_ptr<Room>& room, std::uint64_t first,
                                           std::uint64_t last) {
  std::weak_ptr<Impl> weak = shared_from_this();
  client->command(
      key(room->id, "meta"),
      {"WAIT", std::to_string(options.ack_replicas), std::to_string(options.wait_timeout.count())},
      [weak, room, first, last](Reply r) {
        auto self = weak.lock();
        if (!self) return;
        if (r.is_error() || r.integer < self->options.ack_replicas) {
          log::warn("redis engine: replicas did not confirm a batch in time; acking anyway",
                    {{"room", room->id},
                     {"seq", static_cast<std::int64_t>(last)},
                     {"replicas", static_cast<std::int64_t>(r.integer)}});
          if (self->options.on_wait_timeout) self->options.on_wait_timeout();
        }
        self->release(room, first, last);
      });
}

void RedisRoomEngine::Impl::release(const std::shared_ptr<Room>& room, std::uint64_t first,
                                    std::uint64_t last) {
  std::lock_guard lock(room->mu);
  if (room->copy.release(first, last)) drain_early(room);
}

}  // namespace kiln::engines
