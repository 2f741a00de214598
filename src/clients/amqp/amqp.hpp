// An AMQP 0-9-1 client (RabbitMQ) over rabbitmq-c (librabbitmq, Debian's librabbitmq-dev):
// one connection with one channel, blocking calls with timeouts. Only what Kiln's job queue
// uses: declaring durable exchanges and queues (quorum queues take their x-arguments),
// publishing persistent messages (with headers) with publisher confirms, consuming with manual acks
// and a prefetch limit, ack / reject / nack.
//
// A Connection is not thread-safe: one thread owns it (rabbitmq-c's rule). Every failure is
// an amqp::Error; `lost()` says the connection is unusable (a socket error, a timeout, the
// broker closing the channel or connection) and must be opened again.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

namespace kiln::amqp {

struct Error : std::runtime_error {
  explicit Error(const std::string& what, bool lost = true)
      : std::runtime_error(what), lost_(lost) {}
  [[nodiscard]] bool lost() const { return lost_; }

 private:
  bool lost_;
};

// amqp://user:password@host:port/vhost (RabbitMQ's URI spec: defaults guest, guest,
// localhost, 5672; no path is the vhost "/", a path is the vhost percent-decoded, so
// "amqp://host/" names the vhost "" and "/" elsewhere is "%2F"). Throws Error (not lost)
// naming what is wrong, never the password.
struct Url {
  std::string host = "localhost";
  int port = 5672;
  std::string user = "guest";
  std::string password = "guest";
  std::string vhost = "/";
  // The URL without its password (logs, errors).
  [[nodiscard]] std::string redacted() const;
};
Url parse_url(const std::string& url);

struct ConnectionOptions {
  Url url;
  std::chrono::milliseconds connect_timeout{5'000};  // TCP connect, and the AMQP handshake
  std::chrono::milliseconds rpc_timeout{10'000};     // each synchronous method (declare, ...)
  int heartbeat_s = 10;                              // 0: none
  std::string name;                                  // the connection's name in the broker
};

// A queue's or exchange's arguments ("x-queue-type": "quorum", "x-delivery-limit": 10).
using Argument = std::variant<std::int64_t, std::string>;
using Arguments = std::vector<std::pair<std::string, Argument>>;

struct Delivery {
  std::uint64_t tag = 0;  // for ack / reject on this connection only
  std::string exchange;
  std::string routing_key;
  std::string body;
  bool redelivered = false;
  Arguments headers;  // the message's string and integer headers
};

class Connection {
 public:
  // Connects, logs in and opens channel 1. Throws Error.
  explicit Connection(const ConnectionOptions& options);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void declare_exchange(const std::string& name, const std::string& type);  // durable
  // Durable; returns the number of messages ready in it.
  std::uint32_t declare_queue(const std::string& name, const Arguments& arguments);
  void bind(const std::string& queue, const std::string& exchange, const std::string& key);
  void qos(std::uint16_t prefetch);
  // Puts the channel in confirm mode: every publish() then waits for the broker's ack.
  void confirm_select();
  // A persistent message; in confirm mode, returns once the broker confirmed it (it is on
  // disk on a quorum of the queue's replicas) or throws on a nack or after `timeout`.
  void publish(const std::string& exchange, const std::string& key, const std::string& body,
               std::chrono::milliseconds timeout, const Arguments& headers = {});
  // Many persistent messages (routing key, body) sent back to back, then, in confirm mode,
  // their confirms awaited together (the broker may ack several at once): one round trip for
  // the lot. Throws on a nack (naming how many were refused) or after `timeout`. `headers`
  // go on every message.
  void publish_all(const std::string& exchange,
                   const std::vector<std::pair<std::string, std::string>>& messages,
                   std::chrono::milliseconds timeout, const Arguments& headers = {});
  // Starts consuming with manual acks; returns the consumer tag.
  std::string consume(const std::string& queue);
  // The next delivery, waiting at most `timeout` (0: only what has arrived); nullopt if none.
  std::optional<Delivery> next(std::chrono::milliseconds timeout);
  void ack(std::uint64_t tag);
  // requeue false: the broker dead-letters it (the queue's x-dead-letter-exchange).
  void reject(std::uint64_t tag, bool requeue);
  // The socket, for waiting on it beside other events (poll). True when frames are already
  // buffered (next(0) has something without reading the socket).
  [[nodiscard]] int fd() const;
  [[nodiscard]] bool buffered() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::amqp
