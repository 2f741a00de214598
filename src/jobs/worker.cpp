#include "jobs/worker.hpp"

#include "platform/log.hpp"
#include "platform/metrics.hpp"

#include <condition_variable>
#include <list>
#include <mutex>
#include <thread>
#include <vector>

namespace kiln::jobs {

namespace {

// One running job: its lease, what its handler reported last, and whether it must stop.
class Running final : public JobContext {
 public:
  Running(Lease l, const std::atomic<bool>& worker_stopping)
      : lease_(std::move(l)), worker_stopping_(worker_stopping) {}
  const Lease& lease() const override { return lease_; }
  void progress(int percent, std::string status) override {
    std::lock_guard lock(mu_);
    percent_ = percent;
    status_ = std::move(status);
  }
  bool stopping() const override { return stop_ || worker_stopping_; }

  std::pair<int, std::string> report() {
    std::lock_guard lock(mu_);
    return {percent_, status_};
  }
  std::atomic<bool> stop_{false};  // cancelled or lease lost
  std::atomic<bool> lost_{false};  // lease lost: report nothing

 private:
  Lease lease_;
  const std::atomic<bool>& worker_stopping_;
  std::mutex mu_;
  int percent_ = 0;
  std::string status_;
};

}  // namespace

struct Worker::Impl {
  Impl(JobQueue& q, WorkerOptions o, metrics::Registry* reg) : queue(q), options(std::move(o)) {
    if (reg) {
      outcomes =
          &reg->counter("kiln_jobs_outcomes_total",
                        "Attempts this worker finished, by type and outcome.", {"type", "outcome"});
      running_gauge = &reg->gauge("kiln_jobs_running", "Handlers running now, by type.", {"type"});
      attempts = &reg->counter("kiln_jobs_attempts_total",
                               "Attempts this worker started (leases taken), by type.", {"type"});
    }
  }

  JobQueue& queue;
  WorkerOptions options;
  std::map<std::string, Handler, std::less<>> handlers;
  metrics::Family<metrics::Counter>* outcomes = nullptr;
  metrics::Family<metrics::Gauge>* running_gauge = nullptr;
  metrics::Family<metrics::Counter>* attempts = nullptr;

  std::mutex mu;
  std::condition_variable cv;
  std::atomic<bool> leasing{false};
  std::atomic<bool> stopping{false};             // handlers must stop
  bool done = false;                             // threads must exit (mu)
  std::map<std::string, int, std::less<>> busy;  // running per type (mu)
  int running = 0;                               // (mu)
  std::list<std::shared_ptr<Running>> jobs;      // running now (mu)
  std::vector<std::thread> threads;

  // The types with room for one more handler (mu held).
  std::vector<std::string> free_types() const {
    std::vector<std::string> out;
    for (const auto& [type, h] : handlers) {
      auto limit = options.per_type.find(type);
      auto b = busy.find(type);
      const int n = b == busy.end() ? 0 : b->second;
      if (limit == options.per_type.end() || n < limit->second) out.push_back(type);
    }
    return out;
  }

  void wait(std::chrono::milliseconds d) {
    std::unique_lock lock(mu);
    cv.wait_for(lock, d, [&] { return done || !leasing.load(); });
  }

  void runner() {
    for (;;) {
      std::vector<std::string> types;
      {
        std::unique_lock lock(mu);
        if (done || !leasing) return;
        types = free_types();
        if (types.empty()) {
          cv.wait_for(lock, options.idle_poll);
          continue;
        }
      }
      // Waits up to idle_poll for work (woken by new work), then looks at the limits again.
      auto got =
          queue.lease(LeaseRequest{options.name, types, 1, options.lease, options.idle_poll});
      if (!got) {
        log::warn("jobs: lease failed", {{"error", got.error().detail}});
        wait(options.error_backoff);
        continue;
      }
      if (got->empty()) continue;
      run(std::move(got->front()));
    }
  }

  void run(Lease l) {
    auto job = std::make_shared<Running>(l, stopping);
    const std::string type = l.type;
    {
      std::lock_guard lock(mu);
      ++busy[type];
      ++running;
      jobs.push_back(job);
    }
    if (running_gauge) running_gauge->with({type}).inc();
    if (attempts) attempts->with({type}).inc();
    HandlerResult outcome = FailReport{Failure::retryable, "no handler"};
    auto it = handlers.find(type);
    try {
      if (it != handlers.end()) outcome = it->second(*job);
    } catch (const std::exception& e) {
      outcome = FailReport{Failure::retryable, std::string("the handler threw: ") + e.what()};
    }
    report(*job, std::move(outcome));
    if (running_gauge) running_gauge->with({type}).dec();
    {
      std::lock_guard lock(mu);
      --busy[type];
      --running;
      jobs.remove(job);
    }
    cv.notify_all();
  }

  // A report the database could not take now (`unavailable`: an outage, a failover) is tried
  // again with backoff for as long as a lease lasts: the work is done, and running it again
  // because its outcome was not recorded would be the worst way to spend a brief outage. The
  // job's heartbeats go on meanwhile; a lost lease ends the tries.
  template <class Call>
  auto reported(Running& job, Call call) {
    const auto deadline = std::chrono::steady_clock::now() + options.lease;
    auto wait = std::chrono::milliseconds(50);
    for (;;) {
      auto r = call();
      if (r || r.error().code != Errc::unavailable || job.lost_ ||
          std::chrono::steady_clock::now() + wait > deadline)
        return r;
      if (wait == std::chrono::milliseconds(50))
        log::warn("jobs: a report waits for the database",
                  {{"job", job.lease().ref.job}, {"error", r.error().detail}});
      {
        std::unique_lock lock(mu);
        cv.wait_for(lock, wait, [&] { return done; });
        if (done) return r;
      }
      wait = std::min(wait * 2, std::chrono::milliseconds(1'000));
    }
  }

  // The handler's outcome to the queue: a result completes the job (the work is done, even if
  // a cancel arrived meanwhile); a FailReport fails the attempt, but a retryable one while the
  // worker stops hands the job back (the handler was interrupted, not wrong); a lost lease
  // reports nothing.
  void report(Running& job, const HandlerResult& outcome) {
    const auto& l = job.lease();
    if (job.lost_) return count(l.type, "lease_lost");
    if (!outcome && outcome.error().kind == Failure::retryable && stopping) {
      auto r = reported(
          job, [&] { return queue.release(l.ref, "worker stopping: " + outcome.error().error); });
      if (!r) log::warn("jobs: release refused", {{"job", l.ref.job}, {"error", r.error().detail}});
      return count(l.type, r ? "released" : "report_failed");
    }
    if (outcome) {
      auto r = reported(job, [&] { return queue.complete(l.ref, *outcome); });
      if (!r)
        log::warn("jobs: complete refused", {{"job", l.ref.job}, {"error", r.error().detail}});
      return count(l.type, r ? "succeeded" : "report_failed");
    }
    auto r = reported(job, [&] { return queue.fail(l.ref, outcome.error()); });
    if (!r) log::warn("jobs: fail refused", {{"job", l.ref.job}, {"error", r.error().detail}});
    count(l.type, !r ? "report_failed" : r->state == State::dead ? "dead" : "failed");
  }

  void count(const std::string& type, const char* outcome) {
    if (outcomes) outcomes->with({type, outcome}).inc();
  }

  // Every heartbeat interval: each running job's progress out, cancellations in.
  void heartbeats() {
    for (;;) {
      std::vector<std::shared_ptr<Running>> now;
      {
        std::unique_lock lock(mu);
        cv.wait_for(lock, options.heartbeat, [&] { return done; });
        if (done) return;
        now.assign(jobs.begin(), jobs.end());
      }
      for (const auto& job : now) {
        auto [percent, status] = job->report();
        auto b = queue.heartbeat(job->lease().ref, percent, status, options.lease);
        if (!b) {
          if (b.error().code == Errc::lease_lost || b.error().code == Errc::not_found) {
            job->lost_ = true;
            job->stop_ = true;
          }
          continue;  // unavailable: the next beat tries again within the lease
        }
        if (b->cancel_requested) job->stop_ = true;
      }
    }
  }
};

Worker::Worker(JobQueue& queue, WorkerOptions options, metrics::Registry* registry)
    : impl_(std::make_shared<Impl>(queue, std::move(options), registry)) {}

Worker::~Worker() {
  stop();
}

void Worker::handle(std::string type, Handler handler) {
  impl_->handlers[std::move(type)] = std::move(handler);
}

void Worker::start() {
  auto& i = *impl_;
  i.leasing = true;
  for (int n = 0; n < std::max(1, i.options.concurrency); ++n)
    i.threads.emplace_back([&i] { i.runner(); });
  i.threads.emplace_back([&i] { i.heartbeats(); });
}

void Worker::drain(std::chrono::milliseconds grace) {
  auto& i = *impl_;
  i.leasing = false;
  i.cv.notify_all();
  std::unique_lock lock(i.mu);
  if (i.cv.wait_for(lock, grace, [&] { return i.running == 0; })) return;
  // Handlers see stopping() and return: a retryable failure then hands the job back.
  i.stopping = true;
  if (i.cv.wait_for(lock, grace, [&] { return i.running == 0; })) return;
  // One that still runs loses its job now, not when its lease would expire: the job is
  // handed back for another worker and this handler's report, if it ever comes, is dropped.
  std::vector<std::shared_ptr<Running>> left(i.jobs.begin(), i.jobs.end());
  lock.unlock();
  log::warn("jobs: handlers still running after the drain; their jobs are handed back",
            {{"running", static_cast<std::int64_t>(left.size())}});
  for (const auto& job : left) {
    job->lost_ = true;
    job->stop_ = true;
    const auto& l = job->lease();
    // Refused when the handler reported just before: then its report stands.
    if (auto r = i.queue.release(l.ref, "worker stopping: the handler did not stop in time"))
      i.count(l.type, "released");
  }
}

void Worker::stop() {
  auto& i = *impl_;
  i.leasing = false;
  i.stopping = true;
  {
    std::lock_guard lock(i.mu);
    i.done = true;
  }
  i.cv.notify_all();
  for (auto& t : i.threads)
    if (t.joinable()) t.join();
  i.threads.clear();
}

int Worker::running() const {
  std::lock_guard lock(impl_->mu);
  return impl_->running;
}

}  // namespace kiln::jobs
