#pragma once
#include "privsep/seccomp.h"

namespace cellos::vmm {
// The RPC half: serves the broker, relays output, signals cells through pidfds. It cannot
// mount, exec, clone or open network sockets.
extern const privsep::SeccompProfile kAgentProfile;
// The launcher half, inherited by every cell it creates: what cell construction needs
// (namespaces, mounts, pivot_root, cgroups, exec) plus what ordinary workloads use. The cell's
// own narrower profile is the job of the workload stage.
extern const privsep::SeccompProfile kLauncherProfile;
// A microvm cell's supervisor once it reads guest bytes: relaying, signals, the working
// directory's copy; no exec, clone, mount, socket or credential change.
extern const privsep::SeccompProfile kVmSupervisorProfile;
}  // namespace cellos::vmm
