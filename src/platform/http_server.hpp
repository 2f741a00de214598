// The HTTP/1.1 server every role shares. Plain interface; Beast lives in the .cpp only.
//
// Each connection is one coroutine on its own strand. Limits: header bytes, body bytes,
// the time to receive one request, the idle time between requests, and the number of
// open connections. Malformed requests get a 4xx with `Connection: close`.
#pragma once

#include "platform/http.hpp"

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
}  // namespace kiln

namespace kiln::http {

struct ServerOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::size_t max_header_bytes = 16 * 1024;
  std::size_t max_body_bytes = 1024 * 1024;
  std::chrono::milliseconds request_timeout{30'000};
  std::chrono::milliseconds idle_timeout{60'000};
  std::size_t max_connections = 10'000;
  bool access_log = true;
  std::vector<std::string> cors_origins;  // http::cors_preflight / add_cors
  // A streamed listener: no byte in either direction for this long cuts the connection
  // (request_timeout does not apply to a body of any size).
  std::chrono::milliseconds io_timeout{120'000};
};

class StreamHandler;  // platform/http_stream.hpp

// A request that asks to switch protocols (WebSocket) on a registered path is handed over
// with its connection; the HTTP server forgets the connection from then on.
struct Upgrade;  // platform/http_upgrade.hpp
using UpgradeHandler = std::function<void(std::unique_ptr<Upgrade>)>;

class Server {
 public:
  Server(Runtime& runtime, ServerOptions options, Router router, metrics::Registry& registry);
  // A listener whose every request is streamed to `handler` (which outlives the server).
  Server(Runtime& runtime, ServerOptions options, StreamHandler& handler,
         metrics::Registry& registry);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Registers an upgrade handler for `path` (before start()).
  void add_upgrade(std::string path, UpgradeHandler handler);
  // Binds and starts accepting. Throws std::runtime_error naming the address on failure.
  void start();
  // The bound port (useful when options.port was 0).
  [[nodiscard]] std::uint16_t port() const;
  [[nodiscard]] std::size_t open_connections() const;

  // Graceful drain: stop accepting, close idle keep-alive connections, let requests in
  // progress finish (their responses carry `Connection: close`). `on_empty` runs on the
  // loop once no connection remains (at once if none are open).
  void drain(std::function<void()> on_empty);
  // Cuts every remaining connection (the drain deadline passed).
  void close_all();

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace kiln::http
