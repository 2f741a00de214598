#include "platform/metrics.hpp"

#include <dirent.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <variant>

namespace kiln::metrics {

void Gauge::add(double d) {
  double cur = value_.load(std::memory_order_relaxed);
  while (!value_.compare_exchange_weak(cur, cur + d, std::memory_order_relaxed)) {
  }
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      buckets_(std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1)) {}

void Histogram::observe(double v) {
  std::size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  double cur = sum_.load(std::memory_order_relaxed);
  while (!sum_.compare_exchange_weak(cur, cur + v, std::memory_order_relaxed)) {
  }
  count_.fetch_add(1, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.bounds = bounds_;
  std::uint64_t running = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative.push_back(running);
  }
  s.sum = sum_.load(std::memory_order_relaxed);
  // The count is the +Inf bucket, so that the rendered series are consistent even while
  // observations race with the scrape.
  s.count = running;
  return s;
}

std::vector<double> latency_buckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

std::string escape_label(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

namespace {

std::string format_number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.17g", v);
  }
  return buf;
}

std::string label_set(const std::vector<std::string>& names, const Labels& values,
                      const std::string& extra_name = {}, const std::string& extra_value = {}) {
  std::string out;
  for (std::size_t i = 0; i < names.size() && i < values.size(); ++i) {
    out += (out.empty() ? "" : ",") + names[i] + "=\"" + escape_label(values[i]) + "\"";
  }
  if (!extra_name.empty()) {
    out += (out.empty() ? "" : ",") + extra_name + "=\"" + extra_value + "\"";
  }
  return out.empty() ? "" : "{" + out + "}";
}

bool valid_name(const std::string& n) {
  if (n.empty() || std::isdigit(static_cast<unsigned char>(n[0]))) return false;
  for (char c : n) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == ':')) return false;
  }
  return true;
}

}  // namespace

struct Registry::Entry {
  std::string name;
  std::string help;
  std::string type;
  std::variant<std::monostate, std::unique_ptr<Family<Counter>>, std::unique_ptr<Family<Gauge>>,
               std::unique_ptr<Family<Histogram>>, std::function<double()>>
      metric;
};

Registry::Registry() = default;
Registry::~Registry() = default;

Registry::Entry* Registry::find_or_add(const std::string& name, const std::string& help,
                                       const char* type, std::vector<std::string> label_names) {
  if (!valid_name(name)) throw std::logic_error("invalid metric name " + name);
  for (const auto& l : label_names) {
    if (!valid_name(l)) throw std::logic_error("invalid label name " + l);
  }
  for (auto& e : entries_) {
    if (e->name == name) {
      if (e->type != type) throw std::logic_error("metric " + name + " registered twice");
      return e.get();
    }
  }
  entries_.push_back(std::make_unique<Entry>(Entry{name, help, type, {}}));
  return entries_.back().get();
}

Family<Counter>& Registry::counter(const std::string& name, const std::string& help,
                                   std::vector<std::string> label_names) {
  std::lock_guard lock(mu_);
  Entry* e = find_or_add(name, help, "counter", label_names);
  if (std::holds_alternative<std::monostate>(e->metric)) {
    e->metric = std::make_unique<Family<Counter>>(std::move(label_names),
                                                  [] { return std::make_unique<Counter>(); });
  }
  return *std::get<std::unique_ptr<Family<Counter>>>(e->metric);
}

Family<Gauge>& Registry::gauge(const std::string& name, const std::string& help,
                               std::vector<std::string> label_names) {
  std::lock_guard lock(mu_);
  Entry* e = find_or_add(name, help, "gauge", label_names);
  if (std::holds_alternative<std::monostate>(e->metric)) {
    e->metric = std::make_unique<Family<Gauge>>(std::move(label_names),
                                                [] { return std::make_unique<Gauge>(); });
  }
  return *std::get<std::unique_ptr<Family<Gauge>>>(e->metric);
}

Family<Histogram>& Registry::histogram(const std::string& name, const std::string& help,
                                       std::vector<std::string> label_names,
                                       std::vector<double> bounds) {
  std::lock_guard lock(mu_);
  Entry* e = find_or_add(name, help, "histogram", label_names);
  if (std::holds_alternative<std::monostate>(e->metric)) {
    e->metric = std::make_unique<Family<Histogram>>(
        std::move(label_names), [bounds] { return std::make_unique<Histogram>(bounds); });
  }
  return *std::get<std::unique_ptr<Family<Histogram>>>(e->metric);
}

void Registry::callback_gauge(const std::string& name, const std::string& help,
                              std::function<double()> fn, bool is_counter) {
  std::lock_guard lock(mu_);
  Entry* e = find_or_add(name, help, is_counter ? "counter" : "gauge", {});
  e->metric = std::move(fn);
}

std::string Registry::render() const {
  std::lock_guard lock(mu_);
  std::ostringstream out;
  for (const auto& e : entries_) {
    out << "# HELP " << e->name << ' ' << e->help << '\n'
        << "# TYPE " << e->name << ' ' << e->type << '\n';
    if (auto* c = std::get_if<std::unique_ptr<Family<Counter>>>(&e->metric)) {
      (*c)->each([&](const Labels& l, const Counter& m) {
        out << e->name << label_set((*c)->label_names(), l) << ' ' << m.value() << '\n';
      });
    } else if (auto* g = std::get_if<std::unique_ptr<Family<Gauge>>>(&e->metric)) {
      (*g)->each([&](const Labels& l, const Gauge& m) {
        out << e->name << label_set((*g)->label_names(), l) << ' ' << format_number(m.value())
            << '\n';
      });
    } else if (auto* h = std::get_if<std::unique_ptr<Family<Histogram>>>(&e->metric)) {
      (*h)->each([&](const Labels& l, const Histogram& m) {
        auto s = m.snapshot();
        const auto& names = (*h)->label_names();
        for (std::size_t i = 0; i < s.bounds.size(); ++i) {
          out << e->name << "_bucket" << label_set(names, l, "le", format_number(s.bounds[i]))
              << ' ' << s.cumulative[i] << '\n';
        }
        out << e->name << "_bucket" << label_set(names, l, "le", "+Inf") << ' ' << s.count << '\n';
        out << e->name << "_sum" << label_set(names, l) << ' ' << format_number(s.sum) << '\n';
        out << e->name << "_count" << label_set(names, l) << ' ' << s.count << '\n';
      });
    } else if (auto* f = std::get_if<std::function<double()>>(&e->metric)) {
      out << e->name << ' ' << format_number((*f)()) << '\n';
    }
  }
  return out.str();
}

namespace {

struct ProcStat {
  double cpu_seconds = 0;
  double start_time_seconds = 0;
  double virtual_bytes = 0;
  double resident_bytes = 0;
};

double boot_time() {
  std::ifstream in("/proc/stat");
  std::string key;
  while (in >> key) {
    if (key == "btime") {
      double v = 0;
      in >> v;
      return v;
    }
  }
  return 0;
}

ProcStat read_proc_stat() {
  ProcStat out;
  std::ifstream in("/proc/self/stat");
  std::string line;
  if (!std::getline(in, line)) return out;
  // Fields after the command name, which is in parentheses and may hold spaces.
  auto close = line.rfind(')');
  if (close == std::string::npos) return out;
  std::istringstream rest(line.substr(close + 2));
  std::vector<std::string> f;
  std::string tok;
  while (rest >> tok) f.push_back(tok);
  // rest starts at field 3 (state); utime=14, stime=15, starttime=22, vsize=23, rss=24.
  auto field = [&](int n) { return std::stod(f.at(static_cast<std::size_t>(n - 3))); };
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  out.cpu_seconds = (field(14) + field(15)) / ticks;
  out.start_time_seconds = boot_time() + field(22) / ticks;
  out.virtual_bytes = field(23);
  out.resident_bytes = field(24) * page;
  return out;
}

double open_fds() {
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return 0;
  double n = 0;
  while (auto* ent = readdir(d)) {
    if (ent->d_name[0] != '.') n += 1;
  }
  closedir(d);
  return n - 1;  // the descriptor opendir itself holds
}

}  // namespace

void register_process_metrics(Registry& registry) {
  registry.callback_gauge(
      "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
      [] { return read_proc_stat().cpu_seconds; }, /*is_counter=*/true);
  registry.callback_gauge("process_resident_memory_bytes", "Resident memory size in bytes.",
                          [] { return read_proc_stat().resident_bytes; });
  registry.callback_gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                          [] { return read_proc_stat().virtual_bytes; });
  registry.callback_gauge("process_open_fds", "Number of open file descriptors.", open_fds);
  const double start = read_proc_stat().start_time_seconds;
  registry.callback_gauge("process_start_time_seconds",
                          "Start time of the process since unix epoch in seconds.",
                          [start] { return start; });
}

}  // namespace kiln::metrics
