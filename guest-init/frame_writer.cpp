#include "guest-init/frame_writer.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>

namespace cellos::guest {

bool writeFully(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n > 0) {
      bytes.remove_prefix(static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p = {.fd = fd, .events = POLLOUT, .revents = 0};
      if (::poll(&p, 1, -1) < 0 && errno != EINTR) return false;
    } else {
      if (n == 0) errno = EIO;
      return false;
    }
  }
  return true;
}

bool FrameWriter::sendEncoded(std::string_view frame) {
  if (failed_) return false;
  if (!writeFully(fd_, frame)) {
    failed_ = true;
    error_ = errno;
    return false;
  }
  return true;
}

bool FrameWriter::send(vmchannel::FrameType type, std::string_view payload) {
  return sendEncoded(vmchannel::encodeFrame(type, payload));
}

bool FrameWriter::sendOutput(vmchannel::FrameType type, std::string_view bytes) {
  while (!bytes.empty()) {
    std::string_view chunk = bytes.substr(0, vmchannel::kMaxOutputChunk);
    if (!send(type, chunk)) return false;
    bytes.remove_prefix(chunk.size());
  }
  return !failed_;
}

bool FrameWriter::log(std::string_view line) {
  if (line.empty()) line = "(empty log line)";
  return send(vmchannel::FrameType::kLog, line.substr(0, vmchannel::kMaxLogBytes));
}

}  // namespace cellos::guest
