// What the master uses of the app part (app/launch.hpp): the edge limits' check and the host-wide
// state. The hand-over itself (run_worker) is exercised by every integration and e2e test.
#include "app/launch.hpp"

#include <gtest/gtest.h>
#include <boost/json.hpp>

using namespace steerchat;

TEST(Launch, EdgeLimitsFillTheDefaultAndRefuseWhatCannotFit) {
    app::WorkerOptions o;
    EXPECT_EQ(app::check_edge_limits(o, false, 100000), "");
    EXPECT_GT(o.max_conns_per_worker, 0u);
    EXPECT_LE(o.max_conns_per_worker + app::fd_headroom(), 100000u);

    o.max_conns_per_worker = 0;
    EXPECT_NE(app::check_edge_limits(o, true, 100000), "");
    o.max_conns_per_worker = 100000;  // no room left for the worker's own descriptors
    EXPECT_NE(app::check_edge_limits(o, true, 100000).find("open-files limit"), std::string::npos);
    o.max_conns_per_worker = 1000;
    EXPECT_EQ(app::check_edge_limits(o, true, 100000), "");
    o.http_body_timeout_ms = 50;
    EXPECT_NE(app::check_edge_limits(o, true, 100000).find("--http-body-timeout-ms"),
              std::string::npos);
}

TEST(Launch, HostStateReleasesASlotWithoutUsers) {
    auto ring = ring::Region::create(2, std::size_t{64} << 10);
    auto host = app::HostState::create();
    EXPECT_EQ(host.release_slot(ring, 1), 0u);
    app::HostState moved = std::move(host);
    EXPECT_EQ(moved.release_slot(ring, 0), 0u);
}

namespace {

// Options with every field away from its default (a field added to WorkerOptions belongs here
// and in launch.cpp's for_each_field).
app::WorkerOptions all_changed() {
    app::WorkerOptions o;
    o.allowed_origins = {"https://a.example", "*"};
    o.ws_max_message = 12345;
    o.ws_max_queued = 123456;
    o.ws_ping_interval_ms = 1111;
    o.ws_ping_timeout_ms = 2222;
    o.ws_cork = false;
    o.encode_once = false;
    o.socketio_path = "/sio/";
    o.eio_ping_interval_ms = 3333;
    o.eio_ping_timeout_ms = 4444;
    o.eio_max_payload = 5555;
    o.eio3 = false;
    o.cors_origins = {"https://b.example"};
    o.sio_namespaces = {"/admin", "/x \"quoted\" \\ name"};
    o.sio_connect_timeout_ms = 6666;
    o.protocol_test = true;
    o.status_page = false;
    o.ipv6_prefix64 = true;
    o.max_conns_per_ip = 7;
    o.max_conns_per_worker = std::size_t{1} << 40;  // beyond 32 bits
    o.http_max_header_bytes = 8888;
    o.http_first_byte_timeout_ms = 9999;
    o.http_keepalive_timeout_ms = 10101;
    o.http_header_timeout_ms = 11111;
    o.http_body_timeout_ms = 12121;
    o.eio_max_sessions_per_ip = 13;
    o.eio_first_poll_timeout_ms = 0;
    o.eio_max_queued = 14141;
    o.eio_max_queued_total = 151515;
    o.chat_rate = 0.25;
    o.chat_burst = 16;
    o.chat_rate_close_after = 17;
    o.chat_max_rooms = 18;
    o.chat_max_names_per_ip = 7;
    o.chat_join_history_bytes = 7777;
    o.chat_presence_max_users = 4321;
    o.chat_typing_rate = 1.5;
    o.chat_typing_burst = 19;
    o.log_level = log::Level::debug;
    o.log_format = log::Format::json;
    o.tls_cert_file = "/etc/steerchat/chain.pem";
    o.tls_key_file = "/etc/steerchat/key.pem";
    o.tls_cert_pem = "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n";
    o.tls_key_pem = "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----\n";
    o.tls_handshake_timeout_ms = 2500;
    o.tls_max_handshakes = 64;
    o.tls_max_handshakes_per_ip = 4;
    o.tls_port = 8443;
    return o;
}

}  // namespace

TEST(Launch, ConfigUpdateRoundTripsEveryField) {
    const app::ConfigUpdate update{all_changed(), {3, 2}};
    ASSERT_NE(update.options, app::WorkerOptions{});
    const std::string text = app::serialize(update);
    std::string error;
    auto back = app::parse_config_update(text, error);
    ASSERT_TRUE(back) << error << "\n" << text;
    EXPECT_EQ(*back, update);
    EXPECT_EQ(error, "");

    // Every serialized field differs from the default's: the round trip above tested each.
    const auto changed = boost::json::parse(text).at("options").as_object();
    const auto defaults =
        boost::json::parse(app::serialize(app::ConfigUpdate{})).at("options").as_object();
    EXPECT_EQ(changed.size(), defaults.size());
    for (const auto& [key, value] : defaults)
        EXPECT_NE(changed.at(key), value) << key << " is not changed by all_changed()";
    auto plain = app::parse_config_update(app::serialize(app::ConfigUpdate{}), error);
    ASSERT_TRUE(plain) << error;
    EXPECT_EQ(*plain, app::ConfigUpdate{});
}

TEST(Launch, MalformedConfigUpdatesAreRefusedWithTheReason) {
    std::string error;
    EXPECT_FALSE(app::parse_config_update("", error));
    EXPECT_NE(error, "");
    EXPECT_FALSE(app::parse_config_update("[1,2]", error));
    EXPECT_FALSE(app::parse_config_update(R"({"options":{}})", error));
    EXPECT_NE(error.find("allowed_origins"), std::string::npos) << error;

    std::string text = app::serialize(app::ConfigUpdate{});
    const std::string key = "\"max_conns_per_ip\":256";
    ASSERT_NE(text.find(key), std::string::npos) << text;
    for (const char* bad :
         {"\"max_conns_per_ip\":-1", "\"max_conns_per_ip\":\"256\"", "\"max_conns_per_ip\":2.5"}) {
        std::string t = text;
        t.replace(t.find(key), key.size(), bad);
        EXPECT_FALSE(app::parse_config_update(t, error)) << bad;
        EXPECT_NE(error.find("max_conns_per_ip"), std::string::npos) << error;
    }
    std::string t = text;
    t.replace(t.find("\"info\""), 6, "\"loud\"");
    EXPECT_FALSE(app::parse_config_update(t, error));
    EXPECT_NE(error.find("log_level"), std::string::npos) << error;
}
