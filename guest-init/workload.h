#pragma once
// Starting the workload: a child of pid 1 in its own session and process group, in the leaf
// cgroup, chrooted into the root image, with its limits, /dev/null on stdin and pipes on
// stdout and stderr. No PATH search: argv[0] is absolute (decodeGuestConfig checks it).

#include <sys/types.h>

#include <string>
#include <vector>

#include "ipc/vm_channel.h"

namespace cellos::guest {

struct Workload {
  pid_t pid = -1;  // also its process group (it calls setsid)
  int stdoutFd = -1;
  int stderrFd = -1;
};

// `env` is the whole environment (workloadEnvironment). SIGCHLD must be blocked in the caller
// (its signalfd reaps); the child unblocks every signal before it execs.
Workload startWorkload(const vmchannel::GuestConfig& config, const std::vector<std::string>& env,
                       const std::string& cgroupProcs);

}  // namespace cellos::guest
