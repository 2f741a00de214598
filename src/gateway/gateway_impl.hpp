// Gateway internals shared by gateway.cpp (registry, drain, tick) and connection.cpp (a
// Session on the platform's WebSocket transport).
#pragma once

#include "collab/hub.hpp"
#include "gateway/gateway.hpp"
#include "gateway/session.hpp"
#include "platform/metrics.hpp"

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>
#include <vector>

namespace kiln::gateway {

// A live collaboration connection as the gateway's registry sees it.
class Connection {
 public:
  virtual ~Connection() = default;
  // Sends `reconnect` with `after_ms`, then closes with 1012.
  virtual void drain_close(std::int64_t after_ms) = 0;
  // Runs `fn` with the session on the connection's strand (not at all before the
  // WebSocket handshake completed or after the connection is gone).
  virtual void with_session(std::function<void(Session&)> fn) = 0;
  // The session, once the handshake completed (any thread); null before.
  [[nodiscard]] virtual std::shared_ptr<Session> session() = 0;
};

struct Gateway::Impl : std::enable_shared_from_this<Gateway::Impl> {
  Impl(Runtime& rt, Options opts, collab::RoomEngine& engine, const auth::Verifier& verifier,
       metrics::Registry& registry);

  Runtime& runtime;
  Options options;
  collab::RoomEngine& engine;
  collab::Hub hub;
  SessionContext ctx;
  std::unique_ptr<AccessCache> access;

  metrics::Gauge& sessions_gauge;
  metrics::Family<metrics::Counter>& closes;  // {code}
  metrics::Counter& frames_out;
  metrics::Family<metrics::Counter>& limit_trips;
  metrics::Registry& reg_ref;

  std::mutex mu;
  std::unordered_map<Connection*, std::weak_ptr<Connection>> conns;
  bool draining = false;
  std::function<void()> on_empty;

  // Registers a connection; false when the gateway is full or draining.
  bool add(Connection* c, std::weak_ptr<Connection> weak);
  void remove(Connection* c);
  // Every live connection (a copy, taken under the lock).
  std::vector<std::shared_ptr<Connection>> live();
  // Reads `project` again and checks every session in it (`conns`: those that were in it).
  void recheck(const std::string& project, std::vector<std::weak_ptr<Connection>> conns);
  // The periodic refresh: every project with a session on this node is read again.
  void refresh_all();
};

// The collaboration endpoint: a Session per WebSocket connection (connection.cpp).
http::UpgradeHandler collab_endpoint(const std::shared_ptr<Gateway::Impl>& gw);

}  // namespace kiln::gateway
