#include "web/static_files.hpp"

#include <memory>
#include <string>

#include <fmt/core.h>
#include <boost/beast/http/field.hpp>

#include "metrics/metrics.hpp"
#include "net/exchange.hpp"
#include "net/worker.hpp"

namespace http = boost::beast::http;

namespace steerchat::web {

namespace {

std::string_view content_type(std::string_view name) {
    const auto ends = [&](std::string_view ext) { return name.ends_with(ext); };
    if (ends(".html")) return "text/html; charset=utf-8";
    if (ends(".js")) return "text/javascript; charset=utf-8";
    if (ends(".css")) return "text/css; charset=utf-8";
    if (ends(".svg")) return "image/svg+xml";
    if (ends(".json")) return "application/json";
    return "application/octet-stream";
}

// In the worker's slot block: every worker renders every worker's (metrics.hpp).
struct Stats {
    metrics::Counter ok;            // 200, identity
    metrics::Counter gzip;          // 200, gzip
    metrics::Counter not_modified;  // 304
    metrics::Counter refused;       // 404 (--status-page off), 405
};

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
        s.remove_suffix(1);
    return s;
}

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if ((a[i] | 0x20) != (b[i] | 0x20)) return false;
    return true;
}

// Whether an Accept-Encoding header value accepts gzip: a "gzip" (or "*") coding whose q is not 0.
bool accepts_gzip(std::string_view header) {
    while (!header.empty()) {
        const std::size_t comma = header.find(',');
        std::string_view item = header.substr(0, comma);
        header = comma == std::string_view::npos ? std::string_view{} : header.substr(comma + 1);
        const std::size_t semi = item.find(';');
        const std::string_view coding = trim(item.substr(0, semi));
        if (!iequals(coding, "gzip") && coding != "*") continue;
        if (semi == std::string_view::npos) return true;
        std::string_view q = trim(item.substr(semi + 1));
        if (!q.starts_with("q=")) return true;
        q.remove_prefix(2);
        return q.find_first_not_of("0.") != std::string_view::npos;  // q=0, q=0.0: refused
    }
    return false;
}

// Whether If-None-Match (a list of entity tags, or *) names `etag` (weak comparison).
bool none_match(std::string_view header, std::string_view etag) {
    if (trim(header) == "*") return true;
    while (!header.empty()) {
        const std::size_t comma = header.find(',');
        std::string_view tag = trim(header.substr(0, comma));
        header = comma == std::string_view::npos ? std::string_view{} : header.substr(comma + 1);
        if (tag.starts_with("W/")) tag.remove_prefix(2);
        if (tag == etag) return true;
    }
    return false;
}

}  // namespace

const Asset* find(std::string_view name) {
    for (const Asset& a : assets())
        if (a.name == name) return &a;
    return nullptr;
}

void set_security_headers(net::Response& res) {
    res.set("Content-Security-Policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
    res.set("X-Content-Type-Options", "nosniff");
    res.set("Referrer-Policy", "no-referrer");
}

net::Response respond(const Asset& asset, const net::Request& req) {
    const bool head = req.method() == http::verb::head;
    if (req.method() != http::verb::get && !head) {
        auto res =
            net::make_response(http::status::method_not_allowed, req.version(), req.keep_alive(),
                               false, "use GET or HEAD\n", "text/plain; charset=utf-8");
        res.set(http::field::allow, "GET, HEAD");
        return res;
    }
    const bool gzip = !asset.gzip.empty() && accepts_gzip(req[http::field::accept_encoding]);
    std::string etag(asset.etag);
    if (gzip) etag.insert(etag.size() - 1, "-gz");
    const bool not_modified = none_match(req[http::field::if_none_match], etag);
    const std::string_view body = gzip ? asset.gzip : asset.body;
    auto res = net::make_response(not_modified ? http::status::not_modified : http::status::ok,
                                  req.version(), req.keep_alive(), head || not_modified,
                                  std::string(not_modified || head ? std::string_view{} : body),
                                  content_type(asset.name));
    if (not_modified) {
        res.erase(http::field::content_length);
        res.erase(http::field::content_type);
    } else if (head) {
        res.content_length(body.size());
    }
    res.set(http::field::etag, etag);
    res.set(http::field::cache_control, "no-cache");
    if (!asset.gzip.empty()) res.set(http::field::vary, "Accept-Encoding");
    if (gzip && !not_modified) res.set(http::field::content_encoding, "gzip");
    set_security_headers(res);
    return res;
}

void add_routes(net::Worker& worker, std::function<bool()> status_page) {
    auto stats = std::make_shared<metrics::Cell<Stats>>(&worker.metrics());
    worker.add_metrics_source([stats, &worker](std::string& out) {
        metrics::Text t(out);
        t.per_worker("steerchat_web_responses_total", "counter",
                     "Answers of the web pages' files (/, /status, /chat.js, ...): ok (200), gzip "
                     "(200, compressed), not_modified (304, If-None-Match), refused (404 with "
                     "--status-page off, 405).",
                     worker.metrics().peers(**stats), "result",
                     {{"ok", &Stats::ok},
                      {"gzip", &Stats::gzip},
                      {"not_modified", &Stats::not_modified},
                      {"refused", &Stats::refused}});
    });
    auto serve = [&worker, stats](std::string path, const Asset* asset,
                                  std::function<bool()> enabled) {
        if (!asset) return;
        worker.add_http_route(std::move(path), [asset, enabled = std::move(enabled),
                                                stats](const std::shared_ptr<net::Exchange>& ex) {
            const net::Request& req = ex->request();
            Stats& s = **stats;
            if (enabled && !enabled()) {
                ++s.refused;
                ex->respond(net::make_response(
                    http::status::not_found, req.version(), req.keep_alive(), false,
                    "no such resource: the status page is off (--status-page on)\n",
                    "text/plain; charset=utf-8"));
                return;
            }
            net::Response res = respond(*asset, req);
            if (res.result() == http::status::not_modified)
                ++s.not_modified;
            else if (res.result() != http::status::ok)
                ++s.refused;
            else if (res.count(http::field::content_encoding))
                ++s.gzip;
            else
                ++s.ok;
            ex->respond(std::move(res));
        });
    };
    for (const Asset& a : assets())
        serve(fmt::format("/{}", a.name), &a, a.name.starts_with("status") ? status_page : nullptr);
    serve("/", find("index.html"), nullptr);
    serve("/status", find("status.html"), status_page);
}

}  // namespace steerchat::web
