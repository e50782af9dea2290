#pragma once
// The local export target: each artifact of a run becomes <root>/<cellId>/<runId>/<name>
// (mode 0640, owned by the broker's user), written as a temporary file beside it and renamed
// into place only once complete, so a reader never sees a partial artifact and a failed copy
// leaves nothing behind.
//
// The broker never opens a file of the cell: it receives a read-only fd the VM launcher opened
// and checked (vmm-agent/launcher/artifact_open.h) and copies at most `maxBytes` from it, hashing as it
// goes. The root is opened before seccomp; afterwards files are made under its fd only
// (mkdirat, openat with kCreateOnlyFlags, renameat, unlinkat: see seccomp_profile.cpp).

#include <sys/types.h>

#include <kj/async.h>

#include <cstdint>
#include <string>

namespace cellos::broker {

struct ExportedArtifact {
  std::string destination;  // absolute path of the final file
  std::string sha256;       // lower-case hex
  uint64_t bytes = 0;
};

class ArtifactExporter {
 public:
  // Creates `root` when missing (mode 0750, given to the owner when run as root) and opens it.
  // Throws with the path on error: a broker that cannot export does not start.
  ArtifactExporter(const std::string& root, uint64_t maxBytes, uid_t ownerUid, gid_t ownerGid);
  ~ArtifactExporter();
  ArtifactExporter(const ArtifactExporter&) = delete;
  ArtifactExporter& operator=(const ArtifactExporter&) = delete;

  // Copies the artifact open on `fd` (not owned; read from its current offset) to
  // <root>/<cellId>/<runId>/<name>. `cellId`, `runId` and `name` are validated already (spec
  // rules; a name is one portable path segment). Reads in chunks, yielding to the event loop
  // between them. Rejects with a one-line reason (std::runtime_error text) when the file is
  // longer than the cap or any call fails; nothing of the artifact then remains on disk.
  kj::Promise<ExportedArtifact> copy(int fd, const std::string& cellId, const std::string& runId,
                                     const std::string& name);

  uint64_t maxBytes() const { return maxBytes_; }
  const std::string& root() const { return root_; }

 private:
  std::string root_;
  uint64_t maxBytes_;
  int rootFd_ = -1;
};

}  // namespace cellos::broker
