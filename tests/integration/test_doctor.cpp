// `cellos doctor` (issue 9), run as a user runs it: on this host it names every check and passes
// (the CI host has the accounts, cgroups and kernel cellos needs; /dev/kvm and systemd are
// warnings there), and when a socket or the key directory is wrong it fails, saying how to fix.

#include "tests/integration/command.h"

#include <grp.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

namespace cellos {
namespace {

using testing_support::buildDir;
using testing_support::runCommand;
using testing_support::shellQuote;
namespace fs = std::filesystem;

struct TempDir {
  std::string path;
  TempDir() {
    char pattern[] = "/tmp/cellos-doctor-XXXXXX";
    if (mkdtemp(pattern) != nullptr) path = pattern;
    chmod(path.c_str(), 0755);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

testing_support::CommandResult doctor(const std::string& runDir, const std::string& stateDir) {
  return runCommand(shellQuote(buildDir() + "/bin/cellos") + " doctor --run-dir " +
                    shellQuote(runDir) + " --state-dir " + shellQuote(stateDir));
}

// A listening Unix socket at `path` with `mode` (what a daemon leaves behind).
void makeSocket(const std::string& path, mode_t mode) {
  fs::create_directories(fs::path(path).parent_path());
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << strerror(errno);
  close(fd);  // the file stays; doctor only looks at it
  ASSERT_EQ(chmod(path.c_str(), mode), 0);
}

bool hasAccounts() {
  return getpwnam("cellos") && getpwnam("cellos-signer") && getpwnam("cellos-dns") &&
         getgrnam("cellos");
}

TEST(Doctor, ExaminesThisHostAndPassesWhereCellosCanRun) {
  if (!hasAccounts()) GTEST_SKIP() << "needs the cellos accounts (scripts/setup makes them)";
  TempDir run, state;
  auto result = doctor(run.path + "/absent", state.path);
  // Every check has its line.
  for (const char* check : {"kernel", "cgroups", "runsc", "/dev/kvm", "microvm", "accounts",
                            "programs", "sockets", "state", "units"}) {
    EXPECT_NE(result.output.find(std::string("  ") + check), std::string::npos)
        << check << " missing from:\n"
        << result.output;
  }
  EXPECT_NE(result.output.find("ok    kernel"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("ok    cgroups"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("ok    accounts"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("ok    programs"), std::string::npos) << result.output;
  // No service runs here: the sockets are a warning with the command that starts them.
  EXPECT_NE(result.output.find("fix: systemctl enable --now cellos.target"), std::string::npos)
      << result.output;
  if (access("/dev/kvm", F_OK) != 0) {
    EXPECT_NE(result.output.find("warn  /dev/kvm"), std::string::npos) << result.output;
  }
  EXPECT_NE(result.output.find(" failed, "), std::string::npos);
  EXPECT_EQ(result.status, 0) << result.output;
}

TEST(Doctor, FailsOnALooseSocketAndSaysHowToFixIt) {
  if (!hasAccounts()) GTEST_SKIP() << "needs the cellos accounts (scripts/setup makes them)";
  if (geteuid() != 0) GTEST_SKIP() << "needs root: the run directory must be owned by root";
  TempDir run, state;
  makeSocket(run.path + "/broker/broker.sock", 0666);
  // A regular file where a socket belongs.
  { std::ofstream(run.path + "/vmm.sock") << "not a socket"; }
  auto result = doctor(run.path, state.path);
  EXPECT_EQ(result.status, 1) << result.output;
  EXPECT_NE(result.output.find("FAIL  sockets   " + run.path + "/broker/broker.sock is 0666"),
            std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("chmod 0660 " + run.path + "/broker/broker.sock"), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find(run.path + "/vmm.sock exists but is not a socket"),
            std::string::npos)
      << result.output;

  // The control: with the socket as the unit makes it, that line is ok.
  fs::remove(run.path + "/vmm.sock");
  fs::remove(run.path + "/broker/broker.sock");
  makeSocket(run.path + "/broker/broker.sock", 0660);
  ASSERT_EQ(chown((run.path + "/broker/broker.sock").c_str(), getpwnam("cellos")->pw_uid,
                  getgrnam("cellos")->gr_gid),
            0);
  result = doctor(run.path, state.path);
  EXPECT_NE(result.output.find("ok    sockets   " + run.path + "/broker/broker.sock 0660"),
            std::string::npos)
      << result.output;
  EXPECT_EQ(result.status, 0) << result.output;
}

TEST(Doctor, FailsWhenTheKeyDirectoryOrAKeyIsReadableByOthers) {
  if (!hasAccounts()) GTEST_SKIP() << "needs the cellos accounts (scripts/setup makes them)";
  if (geteuid() != 0) GTEST_SKIP() << "needs root: the key directory belongs to cellos-signer";
  TempDir run, state;
  std::string signer = state.path + "/signer";
  fs::create_directories(signer);
  ASSERT_EQ(
      chown(signer.c_str(), getpwnam("cellos-signer")->pw_uid, getgrnam("cellos-signer")->gr_gid),
      0);
  ASSERT_EQ(chmod(signer.c_str(), 0755), 0);
  auto result = doctor(run.path, state.path);
  EXPECT_EQ(result.status, 1) << result.output;
  EXPECT_NE(result.output.find("FAIL  state     " + signer + " holds the signing key but is 0755"),
            std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("chmod 0700 " + signer), std::string::npos) << result.output;

  ASSERT_EQ(chmod(signer.c_str(), 0700), 0);
  { std::ofstream(signer + "/signing-key.pem") << "not a real key"; }
  ASSERT_EQ(chmod((signer + "/signing-key.pem").c_str(), 0644), 0);
  result = doctor(run.path, state.path);
  EXPECT_EQ(result.status, 1) << result.output;
  EXPECT_NE(
      result.output.find("key files readable by others: " + signer + "/signing-key.pem (0644)"),
      std::string::npos)
      << result.output;

  ASSERT_EQ(chmod((signer + "/signing-key.pem").c_str(), 0600), 0);
  result = doctor(run.path, state.path);
  EXPECT_NE(result.output.find("ok    state"), std::string::npos) << result.output;
}

// Issue 16: the microvm line reports the accelerator the VM launcher decided for this boot of
// the host (doctor boots nothing itself), and says when it has not decided yet.
TEST(Doctor, ReportsTheMicrovmAcceleratorTheLauncherDecidedThisBoot) {
  if (!hasAccounts()) GTEST_SKIP() << "needs the cellos accounts (scripts/setup makes them)";
  TempDir run, state, vm;
  auto doctorVm = [&] {
    return runCommand(shellQuote(buildDir() + "/bin/cellos") + " doctor --run-dir " +
                      shellQuote(run.path + "/absent") + " --state-dir " + shellQuote(state.path) +
                      " --vm-dir " + shellQuote(vm.path));
  };
  if (access("/usr/bin/qemu-system-x86_64", X_OK) != 0) {
    auto result = doctorVm();
    EXPECT_NE(result.output.find("warn  microvm   /usr/bin/qemu-system-x86_64 not found"),
              std::string::npos)
        << result.output;
    return;
  }
  auto result = doctorVm();
  EXPECT_NE(result.output.find("warn  microvm   no guest kernel at " + vm.path + "/kernel"),
            std::string::npos)
      << result.output;

  fs::create_directories(vm.path + "/kernel/6.1.0-test/");
  { std::ofstream(vm.path + "/kernel/current") << "6.1.0-test\n"; }
  { std::ofstream(vm.path + "/kernel/6.1.0-test/vmlinuz") << "not a kernel"; }
  result = doctorVm();
  EXPECT_NE(result.output.find("ok    microvm   guest kernel 6.1.0-test; accelerator not decided "
                               "since this host booted"),
            std::string::npos)
      << result.output;

  std::string bootId;
  std::ifstream("/proc/sys/kernel/random/boot_id") >> bootId;
  ASSERT_FALSE(bootId.empty());
  fs::create_directories(vm.path + "/images");
  auto probe = [&](const std::string& boot, const std::string& answer) {
    std::ofstream(vm.path + "/images/accel-probe")
        << boot << " /usr/bin/qemu-system-x86_64:1:2:3:4.0\n"
        << answer << "\na KVM guest did not power off within 8000 ms\n";
  };
  probe(bootId, "tcg");
  result = doctorVm();
  EXPECT_NE(result.output.find("warn  microvm   guest kernel 6.1.0-test; accelerator tcg (software "
                               "emulation, slow): a KVM guest did not power off within 8000 ms"),
            std::string::npos)
      << result.output;
  EXPECT_EQ(result.status, 0) << "a warning, not a failure: " << result.output;
  probe(bootId, "kvm");
  EXPECT_NE(doctorVm().output.find("ok    microvm   guest kernel 6.1.0-test; accelerator kvm"),
            std::string::npos);
  probe("00000000-0000-0000-0000-000000000000", "kvm");  // another boot's answer is stale
  EXPECT_NE(doctorVm().output.find("accelerator not decided since this host booted"),
            std::string::npos);
}

}  // namespace
}  // namespace cellos
