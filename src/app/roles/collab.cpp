// The collab module: the collaboration gateway on /v1/collab (gateway role, serve).
#include "app/modules.hpp"
#include "auth/jwt.hpp"
#include "gateway/gateway.hpp"
#include "platform/http_server.hpp"
#include "platform/log.hpp"
#include "store/projects.hpp"

namespace kiln::app {
namespace {

// The gateway's settings (gateway.*).
gateway::Options gateway_options(const config::Config& cfg, const std::string& node_id) {
  gateway::Options go;
  go.node = node_id;
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
  go.access.ttl = std::chrono::milliseconds(cfg.integer("gateway.access_ttl_ms"));
  go.access.stale_max = std::chrono::milliseconds(cfg.integer("gateway.access_stale_ms"));
  return go;
}

class CollabModule final : public Module {
 public:
  CollabModule(Node& node, RoomsModule& rooms) {
    auto go = gateway_options(node.cfg, node.id);
    if (node.db && node.db_threads) {
      // Revoked tokens (POST /v1/users/{user}/revoke) are refused here too. A database
      // that cannot answer lets the session on (editing must not depend on it); logged.
      go.revocation_check = [&node](const std::string& user, std::int64_t ver,
                                    std::function<void(bool)> done) {
        auto task = [&node, user, ver, done] {
          try {
            auto u = store::Projects(*node.db).get_user(user);
            done(u && ver < u->token_version);
          } catch (const std::exception& e) {
            log::warn("gateway: cannot check token revocation", {{"error", e.what()}});
            done(false);
          }
        };
        if (!node.db_threads->post(task)) done(false);
      };
      // Joins are decided from live membership, cached (gateway.access_*).
      go.access_loader = [&node](const std::string& project, auto done) {
        auto task = [&node, project, done] {
          try {
            auto row = store::Projects(*node.db).project_access(project);
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
        if (!node.db_threads->post(task)) done(std::nullopt, "too many database reads queued");
      };
    }
    gw_ = std::make_unique<gateway::Gateway>(*node.runtime, go, rooms.engine(), *node.verifier,
                                             node.registry);
    node.router.add("GET", "/v1/collab", "collab", [](const http::Request&) {
      auto r = http::Response::problem(426, "https://kiln.dev/problems/upgrade-required",
                                       "Upgrade Required",
                                       "Open a WebSocket with subprotocol kiln.v1 here.");
      r.headers.emplace_back("Upgrade", "websocket");
      return r;
    });
    // Access changes (members, roles, deleted projects, revoked tokens) reach this node's
    // sessions.
    if (node.access_bus) {
      node.access_bus->subscribe(
          [g = gw_.get()](const collab::AccessChange& c) { g->apply_access(c); });
    }
  }

  void start(http::Server& server) override {
    gw_->start();
    server.add_upgrade("/v1/collab", gw_->upgrade_handler());
  }
  bool drain(std::chrono::milliseconds window, std::function<void()> done) override {
    gw_->drain(window, std::move(done));
    return true;
  }
  void describe(Landing& landing) override { landing.collab = true; }

 private:
  std::unique_ptr<gateway::Gateway> gw_;
};

}  // namespace

std::unique_ptr<Module> make_collab(Node& node, RoomsModule& rooms) {
  return std::make_unique<CollabModule>(node, rooms);
}

}  // namespace kiln::app
