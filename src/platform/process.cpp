#include "platform/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

namespace kiln::process {
namespace {

Error sys_error(const char* call) {
  return Error{Errc::spawn, std::string(call) + ": " + std::strerror(errno)};
}

// In the child: every descriptor from `first` on closed (close_range where the kernel has
// it).
void close_from(int first) {
#ifdef SYS_close_range
  if (syscall(SYS_close_range, static_cast<unsigned>(first), ~0U, 0U) == 0) return;
#endif
  const long max = sysconf(_SC_OPEN_MAX);
  for (long fd = first; fd < (max > 0 ? max : 65536); ++fd) close(static_cast<int>(fd));
}

}  // namespace

Child::Child(Child&& o) noexcept
    : pid_(std::exchange(o.pid_, -1)), group_(o.group_), status_(std::exchange(o.status_, {})) {}

Child& Child::operator=(Child&& o) noexcept {
  if (this != &o) {
    this->~Child();
    pid_ = std::exchange(o.pid_, -1);
    group_ = o.group_;
    status_ = std::exchange(o.status_, {});
  }
  return *this;
}

Child::~Child() {
  if (pid_ <= 0 || status_) return;
  signal(SIGKILL);
  wait();
}

void Child::signal(int sig) const {
  if (pid_ <= 0 || status_) return;  // a reaped pid may belong to someone else by now
  if (group_) ::kill(-pid_, sig);
  ::kill(pid_, sig);
}

std::optional<int> Child::wait_for(std::chrono::milliseconds limit) {
  if (status_ || pid_ <= 0) return status_;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      status_ = status;
      return status_;
    }
    if (r < 0 && errno != EINTR) {  // not our child any more (reaped elsewhere): say so
      status_ = 0;
      return status_;
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(10));
  }
}

int Child::wait() {
  if (status_ || pid_ <= 0) return status_.value_or(0);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0) {
    if (errno != EINTR) {
      status = 0;
      break;
    }
  }
  status_ = status;
  return status;
}

Result<Child, Error> spawn(const SpawnOptions& o) {
  if (o.argv.empty()) return Error{Errc::spawn, "no program to run"};
  std::vector<char*> argv;
  for (const auto& a : o.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  // exec's failure reaches the parent through a close-on-exec pipe: EOF means it ran.
  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) return sys_error("pipe");
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    close(report[0]);
    close(report[1]);
    return sys_error("fork");
  }
  if (pid == 0) {
    const int devnull = open("/dev/null", O_RDWR);
    int fds[3] = {o.stdin_fd, o.stdout_fd, o.stderr_fd};
    // Moved above 2 first, so that dup2 onto 0-2 never overwrites one still needed.
    for (int& fd : fds) {
      if (fd < 0) fd = devnull;
      if (fd >= 0 && fd <= 2) fd = fcntl(fd, F_DUPFD, 3);
    }
    // The report pipe and the passed descriptor go above their final places (3, 4) first.
    int report_fd = report[1];
    if (report_fd <= 4) report_fd = fcntl(report_fd, F_DUPFD_CLOEXEC, 5);
    int pass = o.pass_fd;
    if (pass >= 0 && pass <= 4) pass = fcntl(pass, F_DUPFD, 5);
    for (int i = 0; i < 3; ++i) dup2(fds[i], i);
    if (o.controlling_terminal) {
      setsid();
      ioctl(0, TIOCSCTTY, 0);
    } else if (o.new_process_group) {
      setpgid(0, 0);
    }
    if (o.die_with_parent) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(126);
    }
    // Every other descriptor goes: the passed one stays as 3, the report pipe
    // (close-on-exec) as 3 or 4 until exec.
    if (pass >= 0) dup2(pass, 3);
    const int keep = dup3(report_fd, pass >= 0 ? 4 : 3, O_CLOEXEC);
    close_from(pass >= 0 ? 5 : 4);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);  // ignored by a server, default for what it runs
    execvp(argv[0], argv.data());
    const int e = errno;
    if (keep >= 0) (void)!write(keep, &e, sizeof e);
    _exit(127);
  }
  close(report[1]);
  int e = 0;
  ssize_t got;
  while ((got = read(report[0], &e, sizeof e)) < 0 && errno == EINTR) {
  }
  close(report[0]);
  Child child(pid, o.new_process_group || o.controlling_terminal);
  if (got == sizeof e) {
    child.wait();
    return Error{Errc::spawn, "cannot run " + o.argv[0] + ": " + std::strerror(e)};
  }
  return child;
}

Result<Output, Error> run(const std::vector<std::string>& argv, std::chrono::milliseconds limit,
                          std::string_view input, std::size_t max_output) {
  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) != 0) return sys_error("pipe");
  if (pipe2(out, O_CLOEXEC) != 0) {
    close(in[0]), close(in[1]);
    return sys_error("pipe");
  }
  if (pipe2(err, O_CLOEXEC) != 0) {
    close(in[0]), close(in[1]), close(out[0]), close(out[1]);
    return sys_error("pipe");
  }
  SpawnOptions o;
  o.argv = argv;
  o.stdin_fd = in[0];
  o.stdout_fd = out[1];
  o.stderr_fd = err[1];
  auto child = spawn(o);
  close(in[0]), close(out[1]), close(err[1]);
  if (!child) {
    close(in[1]), close(out[0]), close(err[0]);
    return child.error();
  }
  fcntl(in[1], F_SETFL, O_NONBLOCK);
  if (input.empty()) close(in[1]), in[1] = -1;
  Output result;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  std::size_t written = 0;
  int open_outputs = 2;
  bool timed_out = false;
  while (open_outputs > 0 || in[1] >= 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p[3] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}, {in[1], POLLOUT, 0}};
    const int n = poll(p, 3, static_cast<int>(left.count()));
    if (n < 0 && errno != EINTR) break;
    if (n <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (p[i].fd < 0 || p[i].revents == 0) continue;
      char chunk[4096];
      const ssize_t got = read(p[i].fd, chunk, sizeof chunk);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        close(p[i].fd);
        (i == 0 ? out[0] : err[0]) = -1;
        --open_outputs;
        continue;
      }
      auto& s = i == 0 ? result.out : result.err;
      s.append(chunk, std::min<std::size_t>(static_cast<std::size_t>(got),
                                            max_output - std::min(max_output, s.size())));
    }
    if (in[1] >= 0 && p[2].revents != 0) {
      const ssize_t put = write(in[1], input.data() + written, input.size() - written);
      if (put > 0) written += static_cast<std::size_t>(put);
      if ((put < 0 && errno != EAGAIN && errno != EINTR) || written == input.size()) {
        close(in[1]);
        in[1] = -1;
      }
    }
  }
  for (int fd : {in[1], out[0], err[0]})
    if (fd >= 0) close(fd);
  if (timed_out) {
    child->signal(SIGKILL);
    child->wait();
    return Error{Errc::timed_out, argv[0] + " did not finish within " +
                                      std::to_string(limit.count()) + " ms and was killed"};
  }
  result.status = child->wait();
  return result;
}

std::string describe(int status) {
  if (WIFEXITED(status)) return "exited with " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = sigabbrev_np(WTERMSIG(status));
    return std::string("killed by ") +
           (name ? std::string("SIG") + name : "signal " + std::to_string(WTERMSIG(status)));
  }
  return "status " + std::to_string(status);
}

}  // namespace kiln::process
