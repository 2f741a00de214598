// CopyObject and UploadPartCopy (S3 API reference): the source named by x-amz-copy-source

#include "platform/codec.hpp"
// ("bucket/key", URL-encoded, optionally "?versionId=null"), its preconditions
// (x-amz-copy-source-if-match, -if-none-match, -if-modified-since, -if-unmodified-since:
// 412 PreconditionFailed), a byte range for a part (x-amz-copy-source-range), and the
// metadata directive (COPY keeps the source's type and x-amz-meta-*, REPLACE takes the
// request's).
#include "clients/s3/sigv4.hpp"
#include "clients/s3/xml.hpp"
#include "objects/s3_api.hpp"
#include "objects/s3_body.hpp"
#include "objects/s3_util.hpp"

#include <charconv>

namespace kiln::objects {
namespace {

namespace x = s3::xml;
using namespace detail;

constexpr std::uint64_t kMaxCopyBytes = 5ULL << 30;  // S3: 5 GiB in one copy

struct Source {
  std::string bucket, key;
};

Source parse_source(std::string raw) {
  if (const auto q = raw.find('?'); q != std::string::npos) {
    const auto params = query_map(std::string_view(raw).substr(q + 1));
    if (auto v = params.find("versionId"); v != params.end() && v->second != "null")
      throw Error(400, "InvalidArgument", "Invalid version id specified");
    raw.resize(q);
  }
  auto src = s3::percent_decode(raw);
  if (!src.empty() && src.front() == '/') src.erase(0, 1);
  const auto slash = src.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == src.size())
    throw Error(400, "InvalidArgument",
                "Copy Source must mention the source bucket and key: sourcebucket/sourcekey.");
  return {src.substr(0, slash), src.substr(slash + 1)};
}

// x-amz-copy-source-range: "bytes=first-last", inside the source (S3 takes no other form).
std::pair<std::uint64_t, std::uint64_t> parse_copy_range(std::string_view v, std::uint64_t size) {
  const auto bad = [&] {
    return Error(400, "InvalidArgument",
                 "Range specified is not valid for source object of size: " + std::to_string(size));
  };
  if (!v.starts_with("bytes=")) throw bad();
  v.remove_prefix(6);
  const auto dash = v.find('-');
  if (dash == std::string_view::npos) throw bad();
  std::uint64_t first = 0, last = 0;
  const auto a = v.substr(0, dash), b = v.substr(dash + 1);
  auto r1 = std::from_chars(a.data(), a.data() + a.size(), first);
  auto r2 = std::from_chars(b.data(), b.data() + b.size(), last);
  if (a.empty() || b.empty() || r1.ec != std::errc() || r1.ptr != a.data() + a.size() ||
      r2.ec != std::errc() || r2.ptr != b.data() + b.size() || first > last)
    throw bad();
  if (last >= size)  // well-formed, but past the source's end
    throw Error(416, "InvalidRange", "The requested range is not satisfiable.");
  return {first, last - first + 1};
}

}  // namespace

S3Response S3Api::copy_object(const S3Request& r, const Query& q, const std::string& bucket,
                              const std::string& key) {
  const auto src = parse_source(*header(r, "x-amz-copy-source"));
  auto o = store_.head(src.bucket, src.key);
  if (!o) throw Error(404, "NoSuchKey", "The specified key does not exist.");
  if (evaluate_preconditions(r, "x-amz-copy-source-", *o) != Precondition::Holds)
    throw Error(412, "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold.");

  if (q.count("partNumber") != 0 && q.count("uploadId") != 0) {  // UploadPartCopy
    int number = 0;
    const auto& n = q.at("partNumber");
    if (auto [p, ec] = std::from_chars(n.data(), n.data() + n.size(), number);
        ec != std::errc() || p != n.data() + n.size())
      throw Error(400, "InvalidArgument",
                  "Part number must be an integer between 1 and 10000, inclusive.");
    std::uint64_t offset = 0, length = o->size;
    if (auto range = header(r, "x-amz-copy-source-range"))
      std::tie(offset, length) = parse_copy_range(*range, o->size);
    if (length > kMaxCopyBytes)
      throw Error(400, "InvalidRequest",
                  "The specified copy source is larger than the maximum allowable size for a "
                  "copy source: 5368709120");
    // An upload that declared a checksum algorithm records every part's, this one's too.
    const auto upload = store_.find_upload(bucket, key, q.at("uploadId"));
    std::unique_ptr<Checksum> sum;
    if (auto alg = upload.metadata.find(":x-amz-checksum-algorithm"); alg != upload.metadata.end())
      sum = Checksum::make("x-amz-checksum-" + codec::ascii_lower(alg->second));
    auto w = store_.put_part(bucket, key, q.at("uploadId"), number);
    store_.read_into(*o, offset, length, *w, [&](std::string_view chunk) {
      if (sum) sum->update(chunk);
    });
    std::string checksum_xml;
    if (sum) {
      const auto value = sum->base64();
      w->set_checksum(sum->name(), value);
      const auto element = "Checksum" + checksum_algorithm(sum->name());
      checksum_xml = "<" + element + ">" + value + "</" + element + ">";
    }
    const auto part = w->commit();
    return xml(200, "<CopyPartResult" + std::string(kNs) + "><LastModified>" +
                        iso8601(part.last_modified_ms) + "</LastModified><ETag>" +
                        x::escape(part.etag) + "</ETag>" + checksum_xml + "</CopyPartResult>");
  }

  const auto directive = header(r, "x-amz-metadata-directive").value_or("COPY");
  if (directive != "COPY" && directive != "REPLACE")
    throw Error(400, "InvalidArgument", "Unknown metadata directive.");
  if (src.bucket == bucket && src.key == key && directive == "COPY")
    throw Error(400, "InvalidRequest",
                "This copy request is illegal because it is trying to copy an object to itself "
                "without changing the object's metadata, storage class, website redirect "
                "location or encryption attributes.");
  if (o->size > kMaxCopyBytes)
    throw Error(400, "InvalidRequest",
                "The specified copy source is larger than the maximum allowable size for a copy "
                "source: 5368709120");
  const bool replace = directive == "REPLACE";
  auto w =
      store_.put(bucket, key, replace ? header(r, "content-type").value_or("") : o->content_type,
                 replace ? user_metadata(r) : o->metadata, write_condition(r));
  store_.read_into(*o, 0, o->size, *w);
  const auto info = w->commit();
  return xml(200, "<CopyObjectResult" + std::string(kNs) + "><LastModified>" +
                      iso8601(info.last_modified_ms) + "</LastModified><ETag>" +
                      x::escape(info.etag) + "</ETag></CopyObjectResult>");
}

}  // namespace kiln::objects
