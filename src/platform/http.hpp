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

  // Case-insensitive header lookup; the first value.
  [[nodiscard]] std::optional<std::string_view> header(std::string_view name) const;
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

using Handler = std::function<Response(const Request&)>;

// Exact-path routing with a route name per entry, used as the metrics label so that
// metric cardinality does not follow user input.
class Router {
 public:
  void add(std::string method, std::string path, std::string route_name, Handler handler);

  struct Match {
    const Handler* handler = nullptr;  // null: no route
    std::string route;                 // route name, or "unmatched"
    bool method_not_allowed = false;
    std::string allow;  // for 405: the methods the path accepts
  };
  [[nodiscard]] Match match(std::string_view method, std::string_view path) const;

 private:
  struct Entry {
    std::string method;
    std::string path;
    std::string route;
    Handler handler;
  };
  std::vector<Entry> entries_;
};

// "Reason phrase" for common codes, for problem titles.
std::string_view reason(int status);

// A request id taken from the client if it is short and plain, otherwise generated.
std::string accept_or_make_request_id(std::optional<std::string_view> from_client);

}  // namespace kiln::http
