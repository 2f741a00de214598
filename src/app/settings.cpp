#include "app/settings.hpp"

namespace kiln::app {

using config::Setting;
using config::Type;

namespace {

using namespace setting;

config::Schema build() {
  config::Schema s;
  s.add(text("node.id", "",
             "This node's name in logs, metrics and the protocol. Empty: the host name "
             "plus a random suffix, new at each start."));
  s.add(text("data.dir", "./kiln-data",
             "Directory for embedded state (created if missing). Relative paths are relative "
             "to the working directory.",
             /*allow_empty=*/false));
  s.add(endpoint("http.listen", "127.0.0.1:7700",
                 "Address the HTTP server listens on. Loopback by default: expose it "
                 "deliberately (`0.0.0.0:7700`)."));
  s.add(integer("http.max_header_bytes", 16 * KiB, 1 * KiB, 1 * MiB,
                "Largest request line plus headers; larger requests get 431."));
  s.add(integer("http.max_body_bytes", 1 * MiB, 0, 1 * GiB,
                "Largest request body; larger requests get 413. Uploads never pass through "
                "Kiln's HTTP server, so this stays small."));
  s.add(integer("http.request_timeout_ms", 30'000, 100, 600'000,
                "Time allowed to receive one whole request, and to send its response; a "
                "request that takes longer gets 408."));
  s.add(integer("http.idle_timeout_ms", 60'000, 100, 3'600'000,
                "A keep-alive connection with no request for this long is closed."));
  s.add(integer("http.max_connections", 20'000, 1, 1'000'000,
                "Open connections at most; beyond it new connections get 503 and are closed."));
  s.add(flag("http.access_log", true, "Log one line per HTTP request (path without query)."));
  s.add(text("http.cors_origins", "",
             "Comma-separated origins whose pages may call the API from a browser "
             "(`https://editor.example.com`; one `*` matches any run of characters: "
             "`https://*.example.com`; `*`: any). Empty: no CORS (same-origin pages and "
             "non-browser clients only)."));
  s.add(text("http.editor_dir", "",
             "Directory of the built web editor (`web/editor/dist`, made by "
             "`bash scripts/build-editor.sh`; `bash scripts/serve.sh` builds it and sets this), "
             "read into memory at start (at most 512 files, 64 MiB; hidden files skipped): "
             "`index.html` at `/` for browsers (`Accept: text/html`), the other files at "
             "`/editor/<name>`. Empty: `/` shows a page of links."));
  s.add(choice("log.level", "info", {"trace", "debug", "info", "warn", "error"},
               "Lowest level written to the log."));
  s.add(choice("log.format", "auto", {"auto", "json", "text"},
               "`json`: one JSON object per line (for collectors); `text`: for a terminal; "
               "`auto`: text when stderr is a terminal, else json."));
  s.add(integer("runtime.threads", 0, 0, 256, "Event-loop threads; 0 means one per CPU core."));
  Setting secret = text("auth.jwt_secret", "",
                        "HS256 secret for user tokens (at least 32 bytes). Empty: a random "
                        "secret is generated once and kept in `<data.dir>/jwt-secret` (mode 0600), "
                        "which `kiln token` reads too.");
  secret.secret = true;
  secret.default_shown = "generated, in <data.dir>/jwt-secret";
  s.add(secret);
  s.add(text("auth.jwt_public_key_file", "",
             "PEM RSA public key file: when set, tokens must be RS256 signed by its private key "
             "and HS256 tokens are refused."));
  s.add(integer("auth.clock_skew_s", 30, 0, 600,
                "Leeway for token `exp` and `nbf` against this node's clock."));
  add_gateway_settings(s);
  add_rooms_settings(s);
  add_database_settings(s);
  add_persist_settings(s);
  add_jobs_settings(s);
  add_api_settings(s);
  add_objects_settings(s);
  add_upload_settings(s);
  add_sandbox_settings(s);
  s.add(integer("shutdown.drain_ms", 10'000, 0, 3'600'000,
                "After SIGTERM or SIGINT: how long requests in progress may take to finish "
                "before their connections are cut."));
  return s;
}

}  // namespace

const config::Schema& schema() {
  static const config::Schema s = build();
  return s;
}

}  // namespace kiln::app
