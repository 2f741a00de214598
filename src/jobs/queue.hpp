// The JobQueue port: durable jobs with leases, heartbeats, retries and dead letters
// (docs/jobs.md). Job states and history live in the database and are authoritative; an
// adapter decides only how workers hear of work (polling the database, or RabbitMQ
// deliveries that carry a job id). Every adapter passes the same conformance suite
// (queue_conformance.hpp).
//
// A lease is a bounded hold on one attempt of a job: the worker heartbeats to keep it,
// reports its outcome with the LeaseRef it got, and stops when an answer says lease_lost
// (the lease expired and the job went to another attempt, or it was cancelled). Attempts are
// counted when leased; handlers get the attempt number and the idempotency key so that
// their effect happens once even when an attempt is repeated.
//
// Every call blocks (the database's round trips): call them from workers' threads, never from
// an event loop. Every call returns a value or an Error; none throws for an expected failure.
#pragma once

#include "jobs/job.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kiln::jobs {

struct NewJob {
  std::string type;                // valid_type()
  std::string payload = "{}";      // JSON, at most kMaxPayloadBytes
  std::string idempotency_key;     // optional; one job per (type, key): a repeat returns it
  int priority = 0;                // higher first; -1000..1000
  std::int64_t not_before_ms = 0;  // not leased before this time (ms since the Unix epoch)
};

struct Enqueued {
  std::string id;
  bool created = true;  // false: the idempotency key named an existing job (returned)
  State state = State::queued;
};

struct LeaseRequest {
  std::string worker;                          // who holds the leases (shown in the job's history)
  std::vector<std::string> types;              // the types this worker runs
  std::size_t max_jobs = 1;                    // at most this many jobs (1-100)
  std::chrono::milliseconds duration{30'000};  // until a heartbeat extends it
  // When nothing is ready, wait at most this long for work to arrive (0: answer at once).
  // Work that arrives ends the wait at once: an enqueue in this process or a broker's
  // delivery; the database adapter also looks again every poll interval.
  std::chrono::milliseconds wait{0};
};

// The worker's proof of its lease: the job and the attempt it was given.
struct LeaseRef {
  std::string job;
  int attempt = 0;
};

struct Lease {
  LeaseRef ref;
  std::string type;
  std::string payload;
  std::string idempotency_key;
  std::int64_t expires_at_ms = 0;
};

struct Beat {
  std::int64_t expires_at_ms = 0;  // the lease's new end
  bool cancel_requested = false;   // stop, and report fail (or nothing): the job is cancelled
};

// A job with its history (get() fills it), and one attempt of it: the repository's rows.
using Job = store::Job;
using Attempt = store::JobAttempt;
// Queue depth by type and state, and the oldest ready job's age: what an autoscaler reads.
using TypeStats = store::JobTypeStats;

struct ListRequest {
  std::optional<State> state;
  std::string type;   // empty: any
  std::string after;  // a job id: the page after it (ids sort by creation)
  std::size_t limit = 50;
};

struct FailReport {
  Failure kind = Failure::retryable;
  std::string error;  // what went wrong, for people (clipped to kMaxErrorBytes)
};

struct Failed {
  State state = State::dead;  // queued (to be retried) or dead
  std::int64_t retry_at_ms = 0;
};

class JobQueue {
 public:
  virtual ~JobQueue() = default;

  // Adds a job, or returns the one its idempotency key names (same payload; another payload
  // is a conflict).
  virtual Result<Enqueued> enqueue(const NewJob& job) = 0;
  // Leases up to max_jobs ready jobs of the given types, highest priority first, then the
  // longest waiting. A lease that expired unreported counts as a failed attempt first
  // (retried after its backoff, or dead when its attempts are spent). Empty: nothing ready.
  virtual Result<std::vector<Lease>> lease(const LeaseRequest& request) = 0;
  // Extends the lease by `extend` from now and records progress (clamped to 0-100) and a
  // status line. lease_lost when the lease is not current.
  virtual Result<Beat> heartbeat(const LeaseRef& lease, int progress, std::string_view status,
                                 std::chrono::milliseconds extend) = 0;
  // The attempt succeeded: the job is succeeded with `result` (JSON).
  virtual Result<void> complete(const LeaseRef& lease, std::string_view result) = 0;
  // The attempt failed: queued again after a backoff, or dead (permanent, or attempts spent).
  virtual Result<Failed> fail(const LeaseRef& lease, const FailReport& report) = 0;
  // Hands a leased job back unfinished (its worker is shutting down): queued again at once,
  // ready for any worker; the attempt is recorded as "released" with `why` and does not count
  // against the attempt limit. A job whose cancel was requested is cancelled instead.
  // lease_lost when the lease is not current.
  virtual Result<void> release(const LeaseRef& lease, std::string_view why) = 0;
  // A queued job is cancelled at once; a leased one when its worker hears it (heartbeat) or
  // its lease expires. Returns the job's state after the call. finished for a finished job.
  virtual Result<State> cancel(const std::string& job) = 0;
  // A dead job queued again with a fresh set of attempts (the history is kept).
  virtual Result<void> retry(const std::string& job) = 0;

  // Deletes up to `limit` finished jobs with their history: succeeded and cancelled ones
  // finished more than `finished_age` ago, dead ones more than `dead_age` ago. Returns how
  // many. An idempotency key names its job only while the job is kept.
  virtual Result<std::size_t> purge(std::chrono::milliseconds finished_age,
                                    std::chrono::milliseconds dead_age, std::size_t limit) = 0;

  virtual Result<Job> get(const std::string& job) = 0;                    // with its history
  virtual Result<std::vector<Job>> list(const ListRequest& request) = 0;  // without history
  virtual Result<std::vector<TypeStats>> stats() = 0;
};

}  // namespace kiln::jobs
