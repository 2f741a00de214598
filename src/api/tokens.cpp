// /v1/me, /v1/tokens (minting, with the service key), /v1/users/{user}/revoke.
#include "api/impl.hpp"

#include "auth/jwt.hpp"
#include "platform/log.hpp"

namespace kiln::api {

namespace {

Refusal forbidden(std::string detail) {
  return {403, "forbidden", std::move(detail)};
}

}  // namespace

Checked<Response> Api::Impl::me(const Request& req, const Principal& who) {
  if (who.service) return forbidden("The service key is not a user.");
  json::array mine;
  for (const auto& p : projects.list_projects(who.user, after(who, req), options.max_page_size))
    mine.push_back(project_json(p, p.role));
  return ok_json(200, json::object{{"id", who.user}, {"name", who.name}, {"projects", mine}});
}

Checked<Response> Api::Impl::mint_token(const Request& req, const Principal& who) {
  if (!who.service) return forbidden("Minting tokens needs the service key.");
  return mint(req);
}

Checked<Response> Api::Impl::dev_token(const Request& req, const Principal&) {
  if (!options.dev_tokens) return Refusal{404, "not-found", "No such route."};
  return mint(req);
}

Checked<Response> Api::Impl::mint(const Request& req) {
  KILN_TRY(body, body_object(req, {"user", "ttl_s"}));
  const auto* user = body.if_contains("user");
  if (user == nullptr || !user->is_object()) return invalid("'user' must be an object {id, name}.");
  const auto& uo = user->as_object();
  for (const auto& kv : uo) {
    if (kv.key() != "id" && kv.key() != "name")
      return invalid("Unknown field 'user." + std::string(kv.key()) + "'.");
  }
  KILN_TRY(id, need_string(uo, "id"));
  KILN_TRY(given_name, opt_string(uo, "name"));
  const auto name = given_name.value_or(id);
  if (!valid_user_id(id))
    return invalid(
        "'user.id' must be 1-128 printable characters without spaces, '/', '\"' or '\\'.");
  if (!valid_name(name))
    return invalid(
        "'user.name' must be 1-200 characters without control or bidirectional formatting "
        "characters.");
  std::int64_t ttl = options.token_ttl_s;
  if (const auto* t = body.if_contains("ttl_s")) {
    if (!t->is_int64() || t->get_int64() < 60 || t->get_int64() > options.token_max_ttl_s)
      return invalid("'ttl_s' must be an integer from 60 to " +
                     std::to_string(options.token_max_ttl_s) + ".");
    ttl = t->get_int64();
  }
  if (options.jwt_secret.empty())
    return Refusal{
        501, "not-implemented",
        "Tokens are RS256 here (auth.jwt_public_key_file): mint them with the private key."};
  projects.upsert_user(id, name);
  auth::Claims c;
  c.sub = id;
  c.name = name;
  c.iat = now_s();
  c.exp = c.iat + ttl;
  c.ver = projects.get_user(id)->token_version;
  json::object roles;  // for the caller's display; the token itself carries none
  for (const auto& [project, role] : projects.roles_of(id)) roles[project] = role;
  return ok_json(201, json::object{{"token", auth::sign_hs256(c, options.jwt_secret)},
                                   {"expires_at", c.exp},
                                   {"user", {{"id", id}, {"name", name}}},
                                   {"roles", roles}});
}

Checked<Response> Api::Impl::revoke(const Request& req, const Principal& who) {
  if (!who.service) return forbidden("Revoking tokens needs the service key.");
  const auto user = req.param("user");
  if (!valid_user_id(user)) return invalid("Invalid user id.");
  const auto version = projects.revoke_tokens(user);
  publish({collab::AccessChange::Kind::Revoked, user, {}, {}, {}, {}});
  log::info("api: tokens revoked", {{"user", user}, {"token_version", version}});
  return ok_json(200, json::object{{"user", user}, {"token_version", version}});
}

}  // namespace kiln::api
