#include "ipc/vm_channel.h"

#include <cstring>
#include <limits>

namespace cellos::vmchannel {

namespace {

void putU16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v & 0xff));
}

void putU32(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((v >> shift) & 0xff));
}

void putU64(std::string& out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((v >> shift) & 0xff));
}

uint64_t getBigEndian(std::string_view bytes, size_t at, size_t width) {
  uint64_t v = 0;
  for (size_t i = 0; i < width; ++i) v = (v << 8) | static_cast<unsigned char>(bytes[at + i]);
  return v;
}

bool isGuestType(uint8_t type) {
  switch (static_cast<FrameType>(type)) {
    case FrameType::kHello:
    case FrameType::kStdout:
    case FrameType::kStderr:
    case FrameType::kDirectory:
    case FrameType::kFile:
    case FrameType::kExit:
    case FrameType::kLog:
      return true;
    default:
      return false;
  }
}

std::optional<GuestFrame> refuse(std::string* why, std::string reason) {
  if (why != nullptr) *why = std::move(reason);
  return std::nullopt;
}

// GuestConfig fields: u8 tag, u32 length, bytes. Numbers are u64 big-endian.
enum Tag : uint8_t {
  kArgv = 1,
  kEnv = 2,
  kWorkingDirectory = 3,
  kHostname = 4,
  kResolvConf = 5,
  kAddress = 6,
  kPrefixLength = 7,
  kGateway = 8,
  kPidsMax = 9,
  kNofileMax = 10,
  kWorkingDirectoryMaxBytes = 11,
  kTimeoutMs = 12,
  kSecretDelivery = 13,
  kSecret = 14,  // u32 name length, name, value
};

void putField(std::string& out, Tag tag, std::string_view value) {
  out.push_back(static_cast<char>(tag));
  putU32(out, static_cast<uint32_t>(value.size()));
  out.append(value);
}

void putNumber(std::string& out, Tag tag, uint64_t value) {
  std::string bytes;
  putU64(bytes, value);
  putField(out, tag, bytes);
}

}  // namespace

std::string encodeFrame(FrameType type, std::string_view payload) {
  std::string out;
  out.reserve(5 + payload.size());
  putU32(out, static_cast<uint32_t>(payload.size() + 1));
  out.push_back(static_cast<char>(type));
  out.append(payload);
  return out;
}

void FrameReader::feed(const char* data, size_t size) {
  if (failed()) return;
  if (consumed_ > 0 && consumed_ == buffer_.size()) {
    buffer_.clear();
    consumed_ = 0;
  } else if (consumed_ > (1u << 16)) {
    buffer_.erase(0, consumed_);
    consumed_ = 0;
  }
  buffer_.append(data, size);
}

std::optional<std::pair<FrameType, std::string>> FrameReader::next() {
  if (failed()) return std::nullopt;
  size_t available = buffer_.size() - consumed_;
  if (available < 4) return std::nullopt;
  uint64_t length = getBigEndian(buffer_, consumed_, 4);
  if (length == 0 || length > maxFrame_) {
    error_ = "frame length " + std::to_string(length) + " out of 1.." + std::to_string(maxFrame_);
    return std::nullopt;
  }
  if (available < 4 + length) return std::nullopt;
  auto type = static_cast<FrameType>(static_cast<uint8_t>(buffer_[consumed_ + 4]));
  std::string payload = buffer_.substr(consumed_ + 5, length - 1);
  consumed_ += 4 + length;
  return std::make_pair(type, std::move(payload));
}

bool isGuestRelativePath(std::string_view path) {
  if (path.empty() || path.size() > kMaxPathBytes) return false;
  size_t depth = 0;
  size_t at = 0;
  while (at <= path.size()) {
    size_t slash = path.find('/', at);
    std::string_view part =
        path.substr(at, slash == std::string_view::npos ? std::string_view::npos : slash - at);
    if (part.empty() || part == "." || part == ".." || part.find('\0') != std::string_view::npos ||
        ++depth > kMaxPathDepth) {
      return false;
    }
    if (slash == std::string_view::npos) break;
    at = slash + 1;
  }
  return true;
}

std::optional<GuestFrame> decodeGuestFrame(FrameType type, std::string_view payload,
                                           std::string* why) {
  auto raw = static_cast<uint8_t>(type);
  if (!isGuestType(raw)) return refuse(why, "frame type " + std::to_string(raw) + " from a guest");
  GuestFrame frame;
  frame.type = type;
  switch (type) {
    case FrameType::kHello:
      if (payload.empty() || payload.size() > kMaxHelloBytes) {
        return refuse(why, "hello of " + std::to_string(payload.size()) + " bytes");
      }
      for (char c : payload) {
        if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) {
          return refuse(why, "hello with a non-printable byte");
        }
      }
      frame.text = payload;
      return frame;
    case FrameType::kStdout:
    case FrameType::kStderr:
      if (payload.empty() || payload.size() > kMaxOutputChunk) {
        return refuse(why, "output chunk of " + std::to_string(payload.size()) + " bytes");
      }
      frame.text = payload;
      return frame;
    case FrameType::kLog:
      if (payload.empty() || payload.size() > kMaxLogBytes) {
        return refuse(why, "log line of " + std::to_string(payload.size()) + " bytes");
      }
      frame.text = payload;
      return frame;
    case FrameType::kDirectory:
      if (!isGuestRelativePath(payload)) return refuse(why, "directory with a bad path");
      frame.text = payload;
      return frame;
    case FrameType::kFile: {
      if (payload.size() < 2) return refuse(why, "file chunk without a path length");
      size_t pathLength = getBigEndian(payload, 0, 2);
      if (payload.size() < 2 + pathLength + 8) return refuse(why, "file chunk cut short");
      std::string_view path = payload.substr(2, pathLength);
      if (!isGuestRelativePath(path)) return refuse(why, "file chunk with a bad path");
      uint64_t offset = getBigEndian(payload, 2 + pathLength, 8);
      std::string_view data = payload.substr(2 + pathLength + 8);
      if (data.size() > kMaxFileChunk) return refuse(why, "file chunk too large");
      if (offset > std::numeric_limits<uint64_t>::max() - data.size() ||
          offset + data.size() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return refuse(why, "file chunk offset out of range");
      }
      frame.text = path;
      frame.offset = offset;
      frame.data = data;
      return frame;
    }
    case FrameType::kExit: {
      if (payload.size() != 13) {
        return refuse(why, "exit frame of " + std::to_string(payload.size()) + " bytes");
      }
      frame.waitStatus = static_cast<int32_t>(static_cast<uint32_t>(getBigEndian(payload, 0, 4)));
      frame.oomKills = getBigEndian(payload, 4, 8);
      uint8_t flags = static_cast<uint8_t>(payload[12]);
      if ((flags & ~1u) != 0) return refuse(why, "exit frame with unknown flags");
      frame.workingDirectoryTruncated = (flags & 1u) != 0;
      return frame;
    }
    default:
      break;
  }
  return refuse(why, "frame type " + std::to_string(raw) + " from a guest");
}

std::string fileFrame(std::string_view path, uint64_t offset, std::string_view data) {
  std::string payload;
  putU16(payload, static_cast<uint16_t>(path.size()));
  payload.append(path);
  putU64(payload, offset);
  payload.append(data);
  return encodeFrame(FrameType::kFile, payload);
}

std::string exitFrame(int32_t waitStatus, uint64_t oomKills, bool workingDirectoryTruncated) {
  std::string payload;
  putU32(payload, static_cast<uint32_t>(waitStatus));
  putU64(payload, oomKills);
  payload.push_back(workingDirectoryTruncated ? 1 : 0);
  return encodeFrame(FrameType::kExit, payload);
}

std::string encodeGuestConfig(const GuestConfig& c) {
  std::string out;
  for (const auto& a : c.argv) putField(out, kArgv, a);
  for (const auto& e : c.env) putField(out, kEnv, e);
  putField(out, kWorkingDirectory, c.workingDirectory);
  putField(out, kHostname, c.hostname);
  putField(out, kResolvConf, c.resolvConf);
  putField(out, kAddress, c.address);
  putNumber(out, kPrefixLength, c.prefixLength);
  putField(out, kGateway, c.gateway);
  putNumber(out, kPidsMax, c.pidsMax);
  putNumber(out, kNofileMax, c.nofileMax);
  putNumber(out, kWorkingDirectoryMaxBytes, c.workingDirectoryMaxBytes);
  putNumber(out, kTimeoutMs, c.timeoutMs);
  putField(out, kSecretDelivery, c.secretDelivery);
  for (const auto& [name, value] : c.secrets) {
    std::string field;
    putU32(field, static_cast<uint32_t>(name.size()));
    field.append(name);
    field.append(value);
    putField(out, kSecret, field);
  }
  return out;
}

std::optional<GuestConfig> decodeGuestConfig(std::string_view bytes, std::string* why) {
  auto fail = [&](std::string reason) -> std::optional<GuestConfig> {
    if (why != nullptr) *why = std::move(reason);
    return std::nullopt;
  };
  GuestConfig c;
  c.workingDirectory.clear();
  size_t at = 0;
  while (at < bytes.size()) {
    if (bytes.size() - at < 5) return fail("config field header cut short");
    uint8_t tag = static_cast<uint8_t>(bytes[at]);
    uint64_t length = getBigEndian(bytes, at + 1, 4);
    at += 5;
    if (length > bytes.size() - at) return fail("config field cut short");
    std::string_view value = bytes.substr(at, length);
    at += length;
    auto number = [&](uint64_t& into) {
      if (value.size() != 8) return false;
      into = getBigEndian(value, 0, 8);
      return true;
    };
    uint64_t n = 0;
    bool ok = true;
    switch (tag) {
      case kArgv:
        c.argv.emplace_back(value);
        break;
      case kEnv:
        c.env.emplace_back(value);
        break;
      case kWorkingDirectory:
        c.workingDirectory = value;
        break;
      case kHostname:
        c.hostname = value;
        break;
      case kResolvConf:
        c.resolvConf = value;
        break;
      case kAddress:
        c.address = value;
        break;
      case kPrefixLength:
        ok = number(n) && n <= 32;
        c.prefixLength = static_cast<uint32_t>(n);
        break;
      case kGateway:
        c.gateway = value;
        break;
      case kPidsMax:
        ok = number(c.pidsMax);
        break;
      case kNofileMax:
        ok = number(c.nofileMax);
        break;
      case kWorkingDirectoryMaxBytes:
        ok = number(c.workingDirectoryMaxBytes);
        break;
      case kTimeoutMs:
        ok = number(c.timeoutMs);
        break;
      case kSecretDelivery:
        c.secretDelivery = value;
        break;
      case kSecret: {
        if (value.size() < 4) return fail("secret field cut short");
        uint64_t nameLength = getBigEndian(value, 0, 4);
        if (nameLength > value.size() - 4) return fail("secret name cut short");
        c.secrets.emplace_back(std::string(value.substr(4, nameLength)),
                               std::string(value.substr(4 + nameLength)));
        break;
      }
      default:
        return fail("unknown config field " + std::to_string(tag));
    }
    if (!ok) return fail("config field " + std::to_string(tag) + " is not a valid number");
  }
  if (c.argv.empty() || c.argv[0].empty() || c.argv[0][0] != '/') {
    return fail("config has no absolute argv[0]");
  }
  if (c.workingDirectory.empty() || c.workingDirectory[0] != '/') {
    return fail("config has no absolute working directory");
  }
  if (c.secretDelivery != "" && c.secretDelivery != "file" && c.secretDelivery != "env") {
    return fail("config has an unknown secret delivery");
  }
  return c;
}

}  // namespace cellos::vmchannel
