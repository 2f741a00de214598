// The JobQueue on the database alone (docs/jobs.md): SQLite in `kiln serve`, PostgreSQL
// (through PgBouncer in transaction mode) for deployments that run no broker. Workers poll:
// a lease is one write transaction that first turns expired leases into failed attempts,
// then takes ready jobs with `FOR UPDATE SKIP LOCKED` on PostgreSQL (concurrent workers take
// different jobs and never wait on each other) or under SQLite's exclusive write lock.
//
// A database that cannot answer (sql::Error temporary()) is Errc::unavailable; any other
// sql::Error is a bug in Kiln and is thrown.
#pragma once

#include "jobs/queue.hpp"
#include "store/database.hpp"

#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>

namespace kiln::jobs {

struct DatabaseQueueOptions {
  RetryPolicy default_policy;
  std::map<std::string, RetryPolicy, std::less<>> policies;  // by job type
  // The backoff's jitter, a draw in [0, 1); default: a random engine per thread.
  std::function<double()> random;
  // Added to the database's clock (ms): tests move time forward without waiting.
  std::function<std::int64_t()> clock_offset_ms;
  // Instead of the database's clock (ms since the Unix epoch; tests whose clock must stand
  // still while they wait in real time). clock_offset_ms is added to it too.
  std::function<std::int64_t()> clock_ms;
  std::size_t reap_batch = 100;  // expired leases handled per lease() call, at most
  // While a lease waits (LeaseRequest::wait), the database is asked again this often; an
  // enqueue, release or retry through this queue object wakes it at once.
  std::chrono::milliseconds poll{200};
};

class DatabaseQueue final : public JobQueue {
 public:
  DatabaseQueue(store::Database& db, DatabaseQueueOptions options);

  Result<Enqueued> enqueue(const NewJob& job) override;
  Result<std::vector<Lease>> lease(const LeaseRequest& request) override;
  Result<Beat> heartbeat(const LeaseRef& lease, int progress, std::string_view status,
                         std::chrono::milliseconds extend) override;
  Result<void> complete(const LeaseRef& lease, std::string_view result) override;
  Result<Failed> fail(const LeaseRef& lease, const FailReport& report) override;
  Result<void> release(const LeaseRef& lease, std::string_view why) override;
  Result<State> cancel(const std::string& job) override;
  Result<void> retry(const std::string& job) override;
  Result<std::size_t> purge(std::chrono::milliseconds finished_age,
                            std::chrono::milliseconds dead_age, std::size_t limit) override;
  Result<Job> get(const std::string& job) override;
  Result<std::vector<Job>> list(const ListRequest& request) override;
  Result<std::vector<TypeStats>> stats() override;

  [[nodiscard]] const RetryPolicy& policy(std::string_view type) const;

  // Leases this one job if it is queued, ready now and of one of the request's types (a
  // broker's delivery names it); nullopt when it is not (finished, leased, not ready yet,
  // another type): the database decides. not_found when there is no such job.
  Result<std::optional<Lease>> lease_job(const std::string& id, const LeaseRequest& request);
  // What a sweep behind a message transport takes, at once (request.wait is not waited):
  // expired leases reaped, then ready jobs as lease() takes them, except that a job a message
  // announced (never attempted, and ready when it was enqueued) is taken only once it has
  // been ready for `grace`: until then its message is on its way, and a sweep that took the
  // job would leave that message to be delivered and dropped.
  Result<std::vector<Lease>> sweep(const LeaseRequest& request, std::chrono::milliseconds grace);

 private:
  std::int64_t now(sql::Connection& c) const;
  double draw() const;
  // Runs `fn` in a write transaction; a database that cannot answer is Errc::unavailable.
  template <class T>
  Result<T> write(const std::function<Result<T>(sql::Connection&)>& fn);
  template <class T>
  Result<T> read(const std::function<Result<T>(sql::Connection&)>& fn);
  // The job under this lease, locked, or lease_lost / not_found.
  Result<store::Job> current(sql::Connection& c, const LeaseRef& lease);
  // One transaction: expired leases reaped, then ready jobs leased (no waiting); with a
  // grace, announced jobs only once ready that long (sweep()).
  Result<std::vector<Lease>> lease_now(const LeaseRequest& request,
                                       std::optional<std::chrono::milliseconds> grace = {});
  // The job, locked and ready, becomes leased under `request`: its row and its attempt.
  Lease take(sql::Connection& c, store::Job& j, const LeaseRequest& request, std::int64_t now);
  // Wakes leases waiting in this process (new work is ready).
  void wake();
  // An expired lease becomes a failed attempt (or a cancellation).
  void reap(sql::Connection& c, store::Job& j, std::int64_t now);
  // A failed attempt's consequence on the row: cancelled (if asked), queued after its
  // backoff, or dead.
  void failed(store::Job& j, Failure kind, std::int64_t now);

  store::Database& db_;
  DatabaseQueueOptions options_;
  std::mutex wake_mu_;
  std::condition_variable wake_cv_;
  std::uint64_t wakes_ = 0;  // (wake_mu_)
};

// Checks what a caller gives the queue (shapes and limits, docs/jobs.md); nullopt when fine.
std::optional<Error> check(const NewJob& job);
std::optional<Error> check(const LeaseRequest& request);

}  // namespace kiln::jobs
