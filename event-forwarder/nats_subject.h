#pragma once
// Where an event goes in NATS: `cellos.events.<host>.<cellId>.<phase>` (design/architecture.md,
// Fleet), in the stream CELLOS_EVENTS, de-duplicated by `Nats-Msg-Id` = the event's id.

#include <nlohmann/json.hpp>

#include <string>

namespace cellos::forwarder {

inline constexpr const char* kStreamName = "CELLOS_EVENTS";
inline constexpr const char* kStreamSubjects = "cellos.events.>";

// The subject of a signed event. <host> comes from source (urn:cellos:host:<host>), <cellId>
// from subject (urn:cellos:cell:<id>; "_log" for the log's own events), <phase> from type
// (dev.cellos.events.cell.<phase>.v<N>.<verb>; "log" for dev.cellos.events.log.*). A token that
// is empty or holds a character NATS gives meaning to ('.', '*', '>', whitespace) has that
// character replaced by '_', so an event can never address another subject.
std::string subjectFor(const nlohmann::json& event);

}  // namespace cellos::forwarder
