#include "gateway/session.hpp"

#include "auth/jwt.hpp"
#include "platform/metrics.hpp"

namespace kiln::gateway {

using collab::Close;
using collab::Code;
namespace encode = collab::encode;

Session::Session(SessionContext& ctx, std::weak_ptr<Transport> transport, std::string session_id,
                 Clock::time_point now)
    : ctx_(ctx),
      transport_(std::move(transport)),
      ops_bucket_(ctx.options.ops_per_second, ctx.options.ops_per_second * 2, now),
      eph_bucket_(ctx.options.eph_per_second, ctx.options.eph_per_second * 2, now),
      all_bucket_(ctx.options.messages_per_second, ctx.options.messages_per_second * 2, now) {
  member_.session = std::move(session_id);
  member_.node = ctx.options.node;
}

void Session::deliver(std::shared_ptr<const std::string> frame) {
  if (auto t = transport_.lock()) t->send(std::move(frame));
}

void Session::send(std::string frame) {
  deliver(std::make_shared<const std::string>(std::move(frame)));
}

void Session::close(Close code, std::string reason) {
  if (auto t = transport_.lock()) t->close(code, std::move(reason));
}

void Session::trip(const char* limit) {
  if (ctx_.metrics.limit_trips) ctx_.metrics.limit_trips->with({limit}).inc();
}

void Session::nack(std::optional<std::int64_t> id, std::string_view room, Code code,
                   std::string_view message, std::int64_t after_ms) {
  if (ctx_.metrics.nacks) ctx_.metrics.nacks->with({std::string(collab::to_string(code))}).inc();
  // protocol.md: `unavailable` is temporary and always says when to try again; a refusal
  // that did not name a time (a room that could not be loaded, an engine that did not
  // answer) gets the default.
  if (code == Code::Unavailable && after_ms <= 0) after_ms = kDefaultRetryAfterMs;
  send(encode::nack(id, room, code, message, after_ms));
}

void Session::lost_sync(const std::string& room) {
  // The hub could not fill a gap in this room's ops: the client resumes with `since`
  // (on this node or another) and receives exactly what it missed.
  if (ctx_.metrics.resyncs) ctx_.metrics.resyncs->inc();
  send(encode::reconnect(0));
  close(Close::Restarting, "resynchronise " + room);
}

void Session::on_hello_timeout() {
  if (authenticated_ || closed_) return;
  trip("hello_timeout");
  close(Close::Unauthenticated, "no hello in time");
}

void Session::on_text(std::string_view frame, Clock::time_point now) {
  if (closed_) return;
  if (!all_bucket_.take(now)) {
    trip("messages_per_second");
    close(Close::RateLimited, "too many messages");
    return;
  }
  if (joining_) {
    if (held_.size() >= kMaxHeldFrames) {
      trip("held_frames");
      close(Close::RateLimited, "too many frames sent while a join was unanswered");
      return;
    }
    held_.emplace_back(std::string(frame), now);
    return;
  }
  process(frame, now);
}

void Session::join_answered() {
  if (auto t = transport_.lock()) {
    std::weak_ptr<Session> weak = shared_from_this();
    t->run([weak] {
      if (auto self = weak.lock()) self->resume();
    });
  }
}

void Session::resume() {
  joining_ = false;
  while (!joining_ && !held_.empty() && !closed_) {
    auto [frame, at] = std::move(held_.front());
    held_.pop_front();
    process(frame, at);
  }
}

void Session::process(std::string_view frame, Clock::time_point now) {
  auto d = collab::decode(frame);
  auto count = [&](const char* type) {
    if (ctx_.metrics.frames_in) ctx_.metrics.frames_in->with({type}).inc();
  };
  if (d.kind == collab::Decoded::Kind::Fatal) {
    count("invalid");
    close(d.close, d.error.message);
    return;
  }
  if (!authenticated_ && !(d.kind == collab::Decoded::Kind::Message &&
                           std::holds_alternative<collab::msg::Hello>(d.message))) {
    count("invalid");
    close(Close::Unauthenticated, "the first frame must be hello");
    return;
  }
  if (d.kind == collab::Decoded::Kind::Nack) {
    count("invalid");
    if (d.error.code == Code::TooLarge) trip("eph_data");
    if (d.id) {
      nack(d.id, d.room, d.error.code, d.error.message);
    } else {
      send(encode::error(d.error.code, d.error.message));
    }
    return;
  }
  std::visit(
      [&](auto&& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, collab::msg::Hello>) {
          count("hello");
          handle(std::move(m));
        } else if constexpr (std::is_same_v<T, collab::msg::Join>) {
          count("join");
          handle(std::move(m));
        } else if constexpr (std::is_same_v<T, collab::msg::Op>) {
          count("op");
          handle(std::move(m), now);
        } else if constexpr (std::is_same_v<T, collab::msg::Eph>) {
          count("eph");
          handle(std::move(m), now);
        } else if constexpr (std::is_same_v<T, collab::msg::Leave>) {
          count("leave");
          handle(std::move(m));
        } else {
          count("ping");
          handle(std::move(m));
        }
      },
      std::move(d.message));
}

void Session::handle(collab::msg::Hello&& m) {
  if (authenticated_) {
    nack(m.id, "", Code::Invalid, "already authenticated");
    return;
  }
  auto r = ctx_.verifier.verify(m.token, ctx_.now_unix());
  if (!r.ok) {
    trip("bad_token");
    close(Close::Unauthenticated, r.error);
    return;
  }
  authenticated_ = true;
  member_.user = r.claims.sub;
  member_.name = r.claims.name;  // the token's `roles` claim is not used: access is live
  if (!ctx_.options.revocation_check) {
    send(encode::welcome(m.id, member_.session, member_.node, member_.user, member_.name,
                         ctx_.options.heartbeat.count()));
    return;
  }
  // No welcome for a revoked token: frames after the hello wait (as after a join) until the
  // database has said (within milliseconds; a database that cannot answer lets it on).
  joining_ = true;
  std::weak_ptr<Session> weak = shared_from_this();
  ctx_.options.revocation_check(member_.user, r.claims.ver, [weak, id = m.id](bool revoked) {
    auto self = weak.lock();
    if (!self) return;
    if (auto t = self->transport_.lock()) {
      t->run([weak, id, revoked] {
        auto s = weak.lock();
        if (!s || s->closed_) return;
        if (revoked) {
          s->close(Close::Forbidden, "this token was revoked");
          return;
        }
        s->send(encode::welcome(id, s->member_.session, s->member_.node, s->member_.user,
                                s->member_.name, s->ctx_.options.heartbeat.count()));
        s->resume();
      });
    }
  });
}

void Session::handle(collab::msg::Join&& m) {
  {
    std::lock_guard lock(rooms_mu_);
    if (rooms_.count(m.room) != 0) {
      nack(m.id, m.room, Code::Invalid, "already in this room");
      return;
    }
    if (rooms_.size() >= ctx_.options.max_rooms_per_connection) {
      trip("rooms_per_connection");
      nack(m.id, m.room, Code::TooLarge,
           "at most " + std::to_string(ctx_.options.max_rooms_per_connection) +
               " rooms per connection");
      return;
    }
    // Held while the join is decided: a second join of the room is refused meanwhile. The
    // role is set from the decision; frames about the room wait for it (joining_).
    rooms_.emplace(m.room, auth::Role::Viewer);
  }
  joining_ = true;  // later frames wait for the answer (they may be about this room)
  decide_join(m.id, m.room, m.since);
}

void Session::decide_join(std::int64_t id, const std::string& room,
                          std::optional<collab::Since> since) {
  if (!ctx_.decide) {
    join_decided(id, room, since,
                 AccessDecision{Code::Forbidden, {}, "no access directory on this node", 0});
    return;
  }
  std::weak_ptr<Session> weak = shared_from_this();
  ctx_.decide(member_.user, room, [weak, id, room, since](AccessDecision d) {
    auto self = weak.lock();
    if (!self) return;
    auto t = self->transport_.lock();
    if (!t) return;
    t->run([weak, id, room, since, d = std::move(d)]() mutable {
      if (auto s = weak.lock()) s->join_decided(id, room, since, std::move(d));
    });
  });
}

void Session::join_decided(std::int64_t id, const std::string& room,
                           std::optional<collab::Since> since, AccessDecision d) {
  enum class Next { Drop, DecideAgain, Ended, Refuse, Enter } next = Next::Enter;
  {
    std::lock_guard lock(rooms_mu_);
    auto it = rooms_.find(room);
    if (closed_) {
      next = Next::Drop;  // on_closed left every room
    } else if (it == rooms_.end()) {
      next = Next::Ended;  // its scene was deleted while the join waited (`left` was sent)
    } else if (older_than_announced_locked(collab::room_project(room), d.read)) {
      // Read before a change the bus announced while the join waited (a new role, a
      // member removed): decided again from a read that reflects it.
      next = Next::DecideAgain;
    } else if (d.code != Code::Ok) {
      rooms_.erase(it);
      next = Next::Refuse;
    } else {
      it->second = d.role;
    }
  }
  switch (next) {
    case Next::Drop:
      return;
    case Next::DecideAgain:
      decide_join(id, room, since);
      return;
    case Next::Ended:
      nack(id, room, Code::NotFound, "the scene was deleted while the join waited");
      resume();
      return;
    case Next::Refuse:
      nack(id, room, d.code, d.message, d.after_ms);
      resume();
      return;
    case Next::Enter:
      enter(id, room, since);
      return;
  }
}

void Session::enter(std::int64_t id, const std::string& room, std::optional<collab::Since> since) {
  std::weak_ptr<Session> weak = shared_from_this();
  ctx_.engine.join(room, member_, since, [this, weak, id, room](collab::JoinResult r) {
    auto self = weak.lock();
    if (!self) return;  // the connection is gone; on_closed left every room it knew
    struct Answered {
      Session* s;
      ~Answered() { s->join_answered(); }
    } answered{this};  // after the reply below is queued
    bool gone = false;
    {
      std::lock_guard lock(rooms_mu_);
      gone = closed_;
      if (r.error || gone) rooms_.erase(room);
    }
    if (gone) {
      if (!r.error) {
        ctx_.defer([&engine = ctx_.engine, room, session = member_.session] {
          engine.leave(room, session);
        });
      }
      return;
    }
    if (r.error) {
      if (r.error.limit != nullptr) trip(r.error.limit);
      nack(id, room, r.error.code, r.error.message, r.error.after_ms);
      return;
    }
    // Registered before the reply is queued, both before any later event of the room.
    ctx_.hub.add(room, member_, weak, r.seq);
    send(
        encode::joined(id, room, r.epoch, r.seq, r.recovered, r.ops, r.snapshot.get(), r.presence));
  });
}

void Session::handle(collab::msg::Op&& m, Clock::time_point now) {
  auth::Role role{};
  {
    std::lock_guard lock(rooms_mu_);
    auto it = rooms_.find(m.room);
    if (it == rooms_.end()) {
      nack(m.id, m.room, Code::Forbidden, "join the room first");
      return;
    }
    role = it->second;
  }
  if (role == auth::Role::Viewer) {
    nack(m.id, m.room, Code::Forbidden, "viewers cannot edit");
    return;
  }
  if (!ops_bucket_.take(now)) {
    trip("ops_per_second");
    nack(m.id, m.room, Code::RateLimited, "too many batches; slow down");
    return;
  }
  std::vector<collab::Op> ops;
  if (auto e = collab::parse_batch(m.ops, ctx_.options.max_ops_per_batch, ops)) {
    if (e.code == Code::TooLarge) trip("ops_per_batch");
    nack(m.id, m.room, e.code, e.message);
    return;
  }
  std::weak_ptr<Session> weak = shared_from_this();
  ctx_.engine.submit(m.room, member_, m.id, std::move(ops),
                     [weak, id = m.id, room = m.room](collab::Error e) {
                       auto self = weak.lock();
                       if (!self) return;
                       if (e.limit != nullptr) self->trip(e.limit);
                       self->nack(id, room, e.code, e.message, e.after_ms);
                     });
}

void Session::handle(collab::msg::Eph&& m, Clock::time_point now) {
  {
    std::lock_guard lock(rooms_mu_);
    if (rooms_.count(m.room) == 0) {
      send(encode::error(Code::Forbidden, "eph for a room not joined: " + m.room));
      return;
    }
  }
  if (!eph_bucket_.take(now)) {
    trip("eph_per_second");
    if (ctx_.metrics.eph_dropped) ctx_.metrics.eph_dropped->inc();
    return;
  }
  ctx_.hub.eph(m.room, member_, m.kind, std::move(m.data));
}

void Session::handle(collab::msg::Leave&& m) {
  {
    std::lock_guard lock(rooms_mu_);
    if (rooms_.erase(m.room) == 0) {
      nack(m.id, m.room, Code::Invalid, "not in this room");
      return;
    }
  }
  ctx_.hub.remove(m.room, member_.session);
  ctx_.engine.leave(m.room, member_.session);
  send(encode::left(m.id, m.room));
}

void Session::handle(collab::msg::Ping&& m) {
  send(encode::pong(m.id));
}

void Session::on_closed() {
  std::map<std::string, auth::Role, std::less<>> rooms;
  {
    std::lock_guard lock(rooms_mu_);
    if (closed_) return;
    closed_ = true;
    rooms.swap(rooms_);
  }
  held_.clear();
  for (const auto& [room, role] : rooms) {
    ctx_.hub.remove(room, member_.session);
    ctx_.engine.leave(room, member_.session);
  }
}

void Session::leave_for(const std::string& room, std::string_view reason) {
  {
    std::lock_guard lock(rooms_mu_);
    if (rooms_.erase(room) == 0) return;
  }
  ctx_.hub.remove(room, member_.session);
  ctx_.engine.leave(room, member_.session);
  send(encode::left_by_server(room, reason));
}

}  // namespace kiln::gateway
