// The queue's gauges, what an autoscaler (KEDA's Prometheus scaler) and alerts read, from
// JobQueue::stats() (docs/jobs.md):
//   kiln_jobs_queue_depth{type,state}            jobs queued, leased and dead
//   kiln_jobs_oldest_ready_age_seconds{type}     the oldest job that could run now
//   kiln_jobs_oldest_lease_age_seconds{type}     the longest-held current lease
// A type that stats() no longer lists (none of its jobs queued, leased or dead) reads 0, not
// the last value it had.
#pragma once

#include "jobs/queue.hpp"
#include "platform/metrics.hpp"

#include <set>
#include <string>
#include <vector>

namespace kiln::jobs {

class QueueGauges {
 public:
  explicit QueueGauges(metrics::Registry& registry);
  void update(const std::vector<TypeStats>& stats);

 private:
  metrics::Family<metrics::Gauge>& depth_;
  metrics::Family<metrics::Gauge>& oldest_;
  metrics::Family<metrics::Gauge>& lease_age_;
  std::set<std::string> shown_;  // types with a value set
};

}  // namespace kiln::jobs
