#include "assets/pipeline/gltf_io.hpp"

#include "platform/codec.hpp"

#include <algorithm>
#include <string_view>

namespace kiln::assets::pipeline::gltf_io {

bool no_file(const std::string& path, void*) {
  return path.starts_with("data:");  // a data URI tinygltf did not decode: refuse_read does
}
std::string same_path(const std::string& p, void*) {
  return p;
}
// A data URI of a type tinygltf does not know (data:image/webp;base64,...) reaches the file
// callback as a "path": its bytes are the URI's, decoded. Anything else names a file: refused.
bool refuse_read(std::vector<unsigned char>* out, std::string* err, const std::string& path,
                 void*) {
  const auto comma = path.find(',');
  if (path.starts_with("data:") && comma != std::string::npos &&
      std::string_view(path).substr(0, comma).ends_with(";base64")) {
    // tinygltf URL-decoded it first, which turned base64's '+' into ' '.
    std::string text = path.substr(comma + 1);
    std::replace(text.begin(), text.end(), ' ', '+');
    if (auto bytes = codec::base64_decode(text)) {
      out->assign(bytes->begin(), bytes->end());
      return true;
    }
    if (err) *err = "a data URI is not valid base64";
    return false;
  }
  const std::string shown = path.size() > 200 ? path.substr(0, 200) + "..." : path;
  if (err) *err = "external file '" + shown + "' is not read (upload a .glb, or embed it)";
  return false;
}
bool refuse_write(std::string* err, const std::string&, const std::vector<unsigned char>&, void*) {
  if (err) *err = "writing files is not allowed";
  return false;
}

}  // namespace kiln::assets::pipeline::gltf_io
