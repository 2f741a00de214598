#include "platform/http.hpp"

#include "platform/ids.hpp"

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <cctype>

namespace kiln::http {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

}  // namespace

std::optional<std::string_view> Request::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (iequals(k, name)) return std::string_view(v);
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
  o["title"] = title;
  o["status"] = status;
  o["detail"] = detail;
  return Response{status, "application/problem+json", boost::json::serialize(o), {}};
}

void Router::add(std::string method, std::string path, std::string route_name, Handler handler) {
  entries_.push_back(
      {std::move(method), std::move(path), std::move(route_name), std::move(handler)});
}

Router::Match Router::match(std::string_view method, std::string_view path) const {
  Match m;
  m.route = "unmatched";
  for (const auto& e : entries_) {
    if (e.path != path) continue;
    if (e.method == method || (method == "HEAD" && e.method == "GET")) {
      m.handler = &e.handler;
      m.route = e.route;
      m.method_not_allowed = false;
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
    case 413:
      return "Content Too Large";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
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

}  // namespace kiln::http
