#include "app/node.hpp"

#include "app/database.hpp"
#include "app/durability.hpp"
#include "app/editor.hpp"
#include "app/landing.hpp"
#include "app/modules.hpp"
#include "app/secrets.hpp"
#include "auth/jwt.hpp"
#include "engines/memory/local_access_bus.hpp"
#include "engines/redis/redis_access_bus.hpp"
#include "platform/http_server.hpp"
#include "platform/ids.hpp"
#include "platform/log.hpp"

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <unistd.h>

#include <cctype>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <mutex>
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

// /healthz, /readyz, /metrics, the index at / and, with the API, /openapi.yaml. The index
// lists `routes`, filled in once every module has registered its own.
const std::vector<EditorFile> kNoEditor;

void add_node_routes(Node& node,
                     std::shared_ptr<std::vector<std::pair<std::string, std::string>>> routes,
                     std::shared_ptr<const std::vector<EditorFile>> editor) {
  auto& router = node.router;
  router.add("GET", "/healthz", "healthz", [](const http::Request&) {
    return http::Response::json(200, R"({"status":"alive"})");
  });
  router.add("GET", "/readyz", "readyz", [&health = node.health](const http::Request&) {
    auto report = health.readiness();
    return http::Response::json(report.ready ? 200 : 503, report.json);
  });
  router.add("GET", "/metrics", "metrics", [&registry = node.registry](const http::Request&) {
    http::Response r;
    r.status = 200;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = registry.render();
    return r;
  });
  // What a newcomer needs (the address, the object store, the service key): the banner,
  // and `GET /` for a browser.
  // The web editor's files (http.editor_dir), each at /editor/<name>; index.html at `/`.
  const EditorFile* editor_index = nullptr;
  for (const auto& f : editor ? *editor : kNoEditor) {
    if (f.name == "index.html") {
      editor_index = &f;
      continue;
    }
    router.add("GET", "/editor/" + f.name, "editor", [editor, &f](const http::Request&) {
      http::Response r;
      r.content_type = f.content_type;
      r.body = f.body;
      r.headers.emplace_back("Cache-Control",
                             f.immutable ? "public, max-age=31536000, immutable" : "no-cache");
      r.headers.emplace_back("X-Content-Type-Options", "nosniff");
      return r;
    });
  }
  router.add("GET", "/", "index",
             [id = node.id, role = node.role, roles = node.roles, routes, landing = node.landing,
              editor, editor_index](const http::Request& req) {
               const auto accept = req.header("accept").value_or("");
               if (editor_index != nullptr && accept.find("text/html") != std::string_view::npos) {
                 http::Response r;
                 r.content_type = editor_index->content_type;
                 r.body = editor_index->body;
                 r.headers.emplace_back("Cache-Control", "no-cache");
                 r.headers.emplace_back("X-Content-Type-Options", "nosniff");
                 r.headers.emplace_back("X-Frame-Options", "DENY");
                 return r;
               }
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
               o["node"] = id;
               o["role"] = role;
               o["endpoints"] = boost::json::array{"/healthz", "/readyz", "/metrics"};
               if (roles.api) {
                 o["api"] = "/v1";
                 o["openapi"] = "/openapi.yaml";
               }
               boost::json::array list;
               for (const auto& [method, path] : *routes)
                 list.push_back(boost::json::object{{"method", method}, {"path", path}});
               o["routes"] = std::move(list);
               if (roles.collab) o["collab"] = "/v1/collab";
               return http::Response::json(200, boost::json::serialize(o));
             });
  if (node.roles.api) {
    router.add("GET", "/openapi.yaml", "openapi", [](const http::Request&) {
      http::Response r;
      r.status = 200;
      r.content_type = "application/yaml";
      r.body = std::string(openapi_yaml());
      return r;
    });
  }
}

http::ServerOptions server_options(const config::Config& cfg) {
  http::ServerOptions so;
  std::tie(so.host, so.port) = split_endpoint(cfg.str("http.listen"));
  so.max_header_bytes = static_cast<std::size_t>(cfg.integer("http.max_header_bytes"));
  so.max_body_bytes = static_cast<std::size_t>(cfg.integer("http.max_body_bytes"));
  so.request_timeout = std::chrono::milliseconds(cfg.integer("http.request_timeout_ms"));
  so.idle_timeout = std::chrono::milliseconds(cfg.integer("http.idle_timeout_ms"));
  so.max_connections = static_cast<std::size_t>(cfg.integer("http.max_connections"));
  so.access_log = cfg.boolean("http.access_log");
  so.cors_origins = config::split_list(cfg.str("http.cors_origins"));
  return so;
}

// The Redis client (room.engine=redis) and what rides on it: readiness by PING, and the
// access bus between API and gateway nodes.
void connect_redis(Node& node) {
  const auto& cfg = node.cfg;
  auto& ro = node.redis_options;
  ro.command_timeout = std::chrono::milliseconds(cfg.integer("redis.command_timeout_ms"));
  // CLIENT LIST on the server names the node: kiln-<role>-<node id>.
  ro.client_name = "kiln-" + node.role + "-" + node.id;
  for (auto& ch : ro.client_name) {
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_' && ch != '.')
      ch = '_';
  }
  std::vector<redis::Endpoint> seeds;
  for (const auto& item : config::split_list(cfg.str("redis.addresses"))) {
    auto colon = item.rfind(':');
    int port = colon == std::string::npos ? 0 : std::atoi(item.c_str() + colon + 1);
    if (colon == std::string::npos || colon == 0 || port <= 0 || port > 65535)
      throw StartupError(
          2, "configuration error: setting 'redis.addresses': '" + item + "' is not host:port");
    seeds.push_back(redis::Endpoint{item.substr(0, colon), static_cast<std::uint16_t>(port)});
  }
  if (seeds.empty())
    throw StartupError(2, "configuration error: setting 'redis.addresses' names no server");
  ro.endpoint = seeds.front();
  node.redis = cfg.str("redis.mode") == "cluster" ? redis::Client::cluster(*node.runtime, seeds, ro)
                                                  : redis::Client::standalone(*node.runtime, ro);
  node.health.add_check("redis", [ok = node.redis_ok]() -> std::optional<std::string> {
    if (ok->load()) return std::nullopt;
    return std::string("unreachable");
  });
  // Access changes travel between API and gateway nodes over Redis pub/sub; workers
  // publish the asset pipeline's notifications on it.
  if (node.roles.api || node.roles.collab || node.roles.jobs) {
    node.access_bus = std::make_unique<engines::RedisAccessBus>(*node.runtime, node.redis, ro,
                                                                cfg.str("redis.prefix"));
  }
}

// What the roles share: the database, its read threads, Redis, the access bus, the token
// verifier. Throws StartupError.
void open_backends(Node& node) {
  const auto& cfg = node.cfg;
  const auto& roles = node.roles;
  // The database: every role but objects (a gateway decides joins from live membership
  // and starts rooms from their stored snapshots).
  if (roles.persist || roles.api || roles.collab || roles.jobs) {
    try {
      node.db = open_store(cfg, &node.registry);
    } catch (const std::exception& e) {
      log::error("database unusable", {{"error", e.what()}});
      throw StartupError(1, std::string("database: ") + e.what() + " (settings database.*)");
    }
  }
  if (node.db && (roles.jobs || roles.api)) node.jobs = make_job_queue(node);
  if (node.db && roles.collab) {
    node.db_threads = std::make_unique<ThreadPool>(
        std::min<std::size_t>(4, static_cast<std::size_t>(cfg.integer("database.pool_size"))),
        10'000);
  }
  // Access changes (members, roles, deleted projects, revoked tokens) from the API to the
  // gateways: in process for `kiln serve`, over Redis between nodes.
  if (node.role == "serve") node.access_bus = std::make_unique<engines::LocalAccessBus>();
  if (cfg.str("room.engine") == "redis" &&
      (roles.collab || roles.persist || roles.api || roles.jobs))
    connect_redis(node);
  if (roles.collab || roles.api) {
    try {
      node.verifier = std::make_unique<auth::Verifier>(make_verifier(cfg));
    } catch (const std::exception& e) {
      throw StartupError(2, std::string("configuration error: ") + e.what());
    }
  }
}

// The modules the node's roles include, in start order (rooms before what uses them, the
// object store before the API that signs URLs for its port).
void make_modules(Node& node, std::vector<std::unique_ptr<Module>>& modules) {
  RoomsModule* rooms = nullptr;
  if (node.roles.collab || node.roles.persist) {
    auto r = std::make_unique<RoomsModule>(node);
    rooms = r.get();
    modules.push_back(std::move(r));
  }
  if (node.roles.persist && node.db && rooms) modules.push_back(make_persist(node, *rooms));
  if (node.roles.collab) modules.push_back(make_collab(node, *rooms));
  if (node.roles.objects) modules.push_back(make_objects(node));
  if (node.roles.terminals) modules.push_back(make_terminals(node));
  if (node.roles.api) modules.push_back(make_api(node));
  // After objects: the asset pipeline stores into the embedded store of this process.
  if (node.roles.jobs && node.jobs) modules.push_back(make_jobs(node));
}

}  // namespace

std::pair<std::string, std::uint16_t> split_endpoint(const std::string& ep) {
  auto colon = ep.rfind(':');
  return {ep.substr(0, colon), static_cast<std::uint16_t>(std::stoi(ep.substr(colon + 1)))};
}

void Node::every(std::chrono::milliseconds first, std::chrono::milliseconds period,
                 std::function<void()> fn) {
  auto tick = std::make_shared<std::function<void()>>();
  // Every copy the loop holds checks that the task is still kept before it runs: a timer
  // already due when stop_periodic() runs does nothing.
  *tick = [this, fn = std::move(fn), period, weak = std::weak_ptr(tick)] {
    if (weak.expired()) return;
    fn();
    if (auto t = weak.lock()) runtime->after(period, *t);
  };
  runtime->after(first, *tick);
  keep_alive.push_back(tick);
}

int run_node(const config::Config& cfg, const std::string& role_name) {
  Node node(cfg, role_name);
  node.roles.collab = role_name == "serve" || role_name == "gateway";
  // A worker runs what it has work for: jobs, and storing rooms held in Redis (persist).
  node.roles.persist =
      role_name == "serve" || (role_name == "worker" && cfg.str("room.engine") == "redis");
  node.roles.jobs = role_name == "serve" || role_name == "worker";
  node.roles.api = role_name == "serve" || role_name == "api";
  node.roles.objects = role_name == "serve" || role_name == "objects";
  // Terminal sessions live in `kiln serve` or on a sandbox host (`kiln sandboxd`); gateways
  // relay /v1/term to the host and API nodes call it (sandbox.daemon; docs/terminals.md).
  node.roles.terminals = role_name == "serve" || role_name == "sandboxd" ||
                         role_name == "gateway" || role_name == "api";

  log::Options lo;
  log::parse_level(cfg.str("log.level"), lo.level);
  lo.json = cfg.str("log.format") == "json" ||
            (cfg.str("log.format") == "auto" && ::isatty(STDERR_FILENO) == 0);
  lo.role = role_name;
  node.data_dir = fs::absolute(cfg.str("data.dir"));
  // `kiln serve` is one node for good: its id (which holds its rooms' persister leases)
  // survives restarts, so a restart after a crash does not wait for its own leases.
  lo.node = make_node_id(cfg.str("node.id").empty() && role_name == "serve"
                             ? stable_node_id(node.data_dir, make_node_id(""))
                             : cfg.str("node.id"));
  node.id = lo.node;
  log::init(lo);
  const auto& data_dir = node.data_dir;
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
  // A sandbox host's likewise: a second one would remove the first one's sandboxes as
  // leftovers of a previous run.
  if ((role_name == "serve" || role_name == "sandboxd") && !lock_data_dir(data_dir)) {
    log::error("data directory in use", {{"path", data_dir.string()}});
    std::fprintf(stderr,
                 "kiln: data directory %s is in use by another kiln serve or kiln sandboxd "
                 "(setting data.dir)\n",
                 data_dir.c_str());
    return 1;
  }

  for (const char* key : {"http.cors_origins", "objects.cors_origins"}) {
    if (auto bad = http::bad_wildcard_pattern(config::split_list(cfg.str(key)))) {
      std::fprintf(stderr,
                   "kiln: configuration error: %s: an origin may contain at most one '*' "
                   "(got '%s')\n",
                   key, bad->c_str());
      return 2;
    }
  }

  metrics::register_process_metrics(node.registry);
  node.registry
      .gauge("kiln_build_info", "Always 1; labels say which build runs.", {"version", "role"})
      .with({KILN_VERSION, role_name})
      .set(1);
  node.health.add_check("data_dir", [data_dir] { return check_data_dir(data_dir); });
  const int threads = cfg.integer("runtime.threads") > 0
                          ? static_cast<int>(cfg.integer("runtime.threads"))
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  node.runtime = std::make_unique<Runtime>(threads);
  auto& runtime = *node.runtime;
  auto route_list = std::make_shared<std::vector<std::pair<std::string, std::string>>>();
  std::shared_ptr<const std::vector<EditorFile>> editor;
  if (const auto dir = cfg.str("http.editor_dir"); !dir.empty()) {
    try {
      editor = std::make_shared<const std::vector<EditorFile>>(load_editor(dir));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "kiln: configuration error: %s\n", e.what());
      return 2;
    }
  }
  add_node_routes(node, route_list, editor);
  const auto so = server_options(cfg);

  std::vector<std::unique_ptr<Module>> modules;
  // On every way out: destroyed in reverse (what uses a module goes before it).
  struct ReverseDestroy {
    std::vector<std::unique_ptr<Module>>& m;
    ~ReverseDestroy() {
      while (!m.empty()) m.pop_back();
    }
  } reverse_destroy{modules};
  try {
    check_jobs_settings(cfg);
    open_backends(node);
    make_modules(node, modules);
  } catch (const StartupError& e) {
    std::fprintf(stderr, "kiln: %s\n", e.what());
    return e.status;
  }

  *route_list = node.router.routes();
  http::Server server(runtime, so, std::move(node.router), node.registry);
  for (auto& m : modules) m->start(server);
  if (node.redis) {
    // A PING for readiness, on a fixed period.
    auto ping = [redis = node.redis, ok = node.redis_ok] {
      redis->command("", {"PING"}, [ok](redis::Reply r) { ok->store(!r.is_error()); });
    };
    ping();
    const auto period = std::chrono::milliseconds(
        std::max<std::int64_t>(cfg.integer("room.presence_ttl_ms") / 3, 100));
    node.every(period, period, ping);
  }
  try {
    server.start();
  } catch (const std::exception& e) {
    log::error("cannot start HTTP server", {{"error", e.what()}});
    std::fprintf(stderr, "kiln: %s (setting http.listen)\n", e.what());
    return 1;
  }

  const auto drain_window = std::chrono::milliseconds(cfg.integer("shutdown.drain_ms"));
  bool draining = false;
  // Set by a second signal and once the loop has returned: a drain that completes after it
  // (connections cut by close_all report in while the loop winds down) starts nothing.
  std::atomic<bool> stopping{false};
  // The drain's last step, started once by whichever thread finishes the drain (a module's
  // may, late); under flush_mu with `stopping`, so that none starts once the node is past
  // waiting for it (a std::thread assigned then, or twice, would end the process).
  std::mutex flush_mu;
  std::thread final_flush;
  auto close_all = [&] {
    server.close_all();
    for (auto& m : modules) m->close_all();
  };
  runtime.on_signals({SIGTERM, SIGINT}, [&](int sig) {
    if (draining) {
      log::warn("second signal: closing every connection now", {{"signal", sig}});
      stopping = true;
      close_all();
      runtime.stop();
      return;
    }
    draining = true;
    node.health.set_draining();
    log::info("draining",
              {{"signal", sig},
               {"drain_ms", static_cast<std::int64_t>(drain_window.count())},
               {"open_connections", static_cast<std::int64_t>(server.open_connections())}});
    // Once the HTTP connections and every module's sessions are gone, the modules finish
    // (the persister stores every dirty room one last time) off the event loop: their
    // calls block, and the Redis engine needs the loop to answer them.
    auto pending = std::make_shared<std::atomic<int>>(2);  // the server, and this call
    auto one_done = [&, pending] {
      if (--*pending > 0) return;
      std::lock_guard lock(flush_mu);
      if (stopping.load() || final_flush.joinable()) return;
      log::info("drained: every connection closed");
      final_flush = std::thread([&] {
        for (auto& m : modules) m->finish();
        runtime.stop();
      });
    };
    server.drain(one_done);
    for (auto& m : modules) {
      ++*pending;
      if (!m->drain(drain_window, one_done)) --*pending;
    }
    one_done();
    runtime.after(drain_window, [&] {
      if (stopping) return;  // the loop ended first: the modules may be stopped already
      log::warn("drain window over: cutting remaining connections",
                {{"open_connections", static_cast<std::int64_t>(server.open_connections())}});
      // Cut connections end their sessions, and the last one to end stops the loop (the
      // drain callback above). Should one not end, stop anyway a moment later.
      close_all();
      runtime.after(std::chrono::seconds(1), [&] {
        if (stopping) return;
        std::lock_guard lock(flush_mu);
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
  auto& landing = *node.landing;
  landing.version = KILN_VERSION;
  landing.role = role_name;
  landing.node = node.id;
  landing.http = "http://" + shown_host + ":" + std::to_string(server.port());
  for (auto& m : modules) m->describe(landing);
  std::printf("Kiln %s (%s) is running at http://%s:%u/\n%s", KILN_VERSION, role_name.c_str(),
              shown_host.c_str(), static_cast<unsigned>(server.port()), banner(landing).c_str());
  std::fflush(stdout);

  runtime.run();
  node.stop_periodic();  // before the modules their tasks call into stop
  {
    std::lock_guard lock(flush_mu);
    stopping = true;
  }
  const bool drained = final_flush.joinable();
  if (final_flush.joinable()) final_flush.join();
  // In reverse: what uses a module stops before it (the API's threads before the
  // database's, the persister before the rooms it reads).
  for (auto it = modules.rbegin(); it != modules.rend(); ++it) (*it)->stop(drained);
  if (node.access_bus) node.access_bus->close();
  if (node.redis) node.redis->close();
  runtime.run_ready_handlers();                 // let the closes fail what is pending
  while (!modules.empty()) modules.pop_back();  // destroyed in reverse, before the node
  log::info("stopped");
  return 0;
}

}  // namespace kiln::app
