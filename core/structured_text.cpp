#include "core/structured_text.h"

#include "core/jcs.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/exceptions.h>
#include <yaml-cpp/mark.h>
#include <yaml-cpp/parser.h>

#include <algorithm>
#include <sstream>
#include <unordered_set>

namespace cellos::core {

namespace {

using Tree = StructuredTree;

std::string q(std::string_view text) { return quotedForMessage(text); }

bool isDigit(char c) { return c >= '0' && c <= '9'; }

bool isIdentifier(std::string_view key) {
  if (key.empty()) return false;
  for (size_t i = 0; i < key.size(); ++i) {
    char c = key[i];
    bool letter = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
    if (!letter && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}


// Screening the raw bytes before any parser sees them

// Length of the UTF-8 sequence at `text[i]`, or 0 if it is not a well-formed one (RFC 3629: no
// overlong forms, no surrogates, nothing above U+10FFFF).
size_t utf8SequenceLength(std::string_view text, size_t i) {
  auto at = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  unsigned char lead = at(i);
  if (lead < 0x80) return 1;
  size_t length = 0;
  unsigned char min2 = 0x80, max2 = 0xbf;
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3;
    if (lead == 0xe0) min2 = 0xa0;
    if (lead == 0xed) max2 = 0x9f;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4;
    if (lead == 0xf0) min2 = 0x90;
    if (lead == 0xf4) max2 = 0x8f;
  } else {
    return 0;
  }
  if (i + length > text.size()) return 0;
  if (at(i + 1) < min2 || at(i + 1) > max2) return 0;
  for (size_t k = 2; k < length; ++k) {
    if (at(i + k) < 0x80 || at(i + k) > 0xbf) return 0;
  }
  return length;
}

// Refuses input no parser should see: invalid UTF-8 (yaml-cpp passes it through into strings),
// and raw control characters, which neither JSON nor YAML allows outside escapes and which
// yaml-cpp's reader does not reliably reject (a NUL can end its input early).
std::optional<std::string> screenBytes(std::string_view bytes) {
  if (size_t bad = firstInvalidUtf8(bytes); bad != std::string_view::npos) {
    return "invalid UTF-8 at " + lineColumn(bytes, bad);
  }
  for (size_t i = 0; i < bytes.size(); ++i) {
    auto byte = static_cast<unsigned char>(bytes[i]);
    if (byte < 0x20 && byte != '\t' && byte != '\n' && byte != '\r') {
      static constexpr char kHex[] = "0123456789ABCDEF";
      std::string codePoint = "U+00";
      codePoint.push_back(kHex[byte >> 4]);
      codePoint.push_back(kHex[byte & 0xf]);
      return "control character " + codePoint + " at " + lineColumn(bytes, i);
    }
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Building the tree (shared by the JSON and YAML readers)

// Assembles a Tree from parser events, recording duplicate and non-string keys as violations
// (both formats allow the first and nlohmann keeps the last duplicate silently; a document whose
// meaning depends on which parser reads it is refused instead).
class TreeBuilder {
 public:
  TreeBuilder(std::vector<Violation>& violations, NumberTexts& numberTexts, size_t maxDepth)
      : violations_(violations), numberTexts_(numberTexts), maxDepth_(maxDepth) {}

  // True when the next value completes a key, not a member value (YAML keys are nodes).
  bool expectingKey() const {
    return !stack_.empty() && stack_.back().node.is_object() && !stack_.back().hasKey;
  }

  // Starts an object or array; false when that would nest deeper than the limit.
  bool open(Tree container) {
    if (stack_.size() >= maxDepth_) return false;
    Frame frame;
    frame.node = std::move(container);
    stack_.push_back(std::move(frame));
    return true;
  }

  // Ends the innermost object or array and adds it to its parent.
  void close() {
    Tree node = std::move(stack_.back().node);
    stack_.pop_back();
    add(std::move(node));
  }

  // A member name (JSON's key event, or a YAML string key).
  void key(std::string name) {
    Frame& top = stack_.back();
    if (!top.seen.insert(name).second) {
      violations_.push_back({pathTo(stack_.size() - 1), "duplicate key " + q(name)});
      top.dropValue = true;
    }
    top.key = std::move(name);
    top.hasKey = true;
  }

  // A complete value. `numberText` is the source spelling of a non-integer number.
  void add(Tree value, std::string_view numberText = {}) {
    if (stack_.empty()) {
      root_ = std::move(value);
      return;
    }
    if (expectingKey()) {
      keyFromNode(value);
      return;
    }
    if (!numberText.empty()) numberTexts_.emplace(pathTo(stack_.size()), std::string(numberText));
    Frame& top = stack_.back();
    if (top.node.is_array()) {
      top.node.push_back(std::move(value));
      return;
    }
    // ordered_map::emplace searches linearly for an existing key; `seen` already answered that.
    if (!top.dropValue) {
      top.node.get_ref<Tree::object_t&>().emplace_back(std::move(top.key), std::move(value));
    }
    top.key.clear();
    top.hasKey = false;
    top.dropValue = false;
  }

  Tree takeRoot() { return std::move(root_); }

 private:
  struct Frame {
    Tree node;
    std::string key;
    bool hasKey = false;
    bool dropValue = false;
    std::unordered_set<std::string> seen;
  };

  void keyFromNode(const Tree& node) {
    if (node.is_string()) {
      key(node.get<std::string>());
      return;
    }
    std::string got = typeName(node);
    if (node.is_primitive()) got += " " + node.dump();
    violations_.push_back({pathTo(stack_.size() - 1), "expected a string key, got " + got});
    Frame& top = stack_.back();
    top.hasKey = true;
    top.dropValue = true;
  }

  // Path of the node of frame `depth` (0 = root); pathTo(stack_.size()) is the next value's.
  std::string pathTo(size_t depth) const {
    std::string path = "$";
    for (size_t i = 0; i < depth; ++i) {
      const Frame& frame = stack_[i];
      path =
          frame.node.is_object() ? memberPath(path, frame.key) : indexPath(path, frame.node.size());
    }
    return path;
  }

  std::vector<Violation>& violations_;
  NumberTexts& numberTexts_;
  size_t maxDepth_;
  std::vector<Frame> stack_;
  Tree root_;
};

using ReadResult = StructuredText;

// ---------------------------------------------------------------------------------------------
// JSON

// nlohmann SAX consumer feeding a TreeBuilder.
class JsonEvents {
 public:
  using number_integer_t = Tree::number_integer_t;
  using number_unsigned_t = Tree::number_unsigned_t;
  using number_float_t = Tree::number_float_t;
  using string_t = Tree::string_t;
  using binary_t = Tree::binary_t;

  JsonEvents(std::string_view bytes, TreeBuilder& builder, const StructuredTextOptions& options)
      : bytes_(bytes), builder_(builder), options_(options) {}

  bool null() { return addValue(nullptr); }
  bool boolean(bool value) { return addValue(value); }
  bool number_integer(number_integer_t value) { return addValue(value); }
  bool number_unsigned(number_unsigned_t value) { return addValue(value); }
  bool number_float(number_float_t value, const string_t& text) {
    builder_.add(Tree(value), text);
    return true;
  }
  bool string(string_t& value) { return addValue(std::move(value)); }
  bool binary(binary_t&) { return false; }  // the JSON format never produces binary values
  bool start_object(std::size_t) { return open(Tree::object()); }
  bool key(string_t& name) {
    builder_.key(std::move(name));
    return true;
  }
  bool end_object() {
    builder_.close();
    return true;
  }
  bool start_array(std::size_t) { return open(Tree::array()); }
  bool end_array() {
    builder_.close();
    return true;
  }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& e) {
    // nlohmann's text is "[json.exception.parse_error.101] parse error at line 1, column 8:
    // <reason>"; the position is recomputed here because not every error (number overflow,
    // out_of_range.406) carries one in its text.
    std::string reason = e.what();
    if (size_t bracket = reason.find("] "); bracket != std::string::npos) {
      reason.erase(0, bracket + 2);
    }
    if (reason.starts_with("parse error")) {
      if (size_t colon = reason.find(": "); colon != std::string::npos) reason.erase(0, colon + 2);
    }
    error =
        "invalid JSON at " + lineColumn(bytes_, position == 0 ? 0 : position - 1) + ": " + reason;
    return false;
  }

  std::optional<std::string> error;

 private:
  bool addValue(Tree value) {
    builder_.add(std::move(value));
    return true;
  }
  bool open(Tree container) {
    if (builder_.open(std::move(container))) return true;
    error = "document nests deeper than " + std::to_string(options_.maxDepth) + " levels";
    return false;
  }

  std::string_view bytes_;
  TreeBuilder& builder_;
  const StructuredTextOptions& options_;
};

ReadResult readJson(std::string_view bytes, const StructuredTextOptions& options) {
  ReadResult result;
  TreeBuilder builder(result.violations, result.numberTexts, options.maxDepth);
  JsonEvents events(bytes, builder, options);
  bool ok = Tree::sax_parse(bytes.begin(), bytes.end(), &events);
  if (!ok || events.error) {
    result.fatal = events.error.value_or("invalid JSON");
    return result;
  }
  result.tree = builder.takeRoot();
  return result;
}

// ---------------------------------------------------------------------------------------------
// YAML

// A document feature this reader refuses; thrown from inside yaml-cpp's callbacks to stop it.
struct YamlRefusal {
  YAML::Mark mark;
  std::string message;
};

std::string yamlPosition(const YAML::Mark& mark) {
  if (mark.line < 0 || mark.column < 0) return "";
  return " at line " + std::to_string(mark.line + 1) + ", column " +
         std::to_string(mark.column + 1);
}

// JSON's number grammar (RFC 8259 section 6), which is what a plain YAML scalar must match to be
// read as a number. YAML 1.1/1.2 forms JSON lacks (0x1F, 0o17, +5, .inf, 1_000) stay strings, so
// a field that needs a number refuses them instead of guessing a base.
bool isJsonNumber(std::string_view text) {
  size_t i = 0;
  auto digits = [&] {
    size_t start = i;
    while (i < text.size() && isDigit(text[i])) ++i;
    return i > start;
  };
  if (i < text.size() && text[i] == '-') ++i;
  if (i < text.size() && text[i] == '0') {
    ++i;
  } else if (!digits()) {
    return false;
  }
  if (i < text.size() && text[i] == '.') {
    ++i;
    if (!digits()) return false;
  }
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    if (i < text.size() && (text[i] == '+' || text[i] == '-')) ++i;
    if (!digits()) return false;
  }
  return i == text.size();
}

// yaml-cpp event consumer feeding a TreeBuilder. Typing follows JSON (see parseCellDocument).
class YamlEvents : public YAML::EventHandler {
 public:
  YamlEvents(TreeBuilder& builder, const StructuredTextOptions& options)
      : builder_(builder), options_(options) {}

  int documents = 0;

  void OnDocumentStart(const YAML::Mark& mark) override {
    if (++documents > 1) {
      throw YamlRefusal{mark, "a file holds one " + std::string(options_.documentName) +
                                  ", found a second"};
    }
  }
  void OnDocumentEnd() override {}

  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    refuseAnchor(mark, anchor);
    builder_.add(nullptr);
  }

  // Aliases (and so merge keys, which need them) are refused: an alias makes one node appear in
  // several places, and expanding them is the "billion laughs" blow-up.
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override {
    throw YamlRefusal{mark, "aliases (\"*name\") are not supported"};
  }
  void OnAnchor(const YAML::Mark& mark, const std::string& name) override {
    throw YamlRefusal{mark, "anchors (\"&" + name + "\") are not supported"};
  }

  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                const std::string& value) override {
    refuseAnchor(mark, anchor);
    // Escapes such as "\ud800" can produce bytes that are not UTF-8 after screening.
    if (firstInvalidUtf8(value) != std::string_view::npos) {
      throw YamlRefusal{mark, "string is not valid UTF-8 after unescaping"};
    }
    if (tag == "!") {  // yaml-cpp's tag for quoted and block scalars: always a string
      builder_.add(value);
      return;
    }
    if (tag != "?") throw YamlRefusal{mark, "tag " + q(tag) + " is not supported"};
    if (value == "<<" && builder_.expectingKey()) {
      throw YamlRefusal{mark, "merge keys (\"<<\") are not supported"};
    }
    addPlain(mark, value);
  }

  void OnSequenceStart(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    open(mark, tag, anchor, Tree::array());
  }
  void OnSequenceEnd() override { builder_.close(); }

  void OnMapStart(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    open(mark, tag, anchor, Tree::object());
  }
  void OnMapEnd() override { builder_.close(); }

 private:
  static void refuseAnchor(const YAML::Mark& mark, YAML::anchor_t anchor) {
    if (anchor != YAML::NullAnchor) throw YamlRefusal{mark, "anchors are not supported"};
  }

  void open(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor, Tree node) {
    refuseAnchor(mark, anchor);
    if (tag != "?" && tag != "!") throw YamlRefusal{mark, "tag " + q(tag) + " is not supported"};
    if (!builder_.open(std::move(node))) {
      throw YamlRefusal{
          mark, "document nests deeper than " + std::to_string(options_.maxDepth) + " levels"};
    }
  }

  // A plain scalar read as JSON would read the same text (plus YAML 1.2's null and boolean
  // spellings, which no string field could mean).
  void addPlain(const YAML::Mark& mark, const std::string& value) {
    if (value.empty() || value == "~" || value == "null" || value == "Null" || value == "NULL") {
      builder_.add(nullptr);
    } else if (value == "true" || value == "True" || value == "TRUE") {
      builder_.add(true);
    } else if (value == "false" || value == "False" || value == "FALSE") {
      builder_.add(false);
    } else if (isJsonNumber(value)) {
      Tree number;
      try {
        number = Tree::parse(value);
      } catch (const nlohmann::json::exception&) {
        throw YamlRefusal{mark, "number " + q(value) + " is out of range"};
      }
      // Decided before the call: argument evaluation order is unspecified, and the move
      // happens while the parameter is initialised.
      std::string_view text =
          number.is_number_float() ? std::string_view(value) : std::string_view();
      builder_.add(std::move(number), text);
    } else {
      builder_.add(value);
    }
  }

  TreeBuilder& builder_;
  const StructuredTextOptions& options_;
};

ReadResult readYaml(std::string_view bytes, const StructuredTextOptions& options) {
  ReadResult result;
  TreeBuilder builder(result.violations, result.numberTexts, options.maxDepth);
  YamlEvents events(builder, options);
  std::istringstream stream{std::string(bytes)};
  try {
    YAML::Parser parser(stream);
    while (parser.HandleNextDocument(events)) {
    }
  } catch (const YamlRefusal& refusal) {
    result.fatal = "unsupported YAML" + yamlPosition(refusal.mark) + ": " + refusal.message;
    return result;
  } catch (const YAML::Exception& e) {
    result.fatal = "invalid YAML" + yamlPosition(e.mark) + ": " + e.msg;
    return result;
  }
  if (events.documents == 0) {
    result.fatal = std::string(options.emptyMessage);
    return result;
  }
  result.tree = builder.takeRoot();
  return result;
}

// JSON when the first significant character opens an object; YAML otherwise (a YAML document
// may also be a flow mapping, but then it is JSON-compatible enough to read as JSON).
bool looksLikeJson(std::string_view bytes) {
  if (bytes.starts_with("\xEF\xBB\xBF")) bytes.remove_prefix(3);
  size_t first = bytes.find_first_not_of(" \t\r\n");
  return first != std::string_view::npos && bytes[first] == '{';
}

}  // namespace

StructuredText readStructuredText(std::string_view bytes, const StructuredTextOptions& options) {
  if (std::optional<std::string> problem = screenBytes(bytes)) {
    StructuredText result;
    result.fatal = *problem;
    return result;
  }
  return looksLikeJson(bytes) ? readJson(bytes, options) : readYaml(bytes, options);
}

// "spec" + "id" -> "spec.id"; a key that is not an identifier is bracketed: env["MY-VAR"].
std::string memberPath(const std::string& parent, std::string_view key) {
  if (isIdentifier(key)) {
    return parent == "$" ? std::string(key) : parent + "." + std::string(key);
  }
  return parent + "[" + quotedForMessage(key) + "]";
}

std::string indexPath(const std::string& parent, size_t index) {
  return parent + "[" + std::to_string(index) + "]";
}

std::string typeName(const Tree& value) {
  switch (value.type()) {
    case Tree::value_t::null:
      return "null";
    case Tree::value_t::boolean:
      return "boolean";
    case Tree::value_t::number_integer:
    case Tree::value_t::number_unsigned:
    case Tree::value_t::number_float:
      return "number";
    case Tree::value_t::string:
      return "string";
    case Tree::value_t::array:
      return "array";
    case Tree::value_t::object:
      return "object";
    default:
      return "value";
  }
}

// Line and column (1-based, columns in bytes) of a byte offset, for messages about the input.
std::string lineColumn(std::string_view bytes, size_t offset) {
  offset = std::min(offset, bytes.size());
  size_t line = 1 + static_cast<size_t>(std::count(bytes.begin(), bytes.begin() + offset, '\n'));
  size_t lineStart = bytes.rfind('\n', offset == 0 ? 0 : offset - 1);
  size_t column =
      (lineStart == std::string_view::npos || offset == 0) ? offset + 1 : offset - lineStart;
  return "line " + std::to_string(line) + ", column " + std::to_string(column);
}


// Offset of the first byte that is not valid UTF-8, or npos.
size_t firstInvalidUtf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    size_t length = utf8SequenceLength(text, i);
    if (length == 0) return i;
    i += length;
  }
  return std::string_view::npos;
}


}  // namespace cellos::core
