// The sandbox host's internal routes (remote.hpp): its terminal sessions for the nodes that
// hold the cluster's service key.
#include "platform/codec.hpp"
#include "platform/thread_pool.hpp"
#include "sandbox/remote/remote.hpp"

#include <openssl/crypto.h>
#include <boost/json.hpp>

namespace kiln::sandbox::remote {
namespace {

namespace json = boost::json;

http::Response error(int status, std::string_view code, std::string detail) {
  return http::Response::json(
      status, json::serialize(json::object{{"error", code}, {"detail", std::move(detail)}}));
}

http::Response error(const Error& e) {
  return error(errc_status(e.code), errc_name(e.code), e.detail);
}

}  // namespace

bool authorized(const http::Request& req, const std::string& service_key) {
  const auto header = req.header("authorization").value_or("");
  // The scheme is case-insensitive (RFC 9110 section 11.1).
  if (service_key.empty() || header.size() <= 7 || !codec::iequals(header.substr(0, 7), "Bearer "))
    return false;
  const auto token = header.substr(7);
  return token.size() == service_key.size() &&
         CRYPTO_memcmp(token.data(), service_key.data(), service_key.size()) == 0;
}

bool valid_user(std::string_view user) {
  if (user.empty() || user.size() > 128) return false;
  for (const unsigned char c : user)
    if (c <= 0x20 || c == 0x7f || c == '/' || c == '"' || c == '\\') return false;
  return true;
}

void add_routes(http::Router& router, TerminalSessions& sessions, ThreadPool& pool,
                std::string service_key) {
  auto key = std::make_shared<const std::string>(std::move(service_key));
  // Authenticated on the loop, answered from the pool.
  auto route = [&](const char* method, const char* pattern, const char* name,
                   std::function<http::Response(const http::Request&)> fn) {
    router.add_async(method, pattern, name,
                     [key, &pool, fn = std::move(fn)](http::Request req, http::Responder done) {
                       if (!authorized(req, *key))
                         return done(error(401, "unauthenticated",
                                           "the sandbox host's API takes the cluster's "
                                           "service key (api.service_key)"));
                       if (!valid_user(req.param("user")))
                         return done(error(400, "invalid",
                                           "the user is not a user id (1-128 bytes, no "
                                           "whitespace, '/', '\"' or '\\')"));
                       auto shared = std::make_shared<http::Request>(std::move(req));
                       if (!pool.post([shared, done, fn] { done(fn(*shared)); }))
                         done(error(503, "busy", "the sandbox host is busy: try again"));
                     });
  };
  const std::string base = "/internal/v1/users/{user}/terminals";
  route("POST", base.c_str(), "sandboxd_terminals_open", [&sessions](const http::Request& req) {
    json::object body;
    if (!req.body.empty()) {
      boost::system::error_code ec;
      auto v = json::parse(req.body, ec);
      if (ec || !v.is_object()) return error(400, "invalid", "the body is a JSON object");
      body = std::move(v.as_object());
    }
    auto what = opening_from_json(body);
    if (!what) return error(what.error());
    auto s = sessions.open(req.param("user"), *what);
    if (!s) return error(s.error());
    return http::Response::json(201, json::serialize(to_json(*s)));
  });
  route("GET", base.c_str(), "sandboxd_terminals_list", [&sessions](const http::Request& req) {
    auto all = sessions.list(req.param("user"));
    if (!all) return error(all.error());
    json::array items;
    for (const auto& s : *all) items.push_back(to_json(s));
    return http::Response::json(200, json::serialize(json::object{{"items", std::move(items)}}));
  });
  route("GET", (base + "/{terminal}").c_str(), "sandboxd_terminals_get",
        [&sessions](const http::Request& req) {
          auto s = sessions.get(req.param("user"), req.param("terminal"));
          if (!s) return error(s.error());
          return http::Response::json(200, json::serialize(to_json(*s)));
        });
  route("DELETE", (base + "/{terminal}").c_str(), "sandboxd_terminals_close",
        [&sessions](const http::Request& req) {
          if (auto r = sessions.close(req.param("user"), req.param("terminal")); !r)
            return error(r.error());
          http::Response resp;
          resp.status = 204;
          return resp;
        });
}

}  // namespace kiln::sandbox::remote
