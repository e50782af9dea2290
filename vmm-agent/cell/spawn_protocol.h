#pragma once
// A supervisor spawner's protocol with its launcher (one SOCK_SEQPACKET message each way, see
// supervisor_spawner.h), kept apart from the processes that speak it so it can be fuzzed alone
// (tests/fuzz/fuzz_spawn_protocol).
//
//   request: "spawn <cellId>"
//   reply:   "ok <pid>" with the cell's fds attached, or "error <reason>" with none

#include <sys/types.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace cellos::vmm {

// pidfd, netns, stdout, stderr, start, status, working directory[, secrets]
inline constexpr size_t kSpawnedCellFdCount = 7;
inline constexpr size_t kSpawnedCellMaxFdCount = 8;

std::string spawnRequest(const std::string& cellId);

// The cell id of a request, or nullopt (with `why`) for anything else: a request is exactly
// "spawn " and a valid cell id, nothing before or after.
std::optional<std::string> parseSpawnRequest(std::string_view request, std::string* why);

std::string spawnedReply(pid_t pid);
std::string refusedReply(std::string_view reason);

// The supervisor's pid of an "ok" reply that came with `fdCount` fds. Throws std::runtime_error
// with the spawner's reason for an "error" reply, and for anything malformed (a pid that is not
// a positive decimal number as spawnedReply writes it, the wrong number of fds).
pid_t parseSpawnReply(std::string_view reply, size_t fdCount);

}  // namespace cellos::vmm
