#pragma once
// A cell's secrets, for every backend: a small tmpfs the backend mounts inside the cell
// (kSecretsDirectory), filled by the VM launcher before the workload runs, one file per secret
// (mode 0400, owned by the workload's host id). With delivery "file" the workload reads them
// there (the mount is made read-only first); with "env" the cell's init reads them into the
// workload's environment and unmounts the tmpfs before the workload exists.
//
// Values are only ever in buffers this code wipes (explicit_bzero); nothing here logs a value.

#include <sys/types.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cellos::vmm {

// Inside the cell.
inline constexpr const char* kSecretsDirectory = "/run/secrets";
// Upper bound of the tmpfs (and so of all values of one cell together).
inline constexpr size_t kSecretsTmpfsBytes = 1 << 20;

// [A-Za-z0-9_.-]{1,255}, not "." or "..": one path segment, and a valid environment name for
// execve (no "=" and no NUL).
bool isSecretName(std::string_view name);

// Creates `path` (and a missing parent) and mounts a tmpfs there for the secrets: mode 0700,
// owned by `ownerId`, nosuid, nodev, noexec, size kSecretsTmpfsBytes. Runs inside the cell's
// mount namespace, before its root is made read-only. Throws std::system_error.
void mountSecretsTmpfs(const std::string& path, uid_t ownerId);

// Writes each secret as a new file `<dirFd>/<name>` (O_CREAT|O_EXCL|O_NOFOLLOW, mode 0400),
// created with fsuid/fsgid `ownerId` so the workload owns it (the launcher has no CAP_CHOWN). With
// `forEnvironment`, a value must not contain NUL. Returns the names written. Throws
// std::runtime_error naming the secret (never its value) on a bad name, a duplicate or a failed
// call; files written before the failure stay for the cell's teardown.
std::vector<std::string> writeSecretFiles(
    int dirFd, const std::vector<std::pair<std::string_view, std::string_view>>& secrets,
    uid_t ownerId, bool forEnvironment);

// In the cell's init, env delivery: reads every file of `path` into "NAME=value" strings (in
// directory order), then unmounts `path` (MNT_DETACH) so the workload never sees the files. Throws
// std::system_error / std::runtime_error. The caller wipes the strings once the workload has
// its copy (wipeStrings).
std::vector<std::string> takeSecretEnvironment(const std::string& path);

// explicit_bzero over each string's bytes.
void wipeStrings(std::vector<std::string>& strings);

}  // namespace cellos::vmm
