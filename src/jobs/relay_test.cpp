// The outbox relay on SQLite: events become jobs exactly once and in order, a relay that
// died between the enqueue and the mark makes no second job, two relays at once make one
// job per event, and events that call for no job are consumed.
#include "jobs/relay.hpp"
#include "jobs/test_queue.hpp"

#include <gtest/gtest.h>

#include <filesystem>

namespace kiln::jobs {
namespace {

store::DatabaseOptions sqlite() {
  return temp_sqlite("relay-test");
}

class RelayTest : public ::testing::Test {
 protected:
  RelayTest() : opts_(sqlite()), h_(opts_), db_(opts_) {}

  std::string event(const std::string& kind, const std::string& asset, std::int64_t at) {
    std::string id;
    db_.write([&](sql::Connection& c) {
      id = store::outbox::append(
               c, kind, "p1",
               R"({"id":")" + asset + R"(","sha256":"ab","content_type":"model/gltf-binary"})", at)
               .id;
    });
    return id;
  }
  std::vector<Job> jobs() {
    auto r = h_.queue().list(ListRequest{std::nullopt, "", "", 500});
    EXPECT_TRUE(r);
    return r ? *r : std::vector<Job>{};
  }
  std::size_t pending() {
    std::size_t n = 0;
    db_.on_primary([&](sql::Connection& c) { n = store::outbox::pending(c, 1000).size(); });
    return n;
  }

  store::DatabaseOptions opts_;
  DatabaseHarness h_;  // migrates the database
  store::Database db_;
};

TEST_F(RelayTest, EventsBecomeJobsOnceAndInOrder) {
  const auto e1 = event("asset.uploaded", "a1", 1000);
  const auto gone = event("asset.deleted", "a0", 1500);
  const auto skip = event("scene.renamed", "s0", 1700);
  const auto e2 = event("asset.uploaded", "a2", 2000);
  const auto again = event("asset.process_requested", "a1", 2500);  // POST .../process
  OutboxRelay relay(db_, h_.queue(), RelayOptions{"node-1", std::chrono::seconds(10), 100});
  auto p = relay.pass();
  EXPECT_FALSE(p.error);
  EXPECT_EQ(p.relayed, 4u);
  EXPECT_EQ(p.skipped, 1u);
  EXPECT_EQ(pending(), 0u);
  auto all = jobs();
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[0].type, "asset.process");
  EXPECT_EQ(all[0].idempotency_key, "event:" + e1);
  EXPECT_NE(all[0].payload.find(R"("asset":"a1")"), std::string::npos) << all[0].payload;
  EXPECT_EQ(all[1].type, "asset.cleanup");
  EXPECT_EQ(all[1].idempotency_key, "event:" + gone);
  EXPECT_NE(all[1].payload.find(R"("asset":"a0")"), std::string::npos) << all[1].payload;
  EXPECT_EQ(all[2].idempotency_key, "event:" + e2);
  EXPECT_EQ(all[3].type, "asset.process");
  EXPECT_EQ(all[3].idempotency_key, "event:" + again);
  EXPECT_NE(all[3].payload.find(R"("asset":"a1")"), std::string::npos) << all[3].payload;
  EXPECT_EQ(relay.pass().relayed, 0u) << "consumed events make nothing twice";
  EXPECT_EQ(jobs().size(), 4u);
  (void)skip;
}

TEST_F(RelayTest, ARelayThatDiedBeforeMarkingMakesNoSecondJob) {
  const auto id = event("asset.uploaded", "a1", 1000);
  // The dead relay's enqueue went through; its mark did not.
  store::Event e{id, "asset.uploaded", "p1", R"({"id":"a1"})", 1000};
  ASSERT_TRUE(h_.queue().enqueue(*job_for(e)));
  OutboxRelay relay(db_, h_.queue(), RelayOptions{"node-1", std::chrono::seconds(10), 100});
  EXPECT_EQ(relay.pass().relayed, 1u);
  EXPECT_EQ(jobs().size(), 1u);
  EXPECT_EQ(pending(), 0u);
}

TEST_F(RelayTest, TwoRelaysAtOnceMakeOneJobPerEvent) {
  for (int i = 0; i < 50; ++i) event("asset.uploaded", "a" + std::to_string(i), 1000 + i);
  OutboxRelay one(db_, h_.queue(), RelayOptions{"node-1", std::chrono::seconds(10), 100});
  OutboxRelay two(db_, h_.queue(), RelayOptions{"node-2", std::chrono::seconds(10), 100});
  RelayPass a, b;
  std::thread t([&] { a = one.pass(); });
  b = two.pass();
  t.join();
  EXPECT_TRUE(a.leased_elsewhere != b.leased_elsewhere) << "one relay holds the lease";
  EXPECT_EQ(a.relayed + b.relayed, 50u);
  EXPECT_EQ(jobs().size(), 50u);
}

}  // namespace
}  // namespace kiln::jobs
