// The guest init booted for real: QEMU's microvm machine under TCG, the guest kernel scripts/setup
// unpacked, the initramfs this build packed (vm-initramfs) and a small ext4 root image holding a
// static busybox. The test is the host: it holds one end of a socketpair whose other end is the
// VM's control port (-chardev socket,fd=N), and speaks vm_channel.h over it, decoding every
// guest frame with the host's decoder.
//
// Each case boots one VM (about 2 s under TCG, 128 MiB, 1 vCPU). Every wait is bounded by
// kDeadline, so a guest that hangs fails the test instead of hanging the run.

#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <x86intrin.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ipc/vm_channel.h"
#include "tests/integration/command.h"

namespace cellos {
namespace {

namespace fs = std::filesystem;
namespace vc = vmchannel;
using testing_support::buildDir;
using testing_support::readTextFile;
using testing_support::runCommand;
using testing_support::shellQuote;

constexpr auto kDeadline = std::chrono::seconds(60);
const fs::path kKernelDir = "/var/lib/cellos/vm/kernel";
const fs::path kBusybox = "/bin/busybox";

std::optional<std::string> findQemu() {
  for (const char* dir : {"/usr/bin", "/usr/local/bin"}) {
    fs::path qemu = fs::path(dir) / "qemu-system-x86_64";
    if (access(qemu.c_str(), X_OK) == 0) return qemu.string();
  }
  return std::nullopt;
}

// The host's TSC rate in kHz. Under TCG the guest's rdtsc is the host's (QEMU's
// cpu_get_host_ticks), and the guest kernel otherwise calibrates it against the emulated PIT:
// on a loaded host the vCPU thread is preempted mid-calibration, the kernel prints "tsc: Unable
// to calibrate against PIT ... Marking TSC unstable" and the boot hangs (4 of 6 boots with both
// cores busy). tsc_early_khz= skips that calibration.
uint64_t hostTscKhz() {
  auto sample = [](uint64_t& tsc) {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC_RAW, &t);
    tsc = __rdtsc();
    return static_cast<uint64_t>(t.tv_sec) * 1000000000u + static_cast<uint64_t>(t.tv_nsec);
  };
  uint64_t tsc0, tsc1;
  uint64_t ns0 = sample(tsc0);
  usleep(50 * 1000);
  uint64_t ns1 = sample(tsc1);
  return (tsc1 - tsc0) * 1000000u / (ns1 - ns0);
}

std::string trim(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

// What the guest sent in one run, decoded.
struct GuestRun {
  std::optional<std::string> hello;
  std::string stdoutText, stderrText, log;
  std::vector<std::string> directories;
  std::map<std::string, std::string> files;
  std::optional<vc::GuestFrame> exit;
  std::vector<std::string> order;  // frame types in arrival order, one letter each
};

class VmGuest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (QEMU reads the root image, mke2fs -d)";
    auto qemu = findQemu();
    if (!qemu) GTEST_SKIP() << "no qemu-system-x86_64 (Debian package qemu-system-x86)";
    qemu_ = *qemu;
    if (!fs::exists(kKernelDir / "current")) {
      GTEST_SKIP() << "no guest kernel (" << (kKernelDir / "current").string()
                   << "; scripts/setup unpacks it)";
    }
    if (!fs::exists(kBusybox)) GTEST_SKIP() << "no static busybox (/bin/busybox, busybox-static)";
    release_ = trim(readTextFile(kKernelDir / "current"));
    kernel_ = kKernelDir / release_ / "vmlinuz";
    initramfs_ = fs::path(buildDir()) / "vm" / "initramfs.cpio";
    ASSERT_TRUE(fs::exists(initramfs_)) << initramfs_ << " not built (target vm-initramfs)";

    std::string pattern = (fs::temp_directory_path() / "cellos-vm-guest-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    makeRootImage();
  }

  void TearDown() override {
    if (qemuPid_ > 0) {
      kill(qemuPid_, SIGKILL);
      waitpid(qemuPid_, nullptr, 0);
    }
    if (hostFd_ >= 0) close(hostFd_);
    if (!dir_.empty()) {
      if (HasFailure()) {
        for (const char* log : {"serial.log", "qemu.log"}) {
          if (fs::exists(dir_ / log)) {
            std::cerr << log << ":\n" << readTextFile(dir_ / log) << "\n";
          }
        }
      }
      fs::remove_all(dir_);
    }
  }

  // The root image as a cell's would be: read-only busybox, the empty mount points the guest
  // init mounts on, and an /etc/resolv.conf to bind over.
  void makeRootImage() {
    fs::path root = dir_ / "root";
    for (const char* d : {"bin", "etc", "proc", "dev", "tmp", "run", "workspace"}) {
      fs::create_directories(root / d);
    }
    fs::copy_file(kBusybox, root / "bin" / "busybox");
    std::ofstream(root / "etc" / "resolv.conf") << "nameserver 192.0.2.53\n";
    image_ = dir_ / "root.ext4";
    auto made = runCommand("mke2fs -q -t ext4 -d " + shellQuote(root.string()) + " " +
                               shellQuote(image_.string()) + " 16M",
                           60);
    ASSERT_EQ(made.status, 0) << made.output;
  }

  // Starts QEMU with `extraAppend` on the kernel command line; the control port is the far end
  // of a socketpair whose near end (hostFd_) the test reads.
  void boot(const std::string& extraAppend = "") {
    int pair[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    hostFd_ = pair[0];
    int guestFd = pair[1];
    std::vector<std::string> args = {
        qemu_,
        "-M",
        "microvm,acpi=on",
        "-accel",
        "tcg",
        "-m",
        "128",
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-kernel",
        kernel_.string(),
        "-initrd",
        initramfs_.string(),
        "-append",
        "console=ttyS0 quiet panic=-1 reboot=t pci=off tsc_early_khz=" +
            std::to_string(hostTscKhz()) + (extraAppend.empty() ? "" : " " + extraAppend),
        "-serial",
        "file:" + (dir_ / "serial.log").string(),
        "-device",
        "virtio-serial-device",
        "-chardev",
        "socket,id=ctl,fd=" + std::to_string(guestFd),
        "-device",
        "virtserialport,chardev=ctl,name=cellos.ctl",
        "-drive",
        "file=" + image_.string() + ",if=none,id=root,format=raw,readonly=on",
        "-device",
        "virtio-blk-device,drive=root"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::string qemuLog = (dir_ / "qemu.log").string();
    bootStart_ = std::chrono::steady_clock::now();
    qemuPid_ = fork();
    ASSERT_GE(qemuPid_, 0);
    if (qemuPid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      int null = open("/dev/null", O_RDONLY);
      int log = open(qemuLog.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (null < 0 || log < 0 || dup2(null, 0) < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0)
        _exit(126);
      // The one fd QEMU inherits: its end of the control port.
      int flags = fcntl(guestFd, F_GETFD);
      if (flags < 0 || fcntl(guestFd, F_SETFD, flags & ~FD_CLOEXEC) < 0) _exit(126);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(guestFd);
  }

  std::chrono::steady_clock::time_point deadline() const { return bootStart_ + kDeadline; }

  int remainingMs() const {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline() - std::chrono::steady_clock::now());
    return left.count() > 0 ? static_cast<int>(left.count()) : 0;
  }

  // The next guest frame, decoded; nullopt at EOF (QEMU gone) or at the deadline.
  std::optional<vc::GuestFrame> nextFrame() {
    for (;;) {
      if (auto frame = reader_.next()) {
        std::string why;
        auto decoded = vc::decodeGuestFrame(frame->first, frame->second, &why);
        EXPECT_TRUE(decoded) << "the host's decoder refused a guest frame: " << why;
        return decoded;
      }
      EXPECT_FALSE(reader_.failed()) << reader_.error();
      if (reader_.failed()) return std::nullopt;
      pollfd p = {.fd = hostFd_, .events = POLLIN, .revents = 0};
      int ready = poll(&p, 1, remainingMs());
      if (ready <= 0) {
        ADD_FAILURE() << "no frame from the guest within " << kDeadline.count() << " s";
        return std::nullopt;
      }
      char buffer[65536];
      ssize_t n = read(hostFd_, buffer, sizeof(buffer));
      if (n <= 0) return std::nullopt;
      reader_.feed(buffer, static_cast<size_t>(n));
    }
  }

  void send(vc::FrameType type, std::string_view payload) {
    std::string frame = vc::encodeFrame(type, payload);
    ASSERT_EQ(write(hostFd_, frame.data(), frame.size()), static_cast<ssize_t>(frame.size()));
  }

  // Reads until the exit frame (or EOF), then closes the host end: the guest powers off on
  // that hangup.
  GuestRun collect(GuestRun run = {}) {
    while (auto frame = nextFrame()) {
      run.order.push_back(std::string(1, static_cast<char>(frame->type)));
      switch (frame->type) {
        case vc::FrameType::kHello:
          run.hello = frame->text;
          break;
        case vc::FrameType::kStdout:
          run.stdoutText += frame->text;
          break;
        case vc::FrameType::kStderr:
          run.stderrText += frame->text;
          break;
        case vc::FrameType::kLog:
          run.log += frame->text + "\n";
          break;
        case vc::FrameType::kDirectory:
          run.directories.push_back(frame->text);
          break;
        case vc::FrameType::kFile: {
          std::string& content = run.files[frame->text];
          EXPECT_EQ(frame->offset, content.size());
          content += frame->data;
          break;
        }
        case vc::FrameType::kExit:
          run.exit = frame;
          break;
        default:
          ADD_FAILURE() << "unexpected frame type";
      }
      if (run.exit) break;
    }
    close(hostFd_);
    hostFd_ = -1;
    return run;
  }

  // Boots, answers the hello with `config` and collects the run.
  GuestRun runCell(const vc::GuestConfig& config) {
    boot();
    GuestRun run;
    auto hello = nextFrame();
    if (!hello || hello->type != vc::FrameType::kHello) {
      ADD_FAILURE() << "no hello from the guest";
      return run;
    }
    run.hello = hello->text;
    auto helloAt = std::chrono::steady_clock::now() - bootStart_;
    std::cout << "hello " << std::chrono::duration_cast<std::chrono::milliseconds>(helloAt).count()
              << " ms after QEMU started\n";
    send(vc::FrameType::kConfig, vc::encodeGuestConfig(config));
    return collect(std::move(run));
  }

  // Waits (bounded) for QEMU to exit by itself; returns its exit code, -1 if it had to be killed.
  int waitForQemu() {
    while (remainingMs() > 0) {
      int status = 0;
      pid_t done = waitpid(qemuPid_, &status, WNOHANG);
      if (done == qemuPid_) {
        qemuPid_ = -1;
        std::cout << "QEMU gone "
                  << std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::steady_clock::now() - bootStart_)
                         .count()
                  << " ms after it started\n";
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      usleep(20 * 1000);
    }
    ADD_FAILURE() << "QEMU did not exit within " << kDeadline.count() << " s";
    return -1;
  }

  static vc::GuestConfig shellConfig(const std::string& script) {
    vc::GuestConfig config;
    config.argv = {"/bin/busybox", "sh", "-c", script};
    config.env = {"PATH=/bin"};
    config.hostname = "cell-under-test";
    config.workingDirectoryMaxBytes = 8u << 20;
    return config;
  }

  std::string qemu_, release_;
  fs::path kernel_, initramfs_, image_, dir_;
  pid_t qemuPid_ = -1;
  int hostFd_ = -1;
  vc::FrameReader reader_;
  std::chrono::steady_clock::time_point bootStart_;
};

TEST_F(VmGuest, RunsTheWorkloadAndReturnsOutputFilesAndExitStatus) {
  GuestRun run = runCell(shellConfig("echo hi; echo err >&2; echo data > out.txt; exit 3"));
  ASSERT_TRUE(run.hello);
  utsname host;
  ASSERT_EQ(uname(&host), 0);
  // The workload ran under the guest's kernel, not the host's.
  EXPECT_NE(*run.hello, host.release);
  EXPECT_EQ(*run.hello, release_);
  EXPECT_EQ(run.stdoutText, "hi\n");
  EXPECT_EQ(run.stderrText, "err\n");
  EXPECT_EQ(run.files, (std::map<std::string, std::string>{{"out.txt", "data\n"}}));
  ASSERT_TRUE(run.exit) << "log:\n" << run.log;
  EXPECT_TRUE(WIFEXITED(run.exit->waitStatus));
  EXPECT_EQ(WEXITSTATUS(run.exit->waitStatus), 3);
  EXPECT_EQ(run.exit->oomKills, 0u);
  EXPECT_FALSE(run.exit->workingDirectoryTruncated);
  EXPECT_EQ(run.order.back(), "X");
  EXPECT_EQ(waitForQemu(), 0);
}

TEST_F(VmGuest, PowerOffOnTheCommandLineEndsTheBootWithoutAHello) {
  boot("cellos.poweroff");
  // EOF with no frame at all: the guest powered off before it opened the port.
  char byte;
  pollfd p = {.fd = hostFd_, .events = POLLIN, .revents = 0};
  ASSERT_EQ(poll(&p, 1, remainingMs()), 1) << "the guest neither spoke nor powered off";
  EXPECT_EQ(read(hostFd_, &byte, 1), 0) << "the guest sent a frame";
  EXPECT_EQ(waitForQemu(), 0);
}

TEST_F(VmGuest, BuildsTheCellsRootNetworkLimitsAndSecretFiles) {
  vc::GuestConfig config = shellConfig(
      "hostname; cat /etc/resolv.conf; cat /proc/self/cgroup; ulimit -n; ulimit -Hn; "
      "ls -ln /run/secrets | busybox awk 'NR>1 {print $1, $NF}'; cat /run/secrets/api_token; "
      "echo; echo \"env:${api_token:-none}\"; pwd; touch /root-is-writable 2>/dev/null || "
      "echo root-read-only; echo > /run/secrets/api_token 2>/dev/null || echo secrets-read-only; "
      "mkdir -p sub/dir; echo nested > sub/dir/file; : > empty; ln -s /etc/resolv.conf link; "
      "cat /sys/fs/cgroup/workload/pids.max 2>/dev/null || echo no-sys");
  config.resolvConf = "nameserver 127.0.0.1\n";
  config.nofileMax = 512;
  config.pidsMax = 32;
  config.secretDelivery = "file";
  config.secrets = {{"api_token", "s3cret-value"}};
  GuestRun run = runCell(config);
  ASSERT_TRUE(run.exit) << "log:\n" << run.log << "stderr:\n" << run.stderrText;
  EXPECT_EQ(run.exit->waitStatus, 0) << run.stderrText;
  EXPECT_EQ(run.stdoutText,
            "cell-under-test\n"
            "nameserver 127.0.0.1\n"
            "0::/workload\n"
            "512\n"
            "512\n"
            "-r-------- api_token\n"
            "s3cret-value\n"
            "env:none\n"
            "/workspace\n"
            "root-read-only\n"
            "secrets-read-only\n"
            "no-sys\n");
  // Directories before their children; the symlink is not copied.
  EXPECT_EQ(run.directories, (std::vector<std::string>{"sub", "sub/dir"}));
  EXPECT_EQ(run.files,
            (std::map<std::string, std::string>{{"empty", ""}, {"sub/dir/file", "nested\n"}}));
  EXPECT_EQ(waitForQemu(), 0);
}

TEST_F(VmGuest, EnvSecretsReachOnlyTheEnvironment) {
  vc::GuestConfig config =
      shellConfig("echo \"token=$TOKEN\"; ls /run/secrets 2>/dev/null || echo no-secret-files");
  config.secretDelivery = "env";
  config.secrets = {{"TOKEN", "from-env"}};
  GuestRun run = runCell(config);
  ASSERT_TRUE(run.exit) << run.log;
  EXPECT_EQ(run.stdoutText, "token=from-env\nno-secret-files\n");
  EXPECT_EQ(waitForQemu(), 0);
}

TEST_F(VmGuest, ExecFailureExits127WithTheLinuxBackendsMessage) {
  vc::GuestConfig config;
  config.argv = {"/bin/not-there"};
  GuestRun run = runCell(config);
  ASSERT_TRUE(run.exit) << run.log;
  EXPECT_TRUE(WIFEXITED(run.exit->waitStatus));
  EXPECT_EQ(WEXITSTATUS(run.exit->waitStatus), 127);
  EXPECT_EQ(run.stderrText, "cellos: exec /bin/not-there: No such file or directory\n");
  EXPECT_EQ(waitForQemu(), 0);
}

TEST_F(VmGuest, TimeoutTerminatesTheWorkload) {
  vc::GuestConfig config = shellConfig("echo started; exec busybox sleep 100");
  config.timeoutMs = 1000;
  GuestRun run = runCell(config);
  ASSERT_TRUE(run.exit) << run.log;
  EXPECT_EQ(run.stdoutText, "started\n");
  EXPECT_TRUE(WIFSIGNALED(run.exit->waitStatus));
  EXPECT_EQ(WTERMSIG(run.exit->waitStatus), SIGTERM);
  EXPECT_NE(run.log.find("timeout of 1000 ms"), std::string::npos) << run.log;
  EXPECT_EQ(waitForQemu(), 0);
}

TEST_F(VmGuest, SignalFramesReachTheWorkloadsProcessGroup) {
  boot();
  auto hello = nextFrame();
  ASSERT_TRUE(hello && hello->type == vc::FrameType::kHello);
  // A child in the background and the shell itself: both are in the group the signal hits.
  send(vc::FrameType::kConfig,
       vc::encodeGuestConfig(shellConfig("busybox sleep 100 & echo ready; wait")));
  GuestRun run;
  while (auto frame = nextFrame()) {
    if (frame->type == vc::FrameType::kStdout) {
      run.stdoutText += frame->text;
      if (run.stdoutText == "ready\n") break;
    }
  }
  ASSERT_EQ(run.stdoutText, "ready\n");
  send(vc::FrameType::kSignal, std::string(1, static_cast<char>(SIGKILL)));
  run = collect(std::move(run));
  ASSERT_TRUE(run.exit) << run.log;
  EXPECT_TRUE(WIFSIGNALED(run.exit->waitStatus));
  EXPECT_EQ(WTERMSIG(run.exit->waitStatus), SIGKILL);
  EXPECT_EQ(waitForQemu(), 0);
}

TEST_F(VmGuest, AMissingMountPointIsReportedAndTheCellAborts) {
  vc::GuestConfig config = shellConfig("echo never");
  config.workingDirectory = "/srv/work";
  GuestRun run = runCell(config);
  ASSERT_TRUE(run.exit);
  EXPECT_EQ(run.exit->waitStatus, 125 << 8);
  EXPECT_NE(run.log.find("the root image has no directory /srv/work"), std::string::npos)
      << run.log;
  EXPECT_EQ(run.stdoutText, "");
  EXPECT_EQ(waitForQemu(), 0);
}

}  // namespace
}  // namespace cellos
