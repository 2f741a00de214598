#include "collab/protocol.hpp"

#include "collab/ops.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

namespace kiln::collab {
namespace {

namespace json = boost::json;

std::string quote(std::string_view s) {
  return json::serialize(json::string(s));
}

Decoded fatal(std::string message) {
  Decoded d;
  d.kind = Decoded::Kind::Fatal;
  d.close = Close::Protocol;
  d.error = fail(Code::Invalid, std::move(message));
  return d;
}

Decoded nack(std::optional<std::int64_t> id, std::string room, Code code, std::string message) {
  Decoded d;
  d.kind = Decoded::Kind::Nack;
  d.id = id;
  d.room = std::move(room);
  d.error = fail(code, std::move(message));
  return d;
}

// A required string field; nullptr when missing or not a string.
const json::string* str_field(const json::object& o, std::string_view name) {
  auto* v = o.if_contains(name);
  return v != nullptr && v->is_string() ? &v->get_string() : nullptr;
}

std::optional<std::int64_t> int_field(const json::object& o, std::string_view name) {
  auto* v = o.if_contains(name);
  if (v == nullptr) return std::nullopt;
  if (v->is_int64()) return v->get_int64();
  if (v->is_uint64() && v->get_uint64() <= static_cast<std::uint64_t>(INT64_MAX)) {
    return static_cast<std::int64_t>(v->get_uint64());
  }
  return std::nullopt;
}

}  // namespace

bool valid_room(std::string_view room) {
  auto slash = room.find('/');
  return slash != std::string_view::npos && valid_id(room.substr(0, slash)) &&
         valid_id(room.substr(slash + 1));
}

std::string_view room_project(std::string_view room) {
  return room.substr(0, room.find('/'));
}

Decoded decode(std::string_view frame) {
  json::parse_options opts;
  opts.max_depth = kMaxJsonDepth;
  boost::system::error_code ec;
  json::value v = json::parse(frame, ec, {}, opts);
  if (ec) return fatal("malformed JSON: " + ec.message());
  if (!v.is_object()) return fatal("a frame must be a JSON object");
  const auto& o = v.get_object();
  const auto* t = str_field(o, "t");
  if (t == nullptr) return fatal("missing string field 't'");

  // Requests carry an integer id; without one there is nobody to answer.
  auto need_id = [&](std::int64_t& id) -> bool {
    auto got = int_field(o, "id");
    if (!got) return false;
    id = *got;
    return true;
  };
  auto need_room = [&](std::int64_t id, std::string& room) -> std::optional<Decoded> {
    const auto* r = str_field(o, "room");
    if (r == nullptr) return fatal("missing string field 'room'");
    room.assign(*r);
    if (!valid_room(room)) {
      return nack(id, room, Code::Invalid,
                  "'room' must be <project>/<scene>, each 1-64 characters of [A-Za-z0-9_-]");
    }
    return std::nullopt;
  };

  Decoded d;
  if (*t == "hello") {
    msg::Hello m{};
    if (!need_id(m.id)) return fatal("missing integer field 'id'");
    const auto* token = str_field(o, "token");
    if (token == nullptr) return fatal("missing string field 'token'");
    m.token.assign(*token);
    d.message = std::move(m);
  } else if (*t == "join") {
    msg::Join m{};
    if (!need_id(m.id)) return fatal("missing integer field 'id'");
    if (auto bad = need_room(m.id, m.room)) return *bad;
    if (auto* since = o.if_contains("since"); since != nullptr && !since->is_null()) {
      const auto* so = since->if_object();
      const auto* epoch = so ? str_field(*so, "epoch") : nullptr;
      auto* seq = so ? so->if_contains("seq") : nullptr;
      if (epoch == nullptr || seq == nullptr || !(seq->is_int64() || seq->is_uint64()) ||
          (seq->is_int64() && seq->get_int64() < 0)) {
        return nack(m.id, m.room, Code::Invalid,
                    "'since' must be {\"epoch\": string, \"seq\": non-negative integer}");
      }
      m.since =
          Since{std::string(*epoch),
                seq->is_int64() ? static_cast<std::uint64_t>(seq->get_int64()) : seq->get_uint64()};
    }
    d.message = std::move(m);
  } else if (*t == "op") {
    msg::Op m{};
    if (!need_id(m.id)) return fatal("missing integer field 'id'");
    if (auto bad = need_room(m.id, m.room)) return *bad;
    auto* ops = o.if_contains("ops");
    if (ops == nullptr) return fatal("missing field 'ops'");
    m.ops = *ops;
    d.message = std::move(m);
  } else if (*t == "eph") {
    msg::Eph m;
    const auto* r = str_field(o, "room");
    const auto* kind = str_field(o, "kind");
    auto* data = o.if_contains("data");
    if (r == nullptr || kind == nullptr || data == nullptr) {
      return fatal("'eph' needs string 'room', string 'kind' and object 'data'");
    }
    m.room.assign(*r);
    if (!valid_room(m.room)) return nack(std::nullopt, m.room, Code::Invalid, "bad 'room'");
    if (kind->empty() || kind->size() > kMaxKindLength) {
      return nack(std::nullopt, m.room, Code::Invalid, "'kind' must be 1-32 bytes");
    }
    if (!data->is_object())
      return nack(std::nullopt, m.room, Code::Invalid, "'data' must be an object");
    m.kind.assign(*kind);
    m.data = json::serialize(*data);
    if (m.data.size() > kMaxEphData) {
      return nack(std::nullopt, m.room, Code::TooLarge, "'data' is larger than 4 KiB");
    }
    d.message = std::move(m);
  } else if (*t == "leave") {
    msg::Leave m{};
    if (!need_id(m.id)) return fatal("missing integer field 'id'");
    if (auto bad = need_room(m.id, m.room)) return *bad;
    d.message = std::move(m);
  } else if (*t == "ping") {
    msg::Ping m{};
    if (!need_id(m.id)) return fatal("missing integer field 'id'");
    d.message = m;
  } else {
    return fatal("unknown message type '" + std::string(*t) + "'");
  }
  return d;
}

namespace encode {

std::string welcome(std::int64_t id, std::string_view session, std::string_view node,
                    std::string_view user, std::string_view name, std::int64_t heartbeat_ms) {
  json::object o;
  o["t"] = "welcome";
  o["id"] = id;
  o["session"] = session;
  o["node"] = node;
  o["user"] = json::object{{"id", user}, {"name", name}};
  o["heartbeat_ms"] = heartbeat_ms;
  return json::serialize(o);
}

std::string ack(std::int64_t id, std::string_view room, std::uint64_t seq) {
  return "{\"t\":\"ack\",\"id\":" + std::to_string(id) + ",\"room\":" + quote(room) +
         ",\"seq\":" + std::to_string(seq) + "}";
}

std::string nack(std::optional<std::int64_t> id, std::string_view room, Code code,
                 std::string_view message, std::int64_t after_ms) {
  json::object o;
  o["t"] = "nack";
  if (id) o["id"] = *id;
  if (!room.empty()) o["room"] = room;
  o["code"] = to_string(code);
  o["message"] = message;
  if (after_ms > 0) o["after_ms"] = after_ms;
  return json::serialize(o);
}

std::string ops(std::string_view room, std::uint64_t seq, std::string_view author,
                const json::array& ops) {
  return "{\"t\":\"ops\",\"room\":" + quote(room) + ",\"seq\":" + std::to_string(seq) +
         ",\"author\":" + quote(author) + ",\"ops\":" + json::serialize(ops) + "}";
}

std::string left(std::int64_t id, std::string_view room) {
  return "{\"t\":\"left\",\"id\":" + std::to_string(id) + ",\"room\":" + quote(room) + "}";
}

std::string left_by_server(std::string_view room, std::string_view reason) {
  return "{\"t\":\"left\",\"room\":" + quote(room) + ",\"reason\":" + quote(reason) + "}";
}

std::string notify_access(std::string_view project, std::string_view role) {
  return "{\"t\":\"notify\",\"kind\":\"access\",\"project\":" + quote(project) +
         ",\"role\":" + quote(role) + "}";
}

std::optional<std::string> notify(std::string_view fields) {
  boost::system::error_code ec;
  auto v = boost::json::parse(fields, ec);
  if (ec || !v.is_object()) return std::nullopt;
  auto& o = v.as_object();
  const auto* kind = o.if_contains("kind");
  if (!kind || !kind->is_string()) return std::nullopt;
  boost::json::object frame{{"t", "notify"}};
  for (auto& [k, val] : o)
    if (k != "t") frame[k] = val;
  return boost::json::serialize(frame);
}

std::string pong(std::int64_t id) {
  return "{\"t\":\"pong\",\"id\":" + std::to_string(id) + "}";
}

std::string reconnect(std::int64_t after_ms) {
  return "{\"t\":\"reconnect\",\"after_ms\":" + std::to_string(after_ms) + "}";
}

std::string error(Code code, std::string_view message) {
  json::object o;
  o["t"] = "error";
  o["code"] = to_string(code);
  o["message"] = message;
  return json::serialize(o);
}

namespace {

std::string member_json(const PresenceMember& m, bool with_eph) {
  std::string out = "{\"user\":" + quote(m.user) + ",\"session\":" + quote(m.session) +
                    ",\"name\":" + quote(m.name);
  if (with_eph) {
    out += ",\"eph\":{";
    for (std::size_t i = 0; i < m.eph.size(); ++i) {
      out += (i ? "," : "") + quote(m.eph[i].first) + ":" + m.eph[i].second;
    }
    out += "}";
  }
  return out + "}";
}

}  // namespace

std::string presence(std::string_view room, const std::vector<PresenceMember>& joined,
                     const std::vector<std::string>& left_sessions) {
  std::string out = "{\"t\":\"presence\",\"room\":" + quote(room) + ",\"joined\":[";
  for (std::size_t i = 0; i < joined.size(); ++i) {
    out += (i ? "," : "") + member_json(joined[i], false);
  }
  out += "],\"left\":[";
  for (std::size_t i = 0; i < left_sessions.size(); ++i) {
    out += (i ? "," : "") + quote(left_sessions[i]);
  }
  return out + "]}";
}

std::string eph(std::string_view room, const std::vector<const EphEntry*>& batch) {
  std::string out = "{\"t\":\"eph\",\"room\":" + quote(room) + ",\"batch\":[";
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const auto& e = *batch[i];
    out += (i ? "," : "");
    out += "{\"user\":" + quote(e.user) + ",\"session\":" + quote(e.session) +
           ",\"kind\":" + quote(e.kind) + ",\"data\":" + e.data + "}";
  }
  return out + "]}";
}

std::string joined(std::int64_t id, std::string_view room, std::string_view epoch,
                   std::uint64_t seq, bool recovered,
                   const std::vector<std::shared_ptr<const std::string>>& ops_frames,
                   const json::object* snapshot, const std::vector<PresenceMember>& presence) {
  std::string out = "{\"t\":\"joined\",\"id\":" + std::to_string(id) + ",\"room\":" + quote(room) +
                    ",\"epoch\":" + quote(epoch) + ",\"seq\":" + std::to_string(seq) +
                    ",\"recovered\":" + (recovered ? "true" : "false");
  if (recovered) {
    out += ",\"ops\":[";
    for (std::size_t i = 0; i < ops_frames.size(); ++i) out += (i ? "," : "") + *ops_frames[i];
    out += "]";
  } else {
    out += ",\"snapshot\":" +
           (snapshot ? json::serialize(*snapshot) : std::string("{\"entities\":{}}"));
  }
  out += ",\"presence\":[";
  for (std::size_t i = 0; i < presence.size(); ++i) {
    out += (i ? "," : "") + member_json(presence[i], true);
  }
  return out + "]}";
}

}  // namespace encode
}  // namespace kiln::collab
