#include "assets/media_type.hpp"

#include <array>

namespace kiln::assets {
namespace {

struct Signature {
  std::size_t offset;
  std::string_view bytes;
  std::string_view type;
};

using namespace std::string_view_literals;

// First match wins; the RIFF containers are told apart by their form type at offset 8.
constexpr std::array kSignatures = {
    Signature{0, "\x89PNG\r\n\x1a\n"sv, "image/png"},
    Signature{0, "\xff\xd8\xff"sv, "image/jpeg"},
    Signature{0, "GIF87a"sv, "image/gif"},
    Signature{0, "GIF89a"sv, "image/gif"},
    Signature{0, "\xabKTX 20\xbb\r\n\x1a\n"sv, "image/ktx2"},
    Signature{0, "\xabKTX 11\xbb\r\n\x1a\n"sv, "image/ktx"},
    Signature{0, "v/1\x01"sv, "image/x-exr"},
    Signature{0, "#?RADIANCE"sv, "image/vnd.radiance"},
    Signature{8, "WEBP"sv, "image/webp"},
    Signature{8, "WAVE"sv, "audio/wav"},
    Signature{0, "glTF"sv, "model/gltf-binary"},
    Signature{0, "OggS"sv, "audio/ogg"},
    Signature{0, "fLaC"sv, "audio/flac"},
    Signature{0, "ID3"sv, "audio/mpeg"},
    Signature{4, "ftyp"sv, "video/mp4"},
    Signature{0, "PK\x03\x04"sv, "application/zip"},
    Signature{0, "PK\x05\x06"sv, "application/zip"},
    Signature{0, "\x1f\x8b"sv, "application/gzip"},
    Signature{0, "(\xb5/\xfd"sv, "application/zstd"},
    Signature{0, "%PDF-"sv, "application/pdf"},
    Signature{0, "MZ"sv, "application/vnd.microsoft.portable-executable"},
    Signature{0,
              "\x7f"
              "ELF"sv,
              "application/x-executable"},
    Signature{0, "\xcf\xfa\xed\xfe"sv, "application/x-mach-binary"},
    Signature{0, "\xfe\xed\xfa\xcf"sv, "application/x-mach-binary"},
    Signature{0, "\xca\xfe\xba\xbe"sv, "application/x-mach-binary"},
    Signature{0, "\xfe\xed\xfa\xce"sv, "application/x-mach-binary"},
    Signature{0, "\xce\xfa\xed\xfe"sv, "application/x-mach-binary"},
    Signature{0, "\0asm"sv, "application/wasm"},
    Signature{0, "\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"sv, "application/x-ole-storage"},
    Signature{0, "dex\n"sv, "application/vnd.android.dex"},
    Signature{0, "L\0\0\0\x01\x14\x02\0"sv, "application/x-ms-shortcut"},
    Signature{0, "#!"sv, "text/x-shellscript"},
};

}  // namespace

std::string sniff_media_type(std::string_view head) {
  for (const auto& s : kSignatures) {
    if (s.offset == 8 && !head.starts_with("RIFF")) continue;  // WEBP, WAVE: RIFF forms
    if (head.size() >= s.offset + s.bytes.size() &&
        head.substr(s.offset, s.bytes.size()) == s.bytes)
      return std::string(s.type);
  }
  return "";
}

}  // namespace kiln::assets
