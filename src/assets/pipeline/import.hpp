// Importers: a file's bytes to the pipeline's model (model.hpp). The format comes from the
// bytes: the GLB magic, a JSON object with "asset" (glTF 2.0), and otherwise assimp with the
// file name's extension as its hint (FBX, OBJ, DAE, PLY, STL, 3DS, ...). A name that claims
// glTF for bytes that are not is refused as such. Nothing here opens a file: external
// references (a .gltf's buffers and images by URI, an OBJ's .mtl) are not followed, and the
// model imports without them (with a warning) or fails naming them.
//
// Errors are values: unsupported, malformed (with the parser's own message), too_large,
// empty. Parsers are not trusted to stop on hostile input: run this in a child process with
// CPU and memory limits (isolate.hpp) when the bytes come from users.
#pragma once

#include "assets/pipeline/model.hpp"

#include <span>
#include <string_view>

namespace kiln::assets::pipeline {

enum class Format { glb, gltf, other };

// What the bytes are (never the name alone).
Format detect_format(std::span<const std::uint8_t> bytes);

Result<Model> import_model(std::span<const std::uint8_t> bytes, std::string_view file_name,
                           const Limits& limits);

// The two importers, for tests and fuzzing.
Result<Model> import_gltf(std::span<const std::uint8_t> bytes, const Limits& limits);
Result<Model> import_assimp(std::span<const std::uint8_t> bytes, std::string_view extension,
                            const Limits& limits);

}  // namespace kiln::assets::pipeline
