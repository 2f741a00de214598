// Session logic without sockets: frames in, frames and closes out.
#include "gateway/session.hpp"

#include "collab/memory_engine.hpp"

#include <gtest/gtest.h>
#include <boost/json/parse.hpp>

namespace kiln::gateway {
namespace {

namespace json = boost::json;
using collab::Close;

constexpr const char* kSecret = "unit-test-secret-0123456789abcdef0123";

struct FakeTransport : Transport {
  std::vector<std::string> frames;
  std::optional<std::pair<Close, std::string>> closed;
  void send(std::shared_ptr<const std::string> f) override { frames.push_back(*f); }
  void close(Close code, std::string reason) override {
    if (!closed) closed.emplace(code, std::move(reason));
  }
  // Runs tasks at once, or (deferred) when the test calls run_tasks().
  void run(std::function<void()> fn) override {
    if (deferred) {
      tasks.push_back(std::move(fn));
    } else {
      fn();
    }
  }
  void run_tasks() {
    while (!tasks.empty()) {
      auto fn = std::move(tasks.front());
      tasks.erase(tasks.begin());
      fn();
    }
  }
  json::object last() { return json::parse(frames.back()).as_object(); }
  bool deferred = false;
  std::vector<std::function<void()>> tasks;
};

class SessionTest : public ::testing::Test {
 protected:
  SessionTest()
      : engine(collab::EngineLimits{}, [] { return std::string("ep"); }),
        verifier(auth::Verifier::hs256(kSecret)),
        ctx{options(),
            engine,
            hub,
            verifier,
            {},
            [] { return std::int64_t{1'800'000'000}; },
            [](std::function<void()> fn) { fn(); }} {
    engine.set_events(&hub);
  }

  static Options options() {
    Options o;
    o.messages_per_second = 10;  // burst 20
    o.ops_per_second = 1;        // burst 2
    return o;
  }

  struct Peer {
    std::shared_ptr<FakeTransport> transport = std::make_shared<FakeTransport>();
    std::shared_ptr<Session> session;
  };

  Peer connect(const std::string& id) {
    Peer p;
    p.session = std::make_shared<Session>(ctx, p.transport, id, t0);
    return p;
  }

  std::string token(const std::string& user, const std::string& roles_json) {
    return auth::sign_hs256_raw(
        R"({"alg":"HS256"})",
        R"({"sub":")" + user + R"(","exp":1900000000,"roles":)" + roles_json + "}", kSecret);
  }

  void hello(Peer& p, const std::string& user, const std::string& roles = R"({"p":"editor"})") {
    p.session->on_text(R"({"t":"hello","id":1,"token":")" + token(user, roles) + R"("})", t0);
  }

  // Ann, authenticated, has sent a join for p/s; the room is loading until the test calls
  // load_done. Her connection runs deferred tasks only when the test says so.
  Peer joining_a_loading_room() {
    engine.set_loader([this](const std::string&, auto done) { load_done = std::move(done); });
    auto a = connect("sa");
    a.transport->deferred = true;
    hello(a, "ann");
    a.session->on_text(R"({"t":"join","id":2,"room":"p/s"})", t0);
    return a;
  }
  std::function<void(std::optional<collab::StoredRoom>, std::string)> load_done;

  Session::Clock::time_point t0{};
  collab::Hub hub{"n"};
  collab::MemoryRoomEngine engine;
  auth::Verifier verifier;
  SessionContext ctx;
};

TEST_F(SessionTest, HelloThenJoinThenOp) {
  auto a = connect("sa");
  hello(a, "ann");
  EXPECT_EQ(a.transport->last().at("t").as_string(), "welcome");
  a.session->on_text(R"({"t":"join","id":2,"room":"p/s"})", t0);
  EXPECT_EQ(a.transport->last().at("t").as_string(), "joined");
  a.session->on_text(
      R"({"t":"op","id":3,"room":"p/s","ops":[{"op":"create","entity":"e","parent":"root"}]})", t0);
  auto ack = a.transport->last();
  EXPECT_EQ(ack.at("t").as_string(), "ack");
  EXPECT_EQ(ack.at("seq").as_int64(), 1);
  EXPECT_FALSE(a.transport->closed);
}

// hello, join and op sent back to back (the README's snippet): the op waits for the join,
// even when the room is still loading from the database.
TEST_F(SessionTest, FramesAfterAJoinWaitForItsAnswer) {
  auto a = joining_a_loading_room();
  a.session->on_text(
      R"({"t":"op","id":3,"room":"p/s","ops":[{"op":"create","entity":"e","parent":"root"}]})", t0);
  a.session->on_text(R"({"t":"ping","id":4})", t0);
  ASSERT_EQ(a.transport->frames.size(), 1u) << "only the welcome: the op waits for the join";
  ASSERT_TRUE(load_done);
  load_done(collab::StoredRoom{5, R"({"entities":{}})", ""}, "");
  a.transport->run_tasks();
  ASSERT_EQ(a.transport->frames.size(), 4u);
  std::vector<std::string> types;
  for (const auto& f : a.transport->frames) types.emplace_back(json::parse(f).at("t").as_string());
  EXPECT_EQ(types, (std::vector<std::string>{"welcome", "joined", "ack", "pong"}));
  EXPECT_EQ(json::parse(a.transport->frames[2]).at("seq").as_int64(), 6);
}

TEST_F(SessionTest, AFailedJoinAlsoReleasesTheFramesAfterIt) {
  auto a = joining_a_loading_room();
  a.session->on_text(R"({"t":"ping","id":3})", t0);
  load_done(std::nullopt, "database unreachable");
  a.transport->run_tasks();
  ASSERT_EQ(a.transport->frames.size(), 3u);
  EXPECT_EQ(json::parse(a.transport->frames[1]).at("t").as_string(), "nack");
  EXPECT_EQ(a.transport->last().at("t").as_string(), "pong");
}

TEST_F(SessionTest, AnythingBeforeHelloCloses4001) {
  auto a = connect("sa");
  a.session->on_text(R"({"t":"ping","id":1})", t0);
  ASSERT_TRUE(a.transport->closed);
  EXPECT_EQ(a.transport->closed->first, Close::Unauthenticated);
}

TEST_F(SessionTest, ForgedTokenCloses4001WithTheReason) {
  auto a = connect("sa");
  auto forged = auth::sign_hs256_raw(R"({"alg":"HS256"})", R"({"sub":"x","exp":1900000000})",
                                     "wrong-secret-0123456789abcdef012345");
  a.session->on_text(R"({"t":"hello","id":1,"token":")" + forged + R"("})", t0);
  ASSERT_TRUE(a.transport->closed);
  EXPECT_EQ(a.transport->closed->first, Close::Unauthenticated);
  EXPECT_EQ(a.transport->closed->second, "token signature is invalid");
}

TEST_F(SessionTest, HelloTimeoutOnlyBeforeHello) {
  auto a = connect("sa");
  hello(a, "ann");
  a.session->on_hello_timeout();
  EXPECT_FALSE(a.transport->closed);
  auto b = connect("sb");
  b.session->on_hello_timeout();
  ASSERT_TRUE(b.transport->closed);
  EXPECT_EQ(b.transport->closed->first, Close::Unauthenticated);
}

TEST_F(SessionTest, MessageFloodCloses4029AtTheBurst) {
  auto a = connect("sa");
  hello(a, "ann");  // 1 message
  for (int i = 0; i < 19; ++i) a.session->on_text(R"({"t":"ping","id":2})", t0);
  EXPECT_FALSE(a.transport->closed) << "20 messages fit the burst";
  a.session->on_text(R"({"t":"ping","id":2})", t0);
  ASSERT_TRUE(a.transport->closed);
  EXPECT_EQ(a.transport->closed->first, Close::RateLimited);
}

TEST_F(SessionTest, OpRateLimitIsANack) {
  auto a = connect("sa");
  hello(a, "ann");
  a.session->on_text(R"({"t":"join","id":2,"room":"p/s"})", t0);
  std::vector<std::string> results;
  for (int i = 0; i < 3; ++i) {
    a.session->on_text(R"({"t":"op","id":3,"room":"p/s","ops":[{"op":"create","entity":"e)" +
                           std::to_string(i) + R"(","parent":"root"}]})",
                       t0);
    results.emplace_back(a.transport->last().at("t").as_string());
  }
  EXPECT_EQ(results, (std::vector<std::string>{"ack", "ack", "nack"}));
  EXPECT_EQ(a.transport->last().at("code").as_string(), "rate_limited");
  // A second later one token is back.
  a.session->on_text(
      R"({"t":"op","id":4,"room":"p/s","ops":[{"op":"create","entity":"z","parent":"root"}]})",
      t0 + std::chrono::seconds(1));
  EXPECT_EQ(a.transport->last().at("t").as_string(), "ack");
}

TEST_F(SessionTest, ClosingLeavesEveryRoom) {
  auto a = connect("sa");
  auto b = connect("sb");
  hello(a, "ann");
  hello(b, "bob");
  a.session->on_text(R"({"t":"join","id":2,"room":"p/s"})", t0);
  b.session->on_text(R"({"t":"join","id":2,"room":"p/s"})", t0);
  a.session->on_closed();
  auto p = b.transport->last();
  EXPECT_EQ(p.at("t").as_string(), "presence");
  EXPECT_EQ(p.at("left").at(0).as_string(), "sa");
  EXPECT_EQ(hub.rooms(), 1u);
  b.session->on_closed();
  EXPECT_EQ(hub.rooms(), 0u);
}

}  // namespace
}  // namespace kiln::gateway
