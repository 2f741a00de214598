// kiln-pipeline-bench: the asset pipeline's LOD chain timed in process, and the deviation of
// any simplified model from its original, measured the same way for every tool (so that
// Kiln, gltfpack and glTF-Transform are compared on one ruler). bench/run_pipeline.sh runs it.
//
//   kiln-pipeline-bench chain MODEL [--ratio 0.5] [--levels 6] [--min 500]
//     one JSON line per level: triangles, meshoptimizer's error bound, ms for the level
//     (level 0: the shared weld and cache optimisation plus its own optimisation; then each
//     level's simplification and optimisation), GLB bytes; then the totals
//   kiln-pipeline-bench error ORIGINAL SIMPLIFIED
//     one JSON line: the largest distance from a vertex of either model to the other's
//     surface (a two-sided Hausdorff distance sampled at vertices), in model units
#include "assets/pipeline/convert.hpp"
#include "assets/pipeline/deviation.hpp"
#include "assets/pipeline/glb.hpp"
#include "assets/pipeline/import.hpp"
#include "assets/pipeline/lod_chain.hpp"

#include <CLI/CLI.hpp>
#include <boost/json.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <unordered_map>

namespace pl = kiln::assets::pipeline;

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

std::vector<std::uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

pl::Model load(const std::string& path) {
  pl::Limits limits;
  limits.max_triangles = limits.max_vertices = 100'000'000;
  auto m = pl::import_model(read_file(path), path, limits);
  if (!m) {
    std::fprintf(stderr, "%s: %s\n", path.c_str(), m.error().detail.c_str());
    std::exit(1);
  }
  return std::move(*m);
}

double one_sided(const pl::Model& from, const pl::Surface& to) {
  return pl::deviation(from.primitives, to, 0);
}

int run_chain(const std::string& path, pl::LodOptions o) {
  const auto t0 = Clock::now();
  const pl::Model m = load(path);
  const double import_ms = ms_since(t0);
  const auto t1 = Clock::now();
  std::vector<double> level_ms;
  auto last = t1;
  o.on_level = [&](std::size_t) {
    level_ms.push_back(ms_since(last));
    last = Clock::now();
  };
  const auto levels = pl::build_lod_chain(m, o);
  const double chain_ms = ms_since(t1);
  const auto t2 = Clock::now();
  std::vector<std::size_t> bytes;
  for (std::size_t i = 0; i < levels.size(); ++i) {
    // As convert() writes it (quantized past level 0 where that keeps the error).
    pl::GlbInput glb{levels[i].primitives, m.materials, m.images};
    glb.quantize = pl::quantized(levels, i);
    glb.box = &levels.front().box;
    bytes.push_back(pl::write_glb(glb).size());
  }
  const double write_ms = ms_since(t2);
  for (std::size_t i = 0; i < levels.size(); ++i)
    std::cout << boost::json::serialize(boost::json::object{{"level", i},
                                                            {"triangles", levels[i].triangles},
                                                            {"error", levels[i].error},
                                                            {"ms", level_ms[i]},
                                                            {"bytes", bytes[i]}})
              << "\n";
  std::cout << boost::json::serialize(boost::json::object{{"total_ms", ms_since(t0)},
                                                          {"import_ms", import_ms},
                                                          {"chain_ms", chain_ms},
                                                          {"write_ms", write_ms},
                                                          {"levels", levels.size()}})
            << "\n";
  return 0;
}

int run_error(const std::string& original, const std::string& simplified) {
  const auto a = load(original), b = load(simplified);
  const pl::Surface sa(a.primitives), sb(b.primitives);
  const double there = one_sided(a, sb), back = one_sided(b, sa);
  std::cout << boost::json::serialize(boost::json::object{{"triangles", b.triangle_count()},
                                                          {"original_to_simplified", there},
                                                          {"simplified_to_original", back},
                                                          {"hausdorff", std::max(there, back)}})
            << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kiln-pipeline-bench: the LOD chain timed, and deviations measured"};
  app.require_subcommand(1);
  std::string model, original, simplified;
  pl::LodOptions o;
  o.max_levels = 6;
  auto* chain = app.add_subcommand("chain", "Time the LOD chain of MODEL");
  chain->add_option("model", model)->required()->check(CLI::ExistingFile);
  chain->add_option("--ratio", o.ratio);
  chain->add_option("--levels", o.max_levels);
  chain->add_option("--min", o.min_triangles);
  chain->add_flag("--cascade", o.cascade, "Simplify each level from the one before it");
  chain->add_option("--error-samples", o.error_samples,
                    "Original vertices measured per level (0: every one)");
  auto* err = app.add_subcommand("error", "The deviation of SIMPLIFIED from ORIGINAL");
  err->add_option("original", original)->required()->check(CLI::ExistingFile);
  err->add_option("simplified", simplified)->required()->check(CLI::ExistingFile);
  CLI11_PARSE(app, argc, argv);
  if (chain->parsed()) return run_chain(model, o);
  return run_error(original, simplified);
}
