// cellos-event-signer: holds the event-signing key and nothing else.
//
// Privilege story, top to bottom:
//   1. start as root (or already as cellos-signer under systemd), close inherited fds;
//   2. prepare the state directory (0700, owned by cellos-signer) and bind signer.sock
//      (group cellos, 0660) — the two things that may need root;
//   3. become cellos-signer with no capabilities and no_new_privs;
//   4. take the state directory's lock (one signer per chain: two would fork it), load or
//      generate the key (the key file is created by, and readable only by, that user);
//   5. install the seccomp profile; only then read any request.
//
// `cellos-event-signer rotate` replaces the key: through the running signer's socket when one
// holds the lock (root only), otherwise directly in the state directory as the signer's user.

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
  std::string algorithm = "ed25519";  // rotate: the new key's algorithm
  double checkpointInterval = 5;      // seconds between checkpoints while events flow; 0: off
  std::string checkpointOrigin;       // empty: cellos/<the chain's first keyid>
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

  auto lock = signer::StateLock::tryAcquire(options.stateDir);
  KJ_REQUIRE(lock != std::nullopt, "another cellos-event-signer serves this state directory",
             options.stateDir);
  std::string keyFile = options.keyFile.empty() ? credentialKeyFile() : options.keyFile;
  signer::KeyStore keys(options.stateDir, keyFile);
  signer::EventChain chain(options.stateDir, keys.current());
  chain.configureCheckpoints(
      options.checkpointOrigin,
      std::chrono::milliseconds(static_cast<int64_t>(options.checkpointInterval * 1000)));
  spdlog::info("signing with {} from sequence {}; checkpoints of {} every {} s",
               keys.current().keyId(), chain.head().nextSequence, chain.checkpointOrigin(),
               options.checkpointInterval);

  // Group cellos may connect (to read the keyset): its connections stay below the fd limit,
  // which is read now (seccomp allows no getrlimit later). The signer's own files are few.
  ipc::ConnectionLimits limits{.total = ipc::connectionsWithinFdLimit(64)};
  privsep::captureShutdownSignals();
  auto io = kj::setupAsyncIo();
  privsep::installSeccomp(signer::kSignerProfile);

  // The broker may sign; members of the client group (and root, for `cellos verify`) may only
  // read the keyset and the head; root may rotate. fds are never accepted from anyone.
  ipc::PeerPolicy policy{{brokerAccount.uid, 0}, {}};
  if (clientGroup) policy.gids.push_back(*clientGroup);
  ipc::LinkOptions link{.maxFdsPerMessage = 0, .traversalLimitWords = 8 << 20};
  ipc::RpcListener listener(io, kj::mv(listenFd), "signer.sock", policy, link, limits,
                            [&](const ipc::PeerCredentials& peer) -> capnp::Capability::Client {
                              return kj::heap<signer::SignerServer>(
                                  keys, chain, peer.uid == brokerAccount.uid, peer.uid == 0);
                            });
  return privsep::serveUntilShutdown(io, options.common.readyFd, options.common.socketPath,
                                     [&]() { return listener.run(); });
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

// Rotates the key. With a signer serving the state directory (it holds the lock), asks it over
// its socket, so the switch happens between two batches; otherwise rotates the files directly,
// as the signer's user so that the new key file belongs to it.
int rotateKey(const Options& options) {
  auto algorithm = core::algorithmFromName(options.algorithm);
  KJ_REQUIRE(algorithm != std::nullopt, "--algorithm must be ed25519 or p256", options.algorithm);
  if (!signer::StateLock::heldByAnother(options.stateDir)) {
    auto signerAccount = privsep::lookupAccount(options.common.user);
    if (geteuid() == 0) {
      prepareStateDirectory(options.stateDir, signerAccount);
      privsep::becomeUnprivileged(signerAccount);
    }
    auto lock = signer::StateLock::tryAcquire(options.stateDir);
    KJ_REQUIRE(lock != std::nullopt, "a signer started meanwhile; run rotate again");
    std::string keyFile = options.keyFile.empty() ? credentialKeyFile() : options.keyFile;
    signer::KeyStore keys(options.stateDir, keyFile);
    signer::EventChain chain(options.stateDir, keys.current());
    std::string previous = keys.current().keyId();
    keys.rotate(*algorithm);
    chain.keyRotated();
    std::cout << "rotated " << previous << " -> " << keys.current().keyId()
              << " (no signer running; it signs with the new key from its next start, from "
                 "sequence "
              << chain.head().nextSequence << ")\n"
              << keys.keysetJson() << "\n";
    return 0;
  }
  // A signer is serving: ask it (it lets only root rotate).
  auto io = kj::setupAsyncIo();
  ipc::RpcLink link(*io.lowLevelProvider, ipc::connectUnix(options.common.socketPath),
                    {.maxFdsPerMessage = 0}, capnp::rpc::twoparty::Side::CLIENT, nullptr);
  auto request = link.bootstrap<ipc::EventSigner>().rotateRequest();
  request.setAlgorithm(options.algorithm);
  auto response =
      ipc::withTimeout(io.provider->getTimer(), 30 * kj::SECONDS, "rotate", request.send())
          .wait(io.waitScope);
  std::cout << "rotated: the running signer now signs with " << response.getKeyId().cStr() << "\n"
            << response.getKeyset().cStr() << "\n";
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
  app.add_option("--checkpoint-interval", options.checkpointInterval,
                 "seconds between signed checkpoints of the event tree while events are "
                 "written (one more when the broker stops); 0 turns checkpoints off")
      ->capture_default_str();
  app.add_option("--checkpoint-origin", options.checkpointOrigin,
                 "checkpoint origin (and signed-note key name) before \"/<first sequence>\"; "
                 "default cellos/<the chain's first keyid>");
  auto* keysetCommand =
      app.add_subcommand("keyset", "print the public keyset (<state-dir>/keyset.json) and exit");
  keysetCommand->fallthrough();  // `keyset --state-dir DIR` as well as `--state-dir DIR keyset`
  auto* rotateCommand = app.add_subcommand(
      "rotate",
      "replace the signing key: a new key signs from now on, the chain continues, the keyset "
      "keeps every earlier public key. Asks the signer serving --socket when one runs (as root), "
      "else rotates the files in --state-dir");
  rotateCommand->fallthrough();
  rotateCommand->add_option("--algorithm", options.algorithm, "ed25519 or p256")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return privsep::runDaemon("cellos-event-signer", options.common.logLevel, [&]() {
    if (*keysetCommand) return printKeyset(options);
    if (*rotateCommand) return rotateKey(options);
    return serve(options);
  });
}
