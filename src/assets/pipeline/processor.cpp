#include "assets/pipeline/processor.hpp"

#include "assets/derived.hpp"
#include "platform/codec.hpp"
#include "platform/ids.hpp"
#include "platform/log.hpp"
#include "store/asset_processing.hpp"
#include "store/assets.hpp"
#include "store/projects.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <fstream>
#include <sstream>

namespace kiln::assets::pipeline {
namespace {

namespace json = boost::json;
namespace fs = std::filesystem;

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The (project, asset) a job's payload names ({"project", "asset", ...}), or nullopt.
std::optional<std::pair<std::string, std::string>> target_of(const jobs::Lease& lease) {
  boost::system::error_code ec;
  const auto payload = json::parse(lease.payload, ec);
  const auto* o = payload.if_object();
  const auto* project = o ? o->if_contains("project") : nullptr;
  const auto* asset = o ? o->if_contains("asset") : nullptr;
  if (!project || !project->is_string() || !asset || !asset->is_string()) return std::nullopt;
  return std::make_pair(std::string(project->as_string()), std::string(asset->as_string()));
}

jobs::FailReport bad_payload(const jobs::Lease& lease) {
  return {jobs::Failure::permanent, "the payload names no project and asset: " + lease.payload};
}

jobs::FailReport retry(std::string why) {
  return {jobs::Failure::retryable, std::move(why)};
}

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A work directory removed when the job ends, whichever way.
struct WorkDir {
  explicit WorkDir(fs::path p) : path(std::move(p)) { fs::create_directories(path / "out"); }
  ~WorkDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  WorkDir(const WorkDir&) = delete;
  WorkDir& operator=(const WorkDir&) = delete;
  fs::path path;
};

}  // namespace

struct AssetProcessor::Impl {
  store::Database& db;
  s3::ClientOptions storage;
  ProcessorOptions options;
  Notify notify;
  metrics::Family<metrics::Counter>& outcomes;

  bool live(const store::Asset& a) {
    std::optional<store::Asset> now;
    db.read(db.position(),
            [&](sql::Connection& c) { now = store::assets::find(c, a.project, a.id); });
    return now.has_value();
  }
  bool member(const store::Asset& a) {
    return !store::Projects(db).member_role(a.project, a.created_by, db.position()).empty();
  }
  // Removes what was stored for a deleted asset (the cleanup job may have run before).
  void forget(const store::Asset& a) {
    s3::Client s3c(storage);
    std::string token;
    do {
      auto page = s3c.list_objects(options.bucket, derived_root(a.project, a.id), "", token);
      for (const auto& obj : page.objects) s3c.delete_object(options.bucket, obj.key);
      token = page.next_token;
    } while (!token.empty());
    db.write([&](sql::Connection& c) { store::asset_processing::remove(c, a.id); });
  }

  void put_state(const store::Asset& a, const std::string& state, const std::string& stage,
                 int percent, const std::string& manifest_key = {}, int levels = 0,
                 const std::string& code = {}, const std::string& error = {}) {
    store::AssetProcessing p{a.id,         kPipelineVersion, a.project, state, stage,   percent,
                             manifest_key, levels,           code,      error, now_ms()};
    db.write([&](sql::Connection& c) { store::asset_processing::put(c, p); });
  }

  void tell(const store::Asset& a, json::object fields) {
    if (!notify) return;
    fields["kind"] = "asset";
    fields["project"] = a.project;
    fields["asset"] = a.id;
    fields["name"] = a.name;
    try {
      notify(a.created_by, a.project, fields);
    } catch (const std::exception& e) {  // a notification is best effort: the state is stored
      log::warn("assets: a notification was not sent", {{"asset", a.id}, {"error", e.what()}});
    }
  }
};

AssetProcessor::AssetProcessor(store::Database& db, s3::ClientOptions storage,
                               ProcessorOptions options, Notify notify, metrics::Registry& registry)
    : impl_(std::make_unique<Impl>(
          Impl{db, std::move(storage), std::move(options), std::move(notify),
               registry.counter("kiln_assets_processed_total",
                                "asset.process jobs by outcome: ready, failed (the file), skipped "
                                "(not a model), stopped, internal (Kiln's fault), gone (deleted).",
                                {"outcome"})})) {}

AssetProcessor::~AssetProcessor() = default;

jobs::HandlerResult AssetProcessor::process(jobs::JobContext& ctx) {
  auto& I = *impl_;
  const auto target = target_of(ctx.lease());
  if (!target) return bad_payload(ctx.lease());

  std::optional<store::Asset> asset;
  std::optional<store::AssetProcessing> done;
  try {
    I.db.read(I.db.position(), [&](sql::Connection& c) {
      asset = store::assets::find(c, target->first, target->second);
      if (asset) done = store::asset_processing::find(c, asset->id, kPipelineVersion);
    });
  } catch (const sql::Error& e) {
    return retry(std::string("database: ") + e.what());
  }
  if (!asset) {
    I.outcomes.with({"gone"}).inc();
    return std::string(R"({"state":"gone","reason":"the asset was deleted"})");
  }
  const store::Asset& a = *asset;
  if (done && (done->state == "ready" || done->state == "skipped"))
    return json::serialize(json::object{{"state", done->state}, {"already", true}});

  const auto started = std::chrono::steady_clock::now();
  try {
    if (!is_model(a.name, a.detected_type)) {
      I.put_state(a, "skipped", "", 100);
      I.outcomes.with({"skipped"}).inc();
      return std::string(R"({"state":"skipped","reason":"not a model file"})");
    }
    // Only a current member hears of it (one read now, one before the outcome).
    const bool tell = I.member(a);
    const auto fail = [&](Errc code, const std::string& detail) {
      I.put_state(a, "failed", "", 0, {}, 0, to_string(code), detail);
      if (tell && I.member(a))
        I.tell(a, {{"event", "failed"}, {"code", to_string(code)}, {"detail", detail}});
      const bool ours = code == Errc::internal;
      I.outcomes.with({ours ? "internal" : "failed"}).inc();
      const log::Fields fields{
          {"asset", a.id}, {"project", a.project}, {"code", to_string(code)}, {"detail", detail}};
      if (ours)
        log::warn("assets: processing failed (Kiln's fault)", fields);
      else
        log::info("assets: processing failed", fields);
      return json::serialize(json::object{{"state", "failed"}, {"code", to_string(code)}});
    };
    if (a.size > I.options.max_source_bytes)
      return fail(Errc::too_large, "the file is " + std::to_string(a.size) +
                                       " bytes; the pipeline takes at most " +
                                       std::to_string(I.options.max_source_bytes));

    I.put_state(a, "processing", "download", 0);
    if (tell) I.tell(a, {{"event", "progress"}, {"stage", "download"}, {"percent", 0}});
    ctx.progress(0, "download");
    WorkDir work(I.options.work_dir / ("job-" + ctx.lease().ref.job + "-" + ids::random_hex(4)));
    const fs::path source = work.path / "source";
    {
      std::ofstream out(source, std::ios::binary | std::ios::trunc);
      s3::Client s3c(I.storage);
      s3c.get_object(I.options.bucket, a.key, [&](std::string_view chunk) {
        out.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
      });
      if (!out) return retry("cannot write the source to " + source.string());
    }

    ChildRequest req;
    req.executable = I.options.executable;
    req.input = source.string();
    req.file_name = a.name;
    req.out_dir = (work.path / "out").string();
    req.limits = I.options.isolation;
    req.lod = I.options.lod;
    req.model_limits = I.options.model_limits;
    req.textures = I.options.textures;
    int last_percent = -1;
    auto manifest = convert_in_child(
        req,
        [&](std::string_view stage, int percent) {
          // Overall: download 0-10, the child's stages 10-90, storing 90-100.
          const int overall = 10 + percent * 80 / 100;
          if (overall == last_percent) return;
          last_percent = overall;
          ctx.progress(overall, std::string(stage));
          I.put_state(a, "processing", std::string(stage), overall);
          if (tell) I.tell(a, {{"event", "progress"}, {"stage", stage}, {"percent", overall}});
        },
        [&] { return ctx.stopping(); });
    if (!manifest && manifest.error().code == Errc::stopped) {
      I.put_state(a, "failed", "", 0, {}, 0, "stopped",
                  "processing was stopped (its job was cancelled, or its worker shut down); it "
                  "runs again when the job does, or with POST .../process");
      I.outcomes.with({"stopped"}).inc();
      return retry("stopped: the job was cancelled or the worker is stopping");
    }
    if (!manifest) return fail(manifest.error().code, manifest.error().detail);

    ctx.progress(90, "store");
    I.put_state(a, "processing", "store", 90);
    if (tell) I.tell(a, {{"event", "progress"}, {"stage", "store"}, {"percent", 90}});
    const std::string prefix = derived_prefix(a.project, a.id);
    s3::Client s3c(I.storage);
    // Each output file under a name of its content: its "file" becomes that "uri". The
    // manifest comes from the child, which read hostile bytes: a name or type other than
    // the converter writes is not followed (a failed asset, Kiln's fault: internal).
    std::vector<std::pair<json::object*, std::string>> outputs;  // (entry, content type)
    for_each_file(*manifest,
                  [&](json::object* o, const std::string& type) { outputs.emplace_back(o, type); });
    const auto& levels = (*manifest)["levels"].as_array();
    for (auto& [o, type] : outputs) {
      const auto* file = o ? o->if_contains("file") : nullptr;
      if (!file || !file->is_string() || !is_output_name(file->as_string()) ||
          (type != "model/gltf-binary" && type != "image/webp" && type != "image/png" &&
           type != "image/jpeg"))
        return fail(Errc::internal, "the converter's manifest names an output it does not write");
    }
    for (auto& [o, type] : outputs) {
      const std::string file(o->at("file").as_string());
      const std::string bytes = read_all(work.path / "out" / file);
      const auto dot = file.rfind('.');
      const std::string name =
          file.substr(0, dot) + "-" + codec::sha256_hex(bytes).substr(0, 16) + file.substr(dot);
      s3c.put_object(I.options.bucket, prefix + name, http::Body::of(bytes), type);
      o->erase("file");
      (*o)["uri"] = name;
    }
    (*manifest)["asset"] = a.id;
    const std::string text = json::serialize(*manifest);
    const std::string manifest_key =
        prefix + "manifest-" + codec::sha256_hex(text).substr(0, 16) + ".json";
    s3c.put_object(I.options.bucket, manifest_key, http::Body::of(text), "application/json");
    I.put_state(a, "ready", "", 100, manifest_key, static_cast<int>(levels.size()));
    // Deleted meanwhile: its cleanup may have run before these files existed.
    if (!I.live(a)) {
      I.forget(a);
      I.outcomes.with({"gone"}).inc();
      return std::string(R"({"state":"gone","reason":"the asset was deleted while processed"})");
    }
    if (tell && I.member(a)) I.tell(a, {{"event", "ready"}, {"levels", levels.size()}});
    ctx.progress(100, "ready");
    I.outcomes.with({"ready"}).inc();
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - started)
                        .count();
    log::info("assets: levels made", {{"asset", a.id},
                                      {"project", a.project},
                                      {"levels", static_cast<std::int64_t>(levels.size())},
                                      {"ms", static_cast<std::int64_t>(ms)}});
    return json::serialize(
        json::object{{"state", "ready"}, {"manifest", manifest_key}, {"levels", levels.size()}});
  } catch (const sql::Error& e) {
    return retry(std::string("database: ") + e.what());
  } catch (const s3::S3Error& e) {
    return retry(std::string("object storage: ") + e.what());
  } catch (const std::filesystem::filesystem_error& e) {
    return retry(std::string("work directory: ") + e.what());
  }
}

jobs::HandlerResult AssetProcessor::cleanup(jobs::JobContext& ctx) {
  auto& I = *impl_;
  const auto target = target_of(ctx.lease());
  if (!target) return bad_payload(ctx.lease());
  const auto& [p, id] = *target;
  try {
    std::optional<store::Asset> live;
    I.db.read(I.db.position(), [&](sql::Connection& c) { live = store::assets::find(c, p, id); });
    if (live) return std::string(R"({"removed":0,"reason":"the asset is live"})");
    // Every pipeline version's files: the prefix of the asset, whatever rows say.
    s3::Client s3c(I.storage);
    const std::string prefix = derived_root(p, id);
    std::size_t removed = 0;
    std::string token;
    do {
      auto page = s3c.list_objects(I.options.bucket, prefix, "", token);
      for (const auto& obj : page.objects) {
        s3c.delete_object(I.options.bucket, obj.key);
        ++removed;
      }
      token = page.next_token;
    } while (!token.empty());
    I.db.write([&](sql::Connection& c) { store::asset_processing::remove(c, id); });
    return json::serialize(json::object{{"removed", removed}});
  } catch (const sql::Error& e) {
    return retry(std::string("database: ") + e.what());
  } catch (const s3::S3Error& e) {
    return retry(std::string("object storage: ") + e.what());
  }
}

}  // namespace kiln::assets::pipeline
