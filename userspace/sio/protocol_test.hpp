// --protocol-test: what the public test suites of socketio/engine.io-protocol and
// socketio/socket.io-protocol (their test-suite/ folders) expect of the server they run against:
//   /engine.io/  a bare Engine.IO server that echoes every message (text and binary);
//   /socket.io/  Socket.IO with the namespaces "/" and "/custom": on connect the socket is sent
//                ["auth", <its CONNECT payload>]; event "message" is answered with
//                "message-back" and the same arguments (binary attachments included);
//                "message-with-ack" is acknowledged with its arguments.
// The suites also expect pingInterval 300, pingTimeout 200, maxPayload 1000000 (the caller's
// Engine.IO options) and a short connect timeout.
#pragma once

#include <memory>

#include "eio/server.hpp"
#include "sio/server.hpp"

namespace steerchat::sio {

class ProtocolTest {
  public:
    ProtocolTest(net::Worker& worker, const eio::Options& engine_options,
                 const Options& sio_options);
    void append_metrics(std::string& out) const { sio_.append_metrics(out); }

  private:
    eio::Server echo_;
    Server sio_;
};

}  // namespace steerchat::sio
