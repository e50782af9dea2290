// Each daemon registers its own seccomp profiles (cellos_seccomp_profiles() in its
// CMakeLists.txt), and a program carries the compiled filters of the daemons whose filters
// library it links, no others (cmake/CellosSeccomp.cmake). This test links only the broker's;
// it also reads every daemon's program, as built, for the filters it holds.

#include "privsep/seccomp_filters.h"
#include "privsep/seccomp_profiles.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>

namespace {

using cellos::privsep::RegisteredSeccompProfile;

std::string binDir() {
  const char* dir = getenv("CELLOS_BUILD_DIR");
  return std::string(dir ? dir : CELLOS_TEST_BUILD_DIR) + "/bin";
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

bool isBrokers(const RegisteredSeccompProfile& entry) {
  return entry.daemon == "broker";
}

TEST(SeccompRegistration, ThisProgramCarriesOnlyTheFiltersItLinks) {
  std::set<std::string> carried;
  for (const auto& filter : cellos::privsep::compiledSeccompFilters()) {
    carried.insert(std::string(filter.profile));
  }
  EXPECT_EQ(carried, std::set<std::string>{"broker"});
  EXPECT_NE(cellos::privsep::findCompiledSeccompFilter("broker"), nullptr);
  EXPECT_EQ(cellos::privsep::findCompiledSeccompFilter("vmm-launcher"), nullptr);
  size_t others = 0;
  for (const auto& entry : cellos::privsep::registeredSeccompProfiles()) {
    if (isBrokers(entry)) continue;
    ++others;
    EXPECT_EQ(cellos::privsep::findCompiledSeccompFilter(entry.name), nullptr) << entry.name;
  }
  EXPECT_GE(others, 6u);  // the other daemons' profiles are registered, just not linked here
}

// installSeccomp() refuses, loading nothing, a profile whose filters this program lacks.
TEST(SeccompRegistration, InstallRefusesAProfileThisProgramDoesNotCarry) {
  for (const auto& entry : cellos::privsep::registeredSeccompProfiles()) {
    if (isBrokers(entry)) continue;
    // Only when absent: a program that did carry it would install it and go on filtered.
    ASSERT_EQ(cellos::privsep::findCompiledSeccompFilter(entry.name), nullptr) << entry.name;
    try {
      cellos::privsep::installSeccomp(*entry.profile);
      ADD_FAILURE() << entry.name << " was installed";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("was not compiled at build time for this program"),
                std::string::npos)
          << e.what();
    }
  }
  EXPECT_EQ(cellos::privsep::seccompMode(getpid()), 0);
}

// The programs as built: each holds the compiled filter (its canonical source text) of every
// profile its daemon registered, and not a trace of any other daemon's.
TEST(SeccompRegistration, EachDaemonsProgramHoldsOnlyItsOwnFilters) {
  auto registered = cellos::privsep::registeredSeccompProfiles();
  std::set<std::string_view> programs;
  for (const auto& entry : registered) programs.insert(entry.program);
  EXPECT_EQ(programs.size(), 5u);
  for (std::string_view program : programs) {
    std::string path = binDir() + "/" + std::string(program);
    std::string binary = readFile(path);
    ASSERT_GT(binary.size(), 0u) << path << " is missing";
    for (const auto& entry : registered) {
      if (entry.program == program) {
        EXPECT_NE(binary.find(cellos::privsep::describeProfile(*entry.profile)), std::string::npos)
            << path << " lacks the filter of its own profile " << entry.name;
      } else {
        EXPECT_EQ(binary.find("profile " + std::string(entry.name) + "\n"), std::string::npos)
            << path << " holds the filter of " << entry.name << " (" << entry.program << "'s)";
      }
    }
  }
}

// The kj event loop's calls are reviewed once, in privsep::kKjEventLoop: every profile of a
// daemon serving through a kj loop takes the group, and no profile that takes it lists one of
// its calls again (a second copy of the reason, free to drift).
TEST(SeccompGroups, KjEventLoopCallsAreListedOnlyInTheirGroup) {
  std::set<std::string> takers;
  for (const auto& entry : cellos::privsep::registeredSeccompProfiles()) {
    const cellos::privsep::SeccompProfile& profile = *entry.profile;
    for (const cellos::privsep::SeccompGroup* group : profile.groups) {
      if (group == &cellos::privsep::kKjEventLoop) takers.insert(std::string(entry.name));
      std::set<std::string_view> own(profile.allow.begin(), profile.allow.end());
      for (const auto& rule : profile.allowIf) own.insert(rule.syscall);
      for (std::string_view call : group->allow) {
        EXPECT_FALSE(own.contains(call))
            << entry.name << " lists " << call << ", already in " << group->name;
      }
      for (const auto& rule : group->allowIf) {
        EXPECT_FALSE(own.contains(rule.syscall))
            << entry.name << " lists " << rule.syscall << ", already in " << group->name;
      }
    }
  }
  EXPECT_EQ(takers, (std::set<std::string>{"broker", "event-signer", "vmm-agent", "dns-spawner"}));
}

}  // namespace
