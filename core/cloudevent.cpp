#include "core/cloudevent.h"

#include "core/clock.h"
#include "core/uuid.h"

namespace cellos::core {

std::string eventType(std::string_view family, int version, std::string_view verb) {
  return std::string(kEventTypePrefix) + std::string(family) + ".v" + std::to_string(version) +
         "." + std::string(verb);
}

nlohmann::json makeCellEvent(const CellEventContext& context, const std::string& type,
                             nlohmann::json fields) {
  if (!fields.is_object()) fields = nlohmann::json::object();
  fields["cellId"] = context.cellId;
  fields["specId"] = context.cellId;
  fields["runId"] = context.runId;
  if (context.correlationId) fields["correlationId"] = *context.correlationId;
  if (context.startedEventId) {
    fields["provenance"] = {{"parent", *context.startedEventId},
                            {"parentType", context.startedEventType}};
  }
  return nlohmann::json{
      {"specversion", "1.0"},
      {"id", newUuidV7()},
      {"source", "urn:cellos:host:" + context.hostId},
      {"type", type},
      {"subject", "urn:cellos:cell:" + context.cellId},
      {"time", formatRfc3339Micros(unixMicrosNow())},
      {"datacontenttype", "application/json"},
      {"data", std::move(fields)},
  };
}

std::string eventFamily(std::string_view type) {
  if (type.substr(0, kEventTypePrefix.size()) != kEventTypePrefix) return "";
  auto rest = type.substr(kEventTypePrefix.size());
  return std::string(rest.substr(0, rest.find('.')));
}

}  // namespace cellos::core
