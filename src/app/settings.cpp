#include "app/settings.hpp"

namespace kiln::app {

using config::Setting;
using config::Type;

namespace {

Setting integer(std::string key, std::int64_t def, std::int64_t min, std::int64_t max,
                std::string help) {
  Setting s;
  s.key = std::move(key);
  s.type = Type::Int;
  s.default_value = std::to_string(def);
  s.min = min;
  s.max = max;
  s.help = std::move(help);
  return s;
}

Setting text(std::string key, std::string def, std::string help, bool allow_empty = true) {
  Setting s;
  s.key = std::move(key);
  s.type = Type::String;
  s.default_value = std::move(def);
  s.help = std::move(help);
  s.allow_empty = allow_empty;
  return s;
}

Setting choice(std::string key, std::string def, std::vector<std::string> choices,
               std::string help) {
  Setting s;
  s.key = std::move(key);
  s.type = Type::Enum;
  s.default_value = std::move(def);
  s.choices = std::move(choices);
  s.help = std::move(help);
  return s;
}

Setting flag(std::string key, bool def, std::string help) {
  Setting s;
  s.key = std::move(key);
  s.type = Type::Bool;
  s.default_value = def ? "true" : "false";
  s.help = std::move(help);
  return s;
}

Setting endpoint(std::string key, std::string def, std::string help) {
  Setting s;
  s.key = std::move(key);
  s.type = Type::Endpoint;
  s.default_value = std::move(def);
  s.help = std::move(help);
  return s;
}

config::Schema build() {
  constexpr std::int64_t KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;
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
  s.add(choice("log.level", "info", {"trace", "debug", "info", "warn", "error"},
               "Lowest level written to the log."));
  s.add(choice("log.format", "json", {"json", "text"},
               "`json`: one JSON object per line (for collectors); `text`: for a terminal."));
  s.add(integer("runtime.threads", 0, 0, 256, "Event-loop threads; 0 means one per CPU core."));
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
