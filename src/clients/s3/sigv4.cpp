#include "clients/s3/sigv4.hpp"

#include "platform/codec.hpp"

#include <algorithm>
#include <ctime>

namespace kiln::s3 {

std::string uri_encode(std::string_view s, bool keep_slash) {
  static constexpr char kDigits[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
        (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kDigits[c >> 4]);
      out.push_back(kDigits[c & 15]);
    }
  }
  return out;
}

std::string percent_decode(std::string_view s) {
  auto val = [](char h) -> int {
    if (h >= '0' && h <= '9') return h - '0';
    if (h >= 'a' && h <= 'f') return h - 'a' + 10;
    if (h >= 'A' && h <= 'F') return h - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && val(s[i + 1]) >= 0 && val(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(val(s[i + 1]) * 16 + val(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::string canonical_uri(std::string_view path, const Options& o) {
  if (path.empty()) return "/";
  // Segments, decoded; for non-S3 services, dot segments resolved and empty ones dropped.
  std::vector<std::string> segs;
  std::size_t pos = path.front() == '/' ? 1 : 0;
  while (pos <= path.size()) {
    auto slash = path.find('/', pos);
    auto seg =
        path.substr(pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos);
    if (o.normalize_path) {
      if (seg == "..") {
        if (!segs.empty()) segs.pop_back();
      } else if (!seg.empty() && seg != ".") {
        segs.push_back(percent_decode(seg));
      }
    } else {
      segs.push_back(percent_decode(seg));
    }
    if (slash == std::string_view::npos) break;
    pos = slash + 1;
  }
  const bool trailing = path.size() > 1 && path.back() == '/';
  std::string out;
  for (const auto& s : segs) {
    if (o.normalize_path && s.empty()) continue;
    out += '/';
    out += o.double_encode ? uri_encode(uri_encode(s)) : uri_encode(s);
  }
  if (o.normalize_path) {
    if (out.empty() || (trailing && !segs.empty())) out += '/';
  } else if (out.empty()) {
    out = "/";
  }
  return out;
}

std::string canonical_query(std::string_view query) {
  std::vector<std::pair<std::string, std::string>> params;
  std::size_t pos = 0;
  while (pos < query.size()) {
    auto amp = query.find('&', pos);
    auto pair =
        query.substr(pos, amp == std::string_view::npos ? std::string_view::npos : amp - pos);
    if (!pair.empty()) {
      auto eq = pair.find('=');
      auto k = pair.substr(0, eq);
      auto v = eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
      params.emplace_back(uri_encode(percent_decode(k)), uri_encode(percent_decode(v)));
    }
    if (amp == std::string_view::npos) break;
    pos = amp + 1;
  }
  std::sort(params.begin(), params.end());
  std::string out;
  for (const auto& [k, v] : params) {
    if (!out.empty()) out += '&';
    out += k + "=" + v;
  }
  return out;
}

namespace {

// Trimmed, with runs of spaces collapsed to one.
std::string clean_value(std::string_view v) {
  std::string out;
  bool space = false;
  for (char c : v) {
    if (c == ' ' || c == '\t') {
      space = !out.empty();
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

}  // namespace

std::pair<std::string, std::string> canonical_headers(
    const std::vector<std::pair<std::string, std::string>>& headers,
    const std::vector<std::string>& only) {
  std::vector<std::pair<std::string, std::string>> merged;  // name -> joined values
  for (const auto& [name, value] : headers) {
    auto n = codec::ascii_lower(name);
    if (!only.empty() && std::find(only.begin(), only.end(), n) == only.end()) continue;
    auto it =
        std::find_if(merged.begin(), merged.end(), [&](const auto& p) { return p.first == n; });
    if (it == merged.end()) {
      merged.emplace_back(std::move(n), clean_value(value));
    } else {
      it->second += "," + clean_value(value);
    }
  }
  std::stable_sort(merged.begin(), merged.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::string lines, names;
  for (const auto& [n, v] : merged) {
    lines += n + ":" + v + "\n";
    names += (names.empty() ? "" : ";") + n;
  }
  return {lines, names};
}

std::string canonical_request(const Request& r, const Options& o,
                              const std::vector<std::string>& signed_headers) {
  auto [lines, names] = canonical_headers(r.headers, signed_headers);
  return r.method + "\n" + canonical_uri(r.path, o) + "\n" + canonical_query(r.query) + "\n" +
         lines + "\n" + names + "\n" + r.payload_hash;
}

std::string string_to_sign(std::string_view amz_date, const Scope& scope,
                           std::string_view canonical) {
  return std::string(kAlgorithm) + "\n" + std::string(amz_date) + "\n" + scope.str() + "\n" +
         codec::sha256_hex(canonical);
}

std::string signing_key(std::string_view secret, const Scope& scope) {
  auto k = codec::hmac_sha256("AWS4" + std::string(secret), scope.date);
  k = codec::hmac_sha256(k, scope.region);
  k = codec::hmac_sha256(k, scope.service);
  return codec::hmac_sha256(k, "aws4_request");
}

std::string signature(std::string_view secret, const Scope& scope, std::string_view amz_date,
                      std::string_view canonical) {
  return codec::hex(
      codec::hmac_sha256(signing_key(secret, scope), string_to_sign(amz_date, scope, canonical)));
}

std::string authorization(const Credentials& c, const Scope& scope, std::string_view amz_date,
                          const Request& r, const Options& o) {
  const auto creq = canonical_request(r, o);
  const auto names = canonical_headers(r.headers).second;
  return std::string(kAlgorithm) + " Credential=" + c.access_key + "/" + scope.str() +
         ", SignedHeaders=" + names +
         ", Signature=" + signature(c.secret_key, scope, amz_date, creq);
}

std::string presign_query(const Credentials& c, const Scope& scope, std::string_view amz_date,
                          std::int64_t expires_s, Request r, const Options& o) {
  std::string q = r.query;
  auto add = [&](std::string_view k, std::string_view v) {
    if (!q.empty()) q += '&';
    q += std::string(k) + "=" + uri_encode(v);
  };
  add("X-Amz-Algorithm", kAlgorithm);
  add("X-Amz-Credential", c.access_key + "/" + scope.str());
  add("X-Amz-Date", amz_date);
  add("X-Amz-Expires", std::to_string(expires_s));
  if (!c.session_token.empty()) add("X-Amz-Security-Token", c.session_token);
  const auto names = canonical_headers(r.headers).second;  // every header r carries
  add("X-Amz-SignedHeaders", names);
  r.query = q;
  r.payload_hash = std::string(kUnsignedPayload);
  const auto creq = canonical_request(r, o);
  return q + "&X-Amz-Signature=" + signature(c.secret_key, scope, amz_date, creq);
}

std::string amz_date(std::int64_t unix_s) {
  const std::time_t t = unix_s;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[20];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

}  // namespace kiln::s3
