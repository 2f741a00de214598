#include "jobs/rabbitmq_queue.hpp"

#include "jobs/rabbitmq_link.hpp"
#include "platform/log.hpp"

#include <algorithm>

namespace kiln::jobs {

namespace {

using Clock = std::chrono::steady_clock;

// A job id as the queue makes them ("j" and hex digits): anything else is not ours.
bool looks_like_job_id(std::string_view s) {
  return s.size() >= 2 && s.size() <= 64 && s[0] == 'j' &&
         std::all_of(s.begin() + 1, s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

}  // namespace

struct RabbitQueue::Impl {
  Impl(store::Database& d, DatabaseQueueOptions o, RabbitQueueOptions r, metrics::Registry* reg)
      : db(d, std::move(o)),
        options(std::move(r)),
        publisher(options, reg),
        consumer(options, reg) {
    if (reg)
      deliveries = &reg->counter("kiln_jobs_broker_deliveries_total",
                                 "RabbitMQ deliveries by what the database made of them (leased; "
                                 "dropped: the job was not ready; dead_lettered: no such job).",
                                 {"outcome"});
  }

  DatabaseQueue db;
  RabbitQueueOptions options;
  rabbit::Publisher publisher;
  rabbit::Consumer consumer;
  metrics::Family<metrics::Counter>* deliveries = nullptr;
  std::atomic<std::int64_t> next_sweep_ms{0};  // steady clock, ms

  void count(const char* outcome) {
    if (deliveries) deliveries->with({outcome}).inc();
  }

  Result<std::vector<Lease>> lease(const LeaseRequest& r) {
    if (auto bad = check(r)) return *bad;
    consumer.subscribe(r.types);
    // No broker: the database adapter's own way (it polls, and in-process enqueues wake it).
    if (!consumer.connected()) return db.lease(r);
    const auto deadline = Clock::now() + r.wait;
    std::vector<Lease> out;
    auto one = r;
    one.max_jobs = 1;
    one.wait = std::chrono::milliseconds(0);
    for (;;) {
      const auto now = Clock::now();
      const auto now_ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
      auto due = next_sweep_ms.load();
      if (now_ms >= due &&
          next_sweep_ms.compare_exchange_strong(due, now_ms + options.sweep.count())) {
        auto swept = r;
        swept.max_jobs = r.max_jobs - out.size();
        // A job a message announced is left to its message for a sweep interval.
        auto got = db.sweep(swept, options.sweep);
        if (!got) return out.empty() ? got : Result<std::vector<Lease>>(std::move(out));
        // Work no message brought (a retry whose backoff ended, an expired lease, a message
        // lost or late): there may be more, so the next lease sweeps again, unless messages
        // are waiting (they bring work; a sweep beside them would take jobs whose messages
        // then wait to be dropped, a transaction each, in front of newer jobs).
        if (!got->empty() && !consumer.waiting(r.types)) next_sweep_ms.store(now_ms);
        for (auto& l : *got) out.push_back(std::move(l));
        if (out.size() >= r.max_jobs) return out;
      }
      // Once something is taken, only what has arrived already; else until the deadline or
      // the next sweep.
      const auto sweep_at = Clock::time_point(std::chrono::milliseconds(next_sweep_ms.load()));
      auto p = consumer.take(r.types, out.empty() ? std::min(deadline, sweep_at) : now);
      if (!p) {
        if (!out.empty() || Clock::now() >= deadline) return out;
        continue;
      }
      const auto& id = p->delivery.body;
      if (!looks_like_job_id(id)) {
        log::warn("jobs: a RabbitMQ message names no job; dead-lettered",
                  {{"queue", rabbit::Topology{options}.queue_of(p->delivery.routing_key)},
                   {"bytes", static_cast<std::int64_t>(id.size())}});
        consumer.dead_letter(*p, "the message names no job (a job id is j and hex digits)");
        count("dead_lettered");
        continue;
      }
      auto l = db.lease_job(id, one);
      if (!l) {
        if (l.error().code == Errc::not_found) {
          log::warn(
              "jobs: a RabbitMQ message names a job the database does not have; dead-lettered",
              {{"job", id}});
          consumer.dead_letter(*p, "the database has no job " + id);
          count("dead_lettered");
          continue;
        }
        // The database cannot answer: keep the delivery (unacked, not requeued: no delivery
        // count spent) for the next lease.
        consumer.put_back(std::move(*p));
        if (!out.empty()) return out;
        return l.error();
      }
      consumer.ack(*p);
      if (*l) {
        count("leased");
        out.push_back(std::move(**l));
        if (out.size() >= r.max_jobs) return out;
      } else {
        count("dropped");  // leased, finished or not ready: the database decided
      }
    }
  }

  void stop() {
    consumer.stop();   // unacked deliveries go back to the broker
    publisher.stop();  // what was handed over is sent first
  }
};

RabbitQueue::RabbitQueue(store::Database& db, DatabaseQueueOptions db_options,
                         RabbitQueueOptions options, metrics::Registry* registry)
    : impl_(std::make_shared<Impl>(db, std::move(db_options), std::move(options), registry)) {}

RabbitQueue::~RabbitQueue() {
  impl_->stop();
}

Result<Enqueued> RabbitQueue::enqueue(const NewJob& job) {
  auto e = impl_->db.enqueue(job);
  if (e && e->created) impl_->publisher.publish(job.type, e->id);
  return e;
}

Result<std::vector<Lease>> RabbitQueue::lease(const LeaseRequest& request) {
  return impl_->lease(request);
}

Result<Beat> RabbitQueue::heartbeat(const LeaseRef& lease, int progress, std::string_view status,
                                    std::chrono::milliseconds extend) {
  return impl_->db.heartbeat(lease, progress, status, extend);
}

Result<void> RabbitQueue::complete(const LeaseRef& lease, std::string_view result) {
  return impl_->db.complete(lease, result);
}

// A retry after a backoff is found by a sweep once its backoff ends (no delayed message).
Result<Failed> RabbitQueue::fail(const LeaseRef& lease, const FailReport& report) {
  return impl_->db.fail(lease, report);
}

Result<void> RabbitQueue::release(const LeaseRef& lease, std::string_view why) {
  KILN_CHECK(impl_->db.release(lease, why));
  if (auto j = impl_->db.get(lease.job); j && j->state == State::queued)
    impl_->publisher.publish(j->type, j->id);
  return {};
}

Result<State> RabbitQueue::cancel(const std::string& job) {
  return impl_->db.cancel(job);
}

Result<void> RabbitQueue::retry(const std::string& job) {
  KILN_CHECK(impl_->db.retry(job));
  if (auto j = impl_->db.get(job)) impl_->publisher.publish(j->type, j->id);
  return {};
}

Result<std::size_t> RabbitQueue::purge(std::chrono::milliseconds finished_age,
                                       std::chrono::milliseconds dead_age, std::size_t limit) {
  return impl_->db.purge(finished_age, dead_age, limit);
}

Result<Job> RabbitQueue::get(const std::string& job) {
  return impl_->db.get(job);
}

Result<std::vector<Job>> RabbitQueue::list(const ListRequest& request) {
  return impl_->db.list(request);
}

Result<std::vector<TypeStats>> RabbitQueue::stats() {
  return impl_->db.stats();
}

bool RabbitQueue::connected() const {
  return impl_->consumer.connected();
}

std::string RabbitQueue::problem() const {
  return impl_->consumer.problem();
}

}  // namespace kiln::jobs
