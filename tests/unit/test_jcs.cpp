// RFC 8785 JSON Canonicalization Scheme and strict JSON parsing.
//
// The number vectors are the IEEE-754 bit patterns RFC 8785 Appendix B discusses; each expected
// string was produced independently by ECMAScript (node: JSON.stringify of the same double).

#include "core/jcs.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>

namespace cellos::core {
namespace {

double fromBits(uint64_t bits) {
  double value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

TEST(Jcs, NumbersFollowEcmaScript) {
  const std::pair<uint64_t, const char*> vectors[] = {
      {0x0000000000000000, "0"},
      {0x8000000000000000, "0"},  // -0
      {0x0000000000000001, "5e-324"},
      {0x8000000000000001, "-5e-324"},
      {0x7fefffffffffffff, "1.7976931348623157e+308"},
      {0xffefffffffffffff, "-1.7976931348623157e+308"},
      {0x4340000000000000, "9007199254740992"},
      {0xc340000000000000, "-9007199254740992"},
      {0x4430000000000000, "295147905179352830000"},
      {0x44b52d02c7e14af5, "9.999999999999997e+22"},
      {0x44b52d02c7e14af6, "1e+23"},
      {0x44b52d02c7e14af7, "1.0000000000000001e+23"},
      {0x444b1ae4d6e2ef4e, "999999999999999700000"},
      {0x444b1ae4d6e2ef4f, "999999999999999900000"},
      {0x444b1ae4d6e2ef50, "1e+21"},
      {0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"},
      {0x3eb0c6f7a0b5ed8d, "0.000001"},
      {0x41b3de4355555553, "333333333.3333332"},
      {0x41b3de4355555554, "333333333.33333325"},
      {0x41b3de4355555555, "333333333.3333333"},
      {0x41b3de4355555556, "333333333.3333334"},
      {0x41b3de4355555557, "333333333.33333343"},
      {0xbecbf647612f3696, "-0.0000033333333333333333"},
      {0x43143ff3c1cb0959, "1424953923781206.2"},
  };
  for (const auto& [bits, expected] : vectors) {
    EXPECT_EQ(canonicalNumber(fromBits(bits)), expected) << std::hex << bits;
    EXPECT_EQ(canonicalJson(nlohmann::json(fromBits(bits))), expected) << std::hex << bits;
  }
}

// The boundaries of ECMAScript Number::toString's four output forms.
TEST(Jcs, NumberFormBoundaries) {
  EXPECT_EQ(canonicalNumber(1e20), "100000000000000000000");
  EXPECT_EQ(canonicalNumber(1e21), "1e+21");
  EXPECT_EQ(canonicalNumber(123456789012345680000.0), "123456789012345680000");
  EXPECT_EQ(canonicalNumber(1e-6), "0.000001");
  EXPECT_EQ(canonicalNumber(1e-7), "1e-7");
  EXPECT_EQ(canonicalNumber(1.23e-18), "1.23e-18");
  EXPECT_EQ(canonicalNumber(4.5), "4.5");
  EXPECT_EQ(canonicalNumber(0.002), "0.002");
  EXPECT_EQ(canonicalNumber(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(canonicalNumber(-1.5e-9), "-1.5e-9");
  EXPECT_EQ(canonicalNumber(1.0), "1");
  EXPECT_EQ(canonicalNumber(-42.0), "-42");
}

TEST(Jcs, NonFiniteNumbersThrow) {
  EXPECT_THROW(canonicalNumber(std::numeric_limits<double>::quiet_NaN()), std::invalid_argument);
  EXPECT_THROW(canonicalNumber(fromBits(0x7ff0000000000000)), std::invalid_argument);
  EXPECT_THROW(canonicalNumber(-std::numeric_limits<double>::infinity()), std::invalid_argument);
  nlohmann::json nested = {{"a", {1, std::nan("")}}};
  EXPECT_THROW(canonicalJson(nested), std::invalid_argument);
}

TEST(Jcs, IntegersArePlainAndExact) {
  EXPECT_EQ(canonicalJson(nlohmann::json(0)), "0");
  EXPECT_EQ(canonicalJson(nlohmann::json(-7)), "-7");
  EXPECT_EQ(canonicalJson(nlohmann::json(std::numeric_limits<int64_t>::min())),
            "-9223372036854775808");
  EXPECT_EQ(canonicalJson(nlohmann::json(std::numeric_limits<uint64_t>::max())),
            "18446744073709551615");
  // Parsed numbers: spelling differences vanish.
  EXPECT_EQ(canonicalJson(nlohmann::json::parse("[1.0, 1E30, 4.50, 2e-3, 1e-27, 10]")),
            "[1,1e+30,4.5,0.002,1e-27,10]");
}

// RFC 8785 section 3.2.3: member names sort by UTF-16 code units, so U+1F600 (surrogates
// D83D DE00) sorts before U+FB33 although its code point is larger.
TEST(Jcs, KeysSortByUtf16CodeUnits) {
  auto value = nlohmann::json::parse(R"({
    "\u20ac": "Euro Sign",
    "\r": "Carriage Return",
    "\ufb33": "Hebrew Letter Dalet With Dagesh",
    "1": "One",
    "\ud83d\ude00": "Emoji: Grinning Face",
    "\u0080": "Control",
    "\u00f6": "Latin Small Letter O With Diaeresis"
  })");
  std::string expected =
      "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u0080\":\"Control\","
      "\"\u00f6\":\"Latin Small Letter O With Diaeresis\",\"\u20ac\":\"Euro Sign\","
      "\"\U0001F600\":\"Emoji: Grinning Face\",\"\uFB33\":\"Hebrew Letter Dalet With Dagesh\"}";
  EXPECT_EQ(canonicalJson(value), expected);
}

TEST(Jcs, NestedObjectsSortedWhitespaceRemoved) {
  auto value = nlohmann::json::parse(R"( { "b" : [ 1 , { "z":null, "a" : true } ],
                                            "a" : { "d": false, "c": "x" } } )");
  EXPECT_EQ(canonicalJson(value), R"({"a":{"c":"x","d":false},"b":[1,{"a":true,"z":null}]})");
  EXPECT_EQ(canonicalJson(nlohmann::json::object()), "{}");
  EXPECT_EQ(canonicalJson(nlohmann::json::array()), "[]");
}

// RFC 8785 section 3.2.2.2: only '"', '\' and controls are escaped, with short forms where
// JSON has them and lower-case \u00xx otherwise; '/', DEL, U+2028 and non-ASCII stay literal.
TEST(Jcs, StringEscapingIsMinimal) {
  auto value = nlohmann::json::parse(R"("\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/")");
  EXPECT_EQ(canonicalJson(value), "\"\u20ac$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"");
  std::string controls;
  for (int c = 0; c < 0x20; ++c) controls += static_cast<char>(c);
  EXPECT_EQ(canonicalJson(nlohmann::json(controls)),
            "\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r"
            "\\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019"
            "\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f\"");
  EXPECT_EQ(canonicalJson(nlohmann::json("\x7f\u2028/\u00e9")), "\"\x7f\u2028/\u00e9\"");
}

TEST(Jcs, RfcStructureExample) {
  auto value = nlohmann::json::parse(R"({
    "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
    "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
    "literals": [null, true, false]
  })");
  EXPECT_EQ(canonicalJson(value),
            "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],"
            "\"string\":\"\u20ac$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}");
}

TEST(Jcs, InvalidUtf8Throws) {
  EXPECT_THROW(canonicalJson(nlohmann::json("\xff")), std::invalid_argument);
  EXPECT_THROW(canonicalJson(nlohmann::json("\xc0\xaf")), std::invalid_argument);      // overlong
  EXPECT_THROW(canonicalJson(nlohmann::json("\xed\xa0\x80")), std::invalid_argument);  // surrogate
  nlohmann::json badKey;
  badKey[std::string("\xe2\x82")] = 1;  // truncated sequence as a member name
  EXPECT_THROW(canonicalJson(badKey), std::invalid_argument);
}

TEST(Jcs, DeepNestingThrows) {
  nlohmann::json shallow = 1;
  for (size_t i = 0; i < kMaxJsonDepth; ++i) shallow = nlohmann::json::array({shallow});
  EXPECT_NO_THROW(canonicalJson(shallow));
  nlohmann::json deep = nlohmann::json::array({shallow});
  EXPECT_THROW(canonicalJson(deep), std::invalid_argument);
  EXPECT_THROW(canonicalJsonNested(shallow, 1), std::invalid_argument);
  EXPECT_NO_THROW(canonicalJsonNested(shallow[0], 1));
}

// canonicalJson and parseStrictJson agree on the limit, empty innermost containers included.
TEST(Jcs, DepthLimitMatchesStrictParser) {
  for (size_t depth : {kMaxJsonDepth, kMaxJsonDepth + 1}) {
    std::string text = std::string(depth, '[') + std::string(depth, ']');
    auto parsed = parseStrictJson(text, nullptr);
    auto value = nlohmann::json::parse(text);
    bool canonicalAccepts = true;
    try {
      EXPECT_EQ(canonicalJson(value), text);
    } catch (const std::invalid_argument&) {
      canonicalAccepts = false;
    }
    EXPECT_EQ(parsed.has_value(), depth <= kMaxJsonDepth);
    EXPECT_EQ(canonicalAccepts, depth <= kMaxJsonDepth);
  }
}

TEST(StrictJson, AcceptsOrdinaryJson) {
  auto value = parseStrictJson(R"({"a":[1,{"b":2}],"c":{"b":3}})", nullptr);
  ASSERT_TRUE(value.has_value());
  EXPECT_EQ((*value)["c"]["b"], 3);
}

TEST(StrictJson, RejectsDuplicateMemberNames) {
  std::string error;
  EXPECT_FALSE(parseStrictJson(R"({"a":1,"a":2})", &error).has_value());
  EXPECT_NE(error.find("duplicate member name \"a\""), std::string::npos) << error;
  EXPECT_FALSE(parseStrictJson(R"({"x":[{"a":1,"b":{"c":1,"c":1}}]})", &error).has_value());
  // The same name in sibling objects is fine.
  EXPECT_TRUE(parseStrictJson(R"([{"a":1},{"a":2}])", &error).has_value());
}

TEST(StrictJson, RejectsMalformedInput) {
  std::string error;
  const char* bad[] = {"",         "{",       "{} x", "{\"a\":1,}", "[1e400]", "\"\\ud800\"",
                       "\"\xff\"", "{'a':1}", "nul"};
  for (const char* text : bad) {
    error.clear();
    EXPECT_FALSE(parseStrictJson(text, &error).has_value()) << text;
    EXPECT_FALSE(error.empty()) << text;
  }
}

TEST(StrictJson, RejectsDeepNesting) {
  std::string ok(kMaxJsonDepth, '[');
  ok += std::string(kMaxJsonDepth, ']');
  EXPECT_TRUE(parseStrictJson(ok, nullptr).has_value());
  std::string deep(100000, '[');
  std::string error;
  EXPECT_FALSE(parseStrictJson(deep, &error).has_value());
  EXPECT_EQ(error, "nesting too deep");
}

TEST(QuotedForMessage, EscapesAndShortens) {
  EXPECT_EQ(quotedForMessage("abc"), "\"abc\"");
  EXPECT_EQ(quotedForMessage("\x1b[31m\u00e9"), "\"\\u001b[31m\\u00e9\"");
  std::string shown = quotedForMessage(std::string(500, 'x'));
  EXPECT_LT(shown.size(), 80u);
  EXPECT_NE(shown.find("...\""), std::string::npos);
}

}  // namespace
}  // namespace cellos::core
