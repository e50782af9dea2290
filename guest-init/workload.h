#pragma once
// Starting the workload: a child of pid 1 in its own session and process group, in the leaf
// cgroup, chrooted into the root image, with its limits, /dev/null on stdin and pipes on
// stdout and stderr. No PATH search: argv[0] is absolute (decodeGuestConfig checks it).

#include <sys/types.h>

#include <string>
#include <vector>

#include "ipc/vm_channel.h"

namespace cellos::guest {

// The workload runs in a pid and mount namespace of its own under a small init (the *workload
// init*, pid 1 there, `pid` here): the workload sees only its own processes, and when it exits
// the namespace ends with every process it left. The workload init reports the workload's raw
// wait status on `statusFd` (4 bytes, native endian) before it exits; it is its process group's
// leader, and the workload stays in that group.
struct Workload {
  pid_t pid = -1;  // the workload init; also the process group
  int stdoutFd = -1;
  int stderrFd = -1;
  int statusFd = -1;  // read end, O_NONBLOCK
};

// The workload's raw wait status once the workload init `initStatus` is reaped: what it reported
// on statusFd, or its own status when it died first (SIGKILL from the timeout: everything died).
int workloadWaitStatus(int statusFd, int initStatus);

// `env` is the whole environment (workloadEnvironment). SIGCHLD must be blocked in the caller
// (its signalfd reaps); the child unblocks every signal before it execs.
Workload startWorkload(const vmchannel::GuestConfig& config, const std::vector<std::string>& env,
                       const std::string& cgroupProcs);

}  // namespace cellos::guest
