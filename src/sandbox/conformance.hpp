// The Sandbox port's conformance suite: what every driver must do, against real processes.
// A driver's test instantiates it with a factory:
//
//   INSTANTIATE_TEST_SUITE_P(Oci, SandboxConformance,
//                            ::testing::Values(SandboxFactory{"oci", [] { return ...; }}));
//
// Waits are on conditions (output seen, a process ended) with generous deadlines, never on
// sleeps.
#pragma once

#include "sandbox/sandbox.hpp"

#include <gtest/gtest.h>

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <memory>
#include <string>

namespace kiln::sandbox::conformance {

struct SandboxFactory {
  std::string name;
  std::function<std::unique_ptr<Driver>()> make;
  // What a driver may lack, each skipped with its reason when false: exec (more commands
  // beside the first); shares_host_kernel: the sandbox runs on the host's kernel, so the
  // kernel's own surface (io_uring, user namespaces through clone) must be closed to it (a
  // virtual machine's kernel is its own: reaching it reaches nothing of the host's).
  bool exec = true;
  bool shares_host_kernel = true;
};
inline std::string PrintToString(const SandboxFactory& f) {
  return f.name;
}

using namespace std::chrono_literals;

// Reads a process's output until `needle` appears or `limit` passes; everything read.
inline std::string read_until(Process& p, const std::string& needle,
                              std::chrono::milliseconds limit = 20s) {
  std::string got;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (got.find(needle) == std::string::npos) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd fd{p.output(), POLLIN, 0};
    if (poll(&fd, 1, static_cast<int>(left.count())) <= 0) continue;
    char chunk[4096];
    const ssize_t n = read(p.output(), chunk, sizeof chunk);
    if (n > 0) {
      got.append(chunk, static_cast<std::size_t>(n));
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
      break;  // the other end closed (EIO on a pty whose command ended)
    }
  }
  return got;
}

inline void write_all(Process& p, const std::string& bytes) {
  std::size_t at = 0;
  while (at < bytes.size()) {
    const ssize_t n = write(p.input(), bytes.data() + at, bytes.size() - at);
    if (n > 0) {
      at += static_cast<std::size_t>(n);
    } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
      ADD_FAILURE() << "write: " << std::strerror(errno);
      return;
    } else {
      pollfd fd{p.input(), POLLOUT, 0};
      poll(&fd, 1, 1000);
    }
  }
}

class SandboxConformance : public ::testing::TestWithParam<SandboxFactory> {
 protected:
  void SetUp() override { driver = GetParam().make(); }

  SandboxSpec spec(std::vector<std::string> args) {
    static std::atomic<int> counter{0};
    SandboxSpec s;
    s.id = "conf-" + std::to_string(getpid()) + "-" + std::to_string(++counter);
    s.args = std::move(args);
    s.limits.memory_bytes = 64ull << 20;
    s.limits.pids = 32;
    s.limits.disk_bytes = 8ull << 20;
    return s;
  }

  std::unique_ptr<Sandbox> create(const SandboxSpec& s) {
    auto r = driver->create(s);
    EXPECT_TRUE(r) << r.error().detail;
    return r ? std::move(*r) : nullptr;
  }

  // Runs `args` in a fresh sandbox to its end: (output, exit).
  std::pair<std::string, Exit> run(const SandboxSpec& s) {
    auto box = create(s);
    if (!box) return {};
    auto p = box->start();
    EXPECT_TRUE(p) << p.error().detail;
    if (!p) return {};
    auto out = read_until(**p, "\x01never\x01", 60s);
    auto exit = (*p)->wait_for(60s);
    EXPECT_TRUE(exit) << "did not end";
    return {out, exit.value_or(Exit{})};
  }

  std::unique_ptr<Driver> driver;
};

TEST_P(SandboxConformance, RunsTheCommandAndTellsHowItEnded) {
  auto [out, exit] = run(spec({"/bin/sh", "-c", "echo hello; echo oops >&2; exit 3"}));
  // stdout and stderr share the output; their order is not kept (runc copies each).
  EXPECT_TRUE(out == "hello\noops\n" || out == "oops\nhello\n") << out;
  EXPECT_EQ(exit.reason, Exit::Reason::exited);
  EXPECT_EQ(exit.code, 3);
  EXPECT_EQ(exit.message, "exited with 3");
}

// Arguments reach the command as given, byte for byte (no shell parses them).
TEST_P(SandboxConformance, ArgumentsArriveExactly) {
  auto [out, exit] =
      run(spec({"/usr/bin/printf", "[%s]", "trail\n\n", " sp  ace ", "\xc3\xbc$x`y`"}));
  EXPECT_EQ(out, "[trail\n\n][ sp  ace ][\xc3\xbc$x`y`]");
  EXPECT_EQ(exit.code, 0);
}

// Ctrl-C on the terminal interrupts the foreground program (SIGINT is not ignored in it).
TEST_P(SandboxConformance, CtrlCInterruptsTheForegroundProgram) {
  auto s = spec({"/bin/sh"});
  s.terminal = true;
  auto box = create(s);
  ASSERT_TRUE(box);
  auto p = box->start();
  ASSERT_TRUE(p) << p.error().detail;
  // A shell exits on a Ctrl-C while it is still starting (dash between installing its
  // handler and its first prompt: the program's own window), and a Ctrl-C at the prompt
  // cancels the line being typed: so each step waits for the shell's answer. The prompt
  // and the markers are computed, so the terminal's echo of the typed line never matches.
  write_all(**p, "X=pr; PS1=\"${X}ompt> \"; echo ready-$((1+1))\n");
  ASSERT_NE(read_until(**p, "ready-2").find("ready-2"), std::string::npos);
  write_all(**p, "echo sleeping-$((3*3)); /bin/sleep 300\n");
  ASSERT_NE(read_until(**p, "sleeping-9").find("sleeping-9"), std::string::npos);
  std::string seen;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (seen.find("prompt> ") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    write_all(**p, "\x03");  // until the sleep has started and taken it
    seen += read_until(**p, "prompt> ", 1s);
  }
  ASSERT_NE(seen.find("prompt> "), std::string::npos) << "the sleep was not interrupted: " << seen;
  write_all(**p, "echo back-$((2+3))\n");
  EXPECT_NE(read_until(**p, "back-5").find("back-5"), std::string::npos);
}

TEST_P(SandboxConformance, InputReachesTheCommand) {
  auto box = create(spec({"/bin/sh", "-c", "read line; echo \"got $line\""}));
  ASSERT_TRUE(box);
  auto p = box->start();
  ASSERT_TRUE(p) << p.error().detail;
  write_all(**p, "kiln\n");
  EXPECT_EQ(read_until(**p, "got kiln\n"), "got kiln\n");
  auto exit = (*p)->wait_for(30s);
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->code, 0);
}

TEST_P(SandboxConformance, ATerminalHasItsSizeAndFollowsAResize) {
  auto s = spec({"/bin/sh"});
  s.terminal = true;
  auto box = create(s);
  ASSERT_TRUE(box);
  auto p = box->start({30, 90});
  ASSERT_TRUE(p) << p.error().detail;
  // (the answer's words are computed: the terminal echoes the typed line first)
  write_all(**p, "stty size; tty >/dev/null && echo tty-$((6*7))\n");
  auto out = read_until(**p, "tty-42");
  EXPECT_NE(out.find("30 90"), std::string::npos) << out;
  EXPECT_NE(out.find("tty-42"), std::string::npos) << "a terminal: " << out;
  ASSERT_TRUE((*p)->resize({40, 120}));
  // The resize reaches the command's terminal through the driver: asked until it shows.
  std::string seen;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (seen.find("40 120") == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    write_all(**p, "stty size\n");
    seen += read_until(**p, "40 120", 500ms);
  }
  EXPECT_NE(seen.find("40 120"), std::string::npos) << seen;
  EXPECT_FALSE((*p)->resize({0, 80})) << "a size of 0 rows";
  write_all(**p, "exit 7\n");
  auto exit = (*p)->wait_for(30s);
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->code, 7);
}

// A client that resizes in a loop (a window dragged, or an attack) costs the caller no
// wait on the sandbox, and the last size is the one the terminal ends with.
TEST_P(SandboxConformance, AResizeStormEndsAtTheLastSize) {
  auto s = spec({"/bin/sh"});
  s.terminal = true;
  auto box = create(s);
  ASSERT_TRUE(box);
  auto p = box->start();
  ASSERT_TRUE(p) << p.error().detail;
  for (int i = 0; i < 20'000; ++i)
    ASSERT_TRUE((*p)->resize({static_cast<std::uint16_t>(10 + i % 50), 80}));
  ASSERT_TRUE((*p)->resize({42, 99}));
  std::string seen;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (seen.find("42 99") == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    write_all(**p, "stty size\n");
    seen += read_until(**p, "42 99", 1s);
  }
  EXPECT_NE(seen.find("42 99"), std::string::npos)
      << seen.substr(seen.size() > 300 ? seen.size() - 300 : 0);
}

// A warm pool prepares sandboxes before it knows the size of the terminal a session asks
// for: the size given to start() is the one the command sees, and output and input work.
TEST_P(SandboxConformance, APreparedSandboxStartsWithTheSizeGivenToStart) {
  auto s = spec({"/bin/sh"});
  s.terminal = true;
  auto box = create(s);
  ASSERT_TRUE(box);
  ASSERT_TRUE(box->prepare());
  ASSERT_TRUE(box->prepare()) << "prepared again: nothing";
  auto p = box->start({33, 101});
  ASSERT_TRUE(p) << p.error().detail;
  write_all(**p, "stty size\n");
  EXPECT_NE(read_until(**p, "33 101").find("33 101"), std::string::npos);
  write_all(**p, "exit 5\n");
  auto exit = (*p)->wait_for(30s);
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->code, 5);
  EXPECT_EQ(exit->reason, Exit::Reason::exited);
}

// A prepared sandbox that is never started (the pool shrinks, the node stops) is destroyed
// whole: its id is free again, and it cannot be started.
TEST_P(SandboxConformance, APreparedSandboxNeverStartedIsDestroyedWhole) {
  auto s = spec({"/bin/sh", "-c", "echo should-not-run"});
  auto box = create(s);
  ASSERT_TRUE(box);
  ASSERT_TRUE(box->prepare());
  box->destroy();
  auto p = box->start();
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, Errc::not_running);
  auto again = create(s);  // the same id
  ASSERT_TRUE(again);
  auto q = again->start();
  ASSERT_TRUE(q) << q.error().detail;
  EXPECT_NE(read_until(**q, "should-not-run").find("should-not-run"), std::string::npos);
  auto exit = (*q)->wait_for(30s);
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->code, 0);
}

TEST_P(SandboxConformance, ExecRunsBesideTheCommandWithTheSameFilesAndUser) {
  if (!GetParam().exec) GTEST_SKIP() << GetParam().name << " runs one command per sandbox";
  auto box = create(spec({"/bin/sh", "-c", "echo ready > /work/mark; exec sleep 300"}));
  ASSERT_TRUE(box);
  auto main = box->start();
  ASSERT_TRUE(main) << main.error().detail;
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (out.find("ready") == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    auto e = box->exec({"/bin/sh", "-c", "cat /work/mark 2>/dev/null; id -u; pwd"}, false);
    ASSERT_TRUE(e) << e.error().detail;
    out = read_until(**e, "\x01never\x01", 20s);
    auto exit = (*e)->wait_for(20s);
    ASSERT_TRUE(exit) << out;
  }
  EXPECT_EQ(out, "ready\n1000\n/work\n");
  EXPECT_FALSE(box->exec({}, false)) << "no arguments";
  // Signals: to an exec'd command, and to the sandbox's command (PID 1 inside, which gets
  // only the signals it handles, and SIGKILL).
  auto sleeper = box->exec({"/bin/sleep", "300"}, false);
  ASSERT_TRUE(sleeper) << sleeper.error().detail;
  for (int sig : {SIGTERM, SIGKILL}) {
    auto victim = box->exec({"/bin/sleep", "300"}, false);
    ASSERT_TRUE(victim) << victim.error().detail;
    // Signalled once it runs (its output closes only when it ends: asked until it ends).
    std::optional<Exit> ended;
    const auto until = std::chrono::steady_clock::now() + 30s;
    while (!ended && std::chrono::steady_clock::now() < until) {
      (*victim)->signal(sig);
      ended = (*victim)->wait_for(200ms);
    }
    ASSERT_TRUE(ended);
    EXPECT_EQ(ended->reason, Exit::Reason::signaled);
    EXPECT_EQ(ended->signal, sig);
  }
  (*main)->signal(SIGKILL);
  auto exit = (*main)->wait_for(30s);
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->reason, Exit::Reason::signaled);
  EXPECT_EQ(exit->message, "killed by SIGKILL");
  auto late = (*sleeper)->wait_for(30s);
  ASSERT_TRUE(late) << "an exec'd command ends with the sandbox's command";
}

TEST_P(SandboxConformance, AMemoryHogIsKilledAtTheLimitAndToldSo) {
  // The hog (tail) is the one killed; the sandbox's command (the shell) goes on.
  auto [out, exit] = run(spec({"/bin/sh", "-c", "tail /dev/zero; echo survived $?"}));
  EXPECT_NE(out.find("survived 137\n"), std::string::npos) << out;
  EXPECT_EQ(exit.code, 0);
  // Run as the command itself, the kill is the sandbox's exit, told as such:
  auto [out2, exit2] = run(spec({"/usr/bin/tail", "/dev/zero"}));
  EXPECT_EQ(exit2.reason, Exit::Reason::out_of_memory) << exit2.message;
  EXPECT_EQ(exit2.signal, SIGKILL);
  EXPECT_EQ(exit2.message, "killed at the sandbox's memory limit (64 MiB)");
}

TEST_P(SandboxConformance, AForkBombIsStoppedAtThePidsLimit) {
  // The inner shell forks until it cannot (and dies of it); the outer one says so and stays.
  auto box = create(spec({"/bin/sh", "-c",
                          "sh -c 'while :; do sleep 300 & done' 2>&1; echo \"bomb ended: $?\"; "
                          "exec sleep 300"}));
  ASSERT_TRUE(box);
  auto p = box->start();
  ASSERT_TRUE(p) << p.error().detail;
  const auto out = read_until(**p, "bomb ended", 60s);
  EXPECT_NE(out.find("fork"), std::string::npos) << "forks past the limit fail: " << out;
  EXPECT_NE(out.find("bomb ended"), std::string::npos) << out;
  auto stats = box->stats();
  ASSERT_TRUE(stats) << stats.error().detail;
  EXPECT_LE(stats->pids, 32u);
  EXPECT_GT(stats->pids, 1u);
  EXPECT_EQ(stats->pids_limit, 32u);
  EXPECT_EQ(stats->memory_limit_bytes, 64ull << 20);
  box->destroy();
  auto exit = (*p)->wait_for(30s);
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->reason, Exit::Reason::destroyed);
}

TEST_P(SandboxConformance, TheWorkDirectoryIsBounded) {
  auto [out, exit] =
      run(spec({"/bin/sh", "-c", "head -c 20000000 /dev/zero > /work/big; echo $?; ls -s /work"}));
  EXPECT_NE(out.find("No space left on device"), std::string::npos) << out;
  EXPECT_EQ(exit.code, 0);
}

// A million empty files take no bytes: the number of files is bounded too.
TEST_P(SandboxConformance, FilesAreBoundedNotOnlyBytes) {
  auto s =
      spec({"/bin/sh", "-c",
            "cd /work && i=0; while [ $i -lt 3000 ]; do true > f$i || break; i=$((i+1)); done; "
            "echo made $i; cd /tmp && true > a && echo tmp ok"});
  s.limits.files = 1000;
  auto [out, exit] = run(s);
  EXPECT_NE(out.find("No space left on device"), std::string::npos) << out;
  EXPECT_EQ(out.find("made 3000"), std::string::npos) << out;
  EXPECT_NE(out.find("tmp ok"), std::string::npos) << out;
}

TEST_P(SandboxConformance, NoNetworkUnlessAllowed) {
  auto [out, exit] = run(spec({"/bin/bash", "-c",
                               "exec 3<>/dev/tcp/192.0.2.1/80 && echo connected; "
                               "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"}));
  EXPECT_NE(out.find("Network is unreachable"), std::string::npos) << out;
  EXPECT_EQ(out.find("connected"), std::string::npos) << out;
  EXPECT_EQ(out.substr(out.size() - 3), "lo\n") << "loopback only: " << out;
  EXPECT_EQ(out.find("eth"), std::string::npos) << out;
}

// What the host holds stays out of reach: files only root may read, directories not
// shown, the kernel's interfaces that reach outside (ptrace, mount, namespaces).
TEST_P(SandboxConformance, TheHostIsOutOfReach) {
  auto [out, exit] = run(spec(
      {"/bin/sh", "-c",
       "cat /etc/shadow; ls /root /home /var/lib; echo x > /usr/kiln-probe; "
       "echo users: $(cut -d: -f1 /etc/passwd) whoami: $(id -un); "
       "python3 -c 'import ctypes,os; l=ctypes.CDLL(None, use_errno=True); "
       "r=l.ptrace(16, 1, 0, 0); print(\"ptrace\", r, os.strerror(ctypes.get_errno()))'; "
       "unshare -r true 2>&1 | head -c 60; echo; mount -t tmpfs x /work 2>&1 | head -c 60; echo; "
       "python3 -c 'import ctypes,os; l=ctypes.CDLL(None, use_errno=True); "
       "r=l.syscall(56, 0x10000000|0x20000|17, 0, 0, 0, 0); "
       "print(\"clone-newuser\", r if r <= 0 else \"child\", os.strerror(ctypes.get_errno())); "
       "b=ctypes.create_string_buffer(120); "
       "print(\"io_uring\", l.syscall(425, 8, b), os.strerror(ctypes.get_errno()))'; "
       "ls /sys/fs/cgroup 2>&1 | head -c 80; echo"}));
  EXPECT_TRUE(out.find("/etc/shadow: Permission denied") != std::string::npos ||
              out.find("/etc/shadow: No such file or directory") != std::string::npos)
      << out;
  // Its own users only: none of the host's accounts (their names, services) shows.
  EXPECT_NE(out.find("whoami: kiln"), std::string::npos) << out;
  std::ifstream host_passwd("/etc/passwd");
  for (std::string line; std::getline(host_passwd, line);) {
    const auto name = line.substr(0, line.find(':'));
    if (name == "root" || name == "nobody" || name.empty()) continue;
    EXPECT_EQ(out.find(" " + name + " "), std::string::npos) << "host user " << name << ": " << out;
  }
  for (const char* d : {"/root", "/home", "/var/lib"})
    EXPECT_NE(out.find(std::string("cannot access '") + d + "': No such file or directory"),
              std::string::npos)
        << d << ": " << out;
  EXPECT_NE(out.find("Read-only file system"), std::string::npos) << out;
  EXPECT_NE(out.find("ptrace -1 Operation not permitted"), std::string::npos) << out;
  EXPECT_NE(out.find("unshare: "), std::string::npos) << out;
  EXPECT_NE(out.find("mount: "), std::string::npos) << out;
  // A new user namespace through clone (not only unshare), io_uring, the host's cgroups.
  EXPECT_NE(out.find("clone-newuser -1 Operation not permitted"), std::string::npos) << out;
  if (GetParam().shares_host_kernel) {
    EXPECT_NE(out.find("io_uring -1 Operation not permitted"), std::string::npos) << out;
  }
  EXPECT_NE(out.find("cannot access '/sys/fs/cgroup'"), std::string::npos) << out;
}

// Two sandboxes see nothing of each other: their processes and their files.
TEST_P(SandboxConformance, NeighboursAreInvisible) {
  auto a = create(spec({"/bin/sh", "-c", "echo secret > /work/mine; exec sleep 300"}));
  ASSERT_TRUE(a);
  auto pa = a->start();
  ASSERT_TRUE(pa) << pa.error().detail;
  auto [out, exit] = run(spec({"/bin/sh", "-c",
                               "ls /proc | grep -c '^[0-9]'; ls /work; "
                               "cat /work/mine 2>&1"}));
  EXPECT_EQ(out.find("secret"), std::string::npos) << out;
  // Its own processes only: sh, ls, grep (and cat later), never a sleep of the neighbour.
  EXPECT_LE(std::stoi(out), 4) << out;
}

TEST_P(SandboxConformance, DestroyEndsEverythingAndIsFinal) {
  auto box = create(spec({"/bin/sleep", "300"}));
  ASSERT_TRUE(box);
  auto p = box->start();
  ASSERT_TRUE(p) << p.error().detail;
  box->destroy();
  box->destroy();  // idempotent
  auto exit = (*p)->wait_for(30s);
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->reason, Exit::Reason::destroyed);
  EXPECT_EQ(exit->message, "the sandbox was destroyed");
  auto again = box->exec({"/bin/true"}, false);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Errc::not_running);
  EXPECT_FALSE(box->stats());
}

TEST_P(SandboxConformance, BadSpecsAndDuplicateIdsAreRefusedWithTheRule) {
  auto s = spec({"/bin/true"});
  s.limits.memory_bytes = 1;
  auto r = driver->create(s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::invalid);
  EXPECT_NE(r.error().detail.find("memory"), std::string::npos) << r.error().detail;
  auto ok = spec({"/bin/true"});
  auto first = create(ok);
  ASSERT_TRUE(first);
  auto second = driver->create(ok);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, Errc::invalid);
  auto started = first->start();
  ASSERT_TRUE(started);
  EXPECT_FALSE(first->start()) << "started once";
}

}  // namespace kiln::sandbox::conformance
