// The size of an encoded image from its header alone, so that a limit on pixels is checked
// before anything decodes it (a 100k x 100k PNG is a few hundred bytes of header and 40 GB
// of pixels). PNG: the IHDR chunk (PNG 3rd ed., 11.2.2); JPEG: the first SOFn frame header
// (ITU T.81, B.2.2); WebP: the VP8/VP8L/VP8X chunk (RFC 9649).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace kiln::assets::pipeline {

struct ImageHeader {
  std::string mime_type;  // image/png, image/jpeg, image/webp
  std::uint32_t width = 0, height = 0;
};

// nullopt when the bytes are none of the three or their header is cut short or broken.
std::optional<ImageHeader> read_image_header(std::span<const std::uint8_t> bytes);

}  // namespace kiln::assets::pipeline
