// The pipeline's one model: what every importer (glTF 2.0 through tinygltf; FBX, OBJ, DAE,
// PLY, STL and the rest through assimp) produces and the LOD chain and the GLB writer take.
// Node transforms are baked into the vertices (a model is a prop: one rigid object), every
// primitive is an indexed triangle list, every attribute is float, every index in range.
#pragma once

#include "platform/result.hpp"

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace kiln::assets::pipeline {

enum class Errc {
  unsupported,  // not a format the pipeline reads (or a claimed one it is not)
  malformed,    // the file breaks its format's rules (truncated, out of range, not finite)
  too_large,    // past a limit (triangles, vertices, bytes, texture pixels)
  empty,        // no triangles to make levels of
  limits,       // the importer ran out of its CPU time or memory (a bomb, or too large)
  crashed,      // the importer died (a parser bug on this input)
  internal,     // our own fault (could not write the output)
  stopped,      // the caller stopped it (a cancelled job, a worker shutting down)
};

using Error = ErrorOf<Errc>;

template <class T>
using Result = kiln::Result<T, Error>;

// The name of a code as it appears in manifests, logs and the API ("malformed").
const char* to_string(Errc c);

// What an import may hold at most: checked while reading, before allocating for the claim.
struct Limits {
  std::uint64_t max_triangles = 20'000'000;
  std::uint64_t max_vertices = 20'000'000;
  std::uint64_t max_texture_pixels = 8192ull * 8192ull;  // per image, from its header
  std::uint32_t max_texture_side = 16'384;               // px, either side
  std::uint32_t max_textures = 256;
};

struct Primitive {
  std::vector<float> positions;        // xyz per vertex, model units (after node transforms)
  std::vector<float> normals;          // xyz per vertex, unit length; empty when the file has none
  std::vector<float> uvs;              // uv per vertex (TEXCOORD_0); empty when none
  std::vector<std::uint32_t> indices;  // three per triangle, each < vertex count
  int material = -1;                   // index into Model::materials, -1 the default

  std::size_t vertex_count() const { return positions.size() / 3; }
  std::size_t triangle_count() const { return indices.size() / 3; }
};

struct Image {
  std::string name;
  std::string mime_type;                // image/png or image/jpeg (detected from the bytes)
  std::vector<std::uint8_t> data;       // the encoded file as the model held it
  std::uint32_t width = 0, height = 0;  // from its header
};

// glTF's metallic-roughness material, the subset the levels carry.
struct Material {
  std::string name;
  std::array<float, 4> base_color{1, 1, 1, 1};  // linear RGBA
  int base_color_texture = -1;                  // index into Model::images, -1 none
  float metallic = 1;
  float roughness = 1;
  bool double_sided = false;
};

struct Box {
  std::array<float, 3> min{0, 0, 0};
  std::array<float, 3> max{0, 0, 0};
};

struct Model {
  std::vector<Primitive> primitives;
  std::vector<Material> materials;
  std::vector<Image> images;
  std::vector<std::string> warnings;  // what the importer dropped (lines, points, cameras)

  std::uint64_t triangle_count() const;
  std::uint64_t vertex_count() const;
  Box bounds() const;  // of every position; zero box when there is none
};

// `s` with every byte that is not part of UTF-8 (RFC 3629) replaced by U+FFFD: names and
// messages from files in other encodings (Latin-1 material names) become valid JSON text.
std::string valid_utf8(std::string_view s);

// Checks what every stage relies on: indices in range, positions finite, attribute arrays
// of one vertex count, the limits. Importers call it last; it names the first fault.
Result<void> validate(const Model& m, const Limits& limits);

}  // namespace kiln::assets::pipeline
