// steerchat-baresend: the bare-sender floor of a room broadcast (issue 16).
//
// A server with no chat logic that steerchat-bench's broadcast clients connect to unchanged (the
// native protocol on any path, Socket.IO over Engine.IO v4 on /socket.io/...): the real WebSocket
// handshake, login and join answered with the shortest frames the clients accept, and every "say"
// delivered to every member of its room (the sender included) as the same bytes a steerchat
// worker sends for it: {"type":"message","room":R,"from":N,"text":T,"id":I,"seq":S,"ts":MS}
// (Socket.IO: 42["message",{...the same fields...}]) in one unmasked text frame, encoded once.
//
// What it keeps of a server is what the kernel must do for a delivery: T threads (one per worker;
// thread i pinned to CPU i), each with its own SO_REUSEPORT listener and epoll instance owning the
// connections the kernel hands it. A loop turn reads what is readable, fans out the says it read
// and those other threads posted to it (a locked inbox and an eventfd, as steerchat's ring between
// workers), then makes one writev per socket that got frames, gathering them without copying. A
// socket that does not take everything keeps the rest in a backlog and waits for EPOLLOUT. Room
// membership is a vector of connections per room and thread: no lookups, no allocation per
// delivery. Its CPU per delivery is the floor a server's CPU per delivery is compared with
// (scripts/bench reports steerchat's deliveries per server CPU-second as a fraction of it).
//
//   steerchat-baresend [--port P] [--bind ADDR] [--threads T] [--no-cpu-pinning]
// --port 0 (the default) takes a free port; the listening address is printed on stdout
// ("listening on ADDR:PORT"). Runs until SIGINT or SIGTERM, then prints its counters on stderr.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <fmt/format.h>
#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "util/unique_fd.hpp"
#include "ws/frame.hpp"
#include "ws/handshake.hpp"

namespace steerchat::bench::baresend {

namespace json = boost::json;

namespace {

[[noreturn]] void die(const std::string& msg) {
    fmt::print(stderr, "steerchat-baresend: {}\n", msg);
    std::exit(2);
}

std::string errno_text(std::string_view what) {
    return fmt::format("{}: {}", what, std::strerror(errno));
}

struct Options {
    std::string bind = "127.0.0.1";
    std::uint16_t port = 0;
    unsigned threads = 2;
    bool pin = true;
};

Options parse_options(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string_view flag = argv[i];
        if (flag == "-h" || flag == "--help") {
            fmt::print(
                "steerchat-baresend [--port P] [--bind ADDR] [--threads T] [--no-cpu-pinning]\n"
                "  the bare-sender floor of a broadcast: accepts steerchat-bench broadcast's "
                "clients\n  (native or Socket.IO) and delivers every say to its room with one "
                "writev per socket\n  per loop turn. --port 0 (default) takes a free port; "
                "--threads defaults to 2.\n");
            std::exit(0);
        }
        if (flag == "--no-cpu-pinning") {
            o.pin = false;
            continue;
        }
        if (i + 1 >= argc) die(fmt::format("{} needs a value (see --help)", flag));
        const std::string_view v = argv[++i];
        unsigned n = 0;
        const bool numeric =
            std::from_chars(v.data(), v.data() + v.size(), n).ec == std::errc() && !v.empty();
        if (flag == "--port") {
            if (!numeric || n > 65535) die(fmt::format("--port: '{}' is not a port number", v));
            o.port = static_cast<std::uint16_t>(n);
        } else if (flag == "--threads") {
            if (!numeric || n == 0 || n > 1024)
                die(fmt::format("--threads: '{}' is not a number from 1 to 1024", v));
            o.threads = n;
        } else if (flag == "--bind") {
            o.bind = v;
        } else {
            die(fmt::format("unknown option {} (see --help)", flag));
        }
    }
    return o;
}

// An encoded server frame (header + payload), shared by the threads that deliver it.
using FramePtr = std::shared_ptr<const std::string>;

FramePtr text_frame(std::string_view payload) {
    auto f = std::make_shared<std::string>(ws::header_size(payload.size()) + payload.size(), '\0');
    auto* out = reinterpret_cast<std::uint8_t*>(f->data());
    const std::size_t h = ws::write_header(out, ws::Opcode::text, payload.size());
    std::memcpy(out + h, payload.data(), payload.size());
    return f;
}

FramePtr control_frame(ws::Opcode op, ws::ByteView payload) {
    const auto v = ws::encode_frame(op, payload);
    return std::make_shared<std::string>(reinterpret_cast<const char*>(v.data()), v.size());
}

std::string quoted(std::string_view s) {
    return json::serialize(json::value(json::string(s)));
}

std::int64_t wall_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// Room name -> id, shared by the threads (used at join only).
class Rooms {
  public:
    std::uint32_t id(std::string_view name) {
        const std::lock_guard lock(mu_);
        const auto [it, added] =
            ids_.try_emplace(std::string(name), static_cast<std::uint32_t>(ids_.size()));
        return it->second;
    }

  private:
    std::mutex mu_;
    std::unordered_map<std::string, std::uint32_t> ids_;
};

struct Counters {
    std::atomic<std::uint64_t> says{0}, deliveries{0}, writevs{0}, partial_writes{0},
        connections{0};
};

class Loop;

struct Shared {
    Rooms rooms;
    Counters counters;
    std::atomic<std::uint64_t> next_id{1};
    std::atomic<bool> stop{false};
    std::vector<std::unique_ptr<Loop>> loops;
};

struct Conn {
    enum class State : std::uint8_t { http, open, closing };
    UniqueFd fd;
    State state = State::http;
    bool sio = false;
    bool dirty = false;        // has iovecs for this turn's flush
    bool dead = false;         // closed; freed at the end of the turn
    bool waiting_out = false;  // EPOLLOUT armed for the backlog
    std::string request;       // the upgrade request as it arrives
    ws::FrameParser parser;
    std::string name;
    std::vector<std::uint32_t> rooms;
    std::vector<iovec> iov;  // this turn's frames (held by Loop::held_ until the flush)
    std::string backlog;     // bytes the socket did not take
};

class Loop {
  public:
    Loop(Shared& shared, unsigned index, UniqueFd listener)
        : shared_(shared), index_(index), listener_(std::move(listener)) {
        epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
        if (!epoll_) die(errno_text("epoll_create1"));
        wake_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
        if (!wake_) die(errno_text("eventfd"));
        add(listener_.get(), EPOLLIN, &listener_tag_);
        add(wake_.get(), EPOLLIN, &wake_tag_);
    }

    // From any thread: a frame for the members of `room` on this loop.
    void post(std::uint32_t room, const FramePtr& frame) {
        bool was_empty = false;
        {
            const std::lock_guard lock(inbox_mu_);
            was_empty = inbox_.empty();
            inbox_.push_back({room, frame});
        }
        if (was_empty) wake();
    }
    void wake() {
        const std::uint64_t one = 1;
        [[maybe_unused]] const auto n = ::write(wake_.get(), &one, sizeof one);
    }

    void run(bool pin) {
        if (pin) {
            cpu_set_t set;
            CPU_ZERO(&set);
            const unsigned ncpu = std::max(1u, std::thread::hardware_concurrency());
            CPU_SET(index_ % ncpu, &set);
            ::pthread_setaffinity_np(::pthread_self(), sizeof set, &set);  // best effort
        }
        std::array<epoll_event, 256> events{};
        while (!shared_.stop.load(std::memory_order_relaxed)) {
            const int n = ::epoll_wait(epoll_.get(), events.data(), events.size(), -1);
            if (n < 0) {
                if (errno == EINTR) continue;
                die(errno_text("epoll_wait"));
            }
            bool woken = false;
            for (int i = 0; i < n; ++i) {
                const epoll_event& ev = events[static_cast<std::size_t>(i)];
                if (ev.data.ptr == &listener_tag_) {
                    accept_all();
                } else if (ev.data.ptr == &wake_tag_) {
                    woken = true;
                } else {
                    Conn& c = *static_cast<Conn*>(ev.data.ptr);
                    if (c.dead) continue;
                    if (ev.events & EPOLLOUT) write_backlog(c);
                    if (!c.dead && (ev.events & (EPOLLIN | EPOLLHUP | EPOLLERR))) read_all(c);
                }
            }
            if (woken) take_inbox();
            flush();
        }
    }

  private:
    void add(int fd, std::uint32_t events, void* ptr) {
        epoll_event ev{};
        ev.events = events;
        ev.data.ptr = ptr;
        if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) die(errno_text("epoll_ctl"));
    }
    void modify(Conn& c, std::uint32_t events) {
        epoll_event ev{};
        ev.events = events;
        ev.data.ptr = &c;
        ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev);
    }

    void accept_all() {
        while (true) {
            const int fd =
                ::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) return;
                if (errno == EMFILE || errno == ENFILE) {
                    fmt::print(stderr,
                               "steerchat-baresend: accept: {} (raise the open-files limit, "
                               "ulimit -n)\n",
                               std::strerror(errno));
                    return;
                }
                die(errno_text("accept4"));
            }
            auto c = std::make_unique<Conn>();
            c->fd.reset(fd);
            const int one = 1;
            ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            add(fd, EPOLLIN, c.get());
            shared_.counters.connections.fetch_add(1, std::memory_order_relaxed);
            conns_.emplace(c.get(), std::move(c));
        }
    }

    void read_all(Conn& c) {
        while (!c.dead) {
            const ssize_t n = ::read(c.fd.get(), buf_.data(), buf_.size());
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno != EAGAIN) kill(c);
                return;
            }
            if (n == 0) return kill(c);
            received(c, std::string_view(buf_.data(), static_cast<std::size_t>(n)));
            // Short read: the socket is drained (epoll is level-triggered; no read to EAGAIN).
            if (static_cast<std::size_t>(n) < buf_.size()) return;
        }
    }

    void received(Conn& c, std::string_view data) {
        if (c.state == Conn::State::http) {
            c.request.append(data);
            const auto end = c.request.find("\r\n\r\n");
            if (end == std::string::npos) {
                if (c.request.size() > 16384) kill(c);
                return;
            }
            const std::string rest = c.request.substr(end + 4);
            if (!upgrade(c, std::string_view(c.request).substr(0, end + 2))) return;
            std::string().swap(c.request);
            if (rest.empty()) return;
            data = rest;
            return frames(c, data);
        }
        frames(c, data);
    }

    void frames(Conn& c, std::string_view data) {
        if (c.state != Conn::State::open) return;
        c.parser.feed_all(ws::as_bytes(data), [&](const ws::Event& ev) {
            if (c.dead || c.state != Conn::State::open) return;
            switch (ev.kind) {
                case ws::EventKind::message:
                    if (ev.opcode == ws::Opcode::text) on_text(c, ev.text());
                    break;
                case ws::EventKind::ping:
                    send_own(c, control_frame(ws::Opcode::pong, ev.payload));
                    break;
                case ws::EventKind::close: {
                    const auto v = [&] {
                        std::vector<std::uint8_t> out;
                        ws::encode_close(out, ev.code == ws::close_code::no_status
                                                  ? ws::close_code::no_status
                                                  : ev.code);
                        return out;
                    }();
                    send_own(c, std::make_shared<std::string>(
                                    reinterpret_cast<const char*>(v.data()), v.size()));
                    c.state = Conn::State::closing;
                    leave_rooms(c);
                    break;
                }
                case ws::EventKind::error:
                    kill(c);
                    break;
                default:
                    break;
            }
        });
    }

    // The request head (up to and including the last header's CRLF): answers 101 or an error.
    bool upgrade(Conn& c, std::string_view head) {
        ws::HandshakeRequest req;
        const auto line_end = head.find("\r\n");
        const std::string_view line = head.substr(0, line_end);
        const auto sp1 = line.find(' '), sp2 = line.rfind(' ');
        if (sp1 == std::string_view::npos || sp2 <= sp1) {
            kill(c);
            return false;
        }
        req.method = line.substr(0, sp1);
        const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
        req.http_version = line.substr(sp2 + 1) == "HTTP/1.1" ? 11 : 10;
        std::size_t at = line_end + 2;
        while (at < head.size()) {
            const auto e = head.find("\r\n", at);
            const std::string_view h = head.substr(at, e - at);
            at = e + 2;
            const auto colon = h.find(':');
            if (colon == std::string_view::npos) continue;
            std::string lower(h.substr(0, colon));
            std::transform(lower.begin(), lower.end(), lower.begin(),
                           [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
            std::string_view value = h.substr(colon + 1);
            while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
                value.remove_prefix(1);
            while (!value.empty() && (value.back() == ' ' || value.back() == '\t'))
                value.remove_suffix(1);
            if (lower == "upgrade") req.upgrade = value;
            if (lower == "connection") req.connection = value;
            if (lower == "sec-websocket-key") req.key = value;
            if (lower == "sec-websocket-version") req.version = value;
            if (lower == "host") req.host = value;
        }
        const auto result = ws::validate_handshake(req, std::vector<std::string>{"*"});
        if (const auto* reject = std::get_if<ws::HandshakeReject>(&result)) {
            const std::string answer = fmt::format(
                "HTTP/1.1 {} Bad Request\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                reject->status, reject->reason.size(), reject->reason);
            [[maybe_unused]] const auto n = ::write(c.fd.get(), answer.data(), answer.size());
            kill(c);
            return false;
        }
        c.sio = target.starts_with("/socket.io/");
        c.state = Conn::State::open;
        send_own(c, std::make_shared<std::string>(fmt::format(
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: "
                        "Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                        std::get<ws::HandshakeAccept>(result).accept_key)));
        if (c.sio)
            send_text(c, fmt::format(R"(0{{"sid":"bare{}","upgrades":[],"pingInterval":25000,)"
                                     R"("pingTimeout":20000,"maxPayload":1000000}})",
                                     reinterpret_cast<std::uintptr_t>(&c)));
        return true;
    }

    void on_text(Conn& c, std::string_view text) {
        if (c.sio)
            on_sio(c, text);
        else
            on_native(c, text);
    }

    static const json::string* str_field(const json::value& v, std::string_view key) {
        const json::object* o = v.if_object();
        const json::value* f = o ? o->if_contains(key) : nullptr;
        return f ? f->if_string() : nullptr;
    }

    void on_native(Conn& c, std::string_view text) {
        json::error_code ec;
        const json::value v = json::parse(text, ec);
        if (ec) return;
        const json::string* type = str_field(v, "type");
        if (!type) return;
        if (*type == "say") {
            const json::string* room = str_field(v, "room");
            const json::string* said = str_field(v, "text");
            if (room && said) say(c, *room, *said);
        } else if (*type == "login") {
            const json::string* name = str_field(v, "name");
            if (!name) return;
            c.name = *name;
            send_text(c,
                      fmt::format(R"({{"type":"welcome","name":{},"users":[]}})", quoted(c.name)));
        } else if (*type == "join") {
            const json::string* room = str_field(v, "room");
            if (!room) return;
            join(c, *room);
            send_text(c, fmt::format(R"({{"type":"joined","room":{},"members":[],"history":[]}})",
                                     quoted(*room)));
        }
    }

    void on_sio(Conn& c, std::string_view text) {
        if (text == "40") return send_text(c, R"(40{"sid":"bare"})");
        if (!text.starts_with("42")) return;  // pongs and the rest: nothing to do
        std::size_t at = 2;
        while (at < text.size() && text[at] >= '0' && text[at] <= '9')
            ++at;
        const std::string_view ack = text.substr(2, at - 2);
        json::error_code ec;
        const json::value v = json::parse(text.substr(at), ec);
        const json::array* args = ec ? nullptr : v.if_array();
        if (!args || args->empty() || !(*args)[0].is_string()) return;
        const json::string& event = (*args)[0].get_string();
        const json::value arg = args->size() > 1 ? (*args)[1] : json::value();
        if (event == "say") {
            const json::string* room = str_field(arg, "room");
            const json::string* said = str_field(arg, "text");
            if (room && said) say(c, *room, *said);
        } else if (event == "createsession") {
            const json::string* email = str_field(arg, "email");
            if (!email) return;
            c.name = *email;
            send_text(c, R"(42["accessgranted",[]])");
        } else if (event == "join" && arg.is_string()) {
            join(c, arg.get_string());
            send_text(
                c, fmt::format(R"(43{}[{{"ok":true,"room":{}}}])", ack, quoted(arg.get_string())));
        }
    }

    void join(Conn& c, std::string_view room) {
        const std::uint32_t id = shared_.rooms.id(room);
        if (std::find(c.rooms.begin(), c.rooms.end(), id) != c.rooms.end()) return;
        if (members_.size() <= id) members_.resize(id + 1);
        members_[id].push_back(&c);
        c.rooms.push_back(id);
    }

    void leave_rooms(Conn& c) {
        for (const std::uint32_t r : c.rooms) {
            auto& m = members_[r];
            const auto it = std::find(m.begin(), m.end(), &c);
            if (it != m.end()) {
                *it = m.back();
                m.pop_back();
            }
        }
        c.rooms.clear();
    }

    // A say: encoded once, delivered here and posted to every other thread.
    void say(Conn& c, std::string_view room, std::string_view text) {
        const std::uint32_t id = shared_.rooms.id(room);
        const std::uint64_t n = shared_.next_id.fetch_add(1, std::memory_order_relaxed);
        const std::string fields =
            fmt::format(R"("room":{},"from":{},"text":{},"id":{},"seq":{},"ts":{})", quoted(room),
                        quoted(c.name), quoted(text), n, n, wall_ms());
        const FramePtr frame =
            text_frame(c.sio ? fmt::format(R"(42["message",{{{}}}])", fields)
                             : fmt::format(R"({{"type":"message",{}}})", fields));
        shared_.counters.says.fetch_add(1, std::memory_order_relaxed);
        for (const auto& loop : shared_.loops)
            if (loop.get() != this) loop->post(id, frame);
        fan_out(id, frame);
    }

    void take_inbox() {
        std::uint64_t count = 0;
        [[maybe_unused]] const auto n = ::read(wake_.get(), &count, sizeof count);
        {
            const std::lock_guard lock(inbox_mu_);
            taken_.swap(inbox_);
        }
        for (const Posted& p : taken_)
            fan_out(p.room, p.frame);
        taken_.clear();
    }

    void fan_out(std::uint32_t room, const FramePtr& frame) {
        if (room >= members_.size() || members_[room].empty()) return;
        held_.push_back(frame);
        for (Conn* m : members_[room])
            queue(*m, *frame);
        delivered_ += members_[room].size();
    }

    void send_text(Conn& c, std::string_view payload) { send_own(c, text_frame(payload)); }
    void send_own(Conn& c, FramePtr f) {
        queue(c, *f);
        held_.push_back(std::move(f));
    }

    // `bytes` stays alive until the flush (held_).
    void queue(Conn& c, const std::string& bytes) {
        if (c.dead) return;
        if (!c.backlog.empty()) {
            c.backlog.append(bytes);
            return;
        }
        c.iov.push_back({const_cast<char*>(bytes.data()), bytes.size()});
        if (!c.dirty) {
            c.dirty = true;
            dirty_.push_back(&c);
        }
    }

    void flush() {
        for (Conn* c : dirty_) {
            c->dirty = false;
            if (!c->dead) write_iov(*c);
            c->iov.clear();
            if (!c->dead && c->state == Conn::State::closing && c->backlog.empty()) kill(*c);
        }
        dirty_.clear();
        held_.clear();
        if (delivered_) {
            shared_.counters.deliveries.fetch_add(delivered_, std::memory_order_relaxed);
            delivered_ = 0;
        }
        dead_.clear();
    }

    // One writev per socket per turn (IOV_MAX frames at a time).
    void write_iov(Conn& c) {
        std::size_t first = 0;
        std::uint64_t calls = 0;
        while (first < c.iov.size()) {
            const std::size_t count = std::min<std::size_t>(c.iov.size() - first, IOV_MAX);
            ssize_t n = ::writev(c.fd.get(), c.iov.data() + first, static_cast<int>(count));
            ++calls;
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno != EAGAIN) {
                    kill(c);
                    break;
                }
                n = 0;
            }
            // Skip what was written; a partial write leaves the rest to the backlog.
            auto left = static_cast<std::size_t>(n);
            std::size_t k = first;
            for (; k < first + count && left >= c.iov[k].iov_len; ++k)
                left -= c.iov[k].iov_len;
            if (k == first + count) {
                first = k;
                continue;
            }
            shared_.counters.partial_writes.fetch_add(1, std::memory_order_relaxed);
            c.backlog.append(static_cast<const char*>(c.iov[k].iov_base) + left,
                             c.iov[k].iov_len - left);
            for (++k; k < c.iov.size(); ++k)
                c.backlog.append(static_cast<const char*>(c.iov[k].iov_base), c.iov[k].iov_len);
            c.waiting_out = true;
            modify(c, EPOLLIN | EPOLLOUT);
            break;
        }
        shared_.counters.writevs.fetch_add(calls, std::memory_order_relaxed);
    }

    void write_backlog(Conn& c) {
        while (!c.backlog.empty()) {
            const ssize_t n = ::write(c.fd.get(), c.backlog.data(), c.backlog.size());
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno != EAGAIN) kill(c);
                return;
            }
            c.backlog.erase(0, static_cast<std::size_t>(n));
        }
        c.waiting_out = false;
        modify(c, EPOLLIN);
        if (c.state == Conn::State::closing) kill(c);
    }

    void kill(Conn& c) {
        if (c.dead) return;
        c.dead = true;
        leave_rooms(c);
        ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c.fd.get(), nullptr);
        c.fd.reset();
        const auto it = conns_.find(&c);
        if (it != conns_.end()) {
            dead_.push_back(std::move(it->second));  // freed after the flush
            conns_.erase(it);
        }
    }

    struct Posted {
        std::uint32_t room;
        FramePtr frame;
    };

    Shared& shared_;
    unsigned index_;
    UniqueFd listener_, epoll_, wake_;
    char listener_tag_ = 0, wake_tag_ = 0;
    std::array<char, 65536> buf_{};
    std::unordered_map<Conn*, std::unique_ptr<Conn>> conns_;
    std::vector<std::unique_ptr<Conn>> dead_;
    std::vector<std::vector<Conn*>> members_;  // room id -> this thread's members
    std::vector<Conn*> dirty_;
    std::vector<FramePtr> held_;
    std::uint64_t delivered_ = 0;
    std::mutex inbox_mu_;
    std::vector<Posted> inbox_, taken_;
};

UniqueFd listen_on(const std::string& bind, std::uint16_t port, bool first) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    if (::inet_pton(AF_INET, bind.c_str(), &addr.sin_addr) != 1)
        die(fmt::format("--bind: '{}' is not an IPv4 address", bind));
    const int one = 1;
    if (port != 0 && first) {
        // SO_REUSEPORT would quietly join another server's listeners of the same user on that
        // port (steerchat's, say) and take a share of its connections: a bind without it first.
        UniqueFd probe(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (!probe) die(errno_text("socket"));
        ::setsockopt(probe.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (::bind(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
            die(fmt::format("bind {}:{}: {} (is another server on that port? pick another --port)",
                            bind, port, std::strerror(errno)));
    }
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) die(errno_text("socket"));
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
        die(fmt::format("bind {}:{}: {} (is another server on that port? pick another --port)",
                        bind, port, std::strerror(errno)));
    if (::listen(fd.get(), 4096) != 0) die(errno_text("listen"));
    return fd;
}

std::uint16_t port_of(int fd) {
    sockaddr_in addr{};
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    return ntohs(addr.sin_port);
}

}  // namespace

int run(int argc, char** argv) {
    const Options opt = parse_options(argc, argv);
    rlimit nofile{};
    if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
        nofile.rlim_cur = nofile.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &nofile);
    }
    // SIGPIPE ignored (writev to a closed peer fails with EPIPE); SIGINT and SIGTERM are taken
    // by sigwait below, so the threads must not get them.
    ::signal(SIGPIPE, SIG_IGN);
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    ::pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

    Shared shared;
    std::uint16_t port = opt.port;
    for (unsigned i = 0; i < opt.threads; ++i) {
        UniqueFd l = listen_on(opt.bind, port, i == 0);
        port = port_of(l.get());
        shared.loops.push_back(std::make_unique<Loop>(shared, i, std::move(l)));
    }
    std::vector<std::thread> threads;
    for (auto& loop : shared.loops)
        threads.emplace_back([&loop, pin = opt.pin] { loop->run(pin); });
    fmt::print("listening on {}:{}, {} thread(s)\n", opt.bind, port, opt.threads);
    std::fflush(stdout);

    int sig = 0;
    ::sigwait(&stop_signals, &sig);
    shared.stop.store(true);
    for (auto& loop : shared.loops)
        loop->wake();
    for (auto& t : threads)
        t.join();
    const Counters& k = shared.counters;
    fmt::print(stderr,
               "steerchat-baresend: {} connections, {} says, {} deliveries, {} writev calls, {} "
               "partial writes\n",
               k.connections.load(), k.says.load(), k.deliveries.load(), k.writevs.load(),
               k.partial_writes.load());
    return 0;
}

}  // namespace steerchat::bench::baresend

int main(int argc, char** argv) {
    return steerchat::bench::baresend::run(argc, argv);
}
