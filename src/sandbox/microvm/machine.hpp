// A machine of the microvm driver as the driver's Sandbox and Process share it: the QEMU
// process, Kiln's ends of its virtio-serial ports, and the control port's conversation with
// the guest's init (src/sandbox/microvm/init.sh): lines out (a sender thread for what the
// event loop asks: resizes coalesce), lines in (a reader thread until EOF), what the init
// said, and the end (QEMU killed and reaped, ports closed, the directory removed).
#pragma once

#include "platform/process.hpp"
#include "sandbox/microvm/driver.hpp"

#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace kiln::sandbox::microvm::detail {

inline Error failed(std::string what) {
  return Error{Errc::failed, std::move(what)};
}

// The last lines of a file (QEMU's or the kernel's words when a machine fails), one line.
inline std::string tail_of(const std::string& path, std::size_t bytes = 300) {
  std::ifstream in(path, std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (s.size() > bytes) s = s.substr(s.size() - bytes);
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

// One machine: QEMU, its ports, what the agent said. Shared by the Sandbox and its Process.
struct Vm {
  MicrovmOptions options;
  SandboxSpec spec;
  std::string dir;
  std::function<void()> release_id;

  std::mutex mu;
  std::condition_variable cv;
  std::mutex qemu_mu;  // the Child: the reader reaps it at EOF, end() kills it
  process::Child qemu;
  int term = -1, control = -1, stdio = -1;  // Kiln's ends of the ports
  std::thread reader;
  bool booted = false, ready = false, prepared = false, started = false, gone = false,
       destroyed = false;
  std::optional<std::pair<int, bool>> exit;  // the agent's (status, out of memory)
  std::optional<std::string> stats;
  std::mutex send_mu;

  // What the event loop asks (a resize, a signal) goes through a thread of its own: a guest
  // slow to read its control port never blocks the caller. Resizes coalesce: only the last
  // size waits to be sent.
  std::mutex out_mu;
  std::condition_variable out_cv;
  std::optional<std::string> out_size;
  std::vector<std::string> out_lines;  // signals, in order (at most kMaxQueued)
  bool out_stop = false;
  std::thread sender;
  static constexpr std::size_t kMaxQueued = 64;

  void post(std::string line, bool is_size) {
    std::lock_guard lock(out_mu);
    if (out_stop) return;
    if (is_size) {
      out_size = std::move(line);
    } else if (out_lines.size() < kMaxQueued) {
      out_lines.push_back(std::move(line));
    }
    if (!sender.joinable()) sender = std::thread([this] { send_posted(); });
    out_cv.notify_all();
  }

  void send_posted() {
    std::unique_lock lock(out_mu);
    for (;;) {
      out_cv.wait(lock, [&] { return out_stop || out_size || !out_lines.empty(); });
      if (out_stop) return;
      auto lines = std::exchange(out_lines, {});
      if (auto sz = std::exchange(out_size, std::nullopt)) lines.push_back(std::move(*sz));
      lock.unlock();
      for (const auto& l : lines) send(l);
      lock.lock();
    }
  }

  bool send(const std::string& line) {
    std::lock_guard lock(send_mu);
    const std::string l = line + "\n";
    std::size_t at = 0;
    while (at < l.size()) {
      const ssize_t n = ::send(control, l.data() + at, l.size() - at, MSG_NOSIGNAL);
      if (n > 0) {
        at += static_cast<std::size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        return false;
      }
    }
    return true;
  }

  // The control port's lines, until EOF (the machine powered off, died or was killed).
  void read_control() {
    std::string buffer;
    char chunk[1024];
    for (;;) {
      const ssize_t n = ::read(control, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      buffer.append(chunk, static_cast<std::size_t>(n));
      for (auto nl = buffer.find('\n'); nl != std::string::npos; nl = buffer.find('\n')) {
        handle(buffer.substr(0, nl));
        buffer.erase(0, nl + 1);
      }
    }
    {
      std::lock_guard lock(qemu_mu);  // the machine powered off or died: no zombie meanwhile
      if (qemu.pid() > 0) qemu.wait_for(std::chrono::milliseconds(2000));
    }
    std::lock_guard lock(mu);
    gone = true;
    cv.notify_all();
  }

  void handle(const std::string& line) {
    std::istringstream in(line);
    std::string op;
    in >> op;
    std::lock_guard lock(mu);
    if (op == "ready") {
      ready = true;
    } else if (op == "prepared") {
      prepared = true;
    } else if (op == "started") {
      started = true;
    } else if (op == "exit") {
      int code = 0, oom = 0;
      in >> code >> oom;
      exit = {code, oom == 1};
    } else if (op == "stats") {
      stats = line.substr(std::min(line.size(), std::size_t{6}));
    }
    cv.notify_all();
  }

  // Waits for `done` (under mu) or the machine's end, within `limit`.
  template <class Pred>
  bool wait(std::unique_lock<std::mutex>& lock, std::chrono::milliseconds limit, Pred done) {
    cv.wait_for(lock, limit, [&] { return done() || gone || destroyed; });
    return done();
  }

  std::string why_down() const {
    auto q = tail_of(dir + "/qemu.log");
    auto c = tail_of(dir + "/console.log");
    return "QEMU: " + (q.empty() ? std::string("(nothing)") : q) +
           "; console: " + (c.empty() ? std::string("(nothing)") : c);
  }

  // Kills QEMU, waits for it and the reader, closes the ports, removes the directory.
  void end() {
    {
      std::lock_guard lock(mu);
      if (destroyed) return;
      destroyed = true;
      cv.notify_all();
    }
    {
      std::lock_guard lock(qemu_mu);
      if (qemu.pid() > 0) {
        qemu.signal(SIGKILL);
        qemu.wait();
      }
    }
    if (control >= 0) ::shutdown(control, SHUT_RDWR);
    if (reader.joinable()) reader.join();
    {
      std::lock_guard lock(out_mu);
      out_stop = true;
      out_cv.notify_all();
    }
    if (sender.joinable()) sender.join();
    for (int* fd : {&term, &control, &stdio})
      if (*fd >= 0) close(std::exchange(*fd, -1));
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    if (release_id) std::exchange(release_id, nullptr)();
  }
};

}  // namespace kiln::sandbox::microvm::detail
