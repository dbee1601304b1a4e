// What the master uses of the app part (app/launch.hpp): the edge limits' check and the host-wide
// state. The hand-over itself (run_worker) is exercised by every integration and e2e test.
#include "app/launch.hpp"

#include <gtest/gtest.h>

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
