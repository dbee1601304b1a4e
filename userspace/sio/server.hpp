// Socket.IO (protocol v5 for Engine.IO 4 clients, v4 for Engine.IO 3 / socket.io-client 2.x) on
// top of the Engine.IO server: namespaces, CONNECT (with an auth payload in v5) and its reply,
// EVENT and ACK, BINARY_EVENT and BINARY_ACK with their attachments, DISCONNECT (the Engine.IO
// session stays open), CONNECT_ERROR for an unknown namespace, a connect timeout, and closing the
// Engine.IO session on any invalid packet.
//
// An application registers namespaces; each connected client of a namespace is a sio::Socket
// driven by the application's EventHandler.
//
// Threading: the worker's event loop thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/steady_timer.hpp>
#include <boost/json/array.hpp>
#include <boost/json/value.hpp>

#include "eio/server.hpp"
#include "sio/packet.hpp"
#include "ws/frame.hpp"

namespace steerchat::sio {

class Socket;
class Server;
class Multiplexer;

// The application side of one client in one namespace.
struct EventHandler {
    virtual ~EventHandler() = default;
    // An EVENT: args[0] is the event name (a string or a number), the rest its arguments.
    // Binary arguments are {"_placeholder":true,"num":N} objects standing for attachments[N].
    // `ack` is set when the client waits for an acknowledgement (answer with Socket::ack).
    virtual void on_event(Socket& socket, const boost::json::array& args,
                          std::span<const std::string> attachments,
                          std::optional<std::uint64_t> ack) = 0;
    // Exactly once: the client left the namespace, or the connection ended.
    virtual void on_disconnect(Socket& /*socket*/, std::string_view /*reason*/) {}
};

struct Namespace {
    std::string name;  // "/", "/admin", ...
    // A client connected; `auth` is its CONNECT payload ({} when none). The CONNECT reply is
    // already sent, so the handler may emit at once.
    std::function<std::unique_ptr<EventHandler>(Socket&, const boost::json::object& auth)>
        on_connect;
};

struct Options {
    // Time from the Engine.IO open to the first CONNECT; then the session is closed.
    std::chrono::milliseconds connect_timeout{45'000};
    std::size_t max_attachments = 64;  // per packet; more closes the session
};

// An event encoded once for many sockets of one namespace: the Socket.IO text and its
// WebSocket frame ("4" + text). Binary-free.
struct Encoded {
    std::string text;
    ws::SharedFrame frame;
};
Encoded encode_event(std::string_view nsp, const boost::json::array& args);

// In the worker's slot block (metrics/metrics.hpp).
struct Stats {
    metrics::Counter sockets;          // gauge: namespace connections
    metrics::Counter connects;         // CONNECTs accepted
    metrics::Counter connect_errors;   // CONNECTs refused (unknown namespace)
    metrics::Counter events_in;        // EVENT / BINARY_EVENT handled
    metrics::Counter invalid_packets;  // sessions closed for an invalid packet
    metrics::Counter connect_timeouts;
};

// One client in one namespace. Owned by shared_ptr (docs/architecture.md, "Lifetimes"): its
// Multiplexer holds it while it is connected; work that outlives a callback (a handler's timer)
// holds it by weak_ptr and checks connected().
class Socket : public std::enable_shared_from_this<Socket> {
  public:
    const std::string& id() const noexcept { return id_; }
    const std::string& nsp() const noexcept { return nsp_; }
    // 5 for Engine.IO 4 clients (socket.io 3/4), 4 for Engine.IO 3 (socket.io 2).
    int protocol() const noexcept;
    eio::Session& engine() noexcept;
    bool connected() const noexcept { return connected_; }

    // EVENT (BINARY_EVENT when attachments are given: args then hold the placeholders).
    void emit(const boost::json::array& args, std::span<const std::string> attachments = {});
    void emit(std::string_view event, boost::json::value arg);
    // A pre-encoded event of this socket's namespace (encode_event).
    void send(const Encoded& e);
    // ACK (BINARY_ACK with attachments).
    void ack(std::uint64_t id, const boost::json::array& args,
             std::span<const std::string> attachments = {});
    // Server-side disconnect from this namespace (DISCONNECT packet; on_disconnect follows).
    void disconnect();

  private:
    friend class Multiplexer;
    Socket(Multiplexer& mux, std::string nsp, std::string id)
        : mux_(mux), nsp_(std::move(nsp)), id_(std::move(id)) {}
    void send_packet(const Packet& p, std::span<const std::string> attachments);

    Multiplexer& mux_;
    std::string nsp_;
    std::string id_;
    std::unique_ptr<EventHandler> handler_;
    bool connected_ = true;
};

class Server {
  public:
    // Registers an Engine.IO server on `worker` at eio_options.path.
    Server(net::Worker& worker, eio::Options eio_options, Options options,
           std::vector<Namespace> namespaces);
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    eio::Server& engine() noexcept { return engine_; }
    const Stats& stats() const noexcept { return *stats_; }
    const Options& options() const noexcept { return options_; }
    // A reload: the connect timeout and attachment limit for sessions from now on.
    void update_options(const Options& options) { options_ = options; }
    void append_metrics(std::string& out) const;

  private:
    friend class Multiplexer;
    friend class Socket;
    const Namespace* find(std::string_view name) const;

    Options options_;
    std::vector<Namespace> namespaces_;
    metrics::Cell<Stats> stats_;  // in the worker's slot block
    eio::Server engine_;          // last: its sessions' handlers point into the members above
};

}  // namespace steerchat::sio
