#include "assets/pipeline/image_header.hpp"

#include <cstring>

namespace kiln::assets::pipeline {
namespace {

std::uint32_t be32(const std::uint8_t* p) {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | p[3];
}
std::uint32_t le16(const std::uint8_t* p) {
  return std::uint32_t{p[0]} | std::uint32_t{p[1]} << 8;
}
std::uint32_t le24(const std::uint8_t* p) {
  return le16(p) | std::uint32_t{p[2]} << 16;
}

std::optional<ImageHeader> png(std::span<const std::uint8_t> b) {
  static constexpr std::uint8_t kSig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (b.size() < 8 + 8 + 13 || std::memcmp(b.data(), kSig, 8) != 0) return std::nullopt;
  if (be32(b.data() + 8) != 13 || std::memcmp(b.data() + 12, "IHDR", 4) != 0) return std::nullopt;
  const std::uint32_t w = be32(b.data() + 16), h = be32(b.data() + 20);
  if (w == 0 || h == 0 || w > 0x7fffffffu || h > 0x7fffffffu) return std::nullopt;
  return ImageHeader{"image/png", w, h};
}

std::optional<ImageHeader> jpeg(std::span<const std::uint8_t> b) {
  if (b.size() < 4 || b[0] != 0xff || b[1] != 0xd8) return std::nullopt;
  std::size_t i = 2;
  while (i + 4 <= b.size()) {
    if (b[i] != 0xff) return std::nullopt;
    const std::uint8_t marker = b[i + 1];
    if (marker == 0xff) {  // fill byte
      ++i;
      continue;
    }
    if (marker == 0xd8 || (marker >= 0xd0 && marker <= 0xd7) || marker == 0x01) {
      i += 2;
      continue;
    }
    const std::size_t len = std::size_t{b[i + 2]} << 8 | b[i + 3];
    if (len < 2) return std::nullopt;
    // SOF0-SOF15 but DHT (c4), JPG (c8) and DAC (cc).
    if (marker >= 0xc0 && marker <= 0xcf && marker != 0xc4 && marker != 0xc8 && marker != 0xcc) {
      if (i + 9 > b.size() || len < 7) return std::nullopt;
      const std::uint32_t h = std::uint32_t{b[i + 5]} << 8 | b[i + 6];
      const std::uint32_t w = std::uint32_t{b[i + 7]} << 8 | b[i + 8];
      if (w == 0 || h == 0) return std::nullopt;  // h 0 (DNL) is legal but not for us
      return ImageHeader{"image/jpeg", w, h};
    }
    if (marker == 0xd9 || marker == 0xda) return std::nullopt;  // no frame before the scan
    i += 2 + len;
  }
  return std::nullopt;
}

std::optional<ImageHeader> webp(std::span<const std::uint8_t> b) {
  if (b.size() < 30 || std::memcmp(b.data(), "RIFF", 4) != 0 ||
      std::memcmp(b.data() + 8, "WEBP", 4) != 0)
    return std::nullopt;
  const std::uint8_t* c = b.data() + 12;
  if (std::memcmp(c, "VP8X", 4) == 0)
    return ImageHeader{"image/webp", 1 + le24(c + 12), 1 + le24(c + 15)};
  if (std::memcmp(c, "VP8L", 4) == 0) {
    if (c[8] != 0x2f) return std::nullopt;
    const std::uint32_t bits = le16(c + 9) | le16(c + 11) << 16;
    return ImageHeader{"image/webp", 1 + (bits & 0x3fff), 1 + ((bits >> 14) & 0x3fff)};
  }
  if (std::memcmp(c, "VP8 ", 4) == 0) {
    if (c[11] != 0x9d || c[12] != 0x01 || c[13] != 0x2a) return std::nullopt;
    return ImageHeader{"image/webp", le16(c + 14) & 0x3fff, le16(c + 16) & 0x3fff};
  }
  return std::nullopt;
}

}  // namespace

std::optional<ImageHeader> read_image_header(std::span<const std::uint8_t> bytes) {
  if (auto h = png(bytes)) return h;
  if (auto h = jpeg(bytes)) return h;
  return webp(bytes);
}

}  // namespace kiln::assets::pipeline
