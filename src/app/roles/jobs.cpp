// The jobs module (worker role, serve): the job queue on the database, the worker that runs
// handlers, the outbox relay, and the queue's metrics (docs/jobs.md).
#include "app/modules.hpp"
#include "app/settings.hpp"
#include "assets/pipeline/processor.hpp"
#include "assets/service.hpp"
#include "jobs/database_queue.hpp"
#include "jobs/queue_metrics.hpp"
#include "jobs/rabbitmq_queue.hpp"
#include "jobs/relay.hpp"
#include "jobs/worker.hpp"
#include "platform/log.hpp"
#include "platform/metrics.hpp"

#include <boost/json/serialize.hpp>

#include <algorithm>
#include <cctype>
#include <condition_variable>
#include <filesystem>
#include <thread>

namespace kiln::app {
namespace {

// The asset pipeline's options (settings pipeline.*, storage.*). Throws StartupError 2.
assets::pipeline::ProcessorOptions pipeline_options(const Node& node) {
  const auto& cfg = node.cfg;
  namespace pl = assets::pipeline;
  pl::ProcessorOptions o;
  std::error_code ec;
  o.executable = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  if (ec)
    throw StartupError(1, "the asset pipeline cannot find its own executable: " + ec.message());
  o.work_dir = cfg.str("pipeline.work_dir").empty()
                   ? node.data_dir / "pipeline"
                   : std::filesystem::path(cfg.str("pipeline.work_dir"));
  auto n = [&](const char* key) { return static_cast<std::uint64_t>(cfg.integer(key)); };
  o.max_source_bytes = n("pipeline.max_source_bytes");
  o.isolation.cpu = std::chrono::seconds(cfg.integer("pipeline.cpu_seconds"));
  o.isolation.wall = std::chrono::seconds(cfg.integer("pipeline.wall_seconds"));
  o.isolation.memory_bytes = n("pipeline.memory_bytes");
  o.lod.ratio = static_cast<double>(cfg.integer("pipeline.lod_ratio_percent")) / 100.0;
  o.lod.min_triangles = n("pipeline.lod_min_triangles");
  o.lod.max_levels = static_cast<int>(cfg.integer("pipeline.lod_max_levels"));
  o.model_limits.max_triangles = n("pipeline.max_triangles");
  o.model_limits.max_vertices = n("pipeline.max_triangles");
  o.model_limits.max_texture_pixels = n("pipeline.max_texture_pixels");
  o.textures.max_side = static_cast<std::uint32_t>(n("pipeline.texture_max_side"));
  o.textures.min_side = static_cast<std::uint32_t>(n("pipeline.texture_min_side"));
  o.textures.quality = static_cast<int>(cfg.integer("pipeline.texture_quality"));
  return o;
}

class JobsModule final : public Module {
 public:
  explicit JobsModule(Node& node) : node_(node), queue_(node.jobs.get()) {
    const auto& cfg = node.cfg;
    jobs::WorkerOptions wo;
    wo.name = node.id;
    wo.concurrency = static_cast<int>(cfg.integer("jobs.concurrency"));
    // Checked before the node started (check_jobs_settings).
    if (auto limits = jobs::parse_type_limits(cfg.str("jobs.type_concurrency"), wo.concurrency))
      wo.per_type = std::move(*limits);
    wo.lease = std::chrono::milliseconds(cfg.integer("jobs.lease_ms"));
    wo.heartbeat = wo.lease / 3;
    wo.idle_poll = std::chrono::milliseconds(cfg.integer("jobs.poll_ms"));
    worker_ = std::make_unique<jobs::Worker>(*queue_, wo, &node.registry);
    make_pipeline();
    relay_ = std::make_unique<jobs::OutboxRelay>(
        *node.db, *queue_, jobs::RelayOptions{node.id, std::chrono::seconds(10), 200});
    auto& reg = node.registry;
    gauges_ = std::make_unique<jobs::QueueGauges>(reg);
    relayed_ =
        &reg.counter("kiln_jobs_outbox_relayed_total", "Outbox events made into jobs.").get();
    node.health.add_check(
        "jobs", [this] { return problem(); }, node.role == "worker");
    if (node.role == "worker" && node.db->dialect() == sql::Dialect::Sqlite)
      log::warn(
          "jobs: this worker's database is SQLite: only processes on this machine that name the "
          "same file share its jobs (set database.url to the PostgreSQL the API nodes use)",
          {{"database", node.cfg.str("database.url")}});
  }

  void start(http::Server&) override {
    clear_work_dir();
    worker_->start();
    background_ = std::thread([this] { loop(); });
  }
  bool drain(std::chrono::milliseconds window, std::function<void()> done) override {
    // Off the event loop: a drain waits for running handlers.
    drainer_ = std::thread([this, window, done = std::move(done)] {
      worker_->drain(window);
      done();
    });
    return true;
  }
  void stop(bool) override { shut_down(); }
  // Also on a way out that stops no module (the HTTP server could not listen).
  ~JobsModule() override { shut_down(); }

 private:
  // asset.process and asset.cleanup on the node's database and object storage; the
  // uploader's sessions hear of it through the access bus (in process, or Redis).
  void make_pipeline() {
    assets::UploadOptions up;
    try {
      up = upload_options(node_.cfg, node_.objects_port);
    } catch (const std::exception& e) {
      throw StartupError(2,
                         std::string("configuration error: ") + e.what() + " (settings storage.*)");
    }
    pipeline_options_ = pipeline_options(node_);
    pipeline_options_.bucket = up.bucket;
    assets::pipeline::Notify notify;
    if (auto* bus = node_.access_bus.get()) {
      notify = [bus](const std::string& user, const std::string& project,
                     const boost::json::object& fields) {
        collab::AccessChange c;
        c.kind = collab::AccessChange::Kind::Notify;
        c.user = user;
        c.project = project;
        c.payload = boost::json::serialize(fields);
        bus->publish(c);
      };
    }
    processor_ = std::make_unique<assets::pipeline::AssetProcessor>(
        *node_.db, up.storage, pipeline_options_, notify, node_.registry);
    worker_->handle("asset.process",
                    [p = processor_.get()](jobs::JobContext& ctx) { return p->process(ctx); });
    worker_->handle("asset.cleanup",
                    [p = processor_.get()](jobs::JobContext& ctx) { return p->cleanup(ctx); });
  }
  // What a worker killed mid-job left behind (its sources and outputs).
  void clear_work_dir() {
    std::error_code ec;
    std::filesystem::create_directories(pipeline_options_.work_dir, ec);
    if (ec)
      throw StartupError(1, "pipeline.work_dir " + pipeline_options_.work_dir.string() +
                                " cannot be created: " + ec.message());
    for (const auto& entry : std::filesystem::directory_iterator(pipeline_options_.work_dir, ec))
      if (entry.path().filename().string().starts_with("job-"))
        std::filesystem::remove_all(entry.path(), ec);
  }

  // Every poll interval the relay's pass; every 5 s the queue's stats into the gauges
  // (scrapes must not wait on the database).
  void loop() {
    const auto period = std::chrono::milliseconds(node_.cfg.integer("jobs.poll_ms"));
    auto next_stats = std::chrono::steady_clock::now();
    auto next_purge = std::chrono::steady_clock::now();
    for (;;) {
      {
        std::unique_lock lock(mu_);
        cv_.wait_for(lock, period, [&] { return stopping_; });
        if (stopping_) return;
      }
      const auto pass = relay_->pass();
      relayed_->inc(pass.relayed);
      note(pass.error ? pass.error->detail : "");
      if (std::chrono::steady_clock::now() >= next_purge) {
        next_purge = std::chrono::steady_clock::now() + std::chrono::minutes(1);
        purge();
      }
      if (std::chrono::steady_clock::now() < next_stats) continue;
      next_stats = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      if (auto st = queue_->stats()) gauges_->update(*st);
    }
  }
  // Finished jobs past their retention, a thousand at a time, at most ten thousand a minute
  // (safe on several workers at once: each takes other rows).
  void purge() {
    const auto kept = std::chrono::seconds(node_.cfg.integer("jobs.retention_s"));
    const auto dead_kept = std::chrono::seconds(node_.cfg.integer("jobs.dead_retention_s"));
    std::size_t total = 0;
    for (int batch = 0; batch < 10; ++batch) {
      auto n = queue_->purge(kept, dead_kept, 1'000);
      if (!n) {
        log::warn("jobs: retention purge failed", {{"error", n.error().detail}});
        return;
      }
      total += *n;
      if (*n < 1'000) break;
    }
    if (total > 0)
      log::info("jobs: finished jobs purged", {{"jobs", static_cast<std::int64_t>(total)}});
  }
  void shut_down() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (background_.joinable()) background_.join();
    if (drainer_.joinable()) drainer_.join();
    if (worker_) worker_->stop();
  }
  void note(const std::string& error) {
    std::lock_guard lock(mu_);
    if (!error.empty() && error_.empty())
      log::warn("jobs: outbox relay failed", {{"error", error}});
    error_ = error;
  }
  std::optional<std::string> problem() {
    std::lock_guard lock(mu_);
    if (error_.empty()) return std::nullopt;
    return "the outbox relay fails: " + error_;
  }

  Node& node_;
  jobs::JobQueue* queue_;  // the node's
  assets::pipeline::ProcessorOptions pipeline_options_;
  std::unique_ptr<assets::pipeline::AssetProcessor> processor_;  // before the worker: outlives it
  std::unique_ptr<jobs::Worker> worker_;
  std::unique_ptr<jobs::OutboxRelay> relay_;
  std::unique_ptr<jobs::QueueGauges> gauges_;
  metrics::Counter* relayed_ = nullptr;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::string error_;
  std::thread background_, drainer_;
};

}  // namespace

namespace {

// The broker settings, checked (StartupError 2 naming the setting; the password is never
// repeated). check_jobs_settings runs this before anything touches the database.
jobs::RabbitQueueOptions rabbitmq_options(const config::Config& cfg) {
  jobs::RabbitQueueOptions ro;
  try {
    if (cfg.str("jobs.rabbitmq_url").empty())
      throw amqp::Error("jobs.queue is rabbitmq: set jobs.rabbitmq_url", false);
    ro.url = amqp::parse_url(cfg.str("jobs.rabbitmq_url"));
  } catch (const amqp::Error& e) {
    throw StartupError(
        2, std::string("configuration error: ") + e.what() + " (setting jobs.rabbitmq_url)");
  }
  ro.prefix = cfg.str("jobs.rabbitmq_prefix");
  const bool name_ok =
      ro.prefix.size() <= 100 && std::all_of(ro.prefix.begin(), ro.prefix.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '_' || c == '-';
      });
  if (!name_ok || ro.prefix.empty())
    throw StartupError(2,
                       "configuration error: jobs.rabbitmq_prefix must be 1-100 of "
                       "[A-Za-z0-9._-] (setting jobs.rabbitmq_prefix)");
  if (ro.prefix.starts_with("amq."))
    throw StartupError(2,
                       "configuration error: jobs.rabbitmq_prefix must not begin with 'amq.' "
                       "(RabbitMQ reserves it) (setting jobs.rabbitmq_prefix)");
  return ro;
}

}  // namespace

void check_jobs_settings(const config::Config& cfg) {
  if (auto limits = jobs::parse_type_limits(cfg.str("jobs.type_concurrency"),
                                            static_cast<int>(cfg.integer("jobs.concurrency")));
      !limits)
    throw StartupError(2, "configuration error: jobs.type_concurrency " + limits.error().detail +
                              " (setting jobs.type_concurrency)");
  if (cfg.str("jobs.queue") == "rabbitmq") (void)rabbitmq_options(cfg);
}

std::unique_ptr<jobs::JobQueue> make_job_queue(Node& node) {
  const auto& cfg = node.cfg;
  jobs::DatabaseQueueOptions qo;
  qo.default_policy.max_attempts = static_cast<int>(cfg.integer("jobs.max_attempts"));
  qo.default_policy.base = std::chrono::milliseconds(cfg.integer("jobs.backoff_base_ms"));
  qo.default_policy.cap = std::chrono::milliseconds(cfg.integer("jobs.backoff_cap_ms"));
  qo.poll = std::chrono::milliseconds(cfg.integer("jobs.poll_ms"));
  if (cfg.str("jobs.queue") != "rabbitmq")
    return std::make_unique<jobs::DatabaseQueue>(*node.db, qo);

  jobs::RabbitQueueOptions ro = rabbitmq_options(cfg);
  ro.sweep = std::chrono::milliseconds(cfg.integer("jobs.sweep_ms"));
  ro.name = "kiln " + node.role + " " + node.id;
  auto q = std::make_unique<jobs::RabbitQueue>(*node.db, qo, ro, &node.registry);
  // Not critical: without the broker, workers find jobs by the database sweep.
  // Unauthenticated (/readyz): why is in the log, not here (it names the broker's user and host).
  node.health.add_check(
      "jobs.broker",
      [r = q.get()]() -> std::optional<std::string> {
        if (r->problem().empty()) return std::nullopt;
        return std::string(
            "RabbitMQ cannot be used; workers take jobs from the database (see the log)");
      },
      false);
  log::info("jobs: on RabbitMQ", {{"broker", ro.url.redacted()}, {"prefix", ro.prefix}});
  return q;
}

std::unique_ptr<Module> make_jobs(Node& node) {
  return std::make_unique<JobsModule>(node);
}

void add_jobs_settings(config::Schema& s) {
  using namespace setting;
  s.add(integer("jobs.concurrency", 4, 1, 1'000,
                "Job handlers running at once in this process (the `worker` role, and "
                "`kiln serve`)."));
  s.add(text("jobs.type_concurrency", "",
             "At most this many handlers of one type at once in this process, within "
             "jobs.concurrency: `type=n[,type=n...]` (e.g. `asset.process=2`); other types share "
             "what is left. Empty: no per-type limit."));
  s.add(integer("jobs.lease_ms", 30'000, 1'000, 86'400'000,
                "A worker holds a job this long between heartbeats (every third of it); a job "
                "whose worker died runs again after it."));
  s.add(integer("jobs.poll_ms", 200, 10, 60'000,
                "An idle worker asks for work this often; the outbox relay runs as often."));
  s.add(choice("jobs.queue", "database", {"database", "rabbitmq"},
               "How workers hear of jobs: `database` (they ask it every jobs.poll_ms; SQLite or "
               "PostgreSQL) or `rabbitmq` (deliveries from jobs.rabbitmq_url, with a database "
               "sweep every jobs.sweep_ms behind them). The database holds every job either way."));
  Setting url = text("jobs.rabbitmq_url", "",
                     "The broker for jobs.queue = rabbitmq: `amqp://user:password@host:port/vhost` "
                     "(RabbitMQ's URI spec: no path is the vhost `/`). Give it in the config file "
                     "or KILN_JOBS_RABBITMQ_URL: a flag shows the password to `ps`.");
  url.secret = true;
  s.add(url);
  Setting prefix =
      text("jobs.rabbitmq_prefix", "kiln.jobs",
           "Names of the exchange (`<prefix>`), the queue of each job type "
           "(`<prefix>.<type>`, quorum) and the dead letters (`<prefix>._dead-letters`).",
           false);
  s.add(prefix);
  s.add(integer("jobs.rabbitmq_prefetch", 0, 0, 65'535,
                "Deliveries a worker holds unacknowledged at most; 0: twice jobs.concurrency."));
  s.add(
      integer("jobs.sweep_ms", 5'000, 100, 3'600'000,
              "With jobs.queue = rabbitmq, how often a worker also takes ready jobs straight from "
              "the database: jobs whose retry backoff ended or whose worker died wait at most this "
              "long; a job whose message was lost in a broker outage at most twice this long (a "
              "sweep leaves a job to its message for one interval)."));
  s.add(integer("jobs.retention_s", 7 * 86'400, 60, 10 * 365 * 86'400,
                "Succeeded and cancelled jobs are deleted with their history this long after they "
                "finished (an idempotency key names its job only while it is kept)."));
  s.add(integer("jobs.dead_retention_s", 30 * 86'400, 60, 10 * 365 * 86'400,
                "Dead jobs are kept this long after they died, for an operator to look at and "
                "retry."));
  s.add(integer("jobs.max_attempts", 5, 1, 1'000,
                "Attempts of a job before it is dead (a permanent failure is dead at once)."));
  s.add(integer("jobs.backoff_base_ms", 1'000, 1, 86'400'000,
                "Retry backoff: the wait after attempt n is random in [0, min(cap, base * "
                "2^(n-1))) (full jitter)."));
  s.add(integer("jobs.backoff_cap_ms", 600'000, 1, 86'400'000, "Retry backoff's cap."));

  // The asset pipeline (docs/assets.md): what a worker makes of uploaded models.
  s.add(text("pipeline.work_dir", "",
             "Where a worker keeps a model and its levels while it processes them (removed "
             "after each job, and at start). Empty: `pipeline` in the data directory."));
  s.add(integer("pipeline.max_source_bytes", 2LL << 30, 1, 1LL << 40,
                "Model files larger than this are not processed (the asset fails with "
                "`too_large`)."));
  s.add(integer("pipeline.cpu_seconds", 300, 1, 86'400,
                "CPU time the import and LOD chain of one model may use (the child process's "
                "RLIMIT_CPU); past it the asset fails with `limits`."));
  s.add(integer("pipeline.wall_seconds", 600, 1, 86'400,
                "Wall-clock time one model may take before its child process is killed."));
  s.add(integer("pipeline.memory_bytes", 4LL << 30, 64LL << 20, 1LL << 40,
                "Address space the child process importing one model may use (RLIMIT_AS): a "
                "decompression bomb or an absurd count fails the asset, not the worker."));
  s.add(integer("pipeline.lod_ratio_percent", 50, 5, 95,
                "Each level aims at this share of the previous level's triangles."));
  s.add(integer("pipeline.lod_min_triangles", 500, 1, 100'000'000,
                "No level aims below this many triangles (the chain's floor)."));
  s.add(integer("pipeline.lod_max_levels", 8, 1, 16,
                "Levels per model at most, the original included."));
  s.add(integer("pipeline.max_triangles", 20'000'000, 1, 1'000'000'000,
                "Models with more triangles (or vertices) fail with `too_large`, checked before "
                "the geometry is read."));
  s.add(integer("pipeline.max_texture_pixels", 8192LL * 8192, 1, 1LL << 32,
                "Images with more pixels fail the model with `too_large`, from their headers, "
                "before anything decodes them."));
  s.add(integer("pipeline.texture_max_side", 8192, 16, 16'384,
                "The finest texture level's larger side at most (px); larger textures are "
                "scaled down to it."));
  s.add(integer("pipeline.texture_min_side", 256, 1, 16'384,
                "Texture levels halve until the first whose larger side is at most this (px)."));
  s.add(integer("pipeline.texture_quality", 85, 0, 100,
                "WebP quality (lossy, alpha kept) of texture levels."));
}

}  // namespace kiln::app
