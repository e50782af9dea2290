#pragma once
// What the launcher tells the microVM spawner about one cell (microvm_cell.h): the guest's own
// configuration (ipc/vm_channel.h, GuestConfig: argv, env, working directory, resolv.conf,
// limits enforced in the guest) and what the host does for it (guest RAM, vCPUs, the uid QEMU
// runs as, the image). It crosses from the launcher to the spawner in a sealed memfd attached
// to the spawn request (supervisor_spawner.h), never in a file: argv and env round-trip byte for
// byte, and the secrets are not in it (they are written into the cell's secrets tmpfs and read
// by the supervisor only after the start byte).

#include "ipc/vm_channel.h"

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cellos::vmm {

struct VmPlan {
  std::string cellId;
  std::string cellDir;
  vmchannel::GuestConfig guest;  // secrets empty here
  uint64_t memoryMiB = 256;      // guest RAM
  uint32_t vcpus = 1;
  uid_t vmmUid = 0;       // the cell's host id: QEMU runs as it (never 0)
  std::string imageRoot;  // "" for the VM host view, else a registered directory image
};

std::string encodeVmPlan(const VmPlan& plan);
// nullopt (with `why`) for bytes encodeVmPlan did not write.
std::optional<VmPlan> decodeVmPlan(std::string_view bytes, std::string* why);

// The plan in a sealed memfd (F_SEAL_SEAL|SHRINK|GROW|WRITE), and back: readVmPlan refuses a
// memfd without those seals (so what it read is what the launcher wrote) or beyond 16 MiB.
int vmPlanMemfd(const VmPlan& plan);
VmPlan readVmPlan(int memfd);

}  // namespace cellos::vmm
