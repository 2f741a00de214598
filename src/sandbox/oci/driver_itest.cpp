// The conformance suite on the oci driver: real runc (Debian's), real cgroups and
// namespaces. Needs root, as the driver does; CI runs as root.
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

}  // namespace
}  // namespace kiln::sandbox
