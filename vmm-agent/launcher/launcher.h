#pragma once
// The launcher half of cellos-vmm-agent.
//
// Seccomp filters are inherited by every descendant and can never be removed, so the process
// that creates cells cannot sit under the RPC half's tight profile: the cell's init must still
// be able to mount, pivot_root and exec. The agent therefore forks this launcher before it
// installs its own profile. The launcher reads requests only from the agent (over a private
// socketpair), builds and destroys cells, and answers with the cell's fds (SCM_RIGHTS). It
// never touches a network socket or a client; its netlink sockets configure cells' namespaces.

#include "core/address_pool.h"
#include "vmm-agent/backends/gvisor/gvisor_spawner.h"
#include "vmm-agent/backends/microvm/microvm_cell.h"

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

namespace cellos::vmm {

struct LauncherConfig {
  std::string runDir;     // cells get <runDir>/cells/<cellId> (an empty mount point)
  std::string stateDir;   // cell records (cell_records.h), reaped by the next start after a crash
  std::string poolDir;    // host-wide slot leases (slot_lease.h)
  std::string imagesDir;  // registered directory images, <imagesDir>/<name>; "" for none
  std::optional<core::AddressPool> addresses;  // a /30 per cell
  std::optional<core::UidRangePool> ids;       // a host id range per cell
  std::string uplinkNetnsPath;                 // "" : the launcher's own network namespace
  int uplinkNetnsFd = -1;  // open for the launcher's lifetime (inherited by the fork)
  int homeNetnsFd = -1;
  uint32_t dnsUid = 0;  // the DNS helper's per-cell child: the only sender allowed to resolvers
  // The gvisor backend (backends/gvisor/): when set, the launcher forks the gVisor spawner before
  // it installs its seccomp profile, and gvisor cells run under runsc (backend_table.h).
  std::optional<GvisorConfig> gvisor;
  // The microvm backend (backends/microvm/): when set, the launcher decides the accelerator and
  // forks the microVM spawner before it installs its seccomp profile. When not, why not (the
  // answer a microvm cell gets).
  std::optional<MicrovmConfig> microvm;
  std::string microvmUnavailable;
};

// Forks the launcher. Returns its pid; `agentEnd` receives the agent's end of the socketpair
// (CLOEXEC). The launcher exits when the agent closes its end.
pid_t startLauncher(const LauncherConfig& config, int& agentEnd);

// The directory of registered image `name` (validated: [A-Za-z0-9][A-Za-z0-9._-]{0,62}, a
// directory owned by root and writable by nobody else), or "" for "host" / "". Throws
// std::runtime_error saying what is wrong.
std::string registeredImageRoot(const std::string& imagesDir, const std::string& name);

}  // namespace cellos::vmm
