#include "vmm-agent/cell/spawn_protocol.h"

#include "core/cell_id.h"

#include <charconv>
#include <stdexcept>
#include <system_error>

namespace cellos::vmm {

namespace {

constexpr std::string_view kSpawnVerb = "spawn ";
constexpr std::string_view kOk = "ok ";
constexpr std::string_view kError = "error ";

}  // namespace

std::string spawnRequest(const std::string& cellId) {
  return std::string(kSpawnVerb) + cellId;
}

std::optional<std::string> parseSpawnRequest(std::string_view request, std::string* why) {
  if (request.substr(0, kSpawnVerb.size()) != kSpawnVerb) {
    *why = "unknown request";
    return std::nullopt;
  }
  std::string cellId(request.substr(kSpawnVerb.size()));
  if (!core::isValidCellId(cellId)) {
    *why = "invalid cell id";
    return std::nullopt;
  }
  return cellId;
}

std::string spawnedReply(pid_t pid) {
  return std::string(kOk) + std::to_string(pid);
}

std::string refusedReply(std::string_view reason) {
  return std::string(kError) + std::string(reason);
}

pid_t parseSpawnReply(std::string_view reply, size_t fdCount) {
  if (reply.substr(0, kOk.size()) != kOk) {
    throw std::runtime_error("supervisor spawner: " +
                             std::string(reply.substr(0, kError.size()) == kError
                                             ? reply.substr(kError.size())
                                             : reply));
  }
  if (fdCount != kSpawnedCellFdCount && fdCount != kSpawnedCellMaxFdCount) {
    throw std::runtime_error("supervisor spawner sent " + std::to_string(fdCount) + " fds");
  }
  pid_t pid = 0;
  std::string_view digits = reply.substr(kOk.size());
  auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), pid);
  // Exactly what spawnedReply writes: decimal, no sign, no leading zero.
  if (digits.empty() || digits[0] < '1' || digits[0] > '9' || error != std::errc() ||
      end != digits.data() + digits.size() || pid <= 0) {
    throw std::runtime_error("supervisor spawner sent a bad pid");
  }
  return pid;
}

}  // namespace cellos::vmm
