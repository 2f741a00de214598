// The JobQueue on RabbitMQ (AMQP 0-9-1, docs/jobs.md): the database keeps every job's state
// and history exactly as the database adapter does (this adapter holds one and delegates to
// it); RabbitMQ tells workers of work. A message carries a job id, nothing else, and the
// database decides what it means: a delivery whose job is queued and ready is leased; one
// whose job is already leased, finished, cancelled or not ready yet is acked and dropped; one
// that names no job (malformed, or a job this database does not have) goes to the dead
// letters with the reason in its header `x-kiln-reason`.
//
// Topology (declared by whoever needs it first, all durable): a direct exchange `<prefix>`;
// per job type a quorum queue `<prefix>.<type>` bound with the type as its key, with
// `x-delivery-limit` (a message redelivered more often is dead-lettered) and
// `x-dead-letter-exchange` `<prefix>.dlx`, a fanout to the quorum queue
// `<prefix>._dead-letters` (the newest 100,000 kept for an operator to look at; nothing
// reads them and no job is lost with them: the database keeps every job; a job
// type cannot start with `_`, so no type's queue takes its name).
//
// Publishing: after the database committed (enqueue, release, retry), the message is handed
// to a publisher thread, which sends what has gathered in one go, persistent, and awaits the
// publisher confirms together; an enqueue never waits for the broker. Consuming: one connection per
// process on a thread of its own, manual acks after the database took the job, a prefetch limit.
// When the broker cannot be reached, calls still succeed on the database and workers find the work
// by asking the database directly: every `sweep` interval a lease also takes ready jobs from the
// database (which also finds jobs whose retry backoff ended and leases that expired; a job a
// message announced only once it has waited a sweep interval: DatabaseQueue::sweep), and again
// at once while sweeps find work and no delivery waits; while the consuming connection is down,
// leases poll the database as the database adapter does. So a broker outage slows nothing but
// the wake-up, and loses no job.
// The connections come back with exponential backoff and full jitter.
#pragma once

#include "clients/amqp/amqp.hpp"
#include "jobs/database_queue.hpp"

#include <memory>

namespace kiln::metrics {
class Registry;
}

namespace kiln::jobs {

struct RabbitQueueOptions {
  amqp::Url url;                           // the broker (parse it with amqp::parse_url)
  std::string prefix = "kiln.jobs";        // exchange and queue names
  int delivery_limit = 10;                 // x-delivery-limit of each type's queue
  std::uint16_t prefetch = 16;             // deliveries held unacked by this process, at most
  std::chrono::milliseconds sweep{5'000};  // how often a lease also asks the database
  std::chrono::milliseconds confirm_timeout{5'000};
  std::chrono::milliseconds connect_timeout{5'000};
  std::chrono::milliseconds reconnect_base{100};
  std::chrono::milliseconds reconnect_cap{10'000};
  std::string name = "kiln";  // the connections' names in the broker
};

class RabbitQueue final : public JobQueue {
 public:
  RabbitQueue(store::Database& db, DatabaseQueueOptions db_options, RabbitQueueOptions options,
              metrics::Registry* registry = nullptr);
  ~RabbitQueue() override;  // stops consuming (unacked deliveries go back to the broker)
  RabbitQueue(const RabbitQueue&) = delete;
  RabbitQueue& operator=(const RabbitQueue&) = delete;

  Result<Enqueued> enqueue(const NewJob& job) override;
  // Subscribes to the request's types (first call per type), then waits up to
  // request.wait for deliveries of those types; the database is asked directly when a
  // sweep is due.
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

  // Whether the consuming connection is up now (health, tests).
  [[nodiscard]] bool connected() const;
  // Why the broker cannot be used, if it cannot (health); empty when it can.
  [[nodiscard]] std::string problem() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace kiln::jobs
