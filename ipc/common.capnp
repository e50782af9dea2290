@0xbf0967903f789f50;
# Types shared by more than one interface.
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("cellos::ipc");

struct KeyValue {
  key @0 :Text;
  value @1 :Text;
}

enum OutputStream {
  stdout @0;
  stderr @1;
}

interface OutputSink {
  # Receives a workload's output as it is produced. Flow-controlled: a slow reader slows the
  # relay instead of growing a buffer.
  write @0 (stream :OutputStream, data :Data) -> stream;
  done @1 ();
  # Both of the workload's streams reached end of file.
}

interface NetworkNamespace {
  # A cell's network namespace, carried as a file descriptor attached to this capability
  # (Capability::Client::getFd()). Holding the capability keeps the namespace alive; nothing
  # else about it is exposed, so a receiver cannot name or look up any other namespace.
  id @0 () -> (cellId :Text);
}

struct ExitStatus {
  exitCode @0 :Int32;        # valid when signal == 0
  signal @1 :Int32;          # the signal that ended the workload, 0 if it exited
  timedOut @2 :Bool;
  durationMicros @3 :UInt64;
  stdoutBytes @4 :UInt64;
  stderrBytes @5 :UInt64;
  outputTruncated @6 :Bool;
  reported @7 :Bool;         # false: the cell died before its init reported a status
}
