// The gvisor backend's OCI bundle (config.json) as generated from a cell launch, the root view it
// binds, and how runsc's exit becomes the workload's wait status.

#include "vmm-agent/backends/gvisor/gvisor_cell.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace cellos::vmm {
namespace {

using nlohmann::json;

CellLaunch sampleLaunch() {
  CellLaunch launch;
  launch.cellId = "build-42";
  launch.argv = {"/bin/sh", "-c", "echo hi"};
  launch.env = {{"LANG", "C.UTF-8"}, {"SPACED", "x y=z"}, {"EMPTY", ""}};
  launch.workingDirectory = "/workspace";
  launch.cellDir = "/run/cellos/vmm/cells/build-42";
  launch.ids = CellIdRange{1879048192, 65536};
  launch.nofileMax = 4096;
  return launch;
}

json configOf(const CellLaunch& launch) {
  return json::parse(
      gvisorOciConfig(launch, gvisorPaths(launch.cellDir), gvisorRootView(launch.imageRoot)));
}

json mountAt(const json& config, const std::string& destination) {
  for (const auto& m : config["mounts"]) {
    if (m["destination"] == destination) return m;
  }
  return json();
}

TEST(GvisorBundle, ProcessIsExactlyTheDocumentsCommandAsTheCellsHostId) {
  json config = configOf(sampleLaunch());
  const json& process = config["process"];
  EXPECT_EQ(process["args"], json({"/bin/sh", "-c", "echo hi"}));
  EXPECT_EQ(process["env"], json({"LANG=C.UTF-8", "SPACED=x y=z", "EMPTY="}));
  EXPECT_EQ(process["cwd"], "/workspace");
  EXPECT_EQ(process["user"]["uid"], 1879048192u);
  EXPECT_EQ(process["user"]["gid"], 1879048192u);
  EXPECT_FALSE(process["user"].contains("additionalGids"));
  EXPECT_EQ(process["terminal"], false);
  EXPECT_EQ(process["noNewPrivileges"], true);
  for (const char* set : {"bounding", "effective", "inheritable", "permitted", "ambient"}) {
    EXPECT_EQ(process["capabilities"][set], json::array()) << set;
  }
  EXPECT_EQ(config["hostname"], "build-42");
}

TEST(GvisorBundle, RootIsReadOnlyAndOnlyTheWorkingDirectoryIsWritable) {
  CellLaunch launch = sampleLaunch();
  json config = configOf(launch);
  EXPECT_EQ(config["root"]["path"], launch.cellDir + "/rootfs");
  EXPECT_EQ(config["root"]["readonly"], true);
  for (const char* hostDir : {"/usr", "/etc"}) {
    json m = mountAt(config, hostDir);
    ASSERT_TRUE(m.is_object()) << hostDir;
    EXPECT_EQ(m["source"], hostDir);
    EXPECT_NE(std::find(m["options"].begin(), m["options"].end(), "ro"), m["options"].end());
  }
  json work = mountAt(config, "/workspace");
  ASSERT_TRUE(work.is_object());
  EXPECT_EQ(work["source"], launch.cellDir + "/work");
  EXPECT_NE(std::find(work["options"].begin(), work["options"].end(), "rw"), work["options"].end());
  json resolv = mountAt(config, "/etc/resolv.conf");
  ASSERT_TRUE(resolv.is_object());
  EXPECT_EQ(resolv["source"], launch.cellDir + "/resolv.conf");
  EXPECT_EQ(mountAt(config, "/tmp")["type"], "tmpfs");
  EXPECT_EQ(mountAt(config, "/proc")["type"], "proc");
  EXPECT_TRUE(mountAt(config, "/sys").is_null()) << "no /sys in a cell";
  EXPECT_TRUE(mountAt(config, "/home").is_null());
  // Every writable mount: the working directory and the cell's own tmpfs, nothing of the host.
  for (const auto& m : config["mounts"]) {
    bool ro = std::find(m["options"].begin(), m["options"].end(), "ro") != m["options"].end();
    if (m["type"] == "bind" && !ro) {
      EXPECT_EQ(m["destination"], "/workspace");
    }
  }
}

TEST(GvisorBundle, NamespacesLeaveTheNetworkToTheCellsOwn) {
  json config = configOf(sampleLaunch());
  std::vector<std::string> types;
  for (const auto& ns : config["linux"]["namespaces"]) types.push_back(ns["type"]);
  EXPECT_EQ(types, (std::vector<std::string>{"pid", "ipc", "uts", "mount"}))
      << "runsc --network=host runs in the supervisor's namespace: the cell's veth + nftables";
  EXPECT_EQ(config["linux"]["cgroupsPath"], "/cellos/build-42");
}

TEST(GvisorBundle, LimitsBecomeResourcesAndPidsMaxBecomesNproc) {
  CellLaunch launch = sampleLaunch();
  launch.memoryMaxBytes = 33554432;
  launch.cpuMax = CellCpuMax{20000, 100000};
  launch.pidsMax = 16;
  json config = configOf(launch);
  EXPECT_EQ(config["linux"]["resources"]["memory"]["limit"], 33554432);
  EXPECT_EQ(config["linux"]["resources"]["cpu"]["quota"], 20000);
  EXPECT_EQ(config["linux"]["resources"]["cpu"]["period"], 100000);
  EXPECT_FALSE(config["linux"]["resources"].contains("pids"))
      << "host pids would count the Sentry's threads";
  std::map<std::string, json> rlimits;
  for (const auto& r : config["process"]["rlimits"]) rlimits[r["type"]] = r;
  EXPECT_EQ(rlimits["RLIMIT_NPROC"]["hard"], 16);
  EXPECT_EQ(rlimits["RLIMIT_NPROC"]["soft"], 16);
  EXPECT_EQ(rlimits["RLIMIT_NOFILE"]["hard"], 4096);
  EXPECT_EQ(rlimits["RLIMIT_NOFILE"]["soft"], 1024);
  EXPECT_EQ(rlimits["RLIMIT_CORE"]["hard"], 0);

  json unlimited = configOf(sampleLaunch());
  EXPECT_EQ(unlimited["linux"]["resources"], json::object());
  for (const auto& r : unlimited["process"]["rlimits"]) EXPECT_NE(r["type"], "RLIMIT_NPROC");
}

// Secrets: file delivery binds the supervisor's secrets tmpfs read-only at /run/secrets; env
// delivery binds nothing (the values go into a private bundle at start); the supervisor learns
// the delivery from the annotation, and a cell without secrets has neither.
TEST(GvisorBundle, SecretsAreABindForFileDeliveryAndOnlyAnAnnotationForEnv) {
  CellLaunch file = sampleLaunch();
  file.secretDelivery = "file";
  json config = configOf(file);
  json secrets = mountAt(config, "/run/secrets");
  ASSERT_TRUE(secrets.is_object());
  EXPECT_EQ(secrets["type"], "bind");
  EXPECT_EQ(secrets["source"], kGvisorSecretsSource);
  for (const char* option : {"ro", "nosuid", "nodev", "noexec"}) {
    EXPECT_NE(std::find(secrets["options"].begin(), secrets["options"].end(), option),
              secrets["options"].end())
        << option;
  }
  EXPECT_EQ(config["annotations"][kGvisorSecretsAnnotation], "file");

  CellLaunch env = sampleLaunch();
  env.secretDelivery = "env";
  config = configOf(env);
  EXPECT_TRUE(mountAt(config, "/run/secrets").is_null());
  EXPECT_EQ(config["annotations"][kGvisorSecretsAnnotation], "env");
  EXPECT_EQ(config["process"]["env"], json({"LANG=C.UTF-8", "SPACED=x y=z", "EMPTY="}));

  config = configOf(sampleLaunch());
  EXPECT_TRUE(mountAt(config, "/run/secrets").is_null());
  EXPECT_FALSE(config.contains("annotations"));

  CellLaunch bad = sampleLaunch();
  bad.secretDelivery = "argv";
  EXPECT_THROW(configOf(bad), std::invalid_argument);
}

TEST(GvisorBundle, BadLaunchesAreRefused) {
  CellLaunch relative = sampleLaunch();
  relative.argv = {"sh"};
  EXPECT_THROW(configOf(relative), std::invalid_argument);
  CellLaunch hostRoot = sampleLaunch();
  hostRoot.ids.hostBase = 0;
  EXPECT_THROW(configOf(hostRoot), std::invalid_argument);
  CellLaunch badId = sampleLaunch();
  badId.cellId = "../x";
  EXPECT_THROW(configOf(badId), std::invalid_argument);
  CellLaunch badCwd = sampleLaunch();
  badCwd.workingDirectory = "work";
  EXPECT_THROW(configOf(badCwd), std::invalid_argument);
}

TEST(GvisorBundle, AnImagesEntriesAreTheRootAndItsOwnProcDevTmpAreNot) {
  std::string image =
      std::filesystem::temp_directory_path() / ("gvisor-image-" + std::to_string(getpid()));
  std::filesystem::create_directories(image + "/bin");
  std::filesystem::create_directories(image + "/proc");
  std::filesystem::create_directories(image + "/tmp");
  std::ofstream(image + "/hello") << "hi\n";
  std::filesystem::create_symlink("bin", image + "/sbin");
  GvisorRootView view = gvisorRootView(image);
  std::vector<std::string> binds;
  for (const auto& b : view.binds) binds.push_back(b.destination);
  EXPECT_EQ(binds, (std::vector<std::string>{"/bin", "/hello"}));
  ASSERT_EQ(view.symlinks.size(), 1u);
  EXPECT_EQ(view.symlinks[0], (std::pair<std::string, std::string>{"sbin", "bin"}));
  CellLaunch launch = sampleLaunch();
  launch.imageRoot = image;
  json config = configOf(launch);
  EXPECT_TRUE(mountAt(config, "/etc/resolv.conf").is_null()) << "the image has no /etc";
  EXPECT_TRUE(mountAt(config, "/usr").is_null()) << "the host's /usr is not in an image cell";
  std::filesystem::remove_all(image);
}

TEST(GvisorBundle, RunscExitBecomesTheWorkloadsWaitStatus) {
  auto exited = [](int code) { return code << 8; };
  int status = gvisorWaitStatus(exited(0));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  status = gvisorWaitStatus(exited(3));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 3);
  status = gvisorWaitStatus(exited(128 + SIGTERM));
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
  status = gvisorWaitStatus(exited(128 + SIGKILL));
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  status = gvisorWaitStatus(exited(128));  // runsc's own failure: not a signal
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 128);
  status = gvisorWaitStatus(exited(200));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 200);
  status = gvisorWaitStatus(SIGKILL);  // runsc itself was killed
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

}  // namespace
}  // namespace cellos::vmm
