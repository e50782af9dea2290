// The Debian package (issue 9): `cpack -G DEB` builds it from this build's programs, and what
// it lays down — files, modes, owners, maintainer scripts, conffiles — is checked by unpacking
// it (dpkg-deb -x) and by installing it into a scratch root with dpkg itself
// (dpkg --root DIR --force-script-chrootless: the maintainer scripts run with DPKG_ROOT=DIR and
// touch nothing outside it), then purging it and finding nothing left.

#include "tests/integration/command.h"

#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace cellos {
namespace {

using testing_support::buildDir;
using testing_support::readTextFile;
using testing_support::runCommand;
using testing_support::shellQuote;
using testing_support::sourceDir;
namespace fs = std::filesystem;

const char* const kPrograms[] = {"cellos",           "cellos-broker",     "cellos-event-signer",
                                 "cellos-vmm-agent", "cellos-dns-helper", "cellos-event-forwarder"};
const char* const kUnits[] = {"cellos-broker.service",          "cellos-event-signer.service",
                              "cellos-vmm-agent.service",       "cellos-dns-helper.service",
                              "cellos-event-forwarder.service", "cellos.target"};
const char* const kConfigs[] = {"broker.conf", "event-signer.conf", "vmm-agent.conf",
                                "dns-helper.conf", "event-forwarder.conf"};
const char* const kProfiles[] = {"broker",       "event-signer", "vmm-agent",
                                 "vmm-launcher", "dns-spawner",  "dns-child"};

// One package for the whole suite: building it is the slow part.
class Package : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    char pattern[] = "/tmp/cellos-deb-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    work_ = pattern;
    auto cpack = runCommand("cpack -G DEB -B " + shellQuote(work_ + "/out") + " --config " +
                                shellQuote(buildDir() + "/CPackConfig.cmake"),
                            600);
    cpackOutput_ = cpack.output;
    for (const auto& entry : fs::directory_iterator(work_ + "/out")) {
      if (entry.path().extension() == ".deb") deb_ = entry.path().string();
    }
    if (!deb_.empty()) {
      fs::create_directories(work_ + "/x");
      extract_ = runCommand("dpkg-deb -x " + shellQuote(deb_) + " " + shellQuote(work_ + "/x"));
    }
  }
  static void TearDownTestSuite() {
    std::error_code ignored;
    fs::remove_all(work_, ignored);
  }
  void SetUp() override {
    ASSERT_FALSE(deb_.empty()) << "cpack made no .deb:\n" << cpackOutput_;
    ASSERT_EQ(extract_.status, 0) << extract_.output;
  }

  static std::string x(const std::string& path) { return work_ + "/x" + path; }

  static inline std::string work_, deb_, cpackOutput_;
  static inline testing_support::CommandResult extract_;
};

TEST_F(Package, IsNamedAndDescribedForDebian) {
  std::string arch = runCommand("dpkg --print-architecture").output;
  arch.erase(arch.find_last_not_of('\n') + 1);
  EXPECT_EQ(fs::path(deb_).filename().string(), "cellos_0.1.0_" + arch + ".deb");
  auto field = [&](const std::string& name) {
    std::string value = runCommand("dpkg-deb -f " + shellQuote(deb_) + " " + name).output;
    return value.substr(0, value.find_last_not_of('\n') + 1);
  };
  EXPECT_EQ(field("Package"), "cellos");
  EXPECT_EQ(field("Version"), "0.1.0");
  EXPECT_EQ(field("Architecture"), arch);
  std::string depends = field("Depends");
  for (const char* dep : {"systemd", "libcapnp-0.9.2", "libssl3", "libc6"}) {
    EXPECT_NE(depends.find(dep), std::string::npos) << "Depends: " << depends;
  }
  // dpkg-deb itself accepts the archive and its control data.
  auto info = runCommand("dpkg-deb --info " + shellQuote(deb_));
  EXPECT_EQ(info.status, 0) << info.output;
}

TEST_F(Package, LaysDownProgramsUnitsAccountsDirectoriesConfigurationAndDocs) {
  auto expectFile = [](const std::string& path, mode_t mode) {
    struct stat st {};
    ASSERT_EQ(lstat(path.c_str(), &st), 0) << path << " is missing";
    EXPECT_TRUE(S_ISREG(st.st_mode)) << path;
    EXPECT_EQ(st.st_mode & 07777, mode) << path;
    EXPECT_EQ(st.st_uid, 0u) << path;
    EXPECT_EQ(st.st_gid, 0u) << path;
  };
  for (const char* program : kPrograms) expectFile(x("/usr/bin/") + program, 0755);
  for (const char* unit : kUnits) {
    expectFile(x("/lib/systemd/system/") + unit, 0644);
    EXPECT_EQ(readTextFile(x("/lib/systemd/system/") + unit),
              readTextFile(sourceDir() + "/packaging/systemd/" + unit))
        << unit;
  }
  expectFile(x("/usr/lib/sysusers.d/cellos.conf"), 0644);
  expectFile(x("/usr/lib/tmpfiles.d/cellos.conf"), 0644);
  for (const char* conf : kConfigs) expectFile(x("/etc/cellos/") + conf, 0644);
  for (const char* doc : {"README.md", "operations.md", "security.md", "spec.md"}) {
    expectFile(x("/usr/share/doc/cellos/") + doc, 0644);
  }
  // Every committed filter text ships, unchanged.
  size_t profiles = 0;
  for (const auto& entry : fs::directory_iterator(sourceDir() + "/packaging/seccomp")) {
    if (entry.path().extension() != ".pfc") continue;
    ++profiles;
    std::string pfc = x("/usr/share/doc/cellos/seccomp/") + entry.path().filename().string();
    expectFile(pfc, 0644);
    EXPECT_EQ(readTextFile(pfc), readTextFile(entry.path().string()));
  }
  EXPECT_GE(profiles, std::size(kProfiles));
  for (const char* profile : kProfiles) {
    EXPECT_TRUE(fs::exists(x("/usr/share/doc/cellos/seccomp/") + profile + ".pfc")) << profile;
  }
  expectFile(x("/usr/share/doc/cellos/examples/hello.yaml"), 0644);

  // The VM launcher's RootDirectory=: mount points (empty directories, one empty file) and the
  // usrmerge links, nothing else.
  std::string root = x("/usr/lib/cellos/vmm-root");
  for (const char* dir : {"usr", "etc", "proc", "sys", "dev", "tmp", "var/tmp", "run/cellos",
                          "sys/fs/cgroup/pids/cellos"}) {
    struct stat st {};
    ASSERT_EQ(lstat((root + "/" + dir).c_str(), &st), 0) << dir;
    EXPECT_TRUE(S_ISDIR(st.st_mode)) << dir;
    EXPECT_EQ(st.st_mode & 07777, 0755u) << dir;
  }
  size_t files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (entry.is_symlink() || entry.is_directory()) continue;
    ++files;
    EXPECT_TRUE(entry.is_regular_file() && fs::file_size(entry.path()) == 0)
        << entry.path() << " is not an empty mount point";
  }
  EXPECT_EQ(files, 1u);  // sys/fs/cgroup/cgroup.subtree_control
  for (const char* link : {"bin", "lib", "lib64", "sbin"}) {
    EXPECT_EQ(fs::read_symlink(root + "/" + link).string(), std::string("usr/") + link);
  }
}

TEST_F(Package, ContainsNothingElseAndNothingLoose) {
  std::set<std::string> topLevel;
  for (const auto& entry : fs::recursive_directory_iterator(work_ + "/x")) {
    std::string rel = fs::relative(entry.path(), work_ + "/x").string();
    topLevel.insert(rel.substr(0, rel.find('/')));
    struct stat st {};
    ASSERT_EQ(lstat(entry.path().c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 0u) << rel;
    if (S_ISLNK(st.st_mode)) continue;  // a link's own mode means nothing
    EXPECT_EQ(st.st_mode & (S_ISUID | S_ISGID), 0u) << rel << " is setuid/setgid";
    EXPECT_EQ(st.st_mode & S_IWOTH, 0u) << rel << " is world-writable";
  }
  EXPECT_EQ(topLevel, (std::set<std::string>{"etc", "lib", "usr"}));
}

TEST_F(Package, MaintainerScriptsAndConffiles) {
  std::string control = work_ + "/control";
  auto unpack = runCommand("dpkg-deb -e " + shellQuote(deb_) + " " + shellQuote(control));
  ASSERT_EQ(unpack.status, 0) << unpack.output;
  for (const char* script : {"postinst", "prerm", "postrm"}) {
    struct stat st {};
    ASSERT_EQ(stat((control + "/" + script).c_str(), &st), 0) << script;
    EXPECT_EQ(st.st_mode & 0777, 0755u) << script;
    EXPECT_EQ(runCommand("sh -n " + shellQuote(control + "/" + script)).status, 0) << script;
  }
  std::string postinst = readTextFile(control + "/postinst");
  EXPECT_NE(postinst.find("systemd-sysusers"), std::string::npos);
  EXPECT_NE(postinst.find("systemctl daemon-reload"), std::string::npos);
  // The manual check that boots the package in a container at least parses.
  EXPECT_EQ(
      runCommand("bash -n " + shellQuote(sourceDir() + "/packaging/check-in-container")).status, 0);
  std::string conffiles = readTextFile(control + "/conffiles");
  for (const char* conf : kConfigs) {
    EXPECT_NE(conffiles.find(std::string("/etc/cellos/") + conf + "\n"), std::string::npos)
        << conffiles;
  }
}

// The filters are compiled at build time: no daemon generates BPF at start-up, so none links
// libseccomp at all.
TEST_F(Package, DaemonsCarryPrecompiledFiltersNotLibseccomp) {
  for (const char* program : kPrograms) {
    auto dynamic = runCommand("readelf -d " + shellQuote(x("/usr/bin/") + program));
    ASSERT_EQ(dynamic.status, 0) << dynamic.output;
    EXPECT_NE(dynamic.output.find("(NEEDED)"), std::string::npos) << program;
    EXPECT_EQ(dynamic.output.find("libseccomp"), std::string::npos)
        << program << " links libseccomp";
  }
}

// ---------------------------------------------------------------------------------------------
// dpkg itself, into a scratch root.

std::map<std::string, uid_t> accountsIn(const std::string& passwd) {
  std::map<std::string, uid_t> out;
  std::istringstream lines(readTextFile(passwd));
  for (std::string line; std::getline(lines, line);) {
    std::vector<std::string> fields;
    std::istringstream in(line);
    for (std::string f; std::getline(in, f, ':');) fields.push_back(f);
    if (fields.size() >= 3) out[fields[0]] = uid_t(std::stoul(fields[2]));
  }
  return out;
}

TEST_F(Package, InstallsIntoAScratchRootAndPurgesCleanly) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root: dpkg --root writes files owned by root";
  std::string root = work_ + "/root";
  for (const char* dir : {"/var/lib/dpkg/info", "/var/lib/dpkg/updates", "/var/lib/dpkg/triggers",
                          "/etc", "/run", "/usr/lib", "/lib"}) {
    fs::create_directories(root + dir);
  }
  { std::ofstream(root + "/var/lib/dpkg/status"); }
  std::string dpkg = "dpkg --root=" + shellQuote(root) +
                     " --force-script-chrootless --force-depends --log=/dev/null ";

  auto install = runCommand(dpkg + "--install " + shellQuote(deb_));
  ASSERT_EQ(install.status, 0) << install.output;
  auto status = runCommand(dpkg + "--status cellos");
  EXPECT_NE(status.output.find("Status: install ok installed"), std::string::npos) << status.output;

  // postinst made the accounts (sysusers.d) and the directories (tmpfiles.d) in the root only.
  auto accounts = accountsIn(root + "/etc/passwd");
  for (const char* user : {"cellos", "cellos-signer", "cellos-dns"}) {
    EXPECT_TRUE(accounts.count(user)) << user << " missing from the root's /etc/passwd";
  }
  struct Dir {
    const char* path;
    mode_t mode;
    const char* owner;
  };
  for (const Dir& d :
       {Dir{"/run/cellos", 0755, "root"}, Dir{"/run/cellos/vmm", 0700, "root"},
        Dir{"/var/lib/cellos", 0755, "root"}, Dir{"/var/lib/cellos/events", 0750, "cellos"},
        Dir{"/var/lib/cellos/signer", 0700, "cellos-signer"}}) {
    struct stat st {};
    ASSERT_EQ(lstat((root + d.path).c_str(), &st), 0) << d.path;
    EXPECT_TRUE(S_ISDIR(st.st_mode)) << d.path;
    EXPECT_EQ(st.st_mode & 07777, d.mode) << d.path;
    uid_t expected = std::string(d.owner) == "root" ? 0 : accounts[d.owner];
    EXPECT_EQ(st.st_uid, expected) << d.path;
  }
  struct stat st {};
  EXPECT_EQ(stat((root + "/usr/bin/cellos-broker").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);

  // Removing keeps the conffiles; purging removes them and the state and runtime directories.
  auto remove = runCommand(dpkg + "--remove cellos");
  ASSERT_EQ(remove.status, 0) << remove.output;
  EXPECT_FALSE(fs::exists(root + "/usr/bin/cellos-broker"));
  EXPECT_TRUE(fs::exists(root + "/etc/cellos/broker.conf"));
  auto purge = runCommand(dpkg + "--purge cellos");
  ASSERT_EQ(purge.status, 0) << purge.output;
  for (const char* gone : {"/etc/cellos", "/var/lib/cellos", "/run/cellos",
                           "/lib/systemd/system/cellos-broker.service",
                           "/usr/lib/sysusers.d/cellos.conf", "/usr/share/doc/cellos"}) {
    EXPECT_FALSE(fs::exists(root + gone)) << gone << " survived the purge";
  }
  status = runCommand(dpkg + "--status cellos");
  EXPECT_EQ(status.output.find("install ok installed"), std::string::npos) << status.output;
}

}  // namespace
}  // namespace cellos
