#include "privsep/seccomp_compiler.h"

#include <seccomp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>
#include <string>

namespace cellos::privsep {

namespace {

// Owns a libseccomp filter context.
struct FilterContext {
  scmp_filter_ctx ctx;
  ~FilterContext() { seccomp_release(ctx); }
};

int resolve(const SeccompProfile& profile, std::string_view name) {
  std::string n(name);
  int nr = seccomp_syscall_resolve_name(n.c_str());
  if (nr == __NR_SCMP_ERROR) {
    throw std::runtime_error("seccomp profile " + std::string(profile.name) + ": unknown syscall " +
                             n);
  }
  return nr;
}

void check(int rc, const SeccompProfile& profile, const std::string& what) {
  if (rc < 0) {
    throw std::runtime_error("seccomp profile " + std::string(profile.name) + ": " + what + ": " +
                             strerror(-rc));
  }
}

// libseccomp 2.5 exports only to an fd: write into an anonymous file and read it back.
std::string exportTo(int (*exporter)(const scmp_filter_ctx, int), scmp_filter_ctx ctx,
                     const SeccompProfile& profile, const char* what) {
  int fd = memfd_create("cellos-seccomp-export", MFD_CLOEXEC);
  if (fd < 0) throw std::runtime_error(std::string("memfd_create: ") + strerror(errno));
  struct Close {
    int fd;
    ~Close() { close(fd); }
  } closer{fd};
  check(exporter(ctx, fd), profile, what);
  std::string out;
  char buffer[8192];
  for (off_t offset = 0;;) {
    ssize_t n = pread(fd, buffer, sizeof(buffer), offset);
    if (n < 0) throw std::runtime_error(std::string("pread: ") + strerror(errno));
    if (n == 0) break;
    out.append(buffer, size_t(n));
    offset += n;
  }
  return out;
}

// Adds the allow and allow-if rules of `profile` or of one of its groups.
void addAllowRules(scmp_filter_ctx ctx, const SeccompProfile& profile,
                   std::span<const std::string_view> allow, std::span<const ArgRule> allowIf) {
  for (std::string_view name : allow) {
    check(seccomp_rule_add(ctx, SCMP_ACT_ALLOW, resolve(profile, name), 0), profile,
          "allow " + std::string(name));
  }
  for (const ArgRule& rule : allowIf) {
    int nr = resolve(profile, rule.syscall);
    for (uint64_t value : rule.values) {
      check(
          seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_CMP(rule.argument, SCMP_CMP_EQ, value)),
          profile, "allow-if " + std::string(rule.syscall));
    }
  }
}

}  // namespace

CompiledProfile compileProfile(const SeccompProfile& profile) {
  // The filter must not depend on what the build host's kernel supports: pin the API level to
  // the one the loader needs (3: SECCOMP_RET_KILL_PROCESS and TSYNC, Linux >= 4.14).
  check(seccomp_api_set(3), profile, "seccomp_api_set(3)");
  FilterContext filter{seccomp_init(SCMP_ACT_KILL_PROCESS)};
  if (filter.ctx == nullptr) {
    throw std::runtime_error("seccomp profile " + std::string(profile.name) +
                             ": seccomp_init(SCMP_ACT_KILL_PROCESS) failed");
  }
  addAllowRules(filter.ctx, profile, profile.allow, profile.allowIf);
  for (const SeccompGroup* group : profile.groups) {
    addAllowRules(filter.ctx, profile, group->allow, group->allowIf);
  }
  // Sanitizer builds only: the runtime's own calls (privsep::sanitizerRuntimeCalls), except
  // where the profile answers a call with an errno (a rule of another action would conflict).
  for (std::string_view name : sanitizerRuntimeCalls()) {
    bool answered = false;
    for (const ErrnoRule& rule : profile.deny) answered |= rule.syscall == name;
    if (answered) continue;
    check(seccomp_rule_add(filter.ctx, SCMP_ACT_ALLOW, resolve(profile, name), 0), profile,
          "allow " + std::string(name) + " (sanitizer runtime)");
  }
  for (const ErrnoRule& rule : profile.deny) {
    check(
        seccomp_rule_add(filter.ctx, SCMP_ACT_ERRNO(rule.error), resolve(profile, rule.syscall), 0),
        profile, "errno " + std::string(rule.syscall));
  }

  CompiledProfile out;
  std::string bpf = exportTo(seccomp_export_bpf, filter.ctx, profile, "seccomp_export_bpf");
  if (bpf.empty() || bpf.size() % sizeof(sock_filter) != 0) {
    throw std::runtime_error("seccomp profile " + std::string(profile.name) +
                             ": seccomp_export_bpf wrote " + std::to_string(bpf.size()) +
                             " bytes, not whole instructions");
  }
  out.program.resize(bpf.size() / sizeof(sock_filter));
  memcpy(out.program.data(), bpf.data(), bpf.size());
  out.pfc = exportTo(seccomp_export_pfc, filter.ctx, profile, "seccomp_export_pfc");
  return out;
}

std::string pfcFileText(const SeccompProfile& profile, const CompiledProfile& compiled) {
  const scmp_version* version = seccomp_version();
  std::string name(profile.name);
  return "# seccomp profile \"" + name + "\": " + std::to_string(allowedSyscallCount(profile)) +
         " syscalls allowed, everything else kills the process.\n"
         "# Compiled at build time from the profile's seccomp_profile.cpp by "
         "cellos-seccomp-generate\n"
         "# (libseccomp " +
         std::to_string(version->major) + "." + std::to_string(version->minor) + "." +
         std::to_string(version->micro) + ", " + std::to_string(compiled.program.size()) +
         " BPF instructions). Do not edit: after changing the profile run\n"
         "#   cmake --build <build> --target seccomp-pfc\n"
         "# and commit this file with the change.\n" +
         compiled.pfc;
}

}  // namespace cellos::privsep
