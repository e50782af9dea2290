#include "core/digest.h"

#include <openssl/evp.h>

#include <stdexcept>

namespace cellos::core {

std::string sha256(std::string_view bytes) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), out, &length, EVP_sha256(), nullptr) != 1 ||
      length != 32) {
    throw std::runtime_error("EVP_Digest(SHA-256) failed");
  }
  return std::string(reinterpret_cast<const char*>(out), length);
}

}  // namespace cellos::core
