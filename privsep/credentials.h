#pragma once
// Dropping privilege: switching user, bounding capabilities, no_new_privs. Every daemon's
// main() calls these in the order its privilege story needs; they fail closed (throw) rather
// than continue with more privilege than intended.

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace cellos::privsep {

struct Account {
  std::string name;
  uid_t uid;
  gid_t gid;
};

// Looks up a system user (NSS: do it before seccomp and before chroot-like steps). Throws
// "user <name> does not exist; run scripts/setup or create it" when missing.
Account lookupAccount(const std::string& name);
// Looks up a group id by name; nullopt when missing.
std::optional<gid_t> lookupGroup(const std::string& name);

// Linux capability numbers by name ("CAP_SYS_ADMIN" or "sys_admin"); throws on unknown names.
int capabilityFromName(const std::string& name);

// Switches the whole process to `account` (supplementary groups cleared, real/effective/saved
// ids all changed) and drops every capability, including the bounding set, so no exec can
// regain one. Verifies afterwards that uid 0 cannot be regained.
void becomeUnprivileged(const Account& account);

// Stays root but keeps only `keep` (CAP_* numbers) in the bounding, permitted and effective
// sets; inheritable and ambient sets are cleared. For the VM launcher, whose job is kernel
// configuration a plain uid cannot do.
void limitCapabilities(const std::vector<int>& keep);

// Sets PR_SET_NO_NEW_PRIVS: no exec can gain privilege (setuid bits, file caps). Also required
// to install a seccomp filter without CAP_SYS_ADMIN.
void setNoNewPrivs();

// The effective capability mask of this process, as /proc/self/status shows it (CapEff).
uint64_t effectiveCapabilities();

}  // namespace cellos::privsep
