// Wire protocol v1 (docs/protocol.md): decoding client frames and encoding server frames.
// Pure: bytes in, values out. The WebSocket session and the tests both use it.
#pragma once

#include "collab/errors.hpp"

#include <boost/json/value.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace kiln::collab {

inline constexpr std::string_view kSubprotocol = "kiln.v1";

// WebSocket close codes.
enum class Close : std::uint16_t {
  Restarting = 1012,       // after `reconnect`
  Protocol = 4000,         // malformed JSON, unknown `t`, missing field
  Unauthenticated = 4001,  // no valid hello in time
  Forbidden = 4003,
  SlowConsumer = 4008,
  TooLarge = 4009,
  RateLimited = 4029,
};

struct Since {
  std::string epoch;
  std::uint64_t seq = 0;
};

namespace msg {
struct Hello {
  std::int64_t id;
  std::string token;
};
struct Join {
  std::int64_t id;
  std::string room;
  std::optional<Since> since;
};
struct Op {
  std::int64_t id;
  std::string room;
  boost::json::value ops;  // validated later by parse_batch
};
struct Eph {
  std::string room;
  std::string kind;
  std::string data;  // the `data` object, serialized (at most kMaxEphData bytes)
};
struct Leave {
  std::int64_t id;
  std::string room;
};
struct Ping {
  std::int64_t id;
};
}  // namespace msg

using ClientMessage = std::variant<msg::Hello, msg::Join, msg::Op, msg::Eph, msg::Leave, msg::Ping>;

inline constexpr std::size_t kMaxKindLength = 32;
inline constexpr std::size_t kMaxEphData = 4096;
inline constexpr std::size_t kMaxJsonDepth = 64;

// The outcome of decoding one frame.
struct Decoded {
  enum class Kind { Message, Nack, Fatal };
  Kind kind = Kind::Message;
  ClientMessage message;
  // Nack: the request had an id but a bad value; answer with a nack (or, for eph, an
  // `error` frame) and go on. Fatal: close the connection with `close`.
  Error error;
  std::optional<std::int64_t> id;
  std::string room;
  Close close = Close::Protocol;
};

Decoded decode(std::string_view frame);

// `<project>/<scene>`, each part 1-64 characters of [A-Za-z0-9_-].
bool valid_room(std::string_view room);
std::string_view room_project(std::string_view room);

// Server frames.
namespace encode {
std::string welcome(std::int64_t id, std::string_view session, std::string_view node,
                    std::string_view user, std::string_view name, std::int64_t heartbeat_ms);
std::string ack(std::int64_t id, std::string_view room, std::uint64_t seq);
// after_ms > 0: the refusal is temporary; the client may send the same request again after
// that many milliseconds (the field `after_ms`).
std::string nack(std::optional<std::int64_t> id, std::string_view room, Code code,
                 std::string_view message, std::int64_t after_ms = 0);
std::string ops(std::string_view room, std::uint64_t seq, std::string_view author,
                const boost::json::array& ops);
std::string left(std::int64_t id, std::string_view room);
// The server ended the session's membership of `room` (its scene was deleted).
std::string left_by_server(std::string_view room, std::string_view reason);
// The session's role in a project changed (the API): {"t":"notify","kind":"access",...}.
std::string notify_access(std::string_view project, std::string_view role);
// Any other notification: {"t":"notify", ...fields} from a JSON object's text (the asset
// pipeline's {"kind":"asset",...}); nullopt when `fields` is not a JSON object with a
// string "kind".
std::optional<std::string> notify(std::string_view fields);
std::string pong(std::int64_t id);
std::string reconnect(std::int64_t after_ms);
std::string error(Code code, std::string_view message);

struct PresenceMember {
  std::string user;
  std::string session;
  std::string name;
  // kind -> serialized data object
  std::vector<std::pair<std::string, std::string>> eph;
};
std::string presence(std::string_view room, const std::vector<PresenceMember>& joined,
                     const std::vector<std::string>& left_sessions);

struct EphEntry {
  std::string user;
  std::string session;
  std::string kind;
  std::string data;  // serialized object
};
std::string eph(std::string_view room, const std::vector<const EphEntry*>& batch);

// `joined`: exactly one of `ops_frames` (recovered) or `snapshot` (not recovered).
std::string joined(std::int64_t id, std::string_view room, std::string_view epoch,
                   std::uint64_t seq, bool recovered,
                   const std::vector<std::shared_ptr<const std::string>>& ops_frames,
                   const boost::json::object* snapshot,
                   const std::vector<PresenceMember>& presence);
}  // namespace encode

}  // namespace kiln::collab
