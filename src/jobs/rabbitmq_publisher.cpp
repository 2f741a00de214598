#include "jobs/rabbitmq_link.hpp"
#include "platform/log.hpp"

namespace kiln::jobs::rabbit {

using Clock = std::chrono::steady_clock;

Publisher::Publisher(const RabbitQueueOptions& options, metrics::Registry* registry)
    : topology_{options} {
  if (registry)
    published_ = &registry->counter(
        "kiln_jobs_broker_published_total",
        "Job messages published to RabbitMQ, by result (ok; failed: the broker did not confirm; "
        "skipped: while it is down).",
        {"result"});
}

Publisher::~Publisher() {
  stop();
}

void Publisher::publish(const std::string& type, const std::string& job) {
  {
    std::lock_guard lock(mu_);
    if (waiting_.size() >= kMaxWaiting) {
      if (published_) published_->with({"skipped"}).inc();
      return;
    }
    waiting_.emplace_back(type, job);
    if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
  }
  cv_.notify_one();
}

void Publisher::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Publisher::loop() {
  std::unique_ptr<amqp::Connection> c;
  std::set<std::string> declared;
  Clock::time_point down_until{};
  int failures = 0;
  std::string last_error;
  const auto count = [this](const char* result, std::size_t n) {
    if (published_) published_->with({result}).inc(static_cast<double>(n));
  };
  for (;;) {
    std::vector<std::pair<std::string, std::string>> batch;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !waiting_.empty(); });
      if (waiting_.empty()) return;  // stopping, nothing left
      while (!waiting_.empty() && batch.size() < 1'000) {
        batch.push_back(std::move(waiting_.front()));
        waiting_.pop_front();
      }
    }
    if (Clock::now() < down_until) {
      count("skipped", batch.size());
      continue;
    }
    std::string error;
    for (int attempt = 0; attempt < 2; ++attempt) {  // the second on a fresh connection
      try {
        if (!c) {
          c = std::make_unique<amqp::Connection>(topology_.connection("publisher", 0));
          c->confirm_select();
          topology_.declare_common(*c);
          declared.clear();
        }
        for (const auto& [type, id] : batch) {
          if (declared.contains(type)) continue;
          topology_.declare_type(*c, type);
          declared.insert(type);
        }
        c->publish_all(topology_.options.prefix, batch, topology_.options.confirm_timeout);
        if (!last_error.empty()) log::info("jobs: publishing to RabbitMQ again");
        last_error.clear();
        failures = 0;
        error.clear();
        count("ok", batch.size());
        break;
      } catch (const amqp::Error& e) {
        c.reset();
        error = e.what();
        if (!e.lost()) break;
      }
    }
    if (error.empty()) continue;
    ++failures;
    down_until = Clock::now() + topology_.reconnect_wait(failures);
    if (last_error.empty())
      log::warn("jobs: cannot publish to RabbitMQ; workers find new jobs by the database sweep",
                {{"broker", topology_.options.url.redacted()}, {"error", error}});
    last_error = error;
    count("failed", batch.size());
  }
}

}  // namespace kiln::jobs::rabbit
