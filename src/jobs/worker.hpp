// Runs job handlers on a JobQueue (docs/jobs.md): leases jobs of the types it has handlers
// for, within a concurrency limit per process and per type, heartbeats each running job,
// and reports its outcome. A handler returns its result or a FailReport (retryable or
// permanent); an exception out of a handler is a retryable failure naming it. Drain: stop
// leasing, let running handlers finish within the grace period, then tell them to stop; a
// handler that then returns a retryable failure hands its job back (JobQueue::release: ready
// for another worker at once, no attempt spent), and one still running after a second grace
// period has its job handed back without it.
#pragma once

#include "jobs/queue.hpp"

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>

namespace kiln::metrics {
class Registry;
}

namespace kiln::jobs {

// What a running handler sees of its job.
class JobContext {
 public:
  virtual ~JobContext() = default;
  [[nodiscard]] virtual const Lease& lease() const = 0;
  // Records progress (0-100) and a status line with the next heartbeat (at most every
  // heartbeat interval; the latest wins).
  virtual void progress(int percent, std::string status) = 0;
  // True once the handler should stop: the job was cancelled, its lease was lost, or the
  // worker is stopping. A long handler checks it between steps.
  [[nodiscard]] virtual bool stopping() const = 0;
};

using HandlerResult = kiln::Result<std::string, FailReport>;  // result JSON, or why not
using Handler = std::function<HandlerResult(JobContext&)>;

struct WorkerOptions {
  std::string name;     // this worker's name in the jobs' history (node id + pid)
  int concurrency = 4;  // handlers running at once in this process
  std::map<std::string, int, std::less<>> per_type;  // at most this many of one type (optional)
  std::chrono::milliseconds lease{30'000};
  std::chrono::milliseconds heartbeat{10'000};  // < lease / 2
  std::chrono::milliseconds idle_poll{
      500};  // a lease waits this long for work (LeaseRequest::wait)
  std::chrono::milliseconds error_backoff{2'000};  // the wait after the queue failed
};

class Worker {
 public:
  Worker(JobQueue& queue, WorkerOptions options, metrics::Registry* registry = nullptr);
  ~Worker();  // stops (as stop())
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Before start(): the handler of one job type.
  void handle(std::string type, Handler handler);
  void start();
  // Stops leasing; returns once every running handler has reported, or after `grace` tells
  // the rest to stop (JobContext::stopping) and waits one more `grace` for them. The jobs of
  // handlers that still run are then handed back (their reports are dropped); stop() waits
  // for those handlers to return.
  void drain(std::chrono::milliseconds grace);
  void stop();
  [[nodiscard]] int running() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace kiln::jobs
