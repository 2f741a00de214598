// The WebSocket transport (websocket.hpp) with a session that is not the collaboration one:
// an echo handler on loopback, spoken to with hand-made RFC 6455 frames (masked, as a client
// must). The handshake and its refusals, messages both ways, a message over the limit closed
// with the endpoint's code, binary messages flagged, the per-connection timer, and on_closed
// called exactly once; RFC 6455's rules on the server's own framing (fragments, control
// frames, masking, UTF-8, the close handshake, pings to a silent peer) and a burst written
// through a full socket buffer in order.
#include "platform/websocket.hpp"
#include "platform/test_server.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace kiln::http {
namespace {

// Echoes text upper-cased, answers binary with "binary N", closes with 4321 on "timer" after
// 50 ms, throws on "throw", closes with a long reason on "long-close" and with the code in
// the message on "close-N"; refuses the upgrade when the path is /full.
// Counts on_closed calls; a test waits for a count (bounded, woken by the handler).
struct ClosedCount {
  std::mutex mu;
  std::condition_variable cv;
  int n = 0;
  void add() {
    std::lock_guard lock(mu);
    ++n;
    cv.notify_all();
  }
  bool wait_for(int want) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(20), [&] { return n >= want; });
  }
  int now() {
    std::lock_guard lock(mu);
    return n;
  }
};

class Echo final : public WebSocketHandler {
 public:
  explicit Echo(ClosedCount& closed) : closed_(closed) {}
  std::optional<WebSocketRefusal> admit(const Request& head) override {
    if (head.path == "/full") return WebSocketRefusal{503, "full for the test"};
    return std::nullopt;
  }
  void on_open(std::shared_ptr<WebSocket> socket) override { socket_ = std::move(socket); }
  void on_message(std::string_view data, bool binary) override {
    if (binary) {
      socket_->send(std::make_shared<const std::string>("binary " + std::to_string(data.size())));
    } else if (data == "throw") {
      throw std::runtime_error("the handler failed");
    } else if (data == "long-close") {
      std::string reason;
      for (int i = 0; i < 100; ++i) reason += "\xc3\xa9";  // U+00E9, two bytes each
      socket_->close(4000, reason);
    } else if (data.starts_with("close-")) {
      socket_->close(static_cast<std::uint16_t>(std::stoi(std::string(data.substr(6)))), "x");
    } else if (data == "timer") {
      auto s = socket_;
      socket_->after(std::chrono::milliseconds(50), [s] { s->close(4321, "timer fired"); });
    } else {
      std::string up(data);
      for (auto& c : up) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      socket_->send(std::make_shared<const std::string>(up));
    }
  }
  void on_closed() override {
    socket_.reset();
    closed_.add();
  }

 private:
  ClosedCount& closed_;
  std::shared_ptr<WebSocket> socket_;
};

// A handler whose on_open throws (after keeping the socket, as a session does).
class ThrowsOnOpen final : public WebSocketHandler {
 public:
  explicit ThrowsOnOpen(ClosedCount& closed) : closed_(closed) {}
  std::optional<WebSocketRefusal> admit(const Request&) override { return std::nullopt; }
  void on_open(std::shared_ptr<WebSocket> socket) override {
    socket_ = std::move(socket);
    throw std::runtime_error("on_open failed");
  }
  void on_message(std::string_view, bool) override {}
  void on_closed() override {
    socket_.reset();
    closed_.add();
  }

 private:
  ClosedCount& closed_;
  std::shared_ptr<WebSocket> socket_;
};

class WebSocketTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = std::make_unique<Server>(loop_.runtime, LoopbackServer::any_port(), Router{},
                                           loop_.registry);
    WebSocketOptions o;
    o.subprotocol = "echo.v1";
    o.max_message_bytes = 1000;
    o.too_large_code = 4009;
    o.metrics.limit_trips = &loop_.registry.counter("kiln_test_trips_total", "trips", {"limit"});
    for (const char* path : {"/ws", "/full"})
      server->add_upgrade(
          path, websocket_endpoint(o, [this] { return std::make_shared<Echo>(closed_); }));
    server->add_upgrade("/bad-open", websocket_endpoint(o, [this] {
                          return std::make_shared<ThrowsOnOpen>(closed_);
                        }));
    o.idle_timeout = std::chrono::milliseconds(400);  // a ping after 200 ms of silence
    server->add_upgrade("/idle",
                        websocket_endpoint(o, [this] { return std::make_shared<Echo>(closed_); }));
    loop_.start(std::move(server));
  }

  // Connects and sends the upgrade request; returns the socket and the response head. With
  // `rcvbuf`, the socket's receive buffer is that small (set before connecting, so the
  // window is too): the server's writes to it are short.
  std::pair<int, std::string> upgrade(const std::string& path,
                                      const std::string& protocol = "echo.v1", int rcvbuf = 0) {
    int fd = -1;
    if (rcvbuf > 0) {
      fd = ::socket(AF_INET, SOCK_STREAM, 0);
      EXPECT_EQ(::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(loop_.port());
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    } else {
      fd = connect_loopback(loop_.port());
    }
    std::string req =
        "GET " + path +
        " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    if (!protocol.empty()) req += "Sec-WebSocket-Protocol: " + protocol + "\r\n";
    req += "\r\n";
    send_all(fd, req);
    std::string head;
    char c;
    while (head.find("\r\n\r\n") == std::string::npos && ::recv(fd, &c, 1, 0) == 1) head += c;
    return {fd, head};
  }
  // One client frame: FIN (unless `fin` is false), `opcode`, masked (RFC 6455 section 5.3;
  // `masked` false breaks that rule).
  static void send_frame(int fd, std::string_view payload, int opcode = 1, bool fin = true,
                         bool masked = true) {
    send_all(fd, frame(payload, opcode, fin, masked));
  }
  static std::string frame(std::string_view payload, int opcode = 1, bool fin = true,
                           bool masked = true) {
    std::string f;
    f += static_cast<char>((fin ? 0x80 : 0) | opcode);
    const char m = masked ? static_cast<char>(0x80) : 0;
    if (payload.size() < 126) {
      f += static_cast<char>(m | payload.size());
    } else {
      f += static_cast<char>(m | 126);
      f += static_cast<char>(payload.size() >> 8);
      f += static_cast<char>(payload.size() & 0xff);
    }
    const char mask[4] = {0x12, 0x34, 0x56, 0x78};
    if (!masked) return f.append(payload);
    f.append(mask, 4);
    for (std::size_t i = 0; i < payload.size(); ++i)
      f += static_cast<char>(payload[i] ^ mask[i % 4]);
    return f;
  }
  static bool read_exact(int fd, char* out, std::size_t n) {
    while (n > 0) {
      const auto got = ::recv(fd, out, n, 0);
      if (got <= 0) return false;
      out += got;
      n -= static_cast<std::size_t>(got);
    }
    return true;
  }
  // One server frame (unmasked, payload < 64 KiB): (opcode, payload); opcode -1 when closed.
  static std::pair<int, std::string> read_frame(int fd) {
    unsigned char h[2];
    if (!read_exact(fd, reinterpret_cast<char*>(h), 2)) return {-1, {}};
    std::size_t len = h[1] & 0x7f;
    if (len == 126) {
      unsigned char l[2];
      if (!read_exact(fd, reinterpret_cast<char*>(l), 2)) return {-1, {}};
      len = (static_cast<std::size_t>(l[0]) << 8) | l[1];
    }
    std::string payload(len, '\0');
    if (!read_exact(fd, payload.data(), len)) return {-1, {}};
    return {h[0] & 0x0f, payload};
  }
  // Reads the server's close frame (its code `code`), then the end of the connection.
  static void expect_close(int fd, int code) {
    auto [op, payload] = read_frame(fd);
    EXPECT_EQ(op, 8) << payload;
    EXPECT_EQ(close_code(payload), code) << payload;
    EXPECT_EQ(read_frame(fd).first, -1) << "the connection ends";
  }
  static int close_code(const std::string& payload) {
    return payload.size() < 2 ? 0
                              : (static_cast<unsigned char>(payload[0]) << 8) |
                                    static_cast<unsigned char>(payload[1]);
  }

  ClosedCount closed_;
  LoopbackServer loop_;  // after closed_: stopped before it is destroyed
};

TEST_F(WebSocketTest, MessagesGoBothWaysThroughTheSession) {
  auto [fd, head] = upgrade("/ws");
  ASSERT_TRUE(head.starts_with("HTTP/1.1 101")) << head;
  EXPECT_NE(head.find("Sec-WebSocket-Protocol: echo.v1"), std::string::npos) << head;
  // RFC 6455 section 1.3's example key and its accept value.
  EXPECT_NE(head.find("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), std::string::npos) << head;
  send_frame(fd, "hello");
  send_frame(fd, "again");
  EXPECT_EQ(read_frame(fd), std::make_pair(1, std::string("HELLO")));
  EXPECT_EQ(read_frame(fd), std::make_pair(1, std::string("AGAIN")));
  send_frame(fd, std::string("\x01\x02\x03", 3), 2);
  EXPECT_EQ(read_frame(fd), std::make_pair(1, std::string("binary 3")));
  ::close(fd);  // the peer goes away without a close frame: on_closed still runs, once
  EXPECT_TRUE(closed_.wait_for(1));
  EXPECT_EQ(closed_.now(), 1);
}

TEST_F(WebSocketTest, AMessageOverTheLimitClosesWithTheEndpointsCode) {
  auto [fd, head] = upgrade("/ws");
  ASSERT_TRUE(head.starts_with("HTTP/1.1 101")) << head;
  send_frame(fd, std::string(1001, 'x'));
  send_frame(fd, "not answered: a close was asked for");
  auto [op, payload] = read_frame(fd);
  EXPECT_EQ(op, 8);  // close
  EXPECT_EQ(close_code(payload), 4009);
  EXPECT_NE(payload.find("larger than 1000 bytes"), std::string::npos) << payload;
  EXPECT_NE(loop_.registry.render().find("kiln_test_trips_total{limit=\"frame_bytes\"} 1"),
            std::string::npos);
  send_frame(fd, std::string(payload.substr(0, 2)), 8);  // the client's close: the handshake ends
  EXPECT_EQ(read_frame(fd).first, -1);                   // the server closed the connection
  ::close(fd);
  EXPECT_TRUE(closed_.wait_for(1));
  EXPECT_EQ(closed_.now(), 1);
}

TEST_F(WebSocketTest, TheConnectionsTimerRunsOnItsStrand) {
  auto [fd, head] = upgrade("/ws");
  ASSERT_TRUE(head.starts_with("HTTP/1.1 101")) << head;
  send_frame(fd, "timer");
  auto [op, payload] = read_frame(fd);
  EXPECT_EQ(op, 8);
  EXPECT_EQ(close_code(payload), 4321);
  ::close(fd);
  EXPECT_TRUE(closed_.wait_for(1));
}

// RFC 6455 5.4 and 5.5: a message in fragments is one message, and a control frame may
// come between them (a ping: answered with a pong of the same data, first).
TEST_F(WebSocketTest, AFragmentedMessageIsOneAndAPingBetweenItsFramesIsAnswered) {
  auto [fd, head] = upgrade("/ws");
  ASSERT_TRUE(head.starts_with("HTTP/1.1 101")) << head;
  // Byte by byte, so every frame is parsed across reads too.
  const auto bytes = frame("hel", 1, false) + frame("p-1", 9) + frame("l", 0, false) +
                     frame("o", 0, true) + frame("next");
  for (char c : bytes) send_all(fd, std::string(1, c));
  EXPECT_EQ(read_frame(fd), std::make_pair(10, std::string("p-1")));  // pong
  EXPECT_EQ(read_frame(fd), std::make_pair(1, std::string("HELLO")));
  EXPECT_EQ(read_frame(fd), std::make_pair(1, std::string("NEXT")));
  ::close(fd);
  EXPECT_TRUE(closed_.wait_for(1));
}

// What a client must not send ends the connection with RFC 6455's code, and the handler
// never sees it.
TEST_F(WebSocketTest, FramesAgainstTheRfcCloseTheConnectionWithItsCode) {
  const std::vector<std::pair<std::string, int>> cases = {
      {frame("plain", 1, true, /*masked=*/false), 1002},     // 5.1: clients mask
      {frame("\xc3\x28 not UTF-8"), 1007},                   // 8.1: text is UTF-8
      {frame("\xed\xa0\x80"), 1007},                         // a surrogate (RFC 3629)
      {frame("orphan", 0), 1002},                            // 5.4: a continuation of nothing
      {frame("a", 1, false) + frame("b"), 1002},             // a new message inside one
      {frame("x", 9, false), 1002},                          // 5.5: control frames are whole
      {frame("x", 3), 1002},                                 // a reserved opcode
      {frame("\x03", 8), 1002},                              // a close frame of one byte
      {frame(std::string("\x03\xed", 2), 8), 1002},          // 7.4.1: 1005 is never sent
      {frame(std::string("\x03\xee", 2), 8), 1002},          // nor 1006
      {frame(std::string("\x03\xe7", 2), 8), 1002},          // 999: not a code
      {frame(std::string("\x03\xe8\xc3\x28", 4), 8), 1007},  // a reason that is not UTF-8
      // 5.2: a 64-bit length with its top bit set (the mask and a byte follow)
      {std::string("\x81\xff\x80\x00\x00\x00\x00\x00\x00\x05\x12\x34\x56\x78x", 15), 1002},
      // a continuation whose length wraps the message's size past 2^64: top bit set too
      {frame("abc", 1, false) +
           std::string("\x80\xff\xff\xff\xff\xff\xff\xff\xff\xfd\x12\x34\x56\x78", 14),
       1002},
  };
  int n = 0;
  for (const auto& [bytes, code] : cases) {
    auto [fd, head] = upgrade("/ws");
    ASSERT_TRUE(head.starts_with("HTTP/1.1 101")) << head;
    send_all(fd, bytes);
    auto [op, payload] = read_frame(fd);
    EXPECT_EQ(op, 8) << "case " << n << ": " << payload;
    EXPECT_EQ(close_code(payload), code) << "case " << n;
    EXPECT_EQ(read_frame(fd).first, -1) << "case " << n << ": the connection ends";
    ::close(fd);
    EXPECT_TRUE(closed_.wait_for(++n));
  }
}

// RFC 6455 5.5.1: the peer's close is answered with its code, then the connection ends.
TEST_F(WebSocketTest, APeersCloseIsAnsweredWithItsCode) {
  auto [fd, head] = upgrade("/ws");
  ASSERT_TRUE(head.starts_with("HTTP/1.1 101")) << head;
  send_frame(fd, std::string("\x0f\xa0", 2) + "bye", 8);  // 4000
  expect_close(fd, 4000);
  ::close(fd);
  EXPECT_TRUE(closed_.wait_for(1));
}

// A message whose next frame declares more than the limit (here 2^63 - 1 bytes, the most a
// length may say) is closed with the endpoint's code as soon as the header arrives: nothing
// is allocated for what it declares, and the handler sees none of it.
TEST_F(WebSocketTest, AFrameDeclaringMoreThanTheLimitIsClosedBeforeItsPayload) {
  auto [fd, head] = upgrade("/ws");
  ASSERT_TRUE(head.starts_with("HTTP/1.1 101")) << head;
  send_all(fd, frame("abc", 1, false) +
                   std::string("\x80\xff\x7f\xff\xff\xff\xff\xff\xff\xff\x12\x34\x56\x78", 14) +
                   std::string(10000, 'z'));
  auto [op, payload] = read_frame(fd);
  EXPECT_EQ(op, 8);
  EXPECT_EQ(close_code(payload), 4009) << payload;
  ::close(fd);
  EXPECT_TRUE(closed_.wait_for(1));
  EXPECT_EQ(closed_.now(), 1);
}

// A peer that pings without reading gets the newest ping's pong, not one per ping (RFC 6455
// 5.5.3 allows it): pongs cannot pile up in the server's memory behind a full socket.
TEST_F(WebSocketTest, APingFloodFromAPeerThatDoesNotReadKeepsOnePong) {
  auto [small, head] = upgrade("/ws", "echo.v1", /*rcvbuf=*/4096);
  ASSERT_TRUE(head.starts_with("HTTP/1.1 101")) << head;
  // 20,000 pings of 125 bytes: 2.5 MB of pongs if each were kept.
  constexpr int kPings = 20000;
  auto ping = [](int i) {
    auto p = std::to_string(i);
    return p + std::string(125 - p.size(), '.');
  };
  std::string pings;
  for (int i = 0; i < kPings; ++i) pings += frame(ping(i), 9);
  send_all(small, pings);
  send_frame(small, "end");
  int pongs = 0;
  std::string last;
  for (;;) {
    auto [op, payload] = read_frame(small);
    ASSERT_NE(op, -1) << "the connection ended after " << pongs << " pongs";
    if (op == 1) {
      EXPECT_EQ(payload, "END");
      break;
    }
    ASSERT_EQ(op, 10);
    ++pongs;
    last = payload;
  }
  EXPECT_LT(pongs, kPings / 2) << "a pong for every ping was kept";
  EXPECT_EQ(last, ping(kPings - 1)) << "the last pong answers the last ping";
  ::close(small);
  EXPECT_TRUE(closed_.wait_for(1));
}

// A handler that throws ends its connection like any other end: a close frame with 1011
// (RFC 6455 7.4.1: an unexpected condition), on_closed once, the server serving on.
TEST_F(WebSocketTest, AHandlerThatThrowsClosesItsConnectionWith1011) {
  auto [fd, head] = upgrade("/ws");
  ASSERT_TRUE(head.starts_with("HTTP/1.1 101")) << head;
  send_frame(fd, "throw");
  expect_close(fd, 1011);
  ::close(fd);
  EXPECT_TRUE(closed_.wait_for(1));
  EXPECT_EQ(closed_.now(), 1);
  auto [fd2, head2] = upgrade("/ws");
  ASSERT_TRUE(head2.starts_with("HTTP/1.1 101")) << head2;
  send_frame(fd2, "still");
  EXPECT_EQ(read_frame(fd2), std::make_pair(1, std::string("STILL")));
  ::close(fd2);
  EXPECT_TRUE(closed_.wait_for(2));
}

// A handler whose on_open throws (having kept the socket: a cycle) is closed with 1011 and
// let go: on_closed runs, nothing leaks, the connection ends.
TEST_F(WebSocketTest, AHandlerWhoseOpenThrowsIsClosedAndLetGo) {
  auto [fd, head] = upgrade("/bad-open");
  ASSERT_TRUE(head.starts_with("HTTP/1.1 101")) << head;
  expect_close(fd, 1011);
  ::close(fd);
  EXPECT_TRUE(closed_.wait_for(1));
}

// A client that goes on sending after a frame that breaks the protocol still gets the close
// frame: the server shuts its side and drops what comes, rather than closing on unread bytes
// (which sends a reset that can overtake the close frame).
TEST_F(WebSocketTest, TheCloseFrameReachesAPeerThatIsStillSending) {
  auto [fd, head] = upgrade("/ws");
  ASSERT_TRUE(head.starts_with("HTTP/1.1 101")) << head;
  std::thread writer([fd = fd] {
    send_all(fd, frame("x", 3));  // a reserved opcode: 1002
    const auto more = frame(std::string(60000, 'm'));
    for (int i = 0; i < 20; ++i) {
      if (::send(fd, more.data(), more.size(), MSG_NOSIGNAL) <= 0) break;
    }
  });
  expect_close(fd, 1002);
  writer.join();
  ::close(fd);
  EXPECT_TRUE(closed_.wait_for(1));
}

// What a handler closes with goes on the wire as RFC 6455 allows: a reason cut to 123 bytes
// at a character's boundary (still UTF-8), 1005 as a close frame without a code, a code an
// endpoint may not send (1006, 1015) as 1000.
TEST_F(WebSocketTest, AHandlersCloseIsPutOnTheWireAsTheRfcAllows) {
  {
    auto [fd, head] = upgrade("/ws");
    ASSERT_TRUE(head.starts_with("HTTP/1.1 101")) << head;
    send_frame(fd, "long-close");
    auto [op, payload] = read_frame(fd);
    EXPECT_EQ(op, 8);
    EXPECT_EQ(close_code(payload), 4000);
    std::string whole;
    for (int i = 0; i < 61; ++i) whole += "\xc3\xa9";
    EXPECT_EQ(payload.substr(2), whole) << "122 bytes: the 123rd would split a character";
    ::close(fd);
  }
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"close-1005", ""},
      {"close-1006", std::string("\x03\xe8x", 3)},
      {"close-1015", std::string("\x03\xe8x", 3)},
      {"close-4001", std::string("\x0f\xa1x", 3)},
  };
  int n = 1;
  for (const auto& [ask, wire] : cases) {
    EXPECT_TRUE(closed_.wait_for(n++));
    auto [fd, head] = upgrade("/ws");
    ASSERT_TRUE(head.starts_with("HTTP/1.1 101")) << head;
    send_frame(fd, ask);
    auto [op, payload] = read_frame(fd);
    EXPECT_EQ(op, 8) << ask;
    EXPECT_EQ(payload, wire) << ask;
    ::close(fd);
  }
  EXPECT_TRUE(closed_.wait_for(n));
}

// A silent peer is pinged after half the idle limit; one that answers stays, one that
// does not is dropped at the limit (no close frame: it is not listening).
TEST_F(WebSocketTest, ASilentPeerIsPingedThenDropped) {
  auto [fd, head] = upgrade("/idle");
  ASSERT_TRUE(head.starts_with("HTTP/1.1 101")) << head;
  auto [op, payload] = read_frame(fd);
  EXPECT_EQ(op, 9) << "a ping";
  send_frame(fd, payload, 10);  // the pong
  EXPECT_EQ(read_frame(fd).first, 9) << "still there: pinged again";
  // No answer: dropped at the limit (another ping may come first, the timer's tick being
  // half the limit).
  int op_after = 9;
  for (int pings = 0; op_after == 9 && pings < 3; ++pings) op_after = read_frame(fd).first;
  EXPECT_EQ(op_after, -1) << "dropped";
  ::close(fd);
  EXPECT_TRUE(closed_.wait_for(1));
}

// A burst through a 4 KiB receive buffer (the server's writes are short, its socket often
// full): every message arrives, whole and in order.
TEST_F(WebSocketTest, ABurstThroughAFullSocketBufferArrivesInOrder) {
  auto [small, head] = upgrade("/ws", "echo.v1", /*rcvbuf=*/4096);
  ASSERT_TRUE(head.starts_with("HTTP/1.1 101")) << head;
  constexpr int kMessages = 2000;
  std::thread writer([&] {
    for (int i = 0; i < kMessages; ++i)
      send_frame(small, std::to_string(i) + std::string(900, 'q'));
  });
  for (int i = 0; i < kMessages; ++i) {
    auto [op, payload] = read_frame(small);
    ASSERT_EQ(op, 1) << "message " << i;
    ASSERT_EQ(payload, std::to_string(i) + std::string(900, 'Q')) << "message " << i;
  }
  writer.join();
  ::close(small);
  EXPECT_TRUE(closed_.wait_for(1));
}

TEST_F(WebSocketTest, RefusalsComeBeforeTheHandshakeAsProblems) {
  auto [fd, head] = upgrade("/ws", "");
  EXPECT_TRUE(head.starts_with("HTTP/1.1 400")) << head;
  std::string rest(4096, '\0');
  const auto n = ::recv(fd, rest.data(), rest.size(), 0);
  EXPECT_NE(rest.substr(0, n > 0 ? n : 0).find("subprotocol echo.v1 is required"),
            std::string::npos);
  ::close(fd);
  auto [fd2, head2] = upgrade("/full");
  EXPECT_TRUE(head2.starts_with("HTTP/1.1 503")) << head2;
  EXPECT_NE(head2.find("application/problem+json"), std::string::npos) << head2;
  ::close(fd2);
  EXPECT_EQ(closed_.now(), 0);  // never admitted: nothing to close
}

// A node whose loop stops while a connection is still open (a drain that ran out of time)
// destroys that connection's coroutine unfinished: the handler must go with it. It holds the
// WebSocket (as a handler may until on_closed), which holds the handler: left alone that
// cycle outlives the loop (LeakSanitizer found it in e2e_failover's rolling restart).
TEST(WebSocketLifetime, AHandlerDoesNotOutliveTheLoopOfAnUnfinishedConnection) {
  ClosedCount closed;
  std::weak_ptr<Echo> made;
  std::mutex mu;
  std::condition_variable cv;
  bool opened = false;
  class Opening final : public WebSocketHandler {
   public:
    Opening(std::shared_ptr<Echo> echo, std::function<void()> opened)
        : echo_(std::move(echo)), opened_(std::move(opened)) {}
    std::optional<WebSocketRefusal> admit(const Request& h) override { return echo_->admit(h); }
    void on_open(std::shared_ptr<WebSocket> s) override {
      echo_->on_open(std::move(s));
      opened_();
    }
    void on_message(std::string_view d, bool b) override { echo_->on_message(d, b); }
    void on_closed() override { echo_->on_closed(); }

   private:
    std::shared_ptr<Echo> echo_;
    std::function<void()> opened_;
  };
  auto runtime = std::make_unique<Runtime>(1);
  metrics::Registry registry;
  auto server = std::make_unique<Server>(*runtime, LoopbackServer::any_port(), Router{}, registry);
  WebSocketOptions o;
  o.subprotocol = "echo.v1";
  server->add_upgrade("/ws", websocket_endpoint(o, [&] {
                        auto echo = std::make_shared<Echo>(closed);
                        made = echo;
                        return std::make_shared<Opening>(echo, [&] {
                          std::lock_guard lock(mu);
                          opened = true;
                          cv.notify_all();
                        });
                      }));
  server->start();
  std::thread loop([&] { runtime->run(); });
  const int fd = connect_loopback(server->port());
  send_all(fd,
           "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
           "Sec-WebSocket-Protocol: echo.v1\r\n\r\n");
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(20), [&] { return opened; }));
  }
  runtime->stop();  // the connection is open, its read pending
  loop.join();
  server.reset();
  runtime.reset();  // destroys what never ran, the connection's coroutine among it
  EXPECT_TRUE(made.expired()) << "the handler outlived the loop (a shared_ptr cycle)";
  ::close(fd);
}

// The client side (websocket_connect) against the same echo endpoint: what a test and the
// gateway's relay to a sandbox host see.
class Recorder final : public WebSocketHandler {
 public:
  std::optional<WebSocketRefusal> admit(const Request&) override { return std::nullopt; }
  void on_open(std::shared_ptr<WebSocket> socket) override {
    std::lock_guard lock(mu_);
    socket_ = std::move(socket);
    opened_ = true;
    cv_.notify_all();
  }
  void on_message(std::string_view data, bool) override {
    std::lock_guard lock(mu_);
    messages_.emplace_back(data);
    cv_.notify_all();
  }
  void on_peer_closed(std::uint16_t code, std::string_view reason) override {
    std::lock_guard lock(mu_);
    code_ = code;
    reason_ = std::string(reason);
  }
  void on_closed() override {
    std::lock_guard lock(mu_);
    socket_.reset();
    closed_ = true;
    cv_.notify_all();
  }
  bool wait(const std::function<bool()>& done) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(20), done);
  }
  void send(std::string text) {
    std::lock_guard lock(mu_);
    socket_->send(std::make_shared<const std::string>(std::move(text)));
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<WebSocket> socket_;
  bool opened_ = false, closed_ = false;
  std::vector<std::string> messages_;
  std::uint16_t code_ = 0;
  std::string reason_;
};

WebSocketTarget target_of(std::uint16_t port, std::string path) {
  WebSocketTarget t;
  t.host = "127.0.0.1";
  t.port = port;
  t.path = std::move(path);
  return t;
}

WebSocketOptions client_options() {
  WebSocketOptions o;
  o.subprotocol = "echo.v1";
  return o;
}

TEST_F(WebSocketTest, AClientSeesMessagesAndThePeersCloseCode) {
  auto r = std::make_shared<Recorder>();
  websocket_connect(loop_.runtime, client_options(), target_of(loop_.port(), "/ws"), r);
  ASSERT_TRUE(r->wait([&] { return r->opened_ || r->closed_; }));
  ASSERT_TRUE(r->opened_) << r->reason_;
  r->send("first");
  r->send("second");
  ASSERT_TRUE(r->wait([&] { return r->messages_.size() == 2; }));
  EXPECT_EQ(r->messages_, (std::vector<std::string>{"FIRST", "SECOND"}));
  r->send("timer");  // the server closes with 4321
  ASSERT_TRUE(r->wait([&] { return r->closed_; }));
  EXPECT_EQ(r->code_, 4321);
  EXPECT_EQ(r->reason_, "timer fired");
  EXPECT_TRUE(closed_.wait_for(1));
}

TEST_F(WebSocketTest, AClientToldWhyThereIsNoConnection) {
  auto refused = std::make_shared<Recorder>();
  websocket_connect(loop_.runtime, client_options(), target_of(loop_.port(), "/full"), refused);
  ASSERT_TRUE(refused->wait([&] { return refused->closed_; }));
  EXPECT_FALSE(refused->opened_);
  EXPECT_EQ(refused->code_, 1006);
  EXPECT_NE(refused->reason_.find("HTTP 503"), std::string::npos) << refused->reason_;
  EXPECT_NE(refused->reason_.find("full for the test"), std::string::npos) << refused->reason_;

  auto wrong = std::make_shared<Recorder>();  // a subprotocol the endpoint does not speak
  auto o = client_options();
  o.subprotocol = "other.v1";
  websocket_connect(loop_.runtime, o, target_of(loop_.port(), "/ws"), wrong);
  ASSERT_TRUE(wrong->wait([&] { return wrong->closed_; }));
  EXPECT_FALSE(wrong->opened_);
  EXPECT_NE(wrong->reason_.find("HTTP 400"), std::string::npos) << wrong->reason_;

  // A port nobody listens on: one just bound and closed.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  auto nobody = std::make_shared<Recorder>();
  websocket_connect(loop_.runtime, client_options(), target_of(ntohs(a.sin_port), "/ws"), nobody);
  ASSERT_TRUE(nobody->wait([&] { return nobody->closed_; }));
  EXPECT_FALSE(nobody->opened_);
  EXPECT_EQ(nobody->code_, 1006);
  EXPECT_NE(nobody->reason_.find("cannot connect"), std::string::npos) << nobody->reason_;
}

}  // namespace
}  // namespace kiln::http
