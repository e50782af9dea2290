#pragma once
// Building CloudEvents 1.0 (structured JSON mode) the way events.md describes: every event of
// a cell carries the common data fields; the signer later adds sequence, cellosprev and
// dssematerial.

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace cellos::core {

inline constexpr std::string_view kEventTypePrefix = "dev.cellos.events.cell.";

// The identity every event of one run shares.
struct CellEventContext {
  std::string hostId;  // source = urn:cellos:host:<hostId>
  std::string cellId;  // subject = urn:cellos:cell:<cellId>; data.cellId, data.specId
  std::string runId;
  std::optional<std::string> correlationId;
  // Set once lifecycle.started has been emitted: later events name it as their parent.
  std::optional<std::string> startedEventId;
  std::string startedEventType;
};

// Full type string for a catalogue entry, e.g. eventType("lifecycle", 1, "started") ->
// "dev.cellos.events.cell.lifecycle.v1.started".
std::string eventType(std::string_view family, int version, std::string_view verb);

// A new unsigned event: id (UUIDv7), source, type, subject, time (now, microseconds),
// datacontenttype, and `data` = `fields` plus the common fields (cellId, specId, runId,
// correlationId when known, provenance once started).
nlohmann::json makeCellEvent(const CellEventContext& context, const std::string& type,
                             nlohmann::json fields);

// The phase segment of a type string ("lifecycle.v1.started" -> "lifecycle"), for NATS subjects.
std::string eventFamily(std::string_view type);

}  // namespace cellos::core
