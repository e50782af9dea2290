#include "vmm-agent/cell/workload_filter.h"

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/netlink.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstddef>

namespace cellos::vmm {

namespace {

#if defined(__x86_64__)
constexpr uint32_t kNativeArch = AUDIT_ARCH_X86_64;
// x32 calls share the arch value and set this bit in the number; a filter that ignored it would
// let `mount | 0x40000000` through.
constexpr uint32_t kForeignNumberBit = 0x40000000;  // __X32_SYSCALL_BIT
#elif defined(__aarch64__)
constexpr uint32_t kNativeArch = AUDIT_ARCH_AARCH64;
constexpr uint32_t kForeignNumberBit = 0;
#else
#error "workload filter: add this architecture's AUDIT_ARCH value"
#endif

// clang-format off: one reviewed group per line, each with its reason.
constexpr WorkloadDenial kDenials[] = {
    // the cell's filesystem view is the launcher's to build, never the workload's
    {SYS_mount, "mount", EPERM},
    {SYS_umount2, "umount2", EPERM},
    {SYS_pivot_root, "pivot_root", EPERM},
    {SYS_chroot, "chroot", EPERM},
    {SYS_open_tree, "open_tree", EPERM},
    {SYS_move_mount, "move_mount", EPERM},
    {SYS_fsopen, "fsopen", EPERM},
    {SYS_fsconfig, "fsconfig", EPERM},
    {SYS_fsmount, "fsmount", EPERM},
    {SYS_fspick, "fspick", EPERM},
    {SYS_mount_setattr, "mount_setattr", EPERM},
    // no new namespaces (clone is checked by its flags below), no entering others
    {SYS_unshare, "unshare", EPERM},
    {SYS_setns, "setns", EPERM},
    {SYS_clone3, "clone3", ENOSYS},
    // the cell's identity
    {SYS_sethostname, "sethostname", EPERM},
    {SYS_setdomainname, "setdomainname", EPERM},
    // other processes' memory and handles
    {SYS_ptrace, "ptrace", EPERM},
    {SYS_process_vm_readv, "process_vm_readv", EPERM},
    {SYS_process_vm_writev, "process_vm_writev", EPERM},
    {SYS_kcmp, "kcmp", EPERM},
    {SYS_pidfd_getfd, "pidfd_getfd", EPERM},
    // the kernel itself: programs, modules, keys, tracing, the clock, the machine
    {SYS_bpf, "bpf", EPERM},
    {SYS_perf_event_open, "perf_event_open", EPERM},
    {SYS_init_module, "init_module", EPERM},
    {SYS_finit_module, "finit_module", EPERM},
    {SYS_delete_module, "delete_module", EPERM},
    {SYS_kexec_load, "kexec_load", EPERM},
    {SYS_kexec_file_load, "kexec_file_load", EPERM},
    {SYS_keyctl, "keyctl", EPERM},
    {SYS_add_key, "add_key", EPERM},
    {SYS_request_key, "request_key", EPERM},
    {SYS_userfaultfd, "userfaultfd", EPERM},
    {SYS_open_by_handle_at, "open_by_handle_at", EPERM},
    {SYS_name_to_handle_at, "name_to_handle_at", EPERM},
    {SYS_swapon, "swapon", EPERM},
    {SYS_swapoff, "swapoff", EPERM},
    {SYS_reboot, "reboot", EPERM},
    {SYS_acct, "acct", EPERM},
    {SYS_quotactl, "quotactl", EPERM},
    {SYS_syslog, "syslog", EPERM},
    {SYS_settimeofday, "settimeofday", EPERM},
    {SYS_clock_settime, "clock_settime", EPERM},
    {SYS_clock_adjtime, "clock_adjtime", EPERM},
    {SYS_adjtimex, "adjtimex", EPERM},
    {SYS_vhangup, "vhangup", EPERM},
#if defined(__x86_64__)
    {SYS_iopl, "iopl", EPERM},
    {SYS_ioperm, "ioperm", EPERM},
#endif
};
// clang-format on

constexpr unsigned long kCloneNamespaces = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS |
                                           CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
                                           CLONE_NEWNET;

// The socket families a workload may open: local sockets, and the two families its nftables rules
// judge. AF_NETLINK is allowed for NETLINK_ROUTE only, because glibc asks it what the host has:
// getaddrinfo(AI_ADDRCONFIG) (the default of most resolvers), getifaddrs and if_nameindex, and
// `ip addr` / `ip route`. The cell's network namespace belongs to the host's user namespace, so
// a workload can read its own lo and eth0 there but change nothing. Every other netlink protocol
// (uevents of the host's devices, audit, netfilter, xfrm, ...) answers EPROTONOSUPPORT, and every
// other family (AF_VSOCK, which ignores network namespaces and nftables and reaches the
// hypervisor's side; AF_PACKET; AF_KEY; AF_ALG; AF_BLUETOOTH; AF_XDP; ...) EAFNOSUPPORT, as from a
// kernel built without it.
constexpr WorkloadSocketFamily kSocketFamilies[] = {
    {AF_UNIX, "AF_UNIX"},
    {AF_INET, "AF_INET"},
    {AF_INET6, "AF_INET6"},
};
constexpr size_t kSocketFamilyCount = sizeof kSocketFamilies / sizeof kSocketFamilies[0];

constexpr sock_filter statement(uint16_t code, uint32_t k) {
  return sock_filter{code, 0, 0, k};
}
constexpr sock_filter jump(uint16_t code, uint32_t k, uint8_t ifTrue, uint8_t ifFalse) {
  return sock_filter{code, ifTrue, ifFalse, k};
}

constexpr size_t kDenialCount = sizeof kDenials / sizeof kDenials[0];
// arch check (3) + number load and foreign-bit check (3) + 2 per denial + clone (5) + socket and
// socketpair (2 + 1 + 1 per family + 5) + allow (1)
constexpr size_t kProgramLength = 3 + 3 + 2 * kDenialCount + 5 + 2 + 1 + kSocketFamilyCount + 5 + 1;

// Built at compile time: nothing is allocated or computed between fork and exec.
constexpr std::array<sock_filter, kProgramLength> buildProgram() {
  std::array<sock_filter, kProgramLength> program{};
  size_t i = 0;
  // A call from another ABI is refused outright (the launcher's filter would kill it anyway).
  program[i++] = statement(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch));
  program[i++] = jump(BPF_JMP | BPF_JEQ | BPF_K, kNativeArch, 1, 0);
  program[i++] = statement(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
  program[i++] = statement(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr));
  // x32 numbers (the foreign bit set) are refused too.
  program[i++] = jump(BPF_JMP | BPF_JGE | BPF_K,
                      kForeignNumberBit == 0 ? 0xffffffffu : kForeignNumberBit, 0, 1);
  program[i++] = statement(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
  for (const WorkloadDenial& denial : kDenials) {
    program[i++] = jump(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(denial.number), 0, 1);
    program[i++] =
        statement(BPF_RET | BPF_K,
                  SECCOMP_RET_ERRNO | (static_cast<uint32_t>(denial.error) & SECCOMP_RET_DATA));
  }
  // clone(flags, ...): refuse any CLONE_NEW* bit. The flags are the low word of args[0] (every
  // CLONE_NEW* bit is below 2^32), which sits first on a little-endian machine.
  program[i++] = jump(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 0, 4);
  program[i++] = statement(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args));
  program[i++] = jump(BPF_JMP | BPF_JSET | BPF_K, static_cast<uint32_t>(kCloneNamespaces), 0, 1);
  program[i++] = statement(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
  program[i++] = statement(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
  // socket(domain, type, protocol) and socketpair(domain, ...): the domain is an int, so the
  // kernel reads only the low word of args[0] (and of args[2], the protocol), as here. Jumps
  // count from the next instruction; the block ends in the program's final allow.
  constexpr uint8_t families = kSocketFamilyCount;
  program[i++] = jump(BPF_JMP | BPF_JEQ | BPF_K, SYS_socket, 1, 0);
  program[i++] =
      jump(BPF_JMP | BPF_JEQ | BPF_K, SYS_socketpair, 0, static_cast<uint8_t>(families + 6));
  program[i++] = statement(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args));
  for (uint8_t j = 0; j < families; ++j) {
    program[i++] = jump(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(kSocketFamilies[j].family),
                        static_cast<uint8_t>(families + 4 - j), 0);
  }
  program[i++] = jump(BPF_JMP | BPF_JEQ | BPF_K, AF_NETLINK, 0, 3);
  program[i++] = statement(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args) + 2 * 8);
  program[i++] = jump(BPF_JMP | BPF_JEQ | BPF_K, NETLINK_ROUTE, 2, 0);
  program[i++] = statement(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPROTONOSUPPORT);
  program[i++] = statement(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EAFNOSUPPORT);
  program[i++] = statement(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
  return program;
}

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "clone flags and socket domains are read as their argument's low word");

constexpr std::array<sock_filter, kProgramLength> kProgram = buildProgram();
static_assert(kProgram.back().code == (BPF_RET | BPF_K) && kProgram.back().k == SECCOMP_RET_ALLOW,
              "every instruction slot is used");

}  // namespace

std::span<const WorkloadDenial> workloadDenials() {
  return kDenials;
}

unsigned long workloadCloneNamespaceMask() {
  return kCloneNamespaces;
}

std::span<const WorkloadSocketFamily> workloadSocketFamilies() {
  return kSocketFamilies;
}

int installWorkloadFilter() {
  sock_fprog program{static_cast<unsigned short>(kProgram.size()),
                     const_cast<sock_filter*>(kProgram.data())};
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &program) < 0) return errno;
  return 0;
}

}  // namespace cellos::vmm
