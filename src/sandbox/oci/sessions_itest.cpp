// Terminal sessions on real sandboxes (the oci driver): offsets, reattach, owners, quotas,
// ends. The clock of idle and absolute limits is the test's.
#include "platform/process.hpp"
#include "sandbox/oci/driver.hpp"
#include "sandbox/sessions.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <sstream>
#include <thread>

namespace kiln::sandbox {
namespace {

using namespace std::chrono_literals;

// What a listener got, with a wait on a condition.
struct Seen {
  std::mutex mu;
  std::condition_variable cv;
  std::string bytes;
  std::uint64_t next = 0;  // the offset the next output must have
  bool gap = false;
  std::optional<Exit> exit;
  Listener listener(std::uint64_t from) {
    next = from;
    return Listener{[this](std::uint64_t offset, std::string_view b) {
                      std::lock_guard l(mu);
                      if (offset != next) gap = true;
                      next = offset + b.size();
                      bytes.append(b);
                      cv.notify_all();
                    },
                    [this](const Exit& e) {
                      std::lock_guard l(mu);
                      exit = e;
                      cv.notify_all();
                    }};
  }
  bool wait_for(const std::string& needle, std::chrono::milliseconds limit = 20s) {
    std::unique_lock l(mu);
    return cv.wait_for(l, limit, [&] { return bytes.find(needle) != std::string::npos; });
  }
  bool wait_exit(std::chrono::milliseconds limit = 20s) {
    std::unique_lock l(mu);
    return cv.wait_for(l, limit, [&] { return exit.has_value(); });
  }
};

struct SessionsTest : ::testing::Test {
  static std::string base() { return "/tmp/kiln-sessions-itest-" + std::to_string(getpid()); }
  oci::OciDriver driver{[] {
    oci::OciOptions o;
    o.state_root = base() + "/runc";
    o.bundles = base() + "/bundles";
    return o;
  }()};
  Sessions::Clock::time_point now = Sessions::Clock::now();
  SessionLimits limits = [] {
    SessionLimits l;
    l.per_user = 2;
    l.idle = 60s;
    l.absolute = 600s;
    l.scrollback_bytes = 4096;
    return l;
  }();
  SandboxSpec shell = [] {
    SandboxSpec s;
    s.id = "template";
    s.args = {"/bin/sh"};
    s.limits.memory_bytes = 64ull << 20;
    s.limits.disk_bytes = 8ull << 20;
    return s;
  }();
  std::unique_ptr<Sessions> sessions;
  void SetUp() override {
    ASSERT_TRUE(driver.check());
    sessions = std::make_unique<Sessions>(
        driver, shell, limits, [this] { return now; },
        [] { return std::int64_t{1'800'000'000'000}; });
  }
  void TearDown() override {
    sessions.reset();
    std::error_code ec;
    std::filesystem::remove_all(base(), ec);
  }
};

TEST_F(SessionsTest, OutputHasOffsetsAndAReattachGetsWhatFollowed) {
  auto s = sessions->open("ann", {{24, 80}, {}});
  ASSERT_TRUE(s) << s.error().detail;
  EXPECT_EQ(s->owner, "ann");
  EXPECT_TRUE(s->running);
  Seen first;
  auto a = sessions->attach("ann", s->id, 0, first.listener(0));
  ASSERT_TRUE(a) << a.error().detail;
  first.next = a->backlog.from + a->backlog.bytes.size();
  ASSERT_TRUE(sessions->input("ann", s->id, "echo $((6*7))\n"));
  ASSERT_TRUE(first.wait_for("42\r\n")) << first.bytes;
  const auto read_to = first.next;
  a->handle.reset();  // the client goes away
  // Output made while nobody is attached is kept, and a client that comes back with the
  // offset it read up to gets exactly what followed.
  ASSERT_TRUE(sessions->input("ann", s->id, "echo while-away-$((1+1))\n"));
  std::string backlog;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (backlog.find("while-away-2\r\n") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    Seen again;
    auto b = sessions->attach("ann", s->id, read_to, again.listener(0));
    ASSERT_TRUE(b) << b.error().detail;
    EXPECT_EQ(b->backlog.from, read_to);
    EXPECT_EQ(b->backlog.lost, 0u);
    backlog = b->backlog.bytes;
    if (backlog.find("while-away-2\r\n") == std::string::npos)
      again.wait_for("while-away-2", 200ms);
  }
  EXPECT_NE(backlog.find("while-away-2\r\n"), std::string::npos) << backlog;
  EXPECT_EQ(backlog.find("42\r\n"), std::string::npos) << "nothing before the offset again";
  EXPECT_FALSE(first.gap);
  auto past = sessions->attach("ann", s->id, 1'000'000, {});
  ASSERT_FALSE(past);
  EXPECT_EQ(past.error().code, Errc::invalid);
}

TEST_F(SessionsTest, OnlyTheOwnerSeesASession) {
  auto s = sessions->open("ann", {});
  ASSERT_TRUE(s) << s.error().detail;
  EXPECT_EQ(sessions->get("bob", s->id).error().code, Errc::not_found);
  EXPECT_EQ(sessions->attach("bob", s->id, 0, {}).error().code, Errc::not_found);
  EXPECT_EQ(sessions->input("bob", s->id, "exit\n").error().code, Errc::not_found);
  EXPECT_EQ(sessions->close("bob", s->id).error().code, Errc::not_found);
  EXPECT_TRUE(sessions->list("bob")->empty());
  EXPECT_EQ(sessions->list("ann")->size(), 1u);
  EXPECT_TRUE(sessions->get("ann", s->id)->running) << "untouched by bob";
}

TEST_F(SessionsTest, APerUserQuotaWithTheReasonSaid) {
  ASSERT_TRUE(sessions->open("ann", {}));
  ASSERT_TRUE(sessions->open("ann", {}));
  auto third = sessions->open("ann", {});
  ASSERT_FALSE(third);
  EXPECT_EQ(third.error().code, Errc::quota);
  EXPECT_NE(third.error().detail.find("at most 2 running sessions per user"), std::string::npos);
  EXPECT_TRUE(sessions->open("bob", {})) << "another user's quota is their own";
}

TEST_F(SessionsTest, TheShellsExitEndsTheSessionAndStaysReadable) {
  auto s = sessions->open("ann", {});
  ASSERT_TRUE(s) << s.error().detail;
  Seen seen;
  auto a = sessions->attach("ann", s->id, 0, seen.listener(0));
  ASSERT_TRUE(a);
  ASSERT_TRUE(sessions->input("ann", s->id, "echo bye; exit 3\n"));
  ASSERT_TRUE(seen.wait_exit());
  EXPECT_EQ(seen.exit->code, 3);
  EXPECT_EQ(seen.exit->message, "exited with 3");
  auto info = sessions->get("ann", s->id);
  ASSERT_TRUE(info);
  EXPECT_FALSE(info->running);
  auto late = sessions->attach("ann", s->id, 0, {});
  ASSERT_TRUE(late);
  ASSERT_TRUE(late->exit);
  EXPECT_NE(late->backlog.bytes.find("bye\r\n"), std::string::npos) << late->backlog.bytes;
  EXPECT_EQ(sessions->input("ann", s->id, "x").error().code, Errc::not_running);
  // Forgotten keep_ended after the end.
  now += limits.keep_ended;
  sessions->sweep();
  EXPECT_EQ(sessions->get("ann", s->id).error().code, Errc::not_found);
}

TEST_F(SessionsTest, IdleAndAbsoluteLimitsEndSessionsWithTheReason) {
  auto idle = sessions->open("ann", {});
  ASSERT_TRUE(idle) << idle.error().detail;
  auto busy = sessions->open("bob", {});
  ASSERT_TRUE(busy) << busy.error().detail;
  Seen watching;
  auto a = sessions->attach("bob", busy->id, 0, watching.listener(0));
  ASSERT_TRUE(a);
  now += limits.idle;
  EXPECT_EQ(sessions->sweep(), 1u) << "bob is attached: only ann's ends";
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (sessions->get("ann", idle->id)->running && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(5ms);  // polled: the reader tells the end
  auto ended = sessions->get("ann", idle->id);
  ASSERT_TRUE(ended);
  ASSERT_TRUE(ended->exit);
  EXPECT_EQ(ended->exit->reason, Exit::Reason::destroyed);
  EXPECT_EQ(ended->exit->message,
            "ended: no client was attached for 60 s (sandbox.session_idle_ms)");
  now += limits.absolute;
  EXPECT_EQ(sessions->sweep(), 1u);
  ASSERT_TRUE(watching.wait_exit());
  EXPECT_EQ(watching.exit->message, "ended: sessions last at most 600 s (sandbox.session_max_ms)");
}

TEST_F(SessionsTest, TheRingKeepsTheLatestAndCountsWhatItDropped) {
  auto s = sessions->open("ann", {});
  ASSERT_TRUE(s) << s.error().detail;
  Seen seen;
  auto a = sessions->attach("ann", s->id, 0, seen.listener(0));
  ASSERT_TRUE(a);
  ASSERT_TRUE(sessions->input("ann", s->id, "seq 1 3000; echo end-$((2*5))\n"));
  ASSERT_TRUE(seen.wait_for("end-10\r\n"));
  auto late = sessions->attach("ann", s->id, 0, {});
  ASSERT_TRUE(late);
  EXPECT_GT(late->backlog.lost, 0u);
  EXPECT_EQ(late->backlog.from, late->backlog.lost);
  EXPECT_LE(late->backlog.bytes.size(), 4096u);
  EXPECT_NE(late->backlog.bytes.find("end-10\r\n"), std::string::npos);
  // The same bytes at the same offsets as the listener saw them.
  std::string stream;
  {
    std::lock_guard l(seen.mu);
    stream = a->backlog.bytes + seen.bytes;  // from a->backlog.from on
  }
  const auto at = late->backlog.from - a->backlog.from;
  ASSERT_LE(at, stream.size());
  const auto n = std::min(late->backlog.bytes.size(), stream.size() - at);
  EXPECT_EQ(stream.substr(at, n), late->backlog.bytes.substr(0, n));
}

// The real driver, with the calls the warm pool makes counted: which sandboxes were
// prepared ahead, and whether a session's start found its sandbox prepared. `refuse`:
// every prepare fails (a runtime that cannot create), as the pool must survive.
struct Counting final : Driver {
  explicit Counting(Driver& real) : real(real) {}
  struct Box final : Sandbox {
    Box(Counting& c, std::unique_ptr<Sandbox> b) : counts(c), box(std::move(b)) {}
    const std::string& id() const override { return box->id(); }
    Result<void, Error> prepare() override {
      if (counts.refuse) return Error{Errc::failed, "refused for the test"};
      auto r = box->prepare();
      prepared = bool(r);
      return r;
    }
    Result<std::unique_ptr<Process>, Error> start(Terminal size) override {
      (prepared ? counts.warm_starts : counts.cold_starts)++;
      return box->start(size);
    }
    Result<std::unique_ptr<Process>, Error> exec(const std::vector<std::string>& a, bool t,
                                                 Terminal size) override {
      return box->exec(a, t, size);
    }
    Result<Stats, Error> stats() override { return box->stats(); }
    void destroy() override { box->destroy(); }
    Counting& counts;
    std::unique_ptr<Sandbox> box;
    bool prepared = false;
  };
  std::string_view name() const override { return "counting"; }
  Result<std::unique_ptr<Sandbox>, Error> create(const SandboxSpec& spec) override {
    KILN_TRY(box, real.create(spec));
    return std::unique_ptr<Sandbox>(std::make_unique<Box>(*this, std::move(box)));
  }
  Driver& real;
  std::atomic<bool> refuse{false};
  std::atomic<int> warm_starts{0}, cold_starts{0};
};

// A session may run a command instead of the shell: its output is the session's, its exit
// the session's end; the rules of a spec apply to it before anything starts.
TEST_F(SessionsTest, ACommandRunsInsteadOfTheShellAndItsExitEndsTheSession) {
  auto s = sessions->open("ann", {{24, 80}, {"/bin/sh", "-c", "echo ran-$((40+2)); exit 3"}});
  ASSERT_TRUE(s) << s.error().detail;
  EXPECT_EQ(s->command.size(), 3u);
  Seen seen;
  auto a = sessions->attach("ann", s->id, 0, seen.listener(0));
  ASSERT_TRUE(a) << a.error().detail;
  seen.bytes = a->backlog.bytes;
  seen.next = a->backlog.from + a->backlog.bytes.size();
  if (a->exit) seen.exit = a->exit;
  ASSERT_TRUE(seen.wait_exit()) << seen.bytes;
  EXPECT_NE(seen.bytes.find("ran-42"), std::string::npos) << seen.bytes;
  EXPECT_EQ(seen.exit->code, 3);
  auto info = sessions->get("ann", s->id);
  ASSERT_TRUE(info);
  EXPECT_FALSE(info->running);
  // Ctrl-C reaches a command (it is not the sandbox's init, which would ignore it).
  auto endless = sessions->open("ann", {{24, 80}, {"sleep", "600"}});
  ASSERT_TRUE(endless) << endless.error().detail;
  Seen stopped;
  auto e = sessions->attach("ann", endless->id, 0, stopped.listener(0));
  ASSERT_TRUE(e);
  // Typed again until it ends: a ^C before the command has started reaches only the shell.
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  do {
    ASSERT_TRUE(sessions->input("ann", endless->id, "\x03"));
  } while (!stopped.wait_exit(200ms) && std::chrono::steady_clock::now() < deadline);
  ASSERT_TRUE(stopped.exit) << stopped.bytes;
  EXPECT_EQ(stopped.exit->code, 130) << stopped.exit->message;
  auto bad = sessions->open("ann", {{24, 80}, {"/bin/echo", std::string("a\0b", 3)}});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, Errc::invalid);
  EXPECT_NE(bad.error().detail.find("NUL"), std::string::npos) << bad.error().detail;
}

// Input never blocks the caller (an event loop's thread): what the terminal does not take
// now waits for the program, all of it and in order, up to limits.input_buffer_bytes; past
// that it is refused and said so.
TEST_F(SessionsTest, InputWaitsForASlowReaderAndIsRefusedPastItsBuffer) {
  auto slow = sessions->open(
      "ann", {{24, 80}, {"/bin/sh", "-c", "stty -echo; sleep 0.3; wc -c; sleep 300"}});
  ASSERT_TRUE(slow) << slow.error().detail;
  Seen seen;
  auto a = sessions->attach("ann", slow->id, 0, seen.listener(0));
  ASSERT_TRUE(a);
  seen.bytes = a->backlog.bytes;
  const std::string line = std::string(99, 'x') + "\n";
  std::size_t sent = 0;
  for (int i = 0; i < 2000; ++i) {  // 200 KB, far more than a terminal holds
    ASSERT_TRUE(sessions->input("ann", slow->id, line)) << i;
    sent += line.size();
  }
  ASSERT_TRUE(sessions->input("ann", slow->id, "\x04"));  // end of input: wc answers
  EXPECT_TRUE(seen.wait_for(std::to_string(sent))) << seen.bytes.substr(0, 200);

  auto deaf = sessions->open("ann", {{24, 80}, {"/bin/sleep", "300"}});
  ASSERT_TRUE(deaf) << deaf.error().detail;
  const std::string chunk(60 * 1024, 'y');
  std::optional<Error> refused;
  for (int i = 0; i < 40 && !refused; ++i) {  // 2.4 MB into a program that reads none
    auto r = sessions->input("ann", deaf->id, chunk);
    if (!r) refused = r.error();
  }
  ASSERT_TRUE(refused) << "more than input_buffer_bytes was taken";
  EXPECT_EQ(refused->code, Errc::busy);
  EXPECT_NE(refused->detail.find("has not read"), std::string::npos) << refused->detail;
}

TEST_F(SessionsTest, AWarmPoolPreparesAheadAndAnOpenOnlyStartsOne) {
  Counting counting(driver);
  auto l = limits;
  l.warm = 2;
  auto pool = std::make_unique<Sessions>(counting, shell, l);
  ASSERT_TRUE(pool->wait_warm(2, 30s)) << pool->warm_error();
  auto s = pool->open("ann", {{33, 101}, {}});
  ASSERT_TRUE(s) << s.error().detail;
  EXPECT_EQ(counting.warm_starts, 1);
  EXPECT_EQ(counting.cold_starts, 0);
  Seen seen;
  auto a = pool->attach("ann", s->id, 0, seen.listener(0));
  ASSERT_TRUE(a);
  ASSERT_TRUE(pool->input("ann", s->id, "stty size\n"));
  EXPECT_TRUE(seen.wait_for("33 101")) << seen.bytes << "(the size the open asked for)";
  ASSERT_TRUE(pool->wait_warm(2, 30s)) << "refilled: " << pool->warm_error();
  a->handle.reset();
  pool.reset();  // the session and both prepared sandboxes destroyed
  auto left = process::run({"runc", "--root", base() + "/runc", "list", "-q"}, 15s);
  ASSERT_TRUE(left);
  EXPECT_EQ(left->out, "") << "nothing of the pool is left";
}

// A prepared sandbox whose init died while it waited (killed by an admin, the host's OOM
// killer) or cannot answer (stopped): the open that takes it starts a cold one instead, and
// nothing else ends (the gate's write must not raise SIGPIPE: this test's process would die
// of it). The gate's write lands in the socket's buffer even when the kill is on its way, so
// only the gate's answer tells a started command from a dying init: a STOPped init never
// answers (the open waited for nothing and gave the user a frozen shell before), a KILLed one
// races the open (one CI run in 15 lost it).
TEST_F(SessionsTest, APreparedSandboxThatDiedIsReplacedColdAndEndsNothing) {
  oci::OciDriver quick{[] {
    oci::OciOptions o;
    o.state_root = base() + "/runc";
    o.bundles = base() + "/bundles";
    o.command_timeout = 3s;  // how long a start waits for the gate's answer
    return o;
  }()};
  auto l = limits;
  l.warm = 1;
  Sessions pool(quick, shell, l);
  const auto runc = [&](std::vector<std::string> args) {
    std::vector<std::string> v{"runc", "--root", base() + "/runc"};
    v.insert(v.end(), args.begin(), args.end());
    return process::run(v, 15s);
  };
  for (const std::string signal : {"STOP", "KILL", "KILL", "KILL", "KILL", "KILL"}) {
    SCOPED_TRACE("the prepared sandbox's init got SIG" + signal);
    ASSERT_TRUE(pool.wait_warm(1, 30s)) << pool.warm_error();
    auto listed = runc({"list", "-q"});
    ASSERT_TRUE(listed);
    std::istringstream ids(listed->out);
    int signalled = 0;
    for (std::string id; std::getline(ids, id);)
      if (id.starts_with("w") && runc({"kill", id, signal})) ++signalled;
    ASSERT_EQ(signalled, 1) << listed->out;
    auto s = pool.open("ann", {{24, 80}, {}});
    ASSERT_TRUE(s) << s.error().detail;
    Seen seen;
    auto a = pool.attach("ann", s->id, 0, seen.listener(0));
    ASSERT_TRUE(a);
    ASSERT_TRUE(pool.input("ann", s->id, "echo alive-$((3*3))\n"));
    {
      std::unique_lock lock(seen.mu);
      seen.cv.wait_for(
          lock, 20s, [&] { return seen.exit || seen.bytes.find("alive-9") != std::string::npos; });
      EXPECT_NE(seen.bytes.find("alive-9"), std::string::npos)
          << seen.bytes << (seen.exit ? "\n(the session ended: " + seen.exit->message + ")" : "");
    }
    a->handle.reset();
    ASSERT_TRUE(pool.close("ann", s->id));
  }
}

TEST_F(SessionsTest, APoolThatCannotPrepareSaysWhyAndOpensStayCold) {
  Counting counting(driver);
  counting.refuse = true;
  auto l = limits;
  l.warm = 1;
  Sessions pool(counting, shell, l);
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (pool.warm_error().empty() && std::chrono::steady_clock::now() < deadline)
    pool.wait_warm(1, 50ms);  // (returns at once when it fills: it cannot here)
  EXPECT_EQ(pool.warm_error(), "refused for the test");
  EXPECT_EQ(pool.warm_ready(), 0u);
  auto s = pool.open("ann", {});
  ASSERT_TRUE(s) << s.error().detail;
  EXPECT_EQ(counting.cold_starts, 1);
  EXPECT_TRUE(s->running);
}

}  // namespace
}  // namespace kiln::sandbox
