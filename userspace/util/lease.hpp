// A move-only claim on a counted resource: its release action runs exactly once, when the lease
// is reset or destroyed (RAII). Type-erased (a function pointer and two pointers, no allocation),
// so one part can hold another part's lease without depending on it: a ws::WebSocketConnection
// holds the HTTP edge's per-address connection slot (net::ConnectionTracker) until it finishes.
#pragma once

#include <utility>

namespace steerchat {

class Lease {
  public:
    using ReleaseFn = void (*)(void* owner, void* item) noexcept;

    Lease() = default;
    Lease(ReleaseFn release, void* owner, void* item) noexcept
        : release_(release), owner_(owner), item_(item) {}
    Lease(Lease&& o) noexcept
        : release_(std::exchange(o.release_, nullptr)), owner_(o.owner_), item_(o.item_) {}
    Lease& operator=(Lease&& o) noexcept {
        if (this != &o) {
            reset();
            release_ = std::exchange(o.release_, nullptr);
            owner_ = o.owner_;
            item_ = o.item_;
        }
        return *this;
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { reset(); }

    // Releases now (once); the lease is empty afterwards.
    void reset() noexcept {
        if (auto f = std::exchange(release_, nullptr)) f(owner_, item_);
    }
    explicit operator bool() const noexcept { return release_ != nullptr; }

  private:
    ReleaseFn release_ = nullptr;
    void* owner_ = nullptr;
    void* item_ = nullptr;
};

}  // namespace steerchat
