@0xdaf0e9b47a27a54e;
# cellos-dns-helper: one unprivileged resolver process per cell. Only the broker may connect.
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("cellos::ipc");
using Common = import "common.capnp";

struct DnsPolicy {
  cellId @0 :Text;
  hostnameAllowlist @1 :List(Text);
  allowedQueryTypes @2 :List(UInt16);
  bindAddress @3 :Text;               # inside the cell's namespace, e.g. "127.0.0.1"
  resolvers @4 :List(DnsResolver);    # the document's resolvers; the child forwards to the first
  upstreamTimeoutMs @5 :UInt32;       # 0 = the child's default; silence → SERVFAIL after this
  cellSubnet @6 :Text;                # the cell's own range ("10.213.0.0/30"): rebinding guard
  egressHosts @7 :List(DnsEgressHost);  # `host` egress rules: answers for them are learned
  hostDestinations @8 :List(Text);    # CIDR, from the VM launcher: an answer pointing into one
                                      # is refused (reason host_destination)
  allowedHostDestinations @9 :List(Text);  # CIDR, the host policy's exemptions from that
}

struct DnsResolver {
  resolverId @0 :Text;
  address @1 :Text;                   # IP literal, no brackets
  port @2 :UInt16;
  protocol @3 :Text;                  # "do53-udp" | "do53-tcp"
}

struct DnsEgressHost {
  ruleIndex @0 :UInt32;               # index into spec.authority.egressRules (names its nft sets)
  host @1 :Text;                      # a hostname or "*.suffix"
}

struct DnsLearnedAddresses {
  # Addresses a permitted answer gave for a name a `host` egress rule covers: the launcher adds
  # them to that rule's nftables sets (egress_<ruleIndex>_v4 / _v6) before the answer is released.
  ruleIndex @0 :UInt32;
  qname @1 :Text;
  ipv4 @2 :List(Data);                # 4 bytes each
  ipv6 @3 :List(Data);                # 16 bytes each
  timeoutSeconds @4 :UInt32;          # the records' TTL, bounded by the child
}

struct DnsQueryRecord {
  qname @0 :Text;
  qtype @1 :UInt16;
  transport @2 :Text;                 # "udp" | "tcp"
  decision @3 :Text;                  # "permitted" | "refused" | "dropped"
  reasonCode @4 :Text;
  rcode @5 :Int32;                    # -1 when no answer was sent
  resolverId @6 :Text;
  latencyMicros @7 :UInt64;
  unixMicros @8 :UInt64;              # when the query arrived
  droppedBefore @9 :UInt64;           # records the child could not hand over since its last one
}

interface DnsAuditSink {
  record @0 (records :List(DnsQueryRecord), dropped :UInt64) -> stream;
  # `dropped` counts records the helper could not deliver because its bounded queue was full.
}

interface DnsEgressSink {
  learn @0 (addresses :DnsLearnedAddresses) -> ();
  # Resolves once the addresses are in the cell's nftables sets; the child holds the answer
  # until then (and answers SERVFAIL when this fails or takes longer than its timeout).
}

interface DnsHelper {
  startProxy @0 (netns :Common.NetworkNamespace, policy :DnsPolicy, audit :DnsAuditSink,
                 egress :DnsEgressSink) -> (proxy :DnsProxy);
  # Starts the cell's resolver: a child that enters `netns`, binds, drops every privilege and
  # only then reads packets. Resolves once the child is serving.
}

interface DnsProxy {
  info @0 () -> (pid :UInt32);
  stop @1 () -> ();
  # Stops the child and waits for it; dropping the capability also stops it.
}

struct DnsChildMessage {
  # What a per-cell child sends its spawner over their private socketpair (serialized messages,
  # not RPC: the child is the least trusted process in the system).
  union {
    ready @0 :UInt32;                 # the child's pid; it is bound and unprivileged
    query @1 :DnsQueryRecord;
    failed @2 :Text;                  # setup failed before serving
    learn @3 :DnsLearnRequest;        # add addresses to the cell's egress sets, then reply
    batch @4 :List(DnsQueryRecord);   # audit records, in order (query: one at a time, unused)
  }
}

struct DnsLearnRequest {
  token @0 :UInt64;                   # echoed in the reply
  addresses @1 :DnsLearnedAddresses;
}

struct DnsSpawnerMessage {
  # What the spawner sends a child after its configuration.
  union {
    learned @0 :UInt64;               # token of a learn request that succeeded
    learnFailed @1 :UInt64;           # token of a learn request that failed
  }
}

struct DnsChildConfig {
  # What the spawner tells a fresh per-cell child before it enters the cell.
  policy @0 :DnsPolicy;
  uid @1 :UInt32;                     # cellos-dns
  gid @2 :UInt32;
  memoryLimitBytes @3 :UInt64;
  guardedRanges @4 :List(Text);       # operator's extra rebinding-guard ranges (CIDR)
}
