// The worker's side of the asset pipeline: the `asset.process` and `asset.cleanup` jobs
// (docs/assets.md).
//
// asset.process {"project", "asset", ...}: the asset's model file is fetched from object
// storage into a work directory, converted in a child process (isolate.hpp), and its levels
// and manifest stored beside each other under
//   derived/<project>/<asset>/<pipeline version>/lod<N>-<sha256[:16]>.glb
//   derived/<project>/<asset>/<pipeline version>/manifest-<sha256[:16]>.json
// named by their content: immutable, cacheable forever. The manifest names its levels by
// URI relative to itself ("uri": "lod0-....glb"). The asset's row in asset_processing goes
// queued -> processing (stage, percent) -> ready (the manifest's key) or failed (the code and
// the sentence), and the uploader's sessions are told through `notify` (kind "asset").
// Idempotent: an asset ready for this pipeline version is not processed again; a retry after
// a crash writes the same keys. A file the pipeline refuses (malformed, unsupported, too
// large, over its limits, a crashing parser, or Kiln's own `internal` fault on it) is a
// failed asset, not a failed job; storage or database outages are retryable failures. A
// cancelled job or a worker shutting down kills the child: the asset shows `failed` with
// code `stopped` until its job runs again. An asset deleted while it was processed has
// what was stored for it removed. Only a current member of the project is told.
//
// asset.cleanup {"project", "asset"}: a deleted asset's derived files and rows are removed.
#pragma once

#include "assets/pipeline/isolate.hpp"
#include "clients/s3/client.hpp"
#include "jobs/worker.hpp"
#include "store/database.hpp"

#include "platform/metrics.hpp"

#include <filesystem>
#include <functional>
#include <memory>

namespace kiln::assets::pipeline {

struct ProcessorOptions {
  std::string bucket = "kiln";
  std::string executable;          // the kiln binary the child runs
  std::filesystem::path work_dir;  // where sources and outputs wait (removed after each job)
  std::uint64_t max_source_bytes = 2ull << 30;
  IsolationLimits isolation;
  LodOptions lod;
  Limits model_limits;
  TextureOptions textures;
};

// What the uploader's sessions are told: the user to tell, the project, and the frame's
// fields besides "t" (kind "asset", "event" progress/ready/failed, ...). May be empty.
using Notify = std::function<void(const std::string& user, const std::string& project,
                                  const boost::json::object& fields)>;

class AssetProcessor {
 public:
  // `registry`: kiln_assets_processed_total{outcome} (ready, failed, skipped, stopped,
  // internal, gone).
  AssetProcessor(store::Database& db, s3::ClientOptions storage, ProcessorOptions options,
                 Notify notify, metrics::Registry& registry);
  ~AssetProcessor();
  AssetProcessor(const AssetProcessor&) = delete;
  AssetProcessor& operator=(const AssetProcessor&) = delete;

  jobs::HandlerResult process(jobs::JobContext& ctx);
  jobs::HandlerResult cleanup(jobs::JobContext& ctx);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::assets::pipeline
