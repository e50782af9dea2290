// cellos-dns-helper: one unprivileged resolver per cell.
//
// Two roles in one binary:
//   spawner (default) — privilege story:
//     1. start as root, close inherited fds, look up cellos-dns and the broker's account;
//     2. open our own binary (O_PATH) so children can be exec'd without a path lookup;
//     3. bind dns.sock (group = the broker's group, 0660);
//     4. keep only SYS_ADMIN (setns), NET_BIND_SERVICE (port 53), SETUID/SETGID (switching a
//        child to cellos-dns), SETPCAP (a child empties its bounding set); set no_new_privs;
//     5. install the spawner profile; serve the broker only.
//   child (`cellos-dns-helper child`, exec'd by the spawner with fds 3 and 4) — see child.cpp:
//     setns into the cell, bind, drop to cellos-dns with nothing, seccomp, then read packets.

#include "core/dns_policy.h"
#include "dns-helper/child.h"
#include "dns-helper/seccomp_profile.h"
#include "dns-helper/spawner_server.h"
#include "ipc/socket.h"
#include "privsep/credentials.h"
#include "privsep/daemon.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <kj/debug.h>
#include <CLI/CLI.hpp>

namespace {

using namespace cellos;

struct Options {
  privsep::CommonOptions common{.socketPath = "/run/cellos/dns.sock", .user = "cellos-dns"};
  std::string brokerUser = "cellos";
  uint64_t childMemoryBytes = 64ull << 20;
  std::vector<std::string> guardedRanges;
};

int serve(const Options& options) {
  privsep::closeStrayFds({options.common.readyFd});
  KJ_REQUIRE(geteuid() == 0, "the DNS spawner must start as root (it enters cell namespaces)");
  auto child = privsep::lookupAccount(options.common.user);
  auto broker = privsep::lookupAccount(options.brokerUser);
  int selfExe;
  KJ_SYSCALL(selfExe = open("/proc/self/exe", O_PATH | O_CLOEXEC));

  auto listenFd = ipc::listenUnix({options.common.socketPath, 0660, 0, broker.gid});

  std::vector<int> keep;
  // SETPCAP: lets each child empty its own bounding set before it reads a packet.
  for (const char* name : {"SYS_ADMIN", "NET_BIND_SERVICE", "SETUID", "SETGID", "SETPCAP"}) {
    keep.push_back(privsep::capabilityFromName(name));
  }
  privsep::limitCapabilities(keep);
  privsep::setNoNewPrivs();

  // Only the broker and root connect; the rest of the fd limit is the per-cell children's
  // channels and namespaces.
  ipc::ConnectionLimits limits{.total = ipc::connectionsWithinFdLimit(256)};
  privsep::captureShutdownSignals();
  kj::UnixEventPort::captureChildExit();
  auto io = kj::setupAsyncIo();
  dns::SpawnerState state(
      io, {selfExe, child.uid, child.gid, options.childMemoryBytes, options.guardedRanges});
  privsep::installSeccomp(dns::kSpawnerProfile);

  // Only the broker; it passes exactly one fd (the cell's network namespace) per call.
  ipc::PeerPolicy policy{{broker.uid, 0}, {}};
  ipc::RpcListener listener(io, kj::mv(listenFd), "dns.sock", policy,
                            ipc::LinkOptions{.maxFdsPerMessage = 1}, limits,
                            [&](const ipc::PeerCredentials&) -> capnp::Capability::Client {
                              return kj::heap<dns::DnsHelperServer>(state);
                            });
  return privsep::serveUntilShutdown(io, options.common.readyFd, options.common.socketPath,
                                     [&]() { return listener.run(); });
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string(argv[1]) == "child" && fcntl(dns::kChildChannelFd, F_GETFD) >= 0) {
    try {
      // _exit: nothing to flush, and exit()'s stdio clean-up would make syscalls the child's
      // seccomp profile does not allow.
      _exit(dns::runChild());
    } catch (const kj::Exception& e) {
      fprintf(stderr, "cellos-dns-helper child: %s\n", e.getDescription().cStr());
    } catch (const std::exception& e) {
      fprintf(stderr, "cellos-dns-helper child: %s\n", e.what());
    }
    return 1;
  }
  Options options;
  CLI::App app{
      "cellos-dns-helper: the resolver of every cell. For each cell it starts a child that "
      "enters the cell's network namespace, binds port 53 there, drops to the cellos-dns user "
      "with no capabilities and a seccomp profile, and only then reads the cell's queries. "
      "Names outside the cell's allowlist are answered REFUSED; allowed ones are forwarded to "
      "the cell's declared resolver; every query is reported to the broker as a dns_query "
      "event. Serves only the broker."};
  privsep::addCommonOptions(app, options.common, "/etc/cellos/dns-helper.conf");
  app.add_option("--broker-user", options.brokerUser, "the only user allowed to connect")
      ->capture_default_str();
  app.add_option("--child-memory-bytes", options.childMemoryBytes,
                 "address-space limit of each per-cell child")
      ->capture_default_str();
  app.add_option("--rebind-guard-range", options.guardedRanges,
                 "an address range (CIDR, repeatable) no answer may point into, besides "
                 "loopback, link-local, multicast, unspecified and the cell's own subnet "
                 "(e.g. 10.0.0.0/8 to keep cells from resolving names into a private network)")
      ->check([](const std::string& text) {
        return core::parseAddressRange(text) ? std::string() : "not an IPv4 or IPv6 range";
      });
  CLI11_PARSE(app, argc, argv);
  return privsep::runDaemon("cellos-dns-helper", options.common.logLevel,
                            [&]() { return serve(options); });
}
