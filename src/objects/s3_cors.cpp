// CORS for the embedded store (S3's bucket CORS configuration: PutBucketCors, GetBucketCors,

#include "platform/codec.hpp"
#include "platform/http.hpp"
// DeleteBucketCors; the Fetch standard's preflight). A bucket with a configuration answers
// browsers by its rules: the first rule whose AllowedOrigin matches the Origin (one '*' may
// stand for any run of characters), whose AllowedMethod has the method, and whose
// AllowedHeader patterns cover every requested header. A bucket without one falls back to
// `objects.cors_origins`.
#include "clients/s3/sigv4.hpp"
#include "clients/s3/xml.hpp"
#include "objects/s3_api.hpp"
#include "objects/s3_body.hpp"
#include "objects/s3_util.hpp"
#include "objects/s3_xml_body.hpp"

#include <algorithm>
#include <charconv>

namespace kiln::objects {
namespace {

namespace x = s3::xml;
using namespace detail;

struct CorsRule {
  std::vector<std::string> origins, methods, headers, expose;
  std::string max_age;  // seconds, as given; "" when absent
};

std::vector<std::string> values(const XmlElement& rule, const char* element) {
  std::vector<std::string> out;
  for (const auto* v : rule.all(element)) out.push_back(v->text);
  return out;
}

// S3's limits: at most 100 rules; methods GET, PUT, POST, DELETE, HEAD; at most one '*' in
// an origin or header pattern. Throws Error 400 MalformedXML / InvalidRequest.
std::vector<CorsRule> parse_rules(const std::string& body) {
  const auto doc = parse_xml_body(body, "CORSConfiguration");
  const auto rules = doc.all("CORSRule");
  if (rules.empty() || rules.size() > 100)
    throw Error(400, "MalformedXML", "A CORSConfiguration holds 1 to 100 CORSRule elements.");
  std::vector<CorsRule> out;
  for (const auto* r : rules) {
    CorsRule rule{values(*r, "AllowedOrigin"),
                  values(*r, "AllowedMethod"),
                  values(*r, "AllowedHeader"),
                  values(*r, "ExposeHeader"),
                  {}};
    if (rule.origins.empty() || rule.methods.empty())
      throw Error(400, "MalformedXML",
                  "Each CORSRule needs an AllowedOrigin and an AllowedMethod.");
    for (const auto& m : rule.methods) {
      if (m != "GET" && m != "PUT" && m != "POST" && m != "DELETE" && m != "HEAD")
        throw Error(400, "InvalidRequest",
                    "Found unsupported HTTP method in CORS config. Unsupported method is " + m);
    }
    for (const auto* list : {&rule.origins, &rule.headers, &rule.expose}) {
      for (const auto& v : *list) {  // they become header values (RFC 9110 section 5.5)
        if (v.empty() || std::any_of(v.begin(), v.end(), [](char c) {
              const auto u = static_cast<unsigned char>(c);
              return u < 0x20 || u == 0x7f;
            }))
          throw Error(400, "InvalidRequest",
                      "CORS origins and headers are non-empty and hold no control characters.");
      }
    }
    for (const auto* list : {&rule.origins, &rule.headers}) {
      if (auto p = http::bad_wildcard_pattern(*list))
        throw Error(400, "InvalidRequest",
                    "AllowedOrigin and AllowedHeader may contain at most one wildcard: " + *p);
    }
    if (const auto* age = r->one("MaxAgeSeconds")) {
      int v = 0;
      const auto& s = age->text;
      if (auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
          ec != std::errc() || end != s.data() + s.size() || v < 0)
        throw Error(400, "MalformedXML", "MaxAgeSeconds must be a non-negative integer.");
      rule.max_age = s;
    }
    out.push_back(std::move(rule));
  }
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

std::vector<std::string> split_headers(const std::string& list) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos <= list.size()) {
    auto comma = list.find(',', pos);
    auto item = list.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (!item.empty()) out.push_back(item);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

const CorsRule* match_rule(const std::vector<CorsRule>& rules, const std::string& origin,
                           const std::string& method, const std::vector<std::string>& headers) {
  for (const auto& rule : rules) {
    if (!http::origin_allowed(origin, rule.origins)) continue;
    if (std::find(rule.methods.begin(), rule.methods.end(), method) == rule.methods.end()) continue;
    const bool headers_ok = std::all_of(headers.begin(), headers.end(), [&](const auto& h) {
      return std::any_of(rule.headers.begin(), rule.headers.end(),
                         [&](const auto& p) { return http::wildcard_match(p, h, true); });
    });
    if (headers_ok) return &rule;
  }
  return nullptr;
}

}  // namespace

std::string S3Api::bucket_of(const S3Request& r) const {
  if (auto vhost = virtual_bucket(r)) return *vhost;
  const auto path = s3::percent_decode(r.path);
  if (path.size() < 2 || path.front() != '/') return {};
  return path.substr(
      1, path.find('/', 1) == std::string::npos ? std::string::npos : path.find('/', 1) - 1);
}

S3Response S3Api::preflight(const S3Request& r, const std::string& path) {
  const auto origin = header(r, "origin");
  const auto method = header(r, "access-control-request-method");
  if (!origin || !method)
    throw Error(400, "BadRequest",
                "Insufficient information. Origin and Access-Control-Request-Method are required "
                "for a CORS preflight.");
  const auto bucket = bucket_of(r);
  std::optional<std::string> config;
  if (!bucket.empty() && store_.bucket_exists(bucket)) config = store_.bucket_cors(bucket);
  S3Response resp;
  if (config) {
    const auto requested = split_headers(header(r, "access-control-request-headers").value_or(""));
    const auto rules = parse_rules(*config);
    const auto* rule = match_rule(rules, *origin, *method, requested);
    if (rule == nullptr)
      return error(403, "AccessForbidden", "CORSResponse: This CORS request is not allowed.", path);
    const bool any =
        std::find(rule->origins.begin(), rule->origins.end(), "*") != rule->origins.end();
    resp.headers.emplace_back("Access-Control-Allow-Origin", any ? "*" : *origin);
    resp.headers.emplace_back("Access-Control-Allow-Methods", join(rule->methods));
    if (!requested.empty())
      resp.headers.emplace_back("Access-Control-Allow-Headers", join(requested));
    if (!rule->expose.empty())
      resp.headers.emplace_back("Access-Control-Expose-Headers", join(rule->expose));
    if (!rule->max_age.empty()) resp.headers.emplace_back("Access-Control-Max-Age", rule->max_age);
    resp.headers.emplace_back(
        "Vary", "Origin, Access-Control-Request-Headers, Access-Control-Request-Method");
    return resp;
  }
  if (!global_cors(*origin, resp))  // objects.cors_origins
    return error(403, "AccessForbidden", "CORSResponse: this origin is not allowed.", path);
  resp.headers.emplace_back("Access-Control-Allow-Methods", "GET, PUT, POST, DELETE, HEAD");
  resp.headers.emplace_back("Access-Control-Allow-Headers",
                            header(r, "access-control-request-headers").value_or("*"));
  resp.headers.emplace_back("Access-Control-Max-Age", "3000");
  return resp;
}

void S3Api::add_cors(const S3Request& r, S3Response& resp) const {
  auto origin = header(r, "origin");
  if (!origin) return;
  if (r.method == "OPTIONS") return;  // a preflight's answer is made whole by preflight()
  {
    const auto bucket = bucket_of(r);
    std::optional<std::string> config;
    try {
      if (!bucket.empty()) config = store_.bucket_cors(bucket);  // none for a missing bucket
    } catch (const std::exception&) {
      return;  // no CORS headers rather than a failed answer
    }
    if (config) {  // the bucket's rules decide, for the request's own method
      std::vector<CorsRule> rules;
      try {
        rules = parse_rules(*config);
      } catch (const Error&) {
        return;
      }
      const auto* rule = match_rule(rules, *origin, r.method, {});
      if (rule == nullptr) return;
      const bool any =
          std::find(rule->origins.begin(), rule->origins.end(), "*") != rule->origins.end();
      resp.headers.emplace_back("Access-Control-Allow-Origin", any ? "*" : *origin);
      resp.headers.emplace_back("Access-Control-Allow-Methods", join(rule->methods));
      if (!rule->expose.empty())
        resp.headers.emplace_back("Access-Control-Expose-Headers", join(rule->expose));
      if (!rule->max_age.empty())
        resp.headers.emplace_back("Access-Control-Max-Age", rule->max_age);
      resp.headers.emplace_back("Vary", "Origin");
      return;
    }
  }
  global_cors(*origin, resp);
}

bool S3Api::global_cors(const std::string& origin, S3Response& resp) const {
  if (!http::origin_allowed(origin, options_.cors_origins)) return false;
  const bool any = std::find(options_.cors_origins.begin(), options_.cors_origins.end(), "*") !=
                   options_.cors_origins.end();
  resp.headers.emplace_back("Access-Control-Allow-Origin", any ? "*" : origin);
  resp.headers.emplace_back("Access-Control-Expose-Headers",
                            "ETag, x-amz-version-id, Content-Length, Content-Range");
  if (!any) resp.headers.emplace_back("Vary", "Origin");
  return true;
}

std::variant<S3Response, std::unique_ptr<BodySink>> S3Api::cors_configuration(
    const S3Request& r, const std::string& bucket) {
  if (!store_.bucket_exists(bucket))
    throw Error(404, "NoSuchBucket", "The specified bucket does not exist.");
  if (r.method == "GET") {
    auto config = store_.bucket_cors(bucket);
    if (!config)
      throw Error(404, "NoSuchCORSConfiguration", "The CORS configuration does not exist");
    return xml(200, *config);
  }
  if (r.method == "DELETE") {
    store_.set_bucket_cors(bucket, std::nullopt);
    S3Response resp;
    resp.status = 204;
    return resp;
  }
  // Content-MD5 (or a checksum) required, as S3 requires it for PutBucketCors.
  return checked_xml_sink(r, 64 * 1024, true, true, [this, bucket](const std::string& body) {
    const auto rules = parse_rules(body);
    // Stored as a canonical document of what was understood (GetBucketCors answers it).
    std::string doc = "<CORSConfiguration" + std::string(kNs) + ">";
    for (const auto& rule : rules) {
      doc += "<CORSRule>";
      for (const auto& [list, name] :
           {std::pair{&rule.headers, "AllowedHeader"}, std::pair{&rule.methods, "AllowedMethod"},
            std::pair{&rule.origins, "AllowedOrigin"}, std::pair{&rule.expose, "ExposeHeader"}}) {
        for (const auto& v : *list)
          doc += "<" + std::string(name) + ">" + x::escape(v) + "</" + name + ">";
      }
      if (!rule.max_age.empty()) doc += "<MaxAgeSeconds>" + rule.max_age + "</MaxAgeSeconds>";
      doc += "</CORSRule>";
    }
    store_.set_bucket_cors(bucket, doc + "</CORSConfiguration>");
    return S3Response{};
  });
}

}  // namespace kiln::objects
