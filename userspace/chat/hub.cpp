#include <algorithm>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include "chat/chat.hpp"
#include "util/log.hpp"

namespace steerchat::chat {

namespace {

// ---------------------------------------------------------------------------------------------
// Ring records (little-endian host layout; every worker is the same binary on the same host):
//   u64 id, i64 ts, then length-prefixed (u32) strings:
//   message: room, from, text    dm: to, from, text    online/offline: name
//   (offline carries the login id it ends in the ts field)
enum RecordType : std::uint32_t {
    kMessage = 1,
    kDm = 2,
    kOnline = 3,
    kOffline = 4,
};

constexpr std::size_t kRecordOverhead = 8 + 8 + 3 * 4;

void put_u64(std::vector<std::byte>& out, std::uint64_t v) {
    const std::size_t at = out.size();
    out.resize(at + 8);
    std::memcpy(out.data() + at, &v, 8);
}
void put_str(std::vector<std::byte>& out, std::string_view s) {
    const auto n = static_cast<std::uint32_t>(s.size());
    const std::size_t at = out.size();
    out.resize(at + 4 + s.size());
    std::memcpy(out.data() + at, &n, 4);
    if (!s.empty()) std::memcpy(out.data() + at + 4, s.data(), s.size());
}

void encode(std::vector<std::byte>& out, std::uint64_t id, std::int64_t ts,
            std::initializer_list<std::string_view> strs) {
    out.clear();
    put_u64(out, id);
    put_u64(out, static_cast<std::uint64_t>(ts));
    for (std::string_view s : strs)
        put_str(out, s);
}

struct Reader {
    std::span<const std::byte> p;
    bool ok = true;
    std::uint64_t u64() {
        std::uint64_t v = 0;
        if (p.size() < 8) {
            ok = false;
            return 0;
        }
        std::memcpy(&v, p.data(), 8);
        p = p.subspan(8);
        return v;
    }
    std::string_view str() {
        std::uint32_t n = 0;
        if (p.size() < 4) {
            ok = false;
            return {};
        }
        std::memcpy(&n, p.data(), 4);
        if (p.size() - 4 < n) {
            ok = false;
            return {};
        }
        std::string_view s(reinterpret_cast<const char*>(p.data() + 4), n);
        p = p.subspan(4 + n);
        return s;
    }
};

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// Code points of valid UTF-8 without control characters (C0, DEL, C1); -1 if invalid.
long count_text(std::string_view s) noexcept {
    long n = 0;
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const auto* end = p + s.size();
    while (p < end) {
        const unsigned c = *p;
        std::uint32_t cp;
        int len;
        if (c < 0x80) {
            cp = c;
            len = 1;
        } else if ((c & 0xE0) == 0xC0) {
            cp = c & 0x1F;
            len = 2;
        } else if ((c & 0xF0) == 0xE0) {
            cp = c & 0x0F;
            len = 3;
        } else if ((c & 0xF8) == 0xF0) {
            cp = c & 0x07;
            len = 4;
        } else {
            return -1;
        }
        if (end - p < len) return -1;
        for (int i = 1; i < len; ++i) {
            if ((p[i] & 0xC0) != 0x80) return -1;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        // Overlong, surrogate, out of range.
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
            return -1;
        if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F)) return -1;
        p += len;
        ++n;
    }
    return n;
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
    }
    return "internal error";
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
         ring::WriterOptions writer_options)
    : slot_(slot),
      state_(&state),
      rate_(RateLimit::per_second(limits_.rate, limits_.burst)),
      writer_(region, slot, writer_options) {
    const std::size_t need =
        kRecordOverhead + kMaxRoomBytes + kMaxNameBytes + state.options().max_text;
    if (writer_.max_payload() < need)
        throw std::invalid_argument("chat: ring records carry at most " +
                                    std::to_string(writer_.max_payload()) + " bytes, need " +
                                    std::to_string(need) + " (make the ring logs larger)");
    reader_ = std::make_unique<ring::Reader>(region, slot);
    feed_ = std::make_unique<ring::AsioReader<detail::RecordSink, detail::LossSink>>(
        std::move(ex), *reader_, detail::RecordSink{this}, detail::LossSink{this});
    feed_->start();
}

Hub::~Hub() {
    stop();
}

void Hub::stop() {
    if (feed_) feed_->stop();
}

void Hub::set_limits(const Limits& limits) {
    limits_ = limits;
    rate_ = RateLimit::per_second(limits.rate, limits.burst);
}

TokenBucket* Hub::acquire_bucket(const std::string& name) {
    return &buckets_.try_emplace(name).first->second;
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

void Hub::publish(std::uint32_t type, const std::vector<std::byte>& payload) {
    writer_.publish(type, payload);
    ++stats_.records_out;
}

template <class Keep>
void Hub::deliver(const std::vector<Session*>& targets, Event& ev, Keep&& keep) {
    if (targets.empty()) return;
    ev.serial = ++serial_;
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
    bool any = false;
    // Index, not iterators: a nested delivery may grow in_flight_, forget() may null entries.
    for (std::size_t i = 0; i < in_flight_[d].size(); ++i) {
        Session* s = in_flight_[d][i];
        if (s == nullptr || !keep(*s)) continue;
        any = true;
        ++stats_.deliveries;
        s->client_.deliver(ev);
    }
    if (any) ++stats_.events;
}

void Hub::forget(Session* s) {
    for (std::size_t d = 0; d < depth_; ++d)
        std::replace(in_flight_[d].begin(), in_flight_[d].end(), s, static_cast<Session*>(nullptr));
}

void Hub::deliver_online(std::string_view name, std::uint64_t id, const Session* except) {
    announced_[std::string(name)] = id;
    Event ev;
    ev.type = EventType::online;
    ev.id = id;
    ev.from = name;
    deliver(sessions_, ev,
            [&](const Session& s) { return &s != except && s.login_id_ < id && s.name_ != name; });
}

void Hub::deliver_offline(std::string_view name, std::uint64_t id, std::uint64_t login,
                          const Session* except) {
    bool announced = false;
    if (const auto it = announced_.find(name); it != announced_.end() && it->second == login) {
        announced = true;
        announced_.erase(it);
    }
    Event ev;
    ev.type = EventType::offline;
    ev.id = id;
    ev.from = name;
    deliver(sessions_, ev, [&](const Session& s) {
        return &s != except && s.login_id_ < id && s.name_ != name &&
               (announced || s.login_id_ > login);
    });
}

void Hub::on_record(const ring::Record& r) {
    ++stats_.records_in;
    Reader in{r.payload};
    Event ev;
    ev.id = in.u64();
    ev.ts = static_cast<std::int64_t>(in.u64());
    switch (r.type) {
        case kMessage: {
            ev.type = EventType::message;
            ev.room = in.str();
            ev.from = in.str();
            ev.text = in.str();
            if (!in.ok) break;
            const auto it = rooms_.find(ev.room);
            if (it == rooms_.end()) return;
            const std::uint64_t id = ev.id;
            const std::string_view room = ev.room;
            deliver(it->second, ev, [&](const Session& s) {
                const auto m = s.rooms_.find(room);
                return m != s.rooms_.end() && m->second < id;
            });
            return;
        }
        case kDm: {
            ev.type = EventType::dm;
            ev.to = in.str();
            ev.from = in.str();
            ev.text = in.str();
            if (!in.ok) break;
            const auto it = users_.find(ev.to);
            if (it == users_.end()) return;
            ev.serial = ++serial_;
            ++stats_.deliveries;
            ++stats_.events;
            it->second->client_.deliver(ev);
            return;
        }
        case kOnline:
        case kOffline: {
            const std::string_view name = in.str();
            if (!in.ok) break;
            // Logs are not ordered among themselves: drop what a newer login of the name (read
            // from the registry) has overtaken. A login that has already ended (the name is free)
            // is still announced: its offline follows in the same log, so the pair stays matched
            // and a quick login/logout is seen by every worker.
            const std::uint64_t current = state_->lookup(name);
            const bool online = r.type == kOnline;
            if (online ? (current != ev.id && current != 0) : current > ev.id) {
                ++stats_.stale_presence;
                return;
            }
            if (online)
                deliver_online(name, ev.id, nullptr);
            else
                deliver_offline(name, ev.id, static_cast<std::uint64_t>(ev.ts), nullptr);
            return;
        }
        default:
            break;
    }
    ++stats_.bad_records;
    log::line("chat: worker {}: undecodable ring record type {} ({} bytes) from worker {}", slot_,
              r.type, r.payload.size(), r.writer);
}

void Hub::on_loss(const ring::Loss& l) {
    ++stats_.losses;
    stats_.lost_records += l.records;
    log::line(
        "chat: worker {} fell behind worker {}'s log and missed {} records ({} bytes): some "
        "messages, DMs or presence changes were not delivered to its clients",
        slot_, l.writer, l.records, l.bytes);
}

// ---------------------------------------------------------------------------------------------
// Session

Session::Session(Hub& hub, Client& client) : hub_(hub), client_(client) {}

Session::~Session() {
    logout();
    hub_.forget(this);
}

bool Session::in_room(std::string_view room) const {
    return rooms_.find(room) != rooms_.end();
}

Error Session::login(std::string_view name, Welcome* out) {
    if (logged_in()) return Error::already_logged_in;
    if (!valid_name(name)) return Error::bad_name;
    std::uint64_t id = 0;
    switch (hub_.state_->claim(name, hub_.slot_, &id, out ? &out->users : nullptr)) {
        case SharedState::Status::ok:
            break;
        case SharedState::Status::taken:
            return Error::name_taken;
        default:
            return Error::server_full;
    }
    name_.assign(name);
    login_id_ = id;
    user_bucket_ = hub_.acquire_bucket(name_);
    hub_.users_.emplace(name_, this);
    hub_.sessions_.push_back(this);
    hub_.stats_.sessions = hub_.users_.size();
    encode(hub_.scratch_, id, 0, {name_});
    hub_.publish(kOnline, hub_.scratch_);
    hub_.deliver_online(name_, id, this);
    return Error::none;
}

void Session::logout() {
    if (!logged_in()) return;
    for (const auto& [room, mark] : rooms_) {
        const auto it = hub_.rooms_.find(room);
        if (it == hub_.rooms_.end()) continue;
        std::erase(it->second, this);
        if (it->second.empty()) hub_.rooms_.erase(it);
    }
    rooms_.clear();
    hub_.users_.erase(name_);
    std::erase(hub_.sessions_, this);
    hub_.stats_.sessions = hub_.users_.size();
    hub_.forget(this);
    const std::string name = std::exchange(name_, std::string());
    const std::uint64_t login = std::exchange(login_id_, 0);
    user_bucket_ = nullptr;
    hub_.release_bucket(name, TokenBucket::Clock::now());
    const std::uint64_t id = hub_.state_->release(name, hub_.slot_, login);
    if (id == 0) return;  // evicted meanwhile (the master announced it)
    encode(hub_.scratch_, id, static_cast<std::int64_t>(login), {name});
    hub_.publish(kOffline, hub_.scratch_);
    hub_.deliver_offline(name, id, login, this);
}

Error Session::admit() {
    const RateLimit& r = hub_.rate_;
    if (r.unlimited()) return Error::none;
    const auto now = TokenBucket::Clock::now();
    if (!bucket_.ready(r, now) || (user_bucket_ && !user_bucket_->ready(r, now))) {
        ++hub_.stats_.rate_limited;
        if (++strikes_ == hub_.limits_.close_after) ++hub_.stats_.rate_closes;
        return Error::rate_limited;
    }
    strikes_ = 0;
    bucket_.take(r, now);
    if (user_bucket_) user_bucket_->take(r, now);
    return Error::none;
}

Error Session::join(std::string_view room, Joined* out) {
    if (!logged_in()) return Error::not_logged_in;
    if (!valid_room(room)) return Error::bad_room;
    if (hub_.limits_.max_rooms != 0 && rooms_.size() >= hub_.limits_.max_rooms && !in_room(room)) {
        ++hub_.stats_.room_limited;
        return Error::too_many_rooms;
    }
    std::uint64_t mark = 0;
    switch (hub_.state_->join(room, name_, &mark, out ? &out->members : nullptr,
                              out ? &out->history : nullptr)) {
        case SharedState::Status::ok:
            break;
        case SharedState::Status::full:
            return Error::server_full;
        default:
            return Error::not_logged_in;  // our name was evicted
    }
    if (rooms_.emplace(std::string(room), mark).second) {
        auto it = hub_.rooms_.find(room);
        if (it == hub_.rooms_.end())
            it = hub_.rooms_.emplace(std::string(room), std::vector<Session*>{}).first;
        it->second.push_back(this);
    }
    return Error::none;
}

Error Session::leave(std::string_view room) {
    if (!logged_in()) return Error::not_logged_in;
    const auto mine = rooms_.find(room);
    if (mine == rooms_.end()) return Error::not_in_room;
    rooms_.erase(mine);
    const auto it = hub_.rooms_.find(room);
    if (it != hub_.rooms_.end()) {
        std::erase(it->second, this);
        if (it->second.empty()) hub_.rooms_.erase(it);
    }
    hub_.state_->leave(room, name_);
    return Error::none;
}

Error Session::say(std::string_view room, std::string_view text, std::string_view cid, bool has_cid,
                   Said* out) {
    if (!logged_in()) return Error::not_logged_in;
    if (text.size() > hub_.state_->options().max_text) return Error::too_long;
    if (!in_room(room)) return Error::not_in_room;
    const std::int64_t ts = now_ms();
    std::uint64_t id = 0;
    if (hub_.state_->post(room, name_, text, ts, &id) != SharedState::Status::ok) {
        // The registry no longer has us in the room (evicted): forget it locally too.
        leave(room);
        return Error::not_in_room;
    }
    if (out) *out = {id, ts};
    encode(hub_.scratch_, id, ts, {room, name_, text});
    hub_.publish(kMessage, hub_.scratch_);

    Event ev;
    ev.type = EventType::message;
    ev.id = id;
    ev.ts = ts;
    ev.from = name_;
    ev.text = text;
    ev.room = room;
    const auto it = hub_.rooms_.find(room);
    if (it != hub_.rooms_.end()) {
        hub_.deliver(it->second, ev, [&](const Session& s) {
            if (&s == this) return false;
            const auto m = s.rooms_.find(room);
            return m != s.rooms_.end() && m->second < id;
        });
    }
    // The sender's own copy (with cid), encoded separately. It may have logged out meanwhile
    // (a delivery above cannot end *this* session's connection synchronously, but be safe).
    if (!in_room(room)) return Error::none;
    const std::string name = name_;
    ev.from = name;
    ev.cid = cid;
    ev.has_cid = has_cid;
    ev.serial = ++hub_.serial_;
    ++hub_.stats_.deliveries;
    ++hub_.stats_.events;
    client_.deliver(ev);
    return Error::none;
}

Error Session::dm(std::string_view to, std::string_view text, Said* out) {
    if (!logged_in()) return Error::not_logged_in;
    if (text.size() > hub_.state_->options().max_text) return Error::too_long;
    if (!valid_name(to)) return Error::no_such_user;
    unsigned slot = 0;
    if (hub_.state_->lookup(to, &slot) == 0) return Error::no_such_user;
    const std::uint64_t id = hub_.state_->next_id();
    const std::int64_t ts = now_ms();
    if (out) *out = {id, ts};
    if (slot != hub_.slot_) {
        encode(hub_.scratch_, id, ts, {to, name_, text});
        hub_.publish(kDm, hub_.scratch_);
        return Error::none;
    }
    const auto it = hub_.users_.find(to);
    if (it == hub_.users_.end()) return Error::none;  // logged out meanwhile
    Event ev;
    ev.type = EventType::dm;
    ev.id = id;
    ev.ts = ts;
    ev.from = name_;
    ev.to = to;
    ev.text = text;
    ev.serial = ++hub_.serial_;
    ++hub_.stats_.deliveries;
    ++hub_.stats_.events;
    it->second->client_.deliver(ev);
    return Error::none;
}

// ---------------------------------------------------------------------------------------------

void announce_offline(ring::Region& region, unsigned slot, const std::vector<Evicted>& evicted) {
    if (evicted.empty()) return;
    ring::Writer writer(region, slot);
    std::vector<std::byte> buf;
    for (const Evicted& e : evicted) {
        encode(buf, e.id, static_cast<std::int64_t>(e.login_id), {e.name});
        writer.publish(kOffline, buf);
    }
}

}  // namespace steerchat::chat
