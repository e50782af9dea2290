// bench/lifecycle's host service: starts the four daemons the way `cellos run` does
// (cli::EmbeddedSystem) but keeps them up, prints the broker's socket on stdout, and stops them
// when stdin closes. Run as root.
//
//   cellos-bench-service STATE_DIR [BROKER_OPTION...]

#include "broker/cli/embedded.h"

#include <unistd.h>

#include <cstdio>
#include <exception>

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: cellos-bench-service STATE_DIR [BROKER_OPTION...]\n");
    return 2;
  }
  cellos::cli::EmbeddedOptions options;
  options.stateDir = argv[1];
  options.binDir = cellos::cli::selfDirectory();
  for (int i = 2; i < argc; ++i) options.brokerArgs.emplace_back(argv[i]);
  try {
    cellos::cli::EmbeddedSystem system(options);
    system.start();
    printf("%s\n", system.brokerSocket().c_str());
    fflush(stdout);
    char byte;
    while (read(0, &byte, 1) > 0) {
    }
    system.stop();
  } catch (const std::exception& e) {
    fprintf(stderr, "cellos-bench-service: %s\n", e.what());
    return 1;
  }
  return 0;
}
