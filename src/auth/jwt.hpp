// JSON Web Tokens as Kiln uses them: HS256 with a shared secret (default) or RS256 with
// a public key. The verifier accepts only the algorithm it was configured with, so
// `alg: none` and HS/RS confusion are refused whatever the token's header says.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

namespace kiln::auth {

enum class Role { Viewer, Editor, Owner };
const char* to_string(Role r);
bool parse_role(std::string_view s, Role& out);

struct Claims {
  std::string sub;   // user id
  std::string name;  // display name (the user id when absent)
  std::int64_t exp = 0;
  std::int64_t iat = 0;  // issued at (0: not given)
  std::int64_t ver = 0;  // the user's token version when issued (revocation); 0: not given
  std::map<std::string, Role, std::less<>> roles;  // project id -> role
};

struct VerifyResult {
  bool ok = false;
  std::string error;  // why not, for logs and the client (never echoes the token)
  Claims claims;
};

inline constexpr std::size_t kMaxTokenBytes = 8 * 1024;

class Verifier {
 public:
  static Verifier hs256(std::string secret, std::chrono::seconds leeway = std::chrono::seconds(30));
  // Throws std::runtime_error when the PEM holds no usable RSA public key.
  static Verifier rs256(const std::string& public_key_pem,
                        std::chrono::seconds leeway = std::chrono::seconds(30));
  ~Verifier();
  Verifier(Verifier&&) noexcept;
  Verifier& operator=(Verifier&&) noexcept;

  [[nodiscard]] VerifyResult verify(std::string_view token, std::int64_t now_unix) const;

 private:
  struct Impl;
  explicit Verifier(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Signs claims with HS256 (for `kiln token`, the API's token endpoint and tests).
std::string sign_hs256(const Claims& claims, std::string_view secret);
// Signs with an arbitrary header and payload (tests of hostile tokens).
std::string sign_hs256_raw(std::string_view header_json, std::string_view payload_json,
                           std::string_view secret);

}  // namespace kiln::auth
