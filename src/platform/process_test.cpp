// Child processes against real programs (/bin/sh, cat, ls): descriptors, groups, limits.
#include "platform/process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <thread>

namespace kiln::process {
namespace {

using namespace std::chrono_literals;

// Whether `pid` has ended (gone, or a zombie waiting for whoever reaps it), asked until
// `limit`: the kernel delivers SIGKILL asynchronously.
bool ended_within(pid_t pid, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return true;
    const auto close = line.rfind(')');
    if (close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z')
      return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
}

TEST(Process, RunCapturesOutputStatusAndInput) {
  auto r = run({"/bin/sh", "-c", "cat; echo out; echo err >&2; exit 3"}, 10s, "in\n");
  ASSERT_TRUE(r) << r.error().detail;
  EXPECT_EQ(r->out, "in\nout\n");
  EXPECT_EQ(r->err, "err\n");
  EXPECT_TRUE(WIFEXITED(r->status));
  EXPECT_EQ(WEXITSTATUS(r->status), 3);
  EXPECT_EQ(describe(r->status), "exited with 3");
}

TEST(Process, AProgramThatDoesNotExistIsAClearError) {
  auto r = run({"/nonexistent/kiln-no-such-program"}, 10s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::spawn);
  EXPECT_NE(r.error().detail.find("cannot run /nonexistent/kiln-no-such-program"),
            std::string::npos)
      << r.error().detail;
  EXPECT_FALSE(run({}, 1s));
}

TEST(Process, OutputBeyondTheLimitIsDrainedAndDropped) {
  auto r = run({"/bin/sh", "-c", "head -c 3000000 /dev/zero; echo done >&2"}, 30s, {}, 1000);
  ASSERT_TRUE(r) << r.error().detail;
  EXPECT_EQ(r->out.size(), 1000u);
  EXPECT_EQ(r->err, "done\n");
  EXPECT_EQ(r->status, 0) << "not stopped by a full pipe";
}

TEST(Process, PastTheLimitTheWholeGroupIsKilled) {
  // The shell writes its background child's pid to a file, then both wait forever.
  char path[] = "/tmp/kiln-process-test-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  const auto before = std::chrono::steady_clock::now();
  auto r = run({"/bin/sh", "-c", std::string("sleep 300 & echo $! > ") + path + "; wait"}, 300ms);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::timed_out);
  EXPECT_LT(std::chrono::steady_clock::now() - before, 60s);
  std::ifstream in(path);
  pid_t grandchild = 0;
  in >> grandchild;
  unlink(path);
  ASSERT_GT(grandchild, 0);
  EXPECT_TRUE(ended_within(grandchild, 10s)) << "the background child was left running";
}

TEST(Process, OnlyTheChosenDescriptorsReachTheChild) {
  // No O_CLOEXEC, as some libraries do; numbered high, so that it cannot be mistaken for a
  // descriptor the child opens itself (ls's own, 3).
  const int opened = open("/dev/null", O_RDONLY);
  const int leaked = fcntl(opened, F_DUPFD, 100);
  close(opened);
  ASSERT_GE(leaked, 100);
  auto r = run({"/bin/sh", "-c", "ls /proc/self/fd"}, 10s);
  close(leaked);
  ASSERT_TRUE(r) << r.error().detail;
  EXPECT_EQ(r->out.find("\n" + std::to_string(leaked) + "\n"), std::string::npos) << r->out;
}

// The passed descriptor arrives as 3 (a pipe read there), and nothing else beyond 0-2.
TEST(Process, APassedDescriptorArrivesAsThree) {
  int gate[2];
  ASSERT_EQ(pipe2(gate, O_CLOEXEC), 0);
  int out[2];
  ASSERT_EQ(pipe2(out, O_CLOEXEC), 0);
  SpawnOptions o;
  o.argv = {"/bin/sh", "-c",
            "read -r word <&3; echo \"got $word\"; ls /proc/self/fd | tr '\\n' ' '"};
  o.stdout_fd = out[1];
  o.pass_fd = gate[0];
  auto child = spawn(o);
  close(gate[0]);
  close(out[1]);
  ASSERT_TRUE(child) << child.error().detail;
  ASSERT_EQ(write(gate[1], "open\n", 5), 5);
  close(gate[1]);
  std::string got;
  char buf[256];
  for (ssize_t n; (n = read(out[0], buf, sizeof buf)) > 0;) got.append(buf, n);
  close(out[0]);
  EXPECT_EQ(child->wait(), 0);
  EXPECT_NE(got.find("got open"), std::string::npos) << got;
  // ls itself opens one more to read the directory: 0 1 2 3 and that one.
  EXPECT_EQ(got.find(" 5 "), std::string::npos) << got;
}

TEST(Process, AChildDroppedUnwaitedIsKilledAndReaped) {
  pid_t pid = 0;
  {
    SpawnOptions o;
    o.argv = {"sleep", "300"};  // found in PATH
    auto c = spawn(o);
    ASSERT_TRUE(c) << c.error().detail;
    pid = c->pid();
    EXPECT_EQ(c->wait_for(0ms), std::nullopt) << "still running";
  }
  EXPECT_EQ(waitpid(pid, nullptr, WNOHANG), -1) << "reaped already";
  EXPECT_TRUE(ended_within(pid, 1s));
}

TEST(Process, SignalsAndWaitStatuses) {
  SpawnOptions o;
  o.argv = {"sleep", "300"};
  auto c = spawn(o);
  ASSERT_TRUE(c) << c.error().detail;
  c->signal(SIGTERM);
  const auto status = c->wait_for(10s);
  ASSERT_TRUE(status);
  EXPECT_EQ(describe(*status), "killed by SIGTERM");
  EXPECT_EQ(c->wait_for(0ms), status) << "the same answer again";
}

}  // namespace
}  // namespace kiln::process
