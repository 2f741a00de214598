#include "clients/redis/cluster.hpp"
#include "clients/redis/reply.hpp"

#include <gtest/gtest.h>

namespace kiln::redis {
namespace {

TEST(Resp, FormatsCommandsWithBinarySafeArguments) {
  EXPECT_EQ(format_command({"SET", "k", std::string("a\0b\r\n", 5)}),
            std::string("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\na\0b\r\n\r\n", 31));
}

TEST(Resp, ParsesRepliesFedInPieces) {
  ReplyParser p;
  const std::string wire = "+OK\r\n:42\r\n$-1\r\n-ERR bad\r\n*2\r\n$3\r\nfoo\r\n*1\r\n:7\r\n";
  for (char c : wire) p.feed(&c, 1);  // one byte at a time
  auto ok = p.next();
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->type, Reply::Type::Status);
  EXPECT_EQ(ok->str, "OK");
  EXPECT_EQ(p.next()->integer, 42);
  EXPECT_TRUE(p.next()->is_nil());
  auto err = p.next();
  EXPECT_TRUE(err->is_error());
  EXPECT_EQ(err->str, "ERR bad");
  auto arr = p.next();
  ASSERT_EQ(arr->elements.size(), 2u);
  EXPECT_EQ(arr->elements[0].str, "foo");
  EXPECT_EQ(arr->elements[1].elements[0].integer, 7);
  EXPECT_FALSE(p.next());
}

TEST(Resp, GarbageIsAProtocolError) {
  ReplyParser p;
  p.feed("?what\r\n", 7);
  EXPECT_THROW(p.next(), std::runtime_error);
}

TEST(Cluster, KeySlotsMatchTheSpec) {
  // Reference values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
  EXPECT_EQ(key_slot("123456789"), 0x31C3 % kSlots);
  EXPECT_EQ(key_slot("foo"), 12182);
  EXPECT_EQ(key_slot("{user1000}.following"), key_slot("{user1000}.followers"));
  EXPECT_EQ(key_slot("{user1000}.following"), key_slot("user1000"));
  EXPECT_EQ(key_slot("foo{}{bar}"), key_slot("foo{}{bar}"));  // empty tag: whole key
  EXPECT_NE(key_slot("foo{}{bar}"), key_slot("bar"));
  EXPECT_EQ(key_slot("foo{{bar}}zap"), key_slot("{bar"));
}

TEST(Cluster, SlotMapFromClusterSlots) {
  auto node = [](const char* host, long long port) {
    Reply n;
    n.type = Reply::Type::Array;
    Reply h;
    h.type = Reply::Type::String;
    h.str = host;
    Reply p;
    p.type = Reply::Type::Integer;
    p.integer = port;
    n.elements = {h, p};
    return n;
  };
  auto integer = [](long long v) {
    Reply r;
    r.type = Reply::Type::Integer;
    r.integer = v;
    return r;
  };
  Reply slots;
  slots.type = Reply::Type::Array;
  Reply a;
  a.type = Reply::Type::Array;
  a.elements = {integer(0), integer(8191), node("10.0.0.1", 7000), node("10.0.0.2", 7001)};
  Reply b;
  b.type = Reply::Type::Array;
  b.elements = {integer(8192), integer(16383), node("10.0.0.3", 7002)};
  slots.elements = {a, b};
  SlotMap m;
  ASSERT_TRUE(m.load(slots));
  EXPECT_EQ(m.primary(0)->str(), "10.0.0.1:7000");
  EXPECT_EQ(m.primary(16383)->str(), "10.0.0.3:7002");
  EXPECT_EQ(m.primaries().size(), 2u);
  EXPECT_FALSE(m.load(integer(3)));
}

TEST(Cluster, Redirects) {
  Reply moved = Reply::error("x");
  moved.str = "MOVED 3999 127.0.0.1:6381";
  auto r = parse_redirect(moved);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->ask);
  EXPECT_EQ(r->slot, 3999);
  EXPECT_EQ(r->to.str(), "127.0.0.1:6381");
  moved.str = "ASK 1 ::1:7000";
  r = parse_redirect(moved);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->ask);
  EXPECT_EQ(r->to.host, "::1");
  moved.str = "ERR something else";
  EXPECT_FALSE(parse_redirect(moved));
  moved.str = "MOVED 99999 h:1";
  EXPECT_FALSE(parse_redirect(moved));
}

}  // namespace
}  // namespace kiln::redis
