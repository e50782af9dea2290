#pragma once
// Signed checkpoints of the event log: a C2SP tlog-checkpoint body (origin line, tree size,
// base64 RFC 9162 root hash) in a C2SP signed note with Ed25519 signatures (c2sp.org/signed-note:
// "— <key name> base64(4-byte key ID || signature)", key ID = SHA-256(name || 0x0A || 0x01 ||
// public key)[:4]). The tree's leaves are the log's events in chain order, each leaf the UTF-8
// bytes of the event's `dssematerial` value (signed, and already what `cellosprev` links).

#include "core/signing.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cellos::core {

// The Merkle leaf data of one event: its dssematerial text.
std::string checkpointLeafHash(std::string_view dssematerial);

// The signed-note key ID of an Ed25519 key under `keyName` (big-endian uint32 as 4 bytes).
std::string noteKeyId(std::string_view keyName, const PublicKey& ed25519Key);

// "<origin>\n<size>\n<base64 root>\n" followed by the blank line and one signature line by
// `key` under key name `origin`. Throws std::invalid_argument if `key` is not Ed25519, the
// origin is empty or holds a space, '+' or a control character, or root is not 32 bytes.
std::string signCheckpoint(std::string_view origin, uint64_t size, std::string_view root,
                           const SigningKey& key);

struct NoteSignature {
  std::string keyName;
  std::string keyId;      // 4 bytes
  std::string signature;  // the rest
};

struct SignedNote {
  std::string text;  // the note text, final newline included
  std::vector<NoteSignature> signatures;
};

// Splits a file of concatenated signed notes (each note text, a blank line, its signature
// lines). nullopt with a reason in *error on a note that is not one per the spec (control
// characters, a note without signatures, a malformed signature line).
std::optional<std::vector<SignedNote>> parseSignedNotes(std::string_view text, std::string* error);

// Cuts a growing file of concatenated signed notes (one appended whole at a time, as the broker
// appends checkpoints) into the notes that are already complete, for a reader that follows the
// file while it is written. A note is complete once its text, the blank line and at least one
// signature line have arrived and what follows its last signature line is known not to be
// another signature line (the end of the bytes, or the start of the next note). Returns each
// complete note's bytes, in order; *consumed is the length of the prefix they cover (what is
// after it is kept until more arrives). Notes are cut, not validated: parseSignedNotes says
// whether each one is a signed note. A text line that is not followed by a blank line holds the
// note open, so a reader bounds what it keeps.
std::vector<std::string_view> completeSignedNotes(std::string_view bytes, size_t* consumed);

// A checkpoint whose signature verified.
struct Checkpoint {
  std::string origin;
  uint64_t size = 0;
  std::string root;     // 32 bytes
  std::string keyName;  // the key name and keyset keyid that verified it
  std::string keyId;
};

// Verifies one note as a checkpoint: some signature whose key name and key ID match an Ed25519
// key of `keys` must verify (signatures of unknown keys are ignored, as signed-note requires; a
// known key whose signature fails rejects the note), and the text must be a tlog-checkpoint body
// (origin, decimal size without leading zeros, base64 of 32 bytes; no extension lines).
std::optional<Checkpoint> verifyCheckpoint(const SignedNote& note, const Keyset& keys,
                                           std::string* error);

// What a log holds, as far as checkpoints are concerned: each verified event's leaf hash and
// sequence, in chain order, from the chain's first event (sequence 0).
struct LogLeaves {
  std::vector<std::string> leafHashes;
  std::vector<uint64_t> sequences;
};

// Checks the log against every checkpoint, in order: each must commit to exactly the first
// `size` events of the log (a cut tail names the missing events; a rewritten or inserted
// event shows as a root mismatch), and each must be consistent with the one before it, proved
// by an RFC 9162 consistency proof built from the log and verified from the two roots alone.
// Returns nullopt when all hold, else one line saying which checkpoint failed and why.
std::optional<std::string> checkLogAgainstCheckpoints(const LogLeaves& log,
                                                      const std::vector<Checkpoint>& checkpoints);

}  // namespace cellos::core
