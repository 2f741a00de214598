// Request parsing and response helpers shared by the API's handlers: ids and names as the
// API accepts them, JSON bodies with only the fields named, page cursors. A malformed
// request is a Refusal value (problem.hpp) naming the field it is about.
#pragma once

#include "api/problem.hpp"
#include "platform/clock.hpp"
#include "platform/codec.hpp"
#include "platform/http.hpp"
#include "platform/ids.hpp"
#include "platform/utf8.hpp"
#include "store/projects.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>

namespace kiln::api {

namespace json = boost::json;
using http::Request;
using http::Response;

inline std::int64_t now_s() {
  return clock::unix_ms() / 1000;
}

// Ids in paths and bodies: the room syntax's project/scene ids.
inline bool valid_id(std::string_view s) {
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
  });
}

// User ids come from the studio: printable, no spaces or controls, at most 128 bytes.
inline bool valid_user_id(std::string_view s) {
  return !s.empty() && s.size() <= 128 && std::all_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u > 0x20 && u != 0x7f && c != '/' && c != '"' && c != '\\';
  });
}

// Names people read (projects, scenes, users): 1-200 characters (code points) of UTF-8,
// without control or bidirectional formatting characters.
inline bool valid_name(std::string_view s) {
  const auto n = utf8::printable_length(s);
  return n && *n >= 1 && *n <= 200;
}

inline bool valid_role(std::string_view r) {
  return r == "owner" || r == "editor" || r == "viewer";
}

inline int rank(std::string_view role) {
  if (role == "owner") return 3;
  if (role == "editor") return 2;
  if (role == "viewer") return 1;
  return 0;
}

// Whether the request says its body is JSON (media types are case-insensitive, parameters
// and spaces around them allowed: RFC 9110 section 8.3.1).
inline bool is_json(const Request& req) {
  auto ct = req.header("Content-Type");
  if (!ct) return false;
  auto type = ct->substr(0, ct->find(';'));
  while (!type.empty() && (type.back() == ' ' || type.back() == '\t')) type.remove_suffix(1);
  return codec::iequals(type, "application/json");
}

inline Refusal not_json() {
  return {415, "unsupported-media-type", "Send the body as application/json."};
}

// The request body as a JSON object with only the fields named.
inline Checked<json::object> body_object(const Request& req,
                                         std::initializer_list<std::string_view> allowed) {
  if (!is_json(req)) return not_json();
  boost::system::error_code ec;
  json::parse_options po;
  po.max_depth = 16;
  auto v = json::parse(req.body, ec, {}, po);
  if (ec) return Refusal{400, "invalid-json", "The body is not valid JSON: " + ec.message()};
  if (!v.is_object()) return invalid("The body must be a JSON object.");
  for (const auto& kv : v.as_object()) {
    if (std::find(allowed.begin(), allowed.end(), kv.key()) == allowed.end())
      return invalid("Unknown field '" + std::string(kv.key()) + "'.");
  }
  return std::move(v.as_object());
}

inline Checked<std::optional<std::string>> opt_string(const json::object& o,
                                                      std::string_view field) {
  const auto* v = o.if_contains(field);
  if (v == nullptr || v->is_null()) return std::optional<std::string>();
  if (!v->is_string()) return invalid("'" + std::string(field) + "' must be a string.");
  return std::optional<std::string>(v->get_string());
}

inline Checked<std::string> need_string(const json::object& o, std::string_view field) {
  KILN_TRY(v, opt_string(o, field));
  if (!v) return invalid("'" + std::string(field) + "' is required.");
  return std::move(*v);
}

// The body's "name": required, valid_name().
inline Checked<std::string> need_name(const json::object& o) {
  KILN_TRY(name, need_string(o, "name"));
  if (!valid_name(name))
    return invalid(
        "'name' must be 1-200 characters without control or bidirectional formatting characters.");
  return name;
}

// The body's "id" when given (checked), else a new one with this prefix.
inline Checked<std::string> id_or_new(const json::object& o, std::string_view prefix) {
  KILN_TRY(given, opt_string(o, "id"));
  auto id = given.value_or(std::string(prefix) + ids::random_hex(8));
  if (!valid_id(id)) return invalid("'id' must be 1-64 characters of [A-Za-z0-9_-].");
  return id;
}

// A membership change that did not happen, as its problem.
inline Checked<void> check(store::MemberChange c) {
  if (c == store::MemberChange::NotFound) return not_found();
  if (c == store::MemberChange::LastOwner)
    return Refusal{409, "last-owner",
                   "A project keeps at least one owner: make someone else owner first."};
  return {};
}

inline json::object project_json(const store::Project& p, const std::string& role) {
  json::object o{
      {"id", p.id}, {"name", p.name}, {"created_by", p.created_by}, {"created_at", p.created_at}};
  if (!role.empty()) o["role"] = role;
  return o;
}

inline json::object scene_json(const store::SceneRow& s) {
  return {{"project", s.project_id},
          {"id", s.id},
          {"name", s.name},
          {"created_at", s.created_at},
          {"updated_at", s.updated_at}};
}

inline Response ok_json(int status, const json::value& v) {
  return Response::json(status, json::serialize(v));
}

// Opaque page cursors: base64url of "c1:" + the last id (keyset pagination: stable while
// rows are inserted concurrently).
inline std::string make_cursor(const std::string& last_id) {
  return codec::base64url("c1:" + last_id);
}

inline Checked<std::string> read_cursor(const std::optional<std::string>& cursor) {
  if (!cursor || cursor->empty()) return std::string();
  const auto decoded = codec::base64url_decode(*cursor);
  if (!decoded || !decoded->starts_with("c1:") || decoded->size() > 3 + 128)
    return invalid("Invalid 'cursor'.");
  return decoded->substr(3);
}

}  // namespace kiln::api
