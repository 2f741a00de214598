// `kiln convert FILE --out DIR`: the asset pipeline on a local file, what a worker does for
// an uploaded model (docs/assets.md): import, LOD chain, one GLB per level and
// manifest.json in DIR. The work runs in a child process with CPU, memory and wall-clock
// limits (assets/pipeline/isolate.hpp); `--child` is that child's side.
#pragma once

#include "assets/pipeline/isolate.hpp"

namespace CLI {
class App;
}

namespace kiln::app {

struct ConvertArgs {
  assets::pipeline::ChildRequest request;
  bool child = false;
  bool json = false;  // print the manifest instead of a summary
  std::int64_t cpu_seconds = 300;
  std::int64_t wall_seconds = 600;
};

// Adds the subcommand; `chosen` is set when it is the one run.
void add_convert_command(CLI::App& app, ConvertArgs& args, std::string& command);
int run_convert(ConvertArgs& args);

}  // namespace kiln::app
