// The options -> worker context mapping (app::worker_context): every worker-facing option
// reaches the part that enforces it.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "app/worker_app.hpp"
#include "master/options.hpp"

using namespace steerchat;
using namespace std::chrono_literals;

namespace {

master::Options parse_context_options(std::vector<std::string> args) {
    args.insert(args.begin(), "steerchat");
    std::vector<const char*> argv;
    for (auto& a : args)
        argv.push_back(a.c_str());
    auto r = master::parse_options(static_cast<int>(argv.size()), argv.data());
    EXPECT_TRUE(r.options) << r.message;
    return r.options.value_or(master::Options{});
}

app::WorkerContext worker_context(const master::Options& o) {
    return app::worker_context(o, o.workers);
}

}  // namespace

TEST(WorkerContext, CarriesEveryWorkerOption) {
    const auto o = parse_context_options({"--workers",
                          "3",
                          "--allow-origin",
                          "https://a.example",
                          "--ws-max-message",
                          "4096",
                          "--ws-max-queued",
                          "8192",
                          "--ws-ping-interval-ms",
                          "500",
                          "--ws-ping-timeout-ms",
                          "300",
                          "--ws-no-cork",
                          "--no-encode-once",
                          "--socketio-path",
                          "/sio/",
                          "--eio-ping-interval-ms",
                          "700",
                          "--eio-ping-timeout-ms",
                          "600",
                          "--eio-max-payload",
                          "5000000",
                          "--no-eio3",
                          "--cors-origin",
                          "*",
                          "--sio-namespace",
                          "/admin",
                          "--sio-connect-timeout-ms",
                          "900",
                          "--chat-typing-rate",
                          "3",
                          "--chat-typing-burst",
                          "7"});
    const app::WorkerContext ctx = app::worker_context(o, o.workers);
    EXPECT_EQ(ctx.nslots, 3u);
    EXPECT_EQ(ctx.net.allowed_origins, std::vector<std::string>{"https://a.example"});
    EXPECT_EQ(ctx.net.websocket.max_message_size, 4096u);
    EXPECT_EQ(ctx.net.websocket.max_queued_bytes, 8192u);
    EXPECT_EQ(ctx.net.websocket.ping_interval, 500ms);
    EXPECT_EQ(ctx.net.websocket.ping_timeout, 300ms);
    EXPECT_FALSE(ctx.net.websocket.cork);
    EXPECT_FALSE(ctx.app.encode_once);
    EXPECT_EQ(ctx.app.engine.path, "/sio/");
    EXPECT_EQ(ctx.app.engine.ping_interval, 700ms);
    EXPECT_EQ(ctx.app.engine.ping_timeout, 600ms);
    EXPECT_EQ(ctx.app.engine.max_payload, 5000000u);
    EXPECT_FALSE(ctx.app.engine.allow_eio3);
    EXPECT_EQ(ctx.app.engine.cors_origins, std::vector<std::string>{"*"});
    EXPECT_EQ(ctx.app.engine.allowed_origins, std::vector<std::string>{"https://a.example"});
    EXPECT_EQ(ctx.app.socketio.connect_timeout, 900ms);
    EXPECT_EQ(ctx.app.sio_namespaces, std::vector<std::string>{"/admin"});
    EXPECT_FALSE(ctx.app.protocol_test);
    EXPECT_EQ(ctx.app.chat_limits.typing_rate, 3);
    EXPECT_EQ(ctx.app.chat_limits.typing_burst, 7u);
    EXPECT_TRUE(worker_context(parse_context_options({"--protocol-test"})).app.protocol_test);
    EXPECT_TRUE(ctx.app.status_page);
    EXPECT_FALSE(worker_context(parse_context_options({"--status-page", "off"})).app.status_page);
    EXPECT_TRUE(worker_context(parse_context_options({"--status-page", "on"})).app.status_page);
}

TEST(WorkerContext, HttpBodiesMakeRoomForEngineIoPayloads) {
    app::WorkerContext ctx = worker_context(parse_context_options({"--eio-max-payload", "5000000"}));
    ctx.slot = 2;
    ctx.listen_fd = 7;
    const net::WorkerConfig cfg = app::worker_config(ctx);
    EXPECT_EQ(cfg.slot, 2u);
    EXPECT_EQ(cfg.listen_fd, 7);
    EXPECT_GT(cfg.max_body_bytes, 5000000u);
    // A small payload limit leaves the HTTP edge's own body limit alone.
    ctx = worker_context(parse_context_options({"--eio-max-payload", "100"}));
    EXPECT_EQ(app::worker_config(ctx).max_body_bytes, net::WorkerConfig{}.max_body_bytes);
}
