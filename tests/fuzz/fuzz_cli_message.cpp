// libFuzzer harness for what the CLI prints when something failed (broker/cli/messages.h):
// plainMessage() reads the error text a daemon sent back, which can carry a document's own
// words (a cell id, a path, an argv), and turns it into one line for a person. Whatever it is
// given, it must return one line with no stack and no longer than its input plus the fixed
// sentence it may substitute, and never crash.

#include "broker/cli/messages.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string input(reinterpret_cast<const char*>(data), size);
  std::string line = cellos::cli::plainMessage(input);
  if (line.find('\n') != std::string::npos) abort();
  if (line.size() > input.size() + 80) abort();
  return 0;
}
