// Terminal sessions (issue #20): a user's shell in a sandbox of its own, owned by this
// process (`kiln serve`, later `kiln sandboxd`) and not by any connection: clients attach
// and detach, each output byte has an offset in the session's stream, and a client that
// reattaches with the offset it has read up to gets what followed from the scrollback ring
// (what the ring dropped is counted, never invented). Sessions end when their shell exits,
// when their owner closes them, when no client has been attached for `idle`, or `absolute`
// after they opened; an ended session's scrollback and exit stay `keep_ended` for a late
// reattach. Only the owner sees a session: another user's is not_found, as one that never
// existed. With a warm pool (SessionLimits::warm), sandboxes are prepared ahead and an open
// only starts one. Thread-safe; one reader thread per running session, one for the pool.
#pragma once

#include "sandbox/sandbox.hpp"
#include "sandbox/scrollback.hpp"
#include "sandbox/terminals.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace kiln::sandbox {

struct SessionLimits {
  std::size_t per_user = 4;                           // running sessions of one user
  std::size_t per_node = 64;                          // running sessions here
  std::chrono::milliseconds idle{30 * 60'000};        // none attached this long
  std::chrono::milliseconds absolute{8 * 3'600'000};  // open this long
  std::chrono::milliseconds keep_ended{10 * 60'000};  // scrollback kept after the end
  std::size_t scrollback_bytes = 1 << 20;             // per session
  std::size_t max_input_bytes = 64 * 1024;            // one input() call
  // Input the program has not read yet, kept for it; more is refused (Errc::busy).
  std::size_t input_buffer_bytes = 1 << 20;
  // Sandboxes prepared ahead (Sandbox::prepare: the runtime's setup done, the shell not
  // started): an open takes one and only starts it. 0: every open starts cold. They are
  // not sessions (no quota counts them) but hold a little memory each.
  std::size_t warm = 0;
};

// What an attached client is given, in order, on the session's reader thread: output with
// the offset of its first byte, then the end. Called under the session's lock: post, never
// block.
struct Listener {
  std::function<void(std::uint64_t offset, std::string_view bytes)> output;
  std::function<void(const Exit& exit)> ended;
};

class Sessions final : public TerminalSessions {
 public:
  using Clock = std::chrono::steady_clock;
  // `spec`: the sandbox every session gets (its id is replaced; args: the shell; terminal
  // forced on). `wall_ms`: Unix milliseconds (created_at).
  Sessions(
      Driver& driver, SandboxSpec spec, SessionLimits limits,
      std::function<Clock::time_point()> now = [] { return Clock::now(); },
      std::function<std::int64_t()> wall_ms = {});
  ~Sessions() override;  // every session destroyed
  Sessions(const Sessions&) = delete;
  Sessions& operator=(const Sessions&) = delete;

  // TerminalSessions (terminals.hpp).
  // A shell comes from the warm pool when it holds one; a command always starts cold.
  Result<SessionInfo, Error> open(const std::string& owner, const Opening& what) override;
  Result<std::vector<SessionInfo>, Error> list(const std::string& owner) override;
  Result<SessionInfo, Error> get(const std::string& owner, const std::string& id) override;
  Result<void, Error> close(const std::string& owner, const std::string& id) override;

  struct Attached {
    Scrollback::Read backlog;      // what followed `offset` and the ring still holds
    std::optional<Exit> exit;      // the session has ended: nothing more will come
    std::shared_ptr<void> handle;  // detaches when the last copy is dropped
  };
  // Attaches a client from `offset` (0: everything held). Errc::invalid for an offset past
  // the end (not of this stream). The listener gets only what comes after the backlog.
  Result<Attached, Error> attach(const std::string& owner, const std::string& id,
                                 std::uint64_t offset, Listener listener);
  // Keys typed (at most limits.max_input_bytes; never blocks: what the terminal does not
  // take now waits for the program, up to limits.input_buffer_bytes, then Errc::busy), a
  // new terminal size.
  Result<void, Error> input(const std::string& owner, const std::string& id,
                            std::string_view bytes);
  Result<void, Error> resize(const std::string& owner, const std::string& id, Terminal size);

  // Ends sessions past their idle or absolute limit and forgets ended ones past
  // keep_ended; returns how many it ended. Call it periodically.
  std::size_t sweep();
  // Ends every running session now (`because`: their exit's message); attached clients get
  // the exit. Blocking (each sandbox destroyed): off the event loop.
  void end_all(const std::string& because);
  [[nodiscard]] const SessionLimits& limits() const { return limits_; }
  // Prepared sandboxes ready now, and the last error preparing one (empty: none since the
  // last success).
  [[nodiscard]] std::size_t warm_ready();
  // For metrics: sessions running now (starting included), ended ones still kept, clients
  // attached, and opens since construction by where their sandbox came from.
  struct Counts {
    std::size_t running = 0, ended = 0, attached = 0;
    std::uint64_t warm_starts = 0, cold_starts = 0;
  };
  [[nodiscard]] Counts counts();
  [[nodiscard]] std::string warm_error();
  // Waits until `n` prepared sandboxes are ready, at most `limit`; whether they are.
  bool wait_warm(std::size_t n, std::chrono::milliseconds limit);

  struct Session;

 private:
  std::shared_ptr<Session> find(const std::string& owner, const std::string& id);
  // Destroys its sandbox (`because`: the exit's message) and joins its reader.
  void end(const std::shared_ptr<Session>& s, std::string because = {});

  Driver& driver_;
  SandboxSpec spec_;
  SessionLimits limits_;
  std::function<Clock::time_point()> now_;
  std::function<std::int64_t()> wall_ms_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Session>, std::less<>> sessions_;

  // The warm pool: prepared sandboxes, kept at limits_.warm by the filler thread.
  void fill();
  std::unique_ptr<Sandbox> take_warm();
  std::mutex pool_mu_;
  std::atomic<std::uint64_t> warm_starts_{0}, cold_starts_{0};
  std::condition_variable pool_cv_;
  std::vector<std::unique_ptr<Sandbox>> warm_;
  std::string warm_error_;
  bool stopping_ = false;
  std::thread filler_;
};

}  // namespace kiln::sandbox
