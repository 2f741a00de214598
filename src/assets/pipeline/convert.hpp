// A model file's bytes to its LOD chain as GLB files and the manifest that describes them:
// import (import.hpp), validate, build the chain (lod_chain.hpp), write each level
// (glb.hpp). In-process: call it on user bytes only inside isolate.hpp's child.
//
// Manifest (JSON, docs/assets.md "Manifest"), one per asset and pipeline version:
//   {"pipeline": "kiln-lod/1", "source": {"name", "bytes", "triangles", "vertices"},
//    "bounds": {"box": {"min": [x,y,z], "max": [x,y,z]}, "sphere": {"center": [..], "radius"}},
//    "levels": [{"level": 0, "file": "lod0.glb", "triangles", "error", "bytes",
//                "box", "sphere"}, ...],            finest first, error in model units
//    "images": [{"name", "mime_type", "width", "height", "bytes"}],
//    "warnings": ["..."]}
// The stored manifest replaces each level's "file" with its content-addressed "url".
#pragma once

#include "assets/derived.hpp"
#include "assets/pipeline/lod_chain.hpp"
#include "assets/pipeline/model.hpp"

#include <boost/json/object.hpp>

#include <functional>

#include <span>
#include <string_view>

namespace kiln::assets::pipeline {

using assets::kPipelineVersion;

struct ConvertOptions {
  Limits limits;
  LodOptions lod;
};

struct LevelFile {
  std::string file;  // lod<N>.glb
  std::vector<std::uint8_t> glb;
};

struct Converted {
  std::vector<LevelFile> files;
  boost::json::object manifest;
};

// `progress(stage, percent)` is told of each stage ("import", "lod", "write"), may be empty.
Result<Converted> convert(std::span<const std::uint8_t> bytes, std::string_view file_name,
                          const ConvertOptions& options,
                          const std::function<void(std::string_view, int)>& progress = {});

}  // namespace kiln::assets::pipeline
