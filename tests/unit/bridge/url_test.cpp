// The --redis URL: the forms it accepts, and errors that say what is wrong.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "bridge/bridge.hpp"

namespace bridge = steerchat::bridge;

namespace {

std::string error_of(const std::string& url) {
    try {
        bridge::parse_url(url);
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return {};
}

TEST(RedisUrl, HostPortPasswordDb) {
    const auto u = bridge::parse_url("redis://:s3cret@10.0.0.9:6380/2");
    EXPECT_EQ(u.host, "10.0.0.9");
    EXPECT_EQ(u.port, 6380);
    EXPECT_EQ(u.password, "s3cret");
    EXPECT_EQ(u.user, "");
    EXPECT_EQ(u.db, 2u);
    const auto d = bridge::parse_url("redis://redis.example");
    EXPECT_EQ(d.host, "redis.example");
    EXPECT_EQ(d.port, 6379);
    EXPECT_EQ(d.db, 0u);
    const auto a = bridge::parse_url("redis://chat:pw@[::1]:7000");
    EXPECT_EQ(a.host, "::1");
    EXPECT_EQ(a.port, 7000);
    EXPECT_EQ(a.user, "chat");
    EXPECT_EQ(a.password, "pw");
}

TEST(RedisUrl, UnixSocket) {
    const auto u = bridge::parse_url("unix:///run/redis/redis.sock?db=3");
    EXPECT_EQ(u.host, "");
    EXPECT_EQ(u.path, "/run/redis/redis.sock");
    EXPECT_EQ(u.db, 3u);
}

TEST(RedisUrl, TlsIsRefusedWithTheReason) {
    const std::string e = error_of("rediss://10.0.0.9:6380");
    EXPECT_NE(e.find("hiredis 0.14"), std::string::npos) << e;
    EXPECT_NE(e.find("no TLS"), std::string::npos) << e;
}

TEST(RedisUrl, MistakesAreNamed) {
    EXPECT_NE(error_of("http://x").find("expected redis://"), std::string::npos);
    EXPECT_NE(error_of("redis://:6379").find("no host"), std::string::npos);
    EXPECT_NE(error_of("redis://h:99999").find("port"), std::string::npos);
    EXPECT_NE(error_of("redis://h:6379/x").find("database"), std::string::npos);
    EXPECT_NE(error_of("unix://relative").find("absolute"), std::string::npos);
}

}  // namespace
