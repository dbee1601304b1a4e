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
    // A hand-over: `fd` is the running master's lock file, received over its control socket.
    // An flock belongs to the open file description, so holding this fd is holding the lock.
    // The file keeps the running master's pid until write_pid() (once the takeover commits).
    InstanceLock(const std::filesystem::path& run_dir, std::uint16_t port, UniqueFd fd);
    void write_pid();
    ~InstanceLock();
    int fd() const noexcept { return fd_.get(); }
    // After a hand-over: the new master holds the lock (same open file); leave the file.
    void disown() noexcept { path_.clear(); }
    InstanceLock(const InstanceLock&) = delete;
    InstanceLock& operator=(const InstanceLock&) = delete;

  private:
    std::filesystem::path path_;
    UniqueFd fd_;
};

}  // namespace steerchat::master
