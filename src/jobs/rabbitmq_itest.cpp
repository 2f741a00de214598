// The RabbitMQ adapter against a real RabbitMQ 3.10 (the `rabbitmq` CTest fixture,
// tests/servers/rabbitmq.sh): the JobQueue conformance suite, then what only a broker
// does: deliveries lease jobs without a sweep, the database decides what a message means
// (a duplicate of a finished job is dropped, a message naming no job is dead-lettered), and
// a broker restart or outage delays jobs and loses none.
//
// KILN_TEST_RABBITMQ: "host:port script dir" (the broker, and the script and directory
// that restart it).
#include "jobs/queue_conformance.hpp"
#include "jobs/rabbitmq_link.hpp"
#include "jobs/rabbitmq_queue.hpp"
#include "jobs/test_queue.hpp"
#include "platform/metrics.hpp"

#include <cstdlib>
#include <map>
#include <sstream>

namespace kiln::jobs {
namespace {

struct Broker {
  std::string address, script, dir;
};

Broker broker() {
  const char* env = std::getenv("KILN_TEST_RABBITMQ");
  Broker b;
  if (env != nullptr) std::istringstream(env) >> b.address >> b.script >> b.dir;
  return b;
}

amqp::Url url() {
  return amqp::parse_url("amqp://guest:guest@" + broker().address);  // the vhost "/"
}

std::string fresh_prefix() {
  static std::atomic<int> n{0};
  return "kiln.test." + std::to_string(::getpid()) + "." + std::to_string(++n);
}

class RabbitHarness final : public QueueHarness {
 public:
  explicit RabbitHarness(std::chrono::milliseconds sweep, std::string prefix = fresh_prefix())
      : db_(temp_sqlite("rabbitmq-itest")), prefix_(std::move(prefix)) {
    db_.migrate();
    DatabaseQueueOptions qo;
    qo.policies["t.flaky"] =
        RetryPolicy{3, std::chrono::milliseconds(10'000), std::chrono::milliseconds(15'000)};
    qo.random = [this] { return jitter.load(); };
    // The clock stands still but for advance(): the suite's leases wait in real time (for
    // deliveries), which must not let backoffs end on their own.
    const auto frozen = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    qo.clock_ms = [frozen] { return frozen; };
    qo.clock_offset_ms = [this] { return offset_ms.load(); };
    RabbitQueueOptions ro;
    ro.url = url();
    ro.prefix = prefix_;
    ro.sweep = sweep;
    ro.connect_timeout = std::chrono::seconds(2);
    ro.reconnect_cap = std::chrono::seconds(1);
    queue_ = std::make_unique<RabbitQueue>(db_, std::move(qo), std::move(ro), &registry_);
  }
  JobQueue& queue() override { return *queue_; }
  // kiln_jobs_broker_deliveries_total{outcome}.
  std::uint64_t deliveries(const std::string& outcome) {
    return registry_.counter("kiln_jobs_broker_deliveries_total", "", {"outcome"})
        .with({outcome})
        .value();
  }
  RabbitQueue& rabbit() { return *queue_; }
  const std::string& prefix() const { return prefix_; }

 private:
  metrics::Registry registry_;
  store::Database db_;
  std::string prefix_;
  std::unique_ptr<RabbitQueue> queue_;
};

// The suite with deliveries and a sweep every 200 ms behind them (jobs whose backoff ended
// on the harness's clock are found by the sweep, as in production).
INSTANTIATE_TEST_SUITE_P(
    RabbitMq, QueueConformance,
    ::testing::Values(QueueFactory{
        "rabbitmq", [] { return std::make_unique<RabbitHarness>(std::chrono::milliseconds(200)); },
        std::chrono::milliseconds(1000), false}),
    [](const auto& info) { return info.param.name; });

// A connection of the test's own to the broker: publishes as a stranger would, counts
// what queues hold.
amqp::Connection side_connection() {
  amqp::ConnectionOptions o;
  o.url = url();
  o.name = "kiln test";
  return amqp::Connection(o);
}

LeaseRequest wants(const std::string& type, std::chrono::milliseconds wait) {
  return LeaseRequest{"w1", {type}, 1, std::chrono::seconds(30), wait};
}

// Sweeps an hour apart: only a delivery can lease these jobs (once the consumer is
// connected: until then leases poll the database).
constexpr auto kNoSweep = std::chrono::hours(1);

// Subscribes to `type` and waits for the consuming connection (the broker's pace).
void consuming(RabbitHarness& h, const std::string& type) {
  ASSERT_TRUE(h.queue().lease(wants(type, std::chrono::milliseconds(0))));
  for (int i = 0; i < 400 && !h.rabbit().connected(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(h.rabbit().connected()) << h.rabbit().problem();
}

TEST(RabbitQueue, ADeliveryLeasesTheJobItNamesWithoutASweep) {
  RabbitHarness h(kNoSweep);
  auto& q = h.queue();
  consuming(h, "t.fast");
  auto e = q.enqueue(NewJob{"t.fast", R"({"n":1})", "", 0, 0});
  ASSERT_TRUE(e);
  auto got = q.lease(wants("t.fast", std::chrono::seconds(20)));
  ASSERT_TRUE(got) << got.error().detail;
  ASSERT_EQ(got->size(), 1u) << "no delivery within 20 s";
  EXPECT_EQ(got->front().ref.job, e->id);
  EXPECT_EQ(got->front().payload, R"({"n":1})");
  EXPECT_TRUE(h.rabbit().connected());
}

// Sweeps are due at every lease, yet each job is leased by its own message: a sweep leaves a
// job its message announced to that message for a sweep interval (the harness's clock stands
// still, so never here). A sweep that took it would leave the message to be delivered and
// dropped later, a database transaction per job, and in front of newer jobs' messages.
TEST(RabbitQueue, ASweepLeavesAJobToTheMessageThatAnnouncedIt) {
  RabbitHarness h(std::chrono::milliseconds(1));
  auto& q = h.queue();
  consuming(h, "t.announced");
  constexpr int kJobs = 20;
  for (int i = 0; i < kJobs; ++i) {
    auto e = q.enqueue(NewJob{"t.announced", "{}", "", 0, 0});
    ASSERT_TRUE(e);
    auto got = q.lease(wants("t.announced", std::chrono::seconds(20)));
    ASSERT_TRUE(got) << got.error().detail;
    ASSERT_EQ(got->size(), 1u) << "not leased within 20 s; consumer: " << h.rabbit().problem();
    EXPECT_EQ(got->front().ref.job, e->id);
    ASSERT_TRUE(q.complete(got->front().ref, "{}"));
  }
  EXPECT_EQ(h.deliveries("leased"), static_cast<std::uint64_t>(kJobs));
  EXPECT_EQ(h.deliveries("dropped"), 0u);
}

TEST(RabbitQueue, TheDatabaseDecidesWhatAMessageMeans) {
  RabbitHarness h(kNoSweep);
  auto& q = h.queue();
  consuming(h, "t.msg");
  auto e = q.enqueue(NewJob{"t.msg", "{}", "", 0, 0});
  ASSERT_TRUE(e);
  auto got = q.lease(wants("t.msg", std::chrono::seconds(20)));
  ASSERT_TRUE(got) << got.error().detail;
  ASSERT_EQ(got->size(), 1u) << "not leased within 20 s; consumer: " << h.rabbit().problem();
  ASSERT_TRUE(q.complete(got->front().ref, "{}"));

  // The same job id again (a duplicate publish, a redelivery): acked and dropped.
  auto side = side_connection();
  side.confirm_select();
  side.publish(h.prefix(), "t.msg", e->id, std::chrono::seconds(10));
  // A message naming no job, and one naming a job this database does not have.
  side.publish(h.prefix(), "t.msg", "rm -rf /", std::chrono::seconds(10));
  side.publish(h.prefix(), "t.msg", "j0000000000000000000000", std::chrono::seconds(10));
  // Deliveries are handled as workers lease: lease (and be given nothing) until both
  // strangers are dead-lettered. Not a fixed wait: on a loaded machine a delivery may come
  // late, or again on a new connection if the first one dropped before its ack went out.
  const auto dead_letters = [&] {
    return side.declare_queue(h.prefix() + "._dead-letters",
                              rabbit::Topology::dead_letter_arguments());
  };
  const auto nothing_leased = [&] {
    auto none = q.lease(wants("t.msg", std::chrono::milliseconds(250)));
    ASSERT_TRUE(none) << none.error().detail;
    EXPECT_TRUE(none->empty()) << "a stranger's message leased " << none->front().ref.job;
  };
  std::uint32_t dead = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (dead < 2 && std::chrono::steady_clock::now() < deadline) {
    nothing_leased();
    dead = dead_letters();
  }
  EXPECT_EQ(dead, 2u) << "consumer: " << h.rabbit().problem();
  nothing_leased();  // and nothing more is dead-lettered: the duplicate was dropped
  EXPECT_EQ(dead_letters(), 2u);
  // Each says why, and where it came from.
  side.consume(h.prefix() + "._dead-letters");
  std::map<std::string, std::map<std::string, std::string>> seen;  // body -> string headers
  while (seen.size() < 2) {
    auto d = side.next(std::chrono::seconds(10));
    ASSERT_TRUE(d) << "a counted dead letter was not delivered";
    for (const auto& [k, v] : d->headers)
      if (const auto* s = std::get_if<std::string>(&v)) seen[d->body][k] = *s;
    side.ack(d->tag);
  }
  EXPECT_EQ(seen["rm -rf /"]["x-kiln-reason"],
            "the message names no job (a job id is j and hex digits)");
  EXPECT_EQ(seen["j0000000000000000000000"]["x-kiln-reason"],
            "the database has no job j0000000000000000000000");
  for (auto& [body, headers] : seen) EXPECT_EQ(headers["x-kiln-queue"], h.prefix() + ".t.msg");
  EXPECT_EQ(q.get(e->id)->state, State::succeeded);
  EXPECT_EQ(q.get(e->id)->history.size(), 1u) << "the duplicate started another attempt";
}

void broker_script(const char* command) {
  const auto b = broker();
  ASSERT_FALSE(b.script.empty()) << "KILN_TEST_RABBITMQ names no script";
  const auto cmd = "bash " + b.script + " " + command + " " + b.dir + " >/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

// Leases until `ids` are all leased (or `within` passes); returns the leased ids.
std::set<std::string> lease_all(JobQueue& q, const std::string& type, std::size_t n,
                                std::chrono::seconds within) {
  std::set<std::string> leased;
  const auto deadline = std::chrono::steady_clock::now() + within;
  while (leased.size() < n && std::chrono::steady_clock::now() < deadline) {
    auto got = q.lease(
        LeaseRequest{"w1", {type}, 10, std::chrono::minutes(5), std::chrono::milliseconds(500)});
    if (!got) continue;  // the database answers; only the broker comes and goes
    for (const auto& l : *got) {
      EXPECT_TRUE(leased.insert(l.ref.job).second) << l.ref.job << " leased twice";
      EXPECT_TRUE(q.complete(l.ref, "{}"));
    }
  }
  return leased;
}

// The broker restarts with jobs published and unconsumed, and is down while more are
// enqueued: every job runs once, and the consumer comes back.
TEST(RabbitQueue, ABrokerRestartOrOutageDelaysJobsAndLosesNone) {
  RabbitHarness h(std::chrono::milliseconds(1000));
  auto& q = h.queue();
  consuming(h, "t.outage");
  std::set<std::string> ids;
  auto add = [&](int n) {
    for (int i = 0; i < n; ++i) {
      auto e = q.enqueue(NewJob{"t.outage", "{}", "", 0, 0});
      ASSERT_TRUE(e) << "an enqueue failed with the broker away: " << e.error().detail;
      ids.insert(e->id);
    }
  };
  add(5);
  broker_script("restart");  // the 5 messages are in a quorum queue: on disk
  add(5);
  broker_script("kill");
  add(5);  // published nowhere: the sweep finds them
  auto during = lease_all(q, "t.outage", ids.size(), std::chrono::seconds(60));
  EXPECT_EQ(during, ids) << "jobs missing while the broker is down";
  EXPECT_FALSE(h.rabbit().connected());
  broker_script("start-again");
  add(5);
  auto after = lease_all(q, "t.outage", 5, std::chrono::seconds(60));
  EXPECT_EQ(after.size(), 5u);
  for (int i = 0; i < 600 && !h.rabbit().connected(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // its reconnect backoff
  EXPECT_TRUE(h.rabbit().connected()) << "the consumer did not come back: " << h.rabbit().problem();
  auto all = q.list(ListRequest{State::succeeded, "t.outage", "", 100});
  ASSERT_TRUE(all);
  EXPECT_EQ(all->size(), 20u);
}

TEST(RabbitQueue, BadUrlsAreRefusedWithoutThePassword) {
  try {
    (void)amqp::parse_url("http://user:s3cret@host/");
    FAIL() << "accepted a non-AMQP URL";
  } catch (const amqp::Error& e) {
    EXPECT_EQ(std::string(e.what()).find("s3cret"), std::string::npos);
  }
  auto u = amqp::parse_url("amqp://kiln:s3cret@mq.internal:5673/jobs");
  EXPECT_EQ(u.host, "mq.internal");
  EXPECT_EQ(u.port, 5673);
  EXPECT_EQ(u.vhost, "jobs");
  EXPECT_EQ(u.redacted(), "amqp://kiln@mq.internal:5673/jobs");
  EXPECT_EQ(amqp::parse_url("amqp://mq").vhost, "/");
  EXPECT_EQ(amqp::parse_url("amqp://mq/%2Fa").vhost, "/a");
  EXPECT_EQ(amqp::parse_url("amqp://mq/%2Fa").redacted(), "amqp://guest@mq:5672/%2Fa");
  EXPECT_EQ(amqp::parse_url("amqp://mq").redacted(), "amqp://guest@mq:5672");
}

}  // namespace
}  // namespace kiln::jobs
