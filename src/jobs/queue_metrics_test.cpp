// The queue's gauges follow stats(): a type whose jobs all finished reads 0, not the value it
// had when it last had jobs (an alert on dead jobs, or an autoscaler reading the oldest ready
// age, would otherwise act on work that is gone).
#include "jobs/queue_metrics.hpp"

#include <gtest/gtest.h>

namespace kiln::jobs {
namespace {

TypeStats stats_of(const std::string& type, std::int64_t queued, std::int64_t dead) {
  TypeStats t;
  t.type = type;
  t.queued = queued;
  t.dead = dead;
  t.oldest_ready_age_ms = queued > 0 ? 1500 : 0;
  return t;
}

TEST(QueueGauges, ATypeStatsNoLongerListsReadsZero) {
  metrics::Registry reg;
  QueueGauges gauges(reg);
  auto& depth = reg.gauge("kiln_jobs_queue_depth", "", {"type", "state"});
  auto& oldest = reg.gauge("kiln_jobs_oldest_ready_age_seconds", "", {"type"});
  gauges.update({stats_of("a", 2, 1), stats_of("b", 3, 0)});
  EXPECT_EQ(depth.with({"a", "queued"}).value(), 2);
  EXPECT_EQ(depth.with({"a", "dead"}).value(), 1);
  EXPECT_EQ(oldest.with({"a"}).value(), 1.5);
  EXPECT_EQ(depth.with({"b", "queued"}).value(), 3);

  gauges.update({stats_of("b", 1, 0)});  // a's dead job retried and done, its queue empty
  EXPECT_EQ(depth.with({"a", "queued"}).value(), 0);
  EXPECT_EQ(depth.with({"a", "dead"}).value(), 0);
  EXPECT_EQ(oldest.with({"a"}).value(), 0);
  EXPECT_EQ(depth.with({"b", "queued"}).value(), 1);

  gauges.update({});
  EXPECT_EQ(depth.with({"b", "queued"}).value(), 0);
  gauges.update({stats_of("a", 4, 0)});  // and back
  EXPECT_EQ(depth.with({"a", "queued"}).value(), 4);
}

}  // namespace
}  // namespace kiln::jobs
