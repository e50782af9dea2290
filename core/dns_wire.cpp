#include "core/dns_wire.h"

#include <algorithm>
#include <utility>

namespace cellos::core {
namespace {

constexpr uint16_t kOpcodeMask = 0x7800;
constexpr uint16_t kRcodeMask = 0x000f;
// Fixed part of a resource record after its name: type, class, ttl, rdlength.
constexpr std::size_t kRecordFixedSize = 10;
// Fixed part of a question after its name: qtype, qclass.
constexpr std::size_t kQuestionFixedSize = 4;
// Longest CNAME chain ipv4Answers/ipv6Answers follow; real chains are a handful of links.
constexpr std::size_t kMaxCnameLinks = 16;

struct QtypeEntry {
  std::string_view name;
  uint16_t value;
};

constexpr std::array<QtypeEntry, 13> kQtypes = {{
    {"A", 1},
    {"NS", 2},
    {"CNAME", 5},
    {"SOA", 6},
    {"PTR", 12},
    {"MX", 15},
    {"TXT", 16},
    {"AAAA", 28},
    {"SRV", 33},
    {"SVCB", 64},
    {"HTTPS", 65},
    {"ANY", 255},
    {"CAA", 257},
}};

char lowerAscii(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return lowerAscii(x) == lowerAscii(y);
         });
}

// The text form joins labels with '.' and is what policy matches on, so a label byte must be
// one that reads back unambiguously: printable ASCII, never '.' itself.
bool isTextSafeLabelByte(uint8_t byte) {
  return byte >= 0x21 && byte <= 0x7e && byte != '.';
}

uint16_t read16(std::span<const uint8_t> packet, std::size_t at) {
  return static_cast<uint16_t>((packet[at] << 8) | packet[at + 1]);
}

uint32_t read32(std::span<const uint8_t> packet, std::size_t at) {
  return (uint32_t{read16(packet, at)} << 16) | read16(packet, at + 2);
}

void append16(std::vector<uint8_t>& out, uint16_t value) {
  out.push_back(static_cast<uint8_t>(value >> 8));
  out.push_back(static_cast<uint8_t>(value & 0xff));
}

// True when [at, at + length) lies inside the packet, without overflowing.
bool fits(std::span<const uint8_t> packet, std::size_t at, std::size_t length) {
  return at <= packet.size() && length <= packet.size() - at;
}

struct Header {
  uint16_t id;
  uint16_t flags;
  uint16_t qdcount;
  uint16_t ancount;
  uint16_t nscount;
  uint16_t arcount;
};

Header readHeader(std::span<const uint8_t> packet) {
  return Header{read16(packet, 0), read16(packet, 2), read16(packet, 4),
                read16(packet, 6), read16(packet, 8), read16(packet, 10)};
}

struct DecodedName {
  std::string text;           // lower-case, no trailing dot, "." for the root
  std::vector<uint8_t> wire;  // the same name uncompressed, lower-cased
  std::size_t end;            // offset just past the name where it started
};

// Decodes the (possibly compressed) name at start. Iterative, and each name costs at most
// 255 wire bytes plus kMaxDnsPointerJumps jumps however the pointers are arranged.
//
// Pointer rule: a target must lie after the header and before the first byte of the run of
// labels that led to the pointer. A compressor only points at names it already wrote, so real
// packets satisfy this, and because every jump goes strictly backwards no sequence of jumps can
// revisit a byte. A target inside any run already read is reported as a loop; any other forward
// target (including past the end) as a bad name.
std::variant<DecodedName, DnsParseError> decodeName(std::span<const uint8_t> packet,
                                                    std::size_t start, bool allowPointers) {
  struct Run {
    std::size_t first;
    std::size_t last;
  };
  std::array<Run, kMaxDnsPointerJumps + 1> runs{};
  std::size_t runCount = 0;

  DecodedName out;
  std::optional<std::size_t> end;
  std::size_t pos = start;
  std::size_t runStart = start;
  std::size_t jumps = 0;

  while (true) {
    if (pos >= packet.size()) return DnsParseError::kTruncated;
    const uint8_t length = packet[pos];

    if ((length & 0xc0) == 0xc0) {
      if (!allowPointers) return DnsParseError::kBadName;
      if (pos + 1 >= packet.size()) return DnsParseError::kTruncated;
      const std::size_t target = read16(packet, pos) & 0x3fff;
      if (!end) end = pos + 2;
      runs[runCount++] = Run{runStart, pos + 1};
      if (target >= runStart) {
        // Run starts only decrease, so a target below runStart cannot be in any run and a valid
        // packet never pays for this scan.
        for (std::size_t i = 0; i < runCount; ++i) {
          if (target >= runs[i].first && target <= runs[i].last) {
            return DnsParseError::kPointerLoop;
          }
        }
        return DnsParseError::kBadName;  // forward or out of bounds
      }
      if (target < kDnsHeaderSize) return DnsParseError::kBadName;
      if (++jumps > kMaxDnsPointerJumps) return DnsParseError::kPointerLoop;
      pos = target;
      runStart = target;
      continue;
    }
    // 0x40 and 0x80 are the extended and bit-string label types (RFC 6891 section 5, RFC 2673),
    // never sent by a stub resolver.
    if ((length & 0xc0) != 0) return DnsParseError::kBadName;

    if (length == 0) {
      out.wire.push_back(0);
      if (!end) end = pos + 1;
      break;
    }
    if (!fits(packet, pos + 1, length)) return DnsParseError::kTruncated;
    // +1 for the root label still to come.
    if (out.wire.size() + 1 + length + 1 > kMaxDnsWireNameLength) {
      return DnsParseError::kNameTooLong;
    }
    out.wire.push_back(length);
    if (!out.text.empty()) out.text.push_back('.');
    for (std::size_t i = 0; i < length; ++i) {
      const uint8_t byte = packet[pos + 1 + i];
      if (!isTextSafeLabelByte(byte)) return DnsParseError::kBadName;
      const char c = lowerAscii(static_cast<char>(byte));
      out.wire.push_back(static_cast<uint8_t>(c));
      out.text.push_back(c);
    }
    pos += 1 + length;
  }

  if (out.text.empty()) out.text = ".";
  out.end = *end;
  return out;
}

// Reads a question (name, qtype, qclass) at start; on success *next is the offset past it.
std::variant<DnsQuestion, DnsParseError> readQuestion(std::span<const uint8_t> packet,
                                                      std::size_t start, std::size_t* next) {
  auto name = decodeName(packet, start, /*allowPointers=*/true);
  if (auto* err = std::get_if<DnsParseError>(&name)) return *err;
  auto& decoded = std::get<DecodedName>(name);
  if (!fits(packet, decoded.end, kQuestionFixedSize)) return DnsParseError::kTruncated;
  *next = decoded.end + kQuestionFixedSize;
  return DnsQuestion{std::move(decoded.text), read16(packet, decoded.end),
                     read16(packet, decoded.end + 2)};
}

// Encodes text as an uncompressed wire name; nullopt when parseQuery could not accept it.
std::optional<std::vector<uint8_t>> encodeName(std::string_view text) {
  if (!text.empty() && text.back() == '.') text.remove_suffix(1);
  std::vector<uint8_t> wire;
  if (text.size() > kMaxDnsWireNameLength - 2) return std::nullopt;
  while (!text.empty()) {
    const std::size_t dot = text.find('.');
    const std::string_view label = text.substr(0, dot);
    if (label.empty() || label.size() > 63) return std::nullopt;
    wire.push_back(static_cast<uint8_t>(label.size()));
    for (char c : label) {
      if (!isTextSafeLabelByte(static_cast<uint8_t>(c))) return std::nullopt;
      wire.push_back(static_cast<uint8_t>(c));
    }
    if (dot == std::string_view::npos) break;
    text.remove_prefix(dot + 1);
    if (text.empty()) return std::nullopt;  // "a..": the second trailing dot is an empty label
  }
  wire.push_back(0);
  return wire;
}

std::vector<std::string> cnameChain(const DnsResponse& response) {
  std::vector<std::string> chain{response.question.name};
  for (std::size_t link = 0; link < kMaxCnameLinks; ++link) {
    std::optional<std::string> next;
    for (const DnsRecord& record : response.answers) {
      if (record.name == chain.back()) {
        next = cnameTarget(record);
        if (next) break;
      }
    }
    if (!next || std::find(chain.begin(), chain.end(), *next) != chain.end()) break;
    chain.push_back(std::move(*next));
  }
  return chain;
}

template <std::size_t N>
std::vector<std::array<uint8_t, N>> addressAnswers(const DnsResponse& response, uint16_t type) {
  const std::vector<std::string> chain = cnameChain(response);
  std::vector<std::array<uint8_t, N>> out;
  for (const DnsRecord& record : response.answers) {
    if (record.type != type || record.rclass != kDnsClassIn || record.rdata.size() != N) continue;
    if (std::find(chain.begin(), chain.end(), record.name) == chain.end()) continue;
    std::array<uint8_t, N> address{};
    std::copy(record.rdata.begin(), record.rdata.end(), address.begin());
    out.push_back(address);
  }
  return out;
}

}  // namespace

std::optional<uint16_t> qtypeFromName(std::string_view name) {
  for (const QtypeEntry& entry : kQtypes) {
    if (equalsIgnoreCase(entry.name, name)) return entry.value;
  }
  // RFC 3597 section 5: "TYPE" followed by the decimal number.
  if (name.size() < 5 || name.size() > 9 || !equalsIgnoreCase(name.substr(0, 4), "TYPE")) {
    return std::nullopt;
  }
  std::string_view digits = name.substr(4);
  if (digits.size() > 1 && digits.front() == '0') return std::nullopt;
  uint32_t value = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<uint32_t>(c - '0');
  }
  if (value > 0xffff) return std::nullopt;
  return static_cast<uint16_t>(value);
}

std::string qtypeName(uint16_t qtype) {
  for (const QtypeEntry& entry : kQtypes) {
    if (entry.value == qtype) return std::string(entry.name);
  }
  return "TYPE" + std::to_string(qtype);
}

std::string_view describe(DnsParseError err) {
  switch (err) {
    case DnsParseError::kTooShort:
      return "packet is shorter than the 12-byte DNS header";
    case DnsParseError::kNotAQuery:
      return "QR bit is wrong for the direction (a response where a query was expected, or the "
             "reverse)";
    case DnsParseError::kBadOpcode:
      return "opcode is not QUERY";
    case DnsParseError::kQuestionCount:
      return "question count is not 1";
    case DnsParseError::kBadName:
      return "malformed name (reserved label type, unprintable or '.' byte in a label, or a "
             "compression pointer forward, out of bounds or into the header)";
    case DnsParseError::kNameTooLong:
      return "name is longer than 255 bytes";
    case DnsParseError::kPointerLoop:
      return "compression pointer loop";
    case DnsParseError::kTruncated:
      return "packet ends inside a name, question or record";
    case DnsParseError::kTrailingSections:
      return "query carries answer or authority records, an additional record other than one "
             "EDNS OPT, or trailing bytes";
  }
  return "unknown DNS parse error";
}

std::variant<DnsQuery, DnsParseError> parseQuery(std::span<const uint8_t> packet) {
  if (packet.size() < kDnsHeaderSize) return DnsParseError::kTooShort;
  const Header header = readHeader(packet);
  if ((header.flags & kDnsFlagQr) != 0) return DnsParseError::kNotAQuery;
  if ((header.flags & kOpcodeMask) != 0) return DnsParseError::kBadOpcode;
  if (header.qdcount != 1) return DnsParseError::kQuestionCount;
  if (header.ancount != 0 || header.nscount != 0 || header.arcount > 1) {
    return DnsParseError::kTrailingSections;
  }

  std::size_t pos = 0;
  auto question = readQuestion(packet, kDnsHeaderSize, &pos);
  if (auto* err = std::get_if<DnsParseError>(&question)) return *err;
  const std::size_t questionEnd = pos;

  if (header.arcount == 1) {
    // RFC 6891 section 6.1.2: the OPT pseudo-record is owned by the root name. Only its bounds
    // matter here; the helper does not act on EDNS options.
    auto owner = decodeName(packet, pos, /*allowPointers=*/true);
    if (auto* err = std::get_if<DnsParseError>(&owner)) return *err;
    const auto& decoded = std::get<DecodedName>(owner);
    if (!fits(packet, decoded.end, kRecordFixedSize)) return DnsParseError::kTruncated;
    const uint16_t type = read16(packet, decoded.end);
    const uint16_t rdlength = read16(packet, decoded.end + 8);
    if (type != kDnsTypeOpt || decoded.text != ".") return DnsParseError::kTrailingSections;
    pos = decoded.end + kRecordFixedSize;
    if (!fits(packet, pos, rdlength)) return DnsParseError::kTruncated;
    pos += rdlength;
  }
  // Nothing legitimate follows the declared sections; refusing extra bytes keeps them from
  // riding along to an upstream.
  if (pos != packet.size()) return DnsParseError::kTrailingSections;

  return DnsQuery{header.id, header.flags, std::move(std::get<DnsQuestion>(question)), questionEnd};
}

std::vector<uint8_t> buildErrorResponse(const DnsQuery& query, std::span<const uint8_t> packet,
                                        DnsRcode rcode) {
  // Copy the client's own question bytes only after checking that packet really is the query's
  // packet; a mismatch (a caller bug) falls back to encoding the parsed question.
  std::optional<std::vector<uint8_t>> questionBytes;
  if (auto reparsed = parseQuery(packet); auto* same = std::get_if<DnsQuery>(&reparsed)) {
    if (same->questionEnd == query.questionEnd && same->question.name == query.question.name &&
        same->question.qtype == query.question.qtype &&
        same->question.qclass == query.question.qclass) {
      questionBytes.emplace(packet.begin() + kDnsHeaderSize,
                            packet.begin() + static_cast<std::ptrdiff_t>(query.questionEnd));
    }
  }
  if (!questionBytes) {
    questionBytes = encodeName(query.question.name);
    if (questionBytes) {
      append16(*questionBytes, query.question.qtype);
      append16(*questionBytes, query.question.qclass);
    }
  }

  const uint16_t flags =
      static_cast<uint16_t>(kDnsFlagQr | (query.flags & (kDnsFlagRd | kDnsFlagCd)) | kDnsFlagRa |
                            (static_cast<uint16_t>(rcode) & kRcodeMask));
  std::vector<uint8_t> out;
  out.reserve(kDnsHeaderSize + (questionBytes ? questionBytes->size() : 0));
  append16(out, query.id);
  append16(out, flags);
  append16(out, questionBytes ? 1 : 0);
  append16(out, 0);
  append16(out, 0);
  append16(out, 0);
  if (questionBytes) out.insert(out.end(), questionBytes->begin(), questionBytes->end());
  return out;
}

std::optional<std::vector<uint8_t>> buildHeaderOnlyResponse(std::span<const uint8_t> packet,
                                                            DnsRcode rcode) {
  if (packet.size() < kDnsHeaderSize) return std::nullopt;
  const Header header = readHeader(packet);
  if ((header.flags & kDnsFlagQr) != 0) return std::nullopt;
  // RFC 1035 section 4.1.1: the opcode is copied into the response.
  const uint16_t flags =
      static_cast<uint16_t>(kDnsFlagQr | (header.flags & (kOpcodeMask | kDnsFlagRd | kDnsFlagCd)) |
                            kDnsFlagRa | (static_cast<uint16_t>(rcode) & kRcodeMask));
  std::vector<uint8_t> out;
  out.reserve(kDnsHeaderSize);
  append16(out, header.id);
  append16(out, flags);
  for (int i = 0; i < 4; ++i) append16(out, 0);
  return out;
}

std::variant<DnsResponse, DnsParseError> parseResponse(std::span<const uint8_t> packet) {
  if (packet.size() < kDnsHeaderSize) return DnsParseError::kTooShort;
  const Header header = readHeader(packet);
  if ((header.flags & kDnsFlagQr) == 0) return DnsParseError::kNotAQuery;
  if ((header.flags & kOpcodeMask) != 0) return DnsParseError::kBadOpcode;
  if (header.qdcount != 1) return DnsParseError::kQuestionCount;

  DnsResponse response{};
  response.id = header.id;
  response.flags = header.flags;
  response.rcode = static_cast<DnsRcode>(header.flags & kRcodeMask);
  response.truncated = (header.flags & kDnsFlagTc) != 0;

  std::size_t pos = 0;
  auto question = readQuestion(packet, kDnsHeaderSize, &pos);
  if (auto* err = std::get_if<DnsParseError>(&question)) return *err;
  response.question = std::move(std::get<DnsQuestion>(question));

  // With TC set the sender cut the message short on purpose (RFC 2181 section 9): keep the
  // complete records and stop at the first incomplete one instead of refusing the lot.
  const std::size_t count = std::min<std::size_t>(header.ancount, kMaxDnsAnswerRecords);
  response.answers.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    auto owner = decodeName(packet, pos, /*allowPointers=*/true);
    if (auto* err = std::get_if<DnsParseError>(&owner)) {
      if (*err == DnsParseError::kTruncated && response.truncated) break;
      return *err;
    }
    auto& name = std::get<DecodedName>(owner);
    if (!fits(packet, name.end, kRecordFixedSize)) {
      if (response.truncated) break;
      return DnsParseError::kTruncated;
    }
    DnsRecord record{std::move(name.text),
                     read16(packet, name.end),
                     read16(packet, name.end + 2),
                     read32(packet, name.end + 4),
                     {}};
    const std::size_t rdlength = read16(packet, name.end + 8);
    const std::size_t rdataStart = name.end + kRecordFixedSize;
    if (!fits(packet, rdataStart, rdlength)) {
      if (response.truncated) break;
      return DnsParseError::kTruncated;
    }
    const std::size_t rdataEnd = rdataStart + rdlength;

    if (record.type == kDnsTypeCname) {
      auto target = decodeName(packet, rdataStart, /*allowPointers=*/true);
      if (auto* err = std::get_if<DnsParseError>(&target)) return *err;
      auto& decoded = std::get<DecodedName>(target);
      if (decoded.end != rdataEnd) return DnsParseError::kBadName;
      record.rdata = std::move(decoded.wire);
    } else {
      record.rdata.assign(packet.begin() + static_cast<std::ptrdiff_t>(rdataStart),
                          packet.begin() + static_cast<std::ptrdiff_t>(rdataEnd));
    }
    response.answers.push_back(std::move(record));
    pos = rdataEnd;
  }
  return response;
}

std::optional<std::string> cnameTarget(const DnsRecord& record) {
  if (record.type != kDnsTypeCname || record.rclass != kDnsClassIn) return std::nullopt;
  auto decoded = decodeName(record.rdata, 0, /*allowPointers=*/false);
  auto* name = std::get_if<DecodedName>(&decoded);
  if (name == nullptr || name->end != record.rdata.size()) return std::nullopt;
  return std::move(name->text);
}

std::vector<std::array<uint8_t, 4>> ipv4Answers(const DnsResponse& response) {
  return addressAnswers<4>(response, kDnsTypeA);
}

std::vector<std::array<uint8_t, 16>> ipv6Answers(const DnsResponse& response) {
  return addressAnswers<16>(response, kDnsTypeAaaa);
}

uint16_t ednsUdpSize(const DnsQuery& query, std::span<const uint8_t> packet) {
  // parseQuery accepted at most one additional record, an OPT starting right after the
  // question; its owner is the root (one zero byte), then TYPE and CLASS.
  std::size_t at = query.questionEnd;
  if (packet.size() < kDnsHeaderSize || at + 5 > packet.size()) return 0;
  uint16_t arcount = uint16_t(packet[10] << 8 | packet[11]);
  if (arcount != 1 || packet[at] != 0 ||
      uint16_t(packet[at + 1] << 8 | packet[at + 2]) != kDnsTypeOpt) {
    return 0;
  }
  return uint16_t(packet[at + 3] << 8 | packet[at + 4]);
}

void setPacketId(std::span<uint8_t> packet, uint16_t id) {
  if (packet.size() < 2) return;
  packet[0] = static_cast<uint8_t>(id >> 8);
  packet[1] = static_cast<uint8_t>(id & 0xff);
}

std::vector<uint8_t> buildQuery(uint16_t id, std::string_view name, uint16_t qtype,
                                bool recursionDesired) {
  std::optional<std::vector<uint8_t>> wire = encodeName(name);
  if (!wire) return {};
  std::vector<uint8_t> out;
  out.reserve(kDnsHeaderSize + wire->size() + kQuestionFixedSize);
  append16(out, id);
  append16(out, recursionDesired ? kDnsFlagRd : 0);
  append16(out, 1);  // qdcount
  append16(out, 0);
  append16(out, 0);
  append16(out, 0);
  out.insert(out.end(), wire->begin(), wire->end());
  append16(out, qtype);
  append16(out, kDnsClassIn);
  return out;
}

}  // namespace cellos::core
