// The sandbox host's wire: sessions and errors as JSON (remote.hpp).
#include "sandbox/remote/wire.hpp"

#include "platform/codec.hpp"

#include <boost/json.hpp>

#include <cctype>

namespace kiln::sandbox::remote {

namespace json = boost::json;

namespace {
constexpr Exit::Reason kReasons[] = {Exit::Reason::exited, Exit::Reason::signaled,
                                     Exit::Reason::out_of_memory, Exit::Reason::destroyed};
constexpr Errc kErrcs[] = {Errc::invalid,   Errc::unavailable, Errc::not_running, Errc::failed,
                           Errc::not_found, Errc::quota,       Errc::busy};
}  // namespace

std::string host_key(const std::string& address) {
  return codec::sha256_hex(address).substr(0, 8);
}

std::string cluster_id(const std::string& key, const std::string& id) {
  return key + "-" + id;
}

std::optional<std::pair<std::string, std::string>> split_id(const std::string& cluster_id) {
  if (cluster_id.size() < 10 || cluster_id[8] != '-') return std::nullopt;
  for (std::size_t i = 0; i < 8; ++i)
    if (!std::isxdigit(static_cast<unsigned char>(cluster_id[i]))) return std::nullopt;
  return std::pair{cluster_id.substr(0, 8), cluster_id.substr(9)};
}

const char* errc_name(Errc e) {
  switch (e) {
    case Errc::invalid:
      return "invalid";
    case Errc::unavailable:
      return "unavailable";
    case Errc::not_running:
      return "not_running";
    case Errc::failed:
      return "failed";
    case Errc::not_found:
      return "not_found";
    case Errc::quota:
      return "quota";
    case Errc::busy:
      return "busy";
  }
  return "failed";
}

std::optional<Errc> errc_from_name(std::string_view name) {
  for (auto e : kErrcs)
    if (name == errc_name(e)) return e;
  return std::nullopt;
}

int errc_status(Errc e) {
  switch (e) {
    case Errc::invalid:
      return 400;
    case Errc::not_found:
      return 404;
    case Errc::quota:
    case Errc::not_running:
      return 409;
    case Errc::failed:
      return 502;
    case Errc::busy:
    case Errc::unavailable:
      return 503;
  }
  return 502;
}

json::object to_json(const SessionInfo& s) {
  json::value exit = nullptr;
  if (s.exit)
    exit = json::object{{"code", s.exit->code},
                        {"signal", s.exit->signal},
                        {"reason", to_string(s.exit->reason)},
                        {"message", s.exit->message}};
  json::value command = nullptr;
  if (!s.command.empty()) {
    json::array a;
    for (const auto& arg : s.command) a.emplace_back(arg);
    command = std::move(a);
  }
  return {{"id", s.id},
          {"owner", s.owner},
          {"command", std::move(command)},
          {"created_at", s.created_at},
          {"running", s.running},
          {"end", s.end},
          {"attached", s.attached},
          {"exit", std::move(exit)}};
}

Result<SessionInfo, Error> session_from_json(const json::value& v) {
  const Error bad{Errc::failed, "the sandbox host answered a session Kiln cannot read"};
  const auto* o = v.if_object();
  if (!o) return bad;
  SessionInfo s;
  try {
    s.id = json::value_to<std::string>(o->at("id"));
    s.owner = json::value_to<std::string>(o->at("owner"));
    if (const auto* c = o->if_contains("command"); c && !c->is_null())
      s.command = json::value_to<std::vector<std::string>>(*c);
    s.created_at = o->at("created_at").to_number<std::int64_t>();
    s.running = o->at("running").as_bool();
    s.end = o->at("end").to_number<std::uint64_t>();
    s.attached = o->at("attached").to_number<std::size_t>();
    if (const auto& e = o->at("exit"); !e.is_null()) {
      Exit x;
      x.code = e.at("code").to_number<int>();
      x.signal = e.at("signal").to_number<int>();
      x.message = json::value_to<std::string>(e.at("message"));
      const auto reason = json::value_to<std::string>(e.at("reason"));
      bool known = false;
      for (auto r : kReasons)
        if (reason == to_string(r)) x.reason = r, known = true;
      if (!known) return bad;
      s.exit = std::move(x);
    }
  } catch (const std::exception&) {
    return bad;
  }
  return s;
}

Result<Opening, Error> opening_from_json(const json::object& body) {
  Opening o;
  for (const auto& [key, value] : body) {
    if (key != "rows" && key != "cols" && key != "command")
      return Error{Errc::invalid, "unknown member '" + std::string(key) +
                                      "': an open takes 'rows', 'cols' and 'command'"};
  }
  for (auto [field, slot] : {std::pair{"rows", &o.size.rows}, std::pair{"cols", &o.size.cols}}) {
    const auto* d = body.if_contains(field);
    if (!d) continue;
    // An integer of either kind (a value made in memory holds unsigned ones).
    const bool integer = d->is_int64() || d->is_uint64();
    const auto n = d->is_int64()                              ? d->as_int64()
                   : d->is_uint64() && d->as_uint64() <= 1000 ? std::int64_t(d->as_uint64())
                                                              : 0;
    if (!integer || n < 1 || n > 1000)
      return Error{Errc::invalid, "'rows' and 'cols' are integers from 1 to 1000"};
    *slot = static_cast<std::uint16_t>(n);
  }
  if (const auto* c = body.if_contains("command"); c && !c->is_null()) {
    const auto* a = c->if_array();
    if (!a || a->empty())
      return Error{Errc::invalid,
                   "'command' is a non-empty array of strings: the program "
                   "and its arguments"};
    for (const auto& arg : *a) {
      if (!arg.is_string())
        return Error{Errc::invalid, "'command' holds strings only (no shell parses them)"};
      o.command.emplace_back(arg.as_string());
    }
  }
  return o;
}

json::object to_json(const Opening& o) {
  json::object out{{"rows", o.size.rows}, {"cols", o.size.cols}};
  if (!o.command.empty()) {
    json::array a;
    for (const auto& arg : o.command) a.emplace_back(arg);
    out["command"] = std::move(a);
  }
  return out;
}

}  // namespace kiln::sandbox::remote
