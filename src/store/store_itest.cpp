// The store conformance suite on PostgreSQL 15 through PgBouncer 1.18 in transaction
// pooling mode, plus what only PostgreSQL has: statement cancel, read routing to a
// streaming replica, read-your-writes against a replica whose replay is paused, and
// fallback when a replica is down. Servers: tests/servers/postgres.sh (CTest fixture).
#include "platform/ids.hpp"
#include "platform/metrics.hpp"
#include "store/repository_conformance.hpp"
#include "store/store_conformance.hpp"
#include "store/test_pg.hpp"

#include <cstdlib>
#include <sstream>

namespace kiln::store {
namespace {

INSTANTIATE_TEST_SUITE_P(PostgresViaPgBouncer, StoreConformance,
                         ::testing::Values(StoreFactory{"postgres", fresh_pg}),
                         [](const auto& info) { return info.param.name; });

TEST(Postgres, AStatementPastItsTimeoutIsCancelledAndTheConnectionStaysUsable) {
  auto o = fresh_pg();
  o.connect.statement_timeout = std::chrono::milliseconds(200);
  auto c = sql::connect(o.url, o.connect);
  const auto start = std::chrono::steady_clock::now();
  try {
    c->exec("SELECT pg_sleep(5)");
    FAIL() << "pg_sleep(5) returned";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::Timeout) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(4));
  EXPECT_EQ(c->exec("SELECT 41 + 1").rows.at(0).i64(0), 42);
}

TEST(Postgres, UnreachableServerIsUnavailableWithTheUrlRedacted) {
  sql::ConnectOptions co;
  co.connect_timeout = std::chrono::milliseconds(1000);
  try {
    sql::connect("postgresql://kiln:hunter2@127.0.0.1:1/kiln", co);
    FAIL() << "connected to port 1";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::Unavailable);
    EXPECT_EQ(std::string(e.what()).find("hunter2"), std::string::npos) << e.what();
  }
}

class Routing : public ::testing::Test {
 protected:
  void SetUp() override {
    auto o = fresh_pg();
    db_ = o.url.substr(o.url.rfind('/') + 1);
    o.read_urls = {url(env().replica, db_)};
    o.read_your_writes_wait = std::chrono::milliseconds(300);
    store_ = std::make_unique<Database>(o, &registry_);
    store_->migrate();
    projects_ = std::make_unique<Projects>(*store_);
  }
  void TearDown() override {
    // Never leave the shared replica paused.
    try {
      sql::connect(url(env().replica, "postgres"), {})->exec("SELECT pg_wal_replay_resume()");
    } catch (const Error&) {
    }
  }
  double reads(const std::string& target, const std::string& reason) {
    const auto text = registry_.render();
    const auto needle = "kiln_db_reads_total{target=\"" + target + "\",reason=\"" + reason + "\"} ";
    auto at = text.find(needle);
    return at == std::string::npos ? -1 : std::stod(text.substr(at + needle.size()));
  }
  metrics::Registry registry_;
  std::string db_;
  std::unique_ptr<Database> store_;
  std::unique_ptr<Projects> projects_;
};

TEST_F(Routing, ReadsGoToTheReplicaWritesToThePrimary) {
  auto r = projects_->create_project(Project{"p1", "One", "u1", 0, {}}, "u1");
  EXPECT_FALSE(r.lsn.empty()) << "a write with replicas configured returns its LSN";
  // The replica replays the migrations and the write within moments; a read with the
  // receipt that comes before it does goes to the primary (reason "lag"), so ask until the
  // replica serves one (bounded): the point is that it does, with the receipt honoured.
  std::optional<Project> got;
  for (int i = 0; i < 50 && reads("replica", "ok") < 1; ++i) {
    got = projects_->get_project("p1", r);
    ASSERT_TRUE(got);
  }
  EXPECT_EQ(reads("replica", "ok"), 1);
  // The replica really served it: it is in recovery.
  bool in_recovery = false;
  store_->read({}, [&](Connection& c) {
    in_recovery = c.exec("SELECT pg_is_in_recovery()").rows.at(0).i64(0) == 1;
  });
  EXPECT_TRUE(in_recovery);
}

TEST_F(Routing, ReadYourWritesWithAPausedReplicaGoesToThePrimary) {
  auto first = projects_->create_project(Project{"before", "Before", "u1", 0, {}}, "u1");
  // Wait until the replica has it (a read with the receipt that the replica serves), then
  // pause replay.
  for (int i = 0; i < 50; ++i) {
    const auto served = reads("replica", "ok");
    projects_->list_projects("u1", first);
    if (reads("replica", "ok") > served) break;
  }
  {
    // A pause is only requested at first: wait (bounded) until it is in effect.
    auto replica = sql::connect(url(env().replica, "postgres"), {});
    replica->exec("SELECT pg_wal_replay_pause()");
    for (int i = 0; i < 200; ++i) {
      if (replica->exec("SELECT pg_get_wal_replay_pause_state()").rows.at(0).str(0) == "paused")
        break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  auto receipt = projects_->create_project(Project{"after", "After", "u1", 0, {}}, "u1");
  // Without the receipt: the replica answers, and it does not have the write (proof that
  // the replica is lagging and that reads do go to it).
  auto stale = projects_->list_projects("u1", {});
  EXPECT_EQ(stale.size(), 1u);
  // With the receipt: the replica cannot show the write in time, so the primary answers.
  const auto before_lag = reads("primary", "lag");
  auto fresh = projects_->list_projects("u1", receipt);
  ASSERT_EQ(fresh.size(), 2u);
  EXPECT_EQ(fresh[0].id, "after");
  EXPECT_EQ(reads("primary", "lag"), before_lag + 1);

  // Resumed, the replica catches up and serves the same read.
  sql::connect(url(env().replica, "postgres"), {})->exec("SELECT pg_wal_replay_resume()");
  const auto before_ok = reads("replica", "ok");
  auto again = projects_->list_projects("u1", receipt);
  EXPECT_EQ(again.size(), 2u);
  EXPECT_EQ(reads("replica", "ok"), before_ok + 1);
}

TEST_F(Routing, AReplicaThatIsDownFallsBackToThePrimaryAndIsCounted) {
  auto o = fresh_pg();
  o.read_urls = {"postgresql://postgres@127.0.0.1:1/nothing"};
  o.connect.connect_timeout = std::chrono::milliseconds(1000);
  metrics::Registry reg;
  Database s(o, &reg);
  s.migrate();
  Projects projects(s);
  projects.create_project(Project{"p", "P", "u", 0, {}}, "u");
  EXPECT_EQ(projects.list_projects("u", {}).size(), 1u);
  EXPECT_EQ(projects.list_projects("u", {}).size(), 1u);  // skipped this time (replica_retry)
  const auto text = reg.render();
  EXPECT_NE(text.find("kiln_db_reads_total{target=\"primary\",reason=\"replica_down\"} 2"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("kiln_db_replica_failures_total 1"), std::string::npos) << text;
}

}  // namespace
}  // namespace kiln::store
