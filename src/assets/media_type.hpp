// What a file is, from its first bytes: the signatures ("magic numbers") of the formats
// artists upload and of the ones that must not pass as assets (executables, scripts).
// Signatures as registered with IANA or published by the format's owner (PNG: RFC 2083;
// glTF binary: Khronos glTF 2.0 §4.4; KTX2: Khronos KTX 2.0 §3.1; RIFF/WAVE, RIFF/WEBP;
// Ogg: RFC 3533; ZIP: PKWARE APPNOTE 4.3.7; PE: Microsoft PE/COFF; ELF: System V ABI).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace kiln::assets {

// How many leading bytes sniff() looks at.
inline constexpr std::size_t kSniffBytes = 64;

// The media type the bytes begin like (e.g. "image/png"), or "" when no known signature
// matches (text formats such as OBJ or glTF JSON, and formats without one).
std::string sniff_media_type(std::string_view head);

}  // namespace kiln::assets
