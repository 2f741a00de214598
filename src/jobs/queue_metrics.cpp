#include "jobs/queue_metrics.hpp"

namespace kiln::jobs {

QueueGauges::QueueGauges(metrics::Registry& registry)
    : depth_(registry.gauge("kiln_jobs_queue_depth",
                            "Jobs by type and state (queued, leased, dead).", {"type", "state"})),
      oldest_(registry.gauge("kiln_jobs_oldest_ready_age_seconds",
                             "Age of the oldest job that could run now, by type.", {"type"})),
      lease_age_(registry.gauge("kiln_jobs_oldest_lease_age_seconds",
                                "How long the longest-running current attempt has held its "
                                "lease, by type.",
                                {"type"})) {}

void QueueGauges::update(const std::vector<TypeStats>& stats) {
  std::set<std::string> now;
  for (const auto& t : stats) {
    depth_.with({t.type, "queued"}).set(static_cast<double>(t.queued));
    depth_.with({t.type, "leased"}).set(static_cast<double>(t.leased));
    depth_.with({t.type, "dead"}).set(static_cast<double>(t.dead));
    oldest_.with({t.type}).set(static_cast<double>(t.oldest_ready_age_ms) / 1000.0);
    lease_age_.with({t.type}).set(static_cast<double>(t.oldest_lease_age_ms) / 1000.0);
    now.insert(t.type);
  }
  for (const auto& gone : shown_) {
    if (now.contains(gone)) continue;
    for (const char* state : {"queued", "leased", "dead"}) depth_.with({gone, state}).set(0);
    oldest_.with({gone}).set(0);
    lease_age_.with({gone}).set(0);
  }
  shown_ = std::move(now);
}

}  // namespace kiln::jobs
