// The object store's storage engine: the private SQLite index (Store::Db), blobs published
// atomically, and multipart assembly. Over 500 lines on purpose: every operation follows one
// lock and publication discipline on one private schema, which reads best in one place.
#include "objects/store.hpp"

#include "platform/clock.hpp"
#include "platform/codec.hpp"

#include "clients/s3/sigv4.hpp"
#include "clients/sql/sql.hpp"
#include "platform/ids.hpp"
#include "platform/utf8.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json.hpp>

#include <chrono>
#include <cstring>
#include <mutex>
#include <set>

namespace kiln::objects {

namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

std::string hex(const unsigned char* p, std::size_t n) {
  return codec::hex(std::string_view(reinterpret_cast<const char*>(p), n));
}

std::string base64(const unsigned char* p, std::size_t n) {
  return codec::base64(std::string_view(reinterpret_cast<const char*>(p), n));
}

std::string unquote(std::string_view etag) {
  std::string e(etag);
  if (e.size() >= 2 && e.front() == '"' && e.back() == '"') e = e.substr(1, e.size() - 2);
  return codec::ascii_lower(e);
}

std::string meta_json(const std::map<std::string, std::string>& m) {
  json::object o;
  for (const auto& [k, v] : m) o[k] = v;
  return json::serialize(o);
}

std::map<std::string, std::string> meta_map(const std::string& s) {
  std::map<std::string, std::string> out;
  boost::system::error_code ec;
  auto v = json::parse(s, ec);
  if (ec || !v.is_object()) return out;
  for (const auto& kv : v.as_object()) {
    if (kv.value().is_string()) out[std::string(kv.key())] = std::string(kv.value().as_string());
  }
  return out;
}

void fsync_dir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

[[noreturn]] void io_failure(const std::string& what) {
  throw Error(500, "InternalError", what + ": " + std::strerror(errno));
}

// Appends the file at `from` to the open descriptor `out` (kernel copy, flat memory).
// Appends everything readable from `in` (from its start) to `out`.
void append_fd(int out, int in) {
  loff_t at = 0;
  for (;;) {
    const ssize_t n = ::copy_file_range(in, &at, out, nullptr, 1 << 30, 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      io_failure("copy part");
    }
  }
}

}  // namespace

// --- the index ---------------------------------------------------------------------------

struct Store::Db {
  std::mutex mu;
  std::unique_ptr<sql::Connection> conn;
};

struct Writer::Digests {
  Digests() : md5(EVP_MD_CTX_new()), sha(EVP_MD_CTX_new()) {
    EVP_DigestInit_ex(md5, EVP_md5(), nullptr);
    EVP_DigestInit_ex(sha, EVP_sha256(), nullptr);
  }
  ~Digests() {
    EVP_MD_CTX_free(md5);
    EVP_MD_CTX_free(sha);
  }
  EVP_MD_CTX* md5;
  EVP_MD_CTX* sha;
};

Store::Store(fs::path root, StoreLimits limits) : root_(std::move(root)), limits_(limits) {
  for (const char* d : {"blobs", "parts", "tmp"}) fs::create_directories(root_ / d);
  db_ = std::make_unique<Db>();
  sql::ConnectOptions co;
  co.statement_timeout = std::chrono::seconds(30);
  db_->conn = sql::connect("sqlite:" + (root_ / "index.db").string(), co);
  db_->conn->exec(R"sql(
CREATE TABLE IF NOT EXISTS buckets (name TEXT PRIMARY KEY, created_at BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
  bucket TEXT NOT NULL, key TEXT NOT NULL, blob TEXT NOT NULL, size BIGINT NOT NULL,
  etag TEXT NOT NULL, content_type TEXT NOT NULL, metadata TEXT NOT NULL,
  last_modified BIGINT NOT NULL, PRIMARY KEY (bucket, key));
CREATE TABLE IF NOT EXISTS uploads (
  id TEXT PRIMARY KEY, bucket TEXT NOT NULL, key TEXT NOT NULL, content_type TEXT NOT NULL,
  metadata TEXT NOT NULL, initiated BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS bucket_cors (bucket TEXT PRIMARY KEY, document TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS completed_uploads (
  id TEXT PRIMARY KEY, bucket TEXT NOT NULL, key TEXT NOT NULL, etag TEXT NOT NULL,
  parts TEXT NOT NULL, completed BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS parts (
  upload TEXT NOT NULL, number INTEGER NOT NULL, size BIGINT NOT NULL, etag TEXT NOT NULL,
  last_modified BIGINT NOT NULL, checksum TEXT NOT NULL DEFAULT '', PRIMARY KEY (upload, number));
)sql");
  // Added after the first release of the store: data directories made before get the column.
  bool has_checksum = false;
  for (const auto& r : db_->conn->exec("PRAGMA table_info(parts)").rows)
    has_checksum = has_checksum || r.str(1) == "checksum";
  if (!has_checksum)
    db_->conn->exec("ALTER TABLE parts ADD COLUMN checksum TEXT NOT NULL DEFAULT ''");
}

Store::~Store() = default;

fs::path Store::new_tmp() {
  return root_ / "tmp" / ids::random_hex(12);
}

fs::path Store::blob_path(const std::string& id) const {
  return root_ / "blobs" / id.substr(0, 2) / id;
}

void Store::create_bucket(const std::string& bucket) {
  if (bucket.size() < 3 || bucket.size() > 63 ||
      !std::all_of(bucket.begin(), bucket.end(), [](char c) {
        return std::islower(static_cast<unsigned char>(c)) ||
               std::isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '.';
      })) {
    throw Error(400, "InvalidBucketName",
                "Bucket names are 3-63 characters of a-z, 0-9, '-' and '.'.");
  }
  std::lock_guard lock(db_->mu);
  db_->conn->exec(
      "INSERT INTO buckets (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
      {bucket, clock::unix_ms()});
}

void Store::delete_bucket(const std::string& bucket) {
  std::vector<std::string> uploads;
  {
    std::lock_guard lock(db_->mu);
    auto& c = *db_->conn;
    c.begin_write();
    try {
      if (c.exec("SELECT 1 FROM buckets WHERE name = $1", {bucket}).rows.empty())
        throw Error(404, "NoSuchBucket", "The specified bucket does not exist.");
      if (!c.exec("SELECT 1 FROM objects WHERE bucket = $1 LIMIT 1", {bucket}).rows.empty())
        throw Error(409, "BucketNotEmpty", "The bucket you tried to delete is not empty.");
      for (const auto& r : c.exec("SELECT id FROM uploads WHERE bucket = $1", {bucket}).rows)
        uploads.push_back(r.str(0));
      c.exec("DELETE FROM parts WHERE upload IN (SELECT id FROM uploads WHERE bucket = $1)",
             {bucket});
      c.exec("DELETE FROM uploads WHERE bucket = $1", {bucket});
      c.exec("DELETE FROM bucket_cors WHERE bucket = $1", {bucket});
      c.exec("DELETE FROM buckets WHERE name = $1", {bucket});
      c.exec("COMMIT");
    } catch (...) {
      c.exec("ROLLBACK");
      throw;
    }
  }
  std::error_code ec;  // parts of aborted uploads; leftovers go with sweep()
  for (const auto& id : uploads) fs::remove_all(root_ / "parts" / id, ec);
}

bool Store::bucket_exists(const std::string& bucket) {
  std::lock_guard lock(db_->mu);
  return !db_->conn->exec("SELECT 1 FROM buckets WHERE name = $1", {bucket}).rows.empty();
}

std::vector<Store::BucketInfo> Store::buckets() {
  std::lock_guard lock(db_->mu);
  std::vector<BucketInfo> out;
  for (const auto& r : db_->conn->exec("SELECT name, created_at FROM buckets ORDER BY name").rows)
    out.push_back({r.str(0), r.i64(1)});
  return out;
}

std::optional<std::string> Store::bucket_cors(const std::string& bucket) {
  std::lock_guard lock(db_->mu);
  auto r = db_->conn->exec("SELECT document FROM bucket_cors WHERE bucket = $1", {bucket});
  if (r.rows.empty()) return std::nullopt;
  return r.rows[0].str(0);
}

void Store::set_bucket_cors(const std::string& bucket, const std::optional<std::string>& document) {
  check_bucket(bucket);
  std::lock_guard lock(db_->mu);
  if (!document) {
    db_->conn->exec("DELETE FROM bucket_cors WHERE bucket = $1", {bucket});
    return;
  }
  db_->conn->exec(
      "INSERT INTO bucket_cors (bucket, document) VALUES ($1, $2) ON CONFLICT (bucket) DO UPDATE "
      "SET document = excluded.document",
      {bucket, *document});
}

void Store::check_bucket(const std::string& bucket) {
  if (!bucket_exists(bucket))
    throw Error(404, "NoSuchBucket", "The specified bucket does not exist.");
}

void Store::check_key(const std::string& key) const {
  if (key.empty()) throw Error(400, "InvalidArgument", "The object key is empty.");
  if (key.size() > limits_.max_key_bytes)
    throw Error(400, "KeyTooLongError", "Your key is too long (at most 1024 bytes).");
  if (key.find('\0') != std::string::npos)
    throw Error(400, "InvalidArgument", "Object keys cannot contain NUL.");
  // S3 keys are Unicode in UTF-8; listings are XML 1.0, which cannot carry the other control
  // characters (nor U+FFFE, U+FFFF): such a key could be stored but never listed.
  if (!utf8::valid(key))
    throw Error(400, "InvalidArgument", "Object keys are UTF-8; this one is not.");
  for (std::size_t i = 0; i < key.size();) {
    const auto cp = *utf8::decode(key, i);
    if ((cp < 0x20 && cp != '\t' && cp != '\n' && cp != '\r') || cp == 0xfffe || cp == 0xffff)
      throw Error(400, "InvalidArgument",
                  "Object keys may not hold control characters other than tab, LF and CR "
                  "(XML 1.0 cannot list them).");
  }
}

// --- writer ------------------------------------------------------------------------------

Writer::Writer(Store& store, fs::path tmp, std::uint64_t limit)
    : store_(store), tmp_(std::move(tmp)), limit_(limit), digests_(std::make_unique<Digests>()) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd_ < 0) io_failure("create " + tmp_.string());
}

Writer::~Writer() {
  if (fd_ >= 0) ::close(fd_);
  if (!tmp_.empty()) {
    std::error_code ec;
    fs::remove(tmp_, ec);
  }
}

void Writer::write(std::string_view bytes) {
  if (fd_ < 0) throw Error(500, "InternalError", "write after commit");
  if (size_ + bytes.size() > limit_) {
    throw Error(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size.");
  }
  EVP_DigestUpdate(digests_->md5, bytes.data(), bytes.size());
  if (sha256_) EVP_DigestUpdate(digests_->sha, bytes.data(), bytes.size());
  size_ += bytes.size();
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd_, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      io_failure("write");
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

ObjectInfo Writer::commit(std::string_view expected_sha256_hex,
                          std::string_view expected_md5_base64) {
  unsigned char md5[EVP_MAX_MD_SIZE], sha[EVP_MAX_MD_SIZE];
  unsigned int md5_len = 0, sha_len = 0;
  EVP_DigestFinal_ex(digests_->md5, md5, &md5_len);
  EVP_DigestFinal_ex(digests_->sha, sha, &sha_len);
  if (!expected_sha256_hex.empty() &&
      (!sha256_ || unquote(expected_sha256_hex) != hex(sha, sha_len))) {
    throw Error(400, "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match what was computed.");
  }
  if (!expected_md5_base64.empty() && expected_md5_base64 != base64(md5, md5_len)) {
    throw Error(400, "BadDigest", "The Content-MD5 you specified did not match what we received.");
  }
  if (::fsync(fd_) != 0) io_failure("fsync");
  ::close(fd_);
  fd_ = -1;
  auto info = publish_(tmp_, size_, hex(md5, md5_len));
  tmp_.clear();  // published: nothing to discard
  return info;
}

// --- objects -----------------------------------------------------------------------------

namespace {

ObjectInfo row_info(const std::string& bucket, const sql::Row& r) {
  // key, blob, size, etag, content_type, metadata, last_modified
  ObjectInfo o;
  o.bucket = bucket;
  o.key = r.str(0);
  o.blob = r.str(1);
  o.size = static_cast<std::uint64_t>(r.i64(2));
  o.etag = r.str(3);
  o.content_type = r.str(4);
  o.metadata = meta_map(r.str(5));
  o.last_modified_ms = r.i64(6);
  return o;
}

// The part list of a completion, as a repeated one must name it again ("n:etag,...").
std::string parts_fingerprint(const std::vector<CompletedPart>& parts) {
  std::string out;
  for (const auto& p : parts) out += std::to_string(p.number) + ":" + unquote(p.etag) + ",";
  return out;
}

// How long a completed upload's id is remembered for a repeated completion.
constexpr std::int64_t kCompletedMemoryMs = 24LL * 3600 * 1000;

constexpr const char* kObjectColumns =
    "key, blob, size, etag, content_type, metadata, last_modified";

}  // namespace

ObjectInfo Store::publish(const fs::path& tmp, ObjectInfo info,
                          const std::function<void(sql::Connection&)>& also) {
  const std::string id = ids::random_hex(16);
  const auto dest = blob_path(id);
  fs::create_directories(dest.parent_path());
  fs::rename(tmp, dest);
  fsync_dir(dest.parent_path());
  info.blob = dest.string();
  info.last_modified_ms = clock::unix_ms();
  if (info.content_type.empty()) info.content_type = "binary/octet-stream";
  std::string old;
  {
    std::lock_guard lock(db_->mu);
    auto& c = *db_->conn;
    c.begin_write();
    try {
      // The bucket may have been deleted while the bytes arrived.
      if (c.exec("SELECT 1 FROM buckets WHERE name = $1", {info.bucket}).rows.empty())
        throw Error(404, "NoSuchBucket", "The specified bucket does not exist.");
      if (also) also(c);
      auto prev = c.exec("SELECT blob FROM objects WHERE bucket = $1 AND key = $2",
                         {info.bucket, info.key});
      if (!prev.rows.empty()) old = prev.rows[0].str(0);
      c.exec(
          "INSERT INTO objects (bucket, key, blob, size, etag, content_type, metadata, "
          "last_modified) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (bucket, key) DO "
          "UPDATE SET blob = excluded.blob, size = excluded.size, etag = excluded.etag, "
          "content_type = excluded.content_type, metadata = excluded.metadata, last_modified = "
          "excluded.last_modified",
          {info.bucket, info.key, info.blob, static_cast<std::int64_t>(info.size), info.etag,
           info.content_type, meta_json(info.metadata), info.last_modified_ms});
      c.exec("COMMIT");
    } catch (...) {
      c.exec("ROLLBACK");
      std::error_code ec;
      fs::remove(dest, ec);
      throw;
    }
  }
  if (!old.empty()) {
    std::error_code ec;
    fs::remove(old, ec);  // readers that opened it keep their descriptor
  }
  return info;
}

void check_condition(const WriteCondition& c, const std::optional<std::string>& current_etag) {
  if (c.if_none_match_any && current_etag)
    throw Error(412, "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold (If-None-Match: "
                "the key exists).");
  if (!c.if_match.empty()) {
    if (!current_etag) throw Error(404, "NoSuchKey", "The specified key does not exist.");
    // A list of ETags (RFC 9110 section 13.1.1): any one of them, or "*".
    bool listed = false;
    std::string_view rest = c.if_match;
    while (!listed) {
      const auto comma = rest.find(',');
      auto e = rest.substr(0, comma);
      while (!e.empty() && (e.front() == ' ' || e.front() == '\t')) e.remove_prefix(1);
      while (!e.empty() && (e.back() == ' ' || e.back() == '\t')) e.remove_suffix(1);
      listed = e == "*" || (!e.empty() && unquote(e) == unquote(*current_etag));
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
    if (!listed)
      throw Error(412, "PreconditionFailed",
                  "At least one of the pre-conditions you specified did not hold (If-Match).");
  }
}

namespace {

std::function<void(sql::Connection&)> condition_check(const std::string& bucket,
                                                      const std::string& key, WriteCondition c) {
  if (!c.any()) return {};
  return [bucket, key, c](sql::Connection& conn) {
    auto cur = conn.exec("SELECT etag FROM objects WHERE bucket = $1 AND key = $2", {bucket, key});
    check_condition(c, cur.rows.empty() ? std::nullopt : std::optional(cur.rows[0].str(0)));
  };
}

}  // namespace

std::unique_ptr<Writer> Store::put(const std::string& bucket, const std::string& key,
                                   const std::string& content_type,
                                   std::map<std::string, std::string> metadata,
                                   WriteCondition condition) {
  check_bucket(bucket);
  check_key(key);
  auto w = std::unique_ptr<Writer>(new Writer(*this, new_tmp(), limits_.max_object_bytes));
  auto* writer = w.get();
  w->publish_ = [this, bucket, key, content_type, metadata = std::move(metadata), writer,
                 check = condition_check(bucket, key, condition)](
                    const fs::path& tmp, std::uint64_t size, const std::string& md5) mutable {
    if (!writer->checksum_name_.empty()) {  // stored as S3 does, shown with checksum mode
      metadata[":" + writer->checksum_name_] = writer->checksum_;
      metadata[":x-amz-checksum-type"] = "FULL_OBJECT";
    }
    return publish(
        tmp, ObjectInfo{bucket, key, size, "\"" + md5 + "\"", content_type, 0, metadata, {}, {}},
        check);
  };
  return w;
}

std::optional<ObjectInfo> Store::head(const std::string& bucket, const std::string& key) {
  check_bucket(bucket);
  std::lock_guard lock(db_->mu);
  auto res = db_->conn->exec(
      std::string("SELECT ") + kObjectColumns + " FROM objects WHERE bucket = $1 AND key = $2",
      {bucket, key});
  if (res.rows.empty()) return std::nullopt;
  auto info = row_info(bucket, res.rows[0]);
  // Opened under the lock every writer takes to replace or delete the row, before which
  // the blob is never removed: this is the data the row names.
  const int fd = ::open(info.blob.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) io_failure("open " + info.blob);
  info.data = std::make_shared<const BlobHandle>(fd);
  return info;
}

bool Store::remove(const std::string& bucket, const std::string& key, const std::string& if_match) {
  check_bucket(bucket);
  std::string blob;
  {
    std::lock_guard lock(db_->mu);
    auto& c = *db_->conn;
    if (!if_match.empty()) {  // checked and deleted under the one lock every writer takes
      auto cur = c.exec("SELECT etag FROM objects WHERE bucket = $1 AND key = $2", {bucket, key});
      check_condition(WriteCondition{false, if_match},
                      cur.rows.empty() ? std::nullopt : std::optional(cur.rows[0].str(0)));
    }
    auto res =
        c.exec("DELETE FROM objects WHERE bucket = $1 AND key = $2 RETURNING blob", {bucket, key});
    if (res.rows.empty()) return false;
    blob = res.rows[0].str(0);
  }
  std::error_code ec;
  fs::remove(blob, ec);
  return true;
}

ListResult Store::list(const std::string& bucket, const std::string& prefix,
                       const std::string& delimiter, const std::string& start_after, int max_keys) {
  check_bucket(bucket);
  ListResult out;
  if (max_keys <= 0) return out;
  std::string cursor = start_after;
  // A marker inside a group (a common prefix, or the group itself, as NextMarker names it)
  // starts after every key of that group: they were rolled up into it on an earlier page.
  if (!delimiter.empty() && start_after.compare(0, prefix.size(), prefix) == 0) {
    if (const auto at = start_after.find(delimiter, prefix.size()); at != std::string::npos)
      cursor = start_after.substr(0, at + delimiter.size()) + "\xff";
  }
  int taken = 0;
  for (;;) {
    sql::Result res;
    {
      std::lock_guard lock(db_->mu);
      res = db_->conn->exec(std::string("SELECT ") + kObjectColumns +
                                " FROM objects WHERE bucket = $1 AND key > $2 AND key >= $3 "
                                "ORDER BY key LIMIT 1000",
                            {bucket, cursor, prefix});
    }
    if (res.rows.empty()) return out;
    for (const auto& r : res.rows) {
      const auto key = r.str(0);
      if (key.compare(0, prefix.size(), prefix) != 0) return out;  // past the prefix
      if (taken == max_keys) {
        out.truncated = true;
        return out;
      }
      if (!delimiter.empty()) {
        const auto at = key.find(delimiter, prefix.size());
        if (at != std::string::npos) {
          const auto group = key.substr(0, at + delimiter.size());
          out.common_prefixes.push_back(group);
          out.next_start_after = group;  // the next page starts after every key under it
          ++taken;
          cursor = group + "\xff";  // skip every key under the group
          goto next_batch;
        }
      }
      out.objects.push_back(row_info(bucket, r));
      out.next_start_after = key;
      cursor = key;
      ++taken;
    }
  next_batch:;
  }
}

BlobHandle::~BlobHandle() {
  if (fd_ >= 0) ::close(fd_);
}

void Store::read_into(const ObjectInfo& src, std::uint64_t offset, std::uint64_t length, Writer& w,
                      const std::function<void(std::string_view)>& observe) {
  int in = src.data ? ::dup(src.data->fd()) : ::open(src.blob.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) throw Error(404, "NoSuchKey", "The specified key does not exist.");
  std::string buf(1 << 20, '\0');
  while (length > 0) {
    const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), length));
    const ssize_t n = ::pread(in, buf.data(), want, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(in);
      io_failure("read");
    }
    const std::string_view chunk(buf.data(), static_cast<std::size_t>(n));
    w.write(chunk);
    if (observe) observe(chunk);
    offset += static_cast<std::uint64_t>(n);
    length -= static_cast<std::uint64_t>(n);
  }
  ::close(in);
}

// --- multipart ---------------------------------------------------------------------------

UploadInfo Store::create_upload(const std::string& bucket, const std::string& key,
                                const std::string& content_type,
                                std::map<std::string, std::string> metadata) {
  check_bucket(bucket);
  check_key(key);
  UploadInfo u{ids::random_hex(16), bucket, key, clock::unix_ms(), metadata};
  fs::create_directories(root_ / "parts" / u.id);
  std::lock_guard lock(db_->mu);
  db_->conn->exec(
      "INSERT INTO uploads (id, bucket, key, content_type, metadata, initiated) VALUES ($1, $2, "
      "$3, "
      "$4, $5, $6)",
      {u.id, bucket, key, content_type, meta_json(metadata), u.initiated_ms});
  return u;
}

UploadInfo Store::find_upload(const std::string& bucket, const std::string& key,
                              const std::string& upload_id) {
  check_bucket(bucket);
  std::lock_guard lock(db_->mu);
  auto res = db_->conn->exec(
      "SELECT initiated, metadata FROM uploads WHERE id = $1 AND bucket = $2 AND key = $3",
      {upload_id, bucket, key});
  if (res.rows.empty()) {
    throw Error(
        404, "NoSuchUpload",
        "The specified multipart upload does not exist: it may have been aborted or completed.");
  }
  return UploadInfo{upload_id, bucket, key, res.rows[0].i64(0), meta_map(res.rows[0].str(1))};
}

std::unique_ptr<Writer> Store::put_part(const std::string& bucket, const std::string& key,
                                        const std::string& upload_id, int part_number) {
  if (part_number < 1 || part_number > limits_.max_parts)
    throw Error(400, "InvalidArgument",
                "Part number must be an integer between 1 and 10000, inclusive.");
  find_upload(bucket, key, upload_id);
  auto w = std::unique_ptr<Writer>(new Writer(*this, new_tmp(), limits_.max_part_bytes));
  auto* writer = w.get();
  w->publish_ = [this, bucket, key, upload_id, part_number, writer](
                    const fs::path& tmp, std::uint64_t size, const std::string& md5) {
    const auto dest = root_ / "parts" / upload_id / std::to_string(part_number);
    std::lock_guard lock(db_->mu);
    // The upload may have been aborted or completed while the part arrived.
    if (db_->conn->exec("SELECT 1 FROM uploads WHERE id = $1", {upload_id}).rows.empty())
      throw Error(404, "NoSuchUpload", "The specified multipart upload does not exist.");
    fs::rename(tmp, dest);
    db_->conn->exec(
        "INSERT INTO parts (upload, number, size, etag, last_modified, checksum) VALUES ($1, $2, "
        "$3, $4, $5, $6) ON CONFLICT (upload, number) DO UPDATE SET size = excluded.size, etag = "
        "excluded.etag, last_modified = excluded.last_modified, checksum = excluded.checksum",
        {upload_id, std::int64_t{part_number}, static_cast<std::int64_t>(size), "\"" + md5 + "\"",
         clock::unix_ms(), writer->checksum_});
    return ObjectInfo{bucket, key,           size, "\"" + md5 + "\"", {}, clock::unix_ms(),
                      {},     dest.string(), {}};
  };
  return w;
}

std::vector<PartInfo> Store::list_parts(const std::string& bucket, const std::string& key,
                                        const std::string& upload_id, int marker, int max,
                                        bool& truncated) {
  find_upload(bucket, key, upload_id);
  std::lock_guard lock(db_->mu);
  auto res = db_->conn->exec(
      "SELECT number, size, etag, last_modified, checksum FROM parts WHERE upload = $1 AND "
      "number > $2 ORDER BY number LIMIT $3",
      {upload_id, std::int64_t{marker}, std::int64_t{max + 1}});
  std::vector<PartInfo> out;
  for (const auto& r : res.rows) {
    out.push_back(PartInfo{static_cast<int>(r.i64(0)), static_cast<std::uint64_t>(r.i64(1)),
                           r.str(2), r.i64(3), r.str(4)});
  }
  truncated = static_cast<int>(out.size()) > max;
  if (truncated) out.pop_back();
  return out;
}

ObjectInfo Store::complete(const std::string& bucket, const std::string& key,
                           const std::string& upload_id, const std::vector<CompletedPart>& parts,
                           WriteCondition condition, const FinishMetadata& finish) {
  // Completed already (a client retrying after a lost answer): answered like the first
  // time while the object it made is still the key's (S3 does the same).
  {
    std::lock_guard lock(db_->mu);
    auto done = db_->conn->exec(
        "SELECT etag FROM completed_uploads WHERE id = $1 AND bucket = $2 AND key = $3 AND "
        "parts = $4 AND completed > $5",
        {upload_id, bucket, key, parts_fingerprint(parts), clock::unix_ms() - kCompletedMemoryMs});
    if (!done.rows.empty()) {
      auto cur = db_->conn->exec(
          std::string("SELECT ") + kObjectColumns + " FROM objects WHERE bucket = $1 AND key = $2",
          {bucket, key});
      if (!cur.rows.empty() && cur.rows[0].str(3) == done.rows[0].str(0))
        return row_info(bucket, cur.rows[0]);
    }
  }
  const auto upload = find_upload(bucket, key, upload_id);
  if (parts.empty()) throw Error(400, "MalformedXML", "You must specify at least one part.");
  std::map<int, PartInfo> have;
  // Each part's file, opened under the lock its upload's publish takes to replace it: the
  // bytes assembled are the ones whose ETag was checked, however a part is re-sent meanwhile.
  std::map<int, std::shared_ptr<BlobHandle>> files;
  std::string content_type;
  {
    std::lock_guard lock(db_->mu);
    for (const auto& r :
         db_->conn
             ->exec("SELECT number, size, etag, checksum FROM parts WHERE upload = $1", {upload_id})
             .rows) {
      const auto number = static_cast<int>(r.i64(0));
      have[number] = PartInfo{number, static_cast<std::uint64_t>(r.i64(1)), r.str(2), 0, r.str(3)};
      const auto path = root_ / "parts" / upload_id / std::to_string(number);
      const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) io_failure("open part " + path.string());
      files[number] = std::make_shared<BlobHandle>(fd);
    }
    auto u = db_->conn->exec("SELECT content_type FROM uploads WHERE id = $1", {upload_id});
    content_type = u.rows.at(0).str(0);
  }
  int prev = 0;
  std::string md5s;  // the parts' binary MD5s, concatenated
  std::vector<PartInfo> used;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const auto& [number, etag, checksum] = parts[i];
    if (number <= prev)
      throw Error(400, "InvalidPartOrder", "The list of parts was not in ascending order.");
    prev = number;
    auto it = have.find(number);
    if (it == have.end() || unquote(it->second.etag) != unquote(etag)) {
      throw Error(400, "InvalidPart",
                  "One or more of the specified parts could not be found, or its entity tag did "
                  "not match: part " +
                      std::to_string(number) + ".");
    }
    if (i + 1 < parts.size() && it->second.size < limits_.min_part_bytes) {
      throw Error(400, "EntityTooSmall",
                  "Your proposed upload is smaller than the minimum allowed size: part " +
                      std::to_string(number) + " (all but the last part are at least 5 MiB).");
    }
    if (!checksum.empty() && checksum != it->second.checksum)
      throw Error(400, "InvalidPart",
                  "The checksum given for part " + std::to_string(number) +
                      " is not the one it was uploaded with.");
    used.push_back(it->second);
    const auto h = unquote(it->second.etag);
    for (std::size_t k = 0; k + 1 < h.size(); k += 2)
      md5s.push_back(static_cast<char>(std::stoi(h.substr(k, 2), nullptr, 16)));
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(md5s.data(), md5s.size(), md, &len, EVP_md5(), nullptr);
  const std::string etag = "\"" + hex(md, len) + "-" + std::to_string(parts.size()) + "\"";

  auto object_metadata = finish ? finish(upload.metadata, used) : upload.metadata;

  // Assemble into tmp/, then publish exactly like a single PUT.
  const auto tmp = new_tmp();
  int out = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (out < 0) io_failure("create " + tmp.string());
  std::uint64_t total = 0;
  try {
    for (const auto& part : parts) {
      append_fd(out, files.at(part.number)->fd());
      total += have[part.number].size;
    }
    if (::fsync(out) != 0) io_failure("fsync");
  } catch (...) {
    ::close(out);
    fs::remove(tmp);
    throw;
  }
  ::close(out);
  auto info = publish(
      tmp,
      ObjectInfo{bucket, key, total, etag, content_type, 0, std::move(object_metadata), {}, {}},
      [&, check = condition_check(bucket, key, condition)](sql::Connection& c) {
        // Completed or aborted meanwhile: nothing is published.
        if (c.exec("SELECT 1 FROM uploads WHERE id = $1", {upload_id}).rows.empty())
          throw Error(404, "NoSuchUpload", "The specified multipart upload does not exist.");
        if (check) check(c);
        c.exec("DELETE FROM parts WHERE upload = $1", {upload_id});
        c.exec("DELETE FROM uploads WHERE id = $1", {upload_id});
        c.exec(
            "INSERT INTO completed_uploads (id, bucket, key, etag, parts, completed) VALUES ($1, "
            "$2, $3, $4, $5, $6)",
            {upload_id, bucket, key, etag, parts_fingerprint(parts), clock::unix_ms()});
      });
  std::error_code ec;
  fs::remove_all(root_ / "parts" / upload_id, ec);
  return info;
}

void Store::abort(const std::string& bucket, const std::string& key, const std::string& upload_id) {
  find_upload(bucket, key, upload_id);
  {
    std::lock_guard lock(db_->mu);
    auto& c = *db_->conn;
    c.begin_write();
    c.exec("DELETE FROM parts WHERE upload = $1", {upload_id});
    c.exec("DELETE FROM uploads WHERE id = $1", {upload_id});
    c.exec("COMMIT");
  }
  std::error_code ec;
  fs::remove_all(root_ / "parts" / upload_id, ec);
}

std::vector<UploadInfo> Store::list_uploads(const std::string& bucket, const std::string& prefix,
                                            const UploadCursor& after, int limit) {
  check_bucket(bucket);
  std::lock_guard lock(db_->mu);
  std::vector<UploadInfo> out;
  for (const auto& r :
       db_->conn
           ->exec("SELECT id, key, initiated FROM uploads WHERE bucket = $1 AND key >= $2 AND "
                  "(key, initiated, id) > ($3, $4, $5) ORDER BY key, initiated, id LIMIT $6",
                  {bucket, prefix, after.key, after.initiated, after.id, std::int64_t{limit}})
           .rows) {
    if (r.str(1).compare(0, prefix.size(), prefix) != 0) break;
    out.push_back(UploadInfo{r.str(0), bucket, r.str(1), r.i64(2), {}});
  }
  return out;
}

std::size_t Store::sweep(std::chrono::seconds age) {
  std::size_t removed = 0;
  const auto cutoff = fs::file_time_type::clock::now() - age;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root_ / "tmp", ec)) {
    if (e.last_write_time(ec) < cutoff && fs::remove(e.path(), ec)) ++removed;
  }
  std::set<std::string> referenced;
  {
    std::lock_guard lock(db_->mu);
    for (const auto& r : db_->conn->exec("SELECT blob FROM objects").rows)
      referenced.insert(r.str(0));
    db_->conn->exec("DELETE FROM completed_uploads WHERE completed < $1",
                    {clock::unix_ms() - kCompletedMemoryMs});
  }
  for (const auto& e : fs::recursive_directory_iterator(root_ / "blobs", ec)) {
    if (!e.is_regular_file(ec) || referenced.count(e.path().string()) != 0) continue;
    if (e.last_write_time(ec) < cutoff && fs::remove(e.path(), ec)) ++removed;
  }
  return removed;
}

}  // namespace kiln::objects
