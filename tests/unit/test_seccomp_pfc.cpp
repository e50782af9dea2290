// The seccomp filters are compiled at build time, and each one's PFC text is committed in
// packaging/seccomp/<profile>.pfc so a review sees every change to a profile as a diff. These
// tests hold the three together: the profile source, the committed text, and the program the
// daemons load. When one fails after a profile change, run
//   cmake --build <build> --target seccomp-pfc
// and commit packaging/seccomp/ with the change.

#include "privsep/seccomp_compiler.h"
#include "privsep/seccomp_filters.h"
#include "privsep/seccomp_profiles.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

using cellos::privsep::SeccompProfile;

std::string sourceDir() {
  const char* dir = getenv("CELLOS_SOURCE_DIR");
  return dir ? dir : CELLOS_TEST_SOURCE_DIR;
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Every profile a daemon registered (cellos_seccomp_profiles() in its CMakeLists.txt).
std::vector<const SeccompProfile*> registeredProfiles() {
  std::vector<const SeccompProfile*> profiles;
  for (const auto& registered : cellos::privsep::registeredSeccompProfiles()) {
    profiles.push_back(registered.profile);
  }
  return profiles;
}

class CompiledProfile : public testing::TestWithParam<const SeccompProfile*> {};

TEST_P(CompiledProfile, CommittedPfcTextIsWhatTheProfileCompilesTo) {
  const SeccompProfile& profile = *GetParam();
  std::string path = sourceDir() + "/packaging/seccomp/" + std::string(profile.name) + ".pfc";
  ASSERT_TRUE(std::filesystem::exists(path)) << path << " is missing";
  std::string committed = readFile(path);
  std::string compiled =
      cellos::privsep::pfcFileText(profile, cellos::privsep::compileProfile(profile));
  EXPECT_EQ(committed, compiled)
      << path << " disagrees with the profile " << profile.name
      << ": run `cmake --build <build> --target seccomp-pfc` and review the diff";
  // Not a vacuous comparison: the text names the default action and every allowed syscall.
  EXPECT_NE(compiled.find("action KILL_PROCESS"), std::string::npos);
  std::vector<std::string_view> allowed(profile.allow.begin(), profile.allow.end());
  for (const auto* group : profile.groups) {
    allowed.insert(allowed.end(), group->allow.begin(), group->allow.end());
  }
  for (std::string_view name : allowed) {
    EXPECT_NE(compiled.find("# filter for syscall \"" + std::string(name) + "\""),
              std::string::npos)
        << name << " does not appear in the PFC text of " << profile.name;
  }
}

TEST_P(CompiledProfile, LoadedProgramIsWhatTheProfileCompilesTo) {
  const SeccompProfile& profile = *GetParam();
  const auto* filter = cellos::privsep::findCompiledSeccompFilter(profile.name);
  ASSERT_NE(filter, nullptr) << profile.name << " has no compiled filter";
  EXPECT_EQ(filter->source, cellos::privsep::describeProfile(profile));
  auto compiled = cellos::privsep::compileProfile(profile);
  ASSERT_EQ(filter->program.size(), compiled.program.size()) << profile.name;
  EXPECT_EQ(memcmp(filter->program.data(), compiled.program.data(),
                   compiled.program.size() * sizeof(sock_filter)),
            0)
      << "the program daemons load is not what " << profile.name << " compiles to (stale build)";
}

INSTANTIATE_TEST_SUITE_P(Profiles, CompiledProfile, testing::ValuesIn(registeredProfiles()),
                         [](const testing::TestParamInfo<const SeccompProfile*>& info) {
                           std::string name(info.param->name);
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

// One committed file per compiled filter and per profile: none missing, none left over from a
// renamed or removed profile.
TEST(CompiledProfiles, CommittedFilesCompiledFiltersAndProfilesAreTheSameSet) {
  std::set<std::string> profiles, compiled, committed;
  for (const SeccompProfile* p : registeredProfiles()) profiles.insert(std::string(p->name));
  for (const auto& f : cellos::privsep::compiledSeccompFilters()) {
    compiled.insert(std::string(f.profile));
  }
  for (const auto& entry :
       std::filesystem::directory_iterator(sourceDir() + "/packaging/seccomp")) {
    if (entry.path().extension() == ".pfc") committed.insert(entry.path().stem().string());
  }
  EXPECT_EQ(profiles.size(),
            8u);  // broker, signer, forwarder, agent, launcher, vm supervisor, dns x2
  EXPECT_EQ(compiled, profiles);
  EXPECT_EQ(committed, profiles);
}

// A profile change that the committed text does not reflect is caught: the same comparison as
// above, made on a profile with one syscall more, disagrees.
TEST(CompiledProfiles, OneMoreSyscallChangesThePfcText) {
  static constexpr std::string_view kAllow[] = {"read", "write", "exit_group"};
  static constexpr std::string_view kAllowMore[] = {"read", "write", "exit_group", "getpid"};
  const SeccompProfile base{"probe", kAllow};
  const SeccompProfile more{"probe", kAllowMore};
  auto a = cellos::privsep::compileProfile(base);
  auto b = cellos::privsep::compileProfile(more);
  EXPECT_NE(cellos::privsep::pfcFileText(base, a), cellos::privsep::pfcFileText(more, b));
  EXPECT_NE(a.program.size(), b.program.size());
  EXPECT_NE(cellos::privsep::describeProfile(base), cellos::privsep::describeProfile(more));
}

}  // namespace
