// An S3 client: SigV4-signed requests over the platform's HTTP client (blocking, one
// connection kept alive per client), path-style or virtual-hosted-style addressing, retries
// with exponential backoff and jitter on 5xx, throttling (503 SlowDown) and dropped
// connections. Bodies stream from files in 64 KiB chunks and into a callback: memory
// stays flat whatever the object size.
//
// Blocking by design: call it from worker threads (API handlers run on a pool, the
// uploader on its own threads), never from an event loop. One Client per thread.
#pragma once

#include "clients/s3/sigv4.hpp"
#include "platform/http_client.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace kiln::s3 {

class S3Error : public std::runtime_error {
 public:
  S3Error(int status, std::string code, const std::string& message)
      : std::runtime_error(code + ": " + message), status_(status), code_(std::move(code)) {}
  [[nodiscard]] int status() const { return status_; }  // 0: no HTTP answer (network)
  [[nodiscard]] const std::string& code() const { return code_; }

 private:
  int status_;
  std::string code_;
};

struct ClientOptions {
  std::string endpoint;    // http://host[:port] or https://host[:port]
  std::string ca_file;     // https: PEM CAs to trust; empty: the system's (SSL_CERT_FILE honoured)
  bool verify_tls = true;  // https: check the certificate and that it names the host
  std::string region = "us-east-1";
  Credentials credentials;
  bool path_style = true;  // false: http://bucket.host/key
  std::chrono::milliseconds timeout{30'000};
  int max_attempts = 4;
  std::chrono::milliseconds backoff{100};  // doubled per attempt, with jitter
};

struct ObjectMeta {
  std::string key;
  std::uint64_t size = 0;
  std::string etag;
  std::string content_type;
  std::string last_modified;
};

struct ListPage {
  std::vector<ObjectMeta> objects;
  std::vector<std::string> common_prefixes;
  std::string next_token;  // empty on the last page
};

struct Part {
  int number = 0;
  std::string etag;
  std::uint64_t size = 0;
};

struct Upload {
  std::string key;
  std::string id;
};

// A request body: bytes in memory, or a range of a file (platform/http_client.hpp).
using Body = http::Body;

class Client {
 public:
  explicit Client(ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  ObjectMeta put_object(const std::string& bucket, const std::string& key, const Body& body,
                        const std::string& content_type = "application/octet-stream");
  // Streams the object (or the inclusive byte range) into `sink`; returns its metadata.
  ObjectMeta get_object(const std::string& bucket, const std::string& key,
                        const std::function<void(std::string_view)>& sink,
                        std::optional<std::pair<std::uint64_t, std::uint64_t>> range = {});
  std::string get_object(const std::string& bucket, const std::string& key);
  std::optional<ObjectMeta> head_object(const std::string& bucket, const std::string& key);
  void delete_object(const std::string& bucket, const std::string& key);
  ListPage list_objects(const std::string& bucket, const std::string& prefix = "",
                        const std::string& delimiter = "", const std::string& token = "",
                        int max_keys = 1000);
  ObjectMeta copy_object(const std::string& src_bucket, const std::string& src_key,
                         const std::string& dst_bucket, const std::string& dst_key);

  std::string create_multipart(const std::string& bucket, const std::string& key,
                               const std::string& content_type = "application/octet-stream");
  std::string upload_part(const std::string& bucket, const std::string& key,
                          const std::string& upload_id, int number, const Body& body);  // ETag
  std::vector<Part> list_parts(const std::string& bucket, const std::string& key,
                               const std::string& upload_id);  // every page
  // Sent with `If-None-Match: *` (create only): an object already at `key` is 412
  // PreconditionFailed (S3 conditional writes) and stays.
  ObjectMeta complete_multipart(const std::string& bucket, const std::string& key,
                                const std::string& upload_id, const std::vector<Part>& parts);
  void abort_multipart(const std::string& bucket, const std::string& key,
                       const std::string& upload_id);
  std::vector<Upload> list_multipart_uploads(const std::string& bucket,
                                             const std::string& prefix = "");

  // A presigned URL for `method` on the object; `query` adds parameters (partNumber=...).
  // `headers` are signed too: the request must then carry them with these values (e.g.
  // x-amz-checksum-sha256, so that the store refuses other bytes).
  std::string presign(const std::string& method, const std::string& bucket, const std::string& key,
                      std::int64_t expires_s, const std::string& query = "",
                      const std::vector<std::pair<std::string, std::string>>& headers = {}) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::s3
