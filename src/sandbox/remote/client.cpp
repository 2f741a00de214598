// The TerminalSessions port over a sandbox host's internal API (remote.hpp).
#include "platform/codec.hpp"
#include "platform/http_client.hpp"
#include "sandbox/remote/remote.hpp"

#include <boost/json.hpp>

namespace kiln::sandbox::remote {
namespace {

namespace json = boost::json;

// A path segment, percent-encoded (RFC 3986 section 2.3: unreserved characters stay, but
// '.': a segment "." or ".." would be a dot-segment to whatever normalises paths between).
std::string segment(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string base(const std::string& owner) {
  return "/internal/v1/users/" + segment(owner) + "/terminals";
}

}  // namespace

Client::Client(ClientOptions options) : options_(std::move(options)) {}
Client::~Client() = default;

Result<Client::Answer, Error> Client::call(const std::string& method, const std::string& target,
                                           const std::string& body) {
  const auto unreachable = [&](const std::string& why) {
    return Error{Errc::unavailable,
                 "the sandbox host " + options_.endpoint + " did not answer: " + why};
  };
  {
    std::lock_guard lock(mu_);
    if (std::chrono::steady_clock::now() < down_until_)
      return unreachable("not a moment ago; try again in a few seconds");
  }
  std::unique_ptr<http::Client> c;
  http::ClientResponse resp;
  try {
    // A connection per call, one attempt: a kept one may have been closed by the host
    // while idle (a write into it fails, and an open must not be sent twice), and a retry
    // after a timeout would double the wait for a host that hangs.
    http::ClientOptions o;
    o.endpoint = options_.endpoint;
    o.timeout = options_.timeout;
    o.max_attempts = 1;
    c = std::make_unique<http::Client>(o);
    http::ClientRequest req(
        method, target,
        {{"Authorization", "Bearer " + options_.service_key}, {"Content-Type", "application/json"}},
        http::Body::of(body));
    req.retry = false;
    resp = c->send(req);
  } catch (const std::exception& e) {
    std::lock_guard lock(mu_);
    down_until_ = std::chrono::steady_clock::now() + options_.hold_off;
    return unreachable(e.what());
  }

  Answer a;
  a.status = resp.status;
  if (!resp.body.empty()) {
    boost::system::error_code ec;
    a.body = json::parse(resp.body, ec);
    if (ec)
      return Error{Errc::failed, "the sandbox host " + options_.endpoint + " answered HTTP " +
                                     std::to_string(resp.status) + " without JSON"};
  }
  if (a.status >= 200 && a.status < 300) return a;
  // The host's error, as it named it.
  const auto* o = a.body.if_object();
  const auto* code = o ? o->if_contains("error") : nullptr;
  const auto* detail = o ? o->if_contains("detail") : nullptr;
  const auto errc = code && code->is_string() ? errc_from_name(std::string_view(code->as_string()))
                                              : std::nullopt;
  std::string words = detail && detail->is_string() ? std::string(detail->as_string()) : "";
  if (a.status == 401)
    return Error{Errc::unavailable, "the sandbox host " + options_.endpoint +
                                        " refused this node's service key (api.service_key "
                                        "must be the same on both)"};
  if (!errc)
    return Error{a.status >= 500 ? Errc::unavailable : Errc::failed,
                 "the sandbox host " + options_.endpoint + " answered HTTP " +
                     std::to_string(a.status) + (words.empty() ? "" : ": " + words)};
  return Error{*errc, std::move(words)};
}

Result<SessionInfo, Error> Client::open(const std::string& owner, const Opening& what) {
  const auto body = json::serialize(to_json(what));
  KILN_TRY(a, call("POST", base(owner), body));
  return session_from_json(a.body);
}

Result<std::vector<SessionInfo>, Error> Client::list(const std::string& owner) {
  KILN_TRY(a, call("GET", base(owner), ""));
  const auto* o = a.body.if_object();
  const auto* items = o ? o->if_contains("items") : nullptr;
  if (!items || !items->is_array())
    return Error{Errc::failed, "the sandbox host answered a list Kiln cannot read"};
  std::vector<SessionInfo> out;
  for (const auto& v : items->as_array()) {
    KILN_TRY(s, session_from_json(v));
    out.push_back(std::move(s));
  }
  return out;
}

Result<SessionInfo, Error> Client::get(const std::string& owner, const std::string& id) {
  KILN_TRY(a, call("GET", base(owner) + "/" + segment(id), ""));
  return session_from_json(a.body);
}

Result<void, Error> Client::close(const std::string& owner, const std::string& id) {
  KILN_TRY(a, call("DELETE", base(owner) + "/" + segment(id), ""));
  (void)a;
  return {};
}

Hosts::Hosts(const std::vector<std::string>& addresses, const std::string& service_key,
             std::chrono::milliseconds timeout) {
  for (const auto& a : addresses) {
    ClientOptions o;
    o.endpoint = "http://" + a;
    o.service_key = service_key;
    o.timeout = timeout;
    hosts_.push_back(Host{host_key(a), a, std::make_unique<Client>(std::move(o))});
  }
}

SessionInfo Hosts::named(const Host& h, SessionInfo s) {
  s.id = cluster_id(h.key, s.id);
  return s;
}

Hosts::Host* Hosts::host_of(const std::string& id, std::string& inner) {
  auto parts = split_id(id);
  if (!parts) return nullptr;
  for (auto& h : hosts_) {
    if (h.key == parts->first) {
      inner = parts->second;
      return &h;
    }
  }
  return nullptr;
}

Result<SessionInfo, Error> Hosts::open(const std::string& owner, const Opening& what) {
  // The same host for the same user on every node (SHA-256, not a process's own hash).
  const auto first =
      std::stoull(codec::sha256_hex(owner).substr(0, 15), nullptr, 16) % hosts_.size();
  Error last{Errc::unavailable, "no sandbox host"};
  for (std::size_t i = 0; i < hosts_.size(); ++i) {
    auto& h = hosts_[(first + i) % hosts_.size()];
    auto s = h.client->open(owner, what);
    if (s) return named(h, std::move(*s));
    last = s.error();
    // Another host may take it when this one is down or full; anything else is the answer.
    if (last.code != Errc::unavailable && last.code != Errc::busy) return last;
  }
  return last;
}

Result<std::vector<SessionInfo>, Error> Hosts::list(const std::string& owner) {
  std::vector<SessionInfo> all;
  std::optional<Error> failure;
  std::size_t answered = 0;
  for (auto& h : hosts_) {
    auto mine = h.client->list(owner);
    if (!mine) {
      failure = mine.error();
      continue;
    }
    ++answered;
    for (auto& s : *mine) all.push_back(named(h, std::move(s)));
  }
  if (answered == 0 && failure) return *failure;
  return all;
}

Result<SessionInfo, Error> Hosts::get(const std::string& owner, const std::string& id) {
  std::string inner;
  auto* h = host_of(id, inner);
  if (!h) return Error{Errc::not_found, "no such session"};
  KILN_TRY(s, h->client->get(owner, inner));
  return named(*h, std::move(s));
}

Result<void, Error> Hosts::close(const std::string& owner, const std::string& id) {
  std::string inner;
  auto* h = host_of(id, inner);
  if (!h) return Error{Errc::not_found, "no such session"};
  return h->client->close(owner, inner);
}

}  // namespace kiln::sandbox::remote
