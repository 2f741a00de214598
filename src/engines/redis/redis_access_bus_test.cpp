// The access bus's wire form: every kind of change survives the trip through Redis, and a
// message this node cannot read is dropped, never applied as something else.
#include "engines/redis/redis_access_bus.hpp"

#include <gtest/gtest.h>

namespace kiln::engines {
namespace {

using Kind = collab::AccessChange::Kind;

TEST(RedisAccessBusCodec, EveryKindRoundTrips) {
  for (auto kind : {Kind::Role, Kind::ProjectDeleted, Kind::Revoked, Kind::SceneDeleted,
                    Kind::SceneCreated, Kind::Notify}) {
    collab::AccessChange c{kind, "ann", "p", "viewer", "level-1", R"({"kind":"asset"})"};
    auto back = RedisAccessBus::decode(RedisAccessBus::encode(c));
    ASSERT_TRUE(back);
    EXPECT_EQ(back->kind, kind);
    EXPECT_EQ(back->user, "ann");
    EXPECT_EQ(back->project, "p");
    EXPECT_EQ(back->role, "viewer");
    EXPECT_EQ(back->scene, "level-1");
    EXPECT_EQ(back->payload, R"({"kind":"asset"})");
  }
}

TEST(RedisAccessBusCodec, UnknownOrBrokenMessagesAreDropped) {
  EXPECT_FALSE(RedisAccessBus::decode(R"({"k":"grant_all","u":"","p":"","r":""})"));
  EXPECT_FALSE(RedisAccessBus::decode(R"({"k":"role","u":"ann"})"));
  EXPECT_FALSE(RedisAccessBus::decode("not json"));
  EXPECT_FALSE(RedisAccessBus::decode(R"({"k":"notify","u":"ann","p":"p","r":""})"));
  // A message from an older node (no scene) still reads.
  auto old = RedisAccessBus::decode(R"({"k":"role","u":"ann","p":"p","r":""})");
  ASSERT_TRUE(old);
  EXPECT_EQ(old->scene, "");
}

}  // namespace
}  // namespace kiln::engines
