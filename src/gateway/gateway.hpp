// The collaboration gateway: WebSocket sessions speaking protocol kiln.v1 on top of a
// RoomEngine. Plain interface; Beast lives in gateway.cpp and session.cpp only.
#pragma once

#include "collab/access.hpp"
#include "collab/room_engine.hpp"
#include "gateway/access_cache.hpp"
#include "platform/http_server.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace kiln {
class Runtime;
namespace metrics {
class Registry;
}
namespace auth {
class Verifier;
}
}  // namespace kiln

namespace kiln::gateway {

struct Options {
  std::string node = "node";
  std::chrono::milliseconds hello_timeout{10'000};
  std::chrono::milliseconds heartbeat{15'000};  // pings; a peer silent for 2x is dropped
  std::chrono::milliseconds tick{50};           // ephemeral coalescing period
  std::size_t max_frame_bytes = 256 * 1024;
  std::size_t max_ops_per_batch = 1000;
  std::size_t max_rooms_per_connection = 16;
  std::size_t max_sessions = 20'000;
  std::size_t max_queue_bytes = 4 * 1024 * 1024;  // outgoing, per connection
  double ops_per_second = 20;                     // durable batches; beyond: nack rate_limited
  double eph_per_second = 120;                    // ephemeral updates; beyond: dropped
  double messages_per_second = 400;               // all frames; beyond: close 4029
  // Asks (off the event loop) whether tokens of `user` with version `ver` were revoked;
  // answers from any thread. Null: no check. A session whose token turns out revoked is
  // closed with 4003 right after its welcome.
  std::function<void(const std::string& user, std::int64_t ver, std::function<void(bool)> done)>
      revocation_check;
  // Reads a project's live access (members, scenes) from the database, off the event loop.
  // Joins are decided from it (through an AccessCache); null: every join is refused.
  AccessCache::Loader access_loader;
  AccessCacheOptions access;  // ttl: also how often projects in use are read again
};

class Gateway {
 public:
  Gateway(Runtime& runtime, Options options, collab::RoomEngine& engine,
          const auth::Verifier& verifier, metrics::Registry& registry);
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // The handler to register on the HTTP server for `/v1/collab`.
  http::UpgradeHandler upgrade_handler();
  // Starts the ephemeral tick and the periodic access refresh.
  void start();
  // Tells every client to reconnect elsewhere (jittered over `window`) and closes with
  // 1012. `on_empty` runs once no session remains.
  void drain(std::chrono::milliseconds window, std::function<void()> on_empty);
  [[nodiscard]] std::size_t sessions() const;
  // Applies an access change (from the API, through the access bus) to every session.
  void apply_access(const collab::AccessChange& change);

  struct Impl;

 private:
  void start_access_refresh();
  std::shared_ptr<Impl> impl_;
};

}  // namespace kiln::gateway
