#include "router.hpp"

#include <unistd.h>

#include <fmt/core.h>
#include <boost/beast/http/empty_body.hpp>
#include <boost/json/array.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "metrics/metrics.hpp"
#include "net/worker.hpp"

namespace http = boost::beast::http;

namespace steerchat::net {

namespace {

http::message_generator text_response(http::status status, const Request& req, std::string body,
                                      std::string_view content_type) {
    auto res = make_response(status, req.version(), req.keep_alive(),
                             req.method() == http::verb::head, std::move(body), content_type);
    res.set(http::field::cache_control, "no-store");
    return res;
}

std::string healthz_body(Worker& w) {
    const auto& s = w.stats();
    boost::json::object o;
    o["status"] = w.stopping() ? "stopping" : "ok";
    o["worker"] = w.config().slot;
    o["workers"] = w.config().nslots;
    o["pid"] = ::getpid();
    o["connections"] = s.active.load() + w.websocket_registry().size();
    o["websockets"] = w.websocket_registry().size();
    o["accepted"] = s.accepted.load();
    o["requests"] = s.requests.load();
    return boost::json::serialize(o) + "\n";
}

// GET /healthz?all: the host view, from the master's block (pid, state, restarts) and every
// serving worker's block (connections): every slot that ever had a worker, and the totals.
std::string host_healthz_body(Worker& w) {
    const metrics::Region* region = w.metrics().region();
    boost::json::object o;
    o["worker"] = w.config().slot;  // who answered
    boost::json::array slots;
    std::uint64_t connections = 0, websockets = 0, accepted = 0, requests = 0, restarts = 0;
    unsigned serving = 0;
    const auto http = w.metrics().peers(w.stats());
    const auto ws = w.metrics().peers(w.websocket_registry().stats());
    auto find = [](const auto& peers, unsigned slot) -> decltype(peers.front().second) {
        for (const auto& [s, p] : peers)
            if (s == slot) return p;
        return nullptr;
    };
    for (const auto& listed : metrics::listed_slots(region, w.config().slot)) {
        const unsigned i = listed.slot;
        boost::json::object slot;
        slot["slot"] = i;
        slot["pid"] = listed.pid;
        slot["state"] = listed.state;
        slot["restarts"] = listed.restarts;
        restarts += listed.restarts;
        const WorkerStats* h = find(http, i);
        const ws::Stats* s = find(ws, i);
        const std::uint64_t open_ws = s ? s->open.load() : 0;
        const std::uint64_t conns = (h ? h->active.load() : 0) + open_ws;
        slot["connections"] = conns;
        slot["websockets"] = open_ws;
        slot["accepted"] = h ? h->accepted.load() : 0;
        slot["requests"] = h ? h->requests.load() : 0;
        if (h) {
            ++serving;
            connections += conns;
            websockets += open_ws;
            accepted += h->accepted.load();
            requests += h->requests.load();
        }
        slots.push_back(std::move(slot));
    }
    o["slots"] = std::move(slots);
    boost::json::object total;
    total["serving"] = serving;
    total["connections"] = connections;
    total["websockets"] = websockets;
    total["accepted"] = accepted;
    total["requests"] = requests;
    total["restarts"] = restarts;
    o["total"] = std::move(total);
    o["status"] = serving > 0 ? "ok" : "down";
    return boost::json::serialize(o) + "\n";
}

std::string metrics_body(Worker& w) {
    metrics::Slot& m = w.metrics();
    // This worker's limit gauges follow its live limits (a reload may change them).
    auto& tracker = w.connections().stats();
    tracker.limit_per_worker = w.connections().limits().per_worker;
    tracker.limit_per_address = w.connections().limits().per_address;

    std::string out;
    if (m.region()) metrics::append_host_metrics(out, *m.region());
    metrics::Text t(out);
    const auto http = m.peers(w.stats());
    const auto ws = m.peers(w.websocket_registry().stats());
    const auto conns = m.peers(tracker);
    auto metric = [&](const char* name, const char* type, const char* help,
                      metrics::Counter WorkerStats::*field) {
        t.per_worker(name, type, help, http, field);
    };
    auto ws_metric = [&](const char* name, const char* type, const char* help,
                         metrics::Counter ws::Stats::*field) {
        t.per_worker(name, type, help, ws, field);
    };
    metric("steerchat_connections_accepted_total", "counter", "TCP connections accepted.",
           &WorkerStats::accepted);
    t.family("steerchat_connections_active", "gauge",
             "Open client connections (HTTP and WebSocket).");
    for (const auto& [slot, h] : http)
        for (const auto& [ws_slot, s] : ws)
            if (ws_slot == slot)
                t.sample("steerchat_connections_active", slot, "",
                         h->active.load() + s->open.load());
    metric("steerchat_http_requests_total", "counter", "HTTP requests served.",
           &WorkerStats::requests);
    metric("steerchat_http_bad_requests_total", "counter", "Requests rejected as malformed.",
           &WorkerStats::bad_requests);
    metric("steerchat_accept_errors_total", "counter", "Failed accept() calls.",
           &WorkerStats::accept_errors);
    metric("steerchat_http_handler_errors_total", "counter",
           "Requests answered 500 because their route failed on them.",
           &WorkerStats::handler_errors);
    using Tracker = ConnectionTracker::Stats;
    t.per_worker("steerchat_connections_refused_total", "counter",
                 "Connections accepted and refused at once: per_ip (429, over "
                 "--max-conns-per-ip), per_worker (503, over --max-conns-per-worker), open_files "
                 "(503, accept ran out of descriptors).",
                 conns, "reason",
                 {{"per_ip", &Tracker::refused_per_address},
                  {"per_worker", &Tracker::refused_per_worker},
                  {"open_files", &Tracker::refused_open_files}});
    t.per_worker("steerchat_connections_max", "gauge",
                 "Connections this worker holds at most (--max-conns-per-worker).", conns,
                 &Tracker::limit_per_worker);
    t.per_worker("steerchat_connections_per_ip_max", "gauge",
                 "Connections one client address may hold on this worker (--max-conns-per-ip; 0: "
                 "no limit).",
                 conns, &Tracker::limit_per_address);
    t.per_worker("steerchat_client_addresses", "gauge",
                 "Client addresses with at least one open connection.", conns, &Tracker::addresses);
    metric("steerchat_http_requests_deferred_total", "counter",
           "Kept-alive connections that waited a turn of the event loop before reading their next "
           "request: their client address had had its share of the turn (fairness between "
           "addresses).",
           &WorkerStats::requests_deferred);
    metric("steerchat_http_header_too_large_total", "counter",
           "Requests answered 431: header over --http-max-header-bytes.",
           &WorkerStats::header_too_large);
    metric("steerchat_http_header_timeouts_total", "counter",
           "Requests answered 408: header not complete within --http-header-timeout-ms of its "
           "first byte.",
           &WorkerStats::header_timeouts);
    metric("steerchat_http_body_timeouts_total", "counter",
           "Requests answered 408: body not complete within --http-body-timeout-ms of the header.",
           &WorkerStats::body_timeouts);
    metric("steerchat_http_first_byte_timeouts_total", "counter",
           "Connections closed: no byte within --http-first-byte-timeout-ms of connecting.",
           &WorkerStats::first_byte_timeouts);
    metric("steerchat_http_idle_timeouts_total", "counter",
           "Kept-alive connections closed: no next request within --http-keepalive-timeout-ms.",
           &WorkerStats::idle_timeouts);
    t.per_worker("steerchat_ws_handshakes_total", "counter",
                 "WebSocket upgrade requests by result: accepted (101), no_upgrade (426, a plain "
                 "request on a WebSocket route), bad_request (400), version (426, not version "
                 "13), forbidden (403, Origin not allowed or refused by the route), unavailable "
                 "(503, the worker is stopping).",
                 http, "result",
                 {{"accepted", &WorkerStats::ws_handshake_accepted},
                  {"no_upgrade", &WorkerStats::ws_handshake_no_upgrade},
                  {"bad_request", &WorkerStats::ws_handshake_bad_request},
                  {"version", &WorkerStats::ws_handshake_version},
                  {"forbidden", &WorkerStats::ws_handshake_forbidden},
                  {"unavailable", &WorkerStats::ws_handshake_unavailable}});
    ws_metric("steerchat_ws_connections_open", "gauge", "Open WebSocket connections.",
              &ws::Stats::open);
    ws_metric("steerchat_ws_connections_total", "counter", "WebSocket upgrades accepted.",
              &ws::Stats::opened);
    t.family("steerchat_ws_closes_total", "counter",
             "Finished WebSocket connections by close code: the peer's code (1005: its Close "
             "had none), else the one the server sent, else 1006 (dropped without a Close).");
    for (const auto& [slot, s] : ws)
        for (std::size_t i = 0; i <= std::size(ws::kCloseCodes); ++i)
            t.sample("steerchat_ws_closes_total", slot,
                     i < std::size(ws::kCloseCodes) ? fmt::format("code=\"{}\"", ws::kCloseCodes[i])
                                                    : std::string("code=\"other\""),
                     s->closes[i].load());
    ws_metric("steerchat_ws_messages_in_total", "counter", "WebSocket data messages received.",
              &ws::Stats::messages_in);
    ws_metric("steerchat_ws_messages_out_total", "counter",
              "WebSocket data frames queued for sending.", &ws::Stats::messages_out);
    ws_metric("steerchat_ws_bytes_in_total", "counter", "Bytes read from WebSocket connections.",
              &ws::Stats::bytes_in);
    ws_metric("steerchat_ws_bytes_out_total", "counter", "Bytes written to WebSocket connections.",
              &ws::Stats::bytes_out);
    ws_metric("steerchat_ws_writes_total", "counter",
              "Gather writes to WebSocket connections (one per connection per loop turn at most).",
              &ws::Stats::writes);
    ws_metric("steerchat_ws_queue_overflows_total", "counter",
              "WebSocket connections closed 1008 because their send queue overflowed.",
              &ws::Stats::queue_overflows);
    ws_metric("steerchat_ws_protocol_errors_total", "counter",
              "WebSocket connections closed for a protocol error (1002, 1007, 1009).",
              &ws::Stats::protocol_errors);
    ws_metric("steerchat_ws_ping_timeouts_total", "counter",
              "WebSocket connections dropped for not answering the idle ping.",
              &ws::Stats::ping_timeouts);
    ws_metric("steerchat_ws_handler_errors_total", "counter",
              "WebSocket connections closed 1011 because handling one of their messages failed.",
              &ws::Stats::handler_errors);
    std::vector<std::pair<unsigned, const metrics::LatencyHistogram*>> latency;
    for (const auto& [slot, s] : ws)
        latency.emplace_back(slot, &s->delivery_latency);
    t.histogram("steerchat_delivery_latency_seconds",
                "Chat deliveries over WebSocket (native and Socket.IO): from the event's "
                "acceptance by this worker's chat core (its publish, or its read from another "
                "worker's log) to the gather write that put its frame on the socket.",
                latency);
    if (w.tls()) {
        metric("steerchat_tls_handshakes_total", "counter",
               "TLS handshakes completed (resumed ones included).", &WorkerStats::tls_handshakes);
        metric("steerchat_tls_resumed_total", "counter",
               "TLS handshakes that resumed a session (no certificate, no key exchange signature).",
               &WorkerStats::tls_resumed);
        metric("steerchat_tls13_handshakes_total", "counter",
               "TLS handshakes completed with TLS 1.3 (the others: TLS 1.2).",
               &WorkerStats::tls13_handshakes);
        t.per_worker("steerchat_tls_handshake_failures_total", "counter",
                     "TLS handshakes that did not complete: failed (bad or unsupported client "
                     "hello, the client gave up), timeout (over --tls-handshake-timeout-ms), "
                     "refused (over --tls-max-handshakes in progress: closed at once), "
                     "refused_per_ip (its address over --tls-max-handshakes-per-ip), plaintext "
                     "(plain HTTP on the TLS port: answered 400 and closed).",
                     http, "reason",
                     {{"failed", &WorkerStats::tls_failures},
                      {"timeout", &WorkerStats::tls_timeouts},
                      {"refused", &WorkerStats::tls_refused},
                      {"refused_per_ip", &WorkerStats::tls_refused_per_address},
                      {"plaintext", &WorkerStats::tls_plaintext}});
        metric("steerchat_tls_handshakes_in_progress", "gauge",
               "TLS handshakes under way (at most --tls-max-handshakes).",
               &WorkerStats::tls_in_progress);
    }
    for (const auto& source : w.metrics_sources())
        source(out);
    return out;
}

}  // namespace

Response make_response(http::status status, unsigned version, bool keep_alive, bool head,
                       std::string body, std::string_view content_type) {
    Response res{status, version};
    res.set(http::field::server, "steerchat");
    res.set(http::field::content_type, content_type);
    res.keep_alive(keep_alive);
    if (head) {
        res.content_length(body.size());
    } else {
        res.body() = std::move(body);
        res.prepare_payload();
    }
    return res;
}

http::message_generator error_response(http::status status, unsigned version, bool keep_alive,
                                       std::string_view reason) {
    return make_response(status, version, keep_alive, false, std::string(reason) + "\n",
                         "text/plain; charset=utf-8");
}

http::message_generator route(Request&& req, Worker& worker) {
    const std::string_view target = req.target();
    const std::string_view path = target.substr(0, target.find('?'));
    const bool get = req.method() == http::verb::get || req.method() == http::verb::head;

    if (path == "/healthz" || path == "/metrics") {
        if (!get) {
            auto res = error_response(http::status::method_not_allowed, req.version(),
                                      req.keep_alive(), "use GET or HEAD");
            return res;
        }
        if (path == "/healthz") {
            const std::string_view query =
                target.size() > path.size() ? target.substr(path.size() + 1) : std::string_view{};
            return text_response(http::status::ok, req,
                                 query == "all" ? host_healthz_body(worker) : healthz_body(worker),
                                 "application/json");
        }
        return text_response(http::status::ok, req, metrics_body(worker),
                             "text/plain; version=0.0.4");
    }
    return error_response(http::status::not_found, req.version(), req.keep_alive(),
                          fmt::format("no such resource: {}", path));
}

}  // namespace steerchat::net
