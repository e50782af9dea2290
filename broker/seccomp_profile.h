#pragma once
#include "privsep/seccomp.h"

namespace cellos::broker {
// cellos-broker once serving: its event loop, its already-connected helper links, accepting
// clients, and appending to the already-open event log. No exec, no new files or sockets.
extern const privsep::SeccompProfile kBrokerProfile;
}  // namespace cellos::broker
