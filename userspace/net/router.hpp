// Routes a parsed HTTP request to its handler: /healthz, /metrics, and 404 for the rest.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include <boost/beast/http/message_generator.hpp>
#include <boost/beast/http/string_body.hpp>

namespace steerchat::net {

class Worker;

using Request = boost::beast::http::request<boost::beast::http::string_body>;
using Response = boost::beast::http::response<boost::beast::http::string_body>;

// A complete response carrying `body` (for a HEAD request only its Content-Length), with the
// Server header every steerchat response has.
Response make_response(boost::beast::http::status status, unsigned version, bool keep_alive,
                       bool head, std::string body, std::string_view content_type);

boost::beast::http::message_generator route(Request&& req, Worker& worker);

// Appends one Prometheus metric of worker `slot` (HELP, TYPE and the sample) to `out`.
void append_metric(std::string& out, std::string_view name, std::string_view type,
                   std::string_view help, unsigned slot, std::uint64_t value);
// The same with one more label: one sample per value of `label` (HELP and TYPE once), e.g.
// steerchat_connections_refused_total{worker="0",reason="per_ip"}.
void append_metric(std::string& out, std::string_view name, std::string_view type,
                   std::string_view help, unsigned slot, std::string_view label,
                   std::initializer_list<std::pair<std::string_view, std::uint64_t>> values);

// A small error response with a plain-text reason (also used for parse failures).
boost::beast::http::message_generator error_response(boost::beast::http::status status,
                                                     unsigned version, bool keep_alive,
                                                     std::string_view reason);

}  // namespace steerchat::net
