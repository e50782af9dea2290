#include "event-forwarder/nats_subject.h"

#include "core/cloudevent.h"
#include "core/digest.h"
#include "core/encoding.h"

namespace cellos::forwarder {

namespace {

std::string token(std::string text) {
  if (text.empty()) return "_";
  for (char& c : text) {
    if (c == '.' || c == '*' || c == '>' || static_cast<unsigned char>(c) <= ' ' || c == 0x7f) {
      c = '_';
    }
  }
  return text;
}

std::string afterPrefix(const nlohmann::json& event, const char* attribute,
                        const std::string& prefix) {
  auto it = event.find(attribute);
  if (it == event.end() || !it->is_string()) return "";
  const std::string& value = it->get_ref<const std::string&>();
  return value.rfind(prefix, 0) == 0 ? value.substr(prefix.size()) : value;
}

}  // namespace

std::string subjectFor(const nlohmann::json& event) {
  std::string host = afterPrefix(event, "source", "urn:cellos:host:");
  std::string type = event.value("type", "");
  std::string cell, phase;
  if (type.rfind("dev.cellos.events.log.", 0) == 0) {
    cell = "_log";
    phase = "log";
  } else {
    cell = afterPrefix(event, "subject", "urn:cellos:cell:");
    phase = core::eventFamily(type);
  }
  return "cellos.events." + token(host) + "." + token(cell) + "." + token(phase);
}

std::string checkpointSubjectFor(const std::string& note) {
  return "cellos.checkpoints." + token(note.substr(0, note.find('\n')));
}

std::string checkpointMessageId(const std::string& note) {
  return "checkpoint-" + core::hexEncode(core::sha256(note));
}

}  // namespace cellos::forwarder
