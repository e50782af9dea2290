#pragma once
// Message digests (OpenSSL EVP).

#include <string>
#include <string_view>

namespace cellos::core {

// SHA-256 of `bytes`: 32 raw bytes. Throws std::runtime_error only if OpenSSL itself fails.
std::string sha256(std::string_view bytes);

}  // namespace cellos::core
