// The hand-over of a running master to a new one (steerchat --takeover; docs/architecture.md,
// "Upgrade: the hand-over"), over a connected Unix stream socket between the two masters:
//
//   old -> new   send_state: the listening socket of every live slot, the instance lock's open
//                file, the chat state's memfd with its layout version, the steering maps by
//                name (SCM_RIGHTS), and what they are (a text description); with a --tls-port
//                beside --port, that port's lock, listeners and steering maps too.
//   new -> old   "ready" once the new master's workers all accept on the received listeners,
//                or "abort <reason>" (the old master then keeps serving, untouched).
//   old -> new   "ok": the old master commits: it stops its workers (they drain) and exits
//                without removing the pins, the lock or the state, which are the new master's.
//
// Nothing here knows chat or steering internals: descriptors and numbers only. Errors are
// std::runtime_error whose message says what failed.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "steer/steering.hpp"
#include "util/unique_fd.hpp"

namespace steerchat::master {

// The version of this exchange. A master sends the lowest version that describes its state:
// 1 without a --tls-port beside --port, 2 with one (the TLS port's lock, listeners and maps).
// A receiver takes every version up to its own and refuses a newer one with a message that
// says to restart instead (so a binary of version 1 refuses a server with --tls-port).
inline constexpr unsigned kHandoverProtocol = 2;

// What the old master hands over; the fds stay the caller's (they are duplicated by the kernel).
struct HandoverOut {
    pid_t pid = 0;
    std::uint16_t port = 0;
    unsigned nslots = 0;            // slots (--max-workers): the shared-memory logs' size
    unsigned pool = 0;              // slots 0..pool-1 are in the pool (drained or serving)
    std::uint32_t chat_layout = 0;  // the layout version of the state behind chat_fd
    std::vector<std::pair<unsigned, int>> listeners;  // (slot, fd) of every live slot
    std::vector<steer::NamedFd> maps;                 // empty without BPF steering
    int lock_fd = -1;
    int chat_fd = -1;
    // The --tls-port beside --port (0: none; then the rest of these stay empty).
    std::uint16_t tls_port = 0;
    std::vector<std::pair<unsigned, int>> tls_listeners;  // (slot, fd), the same slots
    std::vector<steer::NamedFd> tls_maps;                 // its own copy of the program's maps
    int tls_lock_fd = -1;
};

// What the new master receives: its own copies of the descriptors.
struct HandoverIn {
    pid_t pid = 0;
    std::uint16_t port = 0;
    unsigned nslots = 0;
    unsigned pool = 0;
    std::uint32_t chat_layout = 0;
    std::vector<std::pair<unsigned, UniqueFd>> listeners;
    std::vector<std::pair<std::string, UniqueFd>> maps;
    UniqueFd lock;
    UniqueFd chat;
    unsigned protocol = 0;  // the version the sender spoke
    std::uint16_t tls_port = 0;
    std::vector<std::pair<unsigned, UniqueFd>> tls_listeners;
    std::vector<std::pair<std::string, UniqueFd>> tls_maps;
    UniqueFd tls_lock;

    std::vector<steer::NamedFd> map_fds() const;
    std::vector<steer::NamedFd> tls_map_fds() const;
};

// Old side. Throws std::runtime_error when the socket fails.
void send_state(int fd, const HandoverOut& state);
// New side. Throws std::runtime_error on a short, malformed or foreign message, or when no
// state arrives within `timeout`.
HandoverIn receive_state(int fd, std::chrono::milliseconds timeout);

// One line each way after the state ("ready", "abort <reason>", "ok").
void send_line(int fd, const std::string& line);
// The next line (without its newline); throws std::runtime_error on EOF, error or timeout.
std::string receive_line(int fd, std::chrono::milliseconds timeout);

}  // namespace steerchat::master
