#include "eventlog/format.h"

#include "core/verifiability.h"

namespace cellos::eventlog {

namespace {

// Event ids become file names: keep only what cannot walk out of the directory.
std::string safeName(std::string_view text) {
  std::string out;
  for (char c : text.substr(0, 64)) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_';
    out.push_back(ok ? c : '_');
  }
  return out.empty() ? "no-id" : out;
}

}  // namespace

std::string rotatedLogName(std::string_view name, uint64_t lastSequence) {
  return std::string(name) + "." + core::formatSequence(lastSequence);
}

std::optional<uint64_t> rotatedLogSequence(std::string_view candidate, std::string_view name) {
  if (candidate.size() != name.size() + 21 || !candidate.starts_with(name) ||
      candidate[name.size()] != '.') {
    return std::nullopt;
  }
  return core::parseSequence(candidate.substr(name.size() + 1));
}

std::string defaultDeadLetterPath(std::string_view logPath) {
  return std::string(logPath) + ".dead-letter";
}

DeadLetter eventDeadLetter(const nlohmann::json& event, std::string_view sink,
                           std::string_view reason, uint64_t nowMicros) {
  std::string id = event.is_object() && event.contains("id") && event["id"].is_string()
                       ? event["id"].get<std::string>()
                       : "";
  std::string name;
  if (event.is_object() && event.contains("sequence") && event["sequence"].is_string()) {
    name = safeName(event["sequence"].get<std::string>()) + "-" + safeName(id) + ".json";
  } else {
    name = "unsigned-" + safeName(id.empty() ? std::to_string(nowMicros) : id) + ".json";
  }
  return {name, {{"reason", reason}, {"sink", sink}, {"event", event}}};
}

DeadLetter partialLineDeadLetter(std::string_view bytes, uint64_t nowMicros) {
  return {"partial-" + std::to_string(nowMicros) + ".json",
          {{"reason",
            "an unterminated last line in the event log: a write cut short by a crash; the event "
            "it held is missing from the log (the log declares the gap)"},
           {"sink", "jsonl"},
           {"partialLine", bytes}}};
}

std::string deadLetterText(const nlohmann::json& record) {
  return record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

std::optional<uint64_t> signedDeadLetterSequence(std::string_view name) {
  if (name.size() <= 21 || name[20] != '-') return std::nullopt;
  return core::parseSequence(name.substr(0, 20));
}

}  // namespace cellos::eventlog
