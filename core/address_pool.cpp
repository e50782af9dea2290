#include "core/address_pool.h"

#include "core/ip_address.h"

#include <stdexcept>

namespace cellos::core {

std::optional<Ipv4Network> parseIpv4Cidr(std::string_view text, std::string* error) {
  auto fail = [&](const std::string& why) -> std::optional<Ipv4Network> {
    if (error) *error = "\"" + std::string(text) + "\" " + why;
    return std::nullopt;
  };
  IpRangeError why;
  std::optional<IpRange> range = parseCidr(text, &why);
  if (!range) {
    switch (why.problem) {
      case IpRangeProblem::kNoPrefix:
        return fail("is not a.b.c.d/prefix");
      case IpRangeProblem::kBadAddress:
        return fail("is not a dotted-quad IPv4 address");
      case IpRangeProblem::kBadPrefixLength:
      case IpRangeProblem::kPrefixOutOfRange:
        return fail("has no prefix length 0..32");
      case IpRangeProblem::kHostBitsSet:
        return fail("has host bits set");
    }
    return std::nullopt;
  }
  if (range->ipv6) return fail("is not a dotted-quad IPv4 address");
  uint32_t address = 0;
  for (int i = 0; i < 4; ++i) address = (address << 8) | range->bytes[i];
  return Ipv4Network{address, range->prefix};
}

std::string formatIpv4(uint32_t address) {
  return std::to_string(address >> 24) + "." + std::to_string((address >> 16) & 0xff) + "." +
         std::to_string((address >> 8) & 0xff) + "." + std::to_string(address & 0xff);
}

std::optional<AddressPool> AddressPool::parse(std::string_view cidr, std::string* error) {
  auto range = parseIpv4Cidr(cidr, error);
  if (!range) return std::nullopt;
  if (range->prefix < 8 || range->prefix > 30) {
    if (error) {
      *error = "\"" + std::string(cidr) + "\" must have a prefix of 8..30 to hold /30 cell links";
    }
    return std::nullopt;
  }
  return AddressPool(*range);
}

CellAddressPair AddressPool::slot(size_t index) const {
  if (index >= slotCount()) throw std::out_of_range("address pool slot " + std::to_string(index));
  uint32_t network = range_.address + static_cast<uint32_t>(index) * 4;
  return CellAddressPair{network, network + 1, network + 2};
}

std::string AddressPool::describe() const {
  return formatIpv4(range_.address) + "/" + std::to_string(range_.prefix);
}

std::string AddressPool::leaseName() const {
  return "addr-" + formatIpv4(range_.address) + "-" + std::to_string(range_.prefix);
}

std::optional<UidRangePool> UidRangePool::make(uint64_t base, uint64_t rangeSize, uint64_t count,
                                               std::string* error) {
  auto fail = [&](const std::string& why) -> std::optional<UidRangePool> {
    if (error) *error = why;
    return std::nullopt;
  };
  if (base < 65536) return fail("uid pool base " + std::to_string(base) + " must be >= 65536");
  if (rangeSize < 1) return fail("uid range size must be >= 1");
  if (count < 1) return fail("uid pool must hold at least one range");
  // The last id handed out, base + rangeSize * count - 1, must stay below (uid_t)-1.
  if (rangeSize > 0xffffffffull || count > 0xffffffffull ||
      base + rangeSize * count - 1 >= 0xffffffffull) {
    return fail("uid pool " + std::to_string(base) + " + " + std::to_string(count) + " x " +
                std::to_string(rangeSize) + " runs past 4294967294");
  }
  return UidRangePool(static_cast<uint32_t>(base), static_cast<uint32_t>(rangeSize),
                      static_cast<uint32_t>(count));
}

uint32_t UidRangePool::rangeBase(size_t index) const {
  if (index >= count_) throw std::out_of_range("uid pool slot " + std::to_string(index));
  return base_ + static_cast<uint32_t>(index) * rangeSize_;
}

std::string UidRangePool::describe() const {
  return "uid-" + std::to_string(base_) + "-" + std::to_string(rangeSize_) + "-" +
         std::to_string(count_);
}

}  // namespace cellos::core
