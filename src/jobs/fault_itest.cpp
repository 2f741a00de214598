// Faults with real processes: worker processes (fault_worker.cpp) on one database file, with
// and without RabbitMQ, killed with SIGKILL in the middle of a job, and a poison job that
// kills every worker that runs it. The test process is the supervisor (as Kubernetes would
// be): it starts workers again. Each wait is on an observable event (a worker's line, the
// job's state in the database), bounded.
#include "jobs/rabbitmq_queue.hpp"
#include "jobs/test_process.hpp"
#include "jobs/test_queue.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <sstream>
#include <thread>

namespace kiln::jobs {
namespace {

using namespace std::chrono_literals;

struct Adapter {
  std::string name;
  bool rabbitmq = false;
};

class Faults : public ::testing::TestWithParam<Adapter> {
 protected:
  void SetUp() override {
    db_options_ = temp_sqlite("fault-itest");
    db_ = std::make_unique<store::Database>(db_options_);
    db_->migrate();
    DatabaseQueueOptions qo;
    qo.policies["t.crash"] = RetryPolicy{3, 50ms, 200ms};
    if (GetParam().rabbitmq) {
      std::istringstream(std::getenv("KILN_TEST_RABBITMQ") ? std::getenv("KILN_TEST_RABBITMQ")
                                                           : "") >>
          broker_;
      ASSERT_FALSE(broker_.empty()) << "KILN_TEST_RABBITMQ not set (run through ctest)";
      prefix_ = "kiln.fault." + std::to_string(::getpid()) + "." +
                ::testing::UnitTest::GetInstance()->current_test_info()->name();
      for (auto& c : prefix_)
        if (c == '/') c = '.';
      RabbitQueueOptions ro;
      ro.url = amqp::parse_url("amqp://guest:guest@" + broker_);
      ro.prefix = prefix_;
      queue_ = std::make_unique<RabbitQueue>(*db_, qo, ro);
    } else {
      queue_ = std::make_unique<DatabaseQueue>(*db_, qo);
    }
  }

  std::unique_ptr<Child> worker(const std::string& name) {
    std::vector<std::string> args{KILN_FAULT_WORKER, name, db_options_.url};
    if (GetParam().rabbitmq) {
      args.push_back(broker_);
      args.push_back(prefix_);
    }
    auto c = std::make_unique<Child>(args);
    EXPECT_EQ(c->wait_line("ready", 30s), "ready") << name << " did not start";
    return c;
  }

  std::string add(const std::string& type, const std::string& payload = "{}") {
    auto e = queue_->enqueue(NewJob{type, payload, "", 0, 0});
    EXPECT_TRUE(e) << e.error().detail;
    return e ? e->id : "";
  }

  // The job once it is finished (succeeded, dead, cancelled), or as it is after `within`.
  Job finished_job(const std::string& id, std::chrono::seconds within) {
    const auto deadline = std::chrono::steady_clock::now() + within;
    for (;;) {
      auto j = queue_->get(id);
      if (j && (finished(j->state) || std::chrono::steady_clock::now() >= deadline)) return *j;
      std::this_thread::sleep_for(50ms);  // the database's state, polled as a client would
    }
  }

  store::DatabaseOptions db_options_;
  std::unique_ptr<store::Database> db_;
  std::unique_ptr<JobQueue> queue_;
  std::string broker_, prefix_;
};

// kill -9 in the middle of a job: the lease expires (1.5 s), another worker runs the job,
// the history says who did what.
TEST_P(Faults, AWorkerKilledMidJobLosesItToAnother) {
  const auto id = add("t.hang", R"({"hang_attempts":1})");
  auto a = worker("worker-a");
  ASSERT_EQ(a->wait_line("started", 30s), "started " + id + " 1");
  a->signal(SIGKILL);
  EXPECT_EQ(a->wait_exit(10s), -SIGKILL);
  auto b = worker("worker-b");
  const auto j = finished_job(id, 60s);
  ASSERT_EQ(j.state, State::succeeded) << "the job did not run again after its worker died";
  EXPECT_EQ(j.result, R"({"attempt":2})");
  ASSERT_EQ(j.history.size(), 2u);
  EXPECT_EQ(j.history[0].worker, "worker-a");
  EXPECT_EQ(j.history[0].outcome, "expired");
  EXPECT_EQ(j.history[1].worker, "worker-b");
  EXPECT_EQ(j.history[1].outcome, "succeeded");
  b->signal(SIGTERM);
  EXPECT_EQ(b->wait_exit(20s), 0) << "a drained worker exits 0";
}

// A job that kills every worker that runs it: its attempts are spent (3), it ends dead, and
// the workers started again after each death run the other jobs.
TEST_P(Faults, APoisonJobThatKillsItsWorkersEndsDead) {
  const auto poison = add("t.crash");
  int deaths = 0;
  Job j;
  const auto deadline = std::chrono::steady_clock::now() + 90s;
  while (std::chrono::steady_clock::now() < deadline) {
    auto w = worker("worker-" + std::to_string(deaths));
    // It dies running the poison, or lives on once the poison is dead.
    const auto exit = w->wait_exit(5s);
    if (exit) {
      EXPECT_EQ(*exit, -SIGKILL);
      ++deaths;
      continue;
    }
    j = finished_job(poison, 0s);
    if (j.state == State::dead) {
      const auto ok = add("t.ok");
      EXPECT_EQ(finished_job(ok, 30s).state, State::succeeded) << "the survivors run other jobs";
      w->signal(SIGTERM);
      EXPECT_EQ(w->wait_exit(20s), 0);
      break;
    }
  }
  ASSERT_EQ(j.state, State::dead);
  EXPECT_EQ(deaths, 3) << "one death per attempt";
  ASSERT_EQ(j.history.size(), 3u);
  for (const auto& a : j.history) EXPECT_EQ(a.outcome, "expired");
}

INSTANTIATE_TEST_SUITE_P(Adapters, Faults,
                         ::testing::Values(Adapter{"database", false}, Adapter{"rabbitmq", true}),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace kiln::jobs
