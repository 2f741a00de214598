// Direct uploads (the API's side): the browser or `kiln upload` sends the bytes straight to
// object storage with presigned URLs; the API only decides, signs and records. Below the
// multipart threshold one presigned PUT (its x-amz-checksum-sha256 signed when the client
// declared a SHA-256, so the store refuses any other bytes); above it a multipart upload
// whose parts are presigned on demand, resumable from any device (the parts the store
// holds are listed from ListParts). Completion checks the parts and the size (HeadObject)
// and, for a multipart upload with a declared SHA-256, the object's hash (read back
// streaming, in 64 KiB pieces); then the asset row, the upload's state and an
// `asset.uploaded` event (the `events` outbox) are written in one transaction.
#pragma once

#include "clients/s3/client.hpp"

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace kiln::api {

struct UploadOptions {
  s3::ClientOptions storage;    // what the API calls (HeadObject, multipart, ...)
  std::string public_endpoint;  // what presigned URLs name (browsers reach it); "" = same
  std::string bucket = "kiln";
  std::string cdn_base;  // "" = downloads are presigned GETs
  std::uint64_t multipart_threshold = 100ULL << 20;
  std::uint64_t part_size = 16ULL << 20;  // at least 5 MiB; grown so parts <= 10,000
  std::uint64_t max_size = 64ULL << 30;
  std::uint64_t project_quota = 100ULL << 30;
  std::vector<std::string> content_types;   // allowed; "type/*" matches a family
  std::int64_t url_ttl_s = 900;             // presigned upload URLs
  std::int64_t download_ttl_s = 3600;       // presigned GETs
  std::int64_t stale_after_s = 7 * 86'400;  // open uploads older than this are aborted
  std::size_t max_parts_per_request = 100;
};

// S3 clients for API threads: a client is blocking and single-threaded, so each call
// borrows one (idle ones are kept, at most `keep`).
class StorageClients {
 public:
  StorageClients(s3::ClientOptions options, std::size_t keep)
      : options_(std::move(options)), keep_(keep) {}

  class Lease {
   public:
    Lease(StorageClients& owner, std::unique_ptr<s3::Client> c) : owner_(owner), c_(std::move(c)) {}
    ~Lease() { owner_.give_back(std::move(c_)); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    s3::Client* operator->() { return c_.get(); }
    s3::Client& operator*() { return *c_; }

   private:
    StorageClients& owner_;
    std::unique_ptr<s3::Client> c_;
  };

  Lease take() {
    std::unique_ptr<s3::Client> c;
    {
      std::lock_guard lock(mu_);
      if (!idle_.empty()) {
        c = std::move(idle_.back());
        idle_.pop_back();
      }
    }
    if (!c) c = std::make_unique<s3::Client>(options_);
    return Lease(*this, std::move(c));
  }

 private:
  void give_back(std::unique_ptr<s3::Client> c) {
    std::lock_guard lock(mu_);
    if (idle_.size() < keep_) idle_.push_back(std::move(c));
  }
  s3::ClientOptions options_;
  std::size_t keep_;
  std::mutex mu_;
  std::vector<std::unique_ptr<s3::Client>> idle_;
};

}  // namespace kiln::api
