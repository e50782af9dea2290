// docs/security.md lists the calls the workload filter denies; this keeps the page and the
// filter the same list.

#include "vmm-agent/cell/workload_filter.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cerrno>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

namespace {

std::string workloadFilterSection() {
  const char* dir = getenv("CELLOS_SOURCE_DIR");
  std::ifstream in(std::string(dir ? dir : CELLOS_TEST_SOURCE_DIR) + "/docs/security.md");
  std::stringstream text;
  text << in.rdbuf();
  std::string doc = text.str();
  size_t start = doc.find("### The workload filter");
  if (start == std::string::npos) return "";
  size_t end = doc.find("\n#", start + 1);
  return doc.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

TEST(WorkloadFilterDocs, SecurityPageListsEveryDeniedCallAndTheirCount) {
  std::string section = workloadFilterSection();
  ASSERT_FALSE(section.empty()) << "docs/security.md has no \"### The workload filter\" section";
  auto denials = cellos::vmm::workloadDenials();
  std::string claim = "These " + std::to_string(denials.size()) + " calls are denied";
  EXPECT_NE(section.find(claim), std::string::npos) << "the page should say: " << claim;
  std::set<std::string_view> names;
  for (const auto& d : denials) {
    EXPECT_TRUE(names.insert(d.name).second) << d.name << " listed twice in the filter";
    EXPECT_NE(section.find("`" + std::string(d.name) + "`"), std::string::npos)
        << d.name << " is denied but not documented";
    EXPECT_TRUE(d.error == EPERM || (d.name == "clone3" && d.error == ENOSYS)) << d.name;
  }
}

TEST(WorkloadFilterDocs, SecurityPageNamesTheSocketFamiliesACellMayUse) {
  std::string section = workloadFilterSection();
  ASSERT_FALSE(section.empty());
  auto families = cellos::vmm::workloadSocketFamilies();
  ASSERT_EQ(families.size(), 3u) << "AF_UNIX, AF_INET, AF_INET6 (and AF_NETLINK for routes)";
  for (const auto& f : families) {
    EXPECT_NE(section.find("`" + std::string(f.name) + "`"), std::string::npos)
        << f.name << " is allowed but not documented";
    EXPECT_NE(f.family, AF_VSOCK);
    EXPECT_NE(f.family, AF_PACKET);
  }
  for (const char* named : {"`AF_NETLINK`", "`NETLINK_ROUTE`", "EAFNOSUPPORT", "EPROTONOSUPPORT",
                            "`AF_VSOCK`", "`AF_PACKET`"}) {
    EXPECT_NE(section.find(named), std::string::npos) << named;
  }
}

TEST(WorkloadFilterDocs, CloneNamespaceMaskCoversEveryNamespaceFlag) {
  // CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID,
  // CLONE_NEWNET; CLONE_NEWTIME (0x80) is clone3/unshare-only and overlaps clone's exit signal.
  EXPECT_EQ(cellos::vmm::workloadCloneNamespaceMask(), 0x7e020000ul);
}

}  // namespace
