// Child processes: start one with chosen descriptors, signal it, wait for it with a time
// limit; or run one to its end capturing its output. POSIX fork/exec (vfork semantics are
// not relied on): between fork and exec the child calls only async-signal-safe functions,
// so this is safe from a process with threads. No Asio: callers that need the output as it
// comes poll the descriptors they passed.
#pragma once

#include "platform/result.hpp"

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::process {

enum class Errc {
  spawn,      // fork, pipe or exec failed (detail: the call and errno's words)
  timed_out,  // run(): the time limit passed; the process (group) was killed
};
using Error = ErrorOf<Errc>;

struct SpawnOptions {
  // argv[0]: an absolute path, or a name looked up in PATH. At least one element.
  std::vector<std::string> argv;
  // Descriptors the child gets as 0, 1, 2; -1: /dev/null. The caller keeps (and closes)
  // its copies; every other descriptor of the parent is closed in the child (O_CLOEXEC is
  // not relied on: descriptors opened by libraries without it do not leak).
  int stdin_fd = -1;
  int stdout_fd = -1;
  int stderr_fd = -1;
  bool new_process_group = true;  // signal_group() reaches its descendants
  bool die_with_parent = true;    // PR_SET_PDEATHSIG SIGKILL: never outlives the caller
  // Sets the pty in stdin_fd as the child's controlling terminal (a new session).
  bool controlling_terminal = false;
  // A descriptor the child gets as 3 as well (-1: none), such as one `runc create
  // --preserve-fds 1` hands on to the container.
  int pass_fd = -1;
};

// A started process. Move-only; destroying one that has not been waited for kills its
// group with SIGKILL and reaps it (no zombie, nothing left running).
class Child {
 public:
  Child() = default;
  explicit Child(pid_t pid, bool group) : pid_(pid), group_(group) {}
  Child(Child&& o) noexcept;
  Child& operator=(Child&& o) noexcept;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child();

  [[nodiscard]] pid_t pid() const { return pid_; }
  // Sends `sig` to the process (and, when it leads a group, to the whole group).
  void signal(int sig) const;
  // The wait status (as waitpid's) once it has ended; nullopt if still running after
  // `limit` (0: do not wait). Polls at 1-10 ms; a reaped child answers the same again.
  std::optional<int> wait_for(std::chrono::milliseconds limit);
  int wait();  // blocks until it ends

 private:
  pid_t pid_ = -1;
  bool group_ = false;
  std::optional<int> status_;
};

Result<Child, Error> spawn(const SpawnOptions& options);

struct Output {
  int status = 0;   // wait status
  std::string out;  // stdout, at most max_output bytes (the rest read and dropped)
  std::string err;  // stderr, likewise
};

// Runs argv to its end: `input` written to its stdin, stdout and stderr captured. Past
// `limit`, its group is killed with SIGKILL and Errc::timed_out returned.
Result<Output, Error> run(const std::vector<std::string>& argv, std::chrono::milliseconds limit,
                          std::string_view input = {}, std::size_t max_output = 1 << 20);

// A wait status in words: "exited with 0", "killed by SIGKILL".
std::string describe(int status);

}  // namespace kiln::process
