// Session logic without sockets: frames in, frames and closes out.
#include "gateway/test_session.hpp"

namespace kiln::gateway::test {
namespace {

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

}  // namespace
}  // namespace kiln::gateway::test
