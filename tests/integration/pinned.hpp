// Reads steerchat's pinned maps (as an operator's tool would) for the integration tests.
#pragma once

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "steer.h"
#include "steer/jhash.hpp"
#include "steer/maglev.hpp"

namespace steerchat::itest {

inline std::string pin_path(std::uint16_t port, const char* name) {
    return "/sys/fs/bpf/steerchat/" + std::to_string(port) + "/" + name;
}

inline std::optional<std::vector<std::uint32_t>> pinned_buckets(std::uint16_t port) {
    int fd = bpf_obj_get(pin_path(port, "buckets").c_str());
    if (fd < 0) return std::nullopt;
    std::vector<std::uint32_t> t(STEER_BUCKETS);
    for (std::uint32_t i = 0; i < STEER_BUCKETS; ++i)
        if (bpf_map_lookup_elem(fd, &i, &t[i]) != 0) {
            ::close(fd);
            return std::nullopt;
        }
    ::close(fd);
    return t;
}

inline std::optional<steer_config> pinned_config(std::uint16_t port) {
    int fd = bpf_obj_get(pin_path(port, "config").c_str());
    if (fd < 0) return std::nullopt;
    steer_config c{};
    std::uint32_t zero = 0;
    bool ok = bpf_map_lookup_elem(fd, &zero, &c) == 0;
    ::close(fd);
    if (!ok) return std::nullopt;
    return c;
}

// Which slots of the socket array hold a socket.
inline std::vector<bool> pinned_live_slots(std::uint16_t port, unsigned nslots) {
    std::vector<bool> live(nslots, false);
    int fd = bpf_obj_get(pin_path(port, "sockets").c_str());
    if (fd < 0) return live;
    for (std::uint32_t i = 0; i < nslots; ++i) {
        std::uint64_t cookie = 0;
        live[i] = bpf_map_lookup_elem(fd, &i, &cookie) == 0;
    }
    ::close(fd);
    return live;
}

// Sum over CPUs of one entry of a per-CPU u64 array.
inline std::uint64_t pinned_percpu_sum(std::uint16_t port, const char* map, std::uint32_t key) {
    int fd = bpf_obj_get(pin_path(port, map).c_str());
    if (fd < 0) return 0;
    std::vector<std::uint64_t> v(static_cast<std::size_t>(libbpf_num_possible_cpus()));
    std::uint64_t sum = 0;
    if (bpf_map_lookup_elem(fd, &key, v.data()) == 0)
        for (auto x : v)
            sum += x;
    ::close(fd);
    return sum;
}

// The slot the kernel should choose for the IPv4 client `ip` under `seed`, given the bucket table
// and which slots hold a socket.
inline int expected_slot(const std::string& ip, std::uint32_t seed,
                         const std::vector<std::uint32_t>& table, const std::vector<bool>& live) {
    in_addr a{};
    inet_pton(AF_INET, ip.c_str(), &a);
    bool lv[STEER_MAX_SLOTS] = {};
    for (std::size_t i = 0; i < live.size(); ++i)
        lv[i] = live[i];
    return steer::predict_slot(steer::hash_client(a, seed), table,
                               std::span<const bool>(lv, live.size()));
}

}  // namespace steerchat::itest
