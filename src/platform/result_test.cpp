// KILN_TRY and KILN_CHECK (result.hpp): a value goes on, an error returns from the function
// at once (what follows is not run), and an error converts to the caller's error type.
#include "platform/result.hpp"

#include <gtest/gtest.h>

#include <string>

namespace kiln {
namespace {

enum class Why { not_a_number, not_positive };
struct Small {
  Why why;
};
// Made from a Small implicitly, as the API's Refusal from a context's error.
struct Big {
  Big() = default;
  Big(const Small& s) : why(s.why), converted(true) {}  // NOLINT(google-explicit-constructor)
  Why why = Why::not_a_number;
  bool converted = false;
};

Result<int, Small> parse(const std::string& s) {
  if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos)
    return Small{Why::not_a_number};
  return std::stoi(s);
}

Result<void, Small> positive(int v) {
  if (v <= 0) return Small{Why::not_positive};
  return {};
}

Result<int, Big> twice_positive(const std::string& s, int& reached) {
  KILN_TRY(v, parse(s));
  reached = 1;
  KILN_CHECK(positive(v));
  reached = 2;
  return v * 2;
}

TEST(Result, TryAndCheckReturnTheFirstErrorConverted) {
  int reached = 0;
  auto ok = twice_positive("21", reached);
  ASSERT_TRUE(ok);
  EXPECT_EQ(*ok, 42);
  EXPECT_EQ(reached, 2);

  reached = 0;
  auto bad = twice_positive("x", reached);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().why, Why::not_a_number);
  EXPECT_TRUE(bad.error().converted);
  EXPECT_EQ(reached, 0);  // nothing after the failed KILN_TRY ran

  reached = 0;
  auto zero = twice_positive("0", reached);
  ASSERT_FALSE(zero);
  EXPECT_EQ(zero.error().why, Why::not_positive);
  EXPECT_TRUE(zero.error().converted);
  EXPECT_EQ(reached, 1);
}

}  // namespace
}  // namespace kiln
