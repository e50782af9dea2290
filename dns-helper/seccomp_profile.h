#pragma once
#include "privsep/seccomp.h"

namespace cellos::dns {
// The spawner: serves the broker, forks and execs per-cell children, relays their records.
// Its filter is inherited by children and stays in force under theirs (filters stack), so it
// must also allow everything a child does: setup before its own profile, and serving after.
extern const privsep::SeccompProfile kSpawnerProfile;
// The per-cell child once serving: poll, UDP/TCP on its already-bound sockets, the channel.
extern const privsep::SeccompProfile kDnsChildProfile;
}  // namespace cellos::dns
