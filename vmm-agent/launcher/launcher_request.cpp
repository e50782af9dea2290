#include "vmm-agent/launcher/launcher_request.h"

#include "core/cell_id.h"

#include <kj/debug.h>

namespace cellos::vmm {

namespace {

core::NftPlan nftPlanOf(ipc::CellRequest::Reader request, uint32_t dnsUid) {
  core::NftPlan plan;
  plan.dnsUid = dnsUid;
  for (auto rule : request.getEgressRules()) {
    core::NftEgress egress;
    if (rule.getHost().size() > 0) egress.host = rule.getHost().cStr();
    if (rule.getCidr().size() > 0) egress.cidr = rule.getCidr().cStr();
    egress.port = rule.getPort();
    egress.protocol = rule.getProtocol();
    plan.egress.push_back(std::move(egress));
  }
  for (auto resolver : request.getResolvers()) {
    plan.resolvers.push_back({resolver.getResolverId(), resolver.getAddress(), resolver.getPort(),
                              resolver.getProtocol()});
  }
  std::vector<std::string> allowed;
  for (auto range : request.getAllowedHostDestinations()) allowed.emplace_back(range.cStr());
  plan.allowedHostDestinations = core::parseIpRanges(allowed);
  return plan;
}

}  // namespace

capnp::ReaderOptions launcherRequestOptions() {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = 1 << 20;
  options.nestingLimit = 16;
  return options;
}

std::string requestCellId(capnp::Text::Reader cellId) {
  std::string id = cellId;
  KJ_REQUIRE(core::isValidCellId(id), "invalid cell id", id);
  return id;
}

LaunchRequest decodeLaunchRequest(ipc::CellRequest::Reader request, uint32_t dnsUid) {
  LaunchRequest out;
  CellLaunch& launch = out.launch;
  launch.cellId = requestCellId(request.getCellId());
  for (auto arg : request.getArgv()) launch.argv.emplace_back(arg.cStr());
  for (auto kv : request.getEnv()) {
    launch.env.emplace_back(kv.getKey().cStr(), kv.getValue().cStr());
  }
  launch.workingDirectory = request.getWorkingDirectory();
  if (request.getPidsMax() != 0) launch.pidsMax = request.getPidsMax();
  launch.timeoutMs = request.getTimeoutMs();
  if (request.getMemoryMaxBytes() != 0) launch.memoryMaxBytes = request.getMemoryMaxBytes();
  if (request.getCpuQuotaMicros() != 0) {
    uint64_t period = request.getCpuPeriodMicros() != 0 ? request.getCpuPeriodMicros() : 100000;
    launch.cpuMax = CellCpuMax{request.getCpuQuotaMicros(), period};
  }
  launch.secretDelivery = request.getSecretDelivery();
  out.image = request.getImage();
  out.backend = request.getBackend();
  out.plan = nftPlanOf(request, dnsUid);
  return out;
}

DestroyCommand decodeDestroyRequest(ipc::DestroyRequest::Reader request) {
  return {requestCellId(request.getCellId()), request.getInitPid()};
}

ArtifactCommand decodeArtifactRequest(ipc::ArtifactRequest::Reader request) {
  return {requestCellId(request.getCellId()), request.getPath(), request.getMaxBytes()};
}

EgressCommand decodeAllowEgressRequest(ipc::AllowEgressRequest::Reader request) {
  EgressCommand out;
  out.cellId = requestCellId(request.getCellId());
  auto addresses = request.getAddresses();
  KJ_REQUIRE(addresses.getIpv4().size() + addresses.getIpv6().size() <= kMaxLearnedAddresses,
             "too many addresses in one request");
  for (auto a : addresses.getIpv4()) {
    KJ_REQUIRE(a.size() == 4, "an ipv4 address is 4 bytes", a.size());
    out.ipv4.emplace_back(a.begin(), a.end());
  }
  for (auto a : addresses.getIpv6()) {
    KJ_REQUIRE(a.size() == 16, "an ipv6 address is 16 bytes", a.size());
    out.ipv6.emplace_back(a.begin(), a.end());
  }
  out.ruleIndex = addresses.getRuleIndex();
  out.timeoutSeconds = addresses.getTimeoutSeconds();
  return out;
}

SecretsCommand decodeSecretDelivery(ipc::SecretDelivery::Reader request) {
  SecretsCommand out;
  out.cellId = requestCellId(request.getCellId());
  auto bundle = request.getBundle();
  out.asEnvironment = std::string_view(bundle.getDelivery().cStr()) == "env";
  for (auto secret : bundle.getSecrets()) {
    auto name = secret.getName();
    auto value = secret.getValue();
    out.secrets.emplace_back(
        std::string_view(name.cStr(), name.size()),
        std::string_view(reinterpret_cast<const char*>(value.begin()), value.size()));
  }
  return out;
}

}  // namespace cellos::vmm
