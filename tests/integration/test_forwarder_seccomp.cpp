// cellos-event-forwarder's seccomp profile, run for real: libnats needs threads and TCP
// sockets after the filter is installed, so the profile allows exactly thread-style clone
// (clone3 answered ENOSYS so glibc falls back to it), IPv4/IPv6 sockets, and opening files in
// three fixed forms. Everything else — exec, fork, Unix sockets, opening a file for writing in
// place, ptrace — kills the process.

#include "event-forwarder/seccomp_profile.h"
#include "privsep/credentials.h"
#include "privsep/seccomp.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <thread>

namespace cellos {
namespace {

constexpr int kSurvived = 42;

[[noreturn]] void confined(long (*call)()) {
  privsep::setNoNewPrivs();
  privsep::installSeccomp(forwarder::kForwarderProfile);
  call();
  _exit(kSurvived);
}

TEST(ForwarderSeccomp, ForbiddenCallsKill) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const std::pair<const char*, long (*)()> forbidden[] = {
      {"execve",
       +[]() -> long {
         char* const none[] = {nullptr};
         return syscall(SYS_execve, "/nonexistent", none, none);
       }},
      // A fork: clone with SIGCHLD as its exit signal, not the thread flags.
      {"fork", +[]() -> long { return syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0); }},
      {"socket_unix", +[]() -> long { return syscall(SYS_socket, AF_UNIX, SOCK_STREAM, 0); }},
      {"openat_rdwr",
       +[]() -> long { return syscall(SYS_openat, AT_FDCWD, "/nonexistent", O_RDWR, 0); }},
      {"ptrace", +[]() -> long { return syscall(SYS_ptrace, PTRACE_PEEKDATA, -1, 0, 0); }},
      {"unshare", +[]() -> long { return syscall(SYS_unshare, 0x10000000 /*CLONE_NEWUSER*/); }},
  };
  for (const auto& [name, call] : forbidden) {
    SCOPED_TRACE(name);
    EXPECT_EXIT(confined(call), testing::KilledBySignal(SIGSYS), "");
  }
}

// What libnats and the tail loop do after the filter: start a thread (clone3 -> ENOSYS ->
// clone), open a TCP socket, read a file by the allowed flags.
[[noreturn]] void forwarderWork() {
  int dir = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  // As in the forwarder, libnats has started threads before the filter (nats_Open), so glibc's
  // one-time thread setup (its cancellation signal handler) is done by then.
  std::thread([]() {}).join();
  privsep::setNoNewPrivs();
  privsep::installSeccomp(forwarder::kForwarderProfile);
  std::atomic<int> ran = 0;
  std::thread thread([&]() { ran = 1; });
  thread.join();
  int tcp = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int missing = openat(dir, "cellos-no-such-file", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  bool ok = ran == 1 && tcp >= 0 && missing < 0 && errno == ENOENT;
  // The checkpoint file is read from the cursor's offset.
  ok = ok && lseek(dir, 0, SEEK_SET) == 0;
  _exit(ok ? kSurvived : 1);
}

TEST(ForwarderSeccomp, ThreadsSocketsAndReadingFilesSurvive) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(forwarderWork(), testing::ExitedWithCode(kSurvived), "");
}

// docs/security.md's table states the count, as for the other profiles (test_profile_docs.cpp).
TEST(ForwarderSeccomp, SecurityPageStatesItsSyscallCount) {
  const char* dir = getenv("CELLOS_SOURCE_DIR");
  std::ifstream in(std::string(dir ? dir : CELLOS_TEST_SOURCE_DIR) + "/docs/security.md");
  std::stringstream text;
  text << in.rdbuf();
  std::string claim = "`event-forwarder` (" +
                      std::to_string(privsep::allowedSyscallCount(forwarder::kForwarderProfile));
  EXPECT_NE(text.str().find(claim), std::string::npos) << "docs/security.md should say " << claim;
}

}  // namespace
}  // namespace cellos
