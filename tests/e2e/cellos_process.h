#pragma once
// Runs the real `cellos` binary as a user would, for end-to-end tests: captures its output and
// exit status, lets a test wait for a line, signal it, and look at its daemons.

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace cellos::testing {

// <build>/bin, from CELLOS_BUILD_DIR (set by ctest).
std::string binDir();
std::string sourceDir();

class CellosProcess {
 public:
  explicit CellosProcess(std::vector<std::string> args);
  ~CellosProcess();  // kills and reaps if still running

  // Reads output until `needle` appears on stdout or the deadline passes; true if it appeared.
  bool waitForStdout(const std::string& needle, std::chrono::milliseconds timeout);
  // Reads everything until exit (bounded) and returns the exit status as a shell reports it
  // (code, or 128+signal); -1 if it did not exit in time (then it is killed).
  int wait(std::chrono::milliseconds timeout = std::chrono::seconds(60));
  void signal(int sig);
  // To its whole process group, as a terminal's Ctrl-C does.
  void signalGroup(int sig);

  pid_t pid() const { return pid_; }
  const std::string& out() const { return out_; }
  const std::string& err() const { return err_; }

 private:
  void pump(int timeoutMs);
  pid_t pid_ = -1;
  int outFd_ = -1, errFd_ = -1;
  std::string out_, err_;
  bool reaped_ = false;
  int status_ = 0;
};

// Convenience: run to completion.
struct RunResult {
  int status;
  std::string out, err;
};
RunResult runCellos(const std::vector<std::string>& args,
                    std::chrono::milliseconds timeout = std::chrono::seconds(60));

// Runs the build's `cellos args` in a child that first calls `prepare` there (another uid, a
// mount namespace of its own) and exits 126 if it returns false. kStderr: stdout is discarded and
// stderr is the result's err; kMerged: stdout and stderr together are its out.
enum class Capture { kStderr, kMerged };
RunResult runCellosPrepared(std::vector<std::string> args, const std::function<bool()>& prepare,
                            Capture capture);

// Children (direct) of `pid`, from /proc.
std::vector<pid_t> childrenOf(pid_t pid);
// A field of /proc/<pid>/status ("Uid", "CapEff", "Seccomp", "Name"); empty if gone.
std::string statusField(pid_t pid, const std::string& field);
// The executable's base name (from /proc/<pid>/exe), empty if gone.
std::string exeName(pid_t pid);

// Why a cell of `backend` cannot run on this host (gvisor without runsc), or "" when it can.
std::string missingBackend(const std::string& backend);

// What of any cell could still be on the host: processes of cellos binaries, cgroup
// directories under cellos/, runtime directories, mounts naming cellos. Empty means clean.
std::vector<std::string> hostResidue();
// hostResidue(), less processes of cellos binaries other than this build's: other engineers'
// daemons and an installed service on a shared machine are not this test's residue (their
// cgroups, interfaces and runtime directories still are, as they would be ours).
std::vector<std::string> ourResidue();

std::string makeTempDir();
std::string readFile(const std::string& path);
void writeFile(const std::string& path, const std::string& content);
std::vector<std::string> readLines(const std::string& path);

}  // namespace cellos::testing
