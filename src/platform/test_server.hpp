// For tests of the HTTP server, its streamed listener, the HTTP client and the WebSocket
// transport: a Server on a loopback port with its own event loop thread, and the raw
// socket helpers that talk to it byte by byte.
#pragma once

#include "platform/http_server.hpp"
#include "platform/http_stream.hpp"
#include "platform/metrics.hpp"
#include "platform/runtime.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <string_view>
#include <thread>

namespace kiln::http {

// Owns the loop, the registry and the server; stops them (every connection closed, the
// loop joined) when destroyed.
class LoopbackServer {
 public:
  LoopbackServer() = default;
  LoopbackServer(const LoopbackServer&) = delete;
  LoopbackServer& operator=(const LoopbackServer&) = delete;
  ~LoopbackServer() {
    if (!server) return;
    server->close_all();
    runtime.stop();
    thread_.join();
    runtime.run_ready_handlers();
  }
  static ServerOptions any_port() {
    ServerOptions o;
    o.port = 0;
    return o;
  }
  // Starts the server (made on `runtime`, with `registry`) and runs the loop on a thread.
  void start(std::unique_ptr<Server> s) {
    server = std::move(s);
    server->start();
    thread_ = std::thread([this] { runtime.run(); });
  }
  [[nodiscard]] std::uint16_t port() const { return server->port(); }

  metrics::Registry registry;
  Runtime runtime{1};
  std::unique_ptr<Server> server;

 private:
  std::thread thread_;
};

// A connected TCP socket to 127.0.0.1:port; every read on it times out after 20 s (a hang
// fails the test instead of holding it).
inline int connect_loopback(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  timeval tv{20, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

// Sends all of `s`, or stops when the peer closed (what it answered is still readable).
inline void send_all(int fd, std::string_view s) {
  while (!s.empty()) {
    const auto n = ::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
    if (n <= 0) return;
    s.remove_prefix(static_cast<std::size_t>(n));
  }
}

// `n` bytes of 'a'..'z' repeating, from offset `from` of that pattern: bodies whose order and
// completeness a test can check piece by piece.
inline std::string pattern(std::size_t n, std::size_t from = 0) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (from + i) % 26);
  return s;
}

// An answer body of the pattern, as long as the answer says.
class PatternSource final : public BodySource {
 public:
  std::size_t read(char* out, std::size_t max) override {
    for (std::size_t i = 0; i < max; ++i) out[i] = static_cast<char>('a' + sent_++ % 26);
    return max;
  }

 private:
  std::size_t sent_ = 0;
};

}  // namespace kiln::http
