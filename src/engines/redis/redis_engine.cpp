#include "engines/redis/redis_engine_impl.hpp"

namespace kiln::engines {

using namespace scripts;

RedisRoomEngine::RedisRoomEngine(Runtime& runtime, std::shared_ptr<redis::Client> client,
                                 RedisEngineOptions options,
                                 std::function<std::string()> make_epoch)
    : impl_(std::make_shared<Impl>(runtime, client, options, std::move(make_epoch))),
      persist_(std::move(client), options.prefix, options.limits.max_entities) {}

RedisRoomEngine::~RedisRoomEngine() {
  close();
}

void RedisRoomEngine::set_events(collab::RoomEvents* sink) {
  impl_->sink.store(sink);
}

void RedisRoomEngine::join(const std::string& room, const collab::Member& member,
                           const std::optional<collab::Since>& since,
                           std::function<void(collab::JoinResult)> done) {
  impl_->join(room, member, since, std::move(done));
}

void RedisRoomEngine::leave(const std::string& room_id, const std::string& session) {
  if (auto room = impl_->find(room_id)) {
    bool empty = false;
    {
      std::lock_guard lock(room->mu);
      room->local.erase(session);
      empty = room->local.empty() && room->joining == 0;
    }
    if (empty) impl_->schedule_evict(room);
  }
  impl_->remove_sessions(room_id, {session}, "");
}

void RedisRoomEngine::submit(const std::string& room, const collab::Member& author,
                             std::int64_t request_id, std::vector<collab::Op> ops,
                             std::function<void(collab::Error)> refused) {
  impl_->submit(room, Submission{author, request_id,
                                 std::make_shared<std::vector<collab::Op>>(std::move(ops)),
                                 std::move(refused)});
}

void RedisRoomEngine::publish_eph(collab::EphBatch batch) {
  json::array entries;
  std::vector<std::string> args{impl_->key(batch.room, "ch"), ""};
  for (const auto& e : batch.entries) {
    entries.push_back(json::object{{"u", e.user}, {"s", e.session}, {"k", e.kind}, {"d", e.data}});
    args.push_back(e.session + ":" + e.kind);
    args.push_back(e.data);
  }
  args[1] =
      "e\n" + json::serialize(json::object{{"n", batch.origin_node}, {"b", std::move(entries)}});
  const auto room = batch.room;
  impl_->client->eval(
      kEph, {impl_->key(room, "members"), impl_->key(room, "eph")}, std::move(args),
      [room](Reply r) {
        if (r.is_error())
          log::warn("redis engine: eph publish failed", {{"room", room}, {"error", r.str}});
      });
}

void RedisRoomEngine::tick() {
  const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  const auto expiry = now + impl_->options.presence_ttl.count();
  std::vector<std::shared_ptr<Impl::Room>> rooms;
  {
    std::lock_guard lock(impl_->mu);
    for (auto& [id, r] : impl_->rooms) rooms.push_back(r);
  }
  for (auto& room : rooms) {
    std::vector<std::string> sessions;
    {
      std::lock_guard lock(room->mu);
      for (auto& [s, m] : room->local) sessions.push_back(s);
    }
    if (!sessions.empty()) {
      std::vector<std::string> args{"ZADD", impl_->key(room->id, "presence"), "XX"};
      for (const auto& s : sessions) {
        args.push_back(std::to_string(expiry));
        args.push_back(s);
      }
      impl_->client->command(impl_->key(room->id, "presence"), std::move(args), [](Reply) {});
    }
    // Members whose node stopped refreshing them are removed, and the room told.
    impl_->remove_sessions(room->id, {}, std::to_string(now));
  }
}

void RedisRoomEngine::set_loader(collab::RoomLoader loader) {
  impl_->loader = std::move(loader);
}

collab::SourceResult<std::vector<collab::RoomVersion>> RedisRoomEngine::dirty_rooms(
    std::size_t limit) {
  return persist_.dirty_rooms(limit);
}

collab::SourceResult<std::vector<collab::RoomVersion>> RedisRoomEngine::all_rooms() {
  return persist_.all_rooms();
}

collab::SourceResult<std::optional<collab::RoomState>> RedisRoomEngine::read_room(
    const std::string& room) {
  return persist_.read_room(room);
}

collab::SourceResult<void> RedisRoomEngine::mark_stored(const std::string& room,
                                                        std::uint64_t seq) {
  return persist_.mark_stored(room, seq);
}

std::size_t RedisRoomEngine::rooms() const {
  std::lock_guard lock(impl_->mu);
  return impl_->rooms.size();
}

void RedisRoomEngine::close() {
  std::lock_guard lock(impl_->mu);
  if (impl_->closed) return;
  impl_->closed = true;
  for (auto& [ep, c] : impl_->subscribers) c->close();
}

}  // namespace kiln::engines
