#include "sandbox/scrollback.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace kiln::sandbox {
namespace {

TEST(Scrollback, OffsetsCountEveryByteEverWritten) {
  Scrollback s(8);
  EXPECT_EQ(s.append("hello"), 5u);
  EXPECT_EQ(s.append(" world"), 11u);  // "hello world": 11 bytes, the ring holds the last 8
  EXPECT_EQ(s.begin(), 3u);
  EXPECT_EQ(s.end(), 11u);
  auto r = s.read(3, 100);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->from, 3u);
  EXPECT_EQ(r->bytes, "lo world");
  EXPECT_EQ(r->lost, 0u);
}

TEST(Scrollback, AReaderBehindTheRingIsToldWhatWasLost) {
  Scrollback s(4);
  s.append("abcdefgh");
  auto r = s.read(1, 100);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->from, 4u);
  EXPECT_EQ(r->lost, 3u);
  EXPECT_EQ(r->bytes, "efgh");
}

TEST(Scrollback, AnOffsetPastTheEndIsNotOfThisStream) {
  Scrollback s(4);
  s.append("ab");
  EXPECT_FALSE(s.read(3, 10));
  auto at_end = s.read(2, 10);
  ASSERT_TRUE(at_end);
  EXPECT_EQ(at_end->bytes, "");
  EXPECT_EQ(at_end->from, 2u);
}

TEST(Scrollback, ReadsAreBoundedByMax) {
  Scrollback s(16);
  s.append("0123456789");
  auto r = s.read(2, 3);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->bytes, "234");
  EXPECT_EQ(r->from, 2u);
}

TEST(Scrollback, AWriteLargerThanTheRingKeepsItsTail) {
  Scrollback s(3);
  s.append("x");
  EXPECT_EQ(s.append("123456"), 7u);
  auto r = s.read(0, 10);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->bytes, "456");
  EXPECT_EQ(r->lost, 4u);
}

TEST(Scrollback, ZeroCapacityHoldsOneByte) {
  Scrollback s(0);
  EXPECT_EQ(s.capacity(), 1u);
  s.append("ab");
  EXPECT_EQ(s.read(0, 10)->bytes, "b");
}

// Against the whole stream kept in a string: random writes (sizes around and above the
// capacity, so the ring wraps in every position) and random reads agree on every byte.
TEST(Scrollback, AgreesWithTheWholeStream) {
  std::mt19937 rng(20261202);
  for (std::size_t cap : {1u, 2u, 7u, 64u, 1000u}) {
    Scrollback s(cap);
    std::string all;
    for (int step = 0; step < 2000; ++step) {
      std::string chunk(std::uniform_int_distribution<std::size_t>(0, cap * 2)(rng), '\0');
      for (auto& c : chunk) c = static_cast<char>(rng());
      all += chunk;
      ASSERT_EQ(s.append(chunk), all.size());
      const std::uint64_t begin = all.size() > cap ? all.size() - cap : 0;
      ASSERT_EQ(s.begin(), begin);
      const auto offset = std::uniform_int_distribution<std::uint64_t>(0, all.size())(rng);
      const auto max = std::uniform_int_distribution<std::size_t>(0, cap + 3)(rng);
      auto r = s.read(offset, max);
      ASSERT_TRUE(r);
      const auto from = std::max<std::uint64_t>(offset, begin);
      ASSERT_EQ(r->from, from);
      ASSERT_EQ(r->lost, from - offset);
      ASSERT_EQ(r->bytes, all.substr(from, max)) << "cap " << cap << " step " << step;
    }
  }
}

}  // namespace
}  // namespace kiln::sandbox
