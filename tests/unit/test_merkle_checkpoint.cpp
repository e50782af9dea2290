// RFC 9162 Merkle trees and C2SP checkpoints: tree heads, inclusion and consistency proofs, the
// signed note, and checking a log against its checkpoints.

#include "core/checkpoint.h"
#include "core/digest.h"
#include "core/encoding.h"
#include "core/merkle.h"

#include <gtest/gtest.h>

namespace cellos::core {
namespace {

// The eight leaves of the Certificate Transparency test vectors (RFC 6962 / 9162 hashing).
std::vector<std::string> ctLeaves() {
  std::vector<std::string> data = {
      "",
      std::string(1, '\x00'),
      "\x10",
      "\x20\x21",
      "\x30\x31",
      "\x40\x41\x42\x43",
      "\x50\x51\x52\x53\x54\x55\x56\x57",
      "\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f"};
  std::vector<std::string> hashes;
  for (const auto& d : data) hashes.push_back(merkleLeafHash(d));
  return hashes;
}

TEST(Merkle, CertificateTransparencyRoots) {
  const char* roots[] = {"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                         "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
                         "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
                         "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                         "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
                         "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
                         "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
                         "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"};
  auto leaves = ctLeaves();
  MerkleFrontier frontier;
  for (size_t n = 1; n <= 8; ++n) {
    EXPECT_EQ(hexEncode(merkleRoot(leaves, n)), roots[n - 1]) << n;
    frontier.append(leaves[n - 1]);
    EXPECT_EQ(hexEncode(frontier.root()), roots[n - 1]) << n;
  }
  EXPECT_EQ(merkleRoot(leaves, 0), sha256(""));
}

std::vector<std::string> manyLeaves(size_t n) {
  std::vector<std::string> leaves;
  for (size_t i = 0; i < n; ++i) leaves.push_back(merkleLeafHash("event " + std::to_string(i)));
  return leaves;
}

TEST(Merkle, EveryInclusionProofVerifiesAndNoWrongOne) {
  auto leaves = manyLeaves(37);
  for (uint64_t size = 1; size <= leaves.size(); ++size) {
    std::string root = merkleRoot(leaves, size);
    for (uint64_t i = 0; i < size; ++i) {
      auto proof = merkleInclusionProof(leaves, i, size);
      ASSERT_TRUE(verifyMerkleInclusion(i, size, leaves[i], proof, root)) << i << "/" << size;
      EXPECT_FALSE(verifyMerkleInclusion(i, size, leaves[(i + 1) % 37], proof, root));
      if (size < leaves.size()) {  // another tree's root
        EXPECT_FALSE(
            verifyMerkleInclusion(i, size, leaves[i], proof, merkleRoot(leaves, size + 1)));
      }
      if (!proof.empty()) {
        auto bad = proof;
        bad.back()[0] ^= 1;
        EXPECT_FALSE(verifyMerkleInclusion(i, size, leaves[i], bad, root));
      }
    }
  }
}

TEST(Merkle, EveryConsistencyProofVerifiesAndNoWrongOne) {
  auto leaves = manyLeaves(33);
  for (uint64_t n = 1; n <= leaves.size(); ++n) {
    for (uint64_t m = 1; m <= n; ++m) {
      auto proof = merkleConsistencyProof(leaves, m, n);
      std::string oldRoot = merkleRoot(leaves, m), newRoot = merkleRoot(leaves, n);
      ASSERT_TRUE(verifyMerkleConsistency(m, n, oldRoot, newRoot, proof)) << m << "->" << n;
      if (m < n) {
        EXPECT_FALSE(verifyMerkleConsistency(m, n, merkleRoot(leaves, m - 1), newRoot, proof));
        EXPECT_FALSE(verifyMerkleConsistency(m, n, oldRoot, merkleRoot(leaves, n - 1), proof));
        auto bad = proof;
        bad.front()[5] ^= 1;
        EXPECT_FALSE(verifyMerkleConsistency(m, n, oldRoot, newRoot, bad));
      }
    }
  }
  // A tree rewritten below the old size is not consistent with it.
  auto forked = leaves;
  forked[3] = merkleLeafHash("rewritten");
  auto proof = merkleConsistencyProof(forked, 10, 20);
  EXPECT_FALSE(
      verifyMerkleConsistency(10, 20, merkleRoot(leaves, 10), merkleRoot(forked, 20), proof));
}

TEST(Merkle, FrontierRestores) {
  auto leaves = manyLeaves(21);
  MerkleFrontier frontier;
  for (const auto& leaf : leaves) frontier.append(leaf);
  auto restored = MerkleFrontier::restore(frontier.size(), frontier.subtrees());
  ASSERT_TRUE(restored);
  EXPECT_EQ(restored->root(), merkleRoot(leaves, 21));
  EXPECT_FALSE(MerkleFrontier::restore(23, frontier.subtrees()));  // four subtrees, not three
}

TEST(SignedNote, CheckpointFormatAndKeyId) {
  SigningKey key = SigningKey::generate();
  std::string note = signCheckpoint("cellos.test/events", 7, std::string(32, '\x01'), key);
  std::string body = "cellos.test/events\n7\n" + base64Encode(std::string(32, '\x01')) + "\n";
  ASSERT_EQ(note.substr(0, body.size() + 1), body + "\n");
  ASSERT_EQ(note.substr(body.size() + 1, 4), "\xE2\x80\x94 ");
  // key ID = SHA-256(name || 0x0A || 0x01 || public key)[:4], then the Ed25519 signature.
  std::string line = note.substr(body.size() + 5);
  ASSERT_EQ(line.substr(0, 19), "cellos.test/events ");
  auto signature = base64Decode(line.substr(19, line.size() - 20));
  ASSERT_TRUE(signature);
  ASSERT_EQ(signature->size(), 68u);
  EXPECT_EQ(signature->substr(0, 4),
            sha256("cellos.test/events\n\x01" + key.rawPublicKey()).substr(0, 4));
  EXPECT_TRUE(key.publicKey().verify(body, signature->substr(4)));
  EXPECT_THROW(signCheckpoint("has space", 1, std::string(32, 'x'), key), std::invalid_argument);
  EXPECT_THROW(
      signCheckpoint("o", 1, std::string(32, 'x'), SigningKey::generate(KeyAlgorithm::kEcdsaP256)),
      std::invalid_argument);
}

class CheckpointLog : public ::testing::Test {
 protected:
  void SetUp() override {
    for (uint64_t i = 0; i < 30; ++i) {
      log_.leafHashes.push_back(checkpointLeafHash("material " + std::to_string(i)));
      log_.sequences.push_back(i);
    }
  }
  std::string note(uint64_t size, const SigningKey& key) {
    return signCheckpoint("cellos.test/events", size, merkleRoot(log_.leafHashes, size), key);
  }
  std::vector<Checkpoint> verifyAll(const std::string& text, const Keyset& keys) {
    std::string error;
    auto notes = parseSignedNotes(text, &error);
    EXPECT_TRUE(notes) << error;
    std::vector<Checkpoint> out;
    for (const auto& n : notes.value_or(std::vector<SignedNote>{})) {
      auto checkpoint = verifyCheckpoint(n, keys, &error);
      EXPECT_TRUE(checkpoint) << error;
      if (checkpoint) out.push_back(*checkpoint);
    }
    return out;
  }
  LogLeaves log_;
  SigningKey key_ = SigningKey::generate();
  Keyset keys_ = {{key_.keyId(), key_.publicKey()}};
};

TEST_F(CheckpointLog, IntactLogMatchesEveryCheckpoint) {
  auto checkpoints = verifyAll(note(5, key_) + note(17, key_) + note(30, key_), keys_);
  ASSERT_EQ(checkpoints.size(), 3u);
  EXPECT_EQ(checkpoints[2].size, 30u);
  EXPECT_EQ(checkpoints[2].keyId, key_.keyId());
  EXPECT_EQ(checkLogAgainstCheckpoints(log_, checkpoints).value_or("ok"), "ok");
}

TEST_F(CheckpointLog, CutTailNamesTheMissingEvents) {
  auto checkpoints = verifyAll(note(10, key_) + note(30, key_), keys_);
  for (uint64_t cut : {1, 2, 10}) {
    LogLeaves cutLog = log_;
    cutLog.leafHashes.resize(30 - cut);
    cutLog.sequences.resize(30 - cut);
    auto reason = checkLogAgainstCheckpoints(cutLog, checkpoints);
    ASSERT_TRUE(reason) << cut;
    std::string range = "events " + std::to_string(30 - cut) + "..29 (" + std::to_string(cut);
    EXPECT_NE(reason->find("checkpoint 2 (tree size 30)"), std::string::npos) << *reason;
    EXPECT_NE(reason->find(range), std::string::npos) << *reason;
  }
}

TEST_F(CheckpointLog, RewrittenOrInsertedEventFails) {
  auto checkpoints = verifyAll(note(10, key_) + note(30, key_), keys_);
  LogLeaves rewritten = log_;
  rewritten.leafHashes[3] = checkpointLeafHash("re-signed by another key");
  auto reason = checkLogAgainstCheckpoints(rewritten, checkpoints);
  ASSERT_TRUE(reason);
  EXPECT_NE(reason->find("checkpoint 1 (tree size 10): the first 10 events"), std::string::npos)
      << *reason;
  LogLeaves inserted = log_;
  inserted.leafHashes.insert(inserted.leafHashes.begin() + 20, checkpointLeafHash("extra"));
  inserted.sequences.push_back(30);
  reason = checkLogAgainstCheckpoints(inserted, checkpoints);
  ASSERT_TRUE(reason);
  EXPECT_NE(reason->find("checkpoint 2"), std::string::npos) << *reason;
}

TEST_F(CheckpointLog, InconsistentOrShrinkingCheckpointsFail) {
  auto checkpoints = verifyAll(note(20, key_) + note(10, key_), keys_);
  auto reason = checkLogAgainstCheckpoints(log_, checkpoints);
  ASSERT_TRUE(reason);
  EXPECT_NE(reason->find("smaller than checkpoint 1"), std::string::npos) << *reason;
}

TEST_F(CheckpointLog, SignaturesOfUnknownKeysAreIgnoredKnownBadOnesReject) {
  SigningKey other = SigningKey::generate();
  std::string text = note(5, other);
  std::string error;
  auto notes = parseSignedNotes(text, &error);
  ASSERT_TRUE(notes) << error;
  EXPECT_FALSE(verifyCheckpoint((*notes)[0], keys_, &error));
  EXPECT_EQ(error, "no signature by a trusted Ed25519 key");
  // A second signature line by the trusted key makes it verify; a forged one rejects it.
  std::string ours = note(5, key_);
  std::string both = text + ours.substr(ours.find("\xE2\x80\x94"));
  notes = parseSignedNotes(both, &error);
  ASSERT_TRUE(notes) << error;
  EXPECT_TRUE(verifyCheckpoint((*notes)[0], keys_, &error)) << error;
  std::string forged = ours;
  forged[forged.size() - 10] ^= 0x01;
  notes = parseSignedNotes(forged, &error);
  if (notes) {
    EXPECT_FALSE(verifyCheckpoint((*notes)[0], keys_, &error));
  }
  std::string changedSize = ours;
  changedSize.replace(changedSize.find("\n5\n"), 3, "\n6\n");
  notes = parseSignedNotes(changedSize, &error);
  ASSERT_TRUE(notes);
  EXPECT_FALSE(verifyCheckpoint((*notes)[0], keys_, &error));
  EXPECT_NE(error.find("bad signature"), std::string::npos) << error;
  EXPECT_FALSE(parseSignedNotes("origin\n1\n", &error));
  EXPECT_FALSE(parseSignedNotes("o\n1\nAAAA\n\n\x01\n", &error));
}

// A follower of the checkpoint file reads it while the broker appends: every cut of the bytes
// yields the whole notes before it, never a note that is still arriving, and the rest is kept.
TEST_F(CheckpointLog, CompleteNotesOfAGrowingFileAreExactlyTheWholeOnes) {
  std::string first = note(3, key_), second = note(9, key_), third = note(12, key_);
  std::string file = first + second + third;
  const size_t ends[] = {first.size(), first.size() + second.size(), file.size()};
  for (size_t cut = 0; cut <= file.size(); ++cut) {
    SCOPED_TRACE(cut);
    size_t consumed = 99;
    auto notes = completeSignedNotes(std::string_view(file).substr(0, cut), &consumed);
    size_t whole = 0;
    while (whole < 3 && ends[whole] <= cut) ++whole;
    ASSERT_EQ(notes.size(), whole);
    EXPECT_EQ(consumed, whole == 0 ? 0 : ends[whole - 1]);
    std::string error;
    for (auto text : notes) {
      auto parsed = parseSignedNotes(text, &error);
      ASSERT_TRUE(parsed) << error;
      EXPECT_EQ(parsed->size(), 1u);
    }
  }
  // A cosigned note (two signature lines) followed by the next note is one note.
  SigningKey other = SigningKey::generate();
  std::string otherNote = note(9, other);
  std::string cosigned = second + otherNote.substr(otherNote.rfind("\xE2\x80\x94 "));
  size_t consumed = 0;
  std::string cosignedThenMore = cosigned + third.substr(0, 5);  // the views point into it
  auto two = completeSignedNotes(cosignedThenMore, &consumed);
  ASSERT_EQ(two.size(), 1u);
  EXPECT_EQ(two[0], cosigned);
  EXPECT_EQ(consumed, cosigned.size());
  std::string error;
  EXPECT_EQ(parseSignedNotes(two[0], &error).value().at(0).signatures.size(), 2u);
  // Bytes that are not notes are still cut at blank lines, so a reader can refuse them one by
  // one and go on; a text that never reaches a blank line holds what follows (bounded by the
  // reader).
  std::string junk = "\nno signatures\n\nnext\n\n";
  std::string junkThenNote = junk + first;
  auto bad = completeSignedNotes(junkThenNote, &consumed);
  ASSERT_EQ(bad.size(), 4u);
  EXPECT_EQ(bad[0], "\n");
  EXPECT_EQ(bad[1], "no signatures\n\n");
  EXPECT_EQ(bad[2], "next\n\n");
  EXPECT_EQ(bad[3], first);
  EXPECT_FALSE(parseSignedNotes(bad[1], &error));
  EXPECT_EQ(completeSignedNotes("origin\n1\nroot\n" + first, &consumed).size(), 1u);
  EXPECT_EQ(completeSignedNotes("origin\n1\nroot\n\n" + first, &consumed).size(), 2u);
}

}  // namespace
}  // namespace cellos::core
