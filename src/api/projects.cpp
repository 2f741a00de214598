// /v1/projects and their members.
#include "api/impl.hpp"

#include "platform/log.hpp"

namespace kiln::api {

Checked<Response> Api::Impl::create_project(const Request& req, const Principal& who) {
  KILN_TRY(body, body_object(req, {"id", "name", "owner"}));
  KILN_TRY(name, need_name(body));
  KILN_TRY(id, id_or_new(body, "p"));
  std::string owner = who.user;
  if (who.service) {
    KILN_TRY(given, opt_string(body, "owner"));
    owner = given.value_or("");
    if (!valid_user_id(owner))
      return invalid("With the service key, 'owner' (a user id) is required.");
  } else if (body.contains("owner")) {
    return invalid("'owner' is for the service key; you own what you create.");
  }
  store::Project p{id, name, owner, 0, {}};
  store::Receipt r;
  try {
    r = projects.create_project(p, owner);
  } catch (const sql::Error& e) {
    // The repository says Conflict by its error's kind (sql::Error): the one expected case.
    if (e.kind() != sql::Error::Kind::Conflict) throw;
    return Refusal{409, "conflict",
                   "A project with this id exists or existed (the id of a deleted project is not "
                   "used again); choose another id."};
  }
  publish({collab::AccessChange::Kind::Role, owner, id, "owner", {}, {}});
  auto created = projects.get_project(id, r);
  auto resp = ok_json(201, project_json(created.value_or(p), "owner"));
  resp.headers.emplace_back("Location", "/v1/projects/" + id);
  wrote(who, r, resp);
  return resp;
}

Checked<Response> Api::Impl::list_projects(const Request& req, const Principal& who) {
  if (who.service) return Refusal{403, "forbidden", "Listing 'my projects' needs a user token."};
  KILN_TRY(limit, page_limit(req));
  KILN_TRY(after_id, read_cursor(req.query_param("cursor")));
  auto rows = projects.list_projects(who.user, after(who, req), limit + 1, after_id);
  json::array items;
  for (std::size_t i = 0; i < rows.size() && i < limit; ++i)
    items.push_back(project_json(rows[i], rows[i].role));
  json::value next = nullptr;
  if (rows.size() > limit) next = json::string(make_cursor(rows[limit - 1].id));
  return ok_json(200, json::object{{"items", items}, {"next_cursor", next}});
}

Checked<Response> Api::Impl::get_project(const Request& req, const Principal& who) {
  const auto id = req.param("project");
  KILN_TRY(role, role_in(who, id, req));
  auto p = projects.get_project(id, after(who, req));
  if (!p) return not_found();
  return ok_json(200, project_json(*p, who.service ? "" : role));
}

Checked<Response> Api::Impl::rename_project(const Request& req, const Principal& who) {
  const auto id = req.param("project");
  KILN_TRY(role, role_in(who, id, req));
  KILN_CHECK(need(role, "owner"));
  KILN_TRY(body, body_object(req, {"name"}));
  KILN_TRY(name, need_name(body));
  bool found = false;
  auto r = projects.rename_project(id, name, found);
  if (!found) return not_found();
  auto p = projects.get_project(id, r);
  if (!p) return not_found();
  auto resp = ok_json(200, project_json(*p, ""));
  wrote(who, r, resp);
  return resp;
}

Checked<Response> Api::Impl::delete_project(const Request& req, const Principal& who) {
  const auto id = req.param("project");
  KILN_TRY(role, role_in(who, id, req));
  KILN_CHECK(need(role, "owner"));
  bool found = false;
  auto r = projects.delete_project(id, found);
  if (!found) return not_found();
  publish({collab::AccessChange::Kind::ProjectDeleted, {}, id, {}, {}, {}});
  log::info("api: project deleted", {{"project", id}});
  Response resp{204, "application/json", "", {}};
  wrote(who, r, resp);
  return resp;
}

Checked<Response> Api::Impl::list_members(const Request& req, const Principal& who) {
  const auto id = req.param("project");
  KILN_CHECK(role_in(who, id, req));
  json::array items;
  for (const auto& m : projects.list_members(id, after(who, req))) {
    items.push_back(json::object{
        {"user", m.user_id}, {"name", m.name}, {"role", m.role}, {"added_at", m.added_at}});
  }
  return ok_json(200, json::object{{"items", items}});
}

Checked<Response> Api::Impl::put_member(const Request& req, const Principal& who) {
  const auto id = req.param("project");
  const auto user = req.param("user");
  KILN_TRY(mine, role_in(who, id, req));
  KILN_CHECK(need(mine, "owner"));
  if (!valid_user_id(user)) return invalid("Invalid user id.");
  KILN_TRY(body, body_object(req, {"role"}));
  KILN_TRY(role, need_string(body, "role"));
  if (!valid_role(role)) return invalid("'role' must be owner, editor or viewer.");
  store::Receipt r;
  KILN_CHECK(check(projects.change_member(id, user, role, r)));
  publish({collab::AccessChange::Kind::Role, user, id, role, {}, {}});
  auto resp = ok_json(200, json::object{{"project", id}, {"user", user}, {"role", role}});
  wrote(who, r, resp);
  return resp;
}

Checked<Response> Api::Impl::delete_member(const Request& req, const Principal& who) {
  const auto id = req.param("project");
  const auto user = req.param("user");
  KILN_TRY(role, role_in(who, id, req));
  if (who.service || user != who.user) KILN_CHECK(need(role, "owner"));  // anyone may leave
  store::Receipt r;
  KILN_CHECK(check(projects.remove_member(id, user, r)));
  publish({collab::AccessChange::Kind::Role, user, id, "", {}, {}});
  Response resp{204, "application/json", "", {}};
  wrote(who, r, resp);
  return resp;
}

}  // namespace kiln::api
