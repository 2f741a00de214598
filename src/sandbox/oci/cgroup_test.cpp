// The OOM counter's place and value (cgroup.hpp), from the texts Linux writes.
#include "sandbox/oci/cgroup.hpp"

#include <gtest/gtest.h>

namespace kiln::sandbox::oci {
namespace {

TEST(OomCounter, CgroupsV1NameTheMemoryControllersFile) {
  // A hybrid host (this one): v1 controllers and an empty unified hierarchy.
  const char* text =
      "9:name=systemd:/\n8:pids:/process_api/abc/t1\n4:memory:/process_api/abc/t1\n"
      "1:cpu,cpuacct:/process_api/abc/t1\n0::/\n";
  EXPECT_EQ(oom_counter_file(text), "/sys/fs/cgroup/memory/process_api/abc/t1/memory.oom_control");
  EXPECT_EQ(oom_counter_file("5:cpuacct,memory:/k/t2\n"),
            "/sys/fs/cgroup/cpuacct,memory/k/t2/memory.oom_control")
      << "controllers mounted together";
}

TEST(OomCounter, CgroupsV2NameTheUnifiedFile) {
  EXPECT_EQ(oom_counter_file("0::/kubepods/pod1/t3\n"),
            "/sys/fs/cgroup/kubepods/pod1/t3/memory.events");
  EXPECT_EQ(oom_counter_file("0::/\n"), "/sys/fs/cgroup/memory.events");
}

TEST(OomCounter, WhatIsNotACgroupFileNamesNothing) {
  EXPECT_EQ(oom_counter_file(""), std::nullopt);
  EXPECT_EQ(oom_counter_file("garbage\n4:memory:relative\n"), std::nullopt);
  EXPECT_EQ(oom_counter_file("4:memory:/a/../../etc\n"), std::nullopt) << "no climbing out";
}

TEST(OomCounter, TheCountIsReadFromEitherFile) {
  EXPECT_EQ(oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"), 3u);  // v1
  EXPECT_EQ(oom_kills("low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n"), 1u);
  EXPECT_EQ(oom_kills("oom_kill_disable 0\nunder_oom 0\n"), std::nullopt) << "before 4.13";
  EXPECT_EQ(oom_kills("oom_kill x\n"), std::nullopt);
}

}  // namespace
}  // namespace kiln::sandbox::oci
