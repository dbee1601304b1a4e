#include "bridge/bridge.hpp"

#include <hiredis/hiredis.h>
#include <signal.h>
#include <sys/time.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>

#include "chat/chat.hpp"
#include "chat/event.hpp"
#include "chat/record.hpp"
#include "util/log.hpp"

namespace steerchat::bridge {

// ---------------------------------------------------------------------------------------------
// URL

namespace {

unsigned parse_uint(std::string_view s, unsigned max, const char* what, const std::string& url) {
    unsigned v = 0;
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size() || v > max)
        throw std::invalid_argument(
            fmt::format("--redis {}: {} '{}' is not a number from 0 to {}", url, what, s, max));
    return v;
}

}  // namespace

RedisUrl parse_url(const std::string& url) {
    RedisUrl out;
    std::string_view u = url;
    if (u.starts_with("rediss://"))
        throw std::invalid_argument(fmt::format(
            "--redis {}: TLS to Redis (rediss://) is not available: this build uses Debian 12's "
            "hiredis 0.14, which has no TLS support; use redis:// on a trusted network, a Unix "
            "socket (unix:///path), or a TLS tunnel (stunnel, spiped) to Redis",
            url));
    if (u.starts_with("unix://")) {
        u.remove_prefix(7);
        if (const auto q = u.find("?db="); q != std::string_view::npos) {
            out.db = parse_uint(u.substr(q + 4), 1000000, "database", url);
            u = u.substr(0, q);
        }
        if (!u.starts_with("/"))
            throw std::invalid_argument(
                fmt::format("--redis {}: a Unix socket URL is unix:///absolute/path", url));
        out.path = std::string(u);
        return out;
    }
    if (!u.starts_with("redis://"))
        throw std::invalid_argument(fmt::format(
            "--redis {}: expected redis://[:password@]host[:port][/db] or unix:///path", url));
    u.remove_prefix(8);
    if (const auto at = u.rfind('@'); at != std::string_view::npos) {
        const std::string_view cred = u.substr(0, at);
        u.remove_prefix(at + 1);
        const auto colon = cred.find(':');
        if (colon == std::string_view::npos) {
            out.password = std::string(cred);
        } else {
            out.user = std::string(cred.substr(0, colon));
            out.password = std::string(cred.substr(colon + 1));
        }
    }
    if (const auto slash = u.find('/'); slash != std::string_view::npos) {
        if (slash + 1 < u.size())
            out.db = parse_uint(u.substr(slash + 1), 1000000, "database", url);
        u = u.substr(0, slash);
    }
    if (u.starts_with("[")) {
        const auto close = u.find(']');
        if (close == std::string_view::npos)
            throw std::invalid_argument(fmt::format("--redis {}: unclosed [ in the host", url));
        out.host = std::string(u.substr(1, close - 1));
        u.remove_prefix(close + 1);
        if (u.starts_with(":"))
            out.port = static_cast<std::uint16_t>(parse_uint(u.substr(1), 65535, "port", url));
    } else if (const auto colon = u.rfind(':'); colon != std::string_view::npos) {
        out.host = std::string(u.substr(0, colon));
        out.port = static_cast<std::uint16_t>(parse_uint(u.substr(colon + 1), 65535, "port", url));
    } else {
        out.host = std::string(u);
    }
    if (out.host.empty()) throw std::invalid_argument(fmt::format("--redis {}: no host", url));
    if (out.port == 0) throw std::invalid_argument(fmt::format("--redis {}: port 0", url));
    return out;
}

// ---------------------------------------------------------------------------------------------
// The bridge

namespace {

std::atomic<bool> g_stop{false};

void on_term(int) {
    g_stop.store(true);
}

using Clock = std::chrono::steady_clock;

std::int64_t wall_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

struct ContextFree {
    void operator()(redisContext* c) const { redisFree(c); }
};
struct ReplyFree {
    void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Context = std::unique_ptr<redisContext, ContextFree>;
using Reply = std::unique_ptr<redisReply, ReplyFree>;

// The link failed (connection lost, protocol error, an unexpected reply): reconnect.
struct LinkError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

std::string_view kind_name(chat::EventType t) {
    switch (t) {
        case chat::EventType::message:
            return "message";
        case chat::EventType::dm:
            return "dm";
        case chat::EventType::online:
            return "online";
        case chat::EventType::offline:
            return "offline";
        case chat::EventType::typing:
            return "typing";
        case chat::EventType::joined:
            return "joined";
        case chat::EventType::left:
            return "left";
        case chat::EventType::revoked:
            return "revoked";
    }
    return "?";
}

std::optional<chat::EventType> kind_of(std::string_view s) {
    using chat::EventType;
    for (EventType t : {EventType::message, EventType::dm, EventType::online, EventType::offline,
                        EventType::typing, EventType::joined, EventType::left})
        if (kind_name(t) == s) return t;
    return std::nullopt;
}

std::uint64_t to_u64(std::string_view s) {
    std::uint64_t v = 0;
    std::from_chars(s.data(), s.data() + s.size(), v);
    return v;
}

// One event to send: the stream entry's fields, made from a ring record.
// The name claim in Redis that goes with an entry (an online claims, an offline releases).
enum class NameOp : std::uint8_t { none, claim, release };

struct Outgoing {
    Outgoing() = default;
    explicit Outgoing(std::vector<std::string> f, NameOp o = NameOp::none, std::string n = {},
                      std::uint64_t l = 0)
        : fields(std::move(f)), op(o), name(std::move(n)), login(l) {}
    std::vector<std::string> fields;  // name, value, name, value, ...
    NameOp op = NameOp::none;
    std::string name;
    std::uint64_t login = 0;
};

// KEYS[1] the name's key; ARGV: this host, "host:epoch:login", the lease key prefix. The name is
// this host's unless another host holds it under an epoch whose lease is still that epoch.
constexpr const char* kClaimScript = R"(
local v = redis.call('GET', KEYS[1])
if v then
  local h, e = string.match(v, '^(%d+):(%d+):')
  if h and h ~= ARGV[1] and redis.call('GET', ARGV[3] .. h) == e then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
)";
// KEYS[1] the name's key; ARGV: this host, the login. Deleted if that login of this host holds it.
constexpr const char* kReleaseScript = R"(
local v = redis.call('GET', KEYS[1])
if v then
  local h, l = string.match(v, '^(%d+):%d+:(%d+)$')
  if h == ARGV[1] and l == ARGV[2] then redis.call('DEL', KEYS[1]) return 1 end
end
return 0
)";

// A remote user registered here under the bridge's slot.
struct RemoteUser {
    unsigned host = 0;
    std::uint64_t remote_login = 0;
    std::uint64_t local_login = 0;
    bool resync = false;  // its host rejoined: kept only if its snapshot lists it
};

struct RemoteHost {
    std::uint64_t epoch = 0;
    std::string key;
    std::string cursor = "0";
    bool dead = false;
    std::uint64_t lag_ms = 0;
    std::uint64_t entries = 0;
};

class Bridge {
  public:
    Bridge(const Config& cfg, ring::Region& region, unsigned slot, chat::SharedState& state,
           metrics::BridgeBlock& stats)
        : stats_(stats),
          cfg_(cfg),
          url_(parse_url(cfg.url)),
          slot_(slot),
          state_(state),
          writer_(region, slot),
          reader_(region, slot) {}

    int run() {
        // A bridge that starts (first or respawned) knows no other host yet: names it had
        // registered for them (a previous bridge's) go offline here; it relearns them from their
        // streams.
        for (const chat::Evicted& e : state_.evict_slot(slot_))
            publish_offline(e.name, e.id, e.login_id);
        log::info("bridge: host {} to {} (lease {} ms, buffer {} events)", cfg_.host_id,
                  describe_url(), cfg_.lease_ms, cfg_.buffer);
        stats_.enabled = 1;
        while (!g_stop.load()) {
            drain_ring();
            publish_stats();
            if (!ctx_) {
                const auto now = Clock::now();
                if (now >= next_connect_) {
                    next_connect_ = now + std::chrono::milliseconds(250);
                    try {
                        connect();
                    } catch (const LinkError& e) {
                        ctx_.reset();
                        note_down(e.what());
                    }
                }
                if (!ctx_) {
                    reader_.wait(std::chrono::milliseconds(50));
                    continue;
                }
            }
            try {
                turn();
            } catch (const LinkError& e) {
                ctx_.reset();
                note_down(e.what());
            }
        }
        shutdown();
        return 0;
    }

  private:
    std::string describe_url() const {
        if (!url_.path.empty()) return "unix:" + url_.path;
        return fmt::format("{}:{}", url_.host, url_.port);
    }

    void publish_stats() {
        stats_.buffered = out_.size();
        std::uint64_t n = 0;
        for (const auto& [h, rh] : remotes_) {
            if (rh.dead || n == metrics::kMaxRemoteHosts) continue;
            stats_.remote_host[n] = h;
            stats_.remote_lag_ms[n] = rh.lag_ms;
            ++n;
        }
        stats_.remotes = n;
    }

    void note_down(const std::string& why) {
        if (link_up_) {
            log::error(
                "bridge: lost the link to Redis at {}: {}; local chat goes on, events for other "
                "hosts are kept (up to {}) until it is back",
                describe_url(), why, cfg_.buffer);
        } else if (!down_logged_) {
            log::error("bridge: cannot reach Redis at {}: {}; retrying every 0.25 s",
                       describe_url(), why);
        }
        down_logged_ = true;
        link_up_ = false;
        stats_.link_up = 0;
    }

    // ---- Redis commands

    void append(const std::vector<std::string>& args) {
        std::vector<const char*> argv;
        std::vector<std::size_t> lens;
        argv.reserve(args.size());
        lens.reserve(args.size());
        for (const auto& a : args) {
            argv.push_back(a.data());
            lens.push_back(a.size());
        }
        if (redisAppendCommandArgv(ctx_.get(), static_cast<int>(argv.size()), argv.data(),
                                   lens.data()) != REDIS_OK)
            throw LinkError(ctx_->errstr);
    }

    Reply get_reply() {
        void* r = nullptr;
        if (redisGetReply(ctx_.get(), &r) != REDIS_OK || r == nullptr)
            throw LinkError(ctx_->err ? std::string(ctx_->errstr) : "no reply");
        return Reply(static_cast<redisReply*>(r));
    }

    Reply command(const std::vector<std::string>& args) {
        append(args);
        Reply r = get_reply();
        if (r->type == REDIS_REPLY_ERROR)
            throw LinkError(fmt::format("{}: {}", args[0], std::string_view(r->str, r->len)));
        return r;
    }

    std::string key(std::string_view what) const { return fmt::format("{}:{}", cfg_.prefix, what); }
    std::string lease_key(unsigned host) const {
        return fmt::format("{}:lease:{}", cfg_.prefix, host);
    }

    void connect() {
        timeval tv{1, 0};
        Context c(url_.path.empty() ? redisConnectWithTimeout(url_.host.c_str(), url_.port, tv)
                                    : redisConnectUnixWithTimeout(url_.path.c_str(), tv));
        if (!c) throw LinkError("out of memory");
        if (c->err) throw LinkError(c->errstr);
        // Replies wait at most the XREAD block time plus this.
        timeval rtv{1, 0};
        redisSetTimeout(c.get(), rtv);
        ctx_ = std::move(c);
        if (!url_.password.empty()) {
            if (url_.user.empty())
                command({"AUTH", url_.password});
            else
                command({"AUTH", url_.user, url_.password});
        }
        if (url_.db != 0) command({"SELECT", std::to_string(url_.db)});
        // Still the holder of our lease (a short outage): go on with the same stream. Otherwise
        // the others have dropped this host: a new epoch, announced with a snapshot first.
        bool keep = false;
        if (epoch_ != 0) {
            Reply r = command({"GET", lease_key(cfg_.host_id)});
            keep =
                r->type == REDIS_REPLY_STRING && to_u64(std::string_view(r->str, r->len)) == epoch_;
        }
        if (!keep) new_epoch();
        renew_lease();
        next_lease_ = Clock::now() + std::chrono::milliseconds(cfg_.lease_ms / 4);
        check_hosts();
        next_hosts_ = Clock::now() + std::chrono::milliseconds(cfg_.lease_ms / 4);
        link_up_ = true;
        stats_.link_up = 1;
        down_logged_ = false;
        ++stats_.links;
        log::info("bridge: linked to Redis at {} (host {}, epoch {}, stream {}{})", describe_url(),
                  cfg_.host_id, epoch_, stream_, keep ? ", resuming" : "");
    }

    void new_epoch() {
        // Unique per host without asking Redis (a Redis restarted without its data would hand
        // out an old number again): the wall clock in ms, past the previous epoch.
        epoch_ = std::max<std::uint64_t>(epoch_ + 1, static_cast<std::uint64_t>(wall_ms()));
        ++stats_.epochs;
        stream_ = fmt::format("{}:stream:{}:{}", cfg_.prefix, cfg_.host_id, epoch_);
        next_entry_ = 1;
        command({"HSET", key("hosts"), std::to_string(cfg_.host_id), std::to_string(epoch_)});
        // The queue may hold events of the old epoch: the snapshot says what is true now, and
        // the queued events follow it (an online or join already announced is a no-op there).
        std::deque<Outgoing> queued;
        queued.swap(out_);
        snapshot();
        // The end of the snapshot: a reader that knew an older epoch of this host drops the
        // users the snapshot did not list (so a rejoin after a short loss does not flap them).
        out_.emplace_back(std::vector<std::string>{"t", "synced"});
        for (auto& o : queued)
            out_.push_back(std::move(o));
    }

    // This host's users and rooms at the start of a stream (a new epoch).
    void snapshot() {
        for (const chat::UserView& u : state_.users_except(slot_)) {
            out_.emplace_back(std::vector<std::string>{"t", "online", "login",
                                                       std::to_string(u.login_id), "from", u.name},
                              NameOp::claim, u.name, u.login_id);
            for (const auto& room : u.rooms)
                out_.emplace_back(std::vector<std::string>{"t", "joined", "login",
                                                           std::to_string(u.login_id), "from",
                                                           u.name, "room", room});
        }
    }

    void renew_lease() {
        command({"SET", lease_key(cfg_.host_id), std::to_string(epoch_), "PX",
                 std::to_string(cfg_.lease_ms)});
    }

    // ---- One turn with the link up

    void turn() {
        const auto now = Clock::now();
        if (now >= next_lease_) {
            // Our lease: still ours? (expired meanwhile: the others dropped us; a new epoch.)
            Reply r = command({"GET", lease_key(cfg_.host_id)});
            if (!(r->type == REDIS_REPLY_STRING &&
                  to_u64(std::string_view(r->str, r->len)) == epoch_)) {
                log::warn(
                    "bridge: this host's lease (epoch {}) had expired; rejoining with a "
                    "new epoch",
                    epoch_);
                new_epoch();
            }
            renew_lease();
            next_lease_ = now + std::chrono::milliseconds(cfg_.lease_ms / 4);
        }
        if (now >= next_hosts_) {
            check_hosts();
            next_hosts_ = now + std::chrono::milliseconds(cfg_.lease_ms / 4);
        }
        send_queued();
        read_streams(out_.empty() ? 20 : -1);
    }

    void send_queued() {
        for (int round = 0; round < 8 && !out_.empty(); ++round) {
            // A name claim or release goes to Redis before its entry: a login that lost its
            // name to another host is revoked here and its entries are never sent.
            if (out_.front().op != NameOp::none && !name_op(out_.front())) continue;
            // Pipelined: up to 256 XADDs (up to the next entry with a name operation), then
            // their replies.
            std::size_t n = 0;
            for (auto it = out_.begin(); it != out_.end() && n < 256; ++it, ++n) {
                if (n != 0 && it->op != NameOp::none) break;
                std::vector<std::string> args{"XADD",
                                              stream_,
                                              "MAXLEN",
                                              "~",
                                              std::to_string(cfg_.stream_len),
                                              fmt::format("1-{}", next_entry_ + n)};
                args.insert(args.end(), it->fields.begin(), it->fields.end());
                append(args);
            }
            for (std::size_t i = 0; i < n; ++i) {
                Reply r = get_reply();
                // An id at or below the stream's top: Redis took this entry before the link
                // broke (its reply was lost). Taken once, not twice.
                if (r->type == REDIS_REPLY_ERROR &&
                    std::string_view(r->str, r->len).find("equal or smaller") ==
                        std::string_view::npos)
                    throw LinkError(fmt::format("XADD: {}", std::string_view(r->str, r->len)));
                out_.pop_front();
                ++next_entry_;
                ++stats_.sent;
            }
        }
    }

    // The claim (or release) of `o`'s name in Redis. false: the claim was lost, the login is
    // revoked and its entries are gone from the queue.
    bool name_op(const Outgoing& o) {
        if (o.op == NameOp::release) {
            command({"EVAL", kReleaseScript, "1", key("name:" + o.name),
                     std::to_string(cfg_.host_id), std::to_string(o.login)});
            return true;
        }
        Reply r =
            command({"EVAL", kClaimScript, "1", key("name:" + o.name), std::to_string(cfg_.host_id),
                     fmt::format("{}:{}:{}", cfg_.host_id, epoch_, o.login), key("lease:")});
        if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) return true;
        revoke(o.name, o.login);
        return false;
    }

    // A local login lost its name to another host: offline for this host, the session told and
    // logged out (the revoked record), its queued events dropped; the other host's user, if
    // already announced, takes the name here.
    void revoke(const std::string& name, std::uint64_t login) {
        ++stats_.name_conflicts;
        unsigned owner = 0;
        if (state_.lookup(name, &owner) == login && owner != slot_) {
            if (const std::uint64_t id = state_.release(name, owner, login); id != 0)
                publish_offline(name, id, login);
            chat::Event ev;
            ev.type = chat::EventType::revoked;
            ev.login = login;
            ev.from = name;
            publish(ev);
        }
        std::size_t dropped = 0;
        for (auto it = out_.begin(); it != out_.end();) {
            bool mine = false;
            for (std::size_t i = 0; i + 1 < it->fields.size(); i += 2)
                if (it->fields[i] == "from" && it->fields[i + 1] == name) mine = true;
            if (mine) {
                it = out_.erase(it);
                ++dropped;
            } else {
                ++it;
            }
        }
        log::warn(
            "bridge: '{}' logged in on another host at the same time and won the name; "
            "the login here (id {}) was told name_taken ({} event(s) not sent)",
            name, login, dropped);
        if (const auto p = pending_.find(name); p != pending_.end()) {
            const auto [host, remote_login] = p->second;
            pending_.erase(p);
            register_remote(name, host, remote_login);
        }
    }

    // A user of another host into this host's registry, announced online here.
    bool register_remote(const std::string& name, unsigned host, std::uint64_t login) {
        std::uint64_t local = 0;
        if (state_.claim(name, slot_, &local, nullptr) != chat::SharedState::Status::ok)
            return false;
        users_[name] = RemoteUser{host, login, local};
        chat::Event ev;
        ev.type = chat::EventType::online;
        ev.id = local;
        ev.from = name;
        publish(ev);
        return true;
    }

    void check_hosts() {
        Reply r = command({"HGETALL", key("hosts")});
        if (r->type != REDIS_REPLY_ARRAY) throw LinkError("HGETALL hosts: not an array");
        std::map<unsigned, std::uint64_t> seen;
        for (std::size_t i = 0; i + 1 < r->elements; i += 2) {
            const unsigned host = static_cast<unsigned>(
                to_u64(std::string_view(r->element[i]->str, r->element[i]->len)));
            const std::uint64_t epoch =
                to_u64(std::string_view(r->element[i + 1]->str, r->element[i + 1]->len));
            if (host != cfg_.host_id) seen[host] = epoch;
        }
        // Leases of every host listed.
        std::vector<unsigned> hosts;
        for (const auto& [h, e] : seen) {
            append({"GET", lease_key(h)});
            hosts.push_back(h);
        }
        std::map<unsigned, std::uint64_t> lease;
        for (unsigned h : hosts) {
            Reply l = get_reply();
            lease[h] = l->type == REDIS_REPLY_STRING ? to_u64(std::string_view(l->str, l->len)) : 0;
        }
        for (const auto& [h, epoch] : seen) {
            const bool alive = lease[h] == epoch;
            auto it = remotes_.find(h);
            if (it != remotes_.end() && it->second.epoch != epoch && !it->second.dead && alive) {
                // Came back (a new epoch: it lost its lease, or Redis lost its data) before we
                // saw its lease expire: its users stay until its snapshot says who is still
                // there ("synced").
                for (auto& [name, u] : users_)
                    if (u.host == h) u.resync = true;
                log::info("bridge: host {} rejoined (epoch {} -> {})", h, it->second.epoch, epoch);
                RemoteHost rh;
                rh.epoch = epoch;
                rh.key = fmt::format("{}:stream:{}:{}", cfg_.prefix, h, epoch);
                it->second = std::move(rh);
                continue;
            }
            if (it != remotes_.end() && it->second.epoch == epoch) {
                if (!alive && !it->second.dead) {
                    drop_host(h, fmt::format("its lease expired (no renewal within {} ms)",
                                             cfg_.lease_ms));
                    // Its stream is of no use to anyone now.
                    command({"DEL", it->second.key});
                }
                continue;
            }
            if (!alive) continue;  // a dead epoch we never read
            RemoteHost rh;
            rh.epoch = epoch;
            rh.key = fmt::format("{}:stream:{}:{}", cfg_.prefix, h, epoch);
            remotes_[h] = std::move(rh);
            log::info("bridge: reading host {} (epoch {})", h, epoch);
        }
    }

    // Every user of host `h` goes offline here.
    void drop_host(unsigned h, const std::string& why) {
        auto& rh = remotes_[h];
        rh.dead = true;
        ++stats_.hosts_lost;
        std::size_t n = 0;
        for (auto it = users_.begin(); it != users_.end();) {
            if (it->second.host != h) {
                ++it;
                continue;
            }
            release(it->first, it->second);
            it = users_.erase(it);
            ++n;
        }
        log::warn("bridge: host {} (epoch {}) is gone: {}; its {} user(s) are offline", h, rh.epoch,
                  why, n);
    }

    void read_streams(int block_ms) {
        std::vector<std::string> args{"XREAD", "COUNT", "512"};
        if (block_ms >= 0) {
            args.push_back("BLOCK");
            args.push_back(std::to_string(block_ms));
        }
        args.push_back("STREAMS");
        std::vector<unsigned> order;
        for (const auto& [h, rh] : remotes_)
            if (!rh.dead) {
                args.push_back(rh.key);
                order.push_back(h);
            }
        if (order.empty()) {
            if (block_ms >= 0) reader_.wait(std::chrono::milliseconds(block_ms));
            return;
        }
        for (unsigned h : order)
            args.push_back(remotes_[h].cursor);
        Reply r = command(args);
        if (r->type != REDIS_REPLY_ARRAY) return;  // nil: nothing new
        std::unordered_map<std::string, unsigned> by_key;
        for (unsigned h : order)
            by_key[remotes_[h].key] = h;
        for (std::size_t i = 0; i < r->elements; ++i) {
            const redisReply* s = r->element[i];
            if (s->type != REDIS_REPLY_ARRAY || s->elements != 2) continue;
            const auto k = by_key.find(std::string(s->element[0]->str, s->element[0]->len));
            if (k == by_key.end()) continue;
            RemoteHost& rh = remotes_[k->second];
            const redisReply* entries = s->element[1];
            for (std::size_t j = 0; j < entries->elements; ++j) {
                const redisReply* e = entries->element[j];
                if (e->type != REDIS_REPLY_ARRAY || e->elements != 2) continue;
                rh.cursor.assign(e->element[0]->str, e->element[0]->len);
                ++rh.entries;
                apply(k->second, e->element[1]);
            }
        }
    }

    // ---- Ring -> stream

    void drain_ring() {
        reader_.poll(
            [&](const ring::Record& rec) {
                std::optional<chat::Event> ev = chat::record::decode(rec.type, rec.payload);
                if (!ev) return;
                forward(*ev);
            },
            [&](const ring::Loss& l) {
                stats_.ring_lost = stats_.ring_lost + l.records;
                log::error(
                    "bridge: fell behind worker {}'s log and missed {} records: other "
                    "hosts did not get them",
                    l.writer, l.records);
            });
    }

    void forward(const chat::Event& ev) {
        using chat::EventType;
        if (ev.type == EventType::revoked) return;  // the bridge's own kind
        if (ev.type == EventType::dm) {
            unsigned owner = 0;
            if (state_.lookup(ev.to, &owner) == 0 || owner != slot_) return;  // not remote
        }
        if (out_.size() >= cfg_.buffer) {
            if (++stats_.dropped % 1000 == 1)
                log::error(
                    "bridge: {} events for other hosts are waiting (--redis-buffer {}); "
                    "dropping new ones ({} so far): other hosts miss them",
                    out_.size(), cfg_.buffer, stats_.dropped.load());
            return;
        }
        Outgoing o;
        auto& f = o.fields;
        f = {"t", std::string(kind_name(ev.type)), "ms", std::to_string(wall_ms())};
        switch (ev.type) {
            case EventType::message:
                f.insert(f.end(), {"id", std::to_string(ev.id), "ts", std::to_string(ev.ts), "room",
                                   std::string(ev.room), "from", std::string(ev.from), "text",
                                   std::string(ev.text)});
                break;
            case EventType::dm:
                f.insert(f.end(), {"id", std::to_string(ev.id), "ts", std::to_string(ev.ts), "to",
                                   std::string(ev.to), "from", std::string(ev.from), "text",
                                   std::string(ev.text)});
                break;
            case EventType::online:
                f.insert(f.end(), {"login", std::to_string(ev.id), "from", std::string(ev.from)});
                o.op = NameOp::claim;
                o.name = std::string(ev.from);
                o.login = ev.id;
                break;
            case EventType::revoked:
                return;
            case EventType::offline:
            case EventType::joined:
            case EventType::left:
                f.insert(f.end(),
                         {"login", std::to_string(ev.login), "from", std::string(ev.from)});
                if (ev.type != EventType::offline) {
                    f.insert(f.end(), {"room", std::string(ev.room)});
                } else {
                    o.op = NameOp::release;
                    o.name = std::string(ev.from);
                    o.login = ev.login;
                }
                break;
            case EventType::typing:
                f.insert(f.end(), {"room", std::string(ev.room), "from", std::string(ev.from)});
                break;
        }
        out_.push_back(std::move(o));
    }

    // ---- Stream -> this host

    void apply(unsigned host, const redisReply* fields) {
        std::string_view t, room, from, to, text;
        std::uint64_t id = 0, login = 0, ms = 0;
        std::int64_t ts = 0;
        for (std::size_t i = 0; i + 1 < fields->elements; i += 2) {
            const std::string_view k(fields->element[i]->str, fields->element[i]->len);
            const std::string_view v(fields->element[i + 1]->str, fields->element[i + 1]->len);
            if (k == "t")
                t = v;
            else if (k == "id")
                id = to_u64(v);
            else if (k == "ts")
                ts = static_cast<std::int64_t>(to_u64(v));
            else if (k == "login")
                login = to_u64(v);
            else if (k == "ms")
                ms = to_u64(v);
            else if (k == "room")
                room = v;
            else if (k == "from")
                from = v;
            else if (k == "to")
                to = v;
            else if (k == "text")
                text = v;
        }
        if (ms != 0) {
            const std::int64_t age = wall_ms() - static_cast<std::int64_t>(ms);
            remotes_[host].lag_ms = age > 0 ? static_cast<std::uint64_t>(age) : 0;
        }
        if (t == "synced") {
            std::size_t n = 0;
            for (auto it = users_.begin(); it != users_.end();) {
                if (it->second.host == host && it->second.resync) {
                    release(it->first, it->second);
                    it = users_.erase(it);
                    ++n;
                } else {
                    ++it;
                }
            }
            if (n != 0) log::info("bridge: {} user(s) of host {} left while it was away", n, host);
            return;
        }
        const std::optional<chat::EventType> kind = kind_of(t);
        if (!kind || !chat::valid_name(from)) return;
        chat::Event ev;
        ev.type = *kind;
        ev.from = from;
        switch (*kind) {
            case chat::EventType::online: {
                if (auto it = users_.find(std::string(from)); it != users_.end()) {
                    if (it->second.host == host && it->second.remote_login == login) {
                        it->second.resync = false;
                        return;
                    }
                    if (it->second.host == host) {
                        // A newer login of the name on that host overtook the older one.
                        release(it->first, it->second);
                        users_.erase(it);
                    } else {
                        // Two other hosts raced for it: the one that loses the claim in Redis
                        // sends its offline, then the other takes the name here.
                        pending_[std::string(from)] = {host, login};
                        return;
                    }
                }
                if (!register_remote(std::string(from), host, login)) {
                    // Held here by a local login: both logged in at once. The claim in Redis
                    // decides; if ours loses, this one takes the name (revoke()).
                    pending_[std::string(from)] = {host, login};
                    log::info(
                        "bridge: '{}' of host {} is logged in here too; the name claim in "
                        "Redis decides",
                        from, host);
                }
                return;
            }
            case chat::EventType::offline: {
                if (const auto p = pending_.find(std::string(from));
                    p != pending_.end() && p->second == std::pair{host, login})
                    pending_.erase(p);
                const auto it = users_.find(std::string(from));
                if (it == users_.end() || it->second.host != host ||
                    it->second.remote_login != login)
                    return;
                release(it->first, it->second);
                users_.erase(it);
                // Another host's login of the name waited for this one to go.
                if (const auto p = pending_.find(std::string(from)); p != pending_.end()) {
                    const auto [h, l] = p->second;
                    pending_.erase(p);
                    register_remote(std::string(from), h, l);
                }
                return;
            }
            case chat::EventType::joined:
            case chat::EventType::left: {
                const auto it = users_.find(std::string(from));
                if (it == users_.end() || it->second.host != host ||
                    it->second.remote_login != login || !chat::valid_room(room))
                    return;
                ev.room = room;
                ev.login = it->second.local_login;
                if (*kind == chat::EventType::joined) {
                    std::uint64_t mark = 0;
                    bool added = false;
                    if (state_.join(room, from, &mark, nullptr, nullptr, &added) !=
                            chat::SharedState::Status::ok ||
                        !added)
                        return;
                    ev.id = mark;
                } else {
                    std::uint64_t lid = 0;
                    if (state_.leave(room, from, &lid) != chat::SharedState::Status::ok) return;
                    ev.id = lid;
                }
                break;
            }
            case chat::EventType::message: {
                if (!chat::valid_room(room)) return;
                // Its room seq on this host and its local order travel in the record, so
                // every worker delivers it alike (and can tell a resend of it apart).
                std::uint64_t seq = 0;
                const std::uint64_t order = state_.post_remote(room, from, text, ts, id, &seq);
                if (order == 0) return;
                ev.id = id;
                ev.seq = seq;
                ev.order = order;
                ev.ts = ts;
                ev.room = room;
                ev.text = text;
                break;
            }
            case chat::EventType::dm: {
                unsigned owner = 0;
                if (!chat::valid_name(to) || state_.lookup(to, &owner) == 0 || owner == slot_)
                    return;  // not (or no longer) on this host
                state_.observe(id);
                ev.id = id;
                ev.ts = ts;
                ev.to = to;
                ev.text = text;
                break;
            }
            case chat::EventType::typing:
                if (!chat::valid_room(room)) return;
                ev.room = room;
                break;
            case chat::EventType::revoked:
                return;
        }
        publish(ev);
        ++stats_.received;
    }

    void release(const std::string& name, const RemoteUser& u) {
        if (const std::uint64_t id = state_.release(name, slot_, u.local_login); id != 0)
            publish_offline(name, id, u.local_login);
    }

    void publish_offline(std::string_view name, std::uint64_t id, std::uint64_t login) {
        chat::Event ev;
        ev.type = chat::EventType::offline;
        ev.id = id;
        ev.login = login;
        ev.from = name;
        publish(ev);
    }

    void publish(const chat::Event& ev) {
        const std::uint32_t type = chat::record::encode(ev, scratch_);
        if (scratch_.size() > writer_.max_payload()) return;
        writer_.publish(type, scratch_);
    }

    void shutdown() {
        // Whatever the workers said on their way out (logouts) reaches the others; then the
        // lease goes at once, so they need not wait for it to expire.
        if (!ctx_) return;
        try {
            drain_ring();
            send_queued();
            send_queued();
            command({"DEL", lease_key(cfg_.host_id)});
        } catch (const LinkError& e) {
            log::warn("bridge: leaving Redis: {}", e.what());
        }
    }

    metrics::BridgeBlock& stats_;
    Config cfg_;
    RedisUrl url_;
    unsigned slot_;
    chat::SharedState& state_;
    ring::Writer writer_;
    ring::Reader reader_;
    Context ctx_;
    std::uint64_t epoch_ = 0;
    std::string stream_;
    std::uint64_t next_entry_ = 1;
    std::deque<Outgoing> out_;
    std::map<unsigned, RemoteHost> remotes_;
    std::unordered_map<std::string, RemoteUser> users_;
    // name -> (host, login) of a remote login of a name held by a local login (a race)
    std::unordered_map<std::string, std::pair<unsigned, std::uint64_t>> pending_;
    std::vector<std::byte> scratch_;
    Clock::time_point next_connect_{}, next_lease_{}, next_hosts_{};
    bool link_up_ = false, down_logged_ = false;
};

}  // namespace

int run(const Config& config, ring::Region& region, unsigned slot, chat::SharedState& state,
        metrics::Region* metrics) {
    struct sigaction sa {};
    sa.sa_handler = on_term;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGTERM, &sa, nullptr);
    ::sigaction(SIGINT, &sa, nullptr);
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    ::sigprocmask(SIG_UNBLOCK, &sigs, nullptr);
    try {
        metrics::BridgeBlock local{};
        Bridge b(config, region, slot, state, metrics ? metrics->host().bridge : local);
        return b.run();
    } catch (const std::exception& e) {
        log::error("bridge: fatal: {}", e.what());
        return 1;
    }
}

}  // namespace steerchat::bridge
