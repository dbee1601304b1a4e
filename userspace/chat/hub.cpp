#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>
#include <utility>

#include "chat/chat.hpp"
#include "chat/record.hpp"
#include "text/utf8.hpp"
#include "util/log.hpp"

namespace steerchat::chat {

namespace {

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// Code points of valid UTF-8 without control characters (C0, DEL, C1); -1 if invalid.
long count_text(std::string_view s) noexcept {
    if (!text::is_valid_utf8(s)) return -1;
    for (std::size_t i = 0; i < s.size(); ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x20 || c == 0x7F) return -1;
        // C1 (U+0080..U+009F) is C2 80..C2 9F.
        if (c == 0xC2 && static_cast<unsigned char>(s[i + 1]) <= 0x9F) return -1;
    }
    return static_cast<long>(text::code_points(s));
}

}  // namespace

std::string_view code_of(Error e) noexcept {
    switch (e) {
        case Error::none:
            return "ok";
        case Error::bad_name:
            return "bad_name";
        case Error::name_taken:
            return "name_taken";
        case Error::bad_room:
            return "bad_room";
        case Error::not_logged_in:
            return "not_logged_in";
        case Error::already_logged_in:
            return "already_logged_in";
        case Error::not_in_room:
            return "not_in_room";
        case Error::no_such_user:
            return "no_such_user";
        case Error::too_long:
            return "too_long";
        case Error::server_full:
            return "server_full";
        case Error::rate_limited:
            return "rate_limited";
        case Error::too_many_rooms:
            return "too_many_rooms";
        case Error::too_many_names:
            return "too_many_names";
    }
    return "internal";
}

std::string_view message_of(Error e) noexcept {
    switch (e) {
        case Error::none:
            return "ok";
        case Error::bad_name:
            return "a name must be 1-32 characters without control characters";
        case Error::name_taken:
            return "that name is in use";
        case Error::bad_room:
            return "a room name must be 1-64 characters without control characters";
        case Error::not_logged_in:
            return "log in first";
        case Error::already_logged_in:
            return "this connection is already logged in";
        case Error::not_in_room:
            return "join the room first";
        case Error::no_such_user:
            return "nobody of that name is online";
        case Error::too_long:
            return "the text is too long";
        case Error::server_full:
            return "the server is full, try again later";
        case Error::rate_limited:
            return "too many messages: slow down (the connection is closed if this goes on)";
        case Error::too_many_rooms:
            return "in too many rooms: leave one first";
        case Error::too_many_names:
            return "too many users from your address: log one out first";
    }
    return "internal error";
}

Address address_key(const boost::asio::ip::address& a, bool prefix64) noexcept {
    Address key{};
    if (a.is_v4()) {
        key[10] = key[11] = 0xff;
        const auto b = a.to_v4().to_bytes();
        std::copy(b.begin(), b.end(), key.begin() + 12);
        return key;
    }
    const auto b = a.to_v6().to_bytes();
    std::copy(b.begin(), b.end(), key.begin());
    const bool mapped = a.to_v6().is_v4_mapped();
    if (prefix64 && !mapped) std::fill(key.begin() + 8, key.end(), 0);
    return key;
}

std::size_t json_escaped_size(std::string_view text) noexcept {
    std::size_t n = 0;
    for (const unsigned char c : text) {
        switch (c) {
            case '"':
            case '\\':
            case '\b':
            case '\f':
            case '\n':
            case '\r':
            case '\t':
                n += 2;
                break;
            default:
                n += c < 0x20 ? 6 : 1;
        }
    }
    return n;
}

bool valid_name(std::string_view name) noexcept {
    if (name.empty() || name.size() > kMaxNameBytes) return false;
    const long n = count_text(name);
    return n >= 1 && n <= 32;
}

bool valid_room(std::string_view room) noexcept {
    if (room.empty() || room.size() > kMaxRoomBytes) return false;
    const long n = count_text(room);
    return n >= 1 && n <= 64;
}

// ---------------------------------------------------------------------------------------------
// Hub

void detail::RecordSink::operator()(const ring::Record& r) const {
    hub->on_record(r);
}
void detail::LossSink::operator()(const ring::Loss& l) const {
    hub->on_loss(l);
}

Hub::Hub(boost::asio::any_io_executor ex, ring::Region& region, SharedState& state, unsigned slot,
         ring::WriterOptions writer_options, metrics::Slot* metrics)
    : slot_(slot),
      state_(&state),
      rate_(RateLimit::per_second(limits_.rate, limits_.burst)),
      typing_rate_(RateLimit::per_second(limits_.typing_rate, limits_.typing_burst)),
      writer_(region, slot, writer_options),
      stats_(metrics) {
    const std::size_t need =
        record::kOverhead + kMaxRoomBytes + kMaxNameBytes + state.options().max_text;
    if (writer_.max_payload() < need)
        throw std::invalid_argument("chat: ring records carry at most " +
                                    std::to_string(writer_.max_payload()) + " bytes, need " +
                                    std::to_string(need) + " (make the ring logs larger)");
    last_id_.assign(region.workers(), 0);
    reader_ = std::make_unique<ring::Reader>(region, slot);
    feed_ = std::make_unique<ring::AsioReader<detail::RecordSink, detail::LossSink>>(
        std::move(ex), *reader_, detail::RecordSink{this}, detail::LossSink{this});
    feed_->start();
}

Hub::~Hub() {
    stop();
}

std::size_t Hub::logout_all() {
    // Copy: a logout edits the list (and delivers offline to the sessions still in it).
    const std::vector<Participant*> all = sessions_;
    for (Participant* s : all)
        s->logout();
    return all.size();
}

void Hub::stop() {
    if (feed_) feed_->stop();
}

void Hub::set_limits(const Limits& limits) {
    limits_ = limits;
    rate_ = RateLimit::per_second(limits.rate, limits.burst);
    typing_rate_ = RateLimit::per_second(limits.typing_rate, limits.typing_burst);
}

// ---- The operations Sessions use

Error Hub::admit(TokenBucket& conn, TokenBucket* user, std::uint32_t& strikes) {
    if (rate_.unlimited()) return Error::none;
    const auto now = TokenBucket::Clock::now();
    if (!conn.ready(rate_, now) || (user && !user->ready(rate_, now))) {
        ++stats_->rate_limited;
        if (++strikes == limits_.close_after) ++stats_->rate_closes;
        return Error::rate_limited;
    }
    strikes = 0;
    conn.take(rate_, now);
    if (user) user->take(rate_, now);
    return Error::none;
}

TokenBucket* Hub::attach(Participant& s) {
    users_.emplace(s.name(), &s);
    sessions_.push_back(&s);
    if (s.full_welcome()) full_sessions_.push_back(&s);
    stats_->sessions = users_.size();
    return &buckets_.try_emplace(s.name()).first->second;
}

void Hub::detach(Participant& s) {
    users_.erase(s.name());
    std::erase(sessions_, &s);
    if (s.full_welcome()) std::erase(full_sessions_, &s);
    stats_->sessions = users_.size();
    forget(&s);
    release_bucket(s.name(), TokenBucket::Clock::now());
}

void Hub::release_bucket(const std::string& name, TokenBucket::Clock::time_point now) {
    // A bucket that is not full is kept, so that a quick logout and login does not refill it.
    if (const auto it = buckets_.find(name); it != buckets_.end() && it->second.full(now))
        buckets_.erase(it);
    if (buckets_.size() <= users_.size() + 64 || now - last_sweep_ < std::chrono::seconds(1))
        return;
    last_sweep_ = now;
    std::erase_if(buckets_, [&](const auto& kv) {
        return kv.second.full(now) && !users_.contains(kv.first);
    });
}

void Hub::count_refusal(Error e) noexcept {
    if (e == Error::too_many_names) ++stats_->names_limited;
    if (e == Error::server_full) ++stats_->server_full;
}

bool Hub::bound_history(std::vector<HistoryItem>& history) noexcept {
    // Per message: its escaped text and name, and ~64 bytes of JSON around them (id, ts, keys).
    constexpr std::size_t kFraming = 64;
    const std::size_t limit = limits_.max_join_history_bytes;
    std::size_t bytes = 0;
    std::size_t keep = 0;
    for (auto it = history.rbegin(); it != history.rend(); ++it) {
        const std::size_t one =
            json_escaped_size(it->text) + json_escaped_size(it->from) + kFraming;
        if (limit != 0 && bytes + one > limit) break;
        bytes += one;
        ++keep;
    }
    stats_->history_bytes += bytes;
    if (keep == history.size()) return false;
    history.erase(history.begin(), history.end() - static_cast<std::ptrdiff_t>(keep));
    ++stats_->history_trimmed;
    return true;
}

bool Hub::may_join(const Participant& s, std::string_view room) {
    if (limits_.max_rooms == 0 || s.rooms() < limits_.max_rooms || s.in_room(room)) return true;
    ++stats_->room_limited;
    return false;
}

bool Hub::may_type(TokenBucket& bucket) {
    if (bucket.try_take(typing_rate_, TokenBucket::Clock::now())) return true;
    ++stats_->typing_drops;
    return false;
}

void Hub::add_member(Participant& s, std::string_view room, std::uint64_t seq) {
    auto it = rooms_.find(room);
    if (it == rooms_.end())
        it = rooms_.emplace(std::string(room), LocalRoom{{}, SeqWindow(seq)}).first;
    it->second.members.push_back(&s);
}

void Hub::remove_member(Participant& s, std::string_view room) {
    const auto it = rooms_.find(room);
    if (it == rooms_.end()) return;
    std::erase(it->second.members, &s);
    if (it->second.members.empty()) rooms_.erase(it);
}

// ---- The one path

namespace {
// When this worker's chat core accepted an event (the delivery latency starts here).
std::uint64_t now_ns() noexcept {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                          std::chrono::steady_clock::now().time_since_epoch())
                                          .count());
}
}  // namespace

void Hub::publish(Event& ev, Participant* origin) {
    ev.accepted_ns = now_ns();
    // An offline's rooms that do not fit in a record travel as unknown (record::encode: id,
    // login, name, rooms; each string with a u32 length).
    if (ev.type == EventType::offline && ev.rooms_known &&
        8 + 8 + 4 + ev.from.size() + 4 + ev.rooms.size() > writer_.max_payload()) {
        ev.rooms_known = false;
        ev.rooms = {};
    }
    if (travels(ev)) {
        const std::uint32_t type = record::encode(ev, scratch_);
        writer_.publish(type, scratch_);
        ++stats_->records_out;
    }
    deliver(ev, origin);
}

bool Hub::travels(const Event& ev) const {
    switch (ev.type) {
        case EventType::message:
        case EventType::online:
        case EventType::offline:
        case EventType::typing:
        case EventType::joined:
        case EventType::left:
        case EventType::revoked:
            return true;
        case EventType::dm:
            return !users_.contains(ev.to);
    }
    return true;
}

void Hub::on_record(const ring::Record& r) {
    ++stats_->records_in;
    std::optional<Event> ev = record::decode(r.type, r.payload);
    if (ev) ev->accepted_ns = now_ns();
    if (!ev) {
        ++stats_->bad_records;
        log::error("chat: worker {}: undecodable ring record type {} ({} bytes) from worker {}",
                   slot_, r.type, r.payload.size(), r.writer);
        return;
    }
    if (ev->id != 0 && r.writer < last_id_.size()) last_id_[r.writer] = ev->id;
    if (stale(*ev)) {
        ++stats_->stale_presence;
        return;
    }
    deliver(*ev, nullptr);
}

bool Hub::stale(const Event& ev) const {
    // Logs are not ordered among themselves: drop what a newer login of the name (read from the
    // registry) has overtaken. A login that has already ended (the name is free) is still
    // announced: its offline follows in the same log, so the pair stays matched and a quick
    // login/logout is seen by every worker.
    switch (ev.type) {
        case EventType::message:
        case EventType::dm:
        case EventType::typing:
        case EventType::revoked:
            return false;
        case EventType::online: {
            const std::uint64_t current = state_->lookup(ev.from);
            return current != ev.id && current != 0;
        }
        case EventType::offline:
            return state_->lookup(ev.from) > ev.id;
        case EventType::joined:
        case EventType::left: {
            // Of an older login of the name (A left R on worker 1, logged in again on worker 2
            // and rejoined R: a reader of worker 2's log first must not then apply the old left).
            const std::uint64_t current = state_->lookup(ev.from);
            return current != ev.login && current != 0;
        }
    }
    return false;
}

void Hub::deliver(Event& ev, Participant* origin) {
    switch (ev.type) {
        case EventType::message: {
            // Members who joined before the message (older ones have it in their history).
            if (const auto it = rooms_.find(ev.room); it != rooms_.end()) {
                if (!it->second.seen.add(ev.seq)) {  // resent after a loss already
                    ++stats_->repeats_skipped;
                    return;
                }
                const std::string_view cid = std::exchange(ev.cid, {});
                const bool has_cid = std::exchange(ev.has_cid, false);
                const std::uint64_t order = ev.order != 0 ? ev.order : ev.id;
                fan_out(it->second.members, ev, [&](const Participant& s) {
                    if (&s == origin) return false;
                    const auto mark = s.joined_at(ev.room);
                    return mark && *mark < order;
                });
                ev.cid = cid;
                ev.has_cid = has_cid;
            }
            // The sender's own copy (with cid), encoded separately. It may have left meanwhile
            // (a delivery above cannot end its connection synchronously, but be safe).
            if (origin != nullptr && origin->in_room(ev.room)) deliver_one(*origin, ev);
            return;
        }
        case EventType::dm:
            if (const auto it = users_.find(ev.to); it != users_.end())
                deliver_one(*it->second, ev);
            return;
        case EventType::online:
            // Past Limits::presence_max_users a login is announced to no one: who shares a room
            // with it learns of it from the room.
            if (ev.local) return;
            announced_[std::string(ev.from)] = ev.id;
            fan_out(sessions_, ev, [&](const Participant& s) {
                return &s != origin && s.login_id() < ev.id && s.name() != ev.from;
            });
            return;
        case EventType::offline: {
            // Only to the sessions that knew the name online: from an online this worker
            // delivered (they logged in before it), from their full welcome list (logged in
            // after it), or as a member of a room it was in (its members list or member_joined).
            bool announced = false;
            if (const auto it = announced_.find(ev.from);
                it != announced_.end() && it->second == ev.login) {
                announced = true;
                announced_.erase(it);
            }
            // The local members of its rooms who joined before the offline, sorted.
            std::vector<Participant*> co;
            if (ev.rooms_known)
                each_packed(ev.rooms, [&](std::string_view room) {
                    if (const auto it = rooms_.find(room); it != rooms_.end())
                        for (Participant* m : it->second.members)
                            if (const auto mark = m->joined_at(room); mark && *mark < ev.id)
                                co.push_back(m);
                });
            std::sort(co.begin(), co.end());
            co.erase(std::unique(co.begin(), co.end()), co.end());
            auto knew = [&](const Participant& s) {
                if (&s == origin || s.login_id() >= ev.id || s.name() == ev.from) return false;
                if (announced && s.login_id() < ev.login) return true;
                if (s.full_welcome() && s.login_id() > ev.login) return true;
                // Rooms unknown (a user of another host): a session whose welcome was partial
                // may have known it from a room, so it is told.
                if (!ev.rooms_known) return !s.full_welcome();
                return std::binary_search(co.begin(), co.end(), &s);
            };
            if (announced || !ev.rooms_known) {
                fan_out(sessions_, ev, knew);
                return;
            }
            // Not announced here and its rooms known: only those full sessions and the members
            // (not every session: past presence_max_users that would be O(users) per logout).
            for (Participant* s : full_sessions_)
                if (s->login_id() > ev.login) co.push_back(s);
            std::sort(co.begin(), co.end());
            co.erase(std::unique(co.begin(), co.end()), co.end());
            fan_out(co, ev, knew);
            return;
        }
        case EventType::typing:
            // Every member but the typist (a hint: no id, no history to order it against).
            if (const auto it = rooms_.find(ev.room); it != rooms_.end())
                fan_out(it->second.members, ev, [&](const Participant& s) { return &s != origin; });
            return;
        case EventType::revoked:
            // The session of that login (on this worker, if any) is told, then logged out (its
            // name is no longer registered: the logout publishes nothing).
            if (const auto it = users_.find(ev.from);
                it != users_.end() && it->second->login_id() == ev.login) {
                Participant* s = it->second;
                deliver_one(*s, ev);
                s->logout();
            }
            return;
        case EventType::joined:
        case EventType::left:
            // Every other member who joined before it (a later joiner's member list already
            // reflects it: it was taken in the same critical section as its own join's id).
            if (const auto it = rooms_.find(ev.room); it != rooms_.end())
                fan_out(it->second.members, ev, [&](const Participant& s) {
                    if (&s == origin || s.name() == ev.from) return false;
                    const auto mark = s.joined_at(ev.room);
                    return mark && *mark < ev.id;
                });
            return;
    }
}

template <class Fn>
void Hub::each_session(const std::vector<Participant*>& targets, Fn&& fn) {
    // A stack of in-flight target lists (deliveries nest: a delivery may publish): a session
    // destroyed meanwhile is nulled in every list by forget().
    const std::size_t d = depth_;
    if (in_flight_.size() <= d) in_flight_.emplace_back();
    in_flight_[d].assign(targets.begin(), targets.end());
    ++depth_;
    struct Pop {
        Hub* h;
        std::size_t d;
        ~Pop() {
            h->in_flight_[d].clear();
            h->depth_ = d;
        }
    } pop{this, d};
    for (std::size_t i = 0; i < in_flight_[d].size(); ++i)
        if (Participant* s = in_flight_[d][i]) fn(*s);
}

template <class Keep>
void Hub::fan_out(const std::vector<Participant*>& targets, Event& ev, Keep&& keep) {
    if (targets.empty()) return;
    ev.serial = ++serial_;
    bool any = false;
    each_session(targets, [&](Participant& s) {
        if (!keep(s)) return;
        any = true;
        ++stats_->deliveries;
        s.client().deliver(ev);
    });
    if (any) ++stats_->events;
}

void Hub::deliver_one(Participant& s, Event& ev) {
    ev.serial = ++serial_;
    ++stats_->deliveries;
    ++stats_->events;
    s.client().deliver(ev);
}

void Hub::forget(Participant* s) {
    for (std::size_t d = 0; d < depth_; ++d)
        std::replace(in_flight_[d].begin(), in_flight_[d].end(), s,
                     static_cast<Participant*>(nullptr));
}

void Hub::on_loss(const ring::Loss& l) {
    ++stats_->losses;
    stats_->lost_records += l.records;
    const std::uint64_t last_id = l.writer < last_id_.size() ? last_id_[l.writer] : 0;
    log::warn(
        "chat: worker {} fell behind worker {}'s log and missed {} records ({} bytes) after id "
        "{}: telling its {} clients, resending the room messages still in history",
        slot_, l.writer, l.records, l.bytes, last_id, sessions_.size());
    // Per local room: what its history still holds that this worker never delivered (resent),
    // and what is older than the history (gone: announced).
    struct Resend {
        RoomGap gap;
        std::vector<StoredMessage> messages;
    };
    std::unordered_map<std::string, Resend, StrHash, std::equal_to<>> plan;
    for (auto& [name, room] : rooms_) {
        Resend r;
        r.gap.room = name;
        // Only what follows the seqs delivered without a hole (the rest it has).
        const std::uint64_t floor = room.seen.floor();
        std::vector<StoredMessage> history = state_->history(name, floor);
        r.gap.seq = floor;
        if (!history.empty()) {
            // In seq order (between hosts the history comes in id order, which may differ).
            std::sort(history.begin(), history.end(),
                      [](const StoredMessage& a, const StoredMessage& b) { return a.seq < b.seq; });
            const std::uint64_t first = history.front().seq, newest = history.back().seq;
            r.gap.seq = newest;
            if (first > floor + 1) {
                r.gap.missed = room.seen.missing(floor + 1, first - 1);
                if (r.gap.missed != 0) {
                    r.gap.missed_from = floor + 1;
                    r.gap.missed_to = first - 1;
                }
            }
            for (StoredMessage& m : history)
                if (!room.seen.has(m.seq)) r.messages.push_back(std::move(m));
            r.gap.resent = r.messages.size();
            room.seen.settle(newest);
            stats_->missed += r.gap.missed;
        }
        plan.emplace(name, std::move(r));
    }
    // The notice first, to every logged-in session (DMs and presence may be missing too) ...
    each_session(sessions_, [&](Participant& s) {
        Gap g;
        g.writer = l.writer;
        g.last_id = last_id;
        g.records = l.records;
        for (const std::string_view room : s.room_names())
            if (const auto it = plan.find(room); it != plan.end())
                g.rooms.push_back(it->second.gap);
        ++stats_->gap_notices;
        s.client().gap(g);
    });
    // ... then the messages, as live ones: to the members who joined before each.
    for (auto& [name, r] : plan) {
        for (const StoredMessage& m : r.messages) {
            const auto it = rooms_.find(name);
            if (it == rooms_.end()) break;  // everyone left meanwhile
            Event ev;
            ev.type = EventType::message;
            ev.id = m.id;
            ev.seq = m.seq;
            ev.order = m.order != m.id ? m.order : 0;
            ev.ts = m.ts;
            ev.room = name;
            ev.from = m.from;
            ev.text = m.text;
            ev.accepted_ns = now_ns();
            ++stats_->resent;
            fan_out(it->second.members, ev, [&](const Participant& s) {
                const auto mark = s.joined_at(ev.room);
                return mark && *mark < m.order;
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Participant

Participant::Participant(Hub& hub, Client& client) : hub_(hub), client_(client) {}

Participant::~Participant() {
    logout();
}

bool Participant::in_room(std::string_view room) const {
    return rooms_.find(room) != rooms_.end();
}

std::vector<std::string_view> Participant::room_names() const {
    std::vector<std::string_view> out;
    out.reserve(rooms_.size());
    for (const auto& kv : rooms_)
        out.emplace_back(kv.first);
    return out;
}

std::optional<std::uint64_t> Participant::joined_at(std::string_view room) const {
    const auto it = rooms_.find(room);
    if (it == rooms_.end()) return std::nullopt;
    return it->second;
}

Error Participant::admit() {
    return hub_.admit(bucket_, user_bucket_, strikes_);
}

Error Participant::login(std::string_view name, Welcome* out) {
    if (logged_in()) return Error::already_logged_in;
    if (!valid_name(name)) return Error::bad_name;
    std::uint64_t id = 0;
    std::uint32_t online = 0;
    const std::uint32_t max = hub_.limits().presence_max_users;
    switch (hub_.state().claim(name, hub_.slot(), &id, out ? &out->users : nullptr,
                               address_ ? &*address_ : nullptr, hub_.limits().max_names_per_address,
                               max, &online)) {
        case SharedState::Status::ok:
            break;
        case SharedState::Status::taken:
            return Error::name_taken;
        case SharedState::Status::address_full:
            hub_.count_refusal(Error::too_many_names);
            return Error::too_many_names;
        default:
            hub_.count_refusal(Error::server_full);
            return Error::server_full;
    }
    // Past presence_max_users online: a partial welcome, announced to no one host-wide.
    const bool global = max == 0 || online <= max;
    if (out) {
        out->count = online;
        out->partial = !global;
    }
    if (!global) hub_.count_presence_local();
    name_.assign(name);
    login_id_ = id;
    full_welcome_ = global;
    user_bucket_ = hub_.attach(*this);
    Event ev;
    ev.type = EventType::online;
    ev.id = id;
    ev.from = name_;
    ev.local = !global;
    hub_.publish(ev, this);
    return Error::none;
}

Error Participant::who(std::uint64_t after, std::uint32_t limit, Who* out) {
    if (!logged_in()) return Error::not_logged_in;
    const std::uint32_t max = hub_.limits().presence_max_users;
    if (max != 0 && (limit == 0 || limit > max)) limit = max;
    Who page;
    page.count = hub_.state().who(after, limit, page.users, &page.next);
    hub_.count_who();
    if (out) *out = std::move(page);
    return Error::none;
}

void Participant::logout() {
    if (!logged_in()) return;
    // The rooms go with the offline: their members are told (they knew this user from them).
    std::string rooms;
    for (const auto& [room, mark] : rooms_) {
        pack_name(rooms, room);
        hub_.remove_member(*this, room);
    }
    rooms_.clear();
    hub_.detach(*this);
    const std::string name = std::exchange(name_, std::string());
    const std::uint64_t login = std::exchange(login_id_, 0);
    full_welcome_ = true;
    user_bucket_ = nullptr;
    const std::uint64_t id = hub_.state().release(name, hub_.slot(), login);
    if (id == 0) return;  // evicted meanwhile (the master announced it)
    Event ev;
    ev.type = EventType::offline;
    ev.id = id;
    ev.login = login;
    ev.from = name;
    ev.rooms_known = true;
    ev.rooms = rooms;
    hub_.publish(ev, this);
}

Error Participant::join(std::string_view room, Joined* out, std::uint64_t since) {
    if (!logged_in()) return Error::not_logged_in;
    if (!valid_room(room)) return Error::bad_room;
    if (!hub_.may_join(*this, room)) return Error::too_many_rooms;
    std::uint64_t mark = 0;
    bool added = false;
    RoomMark seq;
    switch (hub_.state().join(room, name_, &mark, out ? &out->members : nullptr,
                              out ? &out->history : nullptr, &added, &seq)) {
        case SharedState::Status::ok:
            break;
        case SharedState::Status::full:
            hub_.count_refusal(Error::server_full);
            return Error::server_full;
        default:
            return Error::not_logged_in;  // our name was evicted
    }
    if (out) {
        out->seq = seq.seq;
        out->complete = seq.dropped_id <= since;
        // An id this state never gave (the client saw a server that has since restarted with
        // an empty state): the whole history, and no claim that it is all.
        // Between hosts (--redis) compare the clocks: the host bits of `since` are its host's.
        const std::uint32_t bits = hub_.state().options().host_bits;
        if ((since >> bits) > (mark >> bits)) {
            since = 0;
            out->complete = false;
        }
        if (since != 0) {
            // Between hosts (--redis) ids follow a Lamport clock: a message of another host may
            // arrive after the message `since` with a lower id. If this host still holds that
            // message, what arrived here after it (a higher seq) is kept too (on one host ids
            // and seqs grow together: the same as by id alone).
            std::uint64_t after_seq = ~std::uint64_t{0};
            for (const HistoryItem& m : out->history)
                if (m.id == since) after_seq = m.seq;
            std::erase_if(out->history, [&](const HistoryItem& m) {
                return m.id <= since && m.seq <= after_seq;
            });
        }
        // Then at most --chat-join-history-bytes of it, the newest: not all, if cut.
        if (hub_.bound_history(out->history)) out->complete = false;
    }
    if (rooms_.emplace(std::string(room), mark).second) hub_.add_member(*this, room, seq.seq);
    if (added) publish_membership(EventType::joined, mark, room);
    return Error::none;
}

void Participant::publish_membership(EventType type, std::uint64_t id, std::string_view room) {
    Event ev;
    ev.type = type;
    ev.id = id;
    ev.login = login_id_;
    ev.room = room;
    ev.from = name_;
    hub_.publish(ev, this);
}

Error Participant::leave(std::string_view room) {
    if (!logged_in()) return Error::not_logged_in;
    const auto mine = rooms_.find(room);
    if (mine == rooms_.end()) return Error::not_in_room;
    rooms_.erase(mine);
    hub_.remove_member(*this, room);
    std::uint64_t id = 0;
    if (hub_.state().leave(room, name_, &id) != SharedState::Status::ok)
        return Error::none;  // evicted meanwhile: the offline says it
    publish_membership(EventType::left, id, room);
    return Error::none;
}

Error Participant::say(std::string_view room, std::string_view text, std::string_view cid,
                       bool has_cid, Said* out) {
    if (!logged_in()) return Error::not_logged_in;
    if (json_escaped_size(text) > hub_.state().options().max_text) return Error::too_long;
    if (!in_room(room)) return Error::not_in_room;
    const std::int64_t ts = now_ms();
    std::uint64_t id = 0, seq = 0;
    if (hub_.state().post(room, name_, text, ts, &id, &seq) != SharedState::Status::ok) {
        // The registry no longer has us in the room (evicted): forget it locally too.
        leave(room);
        return Error::not_in_room;
    }
    if (out) *out = {id, seq, ts};
    Event ev;
    ev.type = EventType::message;
    ev.id = id;
    ev.seq = seq;
    ev.ts = ts;
    ev.room = room;
    ev.from = name_;
    ev.text = text;
    ev.cid = cid;
    ev.has_cid = has_cid;
    hub_.publish(ev, this);
    return Error::none;
}

Error Participant::dm(std::string_view to, std::string_view text, Said* out) {
    if (!logged_in()) return Error::not_logged_in;
    if (json_escaped_size(text) > hub_.state().options().max_text) return Error::too_long;
    if (!valid_name(to)) return Error::no_such_user;
    if (hub_.state().lookup(to) == 0) return Error::no_such_user;
    const std::uint64_t id = hub_.state().next_id();
    const std::int64_t ts = now_ms();
    if (out) *out = {id, 0, ts};
    Event ev;
    ev.type = EventType::dm;
    ev.id = id;
    ev.ts = ts;
    ev.from = name_;
    ev.to = to;
    ev.text = text;
    hub_.publish(ev, this);
    return Error::none;
}

Error Participant::typing(std::string_view room) {
    if (!logged_in()) return Error::not_logged_in;
    if (!in_room(room)) return Error::not_in_room;
    if (!hub_.may_type(typing_bucket_)) return Error::none;  // a hint: dropped silently
    Event ev;
    ev.type = EventType::typing;
    ev.room = room;
    ev.from = name_;
    hub_.publish(ev, this);
    return Error::none;
}

// ---------------------------------------------------------------------------------------------

void announce_offline(ring::Region& region, unsigned slot, const std::vector<Evicted>& evicted) {
    if (evicted.empty()) return;
    ring::Writer writer(region, slot);
    std::vector<std::byte> buf;
    std::string rooms;
    for (const Evicted& e : evicted) {
        Event ev;
        ev.type = EventType::offline;
        ev.id = e.id;
        ev.login = e.login_id;
        ev.from = e.name;
        rooms.clear();
        for (const std::string& r : e.rooms)
            pack_name(rooms, r);
        // Its rooms, unless too many for a record (then every partial session is told).
        ev.rooms_known = 8 + 8 + 4 + e.name.size() + 4 + rooms.size() <= writer.max_payload();
        if (ev.rooms_known) ev.rooms = rooms;
        const std::uint32_t type = record::encode(ev, buf);
        writer.publish(type, buf);
    }
}

}  // namespace steerchat::chat
