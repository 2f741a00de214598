// A level as a GLB file (glTF 2.0 binary container, glTF 2.0 spec 4.4): one scene, one node,
// one mesh of indexed triangle primitives (POSITION with min/max, NORMAL, TEXCOORD_0),
// metallic-roughness materials, and the base-color images the materials use embedded
// through buffer views (WebP ones through EXT_texture_webp, then required). 16-bit indices where
// every index fits below 65535 (the restart value WebGL reserves), 32-bit otherwise; every buffer
// view 4-byte aligned. Output that Khronos' glTF-Validator accepts without errors
// (tests/e2e/test_pipeline.py checks it).
#pragma once

#include "assets/pipeline/model.hpp"

#include <span>

namespace kiln::assets::pipeline {

struct GlbInput {
  std::span<const Primitive> primitives;
  std::span<const Material> materials;  // what primitives' `material` indexes
  std::span<const Image> images;        // what materials' textures index; empty: no textures
  std::string generator = "Kiln asset pipeline";
  // KHR_mesh_quantization (then required): positions as 16-bit unsigned integers on a grid
  // of quantization_step(box) model units, placed by the node's translation and uniform
  // scale (uniform: normals stay right); normals as normalized 8-bit, UVs within [0, 1] as
  // normalized 16-bit. Half the vertex bytes; positions move by up to
  // quantization_error(box). `box`: the grid's (holding every position: the levels of one
  // model share their level 0's, so they share one grid); null: the primitives' own.
  bool quantize = false;
  const Box* box = nullptr;
};

std::vector<std::uint8_t> write_glb(const GlbInput& in);

// The position grid of a quantized GLB of primitives whose bounds are `box`: the largest
// extent over 65,535 steps (model units), and how far a position may move onto it: half a
// step along each axis, sqrt(3) / 2 steps.
double quantization_step(const Box& box);
double quantization_error(const Box& box);

}  // namespace kiln::assets::pipeline
