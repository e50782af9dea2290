#pragma once
// The event log's files as its writer (the broker) and its readers (the event forwarder,
// `cellos verify`) all see them: how the log's rotated files and the dead letters are named, and
// what a dead letter holds. Pure code; the file I/O is eventlog/dead_letter.h's and each
// process's own.
//
//   events.jsonl                          the log: one signed CloudEvent per line
//   events.jsonl.00000000000000001234     a rotated file, holding events up to sequence 1234
//   events.jsonl.dead-letter/             the dead letters, one JSON object per file:
//     <20-digit sequence>-<event id>.json   a signed event a sink could not take
//         {"reason": "...", "sink": "jsonl" | "nats", "event": {the signed event}}
//     unsigned-<event id>.json              an event that never got a signature
//         {"reason": "...", "sink": "signer", "event": {the unsigned event}}
//     partial-<unix micros>.json            the unterminated last line a crash left in the log
//         {"reason": "...", "sink": "jsonl", "partialLine": "<its bytes, as text>"}

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cellos::eventlog {

// "<name>.<20 digits>": the rotated file of log `name` that ends with `lastSequence`.
std::string rotatedLogName(std::string_view name, uint64_t lastSequence);
// The last sequence of `candidate` when it is a rotated file of log `name`; nullopt otherwise.
std::optional<uint64_t> rotatedLogSequence(std::string_view candidate, std::string_view name);

// "<log path>.dead-letter": the default beside a log, found again by `cellos verify`.
std::string defaultDeadLetterPath(std::string_view logPath);

// A dead letter: its file name and its content.
struct DeadLetter {
  std::string name;
  nlohmann::json record;
};

// A signed or unsigned event a sink could not take; the name follows from the event's
// `sequence` and `id` (see above; `nowMicros` names an unsigned event without an id).
DeadLetter eventDeadLetter(const nlohmann::json& event, std::string_view sink,
                           std::string_view reason, uint64_t nowMicros);
// The unterminated last line a crash left in the log.
DeadLetter partialLineDeadLetter(std::string_view bytes, uint64_t nowMicros);
// A dead letter's file content: the record as one line of JSON. Never throws: a cut-off line may
// end inside a UTF-8 sequence, so invalid UTF-8 is replaced, keeping what can be kept.
std::string deadLetterText(const nlohmann::json& record);

// The sequence a signed dead letter's file name starts with; nullopt for the other names.
std::optional<uint64_t> signedDeadLetterSequence(std::string_view name);

}  // namespace cellos::eventlog
