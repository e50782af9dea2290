// libFuzzer harness for the parsers of operator and user files: cell documents and host
// policies. Arbitrary bytes, JSON or YAML, must never crash, hang or throw, and each result
// must keep its parser's contract.

#include "core/host_policy.h"
#include "core/spec.h"

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  cellos::core::ParseResult result = cellos::core::parseCellDocument(bytes);
  // Exactly one of: a document with no violations, or violations and no document.
  if (result.document.has_value() == !result.violations.empty()) __builtin_trap();
  if (result.document) {
    if (cellos::core::specDigest(result).size() != 64) __builtin_trap();
    // An admitted document is within every bound (spec.h kMax*), so the runner's arithmetic on
    // it cannot overflow.
    using namespace cellos::core;
    const CellSpec& spec = result.document->spec;
    if (spec.lifetime.ttlSeconds < 1 || spec.lifetime.ttlSeconds > kMaxTtlSeconds) __builtin_trap();
    if (spec.run) {
      const RunSpec& run = *spec.run;
      if (run.timeoutMs && *run.timeoutMs > spec.lifetime.ttlSeconds * 1000) __builtin_trap();
      const Limits& limits = run.limits;
      if (limits.memoryMaxBytes && *limits.memoryMaxBytes > kMaxMemoryMaxBytes) __builtin_trap();
      if (limits.pidsMax && *limits.pidsMax > kMaxPidsMax) __builtin_trap();
      if (limits.cpuMax && limits.cpuMax->quotaMicros > kMaxCpuQuotaMicros) __builtin_trap();
      if (limits.gracefulShutdownSeconds &&
          *limits.gracefulShutdownSeconds > kMaxGracefulShutdownSeconds) {
        __builtin_trap();
      }
    }
  } else if (!cellos::core::specDigest(result).empty()) {
    __builtin_trap();
  }
  for (const cellos::core::Violation& violation : result.violations) {
    if (violation.path.empty() || violation.message.empty()) __builtin_trap();
  }

  // The same bytes as a host policy; when they parse, check a fixed valid document against it.
  static const cellos::core::ParseResult kDocument = cellos::core::parseCellDocument(
      "{\"apiVersion\":\"cellos.io/v1\",\"kind\":\"ExecutionCell\",\"spec\":{\"id\":\"f\","
      "\"lifetime\":{\"ttlSeconds\":60},\"authority\":{\"egressRules\":[{\"cidr\":"
      "\"10.1.0.0/16\",\"port\":443,\"protocol\":\"tcp\"}]},\"run\":{\"argv\":[\"/bin/true\"]}}}");
  if (!kDocument.document) __builtin_trap();
  auto policy = cellos::core::parseHostPolicy(bytes);
  if (policy.policy.has_value() == !policy.violations.empty()) __builtin_trap();
  if (policy.policy) {
    const cellos::core::HostPolicy& caps = *policy.policy;
    if (caps.maxTtlSeconds && *caps.maxTtlSeconds > cellos::core::kMaxTtlSeconds) __builtin_trap();
    if (caps.maxTimeoutMs && *caps.maxTimeoutMs > cellos::core::kMaxTimeoutMs) __builtin_trap();
    for (const auto& violation :
         cellos::core::checkHostPolicy(*policy.policy, *kDocument.document)) {
      if (violation.path.empty() || violation.message.empty()) __builtin_trap();
    }
    cellos::core::CellDocument copy = *kDocument.document;
    cellos::core::applyHostPolicyDefaults(*policy.policy, copy);
  }
  return 0;
}
