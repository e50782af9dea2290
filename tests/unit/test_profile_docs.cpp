// docs/security.md states how many syscalls each seccomp profile allows; this keeps the page
// true to the profiles as they are compiled. The profiles are the ones the daemons register
// (privsep/seccomp_profiles.h), so a new profile is checked without being listed here.

#include "privsep/seccomp_profiles.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

namespace {

std::string securityDoc() {
  const char* dir = getenv("CELLOS_SOURCE_DIR");
  std::ifstream in(std::string(dir ? dir : CELLOS_TEST_SOURCE_DIR) + "/docs/security.md");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(ProfileDocs, SecurityPageStatesEachProfilesSyscallCount) {
  std::string doc = securityDoc();
  ASSERT_FALSE(doc.empty());
  auto registered = cellos::privsep::registeredSeccompProfiles();
  ASSERT_FALSE(registered.empty()) << "no daemon registered a seccomp profile";
  for (const auto& entry : registered) {
    const cellos::privsep::SeccompProfile& profile = *entry.profile;
    std::string claim = "`" + std::string(profile.name) + "` (" +
                        std::to_string(cellos::privsep::allowedSyscallCount(profile));
    EXPECT_NE(doc.find(claim), std::string::npos)
        << "docs/security.md should say " << claim << "… (profile registered by " << entry.daemon
        << "/CMakeLists.txt)";
  }
}

}  // namespace
