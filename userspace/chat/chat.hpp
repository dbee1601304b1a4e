// The chat core: users, presence, rooms, direct messages, history. It knows no protocol; the
// adapters (userspace/native: JSON over WebSocket; userspace/socketio_chat: Socket.IO) translate
// protocol messages into Participant calls and encode the Events the core hands to their Client.
//
// Design (what was chosen, and why)
// ---------------------------------
// * Cluster directory in shared memory (SharedState, shared_state.hpp): created by the master
//   before fork in a memfd mapping (MAP_SHARED; the fd is closed right after mmap, the mapping is
//   inherited). Fixed-size tables (bounded by SharedOptions, errors `server_full` when full): the
//   name registry (name -> owning worker slot + login id), rooms (members as an intrusive list of
//   membership nodes, last `history_len` messages with their text in a per-room byte ring), and
//   the id counter. One process-shared ROBUST mutex guards it (EOWNERDEAD -> consistent); it is
//   taken once per user action, never per delivery. No allocator in shared memory: a worker
//   killed inside a critical section cannot corrupt a heap, only leave one table entry
//   half-written.
// * Ids: one counter, incremented under the mutex for every state change that is announced
//   (online, offline, room message, dm, a room joined or left). So ids are unique and increase
//   host-wide, and an id orders an event against every snapshot (welcome users, join
//   members/history) taken under the same mutex:
//     - a session that logged in at id L receives presence events with id > L only (the welcome
//       list already reflects the older ones);
//     - a session that joined room R at id J receives R's messages with id > J only (history
//       already holds the older ones). A message's id and its history entry are made in one
//       critical section, so join gets every message exactly once: from history or live.
// * One event model, one path (event.hpp, Hub::publish / Hub::deliver): a Participant builds a
//   chat::Event (message, dm, online, offline, typing: a closed enum, one struct of string views,
//   no allocation) and hands it to Hub::publish, which writes its ring record into this worker's
//   log (record.hpp: a small bounds-checked binary record; a DM only if its recipient is on
//   another worker) and then calls Hub::deliver. Every other worker's Hub reads the record
//   (ring::AsioReader), decodes it into the same Event and calls the same Hub::deliver, which
//   finds the LOCAL recipients through the local indices (room -> sessions, name -> session,
//   logged-in sessions). So a new kind of event is added in event.hpp, record.hpp, Hub::deliver
//   (and Hub::stale / travels) and each adapter: the compiler lists every switch to extend (the
//   recipe: docs/architecture.md, "Adding a chat event").
//   Per-sender order holds because each log is ordered and a worker is single-threaded.
// * Typing (Participant::typing): a hint, not a message. It takes no id and no lock on the shared
//   state, is not stored in history and is not echoed to its sender; only a member of the room
//   may send it. Each session has its own token bucket for it (Limits::typing_rate /
//   typing_burst; a name has one session): typing over it is dropped silently and counted
//   (HubStats::typing_drops), since a lost hint costs nothing.
// * Room members (EventType::joined / left): a new membership and a leave each take an id in
//   the same critical section as the change (SharedState::join / leave), so they order against
//   join snapshots like messages do: a member who joined at id J gets the joined/left events
//   with id > J (its member list already holds the older ones). A record of an older login of
//   the name (overtaken across logs by a newer login) is dropped like stale presence. Logging
//   out or going offline (a disconnect, a dead worker) sends no `left` per room: `offline(N)`
//   means N left every room, and clients derive it. A user in 100 rooms going offline is one
//   record and one delivery per session instead of 100 records, and a dead worker's evicted
//   users (announced by the master, which knows no rooms) need nothing more.
// * Presence across logs is not ordered (N logs out on worker A, logs in again on B: a third
//   worker may read B's `online` before A's `offline`). A reader therefore drops a presence
//   record that a newer login has overtaken: `online(N, id)` unless N is still registered with
//   login id `id` or not registered at all (that login already ended: its `offline` follows in
//   the same log, so a quick login/logout is still seen as a pair); `offline(N, id, login L)`
//   only if N is not registered under a newer login. An offline reaches a session only if that
//   session knew N online (N was in its welcome list: its login id > L, or this worker delivered
//   online(N, L)), so every client sees presence as matched pairs and ends with the registry's
//   state.
// * Worker death: the master calls SharedState::evict_slot(slot) after reaping the worker and
//   before respawning it (frees the names, drops the memberships, takes an id per user) and then
//   chat::announce_offline(region, slot, evicted), which publishes their `offline` records into
//   the dead slot's log (a new ring::Writer continues after its last committed record).
// * Encode once: the Hub hands every local recipient of one event the same `const Event&` with
//   a worker-unique `serial`; an adapter caches its encoding keyed by serial (one entry is
//   enough: one event is delivered to all its recipients before the next; chat::EncodeOnce in
//   encode_once.hpp, shared by the adapters). The sender's copy of a room message carries `cid`
//   and has its own serial.
// * Limits: names 1-32 code points, rooms 1-64 code points, no control characters (C0, DEL, C1)
//   and valid UTF-8; text at most SharedOptions::max_text bytes (4 KiB) -> `too_long`.
//   Requests (every client message an adapter hands over, see Participant::admit) through two token
//   buckets (rate_limit.hpp, Limits::rate / burst): one per connection (Participant) and one per
//   logged-in name on this worker (kept by the Hub, so logging out and in again does not refill
//   it) -> `rate_limited`; a connection refused Limits::close_after times in a row is to be closed
//   by its adapter (Participant::abusive). At most Limits::max_rooms rooms per session (a name has
//   one session) -> `too_many_rooms`. At most Limits::max_names_per_address names held at once
//   by one client address, host-wide (counted in the shared state) -> `too_many_names`.
//   `server_full` only when a host-wide table (users, rooms, memberships) is full; counted.
// * Bounded answers: a text's limit (SharedOptions::max_text) is on its JSON-escaped size
//   (json_escaped_size: what the adapters send), so escaping cannot make a message bigger than
//   the limit its sender was held to; a join returns the newest history messages whose escaped
//   texts and names fit Limits::max_join_history_bytes (trimmed joins counted).
// * Presence at scale (Limits::presence_max_users, N): while at most N users are online
//   host-wide, presence is global (every login's `online` reaches every session, every welcome
//   lists everyone). A login that makes more than N gets a welcome with the first N names and
//   the count (Welcome::partial) and is announced to no one host-wide (Event::local): who
//   shares a room with it learns of it from the room (members, member_joined). Its `offline`
//   carries its rooms (Event::rooms) and reaches the sessions that knew it: those it was
//   announced to, those whose full welcome listed it, and the members of its rooms. Everyone is
//   listed by the paged `who` (SharedState::who). So N logins cost O(N) presence deliveries
//   and welcome bytes past the threshold instead of O(N^2).
// * One session per connection; one connection per name (names are unique host-wide).
// * Gaps (no silent loss): every room message carries the room's sequence number `seq` (1, 2,
//   ... per room, allocated with its id under the mutex; SharedState::post), so a client sees a
//   hole in a room's seqs. Seqs of one room come from several logs and may arrive slightly out
//   of order; the Hub keeps per local room which seqs it delivered (SeqWindow). When its Reader
//   reports a Loss (this worker was cut loose from a log), on_loss tells every logged-in local
//   session (Client::gap: the last id read from that log, and per room of the session what is
//   resent and what is gone), then resends from each local room's history the messages it never
//   delivered (in seq order, to members who joined before them); seqs older than the history
//   are announced as missed. A resent message arriving live later (it was in another log, not
//   lost) is skipped: no repeats. DMs and presence changes have no history: the notice tells
//   the client they may be missing (docs: the protocol's "gap" event).
// * Reconnects: join(room, since) returns only the history after the id `since` (the last id
//   the client saw), and whether the history still reaches back that far (Joined::complete).
//
// Threading: a Hub and its Sessions belong to one event loop thread (one per worker process).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/address.hpp>

#include "chat/event.hpp"
#include "chat/rate_limit.hpp"
#include "chat/seq_window.hpp"
#include "chat/shared_state.hpp"
#include "metrics/metrics.hpp"
#include "ring/asio_reader.hpp"
#include "ring/ring.hpp"

namespace steerchat::chat {

// ---------------------------------------------------------------------------------------------
// Events handed to adapters: chat::Event (event.hpp)

// A local recipient (one per connection). deliver() must not call back into the Hub
// synchronously except through Participant methods (which are reentrancy-safe).
struct Client;

// What a session missed in one room when its worker lost records (see "Gaps" above).
struct RoomGap {
    std::string room;
    std::uint64_t seq = 0;          // the room's newest seq now (0: no message yet)
    std::uint64_t resent = 0;       // messages resent right after the notice
    std::uint64_t missed = 0;       // messages gone for good (older than the history)
    std::uint64_t missed_from = 0;  // their seq range (within it: those not delivered before)
    std::uint64_t missed_to = 0;
};

// The notice of a loss: this worker fell behind worker `writer`'s log and skipped records after
// the id `last_id` (the last event read from it; 0: none yet). Room messages are resent as
// `rooms` says; DMs and presence changes of that worker after last_id may be missing.
struct Gap {
    unsigned writer = 0;
    std::uint64_t last_id = 0;
    std::uint64_t records = 0;   // records skipped
    std::vector<RoomGap> rooms;  // the session's rooms
};

struct Client {
    virtual ~Client() = default;
    virtual void deliver(const Event& ev) = 0;
    // A loss notice; the resent messages follow as deliver() calls.
    virtual void gap(const Gap&) {}
};

// ---------------------------------------------------------------------------------------------
// Errors

enum class Error : std::uint8_t {
    none,
    bad_name,           // not 1-32 code points, control characters or invalid UTF-8
    name_taken,         // someone on some worker has it
    bad_room,           // not 1-64 code points, ...
    not_logged_in,      // anything but login before login
    already_logged_in,  // a second login on one session
    not_in_room,        // say/leave in a room the session has not joined
    no_such_user,       // dm to a name nobody holds
    too_long,           // text over the limit
    server_full,        // a shared table is full
    rate_limited,       // more requests than Limits::rate / burst allow
    too_many_rooms,     // a join over Limits::max_rooms
    too_many_names,     // a login from an address holding Limits::max_names_per_address names
};

// The protocol code ("name_taken") and a human message.
std::string_view code_of(Error e) noexcept;
std::string_view message_of(Error e) noexcept;

// Validation used by the core (exposed for adapters and tests).
bool valid_name(std::string_view name) noexcept;  // 1-32 code points
bool valid_room(std::string_view room) noexcept;  // 1-64 code points

using HistoryItem = StoredMessage;  // id, ts, from, text

struct Welcome {
    // Every online name, this user included; when `partial`, the first presence_max_users.
    std::vector<std::string> users;
    std::uint32_t count = 0;  // names online host-wide, this user included
    bool partial = false;     // more online than Limits::presence_max_users: not all listed
};

// A page of `who`: names from a position on (Participant::who).
struct Who {
    std::vector<std::string> users;
    std::uint32_t count = 0;  // names online host-wide
    std::uint64_t next = 0;   // the position of the next page (0: this one was the last)
};

struct Joined {
    std::vector<std::string> members;  // this user included
    std::vector<HistoryItem> history;  // oldest first, at most history_len (after `since`)
    std::uint64_t seq = 0;             // the room's newest seq (0: no message yet)
    bool complete = true;              // false: messages after `since` are no longer kept
};

struct Said {
    std::uint64_t id = 0;
    std::uint64_t seq = 0;  // room messages
    std::int64_t ts = 0;
};

// ---------------------------------------------------------------------------------------------

// Per-worker limits on what one client may do (see the design notes above).
struct Limits {
    double rate = 50;                // requests per second per connection and per user; 0: no limit
    std::uint32_t burst = 100;       // requests at once (bucket size)
    std::uint32_t close_after = 50;  // refused requests in a row before a close; 0: never
    std::uint32_t max_rooms = 100;   // rooms one session may be in; 0: no limit
    double typing_rate = 2;          // typing events per second per session; 0: no limit
    std::uint32_t typing_burst = 5;  // typing events at once; more are dropped silently
    // Names one client address may hold at once, host-wide (SharedState::claim); 0: no limit.
    std::uint32_t max_names_per_address = 256;
    // Bytes of history a join returns at most (its JSON-escaped texts and names; the newest
    // messages that fit); 0: no limit.
    std::size_t max_join_history_bytes = 64 * 1024;
    bool ipv6_prefix64 = false;  // address_key of IPv6 clients: their /64
    // Online users up to which presence is global (every login announced to every session, the
    // welcome lists everyone); past it a login is announced to no one host-wide, its welcome
    // lists this many names and the count, and `who` pages carry at most this many. 0: always
    // global (every welcome lists everyone, `who` answers in one page).
    std::uint32_t presence_max_users = 1000;
};

// A client address as the per-address name limit counts it: IPv4 (also v4-mapped) as
// ::ffff:a.b.c.d, IPv6 whole or (prefix64) its /64.
Address address_key(const boost::asio::ip::address& a, bool prefix64) noexcept;

// The bytes `text` takes as a JSON string's contents (escapes counted: \uXXXX for a control
// character, \n etc., \" and \\): what the adapters send for it.
std::size_t json_escaped_size(std::string_view text) noexcept;

// In the worker's slot block (metrics/metrics.hpp) when the Hub is given one.
struct HubStats {
    metrics::Counter sessions;        // gauge: logged-in local sessions
    metrics::Counter records_in;      // ring records read
    metrics::Counter records_out;     // ring records published
    metrics::Counter deliveries;      // Client::deliver calls
    metrics::Counter events;          // distinct events (serials) delivered
    metrics::Counter stale_presence;  // presence and joined/left records dropped as stale
    metrics::Counter bad_records;     // undecodable ring records (a bug if non-zero)
    metrics::Counter losses;          // ring Loss reports: this worker missed records
    metrics::Counter lost_records;
    metrics::Counter rate_limited;  // requests refused by a token bucket
    metrics::Counter rate_closes;   // connections found abusive (Limits::close_after)
    metrics::Counter room_limited;  // joins refused: too_many_rooms
    metrics::Counter typing_drops;  // typing events over Limits::typing_rate (not delivered)
    metrics::Counter gap_notices;   // sessions told of a loss (Client::gap)
    metrics::Counter resent;        // room messages resent after a loss (events)
    metrics::Counter missed;        // room messages announced as gone (per room, not per session)
    metrics::Counter repeats_skipped;  // live room messages already resent (not delivered twice)
    metrics::Counter names_limited;    // logins refused: too_many_names
    metrics::Counter server_full;      // logins and joins refused: a host-wide table is full
    metrics::Counter history_trimmed;  // joins whose history was cut to max_join_history_bytes
    metrics::Counter history_bytes;    // history bytes (JSON-escaped) joins returned
    metrics::Counter presence_local;   // logins past presence_max_users: not announced, welcome cut
    metrics::Counter who_pages;        // `who` pages answered
};

class Hub;
class Participant;

namespace detail {
struct RecordSink {
    Hub* hub;
    void operator()(const ring::Record& r) const;
};
struct LossSink {
    Hub* hub;
    void operator()(const ring::Loss& l) const;
};
// Heterogeneous lookup of string keys by string_view.
struct StrHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
        return std::hash<std::string_view>{}(s);
    }
};
}  // namespace detail

// A worker's chat core. Construct after the io_context, destroy before it. The Region and the
// SharedState must outlive it.
//
// Every event takes one path: publish() puts an event made on this worker into the ring (for
// the other workers) and hands it to deliver(); a record read from another worker's log is
// decoded (record.hpp) and handed to the same deliver(), which finds its local recipients.
class Hub {
  public:
    // `metrics`: the worker's slot block for the stats (nullptr: kept here).
    Hub(boost::asio::any_io_executor ex, ring::Region& region, SharedState& state, unsigned slot,
        ring::WriterOptions writer_options = {}, metrics::Slot* metrics = nullptr);
    ~Hub();
    Hub(const Hub&) = delete;
    Hub& operator=(const Hub&) = delete;

    unsigned slot() const noexcept { return slot_; }
    SharedState& state() noexcept { return *state_; }
    std::uint32_t state_generation() const noexcept { return state_->generation(); }
    // Set before sessions exist (the worker's options).
    void set_limits(const Limits& limits);
    const Limits& limits() const noexcept { return limits_; }
    const HubStats& stats() const noexcept { return *stats_; }
    std::size_t local_sessions() const noexcept { return users_.size(); }

    // Stops reading the ring (the destructor does it too).
    void stop();
    // Logs every local session out (a stopping worker, before its connections close: their
    // names are free by the time a client reconnects to another worker). Returns how many.
    std::size_t logout_all();

    // ---- The operations Sessions use ----

    // One client request of a session: takes a token from its connection's bucket and from its
    // name's (`user`, when logged in). rate_limited when either is empty (nothing is taken);
    // `strikes` counts refusals in a row.
    Error admit(TokenBucket& conn, TokenBucket* user, std::uint32_t& strikes);
    // `s` just logged in (name and login id set): index it by name and for presence. Returns
    // the name's token bucket (a quick logout and login does not refill it).
    TokenBucket* attach(Participant& s);
    // `s` is logging out (name still set, rooms already left): unindex it and drop it from the
    // deliveries in flight.
    void detach(Participant& s);
    // Counts a refusal the shared state made (too_many_names, server_full).
    void count_refusal(Error e) noexcept;
    // Counts a login past Limits::presence_max_users, a `who` page.
    void count_presence_local() noexcept { ++stats_->presence_local; }
    void count_who() noexcept { ++stats_->who_pages; }
    // Cuts a join's history (oldest first) to the newest messages that fit
    // Limits::max_join_history_bytes; counts the bytes returned and a cut. Whether it cut.
    bool bound_history(std::vector<HistoryItem>& history) noexcept;
    // Whether `s` may join `room` (Limits::max_rooms); a refusal is counted.
    bool may_join(const Participant& s, std::string_view room);
    // Takes a token from a session's typing bucket (Limits::typing_rate); false (counted as
    // dropped) when it is empty.
    bool may_type(TokenBucket& bucket);
    // The local index of room members (`seq`: the room's newest seq when `s` joined it).
    void add_member(Participant& s, std::string_view room, std::uint64_t seq);
    void remove_member(Participant& s, std::string_view room);
    // An event made on this worker (by `origin`, if a session): into the ring unless all its
    // recipients are here (a DM to a local user), then to the local recipients, as deliver().
    void publish(Event& ev, Participant* origin);

  private:
    friend struct detail::RecordSink;
    friend struct detail::LossSink;

    void on_record(const ring::Record& r);
    void on_loss(const ring::Loss& l);
    // Whether a record of `ev` must go to the other workers.
    bool travels(const Event& ev) const;
    // Whether a presence record read from the ring has been overtaken by a newer login.
    bool stale(const Event& ev) const;
    // The one delivery: to every local recipient of `ev` except `origin`; a room message's
    // origin then gets its own copy (with the cid).
    void deliver(Event& ev, Participant* origin);
    // Delivers `ev` (a fresh serial) to each session of `targets` for which keep(s) is true;
    // safe against sessions destroyed by a delivery.
    template <class Keep>
    void fan_out(const std::vector<Participant*>& targets, Event& ev, Keep&& keep);
    void deliver_one(Participant& s, Event& ev);  // a fresh serial
    void forget(Participant* s);  // a session is going away: drop it from in-flight deliveries

    void release_bucket(const std::string& name, TokenBucket::Clock::time_point now);
    // Calls fn(s) for each session of `targets` still alive when its turn comes.
    template <class Fn>
    void each_session(const std::vector<Participant*>& targets, Fn&& fn);

    unsigned slot_;
    SharedState* state_;
    Limits limits_;
    RateLimit rate_;
    RateLimit typing_rate_;
    ring::Writer writer_;
    std::unique_ptr<ring::Reader> reader_;
    std::unique_ptr<ring::AsioReader<detail::RecordSink, detail::LossSink>> feed_;
    metrics::Cell<HubStats> stats_;
    std::uint64_t serial_ = 0;
    std::vector<std::byte> scratch_;  // record encoding buffer

    using StrHash = detail::StrHash;
    std::unordered_map<std::string, Participant*, StrHash, std::equal_to<>> users_;
    struct LocalRoom {
        std::vector<Participant*> members;
        SeqWindow seen;  // seqs delivered here
    };
    std::unordered_map<std::string, LocalRoom, StrHash, std::equal_to<>> rooms_;
    std::vector<std::uint64_t> last_id_;  // per writer slot: the last id read from its log
    std::vector<Participant*> sessions_;  // logged-in sessions (presence fan-out)
    // Those of them whose welcome listed everyone (Participant::full_welcome), in login order.
    std::vector<Participant*> full_sessions_;
    // name -> login id whose `online` this worker delivered (pairs each offline with its online)
    std::unordered_map<std::string, std::uint64_t, StrHash, std::equal_to<>> announced_;
    // Recipient lists being delivered to (a stack: a delivery may end a session, whose logout
    // delivers `offline`). forget() nulls a dying session in all of them.
    std::vector<std::vector<Participant*>> in_flight_;
    std::size_t depth_ = 0;
    // name -> its bucket: of every logged-in name, and of names that logged out before their
    // bucket refilled (dropped once full, swept at most once a second).
    std::unordered_map<std::string, TokenBucket, StrHash, std::equal_to<>> buckets_;
    TokenBucket::Clock::time_point last_sweep_{};
};

// One connection's participation in the chat (its user, once logged in: name, presence, rooms,
// request budget); an adapter owns one per client connection. Not movable (the Hub indexes it
// by address).
class Participant {
  public:
    Participant(Hub& hub, Client& client);
    // The client's address (address_key), counted against Limits::max_names_per_address by
    // login. Set it before login; without one, no per-address limit applies.
    void set_address(const Address& a) noexcept { address_ = a; }
    ~Participant();  // logout()
    Participant(const Participant&) = delete;
    Participant& operator=(const Participant&) = delete;

    Error login(std::string_view name, Welcome* out = nullptr);
    // A page of the online names from position `after` (0: the first), at most `limit` (0: as
    // many as Limits::presence_max_users allows).
    Error who(std::uint64_t after, std::uint32_t limit, Who* out);
    // `since` (a reconnect: the last id the client saw; 0: all): history only after it.
    Error join(std::string_view room, Joined* out = nullptr, std::uint64_t since = 0);
    Error leave(std::string_view room);
    // Delivered to every member of the room on every worker, this session included (its copy
    // with `cid` when has_cid).
    Error say(std::string_view room, std::string_view text, std::string_view cid = {},
              bool has_cid = false, Said* out = nullptr);
    Error dm(std::string_view to, std::string_view text, Said* out = nullptr);
    // "I am typing in `room`": to every other member of the room on every worker, not stored.
    // not_in_room unless a member; over Limits::typing_rate it is dropped silently (none).
    Error typing(std::string_view room);
    // Frees the name, leaves every room, announces offline. No-op when not logged in.
    void logout();
    // One client request (call before decoding it): takes a token from this connection's bucket
    // and, when logged in, from the name's bucket. rate_limited when either is empty (nothing is
    // taken then): the adapter refuses the request, or closes the connection when abusive().
    Error admit();
    // Refused Limits::close_after times in a row (reset by an admitted request).
    bool abusive() const noexcept {
        return hub_.limits().close_after != 0 && strikes_ >= hub_.limits().close_after;
    }

    bool logged_in() const noexcept { return !name_.empty(); }
    const std::string& name() const noexcept { return name_; }
    bool in_room(std::string_view room) const;
    std::size_t rooms() const noexcept { return rooms_.size(); }
    std::vector<std::string_view> room_names() const;
    // The id at which `room` was joined (its messages with larger ids are delivered live).
    std::optional<std::uint64_t> joined_at(std::string_view room) const;
    std::uint64_t login_id() const noexcept { return login_id_; }
    // Whether this login's welcome listed every online user (not past presence_max_users).
    bool full_welcome() const noexcept { return full_welcome_; }
    Client& client() const noexcept { return client_; }

  private:
    // Tells the room's other members that this user joined or left it (`id`: the change's id).
    void publish_membership(EventType type, std::uint64_t id, std::string_view room);

    Hub& hub_;
    Client& client_;
    std::string name_;
    std::uint64_t login_id_ = 0;
    bool full_welcome_ = true;
    TokenBucket bucket_;                  // this connection's requests
    TokenBucket* user_bucket_ = nullptr;  // the name's (kept by the Hub) while logged in
    TokenBucket typing_bucket_;           // this session's typing events
    std::uint32_t strikes_ = 0;           // requests refused in a row
    std::optional<Address> address_;
    // room -> the id at which it was joined
    std::unordered_map<std::string, std::uint64_t, detail::StrHash, std::equal_to<>> rooms_;
};

// For the master, after SharedState::evict_slot(slot): publishes an `offline` record for each
// evicted user into `slot`'s log, so every live worker announces it. The worker of `slot` must
// be dead (a log has one writer); call it before respawning the slot.
void announce_offline(ring::Region& region, unsigned slot, const std::vector<Evicted>& evicted);

}  // namespace steerchat::chat
