// glTF 2.0 (.glb, and .gltf whose buffers and images are embedded as data URIs) through
// Debian's tinygltf. tinygltf parses the JSON and the buffers; everything read from them
// (accessor ranges, indices, counts, the node hierarchy) is checked here, with the spec's
// rules (glTF 2.0, 3.6.2 accessors, 3.5 nodes), before any of it is trusted.
#include "assets/pipeline/gltf_io.hpp"
#include "assets/pipeline/image_header.hpp"
#include "assets/pipeline/import.hpp"

#include "assets/transform.hpp"

#include <tiny_gltf.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <unordered_set>

namespace kiln::assets::pipeline {
namespace {

using Mat4 = Matrix;

Mat4 mul(const Mat4& a, const Mat4& b) {
  return multiply(a, b);
}

Mat4 local_matrix(const tinygltf::Node& n) {
  if (n.matrix.size() == 16) {
    Mat4 m{};
    for (int i = 0; i < 16; ++i) m[i] = n.matrix[i];
    return m;
  }
  std::array<double, 3> t{0, 0, 0}, s{1, 1, 1};
  std::array<double, 4> q{0, 0, 0, 1};
  if (n.translation.size() == 3) t = {n.translation[0], n.translation[1], n.translation[2]};
  if (n.rotation.size() == 4) {
    const double len = std::sqrt(n.rotation[0] * n.rotation[0] + n.rotation[1] * n.rotation[1] +
                                 n.rotation[2] * n.rotation[2] + n.rotation[3] * n.rotation[3]);
    if (len > 0)
      q = {n.rotation[0] / len, n.rotation[1] / len, n.rotation[2] / len, n.rotation[3] / len};
  }
  if (n.scale.size() == 3) s = {n.scale[0], n.scale[1], n.scale[2]};
  return compose(t, q, s);
}

struct ImageContext {
  const Limits* limits = nullptr;
  std::string error;  // set when an image is past the limits: the import fails with it
};

// An image's encoded bytes kept as they are (nothing is decoded), once its header is within
// the limits; false with `why` when it is not.
bool take_image(tinygltf::Image& image, int index, std::span<const std::uint8_t> bytes,
                const Limits& l, std::string& why, std::string* warn) {
  const auto header = read_image_header(bytes);
  if (!header) {
    if (warn) *warn += "image " + std::to_string(index) + " is not PNG, JPEG or WebP: dropped\n";
    return true;
  }
  if (header->width > l.max_texture_side || header->height > l.max_texture_side ||
      std::uint64_t{header->width} * header->height > l.max_texture_pixels) {
    why = "image " + std::to_string(index) + " is " + std::to_string(header->width) + "x" +
          std::to_string(header->height) + " px; the limit is " +
          std::to_string(l.max_texture_pixels) + " pixels and " +
          std::to_string(l.max_texture_side) + " px a side";
    return false;
  }
  image.image.assign(bytes.begin(), bytes.end());
  image.width = static_cast<int>(header->width);
  image.height = static_cast<int>(header->height);
  image.mimeType = header->mime_type;
  image.as_is = true;
  return true;
}

// tinygltf's image callback. An image in a buffer view is left for after the load
// (images_from_views): tinygltf 2.7 passes a view's range without checking that it lies
// within its buffer, so those bytes are not read here. A data-URI image's bytes are its
// decoded URI, exactly.
bool keep_image(tinygltf::Image* image, const int index, std::string* err, std::string* warn, int,
                int, const unsigned char* bytes, int size, void* user) {
  auto& ctx = *static_cast<ImageContext*>(user);
  if (image->bufferView >= 0) return true;
  if (!take_image(*image, index, {bytes, static_cast<std::size_t>(std::max(size, 0))}, *ctx.limits,
                  ctx.error, warn)) {
    if (err) *err = ctx.error;
    return false;
  }
  return true;
}

// The images in buffer views, their ranges checked first.
Result<void> images_from_views(tinygltf::Model& m, const Limits& limits, std::string& warn) {
  for (std::size_t i = 0; i < m.images.size(); ++i) {
    auto& img = m.images[i];
    if (img.bufferView < 0) continue;
    const auto& bv = m.bufferViews.at(static_cast<std::size_t>(img.bufferView));
    const auto& buf = m.buffers.at(static_cast<std::size_t>(bv.buffer)).data;
    if (std::uint64_t(bv.byteOffset) + bv.byteLength > buf.size())
      return Error{Errc::malformed, "image " + std::to_string(i) +
                                        ": its buffer view runs past its buffer (" +
                                        std::to_string(buf.size()) + " bytes; truncated?)"};
    std::string why;
    if (!take_image(img, static_cast<int>(i), {buf.data() + bv.byteOffset, bv.byteLength}, limits,
                    why, &warn))
      return Error{Errc::too_large, why};
  }
  return {};
}

double component_value(const unsigned char* p, int type, bool normalized) {
  switch (type) {
    case TINYGLTF_COMPONENT_TYPE_FLOAT: {
      float f;
      std::memcpy(&f, p, 4);
      return f;
    }
    case TINYGLTF_COMPONENT_TYPE_UNSIGNED_BYTE:
      return normalized ? p[0] / 255.0 : p[0];
    case TINYGLTF_COMPONENT_TYPE_BYTE: {
      const auto v = static_cast<std::int8_t>(p[0]);
      return normalized ? std::max(v / 127.0, -1.0) : v;
    }
    case TINYGLTF_COMPONENT_TYPE_UNSIGNED_SHORT: {
      std::uint16_t v;
      std::memcpy(&v, p, 2);
      return normalized ? v / 65535.0 : v;
    }
    case TINYGLTF_COMPONENT_TYPE_SHORT: {
      std::int16_t v;
      std::memcpy(&v, p, 2);
      return normalized ? std::max(v / 32767.0, -1.0) : v;
    }
    case TINYGLTF_COMPONENT_TYPE_UNSIGNED_INT: {
      std::uint32_t v;
      std::memcpy(&v, p, 4);
      return v;
    }
  }
  return 0;
}

// The accessor's bytes, checked against its buffer view and buffer: where element i starts,
// and the stride. Counts are checked against the limit before anything is allocated.
struct View {
  const unsigned char* base = nullptr;  // nullptr: an accessor without a view (all zeros)
  std::size_t stride = 0;
  std::size_t count = 0;
  int component_type = 0;
  int components = 0;
  bool normalized = false;
};

Result<View> view_of(const tinygltf::Model& m, int index, const std::string& what,
                     std::uint64_t max_count) {
  if (index < 0 || index >= static_cast<int>(m.accessors.size()))
    return Error{Errc::malformed,
                 what + " names accessor " + std::to_string(index) + ", which does not exist"};
  const auto& a = m.accessors[index];
  const std::string where = what + " (accessor " + std::to_string(index) + ")";
  if (a.sparse.isSparse)
    return Error{Errc::unsupported, where + " is sparse; sparse accessors are not supported"};
  const int comp_size =
      tinygltf::GetComponentSizeInBytes(static_cast<std::uint32_t>(a.componentType));
  const int comps = tinygltf::GetNumComponentsInType(static_cast<std::uint32_t>(a.type));
  if (comp_size <= 0 || comps <= 0)
    return Error{Errc::malformed, where + " has an unknown component type or type"};
  if (a.count > max_count)
    return Error{Errc::too_large, where + " claims " + std::to_string(a.count) +
                                      " elements; the limit is " + std::to_string(max_count)};
  View v;
  v.count = a.count;
  v.component_type = a.componentType;
  v.components = comps;
  v.normalized = a.normalized;
  if (a.bufferView < 0) return v;
  if (a.bufferView >= static_cast<int>(m.bufferViews.size()))
    return Error{Errc::malformed, where + " names a buffer view that does not exist"};
  const auto& bv = m.bufferViews[a.bufferView];
  if (bv.buffer < 0 || bv.buffer >= static_cast<int>(m.buffers.size()))
    return Error{Errc::malformed, where + ": its buffer view names a buffer that does not exist"};
  const auto& buf = m.buffers[bv.buffer].data;
  const std::uint64_t elem = std::uint64_t(comp_size) * comps;
  const std::uint64_t stride = bv.byteStride ? bv.byteStride : elem;
  if (stride < elem || stride > 252)
    return Error{Errc::malformed, where + " has a byte stride out of range"};
  if (std::uint64_t(bv.byteOffset) + bv.byteLength > buf.size())
    return Error{Errc::malformed, where + ": its buffer view runs past its buffer (" +
                                      std::to_string(buf.size()) + " bytes; truncated?)"};
  if (a.count > 0 && std::uint64_t(a.byteOffset) + stride * (a.count - 1) + elem > bv.byteLength)
    return Error{Errc::malformed,
                 where + " runs past its buffer view (" + std::to_string(a.count) + " elements)"};
  v.base = buf.data() + bv.byteOffset + a.byteOffset;
  v.stride = stride;
  return v;
}

Result<std::vector<float>> read_floats(const tinygltf::Model& m, int index, int want_components,
                                       const std::string& what, const Limits& limits) {
  KILN_TRY(v, view_of(m, index, what, limits.max_vertices));
  if (v.components != want_components)
    return Error{Errc::malformed, what + " has " + std::to_string(v.components) +
                                      " components per element; " +
                                      std::to_string(want_components) + " expected"};
  if (v.component_type == TINYGLTF_COMPONENT_TYPE_UNSIGNED_INT)
    return Error{Errc::malformed, what + " uses 32-bit integers, which attributes may not"};
  std::vector<float> out(v.count * v.components, 0.0f);
  if (!v.base) return out;
  const int cs = tinygltf::GetComponentSizeInBytes(static_cast<std::uint32_t>(v.component_type));
  for (std::size_t i = 0; i < v.count; ++i)
    for (int c = 0; c < v.components; ++c)
      out[i * v.components + c] = static_cast<float>(
          component_value(v.base + i * v.stride + c * cs, v.component_type, v.normalized));
  return out;
}

Result<std::vector<std::uint32_t>> read_indices(const tinygltf::Model& m, int index,
                                                const Limits& limits) {
  KILN_TRY(v, view_of(m, index, "indices", limits.max_triangles * 3));
  if (v.components != 1 || (v.component_type != TINYGLTF_COMPONENT_TYPE_UNSIGNED_BYTE &&
                            v.component_type != TINYGLTF_COMPONENT_TYPE_UNSIGNED_SHORT &&
                            v.component_type != TINYGLTF_COMPONENT_TYPE_UNSIGNED_INT))
    return Error{Errc::malformed, "indices must be unsigned scalars"};
  std::vector<std::uint32_t> out(v.count, 0);
  if (!v.base) return out;
  for (std::size_t i = 0; i < v.count; ++i)
    out[i] =
        static_cast<std::uint32_t>(component_value(v.base + i * v.stride, v.component_type, false));
  return out;
}

// Strips and fans as lists (glTF 3.7.2.1's vertex orders).
std::vector<std::uint32_t> as_triangle_list(std::vector<std::uint32_t> in, int mode) {
  if (mode == TINYGLTF_MODE_TRIANGLES) {
    in.resize(in.size() / 3 * 3);
    return in;
  }
  std::vector<std::uint32_t> out;
  for (std::size_t i = 2; i < in.size(); ++i) {
    if (mode == TINYGLTF_MODE_TRIANGLE_STRIP) {
      if (i % 2 == 0)
        out.insert(out.end(), {in[i - 2], in[i - 1], in[i]});
      else
        out.insert(out.end(), {in[i - 1], in[i - 2], in[i]});
    } else {
      out.insert(out.end(), {in[0], in[i - 1], in[i]});
    }
  }
  return out;
}

class Builder {
 public:
  Builder(const tinygltf::Model& m, const Limits& limits, Model& out)
      : m_(m), limits_(limits), out_(out) {}

  Result<void> node(int index, const Mat4& parent, int depth) {
    if (index < 0 || index >= static_cast<int>(m_.nodes.size()))
      return Error{Errc::malformed,
                   "a scene names node " + std::to_string(index) + ", which does not exist"};
    if (depth > 128) return Error{Errc::malformed, "the node hierarchy is deeper than 128"};
    if (!on_path_.insert(index).second)
      return Error{Errc::malformed, "node " + std::to_string(index) + " is its own ancestor"};
    if (++visits_ > 1'000'000)
      return Error{Errc::too_large, "the node hierarchy has more than a million node instances"};
    const auto& n = m_.nodes[index];
    const Mat4 world = mul(parent, local_matrix(n));
    if (n.mesh >= 0) KILN_CHECK(mesh(n.mesh, world));
    for (int child : n.children) KILN_CHECK(node(child, world, depth + 1));
    on_path_.erase(index);
    return {};
  }

 private:
  Result<void> mesh(int index, const Mat4& w) {
    if (index >= static_cast<int>(m_.meshes.size()))
      return Error{Errc::malformed,
                   "a node names mesh " + std::to_string(index) + ", which does not exist"};
    for (const auto& p : m_.meshes[index].primitives) {
      if (p.mode != TINYGLTF_MODE_TRIANGLES && p.mode != TINYGLTF_MODE_TRIANGLE_STRIP &&
          p.mode != TINYGLTF_MODE_TRIANGLE_FAN) {
        out_.warnings.push_back("mesh " + std::to_string(index) +
                                ": a primitive of points or lines was dropped");
        continue;
      }
      const auto pos = p.attributes.find("POSITION");
      if (pos == p.attributes.end())
        return Error{Errc::malformed,
                     "mesh " + std::to_string(index) + ": a primitive has no POSITION"};
      Primitive out;
      KILN_TRY(positions, read_floats(m_, pos->second, 3, "POSITION", limits_));
      const std::size_t n = positions.size() / 3;
      if (auto it = p.attributes.find("NORMAL"); it != p.attributes.end()) {
        KILN_TRY(normals, read_floats(m_, it->second, 3, "NORMAL", limits_));
        if (normals.size() != positions.size())
          return Error{Errc::malformed, "NORMAL and POSITION differ in count"};
        out.normals = std::move(normals);
      }
      if (auto it = p.attributes.find("TEXCOORD_0"); it != p.attributes.end()) {
        KILN_TRY(uvs, read_floats(m_, it->second, 2, "TEXCOORD_0", limits_));
        if (uvs.size() != n * 2)
          return Error{Errc::malformed, "TEXCOORD_0 and POSITION differ in count"};
        out.uvs = std::move(uvs);
      }
      std::vector<std::uint32_t> indices;
      if (p.indices >= 0) {
        KILN_TRY(read, read_indices(m_, p.indices, limits_));
        indices = std::move(read);
      } else {
        indices.resize(n);
        for (std::size_t i = 0; i < n; ++i) indices[i] = static_cast<std::uint32_t>(i);
      }
      out.indices = as_triangle_list(std::move(indices), p.mode);
      triangles_ += out.indices.size() / 3;
      vertices_ += n;
      if (triangles_ > limits_.max_triangles)
        return Error{Errc::too_large, "the scene instances more than " +
                                          std::to_string(limits_.max_triangles) + " triangles"};
      if (vertices_ > limits_.max_vertices)
        return Error{Errc::too_large, "the scene instances more than " +
                                          std::to_string(limits_.max_vertices) + " vertices"};
      transform(positions, out.normals, out.indices, w);
      out.positions = std::move(positions);
      out.material =
          p.material >= 0 && p.material < static_cast<int>(m_.materials.size()) ? p.material : -1;
      out_.primitives.push_back(std::move(out));
    }
    return {};
  }

  static void transform(std::vector<float>& pos, std::vector<float>& nrm,
                        std::vector<std::uint32_t>& idx, const Mat4& w) {
    for (std::size_t i = 0; i + 2 < pos.size(); i += 3) {
      const double x = pos[i], y = pos[i + 1], z = pos[i + 2];
      pos[i] = static_cast<float>(w[0] * x + w[4] * y + w[8] * z + w[12]);
      pos[i + 1] = static_cast<float>(w[1] * x + w[5] * y + w[9] * z + w[13]);
      pos[i + 2] = static_cast<float>(w[2] * x + w[6] * y + w[10] * z + w[14]);
    }
    // Normals by the inverse transpose of the upper 3x3 (its cofactor matrix, up to scale).
    const double a = w[0], b = w[4], c = w[8], d = w[1], e = w[5], f = w[9], g = w[2], h = w[6],
                 k = w[10];
    const std::array<double, 9> cof = {e * k - f * h, f * g - d * k, d * h - e * g,
                                       c * h - b * k, a * k - c * g, b * g - a * h,
                                       b * f - c * e, c * d - a * f, a * e - b * d};
    for (std::size_t i = 0; i + 2 < nrm.size(); i += 3) {
      const double x = nrm[i], y = nrm[i + 1], z = nrm[i + 2];
      double nx = cof[0] * x + cof[3] * y + cof[6] * z;
      double ny = cof[1] * x + cof[4] * y + cof[7] * z;
      double nz = cof[2] * x + cof[5] * y + cof[8] * z;
      const double len = std::sqrt(nx * nx + ny * ny + nz * nz);
      if (len > 1e-12 && std::isfinite(len)) {
        nx /= len, ny /= len, nz /= len;
      } else {
        nx = 0, ny = 0, nz = 1;  // a zero normal: glTF requires unit length
      }
      nrm[i] = static_cast<float>(nx);
      nrm[i + 1] = static_cast<float>(ny);
      nrm[i + 2] = static_cast<float>(nz);
    }
    const double det = a * cof[0] + b * cof[1] + c * cof[2];
    if (det < 0)  // a mirroring transform turns faces inside out: keep them front-facing
      for (std::size_t i = 0; i + 2 < idx.size(); i += 3) std::swap(idx[i + 1], idx[i + 2]);
  }

  const tinygltf::Model& m_;
  const Limits& limits_;
  Model& out_;
  std::unordered_set<int> on_path_;
  std::uint64_t visits_ = 0, triangles_ = 0, vertices_ = 0;
};

void materials_and_images(const tinygltf::Model& m, Model& out) {
  std::vector<int> image_of(m.images.size(), -1);
  for (std::size_t i = 0; i < m.images.size(); ++i) {
    const auto& img = m.images[i];
    if (!img.as_is || img.image.empty()) continue;
    image_of[i] = static_cast<int>(out.images.size());
    out.images.push_back({img.name,
                          img.mimeType,
                          {img.image.begin(), img.image.end()},
                          static_cast<std::uint32_t>(img.width),
                          static_cast<std::uint32_t>(img.height)});
  }
  for (const auto& mat : m.materials) {
    Material o;
    o.name = mat.name;
    const auto& pbr = mat.pbrMetallicRoughness;
    for (std::size_t c = 0; c < 4 && c < pbr.baseColorFactor.size(); ++c)
      o.base_color[c] = static_cast<float>(std::clamp(pbr.baseColorFactor[c], 0.0, 1.0));
    o.metallic = static_cast<float>(std::clamp(pbr.metallicFactor, 0.0, 1.0));
    o.roughness = static_cast<float>(std::clamp(pbr.roughnessFactor, 0.0, 1.0));
    o.double_sided = mat.doubleSided;
    const int t = pbr.baseColorTexture.index;
    if (t >= 0 && t < static_cast<int>(m.textures.size())) {
      // The image: the texture's source, or EXT_texture_webp's (a WebP, with or without a
      // PNG/JPEG fallback in `source`).
      const auto& tex = m.textures[t];
      int src = tex.source;
      if (const auto webp = tex.extensions.find("EXT_texture_webp");
          webp != tex.extensions.end() && webp->second.Has("source") &&
          webp->second.Get("source").IsInt())
        src = webp->second.Get("source").GetNumberAsInt();
      if (src >= 0 && src < static_cast<int>(image_of.size()) && image_of[src] >= 0)
        o.base_color_texture = image_of[src];
      else
        out.warnings.push_back("material '" + valid_utf8(mat.name) + "': its base-color texture " +
                               std::to_string(t) + " has no image the pipeline reads: left out");
    }
    out.materials.push_back(std::move(o));
  }
}

}  // namespace

Result<Model> import_gltf(std::span<const std::uint8_t> bytes, const Limits& limits) {
  if (bytes.size() > std::numeric_limits<unsigned int>::max())
    return Error{Errc::too_large, "the file is larger than 4 GiB"};
  tinygltf::TinyGLTF loader;
  loader.SetFsCallbacks(
      {gltf_io::no_file, gltf_io::same_path, gltf_io::refuse_read, gltf_io::refuse_write, nullptr});
  ImageContext images{&limits, {}};
  loader.SetImageLoader(keep_image, &images);
  tinygltf::Model m;
  std::string err, warn;
  bool ok = false;
  const auto n = static_cast<unsigned int>(bytes.size());
  try {
    if (detect_format(bytes) == Format::glb)
      ok = loader.LoadBinaryFromMemory(&m, &err, &warn, bytes.data(), n, "");
    else
      ok = loader.LoadASCIIFromString(&m, &err, &warn, reinterpret_cast<const char*>(bytes.data()),
                                      n, "");
  } catch (const std::exception& e) {  // its JSON parser throws on some inputs
    err = e.what();
  }
  if (!images.error.empty()) return Error{Errc::too_large, images.error};
  if (!ok) {
    while (!err.empty() && (err.back() == '\n' || err.back() == ' ')) err.pop_back();
    // A URI naming a file: nothing is read from the worker's disk.
    if (err.find("File not found") != std::string::npos)
      err += " (external files are not read: upload a .glb, or embed buffers as data URIs)";
    return Error{Errc::malformed,
                 "not valid glTF 2.0: " + (err.empty() ? "the parser refused it" : err)};
  }
  KILN_CHECK(images_from_views(m, limits, warn));
  for (const auto& ext : m.extensionsRequired)
    if (ext != "KHR_materials_unlit" && ext != "KHR_texture_transform" &&
        ext != "KHR_mesh_quantization" && ext != "EXT_texture_webp")
      return Error{Errc::unsupported,
                   "the file requires the extension " + ext + ", which the pipeline does not read"};
  Model out;
  materials_and_images(m, out);
  Builder b(m, limits, out);
  std::vector<int> roots;
  if (!m.scenes.empty()) {
    const int s = m.defaultScene >= 0 && m.defaultScene < static_cast<int>(m.scenes.size())
                      ? m.defaultScene
                      : 0;
    roots = m.scenes[s].nodes;
  } else {
    std::vector<bool> child(m.nodes.size(), false);
    for (const auto& nd : m.nodes)
      for (int c : nd.children)
        if (c >= 0 && c < static_cast<int>(child.size())) child[c] = true;
    for (std::size_t i = 0; i < m.nodes.size(); ++i)
      if (!child[i]) roots.push_back(static_cast<int>(i));
  }
  for (int r : roots) KILN_CHECK(b.node(r, kIdentity, 0));
  for (std::size_t at = 0; at < warn.size();) {  // one warning per line, each kept short
    const auto nl = std::min(warn.find('\n', at), warn.size());
    if (nl > at)
      out.warnings.push_back(nl - at > 300 ? warn.substr(at, 300) + "..."
                                           : warn.substr(at, nl - at));
    at = nl + 1;
  }
  KILN_CHECK(validate(out, limits));
  return out;
}

}  // namespace kiln::assets::pipeline
