#include "app/convert_cli.hpp"

#include "assets/pipeline/convert.hpp"

#include <CLI/CLI.hpp>
#include <boost/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

namespace kiln::app {

namespace pl = assets::pipeline;

void add_convert_command(CLI::App& app, ConvertArgs& a, std::string& command) {
  auto* cmd = app.add_subcommand(
      "convert",
      "Make an asset's levels from a model file (glTF, GLB, FBX, OBJ, DAE, PLY, STL, ...): "
      "one GLB per level and manifest.json in --out, as a worker does after an upload");
  auto& r = a.request;
  cmd->add_option("file", r.input, "The model file")->required()->check(CLI::ExistingFile);
  cmd->add_option("-o,--out", r.out_dir,
                  "The directory for lod<N>.glb, tex<T>-<L>.webp (or the source's .png/.jpg) "
                  "and manifest.json")
      ->required();
  cmd->add_option("--name", r.file_name, "The name the format is guessed from (default: FILE's)");
  cmd->add_option("--lod-ratio", r.lod.ratio,
                  "Each level's share of the previous level's triangles")
      ->check(CLI::Range(0.05, 0.95));
  cmd->add_option("--lod-min-triangles", r.lod.min_triangles, "No level aims below this many")
      ->check(CLI::Range(1, 100'000'000));
  cmd->add_option("--lod-max-levels", r.lod.max_levels, "Levels at most, the original included")
      ->check(CLI::Range(1, 16));
  cmd->add_option("--max-triangles", r.model_limits.max_triangles, "Refuse models with more")
      ->check(CLI::Range(1, 1'000'000'000));
  cmd->add_option("--max-texture-pixels", r.model_limits.max_texture_pixels,
                  "Refuse images with more pixels (from their headers)")
      ->check(CLI::Range(1, 1'000'000'000));
  cmd->add_option("--texture-max-side", r.textures.max_side,
                  "The finest texture level's larger side at most (px)")
      ->check(CLI::Range(16, 16'384));
  cmd->add_option("--texture-min-side", r.textures.min_side,
                  "Texture levels stop at the first this small (px)")
      ->check(CLI::Range(1, 16'384));
  cmd->add_option("--texture-quality", r.textures.quality, "WebP quality of texture levels")
      ->check(CLI::Range(0, 100));
  cmd->add_option("--cpu-seconds", a.cpu_seconds, "CPU time the import may use")
      ->check(CLI::Range(1, 86'400));
  cmd->add_option("--memory-bytes", r.limits.memory_bytes, "Address space the import may use")
      ->check(CLI::Range(std::uint64_t{64} << 20, std::uint64_t{1} << 40));
  cmd->add_option("--wall-seconds", a.wall_seconds, "Wall-clock time before it is stopped")
      ->check(CLI::Range(1, 86'400));
  cmd->add_flag("--json", a.json, "Print the manifest (JSON) instead of a summary");
  cmd->add_flag("--child", a.child, "Run in this process (the isolated child's side)")->group("");
  cmd->callback([&] { command = "convert"; });
}

namespace {

void clear_earlier_outputs(const std::string& dir) {
  std::ifstream in(dir + "/manifest.json");
  if (!in) return;
  std::stringstream text;
  text << in.rdbuf();
  boost::system::error_code ec;
  auto doc = boost::json::parse(text.str(), ec);
  std::error_code ignored;
  if (!ec && doc.is_object()) {
    assets::for_each_file(doc.as_object(), [&](boost::json::object* o, const std::string&) {
      const auto* file = o ? o->if_contains("file") : nullptr;
      if (file != nullptr && file->is_string() && pl::is_output_name(file->as_string()))
        std::filesystem::remove(dir + "/" + std::string(file->as_string()), ignored);
    });
  }
  std::filesystem::remove(dir + "/manifest.json", ignored);
}

}  // namespace

int run_convert(ConvertArgs& a) {
  auto& r = a.request;
  if (r.file_name.empty()) r.file_name = std::filesystem::path(r.input).filename().string();
  r.limits.cpu = std::chrono::seconds(a.cpu_seconds);
  r.limits.wall = std::chrono::seconds(a.wall_seconds);
  if (a.child) return pl::convert_child(r);

  std::error_code ec;
  std::filesystem::create_directories(r.out_dir, ec);
  if (ec || !std::filesystem::is_directory(r.out_dir)) {
    std::fprintf(stderr, "kiln convert: cannot create the directory %s: %s\n", r.out_dir.c_str(),
                 ec ? ec.message().c_str() : "a file is in the way");
    return 1;
  }
  // The input is never an output: one in --out under an output's name would be replaced.
  const std::filesystem::path input(r.input);
  const auto in_name = input.filename().string();
  if ((pl::is_output_name(in_name) || in_name == "manifest.json") &&
      std::filesystem::equivalent(
          input.parent_path().empty() ? std::filesystem::path(".") : input.parent_path(), r.out_dir,
          ec)) {
    std::fprintf(stderr,
                 "kiln convert: %s is in --out under a name the conversion writes; copy it "
                 "elsewhere or choose another --out\n",
                 r.input.c_str());
    return 2;
  }
  // The directory holds one conversion: what an earlier run wrote (the files its
  // manifest.json names, nothing else) goes first.
  clear_earlier_outputs(r.out_dir);
  r.executable = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  if (ec) {
    std::fprintf(stderr, "kiln convert: cannot find its own executable: %s\n",
                 ec.message().c_str());
    return 1;
  }
  const bool tty = isatty(fileno(stderr)) != 0;
  auto manifest = pl::convert_in_child(r, [&](std::string_view stage, int percent) {
    if (tty)
      std::fprintf(stderr, "\r%-8.*s %3d%%", static_cast<int>(stage.size()), stage.data(), percent);
  });
  if (tty) std::fputs("\r              \r", stderr);
  if (!manifest) {
    std::fprintf(stderr, "kiln convert: %s: %s (%s)\n", r.input.c_str(),
                 manifest.error().detail.c_str(), pl::to_string(manifest.error().code));
    return 3;
  }
  if (a.json) {  // as the child wrote it (a parse and print could move a float's last digit)
    std::ifstream in(r.out_dir + "/manifest.json");
    std::cout << in.rdbuf() << '\n';
    return 0;
  }
  for (const auto& l : manifest->at("levels").as_array()) {
    const auto& o = l.as_object();
    std::printf("%s  %10lld triangles  error %-12.6g %10lld bytes\n",
                std::string(o.at("file").as_string()).c_str(),
                static_cast<long long>(o.at("triangles").to_number<std::int64_t>()),
                o.at("error").to_number<double>(),
                static_cast<long long>(o.at("bytes").to_number<std::int64_t>()));
  }
  for (const auto& w : manifest->at("warnings").as_array())
    std::printf("warning: %s\n", std::string(w.as_string()).c_str());
  return 0;
}

}  // namespace kiln::app
