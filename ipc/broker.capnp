@0xf574331d88605c34;
# cellos-broker's client API (the `cellos` CLI speaks this on broker.sock).
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("cellos::ipc");
using Common = import "common.capnp";

struct RunResult {
  outcome @0 :Text;                   # "succeeded" | "failed" | "cancelled"
  failedPhase @1 :Text;
  error @2 :Text;                     # what went wrong, when the runner (not the cell) failed
  hasStatus @3 :Bool;                 # false when the command never ran
  status @4 :Common.ExitStatus;
}

struct RunSummary {
  runId @0 :Text;
  cellId @1 :Text;
  state @2 :Text;                     # "queued" | "running" | "finished"
  outcome @3 :Text;                   # when finished: "succeeded" | "failed" | "cancelled"
  hasStatus @4 :Bool;
  exitCode @5 :Int32;                 # as `cellos run` reports it (128+n for signal n)
  ownerUid @6 :UInt32;
  submittedMicros @7 :UInt64;         # Unix time
}

interface Broker {
  submit @0 (document :Data, output :Common.OutputSink, detach :Bool, backend :Text)
      -> (run :Run, violations :List(Text));
  # Parses and admits the document. When it is invalid, `violations` lists every problem as
  # "<path>: <message>" and `run` is null; nothing is created. Beyond the broker's concurrency
  # limit the run waits in a queue. Unless `detach`, releasing the Run (or disconnecting)
  # cancels it: nobody would see its output. A non-empty `backend` (`cellos run --backend`)
  # is where a document that names no backend runs, instead of the host policy's default; a
  # document that names another one is refused. Either way the host policy still applies.

  list @1 () -> (runs :List(RunSummary));
  # The runs the caller may see (its own; every run for root), newest first.

  open @2 (runId :Text) -> (run :Run);
  # A run the caller may see, to follow, wait for or cancel. Never cancelled by release.

  eventLog @3 () -> (path :Text);
  # Where the signed event log is, for `cellos logs` (group cellos may read it).
}

interface Run {
  info @0 () -> (runId :Text, cellId :Text);
  wait @1 () -> (result :RunResult);
  cancel @2 () -> (alreadyFinished :Bool);
  # Stops a queued or running run (its outcome becomes "cancelled" unless its command had
  # already ended); `alreadyFinished` when there was nothing left to cancel.
  summary @3 () -> (summary :RunSummary);
}
