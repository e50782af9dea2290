#pragma once
// The signer's key custody: the private key lives only in this process, in a state directory
// (mode 0700) that only the signer's user can enter, in a file created with O_EXCL (mode 0600)
// and read with O_NOFOLLOW so a planted symlink cannot redirect it.

#include "core/signing.h"

#include <string>
#include <vector>

namespace cellos::signer {

class KeyStore {
 public:
  // Opens `stateDir` (which must exist, be a directory owned by us, and not be a symlink).
  // Loads signing-key.pem, or generates an Ed25519 key there on first start. An operator key
  // (`operatorPemPath`, e.g. from $CREDENTIALS_DIRECTORY) takes precedence when non-empty.
  KeyStore(std::string stateDir, const std::string& operatorPemPath);

  const core::SigningKey& current() const { return key_; }

  // Every public key this signer has signed with (current first), for verifiers.
  const std::vector<core::PublicKey>& publicKeys() const { return publicKeys_; }
  std::string keysetJson() const;

  const std::string& stateDir() const { return stateDir_; }

 private:
  std::string stateDir_;
  core::SigningKey key_;
  std::vector<core::PublicKey> publicKeys_;
};

// Reads a whole small file without following a symlink at its last component. Throws with the
// path and errno.
std::string readFileNoFollow(const std::string& path, size_t maxBytes);

// Replaces `path` atomically: writes a temporary file in the same directory, fsyncs it, renames
// it over `path` and fsyncs the directory, so a crash leaves either the old or the new content.
void writeFileDurably(const std::string& path, const std::string& content, mode_t mode);

}  // namespace cellos::signer
