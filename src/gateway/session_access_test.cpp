// A session's access while it is open: reads of the database, changes on the access bus,
// and the order between them (session_access.cpp).
#include "gateway/test_session.hpp"

namespace kiln::gateway::test {
namespace {

TEST_F(InRoom, ADemotionReadFromTheDatabaseIsAppliedAndTold) {
  access.roles["ann"] = auth::Role::Viewer;
  a.session->revalidate("p", access);
  auto n = a.transport->last();
  EXPECT_EQ(n.at("t").as_string(), "notify");
  op(10, "p/s");
  EXPECT_EQ(a.transport->last().at("message").as_string(), "viewers cannot edit");
  EXPECT_FALSE(a.transport->closed);
}

TEST_F(InRoom, ARemovalReadFromTheDatabaseCloses4003) {
  access.roles.erase("ann");
  a.session->revalidate("p", access);
  ASSERT_TRUE(a.transport->closed);
  EXPECT_EQ(a.transport->closed->first, Close::Forbidden);
  EXPECT_NE(a.transport->closed->second.find("removed"), std::string::npos);
}

TEST_F(InRoom, ADeletedProjectCloses4003) {
  access = ProjectAccess{};
  a.session->revalidate("p", access);
  ASSERT_TRUE(a.transport->closed);
  EXPECT_NE(a.transport->closed->second.find("deleted"), std::string::npos);
}

TEST_F(InRoom, ADeletedSceneEndsOnlyItsRoom) {
  access.scenes.erase("s");
  a.session->revalidate("p", access);
  auto left = a.transport->last();
  EXPECT_EQ(left.at("t").as_string(), "left");
  EXPECT_EQ(left.at("room").as_string(), "p/s");
  EXPECT_TRUE(left.contains("reason"));
  EXPECT_FALSE(a.transport->closed);
  op(10, "p/s");
  EXPECT_EQ(a.transport->last().at("message").as_string(), "join the room first");
  op(11, "p/t");
  EXPECT_EQ(a.transport->last().at("t").as_string(), "ack");
}

TEST_F(InRoom, ASceneDeletedOnTheBusEndsItsRoom) {
  collab::AccessChange c;
  c.kind = collab::AccessChange::Kind::SceneDeleted;
  c.project = "p";
  c.scene = "t";
  a.session->apply_access(c);
  EXPECT_EQ(a.transport->last().at("room").as_string(), "p/t");
  EXPECT_EQ(a.session->projects(), std::vector<std::string>{"p"});
}

TEST_F(InRoom, NothingChangedSendsNothing) {
  const auto before = a.transport->frames.size();
  a.session->revalidate("p", access);
  a.session->revalidate("other", ProjectAccess{});
  EXPECT_EQ(a.transport->frames.size(), before);
  EXPECT_FALSE(a.transport->closed);
}

// A role announced on the access bus: told when it changes the session's role in its rooms
// or names a project the session has no room of; the role the session already has (an
// announcement arriving after the join read it) is not news.
TEST_F(InRoom, ARoleOnTheBusIsToldOnlyWhenItIsNews) {
  collab::AccessChange c;
  c.kind = collab::AccessChange::Kind::Role;
  c.user = "ann";
  c.project = "p";
  c.role = auth::to_string(access.roles.at("ann"));
  const auto before = a.transport->frames.size();
  a.session->apply_access(c);
  EXPECT_EQ(a.transport->frames.size(), before) << "the role it has";
  c.role = "viewer";
  a.session->apply_access(c);
  EXPECT_EQ(a.transport->last().at("t").as_string(), "notify");
  EXPECT_EQ(a.transport->last().at("role").as_string(), "viewer");
  op(10, "p/s");
  EXPECT_EQ(a.transport->last().at("message").as_string(), "viewers cannot edit");
  c.project = "elsewhere";
  c.role = "editor";
  a.session->apply_access(c);
  EXPECT_EQ(a.transport->last().at("project").as_string(), "elsewhere")
      << "a role in a new project";
}

// Reads of the database answer out of order with the bus: a read begun before a change
// (numbered below the change's known_from) must not undo it when it answers after. The e2e
// suite on Redis Cluster once saw a promotion told, then undone by such a read, and the
// promoted member's next op refused.
TEST_F(InRoom, AReadOlderThanAnAnnouncedChangeDoesNotUndoIt) {
  collab::AccessChange c;
  c.kind = collab::AccessChange::Kind::Role;
  c.user = "ann";
  c.project = "p";
  c.role = "viewer";
  a.session->apply_access(c, 7);
  EXPECT_EQ(a.transport->last().at("role").as_string(), "viewer");
  const auto told = a.transport->frames.size();
  ProjectAccess before = access;  // ann still an editor: read before the change
  before.read = 6;
  a.session->revalidate("p", before);
  EXPECT_EQ(a.transport->frames.size(), told) << "nothing told from the older read";
  op(10, "p/s");
  EXPECT_EQ(a.transport->last().at("message").as_string(), "viewers cannot edit");
  // Reads from the change on apply: the database promotes her again.
  access.read = 8;
  a.session->revalidate("p", access);
  EXPECT_EQ(a.transport->last().at("role").as_string(), "editor");
  op(11, "p/s");
  EXPECT_EQ(a.transport->last().at("t").as_string(), "ack");
  // Another project's change does not hold back this one's reads.
  c.project = "q";
  a.session->apply_access(c, 100);
  access.read = 9;
  access.roles["ann"] = auth::Role::Viewer;
  a.session->revalidate("p", access);
  EXPECT_EQ(a.transport->last().at("role").as_string(), "viewer");
}

// A join whose decision was read before a change announced while it waited is decided
// again, from a read that reflects the change.
TEST_F(SessionTest, AJoinDecidedFromAReadOlderThanAnAnnouncedChangeIsDecidedAgain) {
  auto a = connect("sa");
  hello(a, "ann");
  hold_decisions = true;
  access.read = 3;  // ann an editor
  a.session->on_text(R"({"t":"join","id":2,"room":"p/s"})", t0);
  ASSERT_EQ(held_decisions.size(), 1u);
  collab::AccessChange c;
  c.kind = collab::AccessChange::Kind::Role;
  c.user = "ann";
  c.project = "p";
  c.role = "viewer";
  a.session->apply_access(c, 4);
  access.roles["ann"] = auth::Role::Viewer;  // what reads from 4 on say
  auto stale = std::move(held_decisions.front());
  held_decisions.clear();
  access.read = 3;
  stale();
  ASSERT_EQ(held_decisions.size(), 1u) << "asked again";
  EXPECT_NE(a.transport->last().at("t").as_string(), "joined");
  access.read = 4;
  held_decisions.front()();
  EXPECT_EQ(a.transport->last().at("t").as_string(), "joined");
  a.session->on_text(
      R"({"t":"op","id":3,"room":"p/s","ops":[{"op":"create","entity":"e","parent":"root"}]})", t0);
  EXPECT_EQ(a.transport->last().at("message").as_string(), "viewers cannot edit");
}

// A scene deleted while a join of its room waited: the join is refused, and the session is
// not left a member of a room it does not hold.
TEST_F(SessionTest, ASceneDeletedWhileItsJoinWaitsEndsTheJoin) {
  auto a = connect("sa");
  hello(a, "ann");
  hold_decisions = true;
  a.session->on_text(R"({"t":"join","id":2,"room":"p/s"})", t0);
  collab::AccessChange c;
  c.kind = collab::AccessChange::Kind::SceneDeleted;
  c.project = "p";
  c.scene = "s";
  a.session->apply_access(c, 1);
  held_decisions.front()();  // let in by a read from before the deletion
  EXPECT_EQ(held_decisions.size(), 1u) << "nothing to ask again: the room is gone";
  auto n = a.transport->last();
  EXPECT_EQ(n.at("t").as_string(), "nack");
  EXPECT_EQ(n.at("code").as_string(), "not_found");
  EXPECT_TRUE(a.session->projects().empty());
  for (const auto& f : a.transport->frames)
    EXPECT_EQ(f.find(R"("t":"joined")"), std::string::npos) << f;
}

}  // namespace
}  // namespace kiln::gateway::test
