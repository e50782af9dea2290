#include "broker/cli/keys.h"

#include "broker/cli/commands.h"
#include "core/key_forms.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace cellos::cli {

std::optional<core::Keyset> readVerificationKeys(const std::string& path,
                                                 const std::string& stateDir,
                                                 const std::string& command) {
  const std::string file = path.empty() ? stateDir + "/signer/keyset.json" : path;
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    std::cerr << "cellos " << command << ": cannot read keys " << file << ": "
              << std::strerror(errno) << " (pass --keys FILE)\n";
    return std::nullopt;
  }
  std::stringstream text;
  text << in.rdbuf();
  std::string error;
  auto keys = core::parseVerificationKeys(text.str(), &error);
  if (!keys) std::cerr << "cellos " << command << ": keys " << file << ": " << error << "\n";
  return keys;
}

int keysCommand(const KeysOptions& options) {
  auto keys = readVerificationKeys(options.keysPath, options.stateDir, "keys");
  if (!keys) return kExitUsage;
  if (options.format == "pem") {
    std::cout << core::keysetAsPem(*keys);
  } else if (options.format == "jwk") {
    std::cout << core::jwkSetOf(*keys).dump(2) << "\n";
  } else {
    // Our keyset form, keyid -> PEM: it keeps keyids that are not "ed25519:"/"p256:" ids.
    nlohmann::json keyset = nlohmann::json::object();
    for (const auto& [keyid, key] : *keys) keyset[keyid] = key.spkiPem();
    std::cout << keyset.dump(2) << "\n";
  }
  return 0;
}

}  // namespace cellos::cli
