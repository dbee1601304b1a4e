#include "chat/shared_state.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

namespace steerchat::chat {

namespace shm {

inline constexpr std::uint64_t kMagic = 0x6574617473746168ULL;  // "hatstate"
inline constexpr std::uint32_t kNil = 0xFFFF'FFFFu;

// Memory layout (every block 64-byte aligned):
//   Header | User[max_users] | u32 user_index[user_cap] | Room[max_rooms] |
//   u32 room_index[room_cap] | Member[max_memberships] | Addr[max_users] |
//   u32 addr_index[user_cap] | room data[max_rooms]
// room data of one room: HistEntry[history_len] then history_bytes of text (a byte ring).
// Hash tables store pool index + 1 (0 = empty; the zero-filled memfd is an empty table) and use
// linear probing with backward-shift deletion (no tombstones). Pools hand out never-used entries
// from a high-water mark, then from a free list, so creation touches no table pages.

struct User {
    std::uint32_t used;
    std::uint32_t slot;
    std::uint64_t login_id;
    std::uint32_t generation;    // of the master whose worker `slot` holds it
    std::uint32_t addr;          // its client address's entry (kNil: none)
    std::uint32_t first_member;  // membership list of this user (kNil: none)
    std::uint32_t next_free;
    std::uint32_t name_len;
    char name[kMaxNameBytes];
};

struct Room {
    std::uint32_t used;
    std::uint32_t next_free;
    std::uint32_t first_member;  // membership list of this room
    std::uint32_t member_count;
    std::uint64_t last_activity;  // id of the last join/post (reuse picks the oldest empty room)
    std::uint32_t hist_head;      // oldest entry
    std::uint32_t hist_count;
    std::uint64_t text_begin;  // byte positions (monotonic) of the kept text
    std::uint64_t text_end;
    std::uint64_t seq;         // messages ever posted (the newest one's room sequence number)
    std::uint64_t dropped_id;  // id of the newest message dropped from the history (0: none)
    std::uint32_t name_len;
    char name[kMaxRoomBytes];
};

struct Member {
    std::uint32_t room, user;
    std::uint32_t next_in_room, prev_in_room;
    std::uint32_t next_of_user, prev_of_user;  // next_of_user doubles as the free-list link
};

// A client address holding names (an entry exists while names > 0).
struct Addr {
    Address key;
    std::uint32_t names;
    std::uint32_t next_free;
};

struct HistEntry {
    std::uint64_t id;
    std::uint64_t order;  // the local id ordering it against joins (id, unless of another host)
    std::int64_t ts;
    std::uint64_t text_pos;
    std::uint32_t text_len;
    std::uint32_t from_len;
    char from[kMaxNameBytes];
};

// The first two fields keep their place in every layout version: a new binary reads them to
// tell whether it can use a running one's state.
struct Header {
    std::uint64_t magic;
    std::uint32_t layout_version;
    std::uint32_t generation;  // the newest master's (bumped under the mutex by adopt)
    std::uint64_t total_size;
    SharedOptions cfg;
    std::uint32_t user_cap, room_cap;  // hash table sizes (powers of two >= 2x the pools)
    std::size_t users_off, user_index_off, rooms_off, room_index_off, members_off, addrs_off,
        addr_index_off, data_off;
    std::size_t room_stride;
    pthread_mutex_t mutex;
    // Everything below: only under the mutex.
    std::uint64_t last_id;
    std::uint64_t recoveries;
    std::uint32_t users, rooms, memberships, addrs;
    std::uint32_t user_hw, room_hw, member_hw, addr_hw;  // never-used entries start here
    std::uint32_t user_free, room_free, member_free, addr_free;
};

constexpr std::size_t align64(std::size_t n) {
    return (n + 63) & ~std::size_t{63};
}

std::uint32_t pow2_at_least(std::uint64_t n) {
    std::uint64_t c = 16;
    while (c < n)
        c <<= 1;
    if (c > (std::uint64_t{1} << 31)) throw std::invalid_argument("chat: table too large");
    return static_cast<std::uint32_t>(c);
}

// Where each block of a mapping for `o` goes (create() and the check in adopt()).
struct Layout {
    std::uint32_t user_cap = 0, room_cap = 0;
    std::size_t users_off = 0, user_index_off = 0, rooms_off = 0, room_index_off = 0,
                members_off = 0, addrs_off = 0, addr_index_off = 0, data_off = 0;
    std::size_t room_stride = 0;
    std::size_t total = 0;
};

Layout layout_of(const SharedOptions& o) {
    Layout l;
    l.user_cap = pow2_at_least(std::uint64_t{o.max_users} * 2);
    l.room_cap = pow2_at_least(std::uint64_t{o.max_rooms} * 2);
    std::size_t off = align64(sizeof(Header));
    l.users_off = off;
    off = align64(off + sizeof(User) * o.max_users);
    l.user_index_off = off;
    off = align64(off + sizeof(std::uint32_t) * l.user_cap);
    l.rooms_off = off;
    off = align64(off + sizeof(Room) * o.max_rooms);
    l.room_index_off = off;
    off = align64(off + sizeof(std::uint32_t) * l.room_cap);
    l.members_off = off;
    off = align64(off + sizeof(Member) * o.max_memberships);
    l.addrs_off = off;
    off = align64(off + sizeof(Addr) * o.max_users);
    l.addr_index_off = off;
    off = align64(off + sizeof(std::uint32_t) * l.user_cap);
    l.data_off = (off + 4095) & ~std::size_t{4095};
    l.room_stride = align64(sizeof(HistEntry) * o.history_len + o.history_bytes);
    l.total = l.data_off + l.room_stride * o.max_rooms;
    return l;
}

std::uint64_t hash(std::string_view s) noexcept {
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (unsigned char c : s) {
        h ^= c;
        h *= 0x100000001b3ULL;
    }
    return h ^ (h >> 29);
}

// Accessors over a mapped Header.
struct Tables {
    Header* h;
    // A new id: the Lamport clock (the bits above cfg.host_bits) moves on, the host's id fills
    // the bits below it, so ids of different hosts never collide (see SharedOptions).
    std::uint64_t new_id() const {
        const std::uint32_t bits = h->cfg.host_bits;
        const std::uint64_t clock = (h->last_id >> bits) + 1;
        h->last_id = (clock << bits) | h->cfg.host_id;
        return h->last_id;
    }
    std::byte* base() const { return reinterpret_cast<std::byte*>(h); }
    User* users() const { return reinterpret_cast<User*>(base() + h->users_off); }
    std::uint32_t* user_index() const {
        return reinterpret_cast<std::uint32_t*>(base() + h->user_index_off);
    }
    Room* rooms() const { return reinterpret_cast<Room*>(base() + h->rooms_off); }
    std::uint32_t* room_index() const {
        return reinterpret_cast<std::uint32_t*>(base() + h->room_index_off);
    }
    Member* members() const { return reinterpret_cast<Member*>(base() + h->members_off); }
    Addr* addrs() const { return reinterpret_cast<Addr*>(base() + h->addrs_off); }
    std::uint32_t* addr_index() const {
        return reinterpret_cast<std::uint32_t*>(base() + h->addr_index_off);
    }
    HistEntry* hist(std::uint32_t room) const {
        return reinterpret_cast<HistEntry*>(base() + h->data_off + room * h->room_stride);
    }
    char* text(std::uint32_t room) const {
        return reinterpret_cast<char*>(hist(room) + h->cfg.history_len);
    }

    std::string_view user_name(std::uint32_t u) const {
        return {users()[u].name, users()[u].name_len};
    }
    std::string_view room_name(std::uint32_t r) const {
        return {rooms()[r].name, rooms()[r].name_len};
    }

    // Bucket holding `key`, or the empty bucket where it would go.
    template <class KeyOf>
    static std::uint32_t* find(std::uint32_t* table, std::uint32_t cap, std::string_view key,
                               KeyOf key_of) {
        const std::uint64_t mask = cap - 1;
        for (std::uint64_t i = hash(key) & mask;; i = (i + 1) & mask) {
            if (table[i] == 0 || key_of(table[i] - 1) == key) return &table[i];
        }
    }
    template <class KeyOf>
    static void erase(std::uint32_t* table, std::uint32_t cap, std::uint32_t* bucket,
                      KeyOf key_of) {
        const std::uint64_t mask = cap - 1;
        std::uint64_t i = static_cast<std::uint64_t>(bucket - table);
        std::uint64_t j = i;
        for (;;) {
            j = (j + 1) & mask;
            if (table[j] == 0) break;
            const std::uint64_t home = hash(key_of(table[j] - 1)) & mask;
            // The entry at j may stay if its home lies cyclically in (i, j].
            const bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
            if (stays) continue;
            table[i] = table[j];
            i = j;
        }
        table[i] = 0;
    }

    std::uint32_t* user_bucket(std::string_view name) const {
        return find(user_index(), h->user_cap, name,
                    [this](std::uint32_t u) { return user_name(u); });
    }
    std::uint32_t* room_bucket(std::string_view room) const {
        return find(room_index(), h->room_cap, room,
                    [this](std::uint32_t r) { return room_name(r); });
    }
    void erase_user_bucket(std::uint32_t* b) const {
        erase(user_index(), h->user_cap, b, [this](std::uint32_t u) { return user_name(u); });
    }
    void erase_room_bucket(std::uint32_t* b) const {
        erase(room_index(), h->room_cap, b, [this](std::uint32_t r) { return room_name(r); });
    }

    static std::string_view addr_bytes(const Address& a) {
        return {reinterpret_cast<const char*>(a.data()), a.size()};
    }
    std::uint32_t* addr_bucket(const Address& a) const {
        return find(addr_index(), h->user_cap, addr_bytes(a),
                    [this](std::uint32_t i) { return addr_bytes(addrs()[i].key); });
    }
    // The entry of `a` (created with no names), or kNil when the pool is exhausted (it holds
    // max_users entries, one per name at most: only a corrupted count could exhaust it).
    std::uint32_t get_or_create_addr(const Address& a) const {
        std::uint32_t* b = addr_bucket(a);
        if (*b != 0) return *b - 1;
        std::uint32_t i;
        if (h->addr_free != kNil) {
            i = h->addr_free;
            h->addr_free = addrs()[i].next_free;
        } else if (h->addr_hw < h->cfg.max_users) {
            i = h->addr_hw++;
        } else {
            return kNil;
        }
        addrs()[i] = Addr{a, 0, kNil};
        *b = i + 1;
        ++h->addrs;
        return i;
    }
    void release_addr(std::uint32_t i) const {
        Addr& a = addrs()[i];
        if (a.names > 0) --a.names;
        if (a.names != 0) return;
        erase(addr_index(), h->user_cap, addr_bucket(a.key),
              [this](std::uint32_t k) { return addr_bytes(addrs()[k].key); });
        a.next_free = h->addr_free;
        h->addr_free = i;
        --h->addrs;
    }

    std::uint32_t find_user(std::string_view name) const {
        const std::uint32_t v = *user_bucket(name);
        return v == 0 ? kNil : v - 1;
    }
    std::uint32_t find_room(std::string_view room) const {
        const std::uint32_t v = *room_bucket(room);
        return v == 0 ? kNil : v - 1;
    }

    // Membership node of (user, room), or kNil.
    std::uint32_t membership(std::uint32_t user, std::uint32_t room) const {
        for (std::uint32_t m = users()[user].first_member; m != kNil; m = members()[m].next_of_user)
            if (members()[m].room == room) return m;
        return kNil;
    }

    void unlink_member(std::uint32_t m) const {
        Member& n = members()[m];
        Room& r = rooms()[n.room];
        User& u = users()[n.user];
        if (n.prev_in_room != kNil)
            members()[n.prev_in_room].next_in_room = n.next_in_room;
        else
            r.first_member = n.next_in_room;
        if (n.next_in_room != kNil) members()[n.next_in_room].prev_in_room = n.prev_in_room;
        if (n.prev_of_user != kNil)
            members()[n.prev_of_user].next_of_user = n.next_of_user;
        else
            u.first_member = n.next_of_user;
        if (n.next_of_user != kNil) members()[n.next_of_user].prev_of_user = n.prev_of_user;
        --r.member_count;
        --h->memberships;
        n.next_of_user = h->member_free;
        h->member_free = m;
    }

    // Removes a registered user (and its memberships). Returns its offline id.
    std::uint64_t remove_user(std::uint32_t u) const {
        User& user = users()[u];
        while (user.first_member != kNil)
            unlink_member(user.first_member);
        erase_user_bucket(user_bucket(user_name(u)));
        if (user.addr != kNil) release_addr(user.addr);
        user.addr = kNil;
        user.used = 0;
        user.next_free = h->user_free;
        h->user_free = u;
        --h->users;
        return new_id();
    }

    // The history of room `r` after its message `after_seq` (0: all).
    void copy_history(std::uint32_t r, std::vector<StoredMessage>& out,
                      std::uint64_t after_seq = 0) const {
        const Room& room = rooms()[r];
        const std::uint32_t len = h->cfg.history_len;
        const std::uint64_t cap = h->cfg.history_bytes;
        out.clear();
        out.reserve(room.hist_count);
        for (std::uint32_t k = 0; k < room.hist_count; ++k) {
            const std::uint64_t seq = room.seq - (room.hist_count - 1 - k);  // consecutive
            if (seq <= after_seq) continue;
            const HistEntry& e = hist(r)[(room.hist_head + k) % len];
            StoredMessage m;
            m.id = e.id;
            m.seq = seq;
            m.order = e.order;
            m.ts = e.ts;
            m.from.assign(e.from, e.from_len);
            m.text.resize(e.text_len);
            const std::uint64_t at = e.text_pos % cap;
            const std::uint64_t first = std::min<std::uint64_t>(e.text_len, cap - at);
            std::memcpy(m.text.data(), text(r) + at, first);
            std::memcpy(m.text.data() + first, text(r), e.text_len - first);
            out.push_back(std::move(m));
        }
        // Messages of other hosts are appended as they arrive; ordered by id (Lamport clock,
        // then host), every host shows one room's history in the same order.
        if (h->cfg.host_bits != 0)
            std::stable_sort(
                out.begin(), out.end(),
                [](const StoredMessage& a, const StoredMessage& b) { return a.id < b.id; });
    }

    void drop_oldest(Room& room) const {
        room.hist_head = (room.hist_head + 1) % h->cfg.history_len;
        --room.hist_count;
    }

    void append_history(std::uint32_t r, std::uint64_t id, std::uint64_t order, std::int64_t ts,
                        std::string_view from, std::string_view msg) const {
        Room& room = rooms()[r];
        const std::uint32_t len = h->cfg.history_len;
        const std::uint64_t cap = h->cfg.history_bytes;
        while (room.hist_count != 0 &&
               (room.hist_count == len || room.text_end + msg.size() - room.text_begin > cap)) {
            room.dropped_id = std::max(room.dropped_id, hist(r)[room.hist_head].id);
            drop_oldest(room);
            room.text_begin =
                room.hist_count == 0 ? room.text_end : hist(r)[room.hist_head].text_pos;
        }
        if (room.hist_count == 0) room.text_begin = room.text_end;
        HistEntry& e = hist(r)[(room.hist_head + room.hist_count) % len];
        e.id = id;
        e.order = order;
        e.ts = ts;
        e.text_pos = room.text_end;
        e.text_len = static_cast<std::uint32_t>(msg.size());
        e.from_len = static_cast<std::uint32_t>(from.size());
        std::memcpy(e.from, from.data(), from.size());
        const std::uint64_t at = room.text_end % cap;
        const std::uint64_t first = std::min<std::uint64_t>(msg.size(), cap - at);
        std::memcpy(text(r) + at, msg.data(), first);
        std::memcpy(text(r), msg.data() + first, msg.size() - first);
        room.text_end += msg.size();
        ++room.hist_count;
        ++room.seq;
        room.last_activity = order;
    }

    // A room entry for `name`, creating it (or reusing the least recently active empty room).
    std::uint32_t get_or_create_room(std::string_view name) const {
        std::uint32_t* b = room_bucket(name);
        if (*b != 0) return *b - 1;
        std::uint32_t r = kNil;
        if (h->room_free != kNil) {
            r = h->room_free;
            h->room_free = rooms()[r].next_free;
        } else if (h->room_hw < h->cfg.max_rooms) {
            r = h->room_hw++;
        } else {
            std::uint64_t oldest = ~std::uint64_t{0};
            for (std::uint32_t i = 0; i < h->cfg.max_rooms; ++i) {
                const Room& c = rooms()[i];
                if (c.used && c.member_count == 0 && c.last_activity < oldest) {
                    oldest = c.last_activity;
                    r = i;
                }
            }
            if (r == kNil) return kNil;
            erase_room_bucket(room_bucket(room_name(r)));
            --h->rooms;
            b = room_bucket(name);  // the erase may have shifted buckets
        }
        Room& room = rooms()[r];
        room = Room{};
        room.used = 1;
        room.next_free = kNil;
        room.first_member = kNil;
        room.name_len = static_cast<std::uint32_t>(name.size());
        std::memcpy(room.name, name.data(), name.size());
        *b = r + 1;
        ++h->rooms;
        return r;
    }
};

class Lock {
  public:
    explicit Lock(Header* h) : h_(h) {
        const int rc = pthread_mutex_lock(&h->mutex);
        if (rc == EOWNERDEAD) {
            // A process died holding the lock: its last change may be half done, but every table
            // stays structurally usable (no allocator, fixed entries); carry on.
            pthread_mutex_consistent(&h->mutex);
            ++h->recoveries;
        } else if (rc != 0) {
            throw std::system_error(rc, std::generic_category(), "chat: shared state lock");
        }
    }
    ~Lock() { pthread_mutex_unlock(&h_->mutex); }
    Lock(const Lock&) = delete;
    Lock& operator=(const Lock&) = delete;

  private:
    Header* h_;
};

}  // namespace shm

using shm::kNil;
using shm::Lock;
using shm::Tables;

SharedState SharedState::create(const SharedOptions& o) {
    if (o.max_users == 0 || o.max_rooms == 0 || o.max_memberships == 0 || o.history_len == 0)
        throw std::invalid_argument("chat: max_users, max_rooms, max_memberships, history_len > 0");
    if (o.max_users >= kNil / 2 || o.max_rooms >= kNil / 2 || o.max_memberships >= kNil / 2)
        throw std::invalid_argument("chat: table sizes must be below 2^31");
    if (o.host_bits > 16 || o.host_id >= (1u << o.host_bits))
        throw std::invalid_argument("chat: host_id must fit in host_bits (at most 16)");
    if (o.max_text == 0 || o.history_bytes < o.max_text)
        throw std::invalid_argument("chat: need 0 < max_text <= history_bytes");

    using namespace shm;
    const Layout l = layout_of(o);
    const std::size_t total = l.total;

    const int fd = ::memfd_create("steerchat-chat", MFD_CLOEXEC);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "chat: memfd_create");
    if (::ftruncate(fd, static_cast<off_t>(total)) != 0) {
        const int e = errno;
        ::close(fd);
        throw std::system_error(e, std::generic_category(),
                                "chat: ftruncate shared state to " + std::to_string(total));
    }
    void* p = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        const int e = errno;
        ::close(fd);
        throw std::system_error(e, std::generic_category(), "chat: mmap");
    }

    // The fd is kept for a hand-over to a new master (adopt); workers close their copy.
    SharedState s;
    s.fd_ = fd;
    s.size_ = total;
    s.options_ = o;
    auto* h = new (p) Header{};
    s.hdr_ = h;
    h->layout_version = kLayoutVersion;
    h->generation = 0;
    h->total_size = total;
    h->cfg = o;
    h->user_cap = l.user_cap;
    h->room_cap = l.room_cap;
    h->users_off = l.users_off;
    h->user_index_off = l.user_index_off;
    h->rooms_off = l.rooms_off;
    h->room_index_off = l.room_index_off;
    h->members_off = l.members_off;
    h->addrs_off = l.addrs_off;
    h->addr_index_off = l.addr_index_off;
    h->data_off = l.data_off;
    h->room_stride = l.room_stride;
    h->user_free = h->room_free = h->member_free = h->addr_free = kNil;

    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    const int rc = pthread_mutex_init(&h->mutex, &attr);
    pthread_mutexattr_destroy(&attr);
    if (rc != 0) throw std::system_error(rc, std::generic_category(), "chat: pthread_mutex_init");
    h->magic = kMagic;
    return s;
}

SharedCosts shared_costs(const SharedOptions& o) noexcept {
    using namespace shm;
    // A hash index holds 2 to 4 slots per entry (a power of two >= 2x the pool): count 3.
    SharedCosts c;
    c.per_user = sizeof(User) + sizeof(Addr) + 2 * 3 * sizeof(std::uint32_t);
    c.per_room = sizeof(Room) + 3 * sizeof(std::uint32_t) +
                 align64(sizeof(HistEntry) * o.history_len + o.history_bytes);
    c.per_membership = sizeof(Member);
    return c;
}

std::size_t shared_bytes(const SharedOptions& o) {
    return shm::layout_of(o).total;
}

SharedOptions sized_for(std::uint64_t budget, SharedOptions o) {
    const SharedCosts c = shared_costs(o);
    const std::uint64_t unit =
        c.per_room + std::uint64_t{kUsersPerRoom} * c.per_user +
        std::uint64_t{kUsersPerRoom} * kMembershipsPerUser * c.per_membership;
    std::uint64_t rooms = budget / unit;
    rooms = std::clamp<std::uint64_t>(rooms, kMinRooms, kMaxTableEntries / kUsersPerRoom);
    const std::uint64_t users =
        std::clamp<std::uint64_t>(rooms * kUsersPerRoom, kMinUsers, kMaxTableEntries);
    const std::uint64_t members =
        std::min<std::uint64_t>(users * kMembershipsPerUser, kMaxTableEntries);
    o.max_rooms = static_cast<std::uint32_t>(rooms);
    o.max_users = static_cast<std::uint32_t>(users);
    o.max_memberships = static_cast<std::uint32_t>(members);
    return o;
}

LayoutMismatch::LayoutMismatch(std::uint32_t found, std::uint32_t expected)
    : std::runtime_error(found == 0 ? "the running server's chat state is not of a known layout"
                                    : "the running server's chat state has layout version " +
                                          std::to_string(found) + ", this binary uses version " +
                                          std::to_string(expected)),
      found_(found),
      expected_(expected) {}

std::uint32_t SharedState::layout_version_of(int fd) {
    struct {
        std::uint64_t magic;
        std::uint32_t layout_version;
    } head{};
    if (::pread(fd, &head, sizeof head, 0) != static_cast<ssize_t>(sizeof head)) return 0;
    return head.magic == shm::kMagic ? head.layout_version : 0;
}

SharedState SharedState::adopt(int fd) {
    const std::uint32_t version = layout_version_of(fd);
    if (version != kLayoutVersion) throw LayoutMismatch(version, kLayoutVersion);
    struct stat st {};
    if (::fstat(fd, &st) != 0)
        throw std::system_error(errno, std::generic_category(), "chat: fstat shared state");
    const int own = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (own < 0) throw std::system_error(errno, std::generic_category(), "chat: dup shared state");
    const auto total = static_cast<std::size_t>(st.st_size);
    void* p = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, own, 0);
    if (p == MAP_FAILED) {
        const int e = errno;
        ::close(own);
        throw std::system_error(e, std::generic_category(), "chat: mmap shared state");
    }
    SharedState s;
    s.fd_ = own;
    s.size_ = total;
    s.hdr_ = static_cast<shm::Header*>(p);
    // The sizes travel in the header: the blocks they place must be where the header says and
    // fill the mapping exactly, or this is not a state this binary can read.
    const shm::Header& h = *s.hdr_;
    bool same = false;
    try {
        const shm::Layout l = shm::layout_of(h.cfg);
        same = l.total == total && h.total_size == total && l.user_cap == h.user_cap &&
               l.room_cap == h.room_cap && l.users_off == h.users_off &&
               l.user_index_off == h.user_index_off && l.rooms_off == h.rooms_off &&
               l.room_index_off == h.room_index_off && l.members_off == h.members_off &&
               l.addrs_off == h.addrs_off && l.addr_index_off == h.addr_index_off &&
               l.data_off == h.data_off && l.room_stride == h.room_stride;
    } catch (const std::invalid_argument&) {
    }
    if (!same)
        throw std::runtime_error("the running server's chat state (layout version " +
                                 std::to_string(version) + ") has sizes that do not describe its " +
                                 std::to_string(total) +
                                 "-byte mapping: it is damaged or of an incompatible build");
    s.options_ = s.hdr_->cfg;
    Lock lock(s.hdr_);
    s.generation_ = ++s.hdr_->generation;
    return s;
}

SharedState::SharedState(SharedState&& o) noexcept
    : hdr_(std::exchange(o.hdr_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      fd_(std::exchange(o.fd_, -1)),
      generation_(o.generation_),
      options_(o.options_) {}

SharedState& SharedState::operator=(SharedState&& o) noexcept {
    if (this != &o) {
        reset();
        hdr_ = std::exchange(o.hdr_, nullptr);
        size_ = std::exchange(o.size_, 0);
        fd_ = std::exchange(o.fd_, -1);
        generation_ = o.generation_;
        options_ = o.options_;
    }
    return *this;
}

SharedState::~SharedState() {
    reset();
}

void SharedState::reset() noexcept {
    if (hdr_) ::munmap(hdr_, size_);
    if (fd_ >= 0) ::close(fd_);
    hdr_ = nullptr;
    size_ = 0;
    fd_ = -1;
}

SharedState::Status SharedState::claim(std::string_view name, unsigned slot,
                                       std::uint64_t* login_id, std::vector<std::string>* users,
                                       const Address* address, std::uint32_t max_per_address,
                                       std::uint32_t max_listed, std::uint32_t* online) {
    if (name.size() > kMaxNameBytes) throw std::length_error("chat: name too long");
    Lock lock(hdr_);
    Tables t{hdr_};
    std::uint32_t* b = t.user_bucket(name);
    if (*b != 0) return Status::taken;
    std::uint32_t a = kNil;
    if (address) {
        const std::uint32_t* ab = t.addr_bucket(*address);
        if (*ab != 0 && max_per_address != 0 && t.addrs()[*ab - 1].names >= max_per_address)
            return Status::address_full;
    }
    if (hdr_->user_free == kNil && hdr_->user_hw >= hdr_->cfg.max_users) return Status::full;
    if (address) {
        a = t.get_or_create_addr(*address);  // may shift buckets: `b` is looked up again
        if (a == kNil) return Status::full;
        ++t.addrs()[a].names;
        b = t.user_bucket(name);
    }
    std::uint32_t u;
    if (hdr_->user_free != kNil) {
        u = hdr_->user_free;
        hdr_->user_free = t.users()[u].next_free;
    } else if (hdr_->user_hw < hdr_->cfg.max_users) {
        u = hdr_->user_hw++;
    } else {
        return Status::full;
    }
    shm::User& user = t.users()[u];
    user.used = 1;
    user.slot = slot;
    user.generation = generation_;
    user.login_id = t.new_id();
    user.first_member = kNil;
    user.next_free = kNil;
    user.addr = a;
    user.name_len = static_cast<std::uint32_t>(name.size());
    std::memcpy(user.name, name.data(), name.size());
    *b = u + 1;
    ++hdr_->users;
    if (login_id) *login_id = user.login_id;
    if (online) *online = hdr_->users;
    if (users) {
        const std::uint32_t n =
            max_listed == 0 ? hdr_->users : std::min<std::uint32_t>(max_listed, hdr_->users);
        users->clear();
        users->reserve(n);
        for (std::uint32_t i = 0; i < hdr_->user_hw && users->size() < n; ++i)
            if (t.users()[i].used) users->emplace_back(t.user_name(i));
    }
    return Status::ok;
}

std::uint64_t SharedState::release(std::string_view name, unsigned slot, std::uint64_t login_id) {
    Lock lock(hdr_);
    Tables t{hdr_};
    const std::uint32_t u = t.find_user(name);
    if (u == kNil) return 0;
    const shm::User& user = t.users()[u];
    if (user.slot != slot || user.login_id != login_id) return 0;
    return t.remove_user(u);
}

std::uint64_t SharedState::lookup(std::string_view name, unsigned* slot) {
    Lock lock(hdr_);
    Tables t{hdr_};
    const std::uint32_t u = t.find_user(name);
    if (u == kNil) return 0;
    if (slot) *slot = t.users()[u].slot;
    return t.users()[u].login_id;
}

SharedState::Status SharedState::join(std::string_view room, std::string_view name,
                                      std::uint64_t* mark, std::vector<std::string>* members,
                                      std::vector<StoredMessage>* history, bool* added,
                                      RoomMark* room_mark) {
    if (added) *added = false;
    if (room.size() > kMaxRoomBytes) throw std::length_error("chat: room name too long");
    Lock lock(hdr_);
    Tables t{hdr_};
    const std::uint32_t u = t.find_user(name);
    if (u == kNil) return Status::absent;
    const std::uint32_t r = t.get_or_create_room(room);
    if (r == kNil) return Status::full;
    if (t.membership(u, r) == kNil) {
        std::uint32_t m;
        if (hdr_->member_free != kNil) {
            m = hdr_->member_free;
            hdr_->member_free = t.members()[m].next_of_user;
        } else if (hdr_->member_hw < hdr_->cfg.max_memberships) {
            m = hdr_->member_hw++;
        } else {
            return Status::full;  // an empty room just created stays (reusable)
        }
        shm::Member& n = t.members()[m];
        shm::Room& rm = t.rooms()[r];
        shm::User& us = t.users()[u];
        n.room = r;
        n.user = u;
        n.prev_in_room = kNil;
        n.next_in_room = rm.first_member;
        if (rm.first_member != kNil) t.members()[rm.first_member].prev_in_room = m;
        rm.first_member = m;
        n.prev_of_user = kNil;
        n.next_of_user = us.first_member;
        if (us.first_member != kNil) t.members()[us.first_member].prev_of_user = m;
        us.first_member = m;
        ++rm.member_count;
        ++hdr_->memberships;
        rm.last_activity = t.new_id();  // the `joined` event's id
        if (added) *added = true;
    }
    if (mark) *mark = hdr_->last_id;
    if (members) {
        members->clear();
        // The list is newest first; report in join order.
        for (std::uint32_t m = t.rooms()[r].first_member; m != kNil;
             m = t.members()[m].next_in_room)
            members->emplace_back(t.user_name(t.members()[m].user));
        std::reverse(members->begin(), members->end());
    }
    if (history) t.copy_history(r, *history);
    if (room_mark) *room_mark = {t.rooms()[r].seq, t.rooms()[r].dropped_id};
    return Status::ok;
}

SharedState::Status SharedState::leave(std::string_view room, std::string_view name,
                                       std::uint64_t* id) {
    Lock lock(hdr_);
    Tables t{hdr_};
    const std::uint32_t u = t.find_user(name);
    const std::uint32_t r = t.find_room(room);
    if (u == kNil || r == kNil) return Status::not_member;
    const std::uint32_t m = t.membership(u, r);
    if (m == kNil) return Status::not_member;
    t.unlink_member(m);
    const std::uint64_t left_id = t.new_id();  // the `left` event's id
    if (id) *id = left_id;
    return Status::ok;
}

SharedState::Status SharedState::post(std::string_view room, std::string_view from,
                                      std::string_view text, std::int64_t ts, std::uint64_t* id,
                                      std::uint64_t* seq) {
    if (text.size() > options_.max_text) throw std::length_error("chat: text too long");
    if (from.size() > kMaxNameBytes) throw std::length_error("chat: name too long");
    Lock lock(hdr_);
    Tables t{hdr_};
    const std::uint32_t u = t.find_user(from);
    const std::uint32_t r = t.find_room(room);
    if (u == kNil || r == kNil || t.membership(u, r) == kNil) return Status::not_member;
    const std::uint64_t new_id = t.new_id();
    t.append_history(r, new_id, new_id, ts, from, text);
    if (id) *id = new_id;
    if (seq) *seq = t.rooms()[r].seq;
    return Status::ok;
}

std::uint64_t SharedState::next_id() {
    Lock lock(hdr_);
    return Tables{hdr_}.new_id();
}

void SharedState::observe(std::uint64_t remote_id) {
    Lock lock(hdr_);
    const std::uint32_t bits = hdr_->cfg.host_bits;
    if ((remote_id >> bits) > (hdr_->last_id >> bits))
        hdr_->last_id = ((remote_id >> bits) << bits) | hdr_->cfg.host_id;
}

std::uint64_t SharedState::post_remote(std::string_view room, std::string_view from,
                                       std::string_view text, std::int64_t ts, std::uint64_t id,
                                       std::uint64_t* seq) {
    if (text.size() > options_.max_text || from.size() > kMaxNameBytes ||
        room.size() > kMaxRoomBytes)
        return 0;
    Lock lock(hdr_);
    Tables t{hdr_};
    const std::uint32_t bits = hdr_->cfg.host_bits;
    if ((id >> bits) > (hdr_->last_id >> bits))
        hdr_->last_id = ((id >> bits) << bits) | hdr_->cfg.host_id;
    const std::uint32_t r = t.get_or_create_room(room);
    if (r == kNil) return 0;
    const std::uint64_t order = t.new_id();
    t.append_history(r, id, order, ts, from, text);
    if (seq) *seq = t.rooms()[r].seq;
    return order;
}

std::vector<std::string> SharedState::members(std::string_view room) {
    std::vector<std::string> out;
    Lock lock(hdr_);
    Tables t{hdr_};
    const std::uint32_t r = t.find_room(room);
    if (r == kNil) return out;
    for (std::uint32_t m = t.rooms()[r].first_member; m != kNil; m = t.members()[m].next_in_room)
        out.emplace_back(t.user_name(t.members()[m].user));
    std::reverse(out.begin(), out.end());
    return out;
}

std::uint32_t SharedState::who(std::uint64_t after, std::uint32_t limit,
                               std::vector<std::string>& out, std::uint64_t* next) {
    out.clear();
    Lock lock(hdr_);
    Tables t{hdr_};
    // Positions in the user pool: a name keeps its entry while registered.
    std::uint64_t i = after;
    for (; i < hdr_->user_hw && (limit == 0 || out.size() < limit); ++i)
        if (t.users()[i].used) out.emplace_back(t.user_name(static_cast<std::uint32_t>(i)));
    if (next) *next = i < hdr_->user_hw ? i : 0;
    return hdr_->users;
}

std::vector<UserView> SharedState::users_except(unsigned slot) {
    std::vector<UserView> out;
    Lock lock(hdr_);
    Tables t{hdr_};
    for (std::uint32_t u = 0; u < hdr_->user_hw; ++u) {
        const shm::User& user = t.users()[u];
        if (!user.used || user.slot == slot) continue;
        UserView v{std::string(t.user_name(u)), user.login_id, {}};
        for (std::uint32_t m = user.first_member; m != kNil; m = t.members()[m].next_of_user)
            v.rooms.emplace_back(t.room_name(t.members()[m].room));
        out.push_back(std::move(v));
    }
    return out;
}

std::vector<StoredMessage> SharedState::history(std::string_view room, std::uint64_t after_seq) {
    std::vector<StoredMessage> out;
    Lock lock(hdr_);
    Tables t{hdr_};
    const std::uint32_t r = t.find_room(room);
    if (r != kNil) t.copy_history(r, out, after_seq);
    return out;
}

std::vector<Evicted> SharedState::evict_slot(unsigned slot) {
    std::vector<Evicted> out;
    Lock lock(hdr_);
    Tables t{hdr_};
    for (std::uint32_t u = 0; u < hdr_->user_hw; ++u) {
        const shm::User& user = t.users()[u];
        if (!user.used || user.slot != slot || user.generation != generation_) continue;
        std::string name(t.user_name(u));
        const std::uint64_t login = user.login_id;
        std::vector<std::string> rooms;
        for (std::uint32_t m = user.first_member; m != kNil; m = t.members()[m].next_of_user)
            rooms.emplace_back(t.room_name(t.members()[m].room));
        const std::uint64_t id = t.remove_user(u);
        out.push_back({std::move(name), id, login, std::move(rooms)});
    }
    return out;
}

std::vector<Evicted> SharedState::evict_generation() {
    std::vector<Evicted> out;
    Lock lock(hdr_);
    Tables t{hdr_};
    for (std::uint32_t u = 0; u < hdr_->user_hw; ++u) {
        const shm::User& user = t.users()[u];
        if (!user.used || user.generation != generation_) continue;
        std::string name(t.user_name(u));
        const std::uint64_t login = user.login_id;
        std::vector<std::string> rooms;
        for (std::uint32_t m = user.first_member; m != kNil; m = t.members()[m].next_of_user)
            rooms.emplace_back(t.room_name(t.members()[m].room));
        const std::uint64_t id = t.remove_user(u);
        out.push_back({std::move(name), id, login, std::move(rooms)});
    }
    return out;
}

SharedStats SharedState::stats() {
    Lock lock(hdr_);
    return {hdr_->users, hdr_->rooms,   hdr_->memberships,
            hdr_->addrs, hdr_->last_id, hdr_->recoveries};
}

}  // namespace steerchat::chat
