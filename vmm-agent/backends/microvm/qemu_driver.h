#pragma once
// The QEMU driver: `qemu-system-x86_64 -M microvm` (Debian's qemu-system-x86), the guest's
// devices on virtio-mmio found through ACPI, its own sandbox on, no monitor at all.

#include "vmm-agent/backends/microvm/vmm_driver.h"

#include <string>

namespace cellos::vmm {

class QemuDriver final : public VmmDriver {
 public:
  explicit QemuDriver(std::string binary) : binary_(std::move(binary)) {}
  const char* name() const override { return "qemu"; }
  std::vector<std::string> commandLine(const VmBoot& boot) const override;

 private:
  std::string binary_;
};

}  // namespace cellos::vmm
