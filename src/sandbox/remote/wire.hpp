// A terminal session and a sandbox error as JSON: the sandbox host's wire (remote.hpp) and
// the REST API's /v1/terminals share these shapes.
#pragma once

#include "sandbox/terminals.hpp"

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace kiln::sandbox::remote {

// {"id","owner","command","created_at","running","end","attached","exit"} (command: null for
// the shell, else the arguments); exit: null or
// {"code","signal","reason","message"} (reason: to_string(Exit::Reason)).
boost::json::object to_json(const SessionInfo& s);
// Errc::failed for a value that is not a session.
Result<SessionInfo, Error> session_from_json(const boost::json::value& v);

// An open's body: {"rows","cols"} (1-1000 each, both optional) and "command" (optional: a
// non-empty array of strings). Errc::invalid saying what is wrong; `allowed` other members
// are ignored, any else refused.
Result<Opening, Error> opening_from_json(const boost::json::object& body);
boost::json::object to_json(const Opening& o);

// An error's code on the wire ("not_found", ...), back, and the HTTP status it answers:
// 400 invalid, 404 not_found, 409 quota or not_running, 502 failed, 503 busy or unavailable.
// A session's id as the cluster names it: the key of its host (8 hex digits of SHA-256 of
// the host's "host:port" as sandbox.daemon names it), '-', the host's own id. Stable as
// long as the host's address is; any gateway or API node that names the same hosts routes
// it.
std::string host_key(const std::string& address);
std::string cluster_id(const std::string& key, const std::string& id);
// (key, the host's id), or nullopt for an id not of that form.
std::optional<std::pair<std::string, std::string>> split_id(const std::string& cluster_id);

const char* errc_name(Errc e);
std::optional<Errc> errc_from_name(std::string_view name);
int errc_status(Errc e);

}  // namespace kiln::sandbox::remote
