#include "sandbox/sandbox.hpp"

#include <signal.h>
#include <string.h>

#include <string>

namespace kiln::sandbox {

Exit ended(int code, int signal, bool oom, bool destroyed, std::uint64_t memory_bytes) {
  Exit e;
  e.code = signal ? 128 + signal : code;
  e.signal = signal;
  if (destroyed) {
    e.reason = Exit::Reason::destroyed;
    e.message = "the sandbox was destroyed";
  } else if (signal == 0) {
    e.message = "exited with " + std::to_string(code);
  } else if (signal == SIGKILL && oom) {
    e.reason = Exit::Reason::out_of_memory;
    e.message =
        "killed at the sandbox's memory limit (" + std::to_string(memory_bytes >> 20) + " MiB)";
  } else {
    e.reason = Exit::Reason::signaled;
    const char* name = sigabbrev_np(signal);
    e.message = std::string("killed by ") +
                (name ? std::string("SIG") + name : "signal " + std::to_string(signal));
  }
  return e;
}

}  // namespace kiln::sandbox
