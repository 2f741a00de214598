// The terminals module: terminal sessions in sandboxes (sandbox.*) and the terminal
// WebSocket. Where the sessions live decides what it runs (docs/terminals.md):
// - here (`kiln serve` alone): the sessions, /v1/term on them; the API serves /v1/terminals
//   on them (Node::terminals);
// - on a sandbox host (`kiln sandboxd`): the sessions, served to the cluster on the host's
//   internal API (/internal/v1/...: the service key);
// - elsewhere (sandbox.daemon set: `kiln gateway`, `kiln api`, or `kiln serve`): a client of
//   the host for the API, and /v1/term relayed to the host by a gateway.
#include "app/durability.hpp"
#include "app/modules.hpp"
#include "app/secrets.hpp"
#include "app/settings.hpp"
#include "gateway/terminal.hpp"
#include "platform/codec.hpp"
#include "platform/http_server.hpp"
#include "platform/log.hpp"
#include "platform/thread_pool.hpp"
#include "sandbox/microvm/driver.hpp"
#include "sandbox/oci/driver.hpp"
#include "sandbox/remote/remote.hpp"
#include "sandbox/sessions.hpp"

#include <unistd.h>

#include <algorithm>

namespace kiln::app {
namespace {

sandbox::SandboxSpec shell_spec(const config::Config& cfg) {
  sandbox::SandboxSpec s;
  s.id = "template";
  s.args = {cfg.str("sandbox.shell"), "-l"};
  s.terminal = true;
  s.limits.memory_bytes = static_cast<std::uint64_t>(cfg.integer("sandbox.memory_bytes"));
  s.limits.pids = static_cast<std::uint32_t>(cfg.integer("sandbox.pids"));
  s.limits.cpus = static_cast<double>(cfg.integer("sandbox.cpu_millis")) / 1000.0;
  s.limits.disk_bytes = static_cast<std::uint64_t>(cfg.integer("sandbox.disk_bytes"));
  s.limits.files = static_cast<std::uint32_t>(cfg.integer("sandbox.files"));
  s.limits.network = cfg.boolean("sandbox.network");
  return s;
}

sandbox::SessionLimits session_limits(const config::Config& cfg) {
  sandbox::SessionLimits l;
  l.per_user = static_cast<std::size_t>(cfg.integer("sandbox.sessions_per_user"));
  l.per_node = static_cast<std::size_t>(cfg.integer("sandbox.sessions_per_node"));
  l.idle = std::chrono::milliseconds(cfg.integer("sandbox.session_idle_ms"));
  l.absolute = std::chrono::milliseconds(cfg.integer("sandbox.session_max_ms"));
  l.keep_ended = std::chrono::milliseconds(cfg.integer("sandbox.session_keep_ms"));
  l.scrollback_bytes = static_cast<std::size_t>(cfg.integer("sandbox.scrollback_bytes"));
  l.warm = static_cast<std::size_t>(cfg.integer("sandbox.warm_pool"));
  return l;
}

// One of sandbox.daemon's hosts: a host name or IPv4 address (letters, digits, '.', '-')
// or a bracketed IPv6 address, ':', a port 1-65535; nothing else (no scheme, no path).
std::pair<std::string, std::uint16_t> daemon_address(const std::string& value) {
  const auto refuse = [&]() -> std::pair<std::string, std::uint16_t> {
    throw StartupError(2, "configuration error: setting 'sandbox.daemon': '" + value +
                              "' is not host:port (the sandbox host's http.listen, no scheme "
                              "or path; several: comma-separated)");
  };
  const auto colon = value.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == value.size()) return refuse();
  auto host = value.substr(0, colon);
  const auto port_text = value.substr(colon + 1);
  if (port_text.size() > 5 || port_text.find_first_not_of("0123456789") != std::string::npos)
    return refuse();
  const int port = std::stoi(port_text);
  if (port <= 0 || port > 65535) return refuse();
  if (host.front() == '[' && host.back() == ']' && host.size() > 2) {
    if (host.find_first_not_of("0123456789abcdefABCDEF:.", 1) != host.size() - 1) return refuse();
    host = host.substr(1, host.size() - 2);
  } else if (host.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                    "0123456789.-") != std::string::npos) {
    return refuse();
  }
  return {host, static_cast<std::uint16_t>(port)};
}

// The cluster's service key, which a sandbox host and the nodes that use it share: it must
// be configured (a generated one would be this node's alone).
std::string shared_service_key(const config::Config& cfg, const char* why) {
  auto key = cfg.str("api.service_key");
  if (key.empty())
    throw StartupError(2, std::string("configuration error: ") + why +
                              " needs api.service_key (KILN_API_SERVICE_KEY): the same key on "
                              "the sandbox host and on every node that uses it");
  // The one guard of a host's API, which opens shells as any user.
  if (key.size() < 32)
    throw StartupError(2,
                       "configuration error: setting 'api.service_key' is shorter than 32 "
                       "bytes");
  return key;
}

class TerminalsModule final : public Module {
 public:
  explicit TerminalsModule(Node& node) : node_(node) {
    const auto& cfg = node.cfg;
    host_ = node.role == "sandboxd";
    if (!host_ && !cfg.str("sandbox.daemon").empty()) {
      remote_ = true;
      std::vector<std::string> addresses;
      // Every item a host, each once: a session id carries its host's key (a hash of how
      // the host is written), and users are spread by position in this list.
      const auto raw = cfg.str("sandbox.daemon");
      const auto items = config::split_list(raw);
      if (static_cast<std::size_t>(std::count(raw.begin(), raw.end(), ',')) + 1 != items.size())
        throw StartupError(
            2, "configuration error: setting 'sandbox.daemon' has an empty item: '" + raw + "'");
      for (const auto& a : items) {
        if (std::find(addresses.begin(), addresses.end(), a) != addresses.end())
          throw StartupError(
              2, "configuration error: setting 'sandbox.daemon' names '" + a + "' twice");
        const auto [h, p] = daemon_address(a);
        relay_.hosts.push_back({sandbox::remote::host_key(a), h, p});
        addresses.push_back(a);
      }
      if (addresses.empty())
        throw StartupError(2, "configuration error: setting 'sandbox.daemon' names no host");
      relay_.service_key = shared_service_key(cfg, "sandbox.daemon");
      client_ = std::make_unique<sandbox::remote::Hosts>(
          addresses, relay_.service_key,
          std::chrono::milliseconds(cfg.integer("sandbox.daemon_timeout_ms")));
      node.terminals = client_.get();
      return;
    }
    if (node.role != "serve" && !host_) {
      why_off_ = "no sandbox.daemon is set (terminals run on a sandbox host: kiln sandboxd)";
      node.terminals_off = why_off_;
      return;
    }
    if (host_) service_key_ = shared_service_key(cfg, "kiln sandboxd");
    const auto mode = cfg.str("sandbox.enabled");
    if (mode == "off") {
      if (host_)
        throw StartupError(2,
                           "configuration error: kiln sandboxd runs sandboxes: "
                           "sandbox.enabled cannot be off");
      why_off_ = "sandbox.enabled is off";
      node.terminals_off = why_off_;
      return;
    }
    // The runtime's state and the bundles (or machines): on a path every sandbox's mapped
    // root may traverse (data directories are often 0700), one per data directory.
    std::filesystem::path dir = cfg.str("sandbox.state_dir");
    if (dir.empty())
      dir = std::filesystem::path("/run/kiln") /
            codec::sha256_hex(node.data_dir.lexically_normal().string()).substr(0, 16);
    state_dir_ = dir.string();
    // One node per state directory: another would remove this one's sandboxes as
    // leftovers of a previous run.
    {
      std::error_code ec;
      std::filesystem::create_directories(dir, ec);
      if (!lock_data_dir(dir))
        throw StartupError(1, "the sandbox state directory " + state_dir_ +
                                  " is in use by another kiln (setting sandbox.state_dir)");
    }
    auto spec = shell_spec(cfg);
    if (auto problem = sandbox::validate(spec); !problem.empty())
      throw StartupError(2, "configuration error: sandbox.*: " + problem);
    Result<std::string, sandbox::Error> version = sandbox::Error{sandbox::Errc::unavailable, ""};
    std::size_t left = 0;
    if (cfg.str("sandbox.driver") == "microvm") {
      if (spec.limits.network)
        throw StartupError(2,
                           "configuration error: sandbox.network: the microvm driver has no "
                           "network yet");
      sandbox::microvm::MicrovmOptions o;
      o.qemu = cfg.str("sandbox.qemu");
      const std::filesystem::path image = cfg.str("sandbox.microvm_image");
      o.kernel = (image / "vmlinuz").string();
      o.initrd = (image / "initramfs.gz").string();
      o.state_dir = (dir / "machines").string();
      auto d = std::make_unique<sandbox::microvm::MicrovmDriver>(o);
      version = d->check();
      if (version) left = d->remove_leftovers();
      driver_ = std::move(d);
    } else {
      sandbox::oci::OciOptions o;
      o.runc = cfg.str("sandbox.runc");
      o.state_root = (dir / "runc").string();
      o.bundles = (dir / "bundles").string();
      o.uid_base = static_cast<std::uint32_t>(cfg.integer("sandbox.uid_base"));
      o.gid_base = o.uid_base;
      auto d = std::make_unique<sandbox::oci::OciDriver>(o);
      version = d->check();
      if (version) left = d->remove_leftovers();
      driver_ = std::move(d);
    }
    if (!version) {
      if (mode == "on" || host_)
        throw StartupError(1, "terminals cannot run here: " + version.error().detail +
                                  " (setting sandbox.enabled)");
      why_off_ = version.error().detail;
      node.terminals_off = why_off_;
      log::info("terminals are off", {{"reason", why_off_}});
      driver_.reset();
      return;
    }
    if (left > 0)
      log::warn("terminals: removed sandboxes left by a previous run",
                {{"count", static_cast<std::int64_t>(left)}});
    sessions_ = std::make_unique<sandbox::Sessions>(
        *driver_, std::move(spec), session_limits(cfg),
        [] { return std::chrono::steady_clock::now(); },
        [] {
          return std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::system_clock::now().time_since_epoch())
              .count();
        });
    // Metrics read the sessions when scraped; a scrape after stop() reads zeros.
    scraped_->sessions = sessions_.get();
    const auto count = [g = scraped_](auto field) {
      return [g, field] {
        std::lock_guard lock(g->mu);
        return g->sessions ? static_cast<double>(g->sessions->counts().*field) : 0.0;
      };
    };
    using Counts = sandbox::Sessions::Counts;
    auto& r = node.registry;
    r.callback_gauge("kiln_terminal_sessions", "Terminal sessions running on this node.",
                     count(&Counts::running));
    r.callback_gauge("kiln_terminal_sessions_ended",
                     "Ended terminal sessions whose output and exit are still kept.",
                     count(&Counts::ended));
    r.callback_gauge("kiln_terminal_clients", "Terminal connections attached to sessions here.",
                     count(&Counts::attached));
    r.callback_gauge("kiln_terminal_warm_starts_total",
                     "Sessions started from the warm pool (a prepared sandbox).",
                     count(&Counts::warm_starts), true);
    r.callback_gauge("kiln_terminal_cold_starts_total",
                     "Sessions whose sandbox was made at open (a command, an empty pool).",
                     count(&Counts::cold_starts), true);
    r.callback_gauge("kiln_sandbox_warm_pool_ready", "Prepared sandboxes waiting in the pool.",
                     [g = scraped_] {
                       std::lock_guard lock(g->mu);
                       return g->sessions ? static_cast<double>(g->sessions->warm_ready()) : 0.0;
                     });
    if (host_) {  // the router goes to the server before start()
      routes_ = std::make_unique<ThreadPool>(4, 256);
      sandbox::remote::add_routes(node.router, *sessions_, *routes_, service_key_);
    } else {
      node.terminals = sessions_.get();
    }
    runtime_ = *version;
    // Sweeps (idle and absolute limits) destroy sandboxes: off the event loop.
    sweeper_ = std::make_unique<ThreadPool>(1, 2);
  }

  ~TerminalsModule() override {
    std::lock_guard lock(scraped_->mu);
    scraped_->sessions = nullptr;
  }

  void start(http::Server& server) override {
    // The public endpoint is a gateway's (`kiln serve`, `kiln gateway`); a host serves its
    // sessions to the cluster only.
    const bool faces_users = node_.roles.collab;
    if (!sessions_ && !remote_) {
      if (faces_users) server.add_upgrade("/v1/term", gateway::terminal_unavailable(why_off_));
      return;
    }
    gateway::TerminalOptions t;
    t.hello_timeout = std::chrono::milliseconds(node_.cfg.integer("gateway.hello_timeout_ms"));
    t.max_queue_bytes =
        static_cast<std::size_t>(node_.cfg.integer("sandbox.terminal_max_queue_bytes"));
    t.max_connections_per_user =
        static_cast<std::size_t>(node_.cfg.integer("sandbox.terminal_connections_per_user"));
    if (host_) {
      t.trusted_key = service_key_;
      endpoint_ = std::make_unique<gateway::TerminalEndpoint>(std::move(t), nullptr, *sessions_);
      server.add_upgrade(sandbox::remote::kTermPath, endpoint_->handler());
    } else if (faces_users) {
      t.revocation_check = revocation_check(node_);
      endpoint_ = remote_ ? std::make_unique<gateway::TerminalEndpoint>(
                                std::move(t), *node_.verifier, *node_.runtime, relay_)
                          : std::make_unique<gateway::TerminalEndpoint>(
                                std::move(t), node_.verifier.get(), *sessions_);
      server.add_upgrade("/v1/term", endpoint_->handler());
    }
    // Revoked tokens end their terminal connections too (relayed ones included), as they
    // end collaboration sessions.
    if (endpoint_ && !host_ && node_.access_bus) {
      node_.access_bus->subscribe([e = endpoint_.get()](const collab::AccessChange& c) {
        if (c.kind == collab::AccessChange::Kind::Revoked) e->revoke(c.user);
      });
    }
    if (!sessions_) return;
    node_.every(
        std::chrono::seconds(1), std::chrono::seconds(1),
        [s = sessions_.get(), pool = sweeper_.get(), said = std::make_shared<std::string>()] {
          pool->post([s, said] {
            if (const auto n = s->sweep(); n > 0)
              log::info("terminals: sessions ended by their limits",
                        {{"count", static_cast<std::int64_t>(n)}});
            // The warm pool's failures, once each (opens start cold meanwhile).
            if (auto why = s->warm_error(); why != *said) {
              if (!why.empty())
                log::warn("terminals: the warm pool cannot prepare sandboxes", {{"reason", why}});
              else
                log::info("terminals: the warm pool prepares sandboxes again", {});
              *said = std::move(why);
            }
          });
        });
  }

  // Sessions live in this process: they end with it. Their attached clients get the exit
  // (and close 1000) first; the sandboxes are destroyed off the event loop.
  bool drain(std::chrono::milliseconds, std::function<void()> done) override {
    if (remote_) {  // the sessions go on on their host: clients reattach through another
      if (!endpoint_) return false;
      endpoint_->drain("this gateway is restarting: reattach", std::move(done));
      return true;
    }
    if (!sessions_) return false;
    if (!sweeper_->post([s = sessions_.get(), done] {
          s->end_all("ended: the server stopped");
          done();
        }))
      return false;
    return true;
  }
  void close_all() override {
    if (endpoint_) endpoint_->close_all("the server is stopping");
  }

  void stop(bool) override {
    routes_.reset();
    sweeper_.reset();
    node_.terminals = nullptr;
    if (!sessions_) return;
    {
      std::lock_guard lock(scraped_->mu);
      scraped_->sessions = nullptr;
    }
    sessions_.reset();  // every sandbox destroyed
    std::error_code ec;
    std::filesystem::remove_all(state_dir_, ec);  // empty now: the runtime's state, bundles
  }

  void describe(Landing& landing) override {
    const auto hosts =
        std::string(relay_.hosts.size() == 1 ? "the sandbox host " : "the sandbox hosts ") +
        node_.cfg.str("sandbox.daemon");
    if (remote_ && !node_.roles.collab)  // kiln api: the REST routes only
      landing.terminals = "/v1/terminals on " + hosts + " (/v1/term is a gateway's)";
    else if (remote_)
      landing.terminals = "on " + hosts;
    else if (host_)
      landing.terminals =
          "for the cluster on /internal/v1 (the service key; nodes name this "
          "host in sandbox.daemon): " +
          runtime_ + ", state in " + state_dir_;
    else
      landing.terminals = sessions_ ? "on (" + runtime_ + ", warm pool " +
                                          std::to_string(sessions_->limits().warm) + ", state in " +
                                          state_dir_ + ")"
                                    : "off: " + why_off_;
  }

 private:
  Node& node_;
  bool host_ = false;    // kiln sandboxd: the sessions, for the cluster
  bool remote_ = false;  // sandbox.daemon: the sessions are a host's
  std::string service_key_;
  gateway::TerminalRelay relay_;
  std::unique_ptr<sandbox::remote::Hosts> client_;
  std::unique_ptr<ThreadPool> routes_;  // the host's API calls (they start sandboxes)
  std::unique_ptr<sandbox::Driver> driver_;
  std::unique_ptr<sandbox::Sessions> sessions_;  // after the driver: destroyed before it
  struct Scraped {
    std::mutex mu;
    sandbox::Sessions* sessions = nullptr;
  };
  std::shared_ptr<Scraped> scraped_ = std::make_shared<Scraped>();
  std::unique_ptr<ThreadPool> sweeper_;
  std::unique_ptr<gateway::TerminalEndpoint> endpoint_;
  std::string runtime_, why_off_, state_dir_;
};

}  // namespace

std::unique_ptr<Module> make_terminals(Node& node) {
  return std::make_unique<TerminalsModule>(node);
}

void add_sandbox_settings(config::Schema& s) {
  using namespace setting;
  constexpr std::int64_t kMiB = 1 << 20;
  s.add(choice(
      "sandbox.enabled", "auto", {"auto", "on", "off"},
      "Terminal sessions in sandboxes (`kiln serve`: /v1/terminals, /v1/term). `auto`: "
      "on when this process is root and the driver's runtime runs, else off (said at start); "
      "`on`: a start that cannot run them fails."));
  s.add(choice("sandbox.driver", "oci", {"oci", "microvm"},
               "What a sandbox is: `oci`, a container run by runc (starts in ~5 ms warm, ~120 "
               "ms cold); `microvm`, a virtual machine of its own (QEMU's microvm; KVM where it "
               "boots a guest, else emulated: seconds to boot, kept warm by sandbox.warm_pool) "
               "booting sandbox.microvm_image. microvm has no network (sandbox.network)."));
  s.add(text("sandbox.runc", "runc", "The OCI runtime's binary (sandbox.driver oci).",
             /*allow_empty=*/false));
  s.add(text("sandbox.qemu", "qemu-system-x86_64",
             "QEMU's binary (sandbox.driver microvm; Debian's qemu-system-x86).",
             /*allow_empty=*/false));
  s.add(text("sandbox.microvm_image", "build/microvm-image",
             "The directory with the guest's vmlinuz and initramfs.gz (sandbox.driver "
             "microvm), which `bash scripts/microvm-image.sh DIR` builds from Debian's "
             "packages; relative to the working directory.",
             /*allow_empty=*/false));
  s.add(integer("sandbox.daemon_timeout_ms", 10'000, 100, 600'000,
                "How long a node waits for a sandbox host at each step of a call (connect, "
                "send, answer); a host that does not answer is then not asked again for 5 s "
                "(calls answer 503 at once)."));
  s.add(text("sandbox.daemon", "",
             "host:port of each sandbox host (`kiln sandboxd`'s http.listen; a comma-separated "
             "list) whose terminal sessions this node serves: the API's /v1/terminals call "
             "them and a gateway relays /v1/term to them, so sessions outlive gateway restarts. "
             "A user's sessions go to one host (by a hash of the user; the next when it is down "
             "or full). Every node must name the same hosts the same way. Needs "
             "api.service_key, the same as the hosts'. Empty: `kiln serve` runs sessions "
             "itself; `kiln gateway` and `kiln api` have none."));
  s.add(text("sandbox.state_dir", "",
             "Where the runtime's state and the sandboxes' bundles go: a directory every "
             "sandbox's root (sandbox.uid_base) may traverse. Empty: /run/kiln/<a hash of "
             "data.dir>. Sandboxes left there by a previous run are removed at start."));
  s.add(text("sandbox.shell", "/bin/bash",
             "The shell a terminal session runs (with -l), as a path inside the sandbox.",
             /*allow_empty=*/false));
  s.add(integer("sandbox.memory_bytes", 512 * kMiB, 16 * kMiB, 64LL << 30,
                "A session's memory limit (cgroup; no extra swap): past it the kernel kills."));
  s.add(integer("sandbox.pids", 256, 1, 65'536, "Processes and threads a session may have."));
  s.add(integer("sandbox.cpu_millis", 1'000, 10, 64'000,
                "CPU a session may use, in thousandths of a core (cgroup quota)."));
  s.add(integer("sandbox.disk_bytes", 256 * kMiB, kMiB, 1LL << 40,
                "The size of a session's writable /work; /tmp gets a quarter of it. Both are "
                "tmpfs and count against sandbox.memory_bytes: 1.25 x this + 32 MiB must fit "
                "in it (a full /work is then `No space left on device`, never a kill)."));
  s.add(integer("sandbox.files", 65'536, 16, 10'000'000,
                "Files a session may create in /work, and in /tmp (tmpfs inodes)."));
  s.add(flag("sandbox.network", false,
             "Whether sessions reach the network (the host's); off: loopback only."));
  s.add(integer("sandbox.uid_base", 100'000, 1'000, 4'000'000'000LL,
                "Host uid (and gid) of a sandbox's root; 65,536 ids from it are the "
                "sandboxes'."));
  s.add(integer("sandbox.sessions_per_user", 4, 1, 1'000,
                "Running terminal sessions per user; beyond it 409 too-many-sessions."));
  s.add(integer("sandbox.sessions_per_node", 64, 1, 100'000,
                "Running terminal sessions on this node; beyond it 503 with Retry-After."));
  s.add(integer("sandbox.session_idle_ms", 30 * 60'000, 1'000, 7 * 86'400'000LL,
                "A session with no client attached this long is ended."));
  s.add(integer("sandbox.session_max_ms", 8 * 3'600'000, 1'000, 30 * 86'400'000LL,
                "A session is ended this long after it opened, attached or not."));
  s.add(integer("sandbox.session_keep_ms", 10 * 60'000, 0, 86'400'000,
                "An ended session's output and exit stay readable this long."));
  s.add(integer("sandbox.terminal_max_queue_bytes", 4 * kMiB, 64 * 1024, 256 * kMiB,
                "Output queued for one terminal connection that does not read it fast enough; "
                "past it the connection is closed (1008) and the client reattaches from the "
                "offset it read (the scrollback has the rest, or says what it dropped)."));
  s.add(integer("sandbox.warm_pool", 2, 0, 1'000,
                "Sandboxes kept prepared (created by the runtime, the shell not started) so that "
                "a new session only starts one (~10 ms instead of ~100 ms). Not counted as "
                "sessions; each holds the runtime's waiting init process. 0: every session "
                "starts cold."));
  s.add(integer("sandbox.terminal_connections_per_user", 16, 1, 10'000,
                "Terminal connections (/v1/term) one user may have attached at once on a node "
                "(each may hold sandbox.terminal_max_queue_bytes); past it the connection is "
                "closed 4029."));
  s.add(integer("sandbox.scrollback_bytes", 1 * kMiB, 4'096, 256 * kMiB,
                "Output a session keeps for clients that reattach (a ring: the oldest goes)."));
}

}  // namespace kiln::app
