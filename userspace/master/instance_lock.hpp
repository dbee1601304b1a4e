// One steerchat per port: an flock()ed file <run-dir>/<port>.lock holding the master's pid.
// Without it a second instance would join the first one's SO_REUSEPORT group (same port and
// user) and clobber its maps.
#pragma once

#include <cstdint>
#include <filesystem>

#include "util/unique_fd.hpp"

namespace steerchat::master {

class InstanceLock {
  public:
    // Throws std::runtime_error naming the running instance's pid if the port is taken.
    InstanceLock(const std::filesystem::path& run_dir, std::uint16_t port);
    ~InstanceLock();
    InstanceLock(const InstanceLock&) = delete;
    InstanceLock& operator=(const InstanceLock&) = delete;

  private:
    std::filesystem::path path_;
    UniqueFd fd_;
};

}  // namespace steerchat::master
