#pragma once
// `cellos doctor`: what this host lacks to run cellos, and how to fix each thing.

#include <string>
#include <vector>

namespace cellos::cli {

struct DoctorOptions {
  std::string runDir = "/run/cellos";        // service-mode sockets (packaging/config)
  std::string stateDir = "/var/lib/cellos";  // signer keys, event log
  std::string binDir;                        // the daemons; default: beside this program
  std::string vmDir = "/var/lib/cellos/vm";  // microvm: kernel/, images/ (the launcher's)
};

// One finding. `fix` is a command or step that resolves it (empty for ok).
struct DoctorFinding {
  enum class Level { kOk, kWarn, kFail } level;
  std::string check;   // "kernel", "cgroups", "runsc", ...
  std::string detail;  // what was found
  std::string fix;
};

// One daemon unit's finding from `systemctl is-active` and, when it is not running, the last
// error its journal holds (empty if none): "activating" is a unit restarting after a failed
// start (Restart=on-failure), as much a failure as "failed", and the error says why.
DoctorFinding unitFinding(const std::string& unit, const std::string& active,
                          const std::string& lastError);

// Whether the gvisor backend is on under the VM launcher's unit: runsc installed is not enough,
// the agent turns the backend off without CAP_CHOWN in its bounding set (vmm-agent/main.cpp).
// `boundingSet` is `systemctl show -p CapabilityBoundingSet --value` of the unit.
DoctorFinding gvisorUnderUnitFinding(bool runscInstalled, const std::string& boundingSet);

// Every check, in the order they are printed.
std::vector<DoctorFinding> examineHost(const DoctorOptions& options);

// Prints the findings and a summary; exit status 0 when nothing failed (warnings are features
// this version does not need yet, such as /dev/kvm), 1 otherwise.
int doctorCommand(const DoctorOptions& options);

}  // namespace cellos::cli
