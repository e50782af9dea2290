#pragma once
#include "privsep/seccomp.h"

namespace cellos::signer {
// What cellos-event-signer may do once serving: its event loop, its socket, and durable writes
// of the chain head inside its state directory. No exec, no new sockets, no network.
extern const privsep::SeccompProfile kSignerProfile;
}  // namespace cellos::signer
