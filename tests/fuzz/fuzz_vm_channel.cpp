// libFuzzer: the host side of a VM cell's channel (ipc/vm_channel.h), what the VM supervisor
// runs on every byte a guest sends. The guest is hostile: whatever the stream, the reader never
// buffers beyond one frame plus one read, a failed reader stays failed, every decoded frame is
// within its documented bounds (sizes, paths relative with no "..", offsets without overflow),
// and re-encoding a decoded file or exit frame gives the bytes that were read. Also: the
// guest's decoder of the host's configuration never accepts what the encoder would not write.

#include "ipc/vm_channel.h"

#include <cstdint>
#include <cstdlib>
#include <string>

using namespace cellos::vmchannel;

namespace {

void check(bool ok) {
  if (!ok) abort();
}

void checkFrame(FrameType type, const std::string& payload) {
  std::string why;
  std::optional<GuestFrame> f = decodeGuestFrame(type, payload, &why);
  if (!f) {
    check(!why.empty());
    return;
  }
  check(f->type == type);
  switch (type) {
    case FrameType::kHello:
      check(!f->text.empty() && f->text.size() <= kMaxHelloBytes);
      break;
    case FrameType::kStdout:
    case FrameType::kStderr:
      check(!f->text.empty() && f->text.size() <= kMaxOutputChunk);
      break;
    case FrameType::kLog:
      check(!f->text.empty() && f->text.size() <= kMaxLogBytes);
      break;
    case FrameType::kDirectory:
      check(isGuestRelativePath(f->text));
      break;
    case FrameType::kFile:
      check(isGuestRelativePath(f->text) && f->data.size() <= kMaxFileChunk);
      check(f->offset + f->data.size() >= f->offset);
      check(fileFrame(f->text, f->offset, f->data) == encodeFrame(type, payload));
      break;
    case FrameType::kExit:
      check(exitFrame(f->waitStatus, f->oomKills, f->workingDirectoryTruncated) ==
            encodeFrame(type, payload));
      break;
    default:
      abort();  // host-to-guest types are never accepted from a guest
  }
  if (f->type == FrameType::kDirectory || f->type == FrameType::kFile) {
    const std::string& p = f->text;
    check(p.front() != '/' && p.back() != '/' && p.find("//") == std::string::npos);
    check(p != ".." && p.rfind("../", 0) != 0 && p.find("/../") == std::string::npos &&
          (p.size() < 3 || p.compare(p.size() - 3, 3, "/..") != 0));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // The first byte picks how the stream is cut into reads (1..64 bytes each) and the reader's cap.
  size_t step = (data[0] & 63) + 1;
  size_t cap = (data[0] & 64) ? 64 : kMaxFrameBytes;
  std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);

  FrameReader reader(cap);
  for (size_t at = 0; at < bytes.size(); at += step) {
    std::string_view piece = bytes.substr(at, step);
    reader.feed(piece.data(), piece.size());
    while (auto frame = reader.next()) {
      check(frame->second.size() + 1 <= cap);
      checkFrame(frame->first, frame->second);
    }
    if (reader.failed()) {
      check(!reader.error().empty());
      reader.feed("\0\0\0\2Hx", 6);
      check(!reader.next());  // failed for good
      break;
    }
  }

  std::string why;
  std::optional<GuestConfig> config = decodeGuestConfig(bytes, &why);
  if (config) {
    check(!config->argv.empty() && config->argv[0][0] == '/');
    // What decodes re-encodes to an equivalent configuration.
    std::optional<GuestConfig> again = decodeGuestConfig(encodeGuestConfig(*config), &why);
    check(again && again->argv == config->argv && again->env == config->env &&
          again->secrets == config->secrets && again->pidsMax == config->pidsMax);
  } else {
    check(!why.empty());
  }
  return 0;
}
