#include "core/verifiability.h"

#include "core/digest.h"
#include "core/encoding.h"
#include "core/jcs.h"

#include <openssl/crypto.h>

#include <array>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <set>
#include <stdexcept>

namespace cellos::core {
namespace {

constexpr size_t kDigestSize = 32;

// Attribute names whose values CORE_DIGEST already covers (plus the material itself): none of
// them may appear in signedextattrs.
constexpr std::array<std::string_view, 11> kReservedNames = {
    "id",      "source", "specversion", "type",        "datacontenttype", "dataschema",
    "subject", "time",   "data",        "data_base64", "dssematerial"};

// The value of a String-typed attribute, nullopt if absent; throws if present with another type.
std::optional<std::string> stringAttribute(const nlohmann::json& event, std::string_view name) {
  auto it = event.find(name);
  if (it == event.end()) return std::nullopt;
  if (!it->is_string()) {
    throw std::invalid_argument("attribute \"" + std::string(name) + "\" must be a string");
  }
  return it->get<std::string>();
}

// Parses exactly `count` ASCII digits at text[pos..], advancing pos.
std::optional<int> digits(std::string_view text, size_t& pos, size_t count) {
  if (pos + count > text.size()) return std::nullopt;
  int value = 0;
  for (size_t i = 0; i < count; ++i) {
    char c = text[pos + i];
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  pos += count;
  return value;
}

bool expect(std::string_view text, size_t& pos, std::string_view options) {
  if (pos >= text.size() || options.find(text[pos]) == std::string_view::npos) return false;
  ++pos;
  return true;
}

// RFC 3339 date-time -> "YYYY-MM-DDTHH:MM:SSZ" in UTC, fraction truncated (events.md: the time
// is signed at second precision, so re-serialisers that change the fraction or the offset do not
// break verification). The fraction is dropped before the offset is applied; offsets are whole
// minutes, so this equals flooring the instant.
std::string normaliseTime(std::string_view text) {
  auto invalid = [&]() -> std::invalid_argument {
    return std::invalid_argument("attribute \"time\" is not an RFC 3339 timestamp: " +
                                 quotedForMessage(text));
  };
  using namespace std::chrono;
  size_t pos = 0;
  auto year = digits(text, pos, 4);
  if (!year || !expect(text, pos, "-")) throw invalid();
  auto month = digits(text, pos, 2);
  if (!month || !expect(text, pos, "-")) throw invalid();
  auto day = digits(text, pos, 2);
  if (!day || !expect(text, pos, "Tt")) throw invalid();
  auto hour = digits(text, pos, 2);
  if (!hour || !expect(text, pos, ":")) throw invalid();
  auto minute = digits(text, pos, 2);
  if (!minute || !expect(text, pos, ":")) throw invalid();
  auto second = digits(text, pos, 2);
  if (!second) throw invalid();
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    size_t start = pos;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') ++pos;
    if (pos == start) throw invalid();
  }
  int offsetMinutes = 0;
  if (pos == text.size()) {
    // No offset at all: the Verifiability extension's canonical Timestamp rule says such a value
    // is UTC (protobuf-format producers carry no zone), so it must verify, not be refused.
    offsetMinutes = 0;
  } else if (expect(text, pos, "Zz")) {
    offsetMinutes = 0;
  } else if (pos < text.size() && (text[pos] == '+' || text[pos] == '-')) {
    int sign = text[pos] == '-' ? -1 : 1;
    ++pos;
    auto offsetHour = digits(text, pos, 2);
    if (!offsetHour || !expect(text, pos, ":")) throw invalid();
    auto offsetMinute = digits(text, pos, 2);
    if (!offsetMinute || *offsetHour > 23 || *offsetMinute > 59) throw invalid();
    offsetMinutes = sign * (*offsetHour * 60 + *offsetMinute);
  } else {
    throw invalid();
  }
  if (pos != text.size()) throw invalid();

  year_month_day date{std::chrono::year{*year}, std::chrono::month{static_cast<unsigned>(*month)},
                      std::chrono::day{static_cast<unsigned>(*day)}};
  if (!date.ok() || *hour > 23 || *minute > 59 || *second > 59) throw invalid();

  sys_seconds instant =
      sys_days{date} + hours{*hour} + minutes{*minute} + seconds{*second} - minutes{offsetMinutes};
  sys_days utcDay = floor<days>(instant);
  year_month_day utcDate{utcDay};
  hh_mm_ss<seconds> utcTime{instant - utcDay};
  int utcYear = static_cast<int>(utcDate.year());
  if (utcYear < 0 || utcYear > 9999) throw invalid();

  char out[32];
  std::snprintf(out, sizeof(out), "%04d-%02u-%02uT%02d:%02d:%02dZ", utcYear,
                static_cast<unsigned>(utcDate.month()), static_cast<unsigned>(utcDate.day()),
                static_cast<int>(utcTime.hours().count()),
                static_cast<int>(utcTime.minutes().count()),
                static_cast<int>(utcTime.seconds().count()));
  return out;
}

// True if `datacontenttype` (absent: the JSON format's default, application/json) names JSON:
// application/json or any "+json" structured-syntax suffix, parameters and case ignored.
bool isJsonContentType(const nlohmann::json& event) {
  auto it = event.find("datacontenttype");
  if (it == event.end() || !it->is_string()) return true;
  std::string type = it->get<std::string>();
  type = type.substr(0, type.find(';'));
  while (!type.empty() && (type.back() == ' ' || type.back() == '\t')) type.pop_back();
  for (char& c : type) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
  return type == "application/json" || (type.size() > 5 && type.ends_with("+json"));
}

// The bytes CORE_DIGEST covers for the event's payload.
std::string dataBytes(const nlohmann::json& event) {
  auto data = event.find("data");
  auto dataBase64 = event.find("data_base64");
  if (data != event.end() && dataBase64 != event.end()) {
    throw std::invalid_argument("event has both \"data\" and \"data_base64\"");
  }
  // CloudEvents JSON format, 3.1: with a non-JSON datacontenttype a string `data` is the
  // payload itself (e.g. text/plain), so its raw bytes are the string's UTF-8, not a JSON text.
  if (data != event.end() && data->is_string() && !isJsonContentType(event)) {
    return data->get<std::string>();
  }
  if (data != event.end()) return canonicalJsonNested(*data, 1);  // inside the event object
  if (dataBase64 != event.end()) {
    if (!dataBase64->is_string()) {
      throw std::invalid_argument("attribute \"data_base64\" must be a string");
    }
    auto decoded = base64Decode(dataBase64->get_ref<const std::string&>());
    if (!decoded) throw std::invalid_argument("attribute \"data_base64\" is not valid base64");
    return *decoded;
  }
  return "";
}

// The CloudEvents canonical string form of an extension attribute value.
std::string extensionValue(const nlohmann::json& value, std::string_view name) {
  switch (value.type()) {
    case nlohmann::json::value_t::string:
      return value.get<std::string>();
    case nlohmann::json::value_t::boolean:
      return value.get<bool>() ? "true" : "false";
    case nlohmann::json::value_t::number_integer:
      return std::to_string(value.get<int64_t>());
    case nlohmann::json::value_t::number_unsigned:
      return std::to_string(value.get<uint64_t>());
    default:
      throw std::invalid_argument("extension attribute " + quotedForMessage(name) +
                                  " has no canonical string form");
  }
}

bool equalDigests(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// Looks up a required string member of a JSON object.
const std::string* stringMember(const nlohmann::json& object, std::string_view name) {
  auto it = object.find(name);
  if (it == object.end() || !it->is_string()) return nullptr;
  return &it->get_ref<const std::string&>();
}

}  // namespace

std::string coreDigest(const nlohmann::json& event) {
  if (!event.is_object()) throw std::invalid_argument("event is not a JSON object");
  std::string concatenated;
  for (std::string_view name :
       {"id", "source", "specversion", "type", "datacontenttype", "dataschema", "subject"}) {
    concatenated += sha256(stringAttribute(event, name).value_or(""));
  }
  auto time = stringAttribute(event, "time");
  concatenated += sha256(time ? normaliseTime(*time) : "");
  concatenated += sha256(dataBytes(event));
  return sha256(concatenated);
}

std::string extDigest(const nlohmann::json& event, const std::vector<std::string>& signedExtAttrs) {
  if (!event.is_object()) throw std::invalid_argument("event is not a JSON object");
  std::string concatenated;
  for (const auto& name : signedExtAttrs) {
    auto it = event.find(name);
    concatenated += sha256(it == event.end() ? "" : extensionValue(*it, name));
  }
  return sha256(concatenated);
}

std::string pae(std::string_view payloadType, std::string_view payload) {
  std::string out = "DSSEv1 ";
  out += std::to_string(payloadType.size());
  out += ' ';
  out += payloadType;
  out += ' ';
  out += std::to_string(payload.size());
  out += ' ';
  out += payload;
  return out;
}

std::optional<std::string> checkSignedExtAttrs(const std::vector<std::string>& names) {
  std::set<std::string_view> seen;
  for (const auto& name : names) {
    if (name.empty()) return "signedextattrs has an empty name";
    if (!seen.insert(name).second) {
      return "signedextattrs names " + quotedForMessage(name) + " twice";
    }
    if (name == "dssematerial") return std::string("signedextattrs names dssematerial");
    for (auto reserved : kReservedNames) {
      if (name == reserved) {
        return "signedextattrs names a core attribute (" + quotedForMessage(name) + ")";
      }
    }
  }
  return std::nullopt;
}

void signEvent(nlohmann::json& event, const SigningKey& key,
               const std::vector<std::string>& signedExtAttrs) {
  if (!event.is_object()) throw std::invalid_argument("signEvent: event is not a JSON object");
  if (auto problem = checkSignedExtAttrs(signedExtAttrs)) {
    throw std::invalid_argument("signEvent: " + *problem);
  }
  for (const auto& name : signedExtAttrs) {
    if (!event.contains(name)) {
      throw std::invalid_argument("signEvent: event lacks signed attribute " +
                                  quotedForMessage(name));
    }
  }
  // Both texts are written out in their RFC 8785 form directly (members in code-point order;
  // every value but the attribute names is base64 or a fixed ASCII string, which JCS leaves as
  // it is): building them as JSON objects first cost more than the digests (bench/signer).
  std::string payload = "{\"core\":\"" + base64Encode(coreDigest(event)) + "\",\"ext\":\"" +
                        base64Encode(extDigest(event, signedExtAttrs)) +
                        "\",\"signedextattrs\":" + canonicalJson(nlohmann::json(signedExtAttrs)) +
                        "}";
  std::string signature = key.sign(pae(kDssePayloadType, payload));
  std::string envelope = "{\"payload\":\"" + base64Encode(payload) + "\",\"payloadType\":\"" +
                         std::string(kDssePayloadType) + "\",\"signatures\":[{\"keyid\":" +
                         canonicalJson(nlohmann::json(key.keyId())) + ",\"sig\":\"" +
                         base64Encode(signature) + "\"}]}";
  event["dssematerial"] = base64Encode(envelope);
}

std::optional<std::string> verifyEventSignature(const nlohmann::json& event, const Keyset& keys) {
  return verifyEventSignature(event, keys, nullptr);
}

std::optional<std::string> verifyEventSignature(const nlohmann::json& event, const Keyset& keys,
                                                VerifiedMaterial* verified) {
  if (!event.is_object()) return "event is not a JSON object";
  auto materialAttribute = event.find("dssematerial");
  if (materialAttribute == event.end()) return "missing dssematerial";
  if (!materialAttribute->is_string()) return "dssematerial is not a string";
  const auto& materialText = materialAttribute->get_ref<const std::string&>();
  if (materialText.empty()) return "empty dssematerial";

  // The DSSE envelope.
  auto envelopeText = base64Decode(materialText);
  if (!envelopeText) return "bad base64 in dssematerial";
  std::string parseError;
  auto envelope = parseStrictJson(*envelopeText, &parseError);
  if (!envelope) return "bad UTF-8/JSON in dssematerial envelope: " + parseError;
  if (!envelope->is_object()) return "dssematerial envelope is not a JSON object";
  // Unknown members of the envelope, a signature entry and the material are ignored, as the
  // extension requires (a later version may add some); only the known ones are trusted.
  const std::string* payloadType = stringMember(*envelope, "payloadType");
  const std::string* payloadText = stringMember(*envelope, "payload");
  if (!payloadType || !payloadText) return "dssematerial envelope lacks payloadType or payload";
  if (*payloadType != kDssePayloadType) return "wrong payloadType";
  auto payload = base64Decode(*payloadText);
  if (!payload) return "bad base64 in envelope payload";

  // DSSE protocol: verify a signature over PAE before trusting anything in the payload.
  auto signatures = envelope->find("signatures");
  if (signatures == envelope->end() || !signatures->is_array() || signatures->empty()) {
    return "dssematerial envelope has no signatures";
  }
  const std::string message = pae(*payloadType, *payload);
  std::optional<std::string> firstUnknownKeyid;
  bool anyKnownKey = false;
  std::optional<std::string> signedBy;
  for (const auto& entry : *signatures) {
    if (!entry.is_object()) {
      return "malformed signature entry in dssematerial";
    }
    const std::string* keyid = stringMember(entry, "keyid");
    const std::string* sigText = stringMember(entry, "sig");
    if (!keyid || !sigText) return "malformed signature entry in dssematerial";
    auto sig = base64Decode(*sigText);
    if (!sig) return "bad base64 in signature";
    auto key = keys.find(*keyid);
    if (key == keys.end()) {
      if (!firstUnknownKeyid) firstUnknownKeyid = *keyid;
      continue;
    }
    anyKnownKey = true;
    if (key->second.verify(message, *sig)) {
      signedBy = *keyid;
      break;
    }
  }
  if (!anyKnownKey) return "unknown keyid " + quotedForMessage(firstUnknownKeyid.value_or(""));
  if (!signedBy) return "bad signature";

  // The verification material.
  auto material = parseStrictJson(*payload, &parseError);
  if (!material) return "bad UTF-8/JSON in verification material: " + parseError;
  if (!material->is_object()) return "verification material is not a JSON object";
  const bool hasExt = material->contains("ext");
  const bool hasNames = material->contains("signedextattrs");
  if (hasExt && !hasNames) return "ext without signedextattrs";
  if (hasNames && !hasExt) return "signedextattrs without ext";

  const std::string* coreText = stringMember(*material, "core");
  if (!coreText) return "verification material lacks core";
  auto signedCore = base64Decode(*coreText);
  if (!signedCore) return "bad base64 in core digest";
  if (signedCore->size() != kDigestSize) return "core digest is not 32 bytes";

  std::vector<std::string> names;
  std::optional<std::string> signedExt;
  if (hasExt) {
    const std::string* extText = stringMember(*material, "ext");
    if (!extText) return "ext is not a string";
    signedExt = base64Decode(*extText);
    if (!signedExt) return "bad base64 in ext digest";
    if (signedExt->size() != kDigestSize) return "ext digest is not 32 bytes";
    const auto& list = (*material)["signedextattrs"];
    if (!list.is_array()) return "signedextattrs is not an array";
    for (const auto& name : list) {
      if (!name.is_string()) return "signedextattrs holds a non-string";
      names.push_back(name.get<std::string>());
    }
    if (auto problem = checkSignedExtAttrs(names)) return *problem;
  }

  // Recompute from the event as received.
  try {
    if (!equalDigests(coreDigest(event), *signedCore)) return "core digest mismatch";
    if (signedExt && !equalDigests(extDigest(event, names), *signedExt)) {
      return "ext digest mismatch";
    }
  } catch (const std::invalid_argument& problem) {
    return std::string("invalid event: ") + problem.what();
  }

  if (verified) {
    verified->keyId = *signedBy;
    verified->signedExtAttrs = std::move(names);
  }
  return std::nullopt;
}

std::string formatSequence(uint64_t n) {
  char out[24];
  std::snprintf(out, sizeof(out), "%020llu", static_cast<unsigned long long>(n));
  return out;
}

std::optional<uint64_t> parseSequence(std::string_view text) {
  if (text.size() != 20) return std::nullopt;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  uint64_t value = 0;
  auto result = std::from_chars(text.data(), text.data() + text.size(), value);
  if (result.ec != std::errc() || result.ptr != text.data() + text.size()) return std::nullopt;
  return value;
}

std::string chainLink(std::string_view dssematerialValue) {
  return base64Encode(sha256(dssematerialValue));
}

std::string genesisLink() {
  return base64Encode(std::string(kDigestSize, '\0'));
}

}  // namespace cellos::core
