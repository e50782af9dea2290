#pragma once
// The workload's own seccomp filter, stacked on the launcher's (which every cell inherits).
//
// The launcher's profile (vmm-agent/seccomp_profile.cpp: an allowlist, EPERM for the calls no
// process of ours has any use for, kill-process for everything else) must still let a cell's
// init mount, pivot_root, clone namespaces and set its hostname. This second filter takes those
// away from the workload: each call below answers EPERM, clone with a CLONE_NEW* flag answers
// EPERM, and clone3 answers ENOSYS (its flags sit behind a pointer a filter cannot read; libc
// then falls back to clone, which the filter can check); socket and socketpair answer
// EAFNOSUPPORT for every family but AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK (whose protocols
// but NETLINK_ROUTE answer EPROTONOSUPPORT). Every other call is left to the
// launcher's filter, so the two together are: the launcher's allowlist minus this list, and
// the stack's default stays kill-process. docs/security.md lists the calls.
//
// Installed by the workload itself, after it dropped its capabilities and set no_new_privs,
// right before execve, so the filter covers the workload's first instruction.

#include <span>
#include <string_view>

namespace cellos::vmm {

struct WorkloadDenial {
  long number;            // the syscall number on this architecture
  std::string_view name;  // as in the kernel's syscall table
  int error;              // what the call returns instead of running (EPERM, or ENOSYS)
};

// The calls the workload filter answers with an errno, in filter order.
std::span<const WorkloadDenial> workloadDenials();

// The CLONE_NEW* bits that make clone(2) answer EPERM.
unsigned long workloadCloneNamespaceMask();

struct WorkloadSocketFamily {
  int family;             // AF_*
  std::string_view name;  // as in <sys/socket.h>
};

// The socket families socket(2) and socketpair(2) may create, besides AF_NETLINK with
// NETLINK_ROUTE; any other family answers EAFNOSUPPORT.
std::span<const WorkloadSocketFamily> workloadSocketFamilies();

// Installs the filter on the calling thread (no_new_privs must be set). Returns 0, or the
// errno of the failed seccomp(2) call. Allocates nothing: it runs between fork and exec.
int installWorkloadFilter();

}  // namespace cellos::vmm
