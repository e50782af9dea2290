#include "core/merkle.h"

#include "core/digest.h"

#include <bit>

namespace cellos::core {
namespace {

// The largest power of two smaller than n (n > 1): where RFC 9162 splits a tree.
uint64_t splitPoint(uint64_t n) {
  return std::bit_floor(n - 1);
}

// MTH(D[begin:end]).
std::string subtreeRoot(const std::vector<std::string>& leaves, uint64_t begin, uint64_t end) {
  if (end - begin == 1) return leaves[begin];
  uint64_t k = splitPoint(end - begin);
  return merkleNodeHash(subtreeRoot(leaves, begin, begin + k), subtreeRoot(leaves, begin + k, end));
}

// PATH(m, D[begin:end]).
void inclusionPath(const std::vector<std::string>& leaves, uint64_t m, uint64_t begin, uint64_t end,
                   std::vector<std::string>& out) {
  if (end - begin <= 1) return;
  uint64_t k = splitPoint(end - begin);
  if (m < k) {
    inclusionPath(leaves, m, begin, begin + k, out);
    out.push_back(subtreeRoot(leaves, begin + k, end));
  } else {
    inclusionPath(leaves, m - k, begin + k, end, out);
    out.push_back(subtreeRoot(leaves, begin, begin + k));
  }
}

// SUBPROOF(m, D[begin:end], b).
void subproof(const std::vector<std::string>& leaves, uint64_t m, uint64_t begin, uint64_t end,
              bool complete, std::vector<std::string>& out) {
  uint64_t n = end - begin;
  if (m == n) {
    if (!complete) out.push_back(subtreeRoot(leaves, begin, end));
    return;
  }
  uint64_t k = splitPoint(n);
  if (m <= k) {
    subproof(leaves, m, begin, begin + k, complete, out);
    out.push_back(subtreeRoot(leaves, begin + k, end));
  } else {
    subproof(leaves, m - k, begin + k, end, false, out);
    out.push_back(subtreeRoot(leaves, begin, begin + k));
  }
}

}  // namespace

std::string merkleLeafHash(std::string_view data) {
  std::string input(1, '\x00');
  input += data;
  return sha256(input);
}

std::string merkleNodeHash(std::string_view left, std::string_view right) {
  std::string input(1, '\x01');
  input += left;
  input += right;
  return sha256(input);
}

std::string merkleRoot(const std::vector<std::string>& leafHashes, uint64_t size) {
  if (size == 0) return sha256("");
  return subtreeRoot(leafHashes, 0, size);
}

std::vector<std::string> merkleInclusionProof(const std::vector<std::string>& leafHashes,
                                              uint64_t index, uint64_t size) {
  std::vector<std::string> out;
  inclusionPath(leafHashes, index, 0, size, out);
  return out;
}

bool verifyMerkleInclusion(uint64_t index, uint64_t size, std::string_view leafHash,
                           const std::vector<std::string>& proof, std::string_view root) {
  if (index >= size) return false;
  uint64_t fn = index, sn = size - 1;
  std::string r(leafHash);
  for (const auto& p : proof) {
    if (sn == 0) return false;
    if ((fn & 1) || fn == sn) {
      r = merkleNodeHash(p, r);
      if (!(fn & 1)) {
        while (fn != 0 && !(fn & 1)) {
          fn >>= 1;
          sn >>= 1;
        }
      }
    } else {
      r = merkleNodeHash(r, p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn == 0 && r == root;
}

std::vector<std::string> merkleConsistencyProof(const std::vector<std::string>& leafHashes,
                                                uint64_t oldSize, uint64_t newSize) {
  std::vector<std::string> out;
  subproof(leafHashes, oldSize, 0, newSize, true, out);
  return out;
}

bool verifyMerkleConsistency(uint64_t oldSize, uint64_t newSize, std::string_view oldRoot,
                             std::string_view newRoot, const std::vector<std::string>& proof) {
  if (oldSize == 0 || oldSize > newSize) return false;
  if (oldSize == newSize) return proof.empty() && oldRoot == newRoot;
  if (proof.empty()) return false;
  std::vector<std::string> path = proof;
  // If the old tree is a perfect subtree at the left edge, the proof omits its root.
  if (std::has_single_bit(oldSize)) path.insert(path.begin(), std::string(oldRoot));
  uint64_t fn = oldSize - 1, sn = newSize - 1;
  while (fn & 1) {
    fn >>= 1;
    sn >>= 1;
  }
  std::string fr = path[0], sr = path[0];
  for (size_t i = 1; i < path.size(); ++i) {
    if (sn == 0) return false;
    const std::string& c = path[i];
    if ((fn & 1) || fn == sn) {
      fr = merkleNodeHash(c, fr);
      sr = merkleNodeHash(c, sr);
      if (!(fn & 1)) {
        while (fn != 0 && !(fn & 1)) {
          fn >>= 1;
          sn >>= 1;
        }
      }
    } else {
      sr = merkleNodeHash(sr, c);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn == 0 && fr == oldRoot && sr == newRoot;
}

std::optional<MerkleFrontier> MerkleFrontier::restore(uint64_t size,
                                                      std::vector<std::string> subtrees) {
  if (subtrees.size() != static_cast<size_t>(std::popcount(size))) return std::nullopt;
  for (const auto& hash : subtrees) {
    if (hash.size() != 32) return std::nullopt;
  }
  MerkleFrontier frontier;
  frontier.size_ = size;
  frontier.subtrees_ = std::move(subtrees);
  return frontier;
}

void MerkleFrontier::append(std::string_view leafHash) {
  // Like a binary counter: the new leaf merges with every perfect subtree of equal size.
  std::string carry(leafHash);
  uint64_t size = size_;
  while (size & 1) {
    carry = merkleNodeHash(subtrees_.back(), carry);
    subtrees_.pop_back();
    size >>= 1;
  }
  subtrees_.push_back(std::move(carry));
  ++size_;
}

std::string MerkleFrontier::root() const {
  if (subtrees_.empty()) return sha256("");
  // RFC 9162's tree is left-heavy: fold the subtrees from the smallest (rightmost) up.
  std::string r = subtrees_.back();
  for (size_t i = subtrees_.size() - 1; i-- > 0;) r = merkleNodeHash(subtrees_[i], r);
  return r;
}

}  // namespace cellos::core
