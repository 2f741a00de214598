// The server side of SigV4, for the embedded object store: checks a request signed in its
// Authorization header or presigned in its query, its time (clock skew, expiry) and its
// credential scope, against the secret of the access key it names.
#pragma once

#include "clients/s3/sigv4.hpp"

#include <functional>
#include <optional>
#include <string>
#include <variant>

namespace kiln::s3 {

struct VerifyOptions {
  std::string region = "us-east-1";
  std::string service = "s3";
  std::int64_t max_skew_s = 15 * 60;
  std::int64_t max_expires_s = 7 * 24 * 3600;
};

struct Verified {
  std::string access_key;
  bool presigned = false;
  std::string
      payload_hash;  // what the client declared: hex SHA-256, or UNSIGNED-PAYLOAD/STREAMING-*
};

// An S3 error for a refused request: its code, status and message.
struct Refused {
  int status = 403;
  std::string code;
  std::string message;
};

using SecretLookup = std::function<std::optional<std::string>(const std::string& access_key)>;

// `r.headers` are the request's headers as received; `r.payload_hash` is ignored (the
// declared one is read from the request). Returns Verified, or Refused.
std::variant<Verified, Refused> verify(const Request& r, std::int64_t now_unix,
                                       const SecretLookup& secrets, const VerifyOptions& o);

}  // namespace kiln::s3
