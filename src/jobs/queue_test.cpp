// The JobQueue conformance suite on the database adapter over SQLite (the embedded default),
// plus the pure rules (job.hpp): backoff with full jitter, attempt limits, types, clipping.
#include "jobs/database_queue.hpp"
#include "jobs/queue_conformance.hpp"
#include "jobs/test_queue.hpp"

#include <filesystem>

namespace kiln::jobs {
namespace {

store::DatabaseOptions sqlite() {
  return temp_sqlite("jobs-test");
}

INSTANTIATE_TEST_SUITE_P(Sqlite, QueueConformance,
                         ::testing::Values(QueueFactory{
                             "sqlite", [] { return make_database_harness(sqlite()); }}),
                         [](const auto& info) { return info.param.name; });

TEST(Backoff, FullJitterUpToTheCap) {
  const RetryPolicy p{5, std::chrono::milliseconds(1000), std::chrono::milliseconds(6000)};
  EXPECT_EQ(backoff(p, 1, 0.0).count(), 0);
  EXPECT_EQ(backoff(p, 1, 0.999).count(), 999);
  EXPECT_EQ(backoff(p, 2, 0.5).count(), 1000);
  EXPECT_EQ(backoff(p, 3, 0.5).count(), 2000);
  EXPECT_EQ(backoff(p, 4, 0.5).count(), 3000);   // 8 s capped at 6 s
  EXPECT_EQ(backoff(p, 60, 0.5).count(), 3000);  // no overflow however many attempts
  EXPECT_EQ(backoff(p, 1, 7.0).count(), 1000);   // a draw out of range is clamped
}

TEST(Backoff, AttemptsSpentOrAPermanentFailureAreDead) {
  const RetryPolicy p{3, std::chrono::milliseconds(1000), std::chrono::milliseconds(60'000)};
  EXPECT_EQ(after_failure(p, 1, Failure::retryable, 0.5).next, State::queued);
  EXPECT_EQ(after_failure(p, 2, Failure::retryable, 0.5).delay.count(), 1000);
  EXPECT_EQ(after_failure(p, 3, Failure::retryable, 0.5).next, State::dead);
  EXPECT_EQ(after_failure(p, 1, Failure::permanent, 0.5).next, State::dead);
}

TEST(JobTypes, LowercaseDottedNamesOnly) {
  for (const char* ok : {"asset.process", "build.windows-x64", "a", "t_1"})
    EXPECT_TRUE(valid_type(ok)) << ok;
  for (const char* bad : {"", "Asset", "1st", ".x", "a b", "a/b", "é"})
    EXPECT_FALSE(valid_type(bad)) << bad;
  EXPECT_FALSE(valid_type(std::string(65, 'a')));
}

TEST(TypeLimits, ParsedOrRefusedNamingTheItem) {
  auto ok = parse_type_limits(" asset.process=2, build.windows = 1 ", 4);
  ASSERT_TRUE(ok) << ok.error().detail;
  EXPECT_EQ(ok->size(), 2u);
  EXPECT_EQ(ok->at("asset.process"), 2);
  EXPECT_EQ(ok->at("build.windows"), 1);
  EXPECT_TRUE(parse_type_limits("", 4)->empty());
  EXPECT_TRUE(parse_type_limits("  ", 4)->empty());
  for (const auto& [text, says] : std::vector<std::pair<std::string, std::string>>{
           {"asset.process", "'asset.process': not type=n"},
           {"asset.process=0", "from 1 to 4"},
           {"asset.process=5", "from 1 to 4"},
           {"asset.process=+2", "from 1 to 4"},
           {"asset.process=2x", "from 1 to 4"},
           {"asset.process=", "from 1 to 4"},
           {"Asset=1", "'Asset=1': a job type"},
           {"=1", "a job type"},
           {"a=1,a=2", "'a=2': the type is named twice"},
           {"a=1,", "an empty item"},
           {"a=1,,b=1", "an empty item"}}) {
    auto got = parse_type_limits(text, 4);
    ASSERT_FALSE(got) << text;
    EXPECT_EQ(got.error().code, Errc::invalid) << text;
    EXPECT_NE(got.error().detail.find(says), std::string::npos)
        << text << ": " << got.error().detail;
  }
}

TEST(Clip, NeverSplitsAUtf8Sequence) {
  EXPECT_EQ(clip("abc", 10), "abc");
  EXPECT_EQ(clip("abcdef", 3), "abc");
  EXPECT_EQ(clip("a\xC3\xA9", 2), "a");  // é is two bytes: cut before it
  EXPECT_EQ(clip("\xE2\x82\xAC\xE2\x82\xAC", 4), "\xE2\x82\xAC");
}

}  // namespace
}  // namespace kiln::jobs
