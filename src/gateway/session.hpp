// One client's protocol state, without any I/O (sans-io): frames in, frames and close
// requests out through a Transport. The collaboration connection (connection.cpp, on the platform's
// WebSocket transport) feeds it; unit tests feed it directly.
#pragma once

#include "auth/jwt.hpp"
#include "collab/access.hpp"
#include "collab/hub.hpp"
#include "collab/protocol.hpp"
#include "collab/room_engine.hpp"
#include "gateway/access_cache.hpp"
#include "gateway/gateway.hpp"
#include "platform/token_bucket.hpp"

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace kiln::metrics {
class Counter;
template <class T>
class Family;
}  // namespace kiln::metrics

namespace kiln::gateway {

// The connection as the session sees it. Every call is thread-safe and never blocks.
class Transport {
 public:
  virtual ~Transport() = default;
  virtual void send(std::shared_ptr<const std::string> frame) = 0;
  // Sends what is queued (except for SlowConsumer, which drops it), then closes.
  virtual void close(collab::Close code, std::string reason) = 0;
  // Runs `fn` later where frames are handled (the connection's strand), never inline.
  virtual void run(std::function<void()> fn) = 0;
};

// Counters every session shares.
struct SessionMetrics {
  metrics::Family<metrics::Counter>* frames_in = nullptr;    // {type}
  metrics::Family<metrics::Counter>* nacks = nullptr;        // {code}
  metrics::Family<metrics::Counter>* limit_trips = nullptr;  // {limit}
  metrics::Counter* eph_dropped = nullptr;
  metrics::Counter* resyncs = nullptr;
};

// What every session of a node shares.
struct SessionContext {
  Options options;
  collab::RoomEngine& engine;
  collab::Hub& hub;
  const auth::Verifier& verifier;
  SessionMetrics metrics;
  std::function<std::int64_t()> now_unix;  // for token expiry
  // Runs `fn` later on the event loop: for calls that must not happen inside an engine
  // callback (the engine may hold a room's lock while it calls back).
  std::function<void(std::function<void()>)> defer;
  // May `user` join `room`, and with which role (live membership: AccessCache::decide).
  // Answers once, from any thread.
  std::function<void(const std::string& user, const std::string& room,
                     std::function<void(AccessDecision)>)>
      decide;
};

class Session final : public collab::Subscriber, public std::enable_shared_from_this<Session> {
 public:
  using Clock = std::chrono::steady_clock;
  Session(SessionContext& ctx, std::weak_ptr<Transport> transport, std::string session_id,
          Clock::time_point now);

  // Frames arrive one at a time, in order (the connection's strand), and are processed in
  // that order: a frame that follows a `join` waits until the join is answered (held, at
  // most kMaxHeldFrames; more closes the connection with 4029).
  void on_text(std::string_view frame, Clock::time_point now);
  static constexpr std::size_t kMaxHeldFrames = 1'000;
  // after_ms of an `unavailable` nack whose cause named no time of its own.
  static constexpr std::int64_t kDefaultRetryAfterMs = 1'000;
  void on_hello_timeout();
  // The connection is gone: leave every room.
  void on_closed();
  // An access change from the API (on the connection's strand): a new role is applied and
  // told (`notify`); access removed, a deleted project or revoked tokens close the
  // connection with 4003 when the session is in an affected room; a deleted scene ends
  // the session's membership of its room (`left` with a reason), the connection stays.
  // `known_from` (AccessCache::announce) is the first ProjectAccess::read that reflects the
  // change: an older read (or join decision) that arrives later is not let undo it.
  void apply_access(const collab::AccessChange& change, std::uint64_t known_from = 0);
  // The project's access as the database says now (on the connection's strand): every
  // room of the project this session is in is checked again, with the effects above. A read
  // older than a change the session applied since (access.read below its known_from) is
  // ignored: reads of a project may answer out of order with the announcements.
  void revalidate(const std::string& project, const ProjectAccess& access);
  // The projects of the rooms joined (any thread).
  [[nodiscard]] std::vector<std::string> projects();

  [[nodiscard]] bool authenticated() const { return authenticated_; }
  [[nodiscard]] const std::string& id() const { return member_.session; }

  // collab::Subscriber
  void deliver(std::shared_ptr<const std::string> frame) override;
  void lost_sync(const std::string& room) override;

 private:
  void process(std::string_view frame, Clock::time_point now);
  // A join was answered (any thread): process the frames held meanwhile, on the strand.
  void join_answered();
  // The access decision for a join arrived (on the strand): refused, or on to the engine.
  void join_decided(std::int64_t id, const std::string& room, std::optional<collab::Since> since,
                    AccessDecision decision);
  // Asks ctx_.decide about a join; the answer comes to join_decided on the strand.
  void decide_join(std::int64_t id, const std::string& room, std::optional<collab::Since> since);
  // Records that a change of `project` announced now is reflected by reads from
  // `known_from` on, when the session has (or is joining) a room of it (rooms_mu_ held).
  void announced_locked(std::string_view project, std::uint64_t known_from);
  // Whether a read of `project` numbered `read` predates a change applied (rooms_mu_ held).
  bool older_than_announced_locked(std::string_view project, std::uint64_t read) const;
  void enter(std::int64_t id, const std::string& room, std::optional<collab::Since> since);
  // Ends this session's membership of `room`, telling the client why.
  void leave_for(const std::string& room, std::string_view reason);
  void resume();
  void send(std::string frame);
  void close(collab::Close code, std::string reason);
  void nack(std::optional<std::int64_t> id, std::string_view room, collab::Code code,
            std::string_view message, std::int64_t after_ms = 0);
  void handle(collab::msg::Hello&& m);
  void handle(collab::msg::Join&& m);
  void handle(collab::msg::Op&& m, Clock::time_point now);
  void handle(collab::msg::Eph&& m, Clock::time_point now);
  void handle(collab::msg::Leave&& m);
  void handle(collab::msg::Ping&& m);
  void trip(const char* limit);

  SessionContext& ctx_;
  std::weak_ptr<Transport> transport_;
  collab::Member member_;
  bool authenticated_ = false;
  bool closed_ = false;
  std::mutex rooms_mu_;  // join completions may arrive from the engine's threads
  std::map<std::string, auth::Role, std::less<>> rooms_;  // joined (or joining) rooms
  // Per project with a room here: the first access read that reflects the latest change
  // announced on the bus (reads answer out of order with announcements; older ones are not
  // let undo what the session applied).
  std::map<std::string, std::uint64_t, std::less<>> known_from_;
  // Frames that arrived while a join was unanswered (strand only), with their arrival time.
  bool joining_ = false;
  std::deque<std::pair<std::string, Clock::time_point>> held_;
  TokenBucket ops_bucket_;
  TokenBucket eph_bucket_;
  TokenBucket all_bucket_;
};

}  // namespace kiln::gateway
