// The api module: the REST API on /v1 (api role, serve), and the stale-upload sweep.
#include "api/api.hpp"
#include "app/modules.hpp"
#include "app/secrets.hpp"
#include "app/settings.hpp"
#include "platform/log.hpp"

namespace kiln::app {

// Where the API's uploads go and their limits (settings storage.*, uploads.*).
// `embedded_port`: the port the embedded store bound in this process, 0 when it runs
// elsewhere.
assets::UploadOptions upload_options(const config::Config& cfg, std::uint16_t embedded_port) {
  assets::UploadOptions up;
  auto& st = up.storage;
  st.endpoint = cfg.str("storage.endpoint");
  if (st.endpoint.empty()) {
    auto [host, port] = split_endpoint(cfg.str("objects.listen"));
    if (host == "0.0.0.0" || host.empty()) host = "127.0.0.1";
    if (embedded_port != 0) port = embedded_port;
    st.endpoint = "http://" + host + ":" + std::to_string(port);
  }
  auto either = [&](const char* key, const char* fallback) {
    return cfg.str(key).empty() ? cfg.str(fallback) : cfg.str(key);
  };
  st.ca_file = cfg.str("storage.ca_file");
  st.region = either("storage.region", "objects.region");
  st.credentials.access_key = either("storage.access_key", "objects.access_key");
  // The embedded store's generated secret is only right for the store of this data dir: a
  // storage named elsewhere needs its own key, or every signature would be refused later.
  if (!cfg.str("storage.endpoint").empty() && cfg.str("storage.secret_key").empty())
    throw std::invalid_argument("storage.endpoint is set: storage.secret_key is required");
  st.credentials.secret_key =
      cfg.str("storage.secret_key").empty() ? objects_secret(cfg) : cfg.str("storage.secret_key");
  up.public_endpoint = cfg.str("storage.public_endpoint");
  up.bucket = cfg.str("storage.bucket");
  up.cdn_base = cfg.str("storage.cdn_base");
  while (up.cdn_base.ends_with('/')) up.cdn_base.pop_back();
  auto bytes = [&](const char* key) { return static_cast<std::uint64_t>(cfg.integer(key)); };
  up.policy.multipart_threshold = bytes("uploads.multipart_threshold_bytes");
  up.policy.part_size = bytes("uploads.part_size_bytes");
  up.policy.max_size = bytes("uploads.max_size_bytes");
  up.project_quota = bytes("uploads.project_quota_bytes");
  up.policy.content_types = config::split_list(cfg.str("uploads.content_types"));
  up.url_ttl_s = cfg.integer("uploads.url_ttl_s");
  up.download_ttl_s = cfg.integer("uploads.download_ttl_s");
  up.stale_after_s = cfg.integer("uploads.stale_after_s");
  up.max_parts_per_request = static_cast<std::size_t>(cfg.integer("uploads.max_parts_per_request"));
  return up;
}

namespace {

// The API's settings (api.*, auth.*, and the uploads').
api::ApiOptions api_options(const config::Config& cfg, std::uint16_t objects_port) {
  api::ApiOptions ao;
  try {
    ao.service_key = service_key(cfg);
    if (cfg.str("auth.jwt_public_key_file").empty()) ao.jwt_secret = jwt_secret(cfg);
  } catch (const std::exception& e) {
    throw StartupError(2, std::string("configuration error: ") + e.what());
  }
  ao.token_ttl_s = cfg.integer("api.token_ttl_s");
  ao.token_max_ttl_s = cfg.integer("api.token_max_ttl_s");
  ao.dev_tokens = cfg.boolean("auth.dev_tokens");
  ao.user_requests_per_second = static_cast<double>(cfg.integer("api.user_requests_per_second"));
  ao.service_requests_per_second =
      static_cast<double>(cfg.integer("api.service_requests_per_second"));
  ao.page_size = static_cast<std::size_t>(cfg.integer("api.page_size"));
  ao.max_page_size = static_cast<std::size_t>(cfg.integer("api.max_page_size"));
  try {
    ao.uploads = upload_options(cfg, objects_port);
  } catch (const std::exception& e) {
    throw StartupError(
        2, std::string("configuration error: ") + e.what() + " (settings storage.*, uploads.*)");
  }
  return ao;
}

class ApiModule final : public Module {
 public:
  explicit ApiModule(Node& node) : node_(node) {
    const auto& cfg = node.cfg;
    auto ao = api_options(cfg, node.objects_port);
    if (ao.dev_tokens) {
      log::warn(
          "api: auth.dev_tokens is on: POST /v1/dev/token mints a token for any user, "
          "without a key (development only)",
          {{"listen", cfg.str("http.listen")}});
    }
    // Handlers on threads of their own, never the event loop; upload completions (which
    // may read a whole object back) on others, so that they never hold every API thread.
    threads_ =
        std::make_unique<ThreadPool>(static_cast<std::size_t>(cfg.integer("api.threads")),
                                     static_cast<std::size_t>(cfg.integer("api.max_queued")));
    upload_threads_ = std::make_unique<ThreadPool>(
        static_cast<std::size_t>(cfg.integer("uploads.complete_threads")),
        static_cast<std::size_t>(cfg.integer("api.max_queued")));
    api_ = std::make_unique<api::Api>(*node.db, *node.verifier, *threads_, std::move(ao),
                                      node.registry, node.access_bus.get(), upload_threads_.get(),
                                      node.jobs.get());
    api_->set_terminals(node.terminals, node.terminals_off);
    api_->install(node.router);
  }

  void start(http::Server&) override {
    // Stale uploads: found on the loop's timer, aborted on the API's threads (S3 calls block).
    node_.every(std::chrono::seconds(1),
                std::chrono::seconds(node_.cfg.integer("uploads.sweep_interval_s")),
                [a = api_.get(), pool = threads_.get()] {
                  pool->post([a] {
                    try {
                      a->sweep_stale_uploads();
                    } catch (const std::exception& e) {
                      log::warn("api: stale-upload sweep failed", {{"error", e.what()}});
                    }
                  });
                });
  }
  void stop(bool) override {
    upload_threads_.reset();  // finishes requests in flight before the database goes
    threads_.reset();
  }
  void describe(Landing& landing) override {
    landing.api = true;
    if (node_.cfg.str("api.service_key").empty())
      landing.service_key_file = (node_.data_dir / "service-key").lexically_normal().string();
  }

 private:
  Node& node_;
  std::unique_ptr<ThreadPool> threads_;
  std::unique_ptr<ThreadPool> upload_threads_;
  std::unique_ptr<api::Api> api_;
};

}  // namespace

std::unique_ptr<Module> make_api(Node& node) {
  return std::make_unique<ApiModule>(node);
}

void add_api_settings(config::Schema& s) {
  using namespace setting;
  Setting key = text("api.service_key", "",
                     "The key the studio's backend sends (`Authorization: Bearer <key>`) to "
                     "mint user tokens and manage projects for users; at least 32 bytes. Empty: "
                     "generated once into `<data.dir>/service-key` (mode 0600).");
  key.secret = true;
  key.default_shown = "generated, in <data.dir>/service-key";
  s.add(key);
  s.add(integer("api.token_ttl_s", 3'600, 60, 30 * 86'400,
                "Lifetime of tokens minted by `POST /v1/tokens` when the request names none."));
  s.add(integer("api.token_max_ttl_s", 7 * 86'400, 60, 365 * 86'400,
                "Longest lifetime `POST /v1/tokens` accepts."));
  s.add(flag("auth.dev_tokens", false,
             "Development only: `POST /v1/dev/token` `{\"user\": {\"id\", \"name\"}}` mints a user "
             "token for anyone who asks, without the service key (the web editor's sign-in "
             "screen uses it). Anyone who reaches the API can then act as any user: never "
             "enable it on a node others can reach."));
  s.add(integer("api.user_requests_per_second", 20, 1, 1'000'000,
                "API requests per second per user (burst twice that); beyond it 429 with "
                "Retry-After."));
  s.add(integer("api.service_requests_per_second", 200, 1, 1'000'000,
                "API requests per second for the service key (burst twice that)."));
  s.add(integer("api.page_size", 50, 1, 1'000, "Items per page when a list names no `limit`."));
  s.add(integer("api.max_page_size", 200, 1, 10'000, "Largest `limit` a list accepts."));
  s.add(integer("api.threads", 8, 1, 256,
                "Threads running API handlers (they block on the database)."));
  s.add(integer("api.max_queued", 1'000, 1, 1'000'000,
                "API requests waiting for a thread at most; beyond it 503 with Retry-After."));
}

void add_upload_settings(config::Schema& s) {
  using namespace setting;
  s.add(text("storage.endpoint", "",
             "The S3-compatible object storage the API signs uploads for and calls "
             "(`http(s)://host[:port]`, path-style). Empty: the embedded store (objects.listen; in "
             "`kiln serve` the port it bound)."));
  s.add(text("storage.public_endpoint", "",
             "The storage endpoint as browsers and `kiln upload` reach it, named in presigned "
             "URLs. Empty: storage.endpoint."));
  s.add(text("storage.ca_file", "",
             "With an https:// storage endpoint: a PEM file of CAs to trust. Empty: the "
             "system's (SSL_CERT_FILE and SSL_CERT_DIR are honoured)."));
  s.add(text("storage.bucket", "kiln", "The bucket assets are stored in.", /*allow_empty=*/false));
  s.add(text("storage.region", "", "The region to sign for. Empty: objects.region."));
  s.add(text("storage.access_key", "", "The access key id. Empty: objects.access_key."));
  Setting ssecret = text("storage.secret_key", "",
                         "The secret key. Empty: the embedded store's (objects.secret_key).");
  ssecret.secret = true;
  s.add(ssecret);
  s.add(text("storage.cdn_base", "",
             "A CDN in front of the bucket (`https://cdn.example.com`): downloads are "
             "`<cdn_base>/<key>` URLs, cacheable forever (objects are never rewritten). Empty: "
             "presigned GETs."));
  constexpr std::int64_t kMiB = 1 << 20;
  s.add(integer("uploads.multipart_threshold_bytes", 100 * kMiB, 0, 5LL << 30,
                "Files larger than this upload in parts (multipart, resumable); smaller ones with "
                "one presigned PUT."));
  s.add(integer("uploads.part_size_bytes", 16 * kMiB, 5 * kMiB, 5LL << 30,
                "Part size of multipart uploads (grown for files that would need more than "
                "10,000 parts)."));
  s.add(integer("uploads.max_size_bytes", 64LL << 30, 1, 5LL << 40, "Largest file accepted."));
  s.add(integer("uploads.project_quota_bytes", 100LL << 30, 1, 1LL << 50,
                "Bytes a project may hold: its assets plus its open uploads."));
  s.add(text("uploads.content_types",
             "model/*,image/*,audio/*,video/*,font/*,text/plain,application/json,"
             "application/octet-stream,application/zip,application/gltf-buffer",
             "Comma-separated media types uploads may declare; `type/*` allows a family, "
             "`*/*` everything.",
             /*allow_empty=*/false));
  s.add(integer("uploads.url_ttl_s", 900, 10, 7 * 86'400,
                "Lifetime of presigned upload URLs (single PUTs and parts)."));
  s.add(integer("uploads.download_ttl_s", 3'600, 10, 7 * 86'400,
                "Lifetime of presigned download URLs."));
  s.add(integer("uploads.stale_after_s", 7 * 86'400, 1, 365 * 86'400,
                "Open uploads with no activity for this long are aborted (their parts removed)."));
  s.add(integer("uploads.sweep_interval_s", 600, 1, 86'400,
                "How often each API node looks for stale uploads."));
  s.add(integer("uploads.complete_threads", 2, 1, 256,
                "Threads completing uploads, apart from api.threads: a completion may read a "
                "whole object back to check its SHA-256."));
  s.add(integer("uploads.max_parts_per_request", 100, 1, 10'000,
                "Part URLs one request may ask for."));
}

}  // namespace kiln::app
