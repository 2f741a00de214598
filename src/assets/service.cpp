#include "assets/service.hpp"

#include "assets/derived.hpp"

#include "assets/json.hpp"
#include "assets/media_type.hpp"
#include "clients/s3/sigv4.hpp"
#include "platform/clock.hpp"
#include "platform/codec.hpp"
#include "platform/ids.hpp"
#include "platform/log.hpp"
#include "platform/metrics.hpp"
#include "store/outbox.hpp"
#include "store/uploads.hpp"

#include <boost/json/serialize.hpp>

namespace kiln::assets {
namespace {

std::int64_t now_s() {
  return clock::unix_ms() / 1000;
}

// `hex` was checked as 64 hex digits when the upload was created.
std::string base64_of_hex(std::string_view hex) {
  return codec::base64(codec::hex_decode(hex).value_or(""));
}

Error no_storage() {
  return Error{Errc::no_storage, "No object storage is configured (settings storage.*)."};
}

}  // namespace

UploadService::UploadService(store::Database& db, UploadOptions options,
                             metrics::Registry& registry)
    : db_(db),
      options_(std::move(options)),
      events_(registry.counter(
          "kiln_uploads_total",
          "Uploads by what happened: started, deduplicated, completed, aborted (by request), "
          "stale (swept), size_mismatch, sha256_mismatch.",
          {"event"})),
      bytes_(registry.counter("kiln_uploads_completed_bytes_total",
                              "Bytes of the assets that uploads completed.", {})) {
  if (!options_.storage.endpoint.empty()) {
    storage_ = std::make_unique<s3::ClientPool>(options_.storage, 16);
    auto pub = options_.storage;
    if (!options_.public_endpoint.empty()) pub.endpoint = options_.public_endpoint;
    presigner_ = std::make_unique<s3::Client>(pub);
  }
}

UploadService::~UploadService() = default;

// A storage call that failed. An object that vanished under a completion (an asset of the
// same content deleted meanwhile) is the client's to send again, not a storage outage.
Error UploadService::storage_failed(const s3::S3Error& e) const {
  if (e.code() == "NoSuchKey")
    return Error{Errc::not_uploaded,
                 "The store no longer holds this upload's bytes (an asset with the same content "
                 "was deleted meanwhile); send them again."};
  log::warn("api: object storage call failed", {{"status", e.status()}, {"code", e.code()}});
  return Error{Errc::storage_unavailable,
               "The object storage refused or did not answer (" + e.code() + "); retry shortly."};
}

// --- uploads --------------------------------------------------------------------------------

Result<Started> UploadService::start(const Actor& who, const std::string& project, NewUpload n) {
  if (!storage_) return no_storage();
  auto planned = plan_upload(std::move(n), "u" + ids::random_hex(12), project,
                             who.service ? std::string("service") : who.user, clock::unix_ms(),
                             options_.policy);
  if (!planned) return planned.error();
  auto& u = planned->upload;
  const auto& bucket = options_.bucket;
  // A multipart upload exists in the store before its row does, so that the row is never
  // seen without it (a reader would take it for a single PUT); refused ones are aborted.
  if (planned->multipart) {
    if (!u.sha256.empty()) {  // the common dedup case first, without creating anything
      std::optional<store::Asset> known;
      db_.read({},
               [&](sql::Connection& c) { known = store::assets::by_sha256(c, project, u.sha256); });
      if (known) {
        events_.with({"deduplicated"}).inc();
        return Started{*known, {}};
      }
    }
    try {
      u.multipart_id = storage_->take()->create_multipart(bucket, u.key, u.content_type);
    } catch (const s3::S3Error& e) {
      return storage_failed(e);
    }
  }
  auto drop_multipart = [&] {
    if (u.multipart_id.empty()) return;
    try {
      storage_->take()->abort_multipart(bucket, u.key, u.multipart_id);
    } catch (const s3::S3Error& e) {
      log::warn("api: could not abort a refused multipart upload", {{"code", e.code()}});
    }
  };
  std::optional<store::Asset> existing;
  std::optional<Error> refused;
  store::Receipt receipt;
  try {
    receipt = db_.write([&](sql::Connection& c) {
      refused.reset();  // the database may run this again (a retried transaction)
      existing.reset();
      // Quota decisions are serialised per project by its lock.
      if (!store::projects::lock(c, project)) {
        refused = Error{Errc::not_found, "No such resource, or no access to it."};
        return;
      }
      if (!u.sha256.empty() && (existing = store::assets::by_sha256(c, project, u.sha256))) return;
      const auto in_use = store::assets::bytes_in_use(c, project);
      if (in_use + u.size > options_.project_quota) {
        refused = Error{Errc::quota_exceeded, "The project holds " + mib(in_use) +
                                                  " (assets and open uploads); this "
                                                  "file's " +
                                                  mib(u.size) + " would pass its quota of " +
                                                  mib(options_.project_quota) + "."};
        return;
      }
      store::uploads::insert(c, u);
    });
  } catch (...) {
    drop_multipart();  // the database failed
    throw;
  }
  if (refused) {
    drop_multipart();
    return *refused;
  }
  if (existing) {
    drop_multipart();
    events_.with({"deduplicated"}).inc();
    return Started{*existing, receipt};
  }
  events_.with({"started"}).inc();
  log::info("api: upload started", {{"project", project},
                                    {"upload", u.id},
                                    {"bytes", static_cast<std::int64_t>(u.size)},
                                    {"multipart", planned->multipart}});
  return Started{std::move(u), receipt};
}

Result<store::Upload> UploadService::find(const Actor& who, const std::string& project,
                                          const std::string& id, const store::Receipt& after) {
  std::optional<store::Upload> u;
  db_.read(after, [&](sql::Connection& c) { u = store::uploads::find(c, project, id); });
  if (!u || (!who.service && u->user != who.user))
    return Error{Errc::not_found, "No such resource, or no access to it."};
  return std::move(*u);
}

Result<store::Upload> UploadService::find(const Actor& who, const std::string& id,
                                          const store::Receipt& after) {
  std::optional<std::string> project;
  db_.read(after, [&](sql::Connection& c) { project = store::uploads::project_of(c, id); });
  if (!project) return Error{Errc::not_found, "No such resource, or no access to it."};
  return find(who, *project, id, after);
}

Result<std::vector<s3::Part>> UploadService::held_parts(const store::Upload& u) {
  if (!storage_) return no_storage();
  try {
    return storage_->take()->list_parts(options_.bucket, u.key, u.multipart_id);
  } catch (const s3::S3Error& e) {
    if (e.status() == 404) return std::vector<s3::Part>{};  // NoSuchUpload: nothing held
    return storage_failed(e);
  }
}

PresignedRequest UploadService::put_request(const store::Upload& u) const {
  // The bytes (their checksum) and the type they are stored with are signed: the URL,
  // valid until it expires, can put nothing else, also after completion. The key is
  // content-addressed, shared by every upload of these bytes whatever type each declared:
  // the object is stored as octet-stream (downloads name the asset's type), so no upload's
  // URL can change what another asset's bytes are served as.
  PresignedRequest r;
  r.method = "PUT";
  r.headers.emplace_back("content-type", "application/octet-stream");
  if (!u.sha256.empty()) r.headers.emplace_back("x-amz-checksum-sha256", base64_of_hex(u.sha256));
  r.url = presigner_->presign("PUT", options_.bucket, u.key, options_.url_ttl_s, "", r.headers);
  r.expires_at = now_s() + options_.url_ttl_s;
  return r;
}

std::string UploadService::part_url(const store::Upload& u, std::uint64_t n) const {
  return presigner_->presign(
      "PUT", options_.bucket, u.key, options_.url_ttl_s,
      "partNumber=" + std::to_string(n) + "&uploadId=" + s3::uri_encode(u.multipart_id));
}

void UploadService::touch(const store::Upload& u) {
  db_.write([&](sql::Connection& c) { store::uploads::touch(c, u.id, clock::unix_ms()); });
}

bool UploadService::mark_aborted(const store::Upload& u, const std::string& reason) {
  bool changed = false;
  db_.write([&](sql::Connection& c) {
    changed = store::uploads::abort(c, u.id, reason, clock::unix_ms());
  });
  return changed;
}

// Removes the object at `key` unless a live asset uses it, under the project's lock (a
// crash inside leaves the object: unreferenced bytes, never an asset without them). Asked
// of the primary: a lagging replica could miss a new asset.
void UploadService::delete_key_unless_used(s3::Client& s3c, const std::string& project,
                                           const std::string& key) {
  db_.write([&](sql::Connection& c) {
    store::projects::lock(c, project);
    if (!store::assets::key_in_use(c, key)) s3c.delete_object(options_.bucket, key);
  });
}

// Removes what the store holds for an upload that will not complete.
void UploadService::discard_storage(const store::Upload& u) {
  auto s3c = storage_->take();
  try {
    if (u.multipart()) {
      try {
        s3c->abort_multipart(options_.bucket, u.key, u.multipart_id);
      } catch (const s3::S3Error& e) {
        if (e.status() != 404) throw;  // NoSuchUpload: completed or aborted already
      }
    }
    delete_key_unless_used(*s3c, u.project, u.key);
  } catch (const s3::S3Error& e) {
    log::warn("api: could not discard an upload's storage",
              {{"upload", u.id}, {"code", e.code()}, {"error", e.what()}});
  }
}

Result<bool> UploadService::abort(const store::Upload& u, const std::string& reason) {
  if (!storage_) return no_storage();
  if (u.state == store::UploadState::Completed)
    return Error{Errc::completed, "This upload is complete; delete the asset instead."};
  if (!mark_aborted(u, reason)) return false;
  events_.with({"aborted"}).inc();
  discard_storage(u);
  return true;
}

// The media type the object's first bytes say (media_type.hpp), "" when unknown.
Result<std::string> UploadService::detect_type(const store::Upload& u) {
  if (u.size == 0) return std::string();
  std::string head;
  const auto last = std::min<std::uint64_t>(u.size, kSniffBytes) - 1;
  try {
    storage_->take()->get_object(
        options_.bucket, u.key, [&](std::string_view b) { head.append(b); },
        std::pair<std::uint64_t, std::uint64_t>{std::uint64_t{0}, last});
  } catch (const s3::S3Error& e) {
    return storage_failed(e);
  }
  return sniff_media_type(head);
}

// The object the upload made: there, of the declared size, of the declared SHA-256 (a
// multipart object is hashed here; a single PUT's was checked by the store against the
// signed header). A wrong size or hash aborts the upload (a single PUT may be sent again).
Result<void> UploadService::check_object(const store::Upload& u) {
  std::optional<s3::ObjectMeta> head;
  try {
    head = storage_->take()->head_object(options_.bucket, u.key);
  } catch (const s3::S3Error& e) {
    return storage_failed(e);
  }
  if (!head)
    return Error{Errc::not_uploaded,
                 "The store holds no bytes for this upload yet; send them first."};
  if (head->size != u.size) {
    if (u.multipart()) {  // the parts are gone: nothing to resume
      mark_aborted(u, "size-mismatch");
      discard_storage(u);
    } else {
      delete_key_unless_used(*storage_->take(), u.project, u.key);  // the PUT may come again
    }
    events_.with({"size_mismatch"}).inc();
    return Error{Errc::size_mismatch,
                 "The store holds " + std::to_string(head->size) + " bytes; the upload declared " +
                     std::to_string(u.size) + "." +
                     (u.multipart() ? " The upload is aborted." : " PUT the file again.")};
  }
  if (u.multipart() && !u.sha256.empty()) {
    codec::Sha256 sha;
    try {
      storage_->take()->get_object(options_.bucket, u.key,
                                   [&](std::string_view b) { sha.update(b); });
    } catch (const s3::S3Error& e) {
      return storage_failed(e);
    }
    const auto got = sha.finish_hex();
    if (got != u.sha256) {
      events_.with({"sha256_mismatch"}).inc();
      mark_aborted(u, "sha256-mismatch");
      discard_storage(u);
      return Error{Errc::sha256_mismatch, "The object's SHA-256 is " + got + ", not the declared " +
                                              u.sha256 +
                                              "; the upload is aborted and its bytes removed."};
    }
  }
  return {};
}

Result<Completed> UploadService::complete(
    const store::Upload& u, const std::vector<std::pair<int, std::string>>& client_parts) {
  if (!storage_) return no_storage();
  if (u.state == store::UploadState::Completed) {
    Completed out;
    db_.read({},
             [&](sql::Connection& c) { out.asset = store::assets::by_id(c, u.asset_id).value(); });
    out.upload = u;
    return out;
  }
  if (u.state == store::UploadState::Aborted)
    return Error{Errc::aborted, "This upload was aborted (" +
                                    (u.error.empty() ? std::string("by request") : u.error) +
                                    "); start a new one."};
  if (u.multipart()) {
    auto held = held_parts(u);
    if (!held) return held.error();
    auto parts = parts_to_complete(u, *held, client_parts);
    if (!parts) return parts.error();
    try {
      storage_->take()->complete_multipart(options_.bucket, u.key, u.multipart_id, *parts);
    } catch (const s3::S3Error& e) {
      if (e.status() == 400)
        return Error{Errc::parts_rejected, "The store refused the parts (" + std::string(e.what()) +
                                               "); upload them again and retry."};
      // NoSuchUpload, or PreconditionFailed (the key holds an object: the completion is
      // create-only): a concurrent complete did it; the object check below decides.
      if (e.status() != 404 && e.status() != 412) return storage_failed(e);
    }
  }
  if (auto checked = check_object(u); !checked) return checked.error();
  // What the bytes are, whatever was declared: a type the allow-list does not accept
  // (an executable named scan.png) is refused here.
  auto detected = detect_type(u);
  if (!detected) return detected.error();
  if (!detected->empty() && !type_allowed(options_.policy.content_types, *detected)) {
    events_.with({"type_refused"}).inc();
    mark_aborted(u, "content-type-not-allowed");
    discard_storage(u);
    return Error{Errc::type_not_allowed,
                 "The file is " + *detected +
                     " (from its first bytes), which is not accepted here "
                     "(uploads.content_types); the upload is aborted and its bytes removed."};
  }
  return record(u, *detected);
}

// One transaction: the asset (or the one with the same hash that won a race), the upload's
// state, the event.
Result<Completed> UploadService::record(const store::Upload& u, const std::string& detected) {
  Completed out;
  bool duplicate = false;
  std::optional<Error> refused;
  const auto now = clock::unix_ms();
  auto unit = [&](sql::Connection& c) {
    refused.reset();
    duplicate = false;
    store::projects::lock(c, u.project);  // no deletion of this key meanwhile
    auto cur = store::uploads::lock(c, u.id);
    if (!cur) throw std::runtime_error("upload " + u.id + " vanished");
    out.upload = *cur;
    if (cur->state == store::UploadState::Completed) {  // a concurrent complete won
      out.asset = store::assets::by_id(c, cur->asset_id).value();
      return;
    }
    if (cur->state != store::UploadState::Open) {
      refused = Error{Errc::aborted, "This upload was aborted meanwhile; start a new one."};
      return;
    }
    std::optional<store::Asset> same;
    if (!u.sha256.empty()) same = store::assets::by_sha256(c, u.project, u.sha256);
    if (same) {
      out.asset = *same;
      duplicate = true;
    } else {
      // The bytes checked above may have gone since with a deleted asset of the same
      // content (its deletion holds this lock while it removes them): look again, under it.
      std::optional<s3::ObjectMeta> still;
      try {
        still = storage_->take()->head_object(options_.bucket, u.key);
      } catch (const s3::S3Error& e) {
        refused = storage_failed(e);
        return;
      }
      if (!still || still->size != u.size) {
        refused = Error{Errc::not_uploaded,
                        "The store no longer holds this upload's bytes (an asset with the same "
                        "content was deleted meanwhile); send them again."};
        return;
      }
      out.asset = store::Asset{"a" + ids::random_hex(12),
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
      store::assets::insert(c, out.asset);
      // A model gets levels: queued until a worker takes its job.
      if (is_model(out.asset.name, out.asset.detected_type))
        store::asset_processing::put(
            c, {out.asset.id, kPipelineVersion, u.project, "queued", "", 0, "", 0, "", "", now});
      store::outbox::append(c, "asset.uploaded", u.project, event_json(out.asset, "asset.uploaded"),
                            now);
    }
    store::uploads::complete(c, u.id, out.asset.id, now);
    out.upload.state = store::UploadState::Completed;
    out.upload.asset_id = out.asset.id;
    out.upload.updated_at = now;
    out.created = true;
  };
  try {
    out.receipt = db_.write(unit);
  } catch (const sql::Error& e) {
    // Another upload of the same bytes inserted its asset first (the unique index): once
    // more, and this one finds it.
    if (e.kind() != sql::Error::Kind::Conflict || u.sha256.empty()) throw;
    out.receipt = db_.write(unit);
  }
  if (refused) return *refused;
  if (duplicate && out.asset.key != u.key) discard_storage(u);  // its bytes exist already
  if (out.created) events_.with({duplicate ? "deduplicated" : "completed"}).inc();
  if (out.created && !duplicate) {
    bytes_.with({}).inc(u.size);
    log::info("api: asset uploaded", {{"project", u.project},
                                      {"asset", out.asset.id},
                                      {"upload", u.id},
                                      {"bytes", static_cast<std::int64_t>(u.size)}});
  }
  return out;
}

std::size_t UploadService::sweep_stale() {
  if (!storage_) return 0;
  const auto cutoff = clock::unix_ms() - options_.stale_after_s * 1000;
  std::vector<store::Upload> stale;
  db_.read({}, [&](sql::Connection& c) { stale = store::uploads::stale(c, cutoff, 500); });
  std::size_t n = 0;
  for (const auto& u : stale) {
    // The conditional update claims it: another API node sweeping at once skips it.
    if (!mark_aborted(u, "stale: idle for longer than uploads.stale_after_s")) continue;
    events_.with({"stale"}).inc();
    discard_storage(u);
    ++n;
  }
  if (n > 0) log::info("api: stale uploads aborted", {{"count", static_cast<std::int64_t>(n)}});
  return n;
}

}  // namespace kiln::assets
