// The S3 subset the embedded store speaks, without I/O: a request's header in, either an
// answer at once or a sink for its body, then an answer. server.cpp (Beast) streams the
// bytes; tests can drive this directly.
//
// Path-style addressing (`/bucket/key`). Authentication: SigV4 in the Authorization header
// or a presigned query (s3/verify.hpp), every request but CORS preflights.
#pragma once

#include "clients/s3/verify.hpp"
#include "objects/store.hpp"

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace kiln::objects {

struct S3Request {
  std::string method;
  std::string path;   // percent-encoded, as sent
  std::string query;  // as sent, without '?'
  std::vector<std::pair<std::string, std::string>> headers;
  std::int64_t now_unix = 0;
};

struct S3Response {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;  // XML, or empty
  // A byte range of a file to send after the headers (GET object); `file` empty: none.
  std::string file;
  std::shared_ptr<const BlobHandle> data;  // when set, the file's bytes are read from it
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  bool head_only = false;  // HEAD: headers (with Content-Length) and no body
};

// Receives a request's body, chunk by chunk, then answers.
class BodySink {
 public:
  virtual ~BodySink() = default;
  virtual void write(std::string_view bytes) = 0;  // may throw Error
  // The body's flexible checksum (x-amz-checksum-<alg> name, base64 value), verified by an
  // outer sink, for the innermost sink to record with what it stores. Before finish().
  virtual void note_checksum(const std::string& /*name*/, const std::string& /*value*/) {}
  virtual S3Response finish() = 0;
};

// A request's query parameters, percent-decoded.
using Query = std::map<std::string, std::string>;

struct ApiOptions {
  std::map<std::string, std::string> credentials;  // access key -> secret
  s3::VerifyOptions verify;
  std::vector<std::string> cors_origins;  // "*" allows any; empty: no CORS headers
  // CompleteMultipartUpload bodies: 10,000 parts with a checksum each are ~1.8 MB.
  std::size_t max_xml_bytes = 4 << 20;
  // Virtual-hosted-style requests: a Host of `<bucket>.<domain>[:port]` names the bucket
  // and the whole path is the key. Empty: path-style only.
  std::string virtual_host_domain = "localhost";
  // Buckets DeleteBucket refuses (403): the ones Kiln itself stores into (objects.buckets).
  std::vector<std::string> protected_buckets;
};

class S3Api {
 public:
  S3Api(Store& store, ApiOptions options);
  // An answer at once (errors, GET, HEAD, DELETE, preflights), or a sink for the body.
  std::variant<S3Response, std::unique_ptr<BodySink>> begin(const S3Request& r);
  // An S3 error document.
  S3Response error(int status, const std::string& code, const std::string& message,
                   const std::string& resource) const;
  // CORS headers for a response to a request with these headers: the bucket's CORS
  // configuration decides when it has one, `cors_origins` otherwise (s3_cors.cpp).
  void add_cors(const S3Request& r, S3Response& resp) const;

 private:
  // The bucket a virtual-hosted-style request names in its Host, if it is one.
  std::optional<std::string> virtual_bucket(const S3Request& r) const;
  std::variant<S3Response, std::unique_ptr<BodySink>> route(const S3Request& r);
  // What follows authentication: `r` with hoisted x-amz-* query parameters as headers.
  std::variant<S3Response, std::unique_ptr<BodySink>> route_verified(const S3Request& r,
                                                                     const s3::Verified& who,
                                                                     const std::string& path);
  // Bucket-level operations (s3_bucket.cpp); `owner`: the access key that signed.
  std::variant<S3Response, std::unique_ptr<BodySink>> bucket_request(const S3Request& r,
                                                                     const std::string& owner,
                                                                     const std::string& bucket,
                                                                     const Query& q);
  std::variant<S3Response, std::unique_ptr<BodySink>> create_bucket(const S3Request& r,
                                                                    const std::string& bucket);
  S3Response list_buckets(const Query& q, const std::string& owner);
  S3Response list_objects(const Query& q, const std::string& owner, const std::string& bucket);
  S3Response list_versions(const Query& q, const std::string& owner, const std::string& bucket);
  S3Response list_uploads(const Query& q, const std::string& owner, const std::string& bucket);
  S3Response create_multipart(const S3Request& r, const std::string& bucket,
                              const std::string& key);
  std::unique_ptr<BodySink> complete_multipart(const S3Request& r, const std::string& upload_id,
                                               const std::string& bucket, const std::string& key);
  // The bucket a request names (path-style or virtual-hosted), "" for none.
  std::string bucket_of(const S3Request& r) const;
  // CORS headers from objects.cors_origins for `origin`; false when it is not allowed.
  bool global_cors(const std::string& origin, S3Response& resp) const;
  // A CORS preflight (OPTIONS), answered without authentication.
  S3Response preflight(const S3Request& r, const std::string& path);
  // PutBucketCors, GetBucketCors, DeleteBucketCors.
  std::variant<S3Response, std::unique_ptr<BodySink>> cors_configuration(const S3Request& r,
                                                                         const std::string& bucket);
  // CopyObject, or UploadPartCopy when q names a part (s3_copy.cpp).
  S3Response copy_object(const S3Request& r, const Query& q, const std::string& bucket,
                         const std::string& key);
  // Why a request asks for what this store does not implement (an S3 subresource other
  // than the multipart ones, or a header asking for encryption, object lock, ACL grants,
  // tags or a redirect), or nullopt. Such a request is answered 501 NotImplemented and
  // changes nothing. `bucket_level`: the path names a bucket, not an object.
  // DeleteObjects: a sink for its XML body.
  std::unique_ptr<BodySink> delete_objects(const S3Request& r, const std::string& bucket);
  static std::optional<std::string> not_implemented(const std::string& method, const Query& q,
                                                    bool bucket_level, const S3Request& r);
  Store& store_;
  ApiOptions options_;
};

}  // namespace kiln::objects
