// The systemd units in packaging/systemd, held to issue 9's acceptance with systemd's own tools:
// `systemd-analyze security --offline=true` scores each unit at or below its threshold, and
// `systemd-analyze verify` accepts every unit with no warning, in a root where the package's
// files are installed (so ExecStart= names real programs). Plus the consistency a unit file
// cannot check itself: the units, the shipped configuration and the daemons agree.

#include "broker/seccomp_profile.h"
#include "dns-helper/seccomp_profile.h"
#include "event-forwarder/seccomp_profile.h"
#include "event-signer/seccomp_profile.h"
#include "tests/integration/command.h"
#include "vmm-agent/cell/cgroup.h"
#include "vmm-agent/seccomp_profile.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
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

std::string unitPath(const std::string& unit) {
  return sourceDir() + "/packaging/systemd/" + unit;
}

// The exposure each unit may have at most (docs/operations.md explains the VM launcher's).
struct Threshold {
  std::string unit;
  double maxExposure;
};

const Threshold kThresholds[] = {
    {"cellos-event-signer.service", 1.0},    {"cellos-broker.service", 1.5},
    {"cellos-dns-helper.service", 2.0},      {"cellos-vmm-agent.service", 3.1},
    {"cellos-event-forwarder.service", 2.0},
};

void PrintTo(const Threshold& t, std::ostream* os) {
  *os << t.unit;
}

// "→ Overall exposure level for cellos-broker.service: 0.4 SAFE 😀" -> 0.4; NAN when absent.
double overallExposure(const std::string& output, const std::string& unit) {
  std::regex line("Overall exposure level for " +
                  std::regex_replace(unit, std::regex("\\."), "\\.") + ": ([0-9]+\\.[0-9])");
  std::smatch m;
  if (!std::regex_search(output, m, line)) return NAN;
  return std::stod(m[1]);
}

class UnitSecurity : public testing::TestWithParam<Threshold> {};

TEST_P(UnitSecurity, ExposureIsWithinItsThreshold) {
  const Threshold& t = GetParam();
  std::string path = unitPath(t.unit);
  ASSERT_TRUE(std::filesystem::exists(path)) << path;
  auto analysis =
      runCommand("systemd-analyze security --no-pager --offline=true " + shellQuote(path));
  ASSERT_EQ(analysis.status, 0) << analysis.output;
  double exposure = overallExposure(analysis.output, t.unit);
  ASSERT_FALSE(std::isnan(exposure)) << "no overall exposure in:\n" << analysis.output;
  std::cout << "[ exposure ] " << t.unit << ": " << exposure << " (threshold " << t.maxExposure
            << ")\n";
  RecordProperty("exposure", std::to_string(exposure));
  EXPECT_LE(exposure, t.maxExposure) << analysis.output;

  // The same verdict from systemd itself: --threshold (0-100 in systemd 252) passes at the
  // limit, and fails just below the measured exposure, so the flag is really being applied.
  int limit = int(std::lround(t.maxExposure * 10));
  auto atLimit = runCommand("systemd-analyze security --no-pager --offline=true --threshold=" +
                            std::to_string(limit) + " " + shellQuote(path));
  EXPECT_EQ(atLimit.status, 0) << atLimit.output;
  int below = int(std::lround(exposure * 10)) - 1;
  if (below >= 0) {
    auto belowMeasured = runCommand(
        "systemd-analyze security --no-pager --offline=true --threshold=" + std::to_string(below) +
        " " + shellQuote(path));
    EXPECT_NE(belowMeasured.status, 0) << "--threshold=" << below << " should fail";
  }
}

INSTANTIATE_TEST_SUITE_P(Units, UnitSecurity, testing::ValuesIn(kThresholds),
                         [](const testing::TestParamInfo<Threshold>& info) {
                           std::string name = info.param.unit.substr(0, info.param.unit.find('.'));
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

// ---------------------------------------------------------------------------------------------
// systemd-analyze verify, in a root that has the installed package (cmake --install with
// DESTDIR: the same files the .deb carries) and the host's own units for the targets ours
// refer to (sysinit.target, multi-user.target, ...).

struct ScratchRoot {
  std::string path;
  ScratchRoot() {
    char pattern[] = "/tmp/cellos-units-XXXXXX";
    if (mkdtemp(pattern) != nullptr) path = pattern;
  }
  ~ScratchRoot() {
    std::error_code ignored;
    if (!path.empty()) std::filesystem::remove_all(path, ignored);
  }
};

TEST(UnitVerify, EveryUnitVerifiesWithoutWarnings) {
  ScratchRoot root;
  ASSERT_FALSE(root.path.empty());
  auto install = runCommand("DESTDIR=" + shellQuote(root.path) + " cmake --install " +
                            shellQuote(buildDir()) + " --prefix /usr");
  ASSERT_EQ(install.status, 0) << install.output;
  std::string units = root.path + "/lib/systemd/system";
  ASSERT_TRUE(std::filesystem::exists(units + "/cellos-broker.service"));
  // The host's units (never overwriting ours) and a shell for the agent's ExecStartPre=.
  auto host = runCommand("cp -rn /lib/systemd/system/. " + shellQuote(units) + "/ && mkdir -p " +
                         shellQuote(root.path + "/bin") + " && cp /bin/dash " +
                         shellQuote(root.path + "/bin/sh"));
  ASSERT_EQ(host.status, 0) << host.output;

  std::string all;
  for (const Threshold& t : kThresholds) all += " " + t.unit;
  all += " cellos.target";
  auto verify = runCommand("cd / && systemd-analyze verify --root=" + shellQuote(root.path) + all);
  EXPECT_EQ(verify.status, 0) << verify.output;
  // verify only warns about unknown keys and bad values; for a shipped unit a warning is a bug.
  EXPECT_EQ(verify.output, "");

  // The control: a unit whose program is missing fails verify in the same root.
  std::string broken = units + "/cellos-broken.service";
  {
    std::ofstream out(broken);
    out << "[Service]\nExecStart=/usr/bin/cellos-no-such-daemon\n";
  }
  auto bad = runCommand("cd / && systemd-analyze verify --root=" + shellQuote(root.path) +
                        " cellos-broken.service");
  EXPECT_NE(bad.status, 0) << bad.output;
}

// ---------------------------------------------------------------------------------------------
// What each unit must say (issue 9) and what the daemons need from it.

std::multimap<std::string, std::string> directives(const std::string& unit) {
  std::multimap<std::string, std::string> out;
  std::istringstream lines(readTextFile(unitPath(unit)));
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#' || line[0] == '[') continue;
    auto eq = line.find('=');
    if (eq != std::string::npos) out.emplace(line.substr(0, eq), line.substr(eq + 1));
  }
  return out;
}

std::string single(const std::multimap<std::string, std::string>& d, const std::string& key) {
  auto range = d.equal_range(key);
  std::string value;
  for (auto it = range.first; it != range.second; ++it) value = it->second;
  return value;
}

class UnitDirectives : public testing::TestWithParam<Threshold> {};

TEST_P(UnitDirectives, CarryTheRequiredSandboxing) {
  auto d = directives(GetParam().unit);
  for (const char* key : {"NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices",
                          "LockPersonality", "RestrictRealtime", "RestrictSUIDSGID"}) {
    EXPECT_EQ(single(d, key), "yes") << GetParam().unit << " " << key;
  }
  EXPECT_EQ(single(d, "ProtectSystem"), "strict");
  EXPECT_EQ(single(d, "SystemCallArchitectures"), "native");
  EXPECT_EQ(single(d, "Type"), "exec");
  for (const char* key : {"CapabilityBoundingSet", "RestrictAddressFamilies", "RestrictNamespaces",
                          "SystemCallFilter", "UMask", "IPAddressDeny"}) {
    EXPECT_TRUE(d.count(key)) << GetParam().unit << " lacks " << key << "=";
  }
  // Every daemon installs its own filter with seccomp(2), which is in no systemd syscall group:
  // without it in the allow list, the daemon would fail at start-up with EPERM.
  auto filters = d.equal_range("SystemCallFilter");
  bool allowsSeccomp = false;
  for (auto it = filters.first; it != filters.second; ++it) {
    if (it->second[0] != '~' && it->second.find("seccomp") != std::string::npos) {
      allowsSeccomp = true;
    }
  }
  EXPECT_TRUE(allowsSeccomp) << GetParam().unit;
}

INSTANTIATE_TEST_SUITE_P(Units, UnitDirectives, testing::ValuesIn(kThresholds),
                         [](const testing::TestParamInfo<Threshold>& info) {
                           std::string name = info.param.unit.substr(0, info.param.unit.find('.'));
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

// The VM launcher's filters and namespaces are inherited by every cell, so its unit must leave
// what a cell is made of (found by running cells under it in a booted container: with
// ProtectHostname=, a cell's sethostname(2) in its own UTS namespace fails with EPERM).
TEST(UnitDirectivesOfTheVmLauncher, LeaveCellsWhatTheyAreMadeOf) {
  auto d = directives("cellos-vmm-agent.service");
  EXPECT_NE(single(d, "ProtectHostname"), "yes") << "cells set their hostname";
  EXPECT_NE(single(d, "MemoryDenyWriteExecute"), "yes") << "workloads with a JIT need W+X";
  std::string namespaces = single(d, "RestrictNamespaces");
  for (const char* ns : {"mnt", "pid", "net", "uts", "ipc", "cgroup"}) {
    EXPECT_NE(namespaces.find(ns), std::string::npos) << ns;
  }
  // Cells are built from the launcher's own root: the host's /usr and /etc, read-only.
  if (d.count("RootDirectory")) {
    std::string binds;
    auto bindRange = d.equal_range("BindReadOnlyPaths");
    for (auto it = bindRange.first; it != bindRange.second; ++it) binds += " " + it->second + " ";
    EXPECT_NE(binds.find(" /usr "), std::string::npos) << binds;
    EXPECT_NE(binds.find(" /etc "), std::string::npos) << binds;
  }
  std::string families = single(d, "RestrictAddressFamilies");
  for (const char* family : {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}) {
    EXPECT_NE(families.find(family), std::string::npos) << family;
  }
  // mount(2) and pivot_root for building the cell, sethostname for the cell's own hostname.
  std::string filters;
  auto range = d.equal_range("SystemCallFilter");
  for (auto it = range.first; it != range.second; ++it) filters += " " + it->second + " ";
  EXPECT_NE(filters.find(" @mount "), std::string::npos) << filters;
  EXPECT_NE(filters.find(" sethostname "), std::string::npos) << filters;
}

// The VM launcher's unit keeps /sys/fs/cgroup read-only but for the cellos subtrees; the
// subtrees it opens must be the ones the agent really writes on this host (found in a booted
// container: the agent had started to use the cpu controller, and cell creation failed with
// EROFS). Also that ExecStartPre= creates each of them, since a missing path cannot be opened.
TEST(UnitDirectivesOfTheVmLauncher, OpenEveryCgroupSubtreeTheAgentWrites) {
  auto d = directives("cellos-vmm-agent.service");
  std::vector<std::string> writable;
  // With RootDirectory=, host paths come in by BindPaths=; without, ReadWritePaths= opens them.
  auto range = d.equal_range(d.count("RootDirectory") ? "BindPaths" : "ReadWritePaths");
  for (auto it = range.first; it != range.second; ++it) {
    std::istringstream items(it->second);
    for (std::string item; items >> item;) {
      if (item[0] == '-') item = item.substr(1);
      std::error_code ec;
      auto resolved = std::filesystem::weakly_canonical(item, ec);
      writable.push_back(ec ? item : resolved.string());
    }
  }
  std::string prepare = single(d, "ExecStartPre");
  std::vector<std::string> leaves = vmm::cellCgroupPaths("unit-probe");
  ASSERT_FALSE(leaves.empty());
  for (const std::string& leaf : leaves) {
    std::string parent = std::filesystem::path(leaf).parent_path().string();  // .../cellos
    EXPECT_NE(std::find(writable.begin(), writable.end(), parent), writable.end())
        << parent << " (where cells' cgroups go on this host) is not bound writable";
    // The hierarchy's directory name under /sys/fs/cgroup (v1: "pids", "cpu,cpuacct", ...).
    std::string hierarchy = std::filesystem::path(parent).parent_path().filename().string();
    if (hierarchy == "cgroup") continue;  // v2: /sys/fs/cgroup/cellos itself
    bool created = false;
    std::istringstream names(hierarchy);
    for (std::string name; std::getline(names, name, ',');) {
      created = created || prepare.find(" " + name + " ") != std::string::npos ||
                prepare.find(" " + name + ";") != std::string::npos;
    }
    EXPECT_TRUE(created) << "ExecStartPre= does not create " << parent;
  }
}

// ExecStartPre= fails the unit when any subtree cannot be made, naming it, not only when the
// last one cannot (a loop's status is its last command's: found in a booted container, where
// the unit started "active" with no memory subtree and every cell then failed). Run against a
// scratch copy of the hierarchy names, once whole and once with memory/ unusable.
TEST(UnitDirectivesOfTheVmLauncher, ExecStartPreFailsOnAnySubtreeItCannotMake) {
  std::string prepare = single(directives("cellos-vmm-agent.service"), "ExecStartPre");
  ASSERT_EQ(prepare.rfind("+", 0), 0u) << prepare;
  prepare = prepare.substr(1);
  for (size_t at; (at = prepare.find("$$")) != std::string::npos;) prepare.replace(at, 2, "$");
  char dir[] = "/tmp/cellos-unit-cgroup.XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string root = dir;
  for (size_t at; (at = prepare.find("/sys/fs/cgroup")) != std::string::npos;) {
    prepare.replace(at, strlen("/sys/fs/cgroup"), root);
  }
  for (const char* c : {"pids", "memory", "cpu", "cpuacct"}) {
    std::filesystem::create_directory(root + "/" + c);
  }
  auto whole = runCommand(prepare);
  EXPECT_EQ(whole.status, 0) << prepare << "\n" << whole.output;
  for (const char* c : {"pids", "memory", "cpu", "cpuacct"}) {
    EXPECT_TRUE(std::filesystem::is_directory(root + "/" + c + "/cellos")) << c;
  }
  // memory/ is a file now: its subtree cannot be made, and later ones still can.
  std::filesystem::remove_all(root + "/memory");
  { std::ofstream(root + "/memory") << "not a hierarchy"; }
  auto broken = runCommand(prepare);
  EXPECT_NE(broken.status, 0) << broken.output;
  EXPECT_NE(broken.output.find(root + "/memory/cellos"), std::string::npos) << broken.output;
  std::filesystem::remove_all(root);
}

std::set<std::string> words(const std::string& text) {
  std::set<std::string> out;
  std::istringstream in(text);
  for (std::string w; in >> w;) out.insert(w);
  return out;
}

// The daemons that stay root keep a fixed capability set (vmm-agent/main.cpp,
// dns-helper/main.cpp); their units' bounding sets must be exactly those, or the daemon either
// fails to start (too few) or the unit grants what nobody uses (too many).
TEST(UnitCapabilities, RootDaemonsGetExactlyTheirOwnSets) {
  auto agentHelp = runCommand(shellQuote(buildDir() + "/bin/cellos-vmm-agent") + " --help");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(
      agentHelp.output, m, std::regex("Keeps exactly these capabilities:\\s+([A-Z_ \\n]+)\\.")))
      << agentHelp.output;
  std::set<std::string> agentCaps;
  for (const std::string& cap : words(m[1])) agentCaps.insert("CAP_" + cap);
  EXPECT_EQ(words(single(directives("cellos-vmm-agent.service"), "CapabilityBoundingSet")),
            agentCaps);

  std::string spawner = readTextFile(sourceDir() + "/dns-helper/main.cpp");
  ASSERT_TRUE(
      std::regex_search(spawner, m, std::regex("for \\(const char\\* name : \\{([^}]*)\\}")))
      << "dns-helper/main.cpp no longer lists its capabilities as this test expects";
  std::set<std::string> spawnerCaps;
  std::string list = m[1];
  const std::regex quoted("\"([A-Z_]+)\"");
  for (std::sregex_iterator it(list.begin(), list.end(), quoted), end; it != end; ++it) {
    spawnerCaps.insert("CAP_" + (*it)[1].str());
  }
  EXPECT_EQ(spawnerCaps.size(), 5u);
  EXPECT_EQ(words(single(directives("cellos-dns-helper.service"), "CapabilityBoundingSet")),
            spawnerCaps);

  // The unprivileged two get none at all.
  EXPECT_EQ(single(directives("cellos-broker.service"), "CapabilityBoundingSet"), "");
  EXPECT_EQ(single(directives("cellos-event-signer.service"), "CapabilityBoundingSet"), "");
}

// ---------------------------------------------------------------------------------------------
// systemd's SystemCallFilter= is an outer bound: it answers EPERM for what it does not list,
// whatever the daemon's own (kill-process) profile allows. So every syscall a profile allows
// must also pass the unit's filter, or the daemon, a DNS child or a cell fails under the unit
// only (found in a booted container: a cell's sethostname was refused).

// The syscalls a systemd filter item names ("@group" expanded recursively, by systemd itself).
std::set<std::string> expandFilterItem(const std::string& item,
                                       std::map<std::string, std::set<std::string>>& memo) {
  if (item.empty() || item[0] != '@') return {item};
  if (auto it = memo.find(item); it != memo.end()) return it->second;
  auto listing =
      runCommand("systemd-analyze syscall-filter --no-pager " + shellQuote(item) + " 2>/dev/null");
  std::set<std::string> names;
  std::istringstream lines(listing.output);
  bool first = true;
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::string word;
    if (!(words >> word) || word[0] == '#') continue;
    if (first) {  // the group's own name heads its listing
      first = false;
      continue;
    }
    for (const std::string& name : expandFilterItem(word, memo)) names.insert(name);
  }
  memo[item] = names;
  return names;
}

// What the unit's SystemCallFilter= lines allow: the first line sets the list, later lines
// add to it or (with "~") take from it, as systemd.exec(5) describes.
std::set<std::string> unitAllowedSyscalls(const std::string& unit) {
  std::map<std::string, std::set<std::string>> memo;
  std::set<std::string> allowed;
  auto d = directives(unit);
  auto range = d.equal_range("SystemCallFilter");
  for (auto it = range.first; it != range.second; ++it) {
    bool remove = !it->second.empty() && it->second[0] == '~';
    std::istringstream items(remove ? it->second.substr(1) : it->second);
    for (std::string item; items >> item;) {
      for (const std::string& name : expandFilterItem(item, memo)) {
        if (remove) {
          allowed.erase(name);
        } else {
          allowed.insert(name);
        }
      }
    }
  }
  return allowed;
}

std::set<std::string> profileSyscalls(
    std::initializer_list<const privsep::SeccompProfile*> profiles) {
  std::set<std::string> names;
  for (const auto* profile : profiles) {
    for (std::string_view name : profile->allow) names.insert(std::string(name));
    for (const auto& rule : profile->allowIf) names.insert(std::string(rule.syscall));
  }
  return names;
}

TEST(UnitSyscallFilter, AdmitsEverySyscallTheDaemonsOwnProfilesAllow) {
  struct Case {
    std::string unit;
    std::set<std::string> needed;
  };
  const Case cases[] = {
      {"cellos-broker.service", profileSyscalls({&broker::kBrokerProfile})},
      {"cellos-event-signer.service", profileSyscalls({&signer::kSignerProfile})},
      // The launcher's profile is what cells run under.
      {"cellos-vmm-agent.service", profileSyscalls({&vmm::kAgentProfile, &vmm::kLauncherProfile})},
      {"cellos-dns-helper.service",
       profileSyscalls({&dns::kSpawnerProfile, &dns::kDnsChildProfile})},
      {"cellos-event-forwarder.service", profileSyscalls({&forwarder::kForwarderProfile})},
  };
  for (const Case& c : cases) {
    std::set<std::string> allowed = unitAllowedSyscalls(c.unit);
    ASSERT_GT(allowed.size(), 100u) << c.unit << ": could not expand its SystemCallFilter=";
    std::vector<std::string> refused;
    for (const std::string& name : c.needed) {
      if (!allowed.count(name)) refused.push_back(name);
    }
    std::string list;
    for (const auto& name : refused) list += " " + name;
    EXPECT_TRUE(refused.empty()) << c.unit
                                 << " refuses (EPERM) what its daemon's profile allows:" << list;
  }
  // The control: the expansion really removes what "~" names (the signer's unit takes
  // @privileged away, and setuid is in it).
  EXPECT_FALSE(unitAllowedSyscalls("cellos-event-signer.service").count("setuid"));
  EXPECT_TRUE(unitAllowedSyscalls("cellos-event-signer.service").count("read"));
}

// ---------------------------------------------------------------------------------------------
// The shipped configuration (/etc/cellos): every key is a real option of its daemon, and the
// socket paths the broker dials are where the helpers listen, inside the directories the units
// give them.

std::map<std::string, std::string> configKeys(const std::string& file) {
  std::map<std::string, std::string> out;
  std::istringstream lines(readTextFile(sourceDir() + "/packaging/config/" + file));
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::smatch m;
    if (std::regex_match(line, m, std::regex("([a-z-]+) = \"?([^\"]*)\"?"))) out[m[1]] = m[2];
  }
  return out;
}

TEST(ShippedConfiguration, EveryKeyIsAnOptionOfItsDaemon) {
  const std::map<std::string, std::string> daemons = {
      {"broker.conf", "cellos-broker"},
      {"event-signer.conf", "cellos-event-signer"},
      {"vmm-agent.conf", "cellos-vmm-agent"},
      {"dns-helper.conf", "cellos-dns-helper"},
      {"event-forwarder.conf", "cellos-event-forwarder"},
  };
  for (const auto& [file, daemon] : daemons) {
    auto keys = configKeys(file);
    EXPECT_GE(keys.size(), 3u) << file;
    auto help = runCommand(shellQuote(buildDir() + "/bin/" + daemon) + " --help");
    ASSERT_EQ(help.status, 0) << help.output;
    for (const auto& [key, value] : keys) {
      EXPECT_NE(help.output.find("--" + key), std::string::npos)
          << file << ": `" << key << "` is not an option of " << daemon;
    }
    // The unit starts the daemon with this file.
    std::string unit = daemon + ".service";
    EXPECT_NE(single(directives(unit), "ExecStart").find("--config /etc/cellos/" + file),
              std::string::npos)
        << unit;
  }
}

TEST(ShippedConfiguration, BrokerDialsWhereTheHelpersListen) {
  auto broker = configKeys("broker.conf");
  EXPECT_EQ(broker["signer-socket"], configKeys("event-signer.conf")["socket"]);
  EXPECT_EQ(broker["vmm-socket"], configKeys("vmm-agent.conf")["socket"]);
  EXPECT_EQ(broker["dns-socket"], configKeys("dns-helper.conf")["socket"]);
  // The unprivileged daemons bind inside their own RuntimeDirectory= (they cannot write
  // /run/cellos itself); the root ones inside ReadWritePaths=/run/cellos.
  EXPECT_EQ(
      broker["socket"],
      "/run/" + single(directives("cellos-broker.service"), "RuntimeDirectory") + "/broker.sock");
  EXPECT_EQ(configKeys("event-signer.conf")["socket"],
            "/run/" + single(directives("cellos-event-signer.service"), "RuntimeDirectory") +
                "/signer.sock");
  EXPECT_EQ(configKeys("event-signer.conf")["state-dir"],
            "/var/lib/" + single(directives("cellos-event-signer.service"), "StateDirectory"));
  // StateDirectory= lists the event log's directory, then the export root (issue 7).
  std::istringstream stateDirs(single(directives("cellos-broker.service"), "StateDirectory"));
  std::string eventsDir, exportsDir;
  stateDirs >> eventsDir >> exportsDir;
  EXPECT_EQ(broker["events"], "/var/lib/" + eventsDir + "/events.jsonl");
  EXPECT_EQ(broker["export-root"], "/var/lib/" + exportsDir);
}

}  // namespace
}  // namespace cellos
