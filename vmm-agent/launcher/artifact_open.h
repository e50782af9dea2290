#pragma once
// Opening a cell's export artifacts, for every backend.
//
// The cell's working directory belongs to the cell: its workload may have planted symlinks
// (`out/report -> /etc/shadow`), FIFOs (an open would block the reader forever), device nodes or
// a 10 GiB sparse file there. The VM launcher is the only process that can reach that directory
// (the broker holds no privilege and never sees the cell's mounts), so it opens each artifact
// here and hands the broker nothing but a read-only fd on a regular file it has checked. The
// broker copies from that fd (broker/artifact_export.h).
//
// A backend passes the directory as an fd (openWorkingDirectory below, or its own O_PATH fd of
// the directory); nothing here depends on how the backend built it.

#include <cstdint>
#include <string>

namespace cellos::vmm {

// The outcome of opening one artifact: `fd` >= 0 (O_RDONLY|O_CLOEXEC, owned by the caller) and
// its size, or fd -1 and `refused` saying why in one line (for export.v2.failed).
struct OpenedArtifact {
  int fd = -1;
  uint64_t bytes = 0;
  std::string refused;
};

// Opens `path` (absolute, as the document names it) below `workingDirectory` (absolute, the
// same string the cell was launched with), relative to `workdirFd` (that directory, any open
// mode including O_PATH):
//   * the path must lie below the working directory, and no component may be "." or "..";
//   * no symlink is followed anywhere on the way, and the walk never leaves the working
//     directory's file system (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//     RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV; where openat2 is missing, the same rules by a
//     component-by-component walk, see openArtifactByWalk);
//   * opened O_NONBLOCK|O_NOCTTY so a FIFO or a device cannot block or become a terminal, then
//     refused unless fstat says it is a regular file;
//   * refused when its size exceeds `maxBytes`, before a byte is read.
// Never throws for anything the cell controls.
OpenedArtifact openArtifact(int workdirFd, const std::string& workingDirectory,
                            const std::string& path, uint64_t maxBytes);

// The fallback walk openArtifact uses when the kernel has no openat2 (before 5.6), exposed so
// tests exercise it on every kernel: each directory component is opened O_PATH|O_NOFOLLOW|
// O_DIRECTORY and must be on the working directory's device, the last one O_NOFOLLOW.
OpenedArtifact openArtifactByWalk(int workdirFd, const std::string& relativePath,
                                  uint64_t maxBytes);

// O_PATH|O_DIRECTORY|O_CLOEXEC fd of `path`; -1 with errno set on failure. Holding it keeps the
// directory's file system reachable after the cell's mount namespace is gone (a detached mount
// stays readable through open fds), which is what lets the export phase run after the
// workload, and the cell's init, have exited.
int openWorkingDirectory(const std::string& path);

}  // namespace cellos::vmm
