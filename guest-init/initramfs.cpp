#include "guest-init/initramfs.h"

#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "guest-init/plan.h"

namespace cellos::guest {

namespace {

void putHex(std::string& out, uint32_t value) {
  char field[9];
  snprintf(field, sizeof(field), "%08X", value);
  out.append(field, 8);
}

void pad4(std::string& out) {
  while (out.size() % 4 != 0) out.push_back('\0');
}

void putEntry(std::string& out, uint32_t inode, const std::string& name, uint32_t mode,
              std::string_view data) {
  out.append("070701");
  putHex(out, inode);
  putHex(out, mode);
  putHex(out, 0);                      // uid
  putHex(out, 0);                      // gid
  putHex(out, S_ISDIR(mode) ? 2 : 1);  // nlink
  putHex(out, 0);                      // mtime
  putHex(out, static_cast<uint32_t>(data.size()));
  putHex(out, 0);  // devmajor
  putHex(out, 0);  // devminor
  putHex(out, 0);  // rdevmajor
  putHex(out, 0);  // rdevminor
  putHex(out, static_cast<uint32_t>(name.size() + 1));
  putHex(out, 0);  // check (used only by the "070702" format)
  out.append(name);
  out.push_back('\0');
  pad4(out);
  out.append(data);
  pad4(out);
}

std::string readWholeFile(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    throw std::runtime_error(path + " is not a readable regular file");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream content;
  content << in.rdbuf();
  if (in.bad()) throw std::runtime_error("cannot read " + path);
  return std::move(content).str();
}

}  // namespace

const std::vector<ModuleSource> kModuleSources = {
    {"virtio_ring", "drivers/virtio/virtio_ring.ko"},
    {"virtio", "drivers/virtio/virtio.ko"},
    {"virtio_mmio", "drivers/virtio/virtio_mmio.ko"},
    {"virtio_console", "drivers/char/virtio_console.ko"},
    {"virtio_blk", "drivers/block/virtio_blk.ko"},
    {"failover", "net/core/failover.ko"},
    {"net_failover", "drivers/net/net_failover.ko"},
    {"virtio_net", "drivers/net/virtio_net.ko"},
};

std::string newcArchive(const std::vector<CpioEntry>& entries) {
  std::string out;
  uint32_t inode = 1;
  for (const CpioEntry& entry : entries) {
    if (entry.data.size() > UINT32_MAX) throw std::runtime_error(entry.name + " is too large");
    putEntry(out, inode++, entry.name, entry.mode, entry.data);
  }
  putEntry(out, 0, "TRAILER!!!", 0, {});
  return out;
}

std::vector<CpioEntry> initramfsEntries(const std::string& initPath,
                                        const std::string& modulesDir) {
  std::vector<CpioEntry> entries;
  for (const char* dir : {"dev", "proc", "sys", "newroot", "lib", "lib/modules"}) {
    entries.push_back({.name = dir, .mode = S_IFDIR | 0755});
  }
  entries.push_back({.name = "init", .mode = S_IFREG | 0755, .data = readWholeFile(initPath)});
  for (std::string_view name : kModuleLoadOrder) {
    std::string path;
    for (const ModuleSource& source : kModuleSources) {
      if (source.name == name) path = modulesDir + "/" + std::string(source.path);
    }
    if (path.empty()) throw std::runtime_error("no source path for module " + std::string(name));
    entries.push_back({.name = "lib/modules/" + std::string(name) + ".ko",
                       .mode = S_IFREG | 0644,
                       .data = readWholeFile(path)});
  }
  return entries;
}

}  // namespace cellos::guest
