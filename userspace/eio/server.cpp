#include "eio/server.hpp"

#include <sys/random.h>

#include <algorithm>

#include <fmt/core.h>
#include <boost/beast/http/field.hpp>

#include "eio/http.hpp"
#include "eio/ws_transport.hpp"
#include "net/worker.hpp"
#include "text/base64.hpp"
#include "util/log.hpp"
#include "ws/handshake.hpp"

namespace http = boost::beast::http;

namespace steerchat::eio {

Server::Server(net::Worker& worker, Options options, Factory factory)
    : worker_(worker),
      options_(std::move(options)),
      factory_(std::move(factory)),
      stats_(&worker.metrics()),
      ctx_(std::make_shared<SessionContext>(*this, worker.io(), options_, *stats_)) {
    derive_ws_options();
    ctx_->on_end = [this](Session& s) { forget(s); };
    worker_.add_http_route(options_.path,
                           [this](const std::shared_ptr<net::Exchange>& ex) { handle(ex); });
    worker_.add_stop_hook([this] {
        stopping_ = true;
        close_all();
    });
}

void Server::derive_ws_options() {
    ctx_->ws_options = worker_.config().websocket;
    ctx_->ws_options.max_message_size = std::max<std::size_t>(options_.max_payload, 16);
    // A page allowed to poll cross-origin (CORS) may also open the WebSocket.
    ctx_->ws_origins.clear();
    if (!options_.cors_origins.empty()) {
        ctx_->ws_origins = worker_.config().allowed_origins;
        ctx_->ws_origins.insert(ctx_->ws_origins.end(), options_.cors_origins.begin(),
                                options_.cors_origins.end());
    }
}

void Server::update_options(const Options& options) {
    const std::string path = options_.path;
    const bool allow_upgrades = options_.allow_upgrades;
    options_ = options;  // in place: the sessions' context refers to it
    options_.path = path;
    options_.allow_upgrades = allow_upgrades;
    derive_ws_options();
}

Server::~Server() {
    for (auto& [id, s] : sessions_)
        s->detach();
}

void Server::close_all() {
    std::vector<std::shared_ptr<Session>> all;
    all.reserve(sessions_.size());
    for (auto& [id, s] : sessions_)
        all.push_back(s);
    for (auto& s : all)
        s->close("server shutting down");
}

void Server::forget(Session& s) {
    auto it = sessions_.find(s.id());
    if (it == sessions_.end() || it->second.get() != &s) return;
    if (const auto ip = per_ip_.find(addr_key(s.remote()));
        ip != per_ip_.end() && --ip->second == 0)
        per_ip_.erase(ip);
    sessions_.erase(it);
    stats_->sessions = sessions_.size();
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
    ++stats_->refused_sessions;
    // Engine.IO's error body and code 4 (what Node's allowRequest answers), status 429.
    const auto body = fmt::format(
        R"({{"code":4,"message":"Too many sessions from this address (at most {} per worker): )"
        R"(close some, or retry later"}})",
        options_.max_sessions_per_ip);
    ex->respond(
        answer(options_, ex->request(), http::status::too_many_requests, body, "application/json"));
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

void Server::error(const std::shared_ptr<net::Exchange>& ex, int code) {
    ++stats_->errors;
    ex->respond(error_answer(options_, ex->request(), code));
}

void Server::handle(const std::shared_ptr<net::Exchange>& ex) {
    const auto& req = ex->request();
    const std::string_view target = req.target();
    const auto qpos = target.find('?');
    const std::string_view query =
        qpos == std::string_view::npos ? std::string_view{} : target.substr(qpos + 1);

    if (req.method() == http::verb::options) {  // CORS preflight
        auto res = answer(options_, req, http::status::no_content, {}, "text/plain");
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
    // Held for the call: the request may end the session, which then leaves the map.
    const std::shared_ptr<Session> s = it->second;
    TransportEvents& events = *s;
    // Its heartbeat deadline passed and only its timer has not run yet: the session is over.
    if (s->expire_if_overdue()) return error(ex, 1);
    if (transport == Transport::websocket) {
        if (!options_.allow_upgrades) return error(ex, 3);
        return events.on_upgrade_request(ex);
    }
    if (req.method() == http::verb::get) return events.on_poll(ex);
    if (req.method() == http::verb::post) return events.on_post(ex);
    return error(ex, 3);
}

std::shared_ptr<Session> Server::open_session(Session::State initial, int protocol,
                                              const boost::asio::ip::tcp::endpoint& remote,
                                              std::string query, std::string origin,
                                              std::shared_ptr<ws::WebSocketConnection> link) {
    auto s = Session::create(*ctx_, new_id(), protocol, initial, remote, std::move(query),
                             std::move(origin), std::move(link));
    sessions_.emplace(s->id(), s);
    ++per_ip_[addr_key(remote)];
    ++stats_->opened;
    stats_->sessions = sessions_.size();
    s->start(factory_);
    return s;
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
        auto open = [this, protocol, query = std::move(query),
                     origin = std::move(origin)](ws::WebSocketConnection& conn) mutable {
            return std::shared_ptr<TransportEvents>(
                open_session(Session::State::websocket, protocol, conn.remote_endpoint(),
                             std::move(query), std::move(origin), conn.shared_from_this()));
        };
        ex->upgrade(std::make_unique<WsTransport>(std::move(open), protocol, *stats_),
                    &ctx_->ws_options, ctx_->ws_origins.empty() ? nullptr : &ctx_->ws_origins);
        return;
    }
    const auto s = open_session(Session::State::polling, protocol, ex->remote(), std::move(query),
                                std::move(origin), nullptr);
    if (!s->is_open()) return error(ex, 3);
    // The open packet, and whatever the upper layer queued on open, answer the handshake.
    s->answer_handshake(ex);
}

void Server::append_metrics(std::string& out) const {
    // Every serving worker's figures (each from its own slot block), one family at a time.
    const auto peers = worker_.metrics().peers(*stats_);
    metrics::Text t(out);
    auto metric = [&](const char* name, const char* type, const char* help,
                      metrics::Counter Stats::*field) {
        t.per_worker(name, type, help, peers, field);
    };
    metric("steerchat_eio_sessions", "gauge", "Open Engine.IO sessions.", &Stats::sessions);
    metric("steerchat_eio_sessions_total", "counter", "Engine.IO sessions opened.", &Stats::opened);
    metric("steerchat_eio_upgrades_total", "counter",
           "Engine.IO sessions upgraded from polling to WebSocket.", &Stats::upgrades);
    metric("steerchat_eio_polls_total", "counter", "Long polls answered.", &Stats::polls);
    metric("steerchat_eio_posts_total", "counter", "Polling POST bodies accepted.", &Stats::posts);
    metric("steerchat_eio_errors_total", "counter",
           "Requests answered with an Engine.IO error (unknown sid, bad transport, ...).",
           &Stats::errors);
    metric("steerchat_eio_ping_timeouts_total", "counter",
           "Engine.IO sessions closed for a missed heartbeat.", &Stats::ping_timeouts);
    metric("steerchat_eio_invalid_packets_total", "counter",
           "Engine.IO sessions closed for a malformed packet.", &Stats::invalid_packets);
    metric("steerchat_eio_messages_in_total", "counter", "Engine.IO messages received.",
           &Stats::messages_in);
    metric("steerchat_eio_messages_out_total", "counter", "Engine.IO messages sent.",
           &Stats::messages_out);
    metric("steerchat_eio_queued_bytes", "gauge",
           "Bytes queued for polling clients between their polls (with bookkeeping).",
           &Stats::queued_bytes);
    metric(
        "steerchat_eio_refused_sessions_total", "counter",
        "Handshakes refused (429): too many sessions from the address (--eio-max-sessions-per-ip).",
        &Stats::refused_sessions);
    metric("steerchat_eio_first_poll_timeouts_total", "counter",
           "Polling sessions closed for no poll or upgrade after the handshake "
           "(--eio-first-poll-timeout-ms).",
           &Stats::first_poll_timeouts);
    metric("steerchat_eio_queue_overflows_total", "counter",
           "Polling sessions closed for too many bytes queued (--eio-max-queued).",
           &Stats::queue_overflows);
    metric("steerchat_eio_queue_evictions_total", "counter",
           "Polling sessions closed because the worker held too many bytes queued for polling "
           "clients (--eio-max-queued-total): the longest waiting first.",
           &Stats::queue_evictions);
    metric(
        "steerchat_eio_websockets_refused_total", "counter",
        "WebSockets for a session already on (or moving to) WebSocket: accepted, closed at once.",
        &Stats::websockets_refused);
}

}  // namespace steerchat::eio
