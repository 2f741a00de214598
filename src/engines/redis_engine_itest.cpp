// The RoomEngine conformance suite on the Redis engine, against the real standalone Redis
// and the 6-node Cluster of the `redis` CTest fixture (KILN_TEST_REDIS).
#include "collab/engine_conformance.hpp"
#include "engines/redis_engine.hpp"
#include "platform/ids.hpp"
#include "platform/runtime.hpp"

#include <cstdlib>
#include <thread>

namespace kiln::engines {
namespace {

using collab::conformance::EngineConformance;
using collab::conformance::Harness;
using collab::conformance::Named;

// which: 0 standalone, 1 cluster seed; empty when the variable is not set.
std::optional<redis::Endpoint> from_env(int which) {
  const char* v = std::getenv("KILN_TEST_REDIS");
  std::string s = v ? v : "";
  auto space = s.find(' ');
  s = which == 0 ? s.substr(0, space) : (space == std::string::npos ? "" : s.substr(space + 1));
  auto colon = s.rfind(':');
  if (colon == std::string::npos) return std::nullopt;
  return redis::Endpoint{s.substr(0, colon),
                         static_cast<std::uint16_t>(std::stoi(s.substr(colon + 1)))};
}

class RedisHarness : public Harness {
 public:
  RedisHarness(const collab::EngineLimits& limits, bool cluster) : runtime_(1) {
    auto ep = from_env(cluster ? 1 : 0);
    if (!ep) throw std::runtime_error("KILN_TEST_REDIS not set (run through ctest)");
    redis::ConnectionOptions o;
    o.endpoint = *ep;
    client_ = cluster ? redis::Client::cluster(runtime_, {*ep}, o)
                      : redis::Client::standalone(runtime_, o);
    RedisEngineOptions eo;
    eo.prefix = "itest-" + ids::random_hex(4);  // a keyspace of its own per test
    eo.limits = limits;
    eo.connection = o;
    engine_ =
        std::make_unique<RedisRoomEngine>(runtime_, client_, eo, [] { return ids::random_hex(8); });
    thread_ = std::thread([this] { runtime_.run(); });
  }
  ~RedisHarness() override {
    engine_->close();
    client_->close();
    runtime_.stop();
    thread_.join();
  }
  collab::RoomEngine& engine() override { return *engine_; }

 private:
  Runtime runtime_;
  std::shared_ptr<redis::Client> client_;
  std::unique_ptr<RedisRoomEngine> engine_;
  std::thread thread_;
};

INSTANTIATE_TEST_SUITE_P(Redis, EngineConformance,
                         ::testing::Values(Named{"standalone",
                                                 [](const collab::EngineLimits& l) {
                                                   return std::make_unique<RedisHarness>(l, false);
                                                 }},
                                           Named{"cluster",
                                                 [](const collab::EngineLimits& l) {
                                                   return std::make_unique<RedisHarness>(l, true);
                                                 }}),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace kiln::engines
