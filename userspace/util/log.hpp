// The one logger of every steerchat process: one line per message on stderr, written with one
// write() so lines of the master and its workers do not interleave.
//
// Text (default):  2026-12-02T07:33:48.123Z info master pid=4242: listening on [::]:8080 ...
// JSON:            {"time":"2026-12-02T07:33:48.123Z","level":"info","slot":"master",
//                   "pid":4242,"msg":"listening on [::]:8080 ..."}
// Under journald (JOURNAL_STREAM names stderr's device and inode, see systemd.exec(5)) a text line
// has no time stamp (the journal keeps its own) and every line starts with the syslog priority
// ("<6>"), which journald turns into the entry's PRIORITY and strips.
//
// The time is RFC 3339 in UTC with milliseconds; the slot is "master" or "worker N"; the pid is
// the writing process's. Levels: error, warn, info, debug (--log-level; a message above the level
// is neither formatted nor written). Per-connection errors are at debug.
#pragma once

#include <ctime>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/core.h>

namespace steerchat::log {

enum class Level { error = 0, warn = 1, info = 2, debug = 3 };
enum class Format { text, json };

std::optional<Level> parse_level(std::string_view name);    // "error", "warn", "info", "debug"
std::optional<Format> parse_format(std::string_view name);  // "text", "json"
std::string_view level_name(Level level);

// Sets the level and format for this process (inherited by workers forked after it) and decides
// whether stderr is the journal (then text lines carry no time stamp).
void configure(Level level, Format format);
// "master" (the default) or "worker N"; set once per process, the worker's right after fork.
void set_slot(std::string slot);

// True if JOURNAL_STREAM names the device and inode of stderr (the way systemd.exec(5) says
// to detect that stderr is connected to the journal).
bool stderr_is_journal();

bool enabled(Level level);
// Writes one line (a message that is not enabled is dropped).
void write(Level level, std::string_view msg);
// The line `write` would emit for a message at `when` from `pid` (no trailing newline handling
// differences: the result ends with '\n'). For tests.
std::string format_line(Level level, std::string_view msg, const timespec& when, long pid,
                        std::string_view slot, Format format, bool journal);

template <class... Args>
void at(Level level, fmt::format_string<Args...> f, Args&&... args) {
    if (!enabled(level)) return;
    write(level, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
    at(Level::error, f, std::forward<Args>(args)...);
}
template <class... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
    at(Level::warn, f, std::forward<Args>(args)...);
}
template <class... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
    at(Level::info, f, std::forward<Args>(args)...);
}
template <class... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
    at(Level::debug, f, std::forward<Args>(args)...);
}
// The old name: an info line.
template <class... Args>
void line(fmt::format_string<Args...> f, Args&&... args) {
    at(Level::info, f, std::forward<Args>(args)...);
}

}  // namespace steerchat::log
