#pragma once
// Build-time half of seccomp: a profile compiled with libseccomp. Linked only into the
// generator (privsep/seccomp_generate.cpp) and tests, never into a daemon.

#include "privsep/seccomp.h"

#include <linux/filter.h>

#include <string>
#include <vector>

namespace cellos::privsep {

struct CompiledProfile {
  std::vector<sock_filter> program;  // seccomp_export_bpf
  std::string pfc;                   // seccomp_export_pfc: the reviewed, human-readable form
};

// Compiles `profile` for the native architecture: default action kill-process, every allow,
// allowIf and deny rule. Throws, naming the profile and the syscall, when a name is unknown to
// libseccomp: a typo must stop the build, not silently allow less or more.
CompiledProfile compileProfile(const SeccompProfile& profile);

// The committed form of a profile's PFC text (packaging/seccomp/<name>.pfc): a short header
// saying what it is and how to regenerate it, then seccomp_export_pfc's output.
std::string pfcFileText(const SeccompProfile& profile, const CompiledProfile& compiled);

}  // namespace cellos::privsep
