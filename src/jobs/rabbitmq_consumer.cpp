#include "jobs/rabbitmq_link.hpp"
#include "platform/log.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>

namespace kiln::jobs::rabbit {

Consumer::Consumer(const RabbitQueueOptions& options, metrics::Registry* registry)
    : topology_{options}, wake_fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  if (registry)
    up_ = &registry
               ->gauge("kiln_jobs_broker_connected", "1 while this process consumes from RabbitMQ.")
               .get();
}

Consumer::~Consumer() {
  stop();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void Consumer::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  wake();
  if (thread_.joinable()) thread_.join();
}

std::string Consumer::problem() const {
  std::lock_guard lock(mu_);
  return error_;
}

void Consumer::wake() {
  const std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

void Consumer::subscribe(const std::vector<std::string>& types) {
  bool added = false;
  {
    std::lock_guard lock(mu_);
    for (const auto& t : types) added = wanted_.insert(t).second || added;
    if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
  }
  if (added) wake();
}

void Consumer::send(Op op) {
  {
    std::lock_guard lock(mu_);
    ops_.push_back(std::move(op));
  }
  wake();
}

void Consumer::ack(const Pending& p) {
  send(Op{p.generation, p.delivery.tag, std::nullopt, ""});
}

void Consumer::dead_letter(const Pending& p, std::string reason) {
  send(Op{p.generation, p.delivery.tag, p, std::move(reason)});
}

void Consumer::run(amqp::Connection& c, const Op& op) const {
  if (op.dead) {
    const auto& d = op.dead->delivery;
    // Not in confirm mode: sent, not awaited; the channel keeps it before the ack.
    c.publish(topology_.options.prefix + ".dlx", d.routing_key, d.body,
              topology_.options.confirm_timeout,
              {{"x-kiln-reason", op.reason}, {"x-kiln-queue", topology_.queue_of(d.routing_key)}});
  }
  c.ack(op.tag);
}

void Consumer::put_back(Pending p) {
  std::lock_guard lock(mu_);
  buffer_.push_front(std::move(p));
}

std::optional<Pending> Consumer::pop(const std::vector<std::string>& types) {
  for (auto it = buffer_.begin(); it != buffer_.end();) {
    if (it->generation != generation_) {
      it = buffer_.erase(it);
      continue;
    }
    if (std::find(types.begin(), types.end(), it->delivery.routing_key) != types.end()) {
      Pending p = std::move(*it);
      buffer_.erase(it);
      return p;
    }
    ++it;
  }
  return std::nullopt;
}

std::optional<Pending> Consumer::take(const std::vector<std::string>& types,
                                      std::chrono::steady_clock::time_point until) {
  std::optional<Pending> p;
  std::unique_lock lock(mu_);
  cv_.wait_until(lock, until, [&] { return stopping_ || (p = pop(types)).has_value(); });
  return p;
}

bool Consumer::waiting(const std::vector<std::string>& types) const {
  std::lock_guard lock(mu_);
  return std::any_of(buffer_.begin(), buffer_.end(), [&](const Pending& p) {
    return p.generation == generation_ &&
           std::find(types.begin(), types.end(), p.delivery.routing_key) != types.end();
  });
}

// A connection ended: its deliveries and acks mean nothing on the next one (the broker
// redelivers what was not acked).
void Consumer::lost(const std::string& error) {
  connected_ = false;
  if (up_) up_->set(0);
  std::lock_guard lock(mu_);
  ++generation_;
  buffer_.clear();
  ops_.clear();
  if (error_.empty())
    log::warn(ever_connected_ ? "jobs: RabbitMQ connection lost; reconnecting (workers take jobs "
                                "from the database meanwhile)"
                              : "jobs: cannot connect to RabbitMQ; retrying (workers take jobs "
                                "from the database meanwhile)",
              {{"broker", topology_.options.url.redacted()}, {"error", error}});
  error_ = error;
}

void Consumer::loop() {
  const auto& options = topology_.options;
  std::unique_ptr<amqp::Connection> c;
  std::set<std::string> subscribed;
  int failures = 0;
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    try {
      if (!c) {
        c = std::make_unique<amqp::Connection>(topology_.connection("consumer", 10));
        c->qos(options.prefetch);
        topology_.declare_common(*c);
        subscribed.clear();
        std::lock_guard lock(mu_);
        ++generation_;
        buffer_.clear();
        ops_.clear();
        if (!error_.empty()) log::info("jobs: consuming from RabbitMQ again");
        error_.clear();
        connected_ = true;
        ever_connected_ = true;
        if (up_) up_->set(1);
        failures = 0;
      }
      std::vector<std::string> add;
      std::vector<Op> todo;
      std::uint64_t gen = 0;
      {
        std::lock_guard lock(mu_);
        for (const auto& t : wanted_)
          if (!subscribed.contains(t)) add.push_back(t);
        todo.swap(ops_);
        gen = generation_;
      }
      for (const auto& t : add) {
        topology_.declare_type(*c, t);
        c->consume(topology_.queue_of(t));
        subscribed.insert(t);
      }
      for (const auto& op : todo)
        if (op.generation == gen) run(*c, op);
      if (!c->buffered()) {
        // At least every second: rabbitmq-c sends and checks heartbeats in next().
        pollfd fds[2] = {{c->fd(), POLLIN, 0}, {wake_fd_, POLLIN, 0}};
        ::poll(fds, 2, 1000);
        if (fds[1].revents & POLLIN) {
          std::uint64_t n = 0;
          [[maybe_unused]] auto r = ::read(wake_fd_, &n, sizeof n);
        }
      }
      for (int n = 0; n <= options.prefetch; ++n) {
        auto d = c->next(std::chrono::milliseconds(0));
        if (!d) break;
        {
          std::lock_guard lock(mu_);
          buffer_.push_back(Pending{gen, std::move(*d)});
        }
        cv_.notify_all();
      }
    } catch (const amqp::Error& e) {
      c.reset();
      lost(e.what());
      cv_.notify_all();
      ++failures;
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, topology_.reconnect_wait(failures), [&] { return stopping_; });
    }
  }
}

}  // namespace kiln::jobs::rabbit
