// The guest init's host-testable parts (guest-init/): the config-to-plan decisions, the frame
// writer and the working-directory export, checked through the host's own decoder of guest
// frames (decodeGuestFrame), as the VM supervisor will read them.

#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "guest-init/control_port.h"
#include "guest-init/frame_writer.h"
#include "guest-init/plan.h"
#include "guest-init/workdir_export.h"
#include "ipc/vm_channel.h"

namespace cellos::guest {
namespace {

namespace vc = vmchannel;
namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "cellos-guest-XXXXXX").string();
    EXPECT_NE(::mkdtemp(pattern.data()), nullptr);
    path_ = pattern;
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void writeText(const fs::path& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
}

// Decodes every frame of `bytes` with the host's decoder; fails the test on any refusal.
std::vector<vc::GuestFrame> decodeAll(const std::string& bytes) {
  vc::FrameReader reader;
  reader.feed(bytes.data(), bytes.size());
  std::vector<vc::GuestFrame> frames;
  while (auto frame = reader.next()) {
    std::string why;
    auto decoded = vc::decodeGuestFrame(frame->first, frame->second, &why);
    EXPECT_TRUE(decoded.has_value()) << why;
    if (decoded) frames.push_back(*decoded);
  }
  EXPECT_FALSE(reader.failed()) << reader.error();
  return frames;
}

TEST(GuestPlan, CommandLineWordsAreWholeWords) {
  EXPECT_TRUE(cmdlineHasWord("console=ttyS0 quiet cellos.poweroff\n", kPowerOffWord));
  EXPECT_TRUE(cmdlineHasWord("cellos.poweroff", kPowerOffWord));
  EXPECT_FALSE(cmdlineHasWord("console=ttyS0 cellos.poweroff=1", kPowerOffWord));
  EXPECT_FALSE(cmdlineHasWord("xcellos.poweroff quiet", kPowerOffWord));
  EXPECT_FALSE(cmdlineHasWord("", kPowerOffWord));
}

TEST(GuestPlan, WorkingDirectoryMustBeAPlainAbsolutePathOutsideTheInitsMounts) {
  std::string why;
  EXPECT_EQ(checkWorkingDirectory("/workspace", &why), "/workspace");
  EXPECT_EQ(checkWorkingDirectory("/home/cell/work", &why), "/home/cell/work");
  EXPECT_FALSE(checkWorkingDirectory("/", &why));
  EXPECT_EQ(why, "working directory is the root");
  EXPECT_FALSE(checkWorkingDirectory("workspace", &why));
  EXPECT_FALSE(checkWorkingDirectory("/a/../etc", &why));
  EXPECT_FALSE(checkWorkingDirectory("/a//b", &why));
  EXPECT_FALSE(checkWorkingDirectory("/workspace/", &why));
  EXPECT_FALSE(checkWorkingDirectory("/proc/self", &why));
  EXPECT_EQ(why, "working directory is inside /proc, which the guest init mounts itself");
  EXPECT_FALSE(checkWorkingDirectory("/run", &why));
  EXPECT_TRUE(checkWorkingDirectory("/running", &why));
}

TEST(GuestPlan, SecretFileNamesAreSingleSafeComponents) {
  EXPECT_TRUE(isSecretFileName("api_token"));
  EXPECT_TRUE(isSecretFileName("db.password-2"));
  EXPECT_FALSE(isSecretFileName(""));
  EXPECT_FALSE(isSecretFileName("."));
  EXPECT_FALSE(isSecretFileName(".."));
  EXPECT_FALSE(isSecretFileName("../etc/passwd"));
  EXPECT_FALSE(isSecretFileName("a/b"));
  EXPECT_FALSE(isSecretFileName("a b"));
}

TEST(GuestPlan, ParsesOnlyStrictDottedQuads) {
  EXPECT_EQ(parseIpv4("10.213.0.2"), 0x0ad50002u);
  EXPECT_EQ(parseIpv4("0.0.0.0"), 0u);
  EXPECT_EQ(parseIpv4("255.255.255.255"), 0xffffffffu);
  for (const char* bad : {"", "10.0.0", "10.0.0.1.2", "256.0.0.1", "010.0.0.1", "10.0.0.1 ",
                          "10..0.1", "a.b.c.d", "1000.0.0.1"}) {
    EXPECT_FALSE(parseIpv4(bad)) << bad;
  }
}

TEST(GuestPlan, PrefixLengthsBecomeNetmasks) {
  EXPECT_EQ(prefixToNetmask(0), 0u);
  EXPECT_EQ(prefixToNetmask(24), 0xffffff00u);
  EXPECT_EQ(prefixToNetmask(30), 0xfffffffcu);
  EXPECT_EQ(prefixToNetmask(32), 0xffffffffu);
}

TEST(GuestPlan, NetworkPlanChecksTheGatewayIsOnTheLink) {
  vc::GuestConfig config;
  std::string why;
  auto none = planNetwork(config, &why);
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->configureEth0);

  config.address = "10.213.0.2";
  config.prefixLength = 30;
  config.gateway = "10.213.0.1";
  auto plan = planNetwork(config, &why);
  ASSERT_TRUE(plan) << why;
  EXPECT_TRUE(plan->configureEth0);
  EXPECT_EQ(plan->address, 0x0ad50002u);
  EXPECT_EQ(plan->netmask, 0xfffffffcu);
  EXPECT_EQ(plan->gateway, 0x0ad50001u);

  config.gateway = "10.213.0.5";
  EXPECT_FALSE(planNetwork(config, &why));
  EXPECT_EQ(why, "gateway 10.213.0.5 is not another host of 10.213.0.2/30");
  config.gateway = "10.213.0.2";
  EXPECT_FALSE(planNetwork(config, &why));
  config.gateway = "";
  auto noRoute = planNetwork(config, &why);
  ASSERT_TRUE(noRoute);
  EXPECT_FALSE(noRoute->gateway);

  config.prefixLength = 0;
  EXPECT_FALSE(planNetwork(config, &why));
  config.prefixLength = 24;
  config.address = "10.213.0";
  EXPECT_FALSE(planNetwork(config, &why));
  config.address = "";
  config.gateway = "10.213.0.1";
  EXPECT_FALSE(planNetwork(config, &why));
}

TEST(GuestPlan, NofileSoftLimitIsCappedAt1024) {
  EXPECT_EQ(planNofile(4096).soft, 1024u);
  EXPECT_EQ(planNofile(4096).hard, 4096u);
  EXPECT_EQ(planNofile(100).soft, 100u);
  EXPECT_EQ(planNofile(100).hard, 100u);
}

TEST(GuestPlan, SecretsJoinTheEnvironmentOnlyForEnvDelivery) {
  vc::GuestConfig config;
  config.env = {"PATH=/bin"};
  config.secrets = {{"TOKEN", "s3cret"}, {"EMPTY", ""}};
  config.secretDelivery = "env";
  EXPECT_EQ(workloadEnvironment(config),
            (std::vector<std::string>{"PATH=/bin", "TOKEN=s3cret", "EMPTY="}));
  config.secretDelivery = "file";
  EXPECT_EQ(workloadEnvironment(config), std::vector<std::string>{"PATH=/bin"});
  config.secretDelivery = "";
  EXPECT_EQ(workloadEnvironment(config), std::vector<std::string>{"PATH=/bin"});
}

TEST(GuestPlan, ExecFailuresExitAsTheLinuxBackendDoes) {
  EXPECT_EQ(execFailureExitCode(EACCES), 126);
  EXPECT_EQ(execFailureExitCode(ENOEXEC), 126);
  EXPECT_EQ(execFailureExitCode(ENOENT), 127);
  EXPECT_EQ(execFailureExitCode(ENOTDIR), 127);
  EXPECT_EQ(kAbortedWaitStatus >> 8, 125);
  EXPECT_EQ(kAbortedWaitStatus & 0x7f, 0);
}

TEST(GuestPlan, TmpfsOptionsAndOomKills) {
  EXPECT_EQ(tmpfsOptions(1u << 20, 0700), "size=1048576,mode=0700");
  EXPECT_EQ(tmpfsOptions(64u << 20, 01777), "size=67108864,mode=1777");
  EXPECT_EQ(parseOomKills("pgfault 12\noom_kill 3\nnr_foo 1\n"), 3u);
  EXPECT_EQ(parseOomKills("oom_kill 17"), 17u);
  EXPECT_EQ(parseOomKills("oom_killer 9\n"), 0u);
  EXPECT_EQ(parseOomKills(""), 0u);
}

TEST(GuestPlan, ModuleOrderLoadsDependenciesFirst) {
  auto position = [](std::string_view name) {
    for (size_t i = 0; i < kModuleLoadOrder.size(); ++i) {
      if (kModuleLoadOrder[i] == name) return i;
    }
    ADD_FAILURE() << name << " is not loaded";
    return size_t{0};
  };
  // Each module's depends= (modinfo) in the 6.1 cloud kernel.
  EXPECT_LT(position("virtio_ring"), position("virtio"));
  EXPECT_LT(position("virtio"), position("virtio_mmio"));
  EXPECT_LT(position("virtio_mmio"), position("virtio_console"));
  EXPECT_LT(position("failover"), position("net_failover"));
  EXPECT_LT(position("net_failover"), position("virtio_net"));
  EXPECT_LT(position("virtio_ring"), position("virtio_blk"));
}

TEST(ControlPort, FoundByItsSysfsName) {
  TempDir dir;
  fs::create_directories(dir.path() / "vport0p1");
  fs::create_directories(dir.path() / "vport0p2");
  fs::create_directories(dir.path() / "vport1p1");
  writeText(dir.path() / "vport0p1" / "name", "\n");
  writeText(dir.path() / "vport0p2" / "name", "other\n");
  writeText(dir.path() / "vport1p1" / "name", "cellos.ctl\n");
  EXPECT_EQ(findVirtioPort(dir.path().string(), "cellos.ctl"), "vport1p1");
  EXPECT_EQ(findVirtioPort(dir.path().string(), "other"), "vport0p2");
  EXPECT_FALSE(findVirtioPort(dir.path().string(), "cellos"));
  EXPECT_FALSE(findVirtioPort((dir.path() / "absent").string(), "cellos.ctl"));
}

// The frame writer's bytes, read back from a regular file it wrote to.
std::string writtenBy(const std::function<void(FrameWriter&)>& write) {
  TempDir dir;
  fs::path file = dir.path() / "port";
  int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  EXPECT_GE(fd, 0);
  FrameWriter writer(fd);
  write(writer);
  EXPECT_FALSE(writer.failed());
  ::close(fd);
  std::ifstream in(file, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(FrameWriter, CutsOutputIntoChunksTheHostAccepts) {
  std::string output(vc::kMaxOutputChunk * 2 + 100, 'x');
  output[vc::kMaxOutputChunk] = 'y';
  std::string bytes = writtenBy([&](FrameWriter& w) {
    w.send(vc::FrameType::kHello, "6.1.0-57-cloud-amd64");
    w.sendOutput(vc::FrameType::kStdout, output);
    w.sendOutput(vc::FrameType::kStderr, "");
    w.sendOutput(vc::FrameType::kStderr, "err\n");
  });
  auto frames = decodeAll(bytes);
  ASSERT_EQ(frames.size(), 5u);
  EXPECT_EQ(frames[0].type, vc::FrameType::kHello);
  EXPECT_EQ(frames[0].text, "6.1.0-57-cloud-amd64");
  std::string joined;
  for (int i = 1; i <= 3; ++i) {
    EXPECT_EQ(frames[i].type, vc::FrameType::kStdout);
    EXPECT_LE(frames[i].text.size(), vc::kMaxOutputChunk);
    joined += frames[i].text;
  }
  EXPECT_EQ(joined, output);
  EXPECT_EQ(frames[4].type, vc::FrameType::kStderr);
  EXPECT_EQ(frames[4].text, "err\n");
}

TEST(FrameWriter, LogLinesAreCutToTheHostsBound) {
  std::string bytes = writtenBy([](FrameWriter& w) {
    w.log(std::string(vc::kMaxLogBytes + 50, 'l'));
    w.log("");
  });
  auto frames = decodeAll(bytes);
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0].text.size(), vc::kMaxLogBytes);
  EXPECT_FALSE(frames[1].text.empty());
}

TEST(FrameWriter, StaysFailedOnceTheHostIsGone) {
  ::signal(SIGPIPE, SIG_IGN);
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  ::close(fds[0]);
  FrameWriter writer(fds[1]);
  EXPECT_FALSE(writer.send(vc::FrameType::kLog, "nobody reads this"));
  EXPECT_TRUE(writer.failed());
  EXPECT_EQ(writer.error(), EPIPE);
  EXPECT_FALSE(writer.sendEncoded(vc::exitFrame(0, 0, false)));
  ::close(fds[1]);
}

// Runs the export of `dir` and returns its frames as the host decodes them.
std::vector<vc::GuestFrame> exportFrames(const fs::path& dir, const ExportLimits& limits,
                                         ExportResult* result) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  EXPECT_GE(fd, 0);
  std::string bytes;
  *result = exportWorkingDirectory(fd, limits, [&](std::string_view frame) {
    EXPECT_LE(frame.size(), 4 + vc::kMaxFrameBytes);
    bytes.append(frame);
    return true;
  });
  ::close(fd);
  return decodeAll(bytes);
}

TEST(WorkdirExport, SendsDirectoriesBeforeChildrenAndFilesInChunks) {
  TempDir dir;
  const fs::path& root = dir.path();
  writeText(root / "out.txt", "data\n");
  writeText(root / "empty", "");
  fs::create_directories(root / "sub" / "deeper");
  std::string big(vc::kMaxFileChunk * 2 + 12345, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7);
  writeText(root / "sub" / "deeper" / "big.bin", big);
  fs::create_directories(root / "emptydir");
  // Neither is followed nor copied.
  fs::create_symlink("/etc/passwd", root / "passwd-link");
  fs::create_directory_symlink("/etc", root / "etc-link");
  ASSERT_EQ(::mkfifo((root / "fifo").c_str(), 0600), 0);

  ExportResult result;
  auto frames = exportFrames(root, ExportLimits{}, &result);
  EXPECT_FALSE(result.truncated);
  EXPECT_FALSE(result.sinkFailed);
  EXPECT_TRUE(result.problems.empty());

  std::vector<std::string> order;
  std::map<std::string, std::string> files;
  for (const auto& frame : frames) {
    if (frame.type == vc::FrameType::kDirectory) {
      order.push_back("D " + frame.text);
    } else {
      ASSERT_EQ(frame.type, vc::FrameType::kFile);
      EXPECT_LE(frame.data.size(), vc::kMaxFileChunk);
      std::string& content = files[frame.text];
      EXPECT_EQ(frame.offset, content.size()) << frame.text << ": chunks out of order";
      if (content.empty() && frame.offset == 0) order.push_back("F " + frame.text);
      content += frame.data;
    }
  }
  // Directories as the walk meets them, then the files, smallest first.
  EXPECT_EQ(order, (std::vector<std::string>{"D emptydir", "D sub", "D sub/deeper", "F empty",
                                             "F out.txt", "F sub/deeper/big.bin"}));
  EXPECT_EQ(files["out.txt"], "data\n");
  EXPECT_EQ(files["empty"], "");
  EXPECT_EQ(files["sub/deeper/big.bin"], big);
  EXPECT_EQ(result.entries, 6u);
  EXPECT_EQ(result.bytes, big.size() + 5);
}

TEST(WorkdirExport, StopsAndSaysSoAtTheEntryBudget) {
  TempDir dir;
  for (const char* name : {"a", "b", "c", "d"}) writeText(dir.path() / name, name);
  ExportResult result;
  auto frames = exportFrames(dir.path(), ExportLimits{.maxEntries = 2}, &result);
  EXPECT_TRUE(result.truncated);
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0].text, "a");
  EXPECT_EQ(frames[1].text, "b");
}

TEST(WorkdirExport, StopsAndSaysSoAtTheByteBudget) {
  TempDir dir;
  writeText(dir.path() / "a", "12345");
  writeText(dir.path() / "b", "");
  writeText(dir.path() / "c", "678");
  ExportResult result;
  auto frames = exportFrames(dir.path(), ExportLimits{.maxBytes = 7, .chunkBytes = 4}, &result);
  EXPECT_TRUE(result.truncated);
  // Smallest first: b empty, c whole, then four bytes of a (a chunk) before the budget ends the
  // copy.
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(frames[0].text, "b");
  EXPECT_EQ(frames[0].data, "");
  EXPECT_EQ(frames[1].text, "c");
  EXPECT_EQ(frames[1].data, "678");
  EXPECT_EQ(frames[2].text, "a");
  EXPECT_EQ(frames[2].data, "1234");
  EXPECT_EQ(result.bytes, 7u);

  // A budget that ends exactly at the last byte is not a truncation.
  auto exact = exportFrames(dir.path(), ExportLimits{.maxBytes = 8}, &result);
  EXPECT_FALSE(result.truncated);
  EXPECT_EQ(exact.size(), 3u);
}

TEST(WorkdirExport, AHostThatStopsReadingStopsTheWalk) {
  TempDir dir;
  for (const char* name : {"a", "b", "c"}) writeText(dir.path() / name, name);
  int fd = ::open(dir.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  int calls = 0;
  ExportResult result = exportWorkingDirectory(fd, ExportLimits{}, [&](std::string_view) {
    ++calls;
    return false;
  });
  ::close(fd);
  EXPECT_TRUE(result.sinkFailed);
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace cellos::guest
