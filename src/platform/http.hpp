// Plain HTTP request/response values and the router. No Beast here: handlers and their
// tests never instantiate Beast templates (see STYLE.md, rule 12).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln::http {

struct Request {
  std::string method;  // "GET"
  std::string target;  // path and query as sent
  std::string path;    // without the query
  std::string query;   // without the '?'
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string request_id;
  std::string remote;  // "ip:port" of the peer
  // Path parameters of the matched route pattern (`/v1/projects/{project}`), decoded.
  std::vector<std::pair<std::string, std::string>> params;

  // Case-insensitive header lookup; the first value.
  [[nodiscard]] std::optional<std::string_view> header(std::string_view name) const;
  // A path parameter ("" when the route has none of that name).
  [[nodiscard]] std::string param(std::string_view name) const;
  // A query parameter, percent-decoded; nullopt when absent.
  [[nodiscard]] std::optional<std::string> query_param(std::string_view name) const;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;

  static Response json(int status, std::string body);
  static Response text(int status, std::string body);
  // RFC 9457 problem details: {"type","title","status","detail"}.
  static Response problem(int status, std::string_view type, std::string_view title,
                          std::string_view detail);
};

// A pattern with at most one '*', which matches any run of characters (S3's CORS
// AllowedOrigin and AllowedHeader): "https://*.example.com", "x-amz-*", "*". Without a '*' the
// value must equal the pattern. `fold_case`: ASCII case-insensitive (header names).
bool wildcard_match(std::string_view pattern, std::string_view value, bool fold_case = false);
// Whether a browser's Origin is allowed by one of `patterns` (wildcard_match, whose '*'
// here does not stand for '/', '?', '#' or '@'; "*" alone allows any; an empty or absent
// Origin never is).
bool origin_allowed(std::optional<std::string_view> origin,
                    const std::vector<std::string>& patterns);
// The first pattern with more than one '*' (a configuration mistake), if any.
std::optional<std::string> bad_wildcard_pattern(const std::vector<std::string>& patterns);

// CORS for browsers on other origins (`origins`: origin patterns as above, "*" for any; empty: no
// CORS headers at all). A preflight (OPTIONS with Access-Control-Request-Method) is answered
// here, before routing and authentication (browsers send no credentials with it); other
// responses to an allowed Origin get Access-Control-Allow-Origin and the exposed headers.
std::optional<Response> cors_preflight(const Request& req, const std::vector<std::string>& origins);
void add_cors(const Request& req, Response& resp, const std::vector<std::string>& origins);

using Handler = std::function<Response(const Request&)>;
// Answers later, exactly once, from any thread: for handlers that block (database calls),
// which must not run on the event loop.
using Responder = std::function<void(Response)>;
using AsyncHandler = std::function<void(Request, Responder)>;

// Routing by method and path pattern: literal segments, and `{name}` segments that match
// one non-empty segment (its percent-decoded value lands in Request::params). Each entry
// has a route name, used as the metrics label so that metric cardinality does not follow
// user input.
class Router {
 public:
  void add(std::string method, std::string pattern, std::string route_name, Handler handler);
  void add_async(std::string method, std::string pattern, std::string route_name,
                 AsyncHandler handler);

  struct Match {
    const Handler* handler = nullptr;             // null: no route, or an async one
    const AsyncHandler* async_handler = nullptr;  // set for add_async routes
    std::string route;                            // route name, or "unmatched"
    bool method_not_allowed = false;
    std::string allow;  // for 405: the methods the path accepts
    std::vector<std::pair<std::string, std::string>> params;
  };
  [[nodiscard]] Match match(std::string_view method, std::string_view path) const;
  // Every route as (method, pattern), for checking documentation against the code.
  [[nodiscard]] std::vector<std::pair<std::string, std::string>> routes() const;

  // A decision from the header section alone (the request's body not read: Request::body is
  // empty), for requests that carry a body: a response here (401, 415...) is sent at once and
  // the connection closed, so a client that sent `Expect: 100-continue` never sends its body
  // (RFC 9110 section 10.1.1), and no other client's body is read for nothing. nullopt: read
  // the body and route as usual. Runs on the event loop: it must not block (no database).
  using HeaderCheck = std::function<std::optional<Response>(const Request&)>;
  void set_header_check(HeaderCheck check) { header_check_ = std::move(check); }
  [[nodiscard]] const HeaderCheck& header_check() const { return header_check_; }

 private:
  struct Entry {
    std::string method;
    std::string path;
    std::string route;
    Handler handler;
    AsyncHandler async_handler;
  };
  std::vector<Entry> entries_;
  HeaderCheck header_check_;
};

// "Reason phrase" for common codes, for problem titles.
std::string_view reason(int status);

// A request id taken from the client if it is short and plain, otherwise generated.
std::string accept_or_make_request_id(std::optional<std::string_view> from_client);

}  // namespace kiln::http
