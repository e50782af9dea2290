// The profile model: what both the build-time compiler and the run-time loader need to know
// about a profile, without libseccomp and without the compiled filters.

#include "privsep/seccomp.h"

#include <cerrno>

#include <sys/ioctl.h>

#include <set>
#include <string>

namespace cellos::privsep {

namespace {
constexpr uint64_t kKjIoctlValues[] = {FIONBIO, FIOCLEX};
}  // namespace

const ArgRule kKjIoctls{"ioctl", 1, kKjIoctlValues};

namespace {
constexpr ErrnoRule kMallocFallbackRules[] = {{"mremap", ENOMEM}, {"madvise", ENOSYS}};
}  // namespace
const std::span<const ErrnoRule> kMallocFallbacks = kMallocFallbackRules;

size_t allowedSyscallCount(const SeccompProfile& profile) {
  std::set<std::string_view> names(profile.allow.begin(), profile.allow.end());
  for (const ArgRule& rule : profile.allowIf) names.insert(rule.syscall);
  return names.size();
}

std::string describeProfile(const SeccompProfile& profile) {
  std::string text = "profile " + std::string(profile.name) + "\n";
  for (std::string_view name : profile.allow) text += "allow " + std::string(name) + "\n";
  for (const ArgRule& rule : profile.allowIf) {
    for (uint64_t value : rule.values) {
      text += "allow-if " + std::string(rule.syscall) + " arg" + std::to_string(rule.argument) +
              " == " + std::to_string(value) + "\n";
    }
  }
  for (const ErrnoRule& rule : profile.deny) {
    text += "errno " + std::string(rule.syscall) + " " + std::to_string(rule.error) + "\n";
  }
  return text;
}

}  // namespace cellos::privsep
