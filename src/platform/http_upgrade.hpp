// What the HTTP server hands to an upgrade handler (WebSocket): the connection and the
// request that asked for the upgrade. Only the few files that speak Beast include this.
#pragma once

#include "platform/http_server.hpp"

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

namespace kiln::http {

struct Upgrade {
  boost::beast::tcp_stream stream;
  boost::beast::http::request<boost::beast::http::string_body> request;
  std::string request_id;
  std::string remote;
};

}  // namespace kiln::http
