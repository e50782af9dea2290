#pragma once
// The guest's copy of the working directory back to the host, once the workload is gone: 'D'
// frames for directories (a parent before its children, in name order), then 'F' chunks for
// regular files (one chunk with no data for an empty file), smallest file first and in name
// order among equal sizes, so a run's frames are reproducible and one huge file cannot crowd
// the others out of the byte budget.
// Symlinks, devices, fifos and sockets are skipped: nothing is followed, so a workload cannot
// make the guest init read outside the working directory. The copy stops, and says so
// (truncated), at a byte or entry budget the host could not take anyway.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "ipc/vm_channel.h"

namespace cellos::guest {

struct ExportLimits {
  uint64_t maxBytes = 256u << 20;  // file data, all files together
  uint64_t maxEntries = 10000;     // directories and files
  size_t chunkBytes = vmchannel::kMaxFileChunk;
};

struct ExportResult {
  bool truncated = false;   // something was left out: a budget ran out or an entry was unreadable
  bool sinkFailed = false;  // the sink refused a frame (the host is gone); nothing more was sent
  uint64_t entries = 0;
  uint64_t bytes = 0;
  std::vector<std::string> problems;  // why entries were left out (at most a few, for 'L' lines)
};

// Receives each encoded frame in order; false stops the walk (sinkFailed).
using FrameSink = std::function<bool(std::string_view frame)>;

// Walks the directory open at `rootFd` (which it does not close).
ExportResult exportWorkingDirectory(int rootFd, const ExportLimits& limits, const FrameSink& sink);

}  // namespace cellos::guest
