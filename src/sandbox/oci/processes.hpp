// The oci driver's processes (driver.cpp's, nothing else's): a sandbox's command as the
// container's init (adopted by Kiln, a child subreaper, and waited for directly) and a
// command run beside it in the foreground of `runc exec`; their stdio, the terminal's size,
// how each ended in words, and the OOM count that tells a kill at the memory limit.
#pragma once

#include "platform/process.hpp"
#include "sandbox/oci/cgroup.hpp"
#include "sandbox/oci/driver.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>

namespace kiln::sandbox::oci::detail {

inline Error failed(std::string what) {
  return Error{Errc::failed, std::move(what)};
}

inline std::string first_line(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  // runc prints logfmt-like lines (time="..." level=error msg="..."): the msg is the news.
  if (auto at = s.rfind("msg=\""); at != std::string::npos) {
    auto end = s.find('"', at + 5);
    while (end != std::string::npos && s[end - 1] == '\\') end = s.find('"', end + 1);
    return s.substr(at + 5, end == std::string::npos ? std::string::npos : end - at - 5);
  }
  return s;
}

// The shared state of one sandbox: what its processes need after the Sandbox object is
// gone (they may outlive it in the caller's hands).
struct Shared {
  OciOptions options;
  SandboxSpec spec;
  std::string bundle;
  std::atomic<bool> destroyed{false};
  std::atomic<bool> oom{false};  // the runtime reported an OOM kill in the sandbox

  std::vector<std::string> runc(std::initializer_list<std::string> args) const {
    std::vector<std::string> v{options.runc, "--root", options.state_root};
    v.insert(v.end(), args);
    return v;
  }
};

// The kernel's count of out-of-memory kills in the sandbox's memory cgroup (cgroup.hpp):
// found from the init's /proc/<pid>/cgroup while it lives, read when it has died by SIGKILL
// (the cgroup stays until the sandbox is destroyed). No process watches it.
class OomCount {
 public:
  OomCount() = default;
  explicit OomCount(pid_t init) {
    std::ifstream in("/proc/" + std::to_string(init) + "/cgroup");
    std::stringstream text;
    text << in.rdbuf();
    file_ = oom_counter_file(text.str());
    before_ = now().value_or(0);
  }
  // Whether the kernel killed in it for memory since it was found.
  [[nodiscard]] bool grew() const {
    const auto n = now();
    return n && *n > before_;
  }

 private:
  [[nodiscard]] std::optional<std::uint64_t> now() const {
    if (!file_) return std::nullopt;
    std::ifstream in(*file_);
    std::stringstream text;
    text << in.rdbuf();
    return oom_kills(text.str());
  }
  std::optional<std::string> file_;
  std::uint64_t before_ = 0;
};

// How a process of the sandbox ended, from its wait status. `via_runc`: the status is a
// foreground runc's, which exits with 128 + the signal that ended the command.
inline Exit describe(const Shared& shared, int status, bool via_runc) {
  int code = 0, sig = 0;
  if (WIFSIGNALED(status)) {
    sig = WTERMSIG(status);
  } else if (WIFEXITED(status)) {
    code = WEXITSTATUS(status);
    if (via_runc && code > 128 && code < 128 + 65) sig = code - 128;
  }
  return ended(code, sig, shared.oom, shared.destroyed, shared.spec.limits.memory_bytes);
}

// A command's stdio without a terminal: its input pipe's write end and its output pipe's
// read end (Kiln's, non-blocking), and the ends the child gets (stdin; stdout and stderr
// together). Every end close-on-exec (the spawn hands the child's on).
struct StdioPipes {
  int input, output, child_in, child_out;
};
inline Result<StdioPipes, Error> stdio_pipes() {
  int in[2], out[2];
  if (pipe2(in, O_CLOEXEC) != 0) return failed(std::string("pipe: ") + std::strerror(errno));
  if (pipe2(out, O_CLOEXEC) != 0) {
    close(in[0]), close(in[1]);
    return failed(std::string("pipe: ") + std::strerror(errno));
  }
  fcntl(in[1], F_SETFL, O_NONBLOCK);
  fcntl(out[0], F_SETFL, O_NONBLOCK);
  return StdioPipes{in[1], out[0], in[0], out[1]};
}

inline Result<void, Error> set_size(int master, Terminal size) {
  if (size.rows == 0 || size.cols == 0 || size.rows > 1000 || size.cols > 1000)
    return Error{Errc::invalid, "a terminal's rows and columns are 1-1000"};
  winsize ws{size.rows, size.cols, 0, 0};
  if (ioctl(master, TIOCSWINSZ, &ws) != 0)
    return failed(std::string("resize: ") + std::strerror(errno));
  return {};
}

// What both kinds of process hold: their stdio (a pty's master, or a pipe pair), closed
// with them, and the terminal's size.
class StdioProcess : public Process {
 public:
  StdioProcess(int input, int output, bool terminal)
      : input_(input), output_(output), terminal_(terminal) {}
  ~StdioProcess() override {
    for (int fd : {input_, output_ == input_ ? -1 : output_})
      if (fd >= 0) close(fd);
  }
  StdioProcess(const StdioProcess&) = delete;
  StdioProcess& operator=(const StdioProcess&) = delete;
  [[nodiscard]] int input() const override { return input_; }
  [[nodiscard]] int output() const override { return output_; }
  Result<void, Error> resize(Terminal size) override {
    if (!terminal_) return Error{Errc::invalid, "this process has no terminal"};
    return set_size(input_, size);
  }

 private:
  int input_, output_;
  bool terminal_;
};

// The sandbox's command: the container's init, created by `runc create` and adopted by
// this process (a child subreaper) when runc exits, so its wait status is the command's.
// Its input and output are the pty's master (received from runc on the console socket) or
// the pipes runc handed through.
class InitProcess final : public StdioProcess {
 public:
  InitProcess(std::shared_ptr<Shared> shared, process::Child init, int input, int output,
              bool terminal, OomCount oom)
      : StdioProcess(input, output, terminal),
        shared_(std::move(shared)),
        init_(std::move(init)),
        oom_(std::move(oom)) {}
  ~InitProcess() override {
    init_.signal(SIGKILL);  // ends with its handle (the Child reaps it)
    init_.wait();
  }
  // PID 1 of its namespace: it gets the signals it handles, and SIGKILL.
  void signal(int sig) override {
    std::lock_guard lock(mu_);
    if (!exit_) init_.signal(sig);  // not reaped yet: the pid is still its
  }
  std::optional<Exit> wait_for(std::chrono::milliseconds limit) override {
    std::lock_guard lock(mu_);
    if (exit_) return exit_;
    const auto status = init_.wait_for(limit);
    if (!status) return std::nullopt;
    // Only a SIGKILL may be the kernel's at the memory limit.
    if (WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL && oom_.grew()) shared_->oom = true;
    exit_ = describe(*shared_, *status, false);
    return exit_;
  }

 private:
  std::shared_ptr<Shared> shared_;
  process::Child init_;
  OomCount oom_;
  std::mutex mu_;
  std::optional<Exit> exit_;
};

// A command run beside the sandbox's own (`runc exec`): a pipe pair or a pty, and the runc
// child in whose foreground it runs.
class RuncProcess final : public StdioProcess {
 public:
  // `pid_file`: where runc exec writes the command's host pid; empty for the sandbox's own
  // command (signalled through `runc kill`).
  RuncProcess(std::shared_ptr<Shared> shared, process::Child child, int input, int output,
              bool terminal, std::string scratch, std::string pid_file)
      : StdioProcess(input, output, terminal),
        scratch_(std::move(scratch)),
        pid_file_(std::move(pid_file)),
        shared_(std::move(shared)),
        child_(std::move(child)) {}
  ~RuncProcess() override {
    if (!child_.wait_for(std::chrono::milliseconds(0))) signal(SIGKILL);  // ends with its handle
    child_.signal(SIGKILL);
    child_.wait();
    for (const auto& f : {scratch_, pid_file_})
      if (!f.empty()) unlink(f.c_str());
  }
  // runc exec forwards the signals it can catch; SIGKILL and SIGSTOP go to the command's
  // host pid.
  void signal(int sig) override {
    if (shared_->destroyed) return;
    if (sig != SIGKILL && sig != SIGSTOP) {
      ::kill(child_.pid(), sig);
      return;
    }
    std::ifstream in(pid_file_);
    pid_t pid = 0;
    if (in >> pid && pid > 1) ::kill(pid, sig);
  }

  std::optional<Exit> wait_for(std::chrono::milliseconds limit) override {
    std::lock_guard lock(mu_);
    if (exit_) return exit_;
    const auto status = child_.wait_for(limit);
    if (!status) return std::nullopt;
    exit_ = describe(*shared_, *status, true);
    return exit_;
  }

 private:
  std::string scratch_;  // a file runc reads while it starts the command (exec's process.json)
  std::string pid_file_;
  std::shared_ptr<Shared> shared_;
  process::Child child_;
  std::mutex mu_;
  std::optional<Exit> exit_;
};

// One byte read from `fd` within `within` (poll retried after a signal); false on EOF, an
// error or the time running out.
inline bool receive_byte(int fd, std::chrono::milliseconds within) {
  const auto deadline = std::chrono::steady_clock::now() + within;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    const int n = poll(&p, 1, static_cast<int>(std::max<std::int64_t>(left.count(), 0)));
    if (n < 0 && errno == EINTR) continue;
    if (n != 1) return false;
    char c = 0;
    return ::recv(fd, &c, 1, 0) == 1;
  }
}

// The pty's master, which runc sends on the console socket (SCM_RIGHTS) while it creates
// the container. Waits until `deadline` or until runc exits without sending it.
inline Result<int, Error> receive_console(int listener, process::Child& runc,
                                          std::chrono::steady_clock::time_point deadline) {
  int conn = -1;
  while (conn < 0) {
    if (runc.wait_for(std::chrono::milliseconds(0)))
      return failed("runc create ended without sending the terminal");
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return failed("runc create sent no terminal in time");
    pollfd p{listener, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left.count(), 50))) > 0)
      conn = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  }
  char name[512];
  iovec iov{name, sizeof name};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  pollfd p{conn, POLLIN, 0};
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  ssize_t got = -1;
  if (poll(&p, 1, static_cast<int>(std::max<std::int64_t>(left.count(), 0))) > 0)
    got = ::recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
  close(conn);
  const cmsghdr* c = got > 0 ? CMSG_FIRSTHDR(&msg) : nullptr;
  if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
      c->cmsg_len != CMSG_LEN(sizeof(int)))
    return failed("runc create sent no terminal on the console socket");
  int fd = -1;
  std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
  return fd;
}

}  // namespace kiln::sandbox::oci::detail
