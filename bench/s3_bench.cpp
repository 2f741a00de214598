// kiln-s3-bench: object store throughput through Kiln's S3 client. Against any S3 endpoint
// (the embedded store, s3rver...): one PUT of the whole file, one multipart upload with
// parallel parts, and one GET; `--uploads N` runs N multipart uploads at once (the memory
// test). Prints one JSON object.
#include "clients/s3/client.hpp"

#include <CLI/CLI.hpp>
#include <boost/json.hpp>

#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

namespace {

using namespace kiln::s3;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// A multipart upload of the file with `parallel` part uploads at once.
void multipart(const ClientOptions& o, const std::string& bucket, const std::string& key,
               const std::string& file, std::uint64_t size, std::uint64_t part, int parallel) {
  Client c(o);
  const auto id = c.create_multipart(bucket, key);
  const int count = static_cast<int>((size + part - 1) / part);
  std::vector<Part> parts(static_cast<std::size_t>(count));
  std::atomic<int> next{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < parallel; ++t) {
    threads.emplace_back([&] {
      Client own(o);
      for (int i = next++; i < count; i = next++) {
        const std::uint64_t off = static_cast<std::uint64_t>(i) * part;
        const auto len = std::min(part, size - off);
        parts[static_cast<std::size_t>(i)] = Part{
            i + 1, own.upload_part(bucket, key, id, i + 1, Body::file_range(file, off, len)), len};
      }
    });
  }
  for (auto& t : threads) t.join();
  c.complete_multipart(bucket, key, id, parts);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"S3 throughput"};
  ClientOptions o;
  std::string bucket = "kiln", file, name = "store";
  int part_mib = 16, parallel = 4, uploads = 0;
  app.add_option("--endpoint", o.endpoint)->required();
  app.add_option("--key", o.credentials.access_key)->required();
  app.add_option("--secret", o.credentials.secret_key)->required();
  app.add_option("--bucket", bucket);
  app.add_option("--file", file, "The bytes to upload")->required()->check(CLI::ExistingFile);
  app.add_option("--name", name, "A label for the output");
  app.add_option("--part-mib", part_mib)->check(CLI::Range(5, 5120));
  app.add_option("--parallel", parallel)->check(CLI::Range(1, 64));
  app.add_option("--uploads", uploads, "Run N multipart uploads at once instead (memory test)")
      ->check(CLI::Range(0, 100));
  CLI11_PARSE(app, argc, argv);
  o.timeout = std::chrono::minutes(5);
  struct stat st {};
  ::stat(file.c_str(), &st);
  const auto size = static_cast<std::uint64_t>(st.st_size);
  const std::uint64_t part = static_cast<std::uint64_t>(part_mib) << 20;
  const double mib = static_cast<double>(size) / (1 << 20);
  boost::json::object out{
      {"server", name}, {"object_mib", mib}, {"part_mib", part_mib}, {"parallel", parallel}};
  try {
    if (uploads > 0) {
      auto t = Clock::now();
      std::vector<std::thread> all;
      for (int u = 0; u < uploads; ++u)
        all.emplace_back([&, u] {
          multipart(o, bucket, "bench/many-" + std::to_string(u), file, size, part, 1);
        });
      for (auto& th : all) th.join();
      out["uploads"] = uploads;
      out["all_uploads_s"] = seconds_since(t);
      out["aggregate_mib_per_s"] = mib * uploads / seconds_since(t);
    } else {
      Client c(o);
      auto t = Clock::now();
      c.put_object(bucket, "bench/single", Body::file_range(file, 0, size));
      out["put_mib_per_s"] = mib / seconds_since(t);
      t = Clock::now();
      multipart(o, bucket, "bench/multi", file, size, part, parallel);
      out["multipart_mib_per_s"] = mib / seconds_since(t);
      t = Clock::now();
      std::uint64_t got = 0;
      c.get_object(bucket, "bench/multi", [&](std::string_view b) { got += b.size(); });
      out["get_mib_per_s"] = mib / seconds_since(t);
      if (got != size) throw std::runtime_error("GET returned " + std::to_string(got) + " bytes");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln-s3-bench: %s\n", e.what());
    return 1;
  }
  std::printf("%s\n", boost::json::serialize(out).c_str());
  return 0;
}
