#pragma once
// The guest init's one error dialect: a failed step throws std::system_error naming the call and
// its argument, or GuestError for a refusal that has no errno. main() turns either into the 'L'
// line the host sees and the aborted exit frame. No KJ here: the guest init is a static binary
// that links nothing but the C++ standard library.

#include <sys/types.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace cellos::guest {

struct GuestError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void throwErrno(const std::string& what);
inline void check(int rc, const std::string& what) {
  if (rc < 0) throwErrno(what);
}

std::string readFile(const std::string& path);
// Creates or truncates `path` with `mode` and writes `content` whole.
void writeFile(const std::string& path, std::string_view content, mode_t mode = 0644);
// Writes `content` to an existing file (a cgroup or sysfs attribute) in one write.
void writeAttribute(const std::string& path, std::string_view content);

uint64_t monotonicMs();
void sleepMs(unsigned ms);
// Polls every 10 ms until `path` exists; false after `timeoutMs`. Devices and sysfs entries of
// a driver that has just loaded appear asynchronously, and there is no udev to wait on.
bool waitForPath(const std::string& path, unsigned timeoutMs);

}  // namespace cellos::guest
