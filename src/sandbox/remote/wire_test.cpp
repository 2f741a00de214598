// The sandbox host's wire (wire.hpp): sessions and opens as JSON both ways, the cluster's
// session ids, error names. Pure.
#include "sandbox/remote/wire.hpp"

#include <gtest/gtest.h>
#include <boost/json.hpp>

namespace kiln::sandbox::remote {
namespace {

namespace json = boost::json;

TEST(SandboxWire, ASessionGoesAndComesBackWhole) {
  SessionInfo s;
  s.id = "t0123";
  s.owner = "ann";
  s.command = {"sh", "-c", "exit 3"};
  s.created_at = 1'800'000'000'000;
  s.running = false;
  s.end = 42;
  s.attached = 2;
  s.exit = Exit{Exit::Reason::out_of_memory, 137, 9, "killed at the sandbox's memory limit"};
  auto back = session_from_json(json::parse(json::serialize(to_json(s))));
  ASSERT_TRUE(back) << back.error().detail;
  EXPECT_EQ(back->id, s.id);
  EXPECT_EQ(back->owner, s.owner);
  EXPECT_EQ(back->command, s.command);
  EXPECT_EQ(back->created_at, s.created_at);
  EXPECT_FALSE(back->running);
  EXPECT_EQ(back->end, 42u);
  EXPECT_EQ(back->attached, 2u);
  ASSERT_TRUE(back->exit);
  EXPECT_EQ(back->exit->reason, Exit::Reason::out_of_memory);
  EXPECT_EQ(back->exit->code, 137);
  EXPECT_EQ(back->exit->signal, 9);
  EXPECT_EQ(back->exit->message, s.exit->message);
  EXPECT_TRUE(to_json(SessionInfo{}).at("command").is_null()) << "the shell: null";
}

TEST(SandboxWire, WhatIsNotASessionIsSaidSo) {
  for (const char* bad :
       {R"([])", R"({"id":"t"})",
        R"({"id":"t","owner":"a","created_at":1,"running":true,"end":0,)"
        R"("attached":0,"exit":{"code":0,"signal":0,"reason":"eaten","message":""}})"}) {
    auto r = session_from_json(json::parse(bad));
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, Errc::failed);
  }
}

TEST(SandboxWire, AnOpensBodyIsCheckedMemberByMember) {
  auto ok =
      opening_from_json(json::parse(R"({"rows":30,"cols":100,"command":["ls","-l"]})").as_object());
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->size.rows, 30);
  EXPECT_EQ(ok->size.cols, 100);
  EXPECT_EQ(ok->command, (std::vector<std::string>{"ls", "-l"}));
  auto round = opening_from_json(to_json(*ok));
  ASSERT_TRUE(round);
  EXPECT_EQ(round->command, ok->command);
  for (const char* bad :
       {R"({"rows":0})", R"({"cols":1001})", R"({"rows":"30"})", R"({"command":[]})",
        R"({"command":"ls"})", R"({"command":["ls",1]})", R"({"shell":"/bin/zsh"})"}) {
    auto r = opening_from_json(json::parse(bad).as_object());
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, Errc::invalid) << bad;
  }
}

TEST(SandboxWire, AClusterIdNamesItsHost) {
  const auto key = host_key("10.0.0.7:7710");
  EXPECT_EQ(key.size(), 8u);
  EXPECT_EQ(key, host_key("10.0.0.7:7710")) << "stable";
  EXPECT_NE(key, host_key("10.0.0.8:7710"));
  const auto id = cluster_id(key, "t6be8f678d8f42689dc08");
  auto parts = split_id(id);
  ASSERT_TRUE(parts);
  EXPECT_EQ(parts->first, key);
  EXPECT_EQ(parts->second, "t6be8f678d8f42689dc08");
  for (const char* bad : {"", "t6be8f678d8f42689dc08", "zzzzzzzz-t1", "0123abcd-", "0123abcd_t1"})
    EXPECT_FALSE(split_id(bad)) << bad;
}

TEST(SandboxWire, ErrorNamesGoBothWays) {
  for (auto e : {Errc::invalid, Errc::unavailable, Errc::not_running, Errc::failed, Errc::not_found,
                 Errc::quota, Errc::busy}) {
    EXPECT_EQ(errc_from_name(errc_name(e)), e);
    EXPECT_GE(errc_status(e), 400);
  }
  EXPECT_FALSE(errc_from_name("eaten"));
  EXPECT_EQ(errc_status(Errc::quota), 409);
  EXPECT_EQ(errc_status(Errc::not_found), 404);
}

}  // namespace
}  // namespace kiln::sandbox::remote
