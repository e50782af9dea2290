// Run-time half of seccomp: load the BPF program the build compiled. Nothing here generates a
// filter; see privsep/seccomp_compiler.cpp for the build-time half.

#include "privsep/seccomp.h"

#include "privsep/seccomp_filters.h"

#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>

namespace cellos::privsep {

namespace {
// The registrations made so far, newest first. Constant-initialized, so it is already empty when
// the first registration's constructor runs, whatever order the files' static objects are
// constructed in.
constinit const SeccompFilterRegistration* registrations = nullptr;
}  // namespace

SeccompFilterRegistration::SeccompFilterRegistration(std::span<const CompiledSeccompFilter> filters)
    : filters_(filters), next_(registrations) {
  registrations = this;
}

std::vector<CompiledSeccompFilter> compiledSeccompFilters() {
  std::vector<CompiledSeccompFilter> all;
  for (const SeccompFilterRegistration* r = registrations; r != nullptr; r = r->next_) {
    all.insert(all.end(), r->filters_.begin(), r->filters_.end());
  }
  return all;
}

const CompiledSeccompFilter* findCompiledSeccompFilter(std::string_view profile) {
  for (const SeccompFilterRegistration* r = registrations; r != nullptr; r = r->next_) {
    for (const CompiledSeccompFilter& filter : r->filters_) {
      if (filter.profile == profile) return &filter;
    }
  }
  return nullptr;
}

void installSeccomp(const SeccompProfile& profile) {
  std::string name(profile.name);
  const CompiledSeccompFilter* filter = findCompiledSeccompFilter(profile.name);
  if (filter == nullptr) {
    throw std::runtime_error("seccomp profile " + name +
                             " was not compiled at build time for this program (register it "
                             "with cellos_seccomp_profiles() in its daemon's CMakeLists.txt)");
  }
  if (filter->source != describeProfile(profile)) {
    throw std::runtime_error("seccomp profile " + name +
                             " differs from the filter compiled at build time; rebuild");
  }
  // As libseccomp's seccomp_load did (SCMP_FLTATR_CTL_NNP): a filter may only be installed by a
  // process that cannot regain privilege through exec (or holds CAP_SYS_ADMIN).
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
    throw std::runtime_error(std::string("prctl(PR_SET_NO_NEW_PRIVS): ") + strerror(errno));
  }
  sock_fprog program{static_cast<unsigned short>(filter->program.size()),
                     const_cast<sock_filter*>(filter->program.data())};
  // TSYNC: a filter on only one thread of a multi-threaded process would leave the others free.
  // The kernel then either filters every thread or none, returning the id of a thread it could
  // not synchronize (one that already has an unrelated filter).
  long rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &program);
  if (rc < 0) {
    throw std::runtime_error("seccomp(SECCOMP_SET_MODE_FILTER, " + name + "): " + strerror(errno));
  }
  if (rc > 0) {
    throw std::runtime_error("seccomp(SECCOMP_SET_MODE_FILTER, " + name + "): thread " +
                             std::to_string(rc) + " could not be synchronized");
  }
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
