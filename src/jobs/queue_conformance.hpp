// The JobQueue conformance suite: what every adapter promises (docs/jobs.md), run on the
// database adapter over SQLite (queue_test.cpp) and over PostgreSQL through PgBouncer
// (queue_itest.cpp), and on the RabbitMQ adapter (rabbitmq_itest.cpp). Time is moved by the
// harness (a clock offset), never waited for; the backoff's jitter is a fixed draw.
#pragma once

#include "jobs/test_harness.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

namespace kiln::jobs {

class QueueConformance : public ::testing::TestWithParam<QueueFactory> {
 protected:
  void SetUp() override { h_ = GetParam().make(); }
  JobQueue& q() { return h_->queue(); }

  std::string add(const std::string& type, int priority = 0, std::string key = {},
                  std::string payload = "{}") {
    NewJob n;
    n.type = type;
    n.priority = priority;
    n.idempotency_key = std::move(key);
    n.payload = std::move(payload);
    auto r = q().enqueue(n);
    EXPECT_TRUE(r) << (r ? "" : r.error().detail);
    return r ? r->id : "";
  }
  std::vector<Lease> take(const std::vector<std::string>& types, std::size_t n = 1,
                          const std::string& worker = "w1",
                          std::chrono::milliseconds lease = std::chrono::seconds(30)) {
    auto r = q().lease(LeaseRequest{worker, types, n, lease, GetParam().lease_wait});
    EXPECT_TRUE(r) << (r ? "" : r.error().detail);
    return r ? *r : std::vector<Lease>{};
  }
  Job job(const std::string& id) {
    auto r = q().get(id);
    EXPECT_TRUE(r) << (r ? "" : r.error().detail);
    return r ? *r : Job{};
  }

  std::unique_ptr<QueueHarness> h_;
};

TEST_P(QueueConformance, AJobIsLeasedOnceAndSucceedsWithItsResultAndHistory) {
  const auto id = add("t.work", 0, "", R"({"asset":"a1"})");
  auto leases = take({"t.work"});
  ASSERT_EQ(leases.size(), 1u);
  EXPECT_EQ(leases[0].ref.job, id);
  EXPECT_EQ(leases[0].ref.attempt, 1);
  EXPECT_EQ(leases[0].payload, R"({"asset":"a1"})");
  EXPECT_TRUE(take({"t.work"}).empty()) << "a leased job is not leased again";
  auto beat = q().heartbeat(leases[0].ref, 40, "halfway", std::chrono::seconds(30));
  ASSERT_TRUE(beat);
  EXPECT_FALSE(beat->cancel_requested);
  EXPECT_EQ(job(id).progress, 40);
  EXPECT_EQ(job(id).status, "halfway");
  ASSERT_TRUE(q().complete(leases[0].ref, R"({"levels":3})"));
  const auto done = job(id);
  EXPECT_EQ(done.state, State::succeeded);
  EXPECT_EQ(done.result, R"({"levels":3})");
  EXPECT_EQ(done.progress, 100);
  EXPECT_GT(done.finished_at, 0);
  ASSERT_EQ(done.history.size(), 1u);
  EXPECT_EQ(done.history[0].worker, "w1");
  EXPECT_EQ(done.history[0].outcome, "succeeded");
  // A finished job's lease answers lease_lost: nothing reports twice.
  auto again = q().complete(leases[0].ref, "{}");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Errc::lease_lost);
}

TEST_P(QueueConformance, AnIdempotencyKeyNamesOneJobPerType) {
  NewJob n{"t.work", R"({"x":1})", "upload-7", 0, 0};
  auto first = q().enqueue(n);
  auto second = q().enqueue(n);
  ASSERT_TRUE(first && second);
  EXPECT_TRUE(first->created);
  EXPECT_FALSE(second->created);
  EXPECT_EQ(first->id, second->id);
  n.payload = R"({"x":2})";
  auto other = q().enqueue(n);
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().code, Errc::conflict);
  n.type = "t.other";  // the key is per type
  auto elsewhere = q().enqueue(n);
  ASSERT_TRUE(elsewhere);
  EXPECT_TRUE(elsewhere->created);
}

TEST_P(QueueConformance, ConcurrentEnqueuesWithOneKeyMakeOneJob) {
  std::vector<std::thread> threads;
  std::mutex mu;
  std::set<std::string> ids;
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&] {
      auto r = q().enqueue(NewJob{"t.work", "{}", "same-key", 0, 0});
      ASSERT_TRUE(r) << r.error().detail;
      std::lock_guard lock(mu);
      ids.insert(r->id);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ids.size(), 1u);
}

TEST_P(QueueConformance, HigherPriorityFirstThenTheLongestWaiting) {
  if (!GetParam().orders_by_priority)
    GTEST_SKIP() << GetParam().name << " starts jobs in publication order (docs/jobs.md)";
  const auto low = add("t.work", -5);
  const auto old = add("t.work", 0);
  h_->advance(std::chrono::milliseconds(10));
  const auto young = add("t.work", 0);
  const auto high = add("t.work", 7);
  std::vector<std::string> order;
  for (const auto& l : take({"t.work"}, 10)) order.push_back(l.ref.job);
  EXPECT_EQ(order, (std::vector<std::string>{high, old, young, low}));
}

TEST_P(QueueConformance, OnlyTheTypesAskedForAreLeased) {
  const auto a = add("t.a");
  add("t.b");
  auto got = take({"t.a", "t.c"}, 10);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].ref.job, a);
}

TEST_P(QueueConformance, NotBeforeHoldsAJobBack) {
  auto now = q().enqueue(NewJob{"t.work", "{}", "", 0, 0});
  ASSERT_TRUE(now);
  const auto created = job(now->id).created_at;
  auto later = q().enqueue(NewJob{"t.later", "{}", "", 0, created + 60'000});
  ASSERT_TRUE(later);
  EXPECT_TRUE(take({"t.later"}).empty());
  h_->advance(std::chrono::seconds(61));
  ASSERT_EQ(take({"t.later"}).size(), 1u);
}

TEST_P(QueueConformance, ARetryableFailureBacksOffWithJitterUntilItsAttemptsAreSpent) {
  const auto id = add("t.flaky");  // 3 attempts, base 10 s, cap 15 s
  h_->jitter = 0.5;
  for (int attempt = 1; attempt <= 3; ++attempt) {
    auto l = take({"t.flaky"});
    ASSERT_EQ(l.size(), 1u) << "attempt " << attempt;
    EXPECT_EQ(l[0].ref.attempt, attempt);
    auto f =
        q().fail(l[0].ref, FailReport{Failure::retryable, "timeout " + std::to_string(attempt)});
    ASSERT_TRUE(f);
    if (attempt < 3) {
      EXPECT_EQ(f->state, State::queued);
      // Full jitter, draw 0.5: half of min(15 s, 10 s * 2^(attempt-1)): 5 s, then 7.5 s.
      const std::int64_t wait = std::min<std::int64_t>(15'000, 10'000LL << (attempt - 1)) / 2;
      EXPECT_EQ(f->retry_at_ms, job(id).updated_at + wait);
      EXPECT_TRUE(take({"t.flaky"}).empty()) << "leased again before its backoff";
      h_->advance(std::chrono::milliseconds(wait));
    } else {
      EXPECT_EQ(f->state, State::dead);
    }
  }
  const auto dead = job(id);
  EXPECT_EQ(dead.state, State::dead);
  EXPECT_EQ(dead.last_error, "timeout 3");
  ASSERT_EQ(dead.history.size(), 3u);
  for (const auto& a : dead.history) EXPECT_EQ(a.outcome, "failed");
  EXPECT_TRUE(take({"t.flaky"}).empty());
}

TEST_P(QueueConformance, APermanentFailureIsDeadAtOnce) {
  const auto id = add("t.work");
  auto l = take({"t.work"});
  ASSERT_EQ(l.size(), 1u);
  auto f = q().fail(l[0].ref, FailReport{Failure::permanent, "not a glTF file"});
  ASSERT_TRUE(f);
  EXPECT_EQ(f->state, State::dead);
  EXPECT_EQ(job(id).last_error, "not a glTF file");
  EXPECT_EQ(job(id).attempts, 1);
}

// A worker that dies mid-job: its lease expires, the job goes to another worker as the next
// attempt after its backoff, and the dead worker's late report is refused (the fence).
TEST_P(QueueConformance, AnExpiredLeaseIsAFailedAttemptAndItsHolderIsFencedOff) {
  const auto id = add("t.work");
  auto first = take({"t.work"}, 1, "w-dies", std::chrono::seconds(10));
  ASSERT_EQ(first.size(), 1u);
  h_->advance(std::chrono::seconds(9));
  EXPECT_TRUE(take({"t.work"}, 1, "w2").empty()) << "taken before its lease ended";
  h_->advance(std::chrono::seconds(2));
  EXPECT_TRUE(take({"t.work"}, 1, "w2").empty()) << "an expired lease waits out its backoff";
  EXPECT_EQ(job(id).state, State::queued);
  h_->advance(std::chrono::milliseconds(500));  // draw 0.5 of 1 s
  auto second = take({"t.work"}, 1, "w2");
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].ref.attempt, 2);
  auto late = q().complete(first[0].ref, "{}");
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().code, Errc::lease_lost);
  auto beat = q().heartbeat(first[0].ref, 50, "", std::chrono::seconds(10));
  ASSERT_FALSE(beat);
  EXPECT_EQ(beat.error().code, Errc::lease_lost);
  ASSERT_TRUE(q().complete(second[0].ref, "{}"));
  const auto done = job(id);
  EXPECT_EQ(done.state, State::succeeded);
  ASSERT_EQ(done.history.size(), 2u);
  EXPECT_EQ(done.history[0].outcome, "expired");
  EXPECT_EQ(done.history[0].worker, "w-dies");
  EXPECT_EQ(done.history[1].outcome, "succeeded");
}

TEST_P(QueueConformance, AHeartbeatKeepsTheLease) {
  add("t.work");
  auto l = take({"t.work"}, 1, "w1", std::chrono::seconds(10));
  ASSERT_EQ(l.size(), 1u);
  for (int i = 0; i < 5; ++i) {
    h_->advance(std::chrono::seconds(8));
    ASSERT_TRUE(q().heartbeat(l[0].ref, i * 20, "working", std::chrono::seconds(10)));
  }
  EXPECT_TRUE(take({"t.work"}, 1, "w2").empty());
  EXPECT_TRUE(q().complete(l[0].ref, "{}"));
}

TEST_P(QueueConformance, CancelStopsAQueuedJobAtOnceAndALeasedOneAtItsNextHeartbeat) {
  const auto queued = add("t.work");
  auto c1 = q().cancel(queued);
  ASSERT_TRUE(c1);
  EXPECT_EQ(*c1, State::cancelled);
  EXPECT_TRUE(take({"t.work"}).empty());

  const auto running = add("t.work");
  auto l = take({"t.work"});
  ASSERT_EQ(l.size(), 1u);
  auto c2 = q().cancel(running);
  ASSERT_TRUE(c2);
  EXPECT_EQ(*c2, State::leased);
  auto beat = q().heartbeat(l[0].ref, 10, "", std::chrono::seconds(30));
  ASSERT_TRUE(beat);
  EXPECT_TRUE(beat->cancel_requested);
  auto f = q().fail(l[0].ref, FailReport{Failure::retryable, "cancelled by request"});
  ASSERT_TRUE(f);
  EXPECT_EQ(f->state, State::cancelled);
  EXPECT_EQ(job(running).state, State::cancelled);

  auto c3 = q().cancel(running);
  ASSERT_FALSE(c3);
  EXPECT_EQ(c3.error().code, Errc::finished);
  auto c4 = q().cancel("j-nope");
  ASSERT_FALSE(c4);
  EXPECT_EQ(c4.error().code, Errc::not_found);
}

TEST_P(QueueConformance, ACancelledJobWhoseWorkerDiedEndsCancelled) {
  const auto id = add("t.work");
  auto l = take({"t.work"}, 1, "w1", std::chrono::seconds(10));
  ASSERT_EQ(l.size(), 1u);
  ASSERT_TRUE(q().cancel(id));
  h_->advance(std::chrono::seconds(11));
  EXPECT_TRUE(take({"t.work"}).empty());  // reaps it
  EXPECT_EQ(job(id).state, State::cancelled);
}

// A lease that waits gets work enqueued while it waits.
TEST_P(QueueConformance, AWaitingLeaseGetsWorkEnqueuedMeanwhile) {
  EXPECT_TRUE(take({"t.later"}).empty());
  std::promise<std::vector<Lease>> got;
  std::thread waiter([&] {
    auto r = q().lease(
        LeaseRequest{"w1", {"t.later"}, 1, std::chrono::seconds(30), std::chrono::seconds(30)});
    got.set_value(r ? *r : std::vector<Lease>{});
  });
  const auto id = add("t.later");
  auto leases = got.get_future().get();
  waiter.join();
  ASSERT_EQ(leases.size(), 1u) << "the wait ended without the job";
  EXPECT_EQ(leases[0].ref.job, id);
}

// A draining worker hands its job back: ready for another worker at once, the attempt in
// the history but not against the limit, the releasing holder fenced off.
TEST_P(QueueConformance, AReleasedJobRunsAgainAtOnceWithoutSpendingAnAttempt) {
  const auto id = add("t.work");
  const int limit = job(id).max_attempts;
  auto first = take({"t.work"}, 1, "w-drains");
  ASSERT_EQ(first.size(), 1u);
  ASSERT_TRUE(q().release(first[0].ref, "worker stopping"));
  auto again = take({"t.work"}, 1, "w-next");
  ASSERT_EQ(again.size(), 1u) << "ready at once, no backoff";
  EXPECT_EQ(again[0].ref.attempt, 2);
  EXPECT_EQ(job(id).max_attempts, limit + 1) << "the handed-back attempt is not spent";
  auto stale = q().release(first[0].ref, "again");
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, Errc::lease_lost);
  ASSERT_TRUE(q().complete(again[0].ref, "{}"));
  const auto h = job(id).history;
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(h[0].outcome, "released");
  EXPECT_EQ(h[0].error, "worker stopping");
  EXPECT_EQ(h[0].worker, "w-drains");

  // A job whose cancel was asked for is cancelled, not queued again.
  const auto cancelled = add("t.work");
  auto l = take({"t.work"});
  ASSERT_EQ(l.size(), 1u);
  ASSERT_TRUE(q().cancel(cancelled));
  ASSERT_TRUE(q().release(l[0].ref, "worker stopping"));
  EXPECT_EQ(job(cancelled).state, State::cancelled);
  EXPECT_TRUE(take({"t.work"}).empty());
}

TEST_P(QueueConformance, ADeadJobRetriedRunsAgainWithItsHistoryKept) {
  const auto id = add("t.work");
  auto l = take({"t.work"});
  ASSERT_EQ(l.size(), 1u);
  ASSERT_TRUE(q().fail(l[0].ref, FailReport{Failure::permanent, "bad input"}));
  auto not_dead = q().retry(add("t.other"));
  ASSERT_FALSE(not_dead);
  EXPECT_EQ(not_dead.error().code, Errc::not_dead);
  ASSERT_TRUE(q().retry(id));
  auto again = take({"t.work"});
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].ref.attempt, 2);
  ASSERT_TRUE(q().complete(again[0].ref, "{}"));
  EXPECT_EQ(job(id).history.size(), 2u);
  EXPECT_EQ(job(id).finished_at > 0, true);
}

// Workers racing for one pile of jobs: every job is leased exactly once.
TEST_P(QueueConformance, ConcurrentWorkersNeverLeaseOneJobTwice) {
  constexpr int kJobs = 120;
  for (int i = 0; i < kJobs; ++i) add("t.pile");
  std::mutex mu;
  std::multiset<std::string> seen;
  std::vector<std::thread> workers;
  for (int w = 0; w < 4; ++w) {
    workers.emplace_back([&, w] {
      for (;;) {
        auto r = q().lease(LeaseRequest{"w" + std::to_string(w),
                                        {"t.pile"},
                                        5,
                                        std::chrono::seconds(60),
                                        GetParam().lease_wait});
        ASSERT_TRUE(r) << r.error().detail;
        if (r->empty()) return;
        for (const auto& l : *r) {
          {
            std::lock_guard lock(mu);
            seen.insert(l.ref.job);
          }
          ASSERT_TRUE(q().complete(l.ref, "{}"));
        }
      }
    });
  }
  for (auto& t : workers) t.join();
  EXPECT_EQ(seen.size(), static_cast<std::size_t>(kJobs));
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(),
            static_cast<std::size_t>(kJobs));
}

TEST_P(QueueConformance, BadInputIsRefusedNamingWhatIsWrong) {
  auto refused = [&](NewJob n, const std::string& says) {
    auto r = q().enqueue(n);
    ASSERT_FALSE(r) << n.type;
    EXPECT_EQ(r.error().code, Errc::invalid);
    EXPECT_NE(r.error().detail.find(says), std::string::npos) << r.error().detail;
  };
  refused(NewJob{"", "{}", "", 0, 0}, "'type'");
  refused(NewJob{"Asset.Process", "{}", "", 0, 0}, "'type'");
  refused(NewJob{"t.work", "{not json", "", 0, 0}, "'payload'");
  refused(NewJob{"t.work", "\"" + std::string(70'000, 'x') + "\"", "", 0, 0}, "'payload'");
  refused(NewJob{"t.work", "{}", "has space", 0, 0}, "'idempotency_key'");
  refused(NewJob{"t.work", "{}", "", 5000, 0}, "'priority'");
  for (const auto& bad : {LeaseRequest{"", {"t.work"}, 1, std::chrono::seconds(30)},
                          LeaseRequest{"w", {}, 1, std::chrono::seconds(30)},
                          LeaseRequest{"w", {"t.work"}, 0, std::chrono::seconds(30)},
                          LeaseRequest{"w", {"t.work"}, 1, std::chrono::milliseconds(1)}}) {
    auto r = q().lease(bad);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::invalid);
  }
  auto missing = q().get("j000000000000deadbeef");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::not_found);
  // A report longer than its limit is kept, cut (never refused: the worker's text).
  const auto id = add("t.work");
  auto l = take({"t.work"});
  ASSERT_EQ(l.size(), 1u);
  ASSERT_TRUE(q().heartbeat(l[0].ref, 500, std::string(500, 's'), std::chrono::seconds(30)));
  EXPECT_EQ(job(id).progress, 100);
  EXPECT_EQ(job(id).status.size(), kMaxStatusBytes);
  auto bad_result = q().complete(l[0].ref, "{oops");
  ASSERT_FALSE(bad_result);
  EXPECT_EQ(bad_result.error().code, Errc::invalid);
  EXPECT_EQ(job(id).state, State::leased) << "a refused report changes nothing";
}

// Retention: finished jobs go after their age (dead ones kept longer), with their history;
// what still waits or runs is never touched.
TEST_P(QueueConformance, APurgeDeletesOnlyFinishedJobsPastTheirAge) {
  const auto done = add("t.work");
  const auto dead = add("t.work");
  auto l = take({"t.work"}, 2);
  ASSERT_EQ(l.size(), 2u);
  for (const auto& x : l) {
    if (x.ref.job == done)
      ASSERT_TRUE(q().complete(x.ref, "{}"));
    else
      ASSERT_TRUE(q().fail(x.ref, FailReport{Failure::permanent, "bad"}));
  }
  const auto waiting = add("t.work");
  const auto running = add("t.run");
  ASSERT_EQ(take({"t.run"}).size(), 1u);
  h_->advance(std::chrono::hours(2));
  auto none = q().purge(std::chrono::hours(3), std::chrono::hours(3), 100);
  ASSERT_TRUE(none);
  EXPECT_EQ(*none, 0u) << "jobs younger than their age were purged";
  auto one = q().purge(std::chrono::hours(1), std::chrono::hours(24), 100);
  ASSERT_TRUE(one);
  EXPECT_EQ(*one, 1u);
  EXPECT_EQ(q().get(done).error().code, Errc::not_found);
  EXPECT_TRUE(q().get(dead)) << "a dead job is kept for its own, longer age";
  auto both = q().purge(std::chrono::hours(1), std::chrono::hours(1), 100);
  ASSERT_TRUE(both);
  EXPECT_EQ(*both, 1u);
  EXPECT_EQ(q().get(dead).error().code, Errc::not_found);
  EXPECT_EQ(q().get(waiting)->state, State::queued);
  EXPECT_EQ(q().get(running)->state, State::leased);
  EXPECT_FALSE(q().purge(std::chrono::hours(1), std::chrono::hours(1), 0)) << "a limit of 0";
}

TEST_P(QueueConformance, ListsPageByStateAndTypeAndStatsCountWhatWaits) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(add("t.a"));
  add("t.b");
  auto l = take({"t.b"});
  ASSERT_EQ(l.size(), 1u);
  auto page1 = q().list(ListRequest{State::queued, "t.a", "", 3});
  ASSERT_TRUE(page1);
  ASSERT_EQ(page1->size(), 3u);
  auto page2 = q().list(ListRequest{State::queued, "t.a", page1->back().id, 3});
  ASSERT_TRUE(page2);
  ASSERT_EQ(page2->size(), 2u);
  std::vector<std::string> listed;
  for (const auto* p : {&*page1, &*page2})
    for (const auto& j : *p) listed.push_back(j.id);
  EXPECT_EQ(listed, ids) << "ids sort by creation";
  auto leased = q().list(ListRequest{State::leased, "", "", 10});
  ASSERT_TRUE(leased);
  ASSERT_EQ(leased->size(), 1u);
  EXPECT_EQ(leased->at(0).type, "t.b");
  h_->advance(std::chrono::seconds(3));
  auto st = q().stats();
  ASSERT_TRUE(st);
  ASSERT_EQ(st->size(), 2u);
  EXPECT_EQ(st->at(0).type, "t.a");
  EXPECT_EQ(st->at(0).queued, 5);
  EXPECT_GE(st->at(0).oldest_ready_age_ms, 3000);
  EXPECT_EQ(st->at(1).leased, 1);
  EXPECT_EQ(st->at(1).oldest_ready_age_ms, 0);
  EXPECT_GE(st->at(1).oldest_lease_age_ms, 3000) << "the lease began 3 s ago";
  EXPECT_EQ(st->at(0).oldest_lease_age_ms, 0) << "t.a has no lease";
}

}  // namespace kiln::jobs
