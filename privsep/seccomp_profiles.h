#pragma once
// The seccomp profiles the daemons registered with cellos_seccomp_profiles() in their
// CMakeLists.txt (cmake/CellosSeccomp.cmake), as the table the build generates from those calls
// (<build>/seccomp/seccomp_profiles.cpp, library cellos-seccomp-profiles). The generator compiles
// exactly these, and the tests that hold every profile to its committed PFC text and its
// documented count enumerate them, so a new profile is compiled, reviewed and checked by
// registering it. Linked into the generator and tests, never into a daemon.

#include "privsep/seccomp.h"

#include <span>
#include <string_view>

namespace cellos::privsep {

struct RegisteredSeccompProfile {
  std::string_view daemon;   // the registering folder: "broker", "dns-helper", ...
  std::string_view program;  // the executable that installs it (and alone links its filter)
  std::string_view name;     // the name it was registered under: profile->name must match
  const SeccompProfile* profile;
};

// Every registration, in the order the daemons' folders were processed.
std::span<const RegisteredSeccompProfile> registeredSeccompProfiles();

}  // namespace cellos::privsep
