// Minimal process-tagged logging to stderr: "steerchat[master] ..." / "steerchat[worker 2] ...".
// One write() per line, so lines of different processes do not interleave.
#pragma once

#include <unistd.h>

#include <string>
#include <utility>

#include <fmt/core.h>

namespace steerchat::log {

// Set once per process (the master, then each worker after fork).
inline std::string& tag() {
    static std::string t = "steerchat";
    return t;
}

template <class... Args>
void line(fmt::format_string<Args...> f, Args&&... args) {
    std::string s = tag();
    s += ' ';
    s += fmt::format(f, std::forward<Args>(args)...);
    s += '\n';
    [[maybe_unused]] auto n = ::write(STDERR_FILENO, s.data(), s.size());
}

}  // namespace steerchat::log
