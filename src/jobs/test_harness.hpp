// A JobQueue under test with its clock and its jitter in the test's hands: the conformance
// suite (queue_conformance.hpp) and the worker's tests use it; each adapter provides one.
#pragma once

#include "jobs/queue.hpp"

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <ostream>
#include <string>

namespace kiln::jobs {

// One queue under test, with its clock and its jitter in the test's hands.
class QueueHarness {
 public:
  virtual ~QueueHarness() = default;
  virtual JobQueue& queue() = 0;
  // Moves the queue's clock forward.
  void advance(std::chrono::milliseconds d) { offset_ms += d.count(); }
  std::atomic<std::int64_t> offset_ms{0};
  std::atomic<double> jitter{0.5};  // every backoff draws this
};

struct QueueFactory {
  std::string name;
  // Makes a queue whose type "t.flaky" allows 3 attempts with a 10 s base and a 15 s cap
  // (every other type: 5 attempts, 1 s base, 10 min cap), reading `offset_ms` and `jitter`.
  std::function<std::unique_ptr<QueueHarness>()> make;
  // How long the suite's leases wait for work (an adapter told of work asynchronously, like
  // RabbitMQ, needs a moment; the database adapter answers at once).
  std::chrono::milliseconds lease_wait{0};
  // Whether ready jobs start by priority across the queue (RabbitMQ's quorum queues deliver
  // in publication order; only its database sweep orders by priority).
  bool orders_by_priority = true;
};

inline void PrintTo(const QueueFactory& f, std::ostream* os) {
  *os << f.name;
}

}  // namespace kiln::jobs
