// The embedded object store's storage: buckets, objects and multipart uploads on local
// disk, for `kiln objects` (and `kiln serve`). No HTTP here (see server.cpp).
//
// Layout under the root directory:
//   index.db          SQLite (WAL): buckets, objects (key -> blob), uploads, parts
//   blobs/ab/<id>     object data, named by a random id (never by the user's key)
//   parts/<upload>/<n> multipart parts
//   tmp/              bytes being received
// A write streams into tmp/ (computing MD5 and SHA-256 as it goes), is fsynced, renamed
// into blobs/, and only then recorded in the index, in one transaction: a half-written
// object is never visible, and a crash leaves at worst an unreferenced blob (removed by
// sweep()), never a corrupt object. Keys are rows, not paths: `..`, `/` or any byte but
// NUL in a key never reaches the filesystem.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::sql {
class Connection;
}

namespace kiln::objects {

// An S3 error: the code and status S3 uses for it.
class Error : public std::runtime_error {
 public:
  Error(int status, std::string code, const std::string& message)
      : std::runtime_error(message), status_(status), code_(std::move(code)) {}
  [[nodiscard]] int status() const { return status_; }
  [[nodiscard]] const std::string& code() const { return code_; }

 private:
  int status_;
  std::string code_;
};

// An open descriptor of an object's data, taken under the same lock as the index read that
// named it: the bytes stay readable, and the same, however the key is overwritten or
// deleted afterwards (S3's strong read-after-write: a reader gets the old or the new object,
// never "no such key").
class BlobHandle {
 public:
  explicit BlobHandle(int fd) : fd_(fd) {}
  ~BlobHandle();
  BlobHandle(const BlobHandle&) = delete;
  BlobHandle& operator=(const BlobHandle&) = delete;
  [[nodiscard]] int fd() const { return fd_; }

 private:
  int fd_;
};

struct ObjectInfo {
  std::string bucket;
  std::string key;
  std::uint64_t size = 0;
  std::string etag;  // quoted, as S3 sends it: "\"<md5 hex>\"" or "\"<md5 of md5s>-N\""
  std::string content_type;
  std::int64_t last_modified_ms = 0;
  // x-amz-meta-* (names lowercase, no prefix), and the other headers S3 stores with an
  // object (Cache-Control, Expires...) under ':' + lowercase name.
  std::map<std::string, std::string> metadata;
  std::string blob;                        // path of the data on disk
  std::shared_ptr<const BlobHandle> data;  // set by head(): the data, held open
};

struct ListResult {
  std::vector<ObjectInfo> objects;
  std::vector<std::string> common_prefixes;
  bool truncated = false;
  std::string next_start_after;  // where the next page starts (after the last key or prefix)
};

struct PartInfo {
  int number = 0;
  std::uint64_t size = 0;
  std::string etag;  // quoted
  std::int64_t last_modified_ms = 0;
  std::string checksum;  // the part's S3 flexible checksum, base64 ("" when none was given)
};

struct UploadInfo {
  std::string id;
  std::string bucket;
  std::string key;
  std::int64_t initiated_ms = 0;
  std::map<std::string, std::string> metadata;  // as given to create_upload
};

// A position in the listing of multipart uploads: after (key, initiated, id).
struct UploadCursor {
  std::string key;
  std::int64_t initiated = -1;
  std::string id;
};

// A part named in a CompleteMultipartUpload body.
struct CompletedPart {
  int number = 0;
  std::string etag;
  std::string checksum;  // base64; "" when the body gave none
};

struct StoreLimits {
  std::uint64_t max_object_bytes = 5ULL << 40;  // 5 TiB, as S3
  std::uint64_t max_part_bytes = 5ULL << 30;    // 5 GiB
  std::uint64_t min_part_bytes = 5ULL << 20;    // 5 MiB, all parts but the last
  int max_parts = 10'000;
  std::size_t max_key_bytes = 1024;
};

class Store;

// A conditional write (S3 conditional writes; RFC 9110 section 13.1): checked against the
// key's current object in the same transaction that publishes, so two writers that both
// ask for "create only" cannot both succeed. Failing: 412 PreconditionFailed (If-Match on a
// missing key: 404 NoSuchKey), and nothing is written.
struct WriteCondition {
  bool if_none_match_any = false;  // If-None-Match: *
  std::string if_match;            // If-Match: "etag" (or "*"); "" when absent
  [[nodiscard]] bool any() const { return if_none_match_any || !if_match.empty(); }
};
// Throws the Error the condition calls for against the current object (nullopt: none).
void check_condition(const WriteCondition& c, const std::optional<std::string>& current_etag);

// Bytes of one object or part being received. commit() makes them visible; destroying an
// uncommitted writer discards them.
class Writer {
 public:
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;
  void write(std::string_view bytes);  // throws Error (EntityTooLarge) past the limit
  // No SHA-256 will be declared (an unsigned payload): do not compute it. Before write().
  void skip_sha256() { sha256_ = false; }
  // The body's flexible checksum, verified by the caller: recorded with a part (its value),
  // or with an object (under ':' + name, as a stored header).
  void set_checksum(std::string name, std::string base64) {
    checksum_name_ = std::move(name);
    checksum_ = std::move(base64);
  }
  [[nodiscard]] std::uint64_t size() const { return size_; }
  // Checks the digests the client declared (hex SHA-256, base64 MD5; empty: none), then
  // publishes. Throws Error (XAmzContentSHA256Mismatch, BadDigest) and discards on mismatch.
  ObjectInfo commit(std::string_view expected_sha256_hex = {},
                    std::string_view expected_md5_base64 = {});

 private:
  friend class Store;
  struct Digests;
  Writer(Store& store, std::filesystem::path tmp, std::uint64_t limit);
  Store& store_;
  std::filesystem::path tmp_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
  std::uint64_t limit_;
  bool sha256_ = true;
  std::string checksum_name_, checksum_;
  std::unique_ptr<Digests> digests_;
  std::function<ObjectInfo(const std::filesystem::path&, std::uint64_t, const std::string&)>
      publish_;
};

class Store {
 public:
  explicit Store(std::filesystem::path root, StoreLimits limits = {});
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  void create_bucket(const std::string& bucket);  // idempotent
  // Deletes an empty bucket, aborting its multipart uploads. Throws Error: 404 NoSuchBucket,
  // 409 BucketNotEmpty (objects remain).
  void delete_bucket(const std::string& bucket);
  [[nodiscard]] bool bucket_exists(const std::string& bucket);
  struct BucketInfo {
    std::string name;
    std::int64_t created_ms = 0;
  };
  [[nodiscard]] std::vector<BucketInfo> buckets();  // by name
  // A bucket's CORS configuration document (nullopt: none); set nullopt to delete it.
  std::optional<std::string> bucket_cors(const std::string& bucket);
  void set_bucket_cors(const std::string& bucket, const std::optional<std::string>& document);

  std::unique_ptr<Writer> put(const std::string& bucket, const std::string& key,
                              const std::string& content_type,
                              std::map<std::string, std::string> metadata,
                              WriteCondition condition = {});
  std::optional<ObjectInfo> head(const std::string& bucket, const std::string& key);
  // False when there was nothing to delete (S3 answers 204 either way). `if_match` (an
  // If-Match list, "" for none) is checked in the same transaction: 412 PreconditionFailed
  // when it names another ETag, 404 NoSuchKey when there is no object, and nothing deleted.
  bool remove(const std::string& bucket, const std::string& key, const std::string& if_match = {});
  ListResult list(const std::string& bucket, const std::string& prefix,
                  const std::string& delimiter, const std::string& start_after, int max_keys);
  // Streams bytes [offset, offset + length) of `src` (from head(): the bytes it named, also
  // when the key was overwritten or deleted since) into `w`; the caller commits.
  // `observe` (may be empty) sees every chunk too (a checksum computed on the way).
  void read_into(const ObjectInfo& src, std::uint64_t offset, std::uint64_t length, Writer& w,
                 const std::function<void(std::string_view)>& observe = {});

  UploadInfo create_upload(const std::string& bucket, const std::string& key,
                           const std::string& content_type,
                           std::map<std::string, std::string> metadata);
  std::unique_ptr<Writer> put_part(const std::string& bucket, const std::string& key,
                                   const std::string& upload_id, int part_number);
  // Parts after `marker`, at most `max`; `truncated` says whether more follow.
  std::vector<PartInfo> list_parts(const std::string& bucket, const std::string& key,
                                   const std::string& upload_id, int marker, int max,
                                   bool& truncated);
  // Assembles the parts into the object. Throws Error: InvalidPart (a part missing, or its
  // ETag or a given checksum differing), InvalidPartOrder, EntityTooSmall, NoSuchUpload,
  // the condition's. `finish` (may be empty) turns the upload's metadata and the parts used
  // into the object's metadata (e.g. adding the object's checksum); it may throw Error.
  using FinishMetadata = std::function<std::map<std::string, std::string>(
      std::map<std::string, std::string> upload_metadata, const std::vector<PartInfo>& parts)>;
  ObjectInfo complete(const std::string& bucket, const std::string& key,
                      const std::string& upload_id, const std::vector<CompletedPart>& parts,
                      WriteCondition condition = {}, const FinishMetadata& finish = {});
  // The upload (its metadata too). Throws Error 404 NoSuchUpload / NoSuchBucket.
  UploadInfo find_upload(const std::string& bucket, const std::string& key,
                         const std::string& upload_id);
  void abort(const std::string& bucket, const std::string& key, const std::string& upload_id);
  // Uploads whose key starts with `prefix`, in S3's order (key, then initiation, then id),
  // after the cursor (key, initiated, id; an empty key and -1: from the start), at most
  // `limit`.
  std::vector<UploadInfo> list_uploads(const std::string& bucket, const std::string& prefix,
                                       const UploadCursor& after = {}, int limit = 1000);

  // Removes blobs no object references and temporary files older than `age` (after a crash).
  std::size_t sweep(std::chrono::seconds age);

  [[nodiscard]] const StoreLimits& limits() const { return limits_; }

 private:
  friend class Writer;
  void check_bucket(const std::string& bucket);
  void check_key(const std::string& key) const;
  std::filesystem::path new_tmp();
  // Moves the finished file into blobs/ and records it under info.bucket/info.key in one
  // transaction (running `also` inside it first); the replaced blob is removed after.
  ObjectInfo publish(const std::filesystem::path& tmp, ObjectInfo info,
                     const std::function<void(sql::Connection&)>& also);
  std::filesystem::path blob_path(const std::string& id) const;

  std::filesystem::path root_;
  StoreLimits limits_;
  struct Db;
  std::unique_ptr<Db> db_;
};

}  // namespace kiln::objects
