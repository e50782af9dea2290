#pragma once
// A cell's network scope, built by the launcher from outside the cell: a veth pair between the
// cell's network namespace ("eth0" there) and the uplink namespace (the host's by default, a
// namespace a test made in tests), a /30 address pair from the configured pool, the cell's
// default route via the uplink end, and the nftables ruleset (core/nft_rules.h) loaded into the
// cell's namespace through libnftables. Nothing here runs a program (no `ip`, no `nft`).
//
// Every step enters a namespace with setns(2) on this thread and returns to the launcher's own
// namespace before it returns; the launcher is single-threaded, so nothing else runs meanwhile.

#include "core/address_pool.h"
#include "core/nft_rules.h"

#include <functional>
#include <string>
#include <vector>

namespace cellos::vmm {

// Where cells' uplink ends live and where the launcher itself lives. Both fds stay open for the
// launcher's lifetime (owned by its caller).
struct UplinkNamespace {
  int uplinkFd = -1;  // network namespace of the uplink ends
  int homeFd = -1;    // the launcher's own network namespace, to return to
};

// Runs `body` with this thread in network namespace `target`, then moves back to `home`. A
// failure to move back aborts the process: nothing may run in the wrong namespace.
void inNetworkNamespace(int target, int home, const std::function<void()>& body);

// Creates the pair: `uplinkInterface` (<= 15 bytes) in the uplink namespace with
// addresses.uplink/30, "eth0" in the cell's namespace with addresses.cell/30 and a default route
// via addresses.uplink; both up. A leftover interface of the same name in the uplink namespace
// (a crashed launcher's, whose slot this is now) is deleted first. Throws std::runtime_error
// naming the failed step, after deleting what it made.
void createCellLink(const UplinkNamespace& uplink, int cellNetnsFd,
                    const std::string& uplinkInterface, const core::CellAddressPair& addresses);

// Loads nftRuleset(plan) into the cell's namespace (one atomic transaction). Throws with
// libnftables' message on failure.
void applyCellRuleset(const UplinkNamespace& uplink, int cellNetnsFd, const core::NftPlan& plan);

// Runs element commands (core::nftLearnedElements) in the cell's namespace, one transaction.
// Throws with libnftables' message on failure.
void addCellElements(const UplinkNamespace& uplink, int cellNetnsFd, const std::string& commands);

// The counters of every rule in the cell's namespace. Throws when the table cannot be listed.
std::vector<core::NftCounter> readCellCounters(const UplinkNamespace& uplink, int cellNetnsFd);

// Deletes the cell's table (when cellNetnsFd >= 0) and the uplink end (and with it the pair).
// Idempotent; returns what it could not remove (empty when clean). Never throws.
std::vector<std::string> removeCellNetwork(const UplinkNamespace& uplink, int cellNetnsFd,
                                           const std::string& uplinkInterface);

// Every address of every interface (lo included, both families) in the namespace `netnsFd`,
// as address literals. Throws when the namespace's addresses cannot be listed.
std::vector<std::string> namespaceAddresses(const UplinkNamespace& uplink, int netnsFd);

// A netlink socket of the namespace `netnsFd` that receives a message whenever an IPv4 or IPv6
// address is added or removed there (RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR); non-blocking,
// close-on-exec, owned by the caller. Throws when it cannot be made.
int watchAddressChanges(const UplinkNamespace& uplink, int netnsFd);

// Reads everything pending on a watchAddressChanges() socket. True when anything was pending
// (or the kernel dropped notifications for want of buffer space): the addresses may have
// changed.
bool drainAddressChanges(int watchFd);

// True when an interface named `name` exists in the namespace `netnsFd`.
bool interfaceExists(const UplinkNamespace& uplink, int netnsFd, const std::string& name);

// True when the namespace `netnsFd` holds an nftables table named core::kNftTable.
bool cellTableExists(const UplinkNamespace& uplink, int netnsFd);

}  // namespace cellos::vmm
