#pragma once
// The signer's key custody: the private key lives only in this process, in a state directory
// (mode 0700) that only the signer's user can enter, in a file created with O_EXCL (mode 0600)
// and read with O_NOFOLLOW so a planted symlink cannot redirect it.

#include "core/signing.h"

#include <optional>
#include <string>
#include <vector>

namespace cellos::signer {

// One signer per state directory: two would each continue the chain from the same head and
// fork it. The serving signer holds an exclusive flock on <stateDir>/signer.lock for its whole
// life; an offline `rotate` takes it too.
class StateLock {
 public:
  // Takes the lock, or returns nullopt when another process holds it. Throws on other errors.
  static std::optional<StateLock> tryAcquire(const std::string& stateDir);
  // Whether another process holds the lock now (never creates the lock file).
  static bool heldByAnother(const std::string& stateDir);
  StateLock(StateLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  StateLock(const StateLock&) = delete;
  ~StateLock();

 private:
  explicit StateLock(int fd) : fd_(fd) {}
  int fd_;
};

class KeyStore {
 public:
  // Opens `stateDir` (which must exist, be a directory owned by us, and not be a symlink).
  // Loads signing-key.pem, or generates an Ed25519 key there on first start. An operator key
  // (`operatorPemPath`, e.g. from $CREDENTIALS_DIRECTORY) takes precedence when non-empty.
  // A signing-key.pem.new left by a rotation that crashed before its switch is removed (that
  // rotation did not happen; the keyset may list its public key, which signed nothing).
  KeyStore(std::string stateDir, const std::string& operatorPemPath);

  // The key that signs; after rotate() the same object holds the new key, so a reference to
  // it (EventChain keeps one) follows the rotation.
  const core::SigningKey& current() const { return key_; }

  // Replaces the signing key with a fresh one of `algorithm`, crash-safely: the new private key
  // is written beside the old one (O_EXCL, fsync), the keyset gains its public key (durably)
  // before it can sign anything, then one rename switches signing-key.pem over (the old private
  // key is gone; its public key stays in the keyset). Throws when the key is an operator's
  // (rotate that by replacing the operator's file and restarting).
  void rotate(core::KeyAlgorithm algorithm);

  bool operatorKey() const { return operatorKey_; }

  // Every public key this signer has signed with (current first), for verifiers.
  const std::vector<core::PublicKey>& publicKeys() const { return publicKeys_; }
  std::string keysetJson() const;

  const std::string& stateDir() const { return stateDir_; }

 private:
  std::string stateDir_;
  bool operatorKey_ = false;
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
