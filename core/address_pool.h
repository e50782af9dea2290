#pragma once
// The pools a VM launcher carves per-cell resources from: an IPv4 address pair per cell (a /30
// out of a configured range, e.g. 10.213.0.0/16) and a host uid/gid range per cell (the ids its
// user namespace maps root and the rest of the cell to). Pure arithmetic and parsing: which slot
// is free on this host is the launcher's business (vmm-agent/launcher/slot_lease.h).

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cellos::core {

// An IPv4 range; `address` in host byte order with its host bits zero.
struct Ipv4Network {
  uint32_t address = 0;
  unsigned prefix = 0;
};

// An IPv4 range in core/ip_address.h's grammar ("a.b.c.d/n", n in 0..32, no leading zeros, host
// bits zero). nullopt otherwise, with the reason in *error.
std::optional<Ipv4Network> parseIpv4Cidr(std::string_view text, std::string* error);
// Dotted quad of a host-order address.
std::string formatIpv4(uint32_t address);

// One cell's point-to-point link: network/30, the uplink end network+1, the cell network+2.
struct CellAddressPair {
  uint32_t network = 0;
  uint32_t uplink = 0;
  uint32_t cell = 0;
  static constexpr unsigned kPrefix = 30;
};

class AddressPool {
 public:
  // A range of prefix 8..30 ("10.213.0.0/16" gives 16384 cells). nullopt with *error otherwise.
  static std::optional<AddressPool> parse(std::string_view cidr, std::string* error);

  size_t slotCount() const { return size_t{1} << (30 - range_.prefix); }
  // Slot `index` < slotCount(): the index-th /30 of the range.
  CellAddressPair slot(size_t index) const;
  // "10.213.0.0/16".
  std::string describe() const;
  // "addr-10.213.0.0-16": names the pool's lease files, so two pools never share a lease.
  std::string leaseName() const;

 private:
  explicit AddressPool(Ipv4Network range) : range_(range) {}
  Ipv4Network range_;
};

// Host ids [base, base + rangeSize * count): cell slot i maps its ids 0..rangeSize-1 to
// base + i * rangeSize + (0..rangeSize-1).
class UidRangePool {
 public:
  // base >= 65536 (clear of system and login accounts), rangeSize >= 1, count >= 1, and the
  // last id below 4294967295 (the kernel's invalid id). nullopt with *error otherwise.
  static std::optional<UidRangePool> make(uint64_t base, uint64_t rangeSize, uint64_t count,
                                          std::string* error);

  size_t slotCount() const { return count_; }
  uint32_t rangeSize() const { return rangeSize_; }
  // First host id of slot `index` < slotCount().
  uint32_t rangeBase(size_t index) const;
  // "uid-<base>-<rangeSize>-<count>", for lease file names.
  std::string describe() const;

 private:
  UidRangePool(uint32_t base, uint32_t rangeSize, uint32_t count)
      : base_(base), rangeSize_(rangeSize), count_(count) {}
  uint32_t base_, rangeSize_, count_;
};

}  // namespace cellos::core
