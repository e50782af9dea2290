#include "guest-init/control_port.h"

#include <dirent.h>

#include <algorithm>
#include <fstream>
#include <string_view>
#include <vector>

namespace cellos::guest {

std::optional<std::string> findVirtioPort(const std::string& classDir, const std::string& name) {
  DIR* dir = ::opendir(classDir.c_str());
  if (dir == nullptr) return std::nullopt;
  std::vector<std::string> ports;
  while (dirent* entry = ::readdir(dir)) {
    std::string_view port = entry->d_name;
    if (port.substr(0, 5) == "vport") ports.emplace_back(port);
  }
  ::closedir(dir);
  std::sort(ports.begin(), ports.end());
  for (const std::string& port : ports) {
    std::ifstream in(classDir + "/" + port + "/name");
    std::string line;
    // The attribute is the name and a newline; a port the host left unnamed reads as "\n".
    if (in && std::getline(in, line) && line == name) return port;
  }
  return std::nullopt;
}

}  // namespace cellos::guest
