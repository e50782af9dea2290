#pragma once
// The guest's network as the config names it: hostname, lo, and eth0 with one IPv4 address and a
// default route, set through the classic ioctls (the initramfs has no ip(8), and the guest
// needs nothing that rtnetlink alone can do).

#include "ipc/vm_channel.h"

namespace cellos::guest {

// Waits up to `waitMs` for eth0 when the config gives it an address.
void configureNetwork(const vmchannel::GuestConfig& config, unsigned waitMs);

}  // namespace cellos::guest
