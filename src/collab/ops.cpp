#include "collab/ops.hpp"

#include <boost/json/parse.hpp>

#include <algorithm>

namespace kiln::collab {

std::string_view to_string(Code c) {
  switch (c) {
    case Code::Ok:
      return "ok";
    case Code::NotFound:
      return "not_found";
    case Code::Exists:
      return "exists";
    case Code::Cycle:
      return "cycle";
    case Code::Invalid:
      return "invalid";
    case Code::Forbidden:
      return "forbidden";
    case Code::TooLarge:
      return "too_large";
    case Code::RateLimited:
      return "rate_limited";
    case Code::Unavailable:
      return "unavailable";
  }
  return "invalid";
}

bool valid_id(std::string_view id) {
  return !id.empty() && id.size() <= kMaxIdLength && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
}

namespace {

Error invalid(std::string m) {
  return fail(Code::Invalid, std::move(m));
}

Error read_id(const boost::json::object& o, const char* field, std::string& out) {
  auto* v = o.if_contains(field);
  if (v == nullptr || !v->is_string())
    return invalid(std::string("'") + field + "' must be a string");
  std::string_view s = v->get_string();
  if (!valid_id(s)) {
    return invalid(std::string("'") + field + "' must be 1-64 characters of [A-Za-z0-9_-]");
  }
  out.assign(s);
  return {};
}

Error read_index(const boost::json::object& o, std::optional<std::string>& out) {
  auto* v = o.if_contains("index");
  if (v == nullptr) return {};
  if (!v->is_string()) return invalid("'index' must be a string");
  if (v->get_string().size() > kMaxIndexLength) return invalid("'index' is longer than 256 bytes");
  out.emplace(v->get_string());
  return {};
}

bool valid_key(std::string_view k) {
  return !k.empty() && k.size() <= kMaxKeyLength;
}

// Only the listed fields may appear: a typo ("parnet") must not be silently ignored.
Error only_fields(const boost::json::object& o, std::initializer_list<std::string_view> allowed) {
  for (const auto& kv : o) {
    if (std::find(allowed.begin(), allowed.end(), kv.key()) == allowed.end()) {
      return invalid("unknown field '" + std::string(kv.key()) + "'");
    }
  }
  return {};
}

}  // namespace

Error parse_op(const boost::json::value& v, Op& out) {
  if (!v.is_object()) return invalid("each op must be an object");
  const auto& o = v.get_object();
  auto* kind = o.if_contains("op");
  if (kind == nullptr || !kind->is_string()) return invalid("'op' must be a string");
  std::string_view k = kind->get_string();
  out = Op{};
  if (auto e = read_id(o, "entity", out.entity)) return e;
  if (k == "create") {
    out.kind = Op::Kind::Create;
    if (auto e = only_fields(o, {"op", "entity", "parent", "index", "props"})) return e;
    if (out.entity == kRoot) return fail(Code::Exists, "'root' always exists");
    if (auto e = read_id(o, "parent", out.parent)) return e;
    if (auto e = read_index(o, out.index)) return e;
    if (auto* p = o.if_contains("props")) {
      if (!p->is_object()) return invalid("'props' must be an object");
      for (const auto& kv : p->get_object()) {
        if (!valid_key(kv.key())) return invalid("property keys must be 1-128 bytes");
        if (!kv.value().is_null()) out.props.emplace(kv.key(), kv.value());
      }
    }
  } else if (k == "set") {
    out.kind = Op::Kind::Set;
    if (auto e = only_fields(o, {"op", "entity", "key", "value"})) return e;
    auto* key = o.if_contains("key");
    if (key == nullptr || !key->is_string()) return invalid("'key' must be a string");
    if (!valid_key(key->get_string())) return invalid("'key' must be 1-128 bytes");
    out.key.assign(key->get_string());
    auto* value = o.if_contains("value");
    if (value == nullptr) return invalid("'value' is required (null removes the key)");
    out.value = *value;
  } else if (k == "move") {
    out.kind = Op::Kind::Move;
    if (auto e = only_fields(o, {"op", "entity", "parent", "index"})) return e;
    if (auto e = read_id(o, "parent", out.parent)) return e;
    if (auto e = read_index(o, out.index)) return e;
  } else if (k == "delete") {
    out.kind = Op::Kind::Delete;
    if (auto e = only_fields(o, {"op", "entity"})) return e;
  } else {
    return invalid("unknown op '" + std::string(k) + "'");
  }
  return {};
}

bool parse_ops_frame(std::string_view frame, std::vector<Op>& out) {
  boost::system::error_code ec;
  auto v = boost::json::parse(frame, ec);
  if (ec || !v.is_object() || !v.as_object().contains("ops")) return false;
  return !parse_batch(v.at("ops"), SIZE_MAX, out);
}

Error parse_batch(const boost::json::value& v, std::size_t max_ops, std::vector<Op>& out) {
  if (!v.is_array()) return invalid("'ops' must be an array");
  const auto& a = v.get_array();
  if (a.empty()) return invalid("'ops' must not be empty");
  if (a.size() > max_ops) {
    return fail(Code::TooLarge, "a batch holds at most " + std::to_string(max_ops) + " ops");
  }
  out.clear();
  out.reserve(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    Op op;
    if (auto e = parse_op(a[i], op)) {
      e.message = "op " + std::to_string(i) + ": " + e.message;
      return e;
    }
    out.push_back(std::move(op));
  }
  return {};
}

boost::json::object to_json(const Op& op) {
  boost::json::object o;
  switch (op.kind) {
    case Op::Kind::Create:
      o["op"] = "create";
      o["entity"] = op.entity;
      o["parent"] = op.parent;
      o["index"] = op.index.value_or("");
      o["props"] = op.props;
      break;
    case Op::Kind::Set:
      o["op"] = "set";
      o["entity"] = op.entity;
      o["key"] = op.key;
      o["value"] = op.value;
      break;
    case Op::Kind::Move:
      o["op"] = "move";
      o["entity"] = op.entity;
      o["parent"] = op.parent;
      if (op.index) o["index"] = *op.index;
      break;
    case Op::Kind::Delete:
      o["op"] = "delete";
      o["entity"] = op.entity;
      break;
  }
  return o;
}

}  // namespace kiln::collab
