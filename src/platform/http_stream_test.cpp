// The HTTP server's streamed listener (http_stream.hpp) over real sockets on loopback: a
// body reaches the sink in pieces of at most 64 KiB and in order, an answer streams from its
// source with its length, a sink that refuses mid-body gets its answer out and the
// connection closed, and a malformed request gets the handler's refusal.
#include "platform/http_stream.hpp"
#include "platform/test_server.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <thread>

namespace kiln::http {
namespace {

// Counts bytes of a repeating pattern; answers with how many and whether they were in order.
class CountingSink final : public BodySink {
 public:
  CountingSink(std::size_t refuse_after, std::atomic<std::size_t>& largest)
      : refuse_after_(refuse_after), largest_(largest) {}
  bool write(std::string_view piece) override {
    if (piece.size() > largest_) largest_ = piece.size();
    for (char c : piece) ordered_ = ordered_ && c == static_cast<char>('a' + got_++ % 26);
    return refuse_after_ == 0 || got_ < refuse_after_;
  }
  StreamAnswer finish() override {
    StreamAnswer a;
    const bool refused = refuse_after_ != 0 && got_ >= refuse_after_;
    a.status = refused ? 413 : 200;
    a.body = std::to_string(got_) + (ordered_ ? " ordered" : " scrambled");
    return a;
  }

 private:
  std::size_t refuse_after_;
  std::atomic<std::size_t>& largest_;
  std::size_t got_ = 0;
  bool ordered_ = true;
};

class Handler final : public StreamHandler {
 public:
  std::string metrics_prefix() const override { return "kiln_test"; }
  std::variant<StreamAnswer, std::unique_ptr<BodySink>> begin(const Request& head) override {
    if (head.method == "PUT")
      return std::make_unique<CountingSink>(head.path == "/refuse" ? 100'000 : 0, largest);
    StreamAnswer a;
    a.length = 300'000;
    a.source = std::make_unique<PatternSource>();
    return a;
  }
  StreamAnswer refused(int status, const std::string& reason) override {
    StreamAnswer a;
    a.status = status;
    a.body = "refused: " + reason;
    return a;
  }
  std::atomic<std::size_t> largest{0};
};

class StreamServer : public ::testing::Test {
 protected:
  void SetUp() override {
    loop_.start(std::make_unique<Server>(loop_.runtime, LoopbackServer::any_port(), handler_,
                                         loop_.registry));
  }
  int connect() { return connect_loopback(loop_.port()); }
  // Everything until the server closes the connection.
  static std::string read_all(int fd) {
    std::string out;
    char buf[65536];
    for (;;) {
      const auto n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      out.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return out;
  }

  Handler handler_;
  LoopbackServer loop_;  // after the handler: stopped before it is destroyed
};

TEST_F(StreamServer, ABodyReachesTheSinkInOrderInPiecesOfAtMost64KiB) {
  const int fd = connect();
  const std::size_t n = 5'000'000;
  send_all(fd, "PUT /object HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: " +
                   std::to_string(n) + "\r\n\r\n");
  send_all(fd, pattern(n));
  const auto answer = read_all(fd);
  EXPECT_TRUE(answer.starts_with("HTTP/1.1 200")) << answer.substr(0, 200);
  EXPECT_NE(answer.find("\r\n\r\n5000000 ordered"), std::string::npos) << answer.substr(0, 300);
  EXPECT_GT(handler_.largest.load(), 0u);
  EXPECT_LE(handler_.largest.load(), 64u * 1024);
}

TEST_F(StreamServer, AnAnswerStreamsFromItsSourceWithItsLength) {
  const int fd = connect();
  send_all(fd, "GET /object HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  const auto answer = read_all(fd);
  const auto end = answer.find("\r\n\r\n");
  ASSERT_NE(end, std::string::npos);
  EXPECT_NE(answer.substr(0, end).find("Content-Length: 300000"), std::string::npos);
  EXPECT_EQ(answer.substr(end + 4), pattern(300'000));
}

TEST_F(StreamServer, ASinkThatRefusesMidBodyIsAnsweredAndTheConnectionClosed) {
  const int fd = connect();
  const std::size_t n = 2'000'000;  // refused after 100,000 bytes
  send_all(fd,
           "PUT /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(n) + "\r\n\r\n");
  std::thread sender([&] { send_all(fd, pattern(n)); });
  const auto answer = read_all(fd);  // ends: the server closed after answering
  sender.join();
  EXPECT_TRUE(answer.starts_with("HTTP/1.1 413")) << answer.substr(0, 200);
  EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer.substr(0, 300);
}

TEST_F(StreamServer, AMalformedRequestGetsTheHandlersRefusal) {
  const int fd = connect();
  send_all(fd, "NOT A REQUEST\r\n\r\n");
  const auto answer = read_all(fd);
  EXPECT_TRUE(answer.starts_with("HTTP/1.1 400")) << answer;
  EXPECT_NE(answer.find("refused: malformed"), std::string::npos) << answer;
}

}  // namespace
}  // namespace kiln::http
