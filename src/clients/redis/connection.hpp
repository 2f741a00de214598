// One pipelined connection to one Redis server. Plain interface; Asio lives in the .cpp.
//
// Commands are written as they come and their replies matched in order. The connection
// reconnects by itself with jittered exponential backoff; commands pending when it drops,
// or that cannot be sent while it is down, complete with an error reply
// ("ERR kiln: ..."), never silently. A reply that takes longer than the command timeout
// means the server or the network is stuck: the connection is dropped and rebuilt.
#pragma once

#include "clients/redis/cluster.hpp"
#include "clients/redis/reply.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace kiln {
class Runtime;
}

namespace kiln::redis {

struct ConnectionOptions {
  Endpoint endpoint;
  std::chrono::milliseconds connect_timeout{2'000};
  std::chrono::milliseconds command_timeout{5'000};
  std::chrono::milliseconds backoff_min{50};
  std::chrono::milliseconds backoff_max{2'000};
  std::size_t max_pending = 100'000;  // beyond it commands fail at once
  // Sent as CLIENT SETNAME first on every (re)connect when not empty, so that CLIENT LIST
  // on the server says which Kiln node holds a connection. Letters, digits, '-', '_', '.'.
  std::string client_name;
};

class Connection {
 public:
  using Callback = std::function<void(Reply)>;
  virtual ~Connection() = default;

  static std::shared_ptr<Connection> create(Runtime& runtime, ConnectionOptions options);

  // Sends one command; `done` runs once, on the event loop, with the reply or an error.
  virtual void command(std::vector<std::string> args, Callback done) = 0;
  // For subscriber connections: pub/sub messages ("message", "smessage" arrays).
  virtual void on_push(std::function<void(const Reply&)> handler) = 0;
  // Called with true after each (re)connect, false after each loss.
  virtual void on_state(std::function<void(bool up)> handler) = 0;
  [[nodiscard]] virtual bool up() const = 0;
  [[nodiscard]] virtual const Endpoint& endpoint() const = 0;
  // Stops reconnecting and fails what is pending.
  virtual void close() = 0;
};

}  // namespace kiln::redis
