// The S3 client against two servers: Kiln's embedded store (in process, real sockets) and
// s3rver (npm), an independent implementation; and its retries against a server that
// answers 503 (the interaction under test).
#include "clients/s3/client.hpp"
#include "objects/s3_listener.hpp"
#include "platform/http_server.hpp"
#include "platform/metrics.hpp"
#include "platform/runtime.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

namespace kiln::s3 {
namespace {

namespace fs = std::filesystem;
const std::string kSecret = "client-test-secret-0123456789abcdef";

class EmbeddedStore {
 public:
  EmbeddedStore() : runtime_(1) {
    dir_ = fs::temp_directory_path() / ("kiln-s3-client-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    store_ = std::make_unique<objects::Store>(dir_);
    store_->create_bucket("kiln");
    objects::ApiOptions ao;
    ao.credentials["kiln"] = kSecret;
    api_ = std::make_unique<objects::S3Api>(*store_, ao);
    http::ServerOptions so;
    so.port = 0;
    listener_ = std::make_unique<objects::S3Listener>(*api_);
    server_ = std::make_unique<http::Server>(runtime_, so, *listener_, registry_);
    server_->start();
    thread_ = std::thread([this] { runtime_.run(); });
  }
  ~EmbeddedStore() {
    server_->close_all();
    runtime_.stop();
    thread_.join();
    server_.reset();
    fs::remove_all(dir_);
  }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(server_->port()); }

 private:
  metrics::Registry registry_;
  Runtime runtime_;
  fs::path dir_;
  std::unique_ptr<objects::Store> store_;
  std::unique_ptr<objects::S3Api> api_;
  std::unique_ptr<objects::S3Listener> listener_;
  std::unique_ptr<http::Server> server_;
  std::thread thread_;
};

ClientOptions opts(const std::string& endpoint, const std::string& secret = kSecret,
                   const std::string& access_key = "kiln") {
  ClientOptions o;
  o.endpoint = endpoint;
  o.credentials = {access_key, secret, {}};
  o.timeout = std::chrono::seconds(10);
  o.backoff = std::chrono::milliseconds(5);
  return o;
}

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(g());
  return s;
}

// The same checks against any S3 server.
// `full`: the server implements ListParts, ListMultipartUploads and AbortMultipartUpload,
// and S3's multipart ETags (s3rver 3.7 does none of these).
void exercise(Client& c, const std::string& endpoint, bool checks_signatures, bool full = true) {
  const auto body = random_bytes(200'000, 1);
  auto put = c.put_object("kiln", "dir/a b+c.bin", Body::of(body));
  EXPECT_EQ(put.etag.size(), 34u);
  EXPECT_EQ(c.get_object("kiln", "dir/a b+c.bin"), body);
  std::string part;
  c.get_object(
      "kiln", "dir/a b+c.bin", [&](std::string_view b) { part.append(b); },
      std::pair<std::uint64_t, std::uint64_t>{10, 19});
  EXPECT_EQ(part, body.substr(10, 10));
  auto head = c.head_object("kiln", "dir/a b+c.bin");
  ASSERT_TRUE(head);
  EXPECT_EQ(head->size, body.size());
  EXPECT_EQ(head->etag, put.etag);
  EXPECT_FALSE(c.head_object("kiln", "nope"));
  try {
    c.get_object("kiln", "nope");
    ADD_FAILURE() << "a missing key was returned";
  } catch (const S3Error& e) {
    EXPECT_EQ(e.status(), 404);
    EXPECT_EQ(e.code(), "NoSuchKey");
  }
  for (int i = 0; i < 5; ++i) c.put_object("kiln", "list/k" + std::to_string(i), Body::of("x"));
  std::vector<std::string> keys;
  std::string token;
  do {
    auto page = c.list_objects("kiln", "list/", "", token, 2);
    for (const auto& o : page.objects) keys.push_back(o.key);
    token = page.next_token;
  } while (!token.empty());
  EXPECT_EQ(keys,
            (std::vector<std::string>{"list/k0", "list/k1", "list/k2", "list/k3", "list/k4"}));
  auto top = c.list_objects("kiln", "", "/");
  EXPECT_NE(std::find(top.common_prefixes.begin(), top.common_prefixes.end(), "list/"),
            top.common_prefixes.end());
  c.copy_object("kiln", "list/k0", "kiln", "copied");
  EXPECT_EQ(c.get_object("kiln", "copied"), "x");
  c.delete_object("kiln", "copied");
  EXPECT_FALSE(c.head_object("kiln", "copied"));

  // Multipart from a file, parts sent as file ranges.
  const auto path = fs::temp_directory_path() / ("kiln-s3-mp-" + std::to_string(::getpid()));
  const auto big = random_bytes((5 << 20) * 2 + 123'456, 2);
  std::ofstream(path, std::ios::binary) << big;
  const auto id = c.create_multipart("kiln", "mp/big.bin");
  std::vector<Part> parts;
  const std::uint64_t ps = 5 << 20;
  for (int n = 1; n <= 3; ++n) {
    const std::uint64_t off = static_cast<std::uint64_t>(n - 1) * ps;
    const auto len = std::min<std::uint64_t>(ps, big.size() - off);
    parts.push_back(
        Part{n, c.upload_part("kiln", "mp/big.bin", id, n, Body::file_range(path, off, len)), len});
  }
  if (full) {
    auto listed = c.list_parts("kiln", "mp/big.bin", id);
    EXPECT_EQ(listed.size(), 3u);
    if (listed.size() == 3u) {
      EXPECT_EQ(listed[2].size, big.size() - 2 * ps);
    }
    auto uploads = c.list_multipart_uploads("kiln", "mp/");
    EXPECT_TRUE(
        std::any_of(uploads.begin(), uploads.end(), [&](const Upload& u) { return u.id == id; }));
  }
  auto done = c.complete_multipart("kiln", "mp/big.bin", id, parts);
  if (full) {
    EXPECT_TRUE(done.etag.ends_with("-3\"")) << done.etag;  // s3rver makes a plain MD5
  }
  EXPECT_EQ(c.get_object("kiln", "mp/big.bin"), big);
  if (full) {
    // Completion is create-only (If-None-Match: *): another upload to a key that holds an
    // object is refused and the object stays.
    const auto again = c.create_multipart("kiln", "mp/big.bin");
    std::vector<Part> one{Part{1, c.upload_part("kiln", "mp/big.bin", again, 1, Body::of("x")), 1}};
    try {
      c.complete_multipart("kiln", "mp/big.bin", again, one);
      ADD_FAILURE() << "a completion replaced an existing object";
    } catch (const S3Error& e) {
      EXPECT_EQ(e.status(), 412);
      EXPECT_EQ(e.code(), "PreconditionFailed");
    }
    EXPECT_EQ(c.get_object("kiln", "mp/big.bin"), big);
  }
  if (full) {
    const auto second = c.create_multipart("kiln", "mp/aborted");
    c.abort_multipart("kiln", "mp/aborted", second);
  }
  fs::remove(path);

  if (checks_signatures) {
    Client bad(opts(endpoint, "wrong-secret-0123456789abcdef0123"));
    try {
      bad.get_object("kiln", "list/k0");
      ADD_FAILURE() << "a wrong secret was accepted";
    } catch (const S3Error& e) {
      EXPECT_EQ(e.status(), 403);
      EXPECT_EQ(e.code(), "SignatureDoesNotMatch");
    }
  }
}

TEST(S3Client, AgainstTheEmbeddedStore) {
  EmbeddedStore store;
  Client c(opts(store.endpoint()));
  exercise(c, store.endpoint(), true);
}

// Virtual-hosted-style: the client sends Host: kiln.localhost:PORT and paths without the
// bucket; the store takes the bucket from the Host (objects.virtual_host_domain).
TEST(S3Client, VirtualHostedStyleAgainstTheEmbeddedStore) {
  EmbeddedStore store;
  const auto endpoint =
      "http://localhost:" + store.endpoint().substr(store.endpoint().rfind(':') + 1);
  auto o = opts(endpoint);
  o.path_style = false;
  Client c(o);
  exercise(c, endpoint, true);
  const auto url = c.presign("GET", "kiln", "dir/a b+c.bin", 60);
  EXPECT_TRUE(url.starts_with("http://kiln.localhost:")) << url;
  EXPECT_NE(url.find("/dir/a%20b%2Bc.bin?"), std::string::npos) << url;
}

// A server that answers 503 SlowDown `failures` times, then 200: the client must retry.
TEST(S3Client, RetriesThrottlingAndServerErrors) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::listen(fd, 8);
  std::atomic<int> seen{0};
  std::thread server([&] {
    for (int i = 0; i < 3; ++i) {
      int c = ::accept(fd, nullptr, nullptr);
      char buf[4096];
      (void)::read(c, buf, sizeof buf);
      ++seen;
      const std::string resp =
          i < 2 ? "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: "
                  "close\r\nContent-Length: "
                  "59\r\n\r\n<Error><Code>SlowDown</Code><Message>slow</Message></Error>"
                : "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
      (void)::write(c, resp.data(), resp.size());
      ::close(c);
    }
  });
  Client c(opts("http://127.0.0.1:" + std::to_string(ntohs(a.sin_port))));
  EXPECT_EQ(c.get_object("kiln", "k"), "ok");
  server.join();
  ::close(fd);
  EXPECT_EQ(seen.load(), 3);
}

TEST(S3Client, GivesUpAfterMaxAttempts) {
  ClientOptions o = opts("http://127.0.0.1:1");  // nothing listens on port 1
  o.max_attempts = 2;
  Client c(o);
  try {
    c.get_object("kiln", "k");
    FAIL();
  } catch (const S3Error& e) {
    EXPECT_EQ(e.status(), 0);
    EXPECT_EQ(e.code(), "NetworkError");
  }
}

TEST(S3Client, AgainstS3rver) {
  const char* npm = std::getenv("KILN_NPM_DIR");
  if (npm == nullptr) GTEST_SKIP() << "KILN_NPM_DIR not set (run through ctest)";
  const auto dir = fs::temp_directory_path() / ("kiln-s3rver-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  // s3rver binds port 0 and says where ("S3rver listening on 127.0.0.1:PORT") on its
  // stdout, a pipe of ours kept open until it exits.
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  const std::string bin = std::string(npm) + "/node_modules/.bin/s3rver";
  pid_t pid = ::fork();
  // Stops s3rver however the test ends, then closes our end of its stdout.
  struct Reaper {
    pid_t pid;
    int fd;
    ~Reaper() {
      if (pid > 0) {
        ::kill(pid, SIGTERM);
        ::waitpid(pid, nullptr, 0);
      }
      ::close(fd);
    }
  } reaper{pid, out[0]};
  if (pid == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    ::close(out[0]);
    ::close(out[1]);
    // s3rver 3 makes continuation tokens with a cipher OpenSSL 3 keeps in its legacy provider.
    ::setenv("NODE_OPTIONS", "--openssl-legacy-provider", 1);
    ::execl(bin.c_str(), bin.c_str(), "--directory", dir.c_str(), "--port", "0", "--address",
            "127.0.0.1", "--silent", "--configure-bucket", "kiln", static_cast<char*>(nullptr));
    _exit(127);
  }
  ::close(out[1]);
  ASSERT_GT(pid, 0);
  // Its first words, bounded: 20 s for node to start on a loaded machine.
  std::string said;
  int port = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  const std::string marker = "listening on 127.0.0.1:";
  while (port == 0 && std::chrono::steady_clock::now() < deadline) {
    pollfd p{out[0], POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    char buf[256];
    const auto n = ::read(out[0], buf, sizeof buf);
    if (n <= 0) break;  // s3rver exited
    said.append(buf, static_cast<std::size_t>(n));
    if (auto at = said.find(marker);
        at != std::string::npos && said.find('\n', at) != std::string::npos)
      port = std::atoi(said.c_str() + at + marker.size());
  }
  ASSERT_GT(port, 0) << "s3rver did not say where it listens: " << said;
  {
    // s3rver's fixed credentials.
    Client client(opts("http://127.0.0.1:" + std::to_string(port), "S3RVER", "S3RVER"));
    exercise(client, "", false, /*full=*/false);
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace kiln::s3
