// libFuzzer harness for the evidence files `cellos verify` reads from whoever hands them over
// (issue 20): `--keys` files in every form (PEM, JWK, JWK Set, keyset) and checkpoint files
// (concatenated C2SP signed notes), through note parsing, checkpoint verification and the check
// of a small log against the checkpoints; and the forwarder's cutting of a growing checkpoint
// file into whole notes.
//
// The first input byte picks the mode. So that the checks behind the signature are reached, one
// mode signs a checkpoint body built from the fuzzer's bytes with a fixed test key and then
// feeds the fuzzer's tail after it.

#include "core/checkpoint.h"
#include "core/key_forms.h"
#include "core/signing.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

namespace {

using namespace cellos::core;

// RFC 8032 section 7.1 TEST 2 key: public test material, not a secret.
constexpr std::string_view kTestKeyPem =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIEzNCJso/5banbbDRuwRTg9bijGfNaumJNqM9u1PuKb7\n"
    "-----END PRIVATE KEY-----\n";

const SigningKey& testKey() {
  static const SigningKey key = SigningKey::fromPem(kTestKeyPem);
  return key;
}

const Keyset& testKeyset() {
  static const Keyset keys = {{testKey().keyId(), testKey().publicKey()}};
  return keys;
}

// A log of `n` events whose leaves are fixed strings: enough for the proof code to run.
LogLeaves smallLog(size_t n) {
  LogLeaves log;
  for (size_t i = 0; i < n; ++i) {
    log.leafHashes.push_back(checkpointLeafHash("material-" + std::to_string(i)));
    log.sequences.push_back(i);
  }
  return log;
}

void checkNotes(std::string_view text, size_t logSize) {
  std::string error;
  auto notes = parseSignedNotes(text, &error);
  if (!notes) {
    if (error.empty()) abort();  // a refusal always says why
    return;
  }
  std::vector<Checkpoint> checkpoints;
  for (const auto& note : *notes) {
    std::string why;
    if (auto checkpoint = verifyCheckpoint(note, testKeyset(), &why)) {
      if (checkpoint->root.size() != 32) abort();  // the contract of a verified checkpoint
      checkpoints.push_back(*checkpoint);
    }
  }
  (void)checkLogAgainstCheckpoints(smallLog(logSize), checkpoints);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    switch (data[0] % 4) {
      case 0: {
        std::string error;
        auto keys = parseVerificationKeys(input, &error);
        if (!keys && error.empty()) abort();
        if (keys && keys->empty()) abort();  // "no key at all" is refused
        break;
      }
      case 1:
        checkNotes(input, input.size() % 40);
        break;
      case 2: {
        // A genuinely signed checkpoint whose size and root come from the input, then the rest
        // of the input as further notes.
        if (input.size() < 34) return 0;
        uint64_t treeSize = static_cast<uint8_t>(input[0]) % 40;
        std::string root(input.substr(1, 32));
        std::string note = signCheckpoint("fuzz.example/log", treeSize, root, testKey());
        checkNotes(note + std::string(input.substr(33)), static_cast<uint8_t>(input[0]) % 41);
        break;
      }
      case 3: {
        // The forwarder's cut of a growing checkpoint file: the notes it returns are, end to
        // end, exactly the prefix it says it consumed, none empty.
        size_t consumed = 0;
        auto notes = completeSignedNotes(input, &consumed);
        if (consumed > input.size()) abort();
        size_t at = 0;
        for (auto note : notes) {
          if (note.empty() || note.data() != input.data() + at) abort();
          at += note.size();
        }
        if (at != consumed) abort();
        for (auto note : notes) checkNotes(note, 3);
        break;
      }
    }
  } catch (const std::invalid_argument&) {
    // Only signCheckpoint throws this, on inputs this harness builds: not a finding.
  }
  return 0;
}
