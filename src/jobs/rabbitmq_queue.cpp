#include "jobs/rabbitmq_queue.hpp"

#include "platform/log.hpp"
#include "platform/metrics.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <set>
#include <thread>

namespace kiln::jobs {

namespace {

using Clock = std::chrono::steady_clock;

// A job id as the queue makes them ("j" and hex digits): anything else is not ours.
bool looks_like_job_id(std::string_view s) {
  return s.size() >= 2 && s.size() <= 64 && s[0] == 'j' &&
         std::all_of(s.begin() + 1, s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

double draw() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

struct Pending {
  std::uint64_t generation = 0;  // the consuming connection it came on
  amqp::Delivery delivery;
};

struct Op {
  enum Kind { ack, reject, requeue } kind = ack;
  std::uint64_t generation = 0;
  std::uint64_t tag = 0;
};

}  // namespace

struct RabbitQueue::Impl {
  Impl(store::Database& d, DatabaseQueueOptions o, RabbitQueueOptions r, metrics::Registry* reg)
      : db(d, std::move(o)), options(std::move(r)) {
    wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (reg) {
      published = &reg->counter("kiln_jobs_broker_published_total",
                                "Job messages published to RabbitMQ, by result (ok; failed: the "
                                "broker did not confirm; skipped: while it is down).",
                                {"result"});
      deliveries = &reg->counter("kiln_jobs_broker_deliveries_total",
                                 "RabbitMQ deliveries by what the database made of them (leased; "
                                 "dropped: the job was not ready; dead_lettered: no such job).",
                                 {"outcome"});
      up = &reg->gauge("kiln_jobs_broker_connected", "1 while this process consumes from RabbitMQ.")
                .get();
    }
  }
  ~Impl() {
    if (wake_fd >= 0) ::close(wake_fd);
  }

  DatabaseQueue db;
  RabbitQueueOptions options;
  metrics::Family<metrics::Counter>* published = nullptr;
  metrics::Family<metrics::Counter>* deliveries = nullptr;
  metrics::Gauge* up = nullptr;
  int wake_fd = -1;
  std::atomic<std::int64_t> next_sweep_ms{0};  // steady clock, ms

  // --- topology --------------------------------------------------------------------------
  std::string queue_of(const std::string& type) const { return options.prefix + "." + type; }
  void declare_common(amqp::Connection& c) const {
    c.declare_exchange(options.prefix, "direct");
    c.declare_exchange(options.prefix + ".dlx", "fanout");
    c.declare_queue(options.prefix + "._dead-letters", {{"x-queue-type", std::string("quorum")}});
    c.bind(options.prefix + "._dead-letters", options.prefix + ".dlx", "");
  }
  void declare_type(amqp::Connection& c, const std::string& type) const {
    c.declare_queue(queue_of(type),
                    {{"x-queue-type", std::string("quorum")},
                     {"x-delivery-limit", static_cast<std::int64_t>(options.delivery_limit)},
                     {"x-dead-letter-exchange", options.prefix + ".dlx"}});
    c.bind(queue_of(type), options.prefix, type);
  }
  amqp::ConnectionOptions connection(const char* role, int heartbeat_s) const {
    amqp::ConnectionOptions o;
    o.url = options.url;
    o.connect_timeout = options.connect_timeout;
    o.rpc_timeout = options.confirm_timeout;
    o.heartbeat_s = heartbeat_s;
    o.name = options.name + " " + role;
    return o;
  }
  std::chrono::milliseconds reconnect_wait(int failures) const {
    return backoff(RetryPolicy{0, options.reconnect_base, options.reconnect_cap},
                   std::max(1, failures), draw());
  }
  void count(metrics::Family<metrics::Counter>* f, const char* label) {
    if (f) f->with({label}).inc();
  }

  // --- publishing (its own thread) ------------------------------------------------------
  // An enqueue hands the message over and returns: the job is in the database already, and
  // a sweep finds it if no message does. The publisher sends what has gathered in one go and
  // awaits the confirms together.
  static constexpr std::size_t kMaxWaiting = 100'000;  // beyond: dropped (the sweep finds them)
  std::mutex pub_mu;
  std::condition_variable pub_cv;
  std::deque<std::pair<std::string, std::string>> to_publish;  // (type, job id) (pub_mu)
  bool pub_stopping = false;                                   // (pub_mu)
  std::thread publisher;

  void publish(const std::string& type, const std::string& id) {
    {
      std::lock_guard lock(pub_mu);
      if (to_publish.size() >= kMaxWaiting) return count(published, "skipped");
      to_publish.emplace_back(type, id);
      if (!publisher.joinable()) publisher = std::thread([this] { publish_loop(); });
    }
    pub_cv.notify_one();
  }

  void publish_loop() {
    std::unique_ptr<amqp::Connection> c;
    std::set<std::string> declared;
    Clock::time_point down_until{};
    int failures = 0;
    std::string last_error;
    for (;;) {
      std::vector<std::pair<std::string, std::string>> batch;
      {
        std::unique_lock lock(pub_mu);
        pub_cv.wait(lock, [&] { return pub_stopping || !to_publish.empty(); });
        if (to_publish.empty()) return;  // stopping, nothing left
        while (!to_publish.empty() && batch.size() < 1'000) {
          batch.push_back(std::move(to_publish.front()));
          to_publish.pop_front();
        }
      }
      if (Clock::now() < down_until) {
        if (published) published->with({"skipped"}).inc(static_cast<double>(batch.size()));
        continue;
      }
      std::string error;
      for (int attempt = 0; attempt < 2; ++attempt) {  // the second on a fresh connection
        try {
          if (!c) {
            c = std::make_unique<amqp::Connection>(connection("publisher", 0));
            c->confirm_select();
            declare_common(*c);
            declared.clear();
          }
          std::vector<std::pair<std::string, std::string>> messages;
          for (auto& [type, id] : batch) {
            if (!declared.contains(type)) {
              declare_type(*c, type);
              declared.insert(type);
            }
            messages.emplace_back(type, id);
          }
          c->publish_all(options.prefix, messages, options.confirm_timeout);
          if (!last_error.empty()) log::info("jobs: publishing to RabbitMQ again");
          last_error.clear();
          failures = 0;
          error.clear();
          if (published) published->with({"ok"}).inc(static_cast<double>(batch.size()));
          break;
        } catch (const amqp::Error& e) {
          c.reset();
          error = e.what();
          if (!e.lost()) break;
        }
      }
      if (error.empty()) continue;
      ++failures;
      down_until = Clock::now() + reconnect_wait(failures);
      if (last_error.empty())
        log::warn("jobs: cannot publish to RabbitMQ; workers find new jobs by the database sweep",
                  {{"broker", options.url.redacted()}, {"error", error}});
      last_error = error;
      if (published) published->with({"failed"}).inc(static_cast<double>(batch.size()));
    }
  }

  // --- consuming (its own thread) ------------------------------------------------------------
  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;         // (mu)
  std::set<std::string> wanted;  // types to consume (mu)
  std::deque<Pending> buffer;    // deliveries not yet taken (mu)
  std::vector<Op> ops;           // acks and rejects to send (mu)
  std::uint64_t generation = 0;  // of the current consuming connection (mu)
  std::string consume_error;     // (mu)
  std::atomic<bool> connected{false};
  bool ever_connected = false;  // (mu)
  std::thread consumer;

  void wake() {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd, &one, sizeof one);
  }

  void subscribe(const std::vector<std::string>& types) {
    bool added = false;
    {
      std::lock_guard lock(mu);
      for (const auto& t : types) added = wanted.insert(t).second || added;
      if (!consumer.joinable()) consumer = std::thread([this] { consume_loop(); });
    }
    if (added) wake();
  }

  void send(Op::Kind kind, const Pending& p) {
    {
      std::lock_guard lock(mu);
      ops.push_back(Op{kind, p.generation, p.delivery.tag});
    }
    wake();
  }

  // A connection ended: its deliveries and acks mean nothing on the next one (the broker
  // redelivers what was not acked).
  void lost(const std::string& error) {
    connected = false;
    if (up) up->set(0);
    std::lock_guard lock(mu);
    ++generation;
    buffer.clear();
    ops.clear();
    if (consume_error.empty())
      log::warn(ever_connected ? "jobs: RabbitMQ connection lost; reconnecting (workers take jobs "
                                 "from the database meanwhile)"
                               : "jobs: cannot connect to RabbitMQ; retrying (workers take jobs "
                                 "from the database meanwhile)",
                {{"broker", options.url.redacted()}, {"error", error}});
    consume_error = error;
  }

  void consume_loop() {
    std::unique_ptr<amqp::Connection> c;
    std::set<std::string> subscribed;
    int failures = 0;
    for (;;) {
      {
        std::lock_guard lock(mu);
        if (stopping) return;
      }
      try {
        if (!c) {
          c = std::make_unique<amqp::Connection>(connection("consumer", 10));
          c->qos(options.prefetch);
          declare_common(*c);
          subscribed.clear();
          std::lock_guard lock(mu);
          ++generation;
          buffer.clear();
          ops.clear();
          if (!consume_error.empty()) log::info("jobs: consuming from RabbitMQ again");
          consume_error.clear();
          connected = true;
          ever_connected = true;
          if (up) up->set(1);
          failures = 0;
        }
        std::vector<std::string> add;
        std::vector<Op> todo;
        std::uint64_t gen = 0;
        {
          std::lock_guard lock(mu);
          for (const auto& t : wanted)
            if (!subscribed.contains(t)) add.push_back(t);
          todo.swap(ops);
          gen = generation;
        }
        for (const auto& t : add) {
          declare_type(*c, t);
          c->consume(queue_of(t));
          subscribed.insert(t);
        }
        for (const auto& op : todo) {
          if (op.generation != gen) continue;
          if (op.kind == Op::ack)
            c->ack(op.tag);
          else
            c->reject(op.tag, op.kind == Op::requeue);
        }
        if (!c->buffered()) {
          // At least every second: rabbitmq-c sends and checks heartbeats in next().
          pollfd fds[2] = {{c->fd(), POLLIN, 0}, {wake_fd, POLLIN, 0}};
          ::poll(fds, 2, 1000);
          if (fds[1].revents & POLLIN) {
            std::uint64_t n = 0;
            [[maybe_unused]] auto r = ::read(wake_fd, &n, sizeof n);
          }
        }
        for (int n = 0; n <= options.prefetch; ++n) {
          auto d = c->next(std::chrono::milliseconds(0));
          if (!d) break;
          {
            std::lock_guard lock(mu);
            buffer.push_back(Pending{gen, std::move(*d)});
          }
          cv.notify_all();
        }
      } catch (const amqp::Error& e) {
        c.reset();
        lost(e.what());
        cv.notify_all();
        ++failures;
        std::unique_lock lock(mu);
        cv.wait_for(lock, reconnect_wait(failures), [&] { return stopping; });
      }
    }
  }

  // The first buffered delivery of one of `types` from the current connection (mu held).
  std::optional<Pending> pop(const std::vector<std::string>& types) {
    for (auto it = buffer.begin(); it != buffer.end();) {
      if (it->generation != generation) {
        it = buffer.erase(it);
        continue;
      }
      if (std::find(types.begin(), types.end(), it->delivery.routing_key) != types.end()) {
        Pending p = std::move(*it);
        buffer.erase(it);
        return p;
      }
      ++it;
    }
    return std::nullopt;
  }

  Result<std::vector<Lease>> lease(const LeaseRequest& r) {
    if (auto bad = check(r)) return *bad;
    subscribe(r.types);
    // No broker: the database adapter's own way (it polls, and in-process enqueues wake it).
    if (!connected) return db.lease(r);
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
        swept.wait = std::chrono::milliseconds(0);
        auto got = db.lease(swept);
        if (!got) return out.empty() ? got : Result<std::vector<Lease>>(std::move(out));
        // Work no message announced (a retry whose backoff ended, an expired lease, a message
        // lost): there may be more, so the next lease sweeps again.
        if (!got->empty()) next_sweep_ms.store(now_ms);
        for (auto& l : *got) out.push_back(std::move(l));
        if (out.size() >= r.max_jobs) return out;
      }
      // Once something is taken, only what has arrived already; else until the deadline or
      // the next sweep.
      const auto sweep_at = Clock::time_point(std::chrono::milliseconds(next_sweep_ms.load()));
      const auto until = out.empty() ? std::min(deadline, sweep_at) : now;
      std::optional<Pending> p;
      {
        std::unique_lock lock(mu);
        cv.wait_until(lock, until, [&] { return stopping || (p = pop(r.types)).has_value(); });
      }
      if (!p) {
        if (!out.empty() || Clock::now() >= deadline) return out;
        continue;
      }
      const auto& id = p->delivery.body;
      if (!looks_like_job_id(id)) {
        log::warn("jobs: a RabbitMQ message names no job; dead-lettered",
                  {{"queue", queue_of(p->delivery.routing_key)},
                   {"bytes", static_cast<std::int64_t>(id.size())}});
        send(Op::reject, *p);
        count(deliveries, "dead_lettered");
        continue;
      }
      auto l = db.lease_job(id, one);
      if (!l) {
        if (l.error().code == Errc::not_found) {
          log::warn(
              "jobs: a RabbitMQ message names a job the database does not have; dead-lettered",
              {{"job", id}});
          send(Op::reject, *p);
          count(deliveries, "dead_lettered");
          continue;
        }
        // The database cannot answer: keep the delivery (unacked, not requeued: no delivery
        // count spent) for the next lease.
        {
          std::lock_guard lock(mu);
          buffer.push_front(std::move(*p));
        }
        if (!out.empty()) return out;
        return l.error();
      }
      send(Op::ack, *p);
      if (*l) {
        count(deliveries, "leased");
        out.push_back(std::move(**l));
        if (out.size() >= r.max_jobs) return out;
      } else {
        count(deliveries, "dropped");  // leased, finished or not ready: the database decided
      }
    }
  }

  void stop() {
    {
      std::lock_guard lock(mu);
      stopping = true;
    }
    cv.notify_all();
    wake();
    if (consumer.joinable()) consumer.join();
    {
      std::lock_guard lock(pub_mu);
      pub_stopping = true;
    }
    pub_cv.notify_all();
    if (publisher.joinable()) publisher.join();  // what was handed over is sent first
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
  if (e && e->created) impl_->publish(job.type, e->id);
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
    impl_->publish(j->type, j->id);
  return {};
}

Result<State> RabbitQueue::cancel(const std::string& job) {
  return impl_->db.cancel(job);
}

Result<void> RabbitQueue::retry(const std::string& job) {
  KILN_CHECK(impl_->db.retry(job));
  if (auto j = impl_->db.get(job)) impl_->publish(j->type, j->id);
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
  return impl_->connected;
}

std::string RabbitQueue::problem() const {
  std::lock_guard lock(impl_->mu);
  return impl_->consume_error;
}

}  // namespace kiln::jobs
