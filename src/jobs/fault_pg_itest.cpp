// The database briefly unreachable under running worker processes (fault_worker.cpp) on
// PostgreSQL through PgBouncer: the primary stops, workers' leases fail and they back off,
// an enqueue is refused as `unavailable` (never lost silently), reports of work done meanwhile
// are retried while their lease lasts, and once the primary is back every job enqueued
// before and after runs exactly once, with the same workers. Servers:
// the `postgres` fixture; this test stops its primary (hence the fixture's lock).
#include "jobs/database_queue.hpp"
#include "jobs/test_process.hpp"
#include "store/test_pg.hpp"

#include <gtest/gtest.h>

#include <cstdlib>

namespace kiln::jobs {
namespace {

using namespace std::chrono_literals;

void primary(const char* command) {
  const std::string cmd =
      std::string("bash ") + KILN_PG_SCRIPT + " " + command + " " + KILN_PG_DIR + " >/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

TEST(DatabaseFaults, WorkersOutliveABriefDatabaseOutageAndRunEveryJobOnce) {
  const auto options = store::fresh_pg();
  store::Database db(options);
  db.migrate();
  DatabaseQueue q(db, {});
  // As a client would: `unavailable` is retried (PgBouncer refuses logins for a moment
  // after the primary comes back, server_login_retry), anything else is a failure.
  auto add = [&] {
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    for (;;) {
      auto e = q.enqueue(NewJob{"t.ok", "{}", "", 0, 0});
      if (e) return e->id;
      if (e.error().code != Errc::unavailable || std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << e.error().detail;
        return std::string();
      }
      std::this_thread::sleep_for(200ms);  // its Retry-After
    }
  };
  std::vector<std::string> ids;
  for (int i = 0; i < 10; ++i) ids.push_back(add());
  // Leases longer than the outage: a job in flight when the database stops keeps its lease,
  // and its worker's report, retried until the database is back, lands (no second run).
  // Through PgBouncer a 2 s stop looks longer: workers were refused ("server login has been
  // failing") for about 15 s after the primary was back (observed; PgBouncer's
  // server_connect_timeout is 15 s), so the lease is a minute.
  ::setenv("KILN_FAULT_LEASE_MS", "60000", 1);
  Child a({KILN_FAULT_WORKER, "worker-a", options.url});
  Child b({KILN_FAULT_WORKER, "worker-b", options.url});
  ASSERT_EQ(a.wait_line("ready", 30s), "ready");
  ASSERT_EQ(b.wait_line("ready", 30s), "ready");

  primary("stop-primary");
  auto refused = q.enqueue(NewJob{"t.ok", "{}", "", 0, 0});
  ASSERT_FALSE(refused) << "an enqueue succeeded with the database down";
  EXPECT_EQ(refused.error().code, Errc::unavailable) << refused.error().detail;
  // The workers meet the outage (a lease or a report fails) and stay up.
  EXPECT_NE(a.wait_line("the database cannot answer now", 30s, true), "")
      << "worker-a never met the outage";
  primary("start-primary");
  for (int i = 0; i < 10; ++i) ids.push_back(add());

  const auto deadline = std::chrono::steady_clock::now() + 90s;
  std::size_t done = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    auto page = q.list(ListRequest{State::succeeded, "t.ok", "", 100});
    if (page && page->size() == ids.size()) {
      done = page->size();
      break;
    }
    std::this_thread::sleep_for(50ms);  // the database's state, polled as a client would
  }
  EXPECT_EQ(done, ids.size()) << "jobs left after the database came back";
  for (const auto& id : ids) {
    auto j = q.get(id);
    ASSERT_TRUE(j);
    std::string history;
    for (const auto& h : j->history)
      history += " [" + std::to_string(h.number) + " " + h.worker + " " + h.outcome + " " +
                 h.error + " " + std::to_string(h.started_at) + "-" + std::to_string(h.ended_at) +
                 "]";
    EXPECT_EQ(j->attempts, 1) << id << " ran more than once:" << history;
  }
  for (auto* w : {&a, &b}) {
    EXPECT_EQ(w->wait_exit(0ms), std::nullopt) << "a worker died in the outage";
    w->signal(SIGTERM);
    EXPECT_EQ(w->wait_exit(20s), 0);
  }
}

}  // namespace
}  // namespace kiln::jobs
