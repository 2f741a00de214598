// Direct uploads and assets (docs/uploads.md): the browser or `kiln upload` sends the bytes
// straight to object storage with presigned URLs; this service only decides, signs and
// records. Below the multipart threshold one presigned PUT (its x-amz-checksum-sha256
// signed when the client declared a SHA-256, so the store refuses any other bytes); above
// it a multipart upload whose parts are presigned on demand, resumable from any device (the
// parts the store holds are listed from ListParts). Completion checks the parts and the
// size (HeadObject), for a multipart upload with a declared SHA-256 the object's hash (read
// back streaming), and what the first bytes say the file is; then the asset row, the
// upload's state and an `asset.uploaded` event (the outbox) are written in one transaction.
//
// Every method blocks (database and S3 calls): call them from worker threads. Expected
// refusals are values (errors.hpp); a database outage throws sql::Error to the caller's
// top (the request), as does a bug.
#pragma once

#include "assets/errors.hpp"
#include "assets/upload.hpp"
#include "clients/s3/client_pool.hpp"
#include "store/asset_processing.hpp"
#include "store/assets.hpp"
#include "store/database.hpp"

#include <boost/json/object.hpp>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace kiln::metrics {
class Registry;
class Counter;
template <class M>
class Family;
}  // namespace kiln::metrics

namespace kiln::assets {

struct UploadOptions {
  s3::ClientOptions storage;    // what Kiln calls (HeadObject, multipart, ...); endpoint "" = none
  std::string public_endpoint;  // what presigned URLs name (browsers reach it); "" = same
  std::string bucket = "kiln";
  std::string cdn_base;  // "" = downloads are presigned GETs
  UploadPolicy policy;
  std::uint64_t project_quota = 100ULL << 30;  // bytes: live assets plus open uploads
  std::int64_t url_ttl_s = 900;                // presigned upload URLs
  std::int64_t download_ttl_s = 3600;          // presigned GETs
  std::int64_t stale_after_s = 7 * 86'400;     // open uploads idle this long are aborted
  std::size_t max_parts_per_request = 100;
};

// Who asks: a user, or the service key (which may touch any upload).
struct Actor {
  bool service = false;
  std::string user;
};

// A presigned request for the client to send as is.
struct PresignedRequest {
  std::string method;
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;  // to send exactly (signed)
  std::int64_t expires_at = 0;                               // s since the Unix epoch
};

struct Download {
  std::string url;
  std::optional<std::int64_t> expires_at;  // s; nullopt: a CDN URL that does not expire
  std::string cache_control;
};

struct Started {
  std::variant<store::Upload, store::Asset> what;  // the new upload, or the existing asset
  store::Receipt receipt;
};

struct Completed {
  store::Asset asset;
  store::Upload upload;
  bool created = false;  // false: completed before (an idempotent repeat)
  store::Receipt receipt;
};

class UploadService {
 public:
  UploadService(store::Database& db, UploadOptions options, metrics::Registry& registry);
  ~UploadService();
  UploadService(const UploadService&) = delete;
  UploadService& operator=(const UploadService&) = delete;

  [[nodiscard]] bool has_storage() const { return storage_ != nullptr; }
  [[nodiscard]] const UploadOptions& options() const { return options_; }

  // --- uploads --------------------------------------------------------------------------
  // Checks and records a new upload, its bytes reserved against the project's quota in the
  // same transaction; creates the multipart upload first when it is one. The project's
  // live asset with the declared SHA-256 instead, if there is one (deduplication).
  // Errors: plan_upload's, not_found (project gone), quota_exceeded, no_storage,
  // storage_unavailable.
  Result<Started> start(const Actor& who, const std::string& project, NewUpload n);
  // The upload, if `who` may touch it (its creator, or the service key); not_found
  // otherwise, as for one that does not exist. `after`: read-your-writes.
  Result<store::Upload> find(const Actor& who, const std::string& project, const std::string& id,
                             const store::Receipt& after);
  // The same by id alone (Uppy's routes name no project).
  Result<store::Upload> find(const Actor& who, const std::string& id, const store::Receipt& after);
  // The parts the store holds (ListParts, every page). Errors: storage_unavailable.
  Result<std::vector<s3::Part>> held_parts(const store::Upload& u);
  // A fresh presigned PUT for a single-request upload.
  [[nodiscard]] PresignedRequest put_request(const store::Upload& u) const;
  // A presigned URL for part `n` of a multipart upload.
  [[nodiscard]] std::string part_url(const store::Upload& u, std::uint64_t n) const;
  // Records activity (an upload in use is not swept as stale).
  void touch(const store::Upload& u);
  // Completes the upload (idempotent: a completed one returns its asset). `client_parts`:
  // number -> ETag as the client sent them; empty: every part the store holds.
  // Errors: aborted, parts_to_complete's, parts_rejected, not_uploaded, size_mismatch,
  // sha256_mismatch, type_not_allowed (what the first bytes say), storage_unavailable.
  // A size, hash or type failure aborts the upload and removes its bytes.
  Result<Completed> complete(const store::Upload& u,
                             const std::vector<std::pair<int, std::string>>& client_parts);
  // Aborts an open upload and removes its bytes; true when this call did it (false: it was
  // aborted already). Errors: completed.
  Result<bool> abort(const store::Upload& u, const std::string& reason);
  // Aborts open uploads idle for longer than stale_after_s (at most 500 per call); returns
  // how many. Safe on several nodes at once: each upload is claimed by one.
  std::size_t sweep_stale();

  // --- assets ---------------------------------------------------------------------------
  // Live assets of the project by id after `after_id`, at most `limit`.
  std::vector<store::Asset> list_assets(const std::string& project, const std::string& after_id,
                                        std::size_t limit, const store::Receipt& after);
  Result<store::Asset> find_asset(const std::string& project, const std::string& id,
                                  const store::Receipt& after);
  // Where to fetch the asset's bytes (a presigned GET naming its file name and type, or
  // the CDN URL). Needs storage.
  [[nodiscard]] Download download(const store::Asset& a) const;
  // What the pipeline made of the asset (kPipelineVersion's row), or nullopt when nothing
  // was recorded yet (its job waits, or it was uploaded before the pipeline existed).
  std::optional<store::AssetProcessing> processing(const store::Asset& a,
                                                   const store::Receipt& after);
  // The asset's manifest (the pipeline's JSON) with a `url` beside each level's `uri`.
  // Errors: not_found (not ready), no_storage, storage_unavailable.
  Result<boost::json::object> manifest(const store::Asset& a, const store::Receipt& after);
  // The same for a processing row known to be ready (the scene stream's many assets).
  Result<boost::json::object> manifest_of(const store::AssetProcessing& ready);
  // Where to fetch one derived file (a presigned GET or the CDN URL).
  [[nodiscard]] Download derived_download(const std::string& key,
                                          const std::string& content_type) const;
  // Queues the asset for one more run of the current pipeline version, in one transaction:
  // the row queued (store::asset_processing::requeue) and the event
  // `asset.process_requested` that the outbox relay turns into its job (so a job queue
  // that is down delays the run, never loses it). `started` is false when the row was
  // queued, processing or ready already; `now` is the row as that transaction left it.
  struct Requeued {
    bool started = false;
    std::optional<store::AssetProcessing> now;
    store::Receipt receipt;
  };
  Requeued requeue(const store::Asset& a);
  // Deletes the asset (soft), records `asset.deleted`, then removes its bytes unless
  // another live asset uses them. Errors: not_found.
  Result<store::Receipt> delete_asset(const std::string& project, const std::string& id);

 private:
  Error storage_failed(const s3::S3Error& e) const;
  void discard_storage(const store::Upload& u);
  void delete_key_unless_used(s3::Client& s3c, const std::string& project, const std::string& key);
  bool mark_aborted(const store::Upload& u, const std::string& reason);
  Result<std::string> detect_type(const store::Upload& u);
  Result<void> check_object(const store::Upload& u);
  Result<Completed> record(const store::Upload& u, const std::string& detected);

  store::Database& db_;
  UploadOptions options_;
  std::unique_ptr<s3::ClientPool> storage_;  // null: no storage configured
  std::unique_ptr<s3::Client> presigner_;    // signs URLs naming the public endpoint
  // Stored manifests by key: their keys name their content, so an entry never goes stale.
  // Bounded (emptied when full).
  std::mutex manifests_mu_;
  std::map<std::string, boost::json::object, std::less<>> manifests_;
  metrics::Family<metrics::Counter>& events_;
  metrics::Family<metrics::Counter>& bytes_;
};

}  // namespace kiln::assets
