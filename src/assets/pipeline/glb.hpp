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
};

std::vector<std::uint8_t> write_glb(const GlbInput& in);

}  // namespace kiln::assets::pipeline
