#include "core/violation.h"

namespace cellos::core {

std::string formatViolation(const Violation& violation) {
  return violation.path + ": " + violation.message;
}

}  // namespace cellos::core
