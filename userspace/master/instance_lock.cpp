#include "instance_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <fmt/core.h>

namespace steerchat::master {

InstanceLock::InstanceLock(const std::filesystem::path& run_dir, std::uint16_t port)
    : path_(run_dir / fmt::format("{}.lock", port)) {
    // The run directory is root's (or the master's user's) alone: mode 0700 when we create it,
    // and an existing one of ours (named steerchat*, e.g. /run/steerchat made 0755 by an older
    // version) is tightened. A directory someone else chose and owns (--run-dir /tmp/x) is
    // left as it is.
    std::error_code ec;
    if (!std::filesystem::exists(run_dir, ec)) {
        if (run_dir.has_parent_path())
            std::filesystem::create_directories(run_dir.parent_path(), ec);
        if (::mkdir(run_dir.c_str(), 0700) != 0 && errno != EEXIST)
            throw std::runtime_error(
                fmt::format("cannot create the run directory {}: {} (choose a writable "
                            "directory with --run-dir)",
                            run_dir.string(), std::strerror(errno)));
    }
    struct stat st {};
    if (::stat(run_dir.c_str(), &st) == 0 && st.st_uid == ::geteuid() && (st.st_mode & 077) != 0 &&
        run_dir.filename().string().rfind("steerchat", 0) == 0 &&
        ::chmod(run_dir.c_str(), 0700) != 0)
        throw std::runtime_error(fmt::format("cannot make the run directory {} private: {}",
                                             run_dir.string(), std::strerror(errno)));
    fd_.reset(::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
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
    ::fchmod(fd_.get(), 0600);  // a lock file left 0644 by an older version
    std::string me = fmt::format("{}\n", ::getpid());
    if (::ftruncate(fd_.get(), 0) != 0 || ::pwrite(fd_.get(), me.data(), me.size(), 0) < 0)
        throw std::runtime_error(fmt::format("cannot write the instance lock {}: {}",
                                             path_.string(), std::strerror(errno)));
}

InstanceLock::InstanceLock(const std::filesystem::path& run_dir, std::uint16_t port, UniqueFd fd)
    : path_(run_dir / fmt::format("{}.lock", port)), fd_(std::move(fd)) {
    // The received description already holds the lock; taking it again through it succeeds
    // (an flock is per open file description) and checks that it really is one.
    if (::flock(fd_.get(), LOCK_EX | LOCK_NB) != 0)
        throw std::runtime_error(
            fmt::format("the instance lock handed over by the running server is not held: {}",
                        std::strerror(errno)));
}

void InstanceLock::write_pid() {
    std::string me = fmt::format("{}\n", ::getpid());
    if (::ftruncate(fd_.get(), 0) != 0 || ::pwrite(fd_.get(), me.data(), me.size(), 0) < 0)
        throw std::runtime_error(fmt::format("cannot write the instance lock {}: {}",
                                             path_.string(), std::strerror(errno)));
}

InstanceLock::~InstanceLock() {
    if (!path_.empty()) ::unlink(path_.c_str());
}

}  // namespace steerchat::master
