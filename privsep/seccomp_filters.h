#pragma once
// The seccomp filters the build compiled (the generated <build>/privsep/seccomp_filters.cpp).
// Only installSeccomp() and the tests that hold the filters to their profiles read this.

#include <linux/filter.h>

#include <span>
#include <string_view>

namespace cellos::privsep {

struct CompiledSeccompFilter {
  std::string_view profile;              // SeccompProfile::name
  std::string_view source;               // describeProfile() of the profile it was compiled from
  std::span<const sock_filter> program;  // what seccomp(SECCOMP_SET_MODE_FILTER) loads
};

// Every filter the build compiled, one per profile listed in privsep/seccomp_generate.cpp.
std::span<const CompiledSeccompFilter> compiledSeccompFilters();

// The compiled filter named `profile`, or nullptr.
const CompiledSeccompFilter* findCompiledSeccompFilter(std::string_view profile);

}  // namespace cellos::privsep
