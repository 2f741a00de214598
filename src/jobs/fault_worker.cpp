// A worker process for the fault tests (fault_itest.cpp), built with the tests only: the
// real Worker on the real queue (the database, or RabbitMQ over it), with handlers that
// misbehave on purpose. It prints one line per event on stdout for the test to wait on:
//   ready                     about to lease
//   started <job> <attempt>   a t.hang or t.crash handler began
// Handlers: t.ok completes at once; t.hang hangs until the worker stops for attempts up to
// the payload's "hang_attempts", then completes; t.crash kills its own process with SIGKILL
// (an out-of-memory kill, a segfault: a poison job).
//
//   jobs_fault_worker NAME DATABASE_URL [BROKER_HOST:PORT PREFIX]
// Leases last 1.5 s (KILN_FAULT_LEASE_MS). SIGTERM drains (2 s) and exits 0.
#include "jobs/rabbitmq_queue.hpp"
#include "jobs/worker.hpp"

#include <boost/json/parse.hpp>

#include <unistd.h>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>

namespace {

using namespace kiln;

// One whole line in one write: lines from the main thread and from handlers, and the log's
// lines on stderr (the same pipe in the tests), never interleave.
void say(const std::string& line) {
  const auto out = line + "\n";
  [[maybe_unused]] auto n = ::write(STDOUT_FILENO, out.data(), out.size());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 && argc != 5) {
    std::fprintf(stderr, "usage: %s NAME DATABASE_URL [BROKER_HOST:PORT PREFIX]\n", argv[0]);
    return 2;
  }
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);  // every thread after this one too

  store::DatabaseOptions dbo;
  dbo.url = argv[2];
  store::Database db(dbo);
  jobs::DatabaseQueueOptions qo;
  qo.default_policy =
      jobs::RetryPolicy{3, std::chrono::milliseconds(50), std::chrono::milliseconds(200)};
  qo.poll = std::chrono::milliseconds(50);
  std::unique_ptr<jobs::JobQueue> queue;
  if (argc == 5) {
    jobs::RabbitQueueOptions ro;
    ro.url = amqp::parse_url(std::string("amqp://guest:guest@") + argv[3]);
    ro.prefix = argv[4];
    ro.sweep = std::chrono::milliseconds(500);
    ro.reconnect_cap = std::chrono::seconds(1);
    queue = std::make_unique<jobs::RabbitQueue>(db, qo, ro);
  } else {
    queue = std::make_unique<jobs::DatabaseQueue>(db, qo);
  }

  jobs::WorkerOptions wo;
  wo.name = argv[1];
  wo.concurrency = 2;
  // Short, so that a killed worker's job moves on quickly; KILN_FAULT_LEASE_MS overrides.
  const char* lease_ms = std::getenv("KILN_FAULT_LEASE_MS");
  wo.lease = std::chrono::milliseconds(lease_ms != nullptr ? std::atoi(lease_ms) : 1'500);
  wo.heartbeat = std::chrono::milliseconds(300);
  wo.idle_poll = std::chrono::milliseconds(100);
  jobs::Worker worker(*queue, wo);
  worker.handle("t.ok", [](jobs::JobContext&) -> jobs::HandlerResult { return std::string("{}"); });
  worker.handle("t.hang", [](jobs::JobContext& ctx) -> jobs::HandlerResult {
    const auto& l = ctx.lease();
    say("started " + l.ref.job + " " + std::to_string(l.ref.attempt));
    const auto payload = boost::json::parse(l.payload).as_object();
    if (l.ref.attempt <= payload.at("hang_attempts").as_int64()) {
      while (!ctx.stopping()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      return jobs::FailReport{jobs::Failure::retryable, "stopped while hanging"};
    }
    return std::string(R"({"attempt":)" + std::to_string(l.ref.attempt) + "}");
  });
  worker.handle("t.crash", [](jobs::JobContext& ctx) -> jobs::HandlerResult {
    say("started " + ctx.lease().ref.job + " " + std::to_string(ctx.lease().ref.attempt));
    ::raise(SIGKILL);
    return std::string("{}");
  });
  say("ready");  // before the first lease: a handler's "started" always comes after it
  worker.start();
  int sig = 0;
  sigwait(&stop, &sig);
  worker.drain(std::chrono::seconds(2));
  worker.stop();
  return 0;
}
