// Test inputs of the pipeline's unit tests: images encoded by the same libraries the pipeline
// decodes with (libpng's simplified API, TurboJPEG; a gradient with alpha, so that scaling
// and encoding have work to do), and a UV sphere model. Tests only.
#pragma once

#include "assets/pipeline/model.hpp"

#include <png.h>
#include <turbojpeg.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <numbers>
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

// A UV sphere of about 2 * rings * segments triangles, radius r, with normals and UVs.
inline Primitive sphere(int rings, int segments, float r) {
  Primitive p;
  for (int i = 0; i <= rings; ++i) {
    const double th = std::numbers::pi * i / rings;
    for (int j = 0; j <= segments; ++j) {
      const double ph = 2 * std::numbers::pi * j / segments;
      const double x = std::sin(th) * std::cos(ph), y = std::cos(th),
                   z = std::sin(th) * std::sin(ph);
      p.positions.insert(p.positions.end(), {float(r * x), float(r * y), float(r * z)});
      p.normals.insert(p.normals.end(), {float(x), float(y), float(z)});
      p.uvs.insert(p.uvs.end(), {float(j) / segments, float(i) / rings});
    }
  }
  for (int i = 0; i < rings; ++i)
    for (int j = 0; j < segments; ++j) {
      const auto a = static_cast<std::uint32_t>(i * (segments + 1) + j), b = a + segments + 1;
      p.indices.insert(p.indices.end(), {a, b, a + 1, a + 1, b, b + 1});
    }
  return p;
}

inline Model sphere_model(int rings = 200, int segments = 200) {
  Model m;
  m.primitives.push_back(sphere(rings, segments, 2.0f));
  m.primitives[0].material = 0;
  m.materials.push_back({"clay", {0.8f, 0.5f, 0.3f, 1}, -1, 0, 0.9f, false});
  return m;
}

}  // namespace kiln::assets::pipeline::testing
