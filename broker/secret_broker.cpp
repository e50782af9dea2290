#include "broker/secret_broker.h"

#include "ipc/vmm.capnp.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include <kj/debug.h>

namespace cellos::broker {

namespace {

// The names a document may use ([A-Za-z0-9_.-]+, not "." or ".."): anything else in the
// directory is not a secret this broker serves.
bool isSecretName(const std::string& name) {
  if (name.empty() || name == "." || name == ".." || name.size() > 255) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// Opens every regular file of `dir` whose name is a secret name. O_NOFOLLOW: a symlink in the
// directory is not followed to wherever it points (the broker may read more than it should).
std::map<std::string, int> openSecretFiles(const std::string& dir) {
  int dirFd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dirFd < 0) {
    throw std::runtime_error("secrets directory " + dir + ": " + strerror(errno));
  }
  std::map<std::string, int> files;
  DIR* listing = fdopendir(dirFd);
  if (listing == nullptr) {
    close(dirFd);
    throw std::runtime_error("secrets directory " + dir + ": " + strerror(errno));
  }
  while (dirent* entry = readdir(listing)) {
    std::string name = entry->d_name;
    if (!isSecretName(name)) continue;
    int fd = openat(dirfd(listing), name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) continue;  // a symlink (ELOOP) or unreadable: not served
    struct stat st {};
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
      close(fd);
      continue;
    }
    files[name] = fd;
  }
  closedir(listing);
  return files;
}

std::string referenceKey(const std::string& name) {
  std::string key = name;
  for (char& c : key) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    if (c == '-' || c == '.') c = '_';
  }
  return key;
}

void wipeSegments(capnp::MessageBuilder& message) {
  for (auto segment : message.getSegmentsForOutput()) {
    explicit_bzero(const_cast<capnp::word*>(segment.begin()), segment.size() * sizeof(capnp::word));
  }
}

}  // namespace

SecretBroker::SecretBroker(const std::string& source, const std::string& dir) : source_(source) {
  if (source == "env") return;
  if (source == "dir") {
    if (dir.empty()) throw std::runtime_error("--secret-source=dir needs --secrets-dir");
    dir_ = dir;
  } else if (source == "systemd-credentials") {
    const char* credentials = getenv("CREDENTIALS_DIRECTORY");
    if (credentials == nullptr || *credentials == '\0') {
      throw std::runtime_error(
          "--secret-source=systemd-credentials: $CREDENTIALS_DIRECTORY is not set (add "
          "LoadCredential= to the unit)");
    }
    dir_ = credentials;
  } else {
    throw std::runtime_error("--secret-source must be env, dir or systemd-credentials, got \"" +
                             source + "\"");
  }
  files_ = openSecretFiles(dir_);
}

SecretBroker::~SecretBroker() {
  for (auto& [name, fd] : files_) close(fd);
}

std::vector<ResolvedSecret> SecretBroker::resolve(const std::vector<std::string>& names) const {
  std::vector<ResolvedSecret> out;
  for (const auto& name : names) {
    ResolvedSecret secret{name, {}};
    if (source_ == "env") {
      // The name as written, else the reference broker's spelling (upper case, "-" and "."
      // as "_"), so an environment set up for cellos-broker-env keeps working.
      const char* value = getenv(("CELLOS_SECRET_" + name).c_str());
      if (value == nullptr) value = getenv(("CELLOS_SECRET_" + referenceKey(name)).c_str());
      if (value == nullptr) {
        throw std::runtime_error("secret " + name + " is not available (neither CELLOS_SECRET_" +
                                 name + " nor CELLOS_SECRET_" + referenceKey(name) +
                                 " is in the broker's environment)");
      }
      secret.value = core::SecretBuffer(value, strlen(value));
    } else {
      auto file = files_.find(name);
      if (file == files_.end()) {
        throw std::runtime_error("secret " + name + " is not available (no regular file " + name +
                                 " in " + dir_ + " when the broker started)");
      }
      core::SecretBuffer buffer(kMaxSecretBytes + 1);
      size_t got = 0;
      while (got < buffer.size()) {
        ssize_t n =
            pread(file->second, buffer.data() + got, buffer.size() - got, static_cast<off_t>(got));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
          throw std::runtime_error("secret " + name + ": cannot read: " + strerror(errno));
        }
        if (n == 0) break;
        got += static_cast<size_t>(n);
      }
      // One trailing newline is the editor's, not the secret's (as the reference's file broker).
      if (got > 0 && got <= kMaxSecretBytes && buffer.data()[got - 1] == '\n') --got;
      buffer.truncate(got);
      secret.value = std::move(buffer);
    }
    if (secret.value.size() > kMaxSecretBytes) {
      throw std::runtime_error("secret " + name + " is longer than " +
                               std::to_string(kMaxSecretBytes) + " bytes");
    }
    out.push_back(std::move(secret));
  }
  return out;
}

kj::AutoCloseFd sealBundle(const std::vector<ResolvedSecret>& secrets,
                           const std::string& delivery) {
  capnp::MallocMessageBuilder message;
  auto bundle = message.initRoot<ipc::SecretBundle>();
  bundle.setDelivery(delivery);
  auto list = bundle.initSecrets(secrets.size());
  for (size_t i = 0; i < secrets.size(); ++i) {
    list[i].setName(secrets[i].name);
    list[i].setValue(kj::arrayPtr(reinterpret_cast<const kj::byte*>(secrets[i].value.data()),
                                  secrets[i].value.size()));
  }
  kj::Array<capnp::word> flat = capnp::messageToFlatArray(message);
  wipeSegments(message);
  auto bytes = flat.asBytes();
  int fd = memfd_create("cellos-secrets", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) {
    explicit_bzero(bytes.begin(), bytes.size());
    KJ_FAIL_SYSCALL("memfd_create", errno);
  }
  kj::AutoCloseFd owned(fd);
  size_t done = 0;
  while (done < bytes.size()) {
    // The receiver reads at explicit offsets (pread), so the shared file offset may move.
    ssize_t n = write(fd, bytes.begin() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int error = errno;
      explicit_bzero(bytes.begin(), bytes.size());
      KJ_FAIL_SYSCALL("write(secret bundle)", error);
    }
    done += static_cast<size_t>(n);
  }
  explicit_bzero(bytes.begin(), bytes.size());
  KJ_SYSCALL(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL));
  return owned;
}

}  // namespace cellos::broker
