#include "app/upload_cli.hpp"

#include "client/uploader.hpp"

#include <filesystem>

#include <boost/json.hpp>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <mutex>

namespace kiln::app {
namespace {

namespace json = boost::json;
using client::Failure;

std::atomic<int> g_interrupts{0};

extern "C" void on_interrupt(int) {
  if (g_interrupts.fetch_add(1) >= 1) _exit(130);  // a second Ctrl-C: stop at once
}

// What the user sees: a progress bar on stderr (a terminal only), with --events one JSON
// line per step on stdout, and always the line that says how it ended.
class Console final : public client::UploadListener {
 public:
  Console(bool progress, bool events, std::uint64_t total)
      : bar_(progress && ::isatty(2) == 1), events_(events), total_(total) {}

  void hashing(std::uint64_t done, std::uint64_t total) override {
    if (!bar_) return;
    std::fprintf(stderr, "\rhashing %3d%%", total ? static_cast<int>(done * 100 / total) : 100);
    hashing_shown_ = true;
  }
  void upload(const std::string& id, bool resumed, std::uint64_t parts,
              const std::vector<std::uint64_t>& to_send) override {
    json::array missing;
    for (auto n : to_send) missing.push_back(n);
    event({{"event", "upload"},
           {"id", id},
           {"resumed", resumed},
           {"parts", parts},
           {"to_send", missing}});
  }
  void held(std::uint64_t bytes) override {
    clear_hashing();
    done_ = base_ = bytes;
  }
  void sent(std::uint64_t bytes) override {
    clear_hashing();
    done_ += bytes;
    draw();
  }
  void part_started(std::uint64_t number) override {
    event({{"event", "part-start"}, {"number", number}});
  }
  void part_sent(std::uint64_t number, std::uint64_t, const std::string& etag) override {
    event({{"event", "part"}, {"number", number}, {"etag", etag}});
  }
  void note(const std::string& text) override {
    clear_hashing();
    std::fprintf(stderr, "kiln upload: %s\n", text.c_str());
  }
  bool stopping() override { return g_interrupts.load() > 0; }

  void finish() {
    clear_hashing();
    if (bar_ && drawn_) std::fprintf(stderr, "\n");
  }
  // The one line on stdout that says how it ended (always printed, --events or not).
  void done(const client::UploadOutcome& o) {
    std::lock_guard lock(out_);
    std::printf("%s\n",
                json::serialize(json::object{{"event", "done"},
                                             {"asset", o.asset},
                                             {"resumed", o.resumed},
                                             {"parts_sent", o.parts_sent},
                                             {"bytes_sent", o.bytes_sent},
                                             {"deduplicated",
                                              o.how == client::UploadOutcome::How::Deduplicated}})
                    .c_str());
    std::fflush(stdout);
  }

 private:
  void event(const json::object& o) {
    if (!events_) return;
    std::lock_guard lock(out_);
    std::printf("%s\n", json::serialize(o).c_str());
    std::fflush(stdout);
  }
  void clear_hashing() {
    if (hashing_shown_.exchange(false)) std::fprintf(stderr, "\r\033[K");
  }
  void draw() {
    if (!bar_) return;
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard lock(draw_mu_);
    const auto done = done_.load();
    if (now - last_ < std::chrono::milliseconds(150) && done < total_) return;
    last_ = now;
    drawn_ = true;
    const double s = std::chrono::duration<double>(now - start_).count();
    const double rate = s > 0 ? static_cast<double>(done - base_) / s / (1 << 20) : 0;
    const int pct = total_ ? static_cast<int>(done * 100 / total_) : 100;
    std::string bar(30, ' ');
    for (int i = 0; i < pct * 30 / 100; ++i) bar[static_cast<std::size_t>(i)] = '#';
    std::fprintf(stderr, "\r[%s] %3d%%  %.1f/%.1f MiB  %.1f MiB/s ", bar.c_str(), pct,
                 static_cast<double>(done) / (1 << 20), static_cast<double>(total_) / (1 << 20),
                 rate);
  }

  bool bar_;
  bool events_;
  std::uint64_t total_;
  std::atomic<bool> hashing_shown_{false};
  std::atomic<std::uint64_t> done_{0};
  std::uint64_t base_ = 0;
  bool drawn_ = false;
  std::mutex out_, draw_mu_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_{};
};

int upload(const UploadArgs& a) {
  client::UploadJob job;
  job.file = a.file;
  job.project = a.project;
  job.api = a.api;
  job.token = a.token;
  job.name = a.name;
  job.content_type = a.content_type;
  job.state_dir =
      a.state_dir.empty() ? client::default_state_dir() : std::filesystem::path(a.state_dir);
  job.parallel = a.parallel;
  std::error_code ec;
  const auto size = std::filesystem::file_size(a.file, ec);
  Console console(a.progress, a.events, ec ? 0 : size);
  const auto out = client::upload_file(job, console);
  console.finish();
  if (out.how == client::UploadOutcome::How::Interrupted) {
    std::fprintf(stderr,
                 "kiln upload: interrupted; %llu parts sent this run. Run the same command "
                 "again to resume (upload %s).\n",
                 static_cast<unsigned long long>(out.parts_sent), out.upload.c_str());
    return 130;
  }
  if (out.how == client::UploadOutcome::How::Completed && !out.completed_before)
    std::fprintf(stderr, "kiln upload: done: asset %s (%llu bytes sent)\n",
                 std::string(out.asset.at("id").as_string()).c_str(),
                 static_cast<unsigned long long>(out.bytes_sent));
  console.done(out);
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
