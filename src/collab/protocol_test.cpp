#include "collab/protocol.hpp"

#include <gtest/gtest.h>
#include <boost/json/parse.hpp>

namespace kiln::collab {
namespace {

namespace json = boost::json;

TEST(Protocol, DecodesEveryClientMessage) {
  auto d = decode(R"({"t":"hello","id":1,"token":"abc"})");
  ASSERT_EQ(d.kind, Decoded::Kind::Message);
  EXPECT_EQ(std::get<msg::Hello>(d.message).token, "abc");

  d = decode(R"({"t":"join","id":2,"room":"p1/s1","since":{"epoch":"e","seq":7}})");
  ASSERT_EQ(d.kind, Decoded::Kind::Message);
  auto j = std::get<msg::Join>(d.message);
  EXPECT_EQ(j.room, "p1/s1");
  ASSERT_TRUE(j.since.has_value());
  EXPECT_EQ(j.since->seq, 7u);

  d = decode(R"({"t":"op","id":3,"room":"p/s","ops":[]})");
  ASSERT_EQ(d.kind, Decoded::Kind::Message);
  EXPECT_TRUE(std::get<msg::Op>(d.message).ops.is_array());

  d = decode(R"({"t":"eph","room":"p/s","kind":"cursor","data":{"x":1}})");
  ASSERT_EQ(d.kind, Decoded::Kind::Message);
  EXPECT_EQ(std::get<msg::Eph>(d.message).data, R"({"x":1})");

  EXPECT_EQ(decode(R"({"t":"leave","id":4,"room":"p/s"})").kind, Decoded::Kind::Message);
  EXPECT_EQ(decode(R"({"t":"ping","id":5})").kind, Decoded::Kind::Message);
}

TEST(Protocol, ProtocolErrorsAreFatal4000) {
  for (const char* bad :
       {"", "not json", "[1,2]", "{\"id\":1}", R"({"t":5})", R"({"t":"dance","id":1})",
        R"({"t":"ping"})", R"({"t":"ping","id":"1"})", R"({"t":"ping","id":1.5})",
        R"({"t":"hello","id":1})", R"({"t":"join","id":1})", R"({"t":"op","id":1,"room":"p/s"})",
        R"({"t":"eph","room":"p/s","kind":"c"})", "{\"t\":\"ping\",\"id\":1e400}"}) {
    auto d = decode(bad);
    EXPECT_EQ(d.kind, Decoded::Kind::Fatal) << bad;
    EXPECT_EQ(d.close, Close::Protocol) << bad;
  }
}

TEST(Protocol, DeepNestingIsRefusedWithoutRecursion) {
  std::string deep = R"({"t":"eph","room":"p/s","kind":"k","data":)";
  for (int i = 0; i < 100000; ++i) deep += "[";
  EXPECT_EQ(decode(deep).kind, Decoded::Kind::Fatal);
}

TEST(Protocol, InvalidUtf8IsRefused) {
  EXPECT_EQ(decode("{\"t\":\"hello\",\"id\":1,\"token\":\"\xff\xfe\"}").kind, Decoded::Kind::Fatal);
}

TEST(Protocol, BadValuesWithAnIdAreNacks) {
  auto d = decode(R"({"t":"join","id":9,"room":"no-slash"})");
  EXPECT_EQ(d.kind, Decoded::Kind::Nack);
  EXPECT_EQ(d.id, 9);
  EXPECT_EQ(d.error.code, Code::Invalid);
  d = decode(R"({"t":"join","id":9,"room":"p/s","since":{"epoch":"e","seq":-1}})");
  EXPECT_EQ(d.kind, Decoded::Kind::Nack);
  d = decode(R"({"t":"eph","room":"p/s","kind":")" + std::string(33, 'k') + R"(","data":{}})");
  EXPECT_EQ(d.kind, Decoded::Kind::Nack);
  d = decode(R"({"t":"eph","room":"p/s","kind":"k","data":{"s":")" + std::string(5000, 'x') +
             R"("}})");
  EXPECT_EQ(d.kind, Decoded::Kind::Nack);
  EXPECT_EQ(d.error.code, Code::TooLarge);
}

TEST(Protocol, RoomsAreProjectSlashScene) {
  EXPECT_TRUE(valid_room("proj-1/scene_2"));
  EXPECT_FALSE(valid_room("proj"));
  EXPECT_FALSE(valid_room("a/b/c"));
  EXPECT_FALSE(valid_room("/b"));
  EXPECT_FALSE(valid_room("a/"));
  EXPECT_EQ(room_project("proj/scene"), "proj");
}

TEST(Protocol, EncodedFramesAreValidJson) {
  auto v = json::parse(encode::welcome(1, "s", "n", "u\"1", "Ann", 15000)).as_object();
  EXPECT_EQ(v.at("user").at("id").as_string(), "u\"1");
  v = json::parse(encode::nack(3, "p/s", Code::Cycle, "no")).as_object();
  EXPECT_EQ(v.at("code").as_string(), "cycle");
  v = json::parse(encode::ack(3, "p/s", 42)).as_object();
  EXPECT_EQ(v.at("seq").as_int64(), 42);
  encode::PresenceMember m{"u", "s", "Ann", {{"cursor", R"({"x":1})"}}};
  auto frame = std::make_shared<const std::string>(encode::ops("p/s", 1, "u", json::array{}));
  v = json::parse(encode::joined(2, "p/s", "ep", 1, true, {frame}, nullptr, {m})).as_object();
  EXPECT_EQ(v.at("ops").as_array().at(0).at("t").as_string(), "ops");
  EXPECT_EQ(v.at("presence").at(0).at("eph").at("cursor").at("x").as_int64(), 1);
  EXPECT_FALSE(v.contains("snapshot"));
  json::object snap{{"entities", json::object{}}};
  v = json::parse(encode::joined(2, "p/s", "ep", 1, false, {}, &snap, {})).as_object();
  EXPECT_TRUE(v.at("snapshot").at("entities").is_object());
  EXPECT_FALSE(v.contains("ops"));
  v = json::parse(encode::presence("p/s", {m}, {"gone"})).as_object();
  EXPECT_EQ(v.at("left").at(0).as_string(), "gone");
  EXPECT_FALSE(v.at("joined").at(0).as_object().contains("eph"));
}

}  // namespace
}  // namespace kiln::collab
