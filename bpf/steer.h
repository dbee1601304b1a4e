/* Definitions shared by the sk_reuseport program (steer.bpf.c) and userspace (C++).
 * Only fixed-size types, so the same layout holds on both sides. */
#ifndef STEERCHAT_BPF_STEER_H
#define STEERCHAT_BPF_STEER_H

/* Bucket table size: a prime, so Maglev's permutations visit every bucket. */
#define STEER_BUCKETS 65537u
/* Most worker slots a listener group can have (sockarray size). */
#define STEER_MAX_SLOTS 128u

/* Outcome counters (per-CPU array "stats", indexed by these). */
enum steer_stat {
    STEER_STAT_IPV4 = 0,     /* SYN (or migration) from an IPv4 client */
    STEER_STAT_IPV6 = 1,     /* ... from an IPv6 client */
    STEER_STAT_SELECTED = 2, /* socket of the bucket's own slot selected */
    STEER_STAT_FALLBACK = 3, /* bucket's slot empty: next live slot selected */
    STEER_STAT_MIGRATED = 4, /* a queued request of a closed listener was placed */
    STEER_STAT_FAILED = 5,   /* no live slot at all, or unreadable address */
    STEER_STAT_MAX = 6,
};

/* Flags in steer_config.flags. */
#define STEER_F_V6_PREFIX64 0x1u /* hash only the /64 prefix of IPv6 clients */

/* Single-entry array "config", written by the master before it fills the sockets. */
struct steer_config {
    unsigned int seed;   /* jhash initval; per host, so host and worker choice do not correlate */
    unsigned int nslots; /* slots in use: 0 .. nslots-1 (the fallback scan wraps within them) */
    unsigned int flags;  /* STEER_F_* */
    unsigned int pad;
};

#endif
