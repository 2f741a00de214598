// The `oci` sandbox driver: each sandbox is a container run by an OCI runtime (runc, what
// Kubernetes nodes run; Debian's `runc` package). Kiln writes the bundle (config.json from
// config.hpp, an empty root directory owned by the mapped root) and drives the runtime's
// command line: `create` and `start` for the spec's command, `exec --process` for more, `events
// --stats` for stats, `kill` and `delete --force` to end it. Namespaces, cgroups (v1 or v2) and
// seccomp are the runtime's work.
//
// The sandbox's command: prepare() runs `runc create` and `runc start` with the init at a
// gate (a shell waiting on a pipe Kiln holds), start() opens the gate and the init becomes
// the command. runc sends the command's pty over a console socket (or hands the pipes
// through) and exits; the container's init is then this process's child (the driver makes
// the process a child subreaper, PR_SET_CHILD_SUBREAPER), waited for directly: no runc
// process stays beside a running sandbox, and Kiln holds the pty's master itself (resize:
// TIOCSWINSZ on it). More commands (exec) run in the foreground of `runc exec`. An
// out-of-memory kill is told apart from another SIGKILL by the kernel's `oom_kill` count
// in the sandbox's memory cgroup (cgroup.hpp; v1 and v2), read when the init has died.
//
// Needs root (or a user with the uid range and cgroup delegation runc needs rootless; not
// supported here).
#pragma once

#include "sandbox/oci/config.hpp"
#include "sandbox/sandbox.hpp"

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace kiln::sandbox::oci {

struct OciOptions {
  std::string runc = "runc";         // the runtime's binary (looked up in PATH)
  std::string state_root;            // runc --root: its state directory (absolute)
  std::string bundles;               // where bundles are written (absolute; one directory each)
  std::uint32_t uid_base = 100'000;  // host uid of a sandbox's root; 65,536 ids from it
  std::uint32_t gid_base = 100'000;
  std::vector<std::string> system_dirs{"/usr", "/bin", "/lib", "/lib64"};
  // Host paths under /etc shown read-only (those that exist): what programs need, nothing
  // that names the host's users or services. The sandbox's passwd, group, hosts and
  // hostname are its own (config.hpp, etc_files).
  std::vector<std::string> etc_shared = default_etc_shared();
  std::chrono::milliseconds command_timeout{15'000};  // a runtime command that hangs
};

class OciDriver final : public Driver {
 public:
  explicit OciDriver(OciOptions options);
  [[nodiscard]] std::string_view name() const override { return "oci"; }
  Result<std::unique_ptr<Sandbox>, Error> create(const SandboxSpec& spec) override;

  // Whether sandboxes can run here: the runtime's version, or Errc::unavailable saying why
  // not (no runtime, not root, directories not writable).
  [[nodiscard]] Result<std::string, Error> check() const;

  // Containers and bundles left by a process that ended without destroying them (a crash,
  // SIGKILL): killed, deleted, removed. Returns how many containers there were. At start,
  // before any sandbox of this driver's exists.
  std::size_t remove_leftovers();

 private:
  OciOptions options_;
};

}  // namespace kiln::sandbox::oci
