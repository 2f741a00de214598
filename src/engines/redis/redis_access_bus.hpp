// Access changes across nodes over Redis pub/sub: the API node PUBLISHes each change on
// `<prefix>:access`, and every gateway node holds one SUBSCRIBE connection (in a Cluster,
// PUBLISH reaches subscribers on every node). A subscriber that reconnects subscribes
// again; a change published while it was away is missed here, and applied by the gateway's
// periodic read of the database (gateway.access_ttl_ms). publish() blocks until Redis
// answered (at most the command timeout): call it from a request thread, never from the
// event loop.
#pragma once

#include "clients/redis/client.hpp"
#include "collab/access.hpp"

#include <memory>
#include <mutex>

namespace kiln::engines {

class RedisAccessBus final : public collab::AccessBus {
 public:
  // `subscribe_at`: the node to hold the SUBSCRIBE connection on (any node of a Cluster).
  RedisAccessBus(Runtime& runtime, std::shared_ptr<redis::Client> client,
                 redis::ConnectionOptions subscribe_at, std::string prefix);
  ~RedisAccessBus() override;

  void publish(const collab::AccessChange& change) override;
  void subscribe(Handler handler) override;
  void close() override;

  // The wire form (JSON), exposed for tests.
  static std::string encode(const collab::AccessChange& change);
  static std::optional<collab::AccessChange> decode(std::string_view text);

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace kiln::engines
