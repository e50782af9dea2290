#pragma once
// The cell document (`cellos.io/v1`, `ExecutionCell`; design/cell-spec.md): its model, and the
// strict parser that turns untrusted JSON or YAML bytes into that model or into the complete list
// of what is wrong with them. Pure code: the caller reads the file, nothing here touches the
// system, so the parser can be fuzzed and shared by the broker and the CLI.

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/ip_address.h"
#include "core/violation.h"

namespace cellos::core {

// The backends the document contract names (spec.placement.backend, a host policy's
// allowedBackends and defaultBackend), and those this version builds cells on (firecracker is
// reserved for the Firecracker VMM). The one list every check of a backend name uses.
inline constexpr std::string_view kBackendNames[] = {"linux", "gvisor", "microvm", "firecracker"};

// Built-in memory of a cell whose document and host policy set none. A microvm cell's memory is
// its guest's RAM, for which the smaller default keeps boots quick (docs/spec.md).
inline constexpr uint64_t kDefaultMemoryBytes = uint64_t{1} << 30;           // 1 GiB
inline constexpr uint64_t kDefaultMicrovmMemoryBytes = uint64_t{256} << 20;  // 256 MiB
// The gvisor backend's runsc: the VM launcher's --runsc default.
inline constexpr std::string_view kRunscPath = "/usr/bin/runsc";

// What differs between backends before a cell reaches the VM launcher's backend seam: whether
// this version builds cells on it, the memory of a cell that declares none, and the host
// program its cells need (empty: none), named with the Debian package that installs it.
struct BackendTraits {
  std::string_view name;
  bool built;
  uint64_t defaultMemoryBytes;
  std::string_view hostProgram;
  std::string_view hostPackage;
};
inline constexpr BackendTraits kBackends[] = {
    {"linux", true, kDefaultMemoryBytes, "", ""},
    {"gvisor", true, kDefaultMemoryBytes, kRunscPath, "runsc"},
    {"microvm", true, kDefaultMicrovmMemoryBytes, "", ""},
    {"firecracker", false, kDefaultMicrovmMemoryBytes, "", ""},
};
static_assert(std::size(kBackends) == std::size(kBackendNames));

// The traits of `name`; nullptr for a name that is not a backend.
inline const BackendTraits* backendTraits(std::string_view name) {
  for (const BackendTraits& traits : kBackends) {
    if (traits.name == name) return &traits;
  }
  return nullptr;
}
inline bool isBuiltBackend(std::string_view name) {
  const BackendTraits* traits = backendTraits(name);
  return traits != nullptr && traits->built;
}

// spec.placement. Absent fields leave the choice to the host.
struct Placement {
  std::optional<std::string> backend;  // "linux" | "gvisor" | "microvm" | "firecracker"
  std::optional<std::string> poolId;   // matched literally against the host's pool
};

// spec.lifetime.
struct Lifetime {
  uint64_t ttlSeconds = 0;  // > 0: hard wall-clock cap on the whole cell
};

// One entry of spec.authority.egressRules: exactly one of host / cidr is set.
struct EgressRule {
  std::optional<std::string> host;  // hostname or "*.suffix", lower-cased, no trailing dot
  std::optional<std::string> cidr;  // "10.20.0.0/16" or "fd00::/64" as written; host bits zero
  uint16_t port = 0;                // 1..65535
  std::string protocol;             // "tcp" | "udp"
};

// One entry of spec.authority.dnsAuthority.resolvers.
struct Resolver {
  std::string resolverId;  // unique within the document
  std::string endpoint;    // as written: "10.0.0.2:53" or "[fd00::53]:53"
  std::string protocol;    // "do53-udp" | "do53-tcp"
  std::string address;     // the IP literal of endpoint, without brackets
  uint16_t port = 0;       // the port of endpoint, 1..65535
};

// spec.authority.dnsAuthority. Absent means: no names resolvable, default query types.
struct DnsAuthority {
  std::vector<std::string> hostnameAllowlist;  // lower-cased, no trailing dot, no duplicates
  std::vector<std::string> allowedQueryTypes = {"A", "AAAA", "CNAME", "HTTPS"};
  std::vector<Resolver> resolvers;
};

// spec.authority: everything the cell may reach or hold. Absent lists mean nothing is granted.
struct Authority {
  std::vector<std::string> secretRefs;  // names only, [A-Za-z0-9_.-]+, no duplicates
  std::vector<EgressRule> egressRules;
  DnsAuthority dnsAuthority;
};

// spec.run.limits.cpuMax: cgroup v2 cpu.max.
struct CpuMax {
  uint64_t quotaMicros = 0;        // >= 1000
  uint64_t periodMicros = 100000;  // 1000..1000000 (the kernel's bounds for a CFS period)
};

// spec.run.limits. Absent fields leave the host's default.
struct Limits {
  std::optional<uint64_t> memoryMaxBytes;
  std::optional<CpuMax> cpuMax;
  std::optional<uint64_t> pidsMax;
  std::optional<uint64_t> gracefulShutdownSeconds;  // SIGTERM, then SIGKILL after this
};

// spec.run: the workload.
struct RunSpec {
  std::vector<std::string> argv;                         // non-empty, argv[0] absolute
  std::vector<std::pair<std::string, std::string>> env;  // in document order
  std::string workingDirectory = "/workspace";           // absolute, normalised, not "/"
  std::string image = "host";
  std::string secretDelivery = "env";  // "env" | "file"
  std::optional<uint64_t> timeoutMs;   // <= lifetime.ttlSeconds * 1000
  Limits limits;
};

// One entry of spec.export.artifacts.
struct Artifact {
  std::string name;  // portable file name, unique within the document
  std::string path;  // absolute, normalised, strictly inside run.workingDirectory
  std::string contentType = "application/octet-stream";  // when the document gives none
};

// spec.export.
struct ExportSpec {
  std::vector<Artifact> artifacts;
};

// spec.
struct CellSpec {
  std::string id;                            // 1..63 of [a-z0-9._-], starts with [a-z0-9]
  std::optional<std::string> correlationId;  // spec.correlation.correlationId
  Placement placement;
  Lifetime lifetime;
  Authority authority;
  std::optional<RunSpec> run;
  ExportSpec exportSpec;  // spec.export
};

// The whole document.
struct CellDocument {
  std::string apiVersion;  // "cellos.io/v1"
  std::string kind;        // "ExecutionCell"
  CellSpec spec;
};

// The only accepted apiVersion and kind.
inline constexpr std::string_view kCellApiVersion = "cellos.io/v1";
inline constexpr std::string_view kCellKind = "ExecutionCell";

// Documents larger than this are refused before any parsing.
inline constexpr size_t kMaxDocumentBytes = 1 << 20;

// Limit on argvEncodedSize: argv rides base64-encoded on a Firecracker guest's kernel command line.
inline constexpr size_t kMaxArgvEncodedBytes = 3072;

// Deepest nesting of arrays and objects the parser accepts (the real schema needs 6).
inline constexpr size_t kMaxDocumentDepth = 64;

// Upper bounds of the document's durations and sizes (docs/spec.md). Each is beyond anything a
// cell should need, and each keeps every product the runner forms from it far inside 64 bits:
// a kj::Duration is int64 nanoseconds, so the longest ttl (3.2e16 ns) and the longest timeout
// fit with room to spare, and nothing downstream needs checked arithmetic to stay correct.
inline constexpr uint64_t kMaxTtlSeconds = 31'536'000;             // 365 days
inline constexpr uint64_t kMaxTimeoutMs = kMaxTtlSeconds * 1000;   // the longest ttl
inline constexpr uint64_t kMaxGracefulShutdownSeconds = 3600;      // rides a UInt32 to the agent
inline constexpr uint64_t kMaxMemoryMaxBytes = uint64_t(1) << 50;  // 1 PiB
// CPU time per period: 1000 s is a thousand CPUs at the longest period (1 s), and stays below
// the kernel's own ceiling for a CFS quota (about 2^44 us, kernel/sched/core.c max_cfs_runtime).
inline constexpr uint64_t kMaxCpuQuotaMicros = 1'000'000'000;
// PID_MAX_LIMIT on 64-bit kernels: pids.max refuses anything larger (kernel/cgroup/pids.c).
inline constexpr uint64_t kMaxPidsMax = 4'194'304;
static_assert(kMaxTtlSeconds * 1'000'000'000 < uint64_t(1) << 62, "a ttl in ns fits an int64");
static_assert(kMaxGracefulShutdownSeconds <= UINT32_MAX);

// Outcome of parseCellDocument. Exactly one of: `document` set and `violations` empty, or
// `document` empty and at least one violation.
struct ParseResult {
  std::optional<CellDocument> document;
  std::vector<Violation> violations;
  // The document as parsed into JSON (YAML converted), without defaults filled in; hostnames are
  // lower-cased when the document is valid. Null when the bytes could not be parsed at all.
  nlohmann::json canonicalJson;
};

// Parses a cell document and checks every rule of cell-spec.md, collecting all violations.
// Format: JSON when the first character other than whitespace (and a UTF-8 BOM) is '{', else
// YAML. YAML scalars mean what the same text means in JSON: plain true/false, null/~ and
// JSON-syntax numbers are typed, anything quoted is a string. Refused outright with one
// violation at "$": more than kMaxDocumentBytes, invalid UTF-8, control characters other than
// tab/CR/LF, syntax errors (with line and column), nesting deeper than kMaxDocumentDepth, and in
// YAML anchors, aliases, merge keys, explicit tags and more than one document. Duplicate keys and
// non-string YAML keys are ordinary violations. Violation order: parsing, then every field in
// schema order (unknown fields of an object first), then rules that relate fields. Never throws
// for any input bytes (only std::bad_alloc).
ParseResult parseCellDocument(std::string_view bytes);

// Lower-case hex SHA-256 of the RFC 8785 canonical form of result.canonicalJson, which for a
// valid document has its hostnames lower-cased: the same document in YAML or JSON, in any key
// order, has the same digest. Empty when result.document is not set.
std::string specDigest(const ParseResult& result);

// `parsed` (a valid document) as if its spec.placement.backend said `backend`: how `cellos run
// --backend` chooses where a document that names no backend runs. The name is checked as the
// document's own field is (a bad one is a violation at spec.placement.backend, as is a document
// that names another backend); canonicalJson stays the document as written, so its specDigest
// does not change.
ParseResult chooseBackend(const ParseResult& parsed, const std::string& backend);

// Length of base64(compact JSON array of argv), the form a Firecracker guest receives; the
// document rule is argvEncodedSize(argv) <= kMaxArgvEncodedBytes. Invalid UTF-8 counts as if
// replaced by U+FFFD.
size_t argvEncodedSize(const std::vector<std::string>& argv);

// An address range a document or host policy gives ("cidr", "allowedEgressCidrs"), read with
// core/ip_address.h's parseCidr: the range, or nullopt with *problem set to the violation
// message, e.g. "prefix length 33 is out of range 0..32", or for text that is no range at all
// "must be an address range like <example>, got <text>".
std::optional<IpRange> parseRangeField(std::string_view text, std::string_view example,
                                       std::string* problem);

}  // namespace cellos::core
