// The worker over the database queue on SQLite: handlers run within their limits, a
// cancellation reaches a running handler through its heartbeat, a handler's exception is a
// retryable failure, and a drain waits for running handlers, then hands back the jobs of
// those that do not finish. Synchronised on the handlers' own signals and on drain(), never
// on sleeps.
#include "jobs/worker.hpp"
#include "jobs/test_queue.hpp"

#include <gtest/gtest.h>

#include <condition_variable>
#include <filesystem>
#include <future>

namespace kiln::jobs {
namespace {

store::DatabaseOptions sqlite() {
  return temp_sqlite("worker-test");
}

WorkerOptions fast(int concurrency) {
  WorkerOptions o;
  o.name = "test-worker";
  o.concurrency = concurrency;
  o.lease = std::chrono::seconds(30);
  o.heartbeat = std::chrono::milliseconds(50);
  o.idle_poll = std::chrono::milliseconds(20);
  return o;
}

// A gate handlers wait at until the test opens it; counts how many wait at once.
struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  bool open = false;
  int inside = 0, most = 0, total = 0;
  void pass() {
    std::unique_lock lock(mu);
    ++inside;
    ++total;
    most = std::max(most, inside);
    cv.notify_all();
    cv.wait(lock, [&] { return open; });
    --inside;
  }
  void wait_for(int n) {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(20), [&] { return total >= n; }));
  }
  void release() {
    std::lock_guard lock(mu);
    open = true;
    cv.notify_all();
  }
};

TEST(Worker, RunsHandlersWithinThePerTypeLimit) {
  DatabaseHarness h(sqlite());
  auto& q = h.queue();
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(q.enqueue(NewJob{"t.slow", "{}", "", 0, 0}));
  Gate gate;
  auto o = fast(4);
  o.per_type["t.slow"] = 2;
  Worker w(q, o);
  w.handle("t.slow", [&](JobContext& ctx) -> HandlerResult {
    ctx.progress(50, "at the gate");
    gate.pass();
    return std::string(R"({"ok":true})");
  });
  w.start();
  gate.wait_for(2);
  gate.release();
  gate.wait_for(6);  // every job's handler has started: the drain lets them finish
  w.drain(std::chrono::seconds(20));
  auto done = q.list(ListRequest{State::succeeded, "t.slow", "", 10});
  ASSERT_TRUE(done);
  EXPECT_EQ(done->size(), 6u);
  EXPECT_LE(gate.most, 2) << "more t.slow handlers ran at once than its limit";
  EXPECT_EQ(done->at(0).result, R"({"ok":true})");
}

TEST(Worker, ACancelReachesTheRunningHandlerThroughItsHeartbeat) {
  DatabaseHarness h(sqlite());
  auto& q = h.queue();
  auto id = q.enqueue(NewJob{"t.long", "{}", "", 0, 0});
  ASSERT_TRUE(id);
  std::promise<void> started;
  Worker w(q, fast(1));
  w.handle("t.long", [&](JobContext& ctx) -> HandlerResult {
    started.set_value();
    while (!ctx.stopping()) std::this_thread::yield();  // the handler's own loop
    return FailReport{Failure::retryable, "stopped: cancelled"};
  });
  w.start();
  started.get_future().wait();
  ASSERT_TRUE(q.cancel(id->id));
  w.drain(std::chrono::seconds(20));  // returns once the handler reported
  auto j = q.get(id->id);
  ASSERT_TRUE(j);
  EXPECT_EQ(j->state, State::cancelled);
  ASSERT_EQ(j->history.size(), 1u);
  EXPECT_EQ(j->history[0].outcome, "cancelled");
}

TEST(Worker, AHandlersExceptionIsARetryableFailureNamingIt) {
  DatabaseHarness h(sqlite());
  auto& q = h.queue();
  auto id = q.enqueue(NewJob{"t.throws", "{}", "", 0, 0});
  ASSERT_TRUE(id);
  std::promise<void> ran;
  Worker w(q, fast(1));
  w.handle("t.throws", [&](JobContext&) -> HandlerResult {
    ran.set_value();
    throw std::runtime_error("disk full");
  });
  w.start();
  ran.get_future().wait();
  w.drain(std::chrono::seconds(20));
  auto j = q.get(id->id);
  ASSERT_TRUE(j);
  EXPECT_EQ(j->state, State::queued) << "retryable: queued again after its backoff";
  EXPECT_EQ(j->last_error, "the handler threw: disk full");
}

// Drain: the grace period passes with the handler still at work, it is told to stop, and its
// retryable "interrupted" hands the job back: ready at once, no attempt spent.
TEST(Worker, AHandlerStoppedByTheDrainHandsItsJobBack) {
  DatabaseHarness h(sqlite());
  auto& q = h.queue();
  auto id = q.enqueue(NewJob{"t.long", "{}", "", 0, 0});
  ASSERT_TRUE(id);
  const int limit = q.get(id->id)->max_attempts;
  std::promise<void> started;
  Worker w(q, fast(1));
  w.handle("t.long", [&](JobContext& ctx) -> HandlerResult {
    started.set_value();
    while (!ctx.stopping()) std::this_thread::yield();
    return FailReport{Failure::retryable, "interrupted"};
  });
  w.start();
  started.get_future().wait();
  w.drain(std::chrono::milliseconds(100));
  EXPECT_EQ(w.running(), 0);
  auto j = q.get(id->id);
  ASSERT_TRUE(j);
  EXPECT_EQ(j->state, State::queued);
  EXPECT_EQ(j->max_attempts, limit + 1) << "the handed-back attempt was spent";
  ASSERT_EQ(j->history.size(), 1u);
  EXPECT_EQ(j->history[0].outcome, "released");
  EXPECT_EQ(j->history[0].error, "worker stopping: interrupted");
  auto next = q.lease(LeaseRequest{"other", {"t.long"}, 1, std::chrono::seconds(30)});
  ASSERT_TRUE(next);
  EXPECT_EQ(next->size(), 1u) << "another worker takes it at once (no backoff)";
}

// A handler that ignores the drain: after the second grace period its job is handed back
// while it still runs, and what it reports later is dropped (the job is another's now).
TEST(Worker, AHandlerThatIgnoresTheDrainLosesItsJob) {
  DatabaseHarness h(sqlite());
  auto& q = h.queue();
  auto id = q.enqueue(NewJob{"t.stuck", "{}", "", 0, 0});
  ASSERT_TRUE(id);
  Gate gate;
  Worker w(q, fast(1));
  w.handle("t.stuck", [&](JobContext&) -> HandlerResult {
    gate.pass();  // ignores stopping()
    return std::string(R"({"late":true})");
  });
  w.start();
  gate.wait_for(1);
  w.drain(std::chrono::milliseconds(50));
  EXPECT_EQ(w.running(), 1) << "the handler still runs";
  auto j = q.get(id->id);
  ASSERT_TRUE(j);
  EXPECT_EQ(j->state, State::queued) << "handed back at the end of the drain";
  auto next = q.lease(LeaseRequest{"other", {"t.stuck"}, 1, std::chrono::seconds(30)});
  ASSERT_TRUE(next);
  ASSERT_EQ(next->size(), 1u);
  gate.release();
  w.stop();  // waits for the handler; its late result is not reported
  j = q.get(id->id);
  EXPECT_EQ(j->state, State::leased) << "the stuck handler's late report reached the queue";
  EXPECT_EQ(j->worker, "other");
  ASSERT_TRUE(q.complete(next->front().ref, "{}")) << "the new holder's lease is intact";
}

}  // namespace
}  // namespace kiln::jobs
