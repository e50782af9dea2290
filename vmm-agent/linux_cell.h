#pragma once
// The linux backend's cell runtime: one cell is a process tree in its own pid, mount, network,
// UTS and IPC namespaces, inside its own cgroup, on a read-only view of the host's /usr and /etc
// (or of a registered directory image) with fresh tmpfs scratch space, and no fd, tty or
// environment variable of the launcher. Its workload runs in a user namespace of its own as
// root there and an unprivileged host id outside, with no capabilities, no_new_privs, rlimits
// and its own seccomp filter (workload_filter.h).
//
// The caller is the single-threaded, root launcher half of cellos-vmm-agent. launchCell() forks
// the cell's init (pid 1 of the new pid namespace), which builds the cell's filesystem and waits;
// the workload runs only after the caller writes the start byte, so the caller can wire the
// network namespace (veth, nftables: network_scope.h; the DNS proxy) first.

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

struct LaunchedCell {
  pid_t initPid;  // the cell's init (pid 1 inside its pid namespace), a child of the caller
  int pidFd;      // pidfd of initPid (O_CLOEXEC); owned by the caller
  int netnsFd;    // /proc/<initPid>/ns/net opened O_RDONLY|O_CLOEXEC; owned by the caller
  int stdoutFd;   // read end of the workload's stdout pipe (O_CLOEXEC|O_NONBLOCK)
  int stderrFd;   // read end of the workload's stderr pipe (O_CLOEXEC|O_NONBLOCK)
  // Write end (O_CLOEXEC): writing one byte lets the workload exec; closing it without writing
  // aborts the cell (init exits 125 without running argv). Write it with SIGPIPE ignored.
  int startFd;
  // Read end (O_CLOEXEC): after the workload ends, init writes exactly 4 bytes (the raw wait
  // status int, native endian) and exits. EOF without 4 bytes: the cell died abnormally.
  int statusFd;
};

// The host paths the read-only host view binds (or mirrors as symlinks); an image's entries of
// these names are replaced by the cell's own /proc, /dev and /tmp, and /sys stays absent.
inline constexpr const char* kImageSkippedEntries[] = {"proc", "dev", "sys", "tmp"};

// The top-level entries of a registered image a cell's root takes, sorted: every name but "."
// and ".." and kImageSkippedEntries. Throws std::system_error when the image cannot be read.
std::vector<std::string> imageEntries(const std::string& imageRoot);

// Exit code of a cell init told to abort (startFd closed without the start byte) or unable to
// fork the workload; also the workload's exit code when it failed between fork and execve.
// Exec failures give 126 (EACCES, ENOEXEC) or 127 (any other errno), with
// "cellos: exec <argv0>: <reason>" on the workload's stderr.
inline constexpr int kCellAbortedExitCode = 125;

// Creates the cell's cgroup, forks its init into new namespaces, moves it into the cgroup, waits
// until the init has built the cell's root and is waiting for the start byte, and returns the
// caller's ends. Throws std::invalid_argument for a bad CellLaunch, std::system_error (the
// failed call and its arguments, from the launcher or from inside the cell) or
// std::runtime_error otherwise; on failure nothing is left behind (the child is killed and
// reaped, the cgroup removed, every fd closed). An id this process launched and has not
// destroyed yet is refused.
LaunchedCell launchCell(const CellLaunch& launch);

// Kills every process of the cell (SIGKILL to its init, which collapses the pid namespace, and
// to everything in its cgroup), reaps the init if this process launched it and has not reaped it
// yet, and removes the cgroup leaves. Nothing is mounted on the host side, so nothing is
// unmounted. The init is signalled and reaped only through a pidfd this process kept when it
// launched the cell, never by the bare `initPid` (which may be stale, recycled, or 0 from an
// agent reaping leftovers after a restart: then the cgroup alone finds the processes).
// Idempotent; never throws.
// Returns what it could not clean (empty when clean).
std::vector<std::string> destroyCell(const std::string& cellId, pid_t initPid);

// What of the cell still exists: processes in its cgroup, its cgroup directories, mounts on or
// under `cellDir` in the caller's mount namespace, and `cellDir` itself when `expectDirGone`.
// One human-readable line per item; empty means no residue. Never throws.
std::vector<std::string> residueOf(const std::string& cellId, const std::string& cellDir,
                                   bool expectDirGone);

}  // namespace cellos::vmm
