// The microVM root images (what a source stages to, the cache of built images) and the boot
// manifest's verification. Every source tree is made here as the current user, in a temporary
// directory, so the tests run as root or not; images are inspected with debugfs (e2fsprogs).

#include "vmm-agent/backends/microvm/vm_image.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

namespace cellos::vmm {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "cellos-vm-image-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp");
    path_ = pattern;
  }
  ~TempDir() {
    // Staged and source directories may be 0555 or 0700: make them removable first.
    std::error_code ignored;
    for (auto it = fs::recursive_directory_iterator(path_, ignored);
         it != fs::recursive_directory_iterator(); it.increment(ignored)) {
      if (it->is_directory(ignored) && !it->is_symlink(ignored)) {
        fs::permissions(it->path(), fs::perms::owner_all, fs::perm_options::add, ignored);
      }
    }
    fs::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void writeFile(const std::string& path, const std::string& content, mode_t mode) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
  ASSERT_EQ(chmod(path.c_str(), mode), 0) << path;
}

void makeDir(const std::string& path, mode_t mode) {
  fs::create_directories(path);
  ASSERT_EQ(chmod(path.c_str(), mode), 0) << path;
}

// A directory image as a registered one looks: readable parts, and parts no unprivileged user
// could read (a 0600 file, a 0700 directory), a setuid binary, a symlink, a fifo, a proc/.
std::string makeSourceTree(const std::string& root) {
  makeDir(root, 0755);
  writeFile(root + "/etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0644);
  writeFile(root + "/etc/shadow", "root:secret:::::::\n", 0600);
  makeDir(root + "/etc/ssh", 0755);
  writeFile(root + "/etc/ssh/ssh_host_ed25519_key", "private key\n", 0600);
  writeFile(root + "/etc/ssh/ssh_host_ed25519_key.pub", "public key\n", 0644);
  makeDir(root + "/private", 0700);
  writeFile(root + "/private/readable", "inside a 0700 directory\n", 0644);
  writeFile(root + "/usr/bin/tool", "#!/bin/sh\necho tool\n", 04755);
  writeFile(root + "/usr/bin/group-tool", "#!/bin/sh\n", 02755);
  writeFile(root + "/usr/bin/plain", "#!/bin/sh\n", 0755);
  fs::create_symlink("usr/bin", root + "/bin");
  fs::create_symlink("/etc/shadow", root + "/usr/bin/to-shadow");
  EXPECT_EQ(mkfifo((root + "/usr/bin/fifo").c_str(), 0644), 0);
  writeFile(root + "/proc/leftover", "not part of the image\n", 0644);
  fs::create_symlink("/elsewhere", root + "/run");
  return root;
}

const StagedEntry* entryAt(const RootImagePlan& plan, const std::string& path) {
  for (const StagedEntry& entry : plan.entries) {
    if (entry.path == path) return &entry;
  }
  return nullptr;
}

// debugfs's output for `request` on `image` (empty when debugfs fails).
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

std::string fileSha256(const std::string& path) {
  Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  return sha256OfFd(fd.get(), path);
}

TEST(VmImage, StagingLeavesOutWhatAnUnprivilegedUserCannotRead) {
  TempDir dir;
  RootImageSource source;
  source.imageRoot = makeSourceTree(dir.path() + "/image");
  makeDir(dir.path() + "/staging", 0700);
  RootImagePlan staged = stageRootImage(source, dir.path() + "/staging");
  const std::string s = dir.path() + "/staging/";

  // A 0600 file and everything under a 0700 directory are neither listed nor staged.
  for (const char* absent : {"etc/shadow", "etc/ssh/ssh_host_ed25519_key", "private",
                             "private/readable", "usr/bin/fifo", "proc/leftover"}) {
    EXPECT_EQ(entryAt(staged, absent), nullptr) << absent;
    EXPECT_FALSE(fs::exists(fs::symlink_status(s + absent))) << absent;
  }
  for (const char* present : {"etc/passwd", "etc/ssh/ssh_host_ed25519_key.pub", "usr/bin/plain"}) {
    EXPECT_NE(entryAt(staged, present), nullptr) << present;
    EXPECT_TRUE(fs::is_regular_file(s + present)) << present;
  }
  // A file whose mode needs no change is the source's inode (hard link).
  struct stat src, dst;
  ASSERT_EQ(stat((source.imageRoot + "/usr/bin/plain").c_str(), &src), 0);
  ASSERT_EQ(stat((s + "usr/bin/plain").c_str(), &dst), 0);
  EXPECT_EQ(src.st_ino, dst.st_ino);
}

TEST(VmImage, SetuidAndSetgidBitsAreClearedOnACopy) {
  TempDir dir;
  RootImageSource source;
  source.imageRoot = makeSourceTree(dir.path() + "/image");
  makeDir(dir.path() + "/staging", 0700);
  RootImagePlan staged = stageRootImage(source, dir.path() + "/staging");
  for (const char* name : {"usr/bin/tool", "usr/bin/group-tool"}) {
    struct stat st;
    ASSERT_EQ(lstat((dir.path() + "/staging/" + name).c_str(), &st), 0) << name;
    EXPECT_EQ(st.st_mode & 07777, 0755u) << name;
    const StagedEntry* entry = entryAt(staged, name);
    ASSERT_NE(entry, nullptr);
    EXPECT_EQ(entry->mode, 0755u);
    // A copy, not the setuid inode itself.
    struct stat src;
    ASSERT_EQ(lstat((source.imageRoot + "/" + name).c_str(), &src), 0);
    EXPECT_NE(src.st_ino, st.st_ino);
    EXPECT_NE(src.st_mode & (S_ISUID | S_ISGID), 0u);
  }
  std::ifstream copy(dir.path() + "/staging/usr/bin/tool");
  std::string content((std::istreambuf_iterator<char>(copy)), std::istreambuf_iterator<char>());
  EXPECT_EQ(content, "#!/bin/sh\necho tool\n");
}

TEST(VmImage, SymlinksAreKeptVerbatim) {
  TempDir dir;
  RootImageSource source;
  source.imageRoot = makeSourceTree(dir.path() + "/image");
  makeDir(dir.path() + "/staging", 0700);
  RootImagePlan staged = stageRootImage(source, dir.path() + "/staging");
  EXPECT_EQ(fs::read_symlink(dir.path() + "/staging/bin"), "usr/bin");
  // Its target is not in the image; the link itself is harmless.
  EXPECT_EQ(fs::read_symlink(dir.path() + "/staging/usr/bin/to-shadow"), "/etc/shadow");
  const StagedEntry* entry = entryAt(staged, "usr/bin/to-shadow");
  ASSERT_NE(entry, nullptr);
  EXPECT_EQ(entry->type, 'l');
  EXPECT_EQ(entry->target, "/etc/shadow");
}

TEST(VmImage, MountPointsAndResolvConfAreAlwaysThere) {
  TempDir dir;
  RootImageSource source;
  source.imageRoot = dir.path() + "/bare";
  writeFile(source.imageRoot + "/usr/bin/plain", "x", 0755);
  fs::create_symlink("/etc", source.imageRoot + "/workspace");  // a mount would follow it
  source.mountPoints = {"/home/build/work"};
  makeDir(dir.path() + "/staging", 0700);
  RootImagePlan staged = stageRootImage(source, dir.path() + "/staging");
  const std::string s = dir.path() + "/staging";
  for (const char* mountPoint : kRootImageMountPoints) {
    EXPECT_TRUE(fs::is_directory(fs::symlink_status(s + mountPoint))) << mountPoint;
    EXPECT_TRUE(fs::is_empty(s + mountPoint) || std::string(mountPoint) == "/run") << mountPoint;
  }
  EXPECT_TRUE(fs::is_directory(fs::symlink_status(s + "/home/build/work")));
  EXPECT_TRUE(fs::is_regular_file(fs::symlink_status(s + "/etc/resolv.conf")));
  EXPECT_EQ(fs::file_size(s + "/etc/resolv.conf"), 0u);
  struct stat st;
  ASSERT_EQ(lstat((s + "/tmp").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 01777u);
  EXPECT_NE(entryAt(staged, "run/secrets"), nullptr);

  // A source whose /run is a symlink and /proc has content gets real, empty directories.
  TempDir other;
  RootImageSource linked;
  linked.imageRoot = makeSourceTree(other.path() + "/image");
  makeDir(other.path() + "/staging", 0700);
  stageRootImage(linked, other.path() + "/staging");
  EXPECT_TRUE(fs::is_directory(fs::symlink_status(other.path() + "/staging/run")));
  EXPECT_TRUE(fs::is_directory(other.path() + "/staging/run/secrets"));
  EXPECT_TRUE(fs::is_empty(other.path() + "/staging/proc"));
}

TEST(VmImage, HostViewPlanHasTheUsrMergeLinksAndNoSecretFiles) {
  RootImageSource source;
  source.hostViewPaths = {"/usr/sbin", "/etc"};
  RootImagePlan plan = planRootImage(source);
  for (const char* name : {"bin", "sbin", "lib", "lib64"}) {
    const StagedEntry* link = entryAt(plan, name);
    ASSERT_NE(link, nullptr) << name;
    EXPECT_EQ(link->type, 'l');
    EXPECT_EQ(link->target, std::string("usr/") + name);
  }
  EXPECT_NE(entryAt(plan, "etc/passwd"), nullptr);
  EXPECT_NE(entryAt(plan, "usr"), nullptr);
  EXPECT_EQ(entryAt(plan, "usr/bin/sh"), nullptr);  // not asked for
  for (const StagedEntry& entry : plan.entries) {
    EXPECT_NE(entry.path, "etc/shadow");
    if (entry.type == 'f') {
      EXPECT_NE(entry.mode & S_IROTH, 0u) << entry.path;
    }
    EXPECT_EQ(entry.mode & (S_ISUID | S_ISGID), 0u) << entry.path;
  }
  EXPECT_EQ(plan.sourcePaths, (std::vector<std::string>{"/etc", "/usr/sbin"}));
  EXPECT_THROW(planRootImage(RootImageSource{"", {"/home"}, {}}), std::invalid_argument);
  EXPECT_THROW(planRootImage(RootImageSource{"", {"/usr/../root"}, {}}), std::invalid_argument);
}

TEST(VmImage, KeyFollowsContentAndMtime) {
  TempDir dir;
  RootImageSource source;
  source.imageRoot = makeSourceTree(dir.path() + "/image");
  const std::string file = source.imageRoot + "/etc/passwd";
  struct stat original;
  ASSERT_EQ(stat(file.c_str(), &original), 0);
  std::string key = planRootImage(source).key;
  EXPECT_EQ(key.size(), 64u);
  EXPECT_EQ(planRootImage(source).key, key);  // a function of the tree

  // Same size, other bytes (and so another mtime).
  writeFile(file, "ROOT:x:0:0::/root:/bin/sh\n", 0644);
  timespec later[2] = {{0, UTIME_OMIT}, {original.st_mtim.tv_sec + 10, 0}};
  ASSERT_EQ(utimensat(AT_FDCWD, file.c_str(), later, 0), 0);
  EXPECT_NE(planRootImage(source).key, key);

  // The original bytes back with only the mtime different: still another key.
  writeFile(file, "root:x:0:0::/root:/bin/sh\n", 0644);
  ASSERT_EQ(utimensat(AT_FDCWD, file.c_str(), later, 0), 0);
  EXPECT_NE(planRootImage(source).key, key);
  // The original mtime back too: the original key.
  timespec back[2] = {{0, UTIME_OMIT}, original.st_mtim};
  ASSERT_EQ(utimensat(AT_FDCWD, file.c_str(), back, 0), 0);
  EXPECT_EQ(planRootImage(source).key, key);

  // The extra mount points are part of the image, so of the key.
  source.mountPoints = {"/srv"};
  EXPECT_NE(planRootImage(source).key, key);
}

TEST(VmImage, CacheBuildsOnceAndReusesTheImage) {
  TempDir dir;
  RootImageSource source;
  source.imageRoot = makeSourceTree(dir.path() + "/image");
  const std::string cache = dir.path() + "/cache";
  RootImage first = buildRootImage(source, cache);
  EXPECT_TRUE(first.built);
  EXPECT_EQ(first.path, cache + "/root-" + first.key + ".ext4");
  EXPECT_EQ(first.key, planRootImage(source).key);
  EXPECT_EQ(first.sha256, fileSha256(first.path));
  EXPECT_EQ(first.sizeBytes, fs::file_size(first.path));
  struct stat st;
  ASSERT_EQ(stat(first.path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0444u);
  ASSERT_EQ(stat(cache.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  EXPECT_TRUE(fs::is_regular_file(cache + "/root-" + first.key + ".json"));

  RootImage second = buildRootImage(source, cache);
  EXPECT_FALSE(second.built);
  EXPECT_EQ(second.path, first.path);
  EXPECT_EQ(second.sha256, first.sha256);
  EXPECT_EQ(second.buildMillis, 0u);
  // Nothing but the image, its manifest and the lock is left behind.
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(cache)) names.push_back(entry.path().filename());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{".lock", "root-" + first.key + ".ext4",
                                             "root-" + first.key + ".json"}));

  // What the image holds, as the guest's ext4 driver will read it.
  std::string root = debugfs(first.path, "ls -l /");
  for (const char* name : {"proc", "dev", "sys", "tmp", "run", "workspace", "etc", "usr", "bin"}) {
    EXPECT_NE(root.find(std::string(" ") + name + "\n"), std::string::npos) << name << "\n" << root;
  }
  EXPECT_NE(debugfs(first.path, "stat /etc/resolv.conf").find("Type: regular"), std::string::npos);
  EXPECT_NE(debugfs(first.path, "stat /etc/passwd").find("Type: regular"), std::string::npos);
  EXPECT_NE(debugfs(first.path, "stat /etc/shadow").find("File not found"), std::string::npos);
  EXPECT_NE(debugfs(first.path, "stat /private").find("File not found"), std::string::npos);
  EXPECT_NE(debugfs(first.path, "stat /usr/bin/tool").find("Mode:  0755"), std::string::npos);
  EXPECT_NE(debugfs(first.path, "stat /run/secrets").find("Type: directory"), std::string::npos);
}

TEST(VmImage, ConcurrentBuildersOfOneKeyShareOneImage) {
  TempDir dir;
  RootImageSource source;
  source.imageRoot = makeSourceTree(dir.path() + "/image");
  const std::string cache = dir.path() + "/cache";
  RootImage a, b;
  std::thread other([&] { b = buildRootImage(source, cache); });
  a = buildRootImage(source, cache);
  other.join();
  EXPECT_EQ(a.path, b.path);
  EXPECT_EQ(a.sha256, b.sha256);
  EXPECT_NE(a.built, b.built);  // one built, the other waited on the lock and reused it
  EXPECT_EQ(fileSha256(a.path), a.sha256);
}

TEST(VmImage, CacheKeepsOnlyTheMostRecentlyUsedImages) {
  TempDir dir;
  const std::string cache = dir.path() + "/cache";
  std::vector<RootImage> images;
  for (int i = 0; i < 3; ++i) {
    RootImageSource source;
    source.imageRoot = dir.path() + "/image" + std::to_string(i);
    writeFile(source.imageRoot + "/etc/version", std::to_string(i), 0644);
    images.push_back(buildRootImage(source, cache, 2));
    if (i == 1) {
      // Using image 0 again makes image 1 the least recently used one. File times come from
      // the kernel's coarse clock (a tick is up to 10 ms): let it tick, or image 0's new time
      // may equal image 1's and the eviction order is a tie.
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
      RootImageSource again;
      again.imageRoot = dir.path() + "/image0";
      EXPECT_FALSE(buildRootImage(again, cache, 2).built);
    }
  }
  EXPECT_TRUE(fs::exists(images[0].path));
  EXPECT_FALSE(fs::exists(images[1].path));
  EXPECT_FALSE(fs::exists(cache + "/root-" + images[1].key + ".json"));
  EXPECT_TRUE(fs::exists(images[2].path));
}

TEST(VmImage, CacheDirectoryWritableByOthersIsRefused) {
  TempDir dir;
  makeDir(dir.path() + "/cache", 0777);
  RootImageSource source;
  source.imageRoot = makeSourceTree(dir.path() + "/image");
  EXPECT_THROW(buildRootImage(source, dir.path() + "/cache"), std::runtime_error);
}

// --- Boot artifacts ------------------------------------------------------------------------

struct BootFiles {
  TempDir dir;
  BootManifest manifest;
  BootFiles() {
    int i = 0;
    for (ExpectedFile* file : {&manifest.kernel, &manifest.initramfs, &manifest.rootImage}) {
      file->path = dir.path() + "/file" + std::to_string(i);
      writeFile(file->path, std::string(100000 + i, char('a' + i)), 0444);
      file->sha256 = fileSha256(file->path);
      ++i;
    }
  }
};

// Rewrites one byte of `path` in place, then sets its mtime back: only ctime shows the write.
void flipByteKeepingMtime(const std::string& path, off_t offset) {
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  Fd fd(open(path.c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_GE(fd.get(), 0);
  char byte = 0;
  ASSERT_EQ(pread(fd.get(), &byte, 1, offset), 1);
  byte ^= 1;
  ASSERT_EQ(pwrite(fd.get(), &byte, 1, offset), 1);
  timespec times[2] = {st.st_atim, st.st_mtim};
  ASSERT_EQ(futimens(fd.get(), times), 0);
}

TEST(BootManifest, WritesAndReadsBack) {
  BootFiles files;
  writeBootManifest(files.dir.path(), files.manifest);
  BootManifest read = readBootManifest(files.dir.path());
  EXPECT_EQ(read.kernel.path, files.manifest.kernel.path);
  EXPECT_EQ(read.kernel.sha256, files.manifest.kernel.sha256);
  EXPECT_EQ(read.initramfs.path, files.manifest.initramfs.path);
  EXPECT_EQ(read.initramfs.sha256, files.manifest.initramfs.sha256);
  EXPECT_TRUE(read.rootImage.path.empty());

  const std::string path = files.dir.path() + "/boot-manifest.json";
  for (
      const char* bad :
      {"{}", "[]", "not json",
       R"({"kernel": {"path": "/k", "sha256": "AB"}, "initramfs": {"path": "/i", "sha256": "ab"}})",
       R"({"kernel": {"path": "k", "sha256": "0000000000000000000000000000000000000000000000000000000000000000"},
            "initramfs": {"path": "/i", "sha256": "0000000000000000000000000000000000000000000000000000000000000000"}})"}) {
    chmod(path.c_str(), 0644);
    writeFile(path, bad, 0644);
    EXPECT_THROW(readBootManifest(files.dir.path()), std::runtime_error) << bad;
  }
}

TEST(BootManifest, VerifiedFilesAreOpenAndCarryTheirDigests) {
  BootFiles files;
  VerifiedFileCache cache;
  BootArtifacts artifacts = verifyBootArtifacts(files.manifest, cache);
  EXPECT_EQ(cache.hashes(), 3u);
  EXPECT_EQ(artifacts.kernel.sha256, files.manifest.kernel.sha256);
  EXPECT_EQ(artifacts.rootImage.sha256, files.manifest.rootImage.sha256);
  EXPECT_TRUE(artifacts.initramfs.hashed);
  EXPECT_EQ(artifacts.initramfs.sizeBytes, 100001u);
  int flags = fcntl(artifacts.rootImage.fd.get(), F_GETFD);
  EXPECT_NE(flags & FD_CLOEXEC, 0);
  EXPECT_EQ(fcntl(artifacts.rootImage.fd.get(), F_GETFL) & O_ACCMODE, O_RDONLY);
}

TEST(BootManifest, OneChangedByteIsRejectedNamingTheFileAndBothDigests) {
  BootFiles files;
  VerifiedFileCache cache;
  verifyBootArtifacts(files.manifest, cache);
  flipByteKeepingMtime(files.manifest.initramfs.path, 5000);
  std::string actual = fileSha256(files.manifest.initramfs.path);
  try {
    verifyBootArtifacts(files.manifest, cache);
    FAIL() << "a changed initramfs was accepted";
  } catch (const std::runtime_error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find(files.manifest.initramfs.path), std::string::npos) << what;
    EXPECT_NE(what.find(actual), std::string::npos) << what;
    EXPECT_NE(what.find(files.manifest.initramfs.sha256), std::string::npos) << what;
  }
  // Without any earlier verification too.
  VerifiedFileCache fresh;
  EXPECT_THROW(verifyBootArtifacts(files.manifest, fresh), std::runtime_error);
}

TEST(BootManifest, IdentityCacheSkipsHashingOnlyWhenTheIdentityMatches) {
  BootFiles files;
  VerifiedFileCache cache;
  verifyBootArtifacts(files.manifest, cache);
  ASSERT_EQ(cache.hashes(), 3u);
  BootArtifacts again = verifyBootArtifacts(files.manifest, cache);
  EXPECT_EQ(cache.hashes(), 3u);  // nothing changed: nothing hashed
  EXPECT_FALSE(again.kernel.hashed);
  EXPECT_EQ(again.kernel.sha256, files.manifest.kernel.sha256);

  // The same bytes written back, mtime restored: ctime moved, so the file is hashed again
  // (and still matches).
  flipByteKeepingMtime(files.manifest.kernel.path, 10);
  flipByteKeepingMtime(files.manifest.kernel.path, 10);
  BootArtifacts rehashed = verifyBootArtifacts(files.manifest, cache);
  EXPECT_EQ(cache.hashes(), 4u);
  EXPECT_TRUE(rehashed.kernel.hashed);
  EXPECT_FALSE(rehashed.initramfs.hashed);

  // A replaced file (a new inode with the same content) is hashed again.
  const std::string root = files.manifest.rootImage.path;
  fs::copy_file(root, root + ".new");
  fs::rename(root + ".new", root);
  verifyBootArtifacts(files.manifest, cache);
  EXPECT_EQ(cache.hashes(), 5u);
}

}  // namespace
}  // namespace cellos::vmm
