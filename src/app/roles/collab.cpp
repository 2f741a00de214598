// The collab module: the collaboration gateway on /v1/collab (gateway role, serve).
#include "app/modules.hpp"
#include "app/settings.hpp"
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
      go.revocation_check = revocation_check(node);
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

std::function<void(const std::string&, std::int64_t, std::function<void(bool)>)> revocation_check(
    Node& node) {
  if (!node.db || !node.db_threads) return {};
  return [&node](const std::string& user, std::int64_t ver, std::function<void(bool)> done) {
    auto task = [&node, user, ver, done] {
      try {
        auto u = store::Projects(*node.db).get_user(user);
        done(u && ver < u->token_version);
      } catch (const std::exception& e) {
        log::warn("cannot check token revocation", {{"error", e.what()}});
        done(false);
      }
    };
    if (!node.db_threads->post(task)) done(false);
  };
}

std::unique_ptr<Module> make_collab(Node& node, RoomsModule& rooms) {
  return std::make_unique<CollabModule>(node, rooms);
}

void add_gateway_settings(config::Schema& s) {
  using namespace setting;
  s.add(integer("gateway.hello_timeout_ms", 10'000, 100, 120'000,
                "A connection that has not sent a valid `hello` by then is closed with 4001."));
  s.add(integer("gateway.heartbeat_ms", 15'000, 1'000, 300'000,
                "WebSocket ping interval (told to clients in `welcome`); a peer silent for "
                "twice this long is dropped."));
  s.add(integer("gateway.access_ttl_ms", 5'000, 100, 600'000,
                "Joins are decided from the database's live membership, cached per project for "
                "this long; every project in use is read again this often, so an access change "
                "the access bus lost still takes effect within it."));
  s.add(integer("gateway.access_stale_ms", 300'000, 0, 86'400'000,
                "While the database does not answer, joins are decided from a cached entry up "
                "to this old; past it (or with none) a join gets `nack unavailable`."));
  s.add(
      integer("gateway.tick_ms", 50, 5, 1'000,
              "Ephemeral updates (cursors, drags) are coalesced and sent at most once per tick."));
  s.add(integer("gateway.max_frame_bytes", 256 * KiB, 1 * KiB, 16 * MiB,
                "Largest client frame; larger ones close the connection with 4009."));
  s.add(integer("gateway.max_ops_per_batch", 1'000, 1, 100'000,
                "Ops in one `op` request; more gets `nack too_large`."));
  s.add(integer("gateway.max_rooms_per_connection", 16, 1, 1'000,
                "Rooms one connection may be in at once; more gets `nack too_large`."));
  s.add(integer("gateway.max_sessions", 20'000, 1, 1'000'000,
                "WebSocket sessions on this node; beyond it upgrades get 503."));
  s.add(integer("gateway.max_queue_bytes", 4 * MiB, 64 * KiB, 1 * GiB,
                "Bytes waiting to be sent to one client; a client that falls further behind is "
                "closed with 4008."));
  s.add(integer("gateway.ops_per_second", 20, 1, 100'000,
                "Durable batches per second per connection (burst twice that); beyond it "
                "`nack rate_limited`."));
  s.add(integer("gateway.eph_per_second", 120, 1, 100'000,
                "Ephemeral updates per second per connection (burst twice that); beyond it they "
                "are dropped and counted."));
  s.add(integer("gateway.messages_per_second", 400, 1, 1'000'000,
                "All frames per second per connection (burst twice that); beyond it the "
                "connection is closed with 4029."));
}

}  // namespace kiln::app
