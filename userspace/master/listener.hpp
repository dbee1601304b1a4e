// The listening sockets of one port: one SO_REUSEPORT socket per worker slot, all in one group.
#pragma once

#include <cstdint>
#include <string>

#include "util/unique_fd.hpp"

namespace steerchat::master {

// Creates, binds and listens a TCP socket with SO_REUSEPORT (dual stack for ::).
// Throws std::runtime_error with a message naming the fix.
UniqueFd make_listener(const std::string& bind, std::uint16_t port, int backlog);

}  // namespace steerchat::master
