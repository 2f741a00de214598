// Gateway internals shared by gateway.cpp (registry, drain, tick) and ws_connection.cpp
// (the WebSocket transport, the only file here that includes Beast's websocket).
#pragma once

#include "collab/hub.hpp"
#include "gateway/gateway.hpp"
#include "gateway/session.hpp"
#include "platform/metrics.hpp"

#include <atomic>
#include <mutex>
#include <unordered_map>

namespace kiln::gateway {

// A live WebSocket connection as the gateway's registry sees it.
class Connection {
 public:
  virtual ~Connection() = default;
  // Sends `reconnect` with `after_ms`, then closes with 1012.
  virtual void drain_close(std::int64_t after_ms) = 0;
  // Hands an access change to the session, on the connection's strand.
  virtual void apply_access(const collab::AccessChange& change) = 0;
};

struct Gateway::Impl : std::enable_shared_from_this<Gateway::Impl> {
  Impl(Runtime& rt, Options opts, collab::RoomEngine& engine, const auth::Verifier& verifier,
       metrics::Registry& registry);

  Runtime& runtime;
  Options options;
  collab::RoomEngine& engine;
  collab::Hub hub;
  SessionContext ctx;

  metrics::Gauge& sessions_gauge;
  metrics::Family<metrics::Counter>& closes;  // {code}
  metrics::Counter& frames_out;
  metrics::Family<metrics::Counter>& limit_trips;

  std::mutex mu;
  std::unordered_map<Connection*, std::weak_ptr<Connection>> conns;
  bool draining = false;
  std::function<void()> on_empty;

  // Registers a connection; false when the gateway is full or draining.
  bool add(Connection* c, std::weak_ptr<Connection> weak);
  void remove(Connection* c);
};

// Takes over an upgraded HTTP connection and runs its WebSocket session.
void start_connection(std::shared_ptr<Gateway::Impl> gw, std::unique_ptr<http::Upgrade> up);

}  // namespace kiln::gateway
