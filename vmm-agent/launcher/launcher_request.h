#pragma once
// Reading the agent's requests in the launcher: the one place where bytes from the less
// privileged RPC half become the launcher's plain data. Fuzzed (tests/fuzz/fuzz_launcher_request).

#include "core/nft_rules.h"
#include "ipc/vmm.capnp.h"
#include "vmm-agent/cell/cell_backend.h"

#include <capnp/message.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cellos::vmm {

// Bounds of one request message: the largest legitimate one (a secret bundle of 1 MiB) fits.
capnp::ReaderOptions launcherRequestOptions();

// A launch request as plain data. `launch` lacks what the launcher assigns (cellDir, ids,
// imageRoot: `image` is the registered name to resolve); `plan` lacks the host destinations.
struct LaunchRequest {
  CellLaunch launch;
  std::string image;
  ipc::Backend backend = ipc::Backend::LINUX;
  core::NftPlan plan;
};

// Throws kj::Exception or std::exception for a request the launcher refuses (an invalid cell
// id, an egress range that does not parse, ...); builds nothing.
LaunchRequest decodeLaunchRequest(ipc::CellRequest::Reader request, uint32_t dnsUid);

// The cell id a request names, validated ([a-z0-9][a-z0-9._-]{0,62}); throws otherwise.
std::string requestCellId(capnp::Text::Reader cellId);

// The other requests as plain data; each throws, as decodeLaunchRequest does, for one the
// launcher refuses before it looks up any cell.
struct DestroyCommand {
  std::string cellId;
  pid_t initPid = 0;  // as the agent last knew it; only for the records of a cell not live here
};
DestroyCommand decodeDestroyRequest(ipc::DestroyRequest::Reader request);

struct ArtifactCommand {
  std::string cellId;
  std::string path;  // unchecked here: artifact_open.h refuses what is not inside the cell
  uint64_t maxBytes = 0;
};
ArtifactCommand decodeArtifactRequest(ipc::ArtifactRequest::Reader request);

// DNS-learned addresses of one `host` rule (at most kMaxLearnedAddresses in one request; each
// 4 or 16 bytes, as its list says).
inline constexpr size_t kMaxLearnedAddresses = 256;
struct EgressCommand {
  std::string cellId;
  uint32_t ruleIndex = 0;
  std::vector<std::vector<uint8_t>> ipv4, ipv6;
  uint32_t timeoutSeconds = 0;
};
EgressCommand decodeAllowEgressRequest(ipc::AllowEgressRequest::Reader request);

// Secret values stay in the request's own buffer (which the launcher wipes once handled):
// `secrets` views it, so no second copy of a value exists on the launcher's heap.
struct SecretsCommand {
  std::string cellId;
  bool asEnvironment = false;  // delivery "env": one env file; otherwise one file per secret
  std::vector<std::pair<std::string_view, std::string_view>> secrets;  // name, value
};
SecretsCommand decodeSecretDelivery(ipc::SecretDelivery::Reader request);

}  // namespace cellos::vmm
