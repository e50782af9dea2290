#pragma once
// The per-cell DNS child: the only process that reads bytes a cell controls.

namespace cellos::dns {

// Fixed fds the spawner hands a child across exec.
inline constexpr int kChildNetnsFd = 3;    // the cell's network namespace
inline constexpr int kChildChannelFd = 4;  // SOCK_SEQPACKET to the spawner

// Runs the child: reads its configuration from the channel, enters the cell's network
// namespace, binds port 53, drops every privilege, installs its seccomp profile, reports
// ready, then serves until the channel closes. Returns the process exit code.
int runChild();

}  // namespace cellos::dns
