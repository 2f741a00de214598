// Texture levels: decoding PNG, JPEG and WebP, halving down to the floor from a ceiling,
// the source kept at level 0 when it is the smaller file, and what does not decode refused
// with its reason.
#include "assets/pipeline/texture.hpp"
#include "assets/pipeline/image_header.hpp"
#include "assets/pipeline/test_inputs.hpp"

#include <gtest/gtest.h>
#include <webp/decode.h>

namespace pl = kiln::assets::pipeline;
using pl::testing::jpeg_of;
using pl::testing::png_of;

namespace {

pl::Image image_of(std::vector<std::uint8_t> bytes) {
  const auto h = pl::read_image_header(bytes);
  EXPECT_TRUE(h.has_value());
  pl::Image img{"albedo", h ? h->mime_type : "", std::move(bytes), h ? h->width : 0,
                h ? h->height : 0};
  return img;
}

// Each level's bytes decode to the size it claims.
void expect_decodes(const std::vector<pl::TextureLevel>& levels) {
  for (const auto& l : levels) {
    if (l.mime_type != "image/webp") continue;
    int w = 0, h = 0;
    ASSERT_NE(WebPGetInfo(l.bytes.data(), l.bytes.size(), &w, &h), 0);
    EXPECT_EQ(static_cast<std::uint32_t>(w), l.width);
    EXPECT_EQ(static_cast<std::uint32_t>(h), l.height);
  }
}

TEST(TextureLevels, HalveFromTheSourceDownToTheFloor) {
  const auto levels = pl::texture_levels(image_of(png_of(1000, 600)), {});
  ASSERT_TRUE(levels) << levels.error().detail;
  ASSERT_EQ(levels->size(), 3u);
  const std::pair<std::uint32_t, std::uint32_t> want[] = {{1000, 600}, {500, 300}, {250, 150}};
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ((*levels)[i].width, want[i].first);
    EXPECT_EQ((*levels)[i].height, want[i].second);
  }
  EXPECT_EQ((*levels)[1].mime_type, "image/webp");
  EXPECT_LT((*levels)[2].bytes.size(), (*levels)[1].bytes.size());
  expect_decodes(*levels);
}

TEST(TextureLevels, ALargeTextureIsScaledToTheCeiling) {
  pl::TextureOptions o;
  o.max_side = 1024;
  const auto levels = pl::texture_levels(image_of(jpeg_of(3000, 1000)), o);
  ASSERT_TRUE(levels) << levels.error().detail;
  ASSERT_EQ(levels->size(), 3u);
  EXPECT_EQ((*levels)[0].width, 1024u);
  EXPECT_EQ((*levels)[0].height, 341u);
  EXPECT_EQ((*levels)[0].mime_type, "image/webp");
  EXPECT_EQ((*levels)[2].width, 256u);
  expect_decodes(*levels);
}

TEST(TextureLevels, LevelZeroIsNeverLargerThanTheSourceAtItsSize) {
  for (auto bytes : {png_of(64, 64), png_of(300, 200), jpeg_of(300, 200)}) {
    const auto source = bytes.size();
    const auto img = image_of(std::move(bytes));
    const auto levels = pl::texture_levels(img, {});
    ASSERT_TRUE(levels) << levels.error().detail;
    EXPECT_LE(levels->front().bytes.size(), source) << img.mime_type;
    if (levels->front().mime_type != "image/webp") {
      EXPECT_EQ(levels->front().mime_type, img.mime_type);
      EXPECT_EQ(levels->front().bytes, img.data);
    }
  }
}

TEST(TextureLevels, WebPSourcesDecodeToo) {
  const auto first = pl::texture_levels(image_of(png_of(600, 600)), {});
  ASSERT_TRUE(first);
  const auto& webp = (*first)[1];  // 300 x 300, WebP
  ASSERT_EQ(webp.mime_type, "image/webp");
  const auto again = pl::texture_levels(image_of(webp.bytes), {});
  ASSERT_TRUE(again) << again.error().detail;
  EXPECT_EQ(again->size(), 2u);  // 300, then 150
}

TEST(TextureLevels, WhatDoesNotDecodeIsRefusedWithItsReason) {
  // A PNG cut short after its header; its image data replaced by noise.
  auto png = png_of(200, 200);
  auto cut = image_of(png);
  cut.data.resize(60);
  auto noisy = image_of(png);
  for (std::size_t i = 60; i < noisy.data.size(); ++i) noisy.data[i] = static_cast<std::uint8_t>(i);
  // A JPEG whose model claimed another size than its header says; one cut short (TurboJPEG
  // only warns, and would hand back grey rows).
  auto liar = image_of(jpeg_of(64, 64));
  liar.width = 32;
  auto short_jpeg = image_of(jpeg_of(256, 256));
  short_jpeg.data.resize(short_jpeg.data.size() / 3);
  for (const auto* img : {&cut, &noisy, &liar, &short_jpeg}) {
    const auto r = pl::texture_levels(*img, {});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, pl::Errc::malformed);
    EXPECT_NE(r.error().detail.find("albedo"), std::string::npos) << r.error().detail;
  }
  pl::Image gif{"anim", "image/gif", {'G', 'I', 'F', '8', '9', 'a'}, 1, 1};
  const auto r = pl::texture_levels(gif, {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, pl::Errc::unsupported);
}

}  // namespace
