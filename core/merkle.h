#pragma once
// RFC 9162 (Certificate Transparency v2) Merkle hash trees over a list of leaves: the tree head,
// inclusion proofs and consistency proofs, generated from the leaves and verified without them.
// The event signer keeps such a tree over the events it has seen written (its checkpoints, see
// core/checkpoint.h); `cellos verify --checkpoint` recomputes it from the log.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cellos::core {

// SHA-256(0x00 || data): the hash of one leaf (RFC 9162 2.1.1).
std::string merkleLeafHash(std::string_view data);

// SHA-256(0x01 || left || right): an interior node.
std::string merkleNodeHash(std::string_view left, std::string_view right);

// MTH of the first `size` leaf hashes (size <= leafHashes.size()); SHA-256("") when size is 0.
std::string merkleRoot(const std::vector<std::string>& leafHashes, uint64_t size);

// The audit path of leaf `index` in the tree of the first `size` leaves (RFC 9162 2.1.3.1).
// Requires index < size <= leafHashes.size().
std::vector<std::string> merkleInclusionProof(const std::vector<std::string>& leafHashes,
                                              uint64_t index, uint64_t size);

// RFC 9162 2.1.3.2: true only if `proof` proves `leafHash` is leaf `index` of the tree of
// `size` leaves whose root is `root`.
bool verifyMerkleInclusion(uint64_t index, uint64_t size, std::string_view leafHash,
                           const std::vector<std::string>& proof, std::string_view root);

// The consistency proof from the tree of the first `oldSize` leaves to that of the first
// `newSize` (RFC 9162 2.1.4.1). Requires 0 < oldSize <= newSize <= leafHashes.size().
std::vector<std::string> merkleConsistencyProof(const std::vector<std::string>& leafHashes,
                                                uint64_t oldSize, uint64_t newSize);

// RFC 9162 2.1.4.2: true only if `proof` proves the tree of `newSize` leaves with root `newRoot`
// extends the tree of `oldSize` leaves with root `oldRoot` (0 < oldSize <= newSize).
bool verifyMerkleConsistency(uint64_t oldSize, uint64_t newSize, std::string_view oldRoot,
                             std::string_view newRoot, const std::vector<std::string>& proof);

// The tree head of a growing list kept in O(log n) space: the roots of the perfect subtrees the
// leaves so far form (largest first), which is all appending and the root need. This is what
// the event signer persists.
class MerkleFrontier {
 public:
  MerkleFrontier() = default;
  // From a persisted state; nullopt if `subtrees` does not fit `size` (one 32-byte hash per set
  // bit of size).
  static std::optional<MerkleFrontier> restore(uint64_t size, std::vector<std::string> subtrees);

  void append(std::string_view leafHash);
  uint64_t size() const { return size_; }
  std::string root() const;
  const std::vector<std::string>& subtrees() const { return subtrees_; }

 private:
  uint64_t size_ = 0;
  std::vector<std::string> subtrees_;  // one per set bit of size_, highest bit first
};

}  // namespace cellos::core
