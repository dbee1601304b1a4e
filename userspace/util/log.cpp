#include "util/log.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>

#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>

namespace steerchat::log {

namespace {

struct State {
    Level level = Level::info;
    Format format = Format::text;
    bool journal = false;
    std::string slot = "master";
};

State& state() {
    static State s;
    return s;
}

// syslog priorities (sd-daemon.h's SD_ERR, SD_WARNING, SD_INFO, SD_DEBUG).
char priority(Level level) {
    switch (level) {
        case Level::error:
            return '3';
        case Level::warn:
            return '4';
        case Level::info:
            return '6';
        case Level::debug:
            return '7';
    }
    return '6';
}

std::string rfc3339(const timespec& when) {
    std::tm tm{};
    ::gmtime_r(&when.tv_sec, &tm);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900,
                       tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                       when.tv_nsec / 1000000);
}

}  // namespace

std::optional<Level> parse_level(std::string_view name) {
    for (Level l : {Level::error, Level::warn, Level::info, Level::debug})
        if (name == level_name(l)) return l;
    return std::nullopt;
}

std::optional<Format> parse_format(std::string_view name) {
    if (name == "text") return Format::text;
    if (name == "json") return Format::json;
    return std::nullopt;
}

std::string_view level_name(Level level) {
    switch (level) {
        case Level::error:
            return "error";
        case Level::warn:
            return "warn";
        case Level::info:
            return "info";
        case Level::debug:
            return "debug";
    }
    return "info";
}

bool stderr_is_journal() {
    const char* env = std::getenv("JOURNAL_STREAM");
    if (!env) return false;
    std::string_view v(env);
    auto colon = v.find(':');
    if (colon == std::string_view::npos) return false;
    unsigned long long dev = 0, ino = 0;
    auto a = std::from_chars(v.data(), v.data() + colon, dev);
    auto b = std::from_chars(v.data() + colon + 1, v.data() + v.size(), ino);
    if (a.ec != std::errc{} || a.ptr != v.data() + colon || b.ec != std::errc{} ||
        b.ptr != v.data() + v.size())
        return false;
    struct stat st {};
    if (::fstat(STDERR_FILENO, &st) != 0) return false;
    return st.st_dev == dev && st.st_ino == ino;
}

void configure(Level level, Format format) {
    state().level = level;
    state().format = format;
    state().journal = stderr_is_journal();
}

void set_slot(std::string slot) {
    state().slot = std::move(slot);
}

bool enabled(Level level) {
    return static_cast<int>(level) <= static_cast<int>(state().level);
}

std::string format_line(Level level, std::string_view msg, const timespec& when, long pid,
                        std::string_view slot, Format format, bool journal) {
    std::string s;
    if (journal) {
        s += '<';
        s += priority(level);
        s += '>';
    }
    if (format == Format::json) {
        s += fmt::format(R"({{"time":"{}","level":"{}","slot":{},"pid":{},"msg":{}}})",
                         rfc3339(when), level_name(level),
                         boost::json::serialize(boost::json::string_view(slot.data(), slot.size())),
                         pid,
                         boost::json::serialize(boost::json::string_view(msg.data(), msg.size())));
    } else {
        if (!journal) {
            s += rfc3339(when);
            s += ' ';
        }
        s += fmt::format("{} {} pid={}: {}", level_name(level), slot, pid, msg);
    }
    s += '\n';
    return s;
}

void write(Level level, std::string_view msg) {
    if (!enabled(level)) return;
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    const State& st = state();
    std::string s = format_line(level, msg, now, ::getpid(), st.slot, st.format, st.journal);
    [[maybe_unused]] auto n = ::write(STDERR_FILENO, s.data(), s.size());
}

}  // namespace steerchat::log
