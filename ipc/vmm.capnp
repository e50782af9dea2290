@0xaa6b8cbb1bc339eb;
# cellos-vmm-agent: creates, runs and destroys cells. Only the broker may connect.
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("cellos::ipc");
using Common = import "common.capnp";

struct CellRequest {
  cellId @0 :Text;
  runId @1 :Text;
  backend @2 :Text;                    # "linux" in this version
  argv @3 :List(Text);
  env @4 :List(Common.KeyValue);
  workingDirectory @5 :Text;
  timeoutMs @6 :UInt64;                # 0 = none
  memoryMaxBytes @7 :UInt64;           # 0 = unset
  pidsMax @8 :UInt64;                  # 0 = unset
  gracefulShutdownSeconds @9 :UInt32;
}

interface VmmAgent {
  createCell @0 (request :CellRequest) -> (cell :Cell, netns :Common.NetworkNamespace);
  # Builds the cell (namespaces, root view, cgroup) without running its command. Dropping the
  # returned Cell capability destroys the cell.
}

interface Cell {
  start @0 (output :Common.OutputSink) -> ();
  # Lets the workload exec; output is relayed to `output` as it is produced.

  wait @1 () -> (status :Common.ExitStatus);
  # Resolves when the workload has exited and its output has been relayed.

  kill @2 (signal :Int32) -> ();

  destroy @3 () -> (residue :List(Text));
  # Kills everything in the cell and removes it; idempotent. `residue` lists anything that could
  # not be removed (empty when clean).
}

# --- Inside cellos-vmm-agent: the RPC half asks its launcher half (forked before seccomp,
# --- holding the capabilities cell construction needs) over a private socketpair.

struct LauncherRequest {
  union {
    launch @0 :CellRequest;
    destroy @1 :DestroyRequest;
  }
}

struct DestroyRequest {
  cellId @0 :Text;
  initPid @1 :Int32;
}

struct LauncherReply {
  union {
    launched @0 :Int32;          # init pid; fds attached: pidfd, netns, stdout, stderr, start, status
    destroyed @1 :List(Text);    # residue (empty when clean)
    failed @2 :Text;
  }
}
