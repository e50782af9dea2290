#pragma once
// One problem with something a user or operator wrote, at a JSON path.

#include <string>

namespace cellos::core {

struct Violation {
  std::string path;     // "$" for the whole input, else e.g. "spec.authority.egressRules[2].port"
  std::string message;  // "70000 is out of range 1..65535"
};

// "<path>: <message>".
std::string formatViolation(const Violation& violation);

}  // namespace cellos::core
