// `cellos doctor`'s verdicts on what systemd reports (issue 17): a unit that restarts after a
// failed start is a failure with its error, not a hint to enable it; runsc installed is not the
// gvisor backend on when the VM launcher's unit bounds CAP_CHOWN away.

#include "broker/cli/doctor.h"

#include <gtest/gtest.h>

namespace cellos::cli {
namespace {

using Level = DoctorFinding::Level;

TEST(DoctorUnits, ARestartingOrFailedUnitFailsWithItsLastError) {
  auto restarting =
      unitFinding("cellos-vmm-agent.service", "activating",
                  "no cell could start: /sys/fs/cgroup/memory/cellos is not writable: Read-only "
                  "file system");
  EXPECT_EQ(restarting.level, Level::kFail);
  EXPECT_EQ(restarting.detail,
            "cellos-vmm-agent.service activating (restarting after a failed start): no cell "
            "could start: /sys/fs/cgroup/memory/cellos is not writable: Read-only file system");
  EXPECT_NE(restarting.fix.find("journalctl -u cellos-vmm-agent.service"), std::string::npos);
  auto failed = unitFinding("cellos-broker.service", "failed", "");
  EXPECT_EQ(failed.level, Level::kFail);
  EXPECT_EQ(failed.detail, "cellos-broker.service failed");
  EXPECT_EQ(unitFinding("cellos-broker.service", "active", "").level, Level::kOk);
  auto off = unitFinding("cellos-broker.service", "inactive", "");
  EXPECT_EQ(off.level, Level::kWarn);
  EXPECT_EQ(off.fix, "systemctl enable --now cellos.target");
}

TEST(DoctorUnits, GvisorIsOnUnderTheUnitOnlyWithCapChown) {
  EXPECT_EQ(gvisorUnderUnitFinding(false, "").level, Level::kOk);
  auto bounded = gvisorUnderUnitFinding(
      true,
      "cap_dac_override cap_kill cap_setgid cap_setuid cap_setpcap cap_net_admin "
      "cap_sys_chroot cap_sys_admin");
  EXPECT_EQ(bounded.level, Level::kWarn);
  EXPECT_NE(bounded.detail.find("turns the gvisor backend off"), std::string::npos)
      << bounded.detail;
  EXPECT_EQ(gvisorUnderUnitFinding(true, "cap_chown cap_dac_override cap_kill").level, Level::kOk);
}

}  // namespace
}  // namespace cellos::cli
