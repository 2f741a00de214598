#include "app/cli_help.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <map>
#include <set>
#include <sstream>
#include <vector>

namespace kiln::app {
namespace {

constexpr const char* kSettingsGroup = "Settings (see kiln config doc)";

// A command's own options (not --help, not the settings, not hidden ones).
std::vector<const CLI::Option*> own_options(const CLI::App& cmd) {
  std::vector<const CLI::Option*> out;
  for (const auto* o : cmd.get_options()) {
    if (o->get_group().empty() || o->get_group() == kSettingsGroup) continue;
    if (o->get_name() == "--help" || o->get_name() == "--version") continue;
    out.push_back(o);
  }
  return out;
}

std::string option_line(const CLI::Option& o) {
  std::string name;
  if (o.get_positional()) {
    name = o.get_name();
  } else {
    for (const auto& sn : o.get_snames()) name += "-" + sn + ", ";
    name += o.get_lnames().empty() ? o.get_name() : "--" + o.get_lnames().front();
  }
  const auto t = o.get_type_name();
  if (!o.get_positional() && !t.empty()) {
    // CLI11's "INT:INT in [1 - 64]" and "TEXT" in this help's own words; flags take none.
    name += t.find("INT") != std::string::npos ? " <integer>" : " <text>";
  }
  std::string line = "    " + name;
  line.resize(std::max<std::size_t>(line.size() + 2, 30), ' ');
  line += o.get_description();
  if (o.get_required()) line += " (required)";
  return line + "\n";
}

void command_block(std::ostringstream& out, const CLI::App& cmd, bool with_subcommands) {
  std::string head = "  " + cmd.get_name();
  head.resize(std::max<std::size_t>(head.size() + 2, 14), ' ');
  out << head << cmd.get_description() << "\n";
  for (const auto* o : own_options(cmd)) out << option_line(*o);
  if (!with_subcommands) return;
  for (const auto* sub : cmd.get_subcommands({})) {
    out << "    " << cmd.get_name() << " " << sub->get_name() << ": " << sub->get_description()
        << "\n";
  }
}

std::string type_name(const config::Setting& s) {
  switch (s.type) {
    case config::Type::String:
      return "text";
    case config::Type::Int:
      return "integer " + std::to_string(s.min) + ".." + std::to_string(s.max);
    case config::Type::Bool:
      return "true|false";
    case config::Type::Enum: {
      std::string out;
      for (const auto& c : s.choices) out += (out.empty() ? "" : "|") + c;
      return out;
    }
    case config::Type::Endpoint:
      return "host:port";
  }
  return "text";
}

void settings_block(std::ostringstream& out, const config::Schema& schema) {
  out << "\nSettings (each also an environment variable KILN_SECTION_KEY and a key of the "
         "--config YAML file; `kiln config doc` for the full reference):\n";
  // By section, in the order sections first appear.
  std::vector<std::string> order;
  std::map<std::string, std::vector<const config::Setting*>> by_section;
  for (const auto& s : schema.settings()) {
    const auto sec = s.key.substr(0, s.key.find('.'));
    if (by_section.find(sec) == by_section.end()) order.push_back(sec);
    by_section[sec].push_back(&s);
  }
  for (const auto& sec : order) {
    out << "  " << sec << ":\n";
    for (const auto* s : by_section[sec]) {
      std::string line = "    " + s->flag_name() + " <" + type_name(*s) + ">";
      line.resize(std::max<std::size_t>(line.size() + 2, 52), ' ');
      line +=
          "default " + (s->default_shown.empty()
                            ? (s->default_value.empty() ? std::string("\"\"") : s->default_value)
                            : s->default_shown);
      out << line << "\n";
    }
  }
}

}  // namespace

std::string help_text(const CLI::App& app, const CLI::App* command, const config::Schema& schema) {
  std::ostringstream out;
  if (command != nullptr) {
    // The clients (upload, download) and `version` read no server settings.
    const auto& n = command->get_name();
    const bool client = n == "upload" || n == "download" || n == "version";
    out << "Usage: kiln " << (client ? "" : "[SETTINGS] ") << n << " [FLAGS]"
        << (client ? "" : " [SETTINGS]") << "\n\n";
    command_block(out, *command, true);
    if (!client) settings_block(out, schema);
    return out.str();
  }
  out << app.get_description() << "\n\nUsage: kiln [--config FILE] [SETTINGS] COMMAND [FLAGS]\n"
      << "`kiln COMMAND --help` shows one command.\n\nCommands:\n";
  for (const auto* cmd : app.get_subcommands({})) command_block(out, *cmd, true);
  settings_block(out, schema);
  return out.str();
}

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::optional<std::string> unknown_command(const CLI::App& app, int argc, char** argv) {
  std::vector<std::string> names;
  for (const auto* sub : app.get_subcommands({})) names.push_back(sub->get_name());
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.empty() || arg[0] == '-') continue;
    if (std::find(names.begin(), names.end(), arg) != names.end()) return std::nullopt;
    for (const auto& n : names) {
      if (edit_distance(arg, n) <= 2)
        return "unknown command '" + arg + "'; did you mean '" + n + "'? (kiln --help)";
    }
  }
  return std::nullopt;
}

std::optional<std::string> unknown_flag(const CLI::App& app, int argc, char** argv) {
  // Known here: the settings (any command), and the flags of the command given.
  std::set<std::string> known = {"--help", "--version"};
  auto add = [&](const CLI::App& a) {
    for (const auto* o : a.get_options()) {
      for (const auto& l : o->get_lnames()) known.insert("--" + l);
    }
  };
  add(app);
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    for (const auto* sub : app.get_subcommands({})) {
      if (sub->get_name() != arg) continue;
      add(*sub);
      for (const auto* subsub : sub->get_subcommands({})) add(*subsub);
    }
  }
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") break;
    if (arg.size() < 3 || arg.compare(0, 2, "--") != 0) continue;
    arg = arg.substr(0, arg.find('='));
    if (known.count(arg) != 0) continue;
    std::string best;
    std::size_t best_d = std::string::npos;
    for (const auto& k : known) {
      const auto d = edit_distance(arg, k);
      if (d < best_d) {
        best_d = d;
        best = k;
      }
    }
    std::string msg = "unknown flag '" + arg + "'";
    if (best_d <= std::max<std::size_t>(2, arg.size() / 3)) msg += "; did you mean '" + best + "'?";
    return msg + " (kiln --help lists every flag)";
  }
  return std::nullopt;
}

}  // namespace kiln::app
