// A straightforward UTF-8 check, independent of the validator under test (userspace/text/utf8):
// decodes each code point and applies the RFC 3629 rules explicitly (no overlongs, no
// surrogates, nothing above U+10FFFF). Used by the unit tests and the fuzzer as the oracle.
#pragma once

#include <cstddef>
#include <cstdint>

namespace steerchat::test_support {

inline bool reference_utf8(const std::uint8_t* b, std::size_t n) {
    std::size_t i = 0;
    while (i < n) {
        const std::uint8_t c = b[i];
        if (c < 0x80) {
            ++i;
            continue;
        }
        std::size_t len;
        std::uint32_t cp;
        if ((c & 0xE0) == 0xC0) {
            len = 2;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + len > n) return false;
        for (std::size_t k = 1; k < len; ++k) {
            if ((b[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (b[i + k] & 0x3F);
        }
        const std::uint32_t min = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += len;
    }
    return true;
}

}  // namespace steerchat::test_support
