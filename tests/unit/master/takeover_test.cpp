// The hand-over between two masters (master/takeover.hpp) over a socketpair: the descriptors
// arrive as the same open files (the instance lock's flock, a listening socket, the chat
// state's memfd with its names and history), and a foreign or short message is refused.
#include "master/takeover.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "app/launch.hpp"
#include "chat/shared_state.hpp"
#include "master/instance_lock.hpp"
#include "master/listener.hpp"

using namespace steerchat;
using namespace std::chrono_literals;

namespace {

struct Pair {
    UniqueFd old_side, new_side;
    Pair() {
        int sv[2];
        EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        old_side.reset(sv[0]);
        new_side.reset(sv[1]);
    }
};

// The same open file description: same inode and the status flags set through one seen on the
// other.
bool same_file(int a, int b) {
    struct stat sa {
    }, sb{};
    return ::fstat(a, &sa) == 0 && ::fstat(b, &sb) == 0 && sa.st_ino == sb.st_ino &&
           sa.st_dev == sb.st_dev;
}

std::uint16_t local_port(int fd) {
    sockaddr_in6 a{};
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    return ntohs(a.sin6_port);
}

std::filesystem::path temp_dir() {
    char tmpl[] = "/tmp/steerchat-takeover-XXXXXX";
    return ::mkdtemp(tmpl);
}

}  // namespace

TEST(Takeover, HandsOverTheLockTheListenersAndTheChatState) {
    const auto dir = temp_dir();
    // The old master's things: its lock, two listeners, a chat state with a user in a room.
    auto lock = std::make_unique<master::InstanceLock>(dir, 18011);
    auto l0 = master::make_listener("::1", 0, 16);
    const std::uint16_t port = local_port(l0.get());
    auto l1 = master::make_listener("::1", port, 16);
    auto state = chat::SharedState::create({.max_users = 8, .max_rooms = 4});
    std::uint64_t login = 0;
    ASSERT_EQ(state.claim("ada", 1, &login, nullptr), chat::SharedState::Status::ok);
    ASSERT_EQ(state.join("lobby", "ada", nullptr, nullptr, nullptr), chat::SharedState::Status::ok);
    std::uint64_t id = 0;
    ASSERT_EQ(state.post("lobby", "ada", "before the upgrade", 1, &id),
              chat::SharedState::Status::ok);

    Pair p;
    master::HandoverOut out;
    out.pid = ::getpid();
    out.port = 18011;
    out.nslots = 4;
    out.pool = 2;
    out.chat_layout = chat::kLayoutVersion;
    out.listeners = {{0, l0.get()}, {1, l1.get()}};
    out.lock_fd = lock->fd();
    out.chat_fd = state.fd();
    master::send_state(p.old_side.get(), out);
    auto in = master::receive_state(p.new_side.get(), 2s);

    EXPECT_EQ(in.pid, ::getpid());
    EXPECT_EQ(in.port, 18011);
    EXPECT_EQ(in.nslots, 4u);
    EXPECT_EQ(in.pool, 2u);
    EXPECT_EQ(in.chat_layout, chat::kLayoutVersion);
    ASSERT_EQ(in.listeners.size(), 2u);
    EXPECT_EQ(in.listeners[1].first, 1u);
    EXPECT_TRUE(same_file(in.listeners[0].second.get(), l0.get()));
    EXPECT_TRUE(same_file(in.listeners[1].second.get(), l1.get()));
    EXPECT_EQ(::fcntl(in.listeners[0].second.get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    EXPECT_TRUE(same_file(in.lock.get(), lock->fd()));
    EXPECT_TRUE(same_file(in.chat.get(), state.fd()));

    // The old master goes away: its listeners close, its lock file stays (disowned).
    lock->disown();
    lock.reset();
    l0.reset();
    l1.reset();
    // The received listener still listens: a client connects and it accepts.
    {
        UniqueFd c(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_in6 a{};
        a.sin6_family = AF_INET6;
        a.sin6_port = htons(port);
        a.sin6_addr = in6addr_loopback;
        ASSERT_EQ(::connect(c.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
        bool accepted = false;
        for (auto& [slot, fd] : in.listeners) {
            UniqueFd conn(::accept4(fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
            accepted = accepted || static_cast<bool>(conn);
        }
        EXPECT_TRUE(accepted);
    }
    // The lock came along: the new master holds it, a third instance is refused.
    master::InstanceLock adopted(dir, 18011, std::move(in.lock));
    EXPECT_THROW(master::InstanceLock(dir, 18011), std::runtime_error);

    // The chat state: the user, the room and its history are there, under a new generation.
    auto taken = chat::SharedState::adopt(in.chat.get());
    EXPECT_GT(taken.generation(), state.generation());
    unsigned slot = 9;
    EXPECT_EQ(taken.lookup("ada", &slot), login);
    EXPECT_EQ(slot, 1u);
    const auto history = taken.history("lobby");
    ASSERT_EQ(history.size(), 1u);
    EXPECT_EQ(history[0].text, "before the upgrade");
    EXPECT_EQ(taken.members("lobby"), std::vector<std::string>{"ada"});
    std::filesystem::remove_all(dir);
}

// An old worker and a new worker share a slot number during an upgrade: evicting the old
// master's slot 1 (its worker died or was killed) must not free the new worker 1's users, and
// the old master's last sweep frees only what its own generation still holds.
TEST(Takeover, SlotsOfTwoGenerationsDoNotFreeEachOthersUsers) {
    auto old_state = chat::SharedState::create({});
    ASSERT_EQ(old_state.claim("old-one", 1, nullptr, nullptr), chat::SharedState::Status::ok);
    ASSERT_EQ(old_state.claim("old-two", 0, nullptr, nullptr), chat::SharedState::Status::ok);
    auto new_state = chat::SharedState::adopt(old_state.fd());
    ASSERT_EQ(new_state.claim("new-one", 1, nullptr, nullptr), chat::SharedState::Status::ok);
    // A name is unique across generations.
    EXPECT_EQ(new_state.claim("old-one", 0, nullptr, nullptr), chat::SharedState::Status::taken);

    const auto evicted = old_state.evict_slot(1);
    ASSERT_EQ(evicted.size(), 1u);
    EXPECT_EQ(evicted[0].name, "old-one");
    EXPECT_NE(new_state.lookup("new-one"), 0u);
    // The name is free again for its user, who reconnects to a new worker.
    EXPECT_EQ(new_state.claim("old-one", 0, nullptr, nullptr), chat::SharedState::Status::ok);

    const auto rest = old_state.evict_generation();
    ASSERT_EQ(rest.size(), 1u);
    EXPECT_EQ(rest[0].name, "old-two");
    EXPECT_TRUE(new_state.evict_slot(7).empty());
    EXPECT_EQ(new_state.stats().users, 2u);  // new-one, old-one (logged in again)
    EXPECT_TRUE(new_state.evict_slot(1).size() == 1u);
}

TEST(Takeover, ALayoutOfAnotherVersionIsRefusedNamingBothVersions) {
    auto state = chat::SharedState::create({});
    // The running binary's layout is version kLayoutVersion + 1 (what a newer binary would see
    // from an older one, the other way round).
    const std::uint32_t other = chat::kLayoutVersion + 1;
    ASSERT_EQ(::pwrite(state.fd(), &other, sizeof other, 8), static_cast<ssize_t>(sizeof other));
    EXPECT_EQ(chat::SharedState::layout_version_of(state.fd()), other);
    try {
        (void)app::HostState::adopt(state.fd());
        FAIL() << "adopted a state of another layout";
    } catch (const app::StateLayoutMismatch& e) {
        EXPECT_EQ(e.found, other);
        EXPECT_EQ(e.expected, app::HostState::layout_version());
        EXPECT_NE(std::string(e.what()).find(std::to_string(other)), std::string::npos);
        EXPECT_NE(std::string(e.what()).find(std::to_string(chat::kLayoutVersion)),
                  std::string::npos);
    }
    UniqueFd not_state(::memfd_create("other", MFD_CLOEXEC));
    ASSERT_EQ(::ftruncate(not_state.get(), 4096), 0);
    EXPECT_EQ(chat::SharedState::layout_version_of(not_state.get()), 0u);
    EXPECT_THROW((void)chat::SharedState::adopt(not_state.get()), chat::LayoutMismatch);
}

TEST(Takeover, AForeignOrShortMessageIsRefused) {
    {
        Pair p;
        const std::string junk = "GET / HTTP/1.1\r\n\r\n";
        ASSERT_EQ(::write(p.old_side.get(), junk.data(), junk.size()),
                  static_cast<ssize_t>(junk.size()));
        EXPECT_THROW(master::receive_state(p.new_side.get(), 200ms), std::runtime_error);
    }
    {
        Pair p;
        p.old_side.reset();  // the old master went away
        EXPECT_THROW(master::receive_state(p.new_side.get(), 200ms), std::runtime_error);
    }
    {
        Pair p;  // nothing arrives
        const auto t0 = std::chrono::steady_clock::now();
        EXPECT_THROW(master::receive_state(p.new_side.get(), 100ms), std::runtime_error);
        EXPECT_GE(std::chrono::steady_clock::now() - t0, 90ms);  // poll() rounds to ms
    }
}

TEST(Takeover, LinesGoBothWays) {
    Pair p;
    master::send_line(p.new_side.get(), "ready 42");
    EXPECT_EQ(master::receive_line(p.old_side.get(), 1s), "ready 42");
    master::send_line(p.old_side.get(), "ok");
    EXPECT_EQ(master::receive_line(p.new_side.get(), 1s), "ok");
    EXPECT_THROW(master::receive_line(p.new_side.get(), 50ms), std::runtime_error);
    p.old_side.reset();
    EXPECT_THROW(master::receive_line(p.new_side.get(), 1s), std::runtime_error);
}

// With a --tls-port beside --port, the TLS port's lock and listeners ride along (protocol 2);
// without one the message is protocol 1's, which an older binary takes.
TEST(Takeover, TheTlsPortRidesAlongInProtocol2AndAPlainServerSpeaks1) {
    const auto dir = temp_dir();
    auto lock = std::make_unique<master::InstanceLock>(dir, 18012);
    auto tls_lock = std::make_unique<master::InstanceLock>(dir, 18013);
    auto l0 = master::make_listener("::1", 0, 16);
    auto t0 = master::make_listener("::1", 0, 16);
    auto state = chat::SharedState::create({.max_users = 8, .max_rooms = 4});
    master::HandoverOut out;
    out.pid = ::getpid();
    out.port = 18012;
    out.nslots = 2;
    out.pool = 1;
    out.chat_layout = chat::kLayoutVersion;
    out.listeners = {{0, l0.get()}};
    out.lock_fd = lock->fd();
    out.chat_fd = state.fd();
    {
        Pair p;
        master::send_state(p.old_side.get(), out);
        auto in = master::receive_state(p.new_side.get(), 2s);
        EXPECT_EQ(in.protocol, 1u);
        EXPECT_EQ(in.tls_port, 0);
        EXPECT_TRUE(in.tls_listeners.empty());
        EXPECT_FALSE(in.tls_lock);
    }
    out.tls_port = 18013;
    out.tls_listeners = {{0, t0.get()}};
    out.tls_lock_fd = tls_lock->fd();
    {
        Pair p;
        master::send_state(p.old_side.get(), out);
        auto in = master::receive_state(p.new_side.get(), 2s);
        EXPECT_EQ(in.protocol, 2u);
        EXPECT_EQ(in.tls_port, 18013);
        ASSERT_EQ(in.listeners.size(), 1u);
        ASSERT_EQ(in.tls_listeners.size(), 1u);
        EXPECT_EQ(in.tls_listeners[0].first, 0u);
        EXPECT_TRUE(same_file(in.listeners[0].second.get(), l0.get()));
        EXPECT_TRUE(same_file(in.tls_listeners[0].second.get(), t0.get()));
        EXPECT_TRUE(same_file(in.tls_lock.get(), tls_lock->fd()));
        EXPECT_TRUE(same_file(in.lock.get(), lock->fd()));
    }
    {
        // A TLS port without its listeners is not a state.
        Pair p;
        out.tls_listeners.clear();
        master::send_state(p.old_side.get(), out);
        EXPECT_THROW(master::receive_state(p.new_side.get(), 2s), std::runtime_error);
    }
    std::filesystem::remove_all(dir);
}

TEST(Takeover, ANewerProtocolIsRefusedSayingToRestart) {
    Pair p;
    const std::string text = "steerchat-handover 99\npid 1\nport 1\nslots 1\npool 1\n";
    const auto len = static_cast<std::uint32_t>(text.size());
    std::string msg(reinterpret_cast<const char*>(&len), sizeof len);
    msg += text;
    ASSERT_EQ(::write(p.old_side.get(), msg.data(), msg.size()), static_cast<ssize_t>(msg.size()));
    try {
        (void)master::receive_state(p.new_side.get(), 1s);
        FAIL() << "took a state of protocol 99";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("protocol 99, this binary 2"), std::string::npos)
            << e.what();
    }
}
