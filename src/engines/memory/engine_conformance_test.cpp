// The RoomEngine conformance suite on the in-memory engine.
#include "collab/engine_conformance.hpp"
#include "engines/memory/memory_engine.hpp"

namespace kiln::collab::conformance {
namespace {

struct MemoryHarness : Harness {
  explicit MemoryHarness(const EngineLimits& limits)
      : engine_(limits, [n = 0]() mutable { return "epoch" + std::to_string(++n); }) {}
  RoomEngine& engine() override { return engine_; }
  PersistSource& persistence() override { return engine_; }
  void set_loader(RoomLoader loader) override { engine_.set_loader(std::move(loader)); }
  engines::MemoryRoomEngine engine_;
};

INSTANTIATE_TEST_SUITE_P(Memory, EngineConformance,
                         ::testing::Values(Named{"memory",
                                                 [](const EngineLimits& l) {
                                                   return std::make_unique<MemoryHarness>(l);
                                                 }}),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace kiln::collab::conformance
