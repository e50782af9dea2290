#pragma once
// The microvm backend: one cell is one guest kernel under a VMM (QEMU's microvm machine here),
// the workload run by the project's guest init (guest-init/) in the guest.
//
// What it shares with the other backends, so the rest of the agent cannot tell them apart: the
// same CellLaunch and LaunchedCell fds (start byte, raw wait status, stdout/stderr pipes, a
// pidfd to signal, the cell's network namespace), the same cgroup leaves (the VMM and its
// supervisor, with the guest's RAM plus the VMM's overhead as memory.max), the same veth and
// nftables scope (the workload's rules on the forward path from the TAP: core/nft_rules.h), the
// same DNS helper (bound on the guest link's gateway), the same records and reaping.
//
// How a cell runs. The launcher sends the cell's plan (vm_plan.h) in a sealed memfd to the
// microVM spawner, a process it forks before it installs its seccomp profile (the VMM needs
// system calls that profile refuses; supervisor_spawner.h). The spawner builds or reuses the
// cell's root disk image (vm_image.h), checks the kernel, initramfs and disk against their
// digests, and clones the VM supervisor (vm_supervisor.h) into the cell's namespaces; the
// supervisor boots the guest after the start byte (a boot must not hold the launcher or the
// spawner, which answer one request at a time), so a cell whose guest cannot boot fails in its
// run with the guest's console on its stderr.
//
// Accelerator: KVM when it can boot a guest here, found by booting the initramfs with
// "cellos.poweroff" under a timeout (not by /dev/kvm existing: nested hosts have /dev/kvm and
// hang, and not by root opening it: the VMM opens it as the cell's uid, through the node's
// group); TCG only when the operator allows it (accel "auto" falls back with a warning, "tcg"
// asks for it). The probe's answer is kept per boot of the host, VMM binary, kernel and
// initramfs.

#include "vmm-agent/cell/cell_backend.h"

#include <memory>
#include <string>

namespace cellos::vmm {

struct MicrovmConfig {
  std::string qemu = "/usr/bin/qemu-system-x86_64";
  // <kernelDir>/current names a release; <kernelDir>/<release>/vmlinuz is its kernel.
  std::string kernelDir = "/var/lib/cellos/vm/kernel";
  // The project's initramfs (cellos-make-initramfs): the guest init and the kernel's modules.
  std::string initramfs;
  // Root disk images (vm_image.h) and the accelerator probe's answer.
  std::string imagesDir = "/var/lib/cellos/vm/images";
  std::string accel = "auto";  // auto | kvm | tcg
};

// The accelerator this host's VM cells use, and whether it is a fallback ("auto" found that KVM
// cannot boot a guest here). Decided once, at the backend's start.
struct VmAccel {
  std::string accelerator;  // "kvm" | "tcg"
  bool fallback = false;
  std::string reason;  // why not KVM, when it is not
};

// Decides the accelerator for `config` (probing KVM when asked to or on "auto"). Throws
// std::runtime_error for "kvm" on a host where KVM cannot boot the guest.
VmAccel decideVmAccel(const MicrovmConfig& config);

// Why this host cannot run microvm cells with `config` ("" when it can): the VMM binary, the
// kernel, the initramfs. Checked at the launcher's start; a host that cannot refuses microvm
// cells by name with this reason.
std::string microvmUnavailableReason(const MicrovmConfig& config);

// The backend behind the seam: decides the accelerator and starts the microVM spawner now (the
// caller has not installed its seccomp profile yet).
std::unique_ptr<CellBackend> makeMicrovmBackend(const MicrovmConfig& config,
                                                const std::string& runDir);

// What a microvm cell leaves in its cell directory once its processes are gone (its root's
// mount point and the guest's exit note): removed. Safe on a cell of another backend.
std::vector<std::string> removeMicrovmLeftovers(const std::string& cellDir);

}  // namespace cellos::vmm
