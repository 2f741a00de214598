// kiln-lod-bench: LOD selection (src/assets/pipeline/lod_selection.hpp) over N entities per
// frame, the target being 100,000 entities in under 5 ms. Google Benchmark; the
// entities are spread over a 2 km square with 6 levels each, the camera walks through them.
//   build/release/bench/kiln-lod-bench [--benchmark_filter=...]
#include "assets/pipeline/lod_selection.hpp"

#include <benchmark/benchmark.h>

#include <random>

namespace lod = kiln::assets::lod;

namespace {

struct Scene {
  std::vector<std::vector<lod::Level>> chains;
  std::vector<lod::Entity> entities;
};

Scene make_scene(std::size_t n) {
  Scene s;
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> pos(-1000, 1000), height(0, 30), radius(0.5, 15);
  // A few hundred distinct assets, as a real scene reuses props.
  for (int a = 0; a < 300; ++a) {
    std::vector<lod::Level> chain;
    double err = 0.001 * (1 + a % 7);
    std::uint64_t bytes = 4'000'000 + 10'000 * a;
    for (int l = 0; l < 6; ++l, err *= 3, bytes /= 3) chain.push_back({err, bytes});
    s.chains.push_back(std::move(chain));
  }
  for (std::size_t i = 0; i < n; ++i) {
    lod::Entity e;
    e.bounds = {{pos(rng), height(rng), pos(rng)}, radius(rng)};
    e.levels = s.chains[i % s.chains.size()];
    e.loaded = static_cast<int>(rng() % 7) - 1;
    s.entities.push_back(e);
  }
  return s;
}

void run(benchmark::State& state, std::uint64_t budget) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const Scene scene = make_scene(n);
  lod::Selector sel;
  lod::Selection out;
  lod::Options opt;
  opt.memory_budget_bytes = budget;
  lod::Camera cam;
  cam.position = {0, 10, 0};
  cam.direction = {1, -0.1, 0.3};
  double t = 0;
  for (auto _ : state) {
    cam.position.x = 300 * std::sin(t);  // the camera moves every frame
    t += 0.01;
    sel.select(cam, scene.entities, opt, out);
    benchmark::DoNotOptimize(out.order.data());
  }
  state.counters["over_budget"] = out.over_budget ? 1 : 0;
  state.counters["to_download"] = static_cast<double>(out.order.size());
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

// A budget the selection fits in (no ranking pass).
void BM_SelectWithinBudget(benchmark::State& s) {
  run(s, std::uint64_t{1} << 50);
}
// Cesium's default 512 MiB: most of the scene is coarsened by the budget (the ranking pass).
void BM_SelectOverBudget(benchmark::State& s) {
  run(s, 512ull << 20);
}

}  // namespace

BENCHMARK(BM_SelectWithinBudget)->Arg(10'000)->Arg(100'000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SelectOverBudget)->Arg(10'000)->Arg(100'000)->Unit(benchmark::kMillisecond);
BENCHMARK_MAIN();
