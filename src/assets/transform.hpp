// 4x4 transforms as glTF writes them (column-major): what the importer bakes into vertices
// and the scene stream places entities with. Header-only, no dependency.
#pragma once

#include <array>

namespace kiln::assets {

using Matrix = std::array<double, 16>;  // column-major, as glTF

inline constexpr Matrix kIdentity = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};

inline Matrix multiply(const Matrix& a, const Matrix& b) {
  Matrix r{};
  for (int c = 0; c < 4; ++c)
    for (int row = 0; row < 4; ++row) {
      double s = 0;
      for (int k = 0; k < 4; ++k) s += a[k * 4 + row] * b[c * 4 + k];
      r[c * 4 + row] = s;
    }
  return r;
}

// T * R * S, a glTF node's local matrix; `q` a unit quaternion (x, y, z, w).
inline Matrix compose(const std::array<double, 3>& t, const std::array<double, 4>& q,
                      const std::array<double, 3>& s) {
  const auto [x, y, z, w] = q;
  Matrix m = {1 - 2 * (y * y + z * z),
              2 * (x * y + z * w),
              2 * (x * z - y * w),
              0,
              2 * (x * y - z * w),
              1 - 2 * (x * x + z * z),
              2 * (y * z + x * w),
              0,
              2 * (x * z + y * w),
              2 * (y * z - x * w),
              1 - 2 * (x * x + y * y),
              0,
              t[0],
              t[1],
              t[2],
              1};
  for (int c = 0; c < 3; ++c)
    for (int row = 0; row < 3; ++row) m[c * 4 + row] *= s[c];
  return m;
}

}  // namespace kiln::assets
