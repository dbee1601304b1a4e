#include "ws_client.hpp"

#include <fmt/format.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <cstring>

#include "ws/handshake.hpp"

namespace steerchat::bench {

namespace {

constexpr std::size_t kMaxFrame = 64 * 1024 * 1024;  // largest server frame we accept
constexpr std::size_t kMaxUpgradeResponse = 16 * 1024;

bool iequals_prefix(std::string_view s, std::string_view lower_prefix) {
    if (s.size() < lower_prefix.size()) return false;
    for (std::size_t i = 0; i < lower_prefix.size(); ++i) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        if (c != lower_prefix[i]) return false;
    }
    return true;
}

// The value of header `lower_name` (lower case, without the colon) in a response head.
std::string_view header_value(std::string_view head, std::string_view lower_name) {
    std::size_t at = head.find("\r\n");
    while (at != std::string_view::npos && at + 2 < head.size()) {
        const std::size_t begin = at + 2;
        const std::size_t end = head.find("\r\n", begin);
        std::string_view line = head.substr(
            begin, end == std::string_view::npos ? std::string_view::npos : end - begin);
        if (iequals_prefix(line, lower_name) && line.size() > lower_name.size() &&
            line[lower_name.size()] == ':') {
            std::string_view v = line.substr(lower_name.size() + 1);
            while (!v.empty() && (v.front() == ' ' || v.front() == '\t'))
                v.remove_prefix(1);
            while (!v.empty() && (v.back() == ' ' || v.back() == '\t'))
                v.remove_suffix(1);
            return v;
        }
        at = end;
    }
    return {};
}

std::unique_ptr<TlsClient> g_tls;

constexpr unsigned char kAlpnHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};

bool is_ip_literal(const std::string& host) {
    error_code ec;
    (void)asio::ip::make_address(host, ec);
    return !ec;
}

}  // namespace

TlsClient::TlsClient(const std::string& ca_file, const std::string& host_, bool resume_)
    : ctx(asio::ssl::context::tls_client), host(host_), verify(!ca_file.empty()), resume(resume_) {
    SSL_CTX* c = ctx.native_handle();
    SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
    // The client keeps its sessions itself (one per client object): no internal cache.
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    if (verify) {
        error_code ec;
        ctx.load_verify_file(ca_file, ec);
        if (ec)
            die(
                fmt::format("--ca {}: cannot load it as PEM certificates ({}); give the CA that "
                            "signed the server's certificate",
                            ca_file, ec.message()));
        ctx.set_verify_mode(asio::ssl::verify_peer);
    } else {
        ctx.set_verify_mode(asio::ssl::verify_none);
    }
}

void set_client_tls(std::unique_ptr<TlsClient> tls) {
    g_tls = std::move(tls);
}

TlsClient* client_tls() noexcept {
    return g_tls.get();
}

ClientEnv::ClientEnv(asio::io_context& io_, const tcp::endpoint& target_, std::string_view path,
                     std::size_t rbuf_size_, std::uint64_t seed)
    : io(io_), target(target_), rbuf_size(rbuf_size_), rng(seed ? seed : 1), tls(client_tls()) {
    const std::string host =
        target.address().is_v6()
            ? fmt::format("[{}]:{}", target.address().to_string(), target.port())
            : fmt::format("{}:{}", target.address().to_string(), target.port());
    request_head = fmt::format(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ",
        path, host);
}

template <class Buffers, class Handler>
void WsClient::read_some(const Buffers& b, Handler&& h) {
    if (tls_)
        tls_->async_read_some(b, [keep = tls_, h = std::forward<Handler>(h)](
                                     const error_code& ec, std::size_t n) mutable { h(ec, n); });
    else
        sock_.async_read_some(b, std::forward<Handler>(h));
}

template <class Buffers, class Handler>
void WsClient::write_all(const Buffers& b, Handler&& h) {
    if (tls_)
        asio::async_write(*tls_, b,
                          [keep = tls_, h = std::forward<Handler>(h)](
                              const error_code& ec, std::size_t n) mutable { h(ec, n); });
    else
        asio::async_write(sock_, b, std::forward<Handler>(h));
}

void WsClient::open(std::uint32_t source_v4) {
    if (phase_ != Phase::idle && phase_ != Phase::closed) return;
    phase_ = Phase::connecting;
    opened_at_ = now_ns();
    tls_resumed_ = false;
    // A new stream (and socket) per TLS connection: the previous one may still have operations
    // pending, which hold it until they complete.
    tls_.reset();
    if (env_.tls) tls_ = std::make_shared<TlsStream>(env_.io, env_.tls->ctx);
    rlen_ = 0;
    in_fragments_ = false;
    wq_.clear();
    if (rbuf_.size() != env_.rbuf_size) {
        rbuf_.resize(env_.rbuf_size);
        rbuf_.shrink_to_fit();
    }
    wq_.reserve(1024);
    wfly_.reserve(1024);
    error_code ec;
    const bool v4 = env_.target.address().is_v4();
    tcp::socket& sock = this->sock();
    sock.open(v4 ? tcp::v4() : tcp::v6(), ec);
    if (ec) return fail(fmt::format("socket: {}", ec.message()));
    if (v4) {
        int one = 1;
        ::setsockopt(sock.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        sock.bind(tcp::endpoint(asio::ip::address_v4(source_v4), 0), ec);
        if (ec)
            return fail(fmt::format("bind to {}: {}", asio::ip::address_v4(source_v4).to_string(),
                                    ec.message()));
    }
    sock.set_option(tcp::no_delay(true), ec);
    sock.async_connect(env_.target, [this, g = gen_, keep = tls_](const error_code& e) {
        if (g == gen_) on_connected(e);
    });
}

void WsClient::on_connected(const error_code& ec) {
    if (ec)
        return fail(fmt::format(
            "connect to {}: {} (is the server running on that port?)",
            fmt::format("[{}]:{}", env_.target.address().to_string(), env_.target.port()),
            ec.message()));
    if (!tls_) return send_upgrade();
    SSL* ssl = tls_->native_handle();
    ERR_clear_error();
    if (SSL_set_alpn_protos(ssl, kAlpnHttp11, sizeof kAlpnHttp11) != 0)
        return fail("TLS: cannot set ALPN");
    if (env_.tls->verify) {
        X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
        if (is_ip_literal(env_.tls->host)
                ? X509_VERIFY_PARAM_set1_ip_asc(param, env_.tls->host.c_str()) != 1
                : X509_VERIFY_PARAM_set1_host(param, env_.tls->host.c_str(), 0) != 1)
            return fail("TLS: cannot set the name to verify");
    }
    if (!is_ip_literal(env_.tls->host)) SSL_set_tlsext_host_name(ssl, env_.tls->host.c_str());
    if (env_.tls->resume && session_) SSL_set_session(ssl, session_.get());
    tls_->async_handshake(asio::ssl::stream_base::client,
                          [this, g = gen_, keep = tls_](const error_code& e) {
                              if (g == gen_) on_secured(e);
                          });
}

void WsClient::on_secured(const error_code& ec) {
    if (ec) {
        std::string why = ec.message();
        if (ec.category() == asio::error::get_ssl_category()) {
            const long v = SSL_get_verify_result(tls_->native_handle());
            if (v != X509_V_OK)
                why += fmt::format(" (certificate: {})", X509_verify_cert_error_string(v));
        }
        return fail(fmt::format("TLS handshake: {}", why));
    }
    tls_resumed_ = SSL_session_reused(tls_->native_handle()) == 1;
    send_upgrade();
}

void WsClient::send_upgrade() {
    phase_ = Phase::upgrading;
    std::array<unsigned char, 16> raw{};
    for (std::size_t i = 0; i < raw.size(); i += 8) {
        const std::uint64_t r = env_.next_random();
        std::memcpy(raw.data() + i, &r, 8);
    }
    std::array<unsigned char, 32> b64{};
    EVP_EncodeBlock(b64.data(), raw.data(), static_cast<int>(raw.size()));
    std::memcpy(key_.data(), b64.data(), key_.size());
    wq_.insert(wq_.end(), env_.request_head.begin(), env_.request_head.end());
    wq_.insert(wq_.end(), key_.begin(), key_.end());
    constexpr std::string_view kEnd = "\r\n\r\n";
    wq_.insert(wq_.end(), kEnd.begin(), kEnd.end());
    flush();
    read_upgrade();
}

bool WsClient::check_upgrade(std::string_view head) {
    const std::string_view status = head.substr(0, head.find("\r\n"));
    if (!status.starts_with("HTTP/1.1 101")) {
        const auto body_at = head.find("\r\n\r\n");
        const std::string_view body =
            body_at == std::string_view::npos ? std::string_view() : head.substr(body_at + 4);
        fail(fmt::format("server refused the WebSocket upgrade: '{}' {}", status,
                         body.substr(0, 200)));
        return false;
    }
    const std::string_view accept = header_value(head, "sec-websocket-accept");
    if (accept.empty()) {
        fail("101 without Sec-WebSocket-Accept");
        return false;
    }
    if (accept != ws::compute_accept_key(std::string_view(key_.data(), key_.size()))) {
        fail(fmt::format("wrong Sec-WebSocket-Accept '{}'", accept));
        return false;
    }
    return true;
}

void WsClient::read_upgrade() {
    read_some(
        asio::buffer(rbuf_.data() + rlen_, rbuf_.size() - rlen_),
        [this, g = gen_](const error_code& ec, std::size_t n) {
            if (g != gen_) return;
            if (ec)
                return fail(ec == asio::error::eof
                                ? std::string("the server closed the connection before the 101")
                                : fmt::format("reading the upgrade response: {}", ec.message()));
            rlen_ += n;
            const std::string_view got(reinterpret_cast<const char*>(rbuf_.data()), rlen_);
            const auto end = got.find("\r\n\r\n");
            if (end == std::string_view::npos) {
                if (rlen_ >= kMaxUpgradeResponse) return fail("upgrade response headers too large");
                if (rlen_ == rbuf_.size()) rbuf_.resize(rbuf_.size() * 2);
                return read_upgrade();
            }
            // A refusal may carry a body: keep what came with the head for the message.
            if (!check_upgrade(got)) return;
            // TLS 1.3 sends its session (ticket) after the handshake: by now it has arrived.
            // A copy: OpenSSL marks the connection's own session not resumable when the
            // connection ends without a close_notify (a RST here).
            if (tls_ && env_.tls->resume) {
                const SSL_SESSION* s = SSL_get0_session(tls_->native_handle());
                if (s && SSL_SESSION_is_resumable(s)) session_.reset(SSL_SESSION_dup(s));
            }
            const std::size_t used = end + 4;
            std::memmove(rbuf_.data(), rbuf_.data() + used, rlen_ - used);
            rlen_ -= used;
            phase_ = Phase::open;
            on_open(now_ns());
            if (g != gen_ || (phase_ != Phase::open && phase_ != Phase::closing)) return;
            if (!parse_frames(now_ns())) return;
            read_frames();
        });
}

void WsClient::read_frames() {
    if (rlen_ == rbuf_.size()) rbuf_.resize(rbuf_.size() * 2);  // a large frame (setup only)
    read_some(asio::buffer(rbuf_.data() + rlen_, rbuf_.size() - rlen_),
              [this, g = gen_](const error_code& ec, std::size_t n) {
                  if (g != gen_) return;
                  if (ec) {
                      if (phase_ == Phase::closing) {
                          finish();
                          return on_closed();
                      }
                      return fail(ec == asio::error::eof
                                      ? std::string("server closed the connection")
                                      : ec.message());
                  }
                  rlen_ += n;
                  if (!parse_frames(now_ns())) return;
                  read_frames();
              });
}

bool WsClient::parse_frames(std::int64_t now) {
    const std::uint32_t g = gen_;
    std::size_t pos = 0;
    while (rlen_ - pos >= 2) {
        const std::uint8_t* p = rbuf_.data() + pos;
        const std::size_t avail = rlen_ - pos;
        const bool fin = (p[0] & 0x80) != 0;
        const auto op = static_cast<ws::Opcode>(p[0] & 0x0F);
        if (p[0] & 0x70) {
            fail("server frame with RSV bits (no extension was negotiated)");
            return false;
        }
        if (p[1] & 0x80) {
            fail("masked server frame");
            return false;
        }
        std::size_t hdr = 2;
        std::uint64_t len = p[1] & 0x7F;
        if (len == 126) {
            if (avail < 4) break;
            len = (std::uint64_t{p[2]} << 8) | p[3];
            hdr = 4;
        } else if (len == 127) {
            if (avail < 10) break;
            len = 0;
            for (int i = 0; i < 8; ++i)
                len = (len << 8) | p[2 + i];
            hdr = 10;
        }
        if (len > kMaxFrame) {
            fail(fmt::format("server frame of {} bytes", len));
            return false;
        }
        if (avail < hdr + len) {
            if (hdr + len > rbuf_.size()) {  // grow (only setup answers get this large)
                std::memmove(rbuf_.data(), rbuf_.data() + pos, avail);
                rlen_ = avail;
                pos = 0;
                rbuf_.resize(hdr + len);
            }
            break;
        }
        const std::string_view payload(reinterpret_cast<const char*>(p + hdr), len);
        pos += hdr + len;
        if (ws::is_control(op)) {
            if (!fin || len > ws::kMaxControlPayload) {
                fail("fragmented or oversized control frame from the server");
                return false;
            }
            if (op == ws::Opcode::ping) {
                send(ws::Opcode::pong, ws::as_bytes(payload));
            } else if (op == ws::Opcode::close) {
                if (phase_ == Phase::closing) {
                    finish();
                    on_closed();
                    return false;
                }
                std::uint16_t code = ws::close_code::no_status;
                if (payload.size() >= 2)
                    code = static_cast<std::uint16_t>((static_cast<std::uint8_t>(payload[0]) << 8) |
                                                      static_cast<std::uint8_t>(payload[1]));
                fail(fmt::format("server sent Close {} '{}'", code,
                                 payload.size() > 2 ? payload.substr(2) : std::string_view()));
                return false;
            }
            continue;
        }
        if (op != ws::Opcode::continuation && fin && !in_fragments_) {
            if (op == ws::Opcode::text && !on_text(payload, now)) return false;
            if (g != gen_ || phase_ == Phase::closed) return false;
            continue;
        }
        // Fragmented message.
        if (op == ws::Opcode::continuation) {
            if (!in_fragments_) {
                fail("continuation frame without a message");
                return false;
            }
        } else {
            if (in_fragments_) {
                fail("new message inside a fragmented one");
                return false;
            }
            in_fragments_ = true;
            frag_op_ = op;
            fragments_.clear();
        }
        fragments_.insert(fragments_.end(), payload.begin(), payload.end());
        if (fin) {
            in_fragments_ = false;
            if (frag_op_ == ws::Opcode::text &&
                !on_text(std::string_view(reinterpret_cast<const char*>(fragments_.data()),
                                          fragments_.size()),
                         now))
                return false;
            if (g != gen_ || phase_ == Phase::closed) return false;
        }
    }
    if (pos > 0) {
        std::memmove(rbuf_.data(), rbuf_.data() + pos, rlen_ - pos);
        rlen_ -= pos;
    }
    if (rbuf_.size() > env_.rbuf_size && rlen_ <= env_.rbuf_size) {
        rbuf_.resize(env_.rbuf_size);
        rbuf_.shrink_to_fit();
    }
    return true;
}

void WsClient::send(ws::Opcode op, ws::ByteView payload) {
    if (phase_ != Phase::open && !(phase_ == Phase::closing && op == ws::Opcode::pong)) return;
    const std::uint64_t m = env_.next_random();
    ws::MaskKey key{};
    std::memcpy(key.data(), &m, 4);
    ws::encode_client_frame(wq_, op, payload, key);
    flush();
}

void WsClient::flush() {
    if (writing_ || wq_.empty() || phase_ == Phase::closed || phase_ == Phase::idle) return;
    std::swap(wq_, wfly_);
    wq_.clear();
    writing_ = true;
    write_all(asio::buffer(wfly_), [this, g = gen_](const error_code& ec, std::size_t) {
        if (g != gen_) return;
        writing_ = false;
        wfly_.clear();
        if (ec) return fail(fmt::format("write: {}", ec.message()));
        flush();
    });
}

void WsClient::close() {
    if (phase_ == Phase::closed || phase_ == Phase::idle || phase_ == Phase::closing) return;
    if (phase_ != Phase::open) return drop(false);
    std::uint8_t payload[ws::kMaxControlPayload];
    const std::size_t n = ws::close_payload(payload, ws::close_code::normal, "bench done");
    send(ws::Opcode::close, ws::ByteView(payload, n));
    phase_ = Phase::closing;
}

void WsClient::drop(bool rst) {
    if (phase_ == Phase::closed || phase_ == Phase::idle) return;
    if (rst) {
        error_code ignored;
        sock().set_option(asio::socket_base::linger(true, 0), ignored);
    }
    finish();
}

void WsClient::fail(std::string_view what) {
    const Phase was = phase_;
    if (was == Phase::closed || was == Phase::idle) return;
    finish();
    if (was == Phase::closing)
        on_closed();
    else
        on_failed(what, was);
}

void WsClient::finish() {
    phase_ = Phase::closed;
    ++gen_;
    writing_ = false;
    error_code ignored;
    // TLS: no close_notify (the scenarios end connections with a Close frame or a RST); the
    // stream stays with its pending operations until they complete.
    sock().close(ignored);
}

void SessionClient::begin_close(bool handshake) {
    if (handshake && is_open()) return close();
    if (phase() == Phase::closing || phase() == Phase::closed) return;
    drop(false);
    ended();
}

void SessionClient::ended() {
    if (ended_) return;
    ended_ = true;
    closed_.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace steerchat::bench
