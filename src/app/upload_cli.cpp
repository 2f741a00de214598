#include "app/upload_cli.hpp"

#include "app/api_client.hpp"
#include "platform/codec.hpp"

#include "clients/s3/client.hpp"
#include "clients/s3/sigv4.hpp"

#include <openssl/evp.h>
#include <boost/json.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

namespace kiln::app {
namespace {

namespace json = boost::json;
namespace fs = std::filesystem;
using cli::ApiClient;
using cli::fail;
using cli::Failure;
using cli::sha256_file;
using cli::split_url;

std::atomic<int> g_interrupts{0};

extern "C" void on_interrupt(int) {
  if (g_interrupts.fetch_add(1) >= 1) _exit(130);  // a second Ctrl-C: stop at once
}

std::string guess_type(const fs::path& p) {
  static const std::map<std::string, std::string> kTypes = {
      {".glb", "model/gltf-binary"},
      {".gltf", "model/gltf+json"},
      {".obj", "model/obj"},
      {".stl", "model/stl"},
      {".fbx", "application/octet-stream"},
      {".png", "image/png"},
      {".jpg", "image/jpeg"},
      {".jpeg", "image/jpeg"},
      {".webp", "image/webp"},
      {".ktx2", "image/ktx2"},
      {".exr", "image/x-exr"},
      {".hdr", "image/vnd.radiance"},
      {".wav", "audio/wav"},
      {".mp3", "audio/mpeg"},
      {".ogg", "audio/ogg"},
      {".mp4", "video/mp4"},
      {".json", "application/json"},
      {".txt", "text/plain"},
      {".zip", "application/zip"},
      {".bin", "application/gltf-buffer"},
  };
  auto ext = p.extension().string();
  for (auto& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  auto it = kTypes.find(ext);
  return it == kTypes.end() ? "application/octet-stream" : it->second;
}

struct State {
  std::string path, project, api, sha256, upload;
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
};

fs::path state_dir(const UploadArgs& a) {
  if (!a.state_dir.empty()) return a.state_dir;
  if (const char* x = std::getenv("XDG_STATE_HOME"); x && *x) return fs::path(x) / "kiln/uploads";
  if (const char* h = std::getenv("HOME"); h && *h)
    return fs::path(h) / ".local/state/kiln/uploads";
  return fs::temp_directory_path() / "kiln-uploads";
}

std::optional<State> load_state(const fs::path& f) {
  std::ifstream in(f);
  if (!in) return std::nullopt;
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  boost::system::error_code ec;
  auto v = json::parse(text, ec);
  if (ec || !v.is_object()) return std::nullopt;
  try {
    const auto& o = v.as_object();
    State s;
    s.path = json::value_to<std::string>(o.at("path"));
    s.project = json::value_to<std::string>(o.at("project"));
    s.api = json::value_to<std::string>(o.at("api"));
    s.sha256 = json::value_to<std::string>(o.at("sha256"));
    s.upload = json::value_to<std::string>(o.at("upload"));
    s.size = json::value_to<std::uint64_t>(o.at("size"));
    s.mtime_ns = json::value_to<std::int64_t>(o.at("mtime_ns"));
    return s;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

void save_state(const fs::path& f, const State& s) {
  fs::create_directories(f.parent_path());
  const auto tmp = f.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << json::serialize(json::object{{"path", s.path},
                                        {"project", s.project},
                                        {"api", s.api},
                                        {"sha256", s.sha256},
                                        {"upload", s.upload},
                                        {"size", s.size},
                                        {"mtime_ns", s.mtime_ns}});
    if (!out) fail("cannot write " + tmp);
  }
  fs::rename(tmp, f);
}

// Stdout lines for --events, whole lines under one lock.
std::mutex g_out;
void event(bool on, const json::object& o) {
  if (!on) return;
  std::lock_guard lock(g_out);
  std::printf("%s\n", json::serialize(o).c_str());
  std::fflush(stdout);
}

// The one line on stdout that says how it ended (always printed, --events or not).
void done(const json::value& asset, bool resumed, std::uint64_t parts, std::uint64_t bytes,
          bool deduplicated) {
  event(true, {{"event", "done"},
               {"asset", asset},
               {"resumed", resumed},
               {"parts_sent", parts},
               {"bytes_sent", bytes},
               {"deduplicated", deduplicated}});
}

class Progress {
 public:
  Progress(bool on, std::uint64_t total) : on_(on && ::isatty(2) == 1), total_(total) {}
  void add(std::uint64_t n) {
    done_ += n;
    if (!on_) return;
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard lock(mu_);
    if (now - last_ < std::chrono::milliseconds(150) && done_ < total_) return;
    last_ = now;
    const double s = std::chrono::duration<double>(now - start_).count();
    const double rate = s > 0 ? static_cast<double>(done_ - base_) / s / (1 << 20) : 0;
    const int pct = total_ ? static_cast<int>(done_ * 100 / total_) : 100;
    std::string bar(30, ' ');
    for (int i = 0; i < pct * 30 / 100; ++i) bar[static_cast<std::size_t>(i)] = '#';
    std::fprintf(stderr, "\r[%s] %3d%%  %.1f/%.1f MiB  %.1f MiB/s ", bar.c_str(), pct,
                 static_cast<double>(done_) / (1 << 20), static_cast<double>(total_) / (1 << 20),
                 rate);
  }
  void start_at(std::uint64_t already) { done_ = base_ = already; }
  void finish() {
    if (on_) std::fprintf(stderr, "\n");
  }

 private:
  bool on_;
  std::uint64_t total_;
  std::atomic<std::uint64_t> done_{0};
  std::uint64_t base_ = 0;
  std::mutex mu_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_{};
};

int upload(const UploadArgs& a) {
  struct stat st {};
  if (::stat(a.file.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
    fail(a.file + " is not a readable regular file");
  const auto abs = fs::absolute(a.file).lexically_normal().string();
  const auto size = static_cast<std::uint64_t>(st.st_size);
  const std::int64_t mtime_ns = st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec;
  const auto state_file =
      state_dir(a) /
      (codec::sha256_hex(abs + "\n" + a.project + "\n" + a.api).substr(0, 32) + ".json");
  const std::string base = "/v1/projects/" + s3::uri_encode(a.project) + "/uploads";

  ApiClient api(a.api, a.token);
  auto saved = load_state(state_file);
  if (saved && (saved->size != size || saved->mtime_ns != mtime_ns || saved->path != abs)) {
    saved.reset();  // the file changed: start over
  }
  State s;
  s.path = abs;
  s.project = a.project;
  s.api = a.api;
  s.size = size;
  s.mtime_ns = mtime_ns;
  s.sha256 = saved ? saved->sha256 : sha256_file(abs, size, a.progress && ::isatty(2) == 1);

  json::object upload;
  bool resumed = false;
  if (saved && !saved->upload.empty()) {
    auto [status, doc] = api.call("GET", base + "/" + saved->upload, nullptr, {404});
    if (status == 200 && doc.at("state") == "completed") {
      fs::remove(state_file);
      done(doc.at("asset"), true, 0, 0, false);
      return 0;
    }
    if (status == 200 && doc.at("state") == "open") {
      upload = doc.as_object();
      resumed = true;
    }
  }
  json::object put;
  if (upload.empty()) {
    json::value req =
        json::object{{"filename", a.name.empty() ? fs::path(abs).filename().string() : a.name},
                     {"size", size},
                     {"content_type", a.content_type.empty() ? guess_type(abs) : a.content_type},
                     {"sha256", s.sha256}};
    auto [status, doc] = api.call("POST", base, &req);
    if (doc.at("deduplicated").as_bool()) {
      fs::remove(state_file);
      std::fprintf(stderr,
                   "kiln upload: the project already has this file (asset %s); nothing sent\n",
                   std::string(doc.at("asset").at("id").as_string()).c_str());
      done(doc.at("asset"), false, 0, 0, true);
      return 0;
    }
    upload = doc.at("upload").as_object();
    if (auto* p = doc.as_object().if_contains("put")) put = p->as_object();
  } else if (auto* p = upload.if_contains("put")) {
    put = p->as_object();
  }
  const std::string id(upload.at("id").as_string());
  s.upload = id;
  save_state(state_file, s);

  Progress progress(a.progress, size);
  std::atomic<std::uint64_t> parts_sent{0}, bytes_sent{0};
  if (!upload.at("multipart").as_bool()) {
    auto [endpoint, target] = split_url(std::string(put.at("url").as_string()));
    s3::ClientOptions o;
    o.endpoint = endpoint;
    s3::Client c(o);
    std::vector<std::pair<std::string, std::string>> h;
    for (const auto& kv : put.at("headers").as_object())
      h.emplace_back(std::string(kv.key()), std::string(kv.value().as_string()));
    auto r = c.send_unsigned("PUT", target, h, s3::Body::file_range(abs, 0, size));
    if (r.status != 200)
      fail("the object store refused the upload: HTTP " + std::to_string(r.status) + " " +
           r.body.substr(0, 300));
    parts_sent = 1;
    bytes_sent = size;
    progress.add(size);
  } else {
    const auto part_size = upload.at("part_size").to_number<std::uint64_t>();
    const auto count = upload.at("part_count").to_number<std::uint64_t>();
    std::vector<std::uint64_t> todo;
    if (auto* m = upload.if_contains("missing")) {
      for (const auto& v : m->as_array()) todo.push_back(v.to_number<std::uint64_t>());
    } else {
      for (std::uint64_t n = 1; n <= count; ++n) todo.push_back(n);
    }
    std::uint64_t held = size;
    for (auto n : todo) held -= n < count ? part_size : size - part_size * (count - 1);
    progress.start_at(held);
    if (resumed)
      std::fprintf(stderr, "kiln upload: resuming %s: %zu of %llu parts to send\n", id.c_str(),
                   todo.size(), static_cast<unsigned long long>(count));
    json::array missing;
    for (auto n : todo) missing.push_back(n);
    event(a.events, {{"event", "upload"},
                     {"id", id},
                     {"resumed", resumed},
                     {"parts", count},
                     {"to_send", missing}});
    std::mutex mu;
    std::size_t next = 0;
    std::string error;
    auto worker = [&] {
      try {
        ApiClient wapi(a.api, a.token);
        std::unique_ptr<s3::Client> store;
        std::string store_endpoint;
        for (;;) {
          // A few parts at a time: URLs are short-lived, and Ctrl-C stops between parts.
          std::vector<std::uint64_t> batch;
          {
            std::lock_guard lock(mu);
            if (!error.empty() || g_interrupts.load() > 0) return;
            while (next < todo.size() && batch.size() < 4) batch.push_back(todo[next++]);
          }
          if (batch.empty()) return;
          json::array nums;
          for (auto n : batch) nums.push_back(n);
          json::value req = json::object{{"parts", nums}};
          auto [status, doc] = wapi.call("POST", base + "/" + id + "/parts", &req);
          for (const auto& p : doc.at("parts").as_array()) {
            if (g_interrupts.load() > 0) return;
            const auto n = p.at("number").to_number<std::uint64_t>();
            const auto len = p.at("size").to_number<std::uint64_t>();
            auto [endpoint, target] = split_url(std::string(p.at("url").as_string()));
            if (!store || endpoint != store_endpoint) {
              s3::ClientOptions o;
              o.endpoint = store_endpoint = endpoint;
              store = std::make_unique<s3::Client>(o);
            }
            event(a.events, {{"event", "part-start"}, {"number", n}});
            auto r = store->send_unsigned("PUT", target, {},
                                          s3::Body::file_range(abs, (n - 1) * part_size, len));
            if (r.status == 403) {
              // The URL may have expired while this run stalled: sign this part afresh, once.
              json::value one = json::object{{"parts", json::array{n}}};
              auto [st, fresh] = wapi.call("POST", base + "/" + id + "/parts", &one);
              target = split_url(std::string(fresh.at("parts").at(0).at("url").as_string())).second;
              r = store->send_unsigned("PUT", target, {},
                                       s3::Body::file_range(abs, (n - 1) * part_size, len));
            }
            if (r.status != 200)
              fail("the object store refused part " + std::to_string(n) + ": HTTP " +
                   std::to_string(r.status) + " " + r.body.substr(0, 300));
            ++parts_sent;
            bytes_sent += len;
            progress.add(len);
            event(a.events, {{"event", "part"}, {"number", n}, {"etag", r.header("etag")}});
          }
        }
      } catch (const Failure& f) {
        std::lock_guard lock(mu);
        if (error.empty()) error = f.message;
      } catch (const std::exception& e) {
        std::lock_guard lock(mu);
        if (error.empty()) error = e.what();
      }
    };
    std::vector<std::thread> threads;
    for (int i = 0; i < std::max(1, a.parallel); ++i) threads.emplace_back(worker);
    for (auto& t : threads) t.join();
    progress.finish();
    if (!error.empty()) fail(error + "\nkiln upload: run the same command again to resume");
    if (g_interrupts.load() > 0) {
      std::fprintf(stderr,
                   "kiln upload: interrupted; %llu parts sent this run. Run the same command "
                   "again to resume (upload %s).\n",
                   static_cast<unsigned long long>(parts_sent.load()), id.c_str());
      return 130;
    }
  }
  auto [status, doc] = api.call("POST", base + "/" + id + "/complete");
  fs::remove(state_file);
  std::fprintf(stderr, "kiln upload: done: asset %s (%llu bytes sent)\n",
               std::string(doc.at("asset").at("id").as_string()).c_str(),
               static_cast<unsigned long long>(bytes_sent.load()));
  done(doc.at("asset"), resumed, parts_sent.load(), bytes_sent.load(), false);
  return 0;
}

}  // namespace

int run_upload(const UploadArgs& args) {
  if (args.token.empty()) {
    std::fprintf(stderr, "kiln upload: a user token is needed: --token or KILN_TOKEN\n");
    return 2;
  }
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  ::sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  try {
    return upload(args);
  } catch (const Failure& f) {
    std::fprintf(stderr, "kiln upload: %s\n", f.message.c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln upload: %s\n", e.what());
    return 1;
  }
}

}  // namespace kiln::app
