#include "assets/pipeline/isolate.hpp"

#include "platform/process.hpp"

#include <boost/json.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <new>
#include <sstream>

namespace kiln::assets::pipeline {
namespace {

namespace json = boost::json;

std::vector<std::string> child_argv(const ChildRequest& r) {
  return {r.executable,
          "convert",
          r.input,
          "--child",
          "--name",
          r.file_name,
          "--out",
          r.out_dir,
          "--cpu-seconds",
          std::to_string(r.limits.cpu.count()),
          "--memory-bytes",
          std::to_string(r.limits.memory_bytes),
          "--lod-ratio",
          std::to_string(r.lod.ratio),
          "--lod-min-triangles",
          std::to_string(r.lod.min_triangles),
          "--lod-max-levels",
          std::to_string(r.lod.max_levels),
          "--max-triangles",
          std::to_string(r.model_limits.max_triangles),
          "--max-texture-pixels",
          std::to_string(r.model_limits.max_texture_pixels),
          "--texture-max-side",
          std::to_string(r.textures.max_side),
          "--texture-min-side",
          std::to_string(r.textures.min_side),
          "--texture-quality",
          std::to_string(r.textures.quality)};
}

Errc code_named(std::string_view s) {
  for (Errc c : {Errc::unsupported, Errc::malformed, Errc::too_large, Errc::empty, Errc::limits,
                 Errc::crashed, Errc::internal, Errc::stopped})
    if (s == to_string(c)) return c;
  return Errc::internal;
}

void say(const json::object& o) {
  std::cout << json::serialize(o) << '\n' << std::flush;
}

}  // namespace

Result<json::object> convert_in_child(const ChildRequest& request,
                                      const std::function<void(std::string_view, int)>& progress,
                                      const std::function<bool()>& stop) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0)
    return Error{Errc::internal, std::string("pipe: ") + std::strerror(errno)};
  // Its own process group (killed whole), killed with the worker (a retry starts afresh).
  process::SpawnOptions spawn;
  spawn.argv = child_argv(request);
  spawn.stdout_fd = out[1];
  auto child = process::spawn(spawn);
  close(out[1]);
  if (!child) {
    close(out[0]);
    if (child.error().code == process::Errc::spawn &&
        child.error().detail.starts_with("cannot run"))
      return Error{Errc::internal, "could not run " + request.executable};
    return Error{Errc::internal, child.error().detail};
  }

  const auto deadline = std::chrono::steady_clock::now() + request.limits.wall;
  std::string buffer, last;
  bool timed_out = false, stopped = false;
  for (;;) {
    if (stop && stop()) {
      stopped = true;
      break;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{out[0], POLLIN, 0};
    const int n = poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 1'000)));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    char chunk[4096];
    const ssize_t got = read(out[0], chunk, sizeof chunk);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;  // the child closed stdout: it exited
    buffer.append(chunk, static_cast<std::size_t>(got));
    if (buffer.size() > (1u << 20)) buffer.erase(0, buffer.size() - (1u << 20));
    for (auto nl = buffer.find('\n'); nl != std::string::npos; nl = buffer.find('\n')) {
      std::string line = buffer.substr(0, nl);
      buffer.erase(0, nl + 1);
      boost::system::error_code ec;
      auto v = json::parse(line, ec);
      if (ec || !v.is_object()) continue;
      const auto& o = v.as_object();
      if (o.contains("stage") && progress) {
        const auto* stage = o.at("stage").if_string();
        const auto* pct = o.at("percent").if_int64();
        if (stage && pct) progress(std::string_view(*stage), static_cast<int>(*pct));
      } else if (o.contains("ok") || o.contains("error")) {
        last = std::move(line);
      }
    }
  }
  close(out[0]);
  if (timed_out || stopped) child->signal(SIGKILL);
  const int status = child->wait();
  if (stopped) return Error{Errc::stopped, "processing was stopped"};
  if (timed_out)
    return Error{Errc::limits, "processing took longer than " +
                                   std::to_string(request.limits.wall.count()) +
                                   " s and was stopped"};
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    if (sig == SIGXCPU || sig == SIGKILL)
      return Error{Errc::limits, "the importer used more than " +
                                     std::to_string(request.limits.cpu.count()) +
                                     " s of CPU time and was stopped"};
    return Error{Errc::crashed, std::string("the importer crashed on this file (signal ") +
                                    sigabbrev_np(sig) + ")"};
  }
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (code == 127) return Error{Errc::internal, "could not run " + request.executable};
  boost::system::error_code ec;
  const auto result = json::parse(last, ec);
  if (ec || !result.is_object())
    return Error{Errc::crashed,
                 "the importer ended (exit status " + std::to_string(code) + ") without a result"};
  const auto& r = result.as_object();
  if (const auto* e = r.if_contains("error"); e && e->is_object()) {
    const auto* c = e->as_object().if_contains("code");
    const auto* d = e->as_object().if_contains("detail");
    return Error{code_named(c && c->is_string() ? std::string_view(c->as_string()) : ""),
                 d && d->is_string() ? std::string(d->as_string()) : "no detail"};
  }
  std::ifstream in(request.out_dir + "/manifest.json");
  std::stringstream ss;
  ss << in.rdbuf();
  auto manifest = json::parse(ss.str(), ec);
  if (ec || !manifest.is_object())
    return Error{Errc::internal, "the importer wrote no readable manifest.json"};
  return std::move(manifest.as_object());
}

int convert_child(const ChildRequest& r) {
  const auto fail = [](Errc code, const std::string& detail) {
    say({{"error", json::object{{"code", to_string(code)}, {"detail", valid_utf8(detail)}}}});
    return 3;
  };
  rlimit cpu{static_cast<rlim_t>(r.limits.cpu.count()),
             static_cast<rlim_t>(r.limits.cpu.count() + 5)};
  rlimit as{static_cast<rlim_t>(r.limits.memory_bytes), static_cast<rlim_t>(r.limits.memory_bytes)};
  if (setrlimit(RLIMIT_CPU, &cpu) != 0)
    return fail(Errc::internal, std::string("setrlimit: ") + std::strerror(errno));
#if !defined(__SANITIZE_ADDRESS__)
  // AddressSanitizer reserves terabytes of address space up front: under it (the asan
  // preset's tests) the memory limit is left to the model limits and the wall clock.
  if (setrlimit(RLIMIT_AS, &as) != 0)
    return fail(Errc::internal, std::string("setrlimit: ") + std::strerror(errno));
#else
  (void)as;
#endif
  rlimit no_core{0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  try {
    std::ifstream in(r.input, std::ios::binary);
    if (!in) return fail(Errc::internal, "cannot read " + r.input);
    std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                                    std::istreambuf_iterator<char>());
    ConvertOptions opt;
    opt.limits = r.model_limits;
    opt.lod = r.lod;
    opt.textures = r.textures;
    auto converted = convert(bytes, r.file_name, opt, [](std::string_view stage, int percent) {
      say({{"stage", stage}, {"percent", percent}});
    });
    if (!converted) return fail(converted.error().code, converted.error().detail);
    // What a failed write leaves goes: a directory holds a whole conversion or none.
    std::vector<std::string> written;
    const auto undo = [&](const std::string& what) {
      std::error_code ignored;
      for (const auto& w : written) std::filesystem::remove(w, ignored);
      return fail(Errc::internal, "cannot write " + what);
    };
    for (const auto& f : converted->files) {
      const auto path = r.out_dir + "/" + f.file;
      written.push_back(path);
      std::ofstream o(path, std::ios::binary | std::ios::trunc);
      o.write(reinterpret_cast<const char*>(f.bytes.data()),
              static_cast<std::streamsize>(f.bytes.size()));
      if (!o) return undo(path);
    }
    written.push_back(r.out_dir + "/manifest.json");
    std::ofstream m(written.back(), std::ios::trunc);
    m << json::serialize(converted->manifest);
    if (!m) return undo(written.back());
  } catch (const std::bad_alloc&) {
    return fail(Errc::limits, "the file needs more than " +
                                  std::to_string(r.limits.memory_bytes >> 20) +
                                  " MiB of memory to import (a decompression bomb, or too large)");
  } catch (const std::exception& e) {
    return fail(Errc::malformed, std::string("the importer failed: ") + e.what());
  }
  say({{"ok", true}});
  return 0;
}

}  // namespace kiln::assets::pipeline
