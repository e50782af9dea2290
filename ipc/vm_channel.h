#pragma once
// The channel between a VM cell's supervisor on the host and the guest init in its guest
// (guest-init/): one virtio-serial port named kVmChannelPortName, a byte stream both ways, cut
// into frames. Pure code with no dependency beyond the C++ standard library, so the static guest
// init links it as the host does.
//
// Trust: the host trusts nothing the guest sends. The guest init is as untrusted as the workload
// once the workload runs (it shares its kernel), so every guest-to-host frame is length-checked,
// size-capped and parsed by decodeGuestFrame, which is fuzzed (tests/fuzz/fuzz_vm_channel). The
// guest trusts the host (the host owns the guest), but decodes defensively all the same.
//
// Frame: a 4-byte big-endian length L (1..kMaxFrameBytes), then L bytes: one type byte and
// L-1 bytes of payload.
//
//   guest -> host
//     'H' hello    the guest kernel's release (uname -r), 1..kMaxHelloBytes: the guest is up
//     'O' stdout   1..kMaxOutputChunk bytes of the workload's stdout
//     'E' stderr   the same for stderr
//     'D' dir      a directory of the working directory: its relative path (isGuestRelativePath)
//     'F' file     a chunk of a working-directory file: u16 path length, path, u64 offset, data
//                  (0..kMaxFileChunk bytes; a chunk with no data creates an empty file)
//     'X' exit     i32 raw wait status, u64 OOM kills in the guest, u8 flags (bit 0: the guest's
//                  copy of the working directory was cut short); big-endian; exactly 13 bytes
//     'L' log      1..kMaxLogBytes of the guest init's own diagnostics (not the workload's)
//   host -> guest
//     'C' config   the GuestConfig (encodeGuestConfig), once, after hello and the start byte
//     'S' signal   one byte: a signal number (1..64) for every process of the workload
//
// Order the guest keeps: hello; (config received) output frames; then, once the workload has
// exited and its output is drained, the working directory ('D' parents before their children,
// 'F' chunks of one file in offset order); then exit; then it powers off.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cellos::vmchannel {

inline constexpr const char* kVmChannelPortName = "cellos.ctl";

inline constexpr size_t kMaxFrameBytes = 2u << 20;  // whole frame after the length
inline constexpr size_t kMaxHelloBytes = 256;
inline constexpr size_t kMaxOutputChunk = 64u << 10;
inline constexpr size_t kMaxFileChunk = 1u << 20;
inline constexpr size_t kMaxLogBytes = 4096;
inline constexpr size_t kMaxPathBytes = 4096;
inline constexpr size_t kMaxPathDepth = 64;

enum class FrameType : uint8_t {
  kHello = 'H',
  kStdout = 'O',
  kStderr = 'E',
  kDirectory = 'D',
  kFile = 'F',
  kExit = 'X',
  kLog = 'L',
  kConfig = 'C',
  kSignal = 'S',
};

// One whole frame, length prefix included.
std::string encodeFrame(FrameType type, std::string_view payload);

// Cuts a byte stream into frames. feed() takes whatever arrived; next() returns the next whole
// frame (type, payload) or nullopt until more bytes arrive. A length of 0 or above `maxFrame`
// makes the reader failed() for good (the stream cannot be resynchronised): its owner stops
// reading and treats the peer as broken. Buffers at most one frame plus one read.
class FrameReader {
 public:
  explicit FrameReader(size_t maxFrame = kMaxFrameBytes) : maxFrame_(maxFrame) {}
  void feed(const char* data, size_t size);
  std::optional<std::pair<FrameType, std::string>> next();
  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }

 private:
  size_t maxFrame_;
  std::string buffer_;
  size_t consumed_ = 0;
  std::string error_;
};

// A path relative to the working directory as the guest may name it: 1..kMaxPathBytes bytes,
// components separated by single '/', none empty, ".", ".." or containing NUL, at most
// kMaxPathDepth of them, no leading or trailing '/'.
bool isGuestRelativePath(std::string_view path);

// A guest-to-host frame, decoded and checked.
struct GuestFrame {
  FrameType type = FrameType::kLog;
  std::string text;  // hello: release; stdout/stderr/log: the bytes; dir/file: the path
  std::string data;  // file: the chunk
  uint64_t offset = 0;
  int32_t waitStatus = 0;
  uint64_t oomKills = 0;
  bool workingDirectoryTruncated = false;
};

// Decodes one frame the guest sent. Returns nullopt and sets `why` for any frame a well-behaved
// guest init does not send: an unknown or host-to-guest type, a size out of its bounds, a bad
// path, an offset + size that overflows.
std::optional<GuestFrame> decodeGuestFrame(FrameType type, std::string_view payload,
                                           std::string* why);

// Encoders of the guest's frames (used by the guest init and by tests).
std::string fileFrame(std::string_view path, uint64_t offset, std::string_view data);
std::string exitFrame(int32_t waitStatus, uint64_t oomKills, bool workingDirectoryTruncated);

// What the guest init needs to run the cell. Never on the kernel command line, never in a host
// file: it crosses the channel in one 'C' frame once the launcher has sent the start byte.
struct GuestConfig {
  std::vector<std::string> argv;  // argv[0] absolute
  std::vector<std::string> env;   // "NAME=value", the workload's whole environment
  std::string workingDirectory = "/workspace";
  std::string hostname;
  std::string resolvConf;  // content of the workload's /etc/resolv.conf ("" keeps the image's)
  // eth0: the guest's address/prefix and its gateway, IPv4 dotted quads ("" leaves eth0 down).
  std::string address;
  uint32_t prefixLength = 30;
  std::string gateway;
  uint64_t pidsMax = 0;  // 0: no limit beyond the guest's own
  uint64_t nofileMax = 4096;
  uint64_t workingDirectoryMaxBytes = 64u << 20;  // tmpfs size inside the guest
  uint64_t timeoutMs = 0;                         // 0: none (the host enforces it too)
  // "" (none), "file" (read-only files under /run/secrets) or "env" (appended to env).
  std::string secretDelivery;
  std::vector<std::pair<std::string, std::string>> secrets;  // name, value
};

std::string encodeGuestConfig(const GuestConfig& config);
// nullopt (with `why`) for bytes encodeGuestConfig did not write.
std::optional<GuestConfig> decodeGuestConfig(std::string_view bytes, std::string* why);

}  // namespace cellos::vmchannel
