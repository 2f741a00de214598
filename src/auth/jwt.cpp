#include "auth/jwt.hpp"

#include "platform/codec.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <cmath>
#include <optional>
#include <stdexcept>
#include <vector>

namespace kiln::auth {
namespace {

// A NumericDate (RFC 7519 section 2): a JSON number of seconds since 1970, possibly with a
// fraction; finite and from 0 to the end of year 9999 (anything else is not a date).
std::optional<double> numeric_date(const boost::json::value& v) {
  double d = 0;
  if (v.is_int64()) {
    d = static_cast<double>(v.get_int64());
  } else if (v.is_uint64()) {
    d = static_cast<double>(v.get_uint64());
  } else if (v.is_double()) {
    d = v.get_double();
  } else {
    return std::nullopt;
  }
  if (!std::isfinite(d) || d < 0 || d > 253402300799.0) return std::nullopt;
  return d;
}

namespace json = boost::json;

VerifyResult refuse(std::string why) {
  return VerifyResult{false, std::move(why), {}};
}

}  // namespace

const char* to_string(Role r) {
  switch (r) {
    case Role::Viewer:
      return "viewer";
    case Role::Editor:
      return "editor";
    case Role::Owner:
      return "owner";
  }
  return "viewer";
}

bool parse_role(std::string_view s, Role& out) {
  for (Role r : {Role::Viewer, Role::Editor, Role::Owner}) {
    if (s == to_string(r)) {
      out = r;
      return true;
    }
  }
  return false;
}

struct Verifier::Impl {
  enum class Alg { HS256, RS256 } alg = Alg::HS256;
  std::string secret;
  EVP_PKEY* key = nullptr;
  std::chrono::seconds leeway{30};
  ~Impl() {
    if (key != nullptr) EVP_PKEY_free(key);
  }
};

Verifier::Verifier(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Verifier::~Verifier() = default;
Verifier::Verifier(Verifier&&) noexcept = default;
Verifier& Verifier::operator=(Verifier&&) noexcept = default;

Verifier Verifier::hs256(std::string secret, std::chrono::seconds leeway) {
  auto impl = std::make_unique<Impl>();
  impl->alg = Impl::Alg::HS256;
  impl->secret = std::move(secret);
  impl->leeway = leeway;
  return Verifier(std::move(impl));
}

Verifier Verifier::rs256(const std::string& pem, std::chrono::seconds leeway) {
  auto impl = std::make_unique<Impl>();
  impl->alg = Impl::Alg::RS256;
  impl->leeway = leeway;
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  impl->key = PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (impl->key == nullptr || EVP_PKEY_base_id(impl->key) != EVP_PKEY_RSA) {
    throw std::runtime_error("the RS256 public key is not a PEM RSA public key");
  }
  return Verifier(std::move(impl));
}

VerifyResult Verifier::verify(std::string_view token, std::int64_t now) const {
  if (token.size() > kMaxTokenBytes) return refuse("token too long");
  auto dot1 = token.find('.');
  auto dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    return refuse("token is not three dot-separated parts");
  }
  auto header_raw = codec::base64url_decode(token.substr(0, dot1));
  auto payload_raw = codec::base64url_decode(token.substr(dot1 + 1, dot2 - dot1 - 1));
  auto sig = codec::base64url_decode(token.substr(dot2 + 1));
  if (!header_raw || !payload_raw || !sig) return refuse("token is not base64url");

  boost::system::error_code ec;
  json::value header = json::parse(*header_raw, ec);
  if (ec || !header.is_object()) return refuse("token header is not a JSON object");
  const auto* alg = header.get_object().if_contains("alg");
  const char* want = impl_->alg == Impl::Alg::HS256 ? "HS256" : "RS256";
  if (alg == nullptr || !alg->is_string() || alg->get_string() != want) {
    return refuse(std::string("token algorithm must be ") + want);
  }
  if (header.get_object().contains("crit")) return refuse("token has critical extensions");

  const std::string_view signing_input = token.substr(0, dot2);
  if (impl_->alg == Impl::Alg::HS256) {
    auto mac = codec::hmac_sha256(impl_->secret, signing_input);
    if (sig->size() != mac.size() || CRYPTO_memcmp(sig->data(), mac.data(), mac.size()) != 0) {
      return refuse("token signature is invalid");
    }
  } else {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    bool good =
        EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, impl_->key) == 1 &&
        EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(sig->data()), sig->size(),
                         reinterpret_cast<const unsigned char*>(signing_input.data()),
                         signing_input.size()) == 1;
    EVP_MD_CTX_free(ctx);
    if (!good) return refuse("token signature is invalid");
  }

  json::value payload = json::parse(*payload_raw, ec);
  if (ec || !payload.is_object()) return refuse("token payload is not a JSON object");
  const auto& p = payload.get_object();
  VerifyResult out;
  const auto* sub = p.if_contains("sub");
  if (sub == nullptr || !sub->is_string() || sub->get_string().empty() ||
      sub->get_string().size() > 128) {
    return refuse("token needs 'sub', 1-128 characters");
  }
  out.claims.sub.assign(sub->get_string());
  const auto* name = p.if_contains("name");
  if (name != nullptr && (!name->is_string() || name->get_string().size() > 256)) {
    return refuse("token 'name' must be a string of at most 256 bytes");
  }
  out.claims.name = name ? std::string(name->get_string()) : out.claims.sub;
  // exp, nbf, iat: NumericDate (RFC 7519 section 2), seconds since the epoch as any JSON
  // number, fractions included; compared as numbers.
  const auto* exp = p.if_contains("exp");
  const auto exp_s = exp ? numeric_date(*exp) : std::nullopt;
  if (!exp_s)
    return refuse("token needs 'exp', a NumericDate (seconds since 1970, 0 to year 9999)");
  out.claims.exp = static_cast<std::int64_t>(std::floor(*exp_s));
  const auto leeway = static_cast<double>(impl_->leeway.count());
  if (static_cast<double>(now) > *exp_s + leeway) return refuse("token expired");
  if (const auto* nbf = p.if_contains("nbf")) {
    const auto nbf_s = numeric_date(*nbf);
    if (!nbf_s) return refuse("token 'nbf' must be a NumericDate (seconds since 1970)");
    if (static_cast<double>(now) + leeway < *nbf_s) return refuse("token not valid yet");
  }
  if (const auto* iat = p.if_contains("iat")) {
    const auto iat_s = numeric_date(*iat);
    if (!iat_s) return refuse("token 'iat' must be a NumericDate (seconds since 1970)");
    out.claims.iat = static_cast<std::int64_t>(std::floor(*iat_s));
  }
  if (const auto* v = p.if_contains("ver")) {
    if (!v->is_int64() || v->get_int64() < 0)
      return refuse("token 'ver' must be a non-negative integer");
    out.claims.ver = v->get_int64();
  }
  if (const auto* roles = p.if_contains("roles")) {
    if (!roles->is_object()) return refuse("token 'roles' must be an object");
    for (const auto& kv : roles->get_object()) {
      Role r{};
      if (!kv.value().is_string() || !parse_role(kv.value().get_string(), r)) {
        return refuse("token role for project '" + std::string(kv.key()) +
                      "' must be owner, editor or viewer");
      }
      out.claims.roles.emplace(std::string(kv.key()), r);
    }
  }
  out.ok = true;
  return out;
}

std::string sign_hs256_raw(std::string_view header_json, std::string_view payload_json,
                           std::string_view secret) {
  std::string input = codec::base64url(header_json) + "." + codec::base64url(payload_json);
  return input + "." + codec::base64url(codec::hmac_sha256(secret, input));
}

std::string sign_hs256(const Claims& c, std::string_view secret) {
  json::object payload{{"sub", c.sub}, {"name", c.name}, {"exp", c.exp}};
  if (!c.roles.empty()) {  // kept for callers that sign them; Kiln decides access without
    json::object roles;
    for (const auto& [project, role] : c.roles) roles[project] = to_string(role);
    payload["roles"] = std::move(roles);
  }
  if (c.iat != 0) payload["iat"] = c.iat;
  if (c.ver != 0) payload["ver"] = c.ver;
  return sign_hs256_raw(R"({"alg":"HS256","typ":"JWT"})", json::serialize(payload), secret);
}

}  // namespace kiln::auth
