// The objects module: the embedded S3-compatible store on its own listener (objects role,
// serve).
#include "app/modules.hpp"
#include "app/secrets.hpp"
#include "app/settings.hpp"
#include "objects/s3_listener.hpp"
#include "platform/http_server.hpp"
#include "platform/log.hpp"

namespace kiln::app {
namespace {

// The origins a browser shows pages of `listen` under: loopback by both names, a wildcard
// address on any host name at that port, otherwise the address itself. None for port 0
// (chosen at start: name the origin in objects.cors_origins).
std::vector<std::string> editor_origins(const std::string& listen) {
  const auto [host, port] = split_endpoint(listen);
  if (port == 0) return {};
  const auto p = ":" + std::to_string(port);
  if (host == "127.0.0.1" || host == "localhost" || host == "::1")
    return {"http://127.0.0.1" + p, "http://localhost" + p};
  if (host == "0.0.0.0" || host == "::") return {"http://*" + p};
  return {"http://" + host + p};
}

class ObjectsModule final : public Module {
 public:
  explicit ObjectsModule(Node& node) : node_(node) {
    const auto& cfg = node.cfg;
    try {
      const auto dir = cfg.str("objects.dir").empty()
                           ? node.data_dir / "objects"
                           : std::filesystem::absolute(cfg.str("objects.dir"));
      store_ = std::make_unique<objects::Store>(dir);
      // What a crash left behind (unpublished bytes, unreferenced blobs) goes at start.
      if (const auto swept = store_->sweep(std::chrono::hours(1)); swept > 0) {
        log::info("object store: removed crash leftovers",
                  {{"files", static_cast<std::int64_t>(swept)}});
      }
      objects::ApiOptions oo;
      oo.protected_buckets = config::split_list(cfg.str("objects.buckets"));
      for (const auto& b : oo.protected_buckets) store_->create_bucket(b);
      oo.credentials[cfg.str("objects.access_key")] = objects_secret(cfg);
      oo.verify.region = cfg.str("objects.region");
      oo.verify.max_skew_s = cfg.integer("objects.max_skew_s");
      oo.cors_origins = config::split_list(cfg.str("objects.cors_origins"));
      // The web editor served by this node (http.editor_dir) uploads to and downloads from
      // the store from its pages: their origin is this node's HTTP address.
      if (!cfg.str("http.editor_dir").empty()) {
        for (auto& o : editor_origins(cfg.str("http.listen"))) oo.cors_origins.push_back(o);
      }
      oo.virtual_host_domain = cfg.str("objects.virtual_host_domain");
      api_ = std::make_unique<objects::S3Api>(*store_, oo);
      http::ServerOptions xo;
      std::tie(xo.host, xo.port) = split_endpoint(cfg.str("objects.listen"));
      listener_ = std::make_unique<objects::S3Listener>(*api_);
      // Listening now: the API (configured next) signs URLs naming the bound port.
      server_ = std::make_unique<http::Server>(*node.runtime, xo, *listener_, node.registry);
      server_->start();
      node.objects_port = server_->port();
      log::info("object store listening", {{"address", xo.host},
                                           {"port", static_cast<std::int64_t>(server_->port())},
                                           {"dir", dir.string()}});
    } catch (const std::exception& e) {
      log::error("object store unusable", {{"error", e.what()}});
      throw StartupError(1, std::string("object store: ") + e.what() + " (settings objects.*)");
    }
  }

  bool drain(std::chrono::milliseconds, std::function<void()> done) override {
    server_->drain(std::move(done));
    return true;
  }
  void close_all() override { server_->close_all(); }
  void describe(Landing& landing) override {
    auto [host, port] = split_endpoint(node_.cfg.str("objects.listen"));
    if (host == "0.0.0.0" || host == "::") host = "127.0.0.1";
    landing.objects = "http://" + host + ":" + std::to_string(server_->port());
    landing.buckets = node_.cfg.str("objects.buckets");
  }

 private:
  Node& node_;
  std::unique_ptr<objects::Store> store_;
  std::unique_ptr<objects::S3Api> api_;
  std::unique_ptr<objects::S3Listener> listener_;
  std::unique_ptr<http::Server> server_;
};

}  // namespace

std::unique_ptr<Module> make_objects(Node& node) {
  return std::make_unique<ObjectsModule>(node);
}

void add_objects_settings(config::Schema& s) {
  using namespace setting;
  s.add(endpoint("objects.listen", "127.0.0.1:7701",
                 "Address of the embedded S3-compatible object store (`kiln objects`, and "
                 "`kiln serve`)."));
  s.add(text("objects.dir", "",
             "Where the object store keeps its data. Empty: `<data.dir>/objects`."));
  s.add(text("objects.region", "us-east-1", "The region clients sign for (SigV4 scope).",
             /*allow_empty=*/false));
  s.add(text("objects.access_key", "kiln", "The access key id clients sign with.",
             /*allow_empty=*/false));
  Setting osecret = text("objects.secret_key", "",
                         "The secret key clients sign with (at least 32 bytes). Empty: generated "
                         "once into `<data.dir>/objects-secret` (mode 0600).");
  osecret.secret = true;
  osecret.default_shown = "generated, in <data.dir>/objects-secret";
  s.add(osecret);
  s.add(text("objects.buckets", "kiln", "Comma-separated buckets created at start."));
  s.add(text("objects.cors_origins", "",
             "Comma-separated origins allowed to call the store from a browser (one `*` "
             "matches any run of characters: `https://*.example.com`; `*`: any); responses "
             "then expose ETag. Empty: no CORS. A bucket's own CORS rules come first."));
  s.add(text("objects.virtual_host_domain", "localhost",
             "Virtual-hosted-style requests: a Host of `<bucket>.<this domain>` names the bucket "
             "(`kiln.localhost:7701/key`). Empty: path-style only (`/bucket/key`)."));
  s.add(integer("objects.max_skew_s", 900, 1, 86'400,
                "Largest difference between a signed request's time and this node's clock."));
}

}  // namespace kiln::app
