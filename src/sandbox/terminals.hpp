// The terminal sessions port: a user's terminal sessions, wherever they run. Two adapters:
// this process's own (sandbox::Sessions, in `kiln serve` and `kiln sandboxd`) and a sandbox
// host's over its internal HTTP API (sandbox/remote: what `kiln api` and a `kiln serve`
// with sandbox.daemon use). The REST routes (/v1/terminals) speak to this port only.
//
// Every call names the session's owner (a user id): another user's session is not_found,
// as one that never existed. Calls block (a sandbox starts, or a host answers): never on an
// event loop.
#pragma once

#include "sandbox/sandbox.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kiln::sandbox {

// What a session runs: a shell (no command: the host's sandbox.shell, interactive), or a
// command with its arguments (looked up in the sandbox's PATH when not a path), run on a
// terminal as the shell would be; the session ends when it exits.
struct Opening {
  Terminal size;
  std::vector<std::string> command;  // empty: the shell
};

struct SessionInfo {
  std::string id;
  std::string owner;
  std::vector<std::string> command;  // empty: the shell
  std::int64_t created_at = 0;       // Unix ms
  bool running = true;
  std::optional<Exit> exit;  // once ended
  std::uint64_t end = 0;     // the output's end offset (bytes written so far)
  std::size_t attached = 0;  // clients attached now
};

class TerminalSessions {
 public:
  virtual ~TerminalSessions() = default;
  // A new session for `owner`, its shell (or command) started with the terminal at its
  // size. Errors: invalid (a command that breaks the spec's rules), quota (the owner's
  // limit), busy (the host's), failed (the sandbox did not start), unavailable (no host
  // answered).
  virtual Result<SessionInfo, Error> open(const std::string& owner, const Opening& what) = 0;
  // The owner's sessions, running and recently ended.
  virtual Result<std::vector<SessionInfo>, Error> list(const std::string& owner) = 0;
  virtual Result<SessionInfo, Error> get(const std::string& owner, const std::string& id) = 0;
  // Ends it (its sandbox destroyed) and forgets it.
  virtual Result<void, Error> close(const std::string& owner, const std::string& id) = 0;
};

}  // namespace kiln::sandbox
