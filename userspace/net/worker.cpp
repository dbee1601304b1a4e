#include "worker.hpp"

#include <sys/eventfd.h>
#include <sys/socket.h>

#include <cerrno>
#include <csignal>
#include <string_view>
#include <vector>

#include "net/http_session.hpp"
#include "tls/stream.hpp"
#include "util/log.hpp"
#include "ws/echo.hpp"

namespace asio = boost::asio;
using asio::ip::tcp;

namespace steerchat::net {

namespace {

// The protocol of an inherited listening socket (IPv4 or IPv6), read back from the kernel.
tcp protocol_of(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    return ss.ss_family == AF_INET ? tcp::v4() : tcp::v6();
}

// The answers to a refused connection: written once, without reading the request (reading it
// would hold the descriptor the limit is there to save). 429 when the client's own address has
// too many connections (its doing, it can close some), 503 when the worker is full.
constexpr std::string_view kRefusedPerAddress =
    "HTTP/1.1 429 Too Many Requests\r\n"
    "Server: steerchat\r\n"
    "Retry-After: 1\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Length: 39\r\n"
    "Connection: close\r\n"
    "\r\n"
    "too many connections from your address\n";
constexpr std::string_view kRefusedPerWorker =
    "HTTP/1.1 503 Service Unavailable\r\n"
    "Server: steerchat\r\n"
    "Retry-After: 1\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Length: 31\r\n"
    "Connection: close\r\n"
    "\r\n"
    "server at its connection limit\n";

// Answers and lets go of a connection we will not serve. The caller closes `fd`.
void refuse_fd(int fd, bool per_address) {
    const auto text = per_address ? kRefusedPerAddress : kRefusedPerWorker;
    // A fresh socket's send buffer is empty: one non-blocking send takes the whole answer.
    (void)::send(fd, text.data(), text.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    // Discard what the client sent already, so that closing sends a FIN after the answer
    // instead of a reset that could destroy it in flight.
    char scratch[4096];
    for (int i = 0; i < 4 && ::recv(fd, scratch, sizeof scratch, MSG_DONTWAIT) > 0; ++i) {
    }
    ::shutdown(fd, SHUT_WR);
}

// The answer to plain HTTP on the TLS port (OpenSSL recognises the request line).
constexpr std::string_view kPlaintextOnTls =
    "HTTP/1.1 400 Bad Request\r\n"
    "Server: steerchat\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Length: 45\r\n"
    "Connection: close\r\n"
    "\r\n"
    "this port speaks TLS: use https:// or wss://\n";

const char* reason_name(Refusal why) {
    return why == Refusal::per_address ? "per_ip" : "per_worker";
}

}  // namespace

// One connection's TLS handshake, bounded by the handshake timeout; then an HttpSession.
class TlsHandshake : public std::enable_shared_from_this<TlsHandshake> {
  public:
    TlsHandshake(tls::Stream&& stream, Worker& worker, Lease slot, const AddressKey& key,
                 const tcp::endpoint& remote)
        : stream_(std::move(stream)),
          timer_(stream_.get_executor()),
          worker_(worker),
          slot_(std::move(slot)),
          key_(key),
          remote_(remote) {
        worker_.add_handshake(this, key_);
        ++worker_.stats().tls_in_progress;
    }
    ~TlsHandshake() {
        worker_.remove_handshake(this, key_);
        --worker_.stats().tls_in_progress;
    }

    void start() {
        timer_.expires_after(worker_.config().tls_handshake_timeout);
        timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
            if (ec || self->done_) return;
            self->timed_out_ = true;
            self->cancel();
        });
        stream_.async_handshake([self = shared_from_this()](const boost::system::error_code& ec,
                                                            std::size_t) { self->on_done(ec); });
    }
    void cancel() {
        boost::system::error_code e;
        stream_.socket().cancel(e);
    }

  private:
    void on_done(const boost::system::error_code& ec) {
        done_ = true;
        timer_.cancel();
        auto& st = worker_.stats();
        // Also while the worker stops (drains): a fresh connection's request is on its way, as
        // on a plain one; its session answers it and then closes.
        if (!ec) {
            ++st.tls_handshakes;
            if (stream_.resumed()) ++st.tls_resumed;
            if (std::string_view(stream_.version()) == "TLSv1.3") ++st.tls13_handshakes;
            std::make_shared<HttpSession>(std::move(stream_), worker_, std::move(slot_), key_,
                                          remote_)
                ->start();
            return;
        }
        boost::system::error_code e;
        if (timed_out_) {
            ++st.tls_timeouts;
        } else if (tls::Stream::is_plaintext_http(ec)) {
            ++st.tls_plaintext;
            const int fd = stream_.socket().native_handle();
            (void)::send(fd, kPlaintextOnTls.data(), kPlaintextOnTls.size(),
                         MSG_DONTWAIT | MSG_NOSIGNAL);
            ::shutdown(fd, SHUT_WR);
        } else if (ec) {
            ++st.tls_failures;
            log::debug("TLS handshake with {} failed: {}", remote_.address().to_string(),
                       ec.message());
        }
        stream_.close(e);  // the slot is released with this object
    }

    tls::Stream stream_;
    asio::steady_timer timer_;
    Worker& worker_;
    Lease slot_;
    AddressKey key_;
    tcp::endpoint remote_;
    bool done_ = false;
    bool timed_out_ = false;
};

Worker::Worker(WorkerConfig cfg)
    : cfg_(std::move(cfg)),
      metrics_(cfg_.metrics, cfg_.slot),
      stats_(&metrics_),
      connections_(cfg_.limits, &metrics_),
      ws_registry_(cfg_.websocket, &metrics_),
      acceptor_(ioc_),
      tls_acceptor_(ioc_),
      drain_timer_(ioc_),
      fair_share_(ioc_.get_executor(), cfg_.requests_per_address_per_turn,
                  &stats_->requests_deferred) {
    if (cfg_.listen_fd >= 0) acceptor_.assign(protocol_of(cfg_.listen_fd), cfg_.listen_fd);
    if (cfg_.tls_listen_fd >= 0)
        tls_acceptor_.assign(protocol_of(cfg_.tls_listen_fd), cfg_.tls_listen_fd);
    ws_registry_.set_on_empty([this] { maybe_done(); });
    // Synchronous accept4 on the listener (shed_with_spare_fd) must never block.
    boost::system::error_code ec;
    acceptor_.non_blocking(true, ec);
    tls_acceptor_.non_blocking(true, ec);
    spare_fd_.reset(::eventfd(0, EFD_CLOEXEC));
    add_websocket_route("/echo",
                        [](const Request&) { return std::make_unique<ws::EchoHandler>(); });
}

void Worker::update_limits(const WorkerConfig& cfg) {
    connections_.limits().per_address = cfg.limits.per_address;
    connections_.limits().per_worker = cfg.limits.per_worker;
    connections_.stats().limit_per_address = cfg.limits.per_address;  // their gauges
    connections_.stats().limit_per_worker = cfg.limits.per_worker;
    cfg_.limits.per_address = cfg.limits.per_address;
    cfg_.limits.per_worker = cfg.limits.per_worker;
    cfg_.max_header_bytes = cfg.max_header_bytes;
    cfg_.max_body_bytes = cfg.max_body_bytes;
    cfg_.first_byte_timeout = cfg.first_byte_timeout;
    cfg_.keepalive_timeout = cfg.keepalive_timeout;
    cfg_.header_timeout = cfg.header_timeout;
    cfg_.body_timeout = cfg.body_timeout;
    cfg_.drain_timeout = cfg.drain_timeout;  // read when a stop begins
    cfg_.allowed_origins = cfg.allowed_origins;
    cfg_.websocket = cfg.websocket;
    ws_registry_.options() = cfg.websocket;
    // TLS: a new certificate or key for connections accepted from now on (a connection keeps
    // the context it began with); the same files keep the running context and its session
    // cache. TLS on or off needs a restart (the listeners' kind).
    if (cfg_.tls && cfg.tls && cfg.tls->source() != cfg_.tls->source()) {
        cfg_.tls = cfg.tls;
        log::info("TLS: serving {} to new connections", cfg_.tls->certificate().subject);
    }
    cfg_.tls_handshake_timeout = cfg.tls_handshake_timeout;
    cfg_.tls_max_handshakes = cfg.tls_max_handshakes;
    cfg_.tls_max_handshakes_per_address = cfg.tls_max_handshakes_per_address;
}

void Worker::add_websocket_route(std::string path, WebSocketFactory factory) {
    ws_routes_.insert_or_assign(std::move(path), std::move(factory));
}

const WebSocketFactory* Worker::websocket_route(std::string_view path) const {
    auto it = ws_routes_.find(path);
    return it == ws_routes_.end() ? nullptr : &it->second;
}

void Worker::add_http_route(std::string path, HttpHandler handler) {
    while (path.size() > 1 && path.back() == '/')
        path.pop_back();
    http_routes_.insert_or_assign(std::move(path), std::move(handler));
}

const HttpHandler* Worker::http_route(std::string_view path) const {
    if (http_routes_.empty()) return nullptr;
    while (path.size() > 1 && path.back() == '/')
        path.remove_suffix(1);
    auto it = http_routes_.find(path);
    return it == http_routes_.end() ? nullptr : &it->second;
}

int Worker::run() {
    signals_.emplace(ioc_, SIGTERM, SIGINT);
    signals_->async_wait([this](const boost::system::error_code& ec, int sig) {
        if (ec) return;
        log::info("received signal {}; finishing in-flight requests", sig);
        stop();
    });
    if (acceptor_.is_open()) accept(acceptor_, false);
    if (tls_acceptor_.is_open()) accept(tls_acceptor_, true);
    log::info("serving (pid {})", ::getpid());
    ioc_.run();
    done_ = true;
    return 0;
}

void Worker::accept(tcp::acceptor& acceptor, bool tls) {
    acceptor.async_accept([this, &acceptor, tls](boost::system::error_code ec, tcp::socket socket) {
        if (stopping_) {
            // The kernel handed this connection over before the stop closed the acceptor (the
            // completion was already queued): its client has connected, maybe sent its request.
            // Dropping it would reset the client; it is served like any connection accepted
            // just before the stop (answered with Connection: close).
            if (!ec && socket.is_open()) serve(std::move(socket), tls);
            return;
        }
        if (ec == asio::error::invalid_argument) {
            // The master shut this slot's listener down (the slot is drained or removed from
            // the pool; its queue migrated to the other workers): nothing more to accept.
            log::info("the listener was shut down by the master; no longer accepting");
            return;
        }
        if (ec) {
            ++stats_->accept_errors;
            if (ec != asio::error::connection_aborted) {
                const bool out_of_files = ec == asio::error::no_descriptors ||
                                          ec == boost::system::errc::too_many_files_open_in_system;
                if (out_of_files && shed_with_spare_fd(acceptor, tls)) return accept(acceptor, tls);
                // Anything else: a short pause instead of a busy loop (a timer per pause: the
                // two accept loops may pause at once).
                log::warn("accept failed: {}; retrying in 50 ms", ec.message());
                auto pause =
                    std::make_shared<asio::steady_timer>(ioc_, std::chrono::milliseconds(50));
                pause->async_wait(
                    [this, &acceptor, tls, pause](const boost::system::error_code& e) {
                        if (!e && !stopping_) accept(acceptor, tls);
                    });
                return;
            }
        } else {
            serve(std::move(socket), tls);
        }
        accept(acceptor, tls);
    });
}

void Worker::serve(tcp::socket socket) {
    serve(std::move(socket), false);
}

void Worker::serve_tls(tcp::socket socket) {
    serve(std::move(socket), true);
}

void Worker::serve(tcp::socket socket, bool tls) {
    ++stats_->accepted;
    boost::system::error_code ec;
    // A peer without an IP address (a socketpair in tests and fuzzers; a client already gone)
    // counts as the unspecified address.
    const auto remote = socket.remote_endpoint(ec);
    const int family = ec ? AF_UNSPEC : remote.data()->sa_family;
    const auto from =
        family == AF_INET || family == AF_INET6 ? remote.address() : asio::ip::address{};
    Refusal why = Refusal::none;
    Lease slot = connections_.acquire(from, why);
    if (!slot) {
        // TLS: no plaintext answer a client could read; the connection just closes.
        if (!tls) refuse_fd(socket.native_handle(), why == Refusal::per_address);
        note_refusal(why, &from);
        return;  // the socket closes here
    }
    const auto endpoint = ec ? tcp::endpoint{} : remote;
    socket.set_option(tcp::no_delay(true), ec);  // fails harmlessly on a non-TCP stream
    const auto key = ConnectionTracker::key_of(from, cfg_.limits.ipv6_prefix64);
    if (tls && cfg_.tls) return handshake(std::move(socket), std::move(slot), key, endpoint);
    std::make_shared<HttpSession>(tls::Stream(std::move(socket)), *this, std::move(slot), key,
                                  endpoint)
        ->start();
}

void Worker::handshake(tcp::socket socket, Lease slot, const AddressKey& key,
                       const tcp::endpoint& remote) {
    // A handshake costs this worker's CPU (a signature, a key exchange): at most this many at
    // once, so a flood of them cannot starve established connections. Over it: closed at once.
    if (handshakes_.size() >= cfg_.tls_max_handshakes) {
        ++stats_->tls_refused;
        return;  // the socket closes (a reset for the client: its hello is unread), slot freed
    }
    // One address flooding handshakes fills its own share, not the worker's: other addresses'
    // new connections still get theirs.
    if (auto it = handshakes_per_address_.find(key);
        it != handshakes_per_address_.end() && it->second >= cfg_.tls_max_handshakes_per_address) {
        ++stats_->tls_refused_per_address;
        return;
    }
    std::shared_ptr<TlsHandshake> hs;
    try {
        hs = std::make_shared<TlsHandshake>(tls::Stream(std::move(socket), *cfg_.tls), *this,
                                            std::move(slot), key, remote);
    } catch (const std::bad_alloc&) {
        ++stats_->tls_failures;
        return;
    }
    hs->start();
}

void Worker::add_handshake(TlsHandshake* h, const AddressKey& key) {
    handshakes_.insert(h);
    ++handshakes_per_address_[key];
}

void Worker::remove_handshake(TlsHandshake* h, const AddressKey& key) {
    handshakes_.erase(h);
    if (auto it = handshakes_per_address_.find(key);
        it != handshakes_per_address_.end() && --it->second == 0)
        handshakes_per_address_.erase(it);
    maybe_done();
}

bool Worker::shed_with_spare_fd(tcp::acceptor& acceptor, bool tls) {
    if (!spare_fd_) return false;
    spare_fd_.reset();
    const int fd =
        ::accept4(acceptor.native_handle(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    const int err = errno;
    if (fd >= 0) {
        ++stats_->accepted;
        ++connections_.stats().refused_open_files;
        if (!tls) refuse_fd(fd, false);
        ::close(fd);
    }
    spare_fd_.reset(::eventfd(0, EFD_CLOEXEC));
    if (fd >= 0) {
        note_refusal(Refusal::per_worker, nullptr);
        return true;
    }
    // EAGAIN: the connection went away; wait for the next. EMFILE/ENFILE: the descriptor we
    // freed was taken (ENFILE: by another process): pause.
    return err == EAGAIN || err == EWOULDBLOCK || err == ECONNABORTED;
}

void Worker::note_refusal(Refusal why, const asio::ip::address* from) {
    const auto now = std::chrono::steady_clock::now();
    if (now - refusal_log_at_ < std::chrono::seconds(10)) return;
    refusal_log_at_ = now;
    const auto& s = connections_.stats();
    log::warn(
        "refusing connections (latest: {} from {}); since the last report: {} over "
        "--max-conns-per-ip {}, {} over --max-conns-per-worker {}, {} out of open files",
        reason_name(why), from ? from->to_string() : "?",
        s.refused_per_address - refusals_logged_.refused_per_address,
        connections_.limits().per_address,
        s.refused_per_worker - refusals_logged_.refused_per_worker,
        connections_.limits().per_worker,
        s.refused_open_files - refusals_logged_.refused_open_files);
    refusals_logged_ = s;
}

void Worker::stop() {
    if (stopping_) return;
    stopping_ = true;
    boost::system::error_code ec;
    acceptor_.close(ec);
    tls_acceptor_.close(ec);
    if (signals_) signals_->cancel(ec);
    for (auto& hook : stop_hooks_)
        hook();
    // Copy: stopping a session may destroy it, which edits the set.
    std::vector<HttpSession*> sessions(sessions_.begin(), sessions_.end());
    for (auto* s : sessions)
        s->stop();
    // Handshakes in progress go on (bounded by the handshake timeout and the drain time): a
    // client that connected before the stop (an upgrade hands the listeners on meanwhile) gets
    // its answer, not a reset.
    // WebSocket clients get a Close 1001; each connection waits (bounded) for the reply.
    if (ws_registry_.size() > 0)
        log::info("closing {} WebSocket connection(s) (1001 going away)", ws_registry_.size());
    ws_registry_.close_all(ws::close_code::going_away, "server shutting down");
    drain_timer_.cancel();
    drain_timer_.expires_after(cfg_.drain_timeout);
    drain_timer_.async_wait([this](const boost::system::error_code& e) {
        if (e) return;
        if (!sessions_.empty() || ws_registry_.size() > 0 || !handshakes_.empty())
            log::warn("{} connection(s) still busy after the drain timeout; closing them",
                      sessions_.size() + ws_registry_.size() + handshakes_.size());
        ioc_.stop();
    });
    maybe_done();
}

void Worker::remove(HttpSession* s) {
    sessions_.erase(s);
    maybe_done();
}

bool Worker::drained() const {
    return stopping_ && !done_ && sessions_.empty() && ws_registry_.size() == 0 &&
           handshakes_.empty();
}

void Worker::maybe_done() {
    // Drained before the timeout. (After the loop returned, teardown is under way: no stop.)
    // The loop stops from a posted check, not here: completions already queued (an accept the
    // kernel completed before the acceptor closed) run first, and one that starts a session
    // keeps the worker serving until that session ends.
    if (!drained() || done_check_posted_) return;
    done_check_posted_ = true;
    asio::post(ioc_, [this] {
        done_check_posted_ = false;
        if (drained()) ioc_.stop();
    });
}

}  // namespace steerchat::net
