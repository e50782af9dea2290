#pragma once
// Where an event goes in NATS: `cellos.events.<host>.<cellId>.<phase>` (design/architecture.md,
// Fleet), in the stream CELLOS_EVENTS, de-duplicated by `Nats-Msg-Id` = the event's id. Where a
// signed checkpoint goes: `cellos.checkpoints.<origin>`, in the stream CELLOS_CHECKPOINTS,
// de-duplicated by `Nats-Msg-Id` = checkpoint-<hex SHA-256 of the note>.

#include <nlohmann/json.hpp>

#include <string>

namespace cellos::forwarder {

inline constexpr const char* kStreamName = "CELLOS_EVENTS";
inline constexpr const char* kStreamSubjects = "cellos.events.>";
inline constexpr const char* kCheckpointStreamName = "CELLOS_CHECKPOINTS";
inline constexpr const char* kCheckpointStreamSubjects = "cellos.checkpoints.>";

// The subject of a signed event. <host> comes from source (urn:cellos:host:<host>), <cellId>
// from subject (urn:cellos:cell:<id>; "_log" for the log's own events), <phase> from type
// (dev.cellos.events.cell.<phase>.v<N>.<verb>; "log" for dev.cellos.events.log.*). A token that
// is empty or holds a character NATS gives meaning to ('.', '*', '>', whitespace) has that
// character replaced by '_', so an event can never address another subject.
std::string subjectFor(const nlohmann::json& event);

// The subject of a checkpoint note: its origin (the note's first line: the tree it is a head of,
// cellos/<first keyid>/<first sequence> by default) as one token, '.', '*', '>' and whitespace
// replaced by '_' as above. Per origin rather than per host: the origin names the tree, and two
// trees on one host (a new state directory) must not read as one.
std::string checkpointSubjectFor(const std::string& note);

// Its message id: "checkpoint-" and the hex SHA-256 of the note's bytes. By digest, not by
// (origin, size): two different notes for one tree size are a fork, and the stream must keep
// both rather than drop the second as a duplicate.
std::string checkpointMessageId(const std::string& note);

}  // namespace cellos::forwarder
