// The pinned names come from the BPF object (steer::pinned_names), the one list of them.
#include <gtest/gtest.h>

#include <algorithm>

#include "steer/steering.hpp"

using namespace steerchat;

TEST(PinnedNames, AreTheObjectsMapsAndProgram) {
    auto names = steer::pinned_names();
    std::sort(names.begin(), names.end());
    // bpf/steer.bpf.c declares these maps and one program; scripts/inspect reads them all.
    EXPECT_EQ(names, (std::vector<std::string>{"buckets", "config", "slot_stats", "sockets",
                                               "stats", "steer"}));
}
