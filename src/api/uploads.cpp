// Uploads and assets over HTTP (docs/api.md): the request's shape and the caller's role
// here, the decisions in assets::UploadService (assets/service.hpp).
#include "api/impl.hpp"

#include "assets/derived.hpp"
#include "assets/json.hpp"
#include "platform/config.hpp"

#include <charconv>
#include <set>

namespace kiln::api {
namespace {

using assets::asset_json;
using assets::upload_json;

Checked<std::uint64_t> need_size(const json::object& o, std::string_view field) {
  const auto* v = o.if_contains(field);
  if (v == nullptr) return invalid("'" + std::string(field) + "' is required.");
  if (v->is_uint64()) return v->get_uint64();
  if (v->is_int64() && v->get_int64() >= 0) return static_cast<std::uint64_t>(v->get_int64());
  if (v->is_string()) {  // Uppy sends metadata as strings
    const std::string_view s = v->get_string();
    std::uint64_t n = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (!s.empty() && ec == std::errc() && end == s.data() + s.size()) return n;
  }
  return invalid("'" + std::string(field) + "' must be a non-negative integer.");
}

assets::Actor actor(const Principal& who) {
  return assets::Actor{who.service, who.user};
}

json::object put_json(const assets::PresignedRequest& r) {
  json::object headers;
  for (const auto& [k, v] : r.headers) headers[k] = v;
  return {{"method", r.method}, {"url", r.url}, {"headers", headers}, {"expires_at", r.expires_at}};
}

Checked<int> part_number(std::string_view s) {
  if (s.empty() || s.size() > 5 ||
      !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return invalid("Part numbers are integers from 1 to 10000.");
  const int n = std::stoi(std::string(s));
  if (n < 1 || n > static_cast<int>(assets::kMaxParts))
    return invalid("Part numbers are integers from 1 to 10000.");
  return n;
}

// A completion's part list: [{<number>, <etag>}] under the given field names.
using PartList = std::vector<std::pair<int, std::string>>;

Checked<PartList> part_list(const json::value* list, std::string_view number, std::string_view etag,
                            const std::string& shape) {
  if (list == nullptr || !list->is_array() || list->as_array().size() > assets::kMaxParts)
    return invalid("'parts' must be an array of " + shape + ".");
  PartList parts;
  for (const auto& v : list->as_array()) {
    const auto* po = v.if_object();
    if (po == nullptr || !po->contains(number) || !po->at(number).is_int64())
      return invalid("'parts' must be an array of " + shape + ".");
    KILN_TRY(tag, need_string(*po, etag));
    parts.emplace_back(static_cast<int>(po->at(number).get_int64()), std::move(tag));
  }
  return parts;
}

}  // namespace

Checked<void> Api::Impl::need_storage() {
  if (!uploads.has_storage())
    return Refusal{503, "unavailable", "No object storage is configured (settings storage.*)."};
  return {};
}

// The upload, if the caller may touch it: a member of its project, and its creator (the
// service key may touch any). Anything else is 404, as for an upload that does not exist.
Checked<store::Upload> Api::Impl::load_upload(const Request& req, const Principal& who) {
  const auto project = req.param("project");
  const auto id = req.param("upload");
  KILN_CHECK(role_in(who, project, req));
  if (!valid_id(id)) return not_found();
  KILN_TRY(u, uploads.find(actor(who), project, id, after(who, req)));
  return u;
}

// Uppy names an upload by (uploadId, key): uploadId is the Kiln upload's id and key its
// object key, which must match. The project comes from the upload.
Checked<store::Upload> Api::Impl::load_uppy(const Request& req, const Principal& who) {
  const auto id = req.param("upload");
  if (!valid_id(id)) return not_found();
  KILN_TRY(u, uploads.find(actor(who), id, after(who, req)));
  KILN_CHECK(role_in(who, u.project, req));
  if (req.query_param("key").value_or("") != u.key || !u.multipart()) return not_found();
  return u;
}

// --- /v1 routes -----------------------------------------------------------------------------

Checked<Response> Api::Impl::create_upload(const Request& req, const Principal& who) {
  const auto project = req.param("project");
  KILN_TRY(role, role_in(who, project, req));
  KILN_CHECK(need(role, "editor"));
  KILN_CHECK(need_storage());
  KILN_TRY(body, body_object(req, {"filename", "size", "content_type", "sha256"}));
  assets::NewUpload n;
  KILN_TRY(filename, need_string(body, "filename"));
  KILN_TRY(size, need_size(body, "size"));
  KILN_TRY(content_type, need_string(body, "content_type"));
  KILN_TRY(sha256, opt_string(body, "sha256"));
  n.filename = std::move(filename);
  n.size = size;
  n.content_type = std::move(content_type);
  n.sha256 = sha256.value_or("");
  KILN_TRY(started, uploads.start(actor(who), project, std::move(n)));
  if (auto* a = std::get_if<store::Asset>(&started.what))
    return ok_json(200, json::object{{"deduplicated", true}, {"asset", asset_json(*a)}});
  const auto& u = std::get<store::Upload>(started.what);
  json::object o{{"deduplicated", false}, {"upload", upload_json(u)}};
  if (!u.multipart()) o["put"] = put_json(uploads.put_request(u));
  auto resp = ok_json(201, o);
  resp.headers.emplace_back("Location", "/v1/projects/" + project + "/uploads/" + u.id);
  wrote(who, started.receipt, resp);
  return resp;
}

Checked<Response> Api::Impl::get_upload(const Request& req, const Principal& who) {
  KILN_CHECK(need_storage());
  KILN_TRY(u, load_upload(req, who));
  auto o = upload_json(u);
  if (u.state == store::UploadState::Open && u.multipart()) {
    json::array parts;
    std::set<int> have;
    KILN_TRY(held, uploads.held_parts(u));
    for (const auto& p : held) {
      parts.push_back(json::object{{"number", p.number}, {"size", p.size}, {"etag", p.etag}});
      have.insert(p.number);
    }
    o["parts"] = std::move(parts);
    if (const auto count = assets::part_count(u); count > 0) {
      json::array missing;
      for (std::uint64_t n = 1; n <= count; ++n)
        if (!have.contains(static_cast<int>(n))) missing.push_back(n);
      o["missing"] = std::move(missing);
    }
  } else if (u.state == store::UploadState::Open) {
    o["put"] = put_json(uploads.put_request(u));
  }
  return ok_json(200, o);
}

Checked<Response> Api::Impl::presign_parts(const Request& req, const Principal& who) {
  KILN_CHECK(need_storage());
  KILN_TRY(u, load_upload(req, who));
  KILN_TRY(body, body_object(req, {"parts"}));
  const auto* list = body.if_contains("parts");
  if (list == nullptr || !list->is_array() || list->as_array().empty())
    return invalid("'parts' must be a non-empty array of part numbers.");
  const auto max = options.uploads.max_parts_per_request;
  if (list->as_array().size() > max)
    return invalid("At most " + std::to_string(max) + " parts per request.");
  KILN_CHECK(assets::need_open(u));
  if (!u.multipart())
    return Refusal{409, "not-multipart",
                   "This upload is a single PUT: GET the upload for its URL."};
  const auto count = assets::part_count(u);
  json::array out;
  for (const auto& v : list->as_array()) {
    if (!v.is_int64() || v.get_int64() < 1 || static_cast<std::uint64_t>(v.get_int64()) > count)
      return invalid("Part numbers are integers from 1 to " + std::to_string(count) + ".");
    const auto n = static_cast<std::uint64_t>(v.get_int64());
    out.push_back(json::object{
        {"number", n}, {"size", assets::part_bytes(u, n)}, {"url", uploads.part_url(u, n)}});
  }
  uploads.touch(u);  // activity keeps the upload from being swept as stale
  return ok_json(200,
                 json::object{{"parts", out}, {"expires_at", now_s() + options.uploads.url_ttl_s}});
}

Checked<Response> Api::Impl::complete_upload(const Request& req, const Principal& who) {
  KILN_CHECK(need_storage());
  KILN_TRY(u, load_upload(req, who));
  PartList parts;
  if (!req.body.empty()) {
    KILN_TRY(body, body_object(req, {"parts"}));
    if (const auto* list = body.if_contains("parts")) {
      KILN_TRY(listed, part_list(list, "number", "etag", "{number, etag}"));
      parts = std::move(listed);
    }
  }
  auto completed = uploads.complete(u, parts);
  if (!completed) {
    // A refusal after the bytes were checked aborts the upload: the caller's next read must
    // see it aborted (read-your-writes), though no receipt came back.
    remember(who, store.position());
    return Refusal(completed.error());
  }
  auto& done = *completed;
  auto resp = ok_json(done.created ? 201 : 200, json::object{{"asset", asset_json(done.asset)},
                                                             {"upload", upload_json(done.upload)}});
  wrote(who, done.receipt, resp);
  return resp;
}

Checked<Response> Api::Impl::abort_upload(const Request& req, const Principal& who) {
  KILN_CHECK(need_storage());
  KILN_TRY(u, load_upload(req, who));
  KILN_CHECK(uploads.abort(u, "aborted by request"));
  Response resp{204, "application/json", "", {}};
  wrote(who, store.position(), resp);
  return resp;
}

// --- assets -----------------------------------------------------------------------------

namespace {
// What the pipeline made of an asset (docs/api.md "Asset processing"): null when nothing
// was recorded yet.
json::value processing_json(const std::string& project, const std::string& asset,
                            const std::optional<store::AssetProcessing>& p) {
  if (!p) return nullptr;
  json::object o{{"pipeline", p->pipeline}, {"state", p->state},   {"stage", p->stage},
                 {"percent", p->percent},   {"levels", p->levels}, {"updated_at", p->updated_at}};
  o["error"] = p->state == "failed"
                   ? json::value(json::object{{"code", p->error_code}, {"detail", p->error}})
                   : json::value(nullptr);
  o["manifest"] = p->state == "ready"
                      ? json::value("/v1/projects/" + project + "/assets/" + asset + "/manifest")
                      : json::value(nullptr);
  return o;
}
}  // namespace

Checked<Response> Api::Impl::list_assets(const Request& req, const Principal& who) {
  const auto project = req.param("project");
  KILN_CHECK(role_in(who, project, req));
  KILN_TRY(limit, page_limit(req));
  KILN_TRY(after_id, read_cursor(req.query_param("cursor")));
  auto rows = uploads.list_assets(project, after_id, limit + 1, after(who, req));
  json::array items;
  for (std::size_t i = 0; i < rows.size() && i < limit; ++i) items.push_back(asset_json(rows[i]));
  json::value next = nullptr;
  if (rows.size() > limit) next = json::string(make_cursor(rows[limit - 1].id));
  return ok_json(200, json::object{{"items", items}, {"next_cursor", next}});
}

Checked<Response> Api::Impl::get_asset(const Request& req, const Principal& who) {
  const auto project = req.param("project");
  const auto id = req.param("asset");
  KILN_CHECK(role_in(who, project, req));
  if (!valid_id(id)) return not_found();
  KILN_TRY(a, uploads.find_asset(project, id, after(who, req)));
  auto o = asset_json(a);
  o["processing"] = processing_json(project, id, uploads.processing(a, after(who, req)));
  if (uploads.has_storage()) {
    const auto d = uploads.download(a);
    o["download"] = json::object{
        {"url", d.url},
        {"expires_at", d.expires_at ? json::value(*d.expires_at) : json::value(nullptr)},
        {"cache_control", d.cache_control}};
  }
  return ok_json(200, o);
}

Checked<Response> Api::Impl::get_manifest(const Request& req, const Principal& who) {
  const auto project = req.param("project");
  const auto id = req.param("asset");
  KILN_CHECK(role_in(who, project, req));
  if (!valid_id(id)) return not_found();
  KILN_TRY(a, uploads.find_asset(project, id, after(who, req)));
  KILN_TRY(m, uploads.manifest(a, after(who, req)));
  auto resp = ok_json(200, m);
  // The level URLs inside are presigned for download_ttl_s: not cached past half of it.
  resp.headers.emplace_back("Cache-Control",
                            "private, max-age=" + std::to_string(std::max<std::int64_t>(
                                                      1, uploads.options().download_ttl_s / 2)));
  return resp;
}

// Processes the asset again: after a failure (a limit raised, a parser fixed), or for a
// pipeline version it has no levels of. A ready asset is left as it is.
Checked<Response> Api::Impl::process_asset(const Request& req, const Principal& who) {
  const auto project = req.param("project");
  const auto id = req.param("asset");
  KILN_TRY(role, role_in(who, project, req));
  KILN_CHECK(need(role, "editor"));
  if (!valid_id(id)) return not_found();
  KILN_TRY(a, uploads.find_asset(project, id, after(who, req)));
  if (!jobs) return Refusal{503, "unavailable", "No job queue runs here."};
  // What this request did, as its own transaction left the row (not a replica's copy, nor
  // what a worker made of it since).
  const auto r = uploads.requeue(a);
  json::object out{{"started", r.started}};
  out["processing"] = processing_json(project, id, r.now);
  // Ready (nothing to do: 200); queued by this call, or queued or processing already (202).
  auto resp = ok_json(!r.started && r.now && r.now->state == "ready" ? 200 : 202, out);
  wrote(who, r.receipt, resp);
  return resp;
}

Checked<Response> Api::Impl::delete_asset(const Request& req, const Principal& who) {
  const auto project = req.param("project");
  const auto id = req.param("asset");
  KILN_TRY(role, role_in(who, project, req));
  KILN_CHECK(need(role, "editor"));
  if (!valid_id(id)) return not_found();
  KILN_TRY(r, uploads.delete_asset(project, id));
  Response resp{204, "application/json", "", {}};
  wrote(who, r, resp);
  return resp;
}

// --- Uppy (@uppy/aws-s3, Companion's route shapes) ------------------------------------------

Checked<Response> Api::Impl::uppy_create(const Request& req, const Principal& who) {
  KILN_CHECK(need_storage());
  KILN_TRY(body, body_object(req, {"filename", "type", "metadata"}));
  const auto* meta = body.if_contains("metadata");
  if (meta == nullptr || !meta->is_object())
    return invalid(
        "'metadata' must be an object with 'project' and 'size' (Uppy: allowedMetaFields).");
  const auto& m = meta->as_object();
  KILN_TRY(project, need_string(m, "project"));
  KILN_TRY(role, role_in(who, project, req));
  KILN_CHECK(need(role, "editor"));
  assets::NewUpload n;
  KILN_TRY(filename, need_string(body, "filename"));
  KILN_TRY(type, opt_string(body, "type"));
  KILN_TRY(size, need_size(m, "size"));
  KILN_TRY(sha256, opt_string(m, "sha256"));
  n.filename = std::move(filename);
  n.content_type = type.value_or("");
  if (n.content_type.empty()) n.content_type = "application/octet-stream";
  n.size = size;
  n.sha256 = sha256.value_or("");
  n.force_multipart = true;
  KILN_TRY(started, uploads.start(actor(who), project, std::move(n)));
  if (auto* a = std::get_if<store::Asset>(&started.what))  // Uppy has no "already there"
    return Refusal{409, "duplicate",
                   "An asset with this SHA-256 exists in the project: " + a->id + "."};
  const auto& u = std::get<store::Upload>(started.what);
  auto resp = ok_json(200, json::object{{"uploadId", u.id}, {"key", u.key}});
  wrote(who, started.receipt, resp);
  return resp;
}

Checked<Response> Api::Impl::uppy_list_parts(const Request& req, const Principal& who) {
  KILN_CHECK(need_storage());
  KILN_TRY(u, load_uppy(req, who));
  KILN_CHECK(assets::need_open(u));
  json::array out;
  KILN_TRY(held, uploads.held_parts(u));
  for (const auto& p : held)
    out.push_back(json::object{{"PartNumber", p.number}, {"Size", p.size}, {"ETag", p.etag}});
  return ok_json(200, out);
}

Checked<Response> Api::Impl::uppy_sign_part(const Request& req, const Principal& who) {
  KILN_CHECK(need_storage());
  KILN_TRY(u, load_uppy(req, who));
  KILN_CHECK(assets::need_open(u));
  KILN_TRY(n, part_number(req.param("part")));
  return ok_json(200, json::object{{"url", uploads.part_url(u, static_cast<std::uint64_t>(n))},
                                   {"expires", options.uploads.url_ttl_s}});
}

Checked<Response> Api::Impl::uppy_sign_batch(const Request& req, const Principal& who) {
  KILN_CHECK(need_storage());
  KILN_TRY(u, load_uppy(req, who));
  KILN_CHECK(assets::need_open(u));
  const auto list = req.query_param("partNumbers").value_or("");
  json::object urls;
  std::size_t count = 0;
  for (const auto& s : config::split_list(list)) {
    if (++count > options.uploads.max_parts_per_request)
      return invalid("At most " + std::to_string(options.uploads.max_parts_per_request) +
                     " parts per request.");
    KILN_TRY(n, part_number(s));
    urls[std::to_string(n)] = uploads.part_url(u, static_cast<std::uint64_t>(n));
  }
  if (count == 0) return invalid("'partNumbers' lists the parts: 1,2,3.");
  uploads.touch(u);
  return ok_json(200, json::object{{"presignedUrls", urls}});
}

Checked<Response> Api::Impl::uppy_complete(const Request& req, const Principal& who) {
  KILN_CHECK(need_storage());
  KILN_TRY(u, load_uppy(req, who));
  KILN_TRY(body, body_object(req, {"parts"}));
  KILN_TRY(parts, part_list(body.if_contains("parts"), "PartNumber", "ETag", "{PartNumber, ETag}"));
  KILN_TRY(done, uploads.complete(u, parts));
  auto resp = ok_json(
      200, json::object{{"location", "/v1/projects/" + u.project + "/assets/" + done.asset.id},
                        {"asset", asset_json(done.asset)}});
  wrote(who, done.receipt, resp);
  return resp;
}

Checked<Response> Api::Impl::uppy_abort(const Request& req, const Principal& who) {
  KILN_CHECK(need_storage());
  KILN_TRY(u, load_uppy(req, who));
  KILN_CHECK(uploads.abort(u, "aborted by request"));
  return ok_json(200, json::object{});
}

std::size_t Api::sweep_stale_uploads() {
  return impl_->uploads.sweep_stale();
}

}  // namespace kiln::api
