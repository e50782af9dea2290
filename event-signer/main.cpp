// cellos-event-signer: holds the event-signing key and nothing else.
//
// Privilege story, top to bottom:
//   1. start as root (or already as cellos-signer under systemd), close inherited fds;
//   2. prepare the state directory (0700, owned by cellos-signer) and bind signer.sock
//      (group cellos, 0660) — the two things that may need root;
//   3. become cellos-signer with no capabilities and no_new_privs;
//   4. load or generate the key (the key file is created by, and readable only by, that user);
//   5. install the seccomp profile; only then read any request.

#include "event-signer/event_chain.h"
#include "event-signer/key_store.h"
#include "event-signer/seccomp_profile.h"
#include "event-signer/signer_server.h"
#include "ipc/socket.h"
#include "privsep/credentials.h"
#include "privsep/daemon.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <kj/debug.h>
#include <CLI/CLI.hpp>
#include <cstdlib>
#include <iostream>

namespace {

using namespace cellos;

struct Options {
  privsep::CommonOptions common{.socketPath = "/run/cellos/signer.sock", .user = "cellos-signer"};
  std::string stateDir = "/var/lib/cellos/signer";
  std::string brokerUser = "cellos";
  std::string clientGroup = "cellos";
  std::string keyFile;
};

// The state directory holds the private key: it must be ours alone. Created when missing; an
// existing one with another owner or looser mode is corrected only when we are root and it is
// a real directory (never through a symlink).
void prepareStateDirectory(const std::string& dir, const privsep::Account& account) {
  if (mkdir(dir.c_str(), 0700) < 0 && errno != EEXIST) {
    KJ_FAIL_SYSCALL("mkdir", errno, dir);
  }
  int fd;
  KJ_SYSCALL(fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), dir);
  KJ_DEFER(close(fd));
  if (geteuid() == 0) {
    KJ_SYSCALL(fchown(fd, account.uid, account.gid), dir);
    KJ_SYSCALL(fchmod(fd, 0700), dir);
  }
}

// The key file named by systemd's LoadCredential=, if any.
std::string credentialKeyFile() {
  const char* dir = getenv("CREDENTIALS_DIRECTORY");
  if (dir == nullptr) return "";
  std::string path = std::string(dir) + "/signing-key";
  return access(path.c_str(), R_OK) == 0 ? path : "";
}

int serve(const Options& options) {
  privsep::closeStrayFds({options.common.readyFd});
  auto signerAccount = privsep::lookupAccount(options.common.user);
  auto brokerAccount = privsep::lookupAccount(options.brokerUser);
  auto clientGroup = privsep::lookupGroup(options.clientGroup);

  prepareStateDirectory(options.stateDir, signerAccount);
  ipc::ListenOptions listen{options.common.socketPath, 0660, signerAccount.uid,
                            clientGroup.value_or(signerAccount.gid)};
  auto listenFd = ipc::listenUnix(listen);

  if (geteuid() == 0) privsep::becomeUnprivileged(signerAccount);
  KJ_REQUIRE(geteuid() == signerAccount.uid, "not running as the signer user", options.common.user);
  privsep::setNoNewPrivs();

  std::string keyFile = options.keyFile.empty() ? credentialKeyFile() : options.keyFile;
  signer::KeyStore keys(options.stateDir, keyFile);
  signer::EventChain chain(options.stateDir, keys.current());
  spdlog::info("signing with {} from sequence {}", keys.current().keyId(),
               chain.head().nextSequence);

  privsep::captureShutdownSignals();
  auto io = kj::setupAsyncIo();
  privsep::installSeccomp(signer::kSignerProfile);

  // The broker may sign; members of the client group (and root, for `cellos verify`) may only
  // read the keyset. fds are never accepted from anyone.
  ipc::PeerPolicy policy{{brokerAccount.uid, 0}, {}};
  if (clientGroup) policy.gids.push_back(*clientGroup);
  ipc::LinkOptions link{.maxFdsPerMessage = 0, .traversalLimitWords = 8 << 20};
  ipc::RpcListener listener(io, kj::mv(listenFd), "signer.sock", policy, link,
                            [&](const ipc::PeerCredentials& peer) -> capnp::Capability::Client {
                              return kj::heap<signer::SignerServer>(keys, chain,
                                                                    peer.uid == brokerAccount.uid);
                            });
  privsep::signalReady(options.common.readyFd);
  spdlog::info("serving on {}", options.common.socketPath);
  int signal = listener.run()
                   .then([]() { return 0; })
                   .exclusiveJoin(privsep::shutdownRequested(io.unixEventPort))
                   .wait(io.waitScope);
  spdlog::info("shutting down on signal {}", signal);
  return 0;
}

// Prints the public keyset the signer keeps in its state directory. Read-only: it never creates
// a key (a key created here, by whoever runs this, would be owned by the wrong user).
int printKeyset(const Options& options) {
  std::string path = options.stateDir + "/keyset.json";
  std::string json = signer::readFileNoFollow(path, 1 << 20);
  std::string error;
  KJ_REQUIRE(core::parseKeyset(json, &error) != std::nullopt, "keyset is unreadable", path, error);
  std::cout << json << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  CLI::App app{
      "cellos-event-signer: holds the event-signing key, assigns each event its place in the "
      "chain (sequence, cellosprev) and signs it (CloudEvents Verifiability, DSSE). Only the "
      "broker may ask for signatures; members of the client group may read the public keyset."};
  privsep::addCommonOptions(app, options.common, "/etc/cellos/event-signer.conf");
  app.add_option("--state-dir", options.stateDir, "key, keyset and chain head (mode 0700)")
      ->capture_default_str();
  app.add_option("--broker-user", options.brokerUser, "the only user allowed to sign")
      ->capture_default_str();
  app.add_option("--client-group", options.clientGroup, "group allowed to read the keyset")
      ->capture_default_str();
  app.add_option("--key-file", options.keyFile,
                 "operator key (PKCS#8 PEM, Ed25519 or P-256) instead of the generated one; "
                 "default $CREDENTIALS_DIRECTORY/signing-key when present");
  auto* keysetCommand =
      app.add_subcommand("keyset", "print the public keyset (<state-dir>/keyset.json) and exit");
  keysetCommand->fallthrough();  // `keyset --state-dir DIR` as well as `--state-dir DIR keyset`
  CLI11_PARSE(app, argc, argv);
  try {
    privsep::setupLogging("cellos-event-signer", options.common.logLevel);
    if (*keysetCommand) return printKeyset(options);
    return serve(options);
  } catch (const kj::Exception& e) {
    spdlog::critical("{}", e.getDescription().cStr());
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
  }
  return 1;
}
