#pragma once
// The seccomp filters the build compiled, as the program that links them carries them. Each
// daemon's filters are generated into <build>/seccomp/<daemon>_seccomp_filters.cpp (the object
// library cellos-<daemon>-seccomp-filters, linked into that daemon's program only:
// cmake/CellosSeccomp.cmake), which registers them with a SeccompFilterRegistration. Only
// installSeccomp() and the tests that hold the filters to their profiles read this.

#include <linux/filter.h>

#include <span>
#include <string_view>
#include <vector>

namespace cellos::privsep {

struct CompiledSeccompFilter {
  std::string_view profile;              // SeccompProfile::name
  std::string_view source;               // describeProfile() of the profile it was compiled from
  std::span<const sock_filter> program;  // what seccomp(SECCOMP_SET_MODE_FILTER) loads
};

// Makes one daemon's compiled filters known to installSeccomp(). Each generated filters file
// defines one as a static object, so its constructor runs before main(); a program holds the
// filters of the filters libraries linked into it and no others. `filters` must outlive the
// program (the generated arrays are static).
class SeccompFilterRegistration {
 public:
  explicit SeccompFilterRegistration(std::span<const CompiledSeccompFilter> filters);
  SeccompFilterRegistration(const SeccompFilterRegistration&) = delete;
  SeccompFilterRegistration& operator=(const SeccompFilterRegistration&) = delete;

 private:
  friend const CompiledSeccompFilter* findCompiledSeccompFilter(std::string_view profile);
  friend std::vector<CompiledSeccompFilter> compiledSeccompFilters();

  std::span<const CompiledSeccompFilter> filters_;
  const SeccompFilterRegistration* next_;
};

// Every filter this program carries (its daemon's; in tests, those of every daemon whose filters
// library the test links), in no particular order.
std::vector<CompiledSeccompFilter> compiledSeccompFilters();

// The compiled filter named `profile` that this program carries, or nullptr.
const CompiledSeccompFilter* findCompiledSeccompFilter(std::string_view profile);

}  // namespace cellos::privsep
