#pragma once
// DNS wire format (RFC 1035 section 4) for the DNS helper: parse the queries a cell sends, build
// the answers the helper gives back, parse what an upstream resolver returns. The bytes come
// from a hostile workload (or an upstream it may influence), so every read is bounds-checked,
// name decoding is iterative with capped work, and nothing here does I/O.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace cellos::core {

// Response codes the helper sends (RFC 1035 section 4.1.1). A parsed upstream response may carry
// any 4-bit value, so a DnsRcode read from the wire can hold a value not named here.
enum class DnsRcode : uint8_t {
  kNoError = 0,
  kFormErr = 1,
  kServFail = 2,
  kNxDomain = 3,
  kNotImp = 4,
  kRefused = 5
};

// Fixed sizes and caps. A name is at most 255 bytes on the wire (RFC 1035 section 3.1), which
// also bounds it to 127 labels; following more than kMaxDnsPointerJumps compression pointers for
// one name is treated as a loop.
inline constexpr std::size_t kDnsHeaderSize = 12;
inline constexpr std::size_t kMaxDnsWireNameLength = 255;
inline constexpr std::size_t kMaxDnsPointerJumps = 127;
// parseResponse parses at most this many answer records and ignores the rest.
inline constexpr std::size_t kMaxDnsAnswerRecords = 256;

// Record types by number.
inline constexpr uint16_t kDnsTypeA = 1;
inline constexpr uint16_t kDnsTypeCname = 5;
inline constexpr uint16_t kDnsTypeAaaa = 28;
inline constexpr uint16_t kDnsTypeOpt = 41;
inline constexpr uint16_t kDnsClassIn = 1;

// Header flag bits (second 16-bit word of the header).
inline constexpr uint16_t kDnsFlagQr = 0x8000;
inline constexpr uint16_t kDnsFlagTc = 0x0200;
inline constexpr uint16_t kDnsFlagRd = 0x0100;
inline constexpr uint16_t kDnsFlagRa = 0x0080;
inline constexpr uint16_t kDnsFlagCd = 0x0010;

// Maps a query type mnemonic to its number: A 1, NS 2, CNAME 5, SOA 6, PTR 12, MX 15, TXT 16,
// AAAA 28, SRV 33, SVCB 64, HTTPS 65, ANY 255, CAA 257, and the RFC 3597 form "TYPE<n>"
// (n decimal 0..65535, no leading zeros). ASCII case is ignored. nullopt for anything else.
std::optional<uint16_t> qtypeFromName(std::string_view name);

// The mnemonic for a type number (upper case, as listed for qtypeFromName); "TYPE<n>" for a
// number without one. qtypeFromName(qtypeName(t)) == t for every t.
std::string qtypeName(uint16_t qtype);

// One question. name is lower-case text without a trailing dot, "." for the root.
struct DnsQuestion {
  std::string name;
  uint16_t qtype;
  uint16_t qclass;
};

// A parsed client query. flags is the raw second header word; questionEnd is the offset just
// past the question section in the packet it came from.
struct DnsQuery {
  uint16_t id;
  uint16_t flags;
  DnsQuestion question;
  std::size_t questionEnd;
};

// Why a packet was refused.
enum class DnsParseError {
  kTooShort,          // shorter than the 12-byte header
  kNotAQuery,         // QR bit wrong for the direction: set in a query, clear in a response
  kBadOpcode,         // opcode is not QUERY (0)
  kQuestionCount,     // qdcount != 1
  kBadName,           // reserved label type, label byte not representable as text, pointer
                      // forward / out of bounds / into the header
  kNameTooLong,       // more than 255 bytes on the wire
  kPointerLoop,       // pointer back into the labels it came from, or too many pointers
  kTruncated,         // the packet ends inside a name, question or record
  kTrailingSections,  // a query with answer/authority records, an additional record other than
                      // one OPT, or bytes after its last section
};

// A short, fixed, human description of err (no packet data in it).
std::string_view describe(DnsParseError err);

// Parses a client query (what a cell sends). Accepts exactly one question, opcode QUERY, QR=0;
// ancount and nscount must be 0; arcount may be 0 or 1, and that one record must be an EDNS OPT
// (RFC 6891) lying within the packet; no byte may follow it (or the question when arcount is 0).
// Names: each label byte must be printable ASCII (0x21..0x7e) other than '.', because the helper
// decides on the text form and a label containing '.' or a space would make two different wire
// names look alike; A-Z is lower-cased. A compression pointer must point backwards, past the
// header and not into the labels already read for this name. The question is the first name in
// a query, so in practice a compressed question name is always refused (kPointerLoop, kBadName).
std::variant<DnsQuery, DnsParseError> parseQuery(std::span<const uint8_t> packet);

// The UDP payload size a client advertised in its EDNS OPT record (RFC 6891, the record's CLASS
// field), or 0 when its query has none. packet must be the one query was parsed from.
uint16_t ednsUdpSize(const DnsQuery& query, std::span<const uint8_t> packet);

// Builds a response to query: same id, RD and CD bits echoed, QR=1, RA=1, opcode QUERY, the
// given rcode, qdcount 1 and no other records. The question is copied byte for byte from packet
// (so a client's 0x20 case randomisation survives) when packet is the one query was parsed
// from; otherwise it is encoded from query.question.
std::vector<uint8_t> buildErrorResponse(const DnsQuery& query, std::span<const uint8_t> packet,
                                        DnsRcode rcode);

// For a packet parseQuery refused: a header-only response (qdcount 0; a FORMERR or NOTIMP need
// not repeat a question that could not be read) echoing the id, opcode (RFC 1035 section 4.1.1),
// RD and CD bits, with RA and the given rcode. nullopt when the packet is shorter than the
// header or has QR set (never answer a response: two responders could bounce it forever).
std::optional<std::vector<uint8_t>> buildHeaderOnlyResponse(std::span<const uint8_t> packet,
                                                            DnsRcode rcode);

// One resource record from an answer section. name is lower-case text as in DnsQuestion. rdata
// is the raw record data, except for CNAME, where it is the target name expanded to uncompressed,
// lower-cased wire form (other types keep any compression pointers, meaningless without the
// packet; the helper never looks inside them).
struct DnsRecord {
  std::string name;
  uint16_t type;
  uint16_t rclass;
  uint32_t ttl;
  std::vector<uint8_t> rdata;
};

// A parsed upstream response. rcode is the 4-bit header value; truncated is the TC bit.
struct DnsResponse {
  uint16_t id;
  uint16_t flags;
  DnsRcode rcode;
  bool truncated;
  DnsQuestion question;
  std::vector<DnsRecord> answers;
};

// Parses an upstream response: QR=1 (else kNotAQuery), opcode QUERY, exactly one question, then
// at most kMaxDnsAnswerRecords answer records (any beyond are not read). Names follow parseQuery's
// rules; pointers may reach any earlier name. A record running past the end is kTruncated,
// except when TC is set, where parsing stops quietly at the first incomplete record. Authority
// and additional sections are not read.
std::variant<DnsResponse, DnsParseError> parseResponse(std::span<const uint8_t> packet);

// The target of a CNAME record as lower-case text; nullopt when the record is not a class-IN
// CNAME or its rdata is not an uncompressed name (parseResponse always stores one).
std::optional<std::string> cnameTarget(const DnsRecord& record);

// Addresses answering the question: class-IN A (4-byte rdata) / AAAA (16-byte rdata) records
// whose owner is the question name or a name reached from it through the answers' CNAME chain
// (at most 16 links), in answer order. Records for any other name are ignored, so an upstream
// cannot slip in an address for a name that was not asked about.
std::vector<std::array<uint8_t, 4>> ipv4Answers(const DnsResponse& response);
std::vector<std::array<uint8_t, 16>> ipv6Answers(const DnsResponse& response);

// Rewrites the 16-bit id of a packet in place (the forwarder maps ids). A packet shorter than
// two bytes is left unchanged.
void setPacketId(std::span<uint8_t> packet, uint16_t id);

// Builds a query packet: one question for name (text; one trailing dot allowed; "." or "" is
// the root) of class IN, RD as given, no EDNS. Returns an empty vector when name cannot be
// encoded as parseQuery would accept it: an empty label, a label over 63 bytes, over 253
// characters, or a byte outside 0x21..0x7e. Case is kept as given.
std::vector<uint8_t> buildQuery(uint16_t id, std::string_view name, uint16_t qtype,
                                bool recursionDesired = true);

}  // namespace cellos::core
