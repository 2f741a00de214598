// The node's parts (inside `app/` only): what every role shares (`Node`), and the role
// modules that run on it. run_node (node.cpp) builds the Node, asks each module the
// node's role includes to configure itself, starts them, drains them on SIGTERM and
// stops them in order. A module owns what it made; what two modules share (the database,
// the Redis client, the access bus, the verifier) is the Node's.
#pragma once

#include "app/landing.hpp"
#include "auth/jwt.hpp"
#include "clients/redis/client.hpp"
#include "collab/access.hpp"
#include "jobs/queue.hpp"
#include "platform/config.hpp"
#include "platform/health.hpp"
#include "platform/http.hpp"
#include "platform/metrics.hpp"
#include "platform/runtime.hpp"
#include "platform/thread_pool.hpp"
#include "store/database.hpp"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace kiln {
namespace assets {
struct UploadOptions;
}
namespace collab {
class RoomEngine;
class PersistSource;
}  // namespace collab
namespace engines {
class MemoryRoomEngine;
class RedisRoomEngine;
}  // namespace engines
namespace journal {
class Journal;
}
namespace http {
class Server;
}
namespace sandbox {
class TerminalSessions;
}
}  // namespace kiln

namespace kiln::app {

// A start that cannot go on: the message for the operator (stderr) and the exit status
// (1: the environment, such as a database or directory; 2: the configuration).
struct StartupError : std::runtime_error {
  StartupError(int s, const std::string& message) : std::runtime_error(message), status(s) {}
  int status;
};

// Which parts of Kiln this process runs (`kiln serve` runs them all).
struct Roles {
  bool collab = false;     // the collaboration gateway: /v1/collab
  bool persist = false;    // the write-behind persister
  bool api = false;        // the REST API: /v1
  bool objects = false;    // the embedded object store: its own listener
  bool jobs = false;       // the job queue's worker and the outbox relay
  bool terminals = false;  // terminal sessions in sandboxes: /v1/term (and /v1/terminals)
};

// What every role of one process shares. Members are destroyed in reverse order: the
// event loop after everything that may still post to it, the registry last.
struct Node {
  Node(const config::Config& c, std::string r) : cfg(c), role(std::move(r)) {}
  const config::Config& cfg;
  std::string role;  // serve, gateway, api, worker, objects
  Roles roles;
  std::string id;  // the node id (logs, leases, CLIENT SETNAME)
  std::filesystem::path data_dir;
  metrics::Registry registry;
  Health health;
  // After the registry and health: destroying the loop destroys suspended coroutines,
  // which still update metrics on their way out.
  std::unique_ptr<Runtime> runtime;
  http::Router router;
  std::shared_ptr<Landing> landing = std::make_shared<Landing>();

  // Shared backends, made by run_node for the roles that use them (null otherwise).
  std::unique_ptr<store::Database> db;
  std::unique_ptr<ThreadPool> db_threads;  // database reads for rooms and sessions
  std::shared_ptr<redis::Client> redis;
  redis::ConnectionOptions redis_options;
  std::shared_ptr<std::atomic<bool>> redis_ok = std::make_shared<std::atomic<bool>>(false);
  std::unique_ptr<collab::AccessBus> access_bus;  // API -> gateways
  std::unique_ptr<auth::Verifier> verifier;       // user tokens (collab, api)
  std::unique_ptr<jobs::JobQueue> jobs;           // the job queue (jobs, api: its admin routes)
  std::vector<std::shared_ptr<void>> keep_alive;  // periodic tasks, alive while the loop runs
  std::uint16_t objects_port = 0;  // the embedded object store's bound port, 0 if none here
  sandbox::TerminalSessions* terminals = nullptr;  // the terminals module's: here or a host's
  std::string terminals_off;                       // why there are none (when there are none)

  // Runs `fn` every `period` on the event loop, first after `first`, until stop_periodic().
  void every(std::chrono::milliseconds first, std::chrono::milliseconds period,
             std::function<void()> fn);
  // Ends every periodic task: none runs again, not even one whose timer is due (run_node
  // calls it once the loop has returned, before the modules stop).
  void stop_periodic() { keep_alive.clear(); }
};

// A role module: built (configured) from the Node's config, then started, drained and
// stopped by run_node. Construction throws StartupError when it cannot run.
class Module {
 public:
  virtual ~Module() = default;
  // Before the HTTP server listens: timers, upgrade routes, background work.
  virtual void start(http::Server& server) { (void)server; }
  // On SIGTERM: stop taking new work and call `done` once what is open has finished (or
  // the window is over). False: nothing to drain (`done` is not called).
  virtual bool drain(std::chrono::milliseconds window, std::function<void()> done) {
    (void)window;
    (void)done;
    return false;
  }
  // The drain window is over (or a second signal): cut what is still open.
  virtual void close_all() {}
  // Once every connection is closed, off the event loop (it may block; the loop still
  // runs): the last work that must not be lost.
  virtual void finish() {}
  // After the loop stopped, in reverse module order: release threads and connections.
  // `drained`: false when a second signal stopped the node without a drain.
  virtual void stop(bool drained) { (void)drained; }
  // What the landing page and banner say about this module.
  virtual void describe(Landing& landing) { (void)landing; }
};

// Rooms: the room engine (memory, or Redis), stored snapshots as the starting point of
// rooms the engine does not hold, and the journal of durable acks on the memory engine.
// Runs for the collab and persist roles; the gateway and the persister use it.
class RoomsModule final : public Module {
 public:
  explicit RoomsModule(Node& node);
  ~RoomsModule() override;
  [[nodiscard]] collab::RoomEngine& engine() { return *engine_; }
  [[nodiscard]] collab::PersistSource* persist_source() { return persist_source_; }
  // Whether rooms live in this process (a final flush of them is possible without the loop).
  [[nodiscard]] bool in_memory() const { return memory_engine_ != nullptr; }
  void start(http::Server& server) override;
  void stop(bool drained) override;

 private:
  Node& node_;
  std::unique_ptr<collab::RoomEngine> engine_;
  collab::PersistSource* persist_source_ = nullptr;
  engines::RedisRoomEngine* redis_engine_ = nullptr;
  engines::MemoryRoomEngine* memory_engine_ = nullptr;
  std::unique_ptr<journal::Journal> journal_;  // after the engine: destroyed before it
};

std::unique_ptr<Module> make_collab(Node& node, RoomsModule& rooms);
// Terminal sessions (sandbox.*): before make_api, which serves /v1/terminals on them.
std::unique_ptr<Module> make_terminals(Node& node);
// Whether a user's token was revoked since it was minted (user, its `ver`): the database's
// answer to `done` (true: revoked) on one of node.db_threads; a database that cannot answer
// lets it on (logged). Empty without a database.
std::function<void(const std::string&, std::int64_t, std::function<void(bool)>)> revocation_check(
    Node& node);
std::unique_ptr<Module> make_persist(Node& node, RoomsModule& rooms);
// The jobs.* settings that the schema cannot check (the broker's URL and names); throws
// StartupError 2. Called before the database is opened.
void check_jobs_settings(const config::Config& cfg);
// The job queue the node's roles share, on its database (settings jobs.*).
std::unique_ptr<jobs::JobQueue> make_job_queue(Node& node);
std::unique_ptr<Module> make_jobs(Node& node);  // needs node.jobs; after make_objects
std::unique_ptr<Module> make_api(Node& node);   // after make_objects (it signs for its port)
std::unique_ptr<Module> make_objects(Node& node);

// Where uploads and derived files go and the upload limits (settings storage.*, uploads.*):
// the embedded store of this process when `embedded_port` is not 0. Throws
// std::invalid_argument on settings that contradict each other.
assets::UploadOptions upload_options(const config::Config& cfg, std::uint16_t embedded_port);

// "host:port" split at the last colon.
std::pair<std::string, std::uint16_t> split_endpoint(const std::string& ep);

}  // namespace kiln::app
