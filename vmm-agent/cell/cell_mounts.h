#pragma once
// Mount and path helpers of the code that builds a cell's root (each backend's pid 1) and of
// the launcher's residue checks. Every failure throws std::system_error naming the whole call
// ("mount(/usr -> /x/usr, MS_BIND|MS_REC): ..."), as sys_util.h's dialect says.

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace cellos::vmm {

// "MS_BIND|MS_REC|0x..." for an error message.
std::string mountFlagsText(unsigned long flags);
// mount(2) with the whole call in the error.
void doMount(const char* source, const std::string& target, const char* fstype, unsigned long flags,
             const char* data);
// Changes the per-mount flags of the mount at `path` to `flags` plus the ones it already has
// (a bind's flags are set only by a second MS_REMOUNT|MS_BIND call, which replaces them all;
// the ones already set, and in a user namespace the locked ones, are read back and kept).
void remountBind(const std::string& path, unsigned long flags);
// mkdir(path, mode), throwing; and every missing directory of an absolute `path`.
void makeDirectory(const std::string& path, mode_t mode);
void makeDirectories(const std::string& path, mode_t mode);
// Whether `path` is a directory (not following a last symlink).
bool isDirectory(const std::string& path);
// Creates the new file `path` (O_EXCL|O_NOFOLLOW) with `content` and `mode`.
void writeNewFile(const std::string& path, const std::string& content, mode_t mode);
// The target of symlink `path`.
std::string readLink(const std::string& path);
// A new symlink `target` with the same target text as symlink `source` (which then resolves
// wherever `target` is seen, e.g. inside a cell's root).
void copySymlink(const std::string& source, const std::string& target);
// Reads a kernel-generated file (procfs) whole.
std::string readWholeFile(const std::string& path);
// /proc/self/mountinfo escapes space, tab, newline and backslash in paths as \ooo.
std::string unescapeMountPath(const std::string& field);
// Mount points equal to `dir` or below it in this process's mount namespace, in mountinfo order
// (a parent mount is listed before the mounts on top of it).
std::vector<std::string> mountPointsUnder(const std::string& dir);
// The new mount namespace starts as a copy of the host's, with the host's propagation: where
// "/" is shared (systemd makes it so), mounts made in the cell would appear on the host too.
// Making the whole tree private first keeps them in the cell.
void makeMountsPrivate();
// pivot_root(".", ".") into `newRoot` and detach the old root: from here on no host path is
// reachable except what was bound into `newRoot`.
void pivotIntoNewRoot(const std::string& newRoot);

// <newRoot>/dev: a tmpfs with only the harmless character devices (null, zero, full, random,
// urandom, plus `extraDevices` by name, e.g. "kvm" for a VMM), bound from the host since mknod
// in a fresh tmpfs would need the tmpfs to allow device nodes, and a /dev/shm tmpfs. No tty, no
// pts, no ptmx: no terminal can reach a cell (TIOCSTI). The /dev tmpfs itself is nodev and ends
// up read-only; the bound nodes keep working because a bind mount carries its own flags.
void mountDev(const std::string& newRoot, const std::vector<std::string>& extraDevices = {},
              uint64_t shmBytes = 0);

// ",size=<bytes>" for a tmpfs's mount options, or "" for 0 (the kernel's default, half the RAM).
// A cell's scratch tmpfs (/tmp, /dev/shm, its working directory) are each sized at half its
// memory limit, as the kernel sizes one at half the RAM: tmpfs pages are charged to the cell's
// memory cgroup anyway, and a size below the limit makes a full disk ENOSPC for the writer
// instead of an OOM kill of whatever allocates next (filling all three is still bounded by the
// memory limit).
std::string tmpfsSizeOption(uint64_t bytes);

}  // namespace cellos::vmm
