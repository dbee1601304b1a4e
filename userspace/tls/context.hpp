// A server's TLS configuration: one OpenSSL SSL_CTX built from the certificate chain and the
// private key as PEM text (read from the files by the master, so workers open no file after
// their privilege drop), with the settings of Mozilla's "intermediate" server configuration
// (guidelines version 5.7): TLS 1.2 and 1.3, its TLS 1.2 cipher list and groups, no
// compression, no renegotiation, the client's cipher order honoured (all listed ciphers are
// strong). ALPN: http/1.1 only (a client offering ALPN without it gets no_application_protocol).
// Session resumption: a per-worker session cache (stateful; TLS 1.3 tickets too), as Mozilla
// advises against ticket keys that are never rotated. The cache is per worker, which is enough
// because steering keeps each client address on one worker.
//
// Threading: built on any thread; then used by one event loop. A reload builds a new context;
// connections opened with the old one keep it (SSL objects hold a reference to their SSL_CTX).
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

using SSL_CTX = struct ssl_ctx_st;

namespace steerchat::tls {

// What went wrong and how to fix it.
class TlsError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

struct ServerConfig {
    std::string cert_pem;                       // the server certificate first, then its chain
    std::string key_pem;                        // its private key, unencrypted
    std::string cert_name = "the certificate";  // the file names, for messages
    std::string key_name = "the key";
    std::size_t session_cache_size = 20480;
};

// What the certificate says about itself, for logs and warnings.
struct CertificateInfo {
    std::string subject;
    std::string not_after;  // as OpenSSL prints it, e.g. "Dec  2 11:11:08 2027 GMT"
    bool expired = false;
    bool not_yet_valid = false;
    std::size_t chain_length = 0;  // certificates after the server's own
};

class ServerContext {
  public:
    // Throws TlsError naming the file and the fix: no certificate in the PEM, an unreadable or
    // encrypted key, a key that does not belong to the certificate.
    explicit ServerContext(const ServerConfig& cfg);
    ~ServerContext();
    ServerContext(const ServerContext&) = delete;
    ServerContext& operator=(const ServerContext&) = delete;

    SSL_CTX* native() const noexcept { return ctx_; }
    const CertificateInfo& certificate() const noexcept { return info_; }
    // Empty, or a warning for the operator (an expired or not yet valid certificate).
    std::string warning() const;
    // The certificate and key PEM it was built from (to tell whether a reload changes them).
    const std::string& source() const noexcept { return source_; }

  private:
    SSL_CTX* ctx_ = nullptr;
    CertificateInfo info_;
    std::string source_;
};

// The cipher list and groups used (Mozilla intermediate, guidelines 5.7), for docs and tests.
extern const char* const kTls12Ciphers;
extern const char* const kGroups;

// OpenSSL's error queue, drained into one line (empty if it is empty).
std::string drain_errors();

}  // namespace steerchat::tls
