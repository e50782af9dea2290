#include "vmm-agent/cgroup.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <set>
#include <stdexcept>
#include <system_error>
#include <thread>

namespace cellos::vmm {
namespace {

// glibc 2.36's <sys/pidfd.h> lacks extern "C", so its declarations do not link from C++;
// the raw system calls are used instead.
int pidfdOpen(pid_t pid) {
  return static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
}
int pidfdSendSignal(int pidfd, int sig) {
  return static_cast<int>(syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

constexpr const char* kCgroupRoot = "/sys/fs/cgroup";
// The v1 hierarchies a cell uses. Others (cpu, cpuacct, ...) are not limited in the skeleton.
constexpr const char* kV1Controllers[] = {"pids", "memory"};

[[noreturn]] void throwErrno(const std::string& call) {
  throw std::system_error(errno, std::generic_category(), call);
}

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

// On v2 a leaf only has pids.max / memory.max when its parent lists the controllers in
// cgroup.subtree_control, and so on up to the root. Writing a controller that is already
// enabled is a no-op, so this is safe to repeat for every cell.
void enableV2Controllers(const std::string& parent) {
  writeControlFile(parent + "/cgroup.subtree_control", "+pids +memory");
}

}  // namespace

std::vector<std::string> cellCgroupPaths(const std::string& cellId) {
  std::vector<std::string> leaves;
  if (CellCgroup::isV2()) {
    leaves.push_back(std::string(kCgroupRoot) + "/cellos/" + cellId);
  } else {
    for (const char* controller : kV1Controllers) {
      leaves.push_back(std::string(kCgroupRoot) + "/" + controller + "/cellos/" + cellId);
    }
  }
  return leaves;
}

bool CellCgroup::isV2() {
  return access((std::string(kCgroupRoot) + "/cgroup.controllers").c_str(), F_OK) == 0;
}

CellCgroup::CellCgroup(std::string cellId, std::vector<std::string> leaves)
    : cellId_(std::move(cellId)), leaves_(std::move(leaves)) {}

CellCgroup CellCgroup::open(const std::string& cellId) {
  return CellCgroup(cellId, cellCgroupPaths(cellId));
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
  // v1: only the pids leaf has the file; v2: the single leaf.
  for (const std::string& leaf : leaves_) {
    if (isV2() || leaf.find("/pids/") != std::string::npos) {
      writeControlFile(leaf + "/pids.max", std::to_string(max));
    }
  }
}

void CellCgroup::setMemoryMax(uint64_t bytes) {
  for (const std::string& leaf : leaves_) {
    if (isV2()) {
      writeControlFile(leaf + "/memory.max", std::to_string(bytes));
    } else if (leaf.find("/memory/") != std::string::npos) {
      writeControlFile(leaf + "/memory.limit_in_bytes", std::to_string(bytes));
      // memsw (memory + swap) must be >= limit_in_bytes, so it is written second. It only
      // exists when the kernel accounts swap (CONFIG_MEMCG_SWAP and swapaccount=1).
      std::string memsw = leaf + "/memory.memsw.limit_in_bytes";
      if (access(memsw.c_str(), F_OK) == 0) writeControlFile(memsw, std::to_string(bytes));
    }
  }
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
