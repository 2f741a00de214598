// Uploads and assets: see uploads.hpp for the design, docs/api.md for the routes.
#include "api/internal.hpp"
#include "api/media_type.hpp"

#include "clients/s3/sigv4.hpp"
#include "platform/clock.hpp"
#include "platform/codec.hpp"
#include "platform/config.hpp"
#include "platform/utf8.hpp"

#include <set>

namespace kiln::api {
namespace {

constexpr std::uint64_t kMinPart = 5ULL << 20;  // S3: every part but the last
constexpr std::uint64_t kMaxParts = 10'000;

struct UploadRow {
  std::string id, project, user, filename;
  std::uint64_t size = 0;
  std::string content_type, sha256, key, multipart_id;
  std::uint64_t part_size = 0;  // 0: parts of any size (Uppy chooses its own)
  std::string state, asset_id, error;
  std::int64_t created_at = 0, updated_at = 0;

  [[nodiscard]] bool multipart() const { return !multipart_id.empty(); }
  [[nodiscard]] std::uint64_t part_count() const {
    if (!multipart() || part_size == 0) return 0;  // 0: not fixed
    return std::max<std::uint64_t>(1, (size + part_size - 1) / part_size);
  }
  [[nodiscard]] std::uint64_t part_bytes(std::uint64_t n) const {
    const auto count = part_count();
    return n < count ? part_size : size - part_size * (count - 1);
  }
};

constexpr std::string_view kUploadCols =
    "id, project_id, user_id, filename, size, content_type, sha256, object_key, multipart_id, "
    "part_size, state, asset_id, error, created_at, updated_at";

UploadRow upload_of(const sql::Row& r) {
  UploadRow u;
  u.id = r.str(0);
  u.project = r.str(1);
  u.user = r.str(2);
  u.filename = r.str(3);
  u.size = static_cast<std::uint64_t>(r.i64(4));
  u.content_type = r.str(5);
  u.sha256 = r.str(6);
  u.key = r.str(7);
  u.multipart_id = r.str(8);
  u.part_size = static_cast<std::uint64_t>(r.i64(9));
  u.state = r.str(10);
  u.asset_id = r.str(11);
  u.error = r.str(12);
  u.created_at = r.i64(13);
  u.updated_at = r.i64(14);
  return u;
}

struct AssetRow {
  std::string id, project, name, sha256;
  std::uint64_t size = 0;
  std::string content_type, key, upload, created_by;
  std::int64_t created_at = 0;
  std::string detected_type;  // from the first bytes (media_type.hpp); "" when unknown
};

constexpr std::string_view kAssetCols =
    "id, project_id, name, sha256, size, content_type, object_key, upload_id, created_by, "
    "created_at, detected_type";

AssetRow asset_of(const sql::Row& r) {
  return AssetRow{r.str(0), r.str(1), r.str(2), r.str(3), static_cast<std::uint64_t>(r.i64(4)),
                  r.str(5), r.str(6), r.str(7), r.str(8), r.i64(9),
                  r.str(10)};
}

json::value null_if_empty(const std::string& s) {
  return s.empty() ? json::value(nullptr) : json::value(s);
}

json::object upload_json(const UploadRow& u) {
  json::object o{{"id", u.id},
                 {"project", u.project},
                 {"filename", u.filename},
                 {"size", u.size},
                 {"content_type", u.content_type},
                 {"sha256", null_if_empty(u.sha256)},
                 {"state", u.state},
                 {"multipart", u.multipart()},
                 {"key", u.key},
                 {"asset", null_if_empty(u.asset_id)},
                 {"error", null_if_empty(u.error)},
                 {"created_at", u.created_at},
                 {"updated_at", u.updated_at}};
  if (u.multipart() && u.part_size > 0) {
    o["part_size"] = u.part_size;
    o["part_count"] = u.part_count();
  }
  return o;
}

json::object asset_json(const AssetRow& a) {
  return {{"id", a.id},
          {"project", a.project},
          {"name", a.name},
          {"sha256", null_if_empty(a.sha256)},
          {"size", a.size},
          {"content_type", a.content_type},
          {"detected_type", null_if_empty(a.detected_type)},
          {"upload", a.upload},
          {"created_by", a.created_by},
          {"created_at", a.created_at}};
}

// A file name as the user sees it: 1-255 bytes, no control characters, no path separators,
// not "." or "..". It names the asset; it never becomes an object key or a path.
// Also valid UTF-8 without C1 controls (U+0080-U+009F) or the bidirectional formatting
// characters (U+061C, U+200E-U+200F, U+202A-U+202E, U+2066-U+2069) that make a name show
// as another ("\u202etxt.exe" reads "exe.txt").
bool valid_filename(std::string_view s) {
  if (s.empty() || s.size() > 255 || s == "." || s == "..") return false;
  for (std::size_t i = 0; i < s.size();) {
    const auto decoded = utf8::decode(s, i);
    if (!decoded) return false;
    const char32_t cp = *decoded;
    if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp == '/' || cp == '\\' || cp == 0x061c ||
        cp == 0x200e || cp == 0x200f || (cp >= 0x202a && cp <= 0x202e) ||
        (cp >= 0x2066 && cp <= 0x2069))
      return false;
  }
  return true;
}

bool valid_sha256(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// type/subtype of RFC 6838 restricted-name characters; parameters are not accepted.
bool valid_media_type(std::string_view s) {
  const auto slash = s.find('/');
  auto token = [](std::string_view t) {
    return !t.empty() && t.size() <= 127 && std::all_of(t.begin(), t.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) ||
             std::string_view("!#$&-^_.+").find(c) != std::string_view::npos;
    });
  };
  return slash != std::string_view::npos && token(s.substr(0, slash)) && token(s.substr(slash + 1));
}

bool type_allowed(const std::vector<std::string>& allowed, std::string_view type) {
  return std::any_of(allowed.begin(), allowed.end(), [&](const std::string& a) {
    if (a == "*/*" || a == type) return true;
    return a.ends_with("/*") && type.starts_with(std::string_view(a).substr(0, a.size() - 1));
  });
}

// `hex` was validated as 64 hex digits when the upload was created.
std::string base64_of_hex(std::string_view hex) {
  return codec::base64(codec::hex_decode(hex).value_or(""));
}

std::uint64_t need_size(const json::object& o, std::string_view field) {
  const auto* v = o.if_contains(field);
  if (v == nullptr) refuse(400, "invalid-request", "'" + std::string(field) + "' is required.");
  if (v->is_uint64()) return v->get_uint64();
  if (v->is_int64() && v->get_int64() >= 0) return static_cast<std::uint64_t>(v->get_int64());
  if (v->is_string()) {  // Uppy sends metadata as strings
    const auto& s = v->get_string();
    char* end = nullptr;
    const auto n = std::strtoull(s.c_str(), &end, 10);
    if (!s.empty() && s.size() <= 20 && *end == '\0' &&
        std::isdigit(static_cast<unsigned char>(s[0])))
      return n;
  }
  refuse(400, "invalid-request", "'" + std::string(field) + "' must be a non-negative integer.");
}

std::string mib(std::uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

[[noreturn]] void no_storage() {
  refuse(503, "unavailable", "No object storage is configured (settings storage.*).");
}

// A storage call that failed: 502 with S3's code (logged by the caller's catch-all).
[[noreturn]] void storage_failed(const s3::S3Error& e) {
  // An object that vanished under a completion (an asset of the same content deleted
  // meanwhile) is the client's to send again, not a storage outage.
  if (e.code() == "NoSuchKey")
    refuse(409, "not-uploaded",
           "The store no longer holds this upload's bytes (an asset with the same content "
           "was deleted meanwhile); send them again.");
  log::warn("api: object storage call failed", {{"status", e.status()}, {"code", e.code()}});
  refuse(502, "storage-unavailable",
         "The object storage refused or did not answer (" + e.code() + "); retry shortly.");
}

}  // namespace

// --- shared steps ---------------------------------------------------------------------------

// The upload, if the caller may touch it: a member of its project, and its creator (the
// service key may touch any). Anything else is 404, as for an upload that does not exist.
static UploadRow load_upload(Api::Impl& api, const Request& req, const Principal& who,
                             const std::string& project, const std::string& id) {
  api.role_in(who, project, req);
  if (!valid_id(id)) not_found();
  std::optional<UploadRow> row;
  api.store.read(api.after(who, req), [&](sql::Connection& c) {
    auto res = c.exec(
        "SELECT " + std::string(kUploadCols) + " FROM uploads WHERE id = $1 AND project_id = $2",
        {id, project});
    if (!res.rows.empty()) row = upload_of(res.rows[0]);
  });
  if (!row || (!who.service && row->user != who.user)) not_found();
  return std::move(*row);
}

static std::optional<AssetRow> asset_by_sha(sql::Connection& c, const std::string& project,
                                            const std::string& sha) {
  auto res = c.exec("SELECT " + std::string(kAssetCols) +
                        " FROM assets WHERE project_id = $1 AND sha256 = $2 AND deleted_at IS NULL",
                    {project, sha});
  if (res.rows.empty()) return std::nullopt;
  return asset_of(res.rows[0]);
}

// A fresh presigned PUT for a single-request upload.
static json::object put_instructions(Api::Impl& api, const UploadRow& u) {
  // The bytes (their checksum) and the type they are stored with are signed: the URL,
  // valid until it expires, can put nothing else, also after completion.
  // The key is content-addressed, shared by every upload of these bytes whatever type each
  // declared: the object is stored as octet-stream (downloads name the asset's type), so no
  // upload's URL can change what another asset's bytes are served as.
  std::vector<std::pair<std::string, std::string>> signed_headers;
  signed_headers.emplace_back("content-type", "application/octet-stream");
  if (!u.sha256.empty())
    signed_headers.emplace_back("x-amz-checksum-sha256", base64_of_hex(u.sha256));
  const auto ttl = api.options.uploads.url_ttl_s;
  json::object headers;
  for (const auto& [k, v] : signed_headers) headers[k] = v;
  return {{"method", "PUT"},
          {"url", api.presigner->presign("PUT", api.options.uploads.bucket, u.key, ttl, "",
                                         signed_headers)},
          {"headers", headers},
          {"expires_at", now_s() + ttl}};
}

static std::string part_url(Api::Impl& api, const UploadRow& u, std::uint64_t n) {
  return api.presigner->presign(
      "PUT", api.options.uploads.bucket, u.key, api.options.uploads.url_ttl_s,
      "partNumber=" + std::to_string(n) + "&uploadId=" + s3::uri_encode(u.multipart_id));
}

// Marks the upload aborted (only if still open) with a reason; true if this call did it.
static bool mark_aborted(Api::Impl& api, const UploadRow& u, const std::string& reason) {
  bool changed = false;
  api.store.write([&](sql::Connection& c) {
    changed = c.exec(
                   "UPDATE uploads SET state = 'aborted', error = $2, updated_at = $3 "
                   "WHERE id = $1 AND state = 'open'",
                   {u.id, reason, clock::unix_ms()})
                  .affected == 1;
  });
  return changed;
}

// Deletes the upload's object unless an asset uses its key (a content-addressed key may be
// another upload's asset). Asked of the primary: a lagging replica could miss a new asset.
// Takes the project row's lock (PostgreSQL; SQLite's write transaction is exclusive
// already). Whatever makes or removes an object key of the project's assets does it under
// this lock: a completion checks its bytes and records its asset, a deletion checks that
// no live asset uses the key and removes the bytes, never interleaved (a content-addressed
// key is shared by every upload of the same bytes).
static void lock_project(sql::Connection& c, const std::string& project) {
  if (c.dialect() == sql::Dialect::Postgres)
    c.exec("SELECT id FROM projects WHERE id = $1 FOR UPDATE", {project});
}

// Removes the object at `key` unless a live asset uses it, under the project's lock (a
// crash inside leaves the object: unreferenced bytes, never an asset without them).
static void delete_key_unless_used(Api::Impl& api, s3::Client& s3c, const std::string& project,
                                   const std::string& key) {
  api.store.write([&](sql::Connection& c) {
    lock_project(c, project);
    const bool used =
        !c.exec("SELECT 1 FROM assets WHERE object_key = $1 AND deleted_at IS NULL", {key})
             .rows.empty();
    if (!used) s3c.delete_object(api.options.uploads.bucket, key);
  });
}

static void delete_unless_used(Api::Impl& api, s3::Client& s3c, const UploadRow& u) {
  delete_key_unless_used(api, s3c, u.project, u.key);
}

// Removes what the store holds for an upload that will not complete.
static void discard_storage(Api::Impl& api, const UploadRow& u) {
  auto s3c = api.storage->take();
  const auto& bucket = api.options.uploads.bucket;
  try {
    if (u.multipart()) {
      try {
        s3c->abort_multipart(bucket, u.key, u.multipart_id);
      } catch (const s3::S3Error& e) {
        if (e.status() != 404) throw;  // NoSuchUpload: completed or aborted already
      }
    }
    delete_unless_used(api, *s3c, u);
  } catch (const s3::S3Error& e) {
    log::warn("api: could not discard an upload's storage",
              {{"upload", u.id}, {"code", e.code()}, {"error", e.what()}});
  }
}

// The parts the store holds, from ListParts (every page).
static std::vector<s3::Part> held_parts(Api::Impl& api, const UploadRow& u) {
  auto s3c = api.storage->take();
  try {
    return s3c->list_parts(api.options.uploads.bucket, u.key, u.multipart_id);
  } catch (const s3::S3Error& e) {
    if (e.status() == 404) return {};
    storage_failed(e);
  }
}

static std::string sha256_of_object(Api::Impl& api, const UploadRow& u) {
  auto s3c = api.storage->take();
  codec::Sha256 sha;
  s3c->get_object(api.options.uploads.bucket, u.key, [&](std::string_view b) { sha.update(b); });
  return sha.finish_hex();
}

struct Completed {
  AssetRow asset;
  UploadRow upload;
  bool created = false;  // false: it was completed before (an idempotent repeat)
  store::Receipt receipt;
};

static AssetRow asset_by_id(sql::Connection& c, const std::string& id) {
  auto res = c.exec("SELECT " + std::string(kAssetCols) + " FROM assets WHERE id = $1", {id});
  if (res.rows.empty()) throw std::runtime_error("asset " + id + " is missing");
  return asset_of(res.rows[0]);
}

// Completion: checks the parts (sizes, none missing), completes the multipart upload,
// checks the object's size and (multipart, declared) SHA-256, then records the asset, the
// upload's state and the event in one transaction. `client_parts`: what the client says
// it uploaded (number -> ETag), checked against the store's; empty: the store's list.
// The media type the object's first bytes say (media_type.hpp), "" when unknown.
static std::string detect_type(Api::Impl& api, const std::string& bucket, const UploadRow& u) {
  if (u.size == 0) return "";
  std::string head;
  const auto last = std::min<std::uint64_t>(u.size, kSniffBytes) - 1;
  try {
    api.storage->take()->get_object(
        bucket, u.key, [&](std::string_view b) { head.append(b); },
        std::pair<std::uint64_t, std::uint64_t>{std::uint64_t{0}, last});
  } catch (const s3::S3Error& e) {
    storage_failed(e);
  }
  return sniff_media_type(head);
}

static Completed complete(Api::Impl& api, UploadRow u,
                          const std::vector<std::pair<int, std::string>>& client_parts) {
  Completed out;
  const auto& bucket = api.options.uploads.bucket;
  if (u.state == "completed") {
    api.store.read({}, [&](sql::Connection& c) { out.asset = asset_by_id(c, u.asset_id); });
    out.upload = u;
    return out;
  }
  if (u.state == "aborted")
    refuse(409, "upload-aborted",
           "This upload was aborted (" + (u.error.empty() ? std::string("by request") : u.error) +
               "); start a new one.");
  if (u.multipart()) {
    auto held = held_parts(api, u);
    std::map<int, s3::Part> by_number;
    for (const auto& p : held) by_number[p.number] = p;
    std::vector<s3::Part> parts;
    if (!client_parts.empty()) {
      int prev = 0;
      for (const auto& [n, etag] : client_parts) {
        if (n <= prev)
          refuse(400, "invalid-parts", "List parts once each, in ascending order of number.");
        prev = n;
        auto it = by_number.find(n);
        auto unq = [](std::string e) {
          std::erase(e, '"');
          return e;
        };
        if (it == by_number.end() || unq(it->second.etag) != unq(etag))
          refuse(409, "parts-missing",
                 "Part " + std::to_string(n) +
                     " is not held by the store with that ETag; upload it (again) and retry.");
        parts.push_back(it->second);
      }
    } else {
      for (const auto& [n, p] : by_number) parts.push_back(p);
    }
    // Parts 1..N, no gaps; fixed sizes when the API chose the part size.
    const std::uint64_t want = u.part_count() > 0 ? u.part_count() : parts.size();
    std::vector<std::string> missing;
    std::uint64_t total = 0;
    for (std::uint64_t n = 1; n <= want; ++n) {
      auto it = by_number.find(static_cast<int>(n));
      const bool listed = std::any_of(parts.begin(), parts.end(), [&](const s3::Part& p) {
        return p.number == static_cast<int>(n);
      });
      if (it == by_number.end() || !listed) {
        if (missing.size() < 20) missing.push_back(std::to_string(n));
        continue;
      }
      if (u.part_count() > 0 && it->second.size != u.part_bytes(n))
        refuse(409, "part-size",
               "Part " + std::to_string(n) + " has " + std::to_string(it->second.size) +
                   " bytes; this upload's parts are " + std::to_string(u.part_bytes(n)) +
                   " bytes. Upload it again.");
      total += it->second.size;
    }
    if (!missing.empty() || parts.size() != want) {
      std::string list;
      for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
      refuse(409, "parts-missing",
             missing.empty() ? std::string("Parts beyond the last one were uploaded.")
                             : "Parts not uploaded yet: " + list + ".");
    }
    if (total != u.size) {
      // Uppy-shaped uploads choose their own part size: the total is what counts.
      refuse(409, "size-mismatch",
             "The parts hold " + std::to_string(total) + " bytes; the upload declared " +
                 std::to_string(u.size) + ". Upload the missing or wrong parts again.");
    }
    auto s3c = api.storage->take();
    try {
      s3c->complete_multipart(bucket, u.key, u.multipart_id, parts);
    } catch (const s3::S3Error& e) {
      if (e.status() == 400) {
        refuse(409, "parts-rejected",
               "The store refused the parts (" + std::string(e.what()) +
                   "); upload them again and retry.");
      }
      // NoSuchUpload, or PreconditionFailed (the key holds an object: the completion is
      // create-only): a concurrent complete did it; the object check below decides.
      if (e.status() != 404 && e.status() != 412) storage_failed(e);
    }
  }
  std::optional<s3::ObjectMeta> head;
  try {
    head = api.storage->take()->head_object(bucket, u.key);
  } catch (const s3::S3Error& e) {
    storage_failed(e);
  }
  if (!head)
    refuse(409, "not-uploaded", "The store holds no bytes for this upload yet; send them first.");
  if (head->size != u.size) {
    if (u.multipart()) {  // the parts are gone: nothing to resume
      mark_aborted(api, u, "size-mismatch");
      discard_storage(api, u);
    } else {
      delete_unless_used(api, *api.storage->take(), u);  // the PUT may be sent again
    }
    api.upload_events.with({"size_mismatch"}).inc();
    refuse(409, "size-mismatch",
           "The store holds " + std::to_string(head->size) + " bytes; the upload declared " +
               std::to_string(u.size) + "." +
               (u.multipart() ? " The upload is aborted." : " PUT the file again."));
  }
  // A single PUT with a declared SHA-256 was checked by the store (the signed
  // x-amz-checksum-sha256 header); a multipart object is hashed here.
  if (u.multipart() && !u.sha256.empty()) {
    std::string got;
    try {
      got = sha256_of_object(api, u);
    } catch (const s3::S3Error& e) {
      storage_failed(e);
    }
    if (got != u.sha256) {
      api.upload_events.with({"sha256_mismatch"}).inc();
      mark_aborted(api, u, "sha256-mismatch");
      discard_storage(api, u);
      refuse(409, "sha256-mismatch",
             "The object's SHA-256 is " + got + ", not the declared " + u.sha256 +
                 "; the upload is aborted and its bytes removed.");
    }
  }

  // What the bytes are, whatever was declared: a type the allow-list does not accept
  // (an executable named scan.png) is refused here.
  const auto detected = detect_type(api, bucket, u);
  if (!detected.empty() && !type_allowed(api.options.uploads.content_types, detected)) {
    api.upload_events.with({"type_refused"}).inc();
    mark_aborted(api, u, "content-type-not-allowed");
    discard_storage(api, u);
    refuse(415, "content-type-not-allowed",
           "The file is " + detected +
               " (from its first bytes), which is not accepted here "
               "(uploads.content_types); the upload is aborted and its bytes removed.");
  }

  // One transaction: the asset (or the one with the same hash that won a race), the
  // upload's state, the event.
  bool duplicate = false;
  const auto now = clock::unix_ms();
  auto record = [&](sql::Connection& c) {
    lock_project(c, u.project);  // no deletion of this key meanwhile (lock_project)
    auto cur = c.exec("SELECT " + std::string(kUploadCols) + " FROM uploads WHERE id = $1" +
                          (c.dialect() == sql::Dialect::Postgres ? " FOR UPDATE" : ""),
                      {u.id});
    if (cur.rows.empty()) throw std::runtime_error("upload vanished");
    out.upload = upload_of(cur.rows[0]);
    if (out.upload.state == "completed") {  // a concurrent complete won
      out.asset = asset_by_id(c, out.upload.asset_id);
      return;
    }
    if (out.upload.state != "open")
      refuse(409, "upload-aborted", "This upload was aborted meanwhile; start a new one.");
    std::optional<AssetRow> same;
    if (!u.sha256.empty()) same = asset_by_sha(c, u.project, u.sha256);
    if (same) {
      out.asset = *same;
      duplicate = true;
    } else {
      // The bytes checked above may have gone since with a deleted asset of the same
      // content (its deletion holds this lock while it removes them): look again, under it.
      std::optional<s3::ObjectMeta> still;
      try {
        still = api.storage->take()->head_object(bucket, u.key);
      } catch (const s3::S3Error& e) {
        storage_failed(e);
      }
      if (!still || still->size != u.size)
        refuse(409, "not-uploaded",
               "The store no longer holds this upload's bytes (an asset with the same content "
               "was deleted meanwhile); send them again.");
      out.asset = AssetRow{"a" + ids::random_hex(12),
                           u.project,
                           u.filename,
                           u.sha256,
                           u.size,
                           u.content_type,
                           u.key,
                           u.id,
                           u.user,
                           now,
                           detected};
      c.exec("INSERT INTO assets (" + std::string(kAssetCols) +
                 ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
             {out.asset.id, out.asset.project, out.asset.name,
              u.sha256.empty() ? sql::Value{} : sql::Value{u.sha256},
              static_cast<std::int64_t>(u.size), u.content_type, u.key, u.id, u.user, now,
              detected.empty() ? sql::Value{} : sql::Value{detected}});
      auto event = asset_json(out.asset);
      event["type"] = "asset.uploaded";
      c.exec(
          "INSERT INTO events (id, kind, project_id, body, created_at) VALUES ($1, $2, $3, $4, $5)",
          {"e" + ids::random_hex(12), "asset.uploaded", u.project, json::serialize(event), now});
    }
    c.exec("UPDATE uploads SET state = 'completed', asset_id = $2, updated_at = $3 WHERE id = $1",
           {u.id, out.asset.id, now});
    out.upload.state = "completed";
    out.upload.asset_id = out.asset.id;
    out.upload.updated_at = now;
    out.created = true;
  };
  try {
    out.receipt = api.store.write(record);
  } catch (const sql::Error& e) {
    // Another upload of the same bytes inserted its asset first (the unique index): once
    // more, and this one finds it.
    if (e.kind() != sql::Error::Kind::Conflict || u.sha256.empty()) throw;
    out.receipt = api.store.write(record);
  }
  if (duplicate && out.asset.key != u.key) discard_storage(api, u);  // its bytes exist already
  if (out.created) api.upload_events.with({duplicate ? "deduplicated" : "completed"}).inc();
  if (out.created && !duplicate) api.uploaded_bytes.with({}).inc(u.size);
  if (out.created && !duplicate)
    log::info("api: asset uploaded", {{"project", u.project},
                                      {"asset", out.asset.id},
                                      {"upload", u.id},
                                      {"bytes", static_cast<std::int64_t>(u.size)}});
  return out;
}

// --- /v1 routes -----------------------------------------------------------------------------

namespace {

struct NewUpload {
  std::string filename, content_type, sha256;
  std::uint64_t size = 0;
  bool force_multipart = false;  // Uppy's multipart routes
};

}  // namespace

// Checks and records a new upload (quota reserved in the same transaction), then creates
// the multipart upload when it is one. Returns the row, or the existing asset (dedup).
static std::variant<UploadRow, AssetRow> start_upload(Api::Impl& api, const Principal& who,
                                                      const std::string& project, NewUpload n,
                                                      store::Receipt& receipt) {
  const auto& o = api.options.uploads;
  // Media types are case-insensitive (RFC 6838 §4.2): kept and compared in lowercase.
  for (auto& ch : n.content_type)
    ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (!valid_filename(n.filename))
    refuse(400, "invalid-request",
           "'filename' must be 1-255 bytes of UTF-8 without control characters, bidirectional "
           "formatting characters, '/' or '\\', and not '.' or '..'.");
  if (!valid_media_type(n.content_type))
    refuse(400, "invalid-request", "'content_type' must be a media type such as image/png.");
  if (!type_allowed(o.content_types, n.content_type))
    refuse(415, "content-type-not-allowed",
           "Files of type " + n.content_type + " are not accepted here (uploads.content_types).");
  if (!n.sha256.empty() && !valid_sha256(n.sha256))
    refuse(400, "invalid-request", "'sha256' must be 64 lowercase hex digits.");
  if (n.size > o.max_size)
    refuse(413, "too-large",
           "The file has " + mib(n.size) + "; at most " + mib(o.max_size) + " per file.");

  UploadRow u;
  u.id = "u" + ids::random_hex(12);
  u.project = project;
  u.user = who.service ? std::string("service") : who.user;
  u.filename = n.filename;
  u.size = n.size;
  u.content_type = n.content_type;
  u.sha256 = n.sha256;
  const bool multipart = n.force_multipart || n.size > o.multipart_threshold;
  // A presigned PUT stays valid until it expires, also after completion: without a signed
  // checksum it could replace an asset's bytes (with an executable, or more than the quota).
  if (!multipart && n.sha256.empty())
    refuse(400, "sha256-required",
           "A file of at most " + std::to_string(o.multipart_threshold) +
               " bytes goes up in one PUT, which needs its 'sha256' (64 lowercase hex digits; "
               "in a browser: crypto.subtle.digest('SHA-256', bytes)) so that the store "
               "accepts exactly these bytes.");
  // A single PUT is content-addressed (the store checks the hash, so the key can only
  // ever hold these bytes); a multipart upload has a key of its own.
  u.key = !multipart && !n.sha256.empty() ? "projects/" + project + "/sha256/" + n.sha256
                                          : "projects/" + project + "/uploads/" + u.id;
  if (multipart && !n.force_multipart) {
    std::uint64_t ps = std::max(o.part_size, kMinPart);
    const auto need = (n.size + kMaxParts - 1) / kMaxParts;
    if (ps < need) ps = (need + (1 << 20) - 1) / (1 << 20) * (1 << 20);
    u.part_size = ps;
  }
  u.state = "open";
  u.created_at = u.updated_at = clock::unix_ms();

  // A multipart upload exists in the store before its row does, so that the row is never
  // seen without it (a reader would take it for a single PUT); refused ones are aborted.
  if (multipart) {
    // The common dedup case first, without creating anything.
    if (!n.sha256.empty()) {
      std::optional<AssetRow> known;
      api.store.read({}, [&](sql::Connection& c) { known = asset_by_sha(c, project, n.sha256); });
      if (known) {
        api.upload_events.with({"deduplicated"}).inc();
        return *known;
      }
    }
    try {
      u.multipart_id = api.storage->take()->create_multipart(o.bucket, u.key, u.content_type);
    } catch (const s3::S3Error& e) {
      storage_failed(e);
    }
  }
  auto drop_multipart = [&] {
    if (u.multipart_id.empty()) return;
    try {
      api.storage->take()->abort_multipart(o.bucket, u.key, u.multipart_id);
    } catch (const s3::S3Error& e) {
      log::warn("api: could not abort a refused multipart upload", {{"code", e.code()}});
    }
  };
  std::optional<AssetRow> existing;
  try {
    receipt = api.store.write([&](sql::Connection& c) {
      // Serialise quota decisions per project (the project row's lock; SQLite's write lock).
      auto p = c.exec(std::string("SELECT id FROM projects WHERE id = $1 AND deleted_at IS NULL") +
                          (c.dialect() == sql::Dialect::Postgres ? " FOR UPDATE" : ""),
                      {project});
      if (p.rows.empty()) not_found();
      if (!n.sha256.empty() && (existing = asset_by_sha(c, project, n.sha256))) return;
      auto used = c.exec(
          "SELECT (SELECT COALESCE(SUM(size), 0) FROM assets WHERE project_id = $1 AND deleted_at "
          "IS NULL) + (SELECT COALESCE(SUM(size), 0) FROM uploads WHERE project_id = $1 AND state "
          "= "
          "'open')",
          {project});
      const auto in_use = static_cast<std::uint64_t>(used.rows.at(0).i64(0));
      if (in_use + n.size > o.project_quota)
        refuse(413, "quota-exceeded",
               "The project holds " + mib(in_use) + " (assets and open uploads); this file's " +
                   mib(n.size) + " would pass its quota of " + mib(o.project_quota) + ".");
      c.exec("INSERT INTO uploads (" + std::string(kUploadCols) +
                 ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'open', NULL, NULL, $11, $11)",
             {u.id, u.project, u.user, u.filename, static_cast<std::int64_t>(u.size),
              u.content_type, u.sha256.empty() ? sql::Value{} : sql::Value{u.sha256}, u.key,
              u.multipart_id.empty() ? sql::Value{} : sql::Value{u.multipart_id},
              u.part_size > 0 ? sql::Value{static_cast<std::int64_t>(u.part_size)} : sql::Value{},
              u.created_at});
    });
  } catch (...) {
    drop_multipart();  // refused (quota, a vanished project) or the database failed
    throw;
  }
  if (existing) {
    drop_multipart();
    api.upload_events.with({"deduplicated"}).inc();
    return *existing;
  }
  api.upload_events.with({"started"}).inc();
  log::info("api: upload started", {{"project", project},
                                    {"upload", u.id},
                                    {"bytes", static_cast<std::int64_t>(u.size)},
                                    {"multipart", multipart}});
  return u;
}

Response Api::Impl::create_upload(const Request& req, const Principal& who) {
  const auto project = req.param("project");
  need(role_in(who, project, req), "editor");
  if (!storage) no_storage();
  auto body = body_object(req, {"filename", "size", "content_type", "sha256"});
  NewUpload n;
  n.filename = need_string(body, "filename");
  n.size = need_size(body, "size");
  n.content_type = need_string(body, "content_type");
  n.sha256 = opt_string(body, "sha256").value_or("");
  store::Receipt r;
  auto started = start_upload(*this, who, project, n, r);
  if (auto* a = std::get_if<AssetRow>(&started)) {
    return ok_json(200, json::object{{"deduplicated", true}, {"asset", asset_json(*a)}});
  }
  const auto& u = std::get<UploadRow>(started);
  json::object o{{"deduplicated", false}, {"upload", upload_json(u)}};
  if (!u.multipart()) o["put"] = put_instructions(*this, u);
  auto resp = ok_json(201, o);
  resp.headers.emplace_back("Location", "/v1/projects/" + project + "/uploads/" + u.id);
  wrote(who, r, resp);
  return resp;
}

Response Api::Impl::get_upload(const Request& req, const Principal& who) {
  if (!storage) no_storage();
  auto u = load_upload(*this, req, who, req.param("project"), req.param("upload"));
  auto o = upload_json(u);
  if (u.state == "open" && u.multipart()) {
    json::array parts;
    std::set<int> have;
    for (const auto& p : held_parts(*this, u)) {
      parts.push_back(json::object{{"number", p.number}, {"size", p.size}, {"etag", p.etag}});
      have.insert(p.number);
    }
    o["parts"] = std::move(parts);
    if (u.part_count() > 0) {
      json::array missing;
      for (std::uint64_t n = 1; n <= u.part_count(); ++n)
        if (!have.contains(static_cast<int>(n))) missing.push_back(n);
      o["missing"] = std::move(missing);
    }
  } else if (u.state == "open") {
    o["put"] = put_instructions(*this, u);
  }
  return ok_json(200, o);
}

Response Api::Impl::presign_parts(const Request& req, const Principal& who) {
  if (!storage) no_storage();
  auto u = load_upload(*this, req, who, req.param("project"), req.param("upload"));
  auto body = body_object(req, {"parts"});
  const auto* list = body.if_contains("parts");
  if (list == nullptr || !list->is_array() || list->as_array().empty())
    refuse(400, "invalid-request", "'parts' must be a non-empty array of part numbers.");
  const auto max = options.uploads.max_parts_per_request;
  if (list->as_array().size() > max)
    refuse(400, "invalid-request", "At most " + std::to_string(max) + " parts per request.");
  if (u.state != "open")
    refuse(409, "upload-" + std::string(u.state == "completed" ? "completed" : "aborted"),
           "This upload is " + u.state + ".");
  if (!u.multipart())
    refuse(409, "not-multipart", "This upload is a single PUT: GET the upload for its URL.");
  json::array out;
  for (const auto& v : list->as_array()) {
    if (!v.is_int64() || v.get_int64() < 1 ||
        static_cast<std::uint64_t>(v.get_int64()) > u.part_count())
      refuse(400, "invalid-request",
             "Part numbers run from 1 to " + std::to_string(u.part_count()) + ".");
    const auto n = static_cast<std::uint64_t>(v.get_int64());
    out.push_back(
        json::object{{"number", n}, {"size", u.part_bytes(n)}, {"url", part_url(*this, u, n)}});
  }
  // Activity keeps the upload from being swept as stale.
  store.write([&](sql::Connection& c) {
    c.exec("UPDATE uploads SET updated_at = $2 WHERE id = $1 AND state = 'open'",
           {u.id, clock::unix_ms()});
  });
  return ok_json(200,
                 json::object{{"parts", out}, {"expires_at", now_s() + options.uploads.url_ttl_s}});
}

Response Api::Impl::complete_upload(const Request& req, const Principal& who) {
  if (!storage) no_storage();
  auto u = load_upload(*this, req, who, req.param("project"), req.param("upload"));
  std::vector<std::pair<int, std::string>> parts;
  if (!req.body.empty()) {
    auto body = body_object(req, {"parts"});
    if (const auto* list = body.if_contains("parts")) {
      if (!list->is_array() || list->as_array().size() > kMaxParts)
        refuse(400, "invalid-request", "'parts' must be an array of {number, etag}.");
      for (const auto& v : list->as_array()) {
        const auto* po = v.if_object();
        if (po == nullptr || !po->contains("number") || !(*po).at("number").is_int64())
          refuse(400, "invalid-request", "'parts' must be an array of {number, etag}.");
        parts.emplace_back(static_cast<int>((*po).at("number").get_int64()),
                           need_string(*po, "etag"));
      }
    }
  }
  auto done = complete(*this, u, parts);
  auto resp = ok_json(done.created ? 201 : 200, json::object{{"asset", asset_json(done.asset)},
                                                             {"upload", upload_json(done.upload)}});
  wrote(who, done.receipt, resp);
  return resp;
}

Response Api::Impl::abort_upload(const Request& req, const Principal& who) {
  if (!storage) no_storage();
  auto u = load_upload(*this, req, who, req.param("project"), req.param("upload"));
  if (u.state == "completed")
    refuse(409, "upload-completed", "This upload is complete; delete the asset instead.");
  if (mark_aborted(*this, u, "aborted by request")) {
    upload_events.with({"aborted"}).inc();
    discard_storage(*this, u);
  }
  return Response{204, "application/json", "", {}};
}

// --- assets -----------------------------------------------------------------------------

// RFC 6266 `attachment` with the name twice: an ASCII fallback (quotes, backslashes and
// controls replaced) and the exact UTF-8 name (RFC 8187 `filename*`).
static std::string content_disposition(const std::string& name) {
  std::string ascii;
  for (unsigned char c : name)
    ascii += (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') ? '_' : static_cast<char>(c);
  return "attachment; filename=\"" + ascii + "\"; filename*=UTF-8''" + s3::uri_encode(name, false);
}

static json::object download_json(Api::Impl& api, const AssetRow& a) {
  const auto& o = api.options.uploads;
  if (!o.cdn_base.empty()) {
    // Objects are written once (content-addressed, or a key per upload): cache forever.
    return {{"url", o.cdn_base + "/" + s3::uri_encode(a.key, true)},
            {"expires_at", nullptr},
            {"cache_control", "public, max-age=31536000, immutable"}};
  }
  // The browser (and `kiln download`) saves it under the asset's name, not the object key.
  // and served as the type it was accepted as, whatever the object was stored with.
  const auto query =
      "response-content-disposition=" + s3::uri_encode(content_disposition(a.name), false) +
      "&response-content-type=" + s3::uri_encode(a.content_type, false);
  return {{"url", api.presigner->presign("GET", o.bucket, a.key, o.download_ttl_s, query)},
          {"expires_at", now_s() + o.download_ttl_s},
          {"cache_control", "private, max-age=" + std::to_string(o.download_ttl_s)}};
}

Response Api::Impl::list_assets(const Request& req, const Principal& who) {
  const auto project = req.param("project");
  role_in(who, project, req);
  const auto limit = page_limit(req);
  const auto after_id = read_cursor(req.query_param("cursor"));
  std::vector<AssetRow> rows;
  store.read(after(who, req), [&](sql::Connection& c) {
    for (const auto& r :
         c.exec("SELECT " + std::string(kAssetCols) +
                    " FROM assets WHERE project_id = $1 AND deleted_at IS NULL AND id > $2 "
                    "ORDER BY id LIMIT $3",
                {project, after_id, static_cast<std::int64_t>(limit + 1)})
             .rows)
      rows.push_back(asset_of(r));
  });
  json::array items;
  for (std::size_t i = 0; i < rows.size() && i < limit; ++i) items.push_back(asset_json(rows[i]));
  json::value next = nullptr;
  if (rows.size() > limit) next = json::string(make_cursor(rows[limit - 1].id));
  return ok_json(200, json::object{{"items", items}, {"next_cursor", next}});
}

Response Api::Impl::get_asset(const Request& req, const Principal& who) {
  const auto project = req.param("project");
  const auto id = req.param("asset");
  role_in(who, project, req);
  if (!valid_id(id)) not_found();
  std::optional<AssetRow> a;
  store.read(after(who, req), [&](sql::Connection& c) {
    auto res = c.exec("SELECT " + std::string(kAssetCols) +
                          " FROM assets WHERE id = $1 AND project_id = $2 AND deleted_at IS NULL",
                      {id, project});
    if (!res.rows.empty()) a = asset_of(res.rows[0]);
  });
  if (!a) not_found();
  auto o = asset_json(*a);
  if (storage) o["download"] = download_json(*this, *a);
  return ok_json(200, o);
}

Response Api::Impl::delete_asset(const Request& req, const Principal& who) {
  const auto project = req.param("project");
  const auto id = req.param("asset");
  need(role_in(who, project, req), "editor");
  if (!valid_id(id)) not_found();
  std::optional<AssetRow> gone;
  auto r = store.write([&](sql::Connection& c) {
    auto res = c.exec("SELECT " + std::string(kAssetCols) +
                          " FROM assets WHERE id = $1 AND project_id = $2 AND deleted_at IS NULL" +
                          (c.dialect() == sql::Dialect::Postgres ? " FOR UPDATE" : ""),
                      {id, project});
    if (res.rows.empty()) return;
    gone = asset_of(res.rows[0]);
    const auto now = clock::unix_ms();
    c.exec("UPDATE assets SET deleted_at = $2 WHERE id = $1", {id, now});
    auto event = asset_json(*gone);
    event["type"] = "asset.deleted";
    c.exec(
        "INSERT INTO events (id, kind, project_id, body, created_at) VALUES ($1, $2, $3, $4, $5)",
        {"e" + ids::random_hex(12), "asset.deleted", project, json::serialize(event), now});
  });
  if (!gone) not_found();
  // Then the bytes, under the project's lock and only if no live asset uses the key: a
  // completion of the same content that recorded its asset in between keeps them; one
  // after finds them gone and asks for them again. Never an asset without bytes.
  if (storage) {
    try {
      delete_key_unless_used(*this, *storage->take(), project, gone->key);
    } catch (const s3::S3Error& e) {
      log::warn("api: could not delete a deleted asset's object",
                {{"asset", id}, {"code", e.code()}});
    }
  }
  log::info("api: asset deleted", {{"project", project}, {"asset", id}});
  Response resp{204, "application/json", "", {}};
  wrote(who, r, resp);
  return resp;
}

// --- Uppy (@uppy/aws-s3, Companion's route shapes) ------------------------------------------
// Uppy names an upload by (uploadId, key); here uploadId is the Kiln upload's id and key its
// object key, which must match. The project comes from the file's metadata.

static UploadRow load_uppy(Api::Impl& api, const Request& req, const Principal& who) {
  const auto id = req.param("upload");
  if (!valid_id(id)) not_found();
  std::string project;
  api.store.read(api.after(who, req), [&](sql::Connection& c) {
    auto res = c.exec("SELECT project_id FROM uploads WHERE id = $1", {id});
    if (!res.rows.empty()) project = res.rows[0].str(0);
  });
  if (project.empty()) not_found();
  auto u = load_upload(api, req, who, project, id);
  if (req.query_param("key").value_or("") != u.key || !u.multipart()) not_found();
  return u;
}

static int part_number(std::string_view s) {
  int n = 0;
  if (s.empty() || s.size() > 5 ||
      !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    refuse(400, "invalid-request", "Part numbers are integers from 1 to 10000.");
  n = std::stoi(std::string(s));
  if (n < 1 || n > static_cast<int>(kMaxParts))
    refuse(400, "invalid-request", "Part numbers are integers from 1 to 10000.");
  return n;
}

static void need_open(const UploadRow& u) {
  if (u.state != "open")
    refuse(409, "upload-" + std::string(u.state == "completed" ? "completed" : "aborted"),
           "This upload is " + u.state + ".");
}

Response Api::Impl::uppy_create(const Request& req, const Principal& who) {
  if (!storage) no_storage();
  auto body = body_object(req, {"filename", "type", "metadata"});
  const auto* meta = body.if_contains("metadata");
  if (meta == nullptr || !meta->is_object())
    refuse(400, "invalid-request",
           "'metadata' must be an object with 'project' and 'size' (Uppy: allowedMetaFields).");
  const auto& m = meta->as_object();
  const auto project = need_string(m, "project");
  need(role_in(who, project, req), "editor");
  NewUpload n;
  n.filename = need_string(body, "filename");
  n.content_type = opt_string(body, "type").value_or("application/octet-stream");
  if (n.content_type.empty()) n.content_type = "application/octet-stream";
  n.size = need_size(m, "size");
  n.sha256 = opt_string(m, "sha256").value_or("");
  n.force_multipart = true;
  store::Receipt r;
  auto started = start_upload(*this, who, project, n, r);
  if (std::holds_alternative<AssetRow>(started))  // Uppy has no "already there": say so
    refuse(409, "duplicate",
           "An asset with this SHA-256 exists in the project: " + std::get<AssetRow>(started).id +
               ".");
  const auto& u = std::get<UploadRow>(started);
  auto resp = ok_json(200, json::object{{"uploadId", u.id}, {"key", u.key}});
  wrote(who, r, resp);
  return resp;
}

Response Api::Impl::uppy_list_parts(const Request& req, const Principal& who) {
  if (!storage) no_storage();
  auto u = load_uppy(*this, req, who);
  need_open(u);
  json::array out;
  for (const auto& p : held_parts(*this, u))
    out.push_back(json::object{{"PartNumber", p.number}, {"Size", p.size}, {"ETag", p.etag}});
  return ok_json(200, out);
}

Response Api::Impl::uppy_sign_part(const Request& req, const Principal& who) {
  if (!storage) no_storage();
  auto u = load_uppy(*this, req, who);
  need_open(u);
  const auto n = part_number(req.param("part"));
  return ok_json(200, json::object{{"url", part_url(*this, u, static_cast<std::uint64_t>(n))},
                                   {"expires", options.uploads.url_ttl_s}});
}

Response Api::Impl::uppy_sign_batch(const Request& req, const Principal& who) {
  if (!storage) no_storage();
  auto u = load_uppy(*this, req, who);
  need_open(u);
  const auto list = req.query_param("partNumbers").value_or("");
  json::object urls;
  std::size_t count = 0;
  for (const auto& s : config::split_list(list)) {
    if (++count > options.uploads.max_parts_per_request)
      refuse(400, "invalid-request",
             "At most " + std::to_string(options.uploads.max_parts_per_request) +
                 " parts per request.");
    const auto n = part_number(s);
    urls[std::to_string(n)] = part_url(*this, u, static_cast<std::uint64_t>(n));
  }
  if (count == 0) refuse(400, "invalid-request", "'partNumbers' lists the parts: 1,2,3.");
  store.write([&](sql::Connection& c) {
    c.exec("UPDATE uploads SET updated_at = $2 WHERE id = $1 AND state = 'open'",
           {u.id, clock::unix_ms()});
  });
  return ok_json(200, json::object{{"presignedUrls", urls}});
}

Response Api::Impl::uppy_complete(const Request& req, const Principal& who) {
  if (!storage) no_storage();
  auto u = load_uppy(*this, req, who);
  auto body = body_object(req, {"parts"});
  const auto* list = body.if_contains("parts");
  if (list == nullptr || !list->is_array() || list->as_array().size() > kMaxParts)
    refuse(400, "invalid-request", "'parts' must be an array of {PartNumber, ETag}.");
  std::vector<std::pair<int, std::string>> parts;
  for (const auto& v : list->as_array()) {
    const auto* po = v.if_object();
    if (po == nullptr || !po->contains("PartNumber") || !po->at("PartNumber").is_int64())
      refuse(400, "invalid-request", "'parts' must be an array of {PartNumber, ETag}.");
    parts.emplace_back(static_cast<int>(po->at("PartNumber").get_int64()),
                       need_string(*po, "ETag"));
  }
  auto done = complete(*this, u, parts);
  auto resp = ok_json(
      200, json::object{{"location", "/v1/projects/" + u.project + "/assets/" + done.asset.id},
                        {"asset", asset_json(done.asset)}});
  wrote(who, done.receipt, resp);
  return resp;
}

Response Api::Impl::uppy_abort(const Request& req, const Principal& who) {
  if (!storage) no_storage();
  auto u = load_uppy(*this, req, who);
  if (u.state == "completed")
    refuse(409, "upload-completed", "This upload is complete; delete the asset instead.");
  if (mark_aborted(*this, u, "aborted by request")) {
    upload_events.with({"aborted"}).inc();
    discard_storage(*this, u);
  }
  return ok_json(200, json::object{});
}

// --- stale uploads --------------------------------------------------------------------------

std::size_t Api::Impl::sweep_stale_uploads() {
  if (!storage) return 0;
  const auto cutoff = clock::unix_ms() - options.uploads.stale_after_s * 1000;
  std::vector<UploadRow> stale;
  store.read({}, [&](sql::Connection& c) {
    for (const auto& r : c.exec("SELECT " + std::string(kUploadCols) +
                                    " FROM uploads WHERE state = 'open' AND updated_at < $1 "
                                    "ORDER BY updated_at LIMIT 500",
                                {cutoff})
                             .rows)
      stale.push_back(upload_of(r));
  });
  std::size_t n = 0;
  for (const auto& u : stale) {
    // The conditional update claims it: another API node sweeping at once skips it.
    if (!mark_aborted(*this, u, "stale: idle for longer than uploads.stale_after_s")) continue;
    upload_events.with({"stale"}).inc();
    discard_storage(*this, u);
    ++n;
  }
  if (n > 0) log::info("api: stale uploads aborted", {{"count", static_cast<std::int64_t>(n)}});
  return n;
}

std::size_t Api::sweep_stale_uploads() {
  return impl_->sweep_stale_uploads();
}

}  // namespace kiln::api
