// Settings: a schema of typed, documented settings and the layered loader that fills it.
//
// Precedence, lowest to highest: built-in default, YAML file, KILN_* environment
// variables, command-line flags. A bad value anywhere stops start-up with a ConfigError
// that names the setting, the value and what is allowed.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::config {

// Endpoint: "host:port" (IPv4, hostname or [IPv6]), port 0-65535 (0 picks a free port).
enum class Type { String, Int, Bool, Enum, Endpoint };

struct Setting {
  std::string key;  // dotted, e.g. "http.listen"
  Type type = Type::String;
  std::string default_value;
  std::string help;
  std::int64_t min = 0;              // Int only, inclusive
  std::int64_t max = 0;              // Int only, inclusive
  std::vector<std::string> choices;  // Enum only
  bool secret = false;               // never printed, never logged
  std::string default_shown;         // docs and --help: the default in words, when not literal
  bool allow_empty = true;           // String only

  // "http.listen" -> "KILN_HTTP_LISTEN"
  [[nodiscard]] std::string env_name() const;
  // "http.listen" -> "--http-listen"
  [[nodiscard]] std::string flag_name() const;
  // What the setting accepts, in words, for errors and docs.
  [[nodiscard]] std::string allowed() const;
};

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Schema {
 public:
  Schema& add(Setting s);
  [[nodiscard]] const Setting* find(const std::string& key) const;
  [[nodiscard]] const std::vector<Setting>& settings() const { return settings_; }
  // The configuration reference in Markdown, generated from the schema.
  [[nodiscard]] std::string markdown() const;

 private:
  std::vector<Setting> settings_;
};

// Where a value came from, for `kiln config show` and error messages.
enum class Source { Default, File, Env, Flag };
const char* to_string(Source s);

// A validated, immutable set of values for one schema.
class Config {
 public:
  [[nodiscard]] const std::string& str(const std::string& key) const;
  [[nodiscard]] std::int64_t integer(const std::string& key) const;
  [[nodiscard]] bool boolean(const std::string& key) const;
  [[nodiscard]] Source source(const std::string& key) const;
  // Every setting as "key = value  (source)", secrets redacted.
  [[nodiscard]] std::string describe() const;
  [[nodiscard]] const Schema& schema() const { return *schema_; }

 private:
  friend class Loader;
  struct Value {
    std::string raw;
    Source source = Source::Default;
  };
  const Schema* schema_ = nullptr;
  std::map<std::string, Value, std::less<>> values_;
  const Value& value(const std::string& key) const;
};

// Builds a Config layer by layer. Each layer validates as it goes, so the first bad value
// is reported with the layer it came from.
class Loader {
 public:
  explicit Loader(const Schema& schema);
  // Reads a YAML mapping; nested maps become dotted keys ("http: {listen: x}").
  Loader& file(const std::string& path);
  Loader& yaml_text(const std::string& text, const std::string& origin);
  // Reads KILN_<KEY> for every setting from the given environment (name -> value).
  Loader& env(const std::map<std::string, std::string>& environment);
  Loader& flag(const std::string& key, const std::string& value);
  [[nodiscard]] Config finish() const;

 private:
  void set(const std::string& key, const std::string& value, Source source,
           const std::string& origin);
  const Schema& schema_;
  Config config_;
};

// The process environment as a map (only KILN_* variables).
std::map<std::string, std::string> kiln_environment();

// The items of a comma-separated setting ("a, b,,c" -> a, b, c): trimmed, empty ones dropped.
std::vector<std::string> split_list(std::string_view list);

}  // namespace kiln::config
