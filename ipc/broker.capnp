@0xf574331d88605c34;
# cellos-broker's client API (the `cellos` CLI speaks this on broker.sock).
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("cellos::ipc");
using Common = import "common.capnp";

struct RunResult {
  outcome @0 :Text;                   # "succeeded" | "failed"
  failedPhase @1 :Text;
  error @2 :Text;                     # what went wrong, when the runner (not the cell) failed
  hasStatus @3 :Bool;                 # false when the command never ran
  status @4 :Common.ExitStatus;
}

interface Broker {
  submit @0 (document :Data, output :Common.OutputSink) -> (run :Run, violations :List(Text));
  # Parses and admits the document. When it is invalid, `violations` lists every problem as
  # "<path>: <message>" and `run` is null; nothing is created.
}

interface Run {
  info @0 () -> (runId :Text, cellId :Text);
  wait @1 () -> (result :RunResult);
  cancel @2 () -> ();
}
