// `kiln`: one binary, many roles. Parses the command line, layers the configuration
// (defaults < YAML file < KILN_* environment < flags) and starts the role asked for.
#include "app/cli_help.hpp"
#include "app/convert_cli.hpp"
#include "app/database.hpp"
#include "app/download_cli.hpp"
#include "app/node.hpp"
#include "app/secrets.hpp"
#include "app/settings.hpp"
#include "app/upload_cli.hpp"
#include "auth/jwt.hpp"
#include "platform/config.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <map>
#include <optional>
#include <string_view>

#ifndef KILN_VERSION
#define KILN_VERSION "0.0.0"
#endif

namespace {

struct RoleInfo {
  const char* name;
  const char* does;
  const char* arrives_with;  // null when the role is built
};

// Roles that are not built yet say so and exit non-zero: no fake behaviour.
constexpr RoleInfo kRoles[] = {
    {"gateway", "WebSocket collaboration (/v1/collab) on the configured room engine", nullptr},
    {"api", "REST: projects, members, scenes, tokens, uploads, assets (/v1)", nullptr},
    {"objects", "embedded S3-compatible object store (objects.listen)", nullptr},
    {"worker",
     "job handlers and the outbox relay; the write-behind persister when rooms live in Redis",
     nullptr},
    {"agent", "build agent", "the build farm"},
    {"sandboxd",
     "sandbox host: terminal sessions in sandboxes, for the gateways and API nodes that name it "
     "in sandbox.daemon",
     nullptr},
};

}  // namespace

int main(int argc, char** argv) {
  // A write to a pipe whose reader is gone (a sandbox's, a child's) is an error to handle
  // (EPIPE), never the end of the server. Children get the default back (process.cpp).
  std::signal(SIGPIPE, SIG_IGN);
  using kiln::config::ConfigError;
  const auto& schema = kiln::app::schema();

  CLI::App app{"Kiln: the backend for collaborative, browser-based game development.", "kiln"};
  app.require_subcommand(1);
  app.fallthrough();  // settings flags may follow the command: `kiln serve --http-listen ...`
  app.set_version_flag("--version", std::string("kiln ") + KILN_VERSION);

  std::string config_file;
  app.add_option("--config", config_file, "YAML configuration file")->check(CLI::ExistingFile);
  std::map<std::string, std::optional<std::string>> flag_values;
  for (const auto& s : schema.settings()) {
    auto& slot = flag_values[s.key];
    app.add_option(
           s.flag_name(), slot,
           s.help + " (default: " + (s.default_shown.empty() ? s.default_value : s.default_shown) +
               "; env " + s.env_name() + ")")
        ->group("Settings (see kiln config doc)");
  }

  std::string command;
  app.add_subcommand("serve", "Run every role in one process on embedded backends")->callback([&] {
    command = "serve";
  });
  for (const auto& r : kRoles) {
    app.add_subcommand(r.name, std::string("Run the ") + r.name + " role: " + r.does)
        ->callback([&command, &r] { command = r.name; });
  }
  app.add_subcommand("version", "Print the version")->callback([&] { command = "version"; });
  app.add_subcommand("migrate", "Apply pending database schema migrations (database.url)")
      ->callback([&] { command = "migrate"; });
  std::string token_user, token_name;
  std::vector<std::string> token_roles;
  std::int64_t token_ttl = 3600;
  auto* token_cmd = app.add_subcommand(
      "token",
      "Print a user token (HS256) signed with the secret of the kiln serve whose data "
      "directory this is (--data-dir); identity only, for development and tests");
  token_cmd->add_option("--user", token_user, "User id (the `sub` claim)")->required();
  token_cmd->add_option("--name", token_name, "Display name (default: the user id)");
  token_cmd->add_option("--role", token_roles)->group("");  // removed: refused with a hint
  token_cmd->add_option("--ttl", token_ttl, "Seconds until the token expires")
      ->check(CLI::Range(1, 30 * 24 * 3600));
  token_cmd->callback([&] { command = "token"; });
  kiln::app::UploadArgs up;
  bool up_no_progress = false;
  auto* upload_cmd = app.add_subcommand(
      "upload",
      "Upload a file as an asset of a project: straight to object storage, in "
      "parallel parts, resumable (run the same command again), deduplicated by SHA-256");
  upload_cmd->add_option("file", up.file, "The file")->required()->check(CLI::ExistingFile);
  upload_cmd->add_option("--project", up.project, "The project's id")->required();
  const auto http_url = CLI::Validator(
      [](std::string& v) -> std::string {
        return v.starts_with("http://") || v.starts_with("https://")
                   ? std::string()
                   : "'" + v + "' is not an http:// or https:// URL";
      },
      "URL");
  upload_cmd->add_option("--api", up.api, "The Kiln API's base URL")
      ->capture_default_str()
      ->check(http_url);
  upload_cmd->add_option("--token", up.token, "A user token (default: $KILN_TOKEN)");
  upload_cmd->add_option("--name", up.name, "The asset's name (default: the file's name)");
  upload_cmd->add_option("--content-type", up.content_type,
                         "Media type (default: from the extension)");
  upload_cmd->add_option("--parallel", up.parallel, "Parts sent at once")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  upload_cmd->add_option("--state-dir", up.state_dir,
                         "Where resume state is kept (default: ~/.local/state/kiln/uploads)");
  upload_cmd->add_flag("--no-progress", up_no_progress, "No progress bar");
  upload_cmd->add_flag("--events", up.events, "Print one JSON line per part on stdout");
  upload_cmd->callback([&] { command = "upload"; });
  kiln::app::DownloadArgs down;
  auto* download_cmd = app.add_subcommand(
      "download",
      "Save an asset of a project to a file named as the asset (straight from object "
      "storage, checked against its SHA-256)");
  download_cmd->add_option("asset", down.asset, "The asset's id")->required();
  download_cmd->add_option("--project", down.project, "The project's id")->required();
  download_cmd->add_option("--api", down.api, "The Kiln API's base URL")
      ->capture_default_str()
      ->check(http_url);
  download_cmd->add_option("--token", down.token, "A user token (default: $KILN_TOKEN)");
  download_cmd->add_option("-o,--output", down.output, "The file (default: the asset's name)");
  download_cmd->add_flag("--force", down.force, "Replace an existing file");
  download_cmd->callback([&] { command = "download"; });
  kiln::app::ConvertArgs conv;
  kiln::app::add_convert_command(app, conv, command);
  auto* config_cmd = app.add_subcommand("config", "Inspect configuration");
  config_cmd->require_subcommand(1);
  config_cmd->add_subcommand("show", "Print the effective configuration (secrets redacted)")
      ->callback([&] { command = "config show"; });
  config_cmd->add_subcommand("doc", "Print the configuration reference in Markdown")->callback([&] {
    command = "config doc";
  });

  // `kiln help [COMMAND]`, as `kiln [COMMAND] --help`.
  if (argc >= 2 && std::string_view(argv[1]) == "help") {
    const CLI::App* asked = nullptr;
    if (argc >= 3) {
      for (const auto* sub : app.get_subcommands({}))
        if (sub->get_name() == argv[2]) asked = sub;
    }
    std::fputs(kiln::app::help_text(app, asked, schema).c_str(), stdout);
    return 0;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::Success&) {  // --help: the command asked about, or all of them
    const CLI::App* asked = nullptr;
    for (const CLI::App* a = &app;;) {
      auto subs = a->get_subcommands();
      if (subs.empty()) break;
      asked = a = subs.front();
    }
    std::fputs(kiln::app::help_text(app, asked, schema).c_str(), stdout);
    return 0;
  } catch (const CLI::ParseError& e) {
    // Usage errors exit with 2, naming an unknown flag (and the nearest known one) before
    // whatever the parser noticed first.
    if (auto unknown = kiln::app::unknown_flag(app, argc, argv)) {
      std::fprintf(stderr, "kiln: %s\n", unknown->c_str());
    } else if (auto cmd = kiln::app::unknown_command(app, argc, argv)) {
      std::fprintf(stderr, "kiln: %s\n", cmd->c_str());
    } else {
      std::fprintf(stderr, "kiln: %s (kiln --help)\n", e.what());
    }
    return 2;
  }

  if (command == "version") {
    std::printf("kiln %s\n", KILN_VERSION);
    return 0;
  }
  if (command == "upload") {
    if (up.token.empty()) {
      if (const char* t = std::getenv("KILN_TOKEN")) up.token = t;
    }
    up.progress = !up_no_progress;
    return kiln::app::run_upload(up);
  }
  if (command == "convert") return kiln::app::run_convert(conv);
  if (command == "download") {
    if (down.token.empty()) {
      if (const char* t = std::getenv("KILN_TOKEN")) down.token = t;
    }
    return kiln::app::run_download(down);
  }
  if (command == "config doc") {
    std::fputs(schema.markdown().c_str(), stdout);
    return 0;
  }

  kiln::config::Config cfg;
  try {
    kiln::config::Loader loader(schema);
    if (!config_file.empty()) loader.file(config_file);
    loader.env(kiln::config::kiln_environment());
    for (const auto& [key, value] : flag_values) {
      if (value) loader.flag(key, *value);
    }
    cfg = loader.finish();
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "kiln: configuration error: %s\n", e.what());
    return 2;
  }

  if (command == "config show") {
    std::fputs(cfg.describe().c_str(), stdout);
    return 0;
  }
  if (command == "migrate") return kiln::app::run_migrate(cfg);
  if (command == "token") {
    kiln::auth::Claims claims;
    claims.sub = token_user;
    claims.name = token_name.empty() ? token_user : token_name;
    claims.exp = std::chrono::duration_cast<std::chrono::seconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count() +
                 token_ttl;
    const bool user_ok = !token_user.empty() && token_user.size() <= 128 &&
                         std::all_of(token_user.begin(), token_user.end(), [](char ch) {
                           const auto u = static_cast<unsigned char>(ch);
                           return u > 0x20 && u != 0x7f && ch != '/' && ch != '"' && ch != '\\';
                         });
    if (!user_ok) {
      std::fprintf(stderr,
                   "kiln token: --user must be 1-128 printable characters without spaces, '/', "
                   "'\"' or '\\' (the ids the REST API accepts)\n");
      return 2;
    }
    if (!token_roles.empty()) {
      std::fprintf(stderr,
                   "kiln token: --role is gone: a token proves identity only, and roles come "
                   "from project membership (PUT /v1/projects/PROJECT/members/USER, or create "
                   "the project as that user; see docs/api.md)\n");
      return 2;
    }
    try {
      if (!cfg.str("auth.jwt_public_key_file").empty()) {
        std::fprintf(stderr,
                     "kiln: tokens are RS256 here (auth.jwt_public_key_file): sign them "
                     "with the private key, kiln token only signs HS256\n");
        return 2;
      }
      std::printf("%s\n",
                  kiln::auth::sign_hs256(claims, kiln::app::existing_jwt_secret(cfg)).c_str());
    } catch (const ConfigError& e) {
      std::fprintf(stderr, "kiln: configuration error: %s\n", e.what());
      return 2;
    }
    return 0;
  }
  for (const auto& r : kRoles) {
    if (command == r.name && r.arrives_with != nullptr) {
      std::fprintf(stderr,
                   "kiln: the '%s' role is not built yet; it arrives with %s.\n"
                   "kiln: `kiln serve` runs every role that exists in one process.\n",
                   r.name, r.arrives_with);
      return 2;
    }
  }
  try {
    return kiln::app::run_node(cfg, command);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln: fatal: %s\n", e.what());
    return 1;
  }
}
