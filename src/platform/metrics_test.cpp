#include "platform/metrics.hpp"

#include <gtest/gtest.h>

#include <thread>

namespace kiln::metrics {
namespace {

TEST(Metrics, CountersRenderWithLabelsInOrder) {
  Registry r;
  auto& f = r.counter("kiln_test_total", "Things.", {"route", "status"});
  f.with({"a", "200"}).inc();
  f.with({"a", "200"}).inc(2);
  f.with({"b", "404"}).inc();
  auto text = r.render();
  EXPECT_NE(text.find("# HELP kiln_test_total Things.\n# TYPE kiln_test_total counter\n"),
            std::string::npos);
  EXPECT_NE(text.find("kiln_test_total{route=\"a\",status=\"200\"} 3\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("kiln_test_total{route=\"b\",status=\"404\"} 1\n"), std::string::npos);
}

TEST(Metrics, LabelValuesAreEscaped) {
  Registry r;
  r.counter("kiln_esc_total", "x", {"v"}).with({"a\"b\\c\nd"}).inc();
  EXPECT_NE(r.render().find(R"(kiln_esc_total{v="a\"b\\c\nd"} 1)"), std::string::npos);
}

TEST(Metrics, HistogramBucketsAreCumulative) {
  Registry r;
  auto& h = r.histogram("kiln_lat_seconds", "Latency.", {"route"}, {0.1, 1});
  h.with({"x"}).observe(0.05);
  h.with({"x"}).observe(0.5);
  h.with({"x"}).observe(5);
  auto text = r.render();
  EXPECT_NE(text.find("kiln_lat_seconds_bucket{route=\"x\",le=\"0.10000000000000001\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("kiln_lat_seconds_bucket{route=\"x\",le=\"1\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("kiln_lat_seconds_bucket{route=\"x\",le=\"+Inf\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("kiln_lat_seconds_count{route=\"x\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("kiln_lat_seconds_sum{route=\"x\"} 5.5"), std::string::npos);
}

TEST(Metrics, GaugesGoUpAndDown) {
  Registry r;
  auto& g = r.gauge("kiln_open", "Open.").get();
  g.inc();
  g.inc();
  g.dec();
  EXPECT_EQ(g.value(), 1);
  EXPECT_NE(r.render().find("kiln_open 1\n"), std::string::npos);
}

TEST(Metrics, SameNameSameTypeIsTheSameFamily) {
  Registry r;
  auto& a = r.counter("kiln_x_total", "x");
  auto& b = r.counter("kiln_x_total", "x");
  EXPECT_EQ(&a, &b);
  EXPECT_THROW(r.gauge("kiln_x_total", "x"), std::logic_error);
  EXPECT_THROW(r.counter("0bad", "x"), std::logic_error);
  EXPECT_THROW(r.counter("kiln_ok", "x", {"bad-label"}), std::logic_error);
}

TEST(Metrics, ConcurrentIncrementsAreNotLost) {
  Registry r;
  auto& c = r.counter("kiln_race_total", "x").get();
  auto& h = r.histogram("kiln_race_seconds", "x", {}, {1}).get();
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c.inc();
        h.observe(0.5);
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(c.value(), 40000u);
  EXPECT_EQ(h.snapshot().count, 40000u);
  EXPECT_DOUBLE_EQ(h.snapshot().sum, 20000.0);
}

TEST(Metrics, ProcessMetricsReportThisProcess) {
  Registry r;
  register_process_metrics(r);
  auto text = r.render();
  for (const char* name :
       {"process_cpu_seconds_total", "process_resident_memory_bytes",
        "process_virtual_memory_bytes", "process_open_fds", "process_start_time_seconds"}) {
    EXPECT_NE(text.find(std::string("# TYPE ") + name), std::string::npos) << name;
  }
  // Resident memory of a running test binary is certainly above 1 MB.
  auto pos = text.find("\nprocess_resident_memory_bytes ");
  ASSERT_NE(pos, std::string::npos);
  EXPECT_GT(std::stod(text.substr(pos + 31)), 1e6);
}

}  // namespace
}  // namespace kiln::metrics
