#include "sandbox/spec.hpp"

#include <gtest/gtest.h>

namespace kiln::sandbox {
namespace {

SandboxSpec good() {
  SandboxSpec s;
  s.id = "u42-shell-1";
  s.args = {"/bin/sh", "-c", "echo hi"};
  s.env = {{"LANG", "C.UTF-8"}};
  s.mounts = {{"/srv/kiln/projects/demo", "/project", true}};
  return s;
}

TEST(SandboxSpec, AGoodSpecPasses) {
  EXPECT_EQ(validate(good()), "");
}

TEST(SandboxSpec, EachRuleNamesItsField) {
  auto with = [](auto change) {
    auto s = good();
    change(s);
    return validate(s);
  };
  EXPECT_NE(with([](auto& s) { s.id = "-x"; }).find("id"), std::string::npos);
  EXPECT_NE(with([](auto& s) { s.id = "Shell"; }).find("id"), std::string::npos);
  EXPECT_NE(with([](auto& s) { s.id = std::string(65, 'a'); }).find("id"), std::string::npos);
  EXPECT_NE(with([](auto& s) { s.args.clear(); }).find("args"), std::string::npos);
  EXPECT_NE(with([](auto& s) { s.args.push_back(std::string("a\0b", 3)); }).find("NUL"),
            std::string::npos);
  EXPECT_NE(with([](auto& s) { s.args = {std::string(130 * 1024, 'x')}; }).find("128 KiB"),
            std::string::npos);
  EXPECT_NE(with([](auto& s) { s.env = {{"1X", "v"}}; }).find("env"), std::string::npos);
  EXPECT_NE(with([](auto& s) { s.env = {{"A=B", "v"}}; }).find("env"), std::string::npos);
  EXPECT_NE(with([](auto& s) { s.cwd = "work"; }).find("cwd"), std::string::npos);
  EXPECT_NE(with([](auto& s) { s.cwd = "/work/../etc"; }).find("cwd"), std::string::npos);
  EXPECT_NE(with([](auto& s) { s.mounts[0].source = "/srv//x"; }).find("source"),
            std::string::npos);
  EXPECT_NE(with([](auto& s) { s.mounts[0].destination = "/"; }).find("destination"),
            std::string::npos);
  EXPECT_NE(with([](auto& s) { s.mounts[0].destination = "/proc/1"; }).find("/proc"),
            std::string::npos);
  EXPECT_NE(with([](auto& s) { s.mounts[0].destination = "/dev"; }).find("/dev"),
            std::string::npos);
  EXPECT_EQ(with([](auto& s) { s.mounts[0].destination = "/devices"; }), "");  // not under /dev
  EXPECT_NE(with([](auto& s) { s.mounts.push_back(s.mounts[0]); }).find("twice"),
            std::string::npos);
  EXPECT_NE(with([](auto& s) { s.limits.memory_bytes = 1 << 20; }).find("memory"),
            std::string::npos);
  EXPECT_NE(with([](auto& s) { s.limits.pids = 0; }).find("pids"), std::string::npos);
  EXPECT_NE(with([](auto& s) { s.limits.cpus = 0; }).find("cpus"), std::string::npos);
  EXPECT_NE(with([](auto& s) { s.limits.cpus = 0.0 / 0.0; }).find("cpus"), std::string::npos);
  EXPECT_NE(with([](auto& s) { s.limits.disk_bytes = 0; }).find("disk"), std::string::npos);
  // tmpfs is memory: a /work as large as the memory limit would be an OOM kill, not ENOSPC.
  EXPECT_NE(with([](auto& s) {
              s.limits.memory_bytes = 512ull << 20;
              s.limits.disk_bytes = 1ull << 30;
            }).find("count against limits.memory_bytes"),
            std::string::npos);
  EXPECT_EQ(with([](auto& s) {
              s.limits.memory_bytes = 512ull << 20;
              s.limits.disk_bytes = 384ull << 20;
            }),
            "");
  EXPECT_NE(with([](auto& s) { s.limits.files = 1; }).find("limits.files"), std::string::npos);
  EXPECT_NE(with([](auto& s) { s.limits.open_files = 3; }).find("open_files"), std::string::npos);
}

TEST(SandboxSpec, PathsMustBeAbsoluteAndNormalised) {
  for (const char* ok : {"/", "/work", "/a/b.c/d-e"}) EXPECT_TRUE(clean_absolute_path(ok)) << ok;
  for (const char* bad : {"", "work", "/work/", "/a//b", "/a/./b", "/a/../b", "/.."})
    EXPECT_FALSE(clean_absolute_path(bad)) << bad;
}

}  // namespace
}  // namespace kiln::sandbox
