// The session tests' fixture (session_test.cpp, session_access_test.cpp): a Session without
// sockets, frames in, frames and closes out, on the memory room engine.
#pragma once

#include "gateway/session.hpp"

#include "engines/memory/memory_engine.hpp"
#include "platform/metrics.hpp"

#include <gtest/gtest.h>
#include <boost/json/parse.hpp>

namespace kiln::gateway::test {

namespace json = boost::json;
using collab::Close;

constexpr const char* kSecret = "unit-test-secret-0123456789abcdef0123";

struct FakeTransport : Transport {
  std::vector<std::string> frames;
  std::optional<std::pair<Close, std::string>> closed;
  void send(std::shared_ptr<const std::string> f) override { frames.push_back(*f); }
  void close(Close code, std::string reason) override {
    if (!closed) closed.emplace(code, std::move(reason));
  }
  // Runs tasks at once, or (deferred) when the test calls run_tasks().
  void run(std::function<void()> fn) override {
    if (deferred) {
      tasks.push_back(std::move(fn));
    } else {
      fn();
    }
  }
  void run_tasks() {
    while (!tasks.empty()) {
      auto fn = std::move(tasks.front());
      tasks.erase(tasks.begin());
      fn();
    }
  }
  json::object last() { return json::parse(frames.back()).as_object(); }
  bool deferred = false;
  std::vector<std::function<void()>> tasks;
};

class SessionTest : public ::testing::Test {
 protected:
  SessionTest()
      : engine(collab::EngineLimits{}, [] { return std::string("ep"); }),
        verifier(auth::Verifier::hs256(kSecret)),
        ctx{options(),
            engine,
            hub,
            verifier,
            {},
            [] { return std::int64_t{1'800'000'000}; },
            [](std::function<void()> fn) { fn(); },
            [this](const std::string& user, const std::string& room,
                   std::function<void(AccessDecision)> done) {
              if (hold_decisions) {
                held_decisions.emplace_back(
                    [this, user, room, done] { done(judge(access, user, room)); });
                return;
              }
              done(judge(access, user, room));
            }} {
    engine.set_events(&hub);
    access.live = true;
    access.roles = {{"ann", auth::Role::Editor}, {"bob", auth::Role::Editor}};
    access.scenes = {"s", "t"};
  }

  static Options options() {
    Options o;
    o.messages_per_second = 10;  // burst 20
    o.ops_per_second = 1;        // burst 2
    return o;
  }

  struct Peer {
    std::shared_ptr<FakeTransport> transport = std::make_shared<FakeTransport>();
    std::shared_ptr<Session> session;
  };

  Peer connect(const std::string& id) {
    Peer p;
    p.session = std::make_shared<Session>(ctx, p.transport, id, t0);
    return p;
  }

  std::string token(const std::string& user, const std::string& roles_json) {
    return auth::sign_hs256_raw(
        R"({"alg":"HS256"})",
        R"({"sub":")" + user + R"(","exp":1900000000,"roles":)" + roles_json + "}", kSecret);
  }

  void hello(Peer& p, const std::string& user, const std::string& roles = R"({"p":"editor"})") {
    p.session->on_text(R"({"t":"hello","id":1,"token":")" + token(user, roles) + R"("})", t0);
  }

  // Ann, authenticated, has sent a join for p/s; the room is loading until the test calls
  // load_done. Her connection runs deferred tasks only when the test says so.
  Peer joining_a_loading_room() {
    engine.set_loader([this](const std::string&, auto done) { load_done = std::move(done); });
    auto a = connect("sa");
    a.transport->deferred = true;
    hello(a, "ann");
    a.session->on_text(R"({"t":"join","id":2,"room":"p/s"})", t0);
    a.transport->run_tasks();  // the access decision: on to the engine, which loads
    return a;
  }
  std::function<void(std::optional<collab::StoredRoom>, std::string)> load_done;

  // What the database says about project p (the access directory the gateway reads).
  ProjectAccess access;
  bool hold_decisions = false;
  std::vector<std::function<void()>> held_decisions;

  Session::Clock::time_point t0{};
  collab::Hub hub{"n"};
  engines::MemoryRoomEngine engine;
  auth::Verifier verifier;
  SessionContext ctx;
};

struct InRoom : SessionTest {
  Peer a = connect("sa");
  void SetUp() override {
    hello(a, "ann");
    a.session->on_text(R"({"t":"join","id":2,"room":"p/s"})", t0);
    a.session->on_text(R"({"t":"join","id":3,"room":"p/t"})", t0);
    ASSERT_EQ(a.transport->last().at("t").as_string(), "joined");
  }
  void op(int id, const char* room) {
    a.session->on_text(R"({"t":"op","id":)" + std::to_string(id) + R"(,"room":")" + room +
                           R"(","ops":[{"op":"create","entity":"e)" + std::to_string(id) +
                           R"(","parent":"root"}]})",
                       t0 + std::chrono::seconds(id));
  }
};

}  // namespace kiln::gateway::test
