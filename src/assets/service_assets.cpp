// UploadService's asset half: listing, reading, download URLs, deletion (service.hpp).
#include "assets/derived.hpp"
#include "assets/json.hpp"
#include "assets/service.hpp"
#include "clients/s3/sigv4.hpp"
#include "platform/clock.hpp"
#include "platform/log.hpp"
#include "store/outbox.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

namespace kiln::assets {
namespace {

// RFC 6266 `attachment` with the name twice: an ASCII fallback (quotes, backslashes and
// controls replaced) and the exact UTF-8 name (RFC 8187 `filename*`).
std::string content_disposition(const std::string& name) {
  std::string ascii;
  for (unsigned char c : name)
    ascii += (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') ? '_' : static_cast<char>(c);
  return "attachment; filename=\"" + ascii + "\"; filename*=UTF-8''" + s3::uri_encode(name, false);
}

}  // namespace

std::vector<store::Asset> UploadService::list_assets(const std::string& project,
                                                     const std::string& after_id, std::size_t limit,
                                                     const store::Receipt& after) {
  std::vector<store::Asset> rows;
  db_.read(after,
           [&](sql::Connection& c) { rows = store::assets::page(c, project, after_id, limit); });
  return rows;
}

Result<store::Asset> UploadService::find_asset(const std::string& project, const std::string& id,
                                               const store::Receipt& after) {
  std::optional<store::Asset> a;
  db_.read(after, [&](sql::Connection& c) { a = store::assets::find(c, project, id); });
  if (!a) return Error{Errc::not_found, "No such resource, or no access to it."};
  return std::move(*a);
}

Download UploadService::download(const store::Asset& a) const {
  const auto& o = options_;
  if (!o.cdn_base.empty()) {
    // Objects are written once (content-addressed, or a key per upload): cache forever.
    return {o.cdn_base + "/" + s3::uri_encode(a.key, true), std::nullopt,
            "public, max-age=31536000, immutable"};
  }
  // The browser (and `kiln download`) saves it under the asset's name, not the object key,
  // and it is served as the type it was accepted as, whatever the object was stored with.
  const auto query =
      "response-content-disposition=" + s3::uri_encode(content_disposition(a.name), false) +
      "&response-content-type=" + s3::uri_encode(a.content_type, false);
  return {presigner_->presign("GET", o.bucket, a.key, o.download_ttl_s, query),
          clock::unix_ms() / 1000 + o.download_ttl_s,
          "private, max-age=" + std::to_string(o.download_ttl_s)};
}

std::optional<store::AssetProcessing> UploadService::processing(const store::Asset& a,
                                                                const store::Receipt& after) {
  std::optional<store::AssetProcessing> p;
  db_.read(after, [&](sql::Connection& c) {
    p = store::asset_processing::find(c, a.id, kPipelineVersion);
  });
  return p;
}

Download UploadService::derived_download(const std::string& key,
                                         const std::string& content_type) const {
  const auto& o = options_;
  // Derived keys name their content: cacheable forever.
  if (!o.cdn_base.empty())
    return {o.cdn_base + "/" + s3::uri_encode(key, true), std::nullopt,
            "public, max-age=31536000, immutable"};
  const auto query = "response-content-type=" + s3::uri_encode(content_type, false);
  return {presigner_->presign("GET", o.bucket, key, o.download_ttl_s, query),
          clock::unix_ms() / 1000 + o.download_ttl_s,
          "private, max-age=" + std::to_string(o.download_ttl_s)};
}

Result<boost::json::object> UploadService::manifest(const store::Asset& a,
                                                    const store::Receipt& after) {
  if (!storage_)
    return Error{Errc::no_storage, "No object storage is configured (settings storage.*)."};
  const auto p = processing(a, after);
  if (!p || p->state != "ready")
    return Error{Errc::not_found, "The asset has no levels (yet): see its `processing`."};
  return manifest_of(*p);
}

Result<boost::json::object> UploadService::manifest_of(const store::AssetProcessing& p) {
  if (!storage_)
    return Error{Errc::no_storage, "No object storage is configured (settings storage.*)."};
  boost::json::object m;
  bool cached = false;
  {
    std::lock_guard lock(manifests_mu_);
    if (auto it = manifests_.find(p.manifest_key); it != manifests_.end()) {
      m = it->second;
      cached = true;
    }
  }
  if (!cached) {
    std::string text;
    try {
      text = storage_->take()->get_object(options_.bucket, p.manifest_key);
    } catch (const s3::S3Error& e) {
      return storage_failed(e);
    }
    boost::system::error_code ec;
    auto v = boost::json::parse(text, ec);
    if (ec || !v.is_object())
      return Error{Errc::storage_unavailable, "The stored manifest is not readable JSON."};
    m = std::move(v.as_object());
    std::lock_guard lock(manifests_mu_);
    if (manifests_.size() >= 2'000) manifests_.clear();
    manifests_.emplace(p.manifest_key, m);
  }
  // A `url` beside each stored file's `uri`: the levels, and each texture's levels.
  const auto dir = p.manifest_key.substr(0, p.manifest_key.rfind('/') + 1);
  for_each_file(m, [&](boost::json::object* o, const std::string& type) {
    const auto* uri = o ? o->if_contains("uri") : nullptr;
    if (uri && uri->is_string())
      (*o)["url"] = derived_download(dir + std::string(uri->as_string()), type).url;
  });
  return m;
}

UploadService::Requeued UploadService::requeue(const store::Asset& a) {
  Requeued out;
  out.receipt = db_.write([&](sql::Connection& c) {
    const auto now = clock::unix_ms();
    out.started = store::asset_processing::requeue(c, a.id, kPipelineVersion, a.project, now);
    if (out.started)
      store::outbox::append(c, "asset.process_requested", a.project,
                            event_json(a, "asset.process_requested"), now);
    out.now = store::asset_processing::find(c, a.id, kPipelineVersion);
  });
  return out;
}

Result<store::Receipt> UploadService::delete_asset(const std::string& project,
                                                   const std::string& id) {
  std::optional<store::Asset> gone;
  auto receipt = db_.write([&](sql::Connection& c) {
    gone = store::assets::lock(c, project, id);
    if (!gone) return;
    const auto now = clock::unix_ms();
    store::assets::mark_deleted(c, id, now);
    store::outbox::append(c, "asset.deleted", project, event_json(*gone, "asset.deleted"), now);
  });
  if (!gone) return Error{Errc::not_found, "No such resource, or no access to it."};
  // Then the bytes, under the project's lock and only if no live asset uses the key: a
  // completion of the same content that recorded its asset in between keeps them; one
  // after finds them gone and asks for them again. Never an asset without bytes.
  if (storage_) {
    try {
      delete_key_unless_used(*storage_->take(), project, gone->key);
    } catch (const s3::S3Error& e) {
      log::warn("api: could not delete a deleted asset's object",
                {{"asset", id}, {"code", e.code()}});
    }
  }
  log::info("api: asset deleted", {{"project", project}, {"asset", id}});
  return receipt;
}

}  // namespace kiln::assets
