#pragma once
// Finding the control port. An initramfs has no udev, so no /dev/virtio-ports/<name> links:
// the port is found by the name the host gave its virtserialport, which the kernel publishes in
// /sys/class/virtio-ports/<vportNpM>/name.

#include <optional>
#include <string>

namespace cellos::guest {

// The device name ("vport0p1") of the port called `name` under `classDir`
// (/sys/class/virtio-ports), or nullopt if none is there (yet).
std::optional<std::string> findVirtioPort(const std::string& classDir, const std::string& name);

}  // namespace cellos::guest
