// `cellos doctor`: checks the host the way the daemons will use it (kernel features, cgroups,
// accounts, programs, sockets, state, units) and says for each gap how to close it. It only
// reads: it creates, changes and starts nothing, so any user may run it (some checks see more
// as root).

#include "broker/cli/doctor.h"

#include "broker/cli/embedded.h"
#include "privsep/daemon.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/seccomp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <set>
#include <sstream>

namespace cellos::cli {

namespace {

using Level = DoctorFinding::Level;

DoctorFinding ok(std::string check, std::string detail) {
  return {Level::kOk, std::move(check), std::move(detail), ""};
}
DoctorFinding warn(std::string check, std::string detail, std::string fix) {
  return {Level::kWarn, std::move(check), std::move(detail), std::move(fix)};
}
DoctorFinding fail(std::string check, std::string detail, std::string fix) {
  return {Level::kFail, std::move(check), std::move(detail), std::move(fix)};
}

std::string join(const std::vector<std::string>& parts, const std::string& separator) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : separator) + p;
  return out;
}

std::string octal(mode_t mode) {
  char text[8];
  snprintf(text, sizeof(text), "%04o", unsigned(mode & 07777));
  return text;
}

// The first line a command prints (stderr discarded), or nullopt when it could not run.
std::optional<std::string> firstLineOf(const std::string& command) {
  FILE* pipe = popen((command + " 2>/dev/null </dev/null").c_str(), "r");
  if (pipe == nullptr) return std::nullopt;
  char buffer[512];
  std::string line;
  if (fgets(buffer, sizeof(buffer), pipe) != nullptr) line = buffer;
  while (fgets(buffer, sizeof(buffer), pipe) != nullptr) {
  }
  int status = pclose(pipe);
  if (status == -1) return std::nullopt;
  if (!line.empty() && line.back() == '\n') line.pop_back();
  return line;
}

// Where `name` is on PATH (the daemons never search PATH; doctor only reports).
std::optional<std::string> findOnPath(const std::string& name) {
  const char* env = getenv("PATH");
  std::istringstream path(env ? env
                              : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  for (std::string dir; std::getline(path, dir, ':');) {
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return std::nullopt;
}

// -- Kernel: what privsep and the linux backend call, probed by calling it harmlessly.
DoctorFinding checkKernel() {
  utsname u{};
  uname(&u);
  std::vector<std::string> have, missing;
  uint32_t action = SECCOMP_RET_KILL_PROCESS;
  if (syscall(SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &action) == 0) {
    have.push_back("seccomp kill-process filters");
  } else {
    missing.push_back("seccomp filters with kill-process (CONFIG_SECCOMP_FILTER, Linux >= 4.14)");
  }
  std::vector<std::string> namespaces;
  for (const char* ns : {"mnt", "pid", "net", "uts", "ipc"}) {
    if (access((std::string("/proc/self/ns/") + ns).c_str(), F_OK) == 0) {
      namespaces.push_back(ns);
    } else {
      missing.push_back(std::string(ns) + " namespaces");
    }
  }
  if (!namespaces.empty()) have.push_back("namespaces (" + join(namespaces, " ") + ")");
  long pidfd = syscall(SYS_pidfd_open, getpid(), 0);
  if (pidfd >= 0) {
    close(int(pidfd));
    have.push_back("pidfd");
  } else {
    missing.push_back("pidfd_open (Linux >= 5.3)");
  }
  // A range with no open fd in it: closes nothing, but ENOSYS before Linux 5.9.
  if (syscall(SYS_close_range, 1u << 30, (1u << 30) + 1, 0) == 0) {
    have.push_back("close_range");
  } else {
    missing.push_back("close_range (Linux >= 5.9)");
  }
  std::string release = std::string("Linux ") + u.release;
  if (!missing.empty()) {
    return fail("kernel", release + " lacks " + join(missing, ", "),
                "run a Debian 12 kernel (6.1) or any Linux >= 5.10 with these enabled");
  }
  return ok("kernel", release + ": " + join(have, ", "));
}

// -- cgroups: where pidsMax and memoryMaxBytes are enforced (vmm-agent/cell/cgroup.h).
DoctorFinding checkCgroups() {
  std::ifstream controllers("/sys/fs/cgroup/cgroup.controllers");
  if (controllers) {
    std::set<std::string> names;
    for (std::string name; controllers >> name;) names.insert(name);
    std::vector<std::string> missing;
    for (const char* needed : {"pids", "memory"}) {
      if (!names.count(needed)) missing.push_back(needed);
    }
    if (!missing.empty()) {
      return fail("cgroups", "v2 (unified) without the " + join(missing, " and ") + " controller",
                  "enable it at the root: echo '+pids +memory' > "
                  "/sys/fs/cgroup/cgroup.subtree_control (memory needs cgroup_enable=memory "
                  "on some kernels' command line)");
    }
    return ok("cgroups", "v2 (unified): pids and memory controllers available");
  }
  bool pids = access("/sys/fs/cgroup/pids/cgroup.procs", F_OK) == 0;
  bool memory = access("/sys/fs/cgroup/memory/cgroup.procs", F_OK) == 0;
  if (pids && memory) return ok("cgroups", "v1: pids and memory controllers mounted");
  return fail("cgroups", "no pids and memory cgroup controllers under /sys/fs/cgroup",
              "boot with systemd (it mounts cgroup2 with both), or mount them: mount -t cgroup2 "
              "none /sys/fs/cgroup");
}

DoctorFinding checkRunsc() {
  auto runsc = findOnPath("runsc");
  if (!runsc) {
    return warn("runsc",
                "not found on PATH: the gvisor backend runs cells with it (the VM launcher looks "
                "for /usr/bin/runsc)",
                "apt-get install runsc");
  }
  auto version = firstLineOf(*runsc + " --version");
  return ok("runsc", *runsc + (version && !version->empty() ? ": " + *version : ""));
}

DoctorFinding checkKvm() {
  struct stat st {};
  if (stat("/dev/kvm", &st) < 0) {
    return warn("/dev/kvm",
                "absent: microvm cells can run only under TCG (software emulation, slow), and "
                "the firecracker backend (not in this version yet) needs it",
                "enable VT-x/AMD-V (or nested virtualization) and load kvm_intel or kvm_amd");
  }
  if (!S_ISCHR(st.st_mode))
    return fail("/dev/kvm", "exists but is not a character device", "rm /dev/kvm; modprobe kvm");
  int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    return warn("/dev/kvm", std::string("present but cannot be opened: ") + strerror(errno),
                "run as root, or add the user to group kvm");
  }
  close(fd);
  return ok("/dev/kvm", "present and usable");
}

// -- The microvm backend: what the VM launcher needs, and the accelerator it decided on. The
// launcher finds out whether KVM can boot a guest by booting one at its start (a host may have
// /dev/kvm and hang, as nested guests do); doctor starts nothing, so it reports the answer the
// launcher wrote for this boot of the host (<vmDir>/images/accel-probe: the boot id and file
// identities, then "kvm" or "tcg", then why not KVM).
std::vector<DoctorFinding> checkMicrovm(const std::string& vmDir) {
  std::vector<DoctorFinding> out;
  const char* qemu = "/usr/bin/qemu-system-x86_64";
  if (access(qemu, X_OK) != 0) {
    out.push_back(warn("microvm", std::string(qemu) + " not found: no microvm cells on this host",
                       "apt-get install qemu-system-x86 (scripts/setup does)"));
    return out;
  }
  std::ifstream current(vmDir + "/kernel/current");
  std::string release;
  std::getline(current, release);
  std::string kernel = vmDir + "/kernel/" + release + "/vmlinuz";
  if (release.empty() || access(kernel.c_str(), R_OK) != 0) {
    out.push_back(warn("microvm", "no guest kernel at " + vmDir + "/kernel (current names none)",
                       "scripts/setup (it unpacks Debian's linux-image-cloud-amd64 there)"));
    return out;
  }
  std::string bootId;
  std::ifstream("/proc/sys/kernel/random/boot_id") >> bootId;
  std::ifstream probe(vmDir + "/images/accel-probe");
  std::string key, answer, reason;
  std::getline(probe, key);
  std::getline(probe, answer);
  std::getline(probe, reason);
  std::string base = "guest kernel " + release;
  if (bootId.empty() || key.rfind(bootId + " ", 0) != 0 || (answer != "kvm" && answer != "tcg")) {
    out.push_back(ok("microvm", base + "; accelerator not decided since this host booted (the VM "
                                       "launcher boots a guest under KVM at its start to find "
                                       "out)"));
  } else if (answer == "kvm") {
    out.push_back(ok("microvm", base + "; accelerator kvm (a KVM guest booted here)"));
  } else {
    out.push_back(warn("microvm",
                       base + "; accelerator tcg (software emulation, slow): " +
                           (reason.empty() ? "KVM cannot boot a guest here" : reason),
                       "fine for tests; for production run microvm cells on a host whose KVM "
                       "boots guests (--vm-accel kvm refuses TCG)"));
  }
  return out;
}

// -- Accounts (packaging/sysusers.d/cellos.conf).
DoctorFinding checkAccounts() {
  std::vector<std::string> missing;
  for (const char* user : {"cellos", "cellos-signer", "cellos-dns"}) {
    if (getpwnam(user) == nullptr) missing.push_back("user " + std::string(user));
  }
  if (getgrnam("cellos") == nullptr) missing.push_back("group cellos");
  if (!missing.empty()) {
    return fail("accounts", join(missing, ", ") + " missing",
                "systemd-sysusers cellos.conf (installed by the package as "
                "/usr/lib/sysusers.d/cellos.conf), or scripts/setup from a source tree");
  }
  return ok("accounts", "users cellos, cellos-signer, cellos-dns and group cellos exist");
}

DoctorFinding checkPrograms(const std::string& binDir) {
  std::vector<std::string> missing;
  for (const char* daemon :
       {"cellos-broker", "cellos-event-signer", "cellos-vmm-agent", "cellos-dns-helper"}) {
    if (access((binDir + "/" + daemon).c_str(), X_OK) != 0) missing.push_back(daemon);
  }
  if (!missing.empty()) {
    return fail("programs", join(missing, ", ") + " missing from " + binDir,
                "reinstall cellos: the daemons must sit beside the cellos program");
  }
  return ok("programs", "the four daemons are in " + binDir);
}

struct ExpectedSocket {
  std::string path;
  std::string owner;  // user name
  std::string group;
  std::string unit;
};

// -- Sockets of the service-mode daemons: 0660, their own user, group cellos.
std::vector<DoctorFinding> checkSockets(const std::string& runDir) {
  std::vector<DoctorFinding> out;
  struct stat dir {};
  if (lstat(runDir.c_str(), &dir) < 0) {
    out.push_back(warn("sockets", runDir + " does not exist: no cellos service is running",
                       "systemctl enable --now cellos.target"));
    return out;
  }
  if (!S_ISDIR(dir.st_mode) || dir.st_uid != 0 || (dir.st_mode & S_IWOTH) ||
      (dir.st_mode & S_IWGRP)) {
    out.push_back(fail("sockets",
                       runDir + " must be a directory owned by root that only root can write (" +
                           octal(dir.st_mode) + ", uid " + std::to_string(dir.st_uid) + ")",
                       "chown root:root " + runDir + " && chmod 0755 " + runDir));
  }
  const ExpectedSocket sockets[] = {
      {runDir + "/broker/broker.sock", "cellos", "cellos", "cellos-broker.service"},
      {runDir + "/signer/signer.sock", "cellos-signer", "cellos", "cellos-event-signer.service"},
      {runDir + "/vmm.sock", "root", "cellos", "cellos-vmm-agent.service"},
      {runDir + "/dns.sock", "root", "cellos", "cellos-dns-helper.service"},
  };
  for (const ExpectedSocket& s : sockets) {
    struct stat st {};
    if (lstat(s.path.c_str(), &st) < 0) {
      out.push_back(warn("sockets", s.path + " is absent (is " + s.unit + " running?)",
                         "systemctl enable --now cellos.target"));
      continue;
    }
    if (!S_ISSOCK(st.st_mode)) {
      out.push_back(fail("sockets", s.path + " exists but is not a socket",
                         "rm " + s.path + " && systemctl restart " + s.unit));
      continue;
    }
    const passwd* owner = getpwnam(s.owner.c_str());
    const group* group = getgrnam(s.group.c_str());
    bool modeOk = (st.st_mode & 07777) == 0660;
    bool ownerOk = owner != nullptr && st.st_uid == owner->pw_uid;
    bool groupOk = group != nullptr && st.st_gid == group->gr_gid;
    if (!modeOk || !ownerOk || !groupOk) {
      out.push_back(
          fail("sockets",
               s.path + " is " + octal(st.st_mode) + " uid " + std::to_string(st.st_uid) + " gid " +
                   std::to_string(st.st_gid) + "; it must be 0660 " + s.owner + ":" + s.group,
               "systemctl restart " + s.unit + " (it recreates the socket), or chmod 0660 " +
                   s.path + " && chown " + s.owner + ":" + s.group + " " + s.path));
      continue;
    }
    out.push_back(ok("sockets", s.path + " 0660 " + s.owner + ":" + s.group));
  }
  return out;
}

// -- State: the signer's directory holds the private key.
std::vector<DoctorFinding> checkState(const std::string& stateDir) {
  std::vector<DoctorFinding> out;
  std::string signerDir = stateDir + "/signer";
  struct stat st {};
  if (lstat(signerDir.c_str(), &st) < 0) {
    out.push_back(ok("state", signerDir + " absent (the signer creates it on first start)"));
    return out;
  }
  const passwd* signer = getpwnam("cellos-signer");
  bool embeddedRoot = st.st_uid == 0;  // never started yet under its own user: acceptable
  if (!S_ISDIR(st.st_mode) || (st.st_mode & 077) != 0 ||
      (!embeddedRoot && (signer == nullptr || st.st_uid != signer->pw_uid))) {
    out.push_back(
        fail("state",
             signerDir + " holds the signing key but is " + octal(st.st_mode) + " uid " +
                 std::to_string(st.st_uid) + "; it must be a 0700 directory of cellos-signer",
             "chown -R cellos-signer:cellos-signer " + signerDir + " && chmod 0700 " + signerDir));
    return out;
  }
  // Key files: readable by their owner only (the signer creates them 0600).
  std::vector<std::string> loose;
  if (DIR* dir = opendir(signerDir.c_str())) {
    while (dirent* entry = readdir(dir)) {
      std::string name = entry->d_name;
      if (name == "." || name == "..") continue;
      struct stat f {};
      std::string path = signerDir + "/" + name;
      if (lstat(path.c_str(), &f) == 0 && S_ISREG(f.st_mode) &&
          name.find("key") != std::string::npos && name != "keyset.json" &&
          (f.st_mode & 077) != 0) {
        loose.push_back(path + " (" + octal(f.st_mode) + ")");
      }
    }
    closedir(dir);
  }
  if (!loose.empty()) {
    out.push_back(fail("state", "key files readable by others: " + join(loose, ", "),
                       "chmod 0600 the files named, and consider rotating the key "
                       "(docs/operations.md)"));
    return out;
  }
  out.push_back(ok("state", signerDir + " is 0700 and its key files are private"));
  return out;
}

// -- Units, when systemd runs this host.
std::vector<DoctorFinding> checkUnits() {
  std::vector<DoctorFinding> out;
  struct stat st {};
  if (stat("/run/systemd/system", &st) < 0 || !S_ISDIR(st.st_mode)) {
    out.push_back(warn("units",
                       "systemd is not running this host: only embedded mode (`cellos run`, as "
                       "root) is available",
                       "boot with systemd to run cellos as a service (docs/operations.md)"));
    return out;
  }
  // The services are pulled in by cellos.target; whether they start at boot is its state.
  std::string target = firstLineOf("systemctl is-enabled cellos.target").value_or("unknown");
  if (target == "enabled") {
    out.push_back(ok("units", "cellos.target enabled (the four daemons start at boot)"));
  } else {
    out.push_back(warn("units", "cellos.target " + target + ": the daemons do not start at boot",
                       "systemctl enable cellos.target"));
  }
  // On cgroup v1 (hybrid) hosts cells stay in the VM launcher's unified cgroup, and so under its
  // IPAddressDeny=any (packaging/systemd/cellos-vmm-agent.service).
  if (access("/sys/fs/cgroup/cgroup.controllers", F_OK) != 0) {
    std::string deny =
        firstLineOf("systemctl show -p IPAddressDeny --value cellos-vmm-agent.service")
            .value_or("");
    if (!deny.empty()) {
      out.push_back(warn("units",
                         "cgroup v1 host: cells stay in cellos-vmm-agent.service's IP filter "
                         "(IPAddressDeny=" +
                             deny + "), which drops their traffic",
                         "systemctl edit cellos-vmm-agent.service, add [Service] IPAddressDeny= "
                         "(docs/operations.md, \"cgroup v1 hosts\"), or boot with "
                         "systemd.unified_cgroup_hierarchy=1"));
    }
  }
  for (const char* unit : {"cellos-event-signer.service", "cellos-vmm-agent.service",
                           "cellos-dns-helper.service", "cellos-broker.service"}) {
    std::string active =
        firstLineOf(std::string("systemctl is-active ") + unit).value_or("unknown");
    std::string lastError;
    if (active != "active") {
      lastError = firstLineOf(std::string("journalctl --no-pager -q -o cat -p err -n 1 -u ") + unit)
                      .value_or("");
    }
    out.push_back(unitFinding(unit, active, lastError));
  }
  out.push_back(gvisorUnderUnitFinding(
      findOnPath("runsc").has_value(),
      firstLineOf("systemctl show -p CapabilityBoundingSet --value cellos-vmm-agent.service")
          .value_or("")));
  return out;
}

}  // namespace

DoctorFinding unitFinding(const std::string& unit, const std::string& active,
                          const std::string& lastError) {
  std::string detail = unit + " " + active;
  if (active == "active") return ok("units", detail);
  if (active == "failed" || active == "activating") {
    if (active == "activating") detail += " (restarting after a failed start)";
    if (!lastError.empty()) detail += ": " + lastError;
    return fail(
        "units", detail,
        "journalctl -u " + unit + " -n 50; fix what it says, then systemctl restart " + unit);
  }
  return warn("units", detail, "systemctl enable --now cellos.target");
}

DoctorFinding gvisorUnderUnitFinding(bool runscInstalled, const std::string& boundingSet) {
  if (!runscInstalled) {
    return ok("gvisor", "runsc is not installed: gvisor cells are refused by name");
  }
  if (boundingSet.find("cap_chown") == std::string::npos) {
    return warn("gvisor",
                "runsc is installed, but cellos-vmm-agent.service bounds CAP_CHOWN away, so the "
                "launcher turns the gvisor backend off (gvisor cells are refused)",
                "systemctl edit cellos-vmm-agent.service: [Service] CapabilityBoundingSet= with "
                "CAP_CHOWN added (docs/operations.md, \"gVisor (the gvisor backend)\")");
  }
  return ok("gvisor", "runsc is installed and the VM launcher's unit keeps CAP_CHOWN");
}

std::vector<DoctorFinding> examineHost(const DoctorOptions& options) {
  std::string binDir = options.binDir.empty() ? selfDirectory() : options.binDir;
  std::vector<DoctorFinding> findings = {checkKernel(), checkCgroups(),  checkRunsc(),
                                         checkKvm(),    checkAccounts(), checkPrograms(binDir)};
  for (auto& f : checkMicrovm(options.vmDir)) findings.push_back(std::move(f));
  for (auto& f : checkSockets(options.runDir)) findings.push_back(std::move(f));
  for (auto& f : checkState(options.stateDir)) findings.push_back(std::move(f));
  for (auto& f : checkUnits()) findings.push_back(std::move(f));
  return findings;
}

int doctorCommand(const DoctorOptions& options) {
  utsname u{};
  uname(&u);
  std::cout << "cellos doctor: cellos " << privsep::kVersion << " on " << u.sysname << " "
            << u.release << " (" << u.machine << ")\n";
  int failed = 0, warned = 0;
  for (const DoctorFinding& f : examineHost(options)) {
    const char* level = f.level == Level::kOk ? "ok  " : f.level == Level::kWarn ? "warn" : "FAIL";
    std::string check = f.check;
    check.resize(std::max<size_t>(check.size(), 9), ' ');
    std::cout << "  " << level << "  " << check << " " << f.detail << "\n";
    if (!f.fix.empty()) std::cout << "        " << std::string(9, ' ') << " fix: " << f.fix << "\n";
    failed += f.level == Level::kFail;
    warned += f.level == Level::kWarn;
  }
  std::cout << failed << " failed, " << warned << " warnings\n";
  return failed == 0 ? 0 : 1;
}

}  // namespace cellos::cli
