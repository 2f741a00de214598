// kiln-jobs-bench: the job queue's throughput and latency. Four workers drain N no-op jobs
// enqueued beforehand (jobs/s, CPU per job); then, with the workers idle, jobs are enqueued
// one at a time and the time from enqueue to the handler's start is measured (p50/p99).
// Prints one JSON object.
//   kiln-jobs-bench --db sqlite:/tmp/j.db [--broker 127.0.0.1:5672 --prefix p] --jobs 10000
#include "jobs/rabbitmq_queue.hpp"
#include "jobs/worker.hpp"

#include <CLI/CLI.hpp>
#include <boost/json.hpp>

#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>

extern char** environ;

namespace {

using namespace kiln;
using Clock = std::chrono::steady_clock;

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto s = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return s(u.ru_utime) + s(u.ru_stime);
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

struct Node {
  std::unique_ptr<store::Database> db;
  std::unique_ptr<jobs::JobQueue> queue;
};

const std::string kType = "bench.noop";

// --worker: one worker process until SIGTERM.
int run_worker(Node node, const std::string& name, int concurrency, int lease_ms) {
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  jobs::WorkerOptions wo;
  wo.name = name;
  wo.concurrency = concurrency;
  wo.lease = std::chrono::milliseconds(lease_ms);
  wo.heartbeat = wo.lease / 3;
  wo.idle_poll = std::chrono::milliseconds(200);
  jobs::Worker w(*node.queue, wo);
  w.handle(kType, [](jobs::JobContext&) -> jobs::HandlerResult { return std::string("{}"); });
  w.start();
  int sig = 0;
  sigwait(&stop, &sig);
  w.drain(std::chrono::seconds(5));
  w.stop();
  return 0;
}

pid_t spawn(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0)
    throw std::runtime_error("cannot start a worker process");
  return pid;
}

// N jobs drained by worker processes, one SIGKILLed once half are done: its job in flight
// runs again after its lease; how long the whole takes, and that every other job ran once.
int kill_one_halfway(jobs::JobQueue& q, int n, int workers, const std::vector<std::string>& child,
                     const std::string& adapter, int lease_ms) {
  for (int i = 0; i < n; ++i)
    if (!q.enqueue(jobs::NewJob{kType, R"({"t":0})", "", 0, 0})) return 1;
  std::vector<pid_t> pids;
  const auto t0 = Clock::now();
  for (int w = 0; w < workers; ++w) {
    auto args = child;
    args.insert(args.end(), {"--worker", "bench-" + std::to_string(w)});
    pids.push_back(spawn(args));
  }
  double killed_at_s = 0;
  for (;;) {
    auto st = q.stats();
    std::int64_t left = 0;
    if (st)
      for (const auto& t : *st)
        if (t.type == kType) left = t.queued + t.leased;
    if (killed_at_s == 0 && left <= n / 2) {
      ::kill(pids[0], SIGKILL);
      killed_at_s = std::chrono::duration<double>(Clock::now() - t0).count();
    }
    if (st && left == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the queue's state, polled
  }
  const double total_s = std::chrono::duration<double>(Clock::now() - t0).count();
  for (std::size_t i = 1; i < pids.size(); ++i) ::kill(pids[i], SIGTERM);
  for (auto pid : pids) ::waitpid(pid, nullptr, 0);
  std::int64_t reattempted = 0, succeeded = 0;
  for (std::string after;;) {
    auto page = q.list(jobs::ListRequest{jobs::State::succeeded, kType, after, 500});
    if (!page || page->empty()) break;
    for (const auto& j : *page) reattempted += j.attempts > 1 ? 1 : 0;
    succeeded += static_cast<std::int64_t>(page->size());
    after = page->back().id;
  }
  boost::json::object out{{"adapter", adapter},     {"jobs", n},
                          {"workers", workers},     {"killed_one_at_s", killed_at_s},
                          {"lease_ms", lease_ms},   {"jobs_per_s", n / total_s},
                          {"succeeded", succeeded}, {"reattempted", reattempted}};
  std::printf("%s\n", boost::json::serialize(out).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Job queue throughput and latency"};
  std::string url, broker, prefix = "kiln.bench";
  int n = 10'000, workers = 4, concurrency = 1, samples = 200;
  app.add_option("--db", url, "sqlite:PATH or postgresql://...")->required();
  app.add_option("--broker", broker,
                 "RabbitMQ host:port (guest/guest); none: the database adapter");
  app.add_option("--prefix", prefix, "RabbitMQ names");
  app.add_option("--jobs", n)->check(CLI::Range(1, 10'000'000));
  app.add_option("--workers", workers)->check(CLI::Range(1, 64));
  app.add_option("--concurrency", concurrency, "Handlers per worker")->check(CLI::Range(1, 64));
  app.add_option("--samples", samples, "Jobs for the latency phase")->check(CLI::Range(1, 100'000));
  std::string worker_name;
  bool kill_one = false;
  int lease_ms = 30'000;
  app.add_option("--worker", worker_name,
                 "Run as one worker process (--kill-one-halfway starts them)");
  app.add_flag("--kill-one-halfway", kill_one,
               "Workers as processes; one is SIGKILLed once half the jobs are done");
  app.add_option("--lease-ms", lease_ms, "The workers' lease")->check(CLI::Range(100, 3'600'000));
  CLI11_PARSE(app, argc, argv);

  auto make_node = [&] {
    Node node;
    store::DatabaseOptions so;
    so.url = url;
    so.pool_size = static_cast<std::size_t>(workers * concurrency) + 2;
    node.db = std::make_unique<store::Database>(so);
    jobs::DatabaseQueueOptions qo;
    qo.poll = std::chrono::milliseconds(200);
    if (broker.empty()) {
      node.queue = std::make_unique<jobs::DatabaseQueue>(*node.db, qo);
    } else {
      jobs::RabbitQueueOptions ro;
      ro.url = amqp::parse_url("amqp://guest:guest@" + broker);
      ro.prefix = prefix;
      ro.prefetch = static_cast<std::uint16_t>(4 * concurrency);
      node.queue = std::make_unique<jobs::RabbitQueue>(*node.db, qo, ro);
    }
    return node;
  };
  if (!worker_name.empty()) return run_worker(make_node(), worker_name, concurrency, lease_ms);
  Node producer = make_node();
  producer.db->migrate();
  if (kill_one) {
    std::vector<std::string> child{"/proc/self/exe",
                                   "--db",
                                   url,
                                   "--concurrency",
                                   std::to_string(concurrency),
                                   "--lease-ms",
                                   std::to_string(lease_ms)};
    if (!broker.empty()) child.insert(child.end(), {"--broker", broker, "--prefix", prefix});
    return kill_one_halfway(*producer.queue, n, workers, child,
                            broker.empty() ? "database" : "rabbitmq", lease_ms);
  }

  std::mutex mu;
  std::condition_variable cv;
  std::int64_t done = 0, handled = 0;
  std::vector<double> latencies_ms;
  bool measuring = false;
  auto handler = [&](jobs::JobContext& ctx) -> jobs::HandlerResult {
    const auto started = now_ns();
    std::lock_guard lock(mu);
    if (measuring) {
      const auto v = boost::json::parse(ctx.lease().payload);
      latencies_ms.push_back(static_cast<double>(started - v.at("t").as_int64()) / 1e6);
    }
    ++done;
    ++handled;
    cv.notify_all();
    return std::string("{}");
  };

  // Phase 1: enqueue N (one transaction and, on RabbitMQ, one confirmed publish each).
  const auto e0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    auto r = producer.queue->enqueue(jobs::NewJob{"bench.noop", R"({"t":0})", "", 0, 0});
    if (!r) {
      std::fprintf(stderr, "enqueue failed: %s\n", r.error().detail.c_str());
      return 1;
    }
  }
  const double enqueue_s = std::chrono::duration<double>(Clock::now() - e0).count();

  // Phase 2: drain with the workers.
  // On the database adapter the workers share the producer's queue, as in `kiln serve` (one
  // process: an enqueue wakes a waiting lease); on RabbitMQ each has its own connections, as
  // worker processes would (a delivery wakes them).
  std::vector<Node> nodes;
  std::vector<std::unique_ptr<jobs::Worker>> ws;
  if (!broker.empty())
    for (int w = 0; w < workers; ++w) nodes.push_back(make_node());
  auto queue_of = [&](int w) -> jobs::JobQueue& {
    return broker.empty() ? *producer.queue : *nodes[static_cast<std::size_t>(w)].queue;
  };
  const double cpu0 = cpu_seconds();
  const auto d0 = Clock::now();
  for (int w = 0; w < workers; ++w) {
    jobs::WorkerOptions wo;
    wo.name = "bench-" + std::to_string(w);
    wo.concurrency = concurrency;
    wo.idle_poll = std::chrono::milliseconds(200);
    ws.push_back(std::make_unique<jobs::Worker>(queue_of(w), wo));
    ws.back()->handle("bench.noop", handler);
    ws.back()->start();
  }
  {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return done >= n; });
  }
  const double drain_s = std::chrono::duration<double>(Clock::now() - d0).count();
  const double drain_cpu = cpu_seconds() - cpu0;

  // Phase 3: idle workers; one job at a time, enqueue to start.
  {
    std::lock_guard lock(mu);
    measuring = true;
    done = 0;
  }
  for (int i = 0; i < samples; ++i) {
    const auto payload = R"({"t":)" + std::to_string(now_ns()) + "}";
    if (!producer.queue->enqueue(jobs::NewJob{"bench.noop", payload, "", 0, 0})) return 1;
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return done > i; });
  }
  for (auto& w : ws) w->stop();
  // Every job once: handler calls, and jobs that needed more than one attempt.
  std::int64_t reattempted = 0, succeeded = 0;
  for (std::string after;;) {
    auto page =
        producer.queue->list(jobs::ListRequest{jobs::State::succeeded, "bench.noop", after, 500});
    if (!page || page->empty()) break;
    for (const auto& j : *page) reattempted += j.attempts > 1 ? 1 : 0;
    succeeded += static_cast<std::int64_t>(page->size());
    after = page->back().id;
  }
  std::sort(latencies_ms.begin(), latencies_ms.end());
  auto pct = [&](double p) {
    return latencies_ms[std::min(
        latencies_ms.size() - 1,
        static_cast<std::size_t>(p * static_cast<double>(latencies_ms.size())))];
  };
  boost::json::object out{{"adapter", broker.empty() ? "database" : "rabbitmq"},
                          {"database", url.substr(0, url.find(':'))},
                          {"jobs", n},
                          {"workers", workers},
                          {"concurrency", concurrency},
                          {"enqueue_per_s", static_cast<double>(n) / enqueue_s},
                          {"jobs_per_s", static_cast<double>(n) / drain_s},
                          {"cpu_us_per_job", drain_cpu * 1e6 / n},
                          {"handler_calls", handled},
                          {"succeeded", succeeded},
                          {"reattempted", reattempted},
                          {"start_p50_ms", pct(0.50)},
                          {"start_p99_ms", pct(0.99)}};
  std::printf("%s\n", boost::json::serialize(out).c_str());
  return 0;
}
