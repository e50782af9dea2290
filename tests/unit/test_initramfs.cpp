// The VM initramfs (guest-init/initramfs.h, cellos-make-initramfs): a newc archive the kernel
// can unpack, read back here by a reader written from the format's description
// (Documentation/driver-api/early-userspace/buffer-format.rst), not by the writer's code.

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "guest-init/initramfs.h"
#include "guest-init/plan.h"

namespace cellos::guest {
namespace {

namespace fs = std::filesystem;

struct Member {
  std::string name;
  uint32_t inode = 0;
  uint32_t mode = 0;
  uint32_t uid = 0, gid = 0, mtime = 0;
  std::string data;
};

uint32_t hexField(const std::string& archive, size_t at) {
  return static_cast<uint32_t>(std::stoul(archive.substr(at, 8), nullptr, 16));
}

size_t align4(size_t n) {
  return (n + 3) & ~size_t{3};
}

// Every member up to the trailer; fails the test on a malformed archive.
std::vector<Member> readNewc(const std::string& archive) {
  std::vector<Member> members;
  size_t at = 0;
  for (;;) {
    EXPECT_EQ(at % 4, 0u);
    if (at + 110 > archive.size()) {
      ADD_FAILURE() << "archive ends without a trailer";
      return members;
    }
    EXPECT_EQ(archive.substr(at, 6), "070701");
    Member m;
    m.inode = hexField(archive, at + 6);
    m.mode = hexField(archive, at + 14);
    m.uid = hexField(archive, at + 22);
    m.gid = hexField(archive, at + 30);
    m.mtime = hexField(archive, at + 46);
    uint32_t fileSize = hexField(archive, at + 54);
    uint32_t nameSize = hexField(archive, at + 94);
    m.name = archive.substr(at + 110, nameSize - 1);
    EXPECT_EQ(archive[at + 110 + nameSize - 1], '\0');
    size_t dataAt = align4(at + 110 + nameSize);
    m.data = archive.substr(dataAt, fileSize);
    at = align4(dataAt + fileSize);
    if (m.name == "TRAILER!!!") {
      EXPECT_EQ(at, archive.size()) << "bytes after the trailer";
      return members;
    }
    members.push_back(std::move(m));
  }
}

class TempTree {
 public:
  TempTree() {
    std::string pattern = (fs::temp_directory_path() / "cellos-initramfs-XXXXXX").string();
    EXPECT_NE(::mkdtemp(pattern.data()), nullptr);
    root_ = pattern;
    // A fake init and a fake kernel/ tree holding each module at its package path.
    write(root_ / "init", std::string("\x7f"
                                      "ELF fake init",
                                      14));
    for (const ModuleSource& source : kModuleSources) {
      write(root_ / "modules" / source.path, "module " + std::string(source.name) + "\n");
    }
  }
  ~TempTree() { fs::remove_all(root_); }
  fs::path init() const { return root_ / "init"; }
  fs::path modules() const { return root_ / "modules"; }
  const fs::path& root() const { return root_; }

 private:
  static void write(const fs::path& path, const std::string& content) {
    fs::create_directories(path.parent_path());
    std::ofstream(path, std::ios::binary) << content;
  }
  fs::path root_;
};

TEST(Initramfs, ArchiveReadsBackWithNamesModesAndContents) {
  TempTree tree;
  std::string archive = newcArchive(initramfsEntries(tree.init(), tree.modules()));
  auto members = readNewc(archive);

  std::vector<std::string> names;
  for (const Member& m : members) names.push_back(m.name);
  std::vector<std::string> expected = {"dev", "proc",        "sys", "newroot",
                                       "lib", "lib/modules", "init"};
  for (std::string_view module : kModuleLoadOrder) {
    expected.push_back("lib/modules/" + std::string(module) + ".ko");
  }
  EXPECT_EQ(names, expected);

  uint32_t inode = 1;
  for (const Member& m : members) {
    EXPECT_EQ(m.inode, inode++) << m.name;
    EXPECT_EQ(m.uid, 0u);
    EXPECT_EQ(m.gid, 0u);
    EXPECT_EQ(m.mtime, 0u) << m.name;
    if (m.name == "init") {
      EXPECT_EQ(m.mode, static_cast<uint32_t>(S_IFREG | 0755));
      EXPECT_EQ(m.data, std::string("\x7f"
                                    "ELF fake init",
                                    14));
    } else if (m.name.rfind("lib/modules/", 0) == 0 && m.name.size() > 12 &&
               m.name.ends_with(".ko")) {
      EXPECT_EQ(m.mode, static_cast<uint32_t>(S_IFREG | 0644));
      std::string module = m.name.substr(12, m.name.size() - 15);
      EXPECT_EQ(m.data, "module " + module + "\n");
    } else {
      EXPECT_EQ(m.mode, static_cast<uint32_t>(S_IFDIR | 0755)) << m.name;
      EXPECT_TRUE(m.data.empty());
    }
  }
}

TEST(Initramfs, SameInputsGiveTheSameBytes) {
  TempTree tree;
  std::string first = newcArchive(initramfsEntries(tree.init(), tree.modules()));
  // A later mtime on every input must not change the archive.
  for (auto& entry : fs::recursive_directory_iterator(tree.root())) {
    fs::last_write_time(entry.path(), fs::file_time_type::clock::now() + std::chrono::hours(1));
  }
  EXPECT_EQ(newcArchive(initramfsEntries(tree.init(), tree.modules())), first);
}

TEST(Initramfs, AMissingModuleIsAnErrorNamingIt) {
  TempTree tree;
  fs::remove(tree.modules() / "drivers/char/virtio_console.ko");
  try {
    initramfsEntries(tree.init(), tree.modules());
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("virtio_console.ko"), std::string::npos) << e.what();
  }
}

std::string buildDir() {
  const char* env = std::getenv("CELLOS_BUILD_DIR");
  return env != nullptr ? env : CELLOS_TEST_BUILD_DIR;
}

int run(const std::string& command) {
  int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(Initramfs, ToolWritesTheLibrarysArchive) {
  TempTree tree;
  std::string tool = buildDir() + "/vm/cellos-make-initramfs";
  fs::path out = tree.root() / "initramfs.cpio";
  ASSERT_EQ(run(tool + " --init " + tree.init().string() + " --modules " + tree.modules().string() +
                " --out " + out.string()),
            0);
  std::ifstream in(out, std::ios::binary);
  std::string written((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(written, newcArchive(initramfsEntries(tree.init(), tree.modules())));
  EXPECT_FALSE(fs::exists(out.string() + ".tmp"));

  EXPECT_EQ(run(tool + " --help >/dev/null"), 0);
  EXPECT_EQ(run(tool + " --init " + tree.init().string() + " 2>/dev/null"), 2);
  EXPECT_EQ(run(tool + " --init " + tree.init().string() + " --modules /nonexistent --out " +
                out.string() + " 2>/dev/null"),
            1);
}

}  // namespace
}  // namespace cellos::guest
