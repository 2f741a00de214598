#include "sandbox/microvm/driver.hpp"

#include "platform/process.hpp"
#include "sandbox/microvm/machine.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

namespace kiln::sandbox::microvm {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::vector<std::string> qemu_args(const VmConfig& c) {
  std::vector<std::string> a{"-M",          "microvm,x-option-roms=off,rtc=on",
                             "-cpu",        "max",
                             "-smp",        std::to_string(c.machine_config.vcpu_count),
                             "-m",          std::to_string(c.machine_config.mem_size_mib),
                             "-nodefaults", "-no-user-config",
                             "-display",    "none",
                             "-no-reboot"};
  std::istringstream accels(c.accel);
  for (std::string accel; std::getline(accels, accel, ':');)
    if (!accel.empty()) a.insert(a.end(), {"-accel", accel});
  a.insert(a.end(),
           {"-kernel", c.boot_source.kernel_image_path, "-initrd", c.boot_source.initrd_path,
            "-append", c.boot_source.boot_args, "-serial", "file:" + c.console_log});
  if (!c.ports.empty()) a.insert(a.end(), {"-device", "virtio-serial-device"});
  for (std::size_t i = 0; i < c.ports.size(); ++i) {
    const auto id = "port" + std::to_string(i);
    a.insert(a.end(), {"-chardev", "socket,id=" + id + ",path=" + c.ports[i].socket_path, "-device",
                       std::string(i == 0 ? "virtconsole" : "virtserialport") + ",chardev=" + id +
                           ",name=" + c.ports[i].name});
  }
  for (std::size_t i = 0; i < c.shares.size(); ++i) {
    const auto& s = c.shares[i];
    const auto id = "share" + std::to_string(i);
    a.insert(a.end(), {"-fsdev",
                       "local,id=" + id + ",path=" + s.path_on_host + ",security_model=none" +
                           (s.is_read_only ? ",readonly=on" : ""),
                       "-device", "virtio-9p-device,fsdev=" + id + ",mount_tag=" + s.tag});
  }
  return a;
}

std::uint32_t host_tsc_khz() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (!line.starts_with("cpu MHz")) continue;
    const auto colon = line.find(':');
    if (colon == std::string::npos) return 0;
    try {
      return static_cast<std::uint32_t>(std::lround(std::stod(line.substr(colon + 1)) * 1000));
    } catch (const std::exception&) {
      return 0;
    }
  }
  return 0;
}

struct MicrovmDriver::Ids {
  std::mutex mu;
  std::set<std::string> live;
  std::once_flag accel_once;
  std::string accel;  // options.accel, without kvm where KVM does not boot guests
};

namespace {

// Whether KVM boots a guest here. /dev/kvm can be there where a nested hypervisor runs no
// guest: QEMU starts under KVM and the guest hangs before its kernel's first line (seen on
// this project's 2-vCPU CI VMs). The sandbox's kernel is started under KVM alone with no
// root to mount and must print its banner within `within`; QEMU is killed either way.
bool kvm_boots(const MicrovmOptions& o, std::chrono::milliseconds within) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return false;
  process::SpawnOptions so;
  so.argv = {o.qemu,
             "-M",
             "microvm",
             "-accel",
             "kvm",
             "-m",
             "256",
             "-smp",
             "1",
             "-nodefaults",
             "-no-user-config",
             "-display",
             "none",
             "-serial",
             "stdio",
             "-no-reboot",
             "-kernel",
             o.kernel,
             "-append",
             "console=ttyS0 panic=-1"};
  so.stdout_fd = p[1];
  auto child = process::spawn(so);
  ::close(p[1]);
  bool boots = false;
  std::string seen;
  const auto deadline = std::chrono::steady_clock::now() + within;
  while (child && !boots) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd pf{p[0], POLLIN, 0};
    if (left.count() <= 0 || ::poll(&pf, 1, static_cast<int>(left.count())) <= 0) break;
    char buf[4096];
    const auto n = ::read(p[0], buf, sizeof buf);
    if (n <= 0) break;
    seen.append(buf, static_cast<std::size_t>(n));
    boots = seen.find("Linux version") != std::string::npos;
    if (seen.size() > 8192) seen.erase(0, seen.size() - 64);
  }
  ::close(p[0]);
  return boots;  // `child` goes: its group killed and reaped
}

// The accelerators a machine is started with: options.accel, kvm left out when /dev/kvm is
// there but does not boot guests (check() says which).
std::string usable_accel(const MicrovmOptions& o) {
  std::vector<std::string> accels;
  std::istringstream in(o.accel);
  for (std::string a; std::getline(in, a, ':');)
    if (!a.empty()) accels.push_back(a);
  if (std::find(accels.begin(), accels.end(), "kvm") == accels.end() ||
      ::access("/dev/kvm", R_OK | W_OK) != 0 || kvm_boots(o, std::chrono::seconds(3)))
    return o.accel;
  std::string rest;
  for (const auto& a : accels)
    if (a != "kvm") rest += (rest.empty() ? "" : ":") + a;
  if (rest.empty()) rest = "tcg";
  return rest;
}

}  // namespace

namespace {

using detail::failed;
using detail::Vm;

std::string base64(std::string_view in) {
  static constexpr char k[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const unsigned v = static_cast<unsigned char>(in[i]) << 16 |
                       static_cast<unsigned char>(in[i + 1]) << 8 |
                       static_cast<unsigned char>(in[i + 2]);
    out += {k[v >> 18], k[(v >> 12) & 63], k[(v >> 6) & 63], k[v & 63]};
  }
  if (i + 1 == in.size()) {
    const unsigned v = static_cast<unsigned char>(in[i]) << 16;
    out += {k[v >> 18], k[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == in.size()) {
    const unsigned v =
        static_cast<unsigned char>(in[i]) << 16 | static_cast<unsigned char>(in[i + 1]) << 8;
    out += {k[v >> 18], k[(v >> 12) & 63], k[(v >> 6) & 63], '='};
  }
  return out;
}

int listen_at(const std::string& path) {
  sockaddr_un a{};
  if (path.size() >= sizeof a.sun_path) return -1;
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 1) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

class MicrovmProcess final : public Process {
 public:
  MicrovmProcess(std::shared_ptr<Vm> vm, int io, bool terminal)
      : vm_(std::move(vm)), io_(io), terminal_(terminal) {}
  ~MicrovmProcess() override { close(io_); }
  [[nodiscard]] int input() const override { return io_; }
  [[nodiscard]] int output() const override { return io_; }

  Result<void, Error> resize(Terminal size) override {
    if (!terminal_) return Error{Errc::invalid, "the command has no terminal"};
    if (size.rows == 0 || size.cols == 0 || size.rows > 1000 || size.cols > 1000)
      return Error{Errc::invalid, "a terminal's rows and columns are 1-1000"};
    {
      std::lock_guard lock(vm_->mu);
      if (vm_->gone || vm_->destroyed) return Error{Errc::not_running, "the sandbox has ended"};
    }
    vm_->post("size " + std::to_string(size.rows) + " " + std::to_string(size.cols), true);
    return {};
  }

  void signal(int sig) override {
    if (sig > 0 && sig < 65) vm_->post("signal " + std::to_string(sig), false);
  }

  std::optional<Exit> wait_for(std::chrono::milliseconds limit) override {
    std::unique_lock lock(vm_->mu);
    if (exit_) return exit_;
    vm_->cv.wait_for(lock, limit, [&] { return vm_->exit || vm_->gone || vm_->destroyed; });
    const auto memory = vm_->spec.limits.memory_bytes;
    if (vm_->exit) {
      // The guest's shell reports an end by signal N as 128 + N.
      const auto [code, oom] = *vm_->exit;
      const int sig = code > 128 && code < 128 + 65 ? code - 128 : 0;
      exit_ = ended(sig ? 0 : code, sig, oom, false, memory);
    } else if (vm_->destroyed) {
      exit_ = ended(0, SIGKILL, false, true, memory);
    } else if (vm_->gone) {
      // The machine ended without the agent's word: QEMU died or was killed.
      exit_ = ended(0, SIGKILL, false, true, memory);
      exit_->message = "the sandbox's virtual machine ended (" + vm_->why_down() + ")";
    }
    return exit_;
  }

 private:
  std::shared_ptr<Vm> vm_;
  int io_;
  bool terminal_;
  std::optional<Exit> exit_;
};

class MicrovmSandbox final : public Sandbox {
 public:
  explicit MicrovmSandbox(std::shared_ptr<Vm> vm) : vm_(std::move(vm)) {}
  ~MicrovmSandbox() override { destroy(); }
  [[nodiscard]] const std::string& id() const override { return vm_->spec.id; }

  Result<void, Error> prepare() override {
    if (vm_->destroyed) return Error{Errc::not_running, "the sandbox was destroyed"};
    if (vm_->booted) return {};
    vm_->booted = true;
    auto booted = boot();
    if (!booted) vm_->end();
    return booted;
  }

  Result<std::unique_ptr<Process>, Error> start(Terminal size) override {
    if (started_) return Error{Errc::invalid, "the sandbox's command was started already"};
    if (vm_->destroyed) return Error{Errc::not_running, "the sandbox was destroyed"};
    const bool terminal = vm_->spec.terminal;
    if (terminal && (size.rows == 0 || size.cols == 0 || size.rows > 1000 || size.cols > 1000))
      return Error{Errc::invalid, "a terminal's rows and columns are 1-1000"};
    if (auto r = prepare(); !r) return r.error();
    started_ = true;
    const bool sent =
        vm_->send("start " + std::to_string(size.rows) + " " + std::to_string(size.cols));
    std::unique_lock lock(vm_->mu);
    if (!sent || !vm_->wait(lock, vm_->options.reply_timeout, [&] { return vm_->started; }))
      return Error{Errc::not_running,
                   "the sandbox's machine did not start the command (" + vm_->why_down() + ")"};
    int& io = terminal ? vm_->term : vm_->stdio;
    int& other = terminal ? vm_->stdio : vm_->term;
    fcntl(io, F_SETFL, O_NONBLOCK);
    if (other >= 0) close(std::exchange(other, -1));
    return std::unique_ptr<Process>(
        std::make_unique<MicrovmProcess>(vm_, std::exchange(io, -1), terminal));
  }

  Result<std::unique_ptr<Process>, Error> exec(const std::vector<std::string>&, bool,
                                               Terminal) override {
    if (vm_->destroyed) return Error{Errc::not_running, "the sandbox was destroyed"};
    return Error{Errc::unavailable,
                 "the microvm driver runs one command per machine (exec is the oci driver's)"};
  }

  Result<Stats, Error> stats() override {
    std::unique_lock lock(vm_->mu);
    if (vm_->destroyed || vm_->gone || !vm_->ready)
      return Error{Errc::not_running, "the sandbox is not running"};
    vm_->stats.reset();
    lock.unlock();
    if (!vm_->send("stats")) return Error{Errc::not_running, "the sandbox has ended"};
    lock.lock();
    if (!vm_->wait(lock, vm_->options.reply_timeout, [&] { return vm_->stats.has_value(); }))
      return Error{Errc::not_running, "the sandbox did not answer"};
    Stats s;
    std::istringstream in(*vm_->stats);
    std::uint64_t usec = 0;
    in >> s.memory_bytes >> s.pids >> usec;
    s.cpu_ns = usec * 1000;
    s.memory_limit_bytes = vm_->spec.limits.memory_bytes;
    s.pids_limit = vm_->spec.limits.pids;
    return s;
  }

  void destroy() override { vm_->end(); }

 private:
  Result<void, Error> boot() {
    auto& vm = *vm_;
    std::error_code ec;
    fs::create_directories(vm.dir, ec);
    if (ec) return failed("cannot make " + vm.dir + ": " + ec.message());
    fs::permissions(vm.dir, fs::perms::owner_all, ec);
    const auto& o = vm.options;
    const auto& l = vm.spec.limits;
    VmConfig c;
    c.accel = o.accel;
    c.console_log = vm.dir + "/console.log";
    c.machine_config.vcpu_count = static_cast<unsigned>(std::clamp<double>(
        std::ceil(l.cpus), 1, std::max(1u, std::thread::hardware_concurrency())));
    c.machine_config.mem_size_mib =
        (l.memory_bytes + o.guest_overhead_bytes + (1u << 20) - 1) >> 20;
    c.boot_source.kernel_image_path = o.kernel;
    c.boot_source.initrd_path = o.initrd;
    std::string args = "console=ttyS0 quiet pci=off reboot=t panic=-1";
    if (const auto khz = host_tsc_khz()) args += " tsc_early_khz=" + std::to_string(khz);
    args += " kiln.memory=" + std::to_string(l.memory_bytes) +
            " kiln.pids=" + std::to_string(l.pids) + " kiln.disk=" + std::to_string(l.disk_bytes) +
            " kiln.files=" + std::to_string(l.files) +
            " kiln.nofile=" + std::to_string(l.open_files) +
            " kiln.uid=" + std::to_string(vm.spec.uid) + " kiln.gid=" + std::to_string(vm.spec.gid);
    c.boot_source.boot_args = args;
    c.shares.push_back({"usr", o.usr, true});
    const char* names[] = {"kiln.term", "kiln.control", "kiln.stdio"};
    int listeners[3] = {-1, -1, -1};
    const auto close_listeners = [&] {
      for (int& fd : listeners)
        if (fd >= 0) close(std::exchange(fd, -1));
    };
    for (int i = 0; i < 3; ++i) {
      const auto path = vm.dir + "/" + std::to_string(i) + ".sock";
      listeners[i] = listen_at(path);
      if (listeners[i] < 0) {
        close_listeners();
        return failed("cannot listen at " + path + ": " +
                      (path.size() >= sizeof(sockaddr_un::sun_path)
                           ? std::string("longer than a Unix socket's path may be (107 bytes)")
                           : std::string(std::strerror(errno))));
      }
      c.ports.push_back({names[i], path});
    }
    process::SpawnOptions so;
    so.argv = qemu_args(c);
    so.argv.insert(so.argv.begin(), o.qemu);
    const int log =
        ::open((vm.dir + "/qemu.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    so.stdout_fd = so.stderr_fd = log;
    auto qemu = process::spawn(so);
    if (log >= 0) close(log);
    if (!qemu) {
      close_listeners();
      return Error{Errc::unavailable, "cannot run " + o.qemu + ": " + qemu.error().detail};
    }
    vm.qemu = std::move(*qemu);
    // QEMU connects to each port's socket as it starts.
    int* ends[3] = {&vm.term, &vm.control, &vm.stdio};
    const auto deadline = std::chrono::steady_clock::now() + o.reply_timeout;
    for (int i = 0; i < 3; ++i) {
      while (*ends[i] < 0) {
        if (vm.qemu.wait_for(0ms) || std::chrono::steady_clock::now() > deadline) {
          close_listeners();
          return failed("QEMU did not start the machine (" + vm.why_down() + ")");
        }
        pollfd p{listeners[i], POLLIN, 0};
        if (poll(&p, 1, 50) > 0) *ends[i] = ::accept4(listeners[i], nullptr, nullptr, SOCK_CLOEXEC);
      }
    }
    close_listeners();
    for (int i = 0; i < 3; ++i) unlink(c.ports[static_cast<std::size_t>(i)].socket_path.c_str());
    vm.reader = std::thread([&vm] { vm.read_control(); });
    {
      std::unique_lock lock(vm.mu);
      if (!vm.wait(lock, o.boot_timeout, [&] { return vm.ready; }))
        return failed(
            vm.gone ? "the sandbox's machine ended before it booted (" + vm.why_down() + ")"
                    : "the sandbox's machine did not boot in " +
                          std::to_string(o.boot_timeout.count()) + " ms (" + vm.why_down() + ")");
    }
    // The command, readied up to its exec (init.sh's gate): start() only opens the gate.
    bool sent = vm.send("cwd " + base64(vm.spec.cwd));
    for (const auto& [name, value] : vm.spec.env)
      sent = sent && vm.send("env " + base64(name + "=" + value));
    for (const auto& a : vm.spec.args) sent = sent && vm.send("arg " + base64(a));
    sent = sent && vm.send(std::string("prepare ") + (vm.spec.terminal ? "1" : "0"));
    std::unique_lock lock(vm.mu);
    if (!sent || !vm.wait(lock, o.reply_timeout, [&] { return vm.prepared; }))
      return failed("the sandbox's machine did not ready the command (" + vm.why_down() + ")");
    return {};
  }

  std::shared_ptr<Vm> vm_;
  bool started_ = false;
};

}  // namespace

MicrovmDriver::MicrovmDriver(MicrovmOptions options)
    : options_(std::move(options)), ids_(std::make_shared<Ids>()) {}

MicrovmDriver::~MicrovmDriver() = default;

Result<std::unique_ptr<Sandbox>, Error> MicrovmDriver::create(const SandboxSpec& spec) {
  if (auto problem = validate(spec); !problem.empty()) return Error{Errc::invalid, problem};
  if (!spec.mounts.empty())
    return Error{Errc::invalid, "mounts: the microvm driver shows only /usr (use the oci driver)"};
  if (spec.limits.network)
    return Error{Errc::invalid, "limits.network: the microvm driver has no network yet"};
  {
    std::lock_guard lock(ids_->mu);
    if (!ids_->live.insert(spec.id).second)
      return Error{Errc::invalid, "id: a sandbox '" + spec.id + "' exists"};
  }
  auto vm = std::make_shared<Vm>();
  vm->options = options_;
  vm->options.accel = accel();
  vm->spec = spec;
  vm->dir = options_.state_dir + "/" + spec.id;
  vm->release_id = [ids = ids_, id = spec.id] {
    std::lock_guard lock(ids->mu);
    ids->live.erase(id);
  };
  return std::unique_ptr<Sandbox>(std::make_unique<MicrovmSandbox>(std::move(vm)));
}

std::size_t MicrovmDriver::remove_leftovers() {
  std::size_t n = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(options_.state_dir, ec)) {
    std::error_code rm;
    if (e.is_directory(rm) && fs::remove_all(e.path(), rm) > 0) ++n;
  }
  return n;
}

Result<std::string, Error> MicrovmDriver::check() const {
  for (const auto* f : {&options_.kernel, &options_.initrd}) {
    if (f->empty() || !fs::is_regular_file(*f))
      return Error{Errc::unavailable,
                   "no guest image at '" + *f + "' (bash scripts/microvm-image.sh builds one)"};
  }
  // A machine's sockets: <state_dir>/<id of up to 64>/<n>.sock within sun_path.
  if (options_.state_dir.size() + 1 + 64 + 7 >= sizeof(sockaddr_un::sun_path))
    return Error{Errc::unavailable, "the state directory " + options_.state_dir +
                                        " is too long for the machines' sockets (at most " +
                                        std::to_string(sizeof(sockaddr_un::sun_path) - 73) +
                                        " bytes; setting sandbox.state_dir)"};
  std::error_code ec;
  fs::create_directories(options_.state_dir, ec);
  if (ec || access(options_.state_dir.c_str(), W_OK) != 0)
    return Error{Errc::unavailable,
                 "the state directory " + options_.state_dir + " is not writable"};
  auto v = process::run({options_.qemu, "--version"}, 10s);
  if (!v || v->status != 0)
    return Error{Errc::unavailable, options_.qemu +
                                        " does not run (apt-get install qemu-system-x86): " +
                                        (!v                ? v.error().detail
                                         : !v->err.empty() ? v->err
                                                           : process::describe(v->status))};
  auto version = v->out.substr(0, v->out.find('\n'));
  const auto& used = accel();
  if (used != options_.accel)
    version += " (accelerators " + used + ": /dev/kvm is there but does not boot a guest)";
  return version;
}

const std::string& MicrovmDriver::accel() const {
  std::call_once(ids_->accel_once, [&] { ids_->accel = usable_accel(options_); });
  return ids_->accel;
}

}  // namespace kiln::sandbox::microvm
