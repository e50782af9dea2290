#pragma once
// What a VM launcher does first when it starts: reap the cells that killed (or crashed)
// launchers left, its own predecessor's and any other launcher's on this host, from their claims
// and records (cell_records.h) and, for cells of a version without records, from the cell
// directories under <run-dir>/cells.

#include <string>

namespace cellos::vmm {

// Destroys every orphaned cell: its processes and cgroups, the uplink end of its veth (in the
// recorded uplink namespace, when that namespace still exists and is the same one), its
// directory, its record and its claim. Orphaned means: its claim in <poolDir>/cells (host-wide,
// so whatever state directory its launcher used) or its record in `stateDir`
// is held by no live launcher. A cell whose claim a live launcher holds is never touched, even
// when a stale record of ours names its id. Then every directory under <runDir>/cells that has no
// record at all, and the lease files in `poolDir` nobody holds. Logs what it cannot clean; never
// throws.
void reapOrphanedCells(const std::string& stateDir, const std::string& poolDir,
                       const std::string& runDir, int homeNetnsFd);

}  // namespace cellos::vmm
