// The API's internals, shared by its translation units (api.cpp: projects, members,
// scenes, tokens; uploads.cpp: uploads, assets, the Uppy routes). Not installed anywhere
// else.
#pragma once

#include "api/api.hpp"
#include "api/problem.hpp"
#include "assets/service.hpp"

#include "auth/jwt.hpp"
#include "gateway/token_bucket.hpp"
#include "platform/codec.hpp"
#include "platform/ids.hpp"
#include "platform/log.hpp"
#include "platform/metrics.hpp"
#include "platform/thread_pool.hpp"

#include <openssl/crypto.h>
#include <boost/json.hpp>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <unordered_map>

namespace kiln::api {

namespace json = boost::json;
using http::Request;
using http::Response;

inline std::int64_t now_s() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Ids in paths and bodies: the room syntax's project/scene ids.
inline bool valid_id(std::string_view s) {
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
  });
}

// User ids come from the studio: printable, no spaces or controls, at most 128 bytes.
inline bool valid_user_id(std::string_view s) {
  return !s.empty() && s.size() <= 128 && std::all_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u > 0x20 && u != 0x7f && c != '/' && c != '"' && c != '\\';
  });
}

inline bool valid_name(std::string_view s) {
  return !s.empty() && s.size() <= 200 && std::none_of(s.begin(), s.end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x20;
  });
}

inline bool valid_role(std::string_view r) {
  return r == "owner" || r == "editor" || r == "viewer";
}

inline int rank(std::string_view role) {
  if (role == "owner") return 3;
  if (role == "editor") return 2;
  if (role == "viewer") return 1;
  return 0;
}

// Whether the request says its body is JSON (media types are case-insensitive, parameters
// and spaces around them allowed: RFC 9110 section 8.3.1).
inline bool is_json(const Request& req) {
  auto ct = req.header("Content-Type");
  if (!ct) return false;
  auto type = ct->substr(0, ct->find(';'));
  while (!type.empty() && (type.back() == ' ' || type.back() == '\t')) type.remove_suffix(1);
  return codec::iequals(type, "application/json");
}

// The request body as a JSON object with only the fields named.
inline json::object body_object(const Request& req,
                                std::initializer_list<std::string_view> allowed) {
  if (!is_json(req)) refuse(415, "unsupported-media-type", "Send the body as application/json.");
  boost::system::error_code ec;
  json::parse_options po;
  po.max_depth = 16;
  auto v = json::parse(req.body, ec, {}, po);
  if (ec) refuse(400, "invalid-json", "The body is not valid JSON: " + ec.message());
  if (!v.is_object()) refuse(400, "invalid-request", "The body must be a JSON object.");
  for (const auto& kv : v.as_object()) {
    if (std::find(allowed.begin(), allowed.end(), kv.key()) == allowed.end())
      refuse(400, "invalid-request", "Unknown field '" + std::string(kv.key()) + "'.");
  }
  return std::move(v.as_object());
}

inline std::optional<std::string> opt_string(const json::object& o, std::string_view field) {
  const auto* v = o.if_contains(field);
  if (v == nullptr || v->is_null()) return std::nullopt;
  if (!v->is_string())
    refuse(400, "invalid-request", "'" + std::string(field) + "' must be a string.");
  return std::string(v->get_string());
}

inline std::string need_string(const json::object& o, std::string_view field) {
  auto v = opt_string(o, field);
  if (!v) refuse(400, "invalid-request", "'" + std::string(field) + "' is required.");
  return *v;
}

// The body's "name": required, 1-200 characters without control characters.
inline std::string need_name(const json::object& o) {
  auto name = need_string(o, "name");
  if (!valid_name(name))
    refuse(400, "invalid-request", "'name' must be 1-200 characters without control characters.");
  return name;
}

// The body's "id" when given (checked), else a new one with this prefix.
inline std::string id_or_new(const json::object& o, std::string_view prefix) {
  auto id = opt_string(o, "id").value_or(std::string(prefix) + ids::random_hex(8));
  if (!valid_id(id))
    refuse(400, "invalid-request", "'id' must be 1-64 characters of [A-Za-z0-9_-].");
  return id;
}

// A membership change that did not happen, as its problem.
inline void check(store::MemberChange c) {
  if (c == store::MemberChange::NotFound) not_found();
  if (c == store::MemberChange::LastOwner)
    refuse(409, "last-owner", "A project keeps at least one owner: make someone else owner first.");
}

inline json::object project_json(const store::Project& p, const std::string& role) {
  json::object o{
      {"id", p.id}, {"name", p.name}, {"created_by", p.created_by}, {"created_at", p.created_at}};
  if (!role.empty()) o["role"] = role;
  return o;
}

inline json::object scene_json(const store::SceneRow& s) {
  return {{"project", s.project_id},
          {"id", s.id},
          {"name", s.name},
          {"created_at", s.created_at},
          {"updated_at", s.updated_at}};
}

inline Response ok_json(int status, const json::value& v) {
  return Response::json(status, json::serialize(v));
}

// Opaque page cursors: base64url of "c1:" + the last id (keyset pagination: stable while
// rows are inserted concurrently).
inline std::string make_cursor(const std::string& last_id) {
  return codec::base64url("c1:" + last_id);
}

inline std::string read_cursor(const std::optional<std::string>& cursor) {
  if (!cursor || cursor->empty()) return {};
  const auto decoded = codec::base64url_decode(*cursor);
  if (!decoded) refuse(400, "invalid-request", "Invalid 'cursor'.");
  const std::string& raw = *decoded;
  if (!raw.starts_with("c1:") || raw.size() > 3 + 128)
    refuse(400, "invalid-request", "Invalid 'cursor'.");
  return raw.substr(3);
}

struct Principal {
  bool service = false;
  std::string user;  // the user id (empty for the service key)
  std::string name;
  std::int64_t token_version = 0;  // the token's `ver` (revocation)
};

struct Api::Impl {
  Impl(store::Database& s, const auth::Verifier& v, ThreadPool& p, ApiOptions o,
       metrics::Registry& reg, collab::AccessBus* b)
      : store(s),
        verifier(v),
        pool(p),
        options(std::move(o)),
        bus(b),
        auth_failures(reg.counter("kiln_api_auth_failures_total",
                                  "Requests refused 401, by reason (missing, invalid, revoked).",
                                  {"reason"})),
        rate_limited(reg.counter("kiln_api_rate_limited_total",
                                 "Requests refused 429, by principal kind (user, service).",
                                 {"kind"})),
        uploads(s, options.uploads, reg) {}

  store::Database& store;
  const auth::Verifier& verifier;
  ThreadPool& pool;
  ThreadPool* slow = nullptr;  // upload completions (set by Api)
  ApiOptions options;
  collab::AccessBus* bus;
  metrics::Family<metrics::Counter>& auth_failures;
  metrics::Family<metrics::Counter>& rate_limited;
  assets::UploadService uploads;  // direct uploads and assets (uploads.cpp)

  std::mutex mu;
  std::unordered_map<std::string, gateway::TokenBucket> buckets;  // by principal
  std::unordered_map<std::string, store::Receipt> last_write;     // by principal

  // --- authentication, limits, consistency --------------------------------------------

  Principal authenticate(const Request& req) {
    auto who = verify_credential(req);
    if (auto u = store.get_user(who.user);
        !who.service && u && who.token_version < u->token_version) {
      auth_failures.with({"revoked"}).inc();
      refuse(401, "unauthorized", "This token was revoked; get a new one.");
    }
    return who;
  }

  // What the header section alone decides (http::Router::HeaderCheck), before a body is
  // read: a missing or invalid credential (401; revocation needs the database and is
  // checked with the request), a body that is not JSON (415: every route takes JSON).
  std::optional<Response> header_check(const Request& req) {
    try {
      verify_credential(req);
      if (!is_json(req))
        refuse(415, "unsupported-media-type", "Send the body as application/json.");
      return std::nullopt;
    } catch (const Refusal& r) {
      auto resp = problem(r.status, r.type, r.detail);
      if (r.status == 401) resp.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"kiln\"");
      return resp;
    }
  }

  // The credential's signature, expiry and shape (no database): the principal it names.
  Principal verify_credential(const Request& req) {
    auto h = req.header("Authorization");
    // The scheme is case-insensitive (RFC 9110 section 11.1): "bearer" is "Bearer".
    if (!h || h->size() <= 7 || !codec::iequals(h->substr(0, 7), "Bearer ")) {
      auth_failures.with({"missing"}).inc();
      refuse(401, "unauthorized",
             "Send 'Authorization: Bearer <token>' (a user token or the service key).");
    }
    const std::string_view token = h->substr(7);
    if (std::count(token.begin(), token.end(), '.') != 2) {
      const auto& key = options.service_key;
      if (!key.empty() && token.size() == key.size() &&
          CRYPTO_memcmp(token.data(), key.data(), key.size()) == 0) {
        return Principal{true, {}, {}};
      }
      auth_failures.with({"invalid"}).inc();
      refuse(401, "unauthorized",
             "The bearer credential is neither a valid token nor the service key.");
    }
    auto r = verifier.verify(token, now_s());
    if (!r.ok) {
      auth_failures.with({"invalid"}).inc();
      refuse(401, "unauthorized", "Invalid token: " + r.error + ".");
    }
    return Principal{false, r.claims.sub, r.claims.name, r.claims.ver};
  }

  void limit(const Principal& who) {
    const auto key = who.service ? std::string("service") : "u:" + who.user;
    const double rate =
        who.service ? options.service_requests_per_second : options.user_requests_per_second;
    const auto now = gateway::TokenBucket::Clock::now();
    std::lock_guard lock(mu);
    if (buckets.size() > 100'000) buckets.clear();  // bounded; a reset only forgives
    auto it = buckets.try_emplace(key, rate, rate * 2, now).first;
    if (!it->second.take(now)) {
      rate_limited.with({who.service ? "service" : "user"}).inc();
      throw Refusal{429, "rate-limited",
                    "Too many requests; at most " + std::to_string(static_cast<int>(rate)) +
                        " per second (burst " + std::to_string(static_cast<int>(rate * 2)) + ")."};
    }
  }

  // The caller's latest write, so that their next read sees it (read-your-writes): from
  // the `Kiln-After` header (a client moving between API nodes) or this node's memory.
  store::Receipt after(const Principal& who, const Request& req) {
    store::Receipt r;
    if (auto h = req.header("Kiln-After")) {
      // An LSN, "<hex>/<hex>" (at most 8 hex digits each); anything else is ignored.
      const auto slash = h->find('/');
      auto hex = [](std::string_view s) {
        return !s.empty() && s.size() <= 8 && std::all_of(s.begin(), s.end(), [](char c) {
          return std::isxdigit(static_cast<unsigned char>(c)) != 0;
        });
      };
      if (slash != std::string_view::npos && hex(h->substr(0, slash)) &&
          hex(h->substr(slash + 1))) {
        r.lsn = std::string(*h);
        return r;
      }
    }
    std::lock_guard lock(mu);
    auto it = last_write.find(key_of(who));
    return it == last_write.end() ? r : it->second;
  }

  void wrote(const Principal& who, const store::Receipt& r, Response& resp) {
    if (r.lsn.empty()) return;
    resp.headers.emplace_back("Kiln-After", r.lsn);
    std::lock_guard lock(mu);
    if (last_write.size() > 100'000) last_write.clear();
    last_write[key_of(who)] = r;
  }

  static std::string key_of(const Principal& who) {
    return who.service ? std::string("service") : "u:" + who.user;
  }

  // The caller's role in the project, or 404 (a project they cannot see does not exist).
  std::string role_in(const Principal& who, const std::string& project, const Request& req) {
    if (!valid_id(project)) not_found();
    if (who.service) {
      if (!store.get_project(project, after(who, req))) not_found();
      return "owner";
    }
    auto role = store.member_role(project, who.user, after(who, req));
    if (role.empty()) not_found();
    return role;
  }

  void need(const std::string& have, std::string_view at_least) {
    if (rank(have) < rank(at_least))
      refuse(403, "forbidden",
             "This needs the " + std::string(at_least) + " role; you are " + have + ".");
  }

  void publish(collab::AccessChange c) {
    if (bus) bus->publish(c);
  }

  std::size_t page_limit(const Request& req) {
    auto l = req.query_param("limit");
    if (!l) return options.page_size;
    char* end = nullptr;
    const long v = std::strtol(l->c_str(), &end, 10);
    if (l->empty() || *end != '\0' || v < 1 || static_cast<std::size_t>(v) > options.max_page_size)
      refuse(400, "invalid-request",
             "'limit' must be an integer from 1 to " + std::to_string(options.max_page_size) + ".");
    return static_cast<std::size_t>(v);
  }

  // --- handlers ------------------------------------------------------------------------

  Response me(const Request& req, const Principal& who) {
    if (who.service) refuse(403, "forbidden", "The service key is not a user.");
    json::array projects;
    for (const auto& p : store.list_projects(who.user, after(who, req), options.max_page_size))
      projects.push_back(project_json(p, p.role));
    return ok_json(200, json::object{{"id", who.user}, {"name", who.name}, {"projects", projects}});
  }

  Response mint_token(const Request& req, const Principal& who) {
    if (!who.service) refuse(403, "forbidden", "Minting tokens needs the service key.");
    auto body = body_object(req, {"user", "ttl_s"});
    const auto* user = body.if_contains("user");
    if (user == nullptr || !user->is_object())
      refuse(400, "invalid-request", "'user' must be an object {id, name}.");
    const auto& uo = user->as_object();
    for (const auto& kv : uo) {
      if (kv.key() != "id" && kv.key() != "name")
        refuse(400, "invalid-request", "Unknown field 'user." + std::string(kv.key()) + "'.");
    }
    const auto id = need_string(uo, "id");
    const auto name = opt_string(uo, "name").value_or(id);
    if (!valid_user_id(id))
      refuse(400, "invalid-request",
             "'user.id' must be 1-128 printable characters without spaces, '/', '\"' or '\\'.");
    if (!valid_name(name))
      refuse(400, "invalid-request",
             "'user.name' must be 1-200 characters without control characters.");
    std::int64_t ttl = options.token_ttl_s;
    if (const auto* t = body.if_contains("ttl_s")) {
      if (!t->is_int64() || t->get_int64() < 60 || t->get_int64() > options.token_max_ttl_s)
        refuse(400, "invalid-request",
               "'ttl_s' must be an integer from 60 to " + std::to_string(options.token_max_ttl_s) +
                   ".");
      ttl = t->get_int64();
    }
    if (options.jwt_secret.empty())
      refuse(501, "not-implemented",
             "Tokens are RS256 here (auth.jwt_public_key_file): mint them with the private key.");
    store.upsert_user(id, name);
    auth::Claims c;
    c.sub = id;
    c.name = name;
    c.iat = now_s();
    c.exp = c.iat + ttl;
    c.ver = store.get_user(id)->token_version;
    json::object roles;  // for the caller's display; the token itself carries none
    for (const auto& [project, role] : store.roles_of(id)) roles[project] = role;
    return ok_json(201, json::object{{"token", auth::sign_hs256(c, options.jwt_secret)},
                                     {"expires_at", c.exp},
                                     {"user", {{"id", id}, {"name", name}}},
                                     {"roles", roles}});
  }

  Response revoke(const Request& req, const Principal& who) {
    if (!who.service) refuse(403, "forbidden", "Revoking tokens needs the service key.");
    const auto user = req.param("user");
    if (!valid_user_id(user)) refuse(400, "invalid-request", "Invalid user id.");
    const auto version = store.revoke_tokens(user);
    publish({collab::AccessChange::Kind::Revoked, user, {}, {}, {}});
    log::info("api: tokens revoked", {{"user", user}, {"token_version", version}});
    return ok_json(200, json::object{{"user", user}, {"token_version", version}});
  }

  Response create_project(const Request& req, const Principal& who) {
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
      r = store.create_project(p, owner);
    } catch (const sql::Error& e) {
      if (e.kind() == sql::Error::Kind::Conflict)
        refuse(409, "conflict",
               "A project with this id exists or existed (the id of a deleted project is not "
               "used again); choose another id.");
      throw;
    }
    publish({collab::AccessChange::Kind::Role, owner, id, "owner", {}});
    auto created = store.get_project(id, r);
    auto resp = ok_json(201, project_json(created.value_or(p), "owner"));
    resp.headers.emplace_back("Location", "/v1/projects/" + id);
    wrote(who, r, resp);
    return resp;
  }

  Response list_projects(const Request& req, const Principal& who) {
    if (who.service) refuse(403, "forbidden", "Listing 'my projects' needs a user token.");
    const auto limit = page_limit(req);
    const auto after_id = read_cursor(req.query_param("cursor"));
    auto rows = store.list_projects(who.user, after(who, req), limit + 1, after_id);
    json::array items;
    for (std::size_t i = 0; i < rows.size() && i < limit; ++i)
      items.push_back(project_json(rows[i], rows[i].role));
    json::value next = nullptr;
    if (rows.size() > limit) next = json::string(make_cursor(rows[limit - 1].id));
    return ok_json(200, json::object{{"items", items}, {"next_cursor", next}});
  }

  Response get_project(const Request& req, const Principal& who) {
    const auto id = req.param("project");
    const auto role = role_in(who, id, req);
    auto p = store.get_project(id, after(who, req));
    if (!p) not_found();
    return ok_json(200, project_json(*p, who.service ? "" : role));
  }

  Response rename_project(const Request& req, const Principal& who) {
    const auto id = req.param("project");
    need(role_in(who, id, req), "owner");
    auto body = body_object(req, {"name"});
    const auto name = need_name(body);
    bool found = false;
    auto r = store.rename_project(id, name, found);
    if (!found) not_found();
    auto p = store.get_project(id, r);
    if (!p) not_found();
    auto resp = ok_json(200, project_json(*p, ""));
    wrote(who, r, resp);
    return resp;
  }

  Response delete_project(const Request& req, const Principal& who) {
    const auto id = req.param("project");
    need(role_in(who, id, req), "owner");
    bool found = false;
    auto r = store.delete_project(id, found);
    if (!found) not_found();
    publish({collab::AccessChange::Kind::ProjectDeleted, {}, id, {}, {}});
    log::info("api: project deleted", {{"project", id}});
    Response resp{204, "application/json", "", {}};
    wrote(who, r, resp);
    return resp;
  }

  Response list_members(const Request& req, const Principal& who) {
    const auto id = req.param("project");
    role_in(who, id, req);
    json::array items;
    for (const auto& m : store.list_members(id, after(who, req))) {
      items.push_back(json::object{
          {"user", m.user_id}, {"name", m.name}, {"role", m.role}, {"added_at", m.added_at}});
    }
    return ok_json(200, json::object{{"items", items}});
  }

  Response put_member(const Request& req, const Principal& who) {
    const auto id = req.param("project");
    const auto user = req.param("user");
    need(role_in(who, id, req), "owner");
    if (!valid_user_id(user)) refuse(400, "invalid-request", "Invalid user id.");
    auto body = body_object(req, {"role"});
    const auto role = need_string(body, "role");
    if (!valid_role(role))
      refuse(400, "invalid-request", "'role' must be owner, editor or viewer.");
    store::Receipt r;
    check(store.change_member(id, user, role, r));
    publish({collab::AccessChange::Kind::Role, user, id, role, {}});
    auto resp = ok_json(200, json::object{{"project", id}, {"user", user}, {"role", role}});
    wrote(who, r, resp);
    return resp;
  }

  Response delete_member(const Request& req, const Principal& who) {
    const auto id = req.param("project");
    const auto user = req.param("user");
    const auto role = role_in(who, id, req);
    if (who.service || user != who.user) need(role, "owner");  // anyone may leave
    store::Receipt r;
    check(store.remove_member(id, user, r));
    publish({collab::AccessChange::Kind::Role, user, id, "", {}});
    Response resp{204, "application/json", "", {}};
    wrote(who, r, resp);
    return resp;
  }

  Response create_scene(const Request& req, const Principal& who) {
    const auto project = req.param("project");
    need(role_in(who, project, req), "editor");
    auto body = body_object(req, {"id", "name"});
    const auto name = need_name(body);
    const auto id = id_or_new(body, "s");
    store::Receipt r;
    try {
      r = store.create_scene(store::SceneRow{project, id, name, 0, 0});
    } catch (const sql::Error& e) {
      if (e.kind() == sql::Error::Kind::Conflict)
        refuse(409, "conflict",
               "A scene with this id exists or existed in the project (the id of a deleted "
               "scene is not used again); choose another id.");
      throw;
    }
    publish({collab::AccessChange::Kind::SceneCreated, {}, project, {}, id});
    auto s = store.get_scene(project, id, r);
    if (!s) not_found();
    auto o = scene_json(*s);
    o["room"] = project + "/" + id;
    auto resp = ok_json(201, o);
    resp.headers.emplace_back("Location", "/v1/projects/" + project + "/scenes/" + id);
    wrote(who, r, resp);
    return resp;
  }

  Response list_scenes(const Request& req, const Principal& who) {
    const auto project = req.param("project");
    role_in(who, project, req);
    const auto limit = page_limit(req);
    const auto after_id = read_cursor(req.query_param("cursor"));
    auto rows = store.list_scenes(project, after(who, req), limit + 1, after_id);
    json::array items;
    for (std::size_t i = 0; i < rows.size() && i < limit; ++i) items.push_back(scene_json(rows[i]));
    json::value next = nullptr;
    if (rows.size() > limit) next = json::string(make_cursor(rows[limit - 1].id));
    return ok_json(200, json::object{{"items", items}, {"next_cursor", next}});
  }

  Response get_scene(const Request& req, const Principal& who) {
    const auto project = req.param("project");
    const auto id = req.param("scene");
    role_in(who, project, req);
    if (!valid_id(id)) not_found();
    auto s = store.get_scene(project, id, after(who, req));
    if (!s) not_found();
    auto o = scene_json(*s);
    o["room"] = project + "/" + id;
    json::value snap = nullptr;
    if (auto stored = store.latest_snapshot(project + "/" + id)) {
      boost::system::error_code ec;
      auto scene = json::parse(stored->body, ec);
      snap = json::object{{"seq", static_cast<std::int64_t>(stored->seq)},
                          {"stored_at", stored->stored_at},
                          {"scene", ec ? json::value(nullptr) : std::move(scene)}};
    }
    o["snapshot"] = std::move(snap);
    return ok_json(200, o);
  }

  Response rename_scene(const Request& req, const Principal& who) {
    const auto project = req.param("project");
    const auto id = req.param("scene");
    need(role_in(who, project, req), "editor");
    auto body = body_object(req, {"name"});
    const auto name = need_name(body);
    bool found = false;
    auto r = store.rename_scene(project, id, name, found);
    if (!found) not_found();
    auto s = store.get_scene(project, id, r);
    if (!s) not_found();
    auto resp = ok_json(200, scene_json(*s));
    wrote(who, r, resp);
    return resp;
  }

  Response delete_scene(const Request& req, const Principal& who) {
    const auto project = req.param("project");
    const auto id = req.param("scene");
    need(role_in(who, project, req), "editor");
    bool found = false;
    auto r = store.delete_scene(project, id, found);
    if (!found) not_found();
    publish({collab::AccessChange::Kind::SceneDeleted, {}, project, {}, id});
    log::info("api: scene deleted", {{"project", project}, {"scene", id}});
    Response resp{204, "application/json", "", {}};
    wrote(who, r, resp);
    return resp;
  }

  // --- uploads, assets (uploads.cpp) ----------------------------------------------------
  Response create_upload(const Request& req, const Principal& who);
  Response get_upload(const Request& req, const Principal& who);
  Response presign_parts(const Request& req, const Principal& who);
  Response complete_upload(const Request& req, const Principal& who);
  Response abort_upload(const Request& req, const Principal& who);
  Response list_assets(const Request& req, const Principal& who);
  Response get_asset(const Request& req, const Principal& who);
  Response delete_asset(const Request& req, const Principal& who);
  // The same operations under the routes Uppy's @uppy/aws-s3 calls (Companion's shapes).
  Response uppy_create(const Request& req, const Principal& who);
  Response uppy_list_parts(const Request& req, const Principal& who);
  Response uppy_sign_part(const Request& req, const Principal& who);
  Response uppy_sign_batch(const Request& req, const Principal& who);
  Response uppy_complete(const Request& req, const Principal& who);
  Response uppy_abort(const Request& req, const Principal& who);
  void need_storage();
  store::Upload load_upload(const Request& req, const Principal& who);
  store::Upload load_uppy(const Request& req, const Principal& who);
};

}  // namespace kiln::api
