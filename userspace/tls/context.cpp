#include "tls/context.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <memory>

#include <fmt/core.h>

namespace steerchat::tls {

// Mozilla "intermediate", guidelines 5.7 (ssl-config.mozilla.org): TLS 1.3 keeps OpenSSL's
// default suites (TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256).
const char* const kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305";
const char* const kGroups = "X25519:prime256v1:secp384r1";

namespace {

constexpr unsigned char kAlpnHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
constexpr char kSessionIdContext[] = "steerchat";
constexpr long kSessionTimeoutSeconds = 24 * 3600;  // Mozilla: 1 day

struct BioFree {
    void operator()(BIO* b) const noexcept { BIO_free(b); }
};
struct X509Free {
    void operator()(X509* x) const noexcept { X509_free(x); }
};
struct PkeyFree {
    void operator()(EVP_PKEY* k) const noexcept { EVP_PKEY_free(k); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

BioPtr memory_bio(const std::string& text) {
    BioPtr bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
    if (!bio) throw TlsError("out of memory reading PEM text");
    return bio;
}

// No passphrase prompt: an encrypted key fails instead of asking the terminal.
int no_passphrase(char*, int, int, void*) {
    return -1;
}

// ALPN: http/1.1 is all we speak.
int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void*) {
    unsigned char* selected = nullptr;
    if (SSL_select_next_proto(&selected, outlen, kAlpnHttp11, sizeof kAlpnHttp11, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;  // no_application_protocol (RFC 7301 3.2)
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
}

std::string name_of(const X509_NAME* name) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!bio) return "?";
    X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_ONELINE & ~ASN1_STRFLGS_ESC_MSB);
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio.get(), &data);
    return n > 0 ? std::string(data, static_cast<std::size_t>(n)) : std::string();
}

std::string time_of(const ASN1_TIME* t) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!bio) return "?";
    ASN1_TIME_print(bio.get(), t);
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio.get(), &data);
    return n > 0 ? std::string(data, static_cast<std::size_t>(n)) : std::string();
}

}  // namespace

std::string drain_errors() {
    std::string out;
    while (const unsigned long e = ERR_get_error()) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        if (!out.empty()) out += "; ";
        out += buf;
    }
    return out;
}

ServerContext::ServerContext(const ServerConfig& cfg) {
    ERR_clear_error();
    ctx_ = SSL_CTX_new(TLS_server_method());
    if (!ctx_) throw TlsError(fmt::format("cannot create a TLS context: {}", drain_errors()));
    // The destructor does not run if the constructor throws.
    std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> guard(ctx_, &SSL_CTX_free);

    SSL_CTX_set_min_proto_version(ctx_, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx_, TLS1_3_VERSION);
    if (SSL_CTX_set_cipher_list(ctx_, kTls12Ciphers) != 1 ||
        SSL_CTX_set1_groups_list(ctx_, kGroups) != 1)
        throw TlsError(
            fmt::format("this OpenSSL lacks the ciphers or groups of Mozilla's "
                        "intermediate configuration: {}",
                        drain_errors()));
    SSL_CTX_set_dh_auto(ctx_, 1);  // DHE: RFC 7919 ffdhe groups sized to the key
    // Mozilla intermediate: the client picks among these ciphers (all are strong); no
    // renegotiation, no compression; resumption through the session cache, not tickets.
    SSL_CTX_clear_options(ctx_, SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_options(ctx_, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx_, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx_, static_cast<long>(cfg.session_cache_size));
    SSL_CTX_set_timeout(ctx_, kSessionTimeoutSeconds);
    SSL_CTX_set_session_id_context(ctx_, reinterpret_cast<const unsigned char*>(kSessionIdContext),
                                   sizeof kSessionIdContext - 1);
    // Writes: partial writes (one record at a time may complete) from a buffer that may move
    // between retries (it is rebuilt from the same bytes: tls::Stream). Idle connections give
    // their read and write buffers back. Reads take whatever the socket holds (one recv, not
    // two per record).
    SSL_CTX_set_mode(ctx_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                               SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_read_ahead(ctx_, 1);
    SSL_CTX_set_alpn_select_cb(ctx_, select_alpn, nullptr);
    SSL_CTX_set_default_passwd_cb(ctx_, no_passphrase);

    // The certificate, then its chain.
    auto cert_bio = memory_bio(cfg.cert_pem);
    X509Ptr leaf(PEM_read_bio_X509_AUX(cert_bio.get(), nullptr, no_passphrase, nullptr));
    if (!leaf)
        throw TlsError(fmt::format(
            "{} holds no PEM certificate (it should begin with -----BEGIN CERTIFICATE-----, the "
            "server's certificate first, then its chain): {}",
            cfg.cert_name, drain_errors()));
    if (SSL_CTX_use_certificate(ctx_, leaf.get()) != 1)
        throw TlsError(
            fmt::format("{}: the certificate is not usable: {}", cfg.cert_name, drain_errors()));
    for (;;) {
        X509Ptr ca(PEM_read_bio_X509(cert_bio.get(), nullptr, no_passphrase, nullptr));
        if (!ca) break;
        if (SSL_CTX_add0_chain_cert(ctx_, ca.get()) != 1)
            throw TlsError(fmt::format("{}: a chain certificate is not usable: {}", cfg.cert_name,
                                       drain_errors()));
        (void)ca.release();
        ++info_.chain_length;
    }
    ERR_clear_error();  // the end of the PEM text is reported as an error

    auto key_bio = memory_bio(cfg.key_pem);
    PkeyPtr key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, no_passphrase, nullptr));
    if (!key)
        throw TlsError(fmt::format(
            "{} holds no usable PEM private key (an unencrypted key is needed: decrypt it with "
            "`openssl pkey -in KEY -out KEY.plain`): {}",
            cfg.key_name, drain_errors()));
    if (SSL_CTX_use_PrivateKey(ctx_, key.get()) != 1 || SSL_CTX_check_private_key(ctx_) != 1)
        throw TlsError(fmt::format(
            "the private key in {} does not belong to the certificate in {} (compare `openssl "
            "x509 -noout -pubkey -in CERT` with `openssl pkey -pubout -in KEY`)",
            cfg.key_name, cfg.cert_name));
    ERR_clear_error();

    source_ = cfg.cert_pem + cfg.key_pem;
    info_.subject = name_of(X509_get_subject_name(leaf.get()));
    info_.not_after = time_of(X509_get0_notAfter(leaf.get()));
    info_.expired = X509_cmp_current_time(X509_get0_notAfter(leaf.get())) < 0;
    info_.not_yet_valid = X509_cmp_current_time(X509_get0_notBefore(leaf.get())) > 0;
    guard.release();
}

ServerContext::~ServerContext() {
    SSL_CTX_free(ctx_);
}

std::string ServerContext::warning() const {
    if (info_.expired)
        return fmt::format(
            "the TLS certificate ({}) expired on {}: clients will refuse it; renew it and reload "
            "(SIGHUP)",
            info_.subject, info_.not_after);
    if (info_.not_yet_valid)
        return fmt::format(
            "the TLS certificate ({}) is not valid yet: clients will refuse it until then; check "
            "the host's clock",
            info_.subject);
    return {};
}

}  // namespace steerchat::tls
