// Token keys from the configuration: the configured HS256 secret or RS256 public key, or
// (for a single node) a secret generated once and kept in the data directory.
#pragma once

#include "auth/jwt.hpp"
#include "platform/config.hpp"

#include <string>

namespace kiln::app {

// The HS256 secret: auth.jwt_secret, else <data.dir>/jwt-secret (created, mode 0600, when
// missing). Throws config::ConfigError when unusable.
std::string jwt_secret(const config::Config& cfg);
// The same secret for a command that needs the one a server already uses (`kiln token`):
// never created. Throws config::ConfigError naming the file it looked for and how to
// point elsewhere when there is none.
std::string existing_jwt_secret(const config::Config& cfg);
// The API's service key: api.service_key, else <data.dir>/service-key (created, mode 0600).
std::string service_key(const config::Config& cfg);
// The object store's secret key: objects.secret_key, else <data.dir>/objects-secret.
std::string objects_secret(const config::Config& cfg);
// The verifier the configuration asks for.
auth::Verifier make_verifier(const config::Config& cfg);

}  // namespace kiln::app
