#include "clients/s3/verify.hpp"

#include "platform/codec.hpp"

#include <openssl/crypto.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <variant>

namespace kiln::s3 {
namespace {

std::optional<std::string> header(const Request& r, std::string_view name) {
  for (const auto& [k, v] : r.headers) {
    if (codec::ascii_lower(k) == name) return v;
  }
  return std::nullopt;
}

// "20130524T000000Z" -> Unix seconds; nullopt when malformed.
std::optional<std::int64_t> parse_amz_date(std::string_view s) {
  if (s.size() != 16 || s[8] != 'T' || s[15] != 'Z') return std::nullopt;
  std::tm tm{};
  auto num = [&](std::size_t pos, std::size_t len, int& out) {
    out = 0;
    for (std::size_t i = pos; i < pos + len; ++i) {
      if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
      out = out * 10 + (s[i] - '0');
    }
    return true;
  };
  int y, mo, d, h, mi, se;
  if (!num(0, 4, y) || !num(4, 2, mo) || !num(6, 2, d) || !num(9, 2, h) || !num(11, 2, mi) ||
      !num(13, 2, se))
    return std::nullopt;
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = se;
  return static_cast<std::int64_t>(timegm(&tm));
}

bool same(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

struct Parts {
  std::string access_key, date, region, service;
  std::vector<std::string> signed_headers;
  std::string signature;
};

std::optional<Parts> parse_credential(std::string_view cred, Parts& p) {
  // AKID/20130524/us-east-1/s3/aws4_request
  std::vector<std::string> f;
  std::size_t pos = 0;
  while (pos <= cred.size()) {
    auto slash = cred.find('/', pos);
    f.emplace_back(
        cred.substr(pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos));
    if (slash == std::string_view::npos) break;
    pos = slash + 1;
  }
  if (f.size() != 5 || f[4] != "aws4_request" || f[0].empty()) return std::nullopt;
  p.access_key = f[0];
  p.date = f[1];
  p.region = f[2];
  p.service = f[3];
  return p;
}

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos <= s.size()) {
    auto at = s.find(sep, pos);
    out.emplace_back(
        s.substr(pos, at == std::string_view::npos ? std::string_view::npos : at - pos));
    if (at == std::string_view::npos) break;
    pos = at + 1;
  }
  return out;
}

Refused refuse(int status, std::string code, std::string message) {
  return Refused{status, std::move(code), std::move(message)};
}

}  // namespace

std::variant<Verified, Refused> verify(const Request& req, std::int64_t now,
                                       const SecretLookup& secrets, const VerifyOptions& o) {
  Request r = req;
  Parts p;
  std::string amz_date;
  Verified out;
  const auto auth = header(r, "authorization");
  if (auth) {
    // AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...
    if (!auth->starts_with(std::string(kAlgorithm) + " "))
      return refuse(400, "AuthorizationHeaderMalformed", "Only AWS4-HMAC-SHA256 is supported.");
    for (auto field : split(std::string_view(*auth).substr(kAlgorithm.size() + 1), ',')) {
      while (!field.empty() && field.front() == ' ') field.erase(0, 1);
      auto eq = field.find('=');
      if (eq == std::string::npos) continue;
      const auto k = field.substr(0, eq), v = field.substr(eq + 1);
      if (k == "Credential") {
        if (!parse_credential(v, p))
          return refuse(400, "AuthorizationHeaderMalformed", "The Credential is malformed.");
      } else if (k == "SignedHeaders") {
        p.signed_headers = split(v, ';');
      } else if (k == "Signature") {
        p.signature = v;
      }
    }
    if (p.access_key.empty() || p.signed_headers.empty() || p.signature.empty())
      return refuse(400, "AuthorizationHeaderMalformed",
                    "Credential, SignedHeaders and Signature are required.");
    amz_date = header(r, "x-amz-date").value_or("");
    auto declared = header(r, "x-amz-content-sha256");
    if (!declared)
      return refuse(400, "InvalidRequest",
                    "Missing required header for this request: x-amz-content-sha256.");
    out.payload_hash = *declared;
    r.payload_hash = *declared;
  } else {
    // Presigned: every X-Amz-* parameter, the signature last.
    std::vector<std::string> kept;
    std::string expires;
    std::string algorithm;
    for (const auto& pair : split(r.query, '&')) {
      auto eq = pair.find('=');
      const auto k = pair.substr(0, eq);
      const auto v = eq == std::string::npos ? std::string() : percent_decode(pair.substr(eq + 1));
      if (k == "X-Amz-Signature") {
        p.signature = v;
        continue;  // not part of what was signed
      }
      if (k == "X-Amz-Algorithm") algorithm = v;
      if (k == "X-Amz-Credential" && !parse_credential(v, p))
        return refuse(400, "AuthorizationQueryParametersError", "X-Amz-Credential is malformed.");
      if (k == "X-Amz-SignedHeaders") p.signed_headers = split(v, ';');
      if (k == "X-Amz-Date") amz_date = v;
      if (k == "X-Amz-Expires") expires = v;
      if (!pair.empty()) kept.push_back(pair);
    }
    if (p.signature.empty() && algorithm.empty())
      return refuse(403, "AccessDenied",
                    "The request is not signed (no Authorization header, no presigned query).");
    if (algorithm != kAlgorithm || p.access_key.empty() || p.signature.empty() ||
        p.signed_headers.empty() || expires.empty())
      return refuse(
          400, "AuthorizationQueryParametersError",
          "X-Amz-Algorithm, X-Amz-Credential, X-Amz-Date, X-Amz-Expires, X-Amz-SignedHeaders and "
          "X-Amz-Signature are required.");
    char* end = nullptr;
    const long long exp = std::strtoll(expires.c_str(), &end, 10);
    if (expires.empty() || *end != '\0' || exp > o.max_expires_s)
      return refuse(400, "AuthorizationQueryParametersError",
                    "X-Amz-Expires must be from 1 to 604800 seconds.");
    // A lifetime of zero or less was over when it was signed (as S3 answers it).
    if (exp < 1) return refuse(403, "AccessDenied", "Request has expired.");
    const auto signed_at = parse_amz_date(amz_date);
    if (!signed_at)
      return refuse(400, "AuthorizationQueryParametersError", "X-Amz-Date is malformed.");
    if (now > *signed_at + exp) return refuse(403, "AccessDenied", "Request has expired.");
    r.query.clear();
    for (const auto& k : kept) r.query += (r.query.empty() ? "" : "&") + k;
    out.presigned = true;
    out.payload_hash = std::string(kUnsignedPayload);
    r.payload_hash = header(r, "x-amz-content-sha256").value_or(std::string(kUnsignedPayload));
    out.payload_hash = r.payload_hash;
  }
  const auto signed_at = parse_amz_date(amz_date);
  if (!signed_at) return refuse(403, "AccessDenied", "X-Amz-Date is missing or malformed.");
  if (*signed_at > now + o.max_skew_s || (!out.presigned && *signed_at < now - o.max_skew_s)) {
    return refuse(403, "RequestTimeTooSkewed",
                  "The difference between the request time and the server's time is too large.");
  }
  if (p.date != amz_date.substr(0, 8))
    return refuse(403, "SignatureDoesNotMatch", "The credential's date is not the request's date.");
  if (p.service != o.service || p.region != o.region) {
    return refuse(400, "AuthorizationHeaderMalformed",
                  "The authorization scope is wrong: expecting region '" + o.region +
                      "' and service '" + o.service + "'.");
  }
  if (std::find(p.signed_headers.begin(), p.signed_headers.end(), "host") == p.signed_headers.end())
    return refuse(403, "AccessDenied", "The host header must be signed.");
  // As S3: every x-amz-* header the request carries is one the signer signed (an unsigned
  // x-amz-meta-*, -acl or -checksum would otherwise ride on someone else's URL).
  for (const auto& [name, value] : r.headers) {
    const std::string lower = codec::ascii_lower(name);
    if (lower.rfind("x-amz-", 0) == 0 && std::find(p.signed_headers.begin(), p.signed_headers.end(),
                                                   lower) == p.signed_headers.end())
      return refuse(
          403, "AccessDenied",
          "There were headers present in the request which were not signed: " + lower + ".");
  }
  auto secret = secrets(p.access_key);
  if (!secret)
    return refuse(403, "InvalidAccessKeyId",
                  "The AWS access key Id you provided does not exist in our records.");
  const Scope scope{p.date, p.region, p.service};
  const auto creq = canonical_request(r, Options{false, false}, p.signed_headers);
  const auto expected = signature(*secret, scope, amz_date, creq);
  if (!same(expected, p.signature)) {
    return refuse(403, "SignatureDoesNotMatch",
                  "The request signature we calculated does not match the signature you provided.");
  }
  out.access_key = p.access_key;
  return out;
}

}  // namespace kiln::s3
