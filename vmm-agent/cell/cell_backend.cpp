#include "vmm-agent/cell/cell_backend.h"

#include <dirent.h>

#include <algorithm>

namespace cellos::vmm {

std::vector<Fd> LaunchedCell::releaseAgentFds() {
  std::vector<Fd> fds;
  for (Fd* fd : {&pidFd, &netnsFd, &stdoutFd, &stderrFd, &startFd, &statusFd}) {
    fds.push_back(std::move(*fd));
  }
  return fds;
}

void LaunchedCell::adoptAgentFds(std::vector<Fd>& fds) {
  size_t i = 0;
  for (Fd* fd : {&pidFd, &netnsFd, &stdoutFd, &stderrFd, &startFd, &statusFd}) {
    *fd = std::move(fds.at(i++));
  }
}

std::vector<std::string> imageEntries(const std::string& imageRoot) {
  DIR* dir = opendir(imageRoot.c_str());
  if (dir == nullptr) throwErrno("opendir(" + imageRoot + ")");
  std::vector<std::string> names;
  while (dirent* entry = readdir(dir)) {
    std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    bool skipped = false;
    for (const char* own : kImageSkippedEntries) skipped = skipped || name == own;
    if (!skipped) names.push_back(name);
  }
  closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace cellos::vmm
