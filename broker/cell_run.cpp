#include "broker/cell_run.h"

#include "core/dns_wire.h"
#include "core/hostname.h"
#include "core/uuid.h"
#include "ipc/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <charconv>
#include <chrono>

#include <kj/debug.h>

namespace cellos::broker {

namespace {

uint64_t monotonicMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Receives the DNS child's audit records (relayed by the DNS spawner) and turns each into a
// dns_query event of this run.
class DnsAuditSinkServer final : public ipc::DnsAuditSink::Server {
 public:
  explicit DnsAuditSinkServer(kj::Function<kj::Promise<void>(nlohmann::json, bool)> emit)
      : emit_(kj::mv(emit)) {}

  kj::Promise<void> record(RecordContext context) override {
    auto params = context.getParams();
    kj::Vector<kj::Promise<void>> writes;
    for (auto r : params.getRecords()) {
      nlohmann::json data = {
          {"qname", r.getQname().cStr()},           {"qtype", core::qtypeName(r.getQtype())},
          {"transport", r.getTransport().cStr()},   {"decision", r.getDecision().cStr()},
          {"reasonCode", r.getReasonCode().cStr()}, {"rcode", r.getRcode()},
          {"latencyMicros", r.getLatencyMicros()},
      };
      if (r.getResolverId().size() > 0) data["resolverId"] = r.getResolverId().cStr();
      writes.add(emit_(kj::mv(data), false));
    }
    if (params.getDropped() > 0) {
      writes.add(emit_(nlohmann::json{{"dropped", params.getDropped()}}, true));
    }
    return kj::joinPromises(writes.releaseAsArray());
  }

 private:
  kj::Function<kj::Promise<void>(nlohmann::json, bool)> emit_;
};

// DNS-learned egress: the DNS child saw these addresses for a name a `host` rule covers. The
// child is the least trusted process, so the rule and the name are checked against the document
// here before the VM launcher puts the addresses into the rule's sets.
class DnsEgressSinkServer final : public ipc::DnsEgressSink::Server {
 public:
  DnsEgressSinkServer(const core::CellDocument& document, ipc::Cell::Client cell,
                      BrokerContext& context)
      : allowlist_(document.spec.authority.dnsAuthority.hostnameAllowlist),
        cell_(kj::mv(cell)),
        context_(context) {
    for (const auto& rule : document.spec.authority.egressRules) hosts_.push_back(rule.host);
  }

  kj::Promise<void> learn(LearnContext context) override {
    auto addresses = context.getParams().getAddresses();
    uint32_t index = addresses.getRuleIndex();
    KJ_REQUIRE(index < hosts_.size() && hosts_[index], "not a host egress rule", index);
    std::string qname = addresses.getQname();
    KJ_REQUIRE(
        core::hostnameMatches(*hosts_[index], qname) && core::anyHostnameMatches(allowlist_, qname),
        "name not covered by the rule", qname);
    auto request = cell_.allowEgressRequest();
    auto out = request.initAddresses();
    out.setRuleIndex(index);
    out.setIpv4(addresses.getIpv4());
    out.setIpv6(addresses.getIpv6());
    out.setTimeoutSeconds(addresses.getTimeoutSeconds());
    return ipc::withTimeout(context_.timer, context_.helperCallTimeout, "vmm-agent allowEgress",
                            request.send())
        .ignoreResult();
  }

 private:
  std::vector<std::optional<std::string>> hosts_;  // per egress rule: its host, if a host rule
  std::vector<std::string> allowlist_;
  ipc::Cell::Client cell_;
  BrokerContext& context_;
};

// The cell's own /30 ("10.213.0.4/30", the VM launcher's address pairs) from its address: the
// DNS child refuses answers that point into it.
// The one place a backend's name becomes the VM agent's enum. The document validator accepts
// the names of every backend the spec defines; this version builds cells on three of them
// (linux, gvisor, microvm; not firecracker).
ipc::Backend backendOf(const std::string& name) {
  if (name == "linux") return ipc::Backend::LINUX;
  if (name == "gvisor") return ipc::Backend::GVISOR;
  if (name == "microvm") return ipc::Backend::MICROVM;
  KJ_FAIL_REQUIRE("backend not available in this version of cellos", name);
}

std::string cellSubnet(const std::string& cellAddress) {
  in_addr address{};
  if (inet_pton(AF_INET, cellAddress.c_str(), &address) != 1) return "";
  address.s_addr = htonl(ntohl(address.s_addr) & ~uint32_t(3));
  char text[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &address, text, sizeof text);
  return std::string(text) + "/30";
}

}  // namespace

CellRun::CellRun(BrokerContext& context, core::CellDocument document, std::string specDigest,
                 ipc::OutputSink::Client output)
    : context_(context),
      document_(std::move(document)),
      specDigest_(std::move(specDigest)),
      output_(kj::mv(output)) {
  events_.hostId = context_.hostId;
  events_.cellId = document_.spec.id;
  events_.runId = core::newUuidV7();
  events_.correlationId = document_.spec.correlationId;
}

kj::Promise<void> CellRun::emit(const std::string& family, int version, const std::string& verb,
                                nlohmann::json data) {
  auto event = core::makeCellEvent(events_, core::eventType(family, version, verb), kj::mv(data));
  if (family == "lifecycle" && verb == "started") {
    events_.startedEventId = event["id"].get<std::string>();
    events_.startedEventType = event["type"].get<std::string>();
  }
  return context_.events.append(kj::mv(event));
}

kj::Promise<void> CellRun::phase(const char* name, kj::Function<kj::Promise<void>()> body) {
  uint64_t start = monotonicMicros();
  std::string phaseName = name;
  return kj::evalNow([&]() {
           injectFault(phaseName);
           return body();
         })
      .then([this, phaseName,
             start]() { timings_.emplace_back(phaseName, monotonicMicros() - start); },
            [this, phaseName, start](kj::Exception&& e) {
              timings_.emplace_back(phaseName, monotonicMicros() - start);
              if (outcome_.failedPhase.empty()) {
                outcome_.failedPhase = phaseName;
                outcome_.error = e.getDescription().cStr();
                spdlog::error("cell {} run {}: phase {} failed: {}", cellId(), runId(), phaseName,
                              outcome_.error);
              }
              kj::throwFatalException(kj::mv(e));
            });
}

void CellRun::injectFault(const std::string& phaseName) {
  if (context_.faultPhase != phaseName) return;
  kj::throwFatalException(
      kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                    kj::str("injected fault in phase ", phaseName, " (--test-fault-phase)")));
}

template <typename T>
kj::Promise<T> CellRun::holdIn(const char* phaseName, kj::Promise<T> call) {
  if (context_.holdPhase != phaseName) return call;
  spdlog::warn("cell {} run {}: holding in phase {} (--test-hold-phase)", cellId(), runId(),
               phaseName);
  if constexpr (std::is_void_v<T>) {
    return call.then([]() -> kj::Promise<void> { return kj::NEVER_DONE; });
  } else {
    return call.then([](T&&) -> kj::Promise<T> { return kj::NEVER_DONE; });
  }
}

// The phases teardown runs itself (destroy, revoke) cannot be skipped: their fault is recorded
// after the real work is done.
void CellRun::recordInjectedFault(const std::string& phaseName) {
  if (context_.faultPhase != phaseName || !outcome_.failedPhase.empty()) return;
  outcome_.failedPhase = phaseName;
  outcome_.error = "injected fault in phase " + phaseName + " (--test-fault-phase)";
}

nlohmann::json CellRun::timingsJson() const {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [name, micros] : timings_) out[name] = micros;
  return out;
}

kj::Promise<void> CellRun::createCell() {
  auto request = context_.vmm.createCellRequest();
  auto cell = request.initRequest();
  const auto& spec = document_.spec;
  cell.setCellId(spec.id);
  cell.setRunId(runId());
  cell.setBackend(backendOf(spec.placement.backend.value_or("linux")));
  if (spec.run) {
    const auto& run = *spec.run;
    auto argv = cell.initArgv(run.argv.size());
    for (size_t i = 0; i < run.argv.size(); ++i) argv.set(i, run.argv[i]);
    auto env = cell.initEnv(run.env.size());
    for (size_t i = 0; i < run.env.size(); ++i) {
      env[i].setKey(run.env[i].first);
      env[i].setValue(run.env[i].second);
    }
    cell.setWorkingDirectory(run.workingDirectory);
    cell.setImage(run.image);
    // The command's timeout (SIGTERM, then SIGKILL after the grace period); the agent caps the
    // whole cell at ttlSeconds on its own.
    cell.setTimeoutMs(run.timeoutMs.value_or(0));
    cell.setMemoryMaxBytes(run.limits.memoryMaxBytes.value_or(0));
    cell.setPidsMax(run.limits.pidsMax.value_or(0));
    if (run.limits.cpuMax) {
      cell.setCpuQuotaMicros(run.limits.cpuMax->quotaMicros);
      cell.setCpuPeriodMicros(run.limits.cpuMax->periodMicros);
    }
    // Validated at most core::kMaxGracefulShutdownSeconds, so it fits the UInt32.
    uint64_t grace = run.limits.gracefulShutdownSeconds.value_or(5);
    KJ_ASSERT(grace <= core::kMaxGracefulShutdownSeconds, grace);
    cell.setGracefulShutdownSeconds(static_cast<uint32_t>(grace));
  } else {
    // A cell without a command still boots and is torn down; its init runs `true`.
    cell.initArgv(1).set(0, "/bin/true");
    cell.setWorkingDirectory("/workspace");
  }
  // The agent turns both into kj::Durations (int64 nanoseconds): the validated bounds
  // (core::kMaxTtlSeconds, kMaxTimeoutMs) keep them far from overflow; a document that did not
  // come through validation must not reach the agent.
  KJ_ASSERT(spec.lifetime.ttlSeconds <= core::kMaxTtlSeconds, spec.lifetime.ttlSeconds);
  KJ_ASSERT(!spec.run || spec.run->timeoutMs.value_or(0) <= core::kMaxTimeoutMs);
  cell.setTtlSeconds(spec.lifetime.ttlSeconds);
  // A cell that will receive secrets gets its /run/secrets tmpfs while it is built.
  if (!spec.authority.secretRefs.empty()) {
    cell.setSecretDelivery(spec.run ? spec.run->secretDelivery : "file");
  }
  const auto& egress = spec.authority.egressRules;
  auto rules = cell.initEgressRules(egress.size());
  for (size_t i = 0; i < egress.size(); ++i) {
    rules[i].setHost(egress[i].host.value_or(""));
    rules[i].setCidr(egress[i].cidr.value_or(""));
    rules[i].setPort(egress[i].port);
    rules[i].setProtocol(egress[i].protocol);
  }
  // The host is never a destination, except where this host's policy says so.
  const auto& openHost = context_.policy.allowHostDestinations;
  auto allowedHost = cell.initAllowedHostDestinations(openHost.size());
  for (size_t i = 0; i < openHost.size(); ++i) allowedHost.set(i, openHost[i]);
  const auto& resolvers = spec.authority.dnsAuthority.resolvers;
  auto endpoints = cell.initResolvers(resolvers.size());
  for (size_t i = 0; i < resolvers.size(); ++i) {
    endpoints[i].setResolverId(resolvers[i].resolverId);
    endpoints[i].setAddress(resolvers[i].address);
    endpoints[i].setPort(resolvers[i].port);
    endpoints[i].setProtocol(resolvers[i].protocol);
  }
  return ipc::withTimeout(context_.timer, context_.helperCallTimeout, "vmm-agent createCell",
                          holdIn("network_scope", request.send()))
      .then([this](capnp::Response<ipc::VmmAgent::CreateCellResults> response) {
        cell_ = response.getCell();
        netns_ = response.getNetns();
        auto network = response.getNetwork();
        network_ = {{"uplinkInterface", network.getUplinkInterface().cStr()},
                    {"uplinkAddress", network.getUplinkAddress().cStr()},
                    {"cellAddress", network.getCellAddress().cStr()},
                    {"nftApplied", network.getNftApplied()},
                    {"nftRuleCount", network.getNftRuleCount()}};
        if (network.getDnsBindAddress().size() > 0) {
          dnsBindAddress_ = network.getDnsBindAddress().cStr();
        }
        hostDestinations_.clear();
        for (auto range : network.getHostDestinations()) {
          hostDestinations_.emplace_back(range.cStr());
        }
        nlohmann::json timings = nlohmann::json::object();
        for (auto t : response.getTimings()) timings[t.getName().cStr()] = t.getMicros();
        network_["setupTimingsMicros"] = timings;
        // A VM cell's boot: recorded in lifecycle.v1.started ("true"/"false" as booleans).
        guestBoot_ = nlohmann::json::object();
        for (auto fact : response.getGuestBoot()) {
          std::string name = fact.getName(), value = fact.getValue();
          uint64_t number = 0;
          auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), number);
          bool numeric =
              name == "guestMemoryMiB" || name == "vcpus" || name == "hostMemoryMaxBytes";
          if (value == "true" || value == "false") {
            guestBoot_[fact.getName().cStr()] = value == "true";
          } else if (numeric && ec == std::errc() && end == value.data() + value.size()) {
            guestBoot_[name] = number;
          } else {
            guestBoot_[fact.getName().cStr()] = value;
          }
        }
      });
}

kj::Promise<void> CellRun::startDns() {
  auto request = context_.dns.startProxyRequest();
  request.setNetns(*netns_);
  auto policy = request.initPolicy();
  const auto& dns = document_.spec.authority.dnsAuthority;
  policy.setCellId(cellId());
  auto allow = policy.initHostnameAllowlist(dns.hostnameAllowlist.size());
  for (size_t i = 0; i < dns.hostnameAllowlist.size(); ++i) allow.set(i, dns.hostnameAllowlist[i]);
  std::vector<uint16_t> types;
  for (const auto& name : dns.allowedQueryTypes) {
    if (auto type = core::qtypeFromName(name)) types.push_back(*type);
  }
  auto typeList = policy.initAllowedQueryTypes(types.size());
  for (size_t i = 0; i < types.size(); ++i) typeList.set(i, types[i]);
  policy.setBindAddress(dnsBindAddress_);
  auto resolvers = policy.initResolvers(dns.resolvers.size());
  for (size_t i = 0; i < dns.resolvers.size(); ++i) {
    resolvers[i].setResolverId(dns.resolvers[i].resolverId);
    resolvers[i].setAddress(dns.resolvers[i].address);
    resolvers[i].setPort(dns.resolvers[i].port);
    resolvers[i].setProtocol(dns.resolvers[i].protocol);
  }
  if (network_.contains("cellAddress")) {
    policy.setCellSubnet(cellSubnet(network_["cellAddress"].get<std::string>()));
  }
  auto hostList = policy.initHostDestinations(hostDestinations_.size());
  for (size_t i = 0; i < hostDestinations_.size(); ++i) hostList.set(i, hostDestinations_[i]);
  const auto& openHost = context_.policy.allowHostDestinations;
  auto allowedHost = policy.initAllowedHostDestinations(openHost.size());
  for (size_t i = 0; i < openHost.size(); ++i) allowedHost.set(i, openHost[i]);
  const auto& egress = document_.spec.authority.egressRules;
  std::vector<size_t> hostRules;
  for (size_t i = 0; i < egress.size(); ++i) {
    if (egress[i].host) hostRules.push_back(i);
  }
  auto hosts = policy.initEgressHosts(hostRules.size());
  for (size_t i = 0; i < hostRules.size(); ++i) {
    hosts[i].setRuleIndex(uint32_t(hostRules[i]));
    hosts[i].setHost(*egress[hostRules[i]].host);
  }
  request.setEgress(kj::heap<DnsEgressSinkServer>(document_, *cell_, context_));
  request.setAudit(kj::heap<DnsAuditSinkServer>([this](nlohmann::json data, bool dropped) {
    return dropped ? emit("observability", 1, "dns_audit_dropped", kj::mv(data))
                   : emit("observability", 1, "dns_query", kj::mv(data));
  }));
  return ipc::withTimeout(context_.timer, context_.helperCallTimeout, "dns-helper startProxy",
                          request.send())
      .then([this](capnp::Response<ipc::DnsHelper::StartProxyResults> response) {
        dnsProxy_ = response.getProxy();
      });
}

// Resolves the values (names only ever leave this function in events and logs), seals them into
// a memfd, wipes the broker's copies, and has the VM launcher write them into the cell.
kj::Promise<void> CellRun::deliverSecrets() {
  const auto& names = document_.spec.authority.secretRefs;
  if (names.empty()) return kj::READY_NOW;
  KJ_REQUIRE(context_.secrets != nullptr, "this broker has no secret source");
  std::string delivery = document_.spec.run ? document_.spec.run->secretDelivery : "file";
  kj::AutoCloseFd bundle = [&]() {
    std::vector<ResolvedSecret> values = context_.secrets->resolve(names);
    return sealBundle(values, delivery);
  }();  // `values` is wiped here
  auto request = cell_->deliverSecretsRequest();
  secretsSent_ = true;
  // The sealed memfd rides to the VM launcher; the broker's last reference closes with it.
  request.setBundle(kj::heap<ipc::FdCapability<ipc::SecretBundleFile>>(kj::mv(bundle)));
  return ipc::withTimeout(context_.timer, context_.helperCallTimeout, "vmm-agent deliverSecrets",
                          holdIn("secrets", request.send()))
      .then([this, delivery](capnp::Response<ipc::Cell::DeliverSecretsResults> response) {
        for (auto name : response.getNames()) materialized_.emplace_back(name.cStr());
        return emit("identity", 1, "materialized",
                    {{"secretNames", materialized_}, {"delivery", delivery}});
      });
}

kj::Promise<void> CellRun::runCommand() {
  if (!document_.spec.run) return kj::READY_NOW;
  KJ_REQUIRE(!cancelled_, "run cancelled before its command started");
  auto start = cell_->startRequest();
  start.setOutput(output_);
  return ipc::withTimeout(context_.timer, context_.helperCallTimeout, "vmm-agent start",
                          start.send())
      .then([this](auto) {
        // No timeout on wait: the agent enforces the cell's own timeout and ttl.
        return holdIn("run", cell_->waitRequest().send());
      })
      .then([this](capnp::Response<ipc::Cell::WaitResults> response) {
        auto status = response.getStatus();
        outcome_.hasStatus = true;
        outcome_.exitCode = status.getExitCode();
        outcome_.signal = status.getSignal();
        outcome_.timedOut = status.getTimedOut();
        outcome_.durationMicros = status.getDurationMicros();
        outcome_.stdoutBytes = status.getStdoutBytes();
        outcome_.stderrBytes = status.getStderrBytes();
        outcome_.outputTruncated = status.getOutputTruncated();
        forced_ = !status.getReported();
        auto report = response.getReport();
        nlohmann::json data = {
            {"exitCode", outcome_.exitCode},
            {"signal", outcome_.signal},
            {"durationMs", outcome_.durationMicros / 1000},
            {"timedOut", outcome_.timedOut},
            {"oomKilled", report.getOomKilled()},
            {"stdoutBytes", outcome_.stdoutBytes},
            {"stderrBytes", outcome_.stderrBytes},
            {"outputTruncated", outcome_.outputTruncated},
        };
        // One network_flow_decision per nftables rule of the cell, with what it counted.
        std::vector<nlohmann::json> flows;
        for (auto flow : report.getFlows()) {
          flows.push_back({{"ruleId", flow.getRuleId().cStr()},
                           {"rule", flow.getRule().cStr()},
                           {"verdict", flow.getVerdict().cStr()},
                           {"packets", flow.getPackets()},
                           {"bytes", flow.getBytes()}});
        }
        return emit("command", 1, "completed", kj::mv(data))
            .then([this, flows = kj::mv(flows)]() mutable {
              kj::Vector<kj::Promise<void>> writes;
              for (auto& flow : flows) {
                writes.add(emit("observability", 1, "network_flow_decision", kj::mv(flow)));
              }
              return kj::joinPromises(writes.releaseAsArray());
            });
      });
}

// A kj::Exception's description without the wrapper KJ puts around a std::exception's text.
static std::string reasonOf(const kj::Exception& e) {
  std::string text = e.getDescription().cStr();
  const std::string wrapped = "std::exception: ";
  if (text.compare(0, wrapped.size(), wrapped) == 0) text = text.substr(wrapped.size());
  return text;
}

kj::Promise<void> CellRun::exportFailed(size_t index, std::string reason) {
  const auto& artifact = document_.spec.exportSpec.artifacts[index];
  spdlog::warn("cell {} run {}: artifact {} not exported: {}", cellId(), runId(), artifact.name,
               reason);
  exportFailures_.push_back(artifact.name + ": " + reason);
  return emit("export", 2, "failed",
              {{"artifactName", artifact.name}, {"targetKind", "LocalPath"}, {"reason", reason}});
}

// One artifact: the VM launcher opens it in the cell's working directory (no symlink, regular
// file, within the cap) and hands over the fd; the exporter copies it to the local target.
kj::Promise<void> CellRun::exportArtifact(size_t index) {
  // The attempt either yields the exported file or fails with a reason; exactly one event
  // follows, whichever it was.
  return copyArtifact(index).then(
      [this, index](ExportedArtifact exported) {
        const auto& artifact = document_.spec.exportSpec.artifacts[index];
        spdlog::info("cell {} run {}: artifact {} exported ({} bytes)", cellId(), runId(),
                     artifact.name, exported.bytes);
        return emit("export", 2, "completed",
                    {{"artifactName", artifact.name},
                     {"targetKind", "LocalPath"},
                     {"destination", exported.destination},
                     {"sha256", exported.sha256},
                     {"bytes", exported.bytes}});
      },
      [this, index](kj::Exception&& e) { return exportFailed(index, reasonOf(e)); });
}

// Rejects with the reason (one line) when the artifact is refused or cannot be copied.
kj::Promise<ExportedArtifact> CellRun::copyArtifact(size_t index) {
  const auto& artifact = document_.spec.exportSpec.artifacts[index];
  KJ_REQUIRE(context_.exporter != nullptr, "this broker has no export target");
  auto request = cell_->openArtifactRequest();
  request.setPath(artifact.path);
  request.setMaxBytes(context_.exporter->maxBytes());
  return ipc::withTimeout(context_.timer, context_.helperCallTimeout, "vmm-agent openArtifact",
                          holdIn("export", request.send()))
      .then([this, index](capnp::Response<ipc::Cell::OpenArtifactResults> response) {
        if (response.getRefused().size() > 0) {
          kj::throwFatalException(kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                                                kj::str(response.getRefused())));
        }
        auto file = response.getFile();
        return file.getFd().then([this, index, file](kj::Maybe<int> maybeFd) mutable {
          int received = -1;
          KJ_IF_MAYBE (fd, maybeFd) {
            received = *fd;
          }
          KJ_REQUIRE(received >= 0, "the VM launcher sent no file");
          // Our own copy: the capability's fd goes away with the capability.
          int fd;
          KJ_SYSCALL(fd = fcntl(received, F_DUPFD_CLOEXEC, 3));
          kj::AutoCloseFd owned(fd);
          const auto& artifact = document_.spec.exportSpec.artifacts[index];
          return context_.exporter->copy(fd, cellId(), runId(), artifact.name)
              .attach(kj::mv(owned), kj::mv(file));
        });
      });
}

kj::Promise<void> CellRun::exportArtifacts() {
  const auto& artifacts = document_.spec.exportSpec.artifacts;
  kj::Promise<void> chain = kj::READY_NOW;
  // One after another: each is bounded by the cap, and the order of events is the document's.
  for (size_t i = 0; i < artifacts.size(); ++i) {
    chain = chain.then([this, i]() { return exportArtifact(i); });
  }
  return chain.then([this]() {
    if (exportFailures_.empty()) return;
    std::string message = std::to_string(exportFailures_.size()) + " of " +
                          std::to_string(document_.spec.exportSpec.artifacts.size()) +
                          " artifacts not exported: ";
    for (size_t i = 0; i < exportFailures_.size(); ++i) {
      message += (i ? "; " : "") + exportFailures_[i];
    }
    kj::throwFatalException(
        kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__, kj::str(message)));
  });
}

kj::Promise<void> CellRun::teardown() {
  // destroy: the cell first (its processes are what could still act), then its resolver.
  uint64_t start = monotonicMicros();
  kj::Promise<void> destroyed = kj::READY_NOW;
  if (cell_) {
    destroyed =
        ipc::withTimeout(context_.timer, context_.helperCallTimeout, "vmm-agent destroy",
                         holdIn("destroy", cell_->destroyRequest().send()))
            .then(
                [this](capnp::Response<ipc::Cell::DestroyResults> response) {
                  for (auto r : response.getResidue()) residue_.emplace_back(r.cStr());
                },
                [this](kj::Exception&& e) {
                  residue_.push_back(std::string("destroy failed: ") + e.getDescription().cStr());
                });
  }
  return destroyed
      .then([this, start]() {
        kj::Promise<void> stopped = kj::READY_NOW;
        if (dnsProxy_) {
          stopped = ipc::withTimeout(context_.timer, context_.helperCallTimeout, "dns-helper stop",
                                     dnsProxy_->stopRequest().send())
                        .ignoreResult()
                        .catch_([this](kj::Exception&& e) {
                          residue_.push_back(std::string("DNS child stop failed: ") +
                                             e.getDescription().cStr());
                        });
        }
        return stopped.then([this, start]() {
          cell_ = std::nullopt;
          netns_ = std::nullopt;
          dnsProxy_ = std::nullopt;
          timings_.emplace_back("destroy", monotonicMicros() - start);
          if (!residue_.empty() && outcome_.failedPhase.empty()) {
            outcome_.failedPhase = "destroy";
            outcome_.error = "residue after destroy: " + residue_.front();
          }
          recordInjectedFault("destroy");
        });
      })
      .then([this]() {
        // revoke: the cell, and with it its secrets tmpfs and every process that read it, is gone;
        // the broker kept no value. The event says which names the cell no longer holds.
        // A delivery that failed half way may still have written some: revoke every name sent.
        uint64_t start = monotonicMicros();
        kj::Promise<void> revoked = kj::READY_NOW;
        if (secretsSent_) {
          revoked = holdIn("revoke", emit("identity", 1, "revoked",
                                          {{"secretNames", document_.spec.authority.secretRefs}}))
                        .catch_([this](kj::Exception&& e) {
                          if (outcome_.failedPhase.empty()) {
                            outcome_.failedPhase = "revoke";
                            outcome_.error = e.getDescription().cStr();
                          }
                        });
        }
        return revoked.then([this, start]() {
          timings_.emplace_back("revoke", monotonicMicros() - start);
          recordInjectedFault("revoke");
        });
      });
}

kj::Promise<RunOutcome> CellRun::execute() {
  const auto& spec = document_.spec;
  spdlog::info("cell {} run {}: admitted", cellId(), runId());
  auto phases =
      phase("admission",
            [this, &spec]() {
              nlohmann::json data = {{"backend", spec.placement.backend.value_or("linux")},
                                     {"image", spec.run ? spec.run->image : "host"},
                                     {"specDigest", specDigest_}};
              // The limits the cell runs under: the document's, else the host's defaults
              // (core::applyHostPolicyDefaults), so the record shows what bounded it.
              if (spec.run) {
                const core::Limits& limits = spec.run->limits;
                nlohmann::json applied = nlohmann::json::object();
                if (limits.memoryMaxBytes) applied["memoryMaxBytes"] = *limits.memoryMaxBytes;
                if (limits.pidsMax) applied["pidsMax"] = *limits.pidsMax;
                if (limits.cpuMax) {
                  applied["cpuMax"] = {{"quotaMicros", limits.cpuMax->quotaMicros},
                                       {"periodMicros", limits.cpuMax->periodMicros}};
                }
                if (spec.run->timeoutMs) applied["timeoutMs"] = *spec.run->timeoutMs;
                data["limits"] = std::move(applied);
              }
              return holdIn("admission", emit("admission", 1, "accepted", kj::mv(data)));
            })
          .then([this]() {
            return phase("network_scope", [this]() {
              return createCell().then([this]() { return startDns(); }).then([this]() {
                nlohmann::json data = {
                    {"netnsId", cellId()},
                    {"resolverAddress", "127.0.0.1:53"},
                    {"egressRuleCount", document_.spec.authority.egressRules.size()},
                    {"nftApplied", false}};
                data.update(network_);
                return emit("network", 1, "scoped", kj::mv(data));
              });
            });
          })
          .then([this]() { return phase("secrets", [this]() { return deliverSecrets(); }); })
          .then([this, &spec]() {
            nlohmann::json argv = nlohmann::json::array();
            if (spec.run) argv = spec.run->argv;
            nlohmann::json data = {{"backend", spec.placement.backend.value_or("linux")},
                                   {"image", spec.run ? spec.run->image : "host"},
                                   {"argv", argv},
                                   {"phaseTimingsMicros", timingsJson()}};
            if (!guestBoot_.empty()) data["guest"] = guestBoot_;
            return emit("lifecycle", 1, "started", kj::mv(data));
          })
          .then([this]() { return phase("run", [this]() { return runCommand(); }); })
          .then([this]() {
            // export: before destroy, while the launcher still holds the working directory.
            return phase("export", [this]() { return exportArtifacts(); });
          });
  return phases.catch_([](kj::Exception&&) { /* recorded by phase() */ })
      .then([this]() { return teardown(); })
      .then([this]() {
        outcome_.succeeded = outcome_.failedPhase.empty();
        bool forced = cancelled_ || outcome_.timedOut || forced_ || !residue_.empty();
        nlohmann::json data = {
            {"outcome", outcomeName(outcome_)},
            {"terminalState", forced ? "forced" : "clean"},
            {"residue", {{"clean", residue_.empty()}, {"items", residue_}}},
            {"phaseTimingsMicros", timingsJson()},
        };
        if (!outcome_.succeeded) data["failedPhase"] = outcome_.failedPhase;
        return emit("lifecycle", 1, "destroyed", kj::mv(data));
      })
      .then([this]() { return outcome_; },
            [this](kj::Exception&& e) {
              // The destroyed event itself could not be written: the run failed even if the
              // cell did not.
              outcome_.succeeded = false;
              if (outcome_.failedPhase.empty()) outcome_.failedPhase = "lifecycle.destroyed";
              outcome_.error = e.getDescription().cStr();
              return outcome_;
            });
}

void CellRun::cancel() {
  cancelled_ = true;
  // A cancel that comes after the command ended (during export or teardown) stops nothing.
  if (!outcome_.hasStatus) outcome_.cancelled = true;
  if (cell_) {
    auto request = cell_->killRequest();
    request.setSignal(SIGKILL);
    cancelTask_ =
        request.send().ignoreResult().catch_([](kj::Exception&&) {}).eagerlyEvaluate(nullptr);
  }
}

}  // namespace cellos::broker
