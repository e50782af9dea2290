#pragma once
// The guest init's decisions that need no system call: what the kernel command line asks, which
// modules to load in which order, how the config's network fields and limits become kernel
// arguments, which exit code an exec failure gives. Kept apart from the steps that act on them
// so the host's unit tests (tests/unit/test_guest_init.cpp) can check every decision.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ipc/vm_channel.h"

namespace cellos::guest {

// Wait status the guest reports when it could not run the workload at all (exit code 125, as
// the host backends' kCellAbortedExitCode).
inline constexpr int kAbortedWaitStatus = 125 << 8;

// The kernel command-line word that makes the guest power off right after its modules are
// loaded: the bare-boot peer of the VM benchmark and of the KVM probe.
inline constexpr std::string_view kPowerOffWord = "cellos.poweroff";

// The guest kernel's virtio modules, in the order their `depends=` needs (the initramfs has no
// modules.dep: the kernel package's is made by depmod at install). Each is
// /lib/modules/<name>.ko in the initramfs (guest-init/make_initramfs.cpp packs the same list).
inline constexpr std::array<std::string_view, 8> kModuleLoadOrder = {
    "virtio_ring", "virtio",   "virtio_mmio",  "virtio_console",
    "virtio_blk",  "failover", "net_failover", "virtio_net"};

// Whether `word` is one whitespace-separated word of `cmdline` (/proc/cmdline).
bool cmdlineHasWord(std::string_view cmdline, std::string_view word);

// The working directory as the guest mounts it: absolute, no empty, "." or ".." component, not
// "/" (a tmpfs there would hide the whole root), and not inside a directory the guest init
// mounts itself (/proc, /dev, /sys, /tmp, /run). nullopt and `why` otherwise.
std::optional<std::string> checkWorkingDirectory(std::string_view path, std::string* why);

// A secret's file name under /run/secrets: one component of [A-Za-z0-9._-], not "." or "..".
bool isSecretFileName(std::string_view name);

// eth0 as the kernel takes it (network byte order is the caller's: these are host order).
struct NetworkPlan {
  bool configureEth0 = false;  // false: only lo comes up
  uint32_t address = 0;
  uint32_t netmask = 0;
  std::optional<uint32_t> gateway;  // a default route via it
};

// A dotted quad ("10.0.0.2") in host byte order; nullopt for anything else.
std::optional<uint32_t> parseIpv4(std::string_view text);
uint32_t prefixToNetmask(uint32_t prefixLength);

// nullopt (with `why`) when the address or the gateway is not a dotted quad, the prefix is out of
// 1..32, or the gateway lies outside the address's subnet (the kernel would refuse the route).
std::optional<NetworkPlan> planNetwork(const vmchannel::GuestConfig& config, std::string* why);

// RLIMIT_NOFILE: hard = nofileMax, soft = min(1024, nofileMax).
struct NofileLimit {
  uint64_t soft = 0;
  uint64_t hard = 0;
};
NofileLimit planNofile(uint64_t nofileMax);

// The workload's environment: config.env, plus NAME=value per secret when the delivery is
// "env". The caller wipes the result once the workload has its copy.
std::vector<std::string> workloadEnvironment(const vmchannel::GuestConfig& config);

// The exit code of a failed execve, as the host's linux backend gives it: 126 for a file that is
// there but cannot run (EACCES, ENOEXEC), 127 for anything else.
int execFailureExitCode(int error);

// tmpfs mount data: "size=<bytes>,mode=<octal>".
std::string tmpfsOptions(uint64_t sizeBytes, unsigned mode);

// The count after "oom_kill " in /proc/vmstat text; 0 when the line is absent.
uint64_t parseOomKills(std::string_view vmstat);

}  // namespace cellos::guest
