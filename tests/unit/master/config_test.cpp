// --version, --config FILE and the example config packaging/steerchat.conf.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "master/options.hpp"

using namespace steerchat::master;

namespace {

ParseResult parse_config(std::vector<std::string> args) {
    args.insert(args.begin(), "steerchat");
    std::vector<const char*> argv;
    for (auto& a : args)
        argv.push_back(a.c_str());
    return parse_options(static_cast<int>(argv.size()), argv.data());
}

// A config file in a temporary directory, removed at the end of the test.
class ConfigFile {
  public:
    explicit ConfigFile(const std::string& text) {
        path_ = std::filesystem::temp_directory_path() /
                ("steerchat-config-test-" + std::to_string(::getpid()) + "-" +
                 std::to_string(counter_++) + ".conf");
        std::ofstream(path_) << text;
    }
    ~ConfigFile() { std::filesystem::remove(path_); }
    std::string path() const { return path_.string(); }

  private:
    static inline int counter_ = 0;
    std::filesystem::path path_;
};

std::string read(const std::filesystem::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

const std::filesystem::path kExample =
    std::filesystem::path(STEERCHAT_SOURCE_DIR) / "packaging" / "steerchat.conf";

}  // namespace

TEST(Version, PrintsVersionAndGitRevision) {
    auto r = parse_config({"--version"});
    EXPECT_FALSE(r.options);
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_TRUE(
        std::regex_search(r.message, std::regex(std::string("^steerchat ") + STEERCHAT_VERSION +
                                                "\ngit revision "
                                                "([0-9a-f]{40}(-dirty)?|"
                                                "unknown)$")))
        << r.message;
    EXPECT_EQ(parse_config({"-V"}).message, r.message);
    auto help = parse_config({"--help"});
    EXPECT_NE(help.message.find("--version"), std::string::npos);
    EXPECT_NE(help.message.find("--config"), std::string::npos);
}

TEST(Config, FileSetsSettingsAndTheCommandLineOverrides) {
    ConfigFile f(
        "# a comment\n"
        "port = 9000\n"
        "workers = 2\n"
        "seccomp = true\n"
        "no-cpu-pinning = true\n"
        "log-level = debug\n"
        "log-format = json\n"
        "allow-origin = https://a.example\n"
        "allow-origin = https://b.example\n"
        "chat-rate = 10\n");
    auto r = parse_config({"--config", f.path()});
    ASSERT_TRUE(r.options) << r.message;
    EXPECT_EQ(r.options->port, 9000);
    EXPECT_EQ(r.options->workers, 2u);
    EXPECT_TRUE(r.options->seccomp);
    EXPECT_FALSE(r.options->pin_cpus);
    EXPECT_EQ(r.options->log_level, steerchat::log::Level::debug);
    EXPECT_EQ(r.options->log_format, steerchat::log::Format::json);
    EXPECT_EQ(r.options->allowed_origins,
              (std::vector<std::string>{"https://a.example", "https://b.example"}));
    EXPECT_EQ(r.options->chat_rate, 10);

    // The command line wins, also over a repeatable key (no mix of both lists).
    r = parse_config({"--port", "9100", "--config", f.path(), "--allow-origin", "https://c.example",
               "--log-level", "warn"});
    ASSERT_TRUE(r.options) << r.message;
    EXPECT_EQ(r.options->port, 9100);
    EXPECT_EQ(r.options->workers, 2u);
    EXPECT_EQ(r.options->log_level, steerchat::log::Level::warn);
    EXPECT_EQ(r.options->allowed_origins, (std::vector<std::string>{"https://c.example"}));
}

TEST(Config, UnknownKeyNamesFileLineAndKey) {
    ConfigFile f("port = 9000\n\nfrobnicate = 1\n");
    auto r = parse_config({"--config", f.path()});
    EXPECT_FALSE(r.options);
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.message.find(f.path() + ":3: "), std::string::npos) << r.message;
    EXPECT_NE(r.message.find("frobnicate"), std::string::npos) << r.message;
}

TEST(Config, CommandLineOnlyOptionsAreNotKeys) {
    for (const char* key : {"help = true", "version = true", "config = /etc/other.conf"}) {
        ConfigFile f(std::string(key) + "\n");
        auto r = parse_config({"--config", f.path()});
        EXPECT_EQ(r.exit_code, 2) << key;
        EXPECT_NE(r.message.find(f.path() + ":1: "), std::string::npos) << r.message;
    }
}

TEST(Config, BadValueNamesFileLineAndKey) {
    {
        ConfigFile f("workers = 2\nport = eighty\n");
        auto r = parse_config({"--config", f.path()});
        EXPECT_EQ(r.exit_code, 2);
        EXPECT_NE(r.message.find(f.path() + ":2: "), std::string::npos) << r.message;
        EXPECT_NE(r.message.find("port"), std::string::npos) << r.message;
    }
    {
        // A value of the right type but out of range: the check names the file's line too.
        ConfigFile f("\n  ring-size = 12\n");
        auto r = parse_config({"--config", f.path()});
        EXPECT_EQ(r.exit_code, 2);
        EXPECT_NE(r.message.find(f.path() + ":2: --ring-size 12 is out of range"),
                  std::string::npos)
            << r.message;
    }
    {
        ConfigFile f("log-format = xml\n");
        auto r = parse_config({"--config", f.path()});
        EXPECT_EQ(r.exit_code, 2);
        EXPECT_NE(r.message.find(f.path() + ":1: --log-format 'xml'"), std::string::npos)
            << r.message;
    }
    auto r = parse_config({"--config", "/nonexistent/steerchat.conf"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.message.find("/nonexistent/steerchat.conf: No such file"), std::string::npos)
        << r.message;
}

// packaging/steerchat.conf is what example_config() makes from the options: a new option, a
// changed default or description fails here until the file is regenerated.
TEST(ExampleConfig, IsCurrent) {
    const std::string want = example_config();
    if (read(kExample) != want) {
        const auto fresh = std::filesystem::path(STEERCHAT_BINARY_DIR) / "steerchat.conf.expected";
        std::ofstream(fresh) << want;
        FAIL() << kExample << " is not what the options make; regenerate it:\n  cp " << fresh << " "
               << kExample;
    }
}

// Independently of the generator: every long option of --help (but the command line's own:
// --help, --version, --config, and --takeover / --discard-state, which make sense for one start
// only) is in the file, commented out as "#key =".
TEST(ExampleConfig, HasEveryOptionOfHelp) {
    const std::string text = read(kExample);
    const std::string help = parse_config({"--help"}).message;
    std::regex opt("--([a-z0-9][a-z0-9-]+)");
    std::set<std::string> names;
    for (std::sregex_iterator it(help.begin(), help.end(), opt), end; it != end; ++it)
        names.insert((*it)[1]);
    ASSERT_GT(names.size(), 40u);
    for (const auto& n : names) {
        if (n == "help" || n == "version" || n == "config" || n == "takeover" ||
            n == "discard-state")
            continue;
        // Words of descriptions that look like options but are none ("--steering kernel" is
        // the option steering).
        if (help.find("[ --" + n + " ]") == std::string::npos &&
            help.find("\n  --" + n + " ") == std::string::npos)
            continue;
        EXPECT_NE(text.find("\n#" + n + " ="), std::string::npos)
            << "missing from " << kExample << ": " << n;
    }
}

// With every line uncommented the file means the defaults.
TEST(ExampleConfig, UncommentedGivesTheDefaults) {
    std::istringstream in(read(kExample));
    std::string line, out;
    std::regex setting("^#([a-z0-9-]+) = (.+)$");
    int uncommented = 0;
    while (std::getline(in, line)) {
        std::smatch m;
        if (std::regex_match(line, m, setting)) {
            out += m[1].str() + " = " + m[2].str() + "\n";
            ++uncommented;
        }
    }
    ASSERT_GT(uncommented, 40);
    ConfigFile f(out);
    auto r = parse_config({"--config", f.path()});
    ASSERT_TRUE(r.options) << r.message << "\n" << out;
    auto d = parse_config({});
    ASSERT_TRUE(d.options);
    EXPECT_EQ(r.options->port, d.options->port);
    EXPECT_EQ(r.options->bind, d.options->bind);
    EXPECT_EQ(r.options->steering, d.options->steering);
    EXPECT_EQ(r.options->bpffs_dir, d.options->bpffs_dir);
    EXPECT_EQ(r.options->run_dir, d.options->run_dir);
    EXPECT_EQ(r.options->ring_bytes, d.options->ring_bytes);
    EXPECT_EQ(r.options->pin_cpus, d.options->pin_cpus);
    EXPECT_EQ(r.options->seccomp, d.options->seccomp);
    EXPECT_EQ(r.options->eio3, d.options->eio3);
    EXPECT_EQ(r.options->chat_rate, d.options->chat_rate);
    EXPECT_EQ(r.options->socketio_path, d.options->socketio_path);
    EXPECT_EQ(r.options->log_level, d.options->log_level);
    EXPECT_EQ(r.options->log_format, d.options->log_format);
    EXPECT_EQ(r.options->http_keepalive_timeout_ms, d.options->http_keepalive_timeout_ms);
}
