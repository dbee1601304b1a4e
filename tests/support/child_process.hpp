// Forked test children: fork_child runs fn() in a child that exits with its return value (98 after
// a std::exception, whose message goes to stderr; 99 after anything else); wait_child waits for
// it at most `limit`, SIGKILLs it after that, and returns its exit code, 128 + the signal that
// ended it, or -1 on timeout.
#pragma once

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <thread>

namespace steerchat::test_support {

template <class F>
pid_t fork_child(F&& fn) {
    const pid_t pid = ::fork();
    if (pid == 0) {
        int code = 99;
        try {
            code = fn();
        } catch (const std::exception& e) {
            std::fprintf(stderr, "child: %s\n", e.what());
            code = 98;
        } catch (...) {
            code = 99;
        }
        ::_exit(code);
    }
    return pid;
}

inline int wait_child(pid_t pid, std::chrono::milliseconds limit = std::chrono::seconds(60)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    for (;;) {
        int status = 0;
        const pid_t r = ::waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            if (WIFEXITED(status)) return WEXITSTATUS(status);
            if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
            return -2;
        }
        if (std::chrono::steady_clock::now() > deadline) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            return -1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}

}  // namespace steerchat::test_support
