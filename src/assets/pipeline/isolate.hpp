// The pipeline on user bytes runs in a child process: a parser that crashes, loops or
// allocates without end (a decompression bomb, a count of a billion) kills one attempt,
// never the worker. The child is this same binary (`kiln convert`, convert_child below)
// with RLIMIT_CPU and RLIMIT_AS set before it reads a byte, and the parent kills it past a
// wall-clock limit too (a child blocked without using CPU).
//
// Protocol: the child prints one JSON object per line on stdout: {"stage", "percent"} while
// it works, then {"ok": true} (the level files and manifest.json are in the output
// directory) or {"error": {"code", "detail"}}. Exit status 0 / 3 with those; anything else
// (a signal, no final line) is the parent's to name: `limits` for SIGXCPU, SIGKILL on the
// wall clock or an allocation refused, `crashed` for the rest.
#pragma once

#include "assets/pipeline/convert.hpp"

#include <chrono>
#include <functional>
#include <string>

namespace kiln::assets::pipeline {

struct IsolationLimits {
  std::chrono::seconds cpu{300};            // RLIMIT_CPU of the child
  std::uint64_t memory_bytes = 4ull << 30;  // RLIMIT_AS of the child (address space)
  std::chrono::seconds wall{600};           // killed past this, CPU used or not
};

struct ChildRequest {
  std::string executable;  // the kiln binary (/proc/self/exe in the worker)
  std::string input;       // the model file
  std::string file_name;   // its name as uploaded (the format hint)
  std::string out_dir;     // exists: the child writes lod<N>.glb, tex<T>-<L>.webp, manifest.json
  IsolationLimits limits;
  LodOptions lod;
  Limits model_limits;
  TextureOptions textures;
};

// Runs the child and waits for it. The manifest (as written in out_dir) on success;
// `progress(stage, percent)` is called from this thread as the child reports. `stop` is
// asked about once a second: true kills the child (Errc::stopped).
Result<boost::json::object> convert_in_child(
    const ChildRequest& request, const std::function<void(std::string_view, int)>& progress = {},
    const std::function<bool()>& stop = {});

// The child's side (what `kiln convert --child` runs): limits itself, converts, writes the
// files and prints the protocol above. Returns the exit status.
int convert_child(const ChildRequest& request);

}  // namespace kiln::assets::pipeline
