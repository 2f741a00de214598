// The AccessBus conformance suite on the in-process bus (`kiln serve`).
#include "collab/access_bus_conformance.hpp"
#include "engines/memory/local_access_bus.hpp"

namespace kiln::engines {
namespace {

using collab::conformance::AccessBusConformance;
using collab::conformance::BusFactory;
using collab::conformance::BusHarness;

// One process: the publisher and every subscriber are the same bus.
struct LocalHarness : BusHarness {
  collab::AccessBus& publisher() override { return bus; }
  collab::AccessBus& subscriber(std::size_t) override { return bus; }
  LocalAccessBus bus;
};

INSTANTIATE_TEST_SUITE_P(Local, AccessBusConformance,
                         ::testing::Values(BusFactory{
                             "local", [] { return std::make_unique<LocalHarness>(); }}),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace kiln::engines
