#include "vmm-agent/launcher/network_scope.h"

#include <arpa/inet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/route.h>
#include <nftables/libnftables.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <system_error>

namespace cellos::vmm {

namespace {

constexpr const char* kCellInterface = "eth0";

// libnl objects, released by their own functions.
struct SockFree {
  void operator()(nl_sock* s) const { nl_socket_free(s); }
};
struct LinkPut {
  void operator()(rtnl_link* l) const { rtnl_link_put(l); }
};
struct AddrPut {
  void operator()(rtnl_addr* a) const { rtnl_addr_put(a); }
};
struct NlAddrPut {
  void operator()(nl_addr* a) const { nl_addr_put(a); }
};
struct RoutePut {
  void operator()(rtnl_route* r) const { rtnl_route_put(r); }
};
struct CachePut {
  void operator()(nl_cache* c) const { nl_cache_free(c); }
};
struct NftFree {
  void operator()(nft_ctx* c) const { nft_ctx_free(c); }
};
using Socket = std::unique_ptr<nl_sock, SockFree>;
using Link = std::unique_ptr<rtnl_link, LinkPut>;

[[noreturn]] void failNl(const std::string& step, int error) {
  throw std::runtime_error(step + ": " + nl_geterror(error));
}

// A route netlink socket of the namespace this thread is in (a socket stays with the namespace
// it was made in).
Socket routeSocket() {
  Socket sock(nl_socket_alloc());
  if (!sock) throw std::runtime_error("nl_socket_alloc: out of memory");
  if (int err = nl_connect(sock.get(), NETLINK_ROUTE); err < 0)
    failNl("nl_connect(NETLINK_ROUTE)", err);
  return sock;
}

// The link named `name`, or null when there is none.
Link findLink(nl_sock* sock, const std::string& name) {
  rtnl_link* link = nullptr;
  int err = rtnl_link_get_kernel(sock, 0, name.c_str(), &link);
  if (err == -NLE_OBJ_NOTFOUND || err == -NLE_NODEV) return nullptr;
  if (err < 0) failNl("RTM_GETLINK " + name, err);
  return Link(link);
}

Link requireLink(nl_sock* sock, const std::string& name) {
  Link link = findLink(sock, name);
  if (!link) throw std::runtime_error("interface " + name + " vanished");
  return link;
}

std::unique_ptr<nl_addr, NlAddrPut> ipv4(uint32_t hostOrder, unsigned prefix) {
  uint32_t network = htonl(hostOrder);
  std::unique_ptr<nl_addr, NlAddrPut> addr(nl_addr_build(AF_INET, &network, sizeof network));
  if (!addr) throw std::runtime_error("nl_addr_build: out of memory");
  nl_addr_set_prefixlen(addr.get(), static_cast<int>(prefix));
  return addr;
}

void addAddress(nl_sock* sock, rtnl_link* link, uint32_t address, const std::string& what) {
  std::unique_ptr<rtnl_addr, AddrPut> addr(rtnl_addr_alloc());
  if (!addr) throw std::runtime_error("rtnl_addr_alloc: out of memory");
  rtnl_addr_set_ifindex(addr.get(), rtnl_link_get_ifindex(link));
  auto local = ipv4(address, core::CellAddressPair::kPrefix);
  rtnl_addr_set_local(addr.get(), local.get());
  if (int err = rtnl_addr_add(sock, addr.get(), 0); err < 0) {
    failNl("RTM_NEWADDR " + core::formatIpv4(address) + "/30 on " + what, err);
  }
}

void setUp(nl_sock* sock, rtnl_link* link, const std::string& what) {
  Link change(rtnl_link_alloc());
  if (!change) throw std::runtime_error("rtnl_link_alloc: out of memory");
  rtnl_link_set_flags(change.get(), IFF_UP);
  if (int err = rtnl_link_change(sock, link, change.get(), 0); err < 0) {
    failNl("RTM_NEWLINK " + what + " up", err);
  }
}

void addDefaultRoute(nl_sock* sock, rtnl_link* link, uint32_t gateway) {
  std::unique_ptr<rtnl_route, RoutePut> route(rtnl_route_alloc());
  if (!route) throw std::runtime_error("rtnl_route_alloc: out of memory");
  rtnl_route_set_family(route.get(), AF_INET);
  rtnl_route_set_table(route.get(), RT_TABLE_MAIN);
  rtnl_route_set_scope(route.get(), RT_SCOPE_UNIVERSE);
  rtnl_route_set_protocol(route.get(), RTPROT_STATIC);
  auto dst = ipv4(0, 0);
  rtnl_route_set_dst(route.get(), dst.get());
  rtnl_nexthop* hop = rtnl_route_nh_alloc();  // owned by the route once added to it
  if (!hop) throw std::runtime_error("rtnl_route_nh_alloc: out of memory");
  auto via = ipv4(gateway, 32);
  rtnl_route_nh_set_gateway(hop, via.get());
  rtnl_route_nh_set_ifindex(hop, rtnl_link_get_ifindex(link));
  rtnl_route_add_nexthop(route.get(), hop);
  if (int err = rtnl_route_add(sock, route.get(), NLM_F_CREATE | NLM_F_EXCL); err < 0) {
    failNl("RTM_NEWROUTE default via " + core::formatIpv4(gateway), err);
  }
}

void deleteLinkIfPresent(nl_sock* sock, const std::string& name) {
  Link link = findLink(sock, name);
  if (!link) return;
  int err = rtnl_link_delete(sock, link.get());
  if (err < 0 && err != -NLE_OBJ_NOTFOUND && err != -NLE_NODEV) failNl("RTM_DELLINK " + name, err);
}

// Runs nftables commands in the namespace this thread is in. Returns libnftables' output; throws
// with its error text.
std::string runNft(const std::string& commands, bool json) {
  std::unique_ptr<nft_ctx, NftFree> ctx(nft_ctx_new(NFT_CTX_DEFAULT));
  if (!ctx) throw std::runtime_error("nft_ctx_new failed");
  nft_ctx_buffer_output(ctx.get());
  nft_ctx_buffer_error(ctx.get());
  if (json) nft_ctx_output_set_flags(ctx.get(), NFT_CTX_OUTPUT_JSON);
  if (nft_run_cmd_from_buffer(ctx.get(), commands.c_str()) != 0) {
    const char* error = nft_ctx_get_error_buffer(ctx.get());
    throw std::runtime_error("nftables: " + std::string(error ? error : "failed"));
  }
  const char* output = nft_ctx_get_output_buffer(ctx.get());
  return output ? output : "";
}

void returnHome(int home) {
  if (setns(home, CLONE_NEWNET) < 0) {
    // Continuing would build the next cell's network in the wrong namespace.
    fprintf(stderr, "cellos-vmm-agent: setns(launcher netns): %s; aborting\n", strerror(errno));
    abort();
  }
}

}  // namespace

void inNetworkNamespace(int target, int home, const std::function<void()>& body) {
  if (setns(target, CLONE_NEWNET) < 0) {
    throw std::system_error(errno, std::generic_category(),
                            "setns(" + std::to_string(target) + ", CLONE_NEWNET)");
  }
  try {
    body();
  } catch (...) {
    returnHome(home);
    throw;
  }
  returnHome(home);
}

void createCellLink(const UplinkNamespace& uplink, int cellNetnsFd,
                    const std::string& uplinkInterface, const core::CellAddressPair& addresses) {
  if (uplinkInterface.empty() || uplinkInterface.size() >= IFNAMSIZ) {
    throw std::invalid_argument("interface name \"" + uplinkInterface + "\" is not 1-15 bytes");
  }
  bool created = false;
  try {
    inNetworkNamespace(uplink.uplinkFd, uplink.homeFd, [&]() {
      Socket sock = routeSocket();
      deleteLinkIfPresent(sock.get(), uplinkInterface);
      Link veth(rtnl_link_veth_alloc());
      if (!veth) throw std::runtime_error("rtnl_link_veth_alloc: out of memory");
      rtnl_link_set_name(veth.get(), uplinkInterface.c_str());
      rtnl_link* peer = rtnl_link_veth_get_peer(veth.get());
      rtnl_link_set_name(peer, kCellInterface);
      rtnl_link_set_ns_fd(peer, cellNetnsFd);  // created directly inside the cell
      rtnl_link_put(peer);
      if (int err = rtnl_link_add(sock.get(), veth.get(), NLM_F_CREATE | NLM_F_EXCL); err < 0) {
        failNl("RTM_NEWLINK veth " + uplinkInterface + " <-> cell eth0", err);
      }
      created = true;
      Link end = requireLink(sock.get(), uplinkInterface);
      addAddress(sock.get(), end.get(), addresses.uplink, uplinkInterface);
      setUp(sock.get(), end.get(), uplinkInterface);
    });
    inNetworkNamespace(cellNetnsFd, uplink.homeFd, [&]() {
      Socket sock = routeSocket();
      Link eth = requireLink(sock.get(), kCellInterface);
      addAddress(sock.get(), eth.get(), addresses.cell, "cell eth0");
      setUp(sock.get(), eth.get(), "cell eth0");
      addDefaultRoute(sock.get(), eth.get(), addresses.uplink);
    });
  } catch (...) {
    if (created) removeCellNetwork(uplink, -1, uplinkInterface);
    throw;
  }
}

void applyCellRuleset(const UplinkNamespace& uplink, int cellNetnsFd, const core::NftPlan& plan) {
  std::string ruleset = core::nftRuleset(plan);
  inNetworkNamespace(cellNetnsFd, uplink.homeFd, [&]() { runNft(ruleset, false); });
}

void addCellElements(const UplinkNamespace& uplink, int cellNetnsFd, const std::string& commands) {
  inNetworkNamespace(cellNetnsFd, uplink.homeFd, [&]() { runNft(commands, false); });
}

std::vector<core::NftCounter> readCellCounters(const UplinkNamespace& uplink, int cellNetnsFd) {
  std::string json;
  inNetworkNamespace(cellNetnsFd, uplink.homeFd, [&]() {
    json = runNft("list table inet " + std::string(core::kNftTable), true);
  });
  return core::parseNftCounters(json);
}

std::vector<std::string> removeCellNetwork(const UplinkNamespace& uplink, int cellNetnsFd,
                                           const std::string& uplinkInterface) {
  std::vector<std::string> residue;
  if (cellNetnsFd >= 0) {
    try {
      // "add" first makes the delete succeed whether or not the table exists (nft 1.0.6 has no
      // "destroy"): one transaction, so teardown stays idempotent.
      std::string table = "inet " + std::string(core::kNftTable);
      inNetworkNamespace(cellNetnsFd, uplink.homeFd, [&]() {
        runNft("add table " + table + "\ndelete table " + table + "\n", false);
      });
    } catch (const std::exception& e) {
      residue.push_back(std::string("nftables table of the cell: ") + e.what());
    }
  }
  if (!uplinkInterface.empty()) {
    try {
      inNetworkNamespace(uplink.uplinkFd, uplink.homeFd, [&]() {
        Socket sock = routeSocket();
        deleteLinkIfPresent(sock.get(), uplinkInterface);
      });
    } catch (const std::exception& e) {
      residue.push_back("veth " + uplinkInterface + ": " + e.what());
    }
  }
  return residue;
}

std::vector<std::string> namespaceAddresses(const UplinkNamespace& uplink, int netnsFd) {
  std::vector<std::string> addresses;
  inNetworkNamespace(netnsFd, uplink.homeFd, [&]() {
    Socket sock = routeSocket();
    nl_cache* raw = nullptr;
    if (int err = rtnl_addr_alloc_cache(sock.get(), &raw); err < 0) failNl("RTM_GETADDR", err);
    std::unique_ptr<nl_cache, CachePut> cache(raw);
    for (nl_object* object = nl_cache_get_first(cache.get()); object != nullptr;
         object = nl_cache_get_next(object)) {
      nl_addr* local = rtnl_addr_get_local(reinterpret_cast<rtnl_addr*>(object));
      if (local == nullptr) continue;
      int family = nl_addr_get_family(local);
      unsigned length = nl_addr_get_len(local);
      if (!((family == AF_INET && length == 4) || (family == AF_INET6 && length == 16))) continue;
      char text[INET6_ADDRSTRLEN] = {};
      inet_ntop(family, nl_addr_get_binary_addr(local), text, sizeof text);
      addresses.emplace_back(text);
    }
  });
  return addresses;
}

int watchAddressChanges(const UplinkNamespace& uplink, int netnsFd) {
  int fd = -1;
  inNetworkNamespace(netnsFd, uplink.homeFd, [&]() {
    // A netlink socket stays with the namespace it was made in, wherever the thread goes next.
    fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "socket(NETLINK_ROUTE)");
    sockaddr_nl local{};
    local.nl_family = AF_NETLINK;
    local.nl_groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;
    if (bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local) < 0) {
      int error = errno;
      close(fd);
      throw std::system_error(error, std::generic_category(), "bind(RTMGRP_*_IFADDR)");
    }
  });
  return fd;
}

bool drainAddressChanges(int watchFd) {
  bool changed = false;
  char buffer[8192];
  for (;;) {
    ssize_t n = recv(watchFd, buffer, sizeof buffer, MSG_DONTWAIT);
    if (n > 0) {
      changed = true;
    } else if (n < 0 && errno == ENOBUFS) {
      changed = true;  // notifications were lost: assume the worst
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      return changed;  // EAGAIN: nothing more (0 cannot happen on a netlink socket)
    }
  }
}

bool interfaceExists(const UplinkNamespace& uplink, int netnsFd, const std::string& name) {
  bool exists = false;
  inNetworkNamespace(netnsFd, uplink.homeFd, [&]() {
    Socket sock = routeSocket();
    exists = findLink(sock.get(), name) != nullptr;
  });
  return exists;
}

bool cellTableExists(const UplinkNamespace& uplink, int netnsFd) {
  std::string listing;
  inNetworkNamespace(netnsFd, uplink.homeFd, [&]() { listing = runNft("list tables", false); });
  return listing.find("table inet " + std::string(core::kNftTable) + "\n") != std::string::npos;
}

}  // namespace cellos::vmm
