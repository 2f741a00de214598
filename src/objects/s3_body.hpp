// Request bodies of the embedded store's S3 operations, as sinks that can be stacked: the
// object or part being written, S3's flexible checksums (x-amz-checksum-*: CRC32, CRC32C,
// CRC64NVME, SHA-1, SHA-256; Boost.CRC and OpenSSL), aws-chunked decoding with trailers
// (AWS SigV4 streaming, STREAMING-UNSIGNED-PAYLOAD-TRAILER) and small XML documents.
// Private to objects/.
#pragma once

#include "objects/s3_api.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln::objects::detail {

// S3's flexible checksums (x-amz-checksum-<algorithm>, base64 of the big-endian value), computed
// over the body as it arrives.
class Checksum {
 public:
  virtual ~Checksum() = default;
  virtual void update(std::string_view b) = 0;
  [[nodiscard]] virtual std::string raw() = 0;  // big-endian bytes
  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] std::string base64();  // the value as x-amz-checksum-* carries it
  // For a header name such as "x-amz-checksum-crc32"; null for one S3 does not define.
  static std::unique_ptr<Checksum> make(std::string_view header);

 protected:
  std::string name_;
};

// S3's name of a checksum header's algorithm ("x-amz-checksum-crc32" -> "CRC32").
std::string checksum_algorithm(std::string_view header);
// The checksum of a multipart object from its parts' checksums (base64) and sizes:
// COMPOSITE, the algorithm over the parts' raw checksums, "-N" appended; FULL_OBJECT (CRC
// algorithms only), the CRC of the whole object, combined from the parts' CRCs. Throws Error
// 400 InvalidRequest for a combination S3 does not define.
std::string multipart_checksum(std::string_view header, std::string_view type,
                               const std::vector<std::pair<std::string, std::uint64_t>>& parts);

// Throws BadDigest naming the checksum's algorithm.
[[noreturn]] void checksum_mismatch(const Checksum& c);

// Writes the body into `w` and commits it with the declared digests (hex SHA-256, base64
// MD5; empty: none); `answer` makes the response from the stored object.
std::unique_ptr<BodySink> object_sink(std::unique_ptr<Writer> w, std::string sha256_hex,
                                      std::string md5_base64,
                                      std::function<S3Response(const ObjectInfo&)> answer);
// Adds the header `name: value` to the inner sink's answer.
std::unique_ptr<BodySink> echo_sink(std::unique_ptr<BodySink> inner, std::string name,
                                    std::string value);
// Checks the body against a checksum declared in a header (base64 `expected`) before the
// inner sink finishes (BadDigest otherwise); the answer carries the checksum verified. An
// empty `expected` computes the checksum without checking (an upload that declared its
// algorithm, with a part that carries none).
std::unique_ptr<BodySink> checksum_sink(std::unique_ptr<BodySink> inner,
                                        std::unique_ptr<Checksum> sum, std::string expected);
// Decodes aws-chunked into the inner sink; `sum` (may be null): the checksum x-amz-trailer
// announced, checked against the trailer. Malformed: 400 InvalidRequest / IncompleteBody.
// `decoded_length`: x-amz-decoded-content-length, the bytes the chunks must add up to
// (400 IncompleteBody otherwise).
std::unique_ptr<BodySink> chunked_sink(std::unique_ptr<BodySink> inner,
                                       std::unique_ptr<Checksum> sum, std::uint64_t decoded_length);
// Collects a body of at most `limit` bytes (400 MaxMessageLengthExceeded past it), then
// answers with fn(body).
std::unique_ptr<BodySink> xml_sink(std::size_t limit,
                                   std::function<S3Response(const std::string&)> fn);

// An XML request body checked against the request's integrity headers before `fn` sees it:
// Content-MD5 (base64 of 16 bytes: InvalidDigest when it is not; BadDigest when it differs)
// and, when `checksums_cover_body`, one x-amz-checksum-* header (BadDigest). `required`:
// one of them must be there (S3 requires it for DeleteObjects and PutBucketCors).
std::unique_ptr<BodySink> checked_xml_sink(const S3Request& r, std::size_t limit,
                                           bool checksums_cover_body, bool required,
                                           std::function<S3Response(const std::string&)> fn);

}  // namespace kiln::objects::detail
