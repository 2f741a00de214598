// The conformance suite on the oci driver: real runc (Debian's), real cgroups and
// namespaces. Needs root, as the driver does; CI runs as root.
#include "platform/process.hpp"
#include "sandbox/conformance.hpp"
#include "sandbox/oci/driver.hpp"

#include <unistd.h>

#include <filesystem>

namespace kiln::sandbox {
namespace {

const std::string& base() {
  static const std::string dir = "/tmp/kiln-sandbox-itest-" + std::to_string(getpid());
  return dir;
}

// The runtime's state and the bundles of this process's sandboxes go when it ends.
struct RemoveBase : ::testing::Environment {
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(base(), ec);
  }
};
const auto* const remove_base = ::testing::AddGlobalTestEnvironment(new RemoveBase);

oci::OciOptions options() {
  const auto& base = kiln::sandbox::base();
  oci::OciOptions o;
  o.state_root = base + "/runc";
  o.bundles = base + "/bundles";
  return o;
}

std::unique_ptr<Driver> make() {
  auto d = std::make_unique<oci::OciDriver>(options());
  auto ok = d->check();
  if (!ok) ADD_FAILURE() << ok.error().detail;
  return d;
}

using conformance::SandboxConformance;
INSTANTIATE_TEST_SUITE_P(Oci, SandboxConformance,
                         ::testing::Values(conformance::SandboxFactory{"oci", make}),
                         [](const auto& info) { return info.param.name; });

TEST(OciDriver, CheckNamesTheRuntime) {
  auto o = options();
  auto version = oci::OciDriver(o).check();
  ASSERT_TRUE(version) << version.error().detail;
  EXPECT_NE(version->find("runc version"), std::string::npos) << *version;
  o.runc = "/nonexistent/runc";
  auto missing = oci::OciDriver(o).check();
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::unavailable);
  EXPECT_NE(missing.error().detail.find("apt-get install runc"), std::string::npos);
}

// What runc holds: the ids of the containers in its state directory.
std::string listed() {
  auto r = process::run({"runc", "--root", options().state_root, "list", "-q"},
                        std::chrono::seconds(15));
  return r ? r->out : "runc list failed";
}

// Prepared (created, its init waiting) then destroyed, or dropped: nothing of it is left
// with the runtime, no process of it lives, and its bundle is gone.
TEST(OciDriver, APreparedSandboxLeavesNothingBehind) {
  oci::OciDriver driver(options());
  ASSERT_TRUE(driver.check());
  SandboxSpec s;
  s.id = "prepared-" + std::to_string(getpid());
  s.args = {"/bin/sh"};
  s.terminal = true;
  auto box = driver.create(s);
  ASSERT_TRUE(box) << box.error().detail;
  ASSERT_TRUE((*box)->prepare());
  EXPECT_NE(listed().find(s.id), std::string::npos) << "runc holds it, created";
  box->reset();  // dropped, never started
  EXPECT_EQ(listed().find(s.id), std::string::npos) << listed();
  EXPECT_FALSE(std::filesystem::exists(options().bundles + "/" + s.id));
}

// start() returns once the gate has read its line; the gate's shell still runs until its
// exec. A Ctrl-C typed then is one before the program: it ends nothing (a shell run with -c
// catches SIGINT and exits 130, as the init, the whole sandbox). The command is cat: as the
// init with SIGINT at its default, the kernel ignores the signal for it, so only a gate that
// dies fails here. Ctrl-Cs back to back for 300 ms cover the gate's window.
TEST(OciDriver, ACtrlCTypedAsTheCommandStartsEndsNothing) {
  oci::OciDriver driver(options());
  ASSERT_TRUE(driver.check());
  for (int round = 0; round < 3; ++round) {  // one round alone caught the old gate 3 in 5
    SandboxSpec s;
    s.id = "ctrl-c-" + std::to_string(getpid()) + "-" + std::to_string(round);
    s.args = {"/bin/cat"};
    s.terminal = true;
    s.limits.cpus = 0.01;  // the gate throttled by its quota: its window lasts milliseconds
    auto box = driver.create(s);
    ASSERT_TRUE(box) << box.error().detail;
    auto p = (*box)->start();
    ASSERT_TRUE(p) << p.error().detail;
    const auto storm = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
    while (std::chrono::steady_clock::now() < storm) {
      conformance::write_all(**p, "\x03");
      char echoed[4096];  // the terminal's "^C"s, drained so they never fill it
      pollfd out{(*p)->output(), POLLIN, 0};
      if (poll(&out, 1, 0) == 1) (void)!read((*p)->output(), echoed, sizeof echoed);
    }
    if (auto ended = (*p)->wait_for(std::chrono::milliseconds(0)))
      FAIL() << "round " << round << ": the sandbox ended: " << ended->message;
    conformance::write_all(**p, "alive\n");
    // The terminal echoes the line, then cat writes it back.
    const auto out = conformance::read_until(**p, "alive\r\nalive\r\n");
    EXPECT_NE(out.find("alive\r\nalive\r\n"), std::string::npos) << out;
  }
}

// A command that does not exist: the sandbox starts (the init is a shell until then) and
// the command ends at once with 127, its output naming it.
TEST(OciDriver, ACommandThatDoesNotExistEndsWith127AndSaysSo) {
  oci::OciDriver driver(options());
  ASSERT_TRUE(driver.check());
  SandboxSpec s;
  s.id = "missing-" + std::to_string(getpid());
  s.args = {"/nonexistent/command"};
  auto box = driver.create(s);
  ASSERT_TRUE(box) << box.error().detail;
  auto p = (*box)->start();
  ASSERT_TRUE(p) << p.error().detail;
  const auto out = conformance::read_until(**p, "No such file or directory");
  EXPECT_NE(out.find("'/nonexistent/command': No such file or directory"), std::string::npos)
      << out;
  auto exit = (*p)->wait_for(std::chrono::seconds(30));
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->code, 127);
}

// A runtime that refuses to create says so, and nothing is left.
TEST(OciDriver, ARuntimeThatRefusesSaysSo) {
  auto o = options();
  o.runc = "/bin/false";
  oci::OciDriver driver(o);
  SandboxSpec s;
  s.id = "refused-" + std::to_string(getpid());
  s.args = {"/bin/true"};
  auto box = driver.create(s);
  ASSERT_TRUE(box) << box.error().detail;
  auto p = (*box)->start();
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, Errc::failed);
  EXPECT_NE(p.error().detail.find("runc create"), std::string::npos) << p.error().detail;
  box->reset();
  EXPECT_FALSE(std::filesystem::exists(o.bundles + "/" + s.id));
}

}  // namespace
}  // namespace kiln::sandbox
