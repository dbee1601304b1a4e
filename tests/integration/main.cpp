// Integration tests need root: real BPF programs and a private network namespace per test
// process. Unprivileged runs outside CI skip (exit 77, which ctest reports as skipped); under
// CI=true a missing privilege is a failure, never a skip.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "harness.hpp"

int main(int argc, char** argv) {
    ::testing::InitGoogleTest(&argc, argv);
    if (::testing::GTEST_FLAG(list_tests)) return RUN_ALL_TESTS();
    const char* ci = std::getenv("CI");
    const bool in_ci = ci && std::strcmp(ci, "true") == 0;
    if (::geteuid() != 0 || !steerchat::itest::enter_private_netns()) {
        std::fprintf(stderr,
                     "integration tests need root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN for a "
                     "private network namespace): %s\n",
                     std::strerror(errno));
        if (in_ci) {
            std::fprintf(stderr, "CI=true: failing instead of skipping\n");
            return 1;
        }
        std::fprintf(stderr, "SKIPPED\n");
        return 77;
    }
    return RUN_ALL_TESTS();
}
