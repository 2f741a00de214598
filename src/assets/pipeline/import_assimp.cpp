// FBX, OBJ, Collada, PLY, STL, 3DS and the other formats assimp (Debian's 5.2) reads.
// assimp reads from memory; its IO system is replaced by one that opens nothing, since
// otherwise a file naming another (an OBJ's `mtllib /etc/passwd`) makes it read that path.
#include "assets/pipeline/image_header.hpp"
#include "assets/pipeline/import.hpp"

#include <assimp/material.h>
#include <assimp/postprocess.h>
#include <assimp/scene.h>
#include <assimp/IOStream.hpp>
#include <assimp/IOSystem.hpp>
#include <assimp/Importer.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>

namespace kiln::assets::pipeline {
namespace {

class NoFiles final : public Assimp::IOSystem {
 public:
  bool Exists(const char*) const override { return false; }
  char getOsSeparator() const override { return '/'; }
  Assimp::IOStream* Open(const char*, const char*) override { return nullptr; }
  void Close(Assimp::IOStream* s) override { delete s; }
};

void materials_and_images(const aiScene& s, Model& out, const Limits& limits) {
  std::vector<int> image_of(s.mNumTextures, -1);
  for (unsigned t = 0; t < s.mNumTextures; ++t) {
    const aiTexture* tex = s.mTextures[t];
    if (!tex || tex->mHeight != 0 || !tex->pcData) {
      out.warnings.push_back("embedded texture " + std::to_string(t) +
                             " is raw pixels, not a PNG or JPEG file: dropped");
      continue;
    }
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(tex->pcData);
    const std::span<const std::uint8_t> data(bytes, tex->mWidth);
    const auto header = read_image_header(data);
    if (!header) {
      out.warnings.push_back("embedded texture " + std::to_string(t) +
                             " is not PNG, JPEG or WebP: dropped");
      continue;
    }
    if (out.images.size() >= limits.max_textures) break;  // validate() names the limit
    image_of[t] = static_cast<int>(out.images.size());
    out.images.push_back({tex->mFilename.C_Str(),
                          header->mime_type,
                          {data.begin(), data.end()},
                          header->width,
                          header->height});
  }
  for (unsigned i = 0; i < s.mNumMaterials; ++i) {
    const aiMaterial* m = s.mMaterials[i];
    Material o;
    aiString name;
    if (m->Get(AI_MATKEY_NAME, name) == AI_SUCCESS) o.name = name.C_Str();
    aiColor4D c;
    if (m->Get(AI_MATKEY_BASE_COLOR, c) == AI_SUCCESS ||
        m->Get(AI_MATKEY_COLOR_DIFFUSE, c) == AI_SUCCESS)
      o.base_color = {std::clamp(c.r, 0.0f, 1.0f), std::clamp(c.g, 0.0f, 1.0f),
                      std::clamp(c.b, 0.0f, 1.0f), std::clamp(c.a, 0.0f, 1.0f)};
    for (auto* f : {&o.base_color[0], &o.base_color[1], &o.base_color[2], &o.base_color[3]})
      if (!std::isfinite(*f)) *f = 1;
    float v = 0;
    o.metallic = m->Get(AI_MATKEY_METALLIC_FACTOR, v) == AI_SUCCESS && std::isfinite(v)
                     ? std::clamp(v, 0.0f, 1.0f)
                     : 0.0f;  // not PBR: a dielectric
    o.roughness = m->Get(AI_MATKEY_ROUGHNESS_FACTOR, v) == AI_SUCCESS && std::isfinite(v)
                      ? std::clamp(v, 0.0f, 1.0f)
                      : 1.0f;
    int two = 0;
    if (m->Get(AI_MATKEY_TWOSIDED, two) == AI_SUCCESS) o.double_sided = two != 0;
    aiString path;
    if (m->GetTexture(aiTextureType_BASE_COLOR, 0, &path) == AI_SUCCESS ||
        m->GetTexture(aiTextureType_DIFFUSE, 0, &path) == AI_SUCCESS) {
      int found = -1;
      const char* p = path.C_Str();
      if (p[0] == '*') {
        char* end = nullptr;
        const long t = std::strtol(p + 1, &end, 10);
        if (end != p + 1 && *end == '\0' && t >= 0 && t < static_cast<long>(image_of.size()))
          found = image_of[t];
      } else if (const aiTexture* t = s.GetEmbeddedTexture(p)) {
        for (unsigned k = 0; k < s.mNumTextures; ++k)
          if (s.mTextures[k] == t) found = image_of[k];
      } else {
        out.warnings.push_back("material '" + o.name + "' names the texture file '" +
                               std::string(p) +
                               "', which was not uploaded with the model: left out");
      }
      o.base_color_texture = found;
    }
    out.materials.push_back(std::move(o));
  }
}

}  // namespace

Result<Model> import_assimp(std::span<const std::uint8_t> bytes, std::string_view extension,
                            const Limits& limits) {
  if (bytes.empty()) return Error{Errc::malformed, "the file is empty"};
  Assimp::Importer imp;
  imp.SetIOHandler(new NoFiles);  // owned by the importer
  const std::string ext(extension);
  if (!imp.IsExtensionSupported("." + ext))
    return Error{Errc::unsupported, "." + ext + " is not a model format the pipeline reads"};
  const unsigned flags = aiProcess_Triangulate | aiProcess_JoinIdenticalVertices |
                         aiProcess_PreTransformVertices | aiProcess_SortByPType |
                         aiProcess_ValidateDataStructure | aiProcess_FlipUVs;
  const aiScene* s = imp.ReadFileFromMemory(bytes.data(), bytes.size(), flags, ext.c_str());
  if (!s) {
    std::string why = imp.GetErrorString();
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
    // assimp names the in-memory file by a placeholder: say "the file" instead.
    for (auto at = why.find("$$$___magic___$$$"); at != std::string::npos;
         at = why.find("$$$___magic___$$$"))
      why.replace(at, std::string_view("$$$___magic___$$$." + ext).size(), "the file");
    if (why.find("bad_alloc") != std::string::npos)  // it caught the child's memory limit
      return Error{Errc::limits, "the ." + ext +
                                     " file needs more memory than the import may use (a count "
                                     "too large, or a decompression bomb)"};
    return Error{Errc::malformed, "not a readable ." + ext +
                                      " file: " + (why.empty() ? "the importer refused it" : why)};
  }
  if (s->mFlags & AI_SCENE_FLAGS_INCOMPLETE)
    return Error{Errc::malformed, "the ." + ext + " file holds an incomplete scene"};

  Model out;
  std::uint64_t triangles = 0, vertices = 0;
  for (unsigned i = 0; i < s->mNumMeshes; ++i) {
    const aiMesh* m = s->mMeshes[i];
    triangles += m->mNumFaces;
    vertices += m->mNumVertices;
  }
  if (triangles > limits.max_triangles || vertices > limits.max_vertices)
    return Error{Errc::too_large, "the model has " + std::to_string(triangles) + " triangles and " +
                                      std::to_string(vertices) + " vertices; the limits are " +
                                      std::to_string(limits.max_triangles) + " and " +
                                      std::to_string(limits.max_vertices)};
  materials_and_images(*s, out, limits);
  for (unsigned i = 0; i < s->mNumMeshes; ++i) {
    const aiMesh* m = s->mMeshes[i];
    if (!(m->mPrimitiveTypes & aiPrimitiveType_TRIANGLE) || !m->mVertices) {
      out.warnings.push_back(
          "a mesh of points or lines was dropped (levels are made of triangles)");
      continue;
    }
    Primitive p;
    const std::size_t n = m->mNumVertices;
    p.positions.resize(n * 3);
    for (std::size_t v = 0; v < n; ++v) {
      p.positions[v * 3] = m->mVertices[v].x;
      p.positions[v * 3 + 1] = m->mVertices[v].y;
      p.positions[v * 3 + 2] = m->mVertices[v].z;
    }
    if (m->mNormals) {
      p.normals.resize(n * 3);
      for (std::size_t v = 0; v < n; ++v) {
        aiVector3D nv = m->mNormals[v];
        const float len = nv.Length();
        if (len > 1e-12f && std::isfinite(len))
          nv /= len;
        else
          nv = {0, 0, 1};
        p.normals[v * 3] = nv.x;
        p.normals[v * 3 + 1] = nv.y;
        p.normals[v * 3 + 2] = nv.z;
      }
    }
    if (m->mTextureCoords[0]) {
      p.uvs.resize(n * 2);
      for (std::size_t v = 0; v < n; ++v) {
        p.uvs[v * 2] = m->mTextureCoords[0][v].x;
        p.uvs[v * 2 + 1] = m->mTextureCoords[0][v].y;
      }
    }
    p.indices.reserve(std::size_t{m->mNumFaces} * 3);
    for (unsigned f = 0; f < m->mNumFaces; ++f) {
      const aiFace& face = m->mFaces[f];
      if (face.mNumIndices != 3) continue;
      p.indices.insert(p.indices.end(), face.mIndices, face.mIndices + 3);
    }
    p.material = static_cast<int>(m->mMaterialIndex) < static_cast<int>(out.materials.size())
                     ? static_cast<int>(m->mMaterialIndex)
                     : -1;
    if (!p.indices.empty()) out.primitives.push_back(std::move(p));
  }
  KILN_CHECK(validate(out, limits));
  return out;
}

}  // namespace kiln::assets::pipeline
