#include "platform/config.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>

extern char** environ;

namespace kiln::config {
namespace {

std::string upper_snake(const std::string& key) {
  std::string out;
  for (char c : key) {
    out += (c == '.' || c == '-') ? '_'
                                  : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return out;
}

std::optional<std::int64_t> parse_int(const std::string& s) {
  std::int64_t v = 0;
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, v);
  if (ec != std::errc() || p != end || s.empty()) return std::nullopt;
  return v;
}

std::optional<bool> parse_bool(const std::string& s) {
  if (s == "true" || s == "1" || s == "yes" || s == "on") return true;
  if (s == "false" || s == "0" || s == "no" || s == "off") return false;
  return std::nullopt;
}

bool valid_endpoint(const std::string& s) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  std::string host = s.substr(0, colon);
  if (host.front() == '[') {
    if (host.back() != ']' || host.size() < 3) return false;
  } else if (host.find_first_of("[]: /") != std::string::npos) {
    return false;
  }
  auto port = parse_int(s.substr(colon + 1));
  return port && *port >= 0 && *port <= 65535;
}

const char* type_name(Type t) {
  switch (t) {
    case Type::String:
      return "string";
    case Type::Int:
      return "integer";
    case Type::Bool:
      return "boolean";
    case Type::Enum:
      return "enum";
    case Type::Endpoint:
      return "host:port";
  }
  return "?";
}

// Flattens a YAML mapping into dotted keys.
void flatten(const YAML::Node& node, const std::string& prefix,
             std::vector<std::pair<std::string, std::string>>& out, const std::string& origin) {
  if (!node.IsMap()) {
    throw ConfigError(origin + ": expected a mapping of settings at '" +
                      (prefix.empty() ? std::string("top level") : prefix) + "'");
  }
  for (const auto& kv : node) {
    std::string key = kv.first.as<std::string>();
    std::string full = prefix.empty() ? key : prefix + "." + key;
    if (kv.second.IsMap()) {
      flatten(kv.second, full, out, origin);
    } else if (kv.second.IsScalar()) {
      out.emplace_back(full, kv.second.Scalar());
    } else if (kv.second.IsNull()) {
      out.emplace_back(full, "");
    } else {
      throw ConfigError(origin + ": setting '" + full + "' must be a single value, not a list");
    }
  }
}

}  // namespace

std::string Setting::env_name() const {
  return "KILN_" + upper_snake(key);
}

std::string Setting::flag_name() const {
  std::string out = "--";
  for (char c : key) out += (c == '.' || c == '_') ? '-' : c;
  return out;
}

std::string Setting::allowed() const {
  switch (type) {
    case Type::String:
      return allow_empty ? "any string" : "a non-empty string";
    case Type::Int:
      return "an integer from " + std::to_string(min) + " to " + std::to_string(max);
    case Type::Bool:
      return "true or false (yes/no, on/off and 1/0 read the same)";
    case Type::Enum: {
      std::string out = "one of ";
      for (std::size_t i = 0; i < choices.size(); ++i) {
        out += (i ? ", " : "") + choices[i];
      }
      return out;
    }
    case Type::Endpoint:
      return "host:port with port 0-65535 (0 picks a free port)";
  }
  return "";
}

Schema& Schema::add(Setting s) {
  if (find(s.key) != nullptr) throw std::logic_error("duplicate setting " + s.key);
  settings_.push_back(std::move(s));
  return *this;
}

const Setting* Schema::find(const std::string& key) const {
  auto it = std::find_if(settings_.begin(), settings_.end(),
                         [&](const Setting& s) { return s.key == key; });
  return it == settings_.end() ? nullptr : &*it;
}

std::string Schema::markdown() const {
  std::ostringstream out;
  out << "| setting | environment | flag | type | default | allowed | description |\n"
      << "| --- | --- | --- | --- | --- | --- | --- |\n";
  for (const auto& s : settings_) {
    std::string def = s.default_shown.empty() ? s.default_value : s.default_shown;
    if (def.empty()) def = "(empty)";
    out << "| `" << s.key << "` | `" << s.env_name() << "` | `" << s.flag_name() << "` | "
        << type_name(s.type) << " | `" << def << "` | " << s.allowed() << " | " << s.help
        << (s.secret ? " Secret: never printed or logged." : "") << " |\n";
  }
  return out.str();
}

const char* to_string(Source s) {
  switch (s) {
    case Source::Default:
      return "default";
    case Source::File:
      return "file";
    case Source::Env:
      return "env";
    case Source::Flag:
      return "flag";
  }
  return "?";
}

const Config::Value& Config::value(const std::string& key) const {
  auto it = values_.find(key);
  if (it == values_.end()) throw std::logic_error("unknown setting " + key);
  return it->second;
}

const std::string& Config::str(const std::string& key) const {
  return value(key).raw;
}

std::int64_t Config::integer(const std::string& key) const {
  return parse_int(value(key).raw).value();
}

bool Config::boolean(const std::string& key) const {
  return parse_bool(value(key).raw).value();
}

Source Config::source(const std::string& key) const {
  return value(key).source;
}

std::string Config::describe() const {
  std::ostringstream out;
  for (const auto& s : schema_->settings()) {
    const auto& v = value(s.key);
    std::string shown = v.raw;
    if (s.secret && !v.raw.empty()) shown = "<redacted>";
    if (s.secret && v.raw.empty()) {
      // Say where it comes from instead of an empty value: "generated, in <data.dir>/x".
      shown = s.default_shown.empty() ? "<not set>" : "<" + s.default_shown + ">";
      if (const auto at = shown.find("<data.dir>");
          at != std::string::npos && schema_->find("data.dir"))
        shown.replace(at, 10, value("data.dir").raw);
    }
    out << s.key << " = " << shown << "  (" << to_string(v.source) << ")\n";
  }
  return out.str();
}

Loader::Loader(const Schema& schema) : schema_(schema) {
  config_.schema_ = &schema;
  for (const auto& s : schema.settings()) {
    config_.values_[s.key] = Config::Value{s.default_value, Source::Default};
  }
}

void Loader::set(const std::string& key, const std::string& value, Source source,
                 const std::string& origin) {
  const Setting* s = schema_.find(key);
  if (s == nullptr) {
    throw ConfigError(origin + ": unknown setting '" + key +
                      "' (kiln config doc lists every setting)");
  }
  bool ok = true;
  switch (s->type) {
    case Type::String:
      ok = s->allow_empty || !value.empty();
      break;
    case Type::Int: {
      auto v = parse_int(value);
      ok = v && *v >= s->min && *v <= s->max;
      break;
    }
    case Type::Bool:
      ok = parse_bool(value).has_value();
      break;
    case Type::Enum:
      ok = std::find(s->choices.begin(), s->choices.end(), value) != s->choices.end();
      break;
    case Type::Endpoint:
      ok = valid_endpoint(value);
      break;
  }
  if (!ok) {
    std::string shown = s->secret ? "<redacted>" : "'" + value + "'";
    throw ConfigError(origin + ": invalid value " + shown + " for setting '" + key +
                      "': expected " + s->allowed());
  }
  // One boolean grammar: whatever spelling was given, the value is true or false from here
  // on (config show, logs).
  const std::string stored =
      s->type == Type::Bool ? (parse_bool(value).value() ? "true" : "false") : value;
  config_.values_[key] = Config::Value{stored, source};
}

Loader& Loader::yaml_text(const std::string& text, const std::string& origin) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(origin + ": not valid YAML: " + e.what());
  }
  if (root.IsNull()) return *this;  // an empty file sets nothing
  std::vector<std::pair<std::string, std::string>> pairs;
  flatten(root, "", pairs, origin);
  for (const auto& [k, v] : pairs) set(k, v, Source::File, origin);
  return *this;
}

Loader& Loader::file(const std::string& path) {
  YAML::Node root;
  std::ifstream in(path);
  if (!in) throw ConfigError("config file '" + path + "': cannot be read");
  std::stringstream buf;
  buf << in.rdbuf();
  return yaml_text(buf.str(), "config file '" + path + "'");
}

Loader& Loader::env(const std::map<std::string, std::string>& environment) {
  // Every KILN_ variable must name a setting: a typo should not be silently ignored.
  std::map<std::string, const Setting*> by_env;
  for (const auto& s : schema_.settings()) by_env[s.env_name()] = &s;
  for (const auto& [name, value] : environment) {
    if (name.rfind("KILN_", 0) != 0) continue;
    auto it = by_env.find(name);
    if (it == by_env.end()) {
      throw ConfigError("environment variable " + name +
                        ": no such setting (kiln config doc lists every setting)");
    }
    set(it->second->key, value, Source::Env, "environment variable " + name);
  }
  return *this;
}

Loader& Loader::flag(const std::string& key, const std::string& value) {
  const Setting* s = schema_.find(key);
  set(key, value, Source::Flag, "flag " + (s ? s->flag_name() : key));
  return *this;
}

Config Loader::finish() const {
  return config_;
}

std::map<std::string, std::string> kiln_environment() {
  std::map<std::string, std::string> out;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view kv(*e);
    auto eq = kv.find('=');
    if (eq == std::string_view::npos) continue;
    std::string name(kv.substr(0, eq));
    if (name.rfind("KILN_", 0) == 0) out[name] = std::string(kv.substr(eq + 1));
  }
  return out;
}

std::vector<std::string> split_list(std::string_view list) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos <= list.size()) {
    const auto comma = list.find(',', pos);
    auto item =
        list.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (!item.empty()) out.emplace_back(item);
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return out;
}

}  // namespace kiln::config
