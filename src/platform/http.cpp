#include "platform/http.hpp"

#include "platform/codec.hpp"
#include "platform/ids.hpp"

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <cctype>

namespace kiln::http {

std::optional<std::string_view> Request::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (codec::iequals(k, name)) return std::string_view(v);
  }
  return std::nullopt;
}

Response Response::json(int status, std::string body) {
  return Response{status, "application/json", std::move(body), {}};
}

Response Response::text(int status, std::string body) {
  return Response{status, "text/plain; charset=utf-8", std::move(body), {}};
}

Response Response::problem(int status, std::string_view type, std::string_view title,
                           std::string_view detail) {
  boost::json::object o;
  o["type"] = type;
  o["title"] = title.empty() ? reason(status) : title;  // RFC 9457: every problem has one
  o["status"] = status;
  o["detail"] = detail;
  return Response{status, "application/problem+json", boost::json::serialize(o), {}};
}

std::string Request::param(std::string_view name) const {
  for (const auto& [k, v] : params) {
    if (k == name) return v;
  }
  return {};
}

namespace {

// %XX and '+' (in queries) decoded; nullopt when a % escape is malformed.
std::optional<std::string> percent_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size()) return std::nullopt;  // needs two hex digits after it
      auto hex = [](char h) -> int {
        if (h >= '0' && h <= '9') return h - '0';
        if (h >= 'a' && h <= 'f') return h - 'a' + 10;
        if (h >= 'A' && h <= 'F') return h - 'A' + 10;
        return -1;
      };
      const int hi = hex(s[i + 1]), lo = hex(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::vector<std::string_view> segments(std::string_view path) {
  std::vector<std::string_view> out;
  std::size_t pos = 0;
  while (pos <= path.size()) {
    auto slash = path.find('/', pos);
    out.push_back(
        path.substr(pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos));
    if (slash == std::string_view::npos) break;
    pos = slash + 1;
  }
  return out;
}

// Matches `path` against `pattern`; fills params on success.
bool match_pattern(std::string_view pattern, std::string_view path,
                   std::vector<std::pair<std::string, std::string>>& params) {
  if (pattern.find('{') == std::string_view::npos) return pattern == path;
  const auto ps = segments(pattern);
  const auto xs = segments(path);
  if (ps.size() != xs.size()) return false;
  std::vector<std::pair<std::string, std::string>> found;
  for (std::size_t i = 0; i < ps.size(); ++i) {
    const auto p = ps[i];
    if (p.size() >= 2 && p.front() == '{' && p.back() == '}') {
      if (xs[i].empty()) return false;
      auto v = percent_decode(xs[i], false);
      if (!v) return false;
      found.emplace_back(std::string(p.substr(1, p.size() - 2)), std::move(*v));
    } else if (p != xs[i]) {
      return false;
    }
  }
  params = std::move(found);
  return true;
}

}  // namespace

std::optional<std::string> Request::query_param(std::string_view name) const {
  std::string_view q = query;
  while (!q.empty()) {
    auto amp = q.find('&');
    auto pair = q.substr(0, amp);
    auto eq = pair.find('=');
    auto key = percent_decode(pair.substr(0, eq), true);
    if (key && *key == name) {
      // A malformed escape is handed on as sent: the handler's own validation refuses it.
      const auto raw = eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
      return percent_decode(raw, true).value_or(std::string(raw));
    }
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

void Router::add(std::string method, std::string path, std::string route_name, Handler handler) {
  entries_.push_back(
      {std::move(method), std::move(path), std::move(route_name), std::move(handler), {}});
}

void Router::add_async(std::string method, std::string pattern, std::string route_name,
                       AsyncHandler handler) {
  entries_.push_back(
      {std::move(method), std::move(pattern), std::move(route_name), {}, std::move(handler)});
}

std::vector<std::pair<std::string, std::string>> Router::routes() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& e : entries_) out.emplace_back(e.method, e.path);
  return out;
}

Router::Match Router::match(std::string_view method, std::string_view path) const {
  Match m;
  m.route = "unmatched";
  for (const auto& e : entries_) {
    std::vector<std::pair<std::string, std::string>> params;
    if (!match_pattern(e.path, path, params)) continue;
    if (e.method == method || (method == "HEAD" && e.method == "GET")) {
      m.handler = e.handler ? &e.handler : nullptr;
      m.async_handler = e.async_handler ? &e.async_handler : nullptr;
      m.route = e.route;
      m.method_not_allowed = false;
      m.params = std::move(params);
      return m;
    }
    m.method_not_allowed = true;
    m.route = e.route;
    m.allow += (m.allow.empty() ? "" : ", ") + e.method;
  }
  return m;
}

std::string_view reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 413:
      return "Content Too Large";
    case 415:
      return "Unsupported Media Type";
    case 416:
      return "Range Not Satisfiable";
    case 426:
      return "Upgrade Required";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 507:
      return "Insufficient Storage";
    default:
      return "Error";
  }
}

std::string accept_or_make_request_id(std::optional<std::string_view> from_client) {
  if (from_client && !from_client->empty() && from_client->size() <= 64 &&
      std::all_of(from_client->begin(), from_client->end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
      })) {
    return std::string(*from_client);
  }
  return ids::random_hex(8);
}

bool wildcard_match(std::string_view pattern, std::string_view value, bool fold_case) {
  auto equal = [fold_case](std::string_view a, std::string_view b) {
    return fold_case ? codec::iequals(a, b) : a == b;
  };
  const auto star = pattern.find('*');
  if (star == std::string_view::npos) return equal(pattern, value);
  const auto head = pattern.substr(0, star), tail = pattern.substr(star + 1);
  return value.size() >= head.size() + tail.size() && equal(value.substr(0, head.size()), head) &&
         equal(value.substr(value.size() - tail.size()), tail);
}

bool origin_allowed(std::optional<std::string_view> origin,
                    const std::vector<std::string>& patterns) {
  if (!origin || origin->empty()) return false;
  return std::any_of(patterns.begin(), patterns.end(), [&](const std::string& p) {
    if (p == "*") return true;
    if (!wildcard_match(p, *origin)) return false;
    // What the '*' stands for stays inside the host (and port): "https://*.example.com"
    // does not take "https://evil.test/.example.com" (browsers send no such Origin, but a
    // pattern should not read looser than it is).
    const auto star = p.find('*');
    if (star == std::string::npos) return true;
    const auto run = origin->substr(star, origin->size() - (p.size() - 1));
    return run.find_first_of("/?#@") == std::string_view::npos;
  });
}

std::optional<std::string> bad_wildcard_pattern(const std::vector<std::string>& patterns) {
  for (const auto& p : patterns)
    if (std::count(p.begin(), p.end(), '*') > 1) return p;
  return std::nullopt;
}

std::optional<Response> cors_preflight(const Request& req,
                                       const std::vector<std::string>& origins) {
  if (req.method != "OPTIONS" || !req.header("Access-Control-Request-Method")) return std::nullopt;
  const auto origin = req.header("Origin");
  if (!origin_allowed(origin, origins)) {
    return Response::problem(
        403, "https://kiln.dev/problems/cors-origin", "Forbidden",
        "This origin may not call the API from a browser (http.cors_origins).");
  }
  Response r{204, "text/plain", "", {}};
  r.headers.emplace_back("Access-Control-Allow-Origin", std::string(*origin));
  r.headers.emplace_back("Vary", "Origin");
  r.headers.emplace_back("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE");
  r.headers.emplace_back(
      "Access-Control-Allow-Headers",
      std::string(
          req.header("Access-Control-Request-Headers").value_or("Authorization, Content-Type")));
  r.headers.emplace_back("Access-Control-Max-Age", "600");
  return r;
}

void add_cors(const Request& req, Response& resp, const std::vector<std::string>& origins) {
  const auto origin = req.header("Origin");
  if (!origin_allowed(origin, origins)) return;
  if (std::any_of(resp.headers.begin(), resp.headers.end(),
                  [](const auto& h) { return h.first == "Access-Control-Allow-Origin"; }))
    return;  // a preflight answer carries them already
  resp.headers.emplace_back("Access-Control-Allow-Origin", std::string(*origin));
  resp.headers.emplace_back("Vary", "Origin");
  resp.headers.emplace_back("Access-Control-Expose-Headers",
                            "Location, Kiln-After, Retry-After, X-Request-Id, WWW-Authenticate");
}

}  // namespace kiln::http
