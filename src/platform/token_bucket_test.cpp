#include "platform/token_bucket.hpp"

#include <gtest/gtest.h>

namespace kiln {
namespace {

using namespace std::chrono_literals;

TEST(TokenBucket, BurstThenRate) {
  auto t0 = TokenBucket::Clock::time_point{};
  TokenBucket b(10, 5, t0);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(b.take(t0));
  EXPECT_FALSE(b.take(t0));
  EXPECT_FALSE(b.take(t0 + 50ms));  // half a token
  EXPECT_TRUE(b.take(t0 + 100ms));
  EXPECT_FALSE(b.take(t0 + 100ms));
  // A long pause saves up at most `burst`.
  int taken = 0;
  while (b.take(t0 + 10s)) ++taken;
  EXPECT_EQ(taken, 5);
}

}  // namespace
}  // namespace kiln
