#pragma once
// The launcher's backends: one CellBackend (cell/cell_backend.h) per backend this host runs,
// made before the launcher installs its seccomp profile. The only place in the launcher that
// names a backend.

#include "ipc/vmm.capnp.h"
#include "vmm-agent/cell/cell_backend.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace cellos::vmm {

struct GvisorConfig;
struct MicrovmConfig;

class BackendTable {
 public:
  // linux always; gvisor when `gvisor` is set, microvm when `microvm` is (their spawners start
  // now). `microvmUnavailable` is why a host without microvm refuses its cells.
  BackendTable(const std::optional<GvisorConfig>& gvisor,
               const std::optional<MicrovmConfig>& microvm, std::string microvmUnavailable,
               const std::string& runDir);
  ~BackendTable();
  BackendTable(const BackendTable&) = delete;
  BackendTable& operator=(const BackendTable&) = delete;

  // The backend that builds cells of `kind`; throws std::runtime_error ("backend not available
  // on this VM launcher") for one this host does not run.
  CellBackend& get(ipc::Backend kind);
  // Every backend this host runs, for teardown of a cell whose backend is not known.
  std::vector<CellBackend*> all();

 private:
  std::unique_ptr<CellBackend> linux_, gvisor_, microvm_;
  std::string microvmUnavailable_;
};

// Every backend's removeLeftovers for an orphaned cell whose backend nobody recorded (the
// reaper's case): each is safe on another backend's cell. Needs no running backend.
std::vector<std::string> removeLeftoversOfAnyBackend(const std::string& cellId,
                                                     const std::string& cellDir);

}  // namespace cellos::vmm
