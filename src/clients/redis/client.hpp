// A Redis client over one server or a Redis Cluster, behind one interface: every command
// names the key it is routed by (all keys of one command share a hash slot, which Kiln
// ensures with `{room}` hash tags).
//
// Cluster: the slot map comes from CLUSTER SLOTS and is refreshed on MOVED, on
// CLUSTERDOWN/TRYAGAIN and on connection loss; ASK is followed for one command with
// ASKING. Retries are bounded (count and time) and end in an error reply.
#pragma once

#include "clients/redis/cluster.hpp"
#include "clients/redis/connection.hpp"

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::redis {

// A Lua script, run by SHA (EVALSHA) and loaded on NOSCRIPT (a restarted or new node).
struct Script {
  std::string body;
  std::string sha;  // SHA1 of body, lowercase hex
  explicit Script(std::string body);
};

class Client {
 public:
  using Callback = Connection::Callback;
  virtual ~Client() = default;

  static std::shared_ptr<Client> standalone(Runtime& runtime, ConnectionOptions options);
  static std::shared_ptr<Client> cluster(Runtime& runtime, std::vector<Endpoint> seeds,
                                         ConnectionOptions options);

  // The client must outlive the callbacks of the commands it was given (close() it, then
  // stop the event loop, then destroy it).
  virtual void command(std::string_view key, std::vector<std::string> args, Callback done) = 0;
  // EVALSHA script keys... args...; EVAL on NOSCRIPT. Keys must share a slot.
  void eval(const Script& script, std::vector<std::string> keys, std::vector<std::string> args,
            Callback done);
  // The connection that serves `key`'s slot (for subscriptions that must live on it).
  virtual Endpoint endpoint_for(std::string_view key) = 0;
  // Every primary (one server in standalone mode), for commands that must visit each node
  // (SCAN); and a command sent to one node as it is, without routing or redirects.
  virtual std::vector<Endpoint> primaries() = 0;
  virtual void command_at(const Endpoint& node, std::vector<std::string> args, Callback done) = 0;
  virtual void close() = 0;
};

}  // namespace kiln::redis
