// A model file's bytes to its LOD chain as GLB files, its textures' levels as WebP files, and
// the manifest that describes them: import (import.hpp), validate, build the chain
// (lod_chain.hpp), make each base-color texture's levels (texture.hpp), write each level
// (glb.hpp) with the texture level of the same number (the last one past it) embedded. In-
// process: call it on user bytes only inside isolate.hpp's child.
//
// Manifest (JSON, docs/assets.md "Manifest"), one per asset and pipeline version:
//   {"pipeline": "kiln-lod/1", "source": {"name", "bytes", "triangles", "vertices"},
//    "bounds": {"box": {"min": [x,y,z], "max": [x,y,z]}, "sphere": {"center": [..], "radius"}},
//    "levels": [{"level": 0, "file": "lod0.glb", "triangles", "error", "bytes", "quantized",
//                "texture_level", "box", "sphere"}, ...],  finest first, error in model units
//                (a quantized level's includes how far the grid moved its positions)
//    "textures": [{"name", "source": {"mime_type", "width", "height", "bytes"},
//                  "levels": [{"level", "file": "tex<T>-<L>.webp", "mime_type", "width",
//                              "height", "bytes"}]}],       finest first, px and bytes
//    "warnings": ["..."]}
// A texture that does not decode is left out with a warning (its material keeps its color).
// The stored manifest replaces each "file" with its content-addressed "uri".
#pragma once

#include "assets/derived.hpp"
#include "assets/pipeline/lod_chain.hpp"
#include "assets/pipeline/model.hpp"
#include "assets/pipeline/texture.hpp"

#include <boost/json/object.hpp>

#include <functional>

#include <span>
#include <string_view>

namespace kiln::assets::pipeline {

using assets::kPipelineVersion;

struct ConvertOptions {
  Limits limits;
  LodOptions lod;
  TextureOptions textures;
};

struct OutputFile {
  std::string file;  // lod<N>.glb, tex<T>-<L>.webp
  std::vector<std::uint8_t> bytes;
};

struct Converted {
  std::vector<OutputFile> files;  // the levels, then the texture levels
  boost::json::object manifest;
};

// Whether `name` is one convert() gives an output file: lod<N>.glb, tex<T>-<L>.webp (or
// .png/.jpg). A manifest read back (from the child, or an earlier run's directory) names
// nothing else: no path, no other file.
bool is_output_name(std::string_view name);

// Whether convert() writes level i of `levels` quantized (glb.hpp's GlbInput::quantize, on
// the grid of level 0's box): never level 0 (exact); another when that grid moves its
// positions by at most a tenth of its error. Its reported error then adds
// quantization_error(levels[0].box).
bool quantized(std::span<const Level> levels, std::size_t i);

// `progress(stage, percent)` is told of each stage ("import", "lod", "textures", "write"), may
// be empty.
Result<Converted> convert(std::span<const std::uint8_t> bytes, std::string_view file_name,
                          const ConvertOptions& options,
                          const std::function<void(std::string_view, int)>& progress = {});

}  // namespace kiln::assets::pipeline
