#include "privsep/credentials.h"

#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <kj/debug.h>

namespace cellos::privsep {

Account lookupAccount(const std::string& name) {
  struct passwd pw {};
  struct passwd* result = nullptr;
  std::vector<char> buf(16384);
  int rc = getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &result);
  if (rc != 0 || result == nullptr) {
    throw std::runtime_error(
        "user " + name +
        " does not exist; run scripts/setup (or install the package) to create it");
  }
  return Account{name, pw.pw_uid, pw.pw_gid};
}

std::optional<gid_t> lookupGroup(const std::string& name) {
  struct group gr {};
  struct group* result = nullptr;
  std::vector<char> buf(16384);
  if (getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &result) != 0 || result == nullptr) {
    return std::nullopt;
  }
  return gr.gr_gid;
}

int capabilityFromName(const std::string& name) {
  std::string lower;
  for (char c : name) lower += static_cast<char>(tolower(static_cast<unsigned char>(c)));
  if (lower.rfind("cap_", 0) != 0) lower = "cap_" + lower;
  cap_value_t value;
  if (cap_from_name(lower.c_str(), &value) != 0) {
    throw std::runtime_error("unknown capability " + name);
  }
  return value;
}

namespace {

// Drops every capability not in `keep` from the bounding set; exec can then never regain it.
void dropBoundingSet(const std::vector<int>& keep) {
  for (int cap = 0; cap <= CAP_LAST_CAP; ++cap) {
    if (std::find(keep.begin(), keep.end(), cap) != keep.end()) continue;
    // Already gone (an earlier limitCapabilities): dropping again would need CAP_SETPCAP.
    if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 0) continue;
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL) {
      KJ_FAIL_SYSCALL("prctl(PR_CAPBSET_DROP)", errno, cap);
    }
  }
}

void setCapabilitySets(const std::vector<int>& keep) {
  cap_t caps = cap_init();  // all sets empty
  KJ_ASSERT(caps != nullptr);
  KJ_DEFER(cap_free(caps));
  if (!keep.empty()) {
    std::vector<cap_value_t> values(keep.begin(), keep.end());
    KJ_SYSCALL(cap_set_flag(caps, CAP_PERMITTED, values.size(), values.data(), CAP_SET));
    KJ_SYSCALL(cap_set_flag(caps, CAP_EFFECTIVE, values.size(), values.data(), CAP_SET));
  }
  KJ_SYSCALL(cap_set_proc(caps), "cap_set_proc");
  KJ_SYSCALL(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0));
}

}  // namespace

void becomeUnprivileged(const Account& account) {
  // Order matters: groups and gid first (changing them needs CAP_SETGID, which the uid switch
  // below takes away), then the bounding set (needs CAP_SETPCAP), then the uid.
  // The kernel clears the parent-death signal on a credential change; keep the one our
  // parent asked for (embedded mode relies on it so daemons never outlive `cellos run`).
  int deathSignal = 0;
  KJ_SYSCALL(prctl(PR_GET_PDEATHSIG, &deathSignal));
  KJ_SYSCALL(setgroups(0, nullptr), "clearing supplementary groups");
  KJ_SYSCALL(setresgid(account.gid, account.gid, account.gid), account.name);
  dropBoundingSet({});
  KJ_SYSCALL(setresuid(account.uid, account.uid, account.uid), account.name);
  // A non-root setresuid clears permitted/effective caps already (no SECBIT_KEEP_CAPS); clear
  // them explicitly anyway so the state does not depend on securebits.
  setCapabilitySets({});
  if (deathSignal != 0) {
    KJ_SYSCALL(prctl(PR_SET_PDEATHSIG, deathSignal));
  }
  if (account.uid != 0) {
    KJ_REQUIRE(setuid(0) != 0, "could regain uid 0 after dropping privilege");
  }
  KJ_REQUIRE(effectiveCapabilities() == 0, "capabilities remain after dropping privilege");
}

void limitCapabilities(const std::vector<int>& keep) {
  dropBoundingSet(keep);
  setCapabilitySets(keep);
}

void setNoNewPrivs() {
  KJ_SYSCALL(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
}

uint64_t effectiveCapabilities() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  KJ_SYSCALL(capget(&header, data));
  return (uint64_t(data[1].effective) << 32) | data[0].effective;
}

}  // namespace cellos::privsep
