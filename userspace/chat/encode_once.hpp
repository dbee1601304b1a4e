// What every protocol adapter (userspace/native, userspace/socketio_chat) shares: the encode-once
// cache of chat events and the one shape of adapter counters (exported to /metrics by the worker
// application, labelled by protocol).
//
// Encode once: the Hub hands every local recipient of one event the same `const Event&` with a
// worker-unique serial, and delivers it to all of them before the next event (chat.hpp). So an
// adapter keeps ONE encoding, keyed by that serial: the first recipient encodes it, every other
// recipient of the same protocol gets the same encoding (a refcounted frame: no copy, no
// allocation per recipient). Serial 0 (an event the Hub did not number) is never shared.
//
// Threading: the worker's event loop thread (as the Hub).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "chat/event.hpp"
#include "metrics/metrics.hpp"

namespace steerchat::chat {

// Counters of one protocol adapter on one worker.
// In the worker's slot block (metrics/metrics.hpp) when the adapter is given one.
struct AdapterStats {
    metrics::Counter requests;      // client requests handled (native: frames; Socket.IO: events)
    metrics::Counter errors;        // error answers
    metrics::Counter encoded;       // chat events encoded
    metrics::Counter shared_sends;  // deliveries reusing an encoding
    metrics::Counter connections;   // gauge: native: open /ws connections
};

// The encoding of the event being delivered, for one protocol. `Encoding` is what the adapter
// sends (a ws::SharedFrame, a sio::Encoded): copying it must share its bytes.
template <class Encoding>
class EncodeOnce {
  public:
    // enabled = false encodes every delivery separately: the baseline that encode-once is
    // measured against (--no-encode-once, BENCHMARKS.md). `stats` must outlive the cache.
    explicit EncodeOnce(AdapterStats& stats, bool enabled = true)
        : stats_(stats), enabled_(enabled) {}
    EncodeOnce(const EncodeOnce&) = delete;
    EncodeOnce& operator=(const EncodeOnce&) = delete;

    // The encoding of `ev`: the cached one if it was made for this serial and `scope`, else
    // encode() (an Encoding), which becomes the cached one. `scope` separates encodings of one
    // event that differ between groups of recipients (a Socket.IO namespace); "" when none do.
    template <class Encode>
    const Encoding& get(const Event& ev, std::string_view scope, Encode&& encode) {
        if (enabled_ && ev.serial != 0 && ev.serial == serial_ && scope == scope_) {
            ++stats_.shared_sends;
            return value_;
        }
        value_ = std::forward<Encode>(encode)();
        serial_ = ev.serial;
        scope_.assign(scope);  // reuses its capacity: no allocation once the scopes are seen
        ++stats_.encoded;
        return value_;
    }
    template <class Encode>
    const Encoding& get(const Event& ev, Encode&& encode) {
        return get(ev, std::string_view{}, std::forward<Encode>(encode));
    }

    bool enabled() const noexcept { return enabled_; }

  private:
    AdapterStats& stats_;
    bool enabled_;
    std::uint64_t serial_ = 0;
    std::string scope_;
    Encoding value_{};
};

}  // namespace steerchat::chat
