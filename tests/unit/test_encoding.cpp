// Base64 / hex encodings, SHA-256 and UUIDs.

#include "core/digest.h"
#include "core/encoding.h"
#include "core/uuid.h"

#include <gtest/gtest.h>

#include <chrono>
#include <regex>
#include <set>
#include <string>
#include <thread>

namespace cellos::core {
namespace {

// RFC 4648 section 10 test vectors.
TEST(Base64, Rfc4648Vectors) {
  const std::pair<std::string, std::string> vectors[] = {{"", ""},
                                                         {"f", "Zg=="},
                                                         {"fo", "Zm8="},
                                                         {"foo", "Zm9v"},
                                                         {"foob", "Zm9vYg=="},
                                                         {"fooba", "Zm9vYmE="},
                                                         {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(base64Encode(plain), encoded);
    EXPECT_EQ(base64Decode(encoded), plain) << encoded;
    std::string unpadded = encoded.substr(0, encoded.find('='));
    EXPECT_EQ(base64UrlEncode(plain), unpadded);
    EXPECT_EQ(base64UrlDecode(unpadded), plain) << unpadded;
    EXPECT_EQ(base64UrlDecode(encoded), plain) << encoded;
  }
}

TEST(Base64, RoundTripsEveryLengthAndByte) {
  std::string bytes;
  for (int i = 0; i < 300; ++i) {
    bytes += static_cast<char>((i * 37 + 11) & 0xff);
    std::string prefix = bytes.substr(0, static_cast<size_t>(i % 67));
    EXPECT_EQ(base64Decode(base64Encode(prefix)), prefix);
    EXPECT_EQ(base64UrlDecode(base64UrlEncode(prefix)), prefix);
  }
  EXPECT_EQ(base64Decode(base64Encode(bytes)), bytes);
}

TEST(Base64, AlphabetsDiffer) {
  const std::string bytes = "\xfb\xff\xbf";
  EXPECT_EQ(base64Encode(bytes), "+/+/");
  EXPECT_EQ(base64UrlEncode(bytes), "-_-_");
  EXPECT_EQ(base64Decode("-_-_"), std::nullopt);
  EXPECT_EQ(base64UrlDecode("+/+/"), std::nullopt);
}

TEST(Base64, StrictDecodeRejects) {
  const char* bad[] = {
      "Zg",          // missing padding
      "Zg=",         // short padding
      "Zg===",       // too much padding
      "Zm9",         // length not a multiple of 4
      "Zm9v YmFy",   // space
      "Zm9v\nYmFy",  // newline
      "Zm9vYmFy\n",  // trailing newline
      " Zm9v",       // leading space
      "Zh==",        // non-zero unused bits
      "Zm9=",        // non-zero unused bits
      "Zg==Zg==",    // padding in the middle
      "Z===",        // one character cannot make a byte
      "====",        // padding only
      "Zm9v*mFy",    // outside the alphabet
      "Zm9\x80",     // non-ASCII
  };
  for (const char* text : bad) EXPECT_EQ(base64Decode(text), std::nullopt) << text;
  EXPECT_EQ(base64Decode(std::string("Zm9v\0\0\0\0", 8)), std::nullopt);
}

TEST(Base64, UrlDecodeRejects) {
  const char* bad[] = {"Zg=", "Zg===", "Z", "Zh", "Zm9", "Zm9v=", "Zm 9v", "Zg==Zg", "Z=g="};
  for (const char* text : bad) EXPECT_EQ(base64UrlDecode(text), std::nullopt) << text;
  EXPECT_EQ(base64UrlDecode("Zm8"), "fo");
  EXPECT_EQ(base64UrlDecode("Zm8="), "fo");
}

TEST(Hex, LowerCase) {
  EXPECT_EQ(hexEncode(""), "");
  EXPECT_EQ(hexEncode(std::string("\x00\x01\xab\xff\x7f", 5)), "0001abff7f");
}

// FIPS 180-2 / NIST example values.
TEST(Digest, Sha256KnownAnswers) {
  EXPECT_EQ(hexEncode(sha256("")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(hexEncode(sha256("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256("abc").size(), 32u);
}

const std::regex kUuidText(
    "^[0-9a-f]{8}-[0-9a-f]{4}-([0-9a-f])[0-9a-f]{3}-([0-9a-f])[0-9a-f]{3}-[0-9a-f]{12}$");

TEST(Uuid, V7FormatVersionVariantAndTime) {
  auto before = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  std::string id = newUuidV7();
  auto after = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
  std::smatch match;
  ASSERT_TRUE(std::regex_match(id, match, kUuidText)) << id;
  EXPECT_EQ(match[1], "7");
  EXPECT_NE(std::string("89ab").find(match[2].str()), std::string::npos);
  std::string timeHex = id.substr(0, 8) + id.substr(9, 4);
  long long millis = std::stoll(timeHex, nullptr, 16);
  EXPECT_GE(millis, before);
  EXPECT_LE(millis, after);
}

TEST(Uuid, V7SortsByTime) {
  std::string first = newUuidV7();
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  std::string second = newUuidV7();
  EXPECT_LT(first, second);
}

TEST(Uuid, V4FormatAndUniqueness) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    std::string id = newUuidV4();
    std::smatch match;
    ASSERT_TRUE(std::regex_match(id, match, kUuidText)) << id;
    EXPECT_EQ(match[1], "4");
    EXPECT_NE(std::string("89ab").find(match[2].str()), std::string::npos);
    seen.insert(id);
    seen.insert(newUuidV7());
  }
  EXPECT_EQ(seen.size(), 2000u);
}

}  // namespace
}  // namespace cellos::core
