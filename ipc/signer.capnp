@0xbae19609ea91202d;
# cellos-event-signer: the only process that holds a signing key.
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("cellos::ipc");

interface EventSigner {
  sign @0 (events :List(Data)) -> (signed :List(Data));
  # Each element is one CloudEvent as compact JSON without `sequence`, `cellosprev` or
  # `dssematerial`. The signer appends them to its chain in order, persists the chain head with
  # fsync, and only then returns the signed events (compact JSON, same order).

  keyset @1 () -> (json :Text);
  # The public keyset: {"<keyid>": "<base64url raw public key>", ...}.

  head @2 () -> (nextSequence :UInt64, prevLink :Text, keyId :Text);
  # Where the chain stands: the sequence and cellosprev the next signed event will get, and the
  # key that will sign it. The broker compares this with the last line of its log at start-up
  # to notice events that were signed but never written.

  written @4 (throughSequence :UInt64, lostAfter :Bool, final :Bool) -> (checkpoint :Text);
  # The broker has made every signed event up to `throughSequence` durable (in the log, or in
  # the dead-letter directory), in sequence order. The signer adds them to its RFC 9162 tree
  # (persisted with fsync) and returns a signed checkpoint (a C2SP signed note, for the
  # broker's checkpoint file) when one is due — the interval has passed since the last one and
  # the tree grew, or `final` — else an empty text. `lostAfter`: the broker restarted and events
  # signed after `throughSequence` were never written; they leave the tree's queue (the gap is
  # declared by the broker's log.v1.resumed event, which enters the tree like any other).

  rotate @3 (algorithm :Text) -> (keyId :Text, keyset :Text);
  # Root only (`cellos-event-signer rotate`): a fresh key ("ed25519" or "p256") signs from now
  # on, the chain continues, and the keyset keeps every earlier public key.
}
