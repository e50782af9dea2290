#pragma once
// Reading the keys `cellos verify` trusts, and `cellos keys`, which prints them in the forms a
// verifier that does not run cellos reads (PEM, JWK).

#include "core/signing.h"

#include <optional>
#include <string>

namespace cellos::cli {

// The keys in `path` (any form core::parseVerificationKeys reads), or, when `path` is empty,
// the signer's keyset <stateDir>/signer/keyset.json. On failure prints one line naming the file
// to stderr, prefixed "cellos <command>: ", and returns nullopt.
std::optional<core::Keyset> readVerificationKeys(const std::string& path,
                                                 const std::string& stateDir,
                                                 const std::string& command);

struct KeysOptions {
  std::string keysPath;  // default <stateDir>/signer/keyset.json
  std::string stateDir = "/var/lib/cellos";
  std::string format = "pem";  // pem | jwk | keyset
};
// Prints the keys to stdout: PEM blocks each under a "keyid: " line, a JWK Set, or our keyset
// JSON (keyid -> PEM). Exit 0, or kExitUsage if the keys cannot be read.
int keysCommand(const KeysOptions& options);

}  // namespace cellos::cli
