#include "master/control.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

#include <fmt/core.h>
#include <boost/program_options.hpp>

#include "util/log.hpp"

namespace steerchat::master {

namespace po = boost::program_options;

namespace {

sockaddr_un unix_address(const std::filesystem::path& path) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.native().size() >= sizeof a.sun_path)
        throw ControlError(fmt::format(
            "the control socket path {} is too long for a Unix socket ({} bytes at most); "
            "choose a shorter --run-dir",
            path.string(), sizeof a.sun_path - 1));
    std::memcpy(a.sun_path, path.c_str(), path.native().size());
    return a;
}

std::vector<std::string> split_words(const std::string& line) {
    std::vector<std::string> words;
    std::istringstream in(line);
    for (std::string w; in >> w;)
        words.push_back(std::move(w));
    return words;
}

}  // namespace

std::filesystem::path control_path(const std::filesystem::path& run_dir, std::uint16_t port) {
    return run_dir / fmt::format("{}.ctl", port);
}

UniqueFd ControlRequest::take() {
    return owner_ ? std::move(*owner_) : UniqueFd{};
}

ControlServer::ControlServer(const std::filesystem::path& run_dir, std::uint16_t port, uid_t owner)
    : path_(control_path(run_dir, port)), owner_(owner) {
    const sockaddr_un addr = unix_address(path_);
    listener_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!listener_)
        throw std::runtime_error(fmt::format("control socket: {}", std::strerror(errno)));
    // A file left by a master that did not exit cleanly (we hold the instance lock).
    ::unlink(path_.c_str());
    // Created 0600 from the start (no window in which others could connect).
    const mode_t old = ::umask(0177);
    const int rc = ::bind(listener_.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
    const int err = errno;
    ::umask(old);
    if (rc != 0)
        throw std::runtime_error(fmt::format(
            "cannot create the control socket {}: {} (choose a writable directory with --run-dir)",
            path_.string(), std::strerror(err)));
    if (::listen(listener_.get(), static_cast<int>(kMaxConnections)) != 0) {
        const int e = errno;
        ::unlink(path_.c_str());
        throw std::runtime_error(
            fmt::format("listen on the control socket {}: {}", path_.string(), std::strerror(e)));
    }
    add("help", "help", "list the commands",
        [this](ControlRequest&) { return ControlReply::success(help()); });
}

ControlServer::~ControlServer() {
    if (listener_) ::unlink(path_.c_str());
}

void ControlServer::add(const std::string& name, std::string usage, std::string summary,
                        Handler handler) {
    commands_[name] = Command{std::move(usage), std::move(summary), std::move(handler)};
}

std::string ControlServer::help() const {
    std::string out = "commands:\n";
    for (const auto& [name, c] : commands_)
        out += fmt::format("  {:<22} {}\n", c.usage, c.summary);
    return out;
}

std::size_t ControlServer::append(std::vector<pollfd>& fds) const {
    fds.push_back({listener_.get(), POLLIN, 0});
    for (const auto& c : conns_)
        fds.push_back({c.fd.get(), static_cast<short>(c.answering ? POLLOUT : POLLIN), 0});
    return 1 + conns_.size();
}

int ControlServer::timeout_ms() const {
    if (conns_.empty()) return -1;
    auto first = std::min_element(conns_.begin(), conns_.end(), [](const auto& a, const auto& b) {
                     return a.deadline < b.deadline;
                 })->deadline;
    auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(first - Clock::now()).count() + 1;
    return static_cast<int>(std::clamp<long>(ms, 0, kRequestTimeout.count()));
}

void ControlServer::process(std::span<const pollfd> fds) {
    if (fds.empty()) return;
    // fds[1..] are conns_ in order, as append() wrote them (accept_all below only appends).
    const std::size_t n = std::min(fds.size() - 1, conns_.size());
    std::vector<bool> done(conns_.size(), false);
    const auto now = Clock::now();
    for (std::size_t i = 0; i < n; ++i) {
        Connection& c = conns_[i];
        const short ev = fds[i + 1].revents;
        if (ev & (POLLERR | POLLHUP | POLLNVAL) && !(ev & POLLIN))
            done[i] = true;
        else if (ev & POLLIN)
            done[i] = !on_readable(c);
        else if (ev & POLLOUT)
            done[i] = !on_writable(c);
        if (!done[i] && c.fd && now >= c.deadline) {
            log::warn("control: a client (pid {}) {} within {} ms; closing its connection",
                      c.peer.pid, c.answering ? "did not take its answer" : "sent no request",
                      kRequestTimeout.count());
            done[i] = true;
        }
        if (!c.fd) done[i] = true;  // taken by a handler
    }
    std::size_t k = 0;
    for (std::size_t i = 0; i < conns_.size(); ++i)
        if (!done[i]) conns_[k++] = std::move(conns_[i]);
    conns_.resize(k);
    if (fds[0].revents & POLLIN) accept_all();
}

void ControlServer::accept_all() {
    for (;;) {
        UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            return;  // EAGAIN, or EMFILE and the like: the next poll turn tries again
        }
        Connection c;
        c.fd = std::move(fd);
        c.deadline = Clock::now() + kRequestTimeout;
        socklen_t len = sizeof c.peer;
        if (::getsockopt(c.fd.get(), SOL_SOCKET, SO_PEERCRED, &c.peer, &len) != 0) continue;
        // Someone else still gets an answer (after its request, so the close resets nothing).
        c.allowed = c.peer.uid == 0 || c.peer.uid == owner_;
        if (!c.allowed)
            log::warn("control: refusing a request from uid {} (pid {}): root only", c.peer.uid,
                      c.peer.pid);
        if (conns_.size() < kMaxConnections) {
            conns_.push_back(std::move(c));
            continue;
        }
        answer(c, ControlReply::failure(fmt::format(
                      "busy: {} control connections are open; try again", conns_.size())));
        on_writable(c);  // a short answer fits the socket buffer; then it closes
    }
}

bool ControlServer::on_readable(Connection& c) {
    char buf[1024];
    for (;;) {
        const ssize_t n = ::read(c.fd.get(), buf, sizeof buf);
        if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        if (n == 0) return false;  // gone before a whole line
        c.in.append(buf, static_cast<std::size_t>(n));
        if (auto nl = c.in.find('\n'); nl != std::string::npos) {
            if (nl > kMaxRequest) break;
            dispatch(c, c.in.substr(0, nl));
            return c.fd && on_writable(c);
        }
        if (c.in.size() > kMaxRequest) break;
    }
    answer(c, ControlReply::failure(fmt::format("request longer than {} bytes", kMaxRequest)));
    return on_writable(c);
}

void ControlServer::dispatch(Connection& c, const std::string& line) {
    ControlRequest req;
    req.words = split_words(line);
    req.fd = c.fd.get();
    req.peer = c.peer;
    req.owner_ = &c.fd;
    ControlReply reply;
    if (!c.allowed) {
        reply = ControlReply::failure(
            "permission denied: the control socket answers root (and the user the master runs "
            "as) only; run steerchat ctl as root");
    } else if (req.words.empty()) {
        reply = ControlReply::failure("empty request; try: help");
    } else if (auto it = commands_.find(req.words[0]); it == commands_.end()) {
        reply =
            ControlReply::failure(fmt::format("unknown command '{}'\n{}", req.words[0], help()));
    } else {
        log::info("control: {} (uid {}, pid {})", line, c.peer.uid, c.peer.pid);
        try {
            reply = it->second.handler(req);
        } catch (const std::exception& e) {
            reply = ControlReply::failure(e.what());
        }
    }
    if (c.fd) answer(c, reply);
}

void ControlServer::answer(Connection& c, const ControlReply& reply) {
    c.answering = true;
    c.out = reply.ok ? "ok\n" : "error\n";
    c.out += reply.text;
    if (!c.out.empty() && c.out.back() != '\n') c.out += '\n';
    c.deadline = Clock::now() + kRequestTimeout;
}

bool ControlServer::on_writable(Connection& c) {
    while (!c.out.empty()) {
        const ssize_t n = ::send(c.fd.get(), c.out.data(), c.out.size(), MSG_NOSIGNAL);
        if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        c.out.erase(0, static_cast<std::size_t>(n));
    }
    return false;  // all written: close
}

// ---- client ----

UniqueFd control_connect(const std::filesystem::path& run_dir, std::uint16_t port) {
    const auto path = control_path(run_dir, port);
    const sockaddr_un addr = unix_address(path);
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) throw ControlError(fmt::format("socket: {}", std::strerror(errno)));
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) return fd;
    const int err = errno;
    switch (err) {
        case EACCES:
        case EPERM:
            throw ControlError(fmt::format(
                "permission denied on {}: the control socket is root's; run steerchat ctl as "
                "root (e.g. sudo steerchat ctl --port {} ...)",
                path.string(), port));
        case ENOENT:
        case ENOTDIR:
            throw ControlError(fmt::format(
                "no steerchat is running on port {} with run directory {} (no {}). Running "
                "instances leave <port>.lock and <port>.ctl in their run directory: ls {}; name "
                "one with --port (and --run-dir if it was started with one)",
                port, run_dir.string(), path.string(), run_dir.string()));
        case ECONNREFUSED:
            throw ControlError(fmt::format(
                "{} exists but nobody answers: the steerchat on port {} has exited or is "
                "starting; check it (systemctl status steerchat, or the pid in {})",
                path.string(), port, (run_dir / fmt::format("{}.lock", port)).string()));
        default:
            throw ControlError(
                fmt::format("cannot connect to {}: {}", path.string(), std::strerror(err)));
    }
}

void control_send(int fd, const std::vector<std::string>& words) {
    std::string line;
    for (const auto& w : words) {
        if (w.empty() || w.find_first_of(" \t\r\n") != std::string::npos)
            throw ControlError(fmt::format("'{}' is not a word (no spaces or newlines)", w));
        if (!line.empty()) line += ' ';
        line += w;
    }
    line += '\n';
    if (line.size() > kMaxRequest)
        throw ControlError(fmt::format("request longer than {} bytes", kMaxRequest));
    for (std::size_t at = 0; at < line.size();) {
        const ssize_t n = ::send(fd, line.data() + at, line.size() - at, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw ControlError(fmt::format("sending the request: {}", std::strerror(errno)));
        }
        at += static_cast<std::size_t>(n);
    }
}

ControlReply control_receive(int fd, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string in;
    char buf[4096];
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                              deadline - std::chrono::steady_clock::now())
                              .count();
        if (left <= 0)
            throw ControlError(
                fmt::format("no answer from the master within {} ms", timeout.count()));
        pollfd p{fd, POLLIN, 0};
        const int r = ::poll(&p, 1, static_cast<int>(left));
        if (r < 0 && errno != EINTR)
            throw ControlError(fmt::format("poll: {}", std::strerror(errno)));
        if (r <= 0) continue;
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            throw ControlError(fmt::format("reading the answer: {}", std::strerror(errno)));
        }
        if (n == 0) break;
        in.append(buf, static_cast<std::size_t>(n));
    }
    const auto nl = in.find('\n');
    const std::string status = in.substr(0, nl);
    std::string text = nl == std::string::npos ? std::string{} : in.substr(nl + 1);
    if (status == "ok") return ControlReply::success(std::move(text));
    if (status == "error") return ControlReply::failure(std::move(text));
    throw ControlError("the master closed the connection without an answer (see its log)");
}

int run_ctl(int argc, const char* const argv[]) {
    unsigned port = 8080;
    std::filesystem::path run_dir = "/run/steerchat";
    unsigned timeout_ms = 10000;
    std::filesystem::path config;
    std::vector<std::string> command;
    po::options_description desc("Options");
    // clang-format off
    desc.add_options()
        ("help,h", "show this help")
        ("port,p", po::value(&port)->default_value(port), "the instance's --port")
        ("run-dir", po::value(&run_dir)->default_value(run_dir),
         "the instance's --run-dir (where <port>.ctl is)")
        ("config,c", po::value(&config),
         "the instance's --config file: its port and run-dir (the options above, when given, "
         "override it), as in the systemd unit's ExecReload")
        ("timeout-ms", po::value(&timeout_ms)->default_value(timeout_ms),
         "how long to wait for the answer");
    // clang-format on
    po::options_description hidden;
    hidden.add_options()("command", po::value(&command)->composing());
    po::options_description all;
    all.add(desc).add(hidden);
    po::positional_options_description pos;
    pos.add("command", -1);
    const std::string usage = fmt::format(
        "usage: steerchat ctl [--port P] [--run-dir DIR] [--config FILE] COMMAND [ARG...]\n\n"
        "Talks to the running steerchat master on port P through its control socket "
        "<run-dir>/<port>.ctl (root only).\n\n"
        "Commands:\n"
        "  status       the slots: state (serving, starting, respawning, drained, stopping), "
        "pid\n"
        "  workers N    grow or shrink the pool to N workers (1 to --max-workers); slots below N "
        "that were drained come back\n"
        "  reload       re-read the configuration file and apply what can change while running "
        "(as SIGHUP); prints what changed and what needs a restart, fails if the file does not "
        "parse\n"
        "  upgrade      start the binary at the master's path with --takeover: a new binary takes "
        "over without dropping a connection (give --timeout-ms 60000 if its workers start "
        "slowly)\n"
        "  help         the commands this master knows\n\n"
        "{}\n"
        "Exit status: 0 done (the answer is printed), 1 failed (the reason on stderr), 2 usage.",
        [&] {
            std::ostringstream s;
            s << desc;
            return s.str();
        }());
    po::variables_map vm;
    try {
        po::store(po::command_line_parser(argc, argv)
                      .options(all)
                      .positional(pos)
                      .style(po::command_line_style::default_style &
                             ~po::command_line_style::allow_guessing)
                      .run(),
                  vm);
        po::notify(vm);
    } catch (const po::error& e) {
        std::fprintf(stderr, "steerchat ctl: %s\nTry 'steerchat ctl --help'.\n", e.what());
        return 2;
    }
    if (vm.count("help")) {
        std::printf("%s\n", usage.c_str());
        return 0;
    }
    if (command.empty()) {
        std::fprintf(stderr, "steerchat ctl: no command given\n%s\n", usage.c_str());
        return 2;
    }
    if (vm.count("config")) {
        // The instance's port and run-dir from its file, and nothing else: a reload of a file
        // with a bad value elsewhere still reaches the master, which says what is wrong.
        std::ifstream in(config);
        if (!in) {
            std::fprintf(stderr, "steerchat ctl: cannot read the config file %s: %s\n",
                         config.c_str(), std::strerror(errno));
            return 2;
        }
        po::options_description keys;
        keys.add_options()("port", po::value<unsigned>())("run-dir",
                                                          po::value<std::filesystem::path>());
        po::variables_map file;
        try {
            po::store(po::parse_config_file(in, keys, true), file);
        } catch (const po::error& e) {
            std::fprintf(stderr, "steerchat ctl: %s: %s\n", config.c_str(), e.what());
            return 2;
        }
        if (vm["port"].defaulted() && file.count("port")) port = file["port"].as<unsigned>();
        if (vm["run-dir"].defaulted() && file.count("run-dir"))
            run_dir = file["run-dir"].as<std::filesystem::path>();
    }
    if (port == 0 || port > 65535) {
        std::fprintf(stderr, "steerchat ctl: --port %u is not a TCP port (1-65535)\n", port);
        return 2;
    }
    try {
        UniqueFd fd = control_connect(run_dir, static_cast<std::uint16_t>(port));
        control_send(fd.get(), command);
        const ControlReply reply = control_receive(fd.get(), std::chrono::milliseconds(timeout_ms));
        if (!reply.ok) std::fputs("steerchat ctl: ", stderr);
        std::fputs(reply.text.c_str(), reply.ok ? stdout : stderr);
        return reply.ok ? 0 : 1;
    } catch (const ControlError& e) {
        std::fprintf(stderr, "steerchat ctl: %s\n", e.what());
        return 1;
    }
}

}  // namespace steerchat::master
