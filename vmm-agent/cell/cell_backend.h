#pragma once
// The seam between the launcher and a cell backend: what the launcher asks of every backend
// (CellLaunch), what every backend hands back (LaunchedCell), and the interface each backend
// implements (CellBackend). The launcher knows backends only through this header and its table
// (launcher/backend_table.h); a backend knows nothing of the launcher, the RPC half or another
// backend.
//
// What the rest of the agent relies on, whichever backend built the cell: a pid-1 process the
// launcher can signal through a pidfd; the cell's own network namespace (the veth, nftables
// scope and DNS helper are the launcher's, built from outside); the cell's cgroup leaves
// (cgroup.h) holding every process of the cell; the start byte / raw wait status / output pipe
// protocol of the pid-1 skeleton (cell_init.h); and the working-directory and secrets
// directories opened by the backend itself, so a backend whose root has no host path (a VM)
// can fill them as well as one whose root is /proc/<pid>/root.

#include "vmm-agent/cell/sys_util.h"

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace cellos::vmm {

// Host ids a cell's user namespace maps its ids 0..size-1 to (uids and gids alike).
struct CellIdRange {
  uint32_t hostBase = 0;  // > 0: host root is never mapped into a cell
  uint32_t size = 0;      // >= 1
};

// CFS bandwidth: `quotaMicros` of cpu time per `periodMicros` of wall time.
struct CellCpuMax {
  uint64_t quotaMicros = 0;
  uint64_t periodMicros = 100000;
};

struct CellLaunch {
  // Already validated: [a-z0-9][a-z0-9._-]{0,62}. Becomes the hostname and the cgroup leaf.
  std::string cellId;
  // argv[0] must be absolute (it is exec'd as is, without a PATH search).
  std::vector<std::string> argv;
  // The workload's whole environment; nothing is inherited.
  std::vector<std::pair<std::string, std::string>> env;
  // Absolute; becomes a fresh tmpfs inside the cell and the workload's cwd.
  std::string workingDirectory = "/workspace";
  // An existing empty host directory private to this cell (e.g. /run/cellos/cells/<id>). The
  // cell's root tmpfs is mounted on it inside the cell's mount namespace only: the host never
  // sees a mount there.
  std::string cellDir;
  // Applied through the cell's cgroup when set. pidsMax counts the cell's init too.
  std::optional<uint64_t> pidsMax;
  // The command's timeout (0: none). The agent enforces it for every backend (SIGTERM to the
  // cell's init, SIGKILL after the grace period); a microvm guest's init enforces it inside the
  // guest too, counted from the workload's start.
  uint64_t timeoutMs = 0;
  std::optional<uint64_t> memoryMaxBytes;
  std::optional<CellCpuMax> cpuMax;
  // The workload's user namespace: it runs as id 0 there, host id ids.hostBase. Required.
  CellIdRange ids;
  // Root filesystem: empty for the read-only host view (/usr, /etc, usr-merge links), else the
  // absolute path of a directory image whose top-level entries are bound read-only instead.
  std::string imageRoot;
  // Content of the cell's /etc/resolv.conf (the DNS helper answers on 127.0.0.1:53 in the cell);
  // empty leaves the view's own file as it is.
  std::string resolvConf = "nameserver 127.0.0.1\n";
  // Secrets (secret_files.h): "" for none; "file" or "env" mounts a tmpfs at /run/secrets for
  // the launcher to fill before the start byte. After it, "file" makes that mount read-only for
  // the workload; "env" moves the files into the workload's environment and unmounts it.
  std::string secretDelivery;
  // RLIMIT_NOFILE hard limit of the workload (soft: min(1024, this)). RLIMIT_CORE is always 0.
  uint64_t nofileMax = 4096;
};

// A built cell, its pid 1 waiting for the start byte. Owns every fd (all O_CLOEXEC).
struct LaunchedCell {
  pid_t initPid = 0;  // the cell's pid 1 (a host pid); for display and records only: every
                      // signal goes through pidFd
  Fd pidFd;           // pidfd of initPid
  Fd netnsFd;         // the cell's network namespace, O_RDONLY
  Fd stdoutFd;        // read end of the workload's stdout pipe (O_NONBLOCK)
  Fd stderrFd;        // read end of the workload's stderr pipe (O_NONBLOCK)
  // Write end: writing one byte lets the workload exec; closing it without writing aborts the
  // cell (pid 1 exits kCellAbortedExitCode without running argv). Write it with SIGPIPE ignored.
  Fd startFd;
  // Read end: after the workload ends, pid 1 writes exactly 4 bytes (the raw wait status int,
  // native endian) and exits. EOF without 4 bytes: the cell died abnormally.
  Fd statusFd;
  // Where the launcher reaches the inside of the cell, opened by the backend while pid 1 waits
  // (the workload has not run, so nothing in the path is the workload's yet):
  Fd workingDirectory;  // O_PATH of the working directory's mount (artifacts are read here)
  Fd secrets;           // O_PATH of the secrets tmpfs; empty when the cell gets no secrets
  // Where the DNS helper binds inside the cell's network namespace, and what the cell's
  // /etc/resolv.conf says (CellLaunch::resolvConf, as installed).
  std::string dnsBindAddress = "127.0.0.1";
  std::string resolvConf;
  // A VM cell's workload is a guest behind a TAP device in the cell's namespace: its name and
  // the guest's IPv4 address there. The launcher then filters the workload's traffic on the
  // forward path (core/nft_rules.h, NftGuest). Empty for a cell whose workload's sockets live in
  // the namespace itself.
  std::string guestInterface;
  std::string guestAddress;
  // What a VM cell boots, for its lifecycle.v1.started event (ipc BootFact): name, value.
  std::vector<std::pair<std::string, std::string>> guestBoot;

  // The six fds the agent's RPC half takes over (in this order: pidfd, netns, stdout, stderr,
  // start, status); the launcher keeps none of them.
  std::vector<Fd> releaseAgentFds();
  // The inverse: takes the first six of `fds`, in that order.
  void adoptAgentFds(std::vector<Fd>& fds);
};

// The host paths the read-only host view binds (or mirrors as symlinks); an image's entries of
// these names are replaced by the cell's own /proc, /dev and /tmp, and /sys stays absent.
inline constexpr const char* kImageSkippedEntries[] = {"proc", "dev", "sys", "tmp"};

// The top-level entries of a registered image a cell's root takes, sorted: every name but "."
// and ".." and kImageSkippedEntries. Throws std::system_error when the image cannot be read.
std::vector<std::string> imageEntries(const std::string& imageRoot);

// Exit code of a cell's pid 1 told to abort (startFd closed without the start byte) or unable
// to fork the workload; also the workload's exit code when it failed between fork and execve.
// Exec failures give 126 (EACCES, ENOEXEC) or 127 (any other errno), with
// "cellos: exec <argv0>: <reason>" on the workload's stderr.
inline constexpr int kCellAbortedExitCode = 125;

// One backend. The launcher holds one instance per backend this host runs (the table), made
// before it installs its seccomp profile: a backend that needs what that profile refuses (the
// gVisor spawner: ptrace, a Go runtime) starts its helper process in its constructor.
class CellBackend {
 public:
  virtual ~CellBackend() = default;
  // The backend's name as the cell document spells it (spec.placement.backend).
  virtual const char* name() const = 0;
  // Builds the cell from `launch` (its cellDir exists and is empty; its id is unique among live
  // cells of this host) and returns it waiting for the start byte, in its cgroup with the
  // limits. Throws std::invalid_argument for a bad launch, std::system_error or
  // std::runtime_error otherwise; a throw leaves nothing of the cell's processes (the caller's
  // destroy() and removeLeftovers() clean the rest).
  virtual LaunchedCell launch(const CellLaunch& launch) = 0;
  // Kills every process of the cell and removes its cgroup leaves; `initPid` may be stale or 0
  // (a cell of an earlier launcher). Idempotent, never throws; returns what it could not clean.
  virtual std::vector<std::string> destroy(const std::string& cellId, pid_t initPid) = 0;
  // What the backend leaves on the host once the cell's processes are gone (files in `cellDir`,
  // not the directory itself; cgroups a runtime made). Safe on a cell of another backend (the
  // reaper does not know which backend built an orphan). Returns what it could not remove.
  virtual std::vector<std::string> removeLeftovers(const std::string& cellId,
                                                   const std::string& cellDir) = 0;
  // OOM kills the host cgroup does not see, inside a cell whose workload has its own kernel (a
  // VM's guest), counted on top of the cgroup's. 0 for a backend whose workload shares the
  // host's kernel. Never throws.
  virtual uint64_t oomKillsInside(const std::string& cellDir) const { return 0; }
};

}  // namespace cellos::vmm
