// SPDX-License-Identifier: GPL-2.0
/* steer: the sk_reuseport program of steerchat.
 *
 * For every SYN on the port (and for every queued request of a listener being shut down) it
 * reads the client's source address, hashes it with the kernel's jhash and the configured seed,
 * looks the hash up in a Maglev bucket table filled by the master, and selects the listening
 * socket of the bucket's worker slot. The choice depends on the client address alone, so every
 * connection of one client IP reaches the same worker (also on the final ACK under syncookies). */
// linux/bpf.h first: the libbpf headers use its types.
#include <linux/bpf.h>
#include <linux/if_ether.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "steer.h"

char LICENSE[] SEC("license") = "GPL";

struct {
    __uint(type, BPF_MAP_TYPE_REUSEPORT_SOCKARRAY);
    __uint(max_entries, STEER_MAX_SLOTS);
    __type(key, __u32);
    __type(value, __u64);
} sockets SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, STEER_BUCKETS);
    __type(key, __u32);
    __type(value, __u32);
} buckets SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct steer_config);
} config SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, STEER_STAT_MAX);
    __type(key, __u32);
    __type(value, __u64);
} stats SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, STEER_MAX_SLOTS);
    __type(key, __u32);
    __type(value, __u64);
} slot_stats SEC(".maps");

/* The kernel's jhash (include/linux/jhash.h), restated; userspace/steer/jhash.hpp mirrors it. */
#define JHASH_INITVAL 0xdeadbeef

static __always_inline __u32 rol32(__u32 w, unsigned int s) {
    return (w << s) | (w >> (32 - s));
}

#define jhash_mix(a, b, c) \
    {                      \
        a -= c;            \
        a ^= rol32(c, 4);  \
        c += b;            \
        b -= a;            \
        b ^= rol32(a, 6);  \
        a += c;            \
        c -= b;            \
        c ^= rol32(b, 8);  \
        b += a;            \
        a -= c;            \
        a ^= rol32(c, 16); \
        c += b;            \
        b -= a;            \
        b ^= rol32(a, 19); \
        a += c;            \
        c -= b;            \
        c ^= rol32(b, 4);  \
        b += a;            \
    }

#define jhash_final(a, b, c) \
    {                        \
        c ^= b;              \
        c -= rol32(b, 14);   \
        a ^= c;              \
        a -= rol32(c, 11);   \
        b ^= a;              \
        b -= rol32(a, 25);   \
        c ^= b;              \
        c -= rol32(b, 16);   \
        a ^= c;              \
        a -= rol32(c, 4);    \
        b ^= a;              \
        b -= rol32(a, 14);   \
        c ^= b;              \
        c -= rol32(b, 24);   \
    }

/* jhash_1word(a, initval) */
static __always_inline __u32 jhash_v4(__u32 a, __u32 initval) {
    __u32 b, c;
    a += JHASH_INITVAL + (1 << 2) + initval;
    b = JHASH_INITVAL + (1 << 2) + initval;
    c = JHASH_INITVAL + (1 << 2) + initval;
    jhash_final(a, b, c);
    return c;
}

/* jhash2(k, 4, initval) for a whole IPv6 address */
static __always_inline __u32 jhash_v6(const __u32* k, __u32 initval) {
    __u32 a, b, c;
    a = b = c = JHASH_INITVAL + (4 << 2) + initval;
    a += k[0];
    b += k[1];
    c += k[2];
    jhash_mix(a, b, c);
    a += k[3];
    jhash_final(a, b, c);
    return c;
}

/* jhash2(k, 2, initval) for the /64 prefix of an IPv6 address */
static __always_inline __u32 jhash_v6_64(const __u32* k, __u32 initval) {
    __u32 a, b, c;
    a = b = c = JHASH_INITVAL + (2 << 2) + initval;
    b += k[1];
    a += k[0];
    jhash_final(a, b, c);
    return c;
}

static __always_inline void count(__u32 stat) {
    __u64* v = bpf_map_lookup_elem(&stats, &stat);
    if (v) *v += 1;
}

static __always_inline void count_slot(__u32 slot) {
    __u64* v = bpf_map_lookup_elem(&slot_stats, &slot);
    if (v) *v += 1;
}

/* Hashes the client address; returns -1 when it cannot be read. */
static __always_inline int client_hash(struct sk_reuseport_md* md, const struct steer_config* cfg,
                                       __u32* hash) {
    __u32 addr[4] = {};
    struct bpf_sock* msk = md->migrating_sk;

    if (msk) {
        /* Migration of a queued request: the packet is empty; the request's peer is the client. */
        if (msk->family == 2 /* AF_INET */) {
            count(STEER_STAT_IPV4);
            *hash = jhash_v4(msk->dst_ip4, cfg->seed);
            return 0;
        }
        addr[0] = msk->dst_ip6[0];
        addr[1] = msk->dst_ip6[1];
        addr[2] = msk->dst_ip6[2];
        addr[3] = msk->dst_ip6[3];
    } else if (md->eth_protocol == bpf_htons(ETH_P_IP)) {
        if (bpf_skb_load_bytes_relative(md, 12, &addr[0], 4, BPF_HDR_START_NET)) return -1;
        count(STEER_STAT_IPV4);
        *hash = jhash_v4(addr[0], cfg->seed);
        return 0;
    } else if (md->eth_protocol == bpf_htons(ETH_P_IPV6)) {
        if (bpf_skb_load_bytes_relative(md, 8, addr, 16, BPF_HDR_START_NET)) return -1;
    } else {
        return -1;
    }

    /* An IPv4-mapped IPv6 address (::ffff:a.b.c.d) hashes as the IPv4 address it is. */
    if (addr[0] == 0 && addr[1] == 0 && addr[2] == bpf_htonl(0xffff)) {
        count(STEER_STAT_IPV4);
        *hash = jhash_v4(addr[3], cfg->seed);
        return 0;
    }
    count(STEER_STAT_IPV6);
    *hash = (cfg->flags & STEER_F_V6_PREFIX64) ? jhash_v6_64(addr, cfg->seed)
                                               : jhash_v6(addr, cfg->seed);
    return 0;
}

SEC("sk_reuseport/migrate")
int steer(struct sk_reuseport_md* md) {
    __u32 zero = 0, hash, bucket, slot, i;
    const struct steer_config* cfg;
    __u32* owner;

    cfg = bpf_map_lookup_elem(&config, &zero);
    if (!cfg || cfg->nslots == 0 || cfg->nslots > STEER_MAX_SLOTS) goto failed;
    if (client_hash(md, cfg, &hash)) goto failed;

    bucket = hash % STEER_BUCKETS;
    owner = bpf_map_lookup_elem(&buckets, &bucket);
    if (!owner) goto failed;
    slot = *owner;

    /* The bucket's own slot, then the following slots in order: deterministic, so a client
     * whose worker slot is being drained still lands on the same substitute every time. */
    for (i = 0; i < STEER_MAX_SLOTS; i++) {
        __u32 s;

        if (i >= cfg->nslots) break;
        s = (slot + i) % cfg->nslots;
        if (bpf_sk_select_reuseport(md, &sockets, &s, 0) == 0) {
            count(i == 0 ? STEER_STAT_SELECTED : STEER_STAT_FALLBACK);
            if (md->migrating_sk) count(STEER_STAT_MIGRATED);
            count_slot(s);
            return SK_PASS;
        }
    }

failed:
    /* Nothing to select: let the kernel place it by its own hash rather than drop a client. */
    count(STEER_STAT_FAILED);
    return SK_PASS;
}
