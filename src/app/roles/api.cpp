// The api module: the REST API on /v1 (api role, serve), and the stale-upload sweep.
#include "api/api.hpp"
#include "app/modules.hpp"
#include "app/secrets.hpp"
#include "platform/log.hpp"

namespace kiln::app {
namespace {

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
    // Handlers on threads of their own, never the event loop; upload completions (which
    // may read a whole object back) on others, so that they never hold every API thread.
    threads_ =
        std::make_unique<ThreadPool>(static_cast<std::size_t>(cfg.integer("api.threads")),
                                     static_cast<std::size_t>(cfg.integer("api.max_queued")));
    upload_threads_ = std::make_unique<ThreadPool>(
        static_cast<std::size_t>(cfg.integer("uploads.complete_threads")),
        static_cast<std::size_t>(cfg.integer("api.max_queued")));
    api_ = std::make_unique<api::Api>(*node.db, *node.verifier, *threads_, std::move(ao),
                                      node.registry, node.access_bus.get(), upload_threads_.get());
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

}  // namespace kiln::app
