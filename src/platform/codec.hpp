// Byte codecs and digests every context uses: one copy of each (issue #16).
//
// - hex: lowercase, two digits per byte.
// - base64 (RFC 4648 section 4, padded) and base64url (section 5, unpadded, as JWTs and
//   Kiln's page cursors use it). Decoders are strict: a character outside the alphabet,
//   misplaced or missing padding, or a length no encoder produces is refused (nullopt).
// - ascii_lower / iequals: ASCII case folding only (HTTP field names, media types, S3 names);
//   bytes >= 0x80 are left alone.
// - Sha256: streaming SHA-256 (FIPS 180-4) over OpenSSL's EVP interface.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace kiln::codec {

[[nodiscard]] std::string hex(std::string_view bytes);
// Either case; nullopt for an odd length or a non-hex digit.
[[nodiscard]] std::optional<std::string> hex_decode(std::string_view text);

[[nodiscard]] std::string base64(std::string_view bytes);
[[nodiscard]] std::optional<std::string> base64_decode(std::string_view text);
[[nodiscard]] std::string base64url(std::string_view bytes);
[[nodiscard]] std::optional<std::string> base64url_decode(std::string_view text);

[[nodiscard]] std::string ascii_lower(std::string_view s);
[[nodiscard]] bool iequals(std::string_view a, std::string_view b);

class Sha256 {
 public:
  using Digest = std::array<std::uint8_t, 32>;
  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(std::string_view bytes);
  void update(const void* data, std::size_t size);
  // The digest of everything updated so far; the object is spent afterwards.
  [[nodiscard]] Digest finish();
  [[nodiscard]] std::string finish_raw();  // 32 bytes
  [[nodiscard]] std::string finish_hex();  // 64 lowercase hex digits

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

// HMAC-SHA-256 (RFC 2104 over FIPS 180-4): the raw 32-byte MAC of `data` under `key`.
[[nodiscard]] std::string hmac_sha256(std::string_view key, std::string_view data);

// One-shot forms.
[[nodiscard]] std::string sha256_raw(std::string_view bytes);
[[nodiscard]] std::string sha256_hex(std::string_view bytes);

}  // namespace kiln::codec
