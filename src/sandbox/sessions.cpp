#include "sandbox/sessions.hpp"

#include "platform/ids.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <thread>

namespace kiln::sandbox {

struct Sessions::Session {
  explicit Session(std::size_t scrollback)
      : ring(scrollback), wake(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~Session() {
    if (wake >= 0) ::close(wake);
  }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  std::string id, owner;
  std::vector<std::string> command;  // empty: the shell
  std::int64_t created_at = 0;
  Clock::time_point opened{}, detached_since{};
  std::unique_ptr<Sandbox> sandbox;
  std::unique_ptr<Process> process;
  std::thread reader;

  std::mutex mu;  // what follows
  Scrollback ring;
  std::map<std::uint64_t, Listener> listeners;
  std::uint64_t next_listener = 0;
  std::optional<Exit> exit;
  Clock::time_point ended_at{};
  bool starting = true;       // counted against the quotas, not yet running
  std::string ended_because;  // why Kiln destroyed it (idle, absolute limit, closed)
  std::string pending_input;  // typed, not yet taken by the terminal: the reader writes it
  int wake = -1;              // an eventfd: input is waiting (the reader polls it)

  SessionInfo info() {
    std::lock_guard lock(mu);
    return SessionInfo{id, owner, command, created_at, !exit, exit, ring.end(), listeners.size()};
  }
};

namespace {

Error not_found() {
  return Error{Errc::not_found, "no such session"};
}

// The session's output into its ring and to its listeners, until the shell's terminal
// closes; then its exit.
void read_output(Sessions::Session& s, const std::function<Sessions::Clock::time_point()>& now) {
  const int fd = s.process->output();
  const int in = s.process->input();
  char chunk[16 * 1024];
  for (;;) {
    bool waiting = false;
    {
      std::lock_guard lock(s.mu);
      waiting = !s.pending_input.empty();
    }
    pollfd p[3] = {{fd, POLLIN, 0},
                   {waiting ? in : -1, POLLOUT, 0},  // -1: not polled
                   {s.wake, POLLIN, 0}};
    const int n = poll(p, 3, 200);
    if (n > 0 && (p[2].revents & POLLIN)) {
      std::uint64_t count = 0;
      (void)!read(s.wake, &count, sizeof count);
    }
    if (n > 0 && (p[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
      std::lock_guard lock(s.mu);  // what the terminal takes now, in order
      const ssize_t wrote = write(in, s.pending_input.data(), s.pending_input.size());
      if (wrote > 0)
        s.pending_input.erase(0, static_cast<std::size_t>(wrote));
      else if (wrote < 0 && errno != EAGAIN && errno != EINTR)
        s.pending_input.clear();
    }
    if (n > 0 && (p[0].revents & (POLLIN | POLLERR | POLLHUP))) {
      const ssize_t got = read(fd, chunk, sizeof chunk);
      if (got > 0) {
        const std::string_view bytes(chunk, static_cast<std::size_t>(got));
        std::lock_guard lock(s.mu);
        const auto offset = s.ring.end();
        s.ring.append(bytes);
        for (auto& [id, l] : s.listeners)
          if (l.output) l.output(offset, bytes);
        continue;
      }
      if (got == 0 || (errno != EAGAIN && errno != EINTR)) break;  // EIO: the pty closed
    } else if (n == 0 && s.process->wait_for(std::chrono::milliseconds(0))) {
      break;  // ended without the terminal closing (nothing more will come)
    }
  }
  auto exit = s.process->wait_for(std::chrono::seconds(30));
  if (!exit) {  // the terminal closed but the shell lives on: it is ended here
    s.sandbox->destroy();
    exit = s.process->wait_for(std::chrono::seconds(30));
  }
  if (!exit) exit = Exit{Exit::Reason::destroyed, 137, 9, "the sandbox was destroyed"};
  std::lock_guard lock(s.mu);
  if (exit->reason == Exit::Reason::destroyed && !s.ended_because.empty())
    exit->message = s.ended_because;
  s.exit = *exit;
  s.ended_at = now();
  for (auto& [id, l] : s.listeners)
    if (l.ended) l.ended(*exit);
  s.listeners.clear();
}

}  // namespace

Sessions::Sessions(Driver& driver, SandboxSpec spec, SessionLimits limits,
                   std::function<Clock::time_point()> now, std::function<std::int64_t()> wall_ms)
    : driver_(driver),
      spec_(std::move(spec)),
      limits_(limits),
      now_(std::move(now)),
      wall_ms_(std::move(wall_ms)) {
  spec_.terminal = true;
  if (limits_.warm > 0) filler_ = std::thread([this] { fill(); });
}

Sessions::~Sessions() {
  {
    std::lock_guard lock(pool_mu_);
    stopping_ = true;
  }
  pool_cv_.notify_all();
  if (filler_.joinable()) filler_.join();
  warm_.clear();  // each destroyed
  std::map<std::string, std::shared_ptr<Session>, std::less<>> all;
  {
    std::lock_guard lock(mu_);
    all.swap(sessions_);
  }
  for (auto& [id, s] : all) end(s, "ended: the node stopped");
}

// Keeps limits_.warm sandboxes prepared: one at a time, outside the lock; after a failure
// (the runtime refused) it waits a second before the next attempt, and says why meanwhile.
void Sessions::fill() {
  std::unique_lock lock(pool_mu_);
  for (;;) {
    pool_cv_.wait(lock, [&] { return stopping_ || warm_.size() < limits_.warm; });
    if (stopping_) return;
    lock.unlock();
    SandboxSpec spec = spec_;
    spec.id = "w" + ids::random_hex(10);
    std::unique_ptr<Sandbox> box;
    std::string error;
    if (auto made = driver_.create(spec); !made) {
      error = made.error().detail;
    } else if (auto ready = (*made)->prepare(); !ready) {
      error = ready.error().detail;
      (*made)->destroy();
    } else {
      box = std::move(*made);
    }
    lock.lock();
    if (box) {
      warm_.push_back(std::move(box));
      warm_error_.clear();
      pool_cv_.notify_all();
    } else {
      warm_error_ = error;
      pool_cv_.wait_for(lock, std::chrono::seconds(1), [&] { return stopping_; });
    }
  }
}

std::unique_ptr<Sandbox> Sessions::take_warm() {
  std::lock_guard lock(pool_mu_);
  if (warm_.empty()) return nullptr;
  auto box = std::move(warm_.back());
  warm_.pop_back();
  pool_cv_.notify_all();  // the filler makes another
  return box;
}

Sessions::Counts Sessions::counts() {
  std::vector<std::shared_ptr<Session>> all;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, s] : sessions_) all.push_back(s);
  }
  Counts c;
  for (const auto& s : all) {
    std::lock_guard lock(s->mu);
    ++(s->exit ? c.ended : c.running);
    c.attached += s->listeners.size();
  }
  c.warm_starts = warm_starts_.load();
  c.cold_starts = cold_starts_.load();
  return c;
}

std::size_t Sessions::warm_ready() {
  std::lock_guard lock(pool_mu_);
  return warm_.size();
}

std::string Sessions::warm_error() {
  std::lock_guard lock(pool_mu_);
  return warm_error_;
}

bool Sessions::wait_warm(std::size_t n, std::chrono::milliseconds limit) {
  std::unique_lock lock(pool_mu_);
  return pool_cv_.wait_for(lock, limit, [&] { return warm_.size() >= n; });
}

Result<SessionInfo, Error> Sessions::open(const std::string& owner, const Opening& what) {
  if (owner.empty()) return Error{Errc::invalid, "a session needs an owner"};
  const auto size = what.size;
  // A command runs under a shell that stays the sandbox's init (PID 1 gets only the signals
  // it handles: a command there would ignore Ctrl-C); the shell passes the arguments on
  // as they are ("$@": nothing parses them) and ends with the command's status.
  std::vector<std::string> command;
  if (!what.command.empty()) {
    command = {"/bin/sh", "-c", "\"$@\"", "kiln-command"};
    command.insert(command.end(), what.command.begin(), what.command.end());
    SandboxSpec check = spec_;  // the spec's rules, before anything counts it
    check.args = command;
    if (auto problem = validate(check); !problem.empty())
      return Error{Errc::invalid, "command: " + problem};
  }
  auto s = std::make_shared<Session>(limits_.scrollback_bytes);
  s->command = what.command;
  s->id = "t" + ids::random_hex(10);
  s->owner = owner;
  s->created_at = wall_ms_ ? wall_ms_() : 0;
  s->opened = s->detached_since = now_();
  {
    std::lock_guard lock(mu_);
    std::size_t mine = 0, running = 0;
    for (auto& [id, other] : sessions_) {
      std::lock_guard l(other->mu);
      if (other->exit) continue;
      ++running;
      if (other->owner == owner) ++mine;
    }
    if (mine >= limits_.per_user)
      return Error{Errc::quota, "at most " + std::to_string(limits_.per_user) +
                                    " running sessions per user: close one first"};
    if (running >= limits_.per_node)
      return Error{Errc::busy, "this node runs its limit of " + std::to_string(limits_.per_node) +
                                   " sessions; try later"};
    sessions_.emplace(s->id, s);
  }
  const auto forget = [&] {
    std::lock_guard lock(mu_);
    sessions_.erase(s->id);
  };
  const auto cold = [&]() -> Result<std::unique_ptr<Process>, Error> {
    SandboxSpec spec = spec_;
    spec.id = s->id;
    if (!command.empty()) spec.args = command;
    KILN_TRY(box, driver_.create(spec));
    s->sandbox = std::move(box);
    return s->sandbox->start(size);
  };
  Result<std::unique_ptr<Process>, Error> process = Error{Errc::failed, ""};
  if (s->command.empty() && (s->sandbox = take_warm())) {
    process = s->sandbox->start(size);
    if (!process) {  // a prepared one that cannot start (its init died): a cold one then
      s->sandbox->destroy();
      process = cold();
      if (process) ++cold_starts_;
    } else {
      ++warm_starts_;
    }
  } else {
    process = cold();
    if (process) ++cold_starts_;
  }
  if (!process) {
    if (s->sandbox) s->sandbox->destroy();
    forget();
    return process.error();
  }
  s->process = std::move(*process);
  {
    std::lock_guard lock(s->mu);
    s->starting = false;
  }
  s->reader = std::thread([s = s.get(), now = now_] { read_output(*s, now); });
  return s->info();
}

std::shared_ptr<Sessions::Session> Sessions::find(const std::string& owner, const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second->owner != owner) return nullptr;
  std::lock_guard l(it->second->mu);
  return it->second->starting ? nullptr : it->second;
}

Result<std::vector<SessionInfo>, Error> Sessions::list(const std::string& owner) {
  std::vector<std::shared_ptr<Session>> mine;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, s] : sessions_)
      if (s->owner == owner) mine.push_back(s);
  }
  std::vector<SessionInfo> out;
  for (auto& s : mine) {
    {
      std::lock_guard l(s->mu);
      if (s->starting) continue;
    }
    out.push_back(s->info());
  }
  return out;
}

Result<SessionInfo, Error> Sessions::get(const std::string& owner, const std::string& id) {
  auto s = find(owner, id);
  if (!s) return not_found();
  return s->info();
}

void Sessions::end(const std::shared_ptr<Session>& s, std::string because) {
  if (!because.empty()) {
    std::lock_guard lock(s->mu);
    if (s->ended_because.empty()) s->ended_because = std::move(because);
  }
  if (s->sandbox) s->sandbox->destroy();
  if (s->reader.joinable() && s->reader.get_id() != std::this_thread::get_id()) s->reader.join();
}

Result<void, Error> Sessions::close(const std::string& owner, const std::string& id) {
  auto s = find(owner, id);
  if (!s) return not_found();
  {
    std::lock_guard lock(mu_);
    sessions_.erase(id);
  }
  end(s, "closed by its owner");
  return {};
}

Result<Sessions::Attached, Error> Sessions::attach(const std::string& owner, const std::string& id,
                                                   std::uint64_t offset, Listener listener) {
  auto s = find(owner, id);
  if (!s) return not_found();
  std::lock_guard lock(s->mu);
  auto backlog = s->ring.read(offset, s->ring.capacity());
  if (!backlog)
    return Error{Errc::invalid, "offset " + std::to_string(offset) + " is past the output's end (" +
                                    std::to_string(s->ring.end()) + ")"};
  Attached a;
  a.backlog = std::move(*backlog);
  a.exit = s->exit;
  if (s->exit) {  // nothing more will come: no listener to keep
    a.handle = std::make_shared<int>(0);
    return a;
  }
  const auto key = s->next_listener++;
  s->listeners.emplace(key, std::move(listener));
  std::weak_ptr<Session> weak = s;
  auto now = now_;
  a.handle = std::shared_ptr<void>(nullptr, [weak, key, now](void*) {
    if (auto s = weak.lock()) {
      std::lock_guard lock(s->mu);
      if (s->listeners.erase(key) && s->listeners.empty()) s->detached_since = now();
    }
  });
  return a;
}

Result<void, Error> Sessions::input(const std::string& owner, const std::string& id,
                                    std::string_view bytes) {
  if (bytes.size() > limits_.max_input_bytes)
    return Error{Errc::invalid, "at most " + std::to_string(limits_.max_input_bytes) +
                                    " bytes of input at a time"};
  auto s = find(owner, id);
  if (!s) return not_found();
  std::lock_guard lock(s->mu);
  if (s->exit) return Error{Errc::not_running, "the session has ended: " + s->exit->message};
  if (s->pending_input.size() + bytes.size() > limits_.input_buffer_bytes)
    return Error{Errc::busy, "input dropped: the program has not read the " +
                                 std::to_string(s->pending_input.size()) +
                                 " bytes typed before it (it reads no input, or slower "
                                 "than it comes)"};
  if (s->pending_input.empty()) {  // straight to the terminal, as much as it takes now
    const ssize_t n = write(s->process->input(), bytes.data(), bytes.size());
    if (n > 0) bytes.remove_prefix(static_cast<std::size_t>(n));
    if (n < 0 && errno != EAGAIN && errno != EINTR)
      return Error{Errc::not_running, "the session's terminal is closed"};
  }
  if (!bytes.empty()) {  // the rest waits for the program; the reader writes it
    s->pending_input.append(bytes);
    const std::uint64_t one = 1;
    (void)!write(s->wake, &one, sizeof one);
  }
  return {};
}

Result<void, Error> Sessions::resize(const std::string& owner, const std::string& id,
                                     Terminal size) {
  auto s = find(owner, id);
  if (!s) return not_found();
  {
    std::lock_guard lock(s->mu);
    if (s->exit) return Error{Errc::not_running, "the session has ended: " + s->exit->message};
  }
  return s->process->resize(size);
}

void Sessions::end_all(const std::string& because) {
  std::vector<std::shared_ptr<Session>> running;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, s] : sessions_) {
      std::lock_guard l(s->mu);
      if (!s->starting && !s->exit) running.push_back(s);
    }
  }
  for (auto& s : running) end(s, because);
}

std::size_t Sessions::sweep() {
  const auto now = now_();
  std::vector<std::pair<std::shared_ptr<Session>, std::string>> ending;
  {
    std::lock_guard lock(mu_);
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      auto& s = it->second;
      std::unique_lock l(s->mu);
      if (s->starting) {
        ++it;
      } else if (s->exit) {
        const bool forget = now - s->ended_at >= limits_.keep_ended;
        l.unlock();
        if (forget) {
          end(s);  // its reader has returned already: joined at once
          it = sessions_.erase(it);
        } else {
          ++it;
        }
      } else {
        const auto seconds = [](auto d) {
          return std::to_string(std::chrono::duration_cast<std::chrono::seconds>(d).count());
        };
        if (s->listeners.empty() && now - s->detached_since >= limits_.idle) {
          ending.emplace_back(s, "ended: no client was attached for " + seconds(limits_.idle) +
                                     " s (sandbox.session_idle_ms)");
        } else if (now - s->opened >= limits_.absolute) {
          ending.emplace_back(s, "ended: sessions last at most " + seconds(limits_.absolute) +
                                     " s (sandbox.session_max_ms)");
        }
        ++it;
      }
    }
  }
  // Destroyed: their readers tell the exit (`destroyed`) and the entries stay keep_ended.
  for (auto& [s, why] : ending) end(s, why);
  return ending.size();
}

}  // namespace kiln::sandbox
