// The default VM host view built for real: the whole configured list of host paths into an
// ext4 image in a fresh cache, checked with debugfs (e2fsprogs). Needs root: the host's files
// are root's, and the staging tree keeps their owners.

#include "vmm-agent/backends/microvm/vm_image.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>

namespace cellos::vmm {
namespace {

namespace fs = std::filesystem;

std::string debugfs(const std::string& image, const std::string& request) {
  std::string command = "/sbin/debugfs -R '" + request + "' " + image + " 2>&1";
  std::string output;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return output;
  std::array<char, 4096> buffer;
  while (size_t n = fread(buffer.data(), 1, buffer.size(), pipe)) output.append(buffer.data(), n);
  pclose(pipe);
  return output;
}

TEST(VmImageHostView, DefaultHostViewBuildsWithoutSecretFiles) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root: the host view stages root's files";
  // On the filesystem of /usr when it can be (hard links), like /var/lib/cellos/vm/images.
  std::string pattern = "/var/tmp/cellos-vm-host-view-XXXXXX";
  ASSERT_NE(mkdtemp(pattern.data()), nullptr);
  const std::string cache = pattern + "/images";
  RootImage image;
  try {
    image = buildRootImage(RootImageSource{}, cache);
  } catch (...) {
    fs::remove_all(pattern);
    throw;
  }
  std::printf("host view image: %llu bytes, built in %llu ms\n",
              static_cast<unsigned long long>(image.sizeBytes),
              static_cast<unsigned long long>(image.buildMillis));
  EXPECT_TRUE(image.built);
  EXPECT_LT(image.sizeBytes, 3ull << 30);
  EXPECT_NE(debugfs(image.path, "stat /etc/shadow").find("File not found"), std::string::npos);
  std::string python = debugfs(image.path, "stat /usr/bin/python3");
  EXPECT_EQ(python.find("File not found"), std::string::npos) << python;
  EXPECT_NE(python.find("Type: "), std::string::npos) << python;
  EXPECT_NE(debugfs(image.path, "stat /usr/lib/python3.11/os.py").find("Type: regular"),
            std::string::npos);
  EXPECT_NE(debugfs(image.path, "stat /bin").find("Type: symlink"), std::string::npos);
  // A second launcher start reuses it.
  RootImage again = buildRootImage(RootImageSource{}, cache);
  EXPECT_FALSE(again.built);
  EXPECT_EQ(again.sha256, image.sha256);
  fs::remove_all(pattern);
}

}  // namespace
}  // namespace cellos::vmm
