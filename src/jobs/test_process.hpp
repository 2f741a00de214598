// A child process for tests that need real processes (the job queue's fault tests): its
// stdout and stderr read line by line, signals, its exit awaited with a bound.
#pragma once

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace kiln::jobs {

// A child process; everything it writes to stdout and stderr is read by a thread of its
// own (the pipe never fills and blocks it), for wait_line().
class Child {
 public:
  explicit Child(std::vector<std::string> args) {
    int fds[2];
    if (::pipe(fds) != 0) throw std::runtime_error("pipe");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int spawned = posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(fds[1]);
    if (spawned != 0) {
      ::close(fds[0]);
      throw std::runtime_error("cannot start " + args[0]);
    }
    reader_ = std::thread([this, fd = fds[0]] {
      char chunk[4096];
      for (;;) {
        const auto n = ::read(fd, chunk, sizeof chunk);
        std::lock_guard lock(mu_);
        if (n <= 0) {
          closed_ = true;
          cv_.notify_all();
          break;
        }
        buffer_.append(chunk, static_cast<std::size_t>(n));
        cv_.notify_all();
      }
      ::close(fd);
    });
  }
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    reader_.join();  // its output ends with it
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // The next line (stdout or stderr) that starts with `prefix` (or contains it, with
  // `anywhere`), or "" after `within` or at the end of its output.
  std::string wait_line(const std::string& prefix, std::chrono::milliseconds within,
                        bool anywhere = false) {
    const auto deadline = std::chrono::steady_clock::now() + within;
    std::unique_lock lock(mu_);
    for (;;) {
      for (auto nl = buffer_.find('\n'); nl != std::string::npos; nl = buffer_.find('\n')) {
        auto line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        if (anywhere ? line.find(prefix) != std::string::npos : line.starts_with(prefix))
          return line;
      }
      if (closed_) return "";
      if (cv_.wait_until(lock, deadline) == std::cv_status::timeout &&
          buffer_.find('\n') == std::string::npos)
        return "";
    }
  }
  void signal(int sig) const { ::kill(pid_, sig); }
  // The exit status (or -signal), or nullopt if still running after `within`.
  std::optional<int> wait_exit(std::chrono::milliseconds within) {
    const auto deadline = std::chrono::steady_clock::now() + within;
    for (;;) {
      int status = 0;
      const auto r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
      }
      if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
      // waitpid has no timeout: poll the child's state.
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

 private:
  pid_t pid_ = -1;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string buffer_;   // (mu_)
  bool closed_ = false;  // (mu_)
};

}  // namespace kiln::jobs
