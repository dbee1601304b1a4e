// A pipe for parent/child hand-shakes in forked tests: one u64 per message.
#pragma once

#include <poll.h>
#include <unistd.h>

#include <cstdint>
#include <stdexcept>

namespace steerchat::test_support {

class Pipe {
  public:
    Pipe() {
        if (::pipe(fds_) != 0) throw std::runtime_error("pipe");
    }
    ~Pipe() {
        ::close(fds_[0]);
        ::close(fds_[1]);
    }
    Pipe(const Pipe&) = delete;
    Pipe& operator=(const Pipe&) = delete;

    void send(std::uint64_t v) const {
        if (::write(fds_[1], &v, sizeof v) != sizeof v) throw std::runtime_error("pipe write");
    }
    // True when a message is waiting (within `timeout_ms`).
    bool ready(int timeout_ms) const {
        pollfd p{fds_[0], POLLIN, 0};
        return ::poll(&p, 1, timeout_ms) == 1;
    }
    // Returns false on timeout.
    bool recv(std::uint64_t& v, int timeout_ms = 30000) const {
        if (!ready(timeout_ms)) return false;
        return ::read(fds_[0], &v, sizeof v) == sizeof v;
    }

  private:
    int fds_[2];
};

}  // namespace steerchat::test_support
