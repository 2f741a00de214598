// /v1/terminals: a user's terminal sessions (sandbox/sessions.hpp; docs/terminals.md). Open
// one (a shell in a sandbox of its own), list, read, close. The output is read and the keys
// sent over the terminal WebSocket (/v1/term). A session is its owner's only: another
// user's answers 404 as one that does not exist; the service key has no sessions.
#include "api/impl.hpp"

#include "sandbox/remote/wire.hpp"

namespace kiln::api {
namespace {

Refusal refusal(const sandbox::Error& e) {
  using E = sandbox::Errc;
  switch (e.code) {
    case E::not_found:
      return not_found();
    case E::invalid:
      return invalid(e.detail);
    case E::quota:
      return {409, "too-many-sessions", e.detail};
    case E::busy:
    case E::unavailable: {
      Refusal r{503, "unavailable", e.detail};
      r.retry_after_s = 5;
      return r;
    }
    case E::not_running:
      return {409, "session-ended", e.detail};
    case E::failed:
      return {502, "sandbox-failed", e.detail};
  }
  return {500, "internal", e.detail};
}

Checked<sandbox::TerminalSessions*> sessions_for(sandbox::TerminalSessions* sessions,
                                                 const std::string& why_off, const Principal& who) {
  if (who.service)
    return Refusal{403, "forbidden",
                   "Terminal sessions belong to users: use a user's token, not the service key."};
  if (!sessions)
    return Refusal{503, "unavailable",
                   "Terminals are not enabled on this node: " +
                       (why_off.empty() ? std::string("sandbox.enabled") : why_off) + "."};
  return sessions;
}

}  // namespace

Checked<Response> Api::Impl::open_terminal(const Request& req, const Principal& who) {
  KILN_TRY(sessions, sessions_for(terminals, terminals_off, who));
  sandbox::Opening what;
  if (!req.body.empty()) {
    KILN_TRY(body, body_object(req, {"rows", "cols", "command"}));
    auto parsed = sandbox::remote::opening_from_json(body);
    if (!parsed) return invalid(parsed.error().detail + ".");
    what = std::move(*parsed);
  }
  auto s = sessions->open(who.user, what);
  if (!s) return refusal(s.error());
  auto resp = ok_json(201, sandbox::remote::to_json(*s));
  resp.headers.emplace_back("Location", "/v1/terminals/" + s->id);
  return resp;
}

Checked<Response> Api::Impl::list_terminals(const Request&, const Principal& who) {
  KILN_TRY(sessions, sessions_for(terminals, terminals_off, who));
  json::array items;
  auto all = sessions->list(who.user);
  if (!all) return refusal(all.error());
  for (const auto& s : *all) items.push_back(sandbox::remote::to_json(s));
  return ok_json(200, json::object{{"items", std::move(items)}});
}

Checked<Response> Api::Impl::get_terminal(const Request& req, const Principal& who) {
  KILN_TRY(sessions, sessions_for(terminals, terminals_off, who));
  auto s = sessions->get(who.user, std::string(req.param("terminal")));
  if (!s) return refusal(s.error());
  return ok_json(200, sandbox::remote::to_json(*s));
}

Checked<Response> Api::Impl::close_terminal(const Request& req, const Principal& who) {
  KILN_TRY(sessions, sessions_for(terminals, terminals_off, who));
  if (auto r = sessions->close(who.user, std::string(req.param("terminal"))); !r)
    return refusal(r.error());
  return Response{204, "application/json", "", {}};
}

}  // namespace kiln::api
