#include "vmm-agent/backends/microvm/qemu_driver.h"

#include "ipc/vm_channel.h"

namespace cellos::vmm {

namespace {

std::string fdPath(int fd) {
  return "/proc/self/fd/" + std::to_string(fd);
}

}  // namespace

// Every choice here is part of the VM threat model (docs/security.md, "The microvm backend"):
//   -nodefaults -no-user-config: no device, no config file beyond what is listed;
//   -sandbox on,...: QEMU's own seccomp filter, no exec, no privilege change, no obsolete calls,
//                    no scheduler/resource calls;
//   -monitor none -display none: no monitor exists, so none is reachable by anyone;
//   the disk read-only, the kernel, initramfs and disk opened through the runtime's fds;
//   the network only the TAP fd (no helper scripts: script/downscript never run with fd=);
//   acpi=on so the guest finds its virtio-mmio devices without kernel arguments; pci=off (the
//   machine has none); -no-reboot + reboot=t panic=-1: a guest reboot or panic ends QEMU.
std::vector<std::string> QemuDriver::commandLine(const VmBoot& boot) const {
  std::string accel = boot.accelerator == "kvm" ? "kvm" : "tcg,tb-size=64";
  std::string append = "console=ttyS0 quiet panic=-1 reboot=t pci=off";
  if (!boot.extraKernelArgs.empty()) append += " " + boot.extraKernelArgs;
  std::vector<std::string> argv = {
      binary_,
      "-M",
      "microvm,acpi=on",
      "-accel",
      accel,
      "-m",
      std::to_string(boot.memoryMiB),
      "-smp",
      std::to_string(boot.vcpus),
      "-nodefaults",
      "-no-user-config",
      "-no-reboot",
      "-display",
      "none",
      "-monitor",
      "none",
      "-sandbox",
      "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
      "-kernel",
      fdPath(kVmmKernelFd),
      "-initrd",
      fdPath(kVmmInitramfsFd),
      "-append",
      append,
      "-chardev",
      "socket,id=console,fd=" + std::to_string(kVmmConsoleFd),
      "-serial",
      "chardev:console",
  };
  if (boot.bare) return argv;
  argv.insert(argv.end(),
              {
                  "-device",
                  "virtio-serial-device",
                  "-chardev",
                  "socket,id=ctl,fd=" + std::to_string(kVmmChannelFd),
                  "-device",
                  std::string("virtserialport,chardev=ctl,name=") + vmchannel::kVmChannelPortName,
                  "-drive",
                  "file=" + fdPath(kVmmRootDiskFd) + ",if=none,id=root,format=raw,readonly=on",
                  "-device",
                  "virtio-blk-device,drive=root",
                  "-netdev",
                  "tap,id=net0,fd=" + std::to_string(kVmmTapFd),
                  "-device",
                  "virtio-net-device,netdev=net0,mac=" + boot.guestMac,
              });
  return argv;
}

}  // namespace cellos::vmm
