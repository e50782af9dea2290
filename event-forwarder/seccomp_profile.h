#pragma once
#include "privsep/seccomp.h"

namespace cellos::forwarder {
// What cellos-event-forwarder may do once it follows the log: read log files under the
// directory fd it holds, write its cursor and dead letters there, and talk TCP to NATS from
// libnats' threads. No exec, no Unix or raw sockets, no new namespaces.
extern const privsep::SeccompProfile kForwarderProfile;
}  // namespace cellos::forwarder
