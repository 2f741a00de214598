// The S3 request router: authentication (SigV4 header or presigned), path- and
// virtual-hosted addressing, and the object operations; bucket, multipart, copy, CORS and
// XML-body handlers live in s3_*.cpp. Over 500 lines because of the operations' checks
// (conditional requests, ranges, checksums), each next to the operation it guards.
#include "objects/s3_api.hpp"

#include "clients/s3/sigv4.hpp"
#include "clients/s3/xml.hpp"
#include "objects/s3_body.hpp"
#include "objects/s3_util.hpp"
#include "platform/codec.hpp"
#include "platform/log.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <ctime>
#include <iterator>

namespace kiln::objects {
namespace {

namespace x = s3::xml;
using namespace detail;

// S3's subresources (the query parameters that name another operation on the same path,
// AWS SigV4 "sub-resources" and the S3 API reference).
constexpr std::string_view kSubresources[] = {"accelerate",     "acl",
                                              "analytics",      "attributes",
                                              "cors",           "delete",
                                              "encryption",     "intelligent-tiering",
                                              "inventory",      "legal-hold",
                                              "lifecycle",      "location",
                                              "logging",        "metadataConfiguration",
                                              "metrics",        "notification",
                                              "object-lock",    "ownershipControls",
                                              "partNumber",     "policy",
                                              "policyStatus",   "publicAccessBlock",
                                              "renameObject",   "replication",
                                              "requestPayment", "restore",
                                              "retention",      "select",
                                              "select-type",    "session",
                                              "tagging",        "torrent",
                                              "uploadId",       "uploads",
                                              "versionId",      "versioning",
                                              "versions",       "website"};

// A query parameter that must be a decimal integer from lo to hi: 400 InvalidArgument
// otherwise (never "1.5" read as 1).
int integer_param(const Query& q, const char* name, int lo, int hi, int absent,
                  const std::string& message) {
  auto it = q.find(name);
  if (it == q.end()) return absent;
  int v = 0;
  const auto& s = it->second;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < lo || v > hi)
    throw Error(400, "InvalidArgument", message);
  return v;
}

// SigV4's query parameters (AWS SigV4, presigned URLs): the only x-amz-* names in a query
// that are not hoisted headers.
bool sigv4_parameter(std::string_view name) {
  for (std::string_view p : {"x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-expires",
                             "x-amz-signedheaders", "x-amz-signature", "x-amz-security-token"}) {
    if (codec::ascii_lower(name) == p) return true;
  }
  return false;
}

// The query parameters that are not subresources: they shape the operation the method and
// subresources name (S3 API reference), or come from SDKs (x-id).
constexpr std::string_view kParameters[] = {"list-type",
                                            "prefix",
                                            "delimiter",
                                            "max-keys",
                                            "marker",
                                            "continuation-token",
                                            "start-after",
                                            "fetch-owner",
                                            "encoding-type",
                                            "key-marker",
                                            "version-id-marker",
                                            "upload-id-marker",
                                            "max-uploads",
                                            "max-parts",
                                            "part-number-marker",
                                            "max-buckets",
                                            "bucket-region",
                                            "response-content-type",
                                            "response-content-disposition",
                                            "response-content-language",
                                            "response-content-encoding",
                                            "response-cache-control",
                                            "response-expires",
                                            "x-id"};

// Request headers that ask for something this store does not give (encryption, object
// lock, ACL grants, tags, redirects): refused, never ignored.
bool protection_header(std::string_view lower_name, std::string_view value) {
  if (lower_name == "x-amz-acl") return value != "private" && value != "bucket-owner-full-control";
  if (lower_name == "x-amz-storage-class") return value != "STANDARD";  // one class here
  for (std::string_view p :
       {"x-amz-server-side-encryption", "x-amz-object-lock-", "x-amz-grant-",
        "x-amz-copy-source-server-side-encryption-", "x-amz-tagging",
        "x-amz-website-redirect-location", "x-amz-bucket-object-lock-",
        "x-amz-if-match-last-modified-time", "x-amz-if-match-size", "x-amz-write-offset-bytes",
        "x-amz-if-match-initiated-time", "x-amz-request-payer", "x-amz-bucket-namespace"}) {
    if (lower_name.starts_with(p)) return true;
  }
  return false;
}

// The x-amz-checksum-* headers S3 defines (the algorithms, and the headers that name one).
bool known_checksum_header(std::string_view lower_name) {
  for (std::string_view k :
       {"x-amz-checksum-crc32", "x-amz-checksum-crc32c", "x-amz-checksum-crc64nvme",
        "x-amz-checksum-sha1", "x-amz-checksum-sha256", "x-amz-checksum-algorithm",
        "x-amz-checksum-type", "x-amz-checksum-mode"}) {
    if (lower_name == k) return true;
  }
  return false;
}

}  // namespace

// Why the request asks for something not implemented, or nullopt. `bucket_level`: the path
// names a bucket (or nothing), not an object.
std::optional<std::string> S3Api::not_implemented(const std::string& method, const Query& q,
                                                  bool bucket_level, const S3Request& r) {
  for (const auto& [name, value] : q) {
    if (std::find(std::begin(kSubresources), std::end(kSubresources), name) ==
        std::end(kSubresources)) {
      // An ordinary parameter, a SigV4 one, or a hoisted x-amz-* header; any other name is
      // an operation this store does not know (a new subresource: refused, never run as the
      // plain operation).
      if (std::find(std::begin(kParameters), std::end(kParameters), name) !=
              std::end(kParameters) ||
          codec::ascii_lower(name).starts_with(
              "x-amz-"))  // SigV4's own, or a hoisted header (checked as one)
        continue;
      return "Kiln's object store does not know the query parameter '" + name + "' (for " + method +
             " on " + (bucket_level ? "a bucket" : "an object") + "); nothing was changed.";
    }
    bool ok = false;
    if (name == "uploads") ok = bucket_level ? method == "GET" : method == "POST";
    if (name == "uploadId")
      ok = !bucket_level && (method == "POST" || method == "GET" || method == "DELETE" ||
                             (method == "PUT" && q.count("partNumber") != 0));
    if (name == "partNumber") ok = !bucket_level && method == "PUT" && q.count("uploadId") != 0;
    if (name == "versionId")  // unversioned: "null" is each object's one version
      ok = !bucket_level && (method == "GET" || method == "HEAD" || method == "DELETE");
    if (name == "delete") ok = bucket_level && method == "POST";  // DeleteObjects
    if (name == "versions" || name == "location") ok = bucket_level && method == "GET";
    if (name == "cors")
      ok = bucket_level && (method == "GET" || method == "PUT" || method == "DELETE");
    if (!ok)
      return "Kiln's object store does not implement the '" + name + "' subresource for " + method +
             " on " + (bucket_level ? "a bucket" : "an object") + "; nothing was changed.";
  }
  for (const auto& [name, value] : r.headers) {
    const std::string lower = codec::ascii_lower(name);
    if (protection_header(lower, value))
      return "A header you provided implies functionality that is not implemented (" + lower +
             ": Kiln's object store has one storage class and does not encrypt, lock, tag, "
             "grant, append or delete by date or size); nothing was changed.";
  }
  // Preconditions S3 does not define on writes and deletes (RFC 9110 section 13 would
  // evaluate them): refused rather than ignored.
  const bool changes = method == "PUT" || method == "DELETE" || method == "POST";
  if (changes && !bucket_level) {
    for (const char* h : {"if-modified-since", "if-unmodified-since"}) {
      if (header(r, h))
        return std::string(
                   "A header you provided implies functionality that is not implemented (") +
               h + " on " + method + "; If-Match and If-None-Match: * are); nothing was changed.";
    }
    if (method == "DELETE" && header(r, "if-none-match"))
      return "A header you provided implies functionality that is not implemented "
             "(If-None-Match on DELETE; If-Match is); nothing was changed.";
  }
  return std::nullopt;
}

namespace {

// A Range header against an object of `size` bytes (RFC 9110 section 14): one byte range
// ("bytes=a-b", "bytes=a-", "bytes=-n") is served; an unknown unit, a malformed set or
// several ranges are ignored (the whole object, as S3 answers); a valid range that starts
// past the end (or a zero suffix) is unsatisfiable. Positions past 2^64-1 are clamped.
struct RangeAsked {
  enum class Kind { Whole, Part, Unsatisfiable } kind = Kind::Whole;
  std::uint64_t first = 0, last = 0;
};

RangeAsked parse_range(std::string_view v, std::uint64_t size) {
  using K = RangeAsked::Kind;
  // Range units are case-insensitive (RFC 9110 section 14.1).
  if (v.size() < 6 || codec::ascii_lower(v.substr(0, 6)) != "bytes=" ||
      v.find(',') != std::string_view::npos)
    return {};
  v.remove_prefix(6);
  const auto dash = v.find('-');
  if (dash == std::string_view::npos) return {};
  // Digits only; a value past 2^64-1 is clamped to it.
  auto num = [](std::string_view s, std::uint64_t& out) {
    if (s.empty()) return false;
    out = 0;
    for (char c : s) {
      if (!std::isdigit(static_cast<unsigned char>(c))) return false;
      const auto d = static_cast<std::uint64_t>(c - '0');
      out = out > (UINT64_MAX - d) / 10 ? UINT64_MAX : out * 10 + d;
    }
    return true;
  };
  std::uint64_t a = 0, b = 0;
  if (dash == 0) {  // the last n bytes
    if (!num(v.substr(1), b)) return {};
    if (b == 0 || size == 0) return {K::Unsatisfiable};
    return {K::Part, size - std::min(b, size), size - 1};
  }
  if (!num(v.substr(0, dash), a)) return {};
  if (dash + 1 != v.size()) {
    if (!num(v.substr(dash + 1), b) || b < a) return {};  // "3-2" is no range: ignored
  } else {
    b = UINT64_MAX;
  }
  if (a >= size) return {K::Unsatisfiable};
  return {K::Part, a, std::min(b, size - 1)};
}

}  // namespace

S3Api::S3Api(Store& store, ApiOptions options) : store_(store), options_(std::move(options)) {}

S3Response S3Api::error(int status, const std::string& code, const std::string& message,
                        const std::string& resource) const {
  auto r = xml(status, "<Error><Code>" + x::escape(code) + "</Code><Message>" + x::escape(message) +
                           "</Message><Resource>" + x::escape(resource) + "</Resource></Error>");
  return r;
}

std::optional<std::string> S3Api::virtual_bucket(const S3Request& r) const {
  const auto& domain = options_.virtual_host_domain;
  if (domain.empty()) return std::nullopt;
  auto host = header(r, "host").value_or("");
  if (host.starts_with('[')) return std::nullopt;  // an IPv6 literal
  host = host.substr(0, host.find(':'));
  host = codec::ascii_lower(host);
  if (host.size() <= domain.size() + 1 || !host.ends_with(domain) ||
      host[host.size() - domain.size() - 1] != '.')
    return std::nullopt;
  return host.substr(0, host.size() - domain.size() - 1);
}

std::variant<S3Response, std::unique_ptr<BodySink>> S3Api::begin(const S3Request& r) {
  try {
    return route(r);
  } catch (const Error& e) {
    return error(e.status(), e.code(), e.what(), r.path);
  }
}

std::variant<S3Response, std::unique_ptr<BodySink>> S3Api::route(const S3Request& r) {
  const std::string path = s3::percent_decode(r.path);
  // CORS preflight: answered without authentication (browsers send no credentials).
  if (r.method == "OPTIONS") return preflight(r, path);
  // POST Object (HTML form uploads with a policy document) is not implemented: refused
  // before authentication, since such a request carries its signature in the form.
  if (r.method == "POST" &&
      codec::ascii_lower(header(r, "content-type").value_or("")).starts_with("multipart/form-data"))
    return error(501, "NotImplemented",
                 "POST Object (browser form uploads with a policy) is not implemented; upload "
                 "with a presigned PUT (Kiln's upload API gives one).",
                 path);
  s3::Request sr{r.method, r.path, r.query, r.headers, {}};
  auto checked = s3::verify(
      sr, r.now_unix,
      [this](const std::string& key) -> std::optional<std::string> {
        auto it = options_.credentials.find(key);
        if (it == options_.credentials.end()) return std::nullopt;
        return it->second;
      },
      options_.verify);
  if (auto* refused = std::get_if<s3::Refused>(&checked))
    return error(refused->status, refused->code, refused->message, path);
  const auto& who = std::get<s3::Verified>(checked);

  // Presigned URLs may carry x-amz-* headers as signed query parameters (the SDKs hoist
  // them): from here on they count as the headers they are, so nothing they ask for is
  // ignored (an x-amz-acl=public-read in a URL is refused like the header).
  std::vector<std::pair<std::string, std::string>> extra;
  for (const auto& [name, value] : query_map(r.query)) {
    if (codec::ascii_lower(name).starts_with("x-amz-") && !sigv4_parameter(name))
      extra.emplace_back(codec::ascii_lower(name), value);
  }
  if (extra.empty()) return route_verified(r, who, path);  // the common case: no copy
  S3Request hoisted = r;
  hoisted.headers.insert(hoisted.headers.end(), extra.begin(), extra.end());
  return route_verified(hoisted, who, path);
}

std::variant<S3Response, std::unique_ptr<BodySink>> S3Api::route_verified(const S3Request& r,
                                                                          const s3::Verified& who,
                                                                          const std::string& path) {
  // The one owner there is: the access key that signed (S3 answers 403 for another).
  if (auto owner = header(r, "x-amz-expected-bucket-owner"); owner && *owner != who.access_key)
    return error(403, "AccessDenied", "Access Denied (x-amz-expected-bucket-owner).", path);
  if (path.empty() || path.front() != '/')
    return error(400, "InvalidURI", "Couldn't parse the specified URI.", path);
  std::string bucket, key;
  if (auto vhost = virtual_bucket(r)) {
    bucket = std::move(*vhost);
    key = path.substr(1);
  } else {
    const auto slash = path.find('/', 1);
    bucket = path.substr(1, slash == std::string::npos ? std::string::npos : slash - 1);
    key = slash == std::string::npos ? "" : path.substr(slash + 1);
  }
  const auto q = query_map(r.query);
  auto has = [&](const char* k) { return q.count(k) != 0; };
  // Routed on method, path and subresources together: what this store does not implement
  // is refused and changes nothing (a PUT ?tagging must never replace the object's bytes).
  if (auto why = not_implemented(r.method, q, key.empty(), r))
    return error(501, "NotImplemented", *why, path);

  if (bucket.empty()) {
    if (r.method != "GET")
      return error(405, "MethodNotAllowed", "The specified method is not allowed.", path);
    return list_buckets(q, who.access_key);
  }

  if (key.empty()) return bucket_request(r, who.access_key, bucket, q);

  // --- objects ---------------------------------------------------------------------------
  if (auto v = q.find("versionId"); v != q.end() && v->second != "null")
    return error(400, "InvalidArgument", "Invalid version id specified", path);
  const auto content_type = header(r, "content-type").value_or("");
  auto sha = who.payload_hash.size() == 64 ? who.payload_hash : std::string();
  const auto md5 = header(r, "content-md5").value_or("");
  // x-amz-checksum-sha256 (base64): the body's SHA-256, checked like a signed payload hash
  // (presigned uploads sign this header so that the store refuses any other bytes).
  // (On a completion, the x-amz-checksum-* headers name the whole object: s3_multipart.cpp.)
  if (auto c = r.method == "PUT" ? header(r, "x-amz-checksum-sha256") : std::nullopt) {
    const auto raw = codec::base64_decode(*c);
    if (!raw || raw->size() != 32)
      return error(400, "InvalidRequest", "Value for x-amz-checksum-sha256 header is invalid.",
                   path);
    const auto declared = codec::hex(*raw);
    if (sha.empty())
      sha = declared;
    else if (sha != declared)
      return error(400, "BadDigest",
                   "The SHA256 you specified did not match the calculated checksum.", path);
  }
  const bool chunked = who.payload_hash.starts_with("STREAMING-");
  if (who.payload_hash == "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" ||
      who.payload_hash == "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER") {
    return error(501, "NotImplemented",
                 "Signed aws-chunked payloads are not supported; sign the payload hash or use "
                 "UNSIGNED-PAYLOAD.",
                 path);
  }
  // Flexible checksums: one announced as a trailer (aws-chunked), or sent as a header
  // (x-amz-checksum-sha256 is checked by the store's own SHA-256, above).
  std::unique_ptr<Checksum> trailer_sum;
  if (auto t = header(r, "x-amz-trailer")) {
    std::string name(*t);
    name = codec::ascii_lower(name);
    trailer_sum = Checksum::make(name);
    if (!trailer_sum || !chunked)
      return error(400, "InvalidRequest",
                   "x-amz-trailer names no checksum this store knows (crc32, crc32c, crc64nvme, "
                   "sha1, sha256), or the body is not aws-chunked.",
                   path);
  }
  std::unique_ptr<Checksum> header_sum;
  std::string header_value;
  for (const char* h : {"x-amz-checksum-crc32", "x-amz-checksum-crc32c", "x-amz-checksum-crc64nvme",
                        "x-amz-checksum-sha1"}) {
    if (auto v = header(r, h)) {
      header_sum = Checksum::make(h);
      header_value = std::string(*v);
    }
  }
  const auto sha256_header = header(r, "x-amz-checksum-sha256");
  {  // one checksum per request, as S3 requires (a second would go unchecked)
    int declared = 0;
    for (const auto& [k, v] : r.headers) {
      const auto n = codec::ascii_lower(k);
      if (!n.starts_with("x-amz-checksum-")) continue;
      if (!known_checksum_header(n))  // sha512, md5, xxhash64...: not checked, so refused
        return error(400, "InvalidRequest",
                     "The checksum " + n +
                         " is not one this store verifies (CRC32, CRC32C, "
                         "CRC64NVME, SHA1, SHA256).",
                     path);
      const bool value_header = n != "x-amz-checksum-algorithm" && n != "x-amz-checksum-type" &&
                                n != "x-amz-checksum-mode";
      if (value_header && v.empty())
        return error(400, "InvalidRequest", "Value for " + n + " header is invalid.", path);
      declared += value_header;
    }
    if (declared > 1 || (declared == 1 && header(r, "x-amz-trailer")))
      return error(400, "InvalidRequest",
                   "Expecting a single x-amz-checksum- header. Multiple checksum Types are not "
                   "allowed.",
                   path);
  }
  // aws-chunked: the decoded size is declared (S3 requires it) and then held to.
  std::uint64_t decoded_length = 0;
  if (chunked && r.method == "PUT") {
    const auto v = header(r, "x-amz-decoded-content-length");
    const auto [end, ec] = v ? std::from_chars(v->data(), v->data() + v->size(), decoded_length)
                             : std::from_chars_result{nullptr, std::errc::invalid_argument};
    if (!v || v->empty() || ec != std::errc() || end != v->data() + v->size())
      return error(411, "MissingContentLength",
                   "An aws-chunked body needs x-amz-decoded-content-length (its size in bytes).",
                   path);
  }
  auto wrap = [&](std::unique_ptr<BodySink> s) -> std::unique_ptr<BodySink> {
    if (sha256_header) s = echo_sink(std::move(s), "x-amz-checksum-sha256", *sha256_header);
    if (header_sum) s = checksum_sink(std::move(s), std::move(header_sum), header_value);
    if (chunked) return chunked_sink(std::move(s), std::move(trailer_sum), decoded_length);
    return s;
  };

  // A declared size past the limit is refused before the body (and before 100 Continue).
  if (r.method == "PUT" && !header(r, "x-amz-copy-source")) {
    const auto declared = header(r, "x-amz-decoded-content-length")
                              .value_or(header(r, "content-length").value_or(""));
    std::uint64_t size = 0;
    const auto [end, ec] =
        std::from_chars(declared.data(), declared.data() + declared.size(), size);
    const auto limit =
        has("partNumber") ? store_.limits().max_part_bytes : store_.limits().max_object_bytes;
    if ((ec == std::errc::result_out_of_range) ||
        (ec == std::errc() && end == declared.data() + declared.size() && size > limit))
      return error(400, "EntityTooLarge",
                   "Your proposed upload exceeds the maximum allowed size (" +
                       std::to_string(limit) + " bytes).",
                   path);
  }
  // CopyObject and UploadPartCopy (s3_copy.cpp).
  if (r.method == "PUT" && header(r, "x-amz-copy-source")) return copy_object(r, q, bucket, key);
  if (r.method == "PUT" && has("partNumber") && has("uploadId")) {
    const int number = integer_param(q, "partNumber", 1, 10'000, 0,
                                     "Part number must be an integer between 1 and 10000, "
                                     "inclusive.");
    // An upload that declared its checksum algorithm: each part's checksum is recorded
    // (computed when the part carries none); a part may not carry another algorithm's.
    const auto upload = store_.find_upload(bucket, key, q.at("uploadId"));
    if (auto alg = upload.metadata.find(":x-amz-checksum-algorithm");
        alg != upload.metadata.end()) {
      const auto want = "x-amz-checksum-" + codec::ascii_lower(alg->second);
      const auto given = header_sum      ? header_sum->name()
                         : trailer_sum   ? trailer_sum->name()
                         : sha256_header ? std::string("x-amz-checksum-sha256")
                                         : std::string();
      if (!given.empty() && given != want)
        return error(400, "InvalidRequest",
                     "This upload's checksum algorithm is " + alg->second + "; the part sent " +
                         checksum_algorithm(given) + ".",
                     path);
      if (given.empty()) {
        header_sum = Checksum::make(want);
        header_value.clear();  // computed, not checked
      }
    }
    auto w = store_.put_part(bucket, key, q.at("uploadId"), number);
    return wrap(object_sink(std::move(w), sha, md5, [](const ObjectInfo& o) {
      S3Response resp;
      resp.headers.emplace_back("ETag", o.etag);
      return resp;
    }));
  }
  if (r.method == "PUT") {
    const auto cond = write_condition(r);
    if (cond.any()) {
      // Answered before the body when the key already decides it; checked again when the
      // bytes are published (a racing writer).
      auto cur = store_.head(bucket, key);
      check_condition(cond, cur ? std::optional(cur->etag) : std::nullopt);
    }
    auto w = store_.put(bucket, key, content_type, user_metadata(r), cond);
    return wrap(object_sink(std::move(w), sha, md5, [](const ObjectInfo& o) {
      S3Response resp;
      resp.headers.emplace_back("ETag", o.etag);
      return resp;
    }));
  }
  // CreateMultipartUpload and CompleteMultipartUpload (s3_multipart.cpp).
  if (r.method == "POST" && has("uploads")) return create_multipart(r, bucket, key);
  if (r.method == "POST" && has("uploadId"))
    return complete_multipart(r, q.at("uploadId"), bucket, key);
  if (r.method == "GET" && has("uploadId")) {
    const int marker = integer_param(q, "part-number-marker", 0, 10'000, 0,
                                     "part-number-marker must be an integer from 0 to 10000.");
    const int max = std::min(
        integer_param(q, "max-parts", 1, INT32_MAX, 1000, "max-parts must be a positive integer."),
        1000);
    bool truncated = false;
    const auto upload = store_.find_upload(bucket, key, q.at("uploadId"));
    const auto alg = upload.metadata.count(":x-amz-checksum-algorithm")
                         ? upload.metadata.at(":x-amz-checksum-algorithm")
                         : std::string();
    auto parts = store_.list_parts(bucket, key, q.at("uploadId"), marker, max, truncated);
    const auto type = upload.metadata.count(":x-amz-checksum-type")
                          ? upload.metadata.at(":x-amz-checksum-type")
                          : std::string();
    const auto part_checksum_xml = [&](const PartInfo& p) {
      if (alg.empty() || p.checksum.empty()) return std::string();
      return "<Checksum" + alg + ">" + x::escape(p.checksum) + "</Checksum" + alg + ">";
    };
    std::string body = "<ListPartsResult" + std::string(kNs) + "><Bucket>" + x::escape(bucket) +
                       "</Bucket><Key>" + x::escape(key) + "</Key><UploadId>" +
                       x::escape(q.at("uploadId")) + "</UploadId><PartNumberMarker>" +
                       std::to_string(marker) + "</PartNumberMarker><MaxParts>" +
                       std::to_string(max) + "</MaxParts><IsTruncated>" +
                       (truncated ? "true" : "false") + "</IsTruncated>";
    if (truncated && !parts.empty())
      body += "<NextPartNumberMarker>" + std::to_string(parts.back().number) +
              "</NextPartNumberMarker>";
    if (!alg.empty())
      body += "<ChecksumAlgorithm>" + alg + "</ChecksumAlgorithm><ChecksumType>" + type +
              "</ChecksumType>";
    for (const auto& p : parts) {
      body += "<Part><PartNumber>" + std::to_string(p.number) + "</PartNumber><LastModified>" +
              iso8601(p.last_modified_ms) + "</LastModified><ETag>" + x::escape(p.etag) +
              "</ETag><Size>" + std::to_string(p.size) + "</Size>" + part_checksum_xml(p) +
              "</Part>";
    }
    return xml(200, body + "</ListPartsResult>");
  }
  if (r.method == "DELETE" && has("uploadId")) {
    store_.abort(bucket, key, q.at("uploadId"));
    S3Response resp;
    resp.status = 204;
    return resp;
  }
  if (r.method == "DELETE") {
    // A conditional delete (If-Match) is checked with the deletion, in one transaction.
    store_.remove(bucket, key, header(r, "if-match").value_or(""));
    S3Response resp;
    resp.status = 204;
    return resp;
  }
  if (r.method == "GET" || r.method == "HEAD") {
    auto o = store_.head(bucket, key);
    if (!o) return error(404, "NoSuchKey", "The specified key does not exist.", path);
    S3Response resp;
    object_headers(*o, resp);
    const auto pre = evaluate_preconditions(r, "", *o);
    if (pre == Precondition::Failed)
      return error(412, "PreconditionFailed",
                   "At least one of the pre-conditions you specified did not hold.", path);
    const bool not_modified = pre == Precondition::NotModified;
    if (not_modified) {
      S3Response nm;
      nm.status = 304;
      for (const auto& h : resp.headers) {
        if (h.first == "ETag" || h.first == "Last-Modified") nm.headers.push_back(h);
      }
      nm.head_only = true;
      return nm;
    }
    resp.file = o->blob;
    resp.data = o->data;
    resp.offset = 0;
    resp.length = o->size;
    // GetObject's response-* overrides: signed with the request, so a presigned download
    // chooses the name the browser saves it under and the type it is served as.
    static constexpr std::pair<const char*, const char*> kOverrides[] = {
        {"response-content-type", "Content-Type"},
        {"response-content-disposition", "Content-Disposition"},
        {"response-content-language", "Content-Language"},
        {"response-content-encoding", "Content-Encoding"},
        {"response-cache-control", "Cache-Control"},
        {"response-expires", "Expires"}};
    for (const auto& [param, name] : kOverrides) {
      auto it = q.find(param);
      if (it == q.end()) continue;
      const bool ctl = std::any_of(it->second.begin(), it->second.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return (u < 0x20 && u != '\t') || u == 0x7f;  // RFC 9110 section 5.5: no CTLs
      });
      if (ctl || it->second.empty())
        return error(400, "InvalidArgument", std::string(param) + " must be one header line.",
                     path);
      const auto lname = codec::ascii_lower(name);
      std::erase_if(resp.headers,
                    [&](const auto& h) { return codec::ascii_lower(h.first) == lname; });
      resp.headers.emplace_back(name, it->second);
    }
    // If-Range (RFC 9110 section 13.1.5): the range only while the object is the one the
    // client has (a strong ETag match, or not modified since the date); otherwise the whole.
    bool range_valid = true;
    if (auto if_range = header(r, "if-range")) {
      if (if_range->starts_with("\"")) {
        range_valid = *if_range == o->etag;
      } else {  // a date validates only as Last-Modified exactly, and only once it is strong
        const auto t = parse_http_date(*if_range);
        range_valid = t && o->last_modified_ms / 1000 == *t && *t < r.now_unix;
      }
    }
    if (auto range = range_valid ? header(r, "range") : std::nullopt) {
      const auto rg = parse_range(*range, o->size);
      if (rg.kind == RangeAsked::Kind::Unsatisfiable) {
        auto e = error(416, "InvalidRange", "The requested range is not satisfiable.", path);
        e.headers.emplace_back("Content-Range", "bytes */" + std::to_string(o->size));
        return e;
      }
      if (rg.kind == RangeAsked::Kind::Part) {
        resp.status = 206;
        resp.offset = rg.first;
        resp.length = rg.last - rg.first + 1;
        resp.headers.emplace_back("Content-Range", "bytes " + std::to_string(rg.first) + "-" +
                                                       std::to_string(rg.last) + "/" +
                                                       std::to_string(o->size));
      }  // Whole: a Range this store ignores (RFC 9110 section 14.2), the whole object
    }
    // The stored checksum, when asked for and the whole object is sent (S3: a range has none).
    if (codec::ascii_lower(header(r, "x-amz-checksum-mode").value_or("")) == "enabled" &&
        resp.status == 200) {
      for (const auto& [k, v] : o->metadata) {
        if (k.starts_with(":x-amz-checksum-")) resp.headers.emplace_back(k.substr(1), v);
      }
    }
    resp.head_only = r.method == "HEAD";
    return resp;
  }
  return error(405, "MethodNotAllowed",
               "The specified method is not allowed against this resource.", path);
}

}  // namespace kiln::objects
