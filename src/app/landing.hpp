// What a newcomer sees first: the lines `kiln` prints when it is up, the small HTML page at
// `GET /` (for a browser; the web editor replaces it later) and the OpenAPI document
// served at `GET /openapi.yaml` (docs/openapi.yaml, embedded at build time).
#pragma once

#include <string>
#include <string_view>

namespace kiln::app {

struct Landing {
  std::string version;
  std::string role;
  std::string node;
  std::string http;              // "http://127.0.0.1:7700"
  bool api = false;              // serves /v1
  bool collab = false;           // serves /v1/collab
  std::string objects;           // the object store's base URL, "" when this node runs none
  std::string buckets;           // its buckets, comma-separated
  std::string service_key_file;  // where the generated service key is; "" when configured
  std::string terminals;         // "on (runc ...)", "off: why"; "" when no module says
};

// The lines printed after "Kiln V (ROLE) is running at URL": one per thing to reach.
std::string banner(const Landing& l);
// A small HTML page (UTF-8, no scripts, nothing loaded from elsewhere).
std::string landing_html(const Landing& l);
// docs/openapi.yaml as built into this binary.
std::string_view openapi_yaml();

}  // namespace kiln::app
