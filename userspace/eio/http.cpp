#include "eio/http.hpp"

#include <fmt/core.h>
#include <boost/beast/http/field.hpp>

namespace http = boost::beast::http;

namespace steerchat::eio {

namespace {

std::string_view error_message(int code) {
    switch (code) {
        case 0:
            return "Transport unknown";
        case 1:
            return "Session ID unknown";
        case 2:
            return "Bad handshake method";
        case 3:
            return "Bad request";
        case 4:
            return "Forbidden";
        case 5:
            return "Unsupported protocol version";
    }
    return "Bad request";
}

}  // namespace

bool query_value(std::string_view query, std::string_view key, std::string_view& out) {
    while (!query.empty()) {
        const auto amp = query.find('&');
        std::string_view part = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
        const auto eq = part.find('=');
        if (part.substr(0, eq) != key) continue;
        out = eq == std::string_view::npos ? std::string_view{} : part.substr(eq + 1);
        return true;
    }
    return false;
}

bool origin_listed(const std::vector<std::string>& list, std::string_view origin) {
    for (const auto& o : list)
        if (o == "*" || o == origin) return true;
    return false;
}

net::Response answer(const Options& options, const net::Request& req, http::status status,
                     std::string body, std::string_view content_type) {
    auto res = net::make_response(status, req.version(), req.keep_alive(), false, std::move(body),
                                  content_type);
    res.set(http::field::cache_control, "no-store");
    if (auto it = req.find(http::field::origin); it != req.end() && !options.cors_origins.empty() &&
                                                 origin_listed(options.cors_origins, it->value())) {
        res.set(http::field::access_control_allow_origin, it->value());
        res.set(http::field::access_control_allow_credentials, "true");
        res.set(http::field::vary, "Origin");
    }
    return res;
}

net::Response error_answer(const Options& options, const net::Request& req, int code) {
    const auto body = fmt::format(R"({{"code":{},"message":"{}"}})", code, error_message(code));
    return answer(options, req, code == 4 ? http::status::forbidden : http::status::bad_request,
                  body, "application/json");
}

}  // namespace steerchat::eio
