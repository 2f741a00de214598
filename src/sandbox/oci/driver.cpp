#include "sandbox/oci/driver.hpp"

#include "platform/process.hpp"
#include "sandbox/oci/cgroup.hpp"
#include "sandbox/oci/config.hpp"

#include <boost/json.hpp>

#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

namespace kiln::sandbox::oci {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;

// The container's init until start(): a shell from the sandbox's root that waits for a line
// on descriptor 3 (a pipe whose write end Kiln holds; runc create --preserve-fds 1), closes
// it, and becomes the command (exec: same pid, so the command is the init and its exit is
// the sandbox's). `runc start` costs 20-30 ms of Go start-up on a small VM; done while the
// sandbox is prepared, start() is a write to a pipe. A Kiln that dies closes the pipe: the
// read fails and the init exits 97.
constexpr const char* kGate[] = {"/bin/sh", "-c",
                                 "read -r _ <&3 || exit 97; exec 3<&-; exec \"$@\"", "kiln-gate"};

Error failed(std::string what) {
  return Error{Errc::failed, std::move(what)};
}

std::string first_line(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  // runc prints logfmt-like lines (time="..." level=error msg="..."): the msg is the news.
  if (auto at = s.rfind("msg=\""); at != std::string::npos) {
    auto end = s.find('"', at + 5);
    while (end != std::string::npos && s[end - 1] == '\\') end = s.find('"', end + 1);
    return s.substr(at + 5, end == std::string::npos ? std::string::npos : end - at - 5);
  }
  return s;
}

std::string mib(std::uint64_t bytes) {
  return std::to_string(bytes >> 20) + " MiB";
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
Exit describe(const Shared& shared, int status, bool via_runc) {
  Exit e;
  int sig = 0;
  if (WIFSIGNALED(status)) {
    sig = WTERMSIG(status);
  } else if (WIFEXITED(status)) {
    e.code = WEXITSTATUS(status);
    if (via_runc && e.code > 128 && e.code < 128 + 65) sig = e.code - 128;
  }
  if (shared.destroyed) {
    e.reason = Exit::Reason::destroyed;
    e.code = sig ? 128 + sig : e.code;
    e.signal = sig;
    e.message = "the sandbox was destroyed";
    return e;
  }
  if (sig == 0) {
    e.message = "exited with " + std::to_string(e.code);
    return e;
  }
  e.code = 128 + sig;
  e.signal = sig;
  if (sig == SIGKILL && shared.oom) {
    e.reason = Exit::Reason::out_of_memory;
    e.message =
        "killed at the sandbox's memory limit (" + mib(shared.spec.limits.memory_bytes) + ")";
    return e;
  }
  e.reason = Exit::Reason::signaled;
  const char* name = sigabbrev_np(sig);
  e.message = std::string("killed by ") +
              (name ? std::string("SIG") + name : "signal " + std::to_string(sig));
  return e;
}

// A command's stdio without a terminal: its input pipe's write end and its output pipe's
// read end (Kiln's, non-blocking), and the ends the child gets (stdin; stdout and stderr
// together). Every end close-on-exec (the spawn hands the child's on).
struct StdioPipes {
  int input, output, child_in, child_out;
};
Result<StdioPipes, Error> stdio_pipes() {
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

Result<void, Error> set_size(int master, Terminal size) {
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

class OciSandbox final : public Sandbox {
 public:
  explicit OciSandbox(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}
  ~OciSandbox() override { destroy(); }
  [[nodiscard]] const std::string& id() const override { return shared_->spec.id; }

  // `runc create` then `runc start`: the container is made (namespaces, cgroups, mounts,
  // seccomp) and its init runs, but behind the gate (see kGate): it waits for a line on a
  // pipe Kiln holds before it becomes the command. runc hands the command's pty over the
  // console socket (or the pipes through, without a terminal) and exits; the init becomes
  // this process's child (OciDriver made it a child subreaper).
  Result<void, Error> prepare() override {
    if (shared_->destroyed) return Error{Errc::not_running, "the sandbox was destroyed"};
    if (prepared_ || started_) return {};
    const auto& b = shared_->bundle;
    const auto pid_file = b + "/init.pid";
    const auto log_file = b + "/runc.log";
    std::vector<std::string> argv{shared_->options.runc,
                                  "--root",
                                  shared_->options.state_root,
                                  "--log",
                                  log_file,
                                  "--log-format",
                                  "json",
                                  "create",
                                  "--bundle",
                                  b,
                                  "--pid-file",
                                  pid_file};
    process::SpawnOptions o;
    int listener = -1, ends[3] = {-1, -1, -1};
    const auto close_all = [&] {
      for (int fd :
           {listener, ends[0], ends[1], ends[2], gate_, input_, output_ == input_ ? -1 : output_})
        if (fd >= 0) close(fd);
      listener = ends[0] = ends[1] = ends[2] = gate_ = input_ = output_ = -1;
    };
    // A socket pair, not a pipe: the gate is opened with send(MSG_NOSIGNAL), so an init
    // that died meanwhile is an error here, never a SIGPIPE for the whole process.
    int gate[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, gate) != 0)
      return failed(std::string("socketpair: ") + std::strerror(errno));
    ends[2] = gate[0];
    gate_ = gate[1];
    o.pass_fd = gate[0];
    argv.insert(argv.end(), {"--preserve-fds", "1"});
    const auto socket_path = b + "/console.sock";
    if (shared_->spec.terminal) {
      listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_un a{};
      a.sun_family = AF_UNIX;
      if (listener < 0 || socket_path.size() >= sizeof a.sun_path) {
        close_all();
        return failed("cannot make the console socket " + socket_path);
      }
      std::memcpy(a.sun_path, socket_path.c_str(), socket_path.size() + 1);
      if (::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
          ::listen(listener, 1) != 0) {
        close_all();
        return failed("console socket " + socket_path + ": " + std::strerror(errno));
      }
      argv.insert(argv.end(), {"--console-socket", socket_path});
    } else {
      auto p = stdio_pipes();
      if (!p) {
        close_all();
        return p.error();
      }
      input_ = p->input;
      output_ = p->output;
      ends[0] = p->child_in;
      ends[1] = p->child_out;
      o.stdin_fd = p->child_in;  // runc hands its own stdio through to the command
      o.stdout_fd = o.stderr_fd = p->child_out;
    }
    argv.push_back(shared_->spec.id);
    o.argv = std::move(argv);
    auto runc = process::spawn(o);
    for (int& fd : ends)
      if (fd >= 0) close(std::exchange(fd, -1));
    if (!runc) {
      close_all();
      return Error{Errc::unavailable, runc.error().detail};
    }
    const auto deadline = std::chrono::steady_clock::now() + shared_->options.command_timeout;
    if (listener >= 0) {
      auto master = receive_console(listener, *runc, deadline);
      if (!master) {
        close_all();
        runc->signal(SIGKILL);
        runc->wait();
        return failed(runc_error(log_file, master.error().detail));
      }
      input_ = output_ = *master;
      fcntl(input_, F_SETFD, FD_CLOEXEC);
      fcntl(input_, F_SETFL, O_NONBLOCK);
      close(std::exchange(listener, -1));
      unlink(socket_path.c_str());
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    const auto status = runc->wait_for(std::max(left, std::chrono::milliseconds(0)));
    if (!status || !WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
      close_all();
      if (!status) runc->signal(SIGKILL), runc->wait();
      prepared_ = true;  // destroy() removes what it may have made
      return failed(runc_error(log_file, status ? process::describe(*status) : "timed out"));
    }
    std::ifstream in(pid_file);
    pid_t pid = 0;
    if (!(in >> pid) || pid <= 1) {
      close_all();
      prepared_ = true;
      return failed("runc create wrote no pid to " + pid_file);
    }
    init_ = process::Child(pid, false);
    oom_ = OomCount(pid);
    prepared_ = true;
    // The init runs the gate: it waits for start().
    auto started =
        process::run(shared_->runc({"start", shared_->spec.id}), shared_->options.command_timeout);
    if (!started || started->status != 0) {
      close_all();
      return failed("runc start: " + (started ? first_line(started->err) : started.error().detail));
    }
    return {};
  }

  Result<std::unique_ptr<Process>, Error> start(Terminal size) override {
    if (started_) return Error{Errc::invalid, "the sandbox's command was started already"};
    if (shared_->destroyed) return Error{Errc::not_running, "the sandbox was destroyed"};
    if (shared_->spec.terminal &&
        (size.rows == 0 || size.cols == 0 || size.rows > 1000 || size.cols > 1000))
      return Error{Errc::invalid, "a terminal's rows and columns are 1-1000"};
    if (auto r = prepare(); !r) return r.error();
    if (input_ < 0) return Error{Errc::not_running, "the sandbox could not be prepared"};
    started_ = true;
    if (shared_->spec.terminal) {
      if (auto r = set_size(input_, size); !r) return r.error();
    }
    // The gate opens: the init becomes the command.
    const bool opened = ::send(gate_, "\n", 1, MSG_NOSIGNAL) == 1;
    close(std::exchange(gate_, -1));
    if (!opened) return Error{Errc::not_running, "the sandbox's init ended before its start"};
    auto p = std::make_unique<InitProcess>(shared_, std::move(init_), std::exchange(input_, -1),
                                           std::exchange(output_, -1), shared_->spec.terminal,
                                           std::move(oom_));
    return std::unique_ptr<Process>(std::move(p));
  }

  Result<std::unique_ptr<Process>, Error> exec(const std::vector<std::string>& args, bool terminal,
                                               Terminal size) override {
    if (shared_->destroyed) return Error{Errc::not_running, "the sandbox was destroyed"};
    if (!started_) return Error{Errc::not_running, "the sandbox's command has not started"};
    SandboxSpec s = shared_->spec;
    s.args = args;
    s.terminal = terminal;
    if (auto problem = validate(s); !problem.empty()) return Error{Errc::invalid, problem};
    const auto file = shared_->bundle + "/exec-" + std::to_string(++execs_) + ".json";
    {
      std::ofstream out(file, std::ios::trunc);
      out << json::serialize(process(s));
      if (!out) return failed("cannot write " + file);
    }
    const auto pid_file = shared_->bundle + "/exec-" + std::to_string(execs_) + ".pid";
    return launch(
        shared_->runc({"exec", "--process", file, "--pid-file", pid_file, shared_->spec.id}),
        terminal, size, file, pid_file);
  }

  Result<Stats, Error> stats() override {
    if (shared_->destroyed) return Error{Errc::not_running, "the sandbox was destroyed"};
    auto r = process::run(shared_->runc({"events", "--stats", shared_->spec.id}),
                          shared_->options.command_timeout);
    if (!r) return failed(r.error().detail);
    if (r->status != 0) return Error{Errc::not_running, first_line(r->err)};
    boost::system::error_code ec;
    auto v = json::parse(r->out, ec);
    if (ec || !v.is_object()) return failed("runc events --stats said: " + first_line(r->out));
    const auto* data = v.as_object().if_contains("data");
    if (!data || !data->is_object()) return failed("runc events --stats: no data");
    const auto get = [&](std::initializer_list<const char*> path) -> std::uint64_t {
      const json::value* at = data;
      for (const char* k : path) {
        if (!at->is_object()) return 0;
        at = at->as_object().if_contains(k);
        if (!at) return 0;
      }
      return at->is_uint64() ? at->as_uint64() : at->is_int64() ? std::uint64_t(at->as_int64()) : 0;
    };
    Stats s;
    s.memory_bytes = get({"memory", "usage", "usage"});
    s.memory_limit_bytes = get({"memory", "usage", "limit"});
    s.pids = get({"pids", "current"});
    s.pids_limit = get({"pids", "limit"});
    s.cpu_ns = get({"cpu", "usage", "total"});
    return s;
  }

  void destroy() override {
    if (shared_->destroyed.exchange(true)) return;
    const auto t = shared_->options.command_timeout;
    if (started_ || prepared_) {
      (void)process::run(shared_->runc({"kill", "--all", shared_->spec.id, "KILL"}), t);
      (void)process::run(shared_->runc({"delete", "--force", shared_->spec.id}), t);
    }
    init_.signal(SIGKILL);  // prepared, never started: reaped here
    init_.wait();
    if (gate_ >= 0) close(std::exchange(gate_, -1));
    for (int fd : {input_, output_ == input_ ? -1 : output_})
      if (fd >= 0) close(fd);
    input_ = output_ = -1;
    std::error_code ec;
    fs::remove_all(shared_->bundle, ec);
  }

 private:
  // The pty's master, which runc sends on the console socket (SCM_RIGHTS) while it creates
  // the container. Waits until `deadline` or until runc exits without sending it.
  static Result<int, Error> receive_console(int listener, process::Child& runc,
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

  // What runc said went wrong: the last error in its JSON log, else `fallback`.
  static std::string runc_error(const std::string& log_file, const std::string& fallback) {
    std::ifstream in(log_file);
    std::string line, last;
    while (std::getline(in, line)) {
      boost::system::error_code ec;
      auto v = json::parse(line, ec);
      const auto* o = ec ? nullptr : v.if_object();
      const auto* level = o ? o->if_contains("level") : nullptr;
      const auto* msg = o ? o->if_contains("msg") : nullptr;
      if (level && msg && level->is_string() && msg->is_string() && level->as_string() == "error")
        last = std::string(msg->as_string());
    }
    return last.empty() ? "runc create: " + fallback : "runc create: " + last;
  }

  // `scratch`: a file removed when the process is dropped (or now, if it cannot start).
  Result<std::unique_ptr<Process>, Error> launch(std::vector<std::string> argv, bool terminal,
                                                 Terminal size, std::string scratch,
                                                 std::string pid_file) {
    struct Scratch {
      std::string* path;
      ~Scratch() {
        if (!path->empty()) unlink(path->c_str());
      }
    } remove_unless_kept{&scratch};
    process::SpawnOptions o;
    o.argv = std::move(argv);
    int input = -1, output = -1, ends[3] = {-1, -1, -1};
    if (terminal) {
      if (size.rows == 0 || size.cols == 0 || size.rows > 1000 || size.cols > 1000)
        return Error{Errc::invalid, "a terminal's rows and columns are 1-1000"};
      winsize ws{size.rows, size.cols, 0, 0};
      int master = -1, slave = -1;
      if (openpty(&master, &slave, nullptr, nullptr, &ws) != 0)
        return failed(std::string("openpty: ") + std::strerror(errno));
      fcntl(master, F_SETFD, FD_CLOEXEC);
      fcntl(master, F_SETFL, O_NONBLOCK);
      input = output = master;
      ends[0] = slave;
      o.stdin_fd = o.stdout_fd = o.stderr_fd = slave;
      o.controlling_terminal = true;
    } else {
      auto p = stdio_pipes();
      if (!p) return p.error();
      input = p->input;
      output = p->output;
      ends[0] = p->child_in;
      ends[1] = p->child_out;
      o.stdin_fd = p->child_in;
      o.stdout_fd = o.stderr_fd = p->child_out;
    }
    auto child = process::spawn(o);
    for (int fd : ends)
      if (fd >= 0) close(fd);
    if (!child) {
      close(input);
      if (output != input) close(output);
      return Error{Errc::unavailable, child.error().detail};
    }
    return std::unique_ptr<Process>(
        std::make_unique<RuncProcess>(shared_, std::move(*child), input, output, terminal,
                                      std::exchange(scratch, {}), std::move(pid_file)));
  }

  std::shared_ptr<Shared> shared_;
  bool prepared_ = false, started_ = false;
  int execs_ = 0;
  // Prepared, until start() hands them to the InitProcess (the gate's write end: closed by
  // start() once it has opened it).
  process::Child init_;
  int input_ = -1, output_ = -1, gate_ = -1;
  OomCount oom_;
};

}  // namespace

OciDriver::OciDriver(OciOptions options) : options_(std::move(options)) {
  // A container's init outlives `runc create` and must be this process's child to be
  // waited for: orphans of our children come to us instead of to PID 1.
  prctl(PR_SET_CHILD_SUBREAPER, 1);
}

Result<std::string, Error> OciDriver::check() const {
  if (geteuid() != 0)
    return Error{Errc::unavailable,
                 "the oci sandbox driver needs root (runc rootless is not "
                 "supported): run kiln as root"};
  auto r = process::run({options_.runc, "--version"}, options_.command_timeout);
  if (!r)
    return Error{Errc::unavailable, r.error().detail +
                                        " (install Debian's runc package: "
                                        "apt-get install runc)"};
  if (r->status != 0) return Error{Errc::unavailable, options_.runc + " --version failed"};
  for (const auto& dir : {options_.state_root, options_.bundles}) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return Error{Errc::unavailable, "cannot create " + dir + ": " + ec.message()};
    // A sandbox's root (a mapped uid) passes through to its bundle's rootfs.
    for (fs::path p = dir; !p.empty() && p != p.root_path(); p = p.parent_path()) {
      struct stat st {};
      if (::stat(p.c_str(), &st) != 0) break;
      if ((st.st_mode & S_IXOTH) == 0) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
        return Error{Errc::unavailable,
                     p.string() + " is not searchable by others (mode " + mode +
                         "): sandboxes could not reach their root there (chmod o+x " + p.string() +
                         ", or remove it when no kiln uses it)"};
      }
    }
  }
  return first_line(r->out.substr(0, r->out.find('\n')));
}

std::size_t OciDriver::remove_leftovers() {
  const auto runc = [&](std::vector<std::string> args) {
    std::vector<std::string> v{options_.runc, "--root", options_.state_root};
    v.insert(v.end(), args.begin(), args.end());
    return process::run(v, options_.command_timeout);
  };
  std::size_t n = 0;
  if (auto list = runc({"list", "-q"}); list && list->status == 0) {
    std::istringstream ids(list->out);
    for (std::string id; std::getline(ids, id);) {
      if (id.empty()) continue;
      (void)runc({"kill", "--all", id, "KILL"});
      (void)runc({"delete", "--force", id});
      ++n;
    }
  }
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(options_.bundles, ec)) fs::remove_all(e.path(), ec);
  return n;
}

Result<std::unique_ptr<Sandbox>, Error> OciDriver::create(const SandboxSpec& spec) {
  if (auto problem = validate(spec); !problem.empty()) return Error{Errc::invalid, problem};
  if (!clean_absolute_path(options_.state_root) || !clean_absolute_path(options_.bundles))
    return Error{Errc::unavailable, "the oci driver's directories must be absolute paths"};
  auto shared = std::make_shared<Shared>();
  shared->options = options_;
  shared->spec = spec;
  shared->bundle = options_.bundles + "/" + spec.id;
  std::error_code ec;
  fs::create_directories(options_.bundles, ec);
  if (!fs::create_directory(shared->bundle, ec)) {
    if (!ec) return Error{Errc::invalid, "a sandbox with id " + spec.id + " exists"};
    return Error{Errc::unavailable, "cannot create " + shared->bundle + ": " + ec.message()};
  }
  auto cleanup = [&] { fs::remove_all(shared->bundle, ec); };
  const auto rootfs = shared->bundle + "/rootfs";
  fs::create_directory(rootfs, ec);
  // The container's root user (host uid_base) creates its mount points in it.
  if (ec || chown(rootfs.c_str(), options_.uid_base, options_.gid_base) != 0 ||
      chmod(rootfs.c_str(), 0755) != 0) {
    cleanup();
    return Error{Errc::unavailable, "cannot prepare " + rootfs};
  }
  OciHost host;
  host.rootfs = rootfs;
  host.uid_base = options_.uid_base;
  host.gid_base = options_.gid_base;
  host.system_dirs.clear();
  for (const auto& d : options_.system_dirs)
    if (fs::exists(d)) host.system_dirs.push_back(d);
  // An /etc of its own: generated files, and mount points for what is shared from the host.
  {
    const auto etc = rootfs + "/etc";
    fs::create_directory(etc, ec);
    bool ok = !ec && chmod(etc.c_str(), 0755) == 0;
    for (const auto& [name, text] : etc_files(spec)) {
      std::ofstream out(etc + "/" + name, std::ios::trunc);
      out << text;
      ok = ok && bool(out);
    }
    auto shared = options_.etc_shared;
    if (spec.limits.network) shared.emplace_back("/etc/resolv.conf");
    for (const auto& f : shared) {
      if (!f.starts_with("/etc/") || !clean_absolute_path(f)) continue;
      if (!fs::exists(f)) continue;  // (a symlink counts by its target)
      const auto at = rootfs + f;
      if (fs::is_directory(f)) {
        fs::create_directories(at, ec);
      } else {
        fs::create_directories(fs::path(at).parent_path(), ec);
        std::ofstream(at, std::ios::app);
      }
      ok = ok && !ec;
      host.etc_shared.push_back(f);
    }
    if (!ok) {
      cleanup();
      return Error{Errc::unavailable, "cannot write the sandbox's /etc in " + etc};
    }
  }
  for (const auto& m : spec.mounts) {
    if (!fs::exists(m.source)) {
      cleanup();
      return Error{Errc::invalid, "mount source " + m.source + " does not exist"};
    }
  }
  {
    std::ofstream out(shared->bundle + "/config.json", std::ios::trunc);
    SandboxSpec gated = spec;
    gated.args.insert(gated.args.begin(), std::begin(kGate), std::end(kGate));
    out << json::serialize(config(gated, host));
    if (!out) {
      cleanup();
      return Error{Errc::unavailable, "cannot write the bundle's config.json"};
    }
  }
  return std::unique_ptr<Sandbox>(std::make_unique<OciSandbox>(std::move(shared)));
}

}  // namespace kiln::sandbox::oci
