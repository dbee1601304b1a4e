// Shared pieces of the integration tests: a private network namespace, a steerchat server
// process, and HTTP clients bound to chosen 127.x.y.z source addresses.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace steerchat::itest {

// Moves this process into a new network namespace with lo up. Returns false (with errno) if it
// cannot (no privileges).
bool enter_private_netns();

// The steerchat binary under test (set by CMake).
std::string server_binary();
// The repository root (for scripts/).
std::filesystem::path source_dir();

struct Health {
    int worker = -1;
    pid_t pid = -1;
};

// The server address the clients connect to: 127.0.0.1, or for IPv6 clients kIpv6Server.
inline constexpr const char* kIpv6Server = "2001:db8::1";

// One HTTP/1.1 GET over a new connection from `src` (IPv4 or IPv6 text; an IPv6 client connects
// to kIpv6Server), reading the whole response. Returns nullopt on any failure; `timeout` bounds
// connect + response.
std::optional<std::string> http_get(const std::string& src, std::uint16_t port,
                                    const std::string& path,
                                    std::chrono::milliseconds timeout = std::chrono::seconds(5));
// GET /healthz from `src` and parse worker and pid.
std::optional<Health> healthz(const std::string& src, std::uint16_t port,
                              std::chrono::milliseconds timeout = std::chrono::seconds(5));

// Makes all of 2001:db8::/32 local in this namespace (so clients can bind any address in it).
bool enable_ipv6_test_prefix();

// The i-th of many distinct client addresses: 127.1.0.1, 127.1.0.2, ... (never 127.0.0.1).
std::string client_ip(unsigned i);

// True if `log` holds a report of AddressSanitizer, LeakSanitizer or UndefinedBehaviorSanitizer
// (a sanitizer build, -DSTEERCHAT_SANITIZE=address,undefined).
bool has_sanitizer_report(const std::string& log);

class Server {
  public:
    // `wrapper` runs the binary (e.g. {"setpriv", "--reuid=65534", ...}); empty: run it directly.
    // `port_flag` false: no --port on the command line (the config file among `extra_args`
    // names `port`).
    Server(std::uint16_t port, std::vector<std::string> extra_args,
           std::vector<std::string> wrapper = {}, bool port_flag = true);
    // SIGKILLs the whole process group if still running. Fails the current test if the server
    // (the master or any worker, over its whole life) wrote a sanitizer report: a worker that
    // dies of one is respawned and the test might not notice otherwise.
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    // Waits until every one of `workers` slots has answered /healthz at least once (using client
    // addresses spread over the hash space). Returns false on timeout.
    bool wait_ready(unsigned workers, std::chrono::milliseconds timeout = std::chrono::seconds(10));
    void signal(int sig);
    // Waits for the master to exit; returns its wait status, or nullopt on timeout.
    std::optional<int> wait_exit(std::chrono::milliseconds timeout);
    std::string log() const;  // master + workers stderr so far
    pid_t pid() const { return pid_; }
    std::uint16_t port() const { return port_; }

  private:
    pid_t pid_ = -1;
    std::uint16_t port_;
    std::filesystem::path log_path_;
    bool exited_ = false;
};

// Runs a shell command, returning its exit code and combined output.
std::pair<int, std::string> run_command(const std::string& cmd);

bool process_alive(pid_t pid);

}  // namespace steerchat::itest
