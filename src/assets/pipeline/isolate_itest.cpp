// convert_in_child against stand-in children (small shell scripts): how the parent names
// each way a child can end. The real child (`kiln convert --child`) on real and hostile
// models is tests/e2e/test_pipeline.py.
#include "assets/pipeline/isolate.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace pl = kiln::assets::pipeline;
namespace fs = std::filesystem;

namespace {

class Isolate : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("kiln-isolate-" + std::to_string(::getpid()));
    fs::create_directories(dir_ / "out");
  }
  void TearDown() override { fs::remove_all(dir_); }

  pl::ChildRequest child(const std::string& body) {
    const auto script = dir_ / "child.sh";
    std::ofstream(script) << "#!/bin/sh\n" << body << "\n";
    fs::permissions(script, fs::perms::owner_all);
    pl::ChildRequest r;
    r.executable = script.string();
    r.input = "/dev/null";
    r.file_name = "model.obj";
    r.out_dir = (dir_ / "out").string();
    return r;
  }
  fs::path dir_;
};

TEST_F(Isolate, ReportsProgressThenReadsTheManifest) {
  auto r = child(R"(echo '{"stage":"import","percent":0}'
echo '{"stage":"lod","percent":30}'
echo '{"pipeline":"x","levels":[]}' > "$7"/manifest.json
echo '{"ok":true}')");
  // $7 is the value of --out in the child's argv (isolate.cpp's order).
  std::vector<std::pair<std::string, int>> seen;
  auto m = pl::convert_in_child(r, [&](std::string_view s, int p) { seen.emplace_back(s, p); });
  ASSERT_TRUE(m) << m.error().detail;
  EXPECT_EQ(m->at("pipeline").as_string(), "x");
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1].first, "lod");
  EXPECT_EQ(seen[1].second, 30);
}

TEST_F(Isolate, PassesTheChildsRefusalOn) {
  auto r = child(R"(echo '{"error":{"code":"malformed","detail":"index 7 is out of range"}}'
exit 3)");
  auto m = pl::convert_in_child(r);
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, pl::Errc::malformed);
  EXPECT_EQ(m.error().detail, "index 7 is out of range");
}

TEST_F(Isolate, ACrashIsAFailedAttemptNotTheCallers) {
  auto r = child("kill -SEGV $$");
  auto m = pl::convert_in_child(r);
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, pl::Errc::crashed);
  EXPECT_NE(m.error().detail.find("SEGV"), std::string::npos) << m.error().detail;
}

TEST_F(Isolate, AChildPastItsCpuTimeIsStopped) {
  auto r = child("kill -XCPU $$");
  auto m = pl::convert_in_child(r);
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, pl::Errc::limits);
}

TEST_F(Isolate, AHungChildIsKilledOnTheWallClock) {
  // It blocks without using CPU (RLIMIT_CPU never fires); its own child keeps the pipe open
  // too, so the whole process group must go.
  auto r = child("sleep 600 & wait");
  r.limits.wall = std::chrono::seconds(1);
  auto m = pl::convert_in_child(r);
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, pl::Errc::limits);
  EXPECT_NE(m.error().detail.find("longer than 1 s"), std::string::npos);
}

TEST_F(Isolate, AStoppedCallerKillsItsChild) {
  // The child would wait ten minutes; the caller stops at its first check (once a second).
  auto r = child("echo '{\"stage\":\"import\",\"percent\":0}'\nsleep 600 & wait");
  int asked = 0;
  auto m = pl::convert_in_child(r, {}, [&] { return ++asked > 1; });
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, pl::Errc::stopped);
  EXPECT_GE(asked, 2);
}

TEST_F(Isolate, AChildThatSaysNothingHasCrashed) {
  auto r = child("exit 0");
  auto m = pl::convert_in_child(r);
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, pl::Errc::crashed);
}

TEST_F(Isolate, AMissingExecutableIsOurFault) {
  auto r = child("");
  r.executable = (dir_ / "nope").string();
  auto m = pl::convert_in_child(r);
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, pl::Errc::internal);
}

}  // namespace
