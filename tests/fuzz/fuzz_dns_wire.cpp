// libFuzzer harness for the DNS wire parser and hostname normaliser: arbitrary bytes as a query,
// as a response, and as hostname text. Besides "no crash, no sanitizer report" it checks the
// round trips the DNS helper relies on, aborting when one breaks.

#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/dns_policy.h"
#include "core/dns_wire.h"
#include "core/hostname.h"

namespace {

using namespace cellos::core;

void require(bool condition) {
  if (!condition) std::abort();
}

void checkQuery(std::span<const uint8_t> bytes) {
  auto parsed = parseQuery(bytes);
  const auto* query = std::get_if<DnsQuery>(&parsed);
  if (query == nullptr) {
    (void)describe(std::get<DnsParseError>(parsed));
    (void)buildHeaderOnlyResponse(bytes, DnsRcode::kFormErr);
    return;
  }
  require(query->question.name.size() <= 253);
  require(query->questionEnd <= bytes.size());

  // The refusal the helper sends must parse as a response to the same question.
  std::vector<uint8_t> reply = buildErrorResponse(*query, bytes, DnsRcode::kRefused);
  auto response = parseResponse(reply);
  const auto* parsedReply = std::get_if<DnsResponse>(&response);
  require(parsedReply != nullptr);
  require(parsedReply->id == query->id);
  require(parsedReply->rcode == DnsRcode::kRefused);
  require(parsedReply->question.name == query->question.name);
  require(parsedReply->question.qtype == query->question.qtype);
  require(parsedReply->answers.empty());

  // Re-encoding the parsed name must give a query that parses to the same question.
  std::vector<uint8_t> again = buildQuery(query->id, query->question.name, query->question.qtype);
  auto reparsed = parseQuery(again);
  const auto* second = std::get_if<DnsQuery>(&reparsed);
  require(second != nullptr);
  require(second->question.name == query->question.name);

  // The EDNS size the forwarder reads sits inside the packet; 0 without an OPT record.
  uint16_t edns = ednsUdpSize(*query, bytes);
  require(edns == 0 || query->questionEnd + 5 <= bytes.size());

  std::vector<uint8_t> copy(bytes.begin(), bytes.end());
  setPacketId(copy, static_cast<uint16_t>(query->id ^ 0xffff));
  auto renumbered = parseQuery(copy);
  require(std::holds_alternative<DnsQuery>(renumbered));
}

void checkResponse(std::span<const uint8_t> bytes) {
  auto parsed = parseResponse(bytes);
  const auto* response = std::get_if<DnsResponse>(&parsed);
  if (response == nullptr) return;
  require(response->answers.size() <= kMaxDnsAnswerRecords);
  for (const DnsRecord& record : response->answers) {
    require(record.name.size() <= 253);
    if (record.type == kDnsTypeCname && record.rclass == kDnsClassIn) {
      require(cnameTarget(record).has_value());
    }
  }
  auto v4 = ipv4Answers(*response);
  auto v6 = ipv6Answers(*response);
  require(v4.size() <= response->answers.size());
  require(v6.size() <= response->answers.size());
  // The rebinding guard judges every address the forwarder would relay; loopback is always in.
  static const std::vector<DnsAddressRange> configured = {*parseAddressRange("10.0.0.0/8")};
  for (const auto& a : v4) {
    bool guarded = rebindingGuarded(a, configured);
    if (a[0] == 127 || a[0] == 10) require(guarded);
  }
  for (const auto& a : v6) (void)rebindingGuarded(a, configured);
}

void checkAddressRange(std::string_view text) {
  auto range = parseAddressRange(text);
  if (range) require(range->prefix <= 128);
}

void checkHostname(std::string_view text) {
  for (bool allowWildcard : {false, true}) {
    std::string error;
    auto normalised = normaliseHostname(text, allowWildcard, &error);
    if (!normalised) {
      require(!error.empty());
      continue;
    }
    require(normalised->size() <= kMaxHostnameLength);
    // Normalising is idempotent, and every entry matches itself.
    auto twice = normaliseHostname(*normalised, allowWildcard, nullptr);
    require(twice.has_value() && *twice == *normalised);
    require(hostnameMatches(*normalised, *normalised));
    require(hostnameMatches(*normalised, text));
    if (!allowWildcard) {
      require(!buildQuery(1, *normalised, kDnsTypeA).empty());
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> bytes(data, size);
  checkQuery(bytes);
  checkResponse(bytes);
  checkHostname(std::string_view(reinterpret_cast<const char*>(data), size));
  checkAddressRange(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
