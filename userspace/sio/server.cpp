#include "sio/server.hpp"

#include <cstring>

#include <boost/asio/post.hpp>
#include <boost/json/serialize.hpp>

#include "net/router.hpp"
#include "net/worker.hpp"

namespace steerchat::sio {

Encoded encode_event(std::string_view nsp, const boost::json::array& args) {
    Packet p;
    p.type = Type::event;
    p.nsp = std::string(nsp);
    p.data = boost::json::value(args);
    Encoded e;
    e.text = encode(p);
    e.frame =
        ws::SharedFrame::build(ws::Opcode::text, e.text.size() + 1, [&](std::span<std::uint8_t> b) {
            b[0] = '4';
            std::memcpy(b.data() + 1, e.text.data(), e.text.size());
        });
    return e;
}

// ---------------------------------------------------------------------------------------------
// One Engine.IO session seen by Socket.IO (the session's upper layer; Node's socket.io calls it
// Client): the namespace sockets multiplexed over it, a binary packet being assembled, the
// connect timeout.

class Multiplexer final : public eio::SessionHandler {
  public:
    Multiplexer(Server& server, eio::Session& engine)
        : server_(server), engine_(engine), connect_timer_(server.engine_.worker().io()) {
        if (protocol() == 4) {
            // socket.io 2.x: the server connects "/" unprompted.
            if (const Namespace* ns = server_.find("/")) {
                connect(*ns, "/", boost::json::object{});
                return;
            }
        }
        connect_timer_.expires_after(server_.options_.connect_timeout);
        // The session owns this object (its upper layer) while it is open: a session that is
        // gone or closed means this object may be gone too.
        connect_timer_.async_wait(
            [this, session = engine_.weak_from_this()](const boost::system::error_code& ec) {
                const auto s = session.lock();
                if (ec || !s || !s->is_open() || !sockets_.empty() || ever_connected_) return;
                ++server_.stats_->connect_timeouts;
                engine_.close("connect timeout");
            });
    }

    int protocol() const noexcept { return engine_.protocol() >= 4 ? 5 : 4; }
    eio::Session& engine() noexcept { return engine_; }
    Server& server() noexcept { return server_; }

    void on_message(eio::Session&, std::string_view data, bool binary) override {
        if (binary) {
            if (!pending_) return invalid("unexpected binary attachment");
            attachments_.emplace_back(data);
            if (attachments_.size() == pending_->attachments) dispatch_pending();
            return;
        }
        if (pending_) return invalid("text packet while binary attachments were expected");
        std::string why;
        auto p = decode(data, &why);
        if (!p) return invalid(why);
        handle(std::move(*p));
    }

    // The sockets that leave are freed on the next loop turn, not here: a socket's handler may be
    // on the stack (it disconnected its socket, or closed the session).
    void on_close(eio::Session&, std::string_view reason) override {
        connect_timer_.cancel();
        auto sockets = std::move(sockets_);
        for (auto& s : sockets)
            end(*s, reason);
        boost::asio::post(connect_timer_.get_executor(), [sockets = std::move(sockets)] {});
    }

    void remove(Socket& s, std::string_view reason) {
        for (auto it = sockets_.begin(); it != sockets_.end(); ++it) {
            if (it->get() != &s) continue;
            auto owned = std::move(*it);
            sockets_.erase(it);
            end(*owned, reason);
            boost::asio::post(connect_timer_.get_executor(), [owned = std::move(owned)] {});
            return;
        }
    }

    void send_text(std::string_view text) { engine_.send(text); }

  private:
    void end(Socket& s, std::string_view reason) {
        if (!s.connected_) return;
        s.connected_ = false;
        --server_.stats_->sockets;
        if (s.handler_) s.handler_->on_disconnect(s, reason);
    }

    void invalid(std::string_view) {
        ++server_.stats_->invalid_packets;
        pending_.reset();
        attachments_.clear();
        engine_.close("parse error");
    }

    Socket* find(std::string_view nsp) {
        for (auto& s : sockets_)
            if (s->nsp_ == nsp) return s.get();
        return nullptr;
    }

    void connect(const Namespace& ns, std::string_view nsp, const boost::json::object& auth) {
        ever_connected_ = true;
        connect_timer_.cancel();
        auto owned = std::shared_ptr<Socket>(new Socket(*this, std::string(nsp), eio::random_id()));
        Socket& s = *owned;
        sockets_.push_back(std::move(owned));
        ++server_.stats_->sockets;
        ++server_.stats_->connects;
        Packet reply;
        reply.type = Type::connect;
        reply.nsp = std::string(nsp);
        if (protocol() >= 5) reply.data = boost::json::object{{"sid", s.id_}};
        engine_.send(encode(reply));
        if (ns.on_connect) s.handler_ = ns.on_connect(s, auth);
    }

    void handle(Packet&& p) {
        switch (p.type) {
            case Type::connect: {
                std::string_view nsp = p.nsp;
                if (protocol() == 4) nsp = nsp.substr(0, nsp.find('?'));
                if (find(nsp)) return;  // already connected: nothing to do
                const Namespace* ns = server_.find(nsp);
                if (!ns) {
                    ++server_.stats_->connect_errors;
                    Packet err;
                    err.type = Type::connect_error;
                    err.nsp = std::string(nsp);
                    if (protocol() >= 5)
                        err.data = boost::json::object{{"message", "Invalid namespace"}};
                    else
                        err.data = boost::json::string("Invalid namespace");
                    engine_.send(encode(err));
                    return;
                }
                boost::json::object auth;
                if (p.data && p.data->is_object()) auth = p.data->as_object();
                connect(*ns, nsp, auth);
                return;
            }
            case Type::disconnect:
                if (Socket* s = find(p.nsp)) remove(*s, "client namespace disconnect");
                return;
            case Type::event:
            case Type::binary_event:
                if (p.attachments > server_.options_.max_attachments)
                    return invalid("too many attachments");
                if (p.attachments > 0 && !placeholders_valid(*p.data, p.attachments))
                    return invalid("bad placeholder");
                if (p.type == Type::binary_event && p.attachments > 0) {
                    pending_ = std::move(p);
                    attachments_.clear();
                    return;
                }
                dispatch(p, {});
                return;
            case Type::ack:
            case Type::binary_ack:
                // We never ask clients for acknowledgements: nothing waits for one.
                if (p.type == Type::binary_ack && p.attachments > 0) {
                    if (p.attachments > server_.options_.max_attachments)
                        return invalid("too many attachments");
                    pending_ = std::move(p);
                    attachments_.clear();
                }
                return;
            case Type::connect_error:
                return invalid("CONNECT_ERROR from a client");
        }
    }

    void dispatch_pending() {
        Packet p = std::move(*pending_);
        pending_.reset();
        auto attachments = std::move(attachments_);
        attachments_.clear();
        if (p.type == Type::binary_event) dispatch(p, attachments);
    }

    void dispatch(const Packet& p, std::span<const std::string> attachments) {
        Socket* s = find(p.nsp);
        if (!s || !s->handler_) return;  // not connected to that namespace: ignored
        ++server_.stats_->events_in;
        s->handler_->on_event(*s, p.data->as_array(), attachments, p.id);
    }

    Server& server_;
    eio::Session& engine_;
    std::vector<std::shared_ptr<Socket>> sockets_;
    std::optional<Packet> pending_;  // a binary packet waiting for its attachments
    std::vector<std::string> attachments_;
    boost::asio::steady_timer connect_timer_;
    bool ever_connected_ = false;
};

// ---------------------------------------------------------------------------------------------
// Socket

int Socket::protocol() const noexcept {
    return mux_.protocol();
}

eio::Session& Socket::engine() noexcept {
    return mux_.engine();
}

void Socket::send_packet(const Packet& p, std::span<const std::string> attachments) {
    if (!connected_) return;
    mux_.send_text(encode(p));
    for (const auto& a : attachments)
        mux_.engine().send(a, true);
}

void Socket::emit(const boost::json::array& args, std::span<const std::string> attachments) {
    Packet p;
    p.type = attachments.empty() ? Type::event : Type::binary_event;
    p.nsp = nsp_;
    p.data = boost::json::value(args);
    p.attachments = attachments.size();
    send_packet(p, attachments);
}

void Socket::emit(std::string_view event, boost::json::value arg) {
    boost::json::array args;
    args.reserve(2);
    args.emplace_back(event);
    args.push_back(std::move(arg));
    emit(args);
}

void Socket::send(const Encoded& e) {
    if (!connected_) return;
    mux_.engine().send_shared(e.text, e.frame);
}

void Socket::ack(std::uint64_t id, const boost::json::array& args,
                 std::span<const std::string> attachments) {
    Packet p;
    p.type = attachments.empty() ? Type::ack : Type::binary_ack;
    p.nsp = nsp_;
    p.id = id;
    p.data = boost::json::value(args);
    p.attachments = attachments.size();
    send_packet(p, attachments);
}

void Socket::disconnect() {
    if (!connected_) return;
    Packet p;
    p.type = Type::disconnect;
    p.nsp = nsp_;
    mux_.send_text(encode(p));
    mux_.remove(*this, "server namespace disconnect");
}

// ---------------------------------------------------------------------------------------------
// Server

Server::Server(net::Worker& worker, eio::Options eio_options, Options options,
               std::vector<Namespace> namespaces)
    : options_(options),
      namespaces_(std::move(namespaces)),
      stats_(&worker.metrics()),
      engine_(worker, std::move(eio_options),
              [this](eio::Session& s) { return std::make_unique<Multiplexer>(*this, s); }) {}

const Namespace* Server::find(std::string_view name) const {
    for (const auto& ns : namespaces_)
        if (ns.name == name) return &ns;
    return nullptr;
}

void Server::append_metrics(std::string& out) const {
    engine_.append_metrics(out);
    const auto peers = const_cast<Server*>(this)->engine_.worker().metrics().peers(*stats_);
    metrics::Text t(out);
    auto metric = [&](const char* name, const char* type, const char* help,
                      metrics::Counter Stats::*field) {
        t.per_worker(name, type, help, peers, field);
    };
    metric("steerchat_sio_sockets", "gauge", "Socket.IO namespace connections.", &Stats::sockets);
    metric("steerchat_sio_connects_total", "counter", "Socket.IO CONNECTs accepted.",
           &Stats::connects);
    metric("steerchat_sio_connect_errors_total", "counter",
           "Socket.IO CONNECTs refused (unknown namespace).", &Stats::connect_errors);
    metric("steerchat_sio_events_total", "counter", "Socket.IO events received.",
           &Stats::events_in);
    metric("steerchat_sio_invalid_packets_total", "counter",
           "Engine.IO sessions closed for an invalid Socket.IO packet.", &Stats::invalid_packets);
    metric("steerchat_sio_connect_timeouts_total", "counter",
           "Engine.IO sessions closed for sending no CONNECT in time.", &Stats::connect_timeouts);
}

}  // namespace steerchat::sio
