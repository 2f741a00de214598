#include "app/landing.hpp"

#include "clients/s3/xml.hpp"

namespace kiln::app {
namespace {

// The five characters XML and HTML escape alike (&apos; is HTML5 too).
std::string html_escape(std::string_view s) {
  return s3::xml::escape(s);
}

std::string ws_url(const std::string& http) {
  return "ws" + http.substr(4);  // http://h:p -> ws://h:p
}

}  // namespace

std::string banner(const Landing& l) {
  std::string out;
  auto line = [&](const char* what, const std::string& text) {
    std::string head = std::string("  ") + what;
    head.resize(18, ' ');
    out += head + text + "\n";
  };
  if (l.api) {
    line("REST API", l.http + "/v1   (OpenAPI: " + l.http + "/openapi.yaml)");
  }
  if (l.collab) line("collaboration", ws_url(l.http) + "/v1/collab   (WebSocket, kiln.v1)");
  if (!l.terminals.empty()) {
    line("terminals",
         l.terminals.starts_with("on")
             ? ws_url(l.http) + "/v1/term   (WebSocket, kiln.term.v1; " + l.terminals + ")"
             : l.terminals);
  }
  if (!l.objects.empty())
    line("object store", l.objects + "   (S3 API; buckets " + l.buckets + ")");
  if (!l.service_key_file.empty()) {
    line("service key", l.service_key_file + "   (mint user tokens: POST /v1/tokens)");
  }
  line("health", l.http + "/readyz, " + l.http + "/metrics");
  line("start here", l.http + "/   (or README.md and docs/ in the repository)");
  return out;
}

std::string landing_html(const Landing& l) {
  const auto h = html_escape(l.http);
  std::string items;
  auto item = [&](const std::string& label, const std::string& body) {
    items += "<li><b>" + label + "</b>: " + body + "</li>\n";
  };
  if (l.api) {
    item("REST API", "<code>" + h + "/v1</code>, described by <a href=\"/openapi.yaml\">" +
                         "openapi.yaml</a> (OpenAPI 3.1)");
  }
  if (l.collab) {
    item("Collaboration", "<code>" + html_escape(ws_url(l.http)) +
                              "/v1/collab</code>, WebSocket subprotocol <code>kiln.v1</code>");
  }
  if (!l.objects.empty()) {
    item("Object store", "<code>" + html_escape(l.objects) + "</code>, the S3 API (buckets " +
                             html_escape(l.buckets) + ")");
  }
  if (!l.service_key_file.empty()) {
    // Where it lives is for the operator (the banner says it); the page says what it is for.
    item("Service key",
         "<code>service-key</code> in the server's data directory: mint a "
         "user token with <code>POST /v1/tokens</code>");
  }
  item("Operations", "<a href=\"/readyz\">/readyz</a>, <a href=\"/healthz\">/healthz</a>, " +
                         std::string("<a href=\"/metrics\">/metrics</a>"));
  return "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
         "<title>Kiln</title></head>\n<body style=\"font-family: sans-serif; max-width: 48em; "
         "margin: 2em auto\">\n<h1>Kiln " +
         html_escape(l.version) + "</h1>\n<p>The <b>" + html_escape(l.role) +
         "</b> role is running on node <code>" + html_escape(l.node) +
         "</code>. The browser editor arrives later; until then:</p>\n<ul>\n" + items +
         "</ul>\n<p>Start with the README of the repository: it walks from a token to an edit "
         "in a few commands; <code>docs/</code> holds the protocol, the API, configuration "
         "and operations.</p>\n</body></html>\n";
}

}  // namespace kiln::app
