// Structured logging: one JSON object per line on stderr, with time, level, role, node,
// message and fields. Built on spdlog (levels, thread-safe sinks); the line itself is
// produced here so that every value is escaped as JSON.
//
// Never pass a secret as a field: tokens, keys, passwords and URLs with signatures stay
// out of logs. The HTTP access log records the path without its query for that reason.
#pragma once

#include <cstdint>
#include <exception>
#include <initializer_list>
#include <string>
#include <string_view>
#include <variant>

namespace kiln::log {

enum class Level { Trace, Debug, Info, Warn, Error };

struct Options {
  Level level = Level::Info;
  std::string role = "serve";
  std::string node = "node";
  bool json = true;  // false: human-readable text lines (for a terminal)
};

// Parses "trace", "debug", "info", "warn", "error".
bool parse_level(std::string_view s, Level& out);

void init(const Options& options);

using Value = std::variant<std::string_view, std::int64_t, double, bool>;
struct Field {
  std::string_view key;
  Value value;
  Field(std::string_view k, std::string_view v) : key(k), value(v) {}
  Field(std::string_view k, const std::string& v) : key(k), value(std::string_view(v)) {}
  Field(std::string_view k, const char* v) : key(k), value(std::string_view(v)) {}
  Field(std::string_view k, bool v) : key(k), value(v) {}
  Field(std::string_view k, double v) : key(k), value(v) {}
  template <class I>
  requires std::is_integral_v<I> Field(std::string_view k, I v)
      : key(k), value(static_cast<std::int64_t>(v)) {}
};
using Fields = std::initializer_list<Field>;

bool enabled(Level level);
void write(Level level, std::string_view msg, Fields fields);

inline void trace(std::string_view m, Fields f = {}) {
  write(Level::Trace, m, f);
}
inline void debug(std::string_view m, Fields f = {}) {
  write(Level::Debug, m, f);
}
inline void info(std::string_view m, Fields f = {}) {
  write(Level::Info, m, f);
}
inline void warn(std::string_view m, Fields f = {}) {
  write(Level::Warn, m, f);
}
inline void error(std::string_view m, Fields f = {}) {
  write(Level::Error, m, f);
}

// Logs at error level the exception `e` holds (the end of a background task), with `what`
// as the message; nothing when `e` is null.
void exception(std::exception_ptr e, std::string_view what);

// Formats one line without writing it (used by write(); exposed for tests).
std::string format_line(const Options& options, Level level, std::string_view msg, Fields fields,
                        std::string_view time);

}  // namespace kiln::log
