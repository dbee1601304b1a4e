// The hand-over of a running master to a new one (steerchat --takeover; docs/architecture.md,
// "Upgrade: the hand-over"), over a connected Unix stream socket between the two masters:
//
//   old -> new   send_state: the listening socket of every live slot, the instance lock's open
//                file, the chat state's memfd with its layout version, the steering maps by
//                name (SCM_RIGHTS), and what they are (a text description).
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

// The version of this exchange; a master refuses a peer of another.
inline constexpr unsigned kHandoverProtocol = 1;

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

    std::vector<steer::NamedFd> map_fds() const;
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
