// Who asks and what they may do: credentials (a user token, checked for revocation, or the
// service key), rate limits per principal, read-your-writes receipts, roles in a project.
#include "api/impl.hpp"

#include "auth/jwt.hpp"
#include "platform/codec.hpp"

#include <openssl/crypto.h>

namespace kiln::api {

Checked<Principal> Api::Impl::authenticate(const Request& req) {
  KILN_TRY(who, verify_credential(req));
  if (auto u = projects.get_user(who.user);
      !who.service && u && who.token_version < u->token_version) {
    auth_failures.with({"revoked"}).inc();
    return Refusal{401, "unauthorized", "This token was revoked; get a new one."};
  }
  return who;
}

// What the header section alone decides (http::Router::HeaderCheck), before a body is
// read: a missing or invalid credential (401; revocation needs the database and is
// checked with the request), a body that is not JSON (415: every route takes JSON).
std::optional<Response> Api::Impl::header_check(const Request& req) {
  // The development sign-in (auth.dev_tokens) is the one route without a credential.
  const bool open = options.dev_tokens && req.path == "/v1/dev/token";
  if (auto who = verify_credential(req); !who && !open) return answer(who.error());
  if (!is_json(req)) return answer(not_json());
  return std::nullopt;
}

// The credential's signature, expiry and shape (no database): the principal it names.
Checked<Principal> Api::Impl::verify_credential(const Request& req) {
  auto h = req.header("Authorization");
  // The scheme is case-insensitive (RFC 9110 section 11.1): "bearer" is "Bearer".
  if (!h || h->size() <= 7 || !codec::iequals(h->substr(0, 7), "Bearer ")) {
    auth_failures.with({"missing"}).inc();
    return Refusal{401, "unauthorized",
                   "Send 'Authorization: Bearer <token>' (a user token or the service key)."};
  }
  const std::string_view token = h->substr(7);
  if (std::count(token.begin(), token.end(), '.') != 2) {
    const auto& key = options.service_key;
    if (!key.empty() && token.size() == key.size() &&
        CRYPTO_memcmp(token.data(), key.data(), key.size()) == 0) {
      return Principal{true, {}, {}};
    }
    auth_failures.with({"invalid"}).inc();
    return Refusal{401, "unauthorized",
                   "The bearer credential is neither a valid token nor the service key."};
  }
  auto r = verifier.verify(token, now_s());
  if (!r.ok) {
    auth_failures.with({"invalid"}).inc();
    return Refusal{401, "unauthorized", "Invalid token: " + r.error + "."};
  }
  return Principal{false, r.claims.sub, r.claims.name, r.claims.ver};
}

Checked<void> Api::Impl::limit(const Principal& who) {
  const auto key = who.service ? std::string("service") : "u:" + who.user;
  const double rate =
      who.service ? options.service_requests_per_second : options.user_requests_per_second;
  const auto now = TokenBucket::Clock::now();
  std::lock_guard lock(mu);
  if (buckets.size() > 100'000) buckets.clear();  // bounded; a reset only forgives
  auto it = buckets.try_emplace(key, rate, rate * 2, now).first;
  if (!it->second.take(now)) {
    rate_limited.with({who.service ? "service" : "user"}).inc();
    return Refusal{429, "rate-limited",
                   "Too many requests; at most " + std::to_string(static_cast<int>(rate)) +
                       " per second (burst " + std::to_string(static_cast<int>(rate * 2)) + ")."};
  }
  return {};
}

// The caller's latest write, so that their next read sees it (read-your-writes): from
// the `Kiln-After` header (a client moving between API nodes) or this node's memory.
store::Receipt Api::Impl::after(const Principal& who, const Request& req) {
  store::Receipt r;
  if (auto h = req.header("Kiln-After")) {
    // An LSN, "<hex>/<hex>" (at most 8 hex digits each); anything else is ignored.
    const auto slash = h->find('/');
    auto hex = [](std::string_view s) {
      return !s.empty() && s.size() <= 8 && std::all_of(s.begin(), s.end(), [](char c) {
        return std::isxdigit(static_cast<unsigned char>(c)) != 0;
      });
    };
    if (slash != std::string_view::npos && hex(h->substr(0, slash)) && hex(h->substr(slash + 1))) {
      r.lsn = std::string(*h);
      return r;
    }
  }
  std::lock_guard lock(mu);
  auto it = last_write.find(key_of(who));
  return it == last_write.end() ? r : it->second;
}

void Api::Impl::wrote(const Principal& who, const store::Receipt& r, Response& resp) {
  if (r.lsn.empty()) return;
  resp.headers.emplace_back("Kiln-After", r.lsn);
  remember(who, r);
}

void Api::Impl::remember(const Principal& who, const store::Receipt& r) {
  if (r.lsn.empty()) return;
  std::lock_guard lock(mu);
  if (last_write.size() > 100'000) last_write.clear();
  last_write[key_of(who)] = r;
}

std::string Api::Impl::key_of(const Principal& who) {
  return who.service ? std::string("service") : "u:" + who.user;
}

// The caller's role in the project, or 404 (a project they cannot see does not exist). A
// change (any method but GET and HEAD) is decided on the state as of now: its check reads at
// the primary's current position, so that a grant or a removal made by someone else and not
// yet replayed by a lagging replica counts (a removed member cannot change anything during
// the lag; a member just made owner can act at once). A read may be allowed by the replica,
// but never refused by it: a refusal is read again as of now (a member just added by
// someone else reads at once).
Checked<std::string> Api::Impl::role_in(const Principal& who, const std::string& project,
                                        const Request& req) {
  if (!valid_id(project)) return not_found();
  const bool read = req.method == "GET" || req.method == "HEAD";
  const auto role_at = [&](const store::Receipt& at) -> std::string {
    if (who.service) return projects.get_project(project, at) ? "owner" : "";
    return projects.member_role(project, who.user, at);
  };
  auto role = role_at(read ? after(who, req) : store.position());
  if (role.empty() && read) role = role_at(store.position());
  if (role.empty()) return not_found();
  return role;
}

Checked<void> Api::Impl::need(const std::string& have, std::string_view at_least) {
  if (rank(have) < rank(at_least))
    return Refusal{403, "forbidden",
                   "This needs the " + std::string(at_least) + " role; you are " + have + "."};
  return {};
}

void Api::Impl::publish(collab::AccessChange c) {
  if (bus) bus->publish(c);
}

Checked<std::size_t> Api::Impl::page_limit(const Request& req) {
  auto l = req.query_param("limit");
  if (!l) return options.page_size;
  char* end = nullptr;
  const long v = std::strtol(l->c_str(), &end, 10);
  if (l->empty() || *end != '\0' || v < 1 || static_cast<std::size_t>(v) > options.max_page_size)
    return invalid("'limit' must be an integer from 1 to " + std::to_string(options.max_page_size) +
                   ".");
  return static_cast<std::size_t>(v);
}

}  // namespace kiln::api
