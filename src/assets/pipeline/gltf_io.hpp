// tinygltf's filesystem callbacks for user files (import_gltf.cpp): nothing is read from or
// written to the worker's disk. A "path" that is a data URI tinygltf does not decode itself
// (data:image/webp;base64,...) is decoded here; every other path is refused, named (cut to
// 200 bytes) in the error.
#pragma once

#include <string>
#include <vector>

namespace kiln::assets::pipeline::gltf_io {

bool no_file(const std::string& path, void*);  // true only for a data URI
std::string same_path(const std::string& path, void*);
bool refuse_read(std::vector<unsigned char>* out, std::string* err, const std::string& path, void*);
bool refuse_write(std::string* err, const std::string&, const std::vector<unsigned char>&, void*);

}  // namespace kiln::assets::pipeline::gltf_io
