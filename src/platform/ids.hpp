// Random identifiers for nodes, sessions and requests.
#pragma once

#include <cstddef>
#include <string>

namespace kiln::ids {

// `bytes` random bytes from the operating system's CSPRNG, as lowercase hex.
std::string random_hex(std::size_t bytes);

}  // namespace kiln::ids
