#include "app/node.hpp"

#include "api/api.hpp"
#include "app/database.hpp"
#include "app/durability.hpp"
#include "app/landing.hpp"
#include "app/secrets.hpp"
#include "clients/redis/client.hpp"
#include "collab/access.hpp"
#include "collab/memory_engine.hpp"
#include "engines/redis_access_bus.hpp"
#include "engines/redis_engine.hpp"
#include "gateway/gateway.hpp"
#include "objects/server.hpp"
#include "persist/persister.hpp"
#include "platform/health.hpp"
#include "platform/http_server.hpp"
#include "platform/ids.hpp"
#include "platform/log.hpp"
#include "platform/metrics.hpp"
#include "platform/runtime.hpp"
#include "platform/thread_pool.hpp"

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <unistd.h>

#include <atomic>
#include <cctype>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#ifndef KILN_VERSION
#define KILN_VERSION "0.0.0"
#endif

namespace kiln::app {
namespace {

namespace fs = std::filesystem;

std::string make_node_id(const std::string& configured) {
  if (!configured.empty()) return configured;
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0')
    std::snprintf(host, sizeof host, "kiln");
  return std::string(host) + "-" + ids::random_hex(2);
}

// The data directory must exist and be writable; checked at start and by /readyz.
std::optional<std::string> check_data_dir(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return "missing";
  const fs::path probe = dir / ".kiln-ready-probe";
  {
    std::ofstream out(probe, std::ios::trunc);
    if (!(out << "ok")) return "not writable";
  }
  fs::remove(probe, ec);
  return std::nullopt;
}

std::pair<std::string, std::uint16_t> split_endpoint(const std::string& ep) {
  auto colon = ep.rfind(':');
  return {ep.substr(0, colon), static_cast<std::uint16_t>(std::stoi(ep.substr(colon + 1)))};
}

// Where the API's uploads go and their limits (settings storage.*, uploads.*). `embedded_port`:
// the port the embedded store bound in this process, 0 when it runs elsewhere.
assets::UploadOptions upload_options(const config::Config& cfg, std::uint16_t embedded_port) {
  assets::UploadOptions up;
  auto& st = up.storage;
  st.endpoint = cfg.str("storage.endpoint");
  if (st.endpoint.empty()) {
    auto [host, port] = split_endpoint(cfg.str("objects.listen"));
    if (host == "0.0.0.0" || host.empty()) host = "127.0.0.1";
    if (embedded_port != 0) port = embedded_port;
    st.endpoint = "http://" + host + ":" + std::to_string(port);
  }
  auto either = [&](const char* key, const char* fallback) {
    return cfg.str(key).empty() ? cfg.str(fallback) : cfg.str(key);
  };
  st.ca_file = cfg.str("storage.ca_file");
  st.region = either("storage.region", "objects.region");
  st.credentials.access_key = either("storage.access_key", "objects.access_key");
  // The embedded store's generated secret is only right for the store of this data dir: a
  // storage named elsewhere needs its own key, or every signature would be refused later.
  if (!cfg.str("storage.endpoint").empty() && cfg.str("storage.secret_key").empty())
    throw std::invalid_argument("storage.endpoint is set: storage.secret_key is required");
  st.credentials.secret_key =
      cfg.str("storage.secret_key").empty() ? objects_secret(cfg) : cfg.str("storage.secret_key");
  up.public_endpoint = cfg.str("storage.public_endpoint");
  up.bucket = cfg.str("storage.bucket");
  up.cdn_base = cfg.str("storage.cdn_base");
  while (up.cdn_base.ends_with('/')) up.cdn_base.pop_back();
  auto bytes = [&](const char* key) { return static_cast<std::uint64_t>(cfg.integer(key)); };
  up.policy.multipart_threshold = bytes("uploads.multipart_threshold_bytes");
  up.policy.part_size = bytes("uploads.part_size_bytes");
  up.policy.max_size = bytes("uploads.max_size_bytes");
  up.project_quota = bytes("uploads.project_quota_bytes");
  up.policy.content_types = config::split_list(cfg.str("uploads.content_types"));
  up.url_ttl_s = cfg.integer("uploads.url_ttl_s");
  up.download_ttl_s = cfg.integer("uploads.download_ttl_s");
  up.stale_after_s = cfg.integer("uploads.stale_after_s");
  up.max_parts_per_request = static_cast<std::size_t>(cfg.integer("uploads.max_parts_per_request"));
  return up;
}

}  // namespace

int run_node(const config::Config& cfg, const std::string& role_name) {
  log::Options lo;
  log::parse_level(cfg.str("log.level"), lo.level);
  lo.json = cfg.str("log.format") == "json" ||
            (cfg.str("log.format") == "auto" && ::isatty(STDERR_FILENO) == 0);
  lo.role = role_name;
  const fs::path data_dir = fs::absolute(cfg.str("data.dir"));
  // `kiln serve` is one node for good: its id (which holds its rooms' persister leases)
  // survives restarts, so a restart after a crash does not wait for its own leases.
  lo.node = make_node_id(cfg.str("node.id").empty() && role_name == "serve"
                             ? stable_node_id(data_dir, make_node_id(""))
                             : cfg.str("node.id"));
  log::init(lo);

  {
    std::error_code ec;
    fs::create_directories(data_dir, ec);
    if (auto problem = check_data_dir(data_dir)) {
      log::error("data directory unusable", {{"path", data_dir.string()}, {"problem", *problem}});
      std::fprintf(stderr, "kiln: data directory %s is %s (setting data.dir)\n", data_dir.c_str(),
                   problem->c_str());
      return 1;
    }
  }
  // One `kiln serve` per data directory: two would write one journal and one database.
  if (role_name == "serve" && !lock_data_dir(data_dir)) {
    log::error("data directory in use", {{"path", data_dir.string()}});
    std::fprintf(stderr,
                 "kiln: data directory %s is in use by another kiln serve (setting data.dir)\n",
                 data_dir.c_str());
    return 1;
  }

  metrics::Registry registry;
  metrics::register_process_metrics(registry);
  registry.gauge("kiln_build_info", "Always 1; labels say which build runs.", {"version", "role"})
      .with({KILN_VERSION, role_name})
      .set(1);

  Health health;
  health.add_check("data_dir", [data_dir] { return check_data_dir(data_dir); });

  // Declared after the registry and health: destroying the loop destroys suspended
  // coroutines, which still update metrics on their way out.
  const int threads = cfg.integer("runtime.threads") > 0
                          ? static_cast<int>(cfg.integer("runtime.threads"))
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  Runtime runtime(threads);

  http::Router router;
  router.add("GET", "/healthz", "healthz", [](const http::Request&) {
    return http::Response::json(200, R"({"status":"alive"})");
  });
  router.add("GET", "/readyz", "readyz", [&health](const http::Request&) {
    auto report = health.readiness();
    return http::Response::json(report.ready ? 200 : 503, report.json);
  });
  router.add("GET", "/metrics", "metrics", [&registry](const http::Request&) {
    http::Response r;
    r.status = 200;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = registry.render();
    return r;
  });
  // Every route, filled in once all are registered: the index lists them (tests compare
  // them with docs/openapi.yaml).
  auto route_list = std::make_shared<std::vector<std::pair<std::string, std::string>>>();
  // What a newcomer needs (the address, the object store, the service key), filled in once
  // every listener is up: the banner, and `GET /` for a browser.
  auto landing = std::make_shared<Landing>();
  router.add("GET", "/", "index",
             [&, node = lo.node, route_list, landing](const http::Request& req) {
               const auto accept = req.header("accept").value_or("");
               if (accept.find("text/html") != std::string_view::npos) {
                 http::Response r;
                 r.status = 200;
                 r.content_type = "text/html; charset=utf-8";
                 r.body = landing_html(*landing);
                 return r;
               }
               boost::json::object o;
               o["name"] = "kiln";
               o["version"] = KILN_VERSION;
               o["node"] = node;
               o["role"] = role_name;
               o["endpoints"] = boost::json::array{"/healthz", "/readyz", "/metrics"};
               if (role_name == "serve" || role_name == "api") {
                 o["api"] = "/v1";
                 o["openapi"] = "/openapi.yaml";
               }
               boost::json::array routes;
               for (const auto& [method, path] : *route_list)
                 routes.push_back(boost::json::object{{"method", method}, {"path", path}});
               o["routes"] = std::move(routes);
               if (role_name == "serve" || role_name == "gateway") o["collab"] = "/v1/collab";
               return http::Response::json(200, boost::json::serialize(o));
             });
  if (role_name == "serve" || role_name == "api") {
    router.add("GET", "/openapi.yaml", "openapi", [](const http::Request&) {
      http::Response r;
      r.status = 200;
      r.content_type = "application/yaml";
      r.body = std::string(openapi_yaml());
      return r;
    });
  }

  http::ServerOptions so;
  std::tie(so.host, so.port) = split_endpoint(cfg.str("http.listen"));
  so.max_header_bytes = static_cast<std::size_t>(cfg.integer("http.max_header_bytes"));
  so.max_body_bytes = static_cast<std::size_t>(cfg.integer("http.max_body_bytes"));
  so.request_timeout = std::chrono::milliseconds(cfg.integer("http.request_timeout_ms"));
  so.idle_timeout = std::chrono::milliseconds(cfg.integer("http.idle_timeout_ms"));
  so.max_connections = static_cast<std::size_t>(cfg.integer("http.max_connections"));
  so.access_log = cfg.boolean("http.access_log");
  so.cors_origins = config::split_list(cfg.str("http.cors_origins"));

  // Roles: serve runs everything; gateway serves /v1/collab; worker runs the persister.
  const bool collab_role = role_name == "serve" || role_name == "gateway";
  const bool persist_role = role_name == "serve" || role_name == "worker";
  const bool api_role = role_name == "serve" || role_name == "api";
  const bool redis_rooms = cfg.str("room.engine") == "redis";
  if (role_name == "worker" && !redis_rooms) {
    std::fprintf(stderr,
                 "kiln: configuration error: the worker role stores rooms held in Redis "
                 "(room.engine=redis); with room.engine=memory the rooms live inside "
                 "`kiln serve`, which persists them itself\n");
    return 2;
  }

  // The database: every role but objects (a gateway decides joins from live membership
  // and starts rooms from their stored snapshots).
  std::unique_ptr<store::Database> store;
  if (persist_role || api_role || collab_role) {
    try {
      store = open_store(cfg, &registry);
    } catch (const std::exception& e) {
      log::error("database unusable", {{"error", e.what()}});
      std::fprintf(stderr, "kiln: database: %s (settings database.*)\n", e.what());
      return 1;
    }
  }

  // Access changes (members, roles, deleted projects, revoked tokens) from the API to the
  // gateways: in process for `kiln serve`.
  std::unique_ptr<collab::AccessBus> access_bus;
  if (role_name == "serve") access_bus = std::make_unique<collab::LocalAccessBus>();

  std::unique_ptr<collab::RoomEngine> engine;
  collab::PersistSource* persist_source = nullptr;
  std::shared_ptr<redis::Client> redis_client;
  engines::RedisRoomEngine* redis_engine = nullptr;
  collab::MemoryRoomEngine* memory_engine = nullptr;
  std::unique_ptr<journal::Journal> batch_journal;  // after the engine, before the gateway
  auto redis_ok = std::make_shared<std::atomic<bool>>(false);
  std::unique_ptr<auth::Verifier> verifier;
  std::unique_ptr<gateway::Gateway> gw;
  collab::EngineLimits limits;
  limits.log_retention = static_cast<std::size_t>(cfg.integer("room.log_retention"));
  limits.max_entities = static_cast<std::size_t>(cfg.integer("room.max_entities"));
  limits.max_members = static_cast<std::size_t>(cfg.integer("room.max_members"));
  redis::ConnectionOptions ro;
  if (redis_rooms && (collab_role || persist_role || api_role)) {
    ro.command_timeout = std::chrono::milliseconds(cfg.integer("redis.command_timeout_ms"));
    // CLIENT LIST on the server names the node: kiln-<role>-<node id>.
    ro.client_name = "kiln-" + role_name + "-" + lo.node;
    for (auto& ch : ro.client_name) {
      if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_' && ch != '.')
        ch = '_';
    }
    std::vector<redis::Endpoint> seeds;
    for (const auto& item : config::split_list(cfg.str("redis.addresses"))) {
      auto colon = item.rfind(':');
      int port = colon == std::string::npos ? 0 : std::atoi(item.c_str() + colon + 1);
      if (colon == std::string::npos || colon == 0 || port <= 0 || port > 65535) {
        std::fprintf(
            stderr, "kiln: configuration error: setting 'redis.addresses': '%s' is not host:port\n",
            item.c_str());
        return 2;
      }
      seeds.push_back(redis::Endpoint{item.substr(0, colon), static_cast<std::uint16_t>(port)});
    }
    if (seeds.empty()) {
      std::fprintf(stderr,
                   "kiln: configuration error: setting 'redis.addresses' names no server\n");
      return 2;
    }
    ro.endpoint = seeds.front();
    redis_client = cfg.str("redis.mode") == "cluster" ? redis::Client::cluster(runtime, seeds, ro)
                                                      : redis::Client::standalone(runtime, ro);
    health.add_check("redis", [redis_ok]() -> std::optional<std::string> {
      if (redis_ok->load()) return std::nullopt;
      return std::string("unreachable");
    });
    // Access changes travel between API and gateway nodes over Redis pub/sub.
    if (api_role || collab_role) {
      access_bus = std::make_unique<engines::RedisAccessBus>(runtime, redis_client, ro,
                                                             cfg.str("redis.prefix"));
    }
  }
  if (redis_client && (collab_role || persist_role)) {
    engines::RedisEngineOptions eo;
    eo.prefix = cfg.str("redis.prefix");
    eo.node = lo.node;
    eo.limits = limits;
    eo.presence_ttl = std::chrono::milliseconds(cfg.integer("room.presence_ttl_ms"));
    eo.snapshot_every = static_cast<std::size_t>(cfg.integer("room.snapshot_every"));
    eo.connection = ro;
    eo.evict_after = std::chrono::milliseconds(cfg.integer("room.evict_after_ms"));
    eo.ack_replicas = static_cast<int>(cfg.integer("redis.ack_replicas"));
    eo.wait_timeout = std::chrono::milliseconds(cfg.integer("redis.wait_timeout_ms"));
    auto& wait_timeouts = registry
                              .counter("kiln_redis_wait_timeouts_total",
                                       "Batches acknowledged although the replicas did not confirm "
                                       "them within redis.wait_timeout_ms.")
                              .get();
    eo.on_wait_timeout = [&wait_timeouts] { wait_timeouts.inc(); };
    auto& groups = registry
                       .histogram("kiln_room_append_group_batches",
                                  "Batches appended to a room by one script call (group commit).",
                                  {}, {1, 2, 4, 8, 16, 32, 64, 128, 256})
                       .get();
    eo.on_group = [&groups](std::size_t n) { groups.observe(static_cast<double>(n)); };
    auto& conflicts = registry
                          .counter("kiln_room_append_conflicts_total",
                                   "Appends that found another node's batches first (the group "
                                   "was validated again).")
                          .get();
    eo.on_conflict = [&conflicts] { conflicts.inc(); };
    auto& busy = registry
                     .counter("kiln_room_busy_refusals_total",
                              "Batches refused because room.max_queued batches were waiting on "
                              "this node (nack unavailable with after_ms).")
                     .get();
    eo.on_busy = [&busy] { busy.inc(); };
    auto& resets = registry
                       .counter("kiln_room_epoch_resets_total",
                                "Rooms given a new epoch because Redis had fewer batches than "
                                "this node had applied (history lost with a Redis primary).")
                       .get();
    eo.on_history_lost = [&resets] { resets.inc(); };
    eo.max_queued = static_cast<std::size_t>(cfg.integer("room.max_queued"));
    auto re = std::make_unique<engines::RedisRoomEngine>(runtime, redis_client, eo,
                                                         [] { return ids::random_hex(8); });
    redis_engine = re.get();
    persist_source = re.get();
    engine = std::move(re);
  } else if (collab_role) {
    auto me = std::make_unique<collab::MemoryRoomEngine>(limits, [] { return ids::random_hex(8); });
    memory_engine = me.get();
    persist_source = me.get();
    engine = std::move(me);
  }

  // Rooms the engine does not hold start from their latest stored snapshot, read on
  // threads of their own (never the event loop's).
  std::unique_ptr<ThreadPool> db_threads;
  if (store && collab_role) {
    db_threads = std::make_unique<ThreadPool>(
        std::min<std::size_t>(4, static_cast<std::size_t>(cfg.integer("database.pool_size"))),
        10'000);
    collab::RoomLoader loader = [&store, &db_threads](const std::string& room, auto done) {
      auto task = [&store, room, done] {
        try {
          auto s = store->latest_snapshot(room);
          done(s ? std::optional(collab::StoredRoom{s->seq, std::move(s->body), s->epoch})
                 : std::nullopt,
               "");
        } catch (const std::exception& e) {
          done(std::nullopt, e.what());
        }
      };
      if (!db_threads->post(task)) done(std::nullopt, "too many rooms loading at once");
    };
    if (redis_engine) redis_engine->set_loader(loader);
    if (memory_engine) memory_engine->set_loader(loader);
  }

  if (memory_engine && store && persist_role && !cfg.boolean("journal.enabled"))
    warn_unread_journal(data_dir / "journal");
  // Durable acks on the memory engine: only where a persister stores rooms (serve), which
  // is what lets the journal be truncated.
  if (memory_engine && store && persist_role && cfg.boolean("journal.enabled")) {
    try {
      batch_journal = open_journal(cfg, data_dir / "journal", registry, *memory_engine);
      health.add_check(
          "journal", [j = batch_journal.get()] { return j->problem(); }, false);
    } catch (const std::exception& e) {
      log::error("journal unusable", {{"error", e.what()}});
      std::fprintf(stderr, "kiln: %s (settings journal.*, data.dir)\n", e.what());
      return 1;
    }
  }

  std::unique_ptr<persist::Persister> persister;
  if (store && persist_role && persist_source) {
    persist::PersisterOptions po;
    po.holder = lo.node;
    po.interval = std::chrono::milliseconds(cfg.integer("persist.interval_ms"));
    po.lease = std::chrono::milliseconds(cfg.integer("persist.lease_ms"));
    po.keep = static_cast<std::size_t>(cfg.integer("persist.keep_snapshots"));
    po.reconcile_every = static_cast<int>(cfg.integer("persist.reconcile_every"));
    po.max_rooms_per_pass = static_cast<std::size_t>(cfg.integer("persist.max_rooms_per_pass"));
    persister = std::make_unique<persist::Persister>(*store, *persist_source, po, &registry);
    // The worker exists to persist: failing passes make it not ready. In serve, editing
    // goes on meanwhile: reported, status "degraded".
    health.add_check(
        "persistence", [p = persister.get()] { return p->problem(); }, role_name == "worker");
  }

  if (collab_role || api_role) {
    try {
      verifier = std::make_unique<auth::Verifier>(make_verifier(cfg));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "kiln: configuration error: %s\n", e.what());
      return 2;
    }
  }
  if (collab_role) {
    gateway::Options go;
    go.node = lo.node;
    go.hello_timeout = std::chrono::milliseconds(cfg.integer("gateway.hello_timeout_ms"));
    go.heartbeat = std::chrono::milliseconds(cfg.integer("gateway.heartbeat_ms"));
    go.tick = std::chrono::milliseconds(cfg.integer("gateway.tick_ms"));
    go.max_frame_bytes = static_cast<std::size_t>(cfg.integer("gateway.max_frame_bytes"));
    go.max_ops_per_batch = static_cast<std::size_t>(cfg.integer("gateway.max_ops_per_batch"));
    go.max_rooms_per_connection =
        static_cast<std::size_t>(cfg.integer("gateway.max_rooms_per_connection"));
    go.max_sessions = static_cast<std::size_t>(cfg.integer("gateway.max_sessions"));
    go.max_queue_bytes = static_cast<std::size_t>(cfg.integer("gateway.max_queue_bytes"));
    go.ops_per_second = static_cast<double>(cfg.integer("gateway.ops_per_second"));
    go.eph_per_second = static_cast<double>(cfg.integer("gateway.eph_per_second"));
    go.messages_per_second = static_cast<double>(cfg.integer("gateway.messages_per_second"));
    if (store && db_threads) {
      // Revoked tokens (POST /v1/users/{user}/revoke) are refused here too. A database
      // that cannot answer lets the session on (editing must not depend on it); logged.
      go.revocation_check = [&store, &db_threads](const std::string& user, std::int64_t ver,
                                                  std::function<void(bool)> done) {
        auto task = [&store, user, ver, done] {
          try {
            auto u = store->get_user(user);
            done(u && ver < u->token_version);
          } catch (const std::exception& e) {
            log::warn("gateway: cannot check token revocation", {{"error", e.what()}});
            done(false);
          }
        };
        if (!db_threads->post(task)) done(false);
      };
    }
    go.access.ttl = std::chrono::milliseconds(cfg.integer("gateway.access_ttl_ms"));
    go.access.stale_max = std::chrono::milliseconds(cfg.integer("gateway.access_stale_ms"));
    if (store && db_threads) {
      go.access_loader = [&store, &db_threads](const std::string& project, auto done) {
        auto task = [&store, project, done] {
          try {
            auto row = store->project_access(project);
            gateway::ProjectAccess a;
            a.live = row.live;
            for (auto& [user, role] : row.members) {
              auth::Role r{};
              if (auth::parse_role(role, r)) a.roles.emplace(std::move(user), r);
            }
            a.scenes.insert(row.scenes.begin(), row.scenes.end());
            done(std::move(a), "");
          } catch (const std::exception& e) {
            log::warn("gateway: cannot read project access",
                      {{"project", project}, {"error", e.what()}});
            done(std::nullopt, e.what());
          }
        };
        if (!db_threads->post(task)) done(std::nullopt, "too many database reads queued");
      };
    }
    gw = std::make_unique<gateway::Gateway>(runtime, go, *engine, *verifier, registry);
    router.add("GET", "/v1/collab", "collab", [](const http::Request&) {
      auto r = http::Response::problem(426, "https://kiln.dev/problems/upgrade-required",
                                       "Upgrade Required",
                                       "Open a WebSocket with subprotocol kiln.v1 here.");
      r.headers.emplace_back("Upgrade", "websocket");
      return r;
    });
  }

  // Access changes reach this node's collaboration sessions.
  if (gw && access_bus) {
    access_bus->subscribe([g = gw.get()](const collab::AccessChange& c) { g->apply_access(c); });
  }

  // The embedded object store (serve, objects): its own listener, S3's wire protocol.
  std::unique_ptr<objects::Store> object_store;
  std::unique_ptr<objects::S3Api> s3_api;
  std::unique_ptr<objects::Server> object_server;
  if (role_name == "serve" || role_name == "objects") {
    try {
      const fs::path dir = cfg.str("objects.dir").empty() ? data_dir / "objects"
                                                          : fs::absolute(cfg.str("objects.dir"));
      object_store = std::make_unique<objects::Store>(dir);
      // What a crash left behind (unpublished bytes, unreferenced blobs) goes at start.
      if (const auto swept = object_store->sweep(std::chrono::hours(1)); swept > 0) {
        log::info("object store: removed crash leftovers",
                  {{"files", static_cast<std::int64_t>(swept)}});
      }
      objects::ApiOptions oo;
      oo.protected_buckets = config::split_list(cfg.str("objects.buckets"));
      for (const auto& b : oo.protected_buckets) object_store->create_bucket(b);
      oo.credentials[cfg.str("objects.access_key")] = objects_secret(cfg);
      oo.verify.region = cfg.str("objects.region");
      oo.verify.max_skew_s = cfg.integer("objects.max_skew_s");
      oo.cors_origins = config::split_list(cfg.str("objects.cors_origins"));
      oo.virtual_host_domain = cfg.str("objects.virtual_host_domain");
      s3_api = std::make_unique<objects::S3Api>(*object_store, oo);
      objects::ServerOptions xo;
      std::tie(xo.host, xo.port) = split_endpoint(cfg.str("objects.listen"));
      object_server = std::make_unique<objects::Server>(runtime, *s3_api, xo, registry);
      object_server->start();
      log::info("object store listening",
                {{"address", xo.host},
                 {"port", static_cast<std::int64_t>(object_server->port())},
                 {"dir", dir.string()}});
    } catch (const std::exception& e) {
      log::error("object store unusable", {{"error", e.what()}});
      std::fprintf(stderr, "kiln: object store: %s (settings objects.*)\n", e.what());
      return 1;
    }
  }

  // The REST API (serve, api): handlers on threads of their own, never the event loop.
  std::unique_ptr<ThreadPool> api_threads, upload_threads;
  std::unique_ptr<api::Api> rest;
  if (api_role) {
    api::ApiOptions ao;
    try {
      ao.service_key = service_key(cfg);
      if (cfg.str("auth.jwt_public_key_file").empty()) ao.jwt_secret = jwt_secret(cfg);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "kiln: configuration error: %s\n", e.what());
      return 2;
    }
    ao.token_ttl_s = cfg.integer("api.token_ttl_s");
    ao.token_max_ttl_s = cfg.integer("api.token_max_ttl_s");
    ao.user_requests_per_second = static_cast<double>(cfg.integer("api.user_requests_per_second"));
    ao.service_requests_per_second =
        static_cast<double>(cfg.integer("api.service_requests_per_second"));
    ao.page_size = static_cast<std::size_t>(cfg.integer("api.page_size"));
    ao.max_page_size = static_cast<std::size_t>(cfg.integer("api.max_page_size"));
    try {
      ao.uploads = upload_options(cfg, object_server ? object_server->port() : 0);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "kiln: configuration error: %s (settings storage.*, uploads.*)\n",
                   e.what());
      return 2;
    }
    api_threads =
        std::make_unique<ThreadPool>(static_cast<std::size_t>(cfg.integer("api.threads")),
                                     static_cast<std::size_t>(cfg.integer("api.max_queued")));
    upload_threads = std::make_unique<ThreadPool>(
        static_cast<std::size_t>(cfg.integer("uploads.complete_threads")),
        static_cast<std::size_t>(cfg.integer("api.max_queued")));
    rest = std::make_unique<api::Api>(*store, *verifier, *api_threads, ao, registry,
                                      access_bus.get(), upload_threads.get());
    rest->install(router);
  }
  *route_list = router.routes();
  std::vector<std::shared_ptr<void>> keep_alive;  // periodic tasks, alive while the loop runs
  http::Server server(runtime, so, std::move(router), registry);
  if (gw) gw->start();
  if (rest) {
    // Stale uploads: found on the loop's timer, aborted on the API's threads (S3 calls block).
    const auto period = std::chrono::seconds(cfg.integer("uploads.sweep_interval_s"));
    auto sweep = std::make_shared<std::function<void()>>();
    *sweep = [&runtime, r = rest.get(), pool = api_threads.get(), period,
              weak = std::weak_ptr(sweep)] {
      pool->post([r] {
        try {
          r->sweep_stale_uploads();
        } catch (const std::exception& e) {
          log::warn("api: stale-upload sweep failed", {{"error", e.what()}});
        }
      });
      if (auto s = weak.lock()) runtime.after(period, *s);
    };
    runtime.after(std::chrono::seconds(1), *sweep);
    keep_alive.push_back(sweep);
  }
  if (redis_client) {
    // Presence refresh and reaping, and a PING for readiness, on a fixed period.
    const auto period = std::chrono::milliseconds(
        std::max<std::int64_t>(cfg.integer("room.presence_ttl_ms") / 3, 100));
    auto beat = std::make_shared<std::function<void()>>();
    *beat = [&runtime, redis_engine, redis_client, redis_ok, period, weak = std::weak_ptr(beat)] {
      if (redis_engine) redis_engine->tick();
      redis_client->command("", {"PING"},
                            [redis_ok](redis::Reply r) { redis_ok->store(!r.is_error()); });
      if (auto b = weak.lock()) runtime.after(period, *b);
    };
    redis_client->command("", {"PING"},
                          [redis_ok](redis::Reply r) { redis_ok->store(!r.is_error()); });
    runtime.after(period, *beat);
    keep_alive.push_back(beat);
  }
  if (gw) server.add_upgrade("/v1/collab", gw->upgrade_handler());
  if (persister) persister->start();
  try {
    server.start();
  } catch (const std::exception& e) {
    log::error("cannot start HTTP server", {{"error", e.what()}});
    std::fprintf(stderr, "kiln: %s (setting http.listen)\n", e.what());
    return 1;
  }

  const auto drain_window = std::chrono::milliseconds(cfg.integer("shutdown.drain_ms"));
  bool draining = false;
  std::thread final_flush;
  runtime.on_signals({SIGTERM, SIGINT}, [&](int sig) {
    if (draining) {
      log::warn("second signal: closing every connection now", {{"signal", sig}});
      server.close_all();
      if (object_server) object_server->close_all();
      runtime.stop();
      return;
    }
    draining = true;
    health.set_draining();
    log::info("draining",
              {{"signal", sig},
               {"drain_ms", static_cast<std::int64_t>(drain_window.count())},
               {"open_connections", static_cast<std::int64_t>(server.open_connections())}});
    // Stop once both the HTTP connections and the WebSocket sessions are gone, and the
    // persister has stored every dirty room one last time (off the event loop: its calls
    // block, and the Redis engine needs the loop to answer them).
    auto pending = std::make_shared<std::atomic<int>>(1 + (gw ? 1 : 0) + (object_server ? 1 : 0));
    auto one_done = [&, pending] {
      if (--*pending == 0) {
        log::info("drained: every connection closed");
        if (!persister) {
          runtime.stop();
          return;
        }
        final_flush = std::thread([&] {
          persister->stop(true);
          runtime.stop();
        });
      }
    };
    server.drain(one_done);
    if (gw) gw->drain(drain_window, one_done);
    if (object_server) object_server->drain(one_done);
    runtime.after(drain_window, [&] {
      log::warn("drain window over: cutting remaining connections",
                {{"open_connections", static_cast<std::int64_t>(server.open_connections())}});
      // Cut connections end their sessions, and the last one to end stops the loop (the
      // drain callback above). Should one not end, stop anyway a moment later.
      server.close_all();
      if (object_server) object_server->close_all();
      runtime.after(std::chrono::seconds(1), [&] {
        if (!final_flush.joinable()) runtime.stop();  // else it stops the loop when done
      });
    });
  });

  std::string shown_host = so.host == "0.0.0.0" || so.host == "::" ? "127.0.0.1" : so.host;
  log::info("listening", {{"address", so.host},
                          {"port", server.port()},
                          {"threads", threads},
                          {"data_dir", data_dir.string()},
                          {"version", KILN_VERSION}});
  log::debug("effective configuration", {{"config", cfg.describe()}});
  landing->version = KILN_VERSION;
  landing->role = role_name;
  landing->node = lo.node;
  landing->http = "http://" + shown_host + ":" + std::to_string(server.port());
  landing->api = api_role;
  landing->collab = collab_role;
  if (object_server) {
    auto [ohost, oport] = split_endpoint(cfg.str("objects.listen"));
    if (ohost == "0.0.0.0" || ohost == "::") ohost = "127.0.0.1";
    landing->objects = "http://" + ohost + ":" + std::to_string(object_server->port());
    landing->buckets = cfg.str("objects.buckets");
  }
  if (api_role && cfg.str("api.service_key").empty())
    landing->service_key_file = (data_dir / "service-key").lexically_normal().string();
  std::printf("Kiln %s (%s) is running at http://%s:%u/\n%s", KILN_VERSION, role_name.c_str(),
              shown_host.c_str(), static_cast<unsigned>(server.port()), banner(*landing).c_str());
  std::fflush(stdout);

  runtime.run();
  if (final_flush.joinable()) final_flush.join();
  // Stopped without a drain (a second signal): the memory engine can still be flushed
  // (it needs no event loop); the Redis engine keeps its rooms in Redis anyway.
  if (persister) persister->stop(memory_engine != nullptr);
  persister.reset();
  upload_threads.reset();  // finishes requests in flight before the store goes
  api_threads.reset();
  db_threads.reset();  // finishes loads in flight before the engine goes
  if (redis_engine) redis_engine->close();
  if (auto* bus = dynamic_cast<engines::RedisAccessBus*>(access_bus.get())) bus->close();
  if (redis_client) redis_client->close();
  runtime.run_ready_handlers();  // let the closes fail what is pending
  log::info("stopped");
  return 0;
}

}  // namespace kiln::app
