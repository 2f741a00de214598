#include "objects/s3_util.hpp"

#include "clients/s3/sigv4.hpp"
#include "platform/codec.hpp"

#include <algorithm>
#include <cctype>
#include <ctime>
#include <iterator>

namespace kiln::objects::detail {

std::optional<std::string> header(const S3Request& r, std::string_view name) {
  for (const auto& [k, v] : r.headers) {
    if (codec::ascii_lower(k) == name) return v;
  }
  return std::nullopt;
}

WriteCondition write_condition(const S3Request& r) {
  WriteCondition c;
  if (auto v = header(r, "if-none-match")) {
    if (v->find_first_not_of(" \t") == std::string::npos ||
        v->substr(v->find_first_not_of(" \t"), 1) != "*")
      throw Error(501, "NotImplemented",
                  "A header you provided implies functionality that is not implemented "
                  "(If-None-Match on a write supports only *).");
    c.if_none_match_any = true;
  }
  if (auto v = header(r, "if-match")) c.if_match = *v;
  return c;
}

std::map<std::string, std::string> query_map(std::string_view q) {
  std::map<std::string, std::string> out;
  std::size_t pos = 0;
  while (pos <= q.size() && !q.empty()) {
    auto amp = q.find('&', pos);
    auto pair = q.substr(pos, amp == std::string_view::npos ? std::string_view::npos : amp - pos);
    auto eq = pair.find('=');
    out[s3::percent_decode(pair.substr(0, eq))] =
        eq == std::string_view::npos ? "" : s3::percent_decode(pair.substr(eq + 1));
    if (amp == std::string_view::npos) break;
    pos = amp + 1;
  }
  return out;
}

namespace {

// Milliseconds since 1970 in UTC, formatted by strftime.
std::string utc(std::int64_t ms, const char* format) {
  const std::time_t t = ms / 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, format, &tm);
  return buf;
}

}  // namespace

std::string iso8601(std::int64_t ms) {
  return utc(ms, "%Y-%m-%dT%H:%M:%S") + "." + std::to_string(1000 + ms % 1000).substr(1) + "Z";
}

std::string http_date(std::int64_t ms) {
  return utc(ms, "%a, %d %b %Y %H:%M:%S GMT");
}

std::optional<std::int64_t> parse_http_date(const std::string& v) {
  std::tm tm{};
  const char* end = strptime(v.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (end == nullptr || *end != '\0') return std::nullopt;
  return static_cast<std::int64_t>(timegm(&tm));
}

bool etag_listed(const std::string& list, const std::string& etag) {
  std::string_view rest = list;
  const auto bare = [](std::string_view e) {
    while (!e.empty() && (e.front() == ' ' || e.front() == '\t')) e.remove_prefix(1);
    while (!e.empty() && (e.back() == ' ' || e.back() == '\t')) e.remove_suffix(1);
    if (e.starts_with("W/")) e.remove_prefix(2);
    if (e.size() >= 2 && e.front() == '"' && e.back() == '"') e = e.substr(1, e.size() - 2);
    return e;
  };
  const auto mine = bare(etag);
  while (true) {
    const auto comma = rest.find(',');
    const auto e = bare(rest.substr(0, comma));
    if (e == "*" || (!e.empty() && e == mine)) return true;
    if (comma == std::string_view::npos) return false;
    rest.remove_prefix(comma + 1);
  }
}

S3Response xml(int status, std::string body) {
  S3Response r;
  r.status = status;
  r.headers.emplace_back("Content-Type", "application/xml");
  r.body = std::string(kXmlHead) + std::move(body);
  return r;
}

std::map<std::string, std::string> user_metadata(const S3Request& r) {
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : r.headers) {
    auto n = codec::ascii_lower(k);
    if (n.starts_with("x-amz-meta-")) {
      out[n.substr(11)] = v;
    } else if (std::find(std::begin(kStoredHeaders), std::end(kStoredHeaders), n) !=
               std::end(kStoredHeaders)) {
      auto value = v;
      if (n == "content-encoding") {  // aws-chunked is the request's framing, not the object's
        std::string kept;
        for (std::size_t pos = 0; pos <= value.size();) {
          auto comma = value.find(',', pos);
          auto coding =
              value.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
          coding.erase(0, coding.find_first_not_of(" \t"));
          coding.erase(coding.find_last_not_of(" \t") + 1);
          if (!coding.empty() && codec::ascii_lower(coding) != "aws-chunked")
            kept += (kept.empty() ? "" : ", ") + coding;
          if (comma == std::string::npos) break;
          pos = comma + 1;
        }
        value = kept;
      }
      if (!value.empty()) out[":" + n] = value;  // header names hold no ':': no x-amz-meta- clash
    }
  }
  std::size_t user_bytes = 0;  // S3: at most 2 KB of user-defined metadata
  for (const auto& [k, v] : out) user_bytes += k.starts_with(':') ? 0 : k.size() + v.size();
  if (user_bytes > 2048)
    throw Error(400, "MetadataTooLarge",
                "Your metadata headers exceed the maximum allowed metadata size (2 KB).");
  return out;
}

void object_headers(const ObjectInfo& o, S3Response& r) {
  r.headers.emplace_back("ETag", o.etag);
  r.headers.emplace_back("Last-Modified", http_date(o.last_modified_ms));
  r.headers.emplace_back("Content-Type", o.content_type);
  r.headers.emplace_back("Accept-Ranges", "bytes");
  for (const auto& [k, v] : o.metadata) {
    if (k.starts_with(":x-amz-checksum-"))
      continue;  // sent only when asked for (x-amz-checksum-mode: ENABLED), by the caller
    if (k.starts_with(':'))
      r.headers.emplace_back(k.substr(1), v);
    else
      r.headers.emplace_back("x-amz-meta-" + k, v);
  }
}

// ListObjects (version 1) from a page of the store's listing: Marker echoed, NextMarker

Precondition evaluate_preconditions(const S3Request& r, std::string_view prefix,
                                    const ObjectInfo& o) {
  const auto h = [&](const char* name) { return header(r, std::string(prefix) + name); };
  const auto modified_s = o.last_modified_ms / 1000;
  const auto im = h("if-match"), inm = h("if-none-match");
  const auto ius = h("if-unmodified-since"), ims = h("if-modified-since");
  if (im && !etag_listed(*im, o.etag)) return Precondition::Failed;
  if (!im && ius) {
    if (auto t = parse_http_date(*ius); t && modified_s > *t) return Precondition::Failed;
  }
  if (inm && etag_listed(*inm, o.etag)) return Precondition::NotModified;
  if (!inm && ims) {
    if (auto t = parse_http_date(*ims); t && modified_s <= *t) return Precondition::NotModified;
  }
  return Precondition::Holds;
}

}  // namespace kiln::objects::detail
