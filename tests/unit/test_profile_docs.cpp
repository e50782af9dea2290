// docs/security.md states how many syscalls each seccomp profile allows; this keeps the page
// true to the profiles as they are compiled.

#include "broker/seccomp_profile.h"
#include "dns-helper/seccomp_profile.h"
#include "event-signer/seccomp_profile.h"
#include "vmm-agent/seccomp_profile.h"

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

void expectDocumented(const cellos::privsep::SeccompProfile& profile, const std::string& doc) {
  std::string claim = "`" + std::string(profile.name) + "` (" +
                      std::to_string(cellos::privsep::allowedSyscallCount(profile));
  EXPECT_NE(doc.find(claim), std::string::npos) << "docs/security.md should say " << claim << "…";
}

TEST(ProfileDocs, SecurityPageStatesEachProfilesSyscallCount) {
  std::string doc = securityDoc();
  ASSERT_FALSE(doc.empty());
  expectDocumented(cellos::broker::kBrokerProfile, doc);
  expectDocumented(cellos::signer::kSignerProfile, doc);
  expectDocumented(cellos::vmm::kAgentProfile, doc);
  expectDocumented(cellos::vmm::kLauncherProfile, doc);
  expectDocumented(cellos::dns::kSpawnerProfile, doc);
  expectDocumented(cellos::dns::kDnsChildProfile, doc);
}

}  // namespace
