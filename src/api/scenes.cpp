// /v1/projects/{project}/scenes.
#include "api/impl.hpp"
#include "assets/derived.hpp"
#include "assets/scene_stream.hpp"
#include "store/rooms.hpp"

#include "platform/log.hpp"

namespace kiln::api {
namespace {
// A stream lists this many entities at most (a response of a few tens of MB).
constexpr std::size_t kMaxStreamEntities = 100'000;
}  // namespace

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

// What a viewer needs to stream a scene's assets (docs/assets.md "Streaming a scene"): the
// entities that show assets with their world transforms and bounds, and each asset's levels,
// as of the scene's last stored snapshot.
Checked<Response> Api::Impl::scene_stream(const Request& req, const Principal& who) {
  const auto project = req.param("project");
  const auto id = req.param("scene");
  KILN_CHECK(role_in(who, project, req));
  if (!valid_id(id)) return not_found();
  const auto receipt = after(who, req);
  if (!projects.get_scene(project, id, receipt)) return not_found();
  json::object snapshot;
  json::value seq = nullptr, stored_at = nullptr;
  if (auto stored = store::Rooms(store).latest_snapshot(project + "/" + id)) {
    boost::system::error_code ec;
    auto scene = json::parse(stored->body, ec);
    if (!ec && scene.is_object()) snapshot = std::move(scene.as_object());
    seq = static_cast<std::int64_t>(stored->seq);
    stored_at = stored->stored_at;
  }
  const auto placed = assets::place_entities(snapshot);
  if (placed.entities.size() > kMaxStreamEntities)
    return Refusal{413, "too-large",
                   "The scene has " + std::to_string(placed.entities.size()) +
                       " entities that show assets; the stream lists at most " +
                       std::to_string(kMaxStreamEntities) + "."};
  // Each asset once: its state, its levels and its model-space sphere when ready.
  json::object asset_docs;
  std::map<std::string, std::optional<std::pair<std::array<double, 3>, double>>> spheres;
  for (const auto& e : placed.entities) {
    if (spheres.count(e.asset)) continue;
    auto& sphere = spheres[e.asset];
    auto a = uploads.find_asset(project, e.asset, receipt);
    if (!a) {
      asset_docs[e.asset] = json::object{{"state", "missing"}};
      continue;
    }
    const auto p = uploads.processing(*a, receipt);
    json::object doc{{"name", a->name}, {"state", p ? p->state : "none"}};
    if (p && p->state == "ready") {
      KILN_TRY(m, uploads.manifest_of(*p));
      json::array levels;
      for (const auto& l : m["levels"].as_array()) {
        const auto& lo = l.as_object();
        levels.push_back(json::object{{"level", lo.at("level")},
                                      {"triangles", lo.at("triangles")},
                                      {"error", lo.at("error")},
                                      {"bytes", lo.at("bytes")},
                                      {"url", lo.at("url")}});
      }
      doc["levels"] = std::move(levels);
      const auto& s = m["bounds"].as_object().at("sphere").as_object();
      const auto& c = s.at("center").as_array();
      sphere =
          std::make_pair(std::array<double, 3>{c[0].to_number<double>(), c[1].to_number<double>(),
                                               c[2].to_number<double>()},
                         s.at("radius").to_number<double>());
    }
    asset_docs[e.asset] = std::move(doc);
  }
  json::array entities;
  for (const auto& e : placed.entities) {
    json::array world;
    for (double v : e.world) world.push_back(v);
    json::object o{
        {"id", e.id}, {"asset", e.asset}, {"world", std::move(world)}, {"scale", e.max_scale}};
    if (const auto& s = spheres[e.asset]) {
      const auto w = assets::world_sphere(e.world, e.max_scale, s->first, s->second);
      o["sphere"] = json::object{{"center", json::array{w[0], w[1], w[2]}}, {"radius", w[3]}};
    } else {
      o["sphere"] = nullptr;
    }
    entities.push_back(std::move(o));
  }
  json::array skipped;
  for (const auto& s : placed.skipped)
    skipped.push_back(json::object{{"id", s.id}, {"why", s.why}});
  return ok_json(200, json::object{{"scene", id},
                                   {"room", project + "/" + id},
                                   {"seq", seq},
                                   {"stored_at", stored_at},
                                   {"pipeline", assets::kPipelineVersion},
                                   {"entities", std::move(entities)},
                                   {"assets", std::move(asset_docs)},
                                   {"skipped", std::move(skipped)}});
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
