#!/usr/bin/env bash
# Idle chat users at scale (issue 17): N native connections (default 2000; 200000 by hand) log in
# across 2 workers, each from its own 127.x.y.z source address; then a checker logs in, finds
# every name in its welcome list and sends each user a DM, which must arrive. Reports the server's
# memory per idle user (PSS) and the chat state's shared memory in use (the memfd's pages).
#   tests/e2e/idle_users.sh BUILD_DIR [N]
# Up to --chat-presence-max-users (1000) online every login is announced to every user and its
# welcome lists everyone; past it a login is announced to no one (its users share no room) and
# the welcome is partial, so the checker pages through `who` (issue 16). CI runs N=2000; see
# BENCHMARKS.md for the 200000 figures.
set -euo pipefail
build=${1:?usage: idle_users.sh BUILD_DIR [N]}
n=${2:-2000}
bench="$build/userspace/bench/steerchat-bench"
port=19300
steering=kernel
[ "$(id -u)" -eq 0 ] && steering=bpf
# One descriptor per connection in the server and in the load processes.
# (Raising the hard limit needs CAP_SYS_RESOURCE; without it the hard limit is what there is: each
# worker holds N/2 connections, the load processes split theirs by it.)
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if (( n / 2 + 1000 > $(ulimit -n) )); then
    echo "idle_users: $n users need $((n / 2 + 1000)) descriptors per worker; the open-files" \
        "limit is $(ulimit -n) (raise it: ulimit -Hn, LimitNOFILE)" >&2
    exit 1
fi
out=$(mktemp -d)
"$build/steerchat" --port "$port" --workers 2 --steering "$steering" --chat-rate 0 \
    --run-dir "$out" 2>"$out/server.log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$out"' EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.05
done

"$bench" idle --port "$port" --clients "$n" --chat on --threads 2 --duration 1 \
    --connect-timeout "${IDLE_USERS_TIMEOUT:-80}" --server-pid "$pid" --json "$out/idle.json"
jq -e ".clients == $n and .chat_listed == $n and .chat_dms_delivered == $n
       and .chat_dms_refused == 0 and .connections_lost == 0" "$out/idle.json" >/dev/null || {
    echo "idle_users: unexpected result:" >&2
    cat "$out/idle.json" >&2
    exit 1
}
# The chat state's memfd (the master keeps it open): the pages its entries have touched, shared by
# every process, and its size (the most it can take).
shm_kib=? shm_size=?
for fd in /proc/$pid/fd/*; do
    if [[ $(readlink "$fd") == /memfd:steerchat-chat* ]]; then
        shm_kib=$(( $(stat -L -c '%b * %B' "$fd") / 1024 ))
        shm_size=$(( $(stat -L -c '%s' "$fd") >> 20 ))
    fi
done
echo "idle_users: ok ($n users logged in, listed and reached by DM in" \
    "$(jq -r '.setup_s | . * 10 | floor / 10' "$out/idle.json") s login +" \
    "$(jq -r '.chat_check_s | . * 10 | floor / 10' "$out/idle.json") s check;" \
    "$(jq -r '.bytes_per_connection | floor' "$out/idle.json") B server PSS per idle user;" \
    "chat state in use: $shm_kib KiB of shared memory, of $shm_size MiB mapped)"
