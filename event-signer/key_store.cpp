#include "event-signer/key_store.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <kj/debug.h>
#include <nlohmann/json.hpp>

namespace cellos::signer {

namespace {

constexpr size_t kMaxKeyFileBytes = 64 * 1024;

std::string parentDirectory(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
}

void fsyncDirectory(const std::string& dir) {
  int fd;
  KJ_SYSCALL(fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC), dir);
  KJ_DEFER(close(fd));
  KJ_SYSCALL(fsync(fd), dir);
}

void writeAll(int fd, const std::string& content, const std::string& what) {
  size_t off = 0;
  while (off < content.size()) {
    ssize_t n;
    KJ_SYSCALL(n = write(fd, content.data() + off, content.size() - off), what);
    off += n;
  }
}

}  // namespace

std::string readFileNoFollow(const std::string& path, size_t maxBytes) {
  int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    KJ_FAIL_SYSCALL("open", errno, path);
  }
  KJ_DEFER(close(fd));
  struct stat st {};
  KJ_SYSCALL(fstat(fd, &st), path);
  KJ_REQUIRE(S_ISREG(st.st_mode), "not a regular file", path);
  KJ_REQUIRE(static_cast<size_t>(st.st_size) <= maxBytes, "file too large", path);
  std::string content(st.st_size, '\0');
  size_t off = 0;
  while (off < content.size()) {
    ssize_t n;
    KJ_SYSCALL(n = read(fd, content.data() + off, content.size() - off), path);
    if (n == 0) break;
    off += n;
  }
  content.resize(off);
  return content;
}

void writeFileDurably(const std::string& path, const std::string& content, mode_t mode) {
  std::string tmp = path + ".tmp";
  unlink(tmp.c_str());
  int fd;
  KJ_SYSCALL(fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode),
             tmp);
  {
    KJ_DEFER(close(fd));
    writeAll(fd, content, tmp);
    KJ_SYSCALL(fsync(fd), tmp);
  }
  KJ_SYSCALL(rename(tmp.c_str(), path.c_str()), tmp, path);
  fsyncDirectory(parentDirectory(path));
}

std::optional<StateLock> StateLock::tryAcquire(const std::string& stateDir) {
  std::string path = stateDir + "/signer.lock";
  int fd;
  KJ_SYSCALL(fd = open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600), path);
  if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
    int error = errno;
    close(fd);
    if (error == EWOULDBLOCK) return std::nullopt;
    KJ_FAIL_SYSCALL("flock", error, path);
  }
  return StateLock(fd);
}

bool StateLock::heldByAnother(const std::string& stateDir) {
  std::string path = stateDir + "/signer.lock";
  int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return false;
  KJ_DEFER(close(fd));
  if (flock(fd, LOCK_SH | LOCK_NB) == 0) return false;  // released when fd closes
  return errno == EWOULDBLOCK;
}

StateLock::~StateLock() {
  if (fd_ >= 0) close(fd_);
}

KeyStore::KeyStore(std::string stateDir, const std::string& operatorPemPath)
    : stateDir_(std::move(stateDir)), operatorKey_(!operatorPemPath.empty()), key_([&]() {
        struct stat st {};
        KJ_SYSCALL(lstat(stateDir_.c_str(), &st), stateDir_);
        KJ_REQUIRE(S_ISDIR(st.st_mode), "signer state directory is not a directory", stateDir_);
        KJ_REQUIRE(st.st_uid == geteuid(), "signer state directory is owned by someone else",
                   stateDir_, st.st_uid);
        KJ_REQUIRE((st.st_mode & 077) == 0, "signer state directory must be mode 0700", stateDir_);
        if (!operatorPemPath.empty()) {
          std::string pem = readFileNoFollow(operatorPemPath, kMaxKeyFileBytes);
          KJ_DEFER(OPENSSL_cleanse(pem.data(), pem.size()));
          return core::SigningKey::fromPem(pem);
        }
        std::string keyPath = stateDir_ + "/signing-key.pem";
        if (unlink((keyPath + ".new").c_str()) == 0) {
          KJ_LOG(WARNING, "removed the key of a rotation that did not complete", keyPath);
        }
        int fd = open(keyPath.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0) {
          // First start: generate and store. O_EXCL means we never overwrite a key.
          KJ_DEFER(close(fd));
          auto key = core::SigningKey::generate(core::KeyAlgorithm::kEd25519);
          std::string pem = key.privatePem();
          KJ_DEFER(OPENSSL_cleanse(pem.data(), pem.size()));
          writeAll(fd, pem, keyPath);
          KJ_SYSCALL(fsync(fd), keyPath);
          fsyncDirectory(stateDir_);
          return key;
        }
        if (errno != EEXIST) {
          KJ_FAIL_SYSCALL("open", errno, keyPath);
        }
        std::string pem = readFileNoFollow(keyPath, kMaxKeyFileBytes);
        KJ_DEFER(OPENSSL_cleanse(pem.data(), pem.size()));
        return core::SigningKey::fromPem(pem);
      }()) {
  auto current = core::PublicKey::fromRaw(key_.algorithm(), key_.rawPublicKey());
  KJ_REQUIRE(current != std::nullopt, "cannot derive the public key");
  publicKeys_.push_back(*current);
  // Keep the public keys of earlier keys so logs they signed stay verifiable.
  std::string keysetPath = stateDir_ + "/keyset.json";
  if (access(keysetPath.c_str(), F_OK) == 0) {
    std::string error;
    auto previous = core::parseKeyset(readFileNoFollow(keysetPath, kMaxKeyFileBytes), &error);
    KJ_REQUIRE(previous != std::nullopt, "keyset.json is unreadable", keysetPath, error);
    for (auto& [keyId, publicKey] : *previous) {
      if (keyId != key_.keyId()) publicKeys_.push_back(publicKey);
    }
  }
  writeFileDurably(keysetPath, keysetJson(), 0644);
}

void KeyStore::rotate(core::KeyAlgorithm algorithm) {
  KJ_REQUIRE(!operatorKey_,
             "the signing key is the operator's (--key-file or $CREDENTIALS_DIRECTORY): replace "
             "that file and restart the signer; the chain continues under the new key");
  auto next = core::SigningKey::generate(algorithm);
  std::string keyPath = stateDir_ + "/signing-key.pem";
  std::string newPath = keyPath + ".new";
  unlink(newPath.c_str());
  int fd;
  KJ_SYSCALL(fd = open(newPath.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600),
             newPath);
  {
    KJ_DEFER(close(fd));
    std::string pem = next.privatePem();
    KJ_DEFER(OPENSSL_cleanse(pem.data(), pem.size()));
    writeAll(fd, pem, newPath);
    KJ_SYSCALL(fsync(fd), newPath);
  }
  // Verifiers learn the new public key before it can sign anything.
  std::vector<core::PublicKey> keys = {next.publicKey()};
  keys.insert(keys.end(), publicKeys_.begin(), publicKeys_.end());
  writeFileDurably(stateDir_ + "/keyset.json", core::serializeKeyset(keys), 0644);
  // The switch: from here on a restart loads the new key.
  KJ_SYSCALL(rename(newPath.c_str(), keyPath.c_str()), newPath, keyPath);
  fsyncDirectory(stateDir_);
  publicKeys_ = std::move(keys);
  key_ = std::move(next);
}

std::string KeyStore::keysetJson() const {
  return core::serializeKeyset(publicKeys_);
}

}  // namespace cellos::signer
