// The outbox relay (docs/jobs.md): rows of the `events` outbox become jobs exactly once and
// in order. Each pass reads the pending events oldest first; for each it enqueues the job
// the event calls for with the event's id as the idempotency key, then marks the event
// consumed. A relay that dies between the two enqueues again on its next pass and gets the
// same job back; several relays may run at once (each enqueue is idempotent), and a lease
// keeps all but one idle so that jobs are created in the events' order.
//
// Today: `asset.uploaded` and `asset.process_requested` (POST .../assets/{a}/process) ->
// `asset.process` {"event", "project", "asset", "sha256", "content_type"}; `asset.deleted` ->
// `asset.cleanup` {"event", "project", "asset"} (its derived files removed); other kinds are
// consumed with no job.
#pragma once

#include "jobs/queue.hpp"
#include "store/database.hpp"
#include "store/outbox.hpp"

#include <chrono>
#include <optional>
#include <string>

namespace kiln::jobs {

// The job an outbox event calls for, or nullopt when it calls for none.
std::optional<NewJob> job_for(const store::Event& e);

struct RelayOptions {
  std::string holder;                       // this node (the lease's holder)
  std::chrono::milliseconds lease{10'000};  // another relay takes over after this
  std::size_t batch = 200;                  // events per pass at most
};

struct RelayPass {
  std::size_t relayed = 0;  // events that made a job (new, or found by its key)
  std::size_t skipped = 0;  // events that call for no job
  bool leased_elsewhere = false;
  std::optional<Error> error;  // the queue or the database failed; the rest waits
};

class OutboxRelay {
 public:
  OutboxRelay(store::Database& db, JobQueue& queue, RelayOptions options);
  // One pass (blocks: call it from a worker's thread).
  RelayPass pass();

 private:
  store::Database& db_;
  JobQueue& queue_;
  RelayOptions options_;
};

}  // namespace kiln::jobs
