// kiln-sandbox-bench: a sandbox driver's costs (issue #20), as ratios where a peer exists in
// the same run. --driver oci (default) or microvm (--image: scripts/microvm-image.sh's
// directory; QEMU machines, under TCG where KVM does not boot guests: say so with the figures).
//   start   until the command's first output byte: cold (create + start, nothing prepared)
//           and warm (start of a sandbox prepared ahead, as the warm pool holds them)
//   echo    a byte written to a terminal session until its echo is read back, against the
//           same through a host pty with no sandbox (the peer)
//   idle    host memory per idle session: the RSS of the processes Kiln keeps per session
//           (oci: none is expected, runc exits once the sandbox runs; microvm: its QEMU) and
//           the sandbox's own cgroup usage; per prepared sandbox in a warm pool: oci, its init
//           waiting at the gate (a shell); microvm, its booted machine
//   attack  a neighbour terminal's echo while another sandbox runs a CPU spin, a fork bomb, a
//           memory hog and a pty flood, against the same neighbour's echo with nothing else
//           running (the goal: p99 within 2x)
// Needs root and runc, or QEMU (as the drivers do). Output: one JSON object.
#include "sandbox/microvm/driver.hpp"
#include "sandbox/oci/driver.hpp"

#include <CLI/CLI.hpp>
#include <boost/json.hpp>

#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

namespace sb = kiln::sandbox;
namespace json = boost::json;
using Clock = std::chrono::steady_clock;

namespace {

double ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

json::object summary(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const auto at = [&](double q) {
    return v.empty() ? 0.0 : v[std::min(v.size() - 1, static_cast<std::size_t>(q * v.size()))];
  };
  return {{"n", v.size()},
          {"p50_ms", at(0.5)},
          {"p99_ms", at(0.99)},
          {"max_ms", v.empty() ? 0.0 : v.back()}};
}

bool read_byte(int fd, char want, std::chrono::milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char c[256];
    const ssize_t n = read(fd, c, sizeof c);
    if (n <= 0 && errno != EAGAIN) return false;
    for (ssize_t i = 0; i < n; ++i)
      if (c[i] == want) return true;
  }
}

// Echo round trips through a terminal: one byte out, the same byte back.
std::vector<double> echo(int in, int out, int rounds) {
  std::vector<double> v;
  for (int i = 0; i < rounds; ++i) {
    const char c = static_cast<char>('a' + i % 26);
    const auto t0 = Clock::now();
    if (write(in, &c, 1) != 1 || !read_byte(out, c, std::chrono::seconds(10))) break;
    v.push_back(ms(Clock::now() - t0));
  }
  return v;
}

std::uint64_t rss_bytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  while (in >> key) {
    if (key == "VmRSS:") {
      std::uint64_t kb = 0;
      in >> kb;
      return kb * 1024;
    }
    std::getline(in, key);
  }
  return 0;
}

// Kiln's children whose command name is `comm` ("runc": any runc left running; "sh": a prepared
// container's init, waiting at the gate; "qemu-system-x86": a machine): their RSS.
std::uint64_t children_rss(const std::string& comm) {
  std::uint64_t total = 0;
  const auto me = std::to_string(getpid());
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const auto name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(e.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    const auto close = line.rfind(')');
    const auto comm_of = line.substr(line.find('(') + 1, close - line.find('(') - 1);
    std::istringstream rest(line.substr(close + 2));
    std::string state, ppid;
    rest >> state >> ppid;
    if (ppid == me && comm_of == comm) total += rss_bytes(std::stoi(name));
  }
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kiln-sandbox-bench: a sandbox driver's start, echo and idle costs"};
  int starts = 30, rounds = 300, idle = 10;
  double abuser_cpus = 1.0;
  std::string dir = "/tmp/kiln-sandbox-bench", which = "oci", image = "build/microvm-image";
  app.add_option("--driver", which, "oci or microvm")->check(CLI::IsMember({"oci", "microvm"}));
  app.add_option("--image", image, "microvm: the guest image's directory");
  app.add_option("--starts", starts, "cold starts measured");
  app.add_option("--rounds", rounds, "echo round trips per terminal");
  app.add_option("--idle", idle, "idle sessions for the memory figure");
  app.add_option("--abuser-cpus", abuser_cpus, "the CPU limit of each abuser (cores)");
  app.add_option("--dir", dir, "state and bundle directory (removed at the end)");
  CLI11_PARSE(app, argc, argv);

  std::unique_ptr<sb::Driver> driver_owner;
  kiln::Result<std::string, sb::Error> version = sb::Error{sb::Errc::unavailable, ""};
  // What a running and a prepared session keep on the host, by command name.
  std::string running_comm = "runc", prepared_comm = "sh";
  if (which == "microvm") {
    sb::microvm::MicrovmOptions o;
    o.kernel = image + "/vmlinuz";
    o.initrd = image + "/initramfs.gz";
    o.state_dir = dir + "/machines";
    auto d = std::make_unique<sb::microvm::MicrovmDriver>(o);
    version = d->check();
    driver_owner = std::move(d);
    running_comm = prepared_comm = "qemu-system-x86";
  } else {
    sb::oci::OciOptions o;
    o.state_root = dir + "/runc";
    o.bundles = dir + "/bundles";
    auto d = std::make_unique<sb::oci::OciDriver>(o);
    version = d->check();
    driver_owner = std::move(d);
  }
  auto& driver = *driver_owner;
  if (!version) {
    std::cerr << version.error().detail << "\n";
    return 2;
  }
  int n = 0;
  const auto spec = [&](std::vector<std::string> args) {
    sb::SandboxSpec s;
    s.id = "bench-" + std::to_string(getpid()) + "-" + std::to_string(++n);
    s.args = std::move(args);
    return s;
  };

  std::vector<double> cold;
  for (int i = 0; i < starts; ++i) {
    const auto t0 = Clock::now();
    auto box = driver.create(spec({"/bin/echo", "x"}));
    if (!box) return std::cerr << box.error().detail << "\n", 1;
    auto p = (*box)->start();
    if (!p) return std::cerr << p.error().detail << "\n", 1;
    if (!read_byte((*p)->output(), 'x', std::chrono::seconds(30))) return 1;
    cold.push_back(ms(Clock::now() - t0));
    (*p)->wait_for(std::chrono::seconds(30));
  }
  std::vector<double> warm;
  for (int i = 0; i < starts; ++i) {
    auto box = driver.create(spec({"/bin/echo", "x"}));
    if (!box) return std::cerr << box.error().detail << "\n", 1;
    if (auto r = (*box)->prepare(); !r) return std::cerr << r.error().detail << "\n", 1;
    const auto t0 = Clock::now();
    auto p = (*box)->start();
    if (!p) return std::cerr << p.error().detail << "\n", 1;
    if (!read_byte((*p)->output(), 'x', std::chrono::seconds(30))) return 1;
    warm.push_back(ms(Clock::now() - t0));
    (*p)->wait_for(std::chrono::seconds(30));
  }

  // Echo: a shell-less cat on a terminal, in a sandbox and on a host pty.
  auto term = spec({"/bin/cat"});
  term.terminal = true;
  auto box = driver.create(term);
  if (!box) return 1;
  auto cat = (*box)->start();
  if (!cat) return 1;
  auto in_sandbox = echo((*cat)->input(), (*cat)->output(), rounds);
  int master = -1, slave = -1;
  openpty(&master, &slave, nullptr, nullptr, nullptr);
  const pid_t host_cat = fork();
  if (host_cat == 0) {
    setsid();
    dup2(slave, 0), dup2(slave, 1), dup2(slave, 2);
    execl("/bin/cat", "cat", nullptr);
    _exit(127);
  }
  close(slave);
  auto on_host = echo(master, master, rounds);
  kill(host_cat, SIGKILL);
  waitpid(host_cat, nullptr, 0);
  close(master);
  // The neighbour under attack: the same echo, while one abuser at a time runs next to it.
  json::object attack;
  const std::vector<std::pair<std::string, std::vector<std::string>>> abusers{
      {"cpu_spin", {"/bin/sh", "-c", "while :; do :; done"}},
      {"fork_bomb",
       {"/bin/sh", "-c", "while :; do sh -c 'while :; do sleep 300 & done' 2>/dev/null; done"}},
      {"memory_hog", {"/bin/sh", "-c", "while :; do tail /dev/zero; done"}},
      {"pty_flood", {"/usr/bin/yes", "kiln-flood"}}};
  attack["abuser_cpus"] = abuser_cpus;
  for (const auto& [name, args] : abusers) {
    // Idle measured right before each abuser: one noisy idle figure does not skew every ratio.
    const auto idle_p99 =
        summary(echo((*cat)->input(), (*cat)->output(), rounds)).at("p99_ms").as_double();
    auto a = spec(args);
    a.terminal = name == "pty_flood";  // its output is read by nobody: the pty fills
    a.limits.memory_bytes = 64ull << 20;
    a.limits.disk_bytes = 16ull << 20;
    a.limits.pids = 64;
    a.limits.cpus = abuser_cpus;
    auto abuser = driver.create(a);
    if (!abuser) return std::cerr << abuser.error().detail << "\n", 1;
    auto run = (*abuser)->start();
    if (!run) return std::cerr << run.error().detail << "\n", 1;
    // Let the abuse start: its processes show in its stats (polled).
    for (int i = 0; i < 200; ++i) {
      auto st = (*abuser)->stats();
      if (st && (st->pids > 1 || st->cpu_ns > 50'000'000)) break;
      usleep(10'000);
    }
    auto under = summary(echo((*cat)->input(), (*cat)->output(), rounds));
    under["idle_p99_ms"] = idle_p99;
    under["p99_over_idle"] = under.at("p99_ms").as_double() / std::max(1e-9, idle_p99);
    attack[name] = under;
    (*abuser)->destroy();
  }
  cat->reset();
  box->reset();

  // Idle sessions: what each keeps on the host.
  std::vector<std::unique_ptr<sb::Sandbox>> boxes;
  std::vector<std::unique_ptr<sb::Process>> procs;
  const auto before = children_rss(running_comm);
  std::uint64_t cgroup = 0;
  for (int i = 0; i < idle; ++i) {
    auto t = spec({"/bin/sh"});
    t.terminal = true;
    auto b = driver.create(t);
    if (!b) return 1;
    auto p = (*b)->start();
    if (!p) return 1;
    boxes.push_back(std::move(*b));
    procs.push_back(std::move(*p));
  }
  for (auto& b : boxes) {
    if (auto s = b->stats()) cgroup += s->memory_bytes;
  }
  const auto host = children_rss(running_comm) - before;
  procs.clear();
  boxes.clear();
  // Prepared sandboxes, as a warm pool keeps them.
  const auto before_prepared = children_rss(prepared_comm);
  for (int i = 0; i < idle; ++i) {
    auto t = spec({"/bin/sh"});
    t.terminal = true;
    auto b = driver.create(t);
    if (!b || !(*b)->prepare()) return 1;
    boxes.push_back(std::move(*b));
  }
  const auto prepared = children_rss(prepared_comm) - before_prepared;
  boxes.clear();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);

  const auto e_sb = summary(in_sandbox), e_host = summary(on_host);
  json::object out{{"driver", which},
                   {"runtime", *version},
                   {"cold_start", summary(cold)},
                   {"warm_start", summary(warm)},
                   {"echo_sandbox", e_sb},
                   {"echo_host_pty", e_host},
                   {"echo_p50_ratio", e_sb.at("p50_ms").as_double() /
                                          std::max(1e-9, e_host.at("p50_ms").as_double())},
                   {"idle_sessions", idle},
                   {"idle_host_rss_bytes_per_session", host / std::max(1, idle)},
                   {"idle_cgroup_bytes_per_session", cgroup / std::max(1, idle)},
                   {"prepared_host_rss_bytes_each", prepared / std::max(1, idle)},
                   {"neighbour_under_attack", attack}};
  std::cout << json::serialize(out) << "\n";
  return 0;
}
