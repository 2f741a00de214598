// AWS Signature Version 4: canonical requests, signing keys, the Authorization header and
// presigned URLs. Pure functions over strings (OpenSSL for SHA-256 and HMAC); no I/O, no
// clock (the caller passes the time), so the official test suite pins every step.
//
// S3 differs from other services in two ways the options carry: its paths are not
// normalised, and each path segment is URI-encoded once, not twice.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln::s3 {

struct Credentials {
  std::string access_key;
  std::string secret_key;
  std::string session_token;  // temporary credentials; empty when none
};

struct Scope {
  std::string date;  // YYYYMMDD
  std::string region;
  std::string service;
  [[nodiscard]] std::string str() const {
    return date + "/" + region + "/" + service + "/aws4_request";
  }
};

struct Request {
  std::string method;
  std::string path;   // as on the wire (percent-encoded)
  std::string query;  // as on the wire, without '?'
  std::vector<std::pair<std::string, std::string>> headers;
  std::string payload_hash;  // lowercase hex SHA-256 of the body, or "UNSIGNED-PAYLOAD"
};

struct Options {
  bool normalize_path = true;  // false for S3
  bool double_encode = true;   // false for S3
};

inline constexpr std::string_view kUnsignedPayload = "UNSIGNED-PAYLOAD";
inline constexpr std::string_view kAlgorithm = "AWS4-HMAC-SHA256";

// RFC 3986 percent-encoding as SigV4 wants it: A-Z a-z 0-9 - _ . ~ kept, everything else
// %XX (uppercase); '/' kept when `keep_slash`.
std::string uri_encode(std::string_view s, bool keep_slash = false);
std::string percent_decode(std::string_view s);

std::string canonical_uri(std::string_view path, const Options& o);
std::string canonical_query(std::string_view query);
// "name:value\n" lines (lowercase names, trimmed and space-collapsed values, duplicates
// joined by ','), sorted; and the ';'-joined names. Only headers named in `only` (lowercase)
// when it is not empty.
std::pair<std::string, std::string> canonical_headers(
    const std::vector<std::pair<std::string, std::string>>& headers,
    const std::vector<std::string>& only = {});
std::string canonical_request(const Request& r, const Options& o,
                              const std::vector<std::string>& signed_headers = {});
std::string string_to_sign(std::string_view amz_date, const Scope& scope,
                           std::string_view canonical);
std::string signing_key(std::string_view secret, const Scope& scope);  // raw bytes
std::string signature(std::string_view secret, const Scope& scope, std::string_view amz_date,
                      std::string_view canonical);

// The Authorization header value for `r` (which must carry X-Amz-Date or Date, Host, and
// for S3 X-Amz-Content-Sha256), signing every header it carries.
std::string authorization(const Credentials& c, const Scope& scope, std::string_view amz_date,
                          const Request& r, const Options& o);

// A presigned URL's query (without '?'): `r.query` plus the X-Amz-* parameters and the
// signature; every header `r` carries is signed (at least `host`; add e.g.
// x-amz-checksum-sha256 to make the store check the body) and the payload is UNSIGNED-PAYLOAD.
// `expires_s` is at most 604800 (7 days).
std::string presign_query(const Credentials& c, const Scope& scope, std::string_view amz_date,
                          std::int64_t expires_s, Request r, const Options& o);

// "20150830T123600Z" for a Unix time.
std::string amz_date(std::int64_t unix_s);

}  // namespace kiln::s3
