#pragma once
// The pid-1 skeleton every backend's cell init follows (the linux cell init, the gVisor
// supervisor; a VM's guest init follows the same protocol from inside its guest), and the
// parent's half of its channels. Each step is named, and the order is the security argument:
//
//   1. die with the parent (PR_SET_PDEATHSIG, and a pidfd of the parent checked once, for a
//      parent that died before the prctl: getppid() cannot tell from inside a new pid namespace);
//   2. reset every signal disposition and the mask the parent had;
//   3. keep only the cell's fds (its channels), /dev/null on 0-2;
//   4. wait until the parent has put us into the cell's cgroup ('G' on the control channel), so
//      everything built below (tmpfs pages, every fork) is counted and limited as the cell's;
//   5. the backend builds the cell (root, proc, loopback up, hostname, ...);
//   6. report "ready", or the one failure report (the errno and the failed call) and exit;
//   7. wait for the start byte (EOF: the launcher aborted the cell, exit kCellAbortedExitCode);
//   8. the backend runs the workload (exec failures: 126 for EACCES/ENOEXEC, else 127);
//   9. report the workload's raw wait status (4 bytes) on the status pipe and exit.
//
// The parent (the launcher for linux cells, the gVisor spawner for supervisors) clones pid 1
// with cloneCellInit (a pidfd from the clone itself, never a pid looked up later), writes its
// pid into the cgroup while it is an unreaped child (so the pid cannot be another process's),
// sends 'G', and waits with awaitReady.

#include "vmm-agent/cell/cell_backend.h"
#include "vmm-agent/cell/sys_util.h"

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>

namespace cellos::vmm {

// pid 1's ends of its channels (fd numbers as inherited through clone; steps 3 moves them off
// 0-2 when they landed there).
struct InitChannels {
  int control = -1;      // SOCK_SEQPACKET: receives 'G' (in the cgroup), sends the setup report
  int parentPidfd = -1;  // the parent, to notice it died before PR_SET_PDEATHSIG was set
  int start = -1;        // read end of the start pipe
  int status = -1;       // write end of the status pipe
  int stdoutWrite = -1;
  int stderrWrite = -1;
};

// The parent's ends, made before clone (every fd O_CLOEXEC). pid 1 inherits its ends; the
// parent calls closeChildEnds() right after the clone.
struct InitPipes {
  Pipe out, err, start, status;
  Fd control, childControl, parentPidfd;
  static InitPipes make();
  InitChannels childChannels() const;
  void closeChildEnds();
  // Once pid 1 is ready: its pidfd and the parent's pipe ends become the cell's.
  void handOver(Fd pidfd, LaunchedCell& cell);
};

// Steps 1-6 in pid 1. `build` is step 5 (the backend's own); a throw from any step is reported
// (std::system_error with its errno) and pid 1 exits kCellAbortedExitCode. Returns after
// "ready" was sent; the control channel is closed then.
void setUpCellInit(InitChannels& channels, const std::function<void()>& build) noexcept;

// Step 7: blocks until the start byte (true) or EOF / an error (false: abort).
bool waitForStartByte(int start);

// Step 9: the raw wait status, then pid 1 exits 0.
[[noreturn]] void reportWaitStatusAndExit(int statusFd, int waitStatus);

// The exit code of a failed execve: 126 when the file is there but cannot run, else 127.
inline int execFailureExitCode(int error) {
  return error == EACCES || error == ENOEXEC ? 126 : 127;
}

// A new network namespace has only "lo", and it is down: 127.0.0.1 would not even reach the
// cell's own listeners. (Step 5 of a backend that gives pid 1 a new network namespace.)
void bringUpLoopback();

// Parent side: clones pid 1 into `namespaces` (CLONE_NEW* flags) with a pidfd from the clone
// itself (clone3 CLONE_PIDFD; where a filter hides clone3, clone and pidfd_open, still safe on
// an unreaped child). Returns 0 in the child, like fork; throws std::system_error.
pid_t cloneCellInit(uint64_t namespaces, int* pidfd);

// Parent side: sends 'G' (pid 1 is in the cgroup now).
void sendCgroupJoined(int control, const std::string& cellId);

// Parent side: waits (bounded) for pid 1's setup report. Returns once it is ready; throws the
// init's own error (std::system_error with its errno, or std::runtime_error) otherwise. `pid`
// is our unreaped child: an EOF without a report reaps it to say how it died.
void awaitReady(int control, pid_t pid, const std::string& cellId);

// Parent side: kills pid 1 through its pidfd (its pid namespace with it) and reaps it.
void killAndReap(pid_t pid, int pidfd) noexcept;

// "exited 3", "killed by signal 9".
std::string describeWaitStatus(int status);

// O_PATH|O_DIRECTORY|O_CLOEXEC of `path` inside the root of pid `pid` (/proc/<pid>/root<path>),
// which must be an unreaped child whose workload has not run. Throws std::system_error.
Fd openInsideRoot(pid_t pid, const std::string& path);

}  // namespace cellos::vmm
