#include "vmm-agent/launcher/backend_table.h"

#include "vmm-agent/backends/gvisor/gvisor_cell.h"
#include "vmm-agent/backends/linux/linux_cell.h"
#include "vmm-agent/backends/microvm/microvm_cell.h"

#include <spdlog/spdlog.h>

#include <stdexcept>

namespace cellos::vmm {

BackendTable::BackendTable(const std::optional<GvisorConfig>& gvisor,
                           const std::optional<MicrovmConfig>& microvm,
                           std::string microvmUnavailable, const std::string& runDir)
    : linux_(makeLinuxBackend()), microvmUnavailable_(std::move(microvmUnavailable)) {
  if (gvisor) gvisor_ = makeGvisorBackend(*gvisor, runDir);
  if (microvm) {
    try {
      microvm_ = makeMicrovmBackend(*microvm, runDir);
    } catch (const std::exception& e) {
      // --vm-accel kvm on a host where KVM cannot boot a guest: the other backends still run.
      microvmUnavailable_ = e.what();
      spdlog::error("the microvm backend is off: {}", e.what());
    }
  }
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
    case ipc::Backend::MICROVM:
      if (microvm_) return *microvm_;
      throw std::runtime_error("backend microvm not available on this VM launcher: " +
                               microvmUnavailable_);
  }
  throw std::runtime_error("backend " + std::to_string(static_cast<int>(kind)) +
                           " not available on this VM launcher");
}

std::vector<CellBackend*> BackendTable::all() {
  std::vector<CellBackend*> backends = {linux_.get()};
  if (gvisor_) backends.push_back(gvisor_.get());
  if (microvm_) backends.push_back(microvm_.get());
  return backends;
}

std::vector<std::string> removeLeftoversOfAnyBackend(const std::string& cellId,
                                                     const std::string& cellDir) {
  // The linux backend leaves nothing on the host; the gvisor backend its bundle and cgroups;
  // the microvm backend its root's mount point and the guest's exit note.
  std::vector<std::string> residue = removeGvisorLeftovers(cellId, cellDir);
  for (std::string& r : removeMicrovmLeftovers(cellDir)) residue.push_back(std::move(r));
  return residue;
}

}  // namespace cellos::vmm
