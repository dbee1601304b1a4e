// Base64 (RFC 4648, standard alphabet "A-Za-z0-9+/", '=' padding) as Engine.IO uses it for binary
// packets in text payloads ("bAQIDBA==" in v4, "b4AQIDBA==" in v3).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace steerchat::eio {

// Appends the padded base64 encoding of `bytes` to `out`.
void base64_append(std::string& out, std::string_view bytes);

// The padded base64 encoding of `bytes`.
std::string base64_encode(std::string_view bytes);

// Decodes padded base64. Rejects (nullopt) a length that is not a multiple of 4, a character
// outside the alphabet, '=' anywhere but the last one or two positions, and non-zero bits left
// over before the padding (non-canonical input). "" decodes to "".
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace steerchat::eio
