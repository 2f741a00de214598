// The embedded object store's HTTP listener: S3's wire protocol over S3Api, bodies
// streamed in both directions in 64 KiB chunks (memory stays flat whatever the object
// size). Its own listener (objects.listen) because S3 clients need raw streaming that
// Kiln's JSON HTTP server does not do; the one Beast TU of this module.
#pragma once

#include "objects/s3_api.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace kiln {
class Runtime;
namespace metrics {
class Registry;
}
}  // namespace kiln

namespace kiln::objects {

struct ServerOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 7701;  // 0: any free port
  std::size_t max_header_bytes = 16 * 1024;
  std::chrono::milliseconds idle_timeout{60'000};
  std::chrono::milliseconds io_timeout{120'000};  // no byte in either direction for this long
  std::size_t max_connections = 10'000;
};

class Server {
 public:
  Server(Runtime& runtime, S3Api& api, ServerOptions options, metrics::Registry& registry);
  ~Server();
  void start();  // throws std::runtime_error when it cannot listen
  [[nodiscard]] std::uint16_t port() const;
  // Stops accepting; `on_empty` runs once the open connections are done.
  void drain(std::function<void()> on_empty);
  void close_all();

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace kiln::objects
