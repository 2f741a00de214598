// CreateMultipartUpload and CompleteMultipartUpload (S3 API reference), with S3's
// multipart checksums: an upload may declare an algorithm (x-amz-checksum-algorithm: CRC32,
// CRC32C, CRC64NVME, SHA1, SHA256) and a type (x-amz-checksum-type: COMPOSITE, or
// FULL_OBJECT for the CRCs; CRC64NVME is FULL_OBJECT only). Each part's checksum is then
// recorded (s3_api.cpp, UploadPart); the completion checks the ones its body names, and the
// object's checksum (composite "...-N", or the whole object's CRC) is answered, checked
// against an x-amz-checksum-<alg> header on the completion, and stored with the object.
#include "clients/s3/xml.hpp"
#include "objects/s3_api.hpp"
#include "objects/s3_body.hpp"
#include "objects/s3_util.hpp"
#include "objects/s3_xml_body.hpp"
#include "platform/codec.hpp"

#include <algorithm>
#include <charconv>
#include <optional>

namespace kiln::objects {
namespace {

namespace x = s3::xml;
using namespace detail;

constexpr std::string_view kAlgorithms[] = {"CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"};

}  // namespace

S3Response S3Api::create_multipart(const S3Request& r, const std::string& bucket,
                                   const std::string& key) {
  auto metadata = user_metadata(r);
  std::string algorithm, type;
  if (auto a = header(r, "x-amz-checksum-algorithm")) {
    algorithm = checksum_algorithm("x-amz-checksum-" + *a);
    if (std::find(std::begin(kAlgorithms), std::end(kAlgorithms), algorithm) ==
        std::end(kAlgorithms))
      throw Error(400, "InvalidRequest", "Checksum algorithm provided is unsupported.");
    type = header(r, "x-amz-checksum-type")
               .value_or(algorithm == "CRC64NVME" ? "FULL_OBJECT" : "COMPOSITE");
    // Refused now rather than at completion: a combination S3 does not define.
    multipart_checksum("x-amz-checksum-" + codec::ascii_lower(algorithm), type, {});
    metadata[":x-amz-checksum-algorithm"] = algorithm;
    metadata[":x-amz-checksum-type"] = type;
  } else if (header(r, "x-amz-checksum-type")) {
    throw Error(400, "InvalidRequest",
                "x-amz-checksum-type needs x-amz-checksum-algorithm on CreateMultipartUpload.");
  }
  auto u = store_.create_upload(bucket, key, header(r, "content-type").value_or(""), metadata);
  auto resp =
      xml(200, "<InitiateMultipartUploadResult" + std::string(kNs) + "><Bucket>" +
                   x::escape(bucket) + "</Bucket><Key>" + x::escape(key) + "</Key><UploadId>" +
                   u.id + "</UploadId></InitiateMultipartUploadResult>");
  if (!algorithm.empty()) {
    resp.headers.emplace_back("x-amz-checksum-algorithm", algorithm);
    resp.headers.emplace_back("x-amz-checksum-type", type);
  }
  return resp;
}

std::unique_ptr<BodySink> S3Api::complete_multipart(const S3Request& r, const std::string& id,
                                                    const std::string& bucket,
                                                    const std::string& key) {
  const auto cond = write_condition(r);
  // A checksum of the whole object the client computed, to check against ours.
  std::string whole_name, whole_value;
  const auto whole_type = header(r, "x-amz-checksum-type").value_or("");
  // x-amz-mp-object-size: the size the client expects the object to have (checked).
  std::optional<std::uint64_t> expected_size;
  if (auto v = header(r, "x-amz-mp-object-size")) {
    std::uint64_t n = 0;
    const auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
    if (v->empty() || ec != std::errc() || end != v->data() + v->size())
      throw Error(400, "InvalidRequest", "x-amz-mp-object-size must be a number of bytes.");
    expected_size = n;
  }
  for (const auto& alg : kAlgorithms) {
    const auto name = "x-amz-checksum-" + codec::ascii_lower(alg);
    if (auto v = header(r, name)) whole_name = name, whole_value = *v;
  }
  // Its x-amz-checksum-* headers name the object's checksum; Content-MD5 covers the body.
  return checked_xml_sink(
      r, options_.max_xml_bytes, false, false,
      [this, bucket, key, id, cond, whole_name, whole_value, whole_type,
       expected_size](const std::string& body) {
        std::vector<CompletedPart> parts;
        const auto doc = parse_xml_body(body, "CompleteMultipartUpload");
        for (const auto* p : doc.all("Part")) {
          const auto* n = p->one("PartNumber");
          const auto* e = p->one("ETag");
          if (n == nullptr || e == nullptr)
            throw Error(400, "MalformedXML", "Each Part needs PartNumber and ETag.");
          int number = 0;
          const auto& digits = n->text;
          if (auto [end, ec] =
                  std::from_chars(digits.data(), digits.data() + digits.size(), number);
              ec != std::errc() || end != digits.data() + digits.size())
            throw Error(400, "MalformedXML", "PartNumber must be an integer.");
          CompletedPart part{number, e->text, {}};
          for (const auto& child : p->children) {
            if (child.name == "PartNumber" || child.name == "ETag") continue;
            const bool known =
                std::any_of(std::begin(kAlgorithms), std::end(kAlgorithms),
                            [&](auto alg) { return child.name == "Checksum" + std::string(alg); });
            if (!known)
              throw Error(400, "InvalidRequest",
                          "A Part names " + child.name + ", which this store does not verify.");
            part.checksum = child.text;
          }
          parts.push_back(std::move(part));
        }
        std::string name, value, type;
        auto finish = [&](std::map<std::string, std::string> meta,
                          const std::vector<PartInfo>& used) {
          if (expected_size) {
            std::uint64_t total = 0;
            for (const auto& p : used) total += p.size;
            if (total != *expected_size)
              throw Error(400, "InvalidRequest",
                          "The parts hold " + std::to_string(total) +
                              " bytes; x-amz-mp-object-size says " +
                              std::to_string(*expected_size) + ".");
          }
          auto alg = meta.find(":x-amz-checksum-algorithm");
          if (alg == meta.end()) {
            if (!whole_name.empty())
              throw Error(
                  400, "InvalidRequest",
                  "The upload declared no checksum algorithm; its completion cannot check " +
                      whole_name + ".");
            return meta;
          }
          name = "x-amz-checksum-" + codec::ascii_lower(alg->second);
          type = meta[":x-amz-checksum-type"];
          if (!whole_type.empty() && whole_type != type)
            throw Error(400, "InvalidRequest",
                        "This upload's checksum type is " + type + "; the completion named " +
                            whole_type + ".");
          std::vector<std::pair<std::string, std::uint64_t>> sums;
          for (const auto& p : used) {
            if (p.checksum.empty())
              throw Error(400, "InvalidPart",
                          "Part " + std::to_string(p.number) + " has no " + alg->second +
                              " checksum; upload it again.");
            sums.emplace_back(p.checksum, p.size);
          }
          value = multipart_checksum(name, type, sums);
          if (!whole_name.empty() && (whole_name != name || whole_value != value))
            throw Error(400, "BadDigest",
                        "The " + checksum_algorithm(whole_name) +
                            " you specified did not match the calculated checksum.");
          meta.erase(alg);
          meta[":" + name] = value;
          return meta;
        };
        auto info = store_.complete(bucket, key, id, parts, cond, finish);
        std::string out = "<CompleteMultipartUploadResult" + std::string(kNs) + "><Location>/" +
                          x::escape(bucket) + "/" + x::escape(key) + "</Location><Bucket>" +
                          x::escape(bucket) + "</Bucket><Key>" + x::escape(key) + "</Key><ETag>" +
                          x::escape(info.etag) + "</ETag>";
        for (const auto& [k, v] : info.metadata) {  // also for a repeated completion
          if (k.starts_with(":x-amz-checksum-") && k != ":x-amz-checksum-type") {
            const auto element = "Checksum" + checksum_algorithm(k.substr(1));
            out += "<" + element + ">" + x::escape(v) + "</" + element + ">";
          }
        }
        if (auto t = info.metadata.find(":x-amz-checksum-type"); t != info.metadata.end())
          out += "<ChecksumType>" + x::escape(t->second) + "</ChecksumType>";
        return xml(200, out + "</CompleteMultipartUploadResult>");
      });
}

}  // namespace kiln::objects
