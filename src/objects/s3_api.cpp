#include "objects/s3_api.hpp"

#include "platform/log.hpp"
#include "s3/sigv4.hpp"
#include "s3/xml.hpp"

#include <openssl/evp.h>
#include <boost/crc.hpp>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <iterator>

namespace kiln::objects {
namespace {

namespace x = s3::xml;

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::optional<std::string> header(const S3Request& r, std::string_view name) {
  for (const auto& [k, v] : r.headers) {
    if (lower(k) == name) return v;
  }
  return std::nullopt;
}

// S3 conditional writes: If-None-Match: * (create only) and If-Match: "etag".
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

std::string iso8601(std::int64_t ms) {
  const std::time_t t = ms / 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return std::string(buf) + "." + std::to_string(1000 + ms % 1000).substr(1) + "Z";
}

std::string http_date(std::int64_t ms) {
  const std::time_t t = ms / 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return buf;
}

// An IMF-fixdate (RFC 9110 section 5.6.7) in seconds since 1970, or nullopt.
std::optional<std::int64_t> parse_http_date(const std::string& v) {
  std::tm tm{};
  const char* end = strptime(v.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (end == nullptr || *end != '\0') return std::nullopt;
  return static_cast<std::int64_t>(timegm(&tm));
}

// Whether an If-Match / If-None-Match list names this ETag ("*" names any).
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

constexpr std::string_view kXmlHead = R"(<?xml version="1.0" encoding="UTF-8"?>)";
constexpr std::string_view kNs = R"( xmlns="http://s3.amazonaws.com/doc/2006-03-01/")";

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
    auto n = lower(k);
    if (n.starts_with("x-amz-meta-")) out[n.substr(11)] = v;
  }
  return out;
}

// ListObjects (version 1) from a page of the store's listing: Marker echoed, NextMarker
// (the last key or prefix) when truncated, as S3 answers it.
S3Response list_v1(const std::string& bucket, const std::string& prefix,
                   const std::string& delimiter, const std::string& marker, int max_keys,
                   const ListResult& res) {
  std::string body = "<ListBucketResult" + std::string(kNs) + "><Name>" + x::escape(bucket) +
                     "</Name><Prefix>" + x::escape(prefix) + "</Prefix><Marker>" +
                     x::escape(marker) + "</Marker><MaxKeys>" + std::to_string(max_keys) +
                     "</MaxKeys>";
  if (!delimiter.empty()) body += "<Delimiter>" + x::escape(delimiter) + "</Delimiter>";
  body += std::string("<IsTruncated>") + (res.truncated ? "true" : "false") + "</IsTruncated>";
  if (res.truncated) body += "<NextMarker>" + x::escape(res.next_start_after) + "</NextMarker>";
  for (const auto& o : res.objects) {
    body += "<Contents><Key>" + x::escape(o.key) + "</Key><LastModified>" +
            iso8601(o.last_modified_ms) + "</LastModified><ETag>" + x::escape(o.etag) +
            "</ETag><Size>" + std::to_string(o.size) +
            "</Size><StorageClass>STANDARD</StorageClass></Contents>";
  }
  for (const auto& p : res.common_prefixes)
    body += "<CommonPrefixes><Prefix>" + x::escape(p) + "</Prefix></CommonPrefixes>";
  return xml(200, body + "</ListBucketResult>");
}

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

// Request headers that ask for something this store does not give (encryption, object
// lock, ACL grants, tags, redirects): refused, never ignored.
bool protection_header(std::string_view lower_name, std::string_view value) {
  if (lower_name == "x-amz-acl") return value != "private" && value != "bucket-owner-full-control";
  for (std::string_view p : {"x-amz-server-side-encryption", "x-amz-object-lock-", "x-amz-grant-",
                             "x-amz-copy-source-server-side-encryption-", "x-amz-tagging",
                             "x-amz-website-redirect-location", "x-amz-bucket-object-lock-"}) {
    if (lower_name.starts_with(p)) return true;
  }
  return false;
}

}  // namespace

// Why the request asks for something not implemented, or nullopt. `bucket_level`: the path
// names a bucket (or nothing), not an object.
std::optional<std::string> S3Api::not_implemented(const std::string& method,
                                                  const std::map<std::string, std::string>& q,
                                                  bool bucket_level, const S3Request& r) {
  for (const auto& [name, value] : q) {
    if (std::find(std::begin(kSubresources), std::end(kSubresources), name) ==
        std::end(kSubresources))
      continue;  // an ordinary parameter (prefix, max-keys, x-id...)
    bool ok = false;
    if (name == "uploads") ok = bucket_level ? method == "GET" : method == "POST";
    if (name == "uploadId")
      ok = !bucket_level && (method == "POST" || method == "GET" || method == "DELETE" ||
                             (method == "PUT" && q.count("partNumber") != 0));
    if (name == "partNumber") ok = !bucket_level && method == "PUT" && q.count("uploadId") != 0;
    if (name == "versionId") ok = !bucket_level && value == "null";  // unversioned: "null"
    if (name == "delete") ok = bucket_level && method == "POST";     // DeleteObjects
    if (!ok)
      return "Kiln's object store does not implement the '" + name + "' subresource for " + method +
             " on " + (bucket_level ? "a bucket" : "an object") + "; nothing was changed.";
  }
  for (const auto& [name, value] : r.headers) {
    std::string lower(name);
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (protection_header(lower, value))
      return "A header you provided implies functionality that is not implemented (" + lower +
             ": Kiln's object store does not encrypt, lock, tag or grant); nothing was "
             "stored.";
  }
  return std::nullopt;
}

namespace {

void object_headers(const ObjectInfo& o, S3Response& r) {
  r.headers.emplace_back("ETag", o.etag);
  r.headers.emplace_back("Last-Modified", http_date(o.last_modified_ms));
  r.headers.emplace_back("Content-Type", o.content_type);
  r.headers.emplace_back("Accept-Ranges", "bytes");
  for (const auto& [k, v] : o.metadata) r.headers.emplace_back("x-amz-meta-" + k, v);
}

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
  if (!v.starts_with("bytes=") || v.find(',') != std::string_view::npos) return {};
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

// Writes a body into a store Writer and commits it with the declared digests.
class ObjectSink final : public BodySink {
 public:
  ObjectSink(std::unique_ptr<Writer> w, std::string sha, std::string md5,
             std::function<S3Response(const ObjectInfo&)> answer)
      : w_(std::move(w)), sha_(std::move(sha)), md5_(std::move(md5)), answer_(std::move(answer)) {
    if (sha_.empty()) w_->skip_sha256();  // an unsigned payload: nothing to compare with
  }
  void write(std::string_view b) override { w_->write(b); }
  S3Response finish() override { return answer_(w_->commit(sha_, md5_)); }

 private:
  std::unique_ptr<Writer> w_;
  std::string sha_, md5_;
  std::function<S3Response(const ObjectInfo&)> answer_;
};

// S3's flexible checksums (x-amz-checksum-<algorithm>, base64 of the big-endian value), computed
// over the body as it arrives.
class Checksum {
 public:
  virtual ~Checksum() = default;
  virtual void update(std::string_view b) = 0;
  [[nodiscard]] virtual std::string raw() = 0;  // big-endian bytes
  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] std::string base64() {
    const auto r = raw();
    std::string out(4 * ((r.size() + 2) / 3) + 1, '\0');
    const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(r.data()),
                                  static_cast<int>(r.size()));
    out.resize(static_cast<std::size_t>(n));
    return out;
  }
  // For a header name such as "x-amz-checksum-crc32"; null for one S3 does not define.
  static std::unique_ptr<Checksum> make(std::string_view header);

 protected:
  std::string name_;
};

template <typename Crc>
class CrcChecksum final : public Checksum {
 public:
  explicit CrcChecksum(std::string name) { name_ = std::move(name); }
  void update(std::string_view b) override { crc_.process_bytes(b.data(), b.size()); }
  std::string raw() override {
    auto v = crc_.checksum();
    std::string out(sizeof v, '\0');
    for (std::size_t i = sizeof v; i-- > 0; v >>= 8) out[i] = static_cast<char>(v & 0xff);
    return out;
  }

 private:
  Crc crc_;
};

class DigestChecksum final : public Checksum {
 public:
  DigestChecksum(std::string name, const EVP_MD* md) : ctx_(EVP_MD_CTX_new()) {
    name_ = std::move(name);
    EVP_DigestInit_ex(ctx_, md, nullptr);
  }
  ~DigestChecksum() override { EVP_MD_CTX_free(ctx_); }
  DigestChecksum(const DigestChecksum&) = delete;
  DigestChecksum& operator=(const DigestChecksum&) = delete;
  void update(std::string_view b) override { EVP_DigestUpdate(ctx_, b.data(), b.size()); }
  std::string raw() override {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, md, &len);
    return std::string(reinterpret_cast<char*>(md), len);
  }

 private:
  EVP_MD_CTX* ctx_;
};

std::unique_ptr<Checksum> Checksum::make(std::string_view header) {
  using Crc32c = boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true>;
  using Crc64Nvme = boost::crc_optimal<64, 0xAD93D23594C93659ULL, 0xFFFFFFFFFFFFFFFFULL,
                                       0xFFFFFFFFFFFFFFFFULL, true, true>;
  const std::string h(header);
  if (h == "x-amz-checksum-crc32") return std::make_unique<CrcChecksum<boost::crc_32_type>>(h);
  if (h == "x-amz-checksum-crc32c") return std::make_unique<CrcChecksum<Crc32c>>(h);
  if (h == "x-amz-checksum-crc64nvme") return std::make_unique<CrcChecksum<Crc64Nvme>>(h);
  if (h == "x-amz-checksum-sha1") return std::make_unique<DigestChecksum>(h, EVP_sha1());
  if (h == "x-amz-checksum-sha256") return std::make_unique<DigestChecksum>(h, EVP_sha256());
  return nullptr;
}

[[noreturn]] void checksum_mismatch(const Checksum& c) {
  auto alg = c.name().substr(std::string_view("x-amz-checksum-").size());
  for (auto& ch : alg) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  throw Error(400, "BadDigest",
              "The " + alg + " you specified did not match the calculated checksum.");
}

// Adds a header to the inner sink's answer (the SHA-256 checksum the store verified).
class EchoSink final : public BodySink {
 public:
  EchoSink(std::unique_ptr<BodySink> inner, std::string name, std::string value)
      : inner_(std::move(inner)), name_(std::move(name)), value_(std::move(value)) {}
  void write(std::string_view b) override { inner_->write(b); }
  S3Response finish() override {
    auto resp = inner_->finish();
    resp.headers.emplace_back(name_, value_);
    return resp;
  }

 private:
  std::unique_ptr<BodySink> inner_;
  std::string name_, value_;
};

// A body whose checksum was declared in a header: checked before the inner sink commits.
class ChecksumSink final : public BodySink {
 public:
  ChecksumSink(std::unique_ptr<BodySink> inner, std::unique_ptr<Checksum> sum, std::string expected)
      : inner_(std::move(inner)), sum_(std::move(sum)), expected_(std::move(expected)) {}
  void write(std::string_view b) override {
    sum_->update(b);
    inner_->write(b);
  }
  S3Response finish() override {
    if (sum_->base64() != expected_) checksum_mismatch(*sum_);
    auto resp = inner_->finish();
    resp.headers.emplace_back(sum_->name(), expected_);  // as S3 does: the checksum it verified
    return resp;
  }

 private:
  std::unique_ptr<BodySink> inner_;
  std::unique_ptr<Checksum> sum_;
  std::string expected_;
};

// aws-chunked (STREAMING-UNSIGNED-PAYLOAD-TRAILER): "<hex size>\r\n<data>\r\n" ... "0\r\n"
// then trailers and "\r\n". Decodes into the inner sink.
class ChunkedSink final : public BodySink {
 public:
  // `sum`: the checksum the x-amz-trailer header announced (checked against the trailer).
  ChunkedSink(std::unique_ptr<BodySink> inner, std::unique_ptr<Checksum> sum)
      : inner_(std::move(inner)), sum_(std::move(sum)) {}
  void write(std::string_view b) override {
    while (!b.empty()) {
      if (state_ == State::Data) {
        const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(left_, b.size()));
        if (sum_) sum_->update(b.substr(0, n));
        inner_->write(b.substr(0, n));
        left_ -= n;
        b.remove_prefix(n);
        if (left_ == 0) state_ = State::DataEnd;
        continue;
      }
      line_.push_back(b.front());
      b.remove_prefix(1);
      if (line_.size() > 4096) throw Error(400, "InvalidRequest", "Malformed aws-chunked body.");
      if (!line_.ends_with("\r\n")) continue;
      const auto l = line_.substr(0, line_.size() - 2);
      line_.clear();
      if (state_ == State::DataEnd) {
        if (!l.empty()) throw Error(400, "InvalidRequest", "Malformed aws-chunked body.");
        state_ = State::Size;
      } else if (state_ == State::Size) {
        const auto semi = l.find(';');
        const auto hexsize = l.substr(0, semi);
        if (hexsize.empty() || hexsize.size() > 15 ||
            hexsize.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
          throw Error(400, "InvalidRequest", "Malformed aws-chunked size.");
        left_ = std::stoull(hexsize, nullptr, 16);
        state_ = left_ == 0 ? State::Trailers : State::Data;
      } else if (state_ == State::Trailers) {
        if (l.empty()) {
          state_ = State::Done;
        } else if (sum_) {
          const auto colon = l.find(':');
          std::string name = l.substr(0, colon);
          for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
          if (colon != std::string::npos && name == sum_->name()) {
            auto v = l.substr(colon + 1);
            while (!v.empty() && v.front() == ' ') v.erase(0, 1);
            trailer_ = v;
          }
        }
      } else {
        throw Error(400, "InvalidRequest", "Bytes after the end of an aws-chunked body.");
      }
    }
  }
  S3Response finish() override {
    if (state_ != State::Done && !(state_ == State::Trailers && line_.empty()))
      throw Error(400, "IncompleteBody", "The aws-chunked body ended early.");
    if (sum_) {
      if (!trailer_)
        throw Error(
            400, "InvalidRequest",
            "The body ended without the " + sum_->name() + " trailer x-amz-trailer announced.");
      if (sum_->base64() != *trailer_) checksum_mismatch(*sum_);
    }
    auto resp = inner_->finish();
    if (sum_) resp.headers.emplace_back(sum_->name(), *trailer_);  // the checksum verified
    return resp;
  }

 private:
  enum class State { Size, Data, DataEnd, Trailers, Done };
  std::unique_ptr<BodySink> inner_;
  std::unique_ptr<Checksum> sum_;
  std::optional<std::string> trailer_;
  State state_ = State::Size;
  std::uint64_t left_ = 0;
  std::string line_;
};

// Collects a small XML body, then runs `fn` on it.
class XmlSink final : public BodySink {
 public:
  XmlSink(std::size_t limit, std::function<S3Response(const std::string&)> fn)
      : limit_(limit), fn_(std::move(fn)) {}
  void write(std::string_view b) override {
    if (body_.size() + b.size() > limit_)
      throw Error(400, "MaxMessageLengthExceeded", "Your request was too big.");
    body_.append(b);
  }
  S3Response finish() override { return fn_(body_); }

 private:
  std::size_t limit_;
  std::function<S3Response(const std::string&)> fn_;
  std::string body_;
};

}  // namespace

S3Api::S3Api(Store& store, ApiOptions options) : store_(store), options_(std::move(options)) {}

// DeleteObjects (POST /bucket?delete): at most 1,000 keys; the body's integrity is required
// as S3 requires it (Content-MD5 or an x-amz-checksum-* header) and checked.
std::unique_ptr<BodySink> S3Api::delete_objects(const S3Request& r, const std::string& bucket) {
  std::string md5 = header(r, "content-md5").value_or("");
  std::unique_ptr<Checksum> sum;
  std::string sum_value;
  for (const auto& [k, v] : r.headers) {
    std::string lower_k = lower(k);
    if (lower_k.starts_with("x-amz-checksum-") && lower_k != "x-amz-checksum-algorithm" &&
        lower_k != "x-amz-checksum-type") {
      sum = Checksum::make(lower_k);
      sum_value = v;
    }
  }
  if (md5.empty() && !sum)
    throw Error(400, "InvalidRequest",
                "Missing required header for this request: Content-MD5 (or x-amz-checksum-*).");
  auto shared_sum = std::shared_ptr<Checksum>(std::move(sum));
  return std::make_unique<XmlSink>(
      options_.max_xml_bytes, [this, bucket, md5, shared_sum, sum_value](const std::string& body) {
        if (!md5.empty()) {
          unsigned char d[EVP_MAX_MD_SIZE];
          unsigned int n = 0;
          EVP_Digest(body.data(), body.size(), d, &n, EVP_md5(), nullptr);
          unsigned char b64[64];
          const int len = EVP_EncodeBlock(b64, d, static_cast<int>(n));
          if (md5 != std::string(reinterpret_cast<char*>(b64), static_cast<std::size_t>(len)))
            throw Error(400, "BadDigest",
                        "The Content-MD5 you specified did not match what we received.");
        }
        if (shared_sum) {
          shared_sum->update(body);
          if (shared_sum->base64() != sum_value) checksum_mismatch(*shared_sum);
        }
        const auto objects = x::elements(body, "Object");
        if (objects.empty() || objects.size() > 1000)
          throw Error(400, "MalformedXML", "DeleteObjects takes 1 to 1,000 Object elements.");
        const auto quiet = x::elements(body, "Quiet");
        const bool is_quiet = !quiet.empty() && quiet[0] == "true";
        std::string out = "<DeleteResult" + std::string(kNs) + ">";
        for (const auto& o : objects) {
          const auto keys = x::elements(o, "Key");
          if (keys.size() != 1) throw Error(400, "MalformedXML", "Each Object needs one Key.");
          const auto key = x::unescape(keys[0]);
          try {
            store_.remove(bucket, key);
            if (!is_quiet) out += "<Deleted><Key>" + x::escape(key) + "</Key></Deleted>";
          } catch (const Error& e) {
            out += "<Error><Key>" + x::escape(key) + "</Key><Code>" + x::escape(e.code()) +
                   "</Code><Message>" + x::escape(e.what()) + "</Message></Error>";
          }
        }
        return xml(200, out + "</DeleteResult>");
      });
}

S3Response S3Api::error(int status, const std::string& code, const std::string& message,
                        const std::string& resource) const {
  auto r = xml(status, "<Error><Code>" + x::escape(code) + "</Code><Message>" + x::escape(message) +
                           "</Message><Resource>" + x::escape(resource) + "</Resource></Error>");
  return r;
}

void S3Api::add_cors(const S3Request& r, S3Response& resp) const {
  auto origin = header(r, "origin");
  if (!origin || options_.cors_origins.empty()) return;
  const bool any = std::find(options_.cors_origins.begin(), options_.cors_origins.end(), "*") !=
                   options_.cors_origins.end();
  if (!any && std::find(options_.cors_origins.begin(), options_.cors_origins.end(), *origin) ==
                  options_.cors_origins.end())
    return;
  resp.headers.emplace_back("Access-Control-Allow-Origin", any ? "*" : *origin);
  resp.headers.emplace_back("Access-Control-Expose-Headers",
                            "ETag, x-amz-version-id, Content-Length, Content-Range");
  if (!any) resp.headers.emplace_back("Vary", "Origin");
}

std::optional<std::string> S3Api::virtual_bucket(const S3Request& r) const {
  const auto& domain = options_.virtual_host_domain;
  if (domain.empty()) return std::nullopt;
  auto host = header(r, "host").value_or("");
  if (host.starts_with('[')) return std::nullopt;  // an IPv6 literal
  host = host.substr(0, host.find(':'));
  for (auto& c : host) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
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
  if (r.method == "OPTIONS") {
    S3Response resp;
    resp.status = 200;
    add_cors(r, resp);
    if (resp.headers.empty())
      return error(403, "AccessForbidden", "CORSResponse: this origin is not allowed.", path);
    resp.headers.emplace_back("Access-Control-Allow-Methods", "GET, PUT, POST, DELETE, HEAD");
    resp.headers.emplace_back("Access-Control-Allow-Headers",
                              header(r, "access-control-request-headers").value_or("*"));
    resp.headers.emplace_back("Access-Control-Max-Age", "3000");
    return resp;
  }
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
    std::string body = "<ListAllMyBucketsResult" + std::string(kNs) + "><Owner><ID>" +
                       x::escape(who.access_key) + "</ID></Owner><Buckets>";
    for (const auto& b : store_.buckets())
      body += "<Bucket><Name>" + x::escape(b) +
              "</Name><CreationDate>1970-01-01T00:00:00.000Z</CreationDate></Bucket>";
    return xml(200, body + "</Buckets></ListAllMyBucketsResult>");
  }

  if (key.empty()) {
    if (r.method == "PUT") {
      store_.create_bucket(bucket);
      S3Response resp;
      resp.headers.emplace_back("Location", "/" + bucket);
      return resp;
    }
    if (r.method == "HEAD") {
      if (!store_.bucket_exists(bucket))
        return error(404, "NoSuchBucket", "The specified bucket does not exist.", path);
      S3Response resp;
      resp.head_only = true;
      return resp;
    }
    if (r.method == "POST" && has("delete")) return delete_objects(r, bucket);
    if (r.method == "GET" && has("uploads")) {
      const auto prefix = q.count("prefix") ? q.at("prefix") : "";
      std::string body = "<ListMultipartUploadsResult" + std::string(kNs) + "><Bucket>" +
                         x::escape(bucket) + "</Bucket><Prefix>" + x::escape(prefix) +
                         "</Prefix><IsTruncated>false</IsTruncated>";
      for (const auto& u : store_.list_uploads(bucket, prefix)) {
        body += "<Upload><Key>" + x::escape(u.key) + "</Key><UploadId>" + u.id +
                "</UploadId><Initiated>" + iso8601(u.initiated_ms) + "</Initiated></Upload>";
      }
      return xml(200, body + "</ListMultipartUploadsResult>");
    }
    if (r.method == "GET") {
      // ListObjectsV2 (list-type=2), or ListObjects (v1: marker, NextMarker).
      const bool v2 = has("list-type");
      if (v2 && q.at("list-type") != "2")
        return error(400, "InvalidArgument", "list-type must be 2 (or absent, for ListObjects).",
                     path);
      const auto prefix = q.count("prefix") ? q.at("prefix") : "";
      const auto delimiter = q.count("delimiter") ? q.at("delimiter") : "";
      int max_keys = 1000;
      if (has("max-keys")) {
        try {
          max_keys = std::clamp(std::stoi(q.at("max-keys")), 0, 1000);
        } catch (const std::exception&) {
          return error(400, "InvalidArgument", "max-keys must be an integer.", path);
        }
      }
      std::string after = q.count("start-after") ? q.at("start-after") : "";
      if (has("continuation-token")) after = s3::percent_decode(q.at("continuation-token"));
      if (!v2) after = q.count("marker") ? q.at("marker") : "";
      auto res = store_.list(bucket, prefix, delimiter, after, max_keys);
      if (!v2) return list_v1(bucket, prefix, delimiter, after, max_keys, res);
      // EncodingType=url: names in the answer are URL-encoded (keys may hold any byte);
      // StartAfter and FetchOwner are echoed as S3 does.
      const auto encoding = q.count("encoding-type") ? q.at("encoding-type") : "";
      if (!encoding.empty() && encoding != "url")
        return error(400, "InvalidArgument", "Invalid Encoding Method specified in Request", path);
      const auto name = [&](const std::string& v) {
        return x::escape(encoding == "url" ? s3::uri_encode(v, true) : v);
      };
      const bool owner = q.count("fetch-owner") && q.at("fetch-owner") == "true";
      std::string body = "<ListBucketResult" + std::string(kNs) + "><Name>" + x::escape(bucket) +
                         "</Name><Prefix>" + name(prefix) + "</Prefix><KeyCount>" +
                         std::to_string(res.objects.size() + res.common_prefixes.size()) +
                         "</KeyCount><MaxKeys>" + std::to_string(max_keys) + "</MaxKeys>";
      if (!delimiter.empty()) body += "<Delimiter>" + name(delimiter) + "</Delimiter>";
      if (!encoding.empty()) body += "<EncodingType>url</EncodingType>";
      if (has("start-after")) body += "<StartAfter>" + name(q.at("start-after")) + "</StartAfter>";
      body += std::string("<IsTruncated>") + (res.truncated ? "true" : "false") + "</IsTruncated>";
      if (has("continuation-token"))
        body +=
            "<ContinuationToken>" + x::escape(q.at("continuation-token")) + "</ContinuationToken>";
      if (res.truncated)
        body += "<NextContinuationToken>" + x::escape(s3::uri_encode(res.next_start_after)) +
                "</NextContinuationToken>";
      for (const auto& o : res.objects) {
        body += "<Contents><Key>" + name(o.key) + "</Key><LastModified>" +
                iso8601(o.last_modified_ms) + "</LastModified><ETag>" + x::escape(o.etag) +
                "</ETag><Size>" + std::to_string(o.size) + "</Size>";
        if (owner)
          body += "<Owner><ID>" + x::escape(who.access_key) + "</ID><DisplayName>" +
                  x::escape(who.access_key) + "</DisplayName></Owner>";
        body += "<StorageClass>STANDARD</StorageClass></Contents>";
      }
      for (const auto& p : res.common_prefixes)
        body += "<CommonPrefixes><Prefix>" + name(p) + "</Prefix></CommonPrefixes>";
      return xml(200, body + "</ListBucketResult>");
    }
    return error(405, "MethodNotAllowed",
                 "The specified method is not allowed against this resource.", path);
  }

  // --- objects ---------------------------------------------------------------------------
  const auto content_type = header(r, "content-type").value_or("");
  auto sha = who.payload_hash.size() == 64 ? who.payload_hash : std::string();
  const auto md5 = header(r, "content-md5").value_or("");
  // x-amz-checksum-sha256 (base64): the body's SHA-256, checked like a signed payload hash
  // (presigned uploads sign this header so that the store refuses any other bytes).
  if (auto c = header(r, "x-amz-checksum-sha256")) {
    unsigned char raw[48];
    const int n = c->size() == 44
                      ? EVP_DecodeBlock(raw, reinterpret_cast<const unsigned char*>(c->data()), 44)
                      : -1;
    if (n != 33 || c->back() != '=' || (*c)[42] == '=')  // 32 bytes + one padding byte
      return error(400, "InvalidRequest", "Value for x-amz-checksum-sha256 header is invalid.",
                   path);
    const auto declared = s3::hex(std::string_view(reinterpret_cast<const char*>(raw), 32));
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
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
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
  auto wrap = [&](std::unique_ptr<BodySink> s) -> std::unique_ptr<BodySink> {
    if (sha256_header)
      s = std::make_unique<EchoSink>(std::move(s), "x-amz-checksum-sha256", *sha256_header);
    if (header_sum)
      s = std::make_unique<ChecksumSink>(std::move(s), std::move(header_sum), header_value);
    if (chunked) return std::make_unique<ChunkedSink>(std::move(s), std::move(trailer_sum));
    return s;
  };

  if (r.method == "PUT" && has("partNumber") && has("uploadId")) {
    int number = 0;
    try {
      number = std::stoi(q.at("partNumber"));
    } catch (const std::exception&) {
      return error(400, "InvalidArgument",
                   "Part number must be an integer between 1 and 10000, inclusive.", path);
    }
    auto w = store_.put_part(bucket, key, q.at("uploadId"), number);
    return wrap(std::make_unique<ObjectSink>(std::move(w), sha, md5, [](const ObjectInfo& o) {
      S3Response resp;
      resp.headers.emplace_back("ETag", o.etag);
      return resp;
    }));
  }
  if (r.method == "PUT" && header(r, "x-amz-copy-source")) {
    auto src = s3::percent_decode(*header(r, "x-amz-copy-source"));
    if (!src.empty() && src.front() == '/') src.erase(0, 1);
    const auto s = src.find('/');
    if (s == std::string::npos)
      return error(400, "InvalidArgument", "x-amz-copy-source must be bucket/key.", path);
    auto info = store_.copy(src.substr(0, s), src.substr(s + 1), bucket, key);
    return xml(200, "<CopyObjectResult><LastModified>" + iso8601(info.last_modified_ms) +
                        "</LastModified><ETag>" + x::escape(info.etag) +
                        "</ETag></CopyObjectResult>");
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
    return wrap(std::make_unique<ObjectSink>(std::move(w), sha, md5, [](const ObjectInfo& o) {
      S3Response resp;
      resp.headers.emplace_back("ETag", o.etag);
      return resp;
    }));
  }
  if (r.method == "POST" && has("uploads")) {
    auto u = store_.create_upload(bucket, key, content_type, user_metadata(r));
    return xml(200, "<InitiateMultipartUploadResult" + std::string(kNs) + "><Bucket>" +
                        x::escape(bucket) + "</Bucket><Key>" + x::escape(key) + "</Key><UploadId>" +
                        u.id + "</UploadId></InitiateMultipartUploadResult>");
  }
  if (r.method == "POST" && has("uploadId")) {
    const auto id = q.at("uploadId");
    const auto cond = write_condition(r);
    return std::make_unique<XmlSink>(options_.max_xml_bytes, [this, bucket, key, id,
                                                              cond](const std::string& body) {
      std::vector<std::pair<int, std::string>> parts;
      for (const auto& p : x::elements(body, "Part")) {
        auto n = x::elements(p, "PartNumber");
        auto e = x::elements(p, "ETag");
        if (n.size() != 1 || e.size() != 1)
          throw Error(400, "MalformedXML", "Each Part needs PartNumber and ETag.");
        int number = 0;
        try {
          number = std::stoi(n[0]);
        } catch (const std::exception&) {
          throw Error(400, "MalformedXML", "PartNumber must be an integer.");
        }
        parts.emplace_back(number, x::unescape(e[0]));
      }
      auto info = store_.complete(bucket, key, id, parts, cond);
      return xml(200, "<CompleteMultipartUploadResult" + std::string(kNs) + "><Location>/" +
                          x::escape(bucket) + "/" + x::escape(key) + "</Location><Bucket>" +
                          x::escape(bucket) + "</Bucket><Key>" + x::escape(key) + "</Key><ETag>" +
                          x::escape(info.etag) + "</ETag></CompleteMultipartUploadResult>");
    });
  }
  if (r.method == "GET" && has("uploadId")) {
    int marker = 0, max = 1000;
    try {
      if (has("part-number-marker")) marker = std::stoi(q.at("part-number-marker"));
      if (has("max-parts")) max = std::clamp(std::stoi(q.at("max-parts")), 1, 1000);
    } catch (const std::exception&) {
      return error(400, "InvalidArgument", "part-number-marker and max-parts must be integers.",
                   path);
    }
    bool truncated = false;
    auto parts = store_.list_parts(bucket, key, q.at("uploadId"), marker, max, truncated);
    std::string body = "<ListPartsResult" + std::string(kNs) + "><Bucket>" + x::escape(bucket) +
                       "</Bucket><Key>" + x::escape(key) + "</Key><UploadId>" +
                       x::escape(q.at("uploadId")) + "</UploadId><PartNumberMarker>" +
                       std::to_string(marker) + "</PartNumberMarker><MaxParts>" +
                       std::to_string(max) + "</MaxParts><IsTruncated>" +
                       (truncated ? "true" : "false") + "</IsTruncated>";
    if (truncated && !parts.empty())
      body += "<NextPartNumberMarker>" + std::to_string(parts.back().number) +
              "</NextPartNumberMarker>";
    for (const auto& p : parts) {
      body += "<Part><PartNumber>" + std::to_string(p.number) + "</PartNumber><LastModified>" +
              iso8601(p.last_modified_ms) + "</LastModified><ETag>" + x::escape(p.etag) +
              "</ETag><Size>" + std::to_string(p.size) + "</Size></Part>";
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
    store_.remove(bucket, key);
    S3Response resp;
    resp.status = 204;
    return resp;
  }
  if (r.method == "GET" || r.method == "HEAD") {
    auto o = store_.head(bucket, key);
    if (!o) return error(404, "NoSuchKey", "The specified key does not exist.", path);
    S3Response resp;
    object_headers(*o, resp);
    // RFC 9110 section 13.2.2's order: If-Match, If-Unmodified-Since, If-None-Match,
    // If-Modified-Since (each date one only when its ETag partner is absent).
    const auto modified_s = o->last_modified_ms / 1000;
    const auto im = header(r, "if-match"), inm = header(r, "if-none-match");
    const auto ius = header(r, "if-unmodified-since"), ims = header(r, "if-modified-since");
    bool failed = im && !etag_listed(*im, o->etag);
    if (!im && ius) {
      if (auto t = parse_http_date(*ius); t && modified_s > *t) failed = true;
    }
    if (failed)
      return error(412, "PreconditionFailed",
                   "At least one of the pre-conditions you specified did not hold.", path);
    bool not_modified = inm && etag_listed(*inm, o->etag);
    if (!inm && ims) {
      if (auto t = parse_http_date(*ims); t && modified_s <= *t) not_modified = true;
    }
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
      if (it->second.find_first_of("\r\n") != std::string::npos || it->second.empty())
        return error(400, "InvalidArgument", std::string(param) + " must be one header line.",
                     path);
      const auto lname = lower(name);
      std::erase_if(resp.headers, [&](const auto& h) { return lower(h.first) == lname; });
      resp.headers.emplace_back(name, it->second);
    }
    if (auto range = header(r, "range")) {
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
    resp.head_only = r.method == "HEAD";
    return resp;
  }
  return error(405, "MethodNotAllowed",
               "The specified method is not allowed against this resource.", path);
}

}  // namespace kiln::objects
