// The Asio side of the Redis client: one translation unit with the socket operations.
#include "clients/redis/connection.hpp"

#include "platform/log.hpp"
#include "platform/runtime_asio.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <deque>
#include <mutex>
#include <random>

namespace kiln::redis {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;
constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

bool is_push(const Reply& r) {
  if (r.type != Reply::Type::Array || r.elements.empty()) return false;
  const auto& kind = r.elements[0].str;
  return kind == "message" || kind == "smessage" || kind == "pmessage" || kind == "sunsubscribe";
}

class AsioConnection final : public Connection,
                             public std::enable_shared_from_this<AsioConnection> {
 public:
  AsioConnection(Runtime& rt, ConnectionOptions opts)
      : options_(std::move(opts)),
        strand_(asio::make_strand(rt.impl().io)),
        socket_(strand_),
        watchdog_(strand_),
        rng_(std::random_device{}()) {}

  void start() {
    asio::co_spawn(strand_, run(), [self = shared_from_this()](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        log::error("redis connection loop failed",
                   {{"endpoint", self->options_.endpoint.str()}, {"error", ex.what()}});
      }
    });
  }

  void command(std::vector<std::string> args, Callback done) override {
    std::string wire = format_command(args);
    const bool unsub = !args.empty() && (args[0] == "SUNSUBSCRIBE" || args[0] == "UNSUBSCRIBE");
    asio::post(strand_,
               [self = shared_from_this(), wire = std::move(wire), done = std::move(done),
                unsub]() mutable { self->enqueue(std::move(wire), std::move(done), unsub); });
  }

  void on_push(std::function<void(const Reply&)> handler) override {
    asio::post(strand_, [self = shared_from_this(), h = std::move(handler)]() mutable {
      self->push_ = std::move(h);
    });
  }

  void on_state(std::function<void(bool)> handler) override {
    asio::post(strand_, [self = shared_from_this(), h = std::move(handler)]() mutable {
      self->state_ = std::move(h);
    });
  }

  bool up() const override { return up_.load(); }
  const Endpoint& endpoint() const override { return options_.endpoint; }

  void close() override {
    asio::post(strand_, [self = shared_from_this()] {
      self->closed_ = true;
      self->drop("connection closed");
      self->watchdog_.cancel();
    });
  }

 private:
  struct Pending {
    std::string wire;
    Callback done;
    std::chrono::steady_clock::time_point since{};  // queued, then sent
    bool unsubscribe = false;  // its reply looks like a push (an "sunsubscribe" array)
  };

  // All below run on the strand.
  void enqueue(std::string wire, Callback done, bool unsubscribe) {
    if (closed_) {
      done(Reply::error("connection closed"));
      return;
    }
    if (unsent_.size() + inflight_.size() >= options_.max_pending) {
      done(Reply::error("too many pending commands"));
      return;
    }
    // While disconnected, commands wait (up to the command timeout) for the next connection.
    unsent_.push_back(
        Pending{std::move(wire), std::move(done), std::chrono::steady_clock::now(), unsubscribe});
    if (up_.load() && !writing_) write_next();
  }

  void write_next() {
    if (unsent_.empty() || !up_.load()) {
      writing_ = false;
      return;
    }
    writing_ = true;
    // Everything queued goes out in one write: pipelining.
    auto batch = std::make_shared<std::string>();
    const auto now = std::chrono::steady_clock::now();
    while (!unsent_.empty()) {
      auto& p = unsent_.front();
      *batch += p.wire;
      p.since = now;
      inflight_.push_back(std::move(p));
      unsent_.pop_front();
    }
    asio::async_write(
        socket_, asio::buffer(*batch),
        [self = shared_from_this(), batch, gen = generation_](const error_code& ec, std::size_t) {
          if (gen != self->generation_) return;
          if (ec) {
            self->drop("write failed: " + ec.message());
            return;
          }
          self->write_next();
        });
  }

  // Fails the commands already sent (their outcome is unknown) and closes the socket;
  // commands not sent yet wait for the next connection. run() reconnects.
  void drop(const std::string& why) {
    const bool was_up = up_.exchange(false);
    ++generation_;
    error_code ignored;
    socket_.close(ignored);
    writing_ = false;
    auto fail = [&](std::deque<Pending>& q) {
      while (!q.empty()) {
        auto p = std::move(q.front());
        q.pop_front();
        p.done(Reply::error(why));
      }
    };
    fail(inflight_);
    if (closed_) fail(unsent_);
    if (was_up) {
      log::warn("redis connection lost", {{"endpoint", options_.endpoint.str()}, {"reason", why}});
      if (state_) state_(false);
    }
  }

  asio::awaitable<bool> connect_once() {
    tcp::resolver resolver(strand_);
    auto [rec, results] = co_await resolver.async_resolve(
        options_.endpoint.host, std::to_string(options_.endpoint.port), nothrow);
    if (rec) co_return false;
    socket_ = tcp::socket(strand_);
    asio::steady_timer timer(strand_, options_.connect_timeout);
    bool timed_out = false;
    timer.async_wait([this, &timed_out](const error_code& ec) {
      if (!ec) {
        timed_out = true;
        error_code ignored;
        socket_.close(ignored);
      }
    });
    auto [cec, ep] = co_await asio::async_connect(socket_, results, nothrow);
    timer.cancel();
    if (cec || timed_out) co_return false;
    error_code ignored;
    socket_.set_option(tcp::no_delay(true), ignored);
    co_return true;
  }

  asio::awaitable<void> run() {
    auto self = shared_from_this();
    auto backoff = options_.backoff_min;
    watch();
    while (!closed_) {
      if (!co_await connect_once()) {
        if (closed_) break;
        // Jittered exponential backoff: many clients must not reconnect in lockstep.
        std::uniform_int_distribution<long> jitter(backoff.count() / 2, backoff.count());
        asio::steady_timer pause(strand_, std::chrono::milliseconds(jitter(rng_)));
        co_await pause.async_wait(nothrow);
        backoff = std::min(backoff * 2, options_.backoff_max);
        continue;
      }
      if (closed_) {
        // close() ran while this connection was being made (during the resolve, before the
        // socket existed, so nothing was there to abort): do not serve it.
        error_code ignored;
        socket_.close(ignored);
        break;
      }
      backoff = options_.backoff_min;
      parser_ = std::make_unique<ReplyParser>();
      if (!options_.client_name.empty()) {
        // First on the new connection, before anything queued meanwhile.
        unsent_.push_front(Pending{format_command({"CLIENT", "SETNAME", options_.client_name}),
                                   [endpoint = options_.endpoint.str()](const Reply& r) {
                                     if (r.is_error())
                                       log::warn("redis CLIENT SETNAME failed",
                                                 {{"endpoint", endpoint}, {"error", r.str}});
                                   },
                                   std::chrono::steady_clock::now(), false});
      }
      up_.store(true);
      const auto gen = generation_;
      if (state_) state_(true);
      if (!writing_) write_next();
      std::vector<char> buf(64 * 1024);
      while (gen == generation_) {
        auto [ec, n] = co_await socket_.async_read_some(asio::buffer(buf), nothrow);
        if (gen != generation_) break;
        if (ec) {
          drop("read failed: " + ec.message());
          break;
        }
        try {
          parser_->feed(buf.data(), n);
          while (auto reply = parser_->next()) deliver(std::move(*reply));
        } catch (const std::exception& e) {
          drop(e.what());
          break;
        }
      }
    }
  }

  void deliver(Reply reply) {
    // An "sunsubscribe" array is the reply to our SUNSUBSCRIBE, or a push when the server
    // unsubscribed us itself (the slot moved away).
    const bool our_unsubscribe =
        !inflight_.empty() && inflight_.front().unsubscribe && reply.type == Reply::Type::Array &&
        !reply.elements.empty() &&
        (reply.elements[0].str == "sunsubscribe" || reply.elements[0].str == "unsubscribe");
    if (!our_unsubscribe && is_push(reply) && push_) {
      push_(reply);
      return;
    }
    if (inflight_.empty()) {
      log::warn("redis reply without a command", {{"endpoint", options_.endpoint.str()}});
      return;
    }
    auto p = std::move(inflight_.front());
    inflight_.pop_front();
    p.done(std::move(reply));
  }

  // A reply overdue by the command timeout drops the connection.
  void watch() {
    watchdog_.expires_after(std::min(options_.command_timeout / 4, std::chrono::milliseconds(500)));
    watchdog_.async_wait([self = shared_from_this()](const error_code& ec) {
      if (ec || self->closed_) return;
      const auto now = std::chrono::steady_clock::now();
      const auto limit = self->options_.command_timeout;
      if (!self->inflight_.empty() && now - self->inflight_.front().since > limit) {
        self->drop("command timed out");
      }
      while (!self->up_.load() && !self->unsent_.empty() &&
             now - self->unsent_.front().since > limit) {
        auto p = std::move(self->unsent_.front());
        self->unsent_.pop_front();
        p.done(Reply::error("not connected to " + self->options_.endpoint.str()));
      }
      self->watch();
    });
  }

  ConnectionOptions options_;
  asio::strand<asio::io_context::executor_type> strand_;
  tcp::socket socket_;
  asio::steady_timer watchdog_;
  std::mt19937_64 rng_;
  std::unique_ptr<ReplyParser> parser_;
  std::deque<Pending> unsent_;
  std::deque<Pending> inflight_;
  std::function<void(const Reply&)> push_;
  std::function<void(bool)> state_;
  std::atomic<bool> up_{false};
  bool writing_ = false;
  bool closed_ = false;
  std::uint64_t generation_ = 0;  // bumps on each drop: stale completions are ignored
};

}  // namespace

std::shared_ptr<Connection> Connection::create(Runtime& runtime, ConnectionOptions options) {
  auto c = std::make_shared<AsioConnection>(runtime, std::move(options));
  c->start();
  return c;
}

}  // namespace kiln::redis
