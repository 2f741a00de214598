// Session logic without sockets: frames in, frames and closes out.
#include "gateway/session.hpp"

#include "engines/memory/memory_engine.hpp"
#include "platform/metrics.hpp"

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
            [](std::function<void()> fn) { fn(); },
            [this](const std::string& user, const std::string& room,
                   std::function<void(AccessDecision)> done) {
              if (hold_decisions) {
                held_decisions.emplace_back(
                    [this, user, room, done] { done(judge(access, user, room)); });
                return;
              }
              done(judge(access, user, room));
            }} {
    engine.set_events(&hub);
    access.live = true;
    access.roles = {{"ann", auth::Role::Editor}, {"bob", auth::Role::Editor}};
    access.scenes = {"s", "t"};
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
    a.transport->run_tasks();  // the access decision: on to the engine, which loads
    return a;
  }
  std::function<void(std::optional<collab::StoredRoom>, std::string)> load_done;

  // What the database says about project p (the access directory the gateway reads).
  ProjectAccess access;
  bool hold_decisions = false;
  std::vector<std::function<void()>> held_decisions;

  Session::Clock::time_point t0{};
  collab::Hub hub{"n"};
  engines::MemoryRoomEngine engine;
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

// A revoked token never gets a welcome: the session waits for the database's answer.
TEST_F(SessionTest, NoWelcomeBeforeTheRevocationCheckAnswers) {
  std::vector<std::function<void(bool)>> asked;
  ctx.options.revocation_check = [&](const std::string&, std::int64_t, auto done) {
    asked.push_back(std::move(done));
  };
  auto a = connect("sa");
  auto b = connect("sb");
  hello(a, "ann");
  hello(b, "bob");
  a.session->on_text(R"({"t":"ping","id":5})", t0);
  ASSERT_EQ(asked.size(), 2u);
  EXPECT_TRUE(a.transport->frames.empty()) << "nothing before the answer";
  asked[0](false);
  ASSERT_EQ(a.transport->frames.size(), 2u);
  EXPECT_EQ(json::parse(a.transport->frames[0]).at("t").as_string(), "welcome");
  EXPECT_EQ(a.transport->last().at("t").as_string(), "pong") << "held frames follow";
  asked[1](true);
  EXPECT_TRUE(b.transport->frames.empty()) << "a revoked token gets no welcome";
  ASSERT_TRUE(b.transport->closed);
  EXPECT_EQ(b.transport->closed->first, Close::Forbidden);
}

// --- access from live membership, not from the token --------------------------------

TEST_F(SessionTest, TheTokensRolesClaimGrantsNothing) {
  access.roles.erase("ann");
  auto a = connect("sa");
  hello(a, "ann", R"({"p":"owner"})");
  a.session->on_text(R"({"t":"join","id":2,"room":"p/s"})", t0);
  auto n = a.transport->last();
  EXPECT_EQ(n.at("t").as_string(), "nack");
  EXPECT_EQ(n.at("code").as_string(), "forbidden");
}

TEST_F(SessionTest, AMemberWithoutRolesInTheTokenJoins) {
  auto a = connect("sa");
  hello(a, "ann", "{}");
  a.session->on_text(R"({"t":"join","id":2,"room":"p/s"})", t0);
  EXPECT_EQ(a.transport->last().at("t").as_string(), "joined");
}

TEST_F(SessionTest, ARoomWithoutAScene_IsNotFound) {
  auto a = connect("sa");
  hello(a, "ann");
  a.session->on_text(R"({"t":"join","id":2,"room":"p/nope"})", t0);
  auto n = a.transport->last();
  EXPECT_EQ(n.at("code").as_string(), "not_found");
  EXPECT_NE(std::string(n.at("message").as_string()).find("POST /v1/projects/p/scenes"),
            std::string::npos);
  // The slot is free again: the same join works once the scene exists.
  access.scenes.insert("nope");
  a.session->on_text(R"({"t":"join","id":3,"room":"p/nope"})", t0);
  EXPECT_EQ(a.transport->last().at("t").as_string(), "joined");
}

TEST_F(SessionTest, FramesAfterAJoinWaitForTheAccessDecision) {
  hold_decisions = true;
  auto a = connect("sa");
  a.transport->deferred = true;
  hello(a, "ann");
  a.session->on_text(R"({"t":"join","id":2,"room":"p/s"})", t0);
  a.session->on_text(
      R"({"t":"op","id":3,"room":"p/s","ops":[{"op":"create","entity":"e","parent":"root"}]})", t0);
  a.transport->run_tasks();
  ASSERT_EQ(a.transport->frames.size(), 1u) << "only the welcome";
  ASSERT_EQ(held_decisions.size(), 1u);
  held_decisions[0]();
  a.transport->run_tasks();
  ASSERT_EQ(a.transport->frames.size(), 3u);
  EXPECT_EQ(json::parse(a.transport->frames[1]).at("t").as_string(), "joined");
  EXPECT_EQ(json::parse(a.transport->frames[2]).at("t").as_string(), "ack");
}

// protocol.md, Limits: at most kMaxHeldFrames frames wait behind an unanswered join; one
// more closes 4029 and counts a `held_frames` trip (frames paced under the message rate, so
// that limit is not the one met).
TEST_F(SessionTest, FramesPastTheHeldLimitBehindAJoinClose4029AndAreCounted) {
  metrics::Registry reg;
  auto& trips = reg.counter("kiln_gateway_limit_trips_total", "trips", {"limit"});
  ctx.metrics.limit_trips = &trips;
  hold_decisions = true;
  auto a = connect("sa");
  hello(a, "ann");
  a.session->on_text(R"({"t":"join","id":2,"room":"p/s"})", t0);
  std::size_t sent = 0;
  for (; sent <= Session::kMaxHeldFrames && !a.transport->closed; ++sent) {
    a.session->on_text(R"({"t":"ping","id":)" + std::to_string(sent + 3) + "}",
                       t0 + std::chrono::milliseconds(150 * (sent + 1)));
  }
  ASSERT_TRUE(a.transport->closed);
  EXPECT_EQ(a.transport->closed->first, Close::RateLimited);
  EXPECT_EQ(sent, Session::kMaxHeldFrames + 1) << "closed at the frame past the limit";
  EXPECT_EQ(trips.with({"held_frames"}).value(), 1u);
  EXPECT_EQ(trips.with({"messages_per_second"}).value(), 0u);
}

struct InRoom : SessionTest {
  Peer a = connect("sa");
  void SetUp() override {
    hello(a, "ann");
    a.session->on_text(R"({"t":"join","id":2,"room":"p/s"})", t0);
    a.session->on_text(R"({"t":"join","id":3,"room":"p/t"})", t0);
    ASSERT_EQ(a.transport->last().at("t").as_string(), "joined");
  }
  void op(int id, const char* room) {
    a.session->on_text(R"({"t":"op","id":)" + std::to_string(id) + R"(,"room":")" + room +
                           R"(","ops":[{"op":"create","entity":"e)" + std::to_string(id) +
                           R"(","parent":"root"}]})",
                       t0 + std::chrono::seconds(id));
  }
};

TEST_F(InRoom, ADemotionReadFromTheDatabaseIsAppliedAndTold) {
  access.roles["ann"] = auth::Role::Viewer;
  a.session->revalidate("p", access);
  auto n = a.transport->last();
  EXPECT_EQ(n.at("t").as_string(), "notify");
  op(10, "p/s");
  EXPECT_EQ(a.transport->last().at("message").as_string(), "viewers cannot edit");
  EXPECT_FALSE(a.transport->closed);
}

TEST_F(InRoom, ARemovalReadFromTheDatabaseCloses4003) {
  access.roles.erase("ann");
  a.session->revalidate("p", access);
  ASSERT_TRUE(a.transport->closed);
  EXPECT_EQ(a.transport->closed->first, Close::Forbidden);
  EXPECT_NE(a.transport->closed->second.find("removed"), std::string::npos);
}

TEST_F(InRoom, ADeletedProjectCloses4003) {
  access = ProjectAccess{};
  a.session->revalidate("p", access);
  ASSERT_TRUE(a.transport->closed);
  EXPECT_NE(a.transport->closed->second.find("deleted"), std::string::npos);
}

TEST_F(InRoom, ADeletedSceneEndsOnlyItsRoom) {
  access.scenes.erase("s");
  a.session->revalidate("p", access);
  auto left = a.transport->last();
  EXPECT_EQ(left.at("t").as_string(), "left");
  EXPECT_EQ(left.at("room").as_string(), "p/s");
  EXPECT_TRUE(left.contains("reason"));
  EXPECT_FALSE(a.transport->closed);
  op(10, "p/s");
  EXPECT_EQ(a.transport->last().at("message").as_string(), "join the room first");
  op(11, "p/t");
  EXPECT_EQ(a.transport->last().at("t").as_string(), "ack");
}

TEST_F(InRoom, ASceneDeletedOnTheBusEndsItsRoom) {
  collab::AccessChange c;
  c.kind = collab::AccessChange::Kind::SceneDeleted;
  c.project = "p";
  c.scene = "t";
  a.session->apply_access(c);
  EXPECT_EQ(a.transport->last().at("room").as_string(), "p/t");
  EXPECT_EQ(a.session->projects(), std::vector<std::string>{"p"});
}

TEST_F(InRoom, NothingChangedSendsNothing) {
  const auto before = a.transport->frames.size();
  a.session->revalidate("p", access);
  a.session->revalidate("other", ProjectAccess{});
  EXPECT_EQ(a.transport->frames.size(), before);
  EXPECT_FALSE(a.transport->closed);
}

// A role announced on the access bus: told when it changes the session's role in its rooms
// or names a project the session has no room of; the role the session already has (an
// announcement arriving after the join read it) is not news.
TEST_F(InRoom, ARoleOnTheBusIsToldOnlyWhenItIsNews) {
  collab::AccessChange c;
  c.kind = collab::AccessChange::Kind::Role;
  c.user = "ann";
  c.project = "p";
  c.role = auth::to_string(access.roles.at("ann"));
  const auto before = a.transport->frames.size();
  a.session->apply_access(c);
  EXPECT_EQ(a.transport->frames.size(), before) << "the role it has";
  c.role = "viewer";
  a.session->apply_access(c);
  EXPECT_EQ(a.transport->last().at("t").as_string(), "notify");
  EXPECT_EQ(a.transport->last().at("role").as_string(), "viewer");
  op(10, "p/s");
  EXPECT_EQ(a.transport->last().at("message").as_string(), "viewers cannot edit");
  c.project = "elsewhere";
  c.role = "editor";
  a.session->apply_access(c);
  EXPECT_EQ(a.transport->last().at("project").as_string(), "elsewhere")
      << "a role in a new project";
}

// Reads of the database answer out of order with the bus: a read begun before a change
// (numbered below the change's known_from) must not undo it when it answers after. The e2e
// suite on Redis Cluster once saw a promotion told, then undone by such a read, and the
// promoted member's next op refused.
TEST_F(InRoom, AReadOlderThanAnAnnouncedChangeDoesNotUndoIt) {
  collab::AccessChange c;
  c.kind = collab::AccessChange::Kind::Role;
  c.user = "ann";
  c.project = "p";
  c.role = "viewer";
  a.session->apply_access(c, 7);
  EXPECT_EQ(a.transport->last().at("role").as_string(), "viewer");
  const auto told = a.transport->frames.size();
  ProjectAccess before = access;  // ann still an editor: read before the change
  before.read = 6;
  a.session->revalidate("p", before);
  EXPECT_EQ(a.transport->frames.size(), told) << "nothing told from the older read";
  op(10, "p/s");
  EXPECT_EQ(a.transport->last().at("message").as_string(), "viewers cannot edit");
  // Reads from the change on apply: the database promotes her again.
  access.read = 8;
  a.session->revalidate("p", access);
  EXPECT_EQ(a.transport->last().at("role").as_string(), "editor");
  op(11, "p/s");
  EXPECT_EQ(a.transport->last().at("t").as_string(), "ack");
  // Another project's change does not hold back this one's reads.
  c.project = "q";
  a.session->apply_access(c, 100);
  access.read = 9;
  access.roles["ann"] = auth::Role::Viewer;
  a.session->revalidate("p", access);
  EXPECT_EQ(a.transport->last().at("role").as_string(), "viewer");
}

// A join whose decision was read before a change announced while it waited is decided
// again, from a read that reflects the change.
TEST_F(SessionTest, AJoinDecidedFromAReadOlderThanAnAnnouncedChangeIsDecidedAgain) {
  auto a = connect("sa");
  hello(a, "ann");
  hold_decisions = true;
  access.read = 3;  // ann an editor
  a.session->on_text(R"({"t":"join","id":2,"room":"p/s"})", t0);
  ASSERT_EQ(held_decisions.size(), 1u);
  collab::AccessChange c;
  c.kind = collab::AccessChange::Kind::Role;
  c.user = "ann";
  c.project = "p";
  c.role = "viewer";
  a.session->apply_access(c, 4);
  access.roles["ann"] = auth::Role::Viewer;  // what reads from 4 on say
  auto stale = std::move(held_decisions.front());
  held_decisions.clear();
  access.read = 3;
  stale();
  ASSERT_EQ(held_decisions.size(), 1u) << "asked again";
  EXPECT_NE(a.transport->last().at("t").as_string(), "joined");
  access.read = 4;
  held_decisions.front()();
  EXPECT_EQ(a.transport->last().at("t").as_string(), "joined");
  a.session->on_text(
      R"({"t":"op","id":3,"room":"p/s","ops":[{"op":"create","entity":"e","parent":"root"}]})", t0);
  EXPECT_EQ(a.transport->last().at("message").as_string(), "viewers cannot edit");
}

// A scene deleted while a join of its room waited: the join is refused, and the session is
// not left a member of a room it does not hold.
TEST_F(SessionTest, ASceneDeletedWhileItsJoinWaitsEndsTheJoin) {
  auto a = connect("sa");
  hello(a, "ann");
  hold_decisions = true;
  a.session->on_text(R"({"t":"join","id":2,"room":"p/s"})", t0);
  collab::AccessChange c;
  c.kind = collab::AccessChange::Kind::SceneDeleted;
  c.project = "p";
  c.scene = "s";
  a.session->apply_access(c, 1);
  held_decisions.front()();  // let in by a read from before the deletion
  EXPECT_EQ(held_decisions.size(), 1u) << "nothing to ask again: the room is gone";
  auto n = a.transport->last();
  EXPECT_EQ(n.at("t").as_string(), "nack");
  EXPECT_EQ(n.at("code").as_string(), "not_found");
  EXPECT_TRUE(a.session->projects().empty());
  for (const auto& f : a.transport->frames)
    EXPECT_EQ(f.find(R"("t":"joined")"), std::string::npos) << f;
}

}  // namespace
}  // namespace kiln::gateway
