#pragma once
// Writes the guest's frames (ipc/vm_channel.h) to the control port. The port is a character
// device whose write blocks while the host has not read what came before: that is the
// backpressure the protocol wants (a workload printing faster than the host reads is slowed, not
// buffered without bound in the guest), so every write is a full-write loop on a blocking fd.

#include <string>
#include <string_view>

#include "ipc/vm_channel.h"

namespace cellos::guest {

class FrameWriter {
 public:
  explicit FrameWriter(int fd) : fd_(fd) {}

  // A whole frame already encoded (encodeFrame, fileFrame, exitFrame). False once a write has
  // failed (the host is gone): every later call is a no-op returning false.
  bool sendEncoded(std::string_view frame);
  bool send(vmchannel::FrameType type, std::string_view payload);

  // Workload output as 'O' / 'E' frames of at most kMaxOutputChunk bytes each.
  bool sendOutput(vmchannel::FrameType type, std::string_view bytes);

  // One 'L' line of the guest init's own diagnostics, cut to kMaxLogBytes.
  bool log(std::string_view line);

  bool failed() const { return failed_; }
  int error() const { return error_; }

 private:
  int fd_;
  bool failed_ = false;
  int error_ = 0;
};

// write(2) until all of `bytes` is written, retrying EINTR (and waiting in poll on EAGAIN, so a
// non-blocking fd works too). False with errno set on any other error.
bool writeFully(int fd, std::string_view bytes);

}  // namespace cellos::guest
