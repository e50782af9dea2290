// libFuzzer: one message on the launcher's socket, as the agent's RPC half (less privileged, and
// the half a compromised broker talks to) could send it. The bytes go through the framing the
// launcher reads (a segment table, then segments, under launcherRequestOptions) and through the
// decoder of whichever request it is (launcher_request.h); a launch request's plan also becomes
// the cell's nftables ruleset, and a learned-egress request its set elements, as the launcher
// builds them next. Each either refuses with an exception or yields data that holds what the
// launcher relies on: a valid cell id, bounded address lists of the right lengths.

#include "core/cell_id.h"
#include "core/nft_rules.h"
#include "vmm-agent/launcher/launcher_request.h"

#include <capnp/serialize.h>
#include <kj/exception.h>
#include <kj/io.h>

#include <cstdint>
#include <cstdlib>
#include <exception>

namespace {

using namespace cellos;

void requireValidId(const std::string& id) {
  if (!core::isValidCellId(id)) abort();
}

// A plan with one host rule and one CIDR rule, for learned addresses of a request that names a
// rule by index.
const core::NftPlan& learnedPlan() {
  static const core::NftPlan plan = [] {
    core::NftPlan p;
    p.dnsUid = 990;
    p.egress.push_back({"api.example.com", std::nullopt, 443, "tcp"});
    p.egress.push_back({std::nullopt, "10.214.0.0/24", 8080, "tcp"});
    return p;
  }();
  return plan;
}

void decode(ipc::LauncherRequest::Reader request) {
  switch (request.which()) {
    case ipc::LauncherRequest::LAUNCH: {
      vmm::LaunchRequest launch = vmm::decodeLaunchRequest(request.getLaunch(), 990);
      requireValidId(launch.launch.cellId);
      if (launch.plan.dnsUid != 990) abort();
      core::nftRuleset(launch.plan);
      break;
    }
    case ipc::LauncherRequest::DESTROY:
      requireValidId(vmm::decodeDestroyRequest(request.getDestroy()).cellId);
      break;
    case ipc::LauncherRequest::INSPECT:
      requireValidId(vmm::requestCellId(request.getInspect()));
      break;
    case ipc::LauncherRequest::OPEN_ARTIFACT:
      requireValidId(vmm::decodeArtifactRequest(request.getOpenArtifact()).cellId);
      break;
    case ipc::LauncherRequest::DELIVER_SECRETS: {
      vmm::SecretsCommand secrets = vmm::decodeSecretDelivery(request.getDeliverSecrets());
      requireValidId(secrets.cellId);
      break;
    }
    case ipc::LauncherRequest::ALLOW_EGRESS: {
      vmm::EgressCommand egress = vmm::decodeAllowEgressRequest(request.getAllowEgress());
      requireValidId(egress.cellId);
      if (egress.ipv4.size() + egress.ipv6.size() > vmm::kMaxLearnedAddresses) abort();
      for (const auto& a : egress.ipv4) {
        if (a.size() != 4) abort();
      }
      for (const auto& a : egress.ipv6) {
        if (a.size() != 16) abort();
      }
      core::nftLearnedElements(learnedPlan(), egress.ruleIndex, egress.ipv4, egress.ipv6,
                               egress.timeoutSeconds);
      break;
    }
    default:
      break;  // an ordinal this version does not know: the launcher refuses it unread
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    kj::ArrayInputStream in(kj::arrayPtr(data, size));
    capnp::InputStreamMessageReader reader(in, vmm::launcherRequestOptions());
    decode(reader.getRoot<ipc::LauncherRequest>());
  } catch (const kj::Exception&) {
  } catch (const std::exception&) {
  }
  return 0;
}
