@0xaa6b8cbb1bc339eb;
# cellos-vmm-agent: creates, runs and destroys cells. Only the broker may connect.
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("cellos::ipc");
using Common = import "common.capnp";

struct CellRequest {
  cellId @0 :Text;
  runId @1 :Text;
  backend @2 :Backend;                 # spec.placement.backend (the broker maps the name)
  argv @3 :List(Text);
  env @4 :List(Common.KeyValue);
  workingDirectory @5 :Text;
  timeoutMs @6 :UInt64;                # 0 = none; SIGTERM to the cell, SIGKILL after the grace
  memoryMaxBytes @7 :UInt64;           # 0 = unset
  pidsMax @8 :UInt64;                  # 0 = unset
  gracefulShutdownSeconds @9 :UInt32;
  image @10 :Text;                     # "" or "host": the host view; else a registered image
  ttlSeconds @11 :UInt64;              # 0 = none; hard cap on the whole cell from createCell
  cpuQuotaMicros @12 :UInt64;          # 0 = unset
  cpuPeriodMicros @13 :UInt64;         # 0 = the kernel's default (100000)
  egressRules @14 :List(EgressRule);
  resolvers @15 :List(ResolverEndpoint);
  secretDelivery @16 :Text;            # "" (no secrets) | "env" | "file": the cell gets a
                                       # /run/secrets tmpfs for deliverSecrets to fill
  allowedHostDestinations @17 :List(Text);
                                       # the host policy's allowHostDestinations (CIDR): exempt
                                       # from the drop of host destinations
}

enum Backend {
  # The cell backends of this version; the VM launcher's table (vmm-agent/launcher/
  # backend_table.h) says which of them this host runs.
  linux @0;
  gvisor @1;
  microvm @2;  # a guest kernel under a VMM (QEMU's microvm machine): backends/microvm/
}

struct EgressRule {
  # Exactly one of host / cidr is non-empty.
  host @0 :Text;
  cidr @1 :Text;
  port @2 :UInt16;
  protocol @3 :Text;                   # "tcp" | "udp"
}

struct ResolverEndpoint {
  resolverId @0 :Text;
  address @1 :Text;                    # IP literal, no brackets
  port @2 :UInt16;
  protocol @3 :Text;                   # "do53-udp" | "do53-tcp"
}

struct NetworkScope {
  # What createCell built for the cell's network.
  uplinkInterface @0 :Text;            # the veth end outside the cell ("" when none)
  uplinkAddress @1 :Text;
  cellAddress @2 :Text;                # eth0 inside the cell
  nftApplied @3 :Bool;
  nftRuleCount @4 :UInt32;
  hostDestinations @5 :List(Text);     # CIDR: what the cell may never reach (host_destination.h),
                                       # for the DNS child to refuse answers pointing there
  dnsBindAddress @6 :Text;             # where the DNS helper binds in the cell's namespace (the
                                       # backend says; "" from an older agent: 127.0.0.1)
}

struct PhaseTiming {
  name @0 :Text;
  micros @1 :UInt64;
}

struct FlowCounter {
  # One nftables rule of the cell, counted over its whole life.
  ruleId @0 :Text;                     # "loopback", "resolver:<id>", "egress[2]", "default-drop"...
  rule @1 :Text;                       # the rule's match expression ("" for a catch-all)
  verdict @2 :Text;                    # "accept" | "drop"
  packets @3 :UInt64;
  bytes @4 :UInt64;
}

struct CellReport {
  # What the launcher reads from the cell once its workload has ended.
  oomKilled @0 :Bool;                  # the kernel OOM-killed a process of the cell
  oomKillCount @1 :UInt64;
  cpuUsageMicros @2 :UInt64;
  flows @3 :List(FlowCounter);
}

struct BootFact {
  # What a VM cell boots (microvm): the accelerator and whether it is a fallback, and the
  # digests of the kernel, initramfs and root image, checked against their manifests.
  name @0 :Text;                       # "accelerator", "kernelSha256", ...
  value @1 :Text;
}

interface VmmAgent {
  createCell @0 (request :CellRequest) -> (cell :Cell, netns :Common.NetworkNamespace,
                                          network :NetworkScope, timings :List(PhaseTiming),
                                          guestBoot :List(BootFact));
  # Builds the cell (namespaces, root view, cgroup, veth, nftables) without running its
  # command. Dropping the returned Cell capability destroys the cell. `timings`: the launcher's
  # setup steps, in order. `guestBoot`: empty unless the cell is a VM.
}

interface Cell {
  start @0 (output :Common.OutputSink) -> ();
  # Lets the workload exec; output is relayed to `output` as it is produced.

  wait @1 () -> (status :Common.ExitStatus, report :CellReport);
  # Resolves when the workload has exited and its output has been relayed. `status.timedOut`:
  # timeoutMs or ttlSeconds ended it.

  kill @2 (signal :Int32) -> ();

  destroy @3 () -> (residue :List(Text));
  # Kills everything in the cell and removes it; idempotent. `residue` lists anything that could
  # not be removed (empty when clean).

  openArtifact @4 (path :Text, maxBytes :UInt64) -> (file :ArtifactFile, bytes :UInt64,
                                                      refused :Text);
  # Opens the artifact at `path` (absolute, inside the cell's working directory) read-only,
  # without following any symlink and without leaving the working directory's file system;
  # only a regular file of at most `maxBytes` is opened. `refused` is empty and `file` carries
  # the open fd on success; otherwise `refused` says why and `file` is null. Only after the
  # workload has ended (the files are then still readable until destroy).

  deliverSecrets @5 (bundle :SecretBundleFile) -> (names :List(Text));
  # Before start: puts each secret of the bundle into the cell's /run/secrets tmpfs (mode 0400,
  # owned by the workload's id). With delivery "env" the cell's init moves them into the
  # workload's environment and unmounts the tmpfs before the workload runs.

  allowEgress @6 (addresses :EgressAddresses) -> ();
  # DNS-learned egress: adds addresses the cell's resolver gave for a `host` egress rule's name
  # to that rule's nftables sets (egress_<ruleIndex>_v4/_v6), each expiring after
  # timeoutSeconds. Resolves once they are in: only then is the answer released to the cell.
}

interface SecretBundleFile {
  # A sealed memfd (F_SEAL_WRITE|SHRINK|GROW) holding one SecretBundle message, carried as the fd
  # attached to this capability: the broker wipes its own copy once the memfd is written, so the
  # values never sit in a Cap'n Proto message of the broker's that it could not wipe.
}

struct SecretBundle {
  delivery @0 :Text;                   # "env" | "file"
  secrets @1 :List(Secret);
}

struct Secret {
  name @0 :Text;                       # [A-Za-z0-9_.-]+, not "." or ".."
  value @1 :Data;
}

interface ArtifactFile {
  # One exported artifact, carried as a read-only file descriptor attached to this capability
  # (Capability::Client::getFd()): a regular file, already checked by the VM launcher.
}

struct EgressAddresses {
  ruleIndex @0 :UInt32;                # a `host` rule of the cell's egressRules
  ipv4 @1 :List(Data);                 # 4 bytes each
  ipv6 @2 :List(Data);                 # 16 bytes each
  timeoutSeconds @3 :UInt32;
}

# --- Inside cellos-vmm-agent: the RPC half asks its launcher half (forked before seccomp,
# --- holding the capabilities cell construction needs) over a private socketpair.

struct LauncherRequest {
  union {
    launch @0 :CellRequest;
    destroy @1 :DestroyRequest;
    inspect @2 :Text;            # cell id: read its CellReport (after its workload ended)
    openArtifact @3 :ArtifactRequest;
    deliverSecrets @4 :SecretDelivery;  # the launcher wipes the message once handled
    allowEgress @5 :AllowEgressRequest;
  }
}

struct AllowEgressRequest {
  cellId @0 :Text;
  addresses @1 :EgressAddresses;
}

struct DestroyRequest {
  cellId @0 :Text;
  initPid @1 :Int32;
}

struct LauncherReply {
  union {
    launched @0 :Int32;          # superseded by launchedCell (kept for the ordinal)
    destroyed @1 :List(Text);    # residue (empty when clean)
    failed @2 :Text;
    launchedCell @3 :LaunchedCell;  # fds attached: pidfd, netns, stdout, stderr, start, status
    inspected @4 :CellReport;
    artifact @5 :ArtifactOpened;  # fd attached when `refused` is empty
    secretsDelivered @6 :List(Text);  # the names written
    egressAllowed @7 :Void;
  }
}

struct ArtifactRequest {
  cellId @0 :Text;
  path @1 :Text;                 # absolute, inside the cell's working directory
  maxBytes @2 :UInt64;
}

struct SecretDelivery {
  cellId @0 :Text;
  bundle @1 :SecretBundle;
}

struct ArtifactOpened {
  bytes @0 :UInt64;
  refused @1 :Text;              # empty: opened
}

struct LaunchedCell {
  initPid @0 :Int32;
  network @1 :NetworkScope;
  timings @2 :List(PhaseTiming);
  guestBoot @3 :List(BootFact);
}
