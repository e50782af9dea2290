#include "core/checkpoint.h"

#include "core/digest.h"
#include "core/encoding.h"
#include "core/merkle.h"

#include <algorithm>
#include <charconv>
#include <stdexcept>

namespace cellos::core {
namespace {

// U+2014 EM DASH, then a space: how every signature line starts.
constexpr std::string_view kSignaturePrefix = "\xE2\x80\x94 ";
constexpr uint8_t kEd25519SignatureType = 0x01;

bool validKeyName(std::string_view name) {
  if (name.empty()) return false;
  for (unsigned char c : name) {
    if (c <= 0x20 || c == '+' || c == 0x7f) return false;
  }
  return true;
}

std::vector<std::string_view> splitLines(std::string_view text) {
  std::vector<std::string_view> lines;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    lines.push_back(text.substr(pos, end - pos));
    pos = end + 1;
  }
  return lines;
}

std::optional<uint64_t> parseSize(std::string_view text) {
  if (text.empty() || (text.size() > 1 && text[0] == '0')) return std::nullopt;
  uint64_t value = 0;
  auto result = std::from_chars(text.data(), text.data() + text.size(), value);
  if (result.ec != std::errc() || result.ptr != text.data() + text.size()) return std::nullopt;
  return value;
}

}  // namespace

std::string checkpointLeafHash(std::string_view dssematerial) {
  return merkleLeafHash(dssematerial);
}

std::string noteKeyId(std::string_view keyName, const PublicKey& ed25519Key) {
  std::string input(keyName);
  input += '\n';
  input += static_cast<char>(kEd25519SignatureType);
  input += ed25519Key.rawPublicKey();
  return sha256(input).substr(0, 4);
}

std::string signCheckpoint(std::string_view origin, uint64_t size, std::string_view root,
                           const SigningKey& key) {
  if (key.algorithm() != KeyAlgorithm::kEd25519) {
    throw std::invalid_argument("checkpoints are signed with Ed25519 (signed-note type 0x01)");
  }
  if (!validKeyName(origin)) throw std::invalid_argument("checkpoint origin is not a key name");
  if (root.size() != 32) throw std::invalid_argument("checkpoint root is not 32 bytes");
  std::string text =
      std::string(origin) + "\n" + std::to_string(size) + "\n" + base64Encode(root) + "\n";
  std::string signature = noteKeyId(origin, key.publicKey()) + key.sign(text);
  return text + "\n" + std::string(kSignaturePrefix) + std::string(origin) + " " +
         base64Encode(signature) + "\n";
}

std::optional<std::vector<SignedNote>> parseSignedNotes(std::string_view text, std::string* error) {
  auto fail = [&](std::string reason) -> std::optional<std::vector<SignedNote>> {
    if (error) *error = std::move(reason);
    return std::nullopt;
  };
  if (!text.empty() && text.back() != '\n') return fail("last note does not end in a newline");
  for (unsigned char c : text) {
    if (c < 0x20 && c != '\n') return fail("control character in a note");
  }
  std::vector<SignedNote> notes;
  auto lines = splitLines(text);
  size_t i = 0;
  while (i < lines.size()) {
    SignedNote note;
    // The text runs to the blank line; our checkpoint texts have no empty lines of their own.
    while (i < lines.size() && !lines[i].empty()) {
      if (lines[i].starts_with(kSignaturePrefix)) {
        return fail("note " + std::to_string(notes.size() + 1) + ": signature line before text");
      }
      note.text += std::string(lines[i]) + "\n";
      ++i;
    }
    if (note.text.empty() || i == lines.size()) {
      return fail("note " + std::to_string(notes.size() + 1) + ": no blank line and signatures");
    }
    ++i;  // the blank line
    while (i < lines.size() && lines[i].starts_with(kSignaturePrefix)) {
      std::string_view rest = lines[i].substr(kSignaturePrefix.size());
      size_t space = rest.find(' ');
      if (space == std::string_view::npos || !validKeyName(rest.substr(0, space))) {
        return fail("note " + std::to_string(notes.size() + 1) + ": malformed signature line");
      }
      auto bytes = base64Decode(rest.substr(space + 1));
      if (!bytes || bytes->size() < 5) {
        return fail("note " + std::to_string(notes.size() + 1) + ": malformed signature");
      }
      note.signatures.push_back(
          {std::string(rest.substr(0, space)), bytes->substr(0, 4), bytes->substr(4)});
      ++i;
    }
    if (note.signatures.empty()) {
      return fail("note " + std::to_string(notes.size() + 1) + ": no signature lines");
    }
    notes.push_back(std::move(note));
  }
  return notes;
}

std::vector<std::string_view> completeSignedNotes(std::string_view bytes, size_t* consumed) {
  std::vector<std::string_view> notes;
  size_t committed = 0;  // the end of the last complete note
  size_t pos = 0;
  // The next whole line from `pos` (without its newline); nullopt while it has not all arrived.
  auto nextLine = [&](size_t from) -> std::optional<std::string_view> {
    size_t end = bytes.find('\n', from);
    if (end == std::string_view::npos) return std::nullopt;
    return bytes.substr(from, end - from);
  };
  for (;;) {
    // The text: lines up to the blank line.
    std::optional<std::string_view> line;
    while ((line = nextLine(pos)) && !line->empty()) pos += line->size() + 1;
    if (!line) break;
    if (pos == committed) {  // a blank line where a note should start: a note of its own (bad)
      pos += 1;
      notes.push_back(bytes.substr(committed, pos - committed));
      committed = pos;
      continue;
    }
    pos += 1;  // the blank line
    // The signatures: every following line that starts with the signature prefix.
    size_t signatures = 0;
    bool known = true;
    for (;;) {
      std::string_view rest = bytes.substr(pos);
      if (rest.empty()) break;  // the end of the bytes closes the note
      auto next = nextLine(pos);
      if (!next) {
        // A partial line: the note is closed unless it may still become a signature line.
        size_t n = std::min(rest.size(), kSignaturePrefix.size());
        known = rest.substr(0, n) != kSignaturePrefix.substr(0, n);
        break;
      }
      if (!next->starts_with(kSignaturePrefix)) break;  // the next note's text
      pos += next->size() + 1;
      ++signatures;
    }
    // No signature yet after the blank line: complete only if something else follows (then it
    // is a note without signatures, which parseSignedNotes refuses); else wait for them.
    if (!known || (signatures == 0 && pos == bytes.size())) break;
    notes.push_back(bytes.substr(committed, pos - committed));
    committed = pos;
  }
  if (consumed) *consumed = committed;
  return notes;
}

std::optional<Checkpoint> verifyCheckpoint(const SignedNote& note, const Keyset& keys,
                                           std::string* error) {
  auto fail = [&](std::string reason) -> std::optional<Checkpoint> {
    if (error) *error = std::move(reason);
    return std::nullopt;
  };
  std::optional<Checkpoint> verified;
  for (const auto& signature : note.signatures) {
    for (const auto& [keyid, key] : keys) {
      if (key.algorithm() != KeyAlgorithm::kEd25519) continue;
      if (noteKeyId(signature.keyName, key) != signature.keyId) continue;
      // Name and ID match a known key: its signature must verify.
      if (!key.verify(note.text, signature.signature)) {
        return fail("bad signature by " + signature.keyName + " (" + keyid + ")");
      }
      verified = Checkpoint{"", 0, "", signature.keyName, keyid};
    }
  }
  if (!verified) return fail("no signature by a trusted Ed25519 key");

  auto lines = splitLines(note.text);
  if (lines.size() != 3) return fail("checkpoint text is not origin, size and root hash");
  auto size = parseSize(lines[1]);
  auto root = base64Decode(lines[2]);
  if (lines[0].empty() || !size) return fail("checkpoint origin or size is malformed");
  if (!root || root->size() != 32) return fail("checkpoint root hash is not base64 of 32 bytes");
  verified->origin = std::string(lines[0]);
  verified->size = *size;
  verified->root = *root;
  return verified;
}

std::optional<std::string> checkLogAgainstCheckpoints(const LogLeaves& log,
                                                      const std::vector<Checkpoint>& checkpoints) {
  const uint64_t held = log.leafHashes.size();
  auto describe = [&](size_t i) {
    return "checkpoint " + std::to_string(i + 1) + " (tree size " +
           std::to_string(checkpoints[i].size) + ")";
  };
  // A cut tail is named against the largest checkpoint, so the whole missing range shows.
  size_t largest = 0;
  for (size_t i = 0; i < checkpoints.size(); ++i) {
    if (checkpoints[i].size > checkpoints[largest].size) largest = i;
  }
  if (!checkpoints.empty() && checkpoints[largest].size > held) {
    const uint64_t size = checkpoints[largest].size;
    const uint64_t missing = size - held;
    const uint64_t firstMissingSequence = held == 0 ? 0 : log.sequences[held - 1] + 1;
    return describe(largest) + ": the log holds only " + std::to_string(held) +
           " of its events: events " + std::to_string(firstMissingSequence) + ".." +
           std::to_string(firstMissingSequence + missing - 1) + " (" + std::to_string(missing) +
           ", tree leaves " + std::to_string(held) + ".." + std::to_string(size - 1) +
           ") are missing from the end of the log";
  }
  const Checkpoint* previous = nullptr;
  for (size_t i = 0; i < checkpoints.size(); ++i) {
    const Checkpoint& checkpoint = checkpoints[i];
    if (merkleRoot(log.leafHashes, checkpoint.size) != checkpoint.root) {
      return describe(i) + ": the first " + std::to_string(checkpoint.size) +
             " events of the log do not hash to its root (an event was rewritten, inserted or "
             "removed)";
    }
    if (previous) {
      if (checkpoint.size < previous->size) {
        return describe(i) + ": smaller than checkpoint " + std::to_string(i) + " (" +
               std::to_string(previous->size) + ")";
      }
      if (previous->size > 0) {
        auto proof = merkleConsistencyProof(log.leafHashes, previous->size, checkpoint.size);
        if (!verifyMerkleConsistency(previous->size, checkpoint.size, previous->root,
                                     checkpoint.root, proof)) {
          return describe(i) + ": not consistent with checkpoint " + std::to_string(i);
        }
      }
    }
    previous = &checkpoint;
  }
  return std::nullopt;
}

}  // namespace cellos::core
