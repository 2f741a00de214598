#include "platform/log.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <memory>

namespace kiln::log {
namespace {

struct State {
  Options options;
  std::shared_ptr<spdlog::logger> logger;
};

State& state() {
  static State s;
  return s;
}

spdlog::level::level_enum to_spd(Level l) {
  switch (l) {
    case Level::Trace:
      return spdlog::level::trace;
    case Level::Debug:
      return spdlog::level::debug;
    case Level::Info:
      return spdlog::level::info;
    case Level::Warn:
      return spdlog::level::warn;
    case Level::Error:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

const char* level_name(Level l) {
  switch (l) {
    case Level::Trace:
      return "trace";
    case Level::Debug:
      return "debug";
    case Level::Info:
      return "info";
    case Level::Warn:
      return "warn";
    case Level::Error:
      return "error";
  }
  return "info";
}

std::string quote(std::string_view s) {
  return boost::json::serialize(boost::json::string(s));
}

std::string now_rfc3339() {
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::time_point_cast<std::chrono::seconds>(now);
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(now - secs).count();
  std::time_t t = std::chrono::system_clock::to_time_t(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long>(micros));
  return buf;
}

std::string value_text(const Value& v, bool json) {
  struct Visitor {
    bool json;
    std::string operator()(std::string_view s) const { return json ? quote(s) : std::string(s); }
    std::string operator()(std::int64_t i) const { return std::to_string(i); }
    // Plain decimal (no exponent: "0.012", not "1.2E-2"), up to 6 decimals.
    std::string operator()(double d) const {
      if (!std::isfinite(d) || std::fabs(d) >= 1e15)
        return boost::json::serialize(boost::json::value(d));
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.6f", d);
      std::string out(buf);
      while (out.back() == '0') out.pop_back();
      if (out.back() == '.') out.pop_back();
      return out == "-0" ? "0" : out;
    }
    std::string operator()(bool b) const { return b ? "true" : "false"; }
  };
  return std::visit(Visitor{json}, v);
}

}  // namespace

bool parse_level(std::string_view s, Level& out) {
  for (Level l : {Level::Trace, Level::Debug, Level::Info, Level::Warn, Level::Error}) {
    if (s == level_name(l)) {
      out = l;
      return true;
    }
  }
  return false;
}

void init(const Options& options) {
  auto& s = state();
  s.options = options;
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  s.logger = std::make_shared<spdlog::logger>("kiln", sink);
  s.logger->set_pattern("%v");
  s.logger->set_level(to_spd(options.level));
  s.logger->flush_on(spdlog::level::trace);  // lines must reach a pipe at once
}

bool enabled(Level level) {
  auto& s = state();
  return s.logger ? s.logger->should_log(to_spd(level)) : level >= Level::Info;
}

std::string format_line(const Options& options, Level level, std::string_view msg, Fields fields,
                        std::string_view time) {
  std::string line;
  if (options.json) {
    line = "{\"time\":\"" + std::string(time) + "\",\"level\":\"" + level_name(level) +
           "\",\"role\":" + quote(options.role) + ",\"node\":" + quote(options.node) +
           ",\"msg\":" + quote(msg);
    for (const auto& f : fields) {
      line += "," + quote(f.key) + ":" + value_text(f.value, true);
    }
    line += "}";
  } else {
    line = std::string(time) + " " + level_name(level) + " " + std::string(msg);
    for (const auto& f : fields) {
      line += " " + std::string(f.key) + "=" + value_text(f.value, false);
    }
  }
  return line;
}

void write(Level level, std::string_view msg, Fields fields) {
  if (!enabled(level)) return;
  auto& s = state();
  std::string line = format_line(s.options, level, msg, fields, now_rfc3339());
  if (s.logger) {
    s.logger->log(to_spd(level), "{}", line);
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

void exception(std::exception_ptr e, std::string_view what) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    error(what, {{"error", ex.what()}});
  } catch (...) {
    error(what, {{"error", "unknown exception"}});
  }
}

}  // namespace kiln::log
