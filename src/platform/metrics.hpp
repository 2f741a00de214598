// Metrics: counters, gauges and histograms with labels, exported in the Prometheus text
// exposition format (version 0.0.4). Components declare their metrics on a Registry they
// are given; `/metrics` renders the registry. Updates are lock-free once a labelled child
// has been looked up; the lookup itself takes a mutex, so hot paths keep the child.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace kiln::metrics {

using Labels = std::vector<std::string>;  // label values, in the family's label order

class Counter {
 public:
  void inc(std::uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

class Gauge {
 public:
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  void add(double d);
  void inc() { add(1); }
  void dec() { add(-1); }
  [[nodiscard]] double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  struct Snapshot {
    std::vector<double> bounds;
    std::vector<std::uint64_t> cumulative;  // one per bound, then +Inf
    double sum = 0;
    std::uint64_t count = 0;
  };
  [[nodiscard]] Snapshot snapshot() const;

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_;  // bounds_.size() + 1
  std::atomic<double> sum_{0};
  std::atomic<std::uint64_t> count_{0};
};

// Latency buckets in seconds, 0.5 ms to 10 s.
std::vector<double> latency_buckets();

template <class T>
class Family;

class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;
  Family<Counter>& counter(const std::string& name, const std::string& help,
                           std::vector<std::string> label_names = {});
  Family<Gauge>& gauge(const std::string& name, const std::string& help,
                       std::vector<std::string> label_names = {});
  Family<Histogram>& histogram(const std::string& name, const std::string& help,
                               std::vector<std::string> label_names, std::vector<double> bounds);
  // A gauge whose value is computed when scraped (process CPU, open file descriptors...).
  void callback_gauge(const std::string& name, const std::string& help, std::function<double()> fn,
                      bool is_counter = false);
  [[nodiscard]] std::string render() const;

 private:
  struct Entry;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Entry>> entries_;
  Entry* find_or_add(const std::string& name, const std::string& help, const char* type,
                     std::vector<std::string> label_names);
};

// A metric with labels: each distinct label-value tuple has its own child.
template <class T>
class Family {
 public:
  Family(std::vector<std::string> label_names, std::function<std::unique_ptr<T>()> make)
      : label_names_(std::move(label_names)), make_(std::move(make)) {}
  T& with(const Labels& values);
  T& get() { return with({}); }
  [[nodiscard]] const std::vector<std::string>& label_names() const { return label_names_; }
  void each(const std::function<void(const Labels&, const T&)>& fn) const;

 private:
  std::vector<std::string> label_names_;
  std::function<std::unique_ptr<T>()> make_;
  mutable std::mutex mu_;
  std::map<Labels, std::unique_ptr<T>> children_;
};

template <class T>
T& Family<T>::with(const Labels& values) {
  std::lock_guard lock(mu_);
  auto& slot = children_[values];
  if (!slot) slot = make_();
  return *slot;
}

template <class T>
void Family<T>::each(const std::function<void(const Labels&, const T&)>& fn) const {
  std::lock_guard lock(mu_);
  for (const auto& [labels, child] : children_) fn(labels, *child);
}

// Registers process_* metrics read from /proc/self: CPU seconds, resident and virtual
// memory, open file descriptors, start time.
void register_process_metrics(Registry& registry);

// Escapes a label value for the text format (backslash, double quote, newline).
std::string escape_label(const std::string& v);

}  // namespace kiln::metrics
