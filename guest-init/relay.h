#pragma once
// The guest's half of a running cell: the workload's stdout and stderr go to the host as 'O' /
// 'E' frames, the host's 'S' frames become signals to the workload's process group, and the
// config's timeout is enforced (SIGTERM, SIGKILL 2 s later). Returns once the workload has
// exited and its pipes are drained (EOF, or 500 ms after the exit: a background process that
// kept them open is not waited for), or once the host is gone.

#include <cstdint>

#include "guest-init/frame_writer.h"
#include "guest-init/workload.h"
#include "ipc/vm_channel.h"

namespace cellos::guest {

struct RelayResult {
  bool exited = false;
  int waitStatus = 0;     // raw, from waitpid
  bool hostGone = false;  // the port hung up or refused a write: nobody is there to report to
};

// `signalFd` is a signalfd for SIGCHLD (blocked). `reader` holds whatever the host sent after
// the config.
RelayResult relayWorkload(FrameWriter& writer, int portFd, vmchannel::FrameReader& reader,
                          Workload& workload, int signalFd, uint64_t timeoutMs);

}  // namespace cellos::guest
