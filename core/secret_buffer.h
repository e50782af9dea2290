#pragma once
// A secret's bytes, held only here: wiped (explicit_bzero, which the compiler may not elide) when
// the buffer is destroyed or cleared, never formatted, never copied implicitly. Move-only, so a
// value has exactly one owner and one wipe.

#include <string.h>

#include <cstddef>
#include <string_view>
#include <utility>
#include <vector>

namespace cellos::core {

class SecretBuffer {
 public:
  SecretBuffer() = default;
  explicit SecretBuffer(size_t size) : bytes_(size) {}
  SecretBuffer(const char* data, size_t size) : bytes_(data, data + size) {}
  ~SecretBuffer() { wipe(); }
  SecretBuffer(SecretBuffer&& other) noexcept : bytes_(std::move(other.bytes_)) {
    other.bytes_.clear();
  }
  SecretBuffer& operator=(SecretBuffer&& other) noexcept {
    if (this != &other) {
      wipe();
      bytes_ = std::move(other.bytes_);
      other.bytes_.clear();
    }
    return *this;
  }
  SecretBuffer(const SecretBuffer&) = delete;
  SecretBuffer& operator=(const SecretBuffer&) = delete;

  char* data() { return bytes_.data(); }
  const char* data() const { return bytes_.data(); }
  size_t size() const { return bytes_.size(); }
  // Shrinks without reallocating (the bytes past the new end are wiped first).
  void truncate(size_t size) {
    if (size >= bytes_.size()) return;
    explicit_bzero(bytes_.data() + size, bytes_.size() - size);
    bytes_.resize(size);
  }
  std::string_view view() const { return {bytes_.data(), bytes_.size()}; }
  void wipe() {
    if (!bytes_.empty()) explicit_bzero(bytes_.data(), bytes_.size());
    bytes_.clear();
  }

 private:
  std::vector<char> bytes_;
};

}  // namespace cellos::core
