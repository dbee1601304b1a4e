#include "eio/server.hpp"

#include <sys/random.h>

#include <algorithm>
#include <cstring>
#include <span>

#include <fmt/core.h>
#include <boost/asio/post.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "net/worker.hpp"
#include "text/base64.hpp"
#include "util/log.hpp"
#include "ws/handshake.hpp"

namespace http = boost::beast::http;

namespace steerchat::eio {

namespace {

// The value of `key` in a query string ("" and false when absent). No percent-decoding: every
// value Engine.IO reads (EIO, transport, sid, b64) is plain.
bool query_value(std::string_view query, std::string_view key, std::string_view& out) {
    while (!query.empty()) {
        const auto amp = query.find('&');
        std::string_view part = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
        const auto eq = part.find('=');
        if (part.substr(0, eq) != key) continue;
        out = eq == std::string_view::npos ? std::string_view{} : part.substr(eq + 1);
        return true;
    }
    return false;
}

std::string_view error_message(int code) {
    switch (code) {
        case 0:
            return "Transport unknown";
        case 1:
            return "Session ID unknown";
        case 2:
            return "Bad handshake method";
        case 3:
            return "Bad request";
        case 4:
            return "Forbidden";
        case 5:
            return "Unsupported protocol version";
    }
    return "Bad request";
}

bool origin_listed(const std::vector<std::string>& list, std::string_view origin) {
    for (const auto& o : list)
        if (o == "*" || o == origin) return true;
    return false;
}

// A text WebSocket frame "<type><data>", written in place.
ws::SharedFrame text_frame(char type, std::string_view data) {
    return ws::SharedFrame::build(ws::Opcode::text, data.size() + 1,
                                  [&](std::span<std::uint8_t> b) {
                                      b[0] = static_cast<std::uint8_t>(type);
                                      if (!data.empty())
                                          std::memcpy(b.data() + 1, data.data(), data.size());
                                  });
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The WebSocket transport of a session (or the probe of an upgrade, or a session being opened
// over WebSocket directly).

class WsTransport final : public ws::MessageHandler {
  public:
    // A new session over WebSocket: opened in on_open.
    WsTransport(Server& server, int protocol, std::string query, std::string origin)
        : server_(server),
          protocol_(protocol),
          query_(std::move(query)),
          origin_(std::move(origin)) {}
    // The upgrade of an existing polling session.
    WsTransport(Server& server, Socket& socket)
        : server_(server),
          socket_(&socket),
          protocol_(socket.protocol()),
          session_alive_(socket.alive_) {}

    void on_open(ws::WebSocketConnection& conn) override {
        if (socket_) {  // upgrade probe
            // The session may have ended (and been freed) while the 101 was being written.
            if (!*session_alive_ || !socket_->is_open() || socket_->ws_ ||
                socket_->transport_ != Transport::polling) {
                // Ended meanwhile, or another WebSocket got there first: as Node's engine.io,
                // close it at once without a status code.
                socket_ = nullptr;
                ++server_.stats_.websockets_refused;
                conn.close(ws::close_code::no_status, {});
                return;
            }
            socket_->ws_ = conn.shared_from_this();
            socket_->deadline_.expires_after(server_.options_.upgrade_timeout);
            socket_->deadline_.async_wait([s = socket_](const boost::system::error_code& ec) {
                if (ec || !s->is_open() || s->transport_ != Transport::polling || !s->ws_) return;
                // No probe or no upgrade packet in time: drop the probe, keep polling.
                auto probe = std::move(s->ws_);
                static_cast<WsTransport&>(probe->handler()).detach();
                s->upgrading_ = false;
                probe->close(ws::close_code::normal, "upgrade timeout");
            });
            return;
        }
        socket_ = server_.open_session(protocol_, Transport::websocket, conn.remote_endpoint(),
                                       query_, origin_, conn.shared_from_this());
    }

    void on_message(ws::WebSocketConnection& conn, ws::Opcode opcode,
                    std::string_view payload) override {
        if (!socket_) return;
        auto p = decode_ws_frame(payload, opcode == ws::Opcode::binary, protocol_);
        if (!p) {
            ++server_.stats_.invalid_packets;
            if (socket_->ws_.get() == &conn && socket_->transport_ == Transport::polling) {
                // A bad probe: drop it, the session keeps polling.
                drop_probe(conn);
                return;
            }
            socket_->end("parse error", Socket::PollEnd::close_packet);
            return;
        }
        socket_->on_packet(Transport::websocket, *p);
    }

    void on_close(ws::WebSocketConnection& conn, std::uint16_t) override {
        if (!socket_) return;
        Socket* s = std::exchange(socket_, nullptr);
        if (s->ws_.get() != &conn) return;
        if (s->transport_ == Transport::websocket) {
            s->ws_.reset();
            s->end("transport close", Socket::PollEnd::none);
        } else {  // the probe went away before the upgrade
            s->ws_.reset();
            s->upgrading_ = false;
            s->deadline_.cancel();
        }
    }

    void drop_probe(ws::WebSocketConnection& conn) {
        Socket* s = std::exchange(socket_, nullptr);
        s->ws_.reset();
        s->upgrading_ = false;
        s->deadline_.cancel();
        conn.close(ws::close_code::normal, "upgrade failed");
    }

    // The session no longer uses this connection: its events are ignored from now on.
    void detach() noexcept { socket_ = nullptr; }

  private:
    Server& server_;
    Socket* socket_ = nullptr;
    int protocol_;
    std::string query_;
    std::string origin_;
    std::shared_ptr<bool> session_alive_;  // a probe's session (upgrade)
};

// A WebSocket for a session that is already on WebSocket (or moving to it): accepted, then
// closed at once without a status code, as Node's engine.io does ("transport had already been
// upgraded" / "has already been trying to upgrade": websocket.close()).
class RefusedTransport final : public ws::MessageHandler {
  public:
    void on_open(ws::WebSocketConnection& conn) override {
        conn.close(ws::close_code::no_status, {});
    }
    void on_message(ws::WebSocketConnection&, ws::Opcode, std::string_view) override {}
};

// ---------------------------------------------------------------------------------------------
// Socket

Socket::Socket(Server& server, std::string id, int protocol, Transport transport,
               boost::asio::ip::tcp::endpoint remote)
    : server_(server),
      id_(std::move(id)),
      protocol_(protocol),
      transport_(transport),
      remote_(remote),
      heartbeat_(server.worker().io()),
      deadline_(server.worker().io()) {}

void Socket::start(std::unique_ptr<SocketHandler> handler) {
    handler_ = std::move(handler);
    arm_heartbeat();
}

void Socket::send(std::string_view data, bool binary) {
    if (state_ != State::open) return;
    ++server_.stats_.messages_out;
    queue('4', data, binary);
}

void Socket::send_shared(std::string_view data, const ws::SharedFrame& frame) {
    if (state_ != State::open) return;
    ++server_.stats_.messages_out;
    if (transport_ == Transport::websocket && ws_) {
        ws_->send(frame);
        return;
    }
    queue('4', data, false);
}

void Socket::close(std::string_view reason) {
    end(reason, PollEnd::close_packet);
}

void Socket::send_ws(char type, std::string_view data, bool binary) {
    if (!ws_) return;
    if (!binary) {
        ws_->send(text_frame(type, data));
    } else if (protocol_ >= 4) {
        ws_->send(ws::SharedFrame::binary(ws::as_bytes(data)));
    } else {
        ws_->send(ws::SharedFrame::build(
            ws::Opcode::binary, data.size() + 1, [&](std::span<std::uint8_t> b) {
                b[0] = static_cast<std::uint8_t>(type - '0');
                if (!data.empty()) std::memcpy(b.data() + 1, data.data(), data.size());
            }));
    }
}

void Socket::queue(char type, std::string_view data, bool binary) {
    if (transport_ == Transport::websocket) {
        send_ws(type, data, binary);
        return;
    }
    out_.push_back(Out{type, binary, std::string(data)});
    const std::size_t cost = data.size() + kQueuedOverhead;
    if (out_bytes_ == 0) server_.link_queued(*this);
    out_bytes_ += cost;
    server_.queued_total_ += cost;
    if (out_bytes_ > server_.options_.max_buffered_bytes) {
        ++server_.stats_.queue_overflows;
        if (server_.may_log())
            log::debug(
                "engine.io session {}: {} bytes queued and no poll (over --eio-max-queued); "
                "closing it (such notes at most every 5 s; all are counted in /metrics)",
                id_, out_bytes_);
        end("buffer overflow", PollEnd::close_packet);
        return;
    }
    if (server_.queued_total_ > server_.options_.max_buffered_total && !server_.trim_posted_) {
        server_.trim_posted_ = true;
        boost::asio::post(server_.worker().io(), [&server = server_] {
            server.trim_posted_ = false;
            server.trim_queues();
        });
    }
    if (poll_ && !upgrading_) schedule_flush();
}

void Socket::clear_out() {
    out_.clear();
    if (out_bytes_ == 0) return;
    server_.queued_total_ -= out_bytes_;
    out_bytes_ = 0;
    server_.unlink_queued(*this);
}

void Socket::schedule_flush() {
    if (flush_posted_) return;
    flush_posted_ = true;
    boost::asio::post(server_.worker().io(), [this, alive = alive_] {
        if (!*alive) return;
        flush_posted_ = false;
        if (poll_ && !out_.empty() && !upgrading_) answer_poll();
    });
}

void Socket::answer_poll(std::string_view single_packet) {
    auto ex = std::move(poll_);
    if (!ex) return;
    std::string body;
    if (!single_packet.empty()) {
        Packet p = text_packet(static_cast<PacketType>(single_packet[0]), single_packet.substr(1));
        if (protocol_ >= 4)
            append_payload_v4(body, p);
        else
            append_payload_v3_string(body, p);
    } else {
        for (const auto& o : out_) {
            Packet p = o.binary ? binary_message(o.data)
                                : text_packet(static_cast<PacketType>(o.type), o.data);
            if (protocol_ >= 4)
                append_payload_v4(body, p);
            else
                append_payload_v3_string(body, p);
        }
        clear_out();
    }
    ++server_.stats_.polls;
    ex->respond(server_.response(ex->request(), http::status::ok, std::move(body),
                                 "text/plain; charset=UTF-8"));
}

void Socket::on_poll(const std::shared_ptr<net::Exchange>& ex) {
    if (!polled_) {
        polled_ = true;
        deadline_.cancel();
    }
    if (poll_) {
        // A second concurrent poll: the protocol says the session is over.
        server_.error(ex, 3);
        end("overlapping polls", PollEnd::close_packet);
        return;
    }
    poll_ = ex;
    if (upgrading_) {
        // The client is moving to WebSocket: end its poll at once.
        answer_poll("6");
        noop_sent_ = true;
        return;
    }
    if (!out_.empty()) {
        answer_poll();
        return;
    }
    ex->on_abort([this, alive = alive_] {
        if (!*alive) return;
        poll_.reset();
        end("transport error", PollEnd::none);
    });
}

void Socket::on_post(const std::shared_ptr<net::Exchange>& ex) {
    const auto& req = ex->request();
    const std::string& body = req.body();
    if (body.size() > server_.options_.max_payload) {
        ++server_.stats_.errors;
        ex->respond(server_.response(req, http::status::payload_too_large,
                                     R"({"code":3,"message":"Bad request"})", "application/json"));
        end("payload too large", PollEnd::close_packet);
        return;
    }
    std::vector<Packet> packets;
    bool ok;
    if (protocol_ >= 4) {
        ok = decode_payload_v4(body, packets);
    } else {
        const std::string_view ct = req[http::field::content_type];
        ok = ct.starts_with("application/octet-stream") ? decode_payload_v3_binary(body, packets)
                                                        : decode_payload_v3_string(body, packets);
    }
    if (!ok) {
        ++server_.stats_.invalid_packets;
        server_.error(ex, 3);
        end("parse error", PollEnd::close_packet);
        return;
    }
    ++server_.stats_.posts;
    // Answer first: packet handlers may end the session.
    ex->respond(server_.response(req, http::status::ok, "ok", "text/html"));
    for (const auto& p : packets) {
        if (state_ != State::open) break;
        if (!on_packet(Transport::polling, p)) break;
    }
}

bool Socket::on_packet(Transport via, const Packet& p) {
    if (state_ != State::open) return false;
    if (protocol_ < 4) arm_heartbeat();  // v3: any packet proves the client alive
    const bool probe = via == Transport::websocket && transport_ == Transport::polling;
    if (probe) {
        auto& t = static_cast<WsTransport&>(ws_->handler());
        if (p.type == PacketType::ping && p.data == "probe" && !p.binary) {
            send_ws('3', "probe", false);
            upgrading_ = true;
            if (poll_) {
                answer_poll("6");
                noop_sent_ = true;
            }
            return true;
        }
        if (p.type == PacketType::upgrade && upgrading_) {
            deadline_.cancel();
            transport_ = Transport::websocket;
            upgrading_ = false;
            ++server_.stats_.upgrades;
            // A client that had no poll open never saw the noop that ends polling.
            if (!noop_sent_) send_ws('6', {}, false);
            for (const auto& o : out_)
                send_ws(o.type, o.data, o.binary);
            clear_out();
            if (poll_) answer_poll("6");
            return true;
        }
        // Anything else on a probe: drop the probe, the session keeps polling.
        t.drop_probe(*ws_);
        return true;
    }
    switch (p.type) {
        case PacketType::message:
            ++server_.stats_.messages_in;
            if (handler_) handler_->on_message(*this, p.data, p.binary);
            return state_ == State::open;
        case PacketType::ping:
            // v3 heartbeat (and harmless in v4): answer with the same data.
            queue('3', p.data, false);
            return true;
        case PacketType::pong:
            if (protocol_ >= 4 && awaiting_pong_) {
                awaiting_pong_ = false;
                arm_heartbeat();
            }
            return true;
        case PacketType::close:
            end("transport close", PollEnd::noop);
            return false;
        case PacketType::noop:
            return true;
        case PacketType::open:
        case PacketType::upgrade:
            break;
    }
    ++server_.stats_.invalid_packets;
    end("parse error", PollEnd::close_packet);
    return false;
}

void Socket::arm_heartbeat() {
    const auto& o = server_.options_;
    // v4: the pong is due ping_timeout after the ping was due (not after the timer ran late);
    // the next ping ping_interval after the pong. v3: the client's next ping (any packet) is due
    // ping_interval + ping_timeout after its last packet.
    if (protocol_ >= 4 && awaiting_pong_)
        heartbeat_.expires_at(heartbeat_.expiry() + o.ping_timeout);
    else
        heartbeat_.expires_after(protocol_ >= 4 ? o.ping_interval
                                                : o.ping_interval + o.ping_timeout);
    heartbeat_.async_wait([this, alive = alive_](const boost::system::error_code& ec) {
        if (ec || !*alive) return;
        on_heartbeat(ec);
    });
}

bool Socket::heartbeat_overdue() const {
    return (protocol_ < 4 || awaiting_pong_) &&
           boost::asio::steady_timer::clock_type::now() >= heartbeat_.expiry();
}

void Socket::on_heartbeat(const boost::system::error_code&) {
    if (state_ != State::open) return;
    if (protocol_ >= 4 && !awaiting_pong_) {
        awaiting_pong_ = true;
        queue('2', {}, false);
        if (state_ == State::open) arm_heartbeat();
        return;
    }
    ++server_.stats_.ping_timeouts;
    end("ping timeout", PollEnd::close_packet);
}

void Socket::end(std::string_view reason, PollEnd poll_end) {
    if (state_ != State::open) return;
    state_ = State::closed;
    heartbeat_.cancel();
    deadline_.cancel();
    if (poll_) {
        if (poll_end == PollEnd::close_packet)
            answer_poll("1");
        else if (poll_end == PollEnd::noop)
            answer_poll("6");
        else
            poll_.reset();
    }
    if (ws_) {
        auto conn = std::move(ws_);
        static_cast<WsTransport&>(conn->handler()).detach();
        if (transport_ == Transport::websocket && poll_end == PollEnd::close_packet) {
            ws_ = conn;
            send_ws('1', {}, false);
            ws_.reset();
        }
        conn->close(ws::close_code::normal, {});
    }
    clear_out();
    if (handler_) handler_->on_close(*this, reason);
    server_.erase(*this);
}

// ---------------------------------------------------------------------------------------------
// Server

Server::Server(net::Worker& worker, Options options, Factory factory)
    : worker_(worker), options_(std::move(options)), factory_(std::move(factory)) {
    ws_options_ = worker_.config().websocket;
    ws_options_.max_message_size = std::max<std::size_t>(options_.max_payload, 16);
    // A page allowed to poll cross-origin (CORS) may also open the WebSocket.
    if (!options_.cors_origins.empty()) {
        ws_origins_ = worker_.config().allowed_origins;
        ws_origins_.insert(ws_origins_.end(), options_.cors_origins.begin(),
                           options_.cors_origins.end());
    }
    worker_.add_http_route(options_.path,
                           [this](const std::shared_ptr<net::Exchange>& ex) { handle(ex); });
    worker_.add_stop_hook([this] {
        stopping_ = true;
        close_all();
    });
}

Server::~Server() {
    for (auto& [id, s] : sessions_)
        *s->alive_ = false;
    for (auto& s : graveyard_)
        *s->alive_ = false;
}

void Server::close_all() {
    std::vector<Socket*> all;
    all.reserve(sessions_.size());
    for (auto& [id, s] : sessions_)
        all.push_back(s.get());
    for (auto* s : all)
        s->close("server shutting down");
}

void Server::erase(Socket& s) {
    auto it = sessions_.find(s.id_);
    if (it == sessions_.end()) return;
    if (const auto ip = per_ip_.find(addr_key(s.remote_)); ip != per_ip_.end() && --ip->second == 0)
        per_ip_.erase(ip);
    *it->second->alive_ = false;
    graveyard_.push_back(std::move(it->second));
    sessions_.erase(it);
    stats_.sessions = sessions_.size();
    if (reap_posted_) return;
    reap_posted_ = true;
    boost::asio::post(worker_.io(), [this] {
        reap_posted_ = false;
        graveyard_.clear();
    });
}

Server::AddrKey Server::addr_key(const boost::asio::ip::tcp::endpoint& remote) {
    AddrKey k;
    const auto a = remote.address();
    if (a.is_v4() || (a.is_v6() && a.to_v6().is_v4_mapped())) {
        const auto v4 =
            a.is_v4() ? a.to_v4()
                      : boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, a.to_v6());
        const auto b = v4.to_bytes();
        std::copy(b.begin(), b.end(), k.bytes.begin());
        k.bytes[16] = 4;
    } else {
        const auto b = a.to_v6().to_bytes();
        std::copy(b.begin(), b.begin() + 8, k.bytes.begin());  // the /64
        k.bytes[16] = 6;
    }
    return k;
}

std::size_t Server::AddrHash::operator()(const AddrKey& k) const noexcept {
    return std::hash<std::string_view>{}(
        std::string_view(reinterpret_cast<const char*>(k.bytes.data()), k.bytes.size()));
}

bool Server::over_session_limit(const std::shared_ptr<net::Exchange>& ex) {
    if (options_.max_sessions_per_ip == 0) return false;
    const auto it = per_ip_.find(addr_key(ex->remote()));
    if (it == per_ip_.end() || it->second < options_.max_sessions_per_ip) return false;
    ++stats_.refused_sessions;
    // Engine.IO's error body and code 4 (what Node's allowRequest answers), status 429.
    const auto body = fmt::format(
        R"({{"code":4,"message":"Too many sessions from this address (at most {} per worker): )"
        R"(close some, or retry later"}})",
        options_.max_sessions_per_ip);
    ex->respond(response(ex->request(), http::status::too_many_requests, body, "application/json"));
    return true;
}

void Server::link_queued(Socket& s) noexcept {
    s.queued_prev_ = queued_tail_;
    s.queued_next_ = nullptr;
    if (queued_tail_)
        queued_tail_->queued_next_ = &s;
    else
        queued_head_ = &s;
    queued_tail_ = &s;
}

void Server::unlink_queued(Socket& s) noexcept {
    if (s.queued_prev_)
        s.queued_prev_->queued_next_ = s.queued_next_;
    else
        queued_head_ = s.queued_next_;
    if (s.queued_next_)
        s.queued_next_->queued_prev_ = s.queued_prev_;
    else
        queued_tail_ = s.queued_prev_;
    s.queued_prev_ = s.queued_next_ = nullptr;
}

void Server::trim_queues() {
    if (queued_total_ <= options_.max_buffered_total) return;
    const std::size_t before = queued_total_;
    std::size_t closed = 0;
    // Closing a session may queue packets to others (a chat user's offline): the loop goes on
    // until the total is under the limit.
    while (queued_total_ > options_.max_buffered_total && queued_head_) {
        Socket& s = *queued_head_;
        if (!s.is_open()) {
            s.clear_out();
            continue;
        }
        ++stats_.queue_evictions;
        ++closed;
        s.end("queue limit", Socket::PollEnd::close_packet);
    }
    if (may_log())
        log::warn(
            "engine.io: {} bytes queued for polling clients (over --eio-max-queued-total {}); "
            "closed the {} sessions that had waited longest for a poll, {} bytes remain (such "
            "notes at most every 5 s; all are counted in /metrics)",
            before, options_.max_buffered_total, closed, queued_total_);
}

bool Server::may_log() {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_log_ < std::chrono::seconds(5)) return false;
    last_log_ = now;
    return true;
}

std::string random_id() {
    std::uint8_t raw[15];
    std::size_t got = 0;
    while (got < sizeof raw) {
        const auto n = ::getrandom(raw + got, sizeof raw - got, 0);
        if (n > 0) got += static_cast<std::size_t>(n);
    }
    std::string id =
        text::base64_encode(std::string_view(reinterpret_cast<const char*>(raw), sizeof raw));
    for (auto& c : id) {  // URL-safe: ids travel in query strings
        if (c == '+') c = '-';
        if (c == '/') c = '_';
    }
    return id;
}

std::string Server::new_id() {
    for (;;) {
        std::string id = random_id();
        if (!sessions_.contains(id)) return id;
    }
}

net::Response Server::response(const net::Request& req, http::status status, std::string body,
                               std::string_view content_type) const {
    auto res = net::make_response(status, req.version(), req.keep_alive(), false, std::move(body),
                                  content_type);
    res.set(http::field::cache_control, "no-store");
    if (auto it = req.find(http::field::origin);
        it != req.end() && !options_.cors_origins.empty() &&
        origin_listed(options_.cors_origins, it->value())) {
        res.set(http::field::access_control_allow_origin, it->value());
        res.set(http::field::access_control_allow_credentials, "true");
        res.set(http::field::vary, "Origin");
    }
    return res;
}

void Server::error(const std::shared_ptr<net::Exchange>& ex, int code) {
    ++stats_.errors;
    const auto body = fmt::format(R"({{"code":{},"message":"{}"}})", code, error_message(code));
    ex->respond(response(ex->request(),
                         code == 4 ? http::status::forbidden : http::status::bad_request, body,
                         "application/json"));
}

void Server::handle(const std::shared_ptr<net::Exchange>& ex) {
    const auto& req = ex->request();
    const std::string_view target = req.target();
    const auto qpos = target.find('?');
    const std::string_view query =
        qpos == std::string_view::npos ? std::string_view{} : target.substr(qpos + 1);

    if (req.method() == http::verb::options) {  // CORS preflight
        auto res = response(req, http::status::no_content, {}, "text/plain");
        res.set(http::field::access_control_allow_methods, "GET, POST");
        if (auto it = req.find(http::field::access_control_request_headers); it != req.end())
            res.set(http::field::access_control_allow_headers, it->value());
        res.set(http::field::access_control_max_age, "86400");
        res.body().clear();
        res.prepare_payload();
        return ex->respond(std::move(res));
    }
    if (!options_.allowed_origins.empty()) {
        // Only browsers send Origin; a page from an origin nobody allowed is refused.
        auto it = req.find(http::field::origin);
        if (it != req.end() && !origin_listed(options_.allowed_origins, it->value()) &&
            !origin_listed(options_.cors_origins, it->value()))
            return error(ex, 4);
    }
    std::string_view v;
    int protocol = 0;
    if (query_value(query, "EIO", v)) {
        if (v == "4") protocol = 4;
        if (v == "3" && options_.allow_eio3) protocol = 3;
    }
    if (protocol == 0) return error(ex, 5);
    Transport transport;
    if (!query_value(query, "transport", v)) return error(ex, 0);
    if (v == "polling")
        transport = Transport::polling;
    else if (v == "websocket")
        transport = Transport::websocket;
    else
        return error(ex, 0);
    if (stopping_) return error(ex, 3);
    // transport=websocket without the upgrade headers: an invalid transport upgrade.
    if (transport == Transport::websocket &&
        !ws::header_has_token(req[http::field::upgrade], "websocket"))
        return error(ex, 3);

    std::string_view sid;
    if (!query_value(query, "sid", sid) || sid.empty()) {
        if (req.method() != http::verb::get) return error(ex, 2);
        return handshake(ex, protocol, transport);
    }
    auto it = sessions_.find(std::string(sid));
    if (it == sessions_.end()) return error(ex, 1);
    Socket& s = *it->second;
    if (s.heartbeat_overdue()) {
        // Its timeout is due and only its timer has not run yet: the session is over.
        ++stats_.ping_timeouts;
        s.end("ping timeout", Socket::PollEnd::close_packet);
        return error(ex, 1);
    }
    if (transport == Transport::websocket) {
        if (!options_.allow_upgrades) return error(ex, 3);
        if (s.transport_ != Transport::polling || s.ws_) {
            // Already on WebSocket, or an upgrade under way: accept, then close at once.
            ++stats_.websockets_refused;
            return ex->upgrade(std::make_unique<RefusedTransport>(), &ws_options_,
                               ws_origins_.empty() ? nullptr : &ws_origins_);
        }
        return upgrade(ex, s);
    }
    if (s.transport_ != Transport::polling) return error(ex, 3);
    if (req.method() == http::verb::get) return s.on_poll(ex);
    if (req.method() == http::verb::post) return s.on_post(ex);
    return error(ex, 3);
}

Socket* Server::open_session(int protocol, Transport transport,
                             const boost::asio::ip::tcp::endpoint& remote, std::string query,
                             std::string origin, std::shared_ptr<ws::WebSocketConnection> conn) {
    auto owned = std::unique_ptr<Socket>(new Socket(*this, new_id(), protocol, transport, remote));
    Socket& s = *owned;
    s.query_ = std::move(query);
    s.origin_ = std::move(origin);
    s.ws_ = std::move(conn);
    sessions_.emplace(s.id_, std::move(owned));
    ++per_ip_[addr_key(remote)];
    ++stats_.opened;
    stats_.sessions = sessions_.size();
    boost::json::object open;
    open["sid"] = s.id_;
    boost::json::array upgrades;
    if (transport == Transport::polling && options_.allow_upgrades)
        upgrades.emplace_back("websocket");
    open["upgrades"] = std::move(upgrades);
    open["pingInterval"] = options_.ping_interval.count();
    open["pingTimeout"] = options_.ping_timeout.count();
    open["maxPayload"] = options_.max_payload;
    s.queue('0', boost::json::serialize(open), false);
    if (transport == Transport::polling && options_.first_poll_timeout.count() > 0) {
        s.deadline_.expires_after(options_.first_poll_timeout);
        s.deadline_.async_wait([&s, alive = s.alive_](const boost::system::error_code& ec) {
            if (ec || !*alive || s.polled_ || !s.is_open()) return;
            ++s.server_.stats_.first_poll_timeouts;
            s.end("first poll timeout", Socket::PollEnd::close_packet);
        });
    }
    s.start(factory_ ? factory_(s) : nullptr);
    return s.is_open() ? &s : nullptr;
}

void Server::handshake(const std::shared_ptr<net::Exchange>& ex, int protocol,
                       Transport transport) {
    if (over_session_limit(ex)) return;
    const auto& req = ex->request();
    const std::string_view target = req.target();
    const auto qpos = target.find('?');
    std::string query(qpos == std::string_view::npos ? std::string_view{}
                                                     : target.substr(qpos + 1));
    std::string origin(req[http::field::origin]);
    if (transport == Transport::websocket) {
        ex->upgrade(
            std::make_unique<WsTransport>(*this, protocol, std::move(query), std::move(origin)),
            &ws_options_, ws_origins_.empty() ? nullptr : &ws_origins_);
        return;
    }
    Socket* s = open_session(protocol, transport, ex->remote(), std::move(query), std::move(origin),
                             nullptr);
    if (!s) return error(ex, 3);
    // The open packet, and whatever the upper layer queued on open, answer the handshake.
    s->poll_ = ex;
    s->answer_poll();
}

void Server::upgrade(const std::shared_ptr<net::Exchange>& ex, Socket& s) {
    if (!s.polled_) {  // an upgrade request counts as the first poll
        s.polled_ = true;
        s.deadline_.cancel();
    }
    ex->upgrade(std::make_unique<WsTransport>(*this, s), &ws_options_,
                ws_origins_.empty() ? nullptr : &ws_origins_);
}

void Server::append_metrics(std::string& out) const {
    const unsigned slot = worker_.config().slot;
    auto metric = [&](const char* name, const char* type, const char* help, std::uint64_t v) {
        net::append_metric(out, name, type, help, slot, v);
    };
    metric("steerchat_eio_sessions", "gauge", "Open Engine.IO sessions.", stats_.sessions);
    metric("steerchat_eio_sessions_total", "counter", "Engine.IO sessions opened.", stats_.opened);
    metric("steerchat_eio_upgrades_total", "counter",
           "Engine.IO sessions upgraded from polling to WebSocket.", stats_.upgrades);
    metric("steerchat_eio_polls_total", "counter", "Long polls answered.", stats_.polls);
    metric("steerchat_eio_posts_total", "counter", "Polling POST bodies accepted.", stats_.posts);
    metric("steerchat_eio_errors_total", "counter",
           "Requests answered with an Engine.IO error (unknown sid, bad transport, ...).",
           stats_.errors);
    metric("steerchat_eio_ping_timeouts_total", "counter",
           "Engine.IO sessions closed for a missed heartbeat.", stats_.ping_timeouts);
    metric("steerchat_eio_invalid_packets_total", "counter",
           "Engine.IO sessions closed for a malformed packet.", stats_.invalid_packets);
    metric("steerchat_eio_messages_in_total", "counter", "Engine.IO messages received.",
           stats_.messages_in);
    metric("steerchat_eio_messages_out_total", "counter", "Engine.IO messages sent.",
           stats_.messages_out);
    metric("steerchat_eio_queued_bytes", "gauge",
           "Bytes queued for polling clients between their polls (with bookkeeping).",
           queued_total_);
    metric(
        "steerchat_eio_refused_sessions_total", "counter",
        "Handshakes refused (429): too many sessions from the address (--eio-max-sessions-per-ip).",
        stats_.refused_sessions);
    metric("steerchat_eio_first_poll_timeouts_total", "counter",
           "Polling sessions closed for no poll or upgrade after the handshake "
           "(--eio-first-poll-timeout-ms).",
           stats_.first_poll_timeouts);
    metric("steerchat_eio_queue_overflows_total", "counter",
           "Polling sessions closed for too many bytes queued (--eio-max-queued).",
           stats_.queue_overflows);
    metric("steerchat_eio_queue_evictions_total", "counter",
           "Polling sessions closed because the worker held too many bytes queued for polling "
           "clients (--eio-max-queued-total): the longest waiting first.",
           stats_.queue_evictions);
    metric(
        "steerchat_eio_websockets_refused_total", "counter",
        "WebSockets for a session already on (or moving to) WebSocket: accepted, closed at once.",
        stats_.websockets_refused);
}

}  // namespace steerchat::eio
