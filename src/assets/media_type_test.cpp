// Each signature against the start of a real file of its kind, and the look-alikes that
// must not match.
#include "assets/media_type.hpp"

#include <gtest/gtest.h>

namespace kiln::assets {
namespace {

using namespace std::string_literals;

TEST(SniffMediaType, KnownFormatsByTheirFirstBytes) {
  EXPECT_EQ(sniff_media_type("\x89PNG\r\n\x1a\n\0\0\0\rIHDR"s), "image/png");
  EXPECT_EQ(sniff_media_type("\xff\xd8\xff\xe0\0\x10JFIF"s), "image/jpeg");
  EXPECT_EQ(sniff_media_type("glTF\x02\0\0\0"s), "model/gltf-binary");
  EXPECT_EQ(sniff_media_type("\xabKTX 20\xbb\r\n\x1a\n"s), "image/ktx2");
  EXPECT_EQ(sniff_media_type("RIFF\x24\x08\0\0WAVEfmt "s), "audio/wav");
  EXPECT_EQ(sniff_media_type("RIFF\x24\x08\0\0WEBPVP8 "s), "image/webp");
  EXPECT_EQ(sniff_media_type("OggS\0\x02"s), "audio/ogg");
  EXPECT_EQ(sniff_media_type("PK\x03\x04\x14\0"s), "application/zip");
  EXPECT_EQ(sniff_media_type("\0\0\0\x18"
                             "ftypmp42"s),
            "video/mp4");
}

TEST(SniffMediaType, ExecutablesAndScriptsAreNamed) {
  EXPECT_EQ(sniff_media_type("MZ\x90\0\x03\0"s), "application/vnd.microsoft.portable-executable");
  EXPECT_EQ(sniff_media_type("\x7f"
                             "ELF\x02\x01\x01"s),
            "application/x-executable");
  EXPECT_EQ(sniff_media_type("#!/bin/sh\nrm -rf /\n"), "text/x-shellscript");
  EXPECT_EQ(sniff_media_type("\xfe\xed\xfa\xce\0\0\0\x07"s), "application/x-mach-binary");
  EXPECT_EQ(sniff_media_type("\xce\xfa\xed\xfe\x07\0\0\0"s), "application/x-mach-binary");
  EXPECT_EQ(sniff_media_type("\0asm\x01\0\0\0"s), "application/wasm");
  EXPECT_EQ(sniff_media_type("\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"s), "application/x-ole-storage");
}

TEST(SniffMediaType, UnknownShortAndLookAlikeInputsAreUnknown) {
  EXPECT_EQ(sniff_media_type(""), "");
  EXPECT_EQ(sniff_media_type("\x89PN"), "") << "a truncated signature";
  EXPECT_EQ(sniff_media_type("v 0 0 0\nf 1 2 3\n"), "") << "OBJ is text";
  EXPECT_EQ(sniff_media_type("{\"asset\":{\"version\":\"2.0\"}}"), "") << "glTF JSON is text";
  EXPECT_EQ(sniff_media_type("XXXX\0\0\0\0WAVE"s), "") << "WAVE only inside RIFF";
  EXPECT_EQ(sniff_media_type("Kaydara FBX Binary  \0"s), "");
}

}  // namespace
}  // namespace kiln::assets
