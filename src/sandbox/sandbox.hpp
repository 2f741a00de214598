// The Sandbox port (issue #20): somewhere to run a user's code that can harm only itself. A
// Driver makes sandboxes from checked specs (spec.hpp); a Sandbox runs its spec's command
// once (start) and more commands beside it (exec), each a Process with pipes or a pty.
// Drivers: oci/ (runc, the default) and microvm/ (QEMU, later); both pass
// conformance.hpp. Blocking calls: the caller (sandboxd) runs them off its event loop.
#pragma once

#include "platform/result.hpp"
#include "sandbox/spec.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::sandbox {

enum class Errc {
  invalid,      // the spec or request breaks a rule (detail: which)
  unavailable,  // the runtime is missing or cannot run sandboxes here (detail: why)
  not_running,  // the sandbox has ended or was destroyed
  failed,       // the runtime refused (detail: its words)
  not_found,    // no such session of this user (sessions.hpp; another user's is not told)
  quota,        // the user's limit of running sessions is reached
  busy,         // this node runs as many sessions as it may: try later (or another node)
};
using Error = ErrorOf<Errc>;

// How a process ended, in a user's words.
struct Exit {
  enum class Reason {
    exited,         // returned or called exit: `code`
    signaled,       // a signal ended it (`signal`), sent by someone inside or by signal()
    out_of_memory,  // the kernel killed it at the memory limit
    destroyed,      // the sandbox was destroyed while it ran
  };
  Reason reason = Reason::exited;
  int code = 0;         // exit code; 128 + signal when a signal ended it
  int signal = 0;       // the signal, 0 when it exited
  std::string message;  // "exited with 0", "killed at the memory limit (64 MiB)", ...
};

// The reason's name on the wire (REST `exit.reason`, kiln.term.v1 `exit`).
constexpr const char* to_string(Exit::Reason r) {
  switch (r) {
    case Exit::Reason::exited:
      return "exited";
    case Exit::Reason::signaled:
      return "signaled";
    case Exit::Reason::out_of_memory:
      return "out_of_memory";
    case Exit::Reason::destroyed:
      return "destroyed";
  }
  return "exited";
}

// How a process ended, in words, for every driver: `signal` 0 when it exited with `code`;
// `oom`: the SIGKILL was the kernel's at the sandbox's memory limit (`memory_bytes`);
// `destroyed`: its sandbox was destroyed while it ran (wins over the rest).
Exit ended(int code, int signal, bool oom, bool destroyed, std::uint64_t memory_bytes);

// What the sandbox uses now, read from its runtime.
struct Stats {
  std::uint64_t memory_bytes = 0;        // cgroup memory usage (page cache included)
  std::uint64_t memory_limit_bytes = 0;  // the limit applied
  std::uint64_t pids = 0;                // processes and threads
  std::uint64_t pids_limit = 0;
  std::uint64_t cpu_ns = 0;  // CPU time used since it started, nanoseconds
};

struct Terminal {
  std::uint16_t rows = 24, cols = 80;
};

class Process {
 public:
  virtual ~Process() = default;
  // Where its input goes and its output comes from: with a terminal both are the pty's
  // master (read: output, write: input); otherwise a pipe to stdin and one pipe carrying
  // stdout and stderr together. Owned by the Process; non-blocking.
  [[nodiscard]] virtual int input() const = 0;
  [[nodiscard]] virtual int output() const = 0;
  // The terminal's size (Errc::invalid without one).
  virtual Result<void, Error> resize(Terminal size) = 0;
  // Sends a signal to the process (SIGINT, SIGTERM, SIGKILL...).
  virtual void signal(int sig) = 0;
  // How it ended; nullopt if it still runs after `limit`. Asked again: the same answer.
  virtual std::optional<Exit> wait_for(std::chrono::milliseconds limit) = 0;
};

class Sandbox {
 public:
  virtual ~Sandbox() = default;  // destroys it
  [[nodiscard]] virtual const std::string& id() const = 0;
  // Does now what start() would do before the command runs (the runtime's setup: for oci,
  // namespaces, cgroups, mounts and seccomp), so that start() only lets it run: a warm
  // pool prepares sandboxes ahead of the sessions that take them. Optional (start()
  // prepares when it was not); again: nothing. Errors as start()'s.
  virtual Result<void, Error> prepare() { return {}; }
  // Runs the spec's command (once; Errc::invalid after): the sandbox lives while it runs.
  virtual Result<std::unique_ptr<Process>, Error> start(Terminal size = {}) = 0;
  // Runs another command in the running sandbox (its limits, files, namespaces).
  virtual Result<std::unique_ptr<Process>, Error> exec(const std::vector<std::string>& args,
                                                       bool terminal, Terminal size = {}) = 0;
  virtual Result<Stats, Error> stats() = 0;
  // Kills everything in it and removes what it held on the host (its work directory
  // included). Idempotent; processes still held then report Exit::Reason::destroyed.
  virtual void destroy() = 0;
};

class Driver {
 public:
  virtual ~Driver() = default;
  [[nodiscard]] virtual std::string_view name() const = 0;
  // A sandbox for `spec` (validate() is applied: Errc::invalid with its words), not yet
  // running. Errc::invalid too when a sandbox with the same id exists on this driver.
  virtual Result<std::unique_ptr<Sandbox>, Error> create(const SandboxSpec& spec) = 0;
};

}  // namespace kiln::sandbox
