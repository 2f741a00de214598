// Texture levels (docs/assets.md "Textures"): an image a model holds (PNG, JPEG or WebP;
// its size already checked from its header by image_header.hpp, before any decode) decoded
// with Debian's libraries (libpng's simplified API, TurboJPEG, libwebp) and written as WebP
// levels (libwebp), each half the sides of the one before (libwebp's rescaler, from the
// level before it): the finest at most `max_side` on its larger side, the last the first
// whose larger side is at most `min_side`. Browsers decode WebP natively; a GLB refers to it
// through glTF's EXT_texture_webp extension (glb.hpp).
#pragma once

#include "assets/pipeline/model.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace kiln::assets::pipeline {

struct TextureOptions {
  std::uint32_t max_side = 8192;  // px: the finest level's larger side at most
  std::uint32_t min_side = 256;   // px: levels stop at the first this small
  int quality = 85;               // WebP quality, 0-100 (lossy; alpha kept)
};

struct TextureLevel {
  std::uint32_t width = 0, height = 0;  // px
  std::string mime_type;                // image/webp; level 0 may keep the source's type
  std::vector<std::uint8_t> bytes;      // the encoded file
};

// The image's levels, finest first (at least one). Level 0 is the source file itself when
// its size is unchanged and it is no larger than its WebP (a small PNG often is not). Errors:
// malformed (does not decode, or decodes to other dimensions than its header said), unsupported
// (not PNG, JPEG or WebP), internal (the encoder failed).
Result<std::vector<TextureLevel>> texture_levels(const Image& image, const TextureOptions& options);

}  // namespace kiln::assets::pipeline
