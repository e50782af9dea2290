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
}

interface DnsAuditSink {
  record @0 (records :List(DnsQueryRecord), dropped :UInt64) -> stream;
  # `dropped` counts records the helper could not deliver because its bounded queue was full.
}

interface DnsHelper {
  startProxy @0 (netns :Common.NetworkNamespace, policy :DnsPolicy, audit :DnsAuditSink)
      -> (proxy :DnsProxy);
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
  }
}

struct DnsChildConfig {
  # What the spawner tells a fresh per-cell child before it enters the cell.
  policy @0 :DnsPolicy;
  uid @1 :UInt32;                     # cellos-dns
  gid @2 :UInt32;
  memoryLimitBytes @3 :UInt64;
}
