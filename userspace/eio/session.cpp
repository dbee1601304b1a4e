#include "eio/session.hpp"

#include <algorithm>
#include <cstring>
#include <span>

#include <boost/asio/post.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "eio/http.hpp"
#include "eio/ws_transport.hpp"
#include "util/log.hpp"

namespace http = boost::beast::http;

namespace steerchat::eio {

namespace {

using State = Session::State;

// The transitions of the diagram in session.hpp.
constexpr bool allowed(State from, State to) {
    switch (from) {
        case State::polling:
            return to == State::probing || to == State::closed;
        case State::probing:
            return to == State::polling || to == State::websocket || to == State::closed;
        case State::websocket:
            return to == State::closed;
        case State::closed:
            return false;
    }
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
// SessionContext

void SessionContext::trim_queues() {
    if (queued_total <= options.max_buffered_total) return;
    const std::size_t before = queued_total;
    std::size_t closed = 0;
    // Closing a session may queue packets to others (a chat user's offline): the loop goes on
    // until the total is under the limit.
    while (queued_total > options.max_buffered_total && !queued.empty()) {
        const auto s = queued.front().lock();
        if (!s || !s->is_open()) {  // cannot happen: ending a session empties its queue
            queued.pop_front();
            continue;
        }
        ++stats.queue_evictions;
        ++closed;
        s->close("queue limit");
    }
    if (may_log())
        log::warn(
            "engine.io: {} bytes queued for polling clients (over --eio-max-queued-total {}); "
            "closed the {} sessions that had waited longest for a poll, {} bytes remain (such "
            "notes at most every 5 s; all are counted in /metrics)",
            before, options.max_buffered_total, closed, queued_total);
}

bool SessionContext::may_log() {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_log < std::chrono::seconds(5)) return false;
    last_log = now;
    return true;
}

// ---------------------------------------------------------------------------------------------
// Session: construction and the upper layer's API

Session::Session(Private, SessionContext& ctx, std::string id, int protocol, State initial,
                 boost::asio::ip::tcp::endpoint remote, std::string query, std::string origin,
                 std::shared_ptr<ws::WebSocketConnection> link)
    : ctx_(ctx),
      ping_interval_(ctx.options.ping_interval),
      ping_timeout_(ctx.options.ping_timeout),
      max_payload_(ctx.options.max_payload),
      id_(std::move(id)),
      protocol_(protocol),
      state_(initial),
      remote_(remote),
      query_(std::move(query)),
      origin_(std::move(origin)),
      ws_(std::move(link)),
      heartbeat_(ctx.io),
      deadline_(ctx.io) {
    if (initial == State::websocket) ++ctx_.stats.websocket_sessions;
}

// Touches nothing outside the session: it may be freed after its server (a posted last
// reference destroyed with the event loop).
Session::~Session() = default;

std::shared_ptr<Session> Session::create(SessionContext& ctx, std::string id, int protocol,
                                         State initial, boost::asio::ip::tcp::endpoint remote,
                                         std::string query, std::string origin,
                                         std::shared_ptr<ws::WebSocketConnection> link) {
    auto s = std::make_shared<Session>(Private{}, ctx, std::move(id), protocol, initial, remote,
                                       std::move(query), std::move(origin), std::move(link));
    const auto& o = ctx.options;
    boost::json::object open;
    open["sid"] = s->id_;
    boost::json::array upgrades;
    if (initial == State::polling && o.allow_upgrades) upgrades.emplace_back("websocket");
    open["upgrades"] = std::move(upgrades);
    open["pingInterval"] = s->ping_interval_.count();
    open["pingTimeout"] = s->ping_timeout_.count();
    open["maxPayload"] = s->max_payload_;
    s->queue('0', boost::json::serialize(open), false);
    if (initial == State::polling && o.first_poll_timeout.count() > 0)
        s->arm_deadline(o.first_poll_timeout);
    return s;
}

void Session::start(const std::function<std::unique_ptr<SessionHandler>(Session&)>& factory) {
    handler_ = factory ? factory(*this) : nullptr;
    if (state_ != State::closed) arm_heartbeat();
}

void Session::send(std::string_view data, bool binary) {
    if (state_ == State::closed) return;
    ++ctx_.stats.messages_out;
    queue('4', data, binary);
}

void Session::send_shared(std::string_view data, const ws::SharedFrame& frame) {
    if (state_ == State::closed) return;
    ++ctx_.stats.messages_out;
    if (state_ == State::websocket && ws_) {
        ws_->send(frame);
        return;
    }
    queue('4', data, false);
}

void Session::close(std::string_view reason) {
    end(reason, PollEnd::close_packet);
}

// ---------------------------------------------------------------------------------------------
// Events from the polling transport

void Session::answer_handshake(const std::shared_ptr<net::Exchange>& ex) {
    poll_ = ex;
    answer_poll();
}

void Session::on_poll(const std::shared_ptr<net::Exchange>& ex) {
    switch (state_) {
        case State::polling:
        case State::probing:
            break;
        case State::websocket:  // upgraded: HTTP requests for the session are bad requests
        case State::closed:
            return error(ex, 3);
    }
    first_poll();
    if (poll_) {
        // A second concurrent poll: the protocol says the session is over.
        error(ex, 3);
        end("overlapping polls", PollEnd::close_packet);
        return;
    }
    poll_ = ex;
    if (state_ == State::probing && probe_answered_) {
        // The client is moving to WebSocket: end its poll at once.
        answer_poll("6");
        noop_sent_ = true;
        return;
    }
    if (!out_.empty()) {
        answer_poll();
        return;
    }
    ex->on_abort([weak = weak_from_this()] {
        if (const auto s = weak.lock()) s->on_poll_aborted();
    });
}

void Session::on_poll_aborted() {
    if (state_ == State::closed) return;
    poll_.reset();
    end("transport error", PollEnd::none);
}

void Session::on_post(const std::shared_ptr<net::Exchange>& ex) {
    switch (state_) {
        case State::polling:
        case State::probing:
            break;
        case State::websocket:
        case State::closed:
            return error(ex, 3);
    }
    const auto& req = ex->request();
    const std::string& body = req.body();
    if (body.size() > max_payload_) {
        ++ctx_.stats.errors;
        ex->respond(answer(ctx_.options, req, http::status::payload_too_large,
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
        ++ctx_.stats.invalid_packets;
        error(ex, 3);
        end("parse error", PollEnd::close_packet);
        return;
    }
    ++ctx_.stats.posts;
    // Answer first: packet handlers may end the session.
    ex->respond(answer(ctx_.options, req, http::status::ok, "ok", "text/html"));
    for (const auto& p : packets)
        if (!on_packet(p)) break;
}

void Session::on_upgrade_request(const std::shared_ptr<net::Exchange>& ex) {
    const auto* origins = ctx_.ws_origins.empty() ? nullptr : &ctx_.ws_origins;
    switch (state_) {
        case State::polling:
            break;
        case State::probing:
        case State::websocket:
        case State::closed:
            // Already on WebSocket, or an upgrade under way: accept, then close at once.
            ++ctx_.stats.websockets_refused;
            return ex->upgrade(std::make_unique<RefusedTransport>(), &ctx_.ws_options, origins);
    }
    first_poll();  // an upgrade request counts as the first poll
    // The payload limit this session's open packet told the client, also after a reload.
    ws::ConnectionOptions options = ctx_.ws_options;
    options.max_message_size = std::max<std::size_t>(max_payload_, 16);
    ex->upgrade(std::make_unique<WsTransport>(weak_from_this(), protocol_, ctx_.stats), &options,
                origins);
}

// ---------------------------------------------------------------------------------------------
// Events from the WebSocket transport

void Session::on_ws_open(ws::WebSocketConnection& link) {
    switch (state_) {
        case State::polling:
            break;
        case State::probing:
        case State::websocket:
        case State::closed:
            // Ended meanwhile, or another WebSocket got there first: as Node's engine.io, close
            // it at once without a status code.
            ++ctx_.stats.websockets_refused;
            link.close(ws::close_code::no_status, {});
            return;
    }
    ws_ = link.shared_from_this();
    probe_answered_ = false;
    enter(State::probing);
    arm_deadline(ctx_.options.upgrade_timeout);
}

void Session::on_ws_packet(ws::WebSocketConnection& link, const Packet& p) {
    if (ws_.get() != &link) return;  // a connection this session no longer uses
    switch (state_) {
        case State::probing:
            if (protocol_ < 4) arm_heartbeat();  // v3: any packet proves the client alive
            return on_probe_packet(p);
        case State::websocket:
            on_packet(p);
            return;
        case State::polling:
        case State::closed:
            return;
    }
}

void Session::on_ws_invalid(ws::WebSocketConnection& link) {
    if (ws_.get() != &link) return;
    ++ctx_.stats.invalid_packets;
    switch (state_) {
        case State::probing:  // a bad probe: drop it, the session keeps polling
            return drop_probe(ws::close_code::normal, "upgrade failed");
        case State::websocket:
            return end("parse error", PollEnd::close_packet);
        case State::polling:
        case State::closed:
            return;
    }
}

void Session::on_ws_close(ws::WebSocketConnection& link) {
    if (ws_.get() != &link) return;
    switch (state_) {
        case State::probing:  // the probe went away before the upgrade
            ws_.reset();
            probe_answered_ = false;
            deadline_.cancel();
            enter(State::polling);
            return;
        case State::websocket:
            ws_.reset();
            return end("transport close", PollEnd::none);
        case State::polling:
        case State::closed:
            return;
    }
}

void Session::on_probe_packet(const Packet& p) {
    if (p.type == PacketType::ping && p.data == "probe" && !p.binary) {
        send_ws('3', "probe", false);
        probe_answered_ = true;
        if (poll_) {
            answer_poll("6");
            noop_sent_ = true;
        }
        return;
    }
    if (p.type == PacketType::upgrade && probe_answered_) return upgrade();
    // Anything else on a probe: drop the probe, the session keeps polling.
    drop_probe(ws::close_code::normal, "upgrade failed");
}

// ---------------------------------------------------------------------------------------------
// Packets on the session's transport

bool Session::on_packet(const Packet& p) {
    if (state_ == State::closed) return false;
    if (protocol_ < 4) arm_heartbeat();  // v3: any packet proves the client alive
    switch (p.type) {
        case PacketType::message:
            ++ctx_.stats.messages_in;
            if (handler_) handler_->on_message(*this, p.data, p.binary);
            return state_ != State::closed;
        case PacketType::ping:
            // v3 heartbeat (and harmless in v4): answer with the same data.
            queue('3', p.data, false);
            return state_ != State::closed;
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
    ++ctx_.stats.invalid_packets;
    end("parse error", PollEnd::close_packet);
    return false;
}

// ---------------------------------------------------------------------------------------------
// Timers

void Session::arm_heartbeat() {
    // v4: the pong is due ping_timeout after the ping was due (not after the timer ran late);
    // the next ping ping_interval after the pong. v3: the client's next ping (any packet) is due
    // ping_interval + ping_timeout after its last packet.
    if (protocol_ >= 4 && awaiting_pong_)
        heartbeat_.expires_at(heartbeat_.expiry() + ping_timeout_);
    else
        heartbeat_.expires_after(protocol_ >= 4 ? ping_interval_ : ping_interval_ + ping_timeout_);
    heartbeat_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
        if (!ec) self->on_heartbeat();
    });
}

bool Session::heartbeat_overdue() const {
    return (protocol_ < 4 || awaiting_pong_) &&
           boost::asio::steady_timer::clock_type::now() >= heartbeat_.expiry();
}

bool Session::expire_if_overdue() {
    if (state_ == State::closed || !heartbeat_overdue()) return false;
    on_heartbeat_timeout();
    return true;
}

void Session::on_heartbeat() {
    if (state_ == State::closed) return;
    if (protocol_ >= 4 && !awaiting_pong_) {
        awaiting_pong_ = true;
        queue('2', {}, false);
        if (state_ != State::closed) arm_heartbeat();
        return;
    }
    on_heartbeat_timeout();
}

void Session::on_heartbeat_timeout() {
    ++ctx_.stats.ping_timeouts;
    end("ping timeout", PollEnd::close_packet);
}

void Session::arm_deadline(std::chrono::milliseconds after) {
    deadline_.expires_after(after);
    deadline_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
        // A wait that completed just before the deadline was moved is stale.
        if (!ec && boost::asio::steady_timer::clock_type::now() >= self->deadline_.expiry())
            self->on_deadline();
    });
}

void Session::on_deadline() {
    switch (state_) {
        case State::polling:
            if (polled_) return;
            ++ctx_.stats.first_poll_timeouts;
            return end("first poll timeout", PollEnd::close_packet);
        case State::probing:
            // No probe or no upgrade packet in time: drop the probe, keep polling.
            return drop_probe(ws::close_code::normal, "upgrade timeout");
        case State::websocket:
        case State::closed:
            return;
    }
}

// ---------------------------------------------------------------------------------------------
// Transitions

void Session::enter(State next) {
    if (!allowed(state_, next)) {  // a bug: the state machine stays where it is
        log::error("engine.io session {}: no transition from state {} to state {} (a bug)", id_,
                   static_cast<int>(state_), static_cast<int>(next));
        return;
    }
    if (next == State::websocket && state_ != State::websocket) ++ctx_.stats.websocket_sessions;
    if (state_ == State::websocket && next != State::websocket) --ctx_.stats.websocket_sessions;
    state_ = next;
}

void Session::first_poll() {
    if (polled_) return;
    polled_ = true;
    deadline_.cancel();
}

void Session::drop_probe(std::uint16_t code, std::string_view reason) {
    auto probe = std::move(ws_);
    probe_answered_ = false;
    deadline_.cancel();
    enter(State::polling);
    probe->close(code, reason);
}

void Session::upgrade() {
    deadline_.cancel();
    probe_answered_ = false;
    enter(State::websocket);
    ++ctx_.stats.upgrades;
    // A client that had no poll open never saw the noop that ends polling.
    if (!noop_sent_) send_ws('6', {}, false);
    for (const auto& o : out_)
        send_ws(o.type, o.data, o.binary);
    clear_out();
    if (poll_) answer_poll("6");
}

void Session::end(std::string_view reason, PollEnd poll_end) {
    if (state_ == State::closed) return;
    const State was = state_;
    enter(State::closed);
    // The last reference may go below (the server forgets the session): the session lives on
    // until this loop turn's callbacks, which may be inside its upper layer, have returned.
    boost::asio::post(ctx_.io, [self = shared_from_this()] {});
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
        if (was == State::websocket && poll_end == PollEnd::close_packet) send_ws('1', {}, false);
        std::exchange(ws_, nullptr)->close(ws::close_code::normal, {});
    }
    clear_out();
    if (handler_) handler_->on_close(*this, reason);
    if (ctx_.on_end) ctx_.on_end(*this);
}

void Session::detach() {
    if (state_ == State::closed) return;
    state_ = State::closed;
    heartbeat_.cancel();
    deadline_.cancel();
    poll_.reset();
    ws_.reset();
    clear_out();
    handler_.reset();
}

// ---------------------------------------------------------------------------------------------
// Queues and answers

void Session::send_ws(char type, std::string_view data, bool binary) {
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

void Session::queue(char type, std::string_view data, bool binary) {
    if (state_ == State::websocket) {
        send_ws(type, data, binary);
        return;
    }
    out_.push_back(Out{type, binary, std::string(data)});
    const std::size_t cost = data.size() + kQueuedOverhead;
    if (out_bytes_ == 0) queued_at_ = ctx_.queued.insert(ctx_.queued.end(), weak_from_this());
    out_bytes_ += cost;
    ctx_.queued_total += cost;
    ctx_.stats.queued_bytes = ctx_.queued_total;
    if (out_bytes_ > ctx_.options.max_buffered_bytes) {
        ++ctx_.stats.queue_overflows;
        if (ctx_.may_log())
            log::debug(
                "engine.io session {}: {} bytes queued and no poll (over --eio-max-queued); "
                "closing it (such notes at most every 5 s; all are counted in /metrics)",
                id_, out_bytes_);
        end("buffer overflow", PollEnd::close_packet);
        return;
    }
    if (ctx_.queued_total > ctx_.options.max_buffered_total && !ctx_.trim_posted) {
        ctx_.trim_posted = true;
        // The context goes with its server: the posted trim holds it by weak_ptr.
        boost::asio::post(ctx_.io, [ctx = ctx_.weak_from_this()] {
            const auto c = ctx.lock();
            if (!c) return;
            c->trim_posted = false;
            c->trim_queues();
        });
    }
    if (poll_ && !probe_answered_) schedule_flush();
}

void Session::clear_out() {
    out_.clear();
    if (out_bytes_ == 0) return;
    ctx_.queued_total -= out_bytes_;
    ctx_.stats.queued_bytes = ctx_.queued_total;
    out_bytes_ = 0;
    if (queued_at_) ctx_.queued.erase(*std::exchange(queued_at_, std::nullopt));
}

void Session::schedule_flush() {
    if (flush_posted_) return;
    flush_posted_ = true;
    boost::asio::post(ctx_.io, [self = shared_from_this()] {
        if (self->state_ == State::closed) return;
        self->flush_posted_ = false;
        if (self->poll_ && !self->out_.empty() && !self->probe_answered_) self->answer_poll();
    });
}

void Session::answer_poll(std::string_view single_packet) {
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
    ++ctx_.stats.polls;
    ex->respond(answer(ctx_.options, ex->request(), http::status::ok, std::move(body),
                       "text/plain; charset=UTF-8"));
}

void Session::error(const std::shared_ptr<net::Exchange>& ex, int code) {
    ++ctx_.stats.errors;
    ex->respond(error_answer(ctx_.options, ex->request(), code));
}

}  // namespace steerchat::eio
