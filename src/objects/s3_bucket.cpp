// The embedded store's bucket-level S3 operations (S3 API reference): CreateBucket,
// HeadBucket, DeleteBucket, GetBucketLocation, ListObjects (v1 and v2),
// ListObjectVersions (an unversioned bucket: every object is version "null"),
// ListMultipartUploads and DeleteObjects.
#include "clients/s3/sigv4.hpp"
#include "clients/s3/xml.hpp"
#include "objects/s3_api.hpp"
#include "objects/s3_body.hpp"
#include "objects/s3_util.hpp"
#include "objects/s3_xml_body.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <charconv>

namespace kiln::objects {
namespace {

namespace x = s3::xml;
using namespace detail;

// max-keys / max-uploads: an integer 0..2^31-1, at most 1,000 used (as S3).
int page_size(const Query& q, const char* name) {
  auto it = q.find(name);
  if (it == q.end()) return 1000;
  long long v = -1;
  const auto& s = it->second;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < 0 || v > INT32_MAX)
    throw Error(400, "InvalidArgument",
                std::string("Provided ") + name + " not an integer or within integer range.");
  return static_cast<int>(std::min<long long>(v, 1000));
}

std::string param(const Query& q, const char* name) {
  auto it = q.find(name);
  return it == q.end() ? std::string() : it->second;
}

// How a listing writes names: XML-escaped, and URL-encoded first with EncodingType=url (keys
// may hold any byte); another encoding is 400 InvalidArgument.
struct ListedNames {
  bool url = false;
  std::string operator()(const std::string& v) const {
    return x::escape(url ? s3::uri_encode(v, true) : v);
  }
  // The EncodingType element the answer carries, and its CommonPrefixes.
  [[nodiscard]] std::string encoding_xml() const {
    return url ? "<EncodingType>url</EncodingType>" : "";
  }
  [[nodiscard]] std::string prefixes_xml(const std::vector<std::string>& prefixes) const {
    std::string out;
    for (const auto& p : prefixes)
      out += "<CommonPrefixes><Prefix>" + (*this)(p) + "</Prefix></CommonPrefixes>";
    return out;
  }
};

ListedNames listed_names(const Query& q) {
  auto e = param(q, "encoding-type");
  if (!e.empty() && e != "url")
    throw Error(400, "InvalidArgument", "Invalid Encoding Method specified in Request");
  return ListedNames{e == "url"};
}

std::string owner_xml(const std::string& id) {
  return "<Owner><ID>" + x::escape(id) + "</ID><DisplayName>" + x::escape(id) +
         "</DisplayName></Owner>";
}

// S3's bucket naming rules: 3-63 characters of a-z, 0-9, '.', '-'; starting and ending with
// a letter or digit; no "..", no IPv4 address, no reserved prefix or suffix.
void check_bucket_name(const std::string& b) {
  const auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  bool ok =
      b.size() >= 3 && b.size() <= 63 && alnum(b.front()) && alnum(b.back()) &&
      std::all_of(b.begin(), b.end(), [&](char c) { return alnum(c) || c == '-' || c == '.'; }) &&
      b.find("..") == std::string::npos && b.find(".-") == std::string::npos &&
      b.find("-.") == std::string::npos && !b.starts_with("xn--") && !b.starts_with("sthree-") &&
      !b.ends_with("-s3alias") && !b.ends_with("--ol-s3");
  if (ok) {  // not an IPv4 address
    int dots = 0;
    bool digits = true;
    for (char c : b) {
      dots += c == '.';
      digits = digits && (c == '.' || (c >= '0' && c <= '9'));
    }
    ok = !(digits && dots == 3);
  }
  if (!ok)
    throw Error(400, "InvalidBucketName",
                "The specified bucket is not valid: bucket names are 3-63 characters of a-z, 0-9, "
                "'.' and '-', begin and end with a letter or digit, and are not IP addresses.");
}

}  // namespace

// ListBuckets: prefix, max-buckets (1..10,000) and continuation-token pages, by name.
S3Response S3Api::list_buckets(const Query& q, const std::string& owner) {
  const auto prefix = param(q, "prefix"), after = param(q, "continuation-token");
  std::size_t max = 10'000;
  if (q.count("max-buckets")) {
    const auto& v = q.at("max-buckets");
    long long n = 0;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec != std::errc() || end != v.data() + v.size() || n < 1 || n > 10'000)
      throw Error(400, "InvalidArgument", "max-buckets must be an integer from 1 to 10000.");
    max = static_cast<std::size_t>(n);
  }
  const auto all = store_.buckets();
  std::vector<const Store::BucketInfo*> page;
  bool truncated = false;
  for (const auto& b : all) {
    if (!b.name.starts_with(prefix) || (!after.empty() && b.name <= after)) continue;
    if (page.size() == max) {
      truncated = true;
      break;
    }
    page.push_back(&b);
  }
  std::string body =
      "<ListAllMyBucketsResult" + std::string(kNs) + ">" + owner_xml(owner) + "<Buckets>";
  for (const auto* b : page)
    body += "<Bucket><Name>" + x::escape(b->name) + "</Name><CreationDate>" +
            iso8601(b->created_ms) + "</CreationDate><BucketRegion>" +
            x::escape(options_.verify.region) + "</BucketRegion></Bucket>";
  body += "</Buckets>";
  if (truncated)
    body += "<ContinuationToken>" + x::escape(page.back()->name) + "</ContinuationToken>";
  if (q.count("prefix")) body += "<Prefix>" + x::escape(prefix) + "</Prefix>";
  return xml(200, body + "</ListAllMyBucketsResult>");
}

std::variant<S3Response, std::unique_ptr<BodySink>> S3Api::bucket_request(const S3Request& r,
                                                                          const std::string& owner,
                                                                          const std::string& bucket,
                                                                          const Query& q) {
  const auto has = [&](const char* k) { return q.count(k) != 0; };
  if (has("cors")) return cors_configuration(r, bucket);  // s3_cors.cpp
  if (r.method == "PUT") return create_bucket(r, bucket);
  if (r.method == "HEAD") {
    if (!store_.bucket_exists(bucket))
      throw Error(404, "NoSuchBucket", "The specified bucket does not exist.");
    S3Response resp;
    resp.headers.emplace_back("x-amz-bucket-region", options_.verify.region);
    resp.head_only = true;
    return resp;
  }
  if (r.method == "DELETE") {
    if (std::find(options_.protected_buckets.begin(), options_.protected_buckets.end(), bucket) !=
        options_.protected_buckets.end())
      throw Error(403, "AccessDenied",
                  "Bucket '" + bucket +
                      "' is one of objects.buckets (Kiln's own assets live there); it is not "
                      "deleted.");
    store_.delete_bucket(bucket);
    S3Response resp;
    resp.status = 204;
    return resp;
  }
  if (r.method == "POST" && has("delete")) return delete_objects(r, bucket);
  if (r.method != "GET")
    throw Error(405, "MethodNotAllowed",
                "The specified method is not allowed against this resource.");
  if (has("location")) {
    if (!store_.bucket_exists(bucket))
      throw Error(404, "NoSuchBucket", "The specified bucket does not exist.");
    // us-east-1 is the empty constraint (S3's GetBucketLocation).
    return xml(
        200, "<LocationConstraint" + std::string(kNs) + ">" +
                 (options_.verify.region == "us-east-1" ? "" : x::escape(options_.verify.region)) +
                 "</LocationConstraint>");
  }
  if (has("uploads")) return list_uploads(q, owner, bucket);
  if (has("versions")) return list_versions(q, owner, bucket);
  return list_objects(q, owner, bucket);
}

std::variant<S3Response, std::unique_ptr<BodySink>> S3Api::create_bucket(
    const S3Request& r, const std::string& bucket) {
  check_bucket_name(bucket);
  const auto length = header(r, "content-length");
  auto create = [this, bucket](const std::string& body) {
    // A CreateBucketConfiguration may name a LocationConstraint: it must be this store's
    // region (us-east-1 also as the empty constraint).
    if (!body.empty()) {
      const auto doc = parse_xml_body(body, "CreateBucketConfiguration");
      for (const auto& c : doc.children) {  // directory buckets, tags...: not this store's
        if (c.name != "LocationConstraint")
          throw Error(
              501, "NotImplemented",
              "CreateBucketConfiguration " + c.name + " is not implemented; nothing was created.");
      }
      const auto* where = doc.one("LocationConstraint");
      if (where != nullptr && where->text != options_.verify.region &&
          !(where->text.empty() && options_.verify.region == "us-east-1"))
        throw Error(400, "InvalidLocationConstraint",
                    "The specified location-constraint is not valid: this store is in " +
                        options_.verify.region + ".");
    }
    store_.create_bucket(bucket);  // exists already: 200 (as us-east-1 answers its owner)
    S3Response resp;
    resp.headers.emplace_back("Location", "/" + bucket);
    return resp;
  };
  if (!length || *length == "0") return create("");
  return checked_xml_sink(r, options_.max_xml_bytes, true, false, create);
}

S3Response S3Api::list_objects(const Query& q, const std::string& owner,
                               const std::string& bucket) {
  // ListObjectsV2 (list-type=2), or ListObjects (v1: marker, NextMarker).
  const bool v2 = q.count("list-type") != 0;
  if (v2 && q.at("list-type") != "2")
    throw Error(400, "InvalidArgument", "list-type must be 2 (or absent, for ListObjects).");
  const auto prefix = param(q, "prefix"), delimiter = param(q, "delimiter");
  const int max_keys = page_size(q, "max-keys");
  const auto name = listed_names(q);
  std::string after;
  if (v2) {
    after = param(q, "start-after");
    if (q.count("continuation-token")) {
      // An empty token is the first page (S3 echoes it).
      after = s3::percent_decode(q.at("continuation-token"));
    }
  } else {
    after = param(q, "marker");
  }
  const auto res = store_.list(bucket, prefix, delimiter, after, max_keys);
  // ListObjects (v1) sends its Prefix as given also with EncodingType=url (S3 does; the SDKs
  // decode only Marker, NextMarker, Delimiter and the names in it); v2 encodes it.
  std::string body = "<ListBucketResult" + std::string(kNs) + "><Name>" + x::escape(bucket) +
                     "</Name><Prefix>" + (v2 ? name(prefix) : x::escape(prefix)) + "</Prefix>";
  if (v2) {
    body += "<KeyCount>" + std::to_string(res.objects.size() + res.common_prefixes.size()) +
            "</KeyCount>";
    if (q.count("start-after"))
      body += "<StartAfter>" + name(q.at("start-after")) + "</StartAfter>";
    if (q.count("continuation-token"))
      body +=
          "<ContinuationToken>" + x::escape(q.at("continuation-token")) + "</ContinuationToken>";
    if (res.truncated)
      body += "<NextContinuationToken>" + x::escape(s3::uri_encode(res.next_start_after)) +
              "</NextContinuationToken>";
  } else {
    body += "<Marker>" + name(after) + "</Marker>";
    // NextMarker: S3 sends it only with a delimiter; sent always (clients use it if present).
    if (res.truncated) body += "<NextMarker>" + name(res.next_start_after) + "</NextMarker>";
  }
  body += "<MaxKeys>" + std::to_string(max_keys) + "</MaxKeys>";
  if (!delimiter.empty()) body += "<Delimiter>" + name(delimiter) + "</Delimiter>";
  body += name.encoding_xml();
  body += std::string("<IsTruncated>") + (res.truncated ? "true" : "false") + "</IsTruncated>";
  // v1 always names the owner; v2 when fetch-owner=true.
  const bool with_owner = !v2 || param(q, "fetch-owner") == "true";
  for (const auto& o : res.objects) {
    body += "<Contents><Key>" + name(o.key) + "</Key><LastModified>" + iso8601(o.last_modified_ms) +
            "</LastModified><ETag>" + x::escape(o.etag) + "</ETag><Size>" + std::to_string(o.size) +
            "</Size>";
    if (with_owner) body += owner_xml(owner);
    body += "<StorageClass>STANDARD</StorageClass></Contents>";
  }
  body += name.prefixes_xml(res.common_prefixes);
  return xml(200, body + "</ListBucketResult>");
}

S3Response S3Api::list_versions(const Query& q, const std::string& owner,
                                const std::string& bucket) {
  // The bucket is unversioned: each object is its one version, "null", and the latest.
  const auto prefix = param(q, "prefix"), delimiter = param(q, "delimiter");
  const auto key_marker = param(q, "key-marker"), version_marker = param(q, "version-id-marker");
  const int max_keys = page_size(q, "max-keys");
  const auto name = listed_names(q);
  if (!version_marker.empty() && key_marker.empty())
    throw Error(400, "InvalidArgument",
                "A version-id marker cannot be specified without a key marker.");
  if (!version_marker.empty() && version_marker != "null")
    throw Error(400, "InvalidArgument", "Invalid version id specified");
  const auto res = store_.list(bucket, prefix, delimiter, key_marker, max_keys);
  std::string body = "<ListVersionsResult" + std::string(kNs) + "><Name>" + x::escape(bucket) +
                     "</Name><Prefix>" + name(prefix) + "</Prefix><KeyMarker>" + name(key_marker) +
                     "</KeyMarker><VersionIdMarker>" + x::escape(version_marker) +
                     "</VersionIdMarker><MaxKeys>" + std::to_string(max_keys) + "</MaxKeys>";
  if (!delimiter.empty()) body += "<Delimiter>" + name(delimiter) + "</Delimiter>";
  body += name.encoding_xml();
  body += std::string("<IsTruncated>") + (res.truncated ? "true" : "false") + "</IsTruncated>";
  if (res.truncated) {
    body += "<NextKeyMarker>" + name(res.next_start_after) + "</NextKeyMarker>";
    if (std::find(res.common_prefixes.begin(), res.common_prefixes.end(), res.next_start_after) ==
        res.common_prefixes.end())
      body += "<NextVersionIdMarker>null</NextVersionIdMarker>";
  }
  for (const auto& o : res.objects) {
    body += "<Version><Key>" + name(o.key) +
            "</Key><VersionId>null</VersionId><IsLatest>true</IsLatest><LastModified>" +
            iso8601(o.last_modified_ms) + "</LastModified><ETag>" + x::escape(o.etag) +
            "</ETag><Size>" + std::to_string(o.size) + "</Size>" + owner_xml(owner) +
            "<StorageClass>STANDARD</StorageClass></Version>";
  }
  body += name.prefixes_xml(res.common_prefixes);
  return xml(200, body + "</ListVersionsResult>");
}

S3Response S3Api::list_uploads(const Query& q, const std::string& owner,
                               const std::string& bucket) {
  const auto prefix = param(q, "prefix"), delimiter = param(q, "delimiter");
  const auto key_marker = param(q, "key-marker"), id_marker = param(q, "upload-id-marker");
  const int max = page_size(q, "max-uploads");
  const auto name = listed_names(q);
  // S3's order (key, then initiation); pages start after (key-marker, upload-id-marker), or
  // after every upload of key-marker when no upload-id-marker is given; a key-marker that is
  // a group (a common prefix) starts after the whole group.
  UploadCursor cursor{key_marker, INT64_MAX, {}};
  if (key_marker.empty()) cursor.initiated = -1;
  if (!id_marker.empty() && !key_marker.empty()) {
    try {
      const auto u = store_.find_upload(bucket, key_marker, id_marker);
      cursor = {key_marker, u.initiated_ms, id_marker};
    } catch (const Error&) {  // gone since: the page starts after the key
    }
  }
  const auto group_of = [&](const std::string& k) -> std::string {
    if (delimiter.empty() || k.compare(0, prefix.size(), prefix) != 0) return {};
    const auto d = k.find(delimiter, prefix.size());
    return d == std::string::npos ? std::string() : k.substr(0, d + delimiter.size());
  };
  if (const auto g = group_of(key_marker); !g.empty()) cursor = {g + "\xff", -1, {}};
  std::vector<UploadInfo> page;
  std::vector<std::string> prefixes;
  bool truncated = false;
  std::string next_key, next_id;
  while (!truncated) {
    const auto batch = store_.list_uploads(bucket, prefix, cursor, 1000);
    if (batch.empty()) break;
    for (const auto& u : batch) {
      cursor = {u.key, u.initiated_ms, u.id};
      const auto common = group_of(u.key);
      if (static_cast<int>(page.size() + prefixes.size()) == max) {
        truncated = true;
        break;
      }
      if (!common.empty()) {
        prefixes.push_back(common);
        next_key = common;
        next_id.clear();
        cursor = {common + "\xff", -1, {}};  // the rest of the group is rolled up in it
        break;                               // fetch again after the group
      }
      page.push_back(u);
      next_key = u.key;
      next_id = u.id;
    }
  }
  std::string body = "<ListMultipartUploadsResult" + std::string(kNs) + "><Bucket>" +
                     x::escape(bucket) + "</Bucket><KeyMarker>" + name(key_marker) +
                     "</KeyMarker><UploadIdMarker>" + x::escape(id_marker) +
                     "</UploadIdMarker><Prefix>" + name(prefix) + "</Prefix>";
  if (!delimiter.empty()) body += "<Delimiter>" + name(delimiter) + "</Delimiter>";
  body += name.encoding_xml();
  if (truncated)
    body += "<NextKeyMarker>" + name(next_key) + "</NextKeyMarker><NextUploadIdMarker>" +
            x::escape(next_id) + "</NextUploadIdMarker>";
  body += "<MaxUploads>" + std::to_string(max) + "</MaxUploads><IsTruncated>" +
          (truncated ? "true" : "false") + "</IsTruncated>";
  for (const auto& u : page) {
    body += "<Upload><Key>" + name(u.key) + "</Key><UploadId>" + x::escape(u.id) +
            "</UploadId><Initiator><ID>" + x::escape(owner) + "</ID><DisplayName>" +
            x::escape(owner) + "</DisplayName></Initiator>" + owner_xml(owner) +
            "<StorageClass>STANDARD</StorageClass><Initiated>" + iso8601(u.initiated_ms) +
            "</Initiated></Upload>";
  }
  body += name.prefixes_xml(prefixes);
  return xml(200, body + "</ListMultipartUploadsResult>");
}

// DeleteObjects (POST /bucket?delete): at most 1,000 keys; the body's integrity is required
// as S3 requires it (Content-MD5 or an x-amz-checksum-* header) and checked.
std::unique_ptr<BodySink> S3Api::delete_objects(const S3Request& r, const std::string& bucket) {
  if (!store_.bucket_exists(bucket))
    throw Error(404, "NoSuchBucket", "The specified bucket does not exist.");
  return checked_xml_sink(
      r, options_.max_xml_bytes, /*checksums_cover_body=*/true, /*required=*/true,
      [this, bucket](const std::string& body) {
        const auto doc = parse_xml_body(body, "Delete");
        const auto objects = doc.all("Object");
        if (objects.empty() || objects.size() > 1000)
          throw Error(400, "MalformedXML", "DeleteObjects takes 1 to 1,000 Object elements.");
        const auto* quiet = doc.one("Quiet");
        const bool is_quiet = quiet != nullptr && quiet->text == "true";
        // Validated whole before anything is deleted.
        for (const auto* o : objects) {
          const auto* k = o->one("Key");
          if (k == nullptr || k->text.empty())
            throw Error(400, "MalformedXML", "Each Object needs one Key.");
          if (o->one("LastModifiedTime") != nullptr || o->one("Size") != nullptr)
            throw Error(501, "NotImplemented",
                        "A header you provided implies functionality that is not implemented "
                        "(conditional deletes by LastModifiedTime or Size; ETag is supported); "
                        "nothing was deleted.");
        }
        std::string out = "<DeleteResult" + std::string(kNs) + ">";
        for (const auto* o : objects) {
          const auto& key = o->one("Key")->text;
          // Unversioned: "null" is the one version there is; any other id names none.
          const auto* version = o->one("VersionId");
          const auto* etag = o->one("ETag");  // a conditional delete (If-Match)
          std::string version_xml;
          if (version != nullptr)
            version_xml = "<VersionId>" + x::escape(version->text) + "</VersionId>";
          try {
            if (version != nullptr && version->text != "null")
              throw Error(400, "InvalidArgument", "Invalid version id specified");
            store_.remove(bucket, key, etag != nullptr ? etag->text : std::string());
            if (!is_quiet)
              out += "<Deleted><Key>" + x::escape(key) + "</Key>" + version_xml + "</Deleted>";
          } catch (const Error& e) {
            out += "<Error><Key>" + x::escape(key) + "</Key>" + version_xml + "<Code>" +
                   x::escape(e.code()) + "</Code><Message>" + x::escape(e.what()) +
                   "</Message></Error>";
          }
        }
        return xml(200, out + "</DeleteResult>");
      });
}
}  // namespace kiln::objects
