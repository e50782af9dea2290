#pragma once
// The gvisor backend's bundle: the OCI runtime configuration and the directory layout of a
// gvisor cell, built by the launcher from a CellLaunch. Pure except writeGvisorBundle and
// removeGvisorLeftovers, which touch only the cell's own directory (and, on cgroup v1, the
// cgroups runsc made for it).

#include "vmm-agent/cell/cell_backend.h"

#include <sys/types.h>

#include <string>
#include <utility>
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

// How a `runsc run` exit becomes the workload's wait status: runsc exits 128+n when the
// workload was killed by signal n (1..64), else with the workload's exit code.
int gvisorWaitStatus(int runscStatus);

}  // namespace cellos::vmm
