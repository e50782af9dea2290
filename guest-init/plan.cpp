#include "guest-init/plan.h"

#include <cerrno>
#include <cstdio>

namespace cellos::guest {

bool cmdlineHasWord(std::string_view cmdline, std::string_view word) {
  constexpr std::string_view kSpace = " \t\n";
  size_t at = 0;
  while (at < cmdline.size()) {
    size_t start = cmdline.find_first_not_of(kSpace, at);
    if (start == std::string_view::npos) break;
    size_t end = cmdline.find_first_of(kSpace, start);
    if (end == std::string_view::npos) end = cmdline.size();
    if (cmdline.substr(start, end - start) == word) return true;
    at = end;
  }
  return false;
}

std::optional<std::string> checkWorkingDirectory(std::string_view path, std::string* why) {
  auto refuse = [&](std::string reason) -> std::optional<std::string> {
    if (why != nullptr) *why = std::move(reason);
    return std::nullopt;
  };
  if (path.empty() || path[0] != '/') return refuse("working directory is not absolute");
  if (path == "/") return refuse("working directory is the root");
  if (path.size() > vmchannel::kMaxPathBytes) return refuse("working directory path too long");
  std::string_view rest = path.substr(1);
  if (!vmchannel::isGuestRelativePath(rest)) {
    return refuse("working directory has an empty, \".\" or \"..\" component");
  }
  std::string_view first = rest.substr(0, rest.find('/'));
  for (std::string_view own : {"proc", "dev", "sys", "tmp", "run"}) {
    if (first == own) {
      return refuse("working directory is inside /" + std::string(own) +
                    ", which the guest init mounts itself");
    }
  }
  return std::string(path);
}

bool isSecretFileName(std::string_view name) {
  if (name.empty() || name.size() > 255 || name == "." || name == "..") return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::optional<uint32_t> parseIpv4(std::string_view text) {
  uint32_t value = 0;
  size_t at = 0;
  for (int part = 0; part < 4; ++part) {
    if (part > 0) {
      if (at >= text.size() || text[at] != '.') return std::nullopt;
      ++at;
    }
    size_t start = at;
    uint32_t octet = 0;
    while (at < text.size() && text[at] >= '0' && text[at] <= '9' && at - start < 3) {
      octet = octet * 10 + static_cast<uint32_t>(text[at] - '0');
      ++at;
    }
    // No empty octet, no leading zero (inet_aton would read "010" as octal), none above 255.
    if (at == start || octet > 255 || (at - start > 1 && text[start] == '0')) return std::nullopt;
    value = (value << 8) | octet;
  }
  if (at != text.size()) return std::nullopt;
  return value;
}

uint32_t prefixToNetmask(uint32_t prefixLength) {
  if (prefixLength == 0) return 0;
  if (prefixLength >= 32) return 0xffffffffu;
  return ~((1u << (32 - prefixLength)) - 1);
}

std::optional<NetworkPlan> planNetwork(const vmchannel::GuestConfig& config, std::string* why) {
  auto refuse = [&](std::string reason) -> std::optional<NetworkPlan> {
    if (why != nullptr) *why = std::move(reason);
    return std::nullopt;
  };
  NetworkPlan plan;
  if (config.address.empty()) {
    if (!config.gateway.empty()) return refuse("gateway " + config.gateway + " without an address");
    return plan;
  }
  auto address = parseIpv4(config.address);
  if (!address) return refuse("address " + config.address + " is not an IPv4 dotted quad");
  if (config.prefixLength < 1 || config.prefixLength > 32) {
    return refuse("prefix length " + std::to_string(config.prefixLength) + " out of 1..32");
  }
  plan.configureEth0 = true;
  plan.address = *address;
  plan.netmask = prefixToNetmask(config.prefixLength);
  if (!config.gateway.empty()) {
    auto gateway = parseIpv4(config.gateway);
    if (!gateway) return refuse("gateway " + config.gateway + " is not an IPv4 dotted quad");
    if ((*gateway & plan.netmask) != (plan.address & plan.netmask) || *gateway == plan.address) {
      return refuse("gateway " + config.gateway + " is not another host of " + config.address +
                    "/" + std::to_string(config.prefixLength));
    }
    plan.gateway = *gateway;
  }
  return plan;
}

NofileLimit planNofile(uint64_t nofileMax) {
  return {.soft = nofileMax < 1024 ? nofileMax : 1024, .hard = nofileMax};
}

std::vector<std::string> workloadEnvironment(const vmchannel::GuestConfig& config) {
  std::vector<std::string> env = config.env;
  if (config.secretDelivery == "env") {
    for (const auto& [name, value] : config.secrets) {
      std::string entry;
      entry.reserve(name.size() + 1 + value.size());
      entry.append(name).append("=").append(value);
      env.push_back(std::move(entry));
    }
  }
  return env;
}

int execFailureExitCode(int error) {
  return error == EACCES || error == ENOEXEC ? 126 : 127;
}

std::string tmpfsOptions(uint64_t sizeBytes, unsigned mode) {
  char octal[8];
  snprintf(octal, sizeof(octal), "%04o", mode & 07777);
  return "size=" + std::to_string(sizeBytes) + ",mode=" + octal;
}

uint64_t parseOomKills(std::string_view vmstat) {
  constexpr std::string_view kKey = "oom_kill ";
  size_t at = 0;
  while (at < vmstat.size()) {
    size_t end = vmstat.find('\n', at);
    if (end == std::string_view::npos) end = vmstat.size();
    std::string_view line = vmstat.substr(at, end - at);
    if (line.substr(0, kKey.size()) == kKey) {
      uint64_t count = 0;
      for (char c : line.substr(kKey.size())) {
        if (c < '0' || c > '9') break;
        count = count * 10 + static_cast<uint64_t>(c - '0');
      }
      return count;
    }
    at = end + 1;
  }
  return 0;
}

}  // namespace cellos::guest
