// The Redis engine's wire values, as pure code: the messages on a room's channel and in its
// log (docs/redis-keyspace.md, "Messages"), and a room rebuilt from a load script's reply.
// No I/O; tested in redis_messages_test.cpp.
#pragma once

#include "clients/redis/reply.hpp"
#include "collab/ops.hpp"
#include "collab/scene.hpp"

#include <boost/json/value.hpp>

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::engines {

// An accepted batch: "o\n<seq>\n<user>\n<session>\n<request id>\n<ops frame>". The frame
// is JSON, so it holds no raw newline; the other fields are ids without one.
struct OpsMessage {
  std::uint64_t seq = 0;
  std::string user, session;
  std::int64_t request_id = 0;
  std::string frame;  // the `ops` frame peers receive (protocol.md)
};

std::string encode_ops(const OpsMessage& m);
// nullopt when `s` is not an 'o' message with its five header fields.
std::optional<OpsMessage> decode_ops(std::string_view s);

// A string value, or "" (messages on a channel are trusted but checked).
std::string str(const boost::json::value& v);
// A string field of a JSON object, or "".
std::string field(const boost::json::value& v, std::string_view name);
// A decimal in a string, 0 when it is not one.
std::uint64_t to_u64(std::string_view s);
// An integer reply, or a bulk string holding one.
std::uint64_t reply_u64(const redis::Reply& r);

// A room rebuilt from a load or read script's reply {epoch, seq, snap_seq, snapshot, log}:
// the snapshot with the logged batches after it applied in order (stopping at a gap or at
// a batch that does not apply), and the log's frames for resuming (at most `retention`).
struct Rebuilt {
  collab::Scene scene;
  std::string epoch;
  std::uint64_t seq = 0;
  std::deque<std::shared_ptr<const std::string>> log;  // frames of (seq - log.size(), seq]
};
// nullopt when the reply is not of that shape or its snapshot is unreadable.
std::optional<Rebuilt> rebuild(const redis::Reply& r, std::size_t max_entities,
                               std::size_t retention);

}  // namespace kiln::engines
