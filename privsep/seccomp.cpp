#include "privsep/seccomp.h"

#include <seccomp.h>
#include <sys/ioctl.h>

#include <fstream>
#include <set>
#include <stdexcept>
#include <string>

namespace cellos::privsep {

namespace {
constexpr uint64_t kKjIoctlValues[] = {FIONBIO, FIOCLEX};
}  // namespace

const ArgRule kKjIoctls{"ioctl", 1, kKjIoctlValues};

namespace {

int resolve(const SeccompProfile& profile, std::string_view name) {
  std::string n(name);
  int nr = seccomp_syscall_resolve_name(n.c_str());
  if (nr == __NR_SCMP_ERROR) {
    throw std::runtime_error("seccomp profile " + std::string(profile.name) + ": unknown syscall " +
                             n);
  }
  return nr;
}

}  // namespace

void installSeccomp(const SeccompProfile& profile) {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
  if (ctx == nullptr) throw std::runtime_error("seccomp_init failed");
  struct Release {
    scmp_filter_ctx ctx;
    ~Release() { seccomp_release(ctx); }
  } release{ctx};
  // TSYNC: a filter on only one thread of a multi-threaded process would leave the others free.
  if (int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1); rc < 0) {
    throw std::runtime_error("seccomp_attr_set(TSYNC): " + std::to_string(-rc));
  }
  for (std::string_view name : profile.allow) {
    if (int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, resolve(profile, name), 0); rc < 0) {
      throw std::runtime_error("seccomp_rule_add(" + std::string(name) + ") failed");
    }
  }
  for (const ArgRule& rule : profile.allowIf) {
    int nr = resolve(profile, rule.syscall);
    for (uint64_t value : rule.values) {
      if (seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
                           SCMP_CMP(rule.argument, SCMP_CMP_EQ, value)) < 0) {
        throw std::runtime_error("seccomp_rule_add(" + std::string(rule.syscall) + ") failed");
      }
    }
  }
  for (const ErrnoRule& rule : profile.deny) {
    if (int rc =
            seccomp_rule_add(ctx, SCMP_ACT_ERRNO(rule.error), resolve(profile, rule.syscall), 0);
        rc < 0) {
      throw std::runtime_error("seccomp_rule_add(" + std::string(rule.syscall) + ") failed");
    }
  }
  if (int rc = seccomp_load(ctx); rc < 0) {
    throw std::runtime_error("seccomp_load(" + std::string(profile.name) + "): error " +
                             std::to_string(-rc));
  }
}

size_t allowedSyscallCount(const SeccompProfile& profile) {
  std::set<std::string_view> names(profile.allow.begin(), profile.allow.end());
  for (const ArgRule& rule : profile.allowIf) names.insert(rule.syscall);
  return names.size();
}

int seccompMode(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Seccomp:", 0) == 0) return std::stoi(line.substr(8));
  }
  return -1;
}

}  // namespace cellos::privsep
