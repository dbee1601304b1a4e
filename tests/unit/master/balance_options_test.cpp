// `steerchat balance [options] -- COMMAND`: the master's settings are parsed and checked as for the
// built-in pool, the workers' settings refused, COMMAND found on PATH.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "master/options.hpp"

using namespace steerchat::master;

namespace {

BalanceParseResult parse_balance(std::vector<std::string> args) {
    args.insert(args.begin(), {"steerchat", "balance"});
    std::vector<const char*> argv;
    for (auto& a : args)
        argv.push_back(a.c_str());
    return parse_balance_options(static_cast<int>(argv.size()), argv.data());
}

void expect_balance_error(std::vector<std::string> args, const std::string& needle, int code = 2) {
    auto r = parse_balance(args);
    EXPECT_FALSE(r.options.has_value());
    EXPECT_EQ(r.exit_code, code);
    EXPECT_NE(r.message.find(needle), std::string::npos) << r.message;
}

}  // namespace

TEST(BalanceOptions, MasterSettingsAndCommand) {
    auto r = parse_balance({"--port", "3000", "-w", "3", "--steering", "kernel", "--admin-port", "9100",
                    "--max-restarts", "2", "--", "sh", "-c", "exec --port 1"});
    ASSERT_TRUE(r.options) << r.message;
    ASSERT_TRUE(r.balance);
    EXPECT_EQ(r.options->port, 3000);
    EXPECT_EQ(r.options->workers, 3u);
    EXPECT_EQ(r.options->steering, SteeringMode::kernel);
    EXPECT_EQ(r.options->max_restarts, 2u);
    EXPECT_EQ(r.balance->admin_port, 9100);
    EXPECT_EQ(r.balance->admin_bind, "127.0.0.1");
    EXPECT_EQ(r.balance->start_grace_ms, 3000u);
    // Everything after "--" is the command's, options included.
    EXPECT_EQ(r.balance->command, (std::vector<std::string>{"sh", "-c", "exec --port 1"}));
    EXPECT_TRUE(r.balance->program.ends_with("/sh")) << r.balance->program;
}

TEST(BalanceOptions, Help) {
    auto r = parse_balance({"--help"});
    EXPECT_EQ(r.exit_code, 0);
    for (const char* word : {"-- COMMAND", "LISTEN_FDS", "--admin-port", "--start-grace-ms",
                             "--workers", "--max-restarts", "--shutdown-timeout-ms"})
        EXPECT_NE(r.message.find(word), std::string::npos) << word;
    EXPECT_EQ(r.message.find("--eio-ping-interval-ms"), std::string::npos);
}

TEST(BalanceOptions, Errors) {
    expect_balance_error({}, "no COMMAND");
    expect_balance_error({"--port", "3000"}, "no COMMAND");
    expect_balance_error({"--port", "3000", "--"}, "no COMMAND");
    expect_balance_error({"node", "server.js"}, "the command goes after '--'");
    expect_balance_error({"--eio-ping-interval-ms", "5", "--", "sh"}, "setting of steerchat's own chat");
    expect_balance_error({"--tls-cert", "x.pem", "--", "sh"}, "setting of steerchat's own chat");
    expect_balance_error({"--no-such-option", "--", "sh"}, "no-such-option");
    expect_balance_error({"--workers", "0", "--", "sh"}, "--workers 0 is out of range");
    expect_balance_error({"--port", "3000", "--admin-port", "3000", "--", "sh"}, "COMMAND owns that port");
    expect_balance_error({"--admin-port", "70000", "--", "sh"}, "not a TCP port");
    expect_balance_error({"--admin-bind", "localhost", "--", "sh"}, "not an IPv4 or IPv6 address");
    expect_balance_error({"--start-grace-ms", "0", "--", "sh"}, "--start-grace-ms 0 is out of range");
    expect_balance_error({"--", "surely-no-such-program-steerchat"}, "not found on PATH");
    expect_balance_error({"--", "/etc"}, "not a regular file");
    // Errors point at balance's help, not the server's.
    auto r = parse_balance({"--workers", "0", "--", "sh"});
    EXPECT_NE(r.message.find("steerchat balance --help"), std::string::npos) << r.message;
}
