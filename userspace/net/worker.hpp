// A worker process: one single-threaded Asio event loop that accepts on its slot's listener and
// serves HTTP/1.1 (keep-alive). Later protocols (WebSocket, Socket.IO) are routed from here.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include "metrics/metrics.hpp"
#include "net/limits.hpp"
#include "net/router.hpp"
#include "tls/context.hpp"
#include "util/unique_fd.hpp"
#include "ws/connection.hpp"

namespace steerchat::net {

struct WorkerConfig {
    unsigned slot = 0;
    unsigned nslots = 1;
    // The listener, owned by the worker from now on; -1: none (connections come only through
    // serve(), as in tests and fuzzers). Its connections speak plain HTTP.
    int listen_fd = -1;
    // A listener whose connections speak TLS (`tls` below), owned by the worker; -1: none.
    // Both may be set (plain and TLS side by side on two ports).
    int tls_listen_fd = -1;
    std::vector<std::string> allowed_origins;
    std::size_t max_header_bytes = 16 * 1024;       // request line and headers; larger: 431
    std::size_t max_body_bytes = 1024 * 1024;       // larger: 413
    ConnectionLimits limits;                        // connections per client address and in all
    std::size_t requests_per_address_per_turn = 4;  // next-request reads (FairShare, limits.hpp)
    // Request timers (docs/reliability.md). Each is a deadline for a whole phase, not renewed by
    // every byte that arrives (a slowloris client trickling a byte at a time gains nothing).
    std::chrono::milliseconds first_byte_timeout{10'000};  // connect -> first byte: close
    std::chrono::milliseconds keepalive_timeout{60'000};   // response -> next request: close
    std::chrono::milliseconds header_timeout{10'000};      // first byte -> header end: 408
    std::chrono::milliseconds body_timeout{30'000};        // header end -> body end: 408
    std::chrono::milliseconds drain_timeout{2000};  // graceful stop: in-flight requests finish
    ws::ConnectionOptions websocket;                // limits and timers of WebSocket connections
    // The TLS configuration of tls_listen_fd's connections (and serve_tls). A reload swaps it
    // (set_tls_context).
    std::shared_ptr<const tls::ServerContext> tls;
    std::chrono::milliseconds tls_handshake_timeout{10'000};  // accept -> handshake done: close
    std::size_t tls_max_handshakes = 256;  // handshakes in progress at once; more: closed at once
    std::size_t tls_max_handshakes_per_address = 16;  // ... from one client address (limits.hpp)
    // The host's metrics mapping (inherited from the master): this worker's counters go into
    // block `slot`, and /metrics, /healthz?all show every worker's. nullptr: private counters.
    metrics::Region* metrics = nullptr;
};

// Makes the handler of an accepted WebSocket upgrade; nullptr refuses it (403).
using WebSocketFactory = std::function<std::unique_ptr<ws::MessageHandler>(const Request&)>;

class Exchange;
// An asynchronous route: answers its Exchange now or later (see exchange.hpp).
using HttpHandler = std::function<void(const std::shared_ptr<Exchange>&)>;

// In the worker's slot block (metrics/metrics.hpp): every worker renders every worker's.
struct WorkerStats {
    metrics::Counter accepted;
    metrics::Counter active;  // gauge: HTTP connections (not yet upgraded)
    metrics::Counter requests;
    metrics::Counter bad_requests;
    metrics::Counter accept_errors;
    metrics::Counter handler_errors;       // requests answered 500: their route failed
    metrics::Counter header_too_large;     // answered 431
    metrics::Counter header_timeouts;      // answered 408: header not complete in time
    metrics::Counter body_timeouts;        // answered 408: body not complete in time
    metrics::Counter first_byte_timeouts;  // closed: nothing sent after connecting
    metrics::Counter idle_timeouts;        // closed: no next request on a kept-alive connection
    metrics::Counter requests_deferred;    // next-request reads that waited a turn (FairShare)
    // WebSocket handshakes by result (HttpSession::upgrade)
    metrics::Counter ws_handshake_accepted;     // 101
    metrics::Counter ws_handshake_no_upgrade;   // 426: a plain request on a WebSocket route
    metrics::Counter ws_handshake_bad_request;  // 400
    metrics::Counter ws_handshake_version;      // 426: Sec-WebSocket-Version not 13
    metrics::Counter ws_handshake_forbidden;    // 403: Origin not allowed, or the route refused
    metrics::Counter ws_handshake_unavailable;  // 503: the worker is stopping
    // TLS handshakes (net::TlsHandshake; Prometheus: steerchat_tls_*)
    metrics::Counter tls_handshakes;           // completed
    metrics::Counter tls_resumed;              // ... of which resumed a session
    metrics::Counter tls13_handshakes;         // ... of which TLS 1.3 (the rest TLS 1.2)
    metrics::Counter tls_failures;             // failed (bad client hello, no shared cipher, EOF)
    metrics::Counter tls_timeouts;             // not done within the handshake timeout
    metrics::Counter tls_refused;              // closed at once: too many handshakes in progress
    metrics::Counter tls_refused_per_address;  // ... from the connection's client address
    metrics::Counter tls_plaintext;            // plain HTTP on the TLS port: answered 400, closed
    metrics::Counter tls_in_progress;          // gauge
};

class HttpSession;
class TlsHandshake;

class Worker {
  public:
    // Registers the built-in routes (the WebSocket echo at /echo).
    explicit Worker(WorkerConfig cfg);
    // Serves until SIGTERM/SIGINT, then drains; returns the process exit code.
    int run();
    void stop();
    // Serves one connected stream socket as if it had just been accepted (run() does this for
    // every accepted connection). Any connected stream fd works (a socketpair in tests and
    // fuzzers); its peer address is then unknown (remote endpoints are unspecified). It takes
    // a connection slot for its address (limits.hpp) or is refused at once (429/503).
    void serve(boost::asio::ip::tcp::socket socket);
    // The same for a connection that speaks TLS: the handshake (config().tls), then HTTP.
    void serve_tls(boost::asio::ip::tcp::socket socket);

    const WorkerConfig& config() const { return cfg_; }
    // A reload (SIGHUP to the master): takes the limits and timers of `cfg` that can change while
    // the worker runs, and nothing else (slot, listener, fairness stay):
    //   connection limits per address and per worker: checked at accept, so for new
    //     connections (existing ones are never closed for a lower limit, but they count);
    //   max_header_bytes, max_body_bytes, the four request timers: from each connection's next
    //     request (or next phase of it) on, kept-alive connections included;
    //   allowed_origins and the WebSocket options: for upgrades from now on (a WebSocket keeps
    //     the options it was opened with).
    //   drain_timeout: for a stop that begins afterwards.
    // limits.ipv6_prefix64 is kept (the steering counts addresses the same way).
    void update_limits(const WorkerConfig& cfg);
    WorkerStats& stats() { return *stats_; }
    // The TLS configuration for connections accepted from now on (a reload); nullptr: plain.
    // Connections already open keep theirs.
    void set_tls_context(std::shared_ptr<const tls::ServerContext> ctx) {
        cfg_.tls = std::move(ctx);
    }
    bool tls() const { return cfg_.tls != nullptr; }
    // This worker's block of the host's metrics, and the view of the other workers' blocks.
    metrics::Slot& metrics() { return metrics_; }
    // Connection slots per client address and in all (limits.hpp).
    ConnectionTracker& connections() { return connections_; }
    // Request handling shared fairly between client addresses (limits.hpp).
    FairShare& fair_share() { return fair_share_; }
    bool stopping() const { return stopping_; }
    boost::asio::io_context& io() { return ioc_; }

    void add(HttpSession* s) { sessions_.insert(s); }
    // TLS handshakes in progress (cut on stop), and how many per client address.
    void add_handshake(TlsHandshake* h, const AddressKey& key);
    void remove_handshake(TlsHandshake* h, const AddressKey& key);
    void remove(HttpSession* s);

    // WebSocket routes: a GET of `path` (exact, query ignored) with a valid upgrade becomes a
    // ws::WebSocketConnection whose handler `factory` makes; without upgrade headers it gets 426.
    void add_websocket_route(std::string path, WebSocketFactory factory);
    // nullptr if `path` is not a WebSocket route.
    const WebSocketFactory* websocket_route(std::string_view path) const;
    ws::ConnectionRegistry& websocket_registry() { return ws_registry_; }

    // Asynchronous routes: every request whose path is `path` (query ignored; a trailing '/'
    // optional) goes to `handler`, whatever its method, upgrades included. Checked before the
    // WebSocket routes.
    void add_http_route(std::string path, HttpHandler handler);
    const HttpHandler* http_route(std::string_view path) const;

    // Runs at the start of a graceful stop, before idle connections are cut (parts holding
    // pending answers, such as long polls, answer them here).
    void add_stop_hook(std::function<void()> hook) { stop_hooks_.push_back(std::move(hook)); }

    // More /metrics lines from parts the HTTP edge does not know (the chat core): each source
    // appends whole metric families (metrics::Text) to the body, every worker's samples.
    using MetricsSource = std::function<void(std::string& out)>;
    void add_metrics_source(MetricsSource source) { metrics_sources_.push_back(std::move(source)); }
    const std::vector<MetricsSource>& metrics_sources() const { return metrics_sources_; }

  private:
    void accept(boost::asio::ip::tcp::acceptor& acceptor, bool tls);
    void serve(boost::asio::ip::tcp::socket socket, bool tls);
    // Accept hit the open-files limit: free the spare descriptor, accept and refuse one
    // connection with it, take the spare back. False if even that failed.
    bool shed_with_spare_fd(boost::asio::ip::tcp::acceptor& acceptor, bool tls);
    void note_refusal(Refusal why, const boost::asio::ip::address* from);
    // Starts the TLS handshake of an admitted connection; its HttpSession starts once it is done.
    void handshake(boost::asio::ip::tcp::socket socket, Lease slot, const AddressKey& key,
                   const boost::asio::ip::tcp::endpoint& remote);
    void maybe_done();
    bool drained() const;  // stopping, and nothing left to finish

    WorkerConfig cfg_;
    metrics::Slot metrics_;  // before every part that places its stats in it
    // Declared before the io_context: handlers it destroys on teardown still reach these.
    metrics::Cell<WorkerStats> stats_;
    ConnectionTracker connections_;  // before anything holding its leases
    std::unordered_set<HttpSession*> sessions_;
    std::unordered_set<TlsHandshake*> handshakes_;
    std::unordered_map<AddressKey, std::size_t, AddressHash> handshakes_per_address_;
    ws::ConnectionRegistry ws_registry_;
    std::map<std::string, WebSocketFactory, std::less<>> ws_routes_;
    std::map<std::string, HttpHandler, std::less<>> http_routes_;
    std::vector<std::function<void()>> stop_hooks_;
    std::vector<MetricsSource> metrics_sources_;
    bool stopping_ = false;
    bool done_check_posted_ = false;  // maybe_done's check is queued
    bool done_ = false;               // the loop has returned
    boost::asio::io_context ioc_{1};
    boost::asio::ip::tcp::acceptor acceptor_;
    boost::asio::ip::tcp::acceptor tls_acceptor_;
    std::optional<boost::asio::signal_set> signals_;  // run() only: in-process users keep theirs
    boost::asio::steady_timer drain_timer_;
    FairShare fair_share_;  // after the io_context, whose executor it posts to
    // An eventfd (no file to open: workers may run under a seccomp allowlist without open()),
    // given up for one accept when the open files run out.
    UniqueFd spare_fd_;
    // Refusals are logged at most every 10 s, as a summary.
    std::chrono::steady_clock::time_point refusal_log_at_{};
    ConnectionTracker::Stats refusals_logged_{};
};

}  // namespace steerchat::net
