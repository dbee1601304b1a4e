// tls::Stream under a WebSocket connection: the frames queued in one loop turn leave in as few
// TLS records as their size allows (one per 16 KiB), with one gather write; plain HTTP on a TLS
// stream is recognised; a session outlives a connection reset; the context refuses a key that
// is not the certificate's.
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>

#include "tls/context.hpp"
#include "tls/stream.hpp"
#include "ws/connection.hpp"

namespace steerchat::tls {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using namespace std::chrono_literals;

// A self-signed P-256 certificate and its key, as PEM.
struct Pem {
    std::string cert;
    std::string key;
};

std::string to_pem(auto write) {
    BIO* bio = BIO_new(BIO_s_mem());
    write(bio);
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio, &data);
    std::string out(data, static_cast<std::size_t>(n));
    BIO_free(bio);
    return out;
}

Pem make_certificate(const char* cn) {
    EVP_PKEY* key = EVP_EC_gen("P-256");
    X509* x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_NAME* name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn),
                               -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509_sign(x, key, EVP_sha256());
    Pem pem{to_pem([&](BIO* b) { PEM_write_bio_X509(b, x); }), to_pem([&](BIO* b) {
                PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr);
            })};
    X509_free(x);
    EVP_PKEY_free(key);
    return pem;
}

struct Ignore : ws::MessageHandler {
    void on_message(ws::WebSocketConnection&, ws::Opcode, std::string_view) override {}
};

// Application-data records the client received (TLS 1.2: the record type; TLS 1.3: the inner
// content type of each protected record).
std::atomic<int> g_app_records{0};
// (The callback's `version` is the record's, 0x0303 in both: ask the connection.)
void count_records(int write_p, int, int content_type, const void* buf, std::size_t len, SSL* ssl,
                   void*) {
    if (write_p || len < 1) return;
    const auto type = static_cast<const unsigned char*>(buf)[0];
    if (SSL_version(ssl) == TLS1_3_VERSION ? content_type == SSL3_RT_INNER_CONTENT_TYPE
                                           : content_type == SSL3_RT_HEADER) {
        if (type == SSL3_RT_APPLICATION_DATA) ++g_app_records;
    }
}

class TlsWebSocket : public ::testing::TestWithParam<int> {
  protected:
    void SetUp() override {
        const auto pem = make_certificate("localhost");
        context_ = std::make_unique<ServerContext>(ServerConfig{pem.cert, pem.key});
        acceptor_.emplace(ioc_, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
        client_.connect(acceptor_->local_endpoint());
        stream_.emplace(acceptor_->accept(), *context_);
    }
    void TearDown() override {
        if (client_ssl_) SSL_free(client_ssl_);
        if (client_ctx_) SSL_CTX_free(client_ctx_);
    }

    // Handshake: the client (blocking, on a thread) and the server (the test's loop).
    void handshake() {
        client_ctx_ = SSL_CTX_new(TLS_client_method());
        SSL_CTX_set_min_proto_version(client_ctx_, GetParam());
        SSL_CTX_set_max_proto_version(client_ctx_, GetParam());
        client_ssl_ = SSL_new(client_ctx_);
        SSL_set_fd(client_ssl_, client_.native_handle());
        SSL_set_msg_callback(client_ssl_, count_records);
        std::atomic<int> client_rc{0};
        std::thread t([&] { client_rc = SSL_connect(client_ssl_); });
        bool done = false;
        boost::system::error_code result;
        stream_->async_handshake([&](const boost::system::error_code& ec, std::size_t) {
            result = ec;
            done = true;
        });
        for (int i = 0; i < 200 && !done; ++i)
            ioc_.run_for(10ms);
        t.join();
        ASSERT_TRUE(done);
        ASSERT_FALSE(result) << result.message();
        ASSERT_EQ(client_rc, 1);
        ioc_.restart();
    }

    ws::ConnectionRegistry registry_;  // outlives the connections the loop still holds
    asio::io_context ioc_;
    std::optional<tcp::acceptor> acceptor_;
    tcp::socket client_{ioc_};
    std::unique_ptr<ServerContext> context_;
    std::optional<Stream> stream_;
    SSL_CTX* client_ctx_ = nullptr;
    SSL* client_ssl_ = nullptr;
};

TEST_P(TlsWebSocket, FramesOfOneTurnShareOneRecord) {
    ASSERT_NO_FATAL_FAILURE(handshake());
    auto conn =
        ws::WebSocketConnection::create(std::move(*stream_), registry_, std::make_unique<Ignore>());
    conn->start();
    const int before = g_app_records;
    const std::string text(100, 'x');
    for (int i = 0; i < 50; ++i)
        ASSERT_TRUE(conn->send_text(text));
    std::atomic<bool> finished{false};
    std::string got;
    std::thread reader([&] {
        char buf[16384];
        while (got.size() < 50 * 102) {
            const int n = SSL_read(client_ssl_, buf, sizeof buf);
            if (n <= 0) break;
            got.append(buf, static_cast<std::size_t>(n));
        }
        finished = true;
    });
    for (int i = 0; i < 300 && !finished; ++i)
        ioc_.run_for(10ms);
    reader.join();
    EXPECT_EQ(got.size(), 50u * 102u);
    EXPECT_EQ(conn->writes(), 1u);
    EXPECT_EQ(g_app_records - before, 1) << "50 frames of one turn should make one TLS record";
}

TEST_P(TlsWebSocket, LargeTurnsTakeOneRecordPer16KiB) {
    ASSERT_NO_FATAL_FAILURE(handshake());
    auto conn =
        ws::WebSocketConnection::create(std::move(*stream_), registry_, std::make_unique<Ignore>());
    conn->start();
    const int before = g_app_records;
    const std::string text(1000, 'y');  // 1004 bytes a frame (4-byte header)
    for (int i = 0; i < 100; ++i)
        ASSERT_TRUE(conn->send_text(text));
    const std::size_t want = 100 * 1004;
    std::atomic<bool> finished{false};
    std::string got;
    std::thread reader([&] {
        char buf[16384];
        while (got.size() < want) {
            const int n = SSL_read(client_ssl_, buf, sizeof buf);
            if (n <= 0) break;
            got.append(buf, static_cast<std::size_t>(n));
        }
        finished = true;
    });
    for (int i = 0; i < 300 && !finished; ++i)
        ioc_.run_for(10ms);
    reader.join();
    EXPECT_EQ(got.size(), want);
    EXPECT_EQ(conn->writes(), 1u);
    EXPECT_EQ(g_app_records - before, static_cast<int>((want + 16383) / 16384));
}

INSTANTIATE_TEST_SUITE_P(Versions, TlsWebSocket, ::testing::Values(TLS1_2_VERSION, TLS1_3_VERSION),
                         [](const auto& info) {
                             return info.param == TLS1_3_VERSION ? std::string("TLS13")
                                                                 : std::string("TLS12");
                         });

// A connection that ends without close_notify (the client reset it) leaves its session in the
// context's cache: the client's next connection resumes it (OpenSSL's default would drop it).
TEST_P(TlsWebSocket, SessionSurvivesAnAbortiveClose) {
    handshake();
    // TLS 1.3 sends the session after the handshake: let the client read it (non-blocking).
    client_.non_blocking(true);
    char byte = 0;
    ASSERT_LE(SSL_read(client_ssl_, &byte, 1), 0);
    SSL_SESSION* session = SSL_get1_session(client_ssl_);
    ASSERT_NE(session, nullptr);
    ASSERT_TRUE(SSL_SESSION_is_resumable(session));
    SSL_SESSION* offered = SSL_SESSION_dup(session);  // the client's own copy stays intact
    SSL_SESSION_free(session);
    client_.set_option(asio::socket_base::linger(true, 0));
    client_.close();  // RST, no close_notify
    stream_.reset();  // the server's end frees its SSL without a shutdown

    tcp::socket client2(ioc_);
    client2.connect(acceptor_->local_endpoint());
    Stream stream2(acceptor_->accept(), *context_);
    SSL* ssl2 = SSL_new(client_ctx_);
    SSL_set_fd(ssl2, client2.native_handle());
    SSL_set_session(ssl2, offered);
    SSL_SESSION_free(offered);
    std::atomic<int> client_rc{0};
    std::thread t([&] { client_rc = SSL_connect(ssl2); });
    bool done = false;
    boost::system::error_code result;
    stream2.async_handshake([&](const boost::system::error_code& ec, std::size_t) {
        result = ec;
        done = true;
    });
    for (int i = 0; i < 200 && !done; ++i)
        ioc_.run_for(10ms);
    t.join();
    EXPECT_TRUE(done);
    EXPECT_FALSE(result) << result.message();
    EXPECT_EQ(client_rc, 1);
    EXPECT_EQ(SSL_session_reused(ssl2), 1);
    SSL_free(ssl2);
}

TEST(TlsStream, PlainHttpOnTheTlsPortIsRecognised) {
    const auto pem = make_certificate("localhost");
    ServerContext context(ServerConfig{pem.cert, pem.key});
    asio::io_context ioc;
    tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    tcp::socket client(ioc);
    client.connect(acceptor.local_endpoint());
    Stream stream(acceptor.accept(), context);
    asio::write(client, asio::buffer(std::string_view("GET / HTTP/1.1\r\nHost: x\r\n\r\n")));
    bool done = false;
    boost::system::error_code result;
    stream.async_handshake([&](const boost::system::error_code& ec, std::size_t) {
        result = ec;
        done = true;
    });
    ioc.run_for(200ms);
    ASSERT_TRUE(done);
    EXPECT_TRUE(result);
    EXPECT_TRUE(Stream::is_plaintext_http(result)) << result.message();
}

TEST(TlsStream, HandshakeHandlerNeverRunsInsideTheCall) {
    const auto pem = make_certificate("localhost");
    ServerContext context(ServerConfig{pem.cert, pem.key});
    asio::io_context ioc;
    tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    tcp::socket client(ioc);
    client.connect(acceptor.local_endpoint());
    client.close();  // the handshake fails at once (EOF)
    Stream stream(acceptor.accept(), context);
    bool done = false;
    stream.async_handshake([&](const boost::system::error_code&, std::size_t) { done = true; });
    EXPECT_FALSE(done);
    ioc.run_for(200ms);
    EXPECT_TRUE(done);
}

TEST(ServerContext, RefusesAKeyOfAnotherCertificate) {
    const auto a = make_certificate("a");
    const auto b = make_certificate("b");
    try {
        ServerContext context(ServerConfig{a.cert, b.key, "cert.pem", "key.pem"});
        FAIL() << "a foreign key was accepted";
    } catch (const TlsError& e) {
        EXPECT_NE(std::string(e.what()).find("the private key in key.pem does not belong to the "
                                             "certificate in cert.pem"),
                  std::string::npos)
            << e.what();
    }
}

TEST(ServerContext, ReportsAnExpiredCertificate) {
    EVP_PKEY* key = EVP_EC_gen("P-256");
    X509* x = X509_new();
    X509_set_version(x, 2);
    X509_gmtime_adj(X509_getm_notBefore(x), -7200);
    X509_gmtime_adj(X509_getm_notAfter(x), -3600);
    X509_set_pubkey(x, key);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("old"), -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_sign(x, key, EVP_sha256());
    const std::string cert = to_pem([&](BIO* b) { PEM_write_bio_X509(b, x); });
    const std::string k = to_pem(
        [&](BIO* b) { PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr); });
    X509_free(x);
    EVP_PKEY_free(key);
    ServerContext context(ServerConfig{cert, k});
    EXPECT_TRUE(context.certificate().expired);
    EXPECT_NE(context.warning().find("expired on"), std::string::npos) << context.warning();
}

}  // namespace
}  // namespace steerchat::tls
