// Integration tests against real Redis servers started by tests/servers/redis.sh (a CTest
// fixture): KILN_TEST_REDIS="<standalone host:port> <cluster seed host:port>".
#include "clients/redis/client.hpp"
#include "clients/redis/test_env.hpp"
#include "platform/runtime.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <future>
#include <thread>

namespace kiln::redis {
namespace {

using namespace std::chrono_literals;

// An event loop on its own thread for the test's lifetime.
class Loop {
 public:
  Loop() : runtime_(1), thread_([this] { runtime_.run(); }) {}
  ~Loop() {
    runtime_.stop();
    thread_.join();
    runtime_.run_ready_handlers();  // closes posted by the tests fail what is pending
  }
  Runtime& runtime() { return runtime_; }

 private:
  Runtime runtime_;
  std::thread thread_;
};

Reply call(Client& c, std::string_view key, std::vector<std::string> args) {
  auto p = std::make_shared<std::promise<Reply>>();
  auto f = p->get_future();
  c.command(key, std::move(args), [p](Reply r) { p->set_value(std::move(r)); });
  if (f.wait_for(10s) != std::future_status::ready) return Reply::error("test: no reply in 10 s");
  return f.get();
}

Reply call(Connection& c, std::vector<std::string> args) {
  auto p = std::make_shared<std::promise<Reply>>();
  auto f = p->get_future();
  c.command(std::move(args), [p](Reply r) { p->set_value(std::move(r)); });
  if (f.wait_for(10s) != std::future_status::ready) return Reply::error("test: no reply in 10 s");
  return f.get();
}

class Standalone : public ::testing::Test {
 protected:
  void SetUp() override {
    ep = test_endpoint(0).value_or(Endpoint{});
    if (ep.port == 0) GTEST_SKIP() << "KILN_TEST_REDIS not set (run through ctest)";
    ConnectionOptions o;
    o.endpoint = ep;
    o.command_timeout = 1s;
    client = Client::standalone(loop.runtime(), o);
  }
  void TearDown() override {
    if (client) client->close();
  }
  Loop loop;
  Endpoint ep;
  std::shared_ptr<Client> client;
};

TEST_F(Standalone, SetGetBinarySafe) {
  const std::string value("a\0b\r\nc", 6);
  EXPECT_EQ(call(*client, "k", {"SET", "itest:bin", value}).str, "OK");
  auto r = call(*client, "k", {"GET", "itest:bin"});
  EXPECT_EQ(r.type, Reply::Type::String);
  EXPECT_EQ(r.str, value);
  EXPECT_TRUE(call(*client, "k", {"GET", "itest:missing"}).is_nil());
}

TEST_F(Standalone, PipelinedRepliesArriveInOrder) {
  const std::string key = "itest:counter:" + std::to_string(::getpid());
  call(*client, "k", {"DEL", key});
  const int n = 5000;
  // Shared with the callbacks, so that an early failure cannot leave them dangling.
  auto ps = std::make_shared<std::vector<std::promise<long long>>>(n);
  for (int i = 0; i < n; ++i) {
    client->command("k", {"INCR", key}, [ps, i](Reply r) {
      (*ps)[static_cast<std::size_t>(i)].set_value(r.is_error() ? -1 : r.integer);
    });
  }
  for (int i = 0; i < n; ++i) {
    auto f = (*ps)[static_cast<std::size_t>(i)].get_future();
    ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
    ASSERT_EQ(f.get(), i + 1) << "reply " << i << " out of order";
  }
}

TEST_F(Standalone, ServerErrorsAreReplies) {
  call(*client, "k", {"SET", "itest:str", "x"});
  auto r = call(*client, "k", {"INCR", "itest:str"});
  EXPECT_TRUE(r.is_error());
  EXPECT_NE(r.str.find("not an integer"), std::string::npos);
}

TEST_F(Standalone, ReconnectsAfterTheServerDropsUs) {
  // Kill exactly our connection (other tests may run in parallel against this server).
  auto id = call(*client, "k", {"CLIENT", "ID"});
  ASSERT_EQ(id.type, Reply::Type::Integer);
  ConnectionOptions admin_options;
  admin_options.endpoint = ep;
  auto admin = Connection::create(loop.runtime(), admin_options);
  auto killed = call(*admin, {"CLIENT", "KILL", "ID", std::to_string(id.integer)});
  EXPECT_EQ(killed.integer, 1);
  // The next commands may fail while the connection is rebuilt, then succeed: bounded.
  Reply r;
  for (int i = 0; i < 50; ++i) {
    r = call(*client, "k", {"PING"});
    if (!r.is_error()) break;
  }
  EXPECT_EQ(r.str, "PONG");
  admin->close();
}

// The client name is the first thing on every connection, the first and each reconnect.
TEST_F(Standalone, TheClientNameIsSetOnEveryConnection) {
  ConnectionOptions o;
  o.endpoint = ep;
  o.client_name = "itest-named";
  auto named = Connection::create(loop.runtime(), o);
  EXPECT_EQ(call(*named, {"CLIENT", "GETNAME"}).str, "itest-named");
  auto id = call(*named, {"CLIENT", "ID"});
  ConnectionOptions admin_options;
  admin_options.endpoint = ep;
  auto admin = Connection::create(loop.runtime(), admin_options);
  EXPECT_EQ(call(*admin, {"CLIENT", "KILL", "ID", std::to_string(id.integer)}).integer, 1);
  Reply r;
  for (int i = 0; i < 50; ++i) {  // bounded: the first commands may meet the lost connection
    r = call(*named, {"CLIENT", "GETNAME"});
    if (!r.is_error()) break;
  }
  EXPECT_EQ(r.str, "itest-named");
  EXPECT_NE(call(*named, {"CLIENT", "ID"}).integer, id.integer) << "a new connection";
  named->close();
  admin->close();
}

// A server that accepts and never answers (the timeout is the interaction under test;
// blocking the shared Redis with DEBUG SLEEP would stall tests running in parallel).
TEST_F(Standalone, AReplyThatNeverComesTimesOut) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 16), 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ConnectionOptions o;
  o.endpoint = Endpoint{"127.0.0.1", ntohs(addr.sin_port)};
  o.command_timeout = 300ms;
  auto silent = Client::standalone(loop.runtime(), o);
  const auto start = std::chrono::steady_clock::now();
  auto r = call(*silent, "k", {"PING"});
  EXPECT_TRUE(r.is_error());
  EXPECT_NE(r.str.find("timed out"), std::string::npos) << r.str;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  silent->close();
  ::close(fd);
}

TEST_F(Standalone, UnreachableServerFailsWithinTheTimeout) {
  ConnectionOptions o;
  o.endpoint = Endpoint{"127.0.0.1", 1};  // nothing listens there
  o.command_timeout = 300ms;
  auto dead = Client::standalone(loop.runtime(), o);
  auto r = call(*dead, "k", {"PING"});
  EXPECT_TRUE(r.is_error());
  EXPECT_NE(r.str.find("not connected"), std::string::npos) << r.str;
  dead->close();
}

TEST_F(Standalone, ScriptsRunBySha) {
  Script script("return redis.call('INCRBY', KEYS[1], ARGV[1])");
  call(*client, "k", {"SCRIPT", "FLUSH"});
  call(*client, "k", {"SET", "itest:lua", "1"});
  auto p = std::make_shared<std::promise<Reply>>();
  client->eval(script, {"itest:lua"}, {"41"}, [p](Reply r) { p->set_value(std::move(r)); });
  auto f = p->get_future();
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(f.get().integer, 42);  // NOSCRIPT first, then EVAL
  auto exists = call(*client, "k", {"SCRIPT", "EXISTS", script.sha});
  EXPECT_EQ(exists.elements.at(0).integer, 1);
}

TEST_F(Standalone, PubSubMessagesArriveAsPushes) {
  ConnectionOptions o;
  o.endpoint = ep;
  auto sub = Connection::create(loop.runtime(), o);
  auto got = std::make_shared<std::promise<std::string>>();
  sub->on_push([got](const Reply& r) {
    if (r.elements.size() == 3 && r.elements[0].str == "message") got->set_value(r.elements[2].str);
  });
  auto confirm = call(*sub, {"SUBSCRIBE", "itest:chan"});
  EXPECT_EQ(confirm.elements.at(0).str, "subscribe");
  call(*client, "k", {"PUBLISH", "itest:chan", "hello"});
  auto f = got->get_future();
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(f.get(), "hello");
  sub->close();
}

class Cluster : public ::testing::Test {
 protected:
  void SetUp() override {
    seed = test_endpoint(1).value_or(Endpoint{});
    if (seed.port == 0) GTEST_SKIP() << "KILN_TEST_REDIS not set (run through ctest)";
    client = Client::cluster(loop.runtime(), {seed}, ConnectionOptions{});
  }
  void TearDown() override {
    if (client) client->close();
  }
  Loop loop;
  Endpoint seed;
  std::shared_ptr<Client> client;
};

TEST_F(Cluster, KeysInEverySlotRangeAreReachable) {
  // 200 keys spread over all three primaries: every one lands, whatever the first guess.
  for (int i = 0; i < 200; ++i) {
    const std::string key = "itest:key:" + std::to_string(i);
    ASSERT_EQ(call(*client, key, {"SET", key, std::to_string(i)}).str, "OK") << key;
  }
  for (int i = 0; i < 200; ++i) {
    const std::string key = "itest:key:" + std::to_string(i);
    ASSERT_EQ(call(*client, key, {"GET", key}).str, std::to_string(i));
  }
}

TEST_F(Cluster, MovedIsFollowed) {
  // Ask a node that does not own the key directly: it answers MOVED, which a plain
  // connection sees and the cluster client follows.
  const std::string key = "itest:moved";
  const auto owner = client->endpoint_for(key);
  (void)call(*client, key, {"SET", key, "v"});
  Endpoint other = owner;
  for (int p = 27000; p < 27006 && other == owner; ++p) {
    Endpoint e{"127.0.0.1", static_cast<std::uint16_t>(p)};
    ConnectionOptions eo;
    eo.endpoint = e;
    auto c = Connection::create(loop.runtime(), eo);
    auto r = call(*c, {"GET", key});
    if (parse_redirect(r)) other = e;
    c->close();
  }
  EXPECT_FALSE(other == owner) << "some node must answer MOVED";
  EXPECT_EQ(call(*client, key, {"GET", key}).str, "v");
}

TEST_F(Cluster, HashTaggedKeysShareASlotForScripts) {
  Script script(
      "redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[1]); return "
      "redis.call('GET', KEYS[2])");
  auto p = std::make_shared<std::promise<Reply>>();
  client->eval(script, {"kiln:{p/s}:a", "kiln:{p/s}:b"}, {"x"},
               [p](Reply r) { p->set_value(std::move(r)); });
  auto f = p->get_future();
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  auto r = f.get();
  EXPECT_FALSE(r.is_error()) << r.str;
  EXPECT_EQ(r.str, "x");
}

TEST_F(Cluster, ShardedPubSub) {
  const std::string channel = "kiln:{p/s}:events";
  ConnectionOptions o;
  o.endpoint = client->endpoint_for(channel);
  auto sub = Connection::create(loop.runtime(), o);
  auto got = std::make_shared<std::promise<std::string>>();
  sub->on_push([got](const Reply& r) {
    if (r.elements.size() == 3 && r.elements[0].str == "smessage")
      got->set_value(r.elements[2].str);
  });
  auto confirm = call(*sub, {"SSUBSCRIBE", channel});
  ASSERT_FALSE(confirm.is_error()) << confirm.str;
  EXPECT_EQ(call(*client, channel, {"SPUBLISH", channel, "hi"}).integer, 1);
  auto f = got->get_future();
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(f.get(), "hi");
  sub->close();
}

}  // namespace
}  // namespace kiln::redis
