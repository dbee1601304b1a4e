#include "instance_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <fmt/core.h>

namespace steerchat::master {

InstanceLock::InstanceLock(const std::filesystem::path& run_dir, std::uint16_t port)
    : path_(run_dir / fmt::format("{}.lock", port)) {
    std::error_code ec;
    std::filesystem::create_directories(run_dir, ec);
    fd_.reset(::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (!fd_)
        throw std::runtime_error(
            fmt::format("cannot open the instance lock {}: {} (choose a "
                        "writable directory with --run-dir)",
                        path_.string(), std::strerror(errno)));
    if (::flock(fd_.get(), LOCK_EX | LOCK_NB) != 0) {
        char buf[32] = {};
        [[maybe_unused]] auto n = ::pread(fd_.get(), buf, sizeof buf - 1, 0);
        std::string pid(buf);
        while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' '))
            pid.pop_back();
        fd_.reset();
        path_.clear();
        throw std::runtime_error(fmt::format(
            "another steerchat (pid {}) is already serving port {}; stop it first (kill -TERM "
            "{}) or choose another port with --port",
            pid.empty() ? "unknown" : pid, port, pid.empty() ? "<pid>" : pid));
    }
    std::string me = fmt::format("{}\n", ::getpid());
    if (::ftruncate(fd_.get(), 0) != 0 || ::pwrite(fd_.get(), me.data(), me.size(), 0) < 0)
        throw std::runtime_error(fmt::format("cannot write the instance lock {}: {}",
                                             path_.string(), std::strerror(errno)));
}

InstanceLock::~InstanceLock() {
    if (!path_.empty()) ::unlink(path_.c_str());
}

}  // namespace steerchat::master
