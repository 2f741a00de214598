// Internal to the RabbitMQ adapter (rabbitmq_queue.hpp): the topology it declares, and its two
// connections to the broker, each on a thread of its own: the Publisher, which sends job ids
// with publisher confirms, and the Consumer, which receives deliveries and sends the acks and
// dead letters the database's decisions call for. Both reconnect with exponential backoff and full
// jitter; neither ever blocks a caller on the broker.
#pragma once

#include "jobs/rabbitmq_queue.hpp"
#include "platform/metrics.hpp"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace kiln::jobs::rabbit {

// Names and declarations (durable; idempotent: whoever needs them first declares them).
struct Topology {
  const RabbitQueueOptions& options;

  // At most this many dead letters are kept; beyond, the oldest go (x-overflow drop-head).
  static constexpr std::int64_t kMaxDeadLetters = 100'000;

  [[nodiscard]] std::string queue_of(const std::string& type) const;
  [[nodiscard]] std::string dead_letter_queue() const;
  // The dead-letter queue's arguments (a redeclaration must repeat them).
  [[nodiscard]] static amqp::Arguments dead_letter_arguments();
  // The direct exchange, the dead-letter exchange and its queue.
  void declare_common(amqp::Connection& c) const;
  // A type's quorum queue (delivery limit, dead-letter exchange), bound to the exchange.
  void declare_type(amqp::Connection& c, const std::string& type) const;
  [[nodiscard]] amqp::ConnectionOptions connection(const char* role, int heartbeat_s) const;
  // How long to wait before the next connection attempt after `failures` in a row.
  [[nodiscard]] std::chrono::milliseconds reconnect_wait(int failures) const;
};

// Hands job ids to the broker. publish() queues the message and returns at once; the thread
// sends what has gathered in one go and awaits the confirms together. While the broker is
// unreachable, messages are counted as skipped and dropped: the job is in the database, and
// a sweep finds it.
class Publisher {
 public:
  Publisher(const RabbitQueueOptions& options, metrics::Registry* registry);
  ~Publisher();  // stop()
  Publisher(const Publisher&) = delete;
  Publisher& operator=(const Publisher&) = delete;

  void publish(const std::string& type, const std::string& job);
  // Sends what was handed over (one attempt), then ends the thread.
  void stop();

 private:
  void loop();

  static constexpr std::size_t kMaxWaiting = 100'000;  // beyond: skipped
  Topology topology_;
  metrics::Family<metrics::Counter>* published_ = nullptr;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<std::string, std::string>> waiting_;  // (type, job id) (mu_)
  bool stopping_ = false;                                    // (mu_)
  std::thread thread_;
};

// A delivery, and the consuming connection it came on (acks on another one mean nothing).
struct Pending {
  std::uint64_t generation = 0;
  amqp::Delivery delivery;
};

// Receives deliveries of the subscribed types (manual acks, the options' prefetch) and keeps
// them until a lease takes them. A lost connection forgets its deliveries and pending acks
// (the broker redelivers what was not acked).
class Consumer {
 public:
  Consumer(const RabbitQueueOptions& options, metrics::Registry* registry);
  ~Consumer();  // stop()
  Consumer(const Consumer&) = delete;
  Consumer& operator=(const Consumer&) = delete;

  // Consumes these types too (starts the thread on the first call).
  void subscribe(const std::vector<std::string>& types);
  // The first delivery of one of `types` from the current connection, waiting until `until`
  // at most; nullopt if none came (or the consumer stops).
  std::optional<Pending> take(const std::vector<std::string>& types,
                              std::chrono::steady_clock::time_point until);
  // Whether a delivery of one of `types` has arrived and waits to be taken.
  [[nodiscard]] bool waiting(const std::vector<std::string>& types) const;
  // Keeps a delivery for the next take() (not acked, not requeued: no delivery count spent).
  void put_back(Pending p);
  void ack(const Pending& p);
  // To the dead letters with `reason` (the header x-kiln-reason; x-kiln-queue names the queue
  // it came from): published to the dead-letter exchange, then acked, on the consuming
  // channel. At most once, as RabbitMQ's own dead-lettering of quorum queues: a broker crash
  // between the two can lose the dead letter (or, before the ack, make a second one).
  void dead_letter(const Pending& p, std::string reason);

  [[nodiscard]] bool connected() const { return connected_; }
  [[nodiscard]] std::string problem() const;
  void stop();

 private:
  struct Op {
    std::uint64_t generation = 0;
    std::uint64_t tag = 0;
    std::optional<Pending> dead;  // a dead letter to publish before the ack
    std::string reason;
  };
  void loop();
  void wake();
  void send(Op op);
  void run(amqp::Connection& c, const Op& op) const;
  void lost(const std::string& error);
  std::optional<Pending> pop(const std::vector<std::string>& types);  // mu_ held

  Topology topology_;
  metrics::Gauge* up_ = nullptr;
  int wake_fd_ = -1;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;         // (mu_)
  std::set<std::string> wanted_;  // types to consume (mu_)
  std::deque<Pending> buffer_;    // deliveries not yet taken (mu_)
  std::vector<Op> ops_;           // acks and dead letters to send (mu_)
  std::uint64_t generation_ = 0;  // of the current connection (mu_)
  std::string error_;             // why the broker cannot be used, if it cannot (mu_)
  bool ever_connected_ = false;   // (mu_)
  std::atomic<bool> connected_{false};
  std::thread thread_;
};

}  // namespace kiln::jobs::rabbit
