#pragma once
// Where the broker finds the values of the secrets a document names (spec.authority.secretRefs),
// and how it hands them on without keeping them.
//
// Sources (--secret-source):
//   env                  CELLOS_SECRET_<NAME> in the broker's own environment: the name as
//                        written in the document, else as the reference's env broker spells
//                        it (upper case, "-" and "." as "_": CELLOS_SECRET_DB_PASSWORD);
//   dir                  a directory (--secrets-dir), one regular file per secret, its name the
//                        secret's name; one trailing newline is not part of the value;
//   systemd-credentials  the same, in $CREDENTIALS_DIRECTORY (LoadCredential= in the unit).
// A directory's files are opened (O_NOFOLLOW, regular files only) at start-up, before seccomp;
// each value is read with pread when a run needs it, so a value is in the broker's memory only
// between resolving and delivering. A secret added to the directory later needs a restart.
//
// Values live in core::SecretBuffer (wiped on destruction) and leave the broker in a sealed
// memfd (sealBundle), so no copy remains in a Cap'n Proto message the broker cannot wipe. They
// are never logged and never put in an event; events carry names only.

#include "core/secret_buffer.h"

#include <kj/io.h>

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace cellos::broker {

// A value longer than this is refused (a secret is a token or a key, not a file system).
inline constexpr size_t kMaxSecretBytes = 64 * 1024;

struct ResolvedSecret {
  std::string name;
  core::SecretBuffer value;
};

class SecretBroker {
 public:
  // `source`: "env", "dir" or "systemd-credentials"; `dir` is used by "dir". Throws one line
  // saying what to fix (unknown source, missing directory, $CREDENTIALS_DIRECTORY unset).
  SecretBroker(const std::string& source, const std::string& dir);
  ~SecretBroker();
  SecretBroker(const SecretBroker&) = delete;
  SecretBroker& operator=(const SecretBroker&) = delete;

  // The values of `names`, in order. Throws std::runtime_error naming the first secret this
  // source does not have (or cannot read) — never a value.
  std::vector<ResolvedSecret> resolve(const std::vector<std::string>& names) const;

  const std::string& source() const { return source_; }

 private:
  std::string source_;
  std::string dir_;
  std::map<std::string, int> files_;  // name -> O_RDONLY fd, for "dir" / "systemd-credentials"
};

// Writes `secrets` with `delivery` ("env" | "file") as one ipc::SecretBundle message into a new
// memfd, seals it against any change (F_SEAL_WRITE|SHRINK|GROW|SEAL) and returns it. The message
// builder's memory is wiped before this returns.
kj::AutoCloseFd sealBundle(const std::vector<ResolvedSecret>& secrets, const std::string& delivery);

}  // namespace cellos::broker
