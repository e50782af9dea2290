#include "vmm-agent/backends/gvisor/gvisor_bundle.h"

#include "core/cell_id.h"
#include "vmm-agent/cell/cell_mounts.h"
#include "vmm-agent/cell/cgroup.h"
#include "vmm-agent/cell/secret_files.h"
#include "vmm-agent/cell/sys_util.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <system_error>

namespace cellos::vmm {

GvisorPaths gvisorPaths(const std::string& cellDir) {
  return GvisorPaths{cellDir + "/bundle", cellDir + "/rootfs",      cellDir + "/work",
                     cellDir + "/runsc",  cellDir + "/resolv.conf", cellDir + "/supervisor-root"};
}

GvisorRootView gvisorRootView(const std::string& imageRoot) {
  GvisorRootView view;
  auto add = [&](const std::string& source, const std::string& name) {
    struct stat st {};
    if (lstat(source.c_str(), &st) < 0) throwErrno("lstat(" + source + ")");
    if (S_ISLNK(st.st_mode)) {
      view.symlinks.emplace_back(name, readLink(source));
    } else if (S_ISDIR(st.st_mode) || S_ISREG(st.st_mode)) {
      view.binds.push_back({source, "/" + name, false});
    }
  };
  if (imageRoot.empty()) {
    for (const char* name : {"usr", "etc"}) {
      if (!isDirectory(std::string("/") + name)) {
        throw std::runtime_error(std::string("host /") + name + " is not a directory");
      }
      add(std::string("/") + name, name);
    }
    for (const char* name : {"bin", "lib", "lib32", "lib64", "libx32", "sbin"}) {
      struct stat st {};
      if (lstat((std::string("/") + name).c_str(), &st) == 0) add(std::string("/") + name, name);
    }
    return view;
  }
  for (const auto& name : imageEntries(imageRoot)) add(imageRoot + "/" + name, name);
  if (view.binds.empty() && view.symlinks.empty()) {
    throw std::runtime_error("image " + imageRoot + " has nothing a cell could run");
  }
  return view;
}

std::string gvisorOciConfig(const CellLaunch& launch, const GvisorPaths& paths,
                            const GvisorRootView& root) {
  if (!core::isValidCellId(launch.cellId)) throw std::invalid_argument("invalid cell id");
  if (launch.argv.empty() || launch.argv[0].empty() || launch.argv[0][0] != '/') {
    throw std::invalid_argument("argv[0] must be an absolute path");
  }
  if (launch.workingDirectory.empty() || launch.workingDirectory[0] != '/') {
    throw std::invalid_argument("workingDirectory must be absolute");
  }
  if (launch.ids.hostBase == 0) throw std::invalid_argument("a cell never runs as host root");
  if (!launch.secretDelivery.empty() && launch.secretDelivery != "env" &&
      launch.secretDelivery != "file") {
    throw std::invalid_argument("secret delivery must be env or file");
  }
  using nlohmann::json;
  json env = json::array();
  for (const auto& [name, value] : launch.env) env.push_back(name + "=" + value);
  json rlimits = json::array();
  rlimits.push_back({{"type", "RLIMIT_NOFILE"},
                     {"hard", launch.nofileMax},
                     {"soft", std::min<uint64_t>(1024, launch.nofileMax)}});
  rlimits.push_back({{"type", "RLIMIT_CORE"}, {"hard", 0}, {"soft", 0}});
  // gVisor counts a sandbox's processes itself: the host's pids controller would count the
  // Sentry's threads too, and the Sentry cannot survive being refused one.
  if (launch.pidsMax) {
    rlimits.push_back(
        {{"type", "RLIMIT_NPROC"}, {"hard", *launch.pidsMax}, {"soft", *launch.pidsMax}});
  }
  json none = json::array();
  json process = {{"terminal", false},
                  {"user", {{"uid", launch.ids.hostBase}, {"gid", launch.ids.hostBase}}},
                  {"args", launch.argv},
                  {"env", env},
                  {"cwd", launch.workingDirectory},
                  {"capabilities",
                   {{"bounding", none},
                    {"effective", none},
                    {"inheritable", none},
                    {"permitted", none},
                    {"ambient", none}}},
                  {"rlimits", rlimits},
                  {"noNewPrivileges", true}};
  json mounts = json::array();
  mounts.push_back({{"destination", "/proc"}, {"type", "proc"}, {"source", "proc"}});
  mounts.push_back({{"destination", "/tmp"},
                    {"type", "tmpfs"},
                    {"source", "tmpfs"},
                    {"options", {"nosuid", "nodev", "mode=1777"}}});
  bool hasEtc = false;
  for (const auto& bind : root.binds) {
    hasEtc = hasEtc || (bind.destination == "/etc" && isDirectory(bind.source));
    mounts.push_back({{"destination", bind.destination},
                      {"type", "bind"},
                      {"source", bind.source},
                      {"options", {"rbind", "ro", "nosuid", "nodev"}}});
  }
  if (hasEtc && !launch.resolvConf.empty()) {
    mounts.push_back({{"destination", "/etc/resolv.conf"},
                      {"type", "bind"},
                      {"source", paths.resolvConf},
                      {"options", {"bind", "ro", "nosuid", "nodev", "noexec"}}});
  }
  mounts.push_back({{"destination", launch.workingDirectory},
                    {"type", "bind"},
                    {"source", paths.work},
                    {"options", {"rbind", "rw", "nosuid", "nodev"}}});
  if (launch.secretDelivery == "file") {
    mounts.push_back({{"destination", kSecretsDirectory},
                      {"type", "bind"},
                      {"source", kGvisorSecretsSource},
                      {"options", {"rbind", "ro", "nosuid", "nodev", "noexec"}}});
  }
  json resources = json::object();
  if (launch.memoryMaxBytes) resources["memory"] = {{"limit", *launch.memoryMaxBytes}};
  if (launch.cpuMax) {
    resources["cpu"] = {{"quota", launch.cpuMax->quotaMicros},
                        {"period", launch.cpuMax->periodMicros}};
  }
  json config = {{"ociVersion", "1.0.2"},
                 {"process", process},
                 {"root", {{"path", paths.rootfs}, {"readonly", true}}},
                 {"hostname", launch.cellId},
                 {"mounts", mounts},
                 {"linux",
                  {{"namespaces",
                    {{{"type", "pid"}}, {{"type", "ipc"}}, {{"type", "uts"}}, {{"type", "mount"}}}},
                   {"cgroupsPath", "/cellos/" + launch.cellId},
                   {"resources", resources}}}};
  if (!launch.secretDelivery.empty()) {
    config["annotations"] = {{kGvisorSecretsAnnotation, launch.secretDelivery}};
  }
  return config.dump(2) + "\n";
}

void writeGvisorBundle(const CellLaunch& launch) {
  GvisorPaths paths = gvisorPaths(launch.cellDir);
  GvisorRootView root = gvisorRootView(launch.imageRoot);
  std::string config = gvisorOciConfig(launch, paths, root);

  // The root: mount points and symlinks only; everything in it is bound over by the sandbox.
  if (mkdir(paths.rootfs.c_str(), 0755) < 0) throwErrno("mkdir(" + paths.rootfs + ")");
  for (const auto& [name, target] : root.symlinks) {
    std::string at = paths.rootfs + "/" + name;
    if (symlink(target.c_str(), at.c_str()) < 0) throwErrno("symlink(" + target + ", " + at + ")");
  }
  for (const auto& bind : root.binds) {
    std::string at = paths.rootfs + bind.destination;
    if (isDirectory(bind.source)) {
      if (mkdir(at.c_str(), 0755) < 0) throwErrno("mkdir(" + at + ")");
    } else {
      writeNewFile(at, "", 0644);
    }
  }
  for (const char* own : kImageSkippedEntries) {
    if (std::string(own) == "sys") continue;  // never in a cell
    std::string at = paths.rootfs + "/" + own;
    if (mkdir(at.c_str(), 0755) < 0 && errno != EEXIST) throwErrno("mkdir(" + at + ")");
  }
  makeDirectories(paths.rootfs + launch.workingDirectory, 0755);
  if (launch.secretDelivery == "file") makeDirectories(paths.rootfs + kSecretsDirectory, 0755);

  // The working directory lives on the host, so what the workload leaves there can be read
  // (exported) from outside after the run; only the cell's host id may enter it.
  if (mkdir(paths.work.c_str(), 0700) < 0) throwErrno("mkdir(" + paths.work + ")");
  if (chown(paths.work.c_str(), launch.ids.hostBase, launch.ids.hostBase) < 0) {
    throwErrno("chown(" + paths.work + ")");
  }
  if (!launch.resolvConf.empty()) writeNewFile(paths.resolvConf, launch.resolvConf, 0644);
  if (mkdir(paths.state.c_str(), 0700) < 0) throwErrno("mkdir(" + paths.state + ")");
  if (mkdir(paths.bundle.c_str(), 0700) < 0) throwErrno("mkdir(" + paths.bundle + ")");
  writeNewFile(paths.bundle + "/config.json", config, 0600);
}

std::vector<std::string> removeGvisorLeftovers(const std::string& cellId,
                                               const std::string& cellDir) {
  std::vector<std::string> residue;
  if (!core::isValidCellId(cellId)) return {"invalid cell id " + cellId};
  if (!cellDir.empty()) {
    GvisorPaths paths = gvisorPaths(cellDir);
    for (const std::string& path : {paths.bundle, paths.rootfs, paths.work, paths.state,
                                    paths.resolvConf, paths.supervisorRoot}) {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
      if (ec) residue.push_back(path + ": " + ec.message());
    }
  }
  // cgroup v1: runsc makes the cell's cgroup in every controller the launcher did not (it joins
  // the launcher's, which exist); a start that failed half-way leaves them behind. Only a leaf
  // named for this cell that exists is its residue: in a controller cellos does not manage the
  // hierarchy may be read-only here (the unit's view), and rmdir answers EROFS before it looks
  // the name up, so a cell that never had a leaf there must not be charged with one.
  if (!CellCgroup::isV2()) {
    std::error_code ec;
    for (const auto& controller : std::filesystem::directory_iterator("/sys/fs/cgroup", ec)) {
      std::string leaf = controller.path().string() + "/cellos/" + cellId;
      struct stat st {};
      if (lstat(leaf.c_str(), &st) < 0 || !S_ISDIR(st.st_mode)) continue;
      if (rmdir(leaf.c_str()) < 0 && errno != ENOENT) {
        residue.push_back("cgroup " + leaf + ": " + strerror(errno));
      }
    }
  }
  return residue;
}

int gvisorWaitStatus(int runscStatus) {
  if (WIFSIGNALED(runscStatus)) return runscStatus;  // runsc itself was killed
  int code = WEXITSTATUS(runscStatus);
  if (code > 128 && code <= 128 + 64) return code - 128;  // W_EXITCODE(0, signal)
  return code << 8;                                       // W_EXITCODE(code, 0)
}

}  // namespace cellos::vmm
