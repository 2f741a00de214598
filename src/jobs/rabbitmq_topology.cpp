#include "jobs/rabbitmq_link.hpp"

#include <random>

namespace kiln::jobs::rabbit {

namespace {

double draw() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

}  // namespace

std::string Topology::queue_of(const std::string& type) const {
  return options.prefix + "." + type;
}

std::string Topology::dead_letter_queue() const {
  return options.prefix + "._dead-letters";
}

amqp::Arguments Topology::dead_letter_arguments() {
  return {{"x-queue-type", std::string("quorum")}, {"x-max-length", kMaxDeadLetters}};
}

void Topology::declare_common(amqp::Connection& c) const {
  c.declare_exchange(options.prefix, "direct");
  c.declare_exchange(options.prefix + ".dlx", "fanout");
  c.declare_queue(dead_letter_queue(), dead_letter_arguments());
  c.bind(dead_letter_queue(), options.prefix + ".dlx", "");
}

void Topology::declare_type(amqp::Connection& c, const std::string& type) const {
  c.declare_queue(queue_of(type),
                  {{"x-queue-type", std::string("quorum")},
                   {"x-delivery-limit", static_cast<std::int64_t>(options.delivery_limit)},
                   {"x-dead-letter-exchange", options.prefix + ".dlx"}});
  c.bind(queue_of(type), options.prefix, type);
}

amqp::ConnectionOptions Topology::connection(const char* role, int heartbeat_s) const {
  amqp::ConnectionOptions o;
  o.url = options.url;
  o.connect_timeout = options.connect_timeout;
  o.rpc_timeout = options.confirm_timeout;
  o.heartbeat_s = heartbeat_s;
  o.name = options.name + " " + role;
  return o;
}

std::chrono::milliseconds Topology::reconnect_wait(int failures) const {
  return backoff(RetryPolicy{0, options.reconnect_base, options.reconnect_cap},
                 std::max(1, failures), draw());
}

}  // namespace kiln::jobs::rabbit
