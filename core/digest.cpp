#include "core/digest.h"

#include <openssl/evp.h>

#include <stdexcept>

namespace cellos::core {

std::string sha256(std::string_view bytes) {
  // Fetched once: EVP_sha256() makes every EVP_Digest look the algorithm up in the provider
  // again, which dominates hashing the short strings the event digests are made of.
  static EVP_MD* const kSha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  if (kSha256 == nullptr) throw std::runtime_error("EVP_MD_fetch(SHA256) failed");
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), out, &length, kSha256, nullptr) != 1 || length != 32) {
    throw std::runtime_error("EVP_Digest(SHA-256) failed");
  }
  return std::string(reinterpret_cast<const char*>(out), length);
}

}  // namespace cellos::core
