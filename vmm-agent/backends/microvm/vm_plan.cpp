#include "vmm-agent/backends/microvm/vm_plan.h"

#include "vmm-agent/cell/sys_util.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <stdexcept>

namespace cellos::vmm {

namespace {

constexpr std::string_view kMagic = "cellos-vm-plan 1\n";
constexpr size_t kMaxPlanBytes = 16u << 20;

bool number(std::string_view text, uint64_t& out) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size() && !text.empty();
}

}  // namespace

// Header lines "key=value\n" (no value holds a newline: ids and paths the launcher made), an
// empty line, then the guest's configuration as the channel encodes it.
std::string encodeVmPlan(const VmPlan& plan) {
  std::string out(kMagic);
  out += "cellId=" + plan.cellId + "\n";
  out += "cellDir=" + plan.cellDir + "\n";
  out += "memoryMiB=" + std::to_string(plan.memoryMiB) + "\n";
  out += "vcpus=" + std::to_string(plan.vcpus) + "\n";
  out += "vmmUid=" + std::to_string(plan.vmmUid) + "\n";
  out += "imageRoot=" + plan.imageRoot + "\n";
  out += "\n";
  out += vmchannel::encodeGuestConfig(plan.guest);
  return out;
}

std::optional<VmPlan> decodeVmPlan(std::string_view bytes, std::string* why) {
  auto fail = [&](std::string reason) -> std::optional<VmPlan> {
    *why = std::move(reason);
    return std::nullopt;
  };
  if (bytes.substr(0, kMagic.size()) != kMagic) return fail("not a VM plan");
  size_t at = kMagic.size();
  VmPlan plan;
  for (;;) {
    size_t end = bytes.find('\n', at);
    if (end == std::string_view::npos) return fail("VM plan header cut short");
    std::string_view line = bytes.substr(at, end - at);
    at = end + 1;
    if (line.empty()) break;
    size_t eq = line.find('=');
    if (eq == std::string_view::npos) return fail("VM plan header line without '='");
    std::string_view key = line.substr(0, eq), value = line.substr(eq + 1);
    uint64_t n = 0;
    if (key == "cellId") {
      plan.cellId = value;
    } else if (key == "cellDir") {
      plan.cellDir = value;
    } else if (key == "imageRoot") {
      plan.imageRoot = value;
    } else if (key == "memoryMiB" && number(value, n) && n > 0) {
      plan.memoryMiB = n;
    } else if (key == "vcpus" && number(value, n) && n > 0 && n <= 255) {
      plan.vcpus = static_cast<uint32_t>(n);
    } else if (key == "vmmUid" && number(value, n) && n > 0 && n < 0xffffffffu) {
      plan.vmmUid = static_cast<uid_t>(n);
    } else {
      return fail("VM plan header: bad " + std::string(key));
    }
  }
  std::optional<vmchannel::GuestConfig> guest = vmchannel::decodeGuestConfig(bytes.substr(at), why);
  if (!guest) return std::nullopt;
  plan.guest = std::move(*guest);
  if (plan.cellId.empty() || plan.cellDir.empty() || plan.cellDir[0] != '/' || plan.vmmUid == 0) {
    return fail("VM plan without a cell id, cell directory or VMM uid");
  }
  return plan;
}

int vmPlanMemfd(const VmPlan& plan) {
  std::string bytes = encodeVmPlan(plan);
  Fd fd(memfd_create("cellos-vm-plan", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (fd.get() < 0) throwErrno("memfd_create(cellos-vm-plan)");
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = write(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throwErrno("write(cellos-vm-plan)");
    done += static_cast<size_t>(n);
  }
  if (fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0) {
    throwErrno("fcntl(cellos-vm-plan, F_ADD_SEALS)");
  }
  return fd.release();
}

VmPlan readVmPlan(int memfd) {
  int seals = fcntl(memfd, F_GET_SEALS);
  int wanted = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL;
  if (seals < 0 || (seals & wanted) != wanted) {
    throw std::runtime_error("the VM plan is not a sealed memfd");
  }
  struct stat st {};
  if (fstat(memfd, &st) < 0) throwErrno("fstat(cellos-vm-plan)");
  if (st.st_size <= 0 || static_cast<uint64_t>(st.st_size) > kMaxPlanBytes) {
    throw std::runtime_error("the VM plan is " + std::to_string(st.st_size) + " bytes");
  }
  std::string bytes(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = pread(memfd, bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throwErrno("pread(cellos-vm-plan)");
    done += static_cast<size_t>(n);
  }
  std::string why;
  std::optional<VmPlan> plan = decodeVmPlan(bytes, &why);
  if (!plan) throw std::runtime_error("the VM plan: " + why);
  return std::move(*plan);
}

}  // namespace cellos::vmm
