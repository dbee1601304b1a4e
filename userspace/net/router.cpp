#include "router.hpp"

#include <unistd.h>

#include <fmt/core.h>
#include <boost/beast/http/empty_body.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

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
    o["connections"] = s.active + w.websocket_registry().size();
    o["websockets"] = w.websocket_registry().size();
    o["accepted"] = s.accepted;
    o["requests"] = s.requests;
    return boost::json::serialize(o) + "\n";
}

std::string metrics_body(Worker& w) {
    const auto& s = w.stats();
    const unsigned slot = w.config().slot;
    std::string out;
    auto metric = [&](const char* name, const char* type, const char* help, std::uint64_t v) {
        append_metric(out, name, type, help, slot, v);
    };
    metric("steerchat_connections_accepted_total", "counter", "TCP connections accepted.",
           s.accepted);
    const auto& ws = w.websocket_registry().stats();
    metric("steerchat_connections_active", "gauge", "Open client connections (HTTP and WebSocket).",
           s.active + ws.open);
    metric("steerchat_http_requests_total", "counter", "HTTP requests served.", s.requests);
    metric("steerchat_http_bad_requests_total", "counter", "Requests rejected as malformed.",
           s.bad_requests);
    metric("steerchat_accept_errors_total", "counter", "Failed accept() calls.", s.accept_errors);
    metric("steerchat_http_handler_errors_total", "counter",
           "Requests answered 500 because their route failed on them.", s.handler_errors);
    const auto& limits = w.connections().limits();
    const auto& refused = w.connections().stats();
    append_metric(out, "steerchat_connections_refused_total", "counter",
                  "Connections accepted and refused at once: per_ip (429, over "
                  "--max-conns-per-ip), per_worker (503, over --max-conns-per-worker), open_files "
                  "(503, accept ran out of descriptors).",
                  slot, "reason",
                  {{"per_ip", refused.refused_per_address},
                   {"per_worker", refused.refused_per_worker},
                   {"open_files", refused.refused_open_files}});
    metric("steerchat_connections_max", "gauge",
           "Connections this worker holds at most (--max-conns-per-worker).", limits.per_worker);
    metric("steerchat_connections_per_ip_max", "gauge",
           "Connections one client address may hold on this worker (--max-conns-per-ip; 0: no "
           "limit).",
           limits.per_address);
    metric("steerchat_client_addresses", "gauge",
           "Client addresses with at least one open connection.", w.connections().addresses());
    metric("steerchat_http_requests_deferred_total", "counter",
           "Kept-alive connections that waited a turn of the event loop before reading their next "
           "request: their client address had had its share of the turn (fairness between "
           "addresses).",
           w.fair_share().deferred());
    metric("steerchat_http_header_too_large_total", "counter",
           "Requests answered 431: header over --http-max-header-bytes.", s.header_too_large);
    metric("steerchat_http_header_timeouts_total", "counter",
           "Requests answered 408: header not complete within --http-header-timeout-ms of its "
           "first byte.",
           s.header_timeouts);
    metric("steerchat_http_body_timeouts_total", "counter",
           "Requests answered 408: body not complete within --http-body-timeout-ms of the header.",
           s.body_timeouts);
    metric("steerchat_http_first_byte_timeouts_total", "counter",
           "Connections closed: no byte within --http-first-byte-timeout-ms of connecting.",
           s.first_byte_timeouts);
    metric("steerchat_http_idle_timeouts_total", "counter",
           "Kept-alive connections closed: no next request within --http-keepalive-timeout-ms.",
           s.idle_timeouts);
    metric("steerchat_ws_connections_open", "gauge", "Open WebSocket connections.", ws.open);
    metric("steerchat_ws_connections_total", "counter", "WebSocket upgrades accepted.", ws.opened);
    metric("steerchat_ws_messages_in_total", "counter", "WebSocket data messages received.",
           ws.messages_in);
    metric("steerchat_ws_messages_out_total", "counter",
           "WebSocket data frames queued for sending.", ws.messages_out);
    metric("steerchat_ws_bytes_in_total", "counter", "Bytes read from WebSocket connections.",
           ws.bytes_in);
    metric("steerchat_ws_bytes_out_total", "counter", "Bytes written to WebSocket connections.",
           ws.bytes_out);
    metric("steerchat_ws_writes_total", "counter",
           "Gather writes to WebSocket connections (one per connection per loop turn at most).",
           ws.writes);
    metric("steerchat_ws_queue_overflows_total", "counter",
           "WebSocket connections closed 1008 because their send queue overflowed.",
           ws.queue_overflows);
    metric("steerchat_ws_protocol_errors_total", "counter",
           "WebSocket connections closed for a protocol error (1002, 1007, 1009).",
           ws.protocol_errors);
    metric("steerchat_ws_ping_timeouts_total", "counter",
           "WebSocket connections dropped for not answering the idle ping.", ws.ping_timeouts);
    metric("steerchat_ws_handler_errors_total", "counter",
           "WebSocket connections closed 1011 because handling one of their messages failed.",
           ws.handler_errors);
    if (w.tls()) {
        const auto& t = w.tls_stats();
        metric("steerchat_tls_handshakes_total", "counter",
               "TLS handshakes completed (resumed ones included).", t.handshakes);
        metric("steerchat_tls_resumed_total", "counter",
               "TLS handshakes that resumed a session (no certificate, no key exchange signature).",
               t.resumed);
        metric("steerchat_tls13_handshakes_total", "counter",
               "TLS handshakes completed with TLS 1.3 (the others: TLS 1.2).", t.tls13);
        append_metric(out, "steerchat_tls_handshake_failures_total", "counter",
                      "TLS handshakes that did not complete: failed (bad or unsupported client "
                      "hello, the client gave up), timeout (over --tls-handshake-timeout-ms), "
                      "refused (over --tls-max-handshakes in progress: closed at once), "
                      "refused_per_ip (its address over --tls-max-handshakes-per-ip), plaintext "
                      "(plain HTTP on the TLS port: answered 400 and closed).",
                      slot, "reason",
                      {{"failed", t.failures},
                       {"timeout", t.timeouts},
                       {"refused", t.refused},
                       {"refused_per_ip", t.refused_per_address},
                       {"plaintext", t.plaintext}});
        metric("steerchat_tls_handshakes_in_progress", "gauge",
               "TLS handshakes under way (at most --tls-max-handshakes).", t.in_progress);
    }
    for (const auto& source : w.metrics_sources())
        source(out);
    return out;
}

}  // namespace

void append_metric(std::string& out, std::string_view name, std::string_view type,
                   std::string_view help, unsigned slot, std::uint64_t value) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n{}{{worker=\"{}\"}} {}\n", name, help, name,
                       type, name, slot, value);
}

void append_metric(std::string& out, std::string_view name, std::string_view type,
                   std::string_view help, unsigned slot, std::string_view label,
                   std::initializer_list<std::pair<std::string_view, std::uint64_t>> values) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
    for (const auto& [label_value, value] : values)
        out += fmt::format("{}{{worker=\"{}\",{}=\"{}\"}} {}\n", name, slot, label, label_value,
                           value);
}

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
        if (path == "/healthz")
            return text_response(http::status::ok, req, healthz_body(worker), "application/json");
        return text_response(http::status::ok, req, metrics_body(worker),
                             "text/plain; version=0.0.4");
    }
    return error_response(http::status::not_found, req.version(), req.keep_alive(),
                          fmt::format("no such resource: {}", path));
}

}  // namespace steerchat::net
