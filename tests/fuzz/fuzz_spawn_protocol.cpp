// libFuzzer: both directions of the gVisor spawner's protocol (spawn_protocol.h). The spawner
// runs as root with no seccomp filter of ours, so what it accepts from its launcher is exactly
// "spawn " and a valid cell id; the launcher accepts from the spawner exactly "ok <pid>" with a
// positive pid and seven or eight fds, or a refusal. Whatever the bytes, an accepted message is
// one the other side could have written, byte for byte.

#include "core/cell_id.h"
#include "vmm-agent/cell/spawn_protocol.h"

#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cellos::vmm;
  if (size == 0) return 0;
  // The first byte picks how many fds the reply came with (0..8).
  size_t fdCount = data[0] % 9;
  std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);

  std::string why;
  std::optional<std::string> cellId = parseSpawnRequest(bytes, &why);
  if (cellId) {
    if (!cellos::core::isValidCellId(*cellId) || spawnRequest(*cellId) != bytes) abort();
  } else if (why.empty()) {
    abort();  // a refusal always says why
  }

  try {
    pid_t pid = parseSpawnReply(bytes, fdCount);
    if (pid <= 0 || spawnedReply(pid) != bytes) abort();
    if (fdCount != kSpawnedCellFdCount && fdCount != kSpawnedCellMaxFdCount) abort();
  } catch (const std::runtime_error& e) {
    if (std::string(e.what()).empty()) abort();
  }
  return 0;
}
