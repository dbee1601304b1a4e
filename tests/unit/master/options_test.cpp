#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "master/options.hpp"
#include "net/limits.hpp"

using namespace steerchat::master;

namespace {

ParseResult parse(std::vector<std::string> args) {
    args.insert(args.begin(), "steerchat");
    std::vector<const char*> argv;
    for (auto& a : args)
        argv.push_back(a.c_str());
    return parse_options(static_cast<int>(argv.size()), argv.data());
}

void expect_error(std::vector<std::string> args, const std::string& needle) {
    auto r = parse(args);
    EXPECT_FALSE(r.options.has_value());
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.message.find(needle), std::string::npos) << r.message;
    EXPECT_NE(r.message.find("--help"), std::string::npos) << "points at --help: " << r.message;
}

}  // namespace

TEST(Options, Defaults) {
    auto r = parse({});
    ASSERT_TRUE(r.options);
    EXPECT_EQ(r.options->port, 8080);
    EXPECT_EQ(r.options->bind, "::");
    EXPECT_EQ(r.options->steering, SteeringMode::bpf);
    EXPECT_GE(r.options->workers, 1u);
    EXPECT_EQ(r.options->seed, default_seed());
    EXPECT_EQ(r.options->pin_dir(), "/sys/fs/bpf/steerchat/8080");
}

TEST(Options, AllSet) {
    auto r = parse({"--port", "9000", "--workers", "4", "--bind", "127.0.0.1", "--steering",
                    "kernel", "--seed", "0x10", "--ipv6-prefix64", "--no-cpu-pinning"});
    ASSERT_TRUE(r.options) << r.message;
    EXPECT_EQ(r.options->port, 9000);
    EXPECT_EQ(r.options->workers, 4u);
    EXPECT_EQ(r.options->bind, "127.0.0.1");
    EXPECT_EQ(r.options->steering, SteeringMode::kernel);
    EXPECT_EQ(r.options->seed, 16u);
    EXPECT_TRUE(r.options->ipv6_prefix64);
    EXPECT_FALSE(r.options->pin_cpus);
}

// --max-workers sizes the shared parts for `steerchat ctl workers N`: at least --workers, at most
// the BPF's STEER_MAX_SLOTS (128); by default 4 x the online CPUs within those bounds.
TEST(Options, MaxWorkers) {
    auto d = parse({"--workers", "3"});
    ASSERT_TRUE(d.options) << d.message;
    EXPECT_GE(d.options->max_workers, 3u);
    EXPECT_LE(d.options->max_workers, 128u);
    auto big = parse({"--workers", "128"});
    ASSERT_TRUE(big.options) << big.message;
    EXPECT_EQ(big.options->max_workers, 128u);
    auto set = parse({"--workers", "2", "--max-workers", "6"});
    ASSERT_TRUE(set.options) << set.message;
    EXPECT_EQ(set.options->workers, 2u);
    EXPECT_EQ(set.options->max_workers, 6u);
    expect_error({"--workers", "4", "--max-workers", "3"}, "--max-workers 3 is out of range");
    expect_error({"--workers", "4", "--max-workers", "129"}, "--max-workers 129 is out of range");
}

TEST(Options, WebSocketLimits) {
    auto r = parse({"--ws-max-message", "4096", "--ws-ping-interval-ms", "500",
                    "--ws-ping-timeout-ms", "300"});
    ASSERT_TRUE(r.options) << r.message;
    EXPECT_EQ(r.options->ws_max_message, 4096u);
    EXPECT_EQ(r.options->ws_ping_interval_ms, 500u);
    EXPECT_EQ(r.options->ws_ping_timeout_ms, 300u);
    EXPECT_TRUE(r.options->ws_cork);
    EXPECT_TRUE(r.options->encode_once);
    auto b = parse({"--ws-no-cork", "--no-encode-once"});
    ASSERT_TRUE(b.options) << b.message;
    EXPECT_FALSE(b.options->ws_cork);
    EXPECT_FALSE(b.options->encode_once);
}

TEST(Options, HelpDocumentsEveryOption) {
    auto r = parse({"--help"});
    EXPECT_FALSE(r.options);
    EXPECT_EQ(r.exit_code, 0);
    for (const char* o : {"--port", "--workers", "--bind", "--steering", "--seed", "--backlog",
                          "--bpffs-dir", "--respawn-delay-ms", "--max-restarts"})
        EXPECT_NE(r.message.find(o), std::string::npos) << o;
}

TEST(Options, Errors) {
    expect_error({"--port", "0"}, "--port");
    expect_error({"--port", "70000"}, "--port");
    expect_error({"--port", "abc"}, "port");
    expect_error({"--workers", "0"}, "--workers");
    expect_error({"--workers", "129"}, "--workers");
    expect_error({"--steering", "magic"}, "bpf or kernel");
    expect_error({"--seed", "12x"}, "--seed");
    expect_error({"--seed", "0x100000000"}, "--seed");
    expect_error({"--bind", "localhost:80"}, "--bind");
    expect_error({"--backlog", "-1"}, "--backlog");
    expect_error({"--no-such-option"}, "no-such-option");
    expect_error({"--port"}, "port");
    expect_error({"--ws-max-message", "10"}, "--ws-max-message");
    expect_error({"--ws-ping-interval-ms", "0"}, "--ws-ping-interval-ms");
}

TEST(Options, WordsThatAreNotOptionsAreRejected) {
    // Boost.Program_options would drop them: "steerchat balance ..." must not start the server.
    expect_error({"foo", "bar", "--port", "8080"}, "'foo'");
    expect_error({"--port", "8080", "foo"}, "'foo'");
    expect_error({"--workers", "2", "balance"}, "unexpected argument 'balance'");
    expect_error({"--", "x"}, "'x'");
    // A value that looks like a word is still an option's value.
    auto r = parse({"--bind", "127.0.0.1", "--steering", "kernel"});
    ASSERT_TRUE(r.options) << r.message;
}

TEST(Options, UserAndGroup) {
    auto d = parse({});
    ASSERT_TRUE(d.options);
    EXPECT_EQ(d.options->user, "");  // chosen at startup: steerchat if it exists, else nobody
    EXPECT_EQ(d.options->group, "");
    auto r = parse({"--user", "nobody", "--group", "nogroup"});
    ASSERT_TRUE(r.options) << r.message;
    EXPECT_EQ(r.options->user, "nobody");
    EXPECT_EQ(r.options->group, "nogroup");
    EXPECT_FALSE(r.options->seccomp);
    auto sc = parse({"--seccomp"});
    ASSERT_TRUE(sc.options) << sc.message;
    EXPECT_TRUE(sc.options->seccomp);
    auto n = parse({"--user", "65534"});
    ASSERT_TRUE(n.options) << n.message;
    expect_error({"--user", "root"}, "root");
    expect_error({"--user", "0"}, "root");
    expect_error({"--user", "no-such-user-steerchat-test"}, "no-such-user-steerchat-test");
    expect_error({"--group", "root"}, "root");
    expect_error({"--group", "no-such-group-steerchat-test"}, "no-such-group-steerchat-test");
}

TEST(Options, HelpDocumentsUser) {
    auto r = parse({"--help"});
    EXPECT_NE(r.message.find("--user"), std::string::npos);
    EXPECT_NE(r.message.find("--group"), std::string::npos);
    EXPECT_NE(r.message.find("--seccomp"), std::string::npos);
}

TEST(Options, HttpEdgeLimits) {
    auto d = parse({});
    ASSERT_TRUE(d.options) << d.message;
    EXPECT_EQ(d.options->max_conns_per_ip, 256u);
    // Derived from the hard open-files limit the master raises to: 5 % (at least 64) kept free.
    const auto nofile = open_files_hard_limit();
    EXPECT_EQ(d.options->max_conns_per_worker,
              steerchat::net::default_max_conns_per_worker(nofile));
    EXPECT_LE(d.options->max_conns_per_worker + steerchat::net::kMinFdHeadroom, nofile);
    EXPECT_EQ(d.options->http_max_header_bytes, 16384u);
    EXPECT_EQ(d.options->http_header_timeout_ms, 10000u);
    EXPECT_EQ(d.options->http_first_byte_timeout_ms, 10000u);
    EXPECT_EQ(d.options->http_keepalive_timeout_ms, 60000u);
    EXPECT_EQ(d.options->http_body_timeout_ms, 30000u);

    auto r = parse({"--max-conns-per-ip", "0", "--max-conns-per-worker", "100",
                    "--http-max-header-bytes", "4096", "--http-header-timeout-ms", "1500",
                    "--http-first-byte-timeout-ms", "700", "--http-keepalive-timeout-ms", "900",
                    "--http-body-timeout-ms", "2000"});
    ASSERT_TRUE(r.options) << r.message;
    EXPECT_EQ(r.options->max_conns_per_ip, 0u);
    EXPECT_EQ(r.options->max_conns_per_worker, 100u);
    EXPECT_EQ(r.options->http_max_header_bytes, 4096u);
    EXPECT_EQ(r.options->http_header_timeout_ms, 1500u);
    EXPECT_EQ(r.options->http_first_byte_timeout_ms, 700u);
    EXPECT_EQ(r.options->http_keepalive_timeout_ms, 900u);
    EXPECT_EQ(r.options->http_body_timeout_ms, 2000u);

    expect_error({"--max-conns-per-worker", "0"}, "--max-conns-per-worker");
    expect_error({"--max-conns-per-worker", std::to_string(nofile)}, "open-files limit");
    expect_error({"--http-max-header-bytes", "100"}, "--http-max-header-bytes");
    expect_error({"--http-header-timeout-ms", "0"}, "--http-header-timeout-ms");
    expect_error({"--http-keepalive-timeout-ms", "99"}, "--http-keepalive-timeout-ms");
    expect_error({"--http-first-byte-timeout-ms", "4000000"}, "--http-first-byte-timeout-ms");
    expect_error({"--http-body-timeout-ms", "0"}, "--http-body-timeout-ms");
    auto help = parse({"--help"});
    for (const char* o : {"--max-conns-per-ip", "--max-conns-per-worker", "--http-max-header-bytes",
                          "--http-header-timeout-ms", "--http-first-byte-timeout-ms",
                          "--http-keepalive-timeout-ms", "--http-body-timeout-ms"})
        EXPECT_NE(help.message.find(o), std::string::npos) << o;
}

TEST(Options, EngineIoAndChatLimits) {
    auto d = parse({});
    ASSERT_TRUE(d.options);
    EXPECT_EQ(d.options->eio_max_sessions_per_ip, 1000u);
    EXPECT_EQ(d.options->eio_first_poll_timeout_ms, 5000u);
    EXPECT_EQ(d.options->eio_max_queued, std::size_t{4} << 20);
    EXPECT_EQ(d.options->eio_max_queued_total, std::size_t{64} << 20);
    EXPECT_EQ(d.options->chat_rate, 50);
    EXPECT_EQ(d.options->chat_burst, 100u);
    EXPECT_EQ(d.options->chat_rate_close_after, 50u);
    EXPECT_EQ(d.options->chat_max_rooms, 100u);
    auto r = parse({"--eio-max-sessions-per-ip", "0", "--eio-first-poll-timeout-ms", "0",
                    "--eio-max-queued", "65536", "--eio-max-queued-total", "1048576", "--chat-rate",
                    "0.5", "--chat-burst", "3", "--chat-rate-close-after", "0",
                    "--chat-max-rooms-per-user", "7"});
    ASSERT_TRUE(r.options) << r.message;
    EXPECT_EQ(r.options->eio_max_sessions_per_ip, 0u);
    EXPECT_EQ(r.options->eio_max_queued_total, 1048576u);
    EXPECT_EQ(r.options->chat_rate, 0.5);
    EXPECT_EQ(r.options->chat_max_rooms, 7u);
    expect_error({"--eio-max-queued", "100"}, "--eio-max-queued 100 is out of range");
    expect_error({"--eio-max-queued", "65536", "--eio-max-queued-total", "1024"},
                 "must be at least --eio-max-queued");
    expect_error({"--chat-rate", "-1"}, "--chat-rate -1 is out of range");
    expect_error({"--chat-rate", "nan"}, "--chat-rate");
    expect_error({"--chat-burst", "0"}, "--chat-burst 0 is out of range");
    expect_error({"--chat-rate", "0.0000001"}, "--chat-rate 1e-07 is out of range");
    expect_error({"--eio-max-sessions-per-ip", "many"}, "eio-max-sessions-per-ip");
}

TEST(Options, TypingRate) {
    auto d = parse({});
    ASSERT_TRUE(d.options);
    EXPECT_EQ(d.options->chat_typing_rate, 2);
    EXPECT_EQ(d.options->chat_typing_burst, 5u);
    auto r = parse({"--chat-typing-rate", "0.5", "--chat-typing-burst", "2"});
    ASSERT_TRUE(r.options) << r.message;
    EXPECT_EQ(r.options->chat_typing_rate, 0.5);
    EXPECT_EQ(r.options->chat_typing_burst, 2u);
    auto off = parse({"--chat-typing-rate", "0", "--chat-typing-burst", "0"});
    ASSERT_TRUE(off.options) << off.message;  // no limit: the burst does not matter
    expect_error({"--chat-typing-rate", "-1"}, "--chat-typing-rate -1 is out of range");
    expect_error({"--chat-typing-rate", "nan"}, "--chat-typing-rate");
    expect_error({"--chat-typing-burst", "0"}, "--chat-typing-burst 0 is out of range");
}

TEST(Options, UpgradeOptions) {
    auto r = parse({});
    ASSERT_TRUE(r.options);
    EXPECT_EQ(r.options->drain_timeout_ms, 2000u);
    EXPECT_FALSE(r.options->takeover);
    EXPECT_FALSE(r.options->discard_state);
    r = parse({"--port", "9000", "--takeover", "--discard-state", "--drain-timeout-ms", "500"});
    ASSERT_TRUE(r.options) << r.message;
    EXPECT_TRUE(r.options->takeover);
    EXPECT_TRUE(r.options->discard_state);
    EXPECT_EQ(r.options->drain_timeout_ms, 500u);
    // The default drain fits a short shutdown timeout; an explicit one must.
    r = parse({"--shutdown-timeout-ms", "1000"});
    ASSERT_TRUE(r.options) << r.message;
    EXPECT_EQ(r.options->drain_timeout_ms, 500u);
    expect_error({"--shutdown-timeout-ms", "1000", "--drain-timeout-ms", "1000"},
                 "--drain-timeout-ms 1000 is out of range");
    expect_error({"--drain-timeout-ms", "50"}, "--drain-timeout-ms 50 is out of range");
    expect_error({"--discard-state"}, "--discard-state goes with --takeover");
}
