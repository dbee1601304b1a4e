// Engine.IO's WebSocket transport: the handler of a ws::WebSocketConnection that decodes each
// message into an Engine.IO packet and hands it to its session through TransportEvents
// (session.hpp). It holds the session by weak_ptr (docs/architecture.md, "Lifetimes"): a session
// that has gone away simply gets no more events.
#pragma once

#include <functional>
#include <memory>
#include <string_view>

#include "eio/options.hpp"
#include "eio/session.hpp"
#include "ws/connection.hpp"

namespace steerchat::eio {

class WsTransport final : public ws::MessageHandler {
  public:
    // Makes the session of a connection opened without one (the handshake over WebSocket).
    using Opener = std::function<std::shared_ptr<TransportEvents>(ws::WebSocketConnection&)>;

    // The probe of an existing session's upgrade.
    WsTransport(std::weak_ptr<TransportEvents> session, int protocol, Stats& stats)
        : session_(std::move(session)), protocol_(protocol), stats_(stats) {}
    // A new session over WebSocket, made by `open` when the connection opens.
    WsTransport(Opener open, int protocol, Stats& stats)
        : open_(std::move(open)), protocol_(protocol), stats_(stats) {}

    void on_open(ws::WebSocketConnection& conn) override;
    void on_message(ws::WebSocketConnection& conn, ws::Opcode opcode,
                    std::string_view payload) override;
    void on_close(ws::WebSocketConnection& conn, std::uint16_t code) override;

  private:
    Opener open_;
    std::weak_ptr<TransportEvents> session_;
    int protocol_;
    Stats& stats_;
};

// A WebSocket for a session that is already on WebSocket (or moving to it): accepted, then
// closed at once without a status code, as Node's engine.io does ("transport had already been
// upgraded" / "has already been trying to upgrade": websocket.close()).
class RefusedTransport final : public ws::MessageHandler {
  public:
    void on_open(ws::WebSocketConnection& conn) override;
    void on_message(ws::WebSocketConnection&, ws::Opcode, std::string_view) override {}
};

}  // namespace steerchat::eio
