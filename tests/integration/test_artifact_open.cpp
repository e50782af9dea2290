// The VM launcher's artifact opener (vmm-agent/launcher/artifact_open.h) against what a hostile cell can
// plant in its working directory: symlinks out, "..", FIFOs, devices, sparse giants. Both the
// openat2 path and the component walk used where openat2 is missing.

#include "vmm-agent/launcher/artifact_open.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>

namespace cellos::vmm {
namespace {

constexpr uint64_t kCap = 1 << 20;

class ArtifactOpen : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/cellos-artifact-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    root_ = dir;
    std::filesystem::create_directories(root_ + "/ws/out");
    std::ofstream(root_ + "/ws/out/report.txt") << "report";
    std::ofstream(root_ + "/outside.txt") << "outside";
    workdir_ = openWorkingDirectory(root_ + "/ws");
    ASSERT_GE(workdir_, 0);
  }
  void TearDown() override {
    if (workdir_ >= 0) close(workdir_);
    std::filesystem::remove_all(root_);
  }
  // Opens `/ws/<relative>` the way the parameter says (openat2, or the fallback walk).
  OpenedArtifact open(const std::string& relative, uint64_t cap = kCap) {
    if (GetParam()) return openArtifact(workdir_, "/ws", "/ws/" + relative, cap);
    return openArtifactByWalk(workdir_, relative, cap);
  }
  std::string root_;
  int workdir_ = -1;
};

std::string readAll(int fd) {
  std::string out;
  char buffer[256];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof buffer)) > 0) out.append(buffer, n);
  return out;
}

TEST_P(ArtifactOpen, ARegularFileInsideOpensWithItsSize) {
  OpenedArtifact a = open("out/report.txt");
  ASSERT_GE(a.fd, 0) << a.refused;
  EXPECT_EQ(a.bytes, 6u);
  EXPECT_EQ(readAll(a.fd), "report");
  EXPECT_EQ(fcntl(a.fd, F_GETFL) & O_ACCMODE, O_RDONLY);
  close(a.fd);
}

TEST_P(ArtifactOpen, ASymlinkOutOfTheWorkspaceIsRefused) {
  ASSERT_EQ(symlink((root_ + "/outside.txt").c_str(), (root_ + "/ws/out/escape").c_str()), 0);
  ASSERT_EQ(symlink("/etc/passwd", (root_ + "/ws/out/passwd").c_str()), 0);
  for (const char* name : {"out/escape", "out/passwd"}) {
    OpenedArtifact a = open(name);
    EXPECT_EQ(a.fd, -1) << name;
    EXPECT_NE(a.refused.find("symlink"), std::string::npos) << a.refused;
  }
}

TEST_P(ArtifactOpen, EvenASymlinkThatStaysInsideIsRefused) {
  ASSERT_EQ(symlink("report.txt", (root_ + "/ws/out/alias").c_str()), 0);
  OpenedArtifact a = open("out/alias");
  EXPECT_EQ(a.fd, -1);
  EXPECT_NE(a.refused.find("symlink"), std::string::npos) << a.refused;
}

TEST_P(ArtifactOpen, ASymlinkedDirectoryOnThePathIsRefused) {
  ASSERT_EQ(symlink("..", (root_ + "/ws/out/up").c_str()), 0);
  OpenedArtifact a = open("out/up/outside.txt");
  EXPECT_EQ(a.fd, -1);
  EXPECT_NE(a.refused.find("symlink"), std::string::npos) << a.refused;
}

TEST_P(ArtifactOpen, DotDotIsRefused) {
  for (const char* path : {"../outside.txt", "out/../../outside.txt", "out/./report.txt"}) {
    OpenedArtifact a = open(path);
    EXPECT_EQ(a.fd, -1) << path;
    EXPECT_NE(a.refused.find(".."), std::string::npos) << a.refused;
  }
}

TEST_P(ArtifactOpen, AFifoIsRefusedWithoutBlocking) {
  ASSERT_EQ(mkfifo((root_ + "/ws/out/pipe").c_str(), 0644), 0);
  auto start = std::chrono::steady_clock::now();
  OpenedArtifact a = open("out/pipe");  // with no writer, a blocking open would never return
  EXPECT_EQ(a.fd, -1);
  EXPECT_NE(a.refused.find("FIFO"), std::string::npos) << a.refused;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST_P(ArtifactOpen, ADeviceNodeIsRefused) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root: mknod of a character device";
  ASSERT_EQ(mknod((root_ + "/ws/out/null").c_str(), S_IFCHR | 0644, makedev(1, 3)), 0);
  OpenedArtifact a = open("out/null");
  EXPECT_EQ(a.fd, -1);
  EXPECT_NE(a.refused.find("device"), std::string::npos) << a.refused;
}

TEST_P(ArtifactOpen, ATenGibSparseFileIsRefusedByTheCapBeforeAnyRead) {
  std::string big = root_ + "/ws/out/big";
  int fd = ::open(big.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, 10ll << 30), 0);
  close(fd);
  OpenedArtifact a = open("out/big");
  EXPECT_EQ(a.fd, -1);
  EXPECT_NE(a.refused.find("10737418240 bytes, over the export cap of 1048576"), std::string::npos)
      << a.refused;
}

TEST_P(ArtifactOpen, ADirectoryAndAMissingFileAreRefused) {
  EXPECT_NE(open("out").refused.find("directory"), std::string::npos);
  EXPECT_NE(open("out/missing").refused.find("no such file"), std::string::npos);
}

TEST(ArtifactOpenPath, APathOutsideTheWorkingDirectoryIsRefused) {
  int dir = openWorkingDirectory("/tmp");
  ASSERT_GE(dir, 0);
  for (const char* path : {"/etc/passwd", "/tmpx/a", "/tmp", "/tmp/"}) {
    OpenedArtifact a = openArtifact(dir, "/tmp", path, kCap);
    EXPECT_EQ(a.fd, -1) << path;
    EXPECT_FALSE(a.refused.empty()) << path;
  }
  close(dir);
}

INSTANTIATE_TEST_SUITE_P(Openat2AndWalk, ArtifactOpen, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "openat2" : "walk";
                         });

}  // namespace
}  // namespace cellos::vmm
