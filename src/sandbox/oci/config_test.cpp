#include "sandbox/oci/config.hpp"

#include <gtest/gtest.h>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <map>
#include <set>
#include <stdexcept>

namespace kiln::sandbox::oci {
namespace {

namespace json = boost::json;

SandboxSpec spec() {
  SandboxSpec s;
  s.id = "s1";
  s.args = {"/bin/sh"};
  s.terminal = true;
  s.env = {{"LANG", "C.UTF-8"}};
  s.limits.memory_bytes = 64ull << 20;
  s.limits.pids = 32;
  s.limits.cpus = 0.5;
  s.limits.disk_bytes = 8ull << 20;
  s.mounts = {{"/srv/project", "/project", true}, {"/srv/cache", "/cache", false}};
  return s;
}

OciHost host() {
  OciHost h;
  h.rootfs = "/var/lib/kiln/sandboxes/s1/rootfs";
  h.etc_shared = {"/etc/ld.so.cache", "/etc/alternatives"};
  return h;
}

std::set<std::string> namespaces(const json::object& c) {
  std::set<std::string> out;
  for (const auto& n : c.at("linux").at("namespaces").as_array())
    out.insert(std::string(n.at("type").as_string()));
  return out;
}

const json::object* mount_at(const json::object& c, const std::string& dest) {
  for (const auto& m : c.at("mounts").as_array())
    if (m.at("destination").as_string() == dest) return &m.as_object();
  return nullptr;
}

bool has_option(const json::object& m, const std::string& o) {
  const auto& a = m.at("options").as_array();
  return std::find(a.begin(), a.end(), json::value(o.c_str())) != a.end();
}

TEST(OciConfig, IsolatesByDefault) {
  const auto c = config(spec(), host());
  EXPECT_EQ(c.at("ociVersion"), "1.0.2");
  EXPECT_EQ(namespaces(c),
            (std::set<std::string>{"pid", "ipc", "uts", "mount", "user", "network"}));
  EXPECT_EQ(c.at("root").at("readonly"), true);
  const auto& p = c.at("process").as_object();
  EXPECT_EQ(p.at("noNewPrivileges"), true);
  EXPECT_EQ(p.at("terminal"), true);
  for (const auto& [set, caps] : p.at("capabilities").as_object())
    EXPECT_TRUE(caps.as_array().empty()) << set;
  const auto& uid = c.at("linux").at("uidMappings").as_array().at(0);
  EXPECT_EQ(uid.at("containerID"), 0);
  EXPECT_EQ(uid.at("hostID"), 100000);
}

TEST(OciConfig, NetworkOnlyWhenAllowed) {
  auto s = spec();
  s.limits.network = true;
  EXPECT_EQ(namespaces(config(s, host())).count("network"), 0u);
}

TEST(OciConfig, LimitsBecomeCgroupsAndRlimits) {
  const auto c = config(spec(), host());
  const auto& r = c.at("linux").at("resources");
  EXPECT_EQ(r.at("memory").at("limit"), 64ll << 20);
  EXPECT_EQ(r.at("memory").at("swap"), 64ll << 20);  // memory+swap = memory: no swap
  EXPECT_EQ(r.at("pids").at("limit"), 32);
  EXPECT_EQ(r.at("cpu").at("quota"), 50000);
  EXPECT_EQ(r.at("cpu").at("period"), 100000);
  const auto& rl = c.at("process").at("rlimits").as_array();
  EXPECT_EQ(rl.at(0).at("type"), "RLIMIT_NOFILE");
  EXPECT_EQ(rl.at(0).at("hard"), 1024);
}

TEST(OciConfig, TheHostIsSeenReadOnlyAndTheWorkDirectoryIsBounded) {
  const auto c = config(spec(), host());
  EXPECT_EQ(mount_at(c, "/sys"), nullptr) << "the host's /sys shows every cgroup on the host";
  EXPECT_EQ(mount_at(c, "/etc"), nullptr) << "the host's /etc names its users and services";
  for (const char* d :
       {"/usr", "/bin", "/lib", "/lib64", "/etc/ld.so.cache", "/etc/alternatives", "/project"}) {
    const auto* m = mount_at(c, d);
    ASSERT_NE(m, nullptr) << d;
    EXPECT_TRUE(has_option(*m, "ro")) << d;
    EXPECT_TRUE(has_option(*m, "nosuid")) << d;
  }
  EXPECT_TRUE(has_option(*mount_at(c, "/cache"), "rw"));
  const auto* work = mount_at(c, "/work");
  ASSERT_NE(work, nullptr);
  EXPECT_EQ(work->at("type"), "tmpfs");
  EXPECT_TRUE(has_option(*work, "size=8388608"));
  EXPECT_TRUE(has_option(*work, "nr_inodes=" + std::to_string(spec().limits.files)))
      << "a million empty files fill no bytes: the inodes are bounded";
  EXPECT_TRUE(has_option(*work, "uid=1000"));
}

TEST(OciConfig, TheSandboxsOwnEtcNamesOnlyItsUsers) {
  auto s = spec();
  s.uid = 1234;
  s.gid = 1235;
  std::map<std::string, std::string> files;
  for (auto& [name, text] : etc_files(s)) files[name] = text;
  EXPECT_EQ(files.at("passwd"),
            "root:x:0:0:root:/root:/usr/sbin/nologin\n"
            "kiln:x:1234:1235:Kiln sandbox:/work:/bin/sh\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
  EXPECT_NE(files.at("group").find("kiln:x:1235:"), std::string::npos);
  EXPECT_NE(files.at("group").find("tty:x:5:"), std::string::npos) << "devpts gid=5";
  EXPECT_EQ(files.count("shadow"), 0u);
  for (const auto& p : default_etc_shared()) {
    EXPECT_TRUE(p.starts_with("/etc/")) << p;
    for (const char* secret : {"passwd", "shadow", "group", "ssh", "sudoers", "kiln", "postgres"})
      EXPECT_EQ(p.find(secret), std::string::npos) << p;
  }
}

TEST(OciConfig, SeccompRefusesWhatReachesOutside) {
  const auto c = config(spec(), host());
  const auto& sc = c.at("linux").at("seccomp");
  EXPECT_EQ(sc.at("defaultAction"), "SCMP_ACT_ALLOW");
  const auto& names = sc.at("syscalls").as_array().at(0).at("names").as_array();
  for (const char* n : {"ptrace", "mount", "unshare", "setns", "bpf", "keyctl", "process_vm_readv"})
    EXPECT_NE(std::find(names.begin(), names.end(), json::value(n)), names.end()) << n;
  EXPECT_EQ(sc.at("syscalls").as_array().at(0).at("action"), "SCMP_ACT_ERRNO");
}

TEST(OciConfig, EnvironmentHasPathHomeTermAndTheSpecs) {
  const auto c = config(spec(), host());
  const auto text = json::serialize(c.at("process").at("env"));
  for (const char* v : {"PATH=", "HOME=/work", "TERM=xterm-256color", "LANG=C.UTF-8"})
    EXPECT_NE(text.find(v), std::string::npos) << v;
}

TEST(OciConfig, RefusesASpecThatDoesNotValidate) {
  auto s = spec();
  s.args.clear();
  EXPECT_THROW(config(s, host()), std::invalid_argument);
  auto h = host();
  h.rootfs = "relative";
  EXPECT_THROW(config(spec(), h), std::invalid_argument);
}

}  // namespace
}  // namespace kiln::sandbox::oci
