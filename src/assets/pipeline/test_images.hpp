// Test images, encoded by the same libraries the pipeline decodes with (libpng's simplified
// API, TurboJPEG): a gradient with alpha, so that scaling and encoding have work to do.
// Tests only.
#pragma once

#include <png.h>
#include <turbojpeg.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace kiln::assets::pipeline::testing {

inline std::vector<std::uint8_t> gradient_rgba(int w, int h) {
  std::vector<std::uint8_t> px(static_cast<std::size_t>(w) * h * 4);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      auto* p = &px[(static_cast<std::size_t>(y) * w + x) * 4];
      p[0] = static_cast<std::uint8_t>(x * 255 / std::max(1, w - 1));
      p[1] = static_cast<std::uint8_t>(y * 255 / std::max(1, h - 1));
      p[2] = static_cast<std::uint8_t>((x ^ y) & 0xff);
      p[3] = static_cast<std::uint8_t>(128 + (x + y) % 128);
    }
  return px;
}

inline std::vector<std::uint8_t> png_of(int w, int h) {
  const auto px = gradient_rgba(w, h);
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  img.width = static_cast<png_uint_32>(w);
  img.height = static_cast<png_uint_32>(h);
  img.format = PNG_FORMAT_RGBA;
  png_alloc_size_t size = 0;
  png_image_write_to_memory(&img, nullptr, &size, 0, px.data(), 0, nullptr);
  std::vector<std::uint8_t> out(size);
  png_image_write_to_memory(&img, out.data(), &size, 0, px.data(), 0, nullptr);
  out.resize(size);
  return out;
}

inline std::vector<std::uint8_t> jpeg_of(int w, int h) {
  const auto px = gradient_rgba(w, h);
  std::unique_ptr<void, int (*)(tjhandle)> tj(tjInitCompress(), tjDestroy);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  tjCompress2(tj.get(), px.data(), w, 0, h, TJPF_RGBA, &buf, &size, TJSAMP_420, 90, 0);
  std::vector<std::uint8_t> out(buf, buf + size);
  tjFree(buf);
  return out;
}

}  // namespace kiln::assets::pipeline::testing
