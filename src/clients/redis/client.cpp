#include "clients/redis/client.hpp"

#include "platform/log.hpp"
#include "platform/runtime.hpp"

#include <openssl/sha.h>

#include <cstdio>

namespace kiln::redis {
namespace {

constexpr int kMaxAttempts = 8;

std::string sha1_hex(const std::string& s) {
  unsigned char md[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(s.data()), s.size(), md);
  char out[2 * SHA_DIGEST_LENGTH + 1];
  for (int i = 0; i < SHA_DIGEST_LENGTH; ++i) std::snprintf(out + 2 * i, 3, "%02x", md[i]);
  return out;
}

bool retryable(const Reply& r) {
  if (!r.is_error()) return false;
  return r.str.starts_with("ERR kiln:") || r.str.starts_with("CLUSTERDOWN") ||
         r.str.starts_with("TRYAGAIN") || r.str.starts_with("LOADING") ||
         r.str.starts_with("MASTERDOWN") || r.str.starts_with("READONLY");
}

class StandaloneClient final : public Client {
 public:
  StandaloneClient(Runtime& rt, ConnectionOptions o)
      : conn_(Connection::create(rt, std::move(o))) {}
  void command(std::string_view, std::vector<std::string> args, Callback done) override {
    conn_->command(std::move(args), std::move(done));
  }
  Endpoint endpoint_for(std::string_view) override { return conn_->endpoint(); }
  std::vector<Endpoint> primaries() override { return {conn_->endpoint()}; }
  void command_at(const Endpoint&, std::vector<std::string> args, Callback done) override {
    conn_->command(std::move(args), std::move(done));
  }
  void close() override { conn_->close(); }

 private:
  std::shared_ptr<Connection> conn_;
};

class ClusterClient final : public Client, public std::enable_shared_from_this<ClusterClient> {
 public:
  ClusterClient(Runtime& rt, std::vector<Endpoint> seeds, ConnectionOptions o)
      : runtime_(rt), seeds_(std::move(seeds)), options_(std::move(o)) {}

  void start() { refresh(); }

  void command(std::string_view key, std::vector<std::string> args, Callback done) override {
    const auto slot = key_slot(key);
    send(slot, std::move(args), std::move(done), 0, std::nullopt, false);
  }

  Endpoint endpoint_for(std::string_view key) override { return route(key_slot(key)); }

  std::vector<Endpoint> primaries() override {
    std::lock_guard lock(mu_);
    auto p = map_.primaries();
    return p.empty() ? seeds_ : p;
  }

  void command_at(const Endpoint& node, std::vector<std::string> args, Callback done) override {
    conn(node)->command(std::move(args), std::move(done));
  }

  void close() override {
    std::lock_guard lock(mu_);
    closed_ = true;
    for (auto& [name, c] : conns_) c->close();
  }

 private:
  Endpoint route(std::uint16_t slot) {
    std::lock_guard lock(mu_);
    if (auto p = map_.primary(slot)) return *p;
    return seeds_.front();
  }

  std::shared_ptr<Connection> conn(const Endpoint& ep) {
    std::lock_guard lock(mu_);
    auto& c = conns_[ep.str()];
    if (!c) {
      auto o = options_;
      o.endpoint = ep;
      c = Connection::create(runtime_, o);
    }
    return c;
  }

  // Asks one node after another for CLUSTER SLOTS until one answers.
  void refresh() {
    std::vector<Endpoint> candidates;
    {
      std::lock_guard lock(mu_);
      if (refreshing_ || closed_) return;
      refreshing_ = true;
      candidates = map_.primaries();
      candidates.insert(candidates.end(), seeds_.begin(), seeds_.end());
    }
    try_refresh(std::move(candidates), 0);
  }

  void try_refresh(std::vector<Endpoint> candidates, std::size_t i) {
    if (i >= candidates.size()) {
      std::lock_guard lock(mu_);
      refreshing_ = false;
      return;
    }
    auto self = shared_from_this();
    auto c = conn(candidates[i]);
    if (!c->up() && i + 1 < candidates.size()) {
      // A node we cannot reach (a failed primary) would only make us wait: ask the next.
      try_refresh(std::move(candidates), i + 1);
      return;
    }
    c->command({"CLUSTER", "SLOTS"}, [self, candidates, i](Reply r) mutable {
      SlotMap m;
      if (!r.is_error() && m.load(r)) {
        std::lock_guard lock(self->mu_);
        self->map_ = std::move(m);
        self->refreshing_ = false;
        return;
      }
      self->try_refresh(std::move(candidates), i + 1);
    });
  }

  // Sends to `to` when given (a redirect's target), else to the slot's primary.
  void send(std::uint16_t slot, std::vector<std::string> args, Callback done, int attempt,
            std::optional<Endpoint> to, bool asking) {
    const Endpoint target = to ? *to : route(slot);
    auto c = conn(target);
    auto self = shared_from_this();
    if (asking) c->command({"ASKING"}, [](Reply) {});
    auto copy = args;  // kept for a retry
    c->command(std::move(copy), [self, slot, args = std::move(args), done = std::move(done),
                                 attempt](Reply r) mutable {
      if (auto redirect = parse_redirect(r); redirect && attempt < kMaxAttempts) {
        if (!redirect->ask) self->refresh();  // MOVED: our map is stale
        self->send(slot, std::move(args), std::move(done), attempt + 1, redirect->to,
                   redirect->ask);
        return;
      }
      if (retryable(r) && attempt < kMaxAttempts) {
        // A failover or a lost connection: refresh the map, back off, try again.
        self->refresh();
        const auto delay = std::chrono::milliseconds(50 << std::min(attempt, 5));
        self->runtime_.after(
            delay, [self, slot, args = std::move(args), done = std::move(done), attempt]() mutable {
              self->send(slot, std::move(args), std::move(done), attempt + 1, std::nullopt, false);
            });
        return;
      }
      done(std::move(r));
    });
  }

  Runtime& runtime_;
  std::vector<Endpoint> seeds_;
  ConnectionOptions options_;
  std::mutex mu_;
  SlotMap map_;
  std::map<std::string, std::shared_ptr<Connection>> conns_;
  bool refreshing_ = false;
  bool closed_ = false;
};

}  // namespace

Script::Script(std::string b) : body(std::move(b)), sha(sha1_hex(body)) {}

std::shared_ptr<Client> Client::standalone(Runtime& runtime, ConnectionOptions options) {
  return std::make_shared<StandaloneClient>(runtime, std::move(options));
}

std::shared_ptr<Client> Client::cluster(Runtime& runtime, std::vector<Endpoint> seeds,
                                        ConnectionOptions options) {
  auto c = std::make_shared<ClusterClient>(runtime, std::move(seeds), std::move(options));
  c->start();
  return c;
}

void Client::eval(const Script& script, std::vector<std::string> keys,
                  std::vector<std::string> args, Callback done) {
  std::string key = keys.empty() ? std::string() : keys.front();
  auto build = [&](const std::string& verb, const std::string& what) {
    std::vector<std::string> cmd{verb, what, std::to_string(keys.size())};
    cmd.insert(cmd.end(), keys.begin(), keys.end());
    cmd.insert(cmd.end(), args.begin(), args.end());
    return cmd;
  };
  auto with_body = build("EVAL", script.body);
  command(key, build("EVALSHA", script.sha),
          [this, key, with_body = std::move(with_body), done = std::move(done)](Reply r) mutable {
            if (r.is_error() && r.str.starts_with("NOSCRIPT")) {
              // EVAL also caches the script on that node for the next EVALSHA.
              command(key, std::move(with_body), std::move(done));
              return;
            }
            done(std::move(r));
          });
}

}  // namespace kiln::redis
