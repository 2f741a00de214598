// /v1/projects and their members.
#include "api/impl.hpp"

#include "platform/log.hpp"

namespace kiln::api {

Response Api::Impl::create_project(const Request& req, const Principal& who) {
  auto body = body_object(req, {"id", "name", "owner"});
  const auto name = need_name(body);
  const auto id = id_or_new(body, "p");
  std::string owner = who.user;
  if (who.service) {
    owner = opt_string(body, "owner").value_or("");
    if (!valid_user_id(owner))
      refuse(400, "invalid-request", "With the service key, 'owner' (a user id) is required.");
  } else if (body.contains("owner")) {
    refuse(400, "invalid-request", "'owner' is for the service key; you own what you create.");
  }
  store::Project p{id, name, owner, 0, {}};
  store::Receipt r;
  try {
    r = projects.create_project(p, owner);
  } catch (const sql::Error& e) {
    if (e.kind() == sql::Error::Kind::Conflict)
      refuse(409, "conflict",
             "A project with this id exists or existed (the id of a deleted project is not "
             "used again); choose another id.");
    throw;
  }
  publish({collab::AccessChange::Kind::Role, owner, id, "owner", {}});
  auto created = projects.get_project(id, r);
  auto resp = ok_json(201, project_json(created.value_or(p), "owner"));
  resp.headers.emplace_back("Location", "/v1/projects/" + id);
  wrote(who, r, resp);
  return resp;
}

Response Api::Impl::list_projects(const Request& req, const Principal& who) {
  if (who.service) refuse(403, "forbidden", "Listing 'my projects' needs a user token.");
  const auto limit = page_limit(req);
  const auto after_id = read_cursor(req.query_param("cursor"));
  auto rows = projects.list_projects(who.user, after(who, req), limit + 1, after_id);
  json::array items;
  for (std::size_t i = 0; i < rows.size() && i < limit; ++i)
    items.push_back(project_json(rows[i], rows[i].role));
  json::value next = nullptr;
  if (rows.size() > limit) next = json::string(make_cursor(rows[limit - 1].id));
  return ok_json(200, json::object{{"items", items}, {"next_cursor", next}});
}

Response Api::Impl::get_project(const Request& req, const Principal& who) {
  const auto id = req.param("project");
  const auto role = role_in(who, id, req);
  auto p = projects.get_project(id, after(who, req));
  if (!p) not_found();
  return ok_json(200, project_json(*p, who.service ? "" : role));
}

Response Api::Impl::rename_project(const Request& req, const Principal& who) {
  const auto id = req.param("project");
  need(role_in(who, id, req), "owner");
  auto body = body_object(req, {"name"});
  const auto name = need_name(body);
  bool found = false;
  auto r = projects.rename_project(id, name, found);
  if (!found) not_found();
  auto p = projects.get_project(id, r);
  if (!p) not_found();
  auto resp = ok_json(200, project_json(*p, ""));
  wrote(who, r, resp);
  return resp;
}

Response Api::Impl::delete_project(const Request& req, const Principal& who) {
  const auto id = req.param("project");
  need(role_in(who, id, req), "owner");
  bool found = false;
  auto r = projects.delete_project(id, found);
  if (!found) not_found();
  publish({collab::AccessChange::Kind::ProjectDeleted, {}, id, {}, {}});
  log::info("api: project deleted", {{"project", id}});
  Response resp{204, "application/json", "", {}};
  wrote(who, r, resp);
  return resp;
}

Response Api::Impl::list_members(const Request& req, const Principal& who) {
  const auto id = req.param("project");
  role_in(who, id, req);
  json::array items;
  for (const auto& m : projects.list_members(id, after(who, req))) {
    items.push_back(json::object{
        {"user", m.user_id}, {"name", m.name}, {"role", m.role}, {"added_at", m.added_at}});
  }
  return ok_json(200, json::object{{"items", items}});
}

Response Api::Impl::put_member(const Request& req, const Principal& who) {
  const auto id = req.param("project");
  const auto user = req.param("user");
  need(role_in(who, id, req), "owner");
  if (!valid_user_id(user)) refuse(400, "invalid-request", "Invalid user id.");
  auto body = body_object(req, {"role"});
  const auto role = need_string(body, "role");
  if (!valid_role(role)) refuse(400, "invalid-request", "'role' must be owner, editor or viewer.");
  store::Receipt r;
  check(projects.change_member(id, user, role, r));
  publish({collab::AccessChange::Kind::Role, user, id, role, {}});
  auto resp = ok_json(200, json::object{{"project", id}, {"user", user}, {"role", role}});
  wrote(who, r, resp);
  return resp;
}

Response Api::Impl::delete_member(const Request& req, const Principal& who) {
  const auto id = req.param("project");
  const auto user = req.param("user");
  const auto role = role_in(who, id, req);
  if (who.service || user != who.user) need(role, "owner");  // anyone may leave
  store::Receipt r;
  check(projects.remove_member(id, user, r));
  publish({collab::AccessChange::Kind::Role, user, id, "", {}});
  Response resp{204, "application/json", "", {}};
  wrote(who, r, resp);
  return resp;
}

}  // namespace kiln::api
