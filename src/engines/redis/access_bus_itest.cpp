// The AccessBus conformance suite on the Redis bus, against the standalone Redis and the
// 6-node Cluster of the `redis` CTest fixture (KILN_TEST_REDIS): one publishing node and
// two subscribing ones, each with its own client, as an API node and two gateways.
#include "clients/redis/test_env.hpp"
#include "collab/access_bus_conformance.hpp"
#include "engines/redis/redis_access_bus.hpp"
#include "platform/ids.hpp"
#include "platform/runtime.hpp"

#include <thread>

namespace kiln::engines {
namespace {

using collab::conformance::AccessBusConformance;
using collab::conformance::BusFactory;
using collab::conformance::BusHarness;

class RedisBusHarness : public BusHarness {
 public:
  explicit RedisBusHarness(bool cluster) : runtime_(1) {
    auto ep = redis::test_endpoint(cluster ? 1 : 0);
    if (!ep) throw std::runtime_error("KILN_TEST_REDIS not set (run through ctest)");
    const auto prefix = "itest-" + ids::random_hex(4);  // a channel of its own per test
    for (int i = 0; i < 3; ++i) {
      redis::ConnectionOptions o;
      o.endpoint = *ep;
      o.client_name = prefix + "-" + std::to_string(i);
      auto client = cluster ? redis::Client::cluster(runtime_, {*ep}, o)
                            : redis::Client::standalone(runtime_, o);
      buses_.push_back(std::make_unique<RedisAccessBus>(runtime_, client, o, prefix));
      clients_.push_back(std::move(client));
    }
    thread_ = std::thread([this] { runtime_.run(); });
  }
  ~RedisBusHarness() override {
    for (auto& b : buses_) b->close();
    for (auto& c : clients_) c->close();
    runtime_.stop();
    thread_.join();
    runtime_.run_ready_handlers();  // the closes fail what is pending, breaking cycles
  }
  collab::AccessBus& publisher() override { return *buses_[0]; }
  collab::AccessBus& subscriber(std::size_t i) override { return *buses_.at(i + 1); }

 private:
  Runtime runtime_;
  std::vector<std::shared_ptr<redis::Client>> clients_;
  std::vector<std::unique_ptr<RedisAccessBus>> buses_;
  std::thread thread_;
};

INSTANTIATE_TEST_SUITE_P(
    Redis, AccessBusConformance,
    ::testing::Values(
        BusFactory{"standalone", [] { return std::make_unique<RedisBusHarness>(false); }},
        BusFactory{"cluster", [] { return std::make_unique<RedisBusHarness>(true); }}),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace kiln::engines
