#include "assets/pipeline/texture.hpp"

#include <png.h>
#include <turbojpeg.h>
#include <webp/decode.h>
#include <webp/encode.h>

#include <algorithm>
#include <memory>
#include <string>

namespace kiln::assets::pipeline {
namespace {

struct Pixels {
  std::uint32_t width = 0, height = 0;
  std::vector<std::uint8_t> rgba;  // 8 bits per channel, rows top to bottom
};

Error bad(const Image& img, const std::string& why) {
  return Error{Errc::malformed, "texture " +
                                    (img.name.empty() ? std::string("(unnamed)") : img.name) +
                                    " does not decode: " + valid_utf8(why)};
}

Result<Pixels> decode_png(const Image& img) {
  png_image p{};
  p.version = PNG_IMAGE_VERSION;
  if (png_image_begin_read_from_memory(&p, img.data.data(), img.data.size()) == 0)
    return bad(img, p.message);
  p.format = PNG_FORMAT_RGBA;
  Pixels out{p.width, p.height, {}};
  if (p.width != img.width || p.height != img.height) {
    png_image_free(&p);
    return bad(img, "its pixels are not the size its header claims");
  }
  out.rgba.resize(PNG_IMAGE_SIZE(p));
  if (png_image_finish_read(&p, nullptr, out.rgba.data(), 0, nullptr) == 0) {
    const std::string why = p.message;
    png_image_free(&p);
    return bad(img, why);
  }
  return out;
}

Result<Pixels> decode_jpeg(const Image& img) {
  std::unique_ptr<void, int (*)(tjhandle)> h(tjInitDecompress(), tjDestroy);
  if (!h) return Error{Errc::internal, "TurboJPEG did not start"};
  int w = 0, ht = 0, subsampling = 0, colorspace = 0;
  auto* data = const_cast<unsigned char*>(img.data.data());
  const auto size = static_cast<unsigned long>(img.data.size());
  if (tjDecompressHeader3(h.get(), data, size, &w, &ht, &subsampling, &colorspace) != 0)
    return bad(img, tjGetErrorStr2(h.get()));
  if (static_cast<std::uint32_t>(w) != img.width || static_cast<std::uint32_t>(ht) != img.height)
    return bad(img, "its pixels are not the size its header claims");
  Pixels out{img.width, img.height, {}};
  out.rgba.resize(std::size_t{img.width} * img.height * 4);
  // A warning is a fault too: a truncated or corrupt scan decodes to grey rows.
  if (tjDecompress2(h.get(), data, size, out.rgba.data(), w, 0, ht, TJPF_RGBA,
                    TJFLAG_STOPONWARNING) != 0)
    return bad(img, tjGetErrorStr2(h.get()));
  return out;
}

Result<Pixels> decode_webp(const Image& img) {
  int w = 0, h = 0;
  if (WebPGetInfo(img.data.data(), img.data.size(), &w, &h) == 0)
    return bad(img, "not a WebP bitstream");
  if (static_cast<std::uint32_t>(w) != img.width || static_cast<std::uint32_t>(h) != img.height)
    return bad(img, "its pixels are not the size its header claims");
  Pixels out{img.width, img.height, {}};
  out.rgba.resize(std::size_t{img.width} * img.height * 4);
  if (WebPDecodeRGBAInto(img.data.data(), img.data.size(), out.rgba.data(), out.rgba.size(),
                         w * 4) == nullptr)
    return bad(img, "the WebP bitstream is broken");
  return out;
}

struct Picture {
  WebPPicture p;
  Picture() { WebPPictureInit(&p); }
  ~Picture() { WebPPictureFree(&p); }
  Picture(const Picture&) = delete;
  Picture& operator=(const Picture&) = delete;
};

// The side lengths scaled so that the larger is at most `side`, aspect kept, at least 1.
std::pair<int, int> fit(std::uint32_t w, std::uint32_t h, std::uint32_t side) {
  if (std::max(w, h) <= side) return {static_cast<int>(w), static_cast<int>(h)};
  const double s = static_cast<double>(side) / std::max(w, h);
  return {std::max(1, static_cast<int>(w * s + 0.5)), std::max(1, static_cast<int>(h * s + 0.5))};
}

}  // namespace

Result<std::vector<TextureLevel>> texture_levels(const Image& image,
                                                 const TextureOptions& options) {
  Result<Pixels> px = Error{Errc::unsupported, ""};
  if (image.mime_type == "image/png")
    px = decode_png(image);
  else if (image.mime_type == "image/jpeg")
    px = decode_jpeg(image);
  else if (image.mime_type == "image/webp")
    px = decode_webp(image);
  else
    return Error{Errc::unsupported,
                 "texture " + image.name + " is " + image.mime_type + ", not PNG, JPEG or WebP"};
  if (!px) return px.error();

  WebPConfig config;
  if (WebPConfigInit(&config) == 0) return Error{Errc::internal, "libwebp: version mismatch"};
  config.quality = static_cast<float>(std::clamp(options.quality, 0, 100));
  config.method = 4;
  Picture pic;
  pic.p.use_argb = 1;
  pic.p.width = static_cast<int>(px->width);
  pic.p.height = static_cast<int>(px->height);
  if (WebPPictureImportRGBA(&pic.p, px->rgba.data(), static_cast<int>(px->width * 4)) == 0)
    return Error{Errc::internal, "libwebp: out of memory importing the texture"};
  px->rgba = {};  // the picture holds the pixels now

  const auto [w0, h0] = fit(px->width, px->height, std::max<std::uint32_t>(1, options.max_side));
  if (w0 != pic.p.width || h0 != pic.p.height) {
    if (WebPPictureRescale(&pic.p, w0, h0) == 0)
      return Error{Errc::internal, "libwebp: out of memory rescaling the texture"};
  }
  std::vector<TextureLevel> out;
  for (;;) {
    WebPMemoryWriter writer;
    WebPMemoryWriterInit(&writer);
    pic.p.writer = WebPMemoryWrite;
    pic.p.custom_ptr = &writer;
    const int ok = WebPEncode(&config, &pic.p);
    TextureLevel level{static_cast<std::uint32_t>(pic.p.width),
                       static_cast<std::uint32_t>(pic.p.height),
                       "image/webp",
                       {writer.mem, writer.mem + writer.size}};
    WebPMemoryWriterClear(&writer);
    if (ok == 0)
      return Error{Errc::internal, "libwebp could not encode the texture (error " +
                                       std::to_string(static_cast<int>(pic.p.error_code)) + ")"};
    if (out.empty() && level.width == image.width && level.height == image.height &&
        image.data.size() <= level.bytes.size())
      level = {image.width, image.height, image.mime_type, image.data};
    out.push_back(std::move(level));
    const auto larger = static_cast<std::uint32_t>(std::max(pic.p.width, pic.p.height));
    if (larger <= options.min_side || larger == 1) break;
    if (WebPPictureRescale(&pic.p, std::max(1, pic.p.width / 2), std::max(1, pic.p.height / 2)) ==
        0)
      return Error{Errc::internal, "libwebp: out of memory rescaling the texture"};
  }
  return out;
}

}  // namespace kiln::assets::pipeline
