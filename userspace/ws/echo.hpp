// The /echo endpoint's handler: every text or binary message goes back unchanged, as one frame
// of the same type (for conformance tests and latency probes).
#pragma once

#include <string_view>

#include "ws/connection.hpp"

namespace steerchat::ws {

class EchoHandler final : public MessageHandler {
  public:
    void on_message(WebSocketConnection& conn, Opcode opcode, std::string_view payload) override {
        conn.send(SharedFrame::make(opcode, as_bytes(payload)));
    }
};

}  // namespace steerchat::ws
