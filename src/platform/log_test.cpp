#include "platform/log.hpp"

#include <gtest/gtest.h>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

namespace kiln::log {
namespace {

TEST(Log, JsonLineCarriesTimeLevelRoleNodeMessageAndFields) {
  Options o;
  o.role = "gateway";
  o.node = "n1";
  auto line = format_line(o, Level::Warn, "slow \"consumer\"\n",
                          {{"request_id", "r1"}, {"count", 3}, {"ratio", 0.5}, {"ok", true}},
                          "2026-01-01T00:00:00.000000Z");
  auto v = boost::json::parse(line).as_object();
  EXPECT_EQ(v.at("time").as_string(), "2026-01-01T00:00:00.000000Z");
  EXPECT_EQ(v.at("level").as_string(), "warn");
  EXPECT_EQ(v.at("role").as_string(), "gateway");
  EXPECT_EQ(v.at("node").as_string(), "n1");
  EXPECT_EQ(v.at("msg").as_string(), "slow \"consumer\"\n");
  EXPECT_EQ(v.at("request_id").as_string(), "r1");
  EXPECT_EQ(v.at("count").as_int64(), 3);
  EXPECT_EQ(v.at("ratio").as_double(), 0.5);
  EXPECT_EQ(v.at("ok").as_bool(), true);
  EXPECT_EQ(line.find('\n'), std::string::npos) << "one line per record";
}

TEST(Log, HostileFieldValuesStayInsideTheirString) {
  Options o;
  auto line = format_line(o, Level::Info, "m", {{"path", "/x\",\"level\":\"error"}}, "t");
  auto v = boost::json::parse(line).as_object();
  EXPECT_EQ(v.at("level").as_string(), "info");
  EXPECT_EQ(v.at("path").as_string(), "/x\",\"level\":\"error");
}

TEST(Log, ParseLevel) {
  Level l = Level::Info;
  EXPECT_TRUE(parse_level("debug", l));
  EXPECT_EQ(l, Level::Debug);
  EXPECT_FALSE(parse_level("loud", l));
}

}  // namespace
}  // namespace kiln::log
