#pragma once
// The gvisor backend: one cell is one gVisor sandbox (`runsc run`), its workload's system calls
// answered by gVisor's Sentry instead of the host kernel.
//
// What it shares with the linux backend (linux_cell.h), so the rest of the agent cannot tell the
// two apart: the same CellLaunch, the same LaunchedCell fds (start byte, raw wait status,
// stdout/stderr pipes, a pidfd to signal, the network namespace), the same cgroup leaves
// (cgroup.h: the limits are written by the same code, v1 or v2), the same veth + nftables scope
// and DNS helper (the cell's network namespace is ours, and runsc runs in it with
// --network=host, so its sockets are ordinary host sockets in that namespace), the same record
// and reaping.
//
// How a cell runs. The launcher prepares the cell directory <cellDir> (gvisorBundle below): a
// read-only root made of bind mounts (the host's /usr and /etc, or a registered image's
// entries), a working directory on the host (<cellDir>/work, bound at the document's
// workingDirectory, owned by the cell's host id) and config.json. The gVisor spawner, a process
// the launcher forks before it installs its seccomp profile (runsc needs ptrace, which that
// profile refuses), clones the cell's *supervisor* into new pid, mount, network, uts and ipc
// namespaces. The supervisor is pid 1 there: it mounts a /proc of its own (runsc reads
// /proc/<pid> of the pids it starts), brings up lo, waits for the start byte, runs `runsc run`
// with the workload's pipes, passes SIGTERM/SIGINT/SIGHUP/SIGUSR1/SIGUSR2 on with `runsc kill
// --all`, and writes the wait status. SIGKILL to the supervisor ends its pid namespace, so the
// sandbox, the gofer and every runsc process die with it: nothing of a cell outlives its
// supervisor, which is also why teardown never runs `runsc delete` from outside (the pids in
// runsc's state are pids of the cell's namespace; from the host they would name other
// processes).

#include "vmm-agent/linux_cell.h"

#include <sys/types.h>

#include <string>
#include <vector>

namespace cellos::vmm {

// Secrets of a gvisor cell (secret_files.h). The supervisor mounts the cell's secrets tmpfs at
// kGvisorSecretsSource in its own root (a path no host process sees but through
// /proc/<supervisor>/root), where the launcher writes the files before the start byte. With
// delivery "file" it is remounted read-only and bound read-only at kSecretsDirectory in the
// sandbox; with "env" the supervisor reads the files into process.env of a private copy of the
// bundle (kGvisorPrivateBundle, with runsc's state at kGvisorPrivateState: runsc keeps the spec
// in its state) and unmounts the tmpfs before it runs runsc. The delivery reaches the supervisor
// as the config.json annotation kGvisorSecretsAnnotation.
inline constexpr const char* kGvisorSecretsSource = "/cellos-secrets";
inline constexpr const char* kGvisorPrivateBundle = "/cellos-bundle";
inline constexpr const char* kGvisorPrivateState = "/cellos-runsc";
inline constexpr const char* kGvisorSecretsAnnotation = "dev.cellos.secret-delivery";

struct GvisorConfig {
  std::string runsc = "/usr/bin/runsc";
  std::string platform = "ptrace";  // runsc --platform: ptrace | kvm (Debian's 0.0~20221219)
};

// Paths of a gvisor cell inside its cell directory.
struct GvisorPaths {
  std::string bundle;      // <cellDir>/bundle (config.json)
  std::string rootfs;      // <cellDir>/rootfs (mount points only; read-only to the cell)
  std::string work;        // <cellDir>/work: the working directory, seen from the host
  std::string state;       // <cellDir>/runsc: runsc --root
  std::string resolvConf;  // <cellDir>/resolv.conf
  // <cellDir>/supervisor-root: the mount point of the supervisor's own root (a tmpfs in its
  // private mount namespace: the host only ever sees an empty directory).
  std::string supervisorRoot;
};
GvisorPaths gvisorPaths(const std::string& cellDir);

// A bind mount of the host's read-only view into the sandbox: `source` on the host at
// `destination` in the cell.
struct GvisorBind {
  std::string source, destination;
  bool writable = false;
};

// What the root of a gvisor cell is made of: symlinks (name, target) and read-only binds, from
// the host view (/usr, /etc and the usr-merge links) or a registered image's top-level entries
// (kImageSkippedEntries excepted). Throws std::runtime_error when the image has none.
struct GvisorRootView {
  std::vector<std::pair<std::string, std::string>> symlinks;
  std::vector<GvisorBind> binds;
};
GvisorRootView gvisorRootView(const std::string& imageRoot);

// The OCI runtime configuration (config.json, runtime-spec 1.0) of the cell: process (argv,
// exactly the declared environment, cwd, the cell's host id as uid/gid, no capabilities,
// no_new_privs, rlimits: NOFILE, CORE 0, NPROC = pidsMax), a read-only root, /proc, a tmpfs
// /tmp, the working directory, resolv.conf, the hostname, new pid/ipc/uts/mount namespaces (no
// network namespace: runsc --network=host uses the supervisor's, the cell's own), cgroupsPath
// /cellos/<cellId> (the launcher created it with the limits; runsc joins a cgroup that exists
// and leaves its configuration alone) and the memory/cpu limits it holds. With secrets, the
// annotation kGvisorSecretsAnnotation and, for delivery "file", a read-only bind of
// kGvisorSecretsSource at /run/secrets. Pure; throws
// std::invalid_argument for a bad launch.
std::string gvisorOciConfig(const CellLaunch& launch, const GvisorPaths& paths,
                            const GvisorRootView& root);

// Writes the bundle of a cell into launch.cellDir (an existing empty directory): rootfs with its
// mount points, work (owned by the cell's host id, mode 0700), resolv.conf, bundle/config.json,
// and an empty runsc state directory. Throws std::system_error / std::runtime_error.
void writeGvisorBundle(const CellLaunch& launch);

// Removes what a gvisor cell leaves on the host once its processes are gone: the files in its
// cell directory (not the directory itself) and any cgroup directory runsc made for the cell
// under a controller the launcher does not manage (cgroup v1: cpuset, devices, ...; a failed
// start leaves them). Returns what it could not remove. Safe on a linux cell (nothing there).
std::vector<std::string> removeGvisorLeftovers(const std::string& cellId,
                                               const std::string& cellDir);

// The gVisor spawner: forked by the launcher before its seccomp profile, so runsc (which needs
// ptrace and a Go runtime's system calls) can run. It answers only its launcher, over a
// SOCK_SEQPACKET pair: "spawn <cellId>" -> the supervisor's fds. Returns its pid; `launcherEnd`
// receives the launcher's end (CLOEXEC). The spawner exits when that end closes (and dies with
// the launcher: PDEATHSIG).
pid_t startGvisorSpawner(const GvisorConfig& config, const std::string& runDir, int& launcherEnd);

// Asks the spawner at `spawnerFd` for the supervisor of cell launch.cellId (whose bundle exists)
// and returns its ends, as launchCell() does, once the supervisor has built its root (so
// /proc/<initPid>/root is the cell's view). The supervisor does nothing until the start byte.
// The caller moves initPid into the cell's cgroup before writing it. Throws std::runtime_error
// with the spawner's reason.
LaunchedCell spawnGvisorCell(int spawnerFd, const std::string& cellId);

// How a `runsc run` exit becomes the workload's wait status: runsc exits 128+n when the
// workload was killed by signal n (1..64), else with the workload's exit code.
int gvisorWaitStatus(int runscStatus);

}  // namespace cellos::vmm
