// libFuzzer target: token verification must refuse garbage cleanly, never crash.
#include "auth/jwt.hpp"

#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const auto verifier = kiln::auth::Verifier::hs256("fuzz-secret-0123456789abcdef0123456");
  const std::string_view token(reinterpret_cast<const char*>(data), size);
  (void)verifier.verify(token, 1'800'000'000);
  return 0;
}
