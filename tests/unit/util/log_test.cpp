#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include <gtest/gtest.h>
#include <boost/json.hpp>

#include "util/log.hpp"

using namespace steerchat::log;

namespace {

// 2026-12-02T07:33:48.123Z
const timespec kWhen{1796196828, 123456789};

}  // namespace

TEST(Log, TextLineHasTimeLevelSlotAndPid) {
    EXPECT_EQ(format_line(Level::warn, "worker 2 was killed by signal 9", kWhen, 4242, "master",
                          Format::text, false),
              "2026-12-02T07:33:48.123Z warn master pid=4242: worker 2 was killed by signal 9\n");
    EXPECT_EQ(format_line(Level::info, "serving", kWhen, 7, "worker 3", Format::text, false),
              "2026-12-02T07:33:48.123Z info worker 3 pid=7: serving\n");
}

TEST(Log, JsonLineIsOneObjectWithTheFields) {
    std::string line = format_line(Level::debug, "a \"quoted\"\nnew line\t\x01", kWhen, 4242,
                                   "worker 1", Format::json, false);
    ASSERT_EQ(line.back(), '\n');
    EXPECT_EQ(line.find('\n'), line.size() - 1) << "one line: " << line;
    auto v = boost::json::parse(line).as_object();
    EXPECT_EQ(v.size(), 5u);
    EXPECT_EQ(v.at("time").as_string(), "2026-12-02T07:33:48.123Z");
    EXPECT_EQ(v.at("level").as_string(), "debug");
    EXPECT_EQ(v.at("slot").as_string(), "worker 1");
    EXPECT_EQ(v.at("pid").as_int64(), 4242);
    EXPECT_EQ(v.at("msg").as_string(), "a \"quoted\"\nnew line\t\x01");
}

TEST(Log, UnderJournaldTextHasPriorityAndNoTime) {
    EXPECT_EQ(format_line(Level::error, "boom", kWhen, 1, "master", Format::text, true),
              "<3>error master pid=1: boom\n");
    EXPECT_EQ(format_line(Level::debug, "x", kWhen, 1, "master", Format::text, true).substr(0, 3),
              "<7>");
    // JSON keeps its fixed fields (time included); journald strips the priority prefix.
    auto line = format_line(Level::warn, "x", kWhen, 1, "master", Format::json, true);
    ASSERT_EQ(line.substr(0, 3), "<4>");
    EXPECT_EQ(boost::json::parse(line.substr(3)).at("time").as_string(),
              "2026-12-02T07:33:48.123Z");
}

TEST(Log, LevelAndFormatNames) {
    EXPECT_EQ(parse_level("error"), Level::error);
    EXPECT_EQ(parse_level("warn"), Level::warn);
    EXPECT_EQ(parse_level("info"), Level::info);
    EXPECT_EQ(parse_level("debug"), Level::debug);
    EXPECT_FALSE(parse_level("warning"));
    EXPECT_EQ(parse_format("text"), Format::text);
    EXPECT_EQ(parse_format("json"), Format::json);
    EXPECT_FALSE(parse_format("logfmt"));
}

TEST(Log, LevelFilters) {
    configure(Level::warn, Format::text);
    EXPECT_TRUE(enabled(Level::error));
    EXPECT_TRUE(enabled(Level::warn));
    EXPECT_FALSE(enabled(Level::info));
    EXPECT_FALSE(enabled(Level::debug));
    configure(Level::debug, Format::text);
    EXPECT_TRUE(enabled(Level::debug));
    configure(Level::info, Format::text);
}

// stderr is the journal only when JOURNAL_STREAM names its device and inode (systemd.exec(5)):
// a child process that inherited the variable but writes elsewhere keeps its time stamps.
TEST(Log, JournalStreamMustBeStderr) {
    char path[] = "/tmp/steerchat-log-test-XXXXXX";
    int fd = ::mkstemp(path);
    ASSERT_GE(fd, 0);
    ::unlink(path);
    int saved = ::dup(STDERR_FILENO);
    ASSERT_GE(saved, 0);
    ASSERT_EQ(::dup2(fd, STDERR_FILENO), STDERR_FILENO);
    struct stat st {};
    ASSERT_EQ(::fstat(fd, &st), 0);
    const std::string mine = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
    const std::string other = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino + 1);

    ::unsetenv("JOURNAL_STREAM");
    bool none = stderr_is_journal();
    ::setenv("JOURNAL_STREAM", mine.c_str(), 1);
    bool same = stderr_is_journal();
    configure(Level::info, Format::text);
    write(Level::info, "to the journal");
    ::setenv("JOURNAL_STREAM", other.c_str(), 1);
    bool different = stderr_is_journal();
    ::setenv("JOURNAL_STREAM", "garbage", 1);
    bool garbage = stderr_is_journal();
    ::unsetenv("JOURNAL_STREAM");
    configure(Level::info, Format::text);
    write(Level::info, "to a file");

    ::dup2(saved, STDERR_FILENO);
    ::close(saved);
    EXPECT_FALSE(none);
    EXPECT_TRUE(same);
    EXPECT_FALSE(different);
    EXPECT_FALSE(garbage);
    std::string text(4096, '\0');
    auto n = ::pread(fd, text.data(), text.size(), 0);
    ::close(fd);
    ASSERT_GT(n, 0);
    text.resize(static_cast<std::size_t>(n));
    const std::string pid = std::to_string(::getpid());
    EXPECT_EQ(text.find("<6>info master pid=" + pid + ": to the journal\n"), 0u) << text;
    auto second = text.find('\n') + 1;
    EXPECT_EQ(text.find(" info master pid=" + pid + ": to a file\n", second), second + 24) << text;
}
