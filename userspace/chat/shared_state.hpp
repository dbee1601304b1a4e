// The cluster directory shared by every worker of a host (see chat.hpp for the design): name
// registry, rooms (members, history), the id counter, names held per client address. One memfd
// mapping created by the master before fork and inherited by the workers; tables sized at
// creation (SharedOptions: the master's --chat-max-* options, by default from the host's memory,
// sized_for) and guarded by one process-shared robust mutex.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace steerchat::chat {

struct SharedOptions {
    std::uint32_t max_users = 65536;           // names registered at once, host-wide
    std::uint32_t max_rooms = 1024;            // rooms at once (an empty room is reused when full)
    std::uint32_t max_memberships = 262144;    // (user, room) pairs at once
    std::uint32_t history_len = 100;           // messages kept per room
    std::uint32_t history_bytes = 256 * 1024;  // text bytes kept per room (oldest dropped first)
    std::uint32_t max_text = 4096;             // bytes of one message's text
    // Between hosts (--redis): every id is (Lamport clock << host_bits) | host_id, so ids of
    // different hosts never collide and a host's clock moves past every id it observes. 0 and
    // 0 on one host alone (ids 1, 2, 3, ...).
    std::uint32_t host_bits = 0;
    std::uint32_t host_id = 0;
    bool operator==(const SharedOptions&) const = default;
};

// What one entry of each table takes in the mapping, in bytes (its pool entry and its share of
// the hash index; a room also its history: HistEntry[history_len] and history_bytes of text).
// Pages are touched only as entries are first used (the memfd is sparse).
struct SharedCosts {
    std::size_t per_user = 0;        // a registered name (and its client address's entry)
    std::size_t per_room = 0;        // a room with its history
    std::size_t per_membership = 0;  // one (user, room) pair
};
SharedCosts shared_costs(const SharedOptions& o) noexcept;
// The size of the mapping SharedState::create(o) makes.
std::size_t shared_bytes(const SharedOptions& o);

// The sizing of the master's defaults: `o` with max_users, max_rooms and max_memberships that
// fill `budget` bytes of mapping in the proportion kUsersPerRoom users and kMembershipsPerUser
// memberships each per room (history_len, history_bytes, max_text as given), at least the
// minimums below and at most kMaxTableEntries each.
inline constexpr std::uint32_t kUsersPerRoom = 10;
inline constexpr std::uint32_t kMembershipsPerUser = 4;
inline constexpr std::uint32_t kMinUsers = 1024, kMinRooms = 64;
inline constexpr std::uint32_t kMaxTableEntries = 1u << 28;
SharedOptions sized_for(std::uint64_t budget, SharedOptions o);

// A client address as counted by the per-address name limit: IPv6 bytes (IPv4 as ::ffff:a.b.c.d).
using Address = std::array<std::uint8_t, 16>;

inline constexpr std::size_t kMaxNameBytes = 128;  // 32 code points of up to 4 bytes
inline constexpr std::size_t kMaxRoomBytes = 256;  // 64 code points

// A user removed by evict_slot, with the id of its `offline` event and the login it ends.
struct Evicted {
    std::string name;
    std::uint64_t id = 0;
    std::uint64_t login_id = 0;
    std::vector<std::string> rooms;  // the rooms it was in (their members are told it left)
};

struct StoredMessage {
    std::uint64_t id = 0;
    std::uint64_t seq = 0;  // the room's sequence number of the message (1, 2, ...)
    // The local id that orders it against this host's join snapshots: `id` for a message of this
    // host, the id taken when it arrived for one of another host (--redis).
    std::uint64_t order = 0;
    std::int64_t ts = 0;
    std::string from;
    std::string text;
};

// A registered user and its rooms (SharedState::users_except).
struct UserView {
    std::string name;
    std::uint64_t login_id = 0;
    std::vector<std::string> rooms;
};

// A room's sequence state at a join: its newest message's seq (0: none yet) and the highest id
// of the messages no longer in its history (0: none dropped), which tells whether the history
// holds everything after a given id (between hosts messages arrive out of id order).
struct RoomMark {
    std::uint64_t seq = 0;
    std::uint64_t dropped_id = 0;
};

struct SharedStats {
    std::uint32_t users = 0;
    std::uint32_t rooms = 0;
    std::uint32_t memberships = 0;
    std::uint32_t addresses = 0;  // client addresses holding a name
    std::uint64_t last_id = 0;
    std::uint64_t recoveries = 0;  // mutex owners that died holding it
};

namespace shm {
struct Header;
}

// The version of the mapping's layout (the tables, the header, their meaning). A master that
// takes over a running one (steerchat --takeover) maps the running one's state only if the
// versions agree; bump it with every change to the structs in shared_state.cpp.
inline constexpr std::uint32_t kLayoutVersion = 5;

// adopt() found a mapping of another layout (or no chat state at all).
class LayoutMismatch : public std::runtime_error {
  public:
    LayoutMismatch(std::uint32_t found, std::uint32_t expected);
    std::uint32_t found() const noexcept { return found_; }
    std::uint32_t expected() const noexcept { return expected_; }

  private:
    std::uint32_t found_, expected_;
};

// Owns the mapping (RAII; move-only). Every method locks the mutex itself and is safe to call
// from any process that inherited the mapping.
class SharedState {
  public:
    // Master, before forking. Throws std::invalid_argument for impossible options,
    // std::system_error when memfd_create/ftruncate/mmap fail.
    static SharedState create(const SharedOptions& options = {});
    // A new master taking over a running one: maps the state behind `fd` (the running master's
    // memfd, received over its control socket; this object keeps its own duplicate) and starts a
    // new owner generation (below). Throws LayoutMismatch when the mapping is of another layout
    // version, std::system_error when it cannot be mapped.
    static SharedState adopt(int fd);
    // The layout version a mapping behind `fd` has (0 if it is no chat state), without mapping
    // it for use.
    static std::uint32_t layout_version_of(int fd);

    SharedState(SharedState&& o) noexcept;
    SharedState& operator=(SharedState&& o) noexcept;
    SharedState(const SharedState&) = delete;
    SharedState& operator=(const SharedState&) = delete;
    ~SharedState();

    const SharedOptions& options() const noexcept { return options_; }
    // The memfd behind the mapping (close-on-exec; a worker closes its copy, the mapping stays).
    int fd() const noexcept { return fd_; }
    // Users are owned by a worker slot of one master's generation: every master (the first one
    // and each one that took over) has its own, so a new master's worker k and the old master's
    // worker k, serving side by side during an upgrade, never free each other's users.
    std::uint32_t generation() const noexcept { return generation_; }

    // address_full: the client's address holds max_per_address names already.
    enum class Status : std::uint8_t { ok, taken, full, absent, not_member, address_full };

    // Registers `name` for worker `slot`. On ok, *login_id is its `online` event id and *users
    // (if given) the registered names at that moment (taken in the same critical section): all
    // of them, or the first `max_listed` (0: all); *online (if given) how many there are, this
    // one included. With `address`: the name counts against it until released, and the claim
    // is refused (address_full) when it holds `max_per_address` names already (0: no limit).
    Status claim(std::string_view name, unsigned slot, std::uint64_t* login_id,
                 std::vector<std::string>* users, const Address* address = nullptr,
                 std::uint32_t max_per_address = 0, std::uint32_t max_listed = 0,
                 std::uint32_t* online = nullptr);
    // Unregisters `name` if `slot` owns it with `login_id`, dropping its memberships. Returns
    // the `offline` event id, 0 if it was not registered that way.
    std::uint64_t release(std::string_view name, unsigned slot, std::uint64_t login_id);
    // The login id of `name` if registered (0 if not), and its slot.
    std::uint64_t lookup(std::string_view name, unsigned* slot = nullptr);

    // Adds `name` (registered) to `room` (created if needed). A new membership takes an id (the
    // `joined` event's; *added = true); *mark = the last id allocated at that moment (that id if
    // new); *members/*history/*room_mark (if given) the snapshot. ok (also when already a
    // member), full, absent (name not registered).
    Status join(std::string_view room, std::string_view name, std::uint64_t* mark,
                std::vector<std::string>* members, std::vector<StoredMessage>* history,
                bool* added = nullptr, RoomMark* room_mark = nullptr);
    // ok (the membership is gone and took an id, the `left` event's: *id) or not_member.
    Status leave(std::string_view room, std::string_view name, std::uint64_t* id = nullptr);
    // Appends a message to the room's history and allocates its id (*id) and its room sequence
    // number (*seq: the room's previous message's + 1). ok or not_member.
    Status post(std::string_view room, std::string_view from, std::string_view text,
                std::int64_t ts, std::uint64_t* id, std::uint64_t* seq = nullptr);
    // Allocates a fresh id (dm).
    std::uint64_t next_id();
    // Between hosts: the clock moves past an id made on another host (a dm's).
    void observe(std::uint64_t remote_id);
    // Between hosts: a message of another host (`id`: its own) into the room's history (the room
    // is created if needed; no membership is checked: its host did). It takes the room's next
    // sequence number on this host (*seq), as post() does. Returns the local id that orders it
    // against this host's join snapshots (0: no room could be created, or too long).
    std::uint64_t post_remote(std::string_view room, std::string_view from, std::string_view text,
                              std::int64_t ts, std::uint64_t id, std::uint64_t* seq = nullptr);

    std::vector<std::string> members(std::string_view room);
    // A page of the registered names: at most `limit` (0: no limit) of them, from the position
    // `after` (0: the first page; else a previous page's *next). *next is where the next page
    // starts, 0 when this page is the last. Returns how many names are registered. A name
    // registered for the whole paging is listed exactly once; one that comes or goes meanwhile
    // may be listed or not.
    std::uint32_t who(std::uint64_t after, std::uint32_t limit, std::vector<std::string>& out,
                      std::uint64_t* next);
    // Every registered user not owned by `slot` (of any generation), with its rooms: what this
    // host announces to the others when it (re)joins them (userspace/bridge).
    std::vector<UserView> users_except(unsigned slot);
    // The room's kept messages after its message `after_seq` (0: all), oldest first.
    std::vector<StoredMessage> history(std::string_view room, std::uint64_t after_seq = 0);

    // Master, after a worker of `slot` died and before it is respawned: unregisters its users
    // (of this generation), drops their memberships; each gets an `offline` id. Returns them.
    std::vector<Evicted> evict_slot(unsigned slot);
    // An old master after a hand-over, once its workers are gone: unregisters every user its
    // generation still holds (a worker killed before it could log its users out).
    std::vector<Evicted> evict_generation();

    SharedStats stats();

  private:
    SharedState() = default;
    void reset() noexcept;

    shm::Header* hdr_ = nullptr;
    std::size_t size_ = 0;
    int fd_ = -1;
    std::uint32_t generation_ = 0;
    SharedOptions options_{};
};

}  // namespace steerchat::chat
