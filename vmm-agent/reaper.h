#pragma once
// What a VM launcher does first when it starts: reap the cells a crashed (or killed)
// predecessor left, from its records (cell_records.h) and, for cells of a version without
// records, from the cell directories under <run-dir>/cells.

#include <string>

namespace cellos::vmm {

// Destroys every orphaned cell (records no live launcher holds): its processes and cgroups, the
// uplink end of its veth (in the recorded uplink namespace, when that namespace still exists and
// is the same one), its directory and its record. Then every directory under <runDir>/cells that
// has no record at all. Logs what it cannot clean; never throws.
void reapOrphanedCells(const std::string& stateDir, const std::string& runDir, int homeNetnsFd);

}  // namespace cellos::vmm
