// The control socket of a running master (`steerchat ctl`): a Unix stream socket
// <run-dir>/<port>.ctl next to the instance lock, mode 0600, served from the master's poll loop.
//
// Protocol: the client sends one request line (words separated by single spaces, at most
// kMaxRequest bytes, ended by '\n'); the master answers "ok\n" or "error\n", then free text, and
// closes the connection. One request per connection.
//
// Who may ask: the socket file is 0600 in a private directory, and every peer's SO_PEERCRED uid
// is checked at accept: root or the master's own uid, anyone else gets an error and the close.
//
// Nothing blocks the master: the sockets are non-blocking, a connection that has not sent its
// line within kRequestTimeout (or not taken its answer within the same time) is closed, at most
// kMaxConnections are open at once (more are refused at accept), and the request buffer is
// bounded. A handler runs on the master's thread: it must be quick, or take the connection
// (ControlRequest::take) and finish the exchange from its own poll set.
//
// Threading: the master's thread only.
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "util/unique_fd.hpp"

namespace steerchat::master {

inline constexpr std::size_t kMaxRequest = 4096;
inline constexpr std::size_t kMaxConnections = 16;
inline constexpr std::chrono::milliseconds kRequestTimeout{2000};

// <run_dir>/<port>.ctl
std::filesystem::path control_path(const std::filesystem::path& run_dir, std::uint16_t port);

// One request, as a handler sees it.
struct ControlRequest {
    std::vector<std::string> words;  // words[0] is the command's name
    int fd = -1;                     // the connection (non-blocking), e.g. to send SCM_RIGHTS
    ucred peer{};                    // who asked (SO_PEERCRED at accept)

    // Takes the connection from the server: it then writes no answer and does not close it (the
    // handler's reply is ignored). For exchanges longer than one answer.
    UniqueFd take();

    UniqueFd* owner_ = nullptr;  // the server's handle on the connection (for take)
};

struct ControlReply {
    bool ok = true;
    std::string text;  // shown to the operator; a trailing newline is added if missing

    static ControlReply success(std::string text) { return {true, std::move(text)}; }
    static ControlReply failure(std::string text) { return {false, std::move(text)}; }
};

class ControlServer {
  public:
    using Handler = std::function<ControlReply(ControlRequest&)>;

    // Binds <run_dir>/<port>.ctl (replacing a stale file: the caller holds the instance lock).
    // Peers must be root or `owner`. Throws std::runtime_error naming the fix.
    ControlServer(const std::filesystem::path& run_dir, std::uint16_t port, uid_t owner);
    ~ControlServer();  // removes the socket file
    ControlServer(const ControlServer&) = delete;
    ControlServer& operator=(const ControlServer&) = delete;

    // Registers COMMAND: `usage` ("workers N") and `summary` are shown by the built-in "help".
    void add(const std::string& name, std::string usage, std::string summary, Handler handler);

    // Poll integration: append() adds this server's pollfds (the listener and every open
    // connection) to `fds` and returns how many; after poll(), process() takes exactly those
    // entries back. timeout_ms() is the longest the loop may sleep for the server's deadlines
    // (-1: none).
    std::size_t append(std::vector<pollfd>& fds) const;
    void process(std::span<const pollfd> fds);
    int timeout_ms() const;

    const std::filesystem::path& path() const { return path_; }

  private:
    using Clock = std::chrono::steady_clock;
    struct Connection {
        UniqueFd fd;
        ucred peer{};
        std::string in;   // request bytes so far
        std::string out;  // answer bytes not yet written
        bool answering = false;
        bool allowed = false;  // root or the owner
        Clock::time_point deadline;
    };
    struct Command {
        std::string usage, summary;
        Handler handler;
    };

    void accept_all();
    // false: the connection is finished (close it).
    bool on_readable(Connection& c);
    bool on_writable(Connection& c);
    void dispatch(Connection& c, const std::string& line);
    void answer(Connection& c, const ControlReply& reply);
    std::string help() const;

    std::filesystem::path path_;
    uid_t owner_;
    UniqueFd listener_;
    std::vector<Connection> conns_;
    std::map<std::string, Command> commands_;
};

// The client side (steerchat ctl; also for other tools that talk to a master).

// An error whose message says what went wrong and what to do.
class ControlError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// Connects to the master on `port`. Throws ControlError: no such instance (how to find one),
// permission denied (run as root), a stale socket.
UniqueFd control_connect(const std::filesystem::path& run_dir, std::uint16_t port);
// Sends one request (words without spaces or newlines; ControlError otherwise).
void control_send(int fd, const std::vector<std::string>& words);
// Reads the whole answer (until the master closes), at most `timeout`.
ControlReply control_receive(int fd, std::chrono::milliseconds timeout);

// `steerchat ctl ...` (argv[0] is "ctl"): returns the exit status (0 ok, 1 failed, 2 usage).
int run_ctl(int argc, const char* const argv[]);

}  // namespace steerchat::master
