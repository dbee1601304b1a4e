// The client address that --eio-max-sessions-per-ip counts: IPv4 (the same when it arrives
// v4-mapped on a dual-stack listener), or the /64 of an IPv6 address.
#include <gtest/gtest.h>

#include <boost/asio/ip/tcp.hpp>

#include "eio/server.hpp"

namespace eio = steerchat::eio;
using boost::asio::ip::make_address;
using boost::asio::ip::tcp;

namespace {

eio::Server::AddrKey key(const char* addr, unsigned short port = 1234) {
    return eio::Server::addr_key(tcp::endpoint(make_address(addr), port));
}

TEST(EioAddrKey, IPv4AndV4Mapped) {
    EXPECT_EQ(key("192.0.2.7"), key("192.0.2.7", 999));  // the port does not matter
    EXPECT_EQ(key("192.0.2.7"), key("::ffff:192.0.2.7"));
    EXPECT_NE(key("192.0.2.7"), key("192.0.2.8"));
}

TEST(EioAddrKey, IPv6ByPrefix64) {
    EXPECT_EQ(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff:ffff:ffff:ffff"));
    EXPECT_NE(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    // An IPv6 prefix never equals an IPv4 address with the same leading bytes.
    EXPECT_NE(key("::"), key("0.0.0.0"));
    const eio::Server::AddrHash h;
    EXPECT_EQ(h(key("2001:db8:1:2::1")), h(key("2001:db8:1:2::2")));
}

}  // namespace
