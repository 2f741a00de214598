#include "sandbox/oci/driver.hpp"

#include "platform/process.hpp"
#include "sandbox/oci/cgroup.hpp"
#include "sandbox/oci/config.hpp"
#include "sandbox/oci/processes.hpp"

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
using namespace detail;

// The container's init until start(): a shell from the sandbox's root that waits for a line
// on descriptor 3 (a socket whose other end Kiln holds; runc create --preserve-fds 1),
// answers with a line (start() waits for it: an init killed while it waited is told apart
// from a command that began), closes it, and becomes the command (exec: same pid, so the
// command is the init and its exit is the sandbox's). `runc start` costs 20-30 ms of Go start-up on
// a small VM; done while the sandbox is prepared, start() is one send. A Kiln that dies closes its
// end: the read fails and the init exits 97.
// start() returns before the exec: a shell run with -c catches SIGINT and exits 130 on it, so
// the gate ignores SIGINT and SIGQUIT (a Ctrl-C typed then is one before the program: it ends
// nothing), and coreutils' env sets every signal back to its default for the command.
constexpr const char* kGate[] = {"/bin/sh", "-c",
                                 "trap '' INT QUIT; read -r _ <&3 || exit 97; echo >&3; "
                                 "exec 3<&-; exec /usr/bin/env --default-signal \"$@\"",
                                 "kiln-gate"};

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
    // The send lands in the socket's buffer even when the init is being killed, so the
    // gate's answer is what says it read it; a SIGKILL delivered before then (kill(2)
    // returned) never lets it answer: EOF.
    bool opened = ::send(gate_, "\n", 1, MSG_NOSIGNAL) == 1;
    if (opened) opened = receive_byte(gate_, shared_->options.command_timeout);
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
