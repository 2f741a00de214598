// /v1/projects/{project}/scenes.
#include "api/impl.hpp"
#include "store/rooms.hpp"

#include "platform/log.hpp"

namespace kiln::api {

Checked<Response> Api::Impl::create_scene(const Request& req, const Principal& who) {
  const auto project = req.param("project");
  KILN_TRY(role, role_in(who, project, req));
  KILN_CHECK(need(role, "editor"));
  KILN_TRY(body, body_object(req, {"id", "name"}));
  KILN_TRY(name, need_name(body));
  KILN_TRY(id, id_or_new(body, "s"));
  store::Receipt r;
  try {
    r = projects.create_scene(store::SceneRow{project, id, name, 0, 0});
  } catch (const sql::Error& e) {
    // The repository says Conflict by its error's kind (sql::Error): the one expected case.
    if (e.kind() != sql::Error::Kind::Conflict) throw;
    return Refusal{409, "conflict",
                   "A scene with this id exists or existed in the project (the id of a deleted "
                   "scene is not used again); choose another id."};
  }
  publish({collab::AccessChange::Kind::SceneCreated, {}, project, {}, id, {}});
  auto s = projects.get_scene(project, id, r);
  if (!s) return not_found();
  auto o = scene_json(*s);
  o["room"] = project + "/" + id;
  auto resp = ok_json(201, o);
  resp.headers.emplace_back("Location", "/v1/projects/" + project + "/scenes/" + id);
  wrote(who, r, resp);
  return resp;
}

Checked<Response> Api::Impl::list_scenes(const Request& req, const Principal& who) {
  const auto project = req.param("project");
  KILN_CHECK(role_in(who, project, req));
  KILN_TRY(limit, page_limit(req));
  KILN_TRY(after_id, read_cursor(req.query_param("cursor")));
  auto rows = projects.list_scenes(project, after(who, req), limit + 1, after_id);
  json::array items;
  for (std::size_t i = 0; i < rows.size() && i < limit; ++i) items.push_back(scene_json(rows[i]));
  json::value next = nullptr;
  if (rows.size() > limit) next = json::string(make_cursor(rows[limit - 1].id));
  return ok_json(200, json::object{{"items", items}, {"next_cursor", next}});
}

Checked<Response> Api::Impl::get_scene(const Request& req, const Principal& who) {
  const auto project = req.param("project");
  const auto id = req.param("scene");
  KILN_CHECK(role_in(who, project, req));
  if (!valid_id(id)) return not_found();
  auto s = projects.get_scene(project, id, after(who, req));
  if (!s) return not_found();
  auto o = scene_json(*s);
  o["room"] = project + "/" + id;
  json::value snap = nullptr;
  if (auto stored = store::Rooms(store).latest_snapshot(project + "/" + id)) {
    boost::system::error_code ec;
    auto scene = json::parse(stored->body, ec);
    snap = json::object{{"seq", static_cast<std::int64_t>(stored->seq)},
                        {"stored_at", stored->stored_at},
                        {"scene", ec ? json::value(nullptr) : std::move(scene)}};
  }
  o["snapshot"] = std::move(snap);
  return ok_json(200, o);
}

Checked<Response> Api::Impl::rename_scene(const Request& req, const Principal& who) {
  const auto project = req.param("project");
  const auto id = req.param("scene");
  KILN_TRY(role, role_in(who, project, req));
  KILN_CHECK(need(role, "editor"));
  KILN_TRY(body, body_object(req, {"name"}));
  KILN_TRY(name, need_name(body));
  bool found = false;
  auto r = projects.rename_scene(project, id, name, found);
  if (!found) return not_found();
  auto s = projects.get_scene(project, id, r);
  if (!s) return not_found();
  auto resp = ok_json(200, scene_json(*s));
  wrote(who, r, resp);
  return resp;
}

Checked<Response> Api::Impl::delete_scene(const Request& req, const Principal& who) {
  const auto project = req.param("project");
  const auto id = req.param("scene");
  KILN_TRY(role, role_in(who, project, req));
  KILN_CHECK(need(role, "editor"));
  bool found = false;
  auto r = projects.delete_scene(project, id, found);
  if (!found) return not_found();
  publish({collab::AccessChange::Kind::SceneDeleted, {}, project, {}, id, {}});
  log::info("api: scene deleted", {{"project", project}, {"scene", id}});
  Response resp{204, "application/json", "", {}};
  wrote(who, r, resp);
  return resp;
}

}  // namespace kiln::api
