#pragma once
// The launcher half of cellos-vmm-agent.
//
// Seccomp filters are inherited by every descendant and can never be removed, so the process
// that creates cells cannot sit under the RPC half's tight profile: the cell's init must still
// be able to mount, pivot_root and exec. The agent therefore forks this launcher before it
// installs its own profile. The launcher reads requests only from the agent (over a private
// socketpair), builds and destroys cells, and answers with the cell's fds (SCM_RIGHTS). It
// never touches a network socket or a client.

#include <sys/types.h>

#include <string>

namespace cellos::vmm {

struct LauncherConfig {
  std::string runDir;  // cells get <runDir>/cells/<cellId>
};

// Forks the launcher. Returns its pid; `agentEnd` receives the agent's end of the socketpair
// (CLOEXEC). The launcher exits when the agent closes its end.
pid_t startLauncher(const LauncherConfig& config, int& agentEnd);

}  // namespace cellos::vmm
