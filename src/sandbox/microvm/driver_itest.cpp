// The conformance suite on the microvm driver: real QEMU (Debian's qemu-system-x86), the
// guest image scripts/microvm-image.sh builds (the CTest fixture `microvm_image` builds it;
// KILN_MICROVM_IMAGE names its directory). KVM when it boots guests, TCG here otherwise.
#include "sandbox/conformance.hpp"
#include "sandbox/microvm/driver.hpp"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>

namespace kiln::sandbox {
namespace {

const std::string& base() {
  static const std::string dir = "/tmp/kiln-microvm-itest-" + std::to_string(getpid());
  return dir;
}

struct RemoveBase : ::testing::Environment {
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(base(), ec);
  }
};
const auto* const remove_base = ::testing::AddGlobalTestEnvironment(new RemoveBase);

microvm::MicrovmOptions options() {
  const char* image = std::getenv("KILN_MICROVM_IMAGE");
  const std::string dir = image ? image : "build/microvm-image";
  microvm::MicrovmOptions o;
  o.kernel = dir + "/vmlinuz";
  o.initrd = dir + "/initramfs.gz";
  o.state_dir = base();
  return o;
}

std::unique_ptr<Driver> make() {
  auto d = std::make_unique<microvm::MicrovmDriver>(options());
  auto ok = d->check();
  if (!ok) ADD_FAILURE() << ok.error().detail;
  return d;
}

using conformance::SandboxConformance;
INSTANTIATE_TEST_SUITE_P(Microvm, SandboxConformance,
                         ::testing::Values(conformance::SandboxFactory{
                             "microvm", make, /*exec=*/false, /*shares_host_kernel=*/false}),
                         [](const auto& info) { return info.param.name; });

TEST(MicrovmDriver, CheckNamesQemuAndTheImage) {
  auto o = options();
  auto version = microvm::MicrovmDriver(o).check();
  ASSERT_TRUE(version) << version.error().detail;
  EXPECT_NE(version->find("QEMU emulator version"), std::string::npos) << *version;
  auto bad = o;
  bad.qemu = "/nonexistent/qemu";
  auto missing = microvm::MicrovmDriver(bad).check();
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::unavailable);
  EXPECT_NE(missing.error().detail.find("apt-get install qemu-system-x86"), std::string::npos);
  bad = o;
  bad.kernel = base() + "/no-kernel";
  auto no_image = microvm::MicrovmDriver(bad).check();
  ASSERT_FALSE(no_image);
  EXPECT_NE(no_image.error().detail.find("scripts/microvm-image.sh"), std::string::npos);
}

// A kernel that is not one: the start fails in words that say what QEMU said, the id is
// free again, nothing is left in the state directory.
TEST(MicrovmDriver, AMachineThatCannotBootSaysWhyAndLeavesNothing) {
  auto o = options();
  std::filesystem::create_directories(base());
  o.kernel = base() + "/garbage-kernel";
  { std::ofstream(o.kernel) << "not a kernel"; }
  microvm::MicrovmDriver driver(o);
  SandboxSpec s;
  s.id = "broken";
  s.args = {"/bin/true"};
  auto box = driver.create(s);
  ASSERT_TRUE(box) << box.error().detail;
  auto p = (*box)->start();
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, Errc::failed);
  EXPECT_NE(p.error().detail.find("QEMU:"), std::string::npos) << p.error().detail;
  EXPECT_FALSE(std::filesystem::exists(base() + "/broken"));
  box->reset();
  EXPECT_TRUE(driver.create(s)) << "the id is free again";
}

TEST(MicrovmDriver, RefusesWhatItDoesNotDo) {
  microvm::MicrovmDriver driver(options());
  SandboxSpec s;
  s.id = "mounts";
  s.args = {"/bin/true"};
  s.mounts.push_back({"/srv", "/srv", true});
  auto r = driver.create(s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::invalid);
  EXPECT_NE(r.error().detail.find("mounts"), std::string::npos);
  s.mounts.clear();
  s.limits.network = true;
  r = driver.create(s);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().detail.find("network"), std::string::npos);
  s.limits.network = false;
  auto box = driver.create(s);
  ASSERT_TRUE(box);
  auto e = (*box)->exec({"/bin/true"}, false);
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().code, Errc::unavailable);
}

TEST(MicrovmDriver, QemuArgsFollowTheConfig) {
  microvm::VmConfig c;
  c.boot_source = {"/k", "/i", "console=ttyS0"};
  c.machine_config = {2, 300};
  c.shares.push_back({"usr", "/usr", true});
  c.ports.push_back({"kiln.term", "/s/0.sock"});
  c.ports.push_back({"kiln.control", "/s/1.sock"});
  c.console_log = "/s/console.log";
  c.accel = "kvm:tcg";
  const auto a = microvm::qemu_args(c);
  std::string line;
  for (const auto& x : a) line += x + " ";
  for (const char* want :
       {"-M microvm,", "-smp 2 ", "-m 300 ", "-accel kvm -accel tcg ", "-kernel /k -initrd /i ",
        "-append console=ttyS0 ", "-serial file:/s/console.log ",
        "socket,id=port0,path=/s/0.sock -device virtconsole,chardev=port0,name=kiln.term ",
        "-device virtserialport,chardev=port1,name=kiln.control ",
        "local,id=share0,path=/usr,security_model=none,readonly=on -device "
        "virtio-9p-device,fsdev=share0,mount_tag=usr "})
    EXPECT_NE(line.find(want), std::string::npos) << want << " in " << line;
}

}  // namespace
}  // namespace kiln::sandbox
