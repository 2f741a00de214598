// A terminal session and a sandbox error as JSON: the sandbox host's wire (remote.hpp) and
// the REST API's /v1/terminals share these shapes.
#pragma once

#include "sandbox/terminals.hpp"

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <optional>
#include <string_view>

namespace kiln::sandbox::remote {

// {"id","owner","created_at","running","end","attached","exit"}; exit: null or
// {"code","signal","reason","message"} (reason: to_string(Exit::Reason)).
boost::json::object to_json(const SessionInfo& s);
// Errc::failed for a value that is not a session.
Result<SessionInfo, Error> session_from_json(const boost::json::value& v);

// An error's code on the wire ("not_found", ...), back, and the HTTP status it answers:
// 400 invalid, 404 not_found, 409 quota or not_running, 502 failed, 503 busy or unavailable.
const char* errc_name(Errc e);
std::optional<Errc> errc_from_name(std::string_view name);
int errc_status(Errc e);

}  // namespace kiln::sandbox::remote
