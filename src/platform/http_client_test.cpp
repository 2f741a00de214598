// The HTTP client (http_client.hpp) over loopback: against Kiln's own streamed listener (a
// file range arrives whole and in order, an answer streams into a sink, one connection serves
// many requests), and against scripted raw sockets that misbehave (5xx then success, a body
// cut short, a body over the limit, silence, nothing listening).
#include "platform/http_client.hpp"
#include "platform/http_stream.hpp"
#include "platform/test_server.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

namespace kiln::http {
namespace {

// Checks the bytes it is given against the pattern; answers how many and whether in order.
class PatternSink final : public BodySink {
 public:
  bool write(std::string_view piece) override {
    ordered_ = ordered_ && piece == pattern(piece.size(), got_);
    got_ += piece.size();
    return true;
  }
  StreamAnswer finish() override {
    StreamAnswer a;
    a.body = std::to_string(got_) + (ordered_ ? " ordered" : " scrambled");
    return a;
  }

 private:
  std::size_t got_ = 0;
  bool ordered_ = true;
};

class Handler final : public StreamHandler {
 public:
  std::string metrics_prefix() const override { return "kiln_test"; }
  std::variant<StreamAnswer, std::unique_ptr<BodySink>> begin(const Request& head) override {
    ++requests;
    if (head.method == "PUT") return std::make_unique<PatternSink>();
    StreamAnswer a;
    if (head.path == "/echo-host") {
      a.body = std::string(head.header("host").value_or("")) + " " +
               std::string(head.header("user-agent").value_or(""));
      return a;
    }
    a.length = 3'000'000;
    a.source = std::make_unique<PatternSource>();
    return a;
  }
  StreamAnswer refused(int status, const std::string& reason) override {
    StreamAnswer a;
    a.status = status;
    a.body = reason;
    return a;
  }
  std::atomic<int> requests{0};
};

class AgainstTheListener : public ::testing::Test {
 protected:
  void SetUp() override {
    loop_.start(std::make_unique<Server>(loop_.runtime, LoopbackServer::any_port(), handler_,
                                         loop_.registry));
  }
  ClientOptions options() const {
    ClientOptions o;
    o.endpoint = "http://127.0.0.1:" + std::to_string(loop_.port()) + "/";
    o.timeout = std::chrono::seconds(20);
    return o;
  }

  Handler handler_;
  LoopbackServer loop_;  // after the handler: stopped before it is destroyed
};

TEST_F(AgainstTheListener, AFileRangeArrivesWholeAndInOrder) {
  const auto file = std::filesystem::temp_directory_path() /
                    ("kiln-http-client-" + std::to_string(::getpid()) + ".bin");
  {
    std::ofstream out(file, std::ios::binary);
    out << pattern(6'000'000);
  }
  Client c(options());
  // Bytes 26..5,000,026 of the file: the pattern again, from 'a'.
  auto r = c.send({"PUT", "/object", {}, Body::file_range(file.string(), 26, 5'000'000)});
  std::filesystem::remove(file);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "5000000 ordered");
}

TEST_F(AgainstTheListener, AnAnswerStreamsIntoTheSinkAndOneConnectionServesMany) {
  Client c(options());
  std::string got;
  std::size_t largest = 0;
  const std::function<void(std::string_view)> sink = [&](std::string_view piece) {
    largest = std::max(largest, piece.size());
    got.append(piece);
  };
  for (int i = 0; i < 3; ++i) {
    got.clear();
    ClientRequest req{"GET", "/object"};
    req.sink = &sink;
    auto r = c.send(req);
    EXPECT_EQ(r.status, 200);
    EXPECT_TRUE(r.body.empty());
    EXPECT_EQ(r.header("Content-Length"), "3000000");
    EXPECT_TRUE(got == pattern(3'000'000)) << got.size();
  }
  EXPECT_LE(largest, 64u * 1024);
  EXPECT_EQ(handler_.requests.load(), 3);
  // Keep-alive: the three requests came on the one connection still open.
  EXPECT_NE(loop_.registry.render().find("kiln_test_open_connections 1\n"), std::string::npos)
      << loop_.registry.render();
}

TEST_F(AgainstTheListener, HostAndUserAgentDefaultToTheEndpointAndTheOptions) {
  auto o = options();
  o.user_agent = "kiln-test/1";
  Client c(o);
  EXPECT_EQ(c.send({"GET", "/echo-host"}).body,
            "127.0.0.1:" + std::to_string(loop_.port()) + " kiln-test/1");
  EXPECT_EQ(c.send({"GET", "/echo-host", {{"Host", "bucket.example"}}}).body,
            "bucket.example kiln-test/1");
}

// A listening socket on loopback whose connections a script answers, one per connection.
class RawServer {
 public:
  using Script = std::function<void(int fd, int connection)>;
  RawServer(int connections, Script script) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    ::listen(fd_, 8);
    thread_ = std::thread([this, connections, script] {
      for (int i = 0; i < connections; ++i) {
        const int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) return;
        ++accepted;
        script(c, i);
        ::close(c);
      }
    });
  }
  ~RawServer() {
    ::shutdown(fd_, SHUT_RDWR);  // ends an accept still waiting
    thread_.join();
    ::close(fd_);
  }
  [[nodiscard]] std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // Reads one request head (and no body); empty when the peer closed first.
  static std::string read_head(int fd) {
    std::string got;
    char c;
    while (got.find("\r\n\r\n") == std::string::npos && ::read(fd, &c, 1) == 1) got += c;
    return got;
  }
  std::atomic<int> accepted{0};

 private:
  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
};

ClientOptions fast(const std::string& endpoint, int attempts) {
  ClientOptions o;
  o.endpoint = endpoint;
  o.max_attempts = attempts;
  o.backoff = std::chrono::milliseconds(1);
  o.timeout = std::chrono::seconds(20);
  return o;
}

const std::string k503 =
    "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbusy";
const std::string k200 = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok";

TEST(HttpClient, RetriesServerErrorsAndThrottlingThenReturnsTheAnswer) {
  RawServer s(3, [](int fd, int i) {
    RawServer::read_head(fd);
    send_all(fd, i == 0   ? k503
                 : i == 1 ? "HTTP/1.1 429 Too Many Requests\r\nConnection: "
                            "close\r\nContent-Length: 0\r\n\r\n"
                          : k200);
  });
  Client c(fast(s.endpoint(), 4));
  auto r = c.send({"GET", "/x"});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok");
  EXPECT_EQ(s.accepted.load(), 3);
}

TEST(HttpClient, AServerErrorAfterTheLastAttemptIsAValue) {
  RawServer s(2, [](int fd, int) {
    RawServer::read_head(fd);
    send_all(fd, k503);
  });
  Client c(fast(s.endpoint(), 2));
  auto r = c.send({"GET", "/x"});
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body, "busy");
  EXPECT_EQ(s.accepted.load(), 2);
}

TEST(HttpClient, ARequestThatMustNotRepeatIsSentOnce) {
  RawServer s(2, [](int fd, int i) {
    RawServer::read_head(fd);
    send_all(fd, i == 0 ? k503 : k200);
  });
  Client c(fast(s.endpoint(), 4));
  ClientRequest req{"POST", "/once"};
  req.retry = false;
  EXPECT_EQ(c.send(req).status, 503);
  EXPECT_EQ(c.send({"GET", "/x"}).status, 200);  // the second connection: the next request
  EXPECT_EQ(s.accepted.load(), 2);
}

// A body cut short after bytes reached the sink: not retried (the sink cannot take them back).
// The sink is fed in 64 KiB pieces: 100,000 of 200,000 bytes make one piece reach it.
TEST(HttpClient, ABodyCutShortAfterItReachedTheSinkIsAnErrorNotARetry) {
  RawServer s(2, [](int fd, int) {
    RawServer::read_head(fd);
    send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + pattern(100'000));
  });
  Client c(fast(s.endpoint(), 4));
  std::string got;
  const std::function<void(std::string_view)> sink = [&](std::string_view p) { got.append(p); };
  ClientRequest req{"GET", "/cut"};
  req.sink = &sink;
  EXPECT_THROW(c.send(req), NetworkError);
  EXPECT_GE(got.size(), 64u * 1024);
  EXPECT_LT(got.size(), 100'000u);
  EXPECT_TRUE(got == pattern(got.size()));
  EXPECT_EQ(s.accepted.load(), 1);
}

TEST(HttpClient, ABodyOverTheLimitIsRefusedNamingIt) {
  RawServer s(1, [](int fd, int) {
    RawServer::read_head(fd);
    send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + pattern(5000));
  });
  auto o = fast(s.endpoint(), 1);
  o.max_body = 4096;
  Client c(o);
  try {
    c.send({"GET", "/big"});
    FAIL() << "a 5000-byte body was kept with max_body 4096";
  } catch (const NetworkError& e) {
    EXPECT_NE(std::string(e.what()).find("over 4096 bytes"), std::string::npos) << e.what();
  }
}

TEST(HttpClient, APeerThatNeverAnswersTimesOut) {
  std::atomic<bool> done{false};
  RawServer s(1, [&](int fd, int) {
    RawServer::read_head(fd);
    // Holds the connection open until the client gives up (its read fails: we see EOF).
    char c;
    while (!done && ::read(fd, &c, 1) > 0) {
    }
  });
  auto o = fast(s.endpoint(), 1);
  o.timeout = std::chrono::milliseconds(200);
  Client c(o);
  try {
    c.send({"GET", "/silent"});
    FAIL() << "no answer was not an error";
  } catch (const NetworkError& e) {
    EXPECT_NE(std::string(e.what()).find("read"), std::string::npos) << e.what();
  }
  done = true;
}

TEST(HttpClient, NothingListeningIsANetworkErrorAfterEveryAttempt) {
  Client c(fast("http://127.0.0.1:1", 2));  // nothing listens on port 1
  try {
    c.send({"GET", "/"});
    FAIL();
  } catch (const NetworkError& e) {
    EXPECT_NE(std::string(e.what()).find("connect 127.0.0.1:1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("after 2 attempts"), std::string::npos) << e.what();
  }
}

TEST(HttpClient, BadInputIsRefusedBeforeAnythingIsSent) {
  for (const char* bad : {"ftp://host", "host:80", "http://", "http://host/path"})
    EXPECT_THROW(Client(fast(bad, 1)), std::invalid_argument) << bad;
  RawServer s(1, [](int, int) {});
  Client c(fast(s.endpoint(), 1));
  EXPECT_THROW(c.send({"GET", "no-slash"}), std::invalid_argument);
  try {
    c.send({"PUT", "/", {}, Body::file_range("/nonexistent/kiln", 0, 10)});
    FAIL() << "a missing file was sent";
  } catch (const NetworkError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot open /nonexistent/kiln"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(s.accepted.load(), 0);  // checked before connecting
}

TEST(HttpClient, AnIpv6EndpointKeepsItsBracketsInTheAuthority) {
  Client c(fast("http://[::1]:8080", 1));
  EXPECT_EQ(c.authority(), "[::1]:8080");
  EXPECT_FALSE(c.tls());
}

}  // namespace
}  // namespace kiln::http
