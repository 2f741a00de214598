#include "engines/redis/redis_persist_source.hpp"

#include "engines/redis/redis_messages.hpp"
#include "engines/redis/redis_scripts.hpp"

#include <boost/json/serialize.hpp>

#include <algorithm>
#include <future>
#include <stdexcept>

namespace kiln::engines {

using redis::Reply;
using namespace scripts;

RedisPersistSource::RedisPersistSource(std::shared_ptr<redis::Client> client, std::string prefix,
                                       std::size_t max_entities)
    : client_(std::move(client)), prefix_(std::move(prefix)), max_entities_(max_entities) {}

std::string RedisPersistSource::key(const std::string& room, const char* what) const {
  return prefix_ + ":{" + room + "}:" + what;
}

namespace {

using collab::SourceError;
using collab::SourceResult;

SourceError unavailable(std::string detail) {
  return SourceError{SourceError::Code::unavailable, std::move(detail)};
}

// Waits for one reply (persister thread only): the reply, or why there is none.
SourceResult<Reply> await_reply(std::future<Reply>& f) {
  if (f.wait_for(std::chrono::seconds(30)) != std::future_status::ready)
    return unavailable("redis: no reply within 30 s");
  auto r = f.get();
  if (r.is_error()) return unavailable("redis: " + r.str);
  return r;
}

// Runs one command and waits for its reply.
SourceResult<Reply> wait_reply(const std::function<void(redis::Client::Callback)>& send) {
  auto p = std::make_shared<std::promise<Reply>>();
  auto f = p->get_future();
  send([p](Reply r) { p->set_value(std::move(r)); });
  return await_reply(f);
}

}  // namespace

SourceResult<std::vector<collab::RoomVersion>> RedisPersistSource::dirty_rooms(std::size_t limit) {
  const auto dirty = prefix_ + ":dirty";
  auto r = wait_reply([&](auto cb) {
    client_->command(
        dirty,
        {"ZRANGE", dirty, "0", std::to_string(std::max<std::size_t>(limit, 1) - 1), "WITHSCORES"},
        std::move(cb));
  });
  if (!r) return r.error();
  std::vector<collab::RoomVersion> out;
  for (std::size_t i = 0; i + 1 < r->elements.size(); i += 2)
    out.push_back(collab::RoomVersion{r->elements[i].str, to_u64(r->elements[i + 1].str)});
  return out;
}

SourceResult<std::vector<collab::RoomVersion>> RedisPersistSource::all_rooms() {
  // SCAN every primary for the rooms' meta keys, then ask each room's seq.
  const std::string head = prefix_ + ":{";
  const std::string tail = "}:meta";
  std::vector<std::string> rooms;
  for (const auto& node : client_->primaries()) {
    std::string cursor = "0";
    do {
      auto r = wait_reply([&](auto cb) {
        client_->command_at(node, {"SCAN", cursor, "MATCH", head + "*" + tail, "COUNT", "1000"},
                            std::move(cb));
      });
      if (!r) return r.error();
      if (r->elements.size() < 2) return unavailable("redis: unexpected SCAN reply");
      cursor = r->elements[0].str;
      for (const auto& k : r->elements[1].elements) {
        const auto& key = k.str;
        if (key.size() > head.size() + tail.size() && key.starts_with(head) && key.ends_with(tail))
          rooms.push_back(key.substr(head.size(), key.size() - head.size() - tail.size()));
      }
    } while (cursor != "0");
  }
  std::sort(rooms.begin(), rooms.end());
  rooms.erase(std::unique(rooms.begin(), rooms.end()), rooms.end());
  // Pipelined: every HGET sent, then every reply awaited.
  std::vector<std::future<Reply>> replies;
  replies.reserve(rooms.size());
  for (const auto& room : rooms) {
    auto p = std::make_shared<std::promise<Reply>>();
    replies.push_back(p->get_future());
    const auto meta = key(room, "meta");
    client_->command(meta, {"HGET", meta, "seq"}, [p](Reply r) { p->set_value(std::move(r)); });
  }
  std::vector<collab::RoomVersion> out;
  for (std::size_t i = 0; i < rooms.size(); ++i) {
    auto r = await_reply(replies[i]);
    if (!r) return r.error();
    out.push_back(collab::RoomVersion{rooms[i], reply_u64(*r)});
  }
  return out;
}

SourceResult<std::optional<collab::RoomState>> RedisPersistSource::read_room(
    const std::string& room) {
  auto r = wait_reply([&](auto cb) {
    client_->eval(kRead, {key(room, "meta"), key(room, "snap"), key(room, "log")}, {},
                  std::move(cb));
  });
  if (!r) return r.error();
  if (r->elements.size() < 5) return std::optional<collab::RoomState>();
  auto rb = rebuild(*r, max_entities_, 0);
  if (!rb)
    return SourceError{SourceError::Code::unreadable,
                       "the room's snapshot in Redis is unreadable: " + room};
  return std::optional<collab::RoomState>(
      collab::RoomState{room, rb->epoch, rb->seq, boost::json::serialize(rb->scene.snapshot())});
}

SourceResult<void> RedisPersistSource::mark_stored(const std::string& room, std::uint64_t seq) {
  const auto dirty = prefix_ + ":dirty";
  auto r = wait_reply([&](auto cb) {
    client_->eval(kMarkStored, {dirty}, {room, std::to_string(seq)}, std::move(cb));
  });
  if (!r) return r.error();
  return {};
}

}  // namespace kiln::engines
