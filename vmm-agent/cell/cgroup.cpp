#include "vmm-agent/cell/cgroup.h"
#include "vmm-agent/cell/sys_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <set>
#include <stdexcept>
#include <system_error>
#include <thread>

namespace cellos::vmm {
namespace {

constexpr const char* kCgroupRoot = "/sys/fs/cgroup";

// Reads a small kernel file (cgroupfs, procfs) whole. ENOENT is reported to the caller as
// `false` so "this leaf is gone" is a value, not an exception.
bool readSmallFile(const std::string& path, std::string& out) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return false;
    throwErrno("open(" + path + ", O_RDONLY)");
  }
  out.clear();
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      close(fd);
      errno = e;
      throwErrno("read(" + path + ")");
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return true;
}

// cgroupfs takes one value per write(2); a short or failed write means the kernel refused it
// (EINVAL for a bad value, EBUSY, ESRCH for a vanished pid), and that reason is the error.
void writeControlFile(const std::string& path, const std::string& value) {
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) throwErrno("open(" + path + ", O_WRONLY)");
  ssize_t n;
  do {
    n = write(fd, value.data(), value.size());
  } while (n < 0 && errno == EINTR);
  if (n < 0 || static_cast<size_t>(n) != value.size()) {
    int e = n < 0 ? errno : EIO;
    close(fd);
    errno = e;
    throwErrno("write(" + path + ", \"" + value + "\")");
  }
  close(fd);
}

// mkdir that tolerates an existing directory (shared parents such as /sys/fs/cgroup/pids/cellos).
void ensureDirectory(const std::string& path) {
  if (mkdir(path.c_str(), 0755) < 0 && errno != EEXIST) throwErrno("mkdir(" + path + ", 0755)");
}

std::vector<pid_t> readProcs(const std::string& leaf) {
  std::string text;
  std::vector<pid_t> pids;
  if (!readSmallFile(leaf + "/cgroup.procs", text)) return pids;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    if (end > pos) pids.push_back(static_cast<pid_t>(std::stol(text.substr(pos, end - pos))));
    pos = end + 1;
  }
  return pids;
}

// On v2 a leaf only has pids.max / memory.max / cpu.max when its parent lists the controllers
// in cgroup.subtree_control, and so on up to the root. Writing a controller that is already
// enabled is a no-op, so this is safe to repeat for every cell.
void enableV2Controllers(const std::string& parent) {
  writeControlFile(parent + "/cgroup.subtree_control", "+pids +memory +cpu");
}

// The v1 hierarchy holding `controller`. Distributions mount cpu and cpuacct either apart or
// together ("cpu,cpuacct", with cpu and cpuacct as symlinks to it): resolving the link makes
// both names one directory, so the cell gets one leaf there, not two names for it.
std::string v1Hierarchy(const char* controller) {
  std::string path = std::string(kCgroupRoot) + "/" + controller;
  if (char* resolved = realpath(path.c_str(), nullptr)) {
    path = resolved;
    free(resolved);
  }
  return path;
}

// The value of `key` in a flat-keyed cgroup file ("oom_kill 3\n..."), or nullopt.
std::optional<uint64_t> keyedValue(const std::string& text, const std::string& key) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    if (line.size() > key.size() + 1 && line.compare(0, key.size(), key) == 0 &&
        line[key.size()] == ' ') {
      return std::stoull(line.substr(key.size() + 1));
    }
    pos = end + 1;
  }
  return std::nullopt;
}

}  // namespace

std::vector<std::string> cellCgroupPaths(const std::string& cellId) {
  return CellCgroup::open(cellId).leaves();
}

bool CellCgroup::isV2() {
  return access((std::string(kCgroupRoot) + "/cgroup.controllers").c_str(), F_OK) == 0;
}

CellCgroup::CellCgroup(std::string cellId, ControllerLeaves byController)
    : cellId_(std::move(cellId)), byController_(std::move(byController)) {
  for (const std::string* leaf :
       {&byController_.pids, &byController_.memory, &byController_.cpu, &byController_.cpuacct}) {
    if (std::find(leaves_.begin(), leaves_.end(), *leaf) == leaves_.end()) {
      leaves_.push_back(*leaf);
    }
  }
}

CellCgroup CellCgroup::open(const std::string& cellId) {
  if (isV2()) {
    std::string leaf = std::string(kCgroupRoot) + "/cellos/" + cellId;
    return CellCgroup(cellId, {leaf, leaf, leaf, leaf});
  }
  auto leafOf = [&](const char* controller) {
    return v1Hierarchy(controller) + "/cellos/" + cellId;
  };
  return CellCgroup(cellId, {leafOf("pids"), leafOf("memory"), leafOf("cpu"), leafOf("cpuacct")});
}

uint64_t parseMemoryBudget(const std::string& text, uint64_t hostMemoryBytes) {
  if (text.empty() || text == "0") return 0;
  bool percent = text.back() == '%';
  std::string digits = percent ? text.substr(0, text.size() - 1) : text;
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() ||
      (percent && (value == 0 || value > 100))) {
    throw std::invalid_argument("memory budget \"" + text +
                                "\": expected bytes, N% (1..100) of the host's memory, or 0");
  }
  return percent
             ? static_cast<uint64_t>(static_cast<unsigned __int128>(hostMemoryBytes) * value / 100)
             : value;
}

void CellCgroup::prepareParents(const CellsBudget& budget) {
  std::vector<std::string> parents;
  if (isV2()) {
    parents.push_back(std::string(kCgroupRoot) + "/cellos");
  } else {
    for (const char* controller : {"pids", "memory", "cpu", "cpuacct"}) {
      std::string parent = v1Hierarchy(controller) + "/cellos";
      if (std::find(parents.begin(), parents.end(), parent) == parents.end()) {
        parents.push_back(parent);
      }
    }
  }
  std::string problems;
  for (const std::string& parent : parents) {
    std::string problem;
    if (mkdir(parent.c_str(), 0755) < 0 && errno != EEXIST) {
      problem = parent + " cannot be created: " + strerror(errno);
    } else if (access(parent.c_str(), W_OK) < 0) {
      problem = parent + " is not writable: " + strerror(errno);
    }
    if (!problem.empty()) problems += (problems.empty() ? "" : "; ") + problem;
  }
  if (!problems.empty()) {
    throw std::runtime_error(
        "no cell could start: " + problems +
        ". Create the subtree as root (mkdir), and under systemd let the unit see it writable "
        "(cellos-vmm-agent.service's ExecStartPre= and BindPaths=; docs/operations.md)");
  }
  if (budget.memoryBytes == 0 && budget.pids == 0) return;
  if (isV2()) {
    // A limit file exists on cellos/ only when the root delegates the controller to it.
    enableV2Controllers(kCgroupRoot);
    std::string parent = std::string(kCgroupRoot) + "/cellos";
    if (budget.memoryBytes) {
      writeControlFile(parent + "/memory.max", std::to_string(budget.memoryBytes));
    }
    if (budget.pids) writeControlFile(parent + "/pids.max", std::to_string(budget.pids));
    return;
  }
  if (budget.memoryBytes) {
    writeControlFile(v1Hierarchy("memory") + "/cellos/memory.limit_in_bytes",
                     std::to_string(budget.memoryBytes));
  }
  if (budget.pids) {
    writeControlFile(v1Hierarchy("pids") + "/cellos/pids.max", std::to_string(budget.pids));
  }
}

CellCgroup CellCgroup::create(const std::string& cellId) {
  CellCgroup cgroup = open(cellId);
  if (isV2()) {
    std::string parent = std::string(kCgroupRoot) + "/cellos";
    enableV2Controllers(kCgroupRoot);
    ensureDirectory(parent);
    enableV2Controllers(parent);
  }
  std::vector<std::string> made;
  try {
    for (const std::string& leaf : cgroup.leaves_) {
      ensureDirectory(leaf.substr(0, leaf.rfind('/')));
      // EEXIST is an error here on purpose: the leaf of a live or leaked cell is never reused.
      if (mkdir(leaf.c_str(), 0755) < 0) {
        if (errno == EEXIST) {
          throw std::system_error(EEXIST, std::generic_category(),
                                  "mkdir(" + leaf + ", 0755): cgroup of cell " + cellId +
                                      " already exists (destroy the earlier cell first)");
        }
        throwErrno("mkdir(" + leaf + ", 0755)");
      }
      made.push_back(leaf);
    }
  } catch (...) {
    for (const std::string& leaf : made) rmdir(leaf.c_str());
    throw;
  }
  return cgroup;
}

void CellCgroup::addProcess(pid_t pid) {
  for (const std::string& leaf : leaves_) {
    writeControlFile(leaf + "/cgroup.procs", std::to_string(pid));
  }
}

void CellCgroup::setPidsMax(uint64_t max) {
  writeControlFile(byController_.pids + "/pids.max", std::to_string(max));
}

void CellCgroup::setMemoryMax(uint64_t bytes) {
  const std::string& leaf = byController_.memory;
  if (isV2()) {
    writeControlFile(leaf + "/memory.max", std::to_string(bytes));
    // Without swap.max a v2 cell could page out past memory.max where swap exists.
    if (access((leaf + "/memory.swap.max").c_str(), F_OK) == 0) {
      writeControlFile(leaf + "/memory.swap.max", "0");
    }
    return;
  }
  writeControlFile(leaf + "/memory.limit_in_bytes", std::to_string(bytes));
  // memsw (memory + swap) must be >= limit_in_bytes, so it is written second. It only
  // exists when the kernel accounts swap (CONFIG_MEMCG_SWAP and swapaccount=1).
  std::string memsw = leaf + "/memory.memsw.limit_in_bytes";
  if (access(memsw.c_str(), F_OK) == 0) writeControlFile(memsw, std::to_string(bytes));
}

void CellCgroup::setCpuMax(uint64_t quotaMicros, uint64_t periodMicros) {
  const std::string& leaf = byController_.cpu;
  if (isV2()) {
    writeControlFile(leaf + "/cpu.max",
                     std::to_string(quotaMicros) + " " + std::to_string(periodMicros));
    return;
  }
  // The period first: the kernel checks the quota against the period in force.
  writeControlFile(leaf + "/cpu.cfs_period_us", std::to_string(periodMicros));
  writeControlFile(leaf + "/cpu.cfs_quota_us", std::to_string(quotaMicros));
}

uint64_t CellCgroup::cpuUsageMicros() const {
  std::string text;
  if (isV2()) {
    std::string path = byController_.cpu + "/cpu.stat";
    if (!readSmallFile(path, text)) throw std::runtime_error(path + " does not exist");
    auto usage = keyedValue(text, "usage_usec");
    if (!usage) throw std::runtime_error(path + " has no usage_usec");
    return *usage;
  }
  std::string path = byController_.cpuacct + "/cpuacct.usage";
  if (!readSmallFile(path, text)) throw std::runtime_error(path + " does not exist");
  return std::stoull(text) / 1000;  // nanoseconds
}

uint64_t CellCgroup::oomKillCount() const {
  std::string text;
  std::string path = byController_.memory + (isV2() ? "/memory.events" : "/memory.oom_control");
  if (!readSmallFile(path, text)) return 0;
  return keyedValue(text, "oom_kill").value_or(0);
}

std::vector<pid_t> CellCgroup::processes() const {
  std::set<pid_t> all;
  for (const std::string& leaf : leaves_) {
    for (pid_t pid : readProcs(leaf)) all.insert(pid);
  }
  return {all.begin(), all.end()};
}

void CellCgroup::killAll() {
  // cgroup.kill (Linux 5.14, v2 only) kills the whole subtree atomically, forks included.
  if (isV2()) {
    std::string killFile = leaves_.front() + "/cgroup.kill";
    if (access(killFile.c_str(), F_OK) == 0) writeControlFile(killFile, "1");
  }
  // v1 (and older v2): signal what is listed, then look again, because a process may fork
  // between the read and the kill. SIGKILLed processes stay listed until they have exited, so
  // this also waits for the cgroup to drain. pids.max and the cell's pid namespace (whose
  // collapse kills everything once its init dies) bound how long this can race.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (;;) {
    std::vector<pid_t> listed = processes();
    if (listed.empty() || std::chrono::steady_clock::now() > deadline) return;
    // Pin each process first, then confirm it is (still) in the cell's cgroup: a pid read from
    // cgroup.procs may have exited and been recycled by an unrelated process in between.
    std::vector<std::pair<pid_t, int>> pinned;
    for (pid_t pid : listed) {
      int fd = pidfdOpen(pid);
      if (fd >= 0) pinned.emplace_back(pid, fd);
    }
    std::vector<pid_t> members = processes();
    for (auto [pid, fd] : pinned) {
      if (std::binary_search(members.begin(), members.end(), pid)) {
        if (pidfdSendSignal(fd, SIGKILL) < 0 && errno != ESRCH) {
          int e = errno;
          for (auto& p : pinned) close(p.second);
          errno = e;
          throwErrno("pidfd_send_signal(" + std::to_string(pid) + ", SIGKILL)");
        }
      }
    }
    for (auto& p : pinned) close(p.second);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

bool CellCgroup::remove() {
  bool removedAll = true;
  for (const std::string& leaf : leaves_) {
    if (rmdir(leaf.c_str()) == 0 || errno == ENOENT) continue;
    if (errno == EBUSY) {
      removedAll = false;
      continue;
    }
    throwErrno("rmdir(" + leaf + ")");
  }
  return removedAll;
}

}  // namespace cellos::vmm
