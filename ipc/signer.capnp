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
}
