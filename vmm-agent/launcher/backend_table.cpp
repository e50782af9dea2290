#include "vmm-agent/launcher/backend_table.h"

#include "vmm-agent/backends/gvisor/gvisor_cell.h"
#include "vmm-agent/backends/linux/linux_cell.h"

#include <stdexcept>

namespace cellos::vmm {

BackendTable::BackendTable(const std::optional<GvisorConfig>& gvisor, const std::string& runDir)
    : linux_(makeLinuxBackend()) {
  if (gvisor) gvisor_ = makeGvisorBackend(*gvisor, runDir);
}

BackendTable::~BackendTable() = default;

CellBackend& BackendTable::get(ipc::Backend kind) {
  switch (kind) {
    case ipc::Backend::LINUX:
      return *linux_;
    case ipc::Backend::GVISOR:
      if (gvisor_) return *gvisor_;
      throw std::runtime_error(
          "backend gvisor not available on this VM launcher (runsc was not executable at its "
          "start)");
  }
  throw std::runtime_error("backend " + std::to_string(static_cast<int>(kind)) +
                           " not available on this VM launcher");
}

std::vector<CellBackend*> BackendTable::all() {
  std::vector<CellBackend*> backends = {linux_.get()};
  if (gvisor_) backends.push_back(gvisor_.get());
  return backends;
}

std::vector<std::string> removeLeftoversOfAnyBackend(const std::string& cellId,
                                                     const std::string& cellDir) {
  // The linux backend leaves nothing on the host; the gvisor backend its bundle and cgroups.
  return removeGvisorLeftovers(cellId, cellDir);
}

}  // namespace cellos::vmm
