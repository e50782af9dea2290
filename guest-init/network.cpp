#include "guest-init/network.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "guest-init/plan.h"
#include "guest-init/sys.h"

namespace cellos::guest {

namespace {

sockaddr inetAddress(uint32_t hostOrder) {
  sockaddr address;
  std::memset(&address, 0, sizeof(address));
  sockaddr_in in;
  std::memset(&in, 0, sizeof(in));
  in.sin_family = AF_INET;
  in.sin_addr.s_addr = htonl(hostOrder);
  std::memcpy(&address, &in, sizeof(in));
  return address;
}

ifreq request(const char* name) {
  ifreq req;
  std::memset(&req, 0, sizeof(req));
  std::strncpy(req.ifr_name, name, IFNAMSIZ - 1);
  return req;
}

void bringUp(int sock, const char* name) {
  ifreq req = request(name);
  check(::ioctl(sock, SIOCGIFFLAGS, &req), std::string("SIOCGIFFLAGS ") + name);
  req.ifr_flags |= IFF_UP;
  check(::ioctl(sock, SIOCSIFFLAGS, &req), std::string("SIOCSIFFLAGS up ") + name);
}

}  // namespace

void configureNetwork(const vmchannel::GuestConfig& config, unsigned waitMs) {
  std::string why;
  auto plan = planNetwork(config, &why);
  if (!plan) throw GuestError(why);
  if (!config.hostname.empty()) {
    check(::sethostname(config.hostname.data(), config.hostname.size()),
          "sethostname " + config.hostname);
  }
  int sock = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) throwErrno("socket AF_INET");
  try {
    bringUp(sock, "lo");
    if (plan->configureEth0) {
      if (!waitForPath("/sys/class/net/eth0", waitMs)) {
        throw GuestError("the config gives eth0 an address, but the guest has no eth0");
      }
      ifreq req = request("eth0");
      req.ifr_addr = inetAddress(plan->address);
      check(::ioctl(sock, SIOCSIFADDR, &req), "SIOCSIFADDR eth0 " + config.address);
      req = request("eth0");
      req.ifr_netmask = inetAddress(plan->netmask);
      check(::ioctl(sock, SIOCSIFNETMASK, &req), "SIOCSIFNETMASK eth0");
      bringUp(sock, "eth0");
      // The carrier, not IFF_RUNNING: with the carrier on (virtio-net sets it from the
      // device's link status soon after its probe), opening the device attached its queue and
      // packets leave. IFF_RUNNING is the operational state the kernel's linkwatch sets, at
      // most once a second: waiting for it cost each cell about a second. Before the carrier is
      // on the queue drops every packet, and a workload's first connection would time out.
      uint64_t deadline = monotonicMs() + waitMs;
      for (;;) {
        std::string carrier;
        try {
          carrier = readFile("/sys/class/net/eth0/carrier");
        } catch (const std::exception&) {
          // EINVAL while the device is not up yet: wait.
        }
        if (carrier.rfind("1", 0) == 0) break;
        if (monotonicMs() >= deadline) throw GuestError("eth0 has no carrier");
        sleepMs(2);
      }
      if (plan->gateway) {
        rtentry route;
        std::memset(&route, 0, sizeof(route));
        route.rt_dst = inetAddress(0);
        route.rt_genmask = inetAddress(0);
        route.rt_gateway = inetAddress(*plan->gateway);
        route.rt_flags = RTF_UP | RTF_GATEWAY;
        char device[] = "eth0";
        route.rt_dev = device;
        check(::ioctl(sock, SIOCADDRT, &route), "SIOCADDRT default via " + config.gateway);
      }
    }
  } catch (...) {
    ::close(sock);
    throw;
  }
  ::close(sock);
}

}  // namespace cellos::guest
