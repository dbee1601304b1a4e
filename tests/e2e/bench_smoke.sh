#!/usr/bin/env bash
# Smoke test of steerchat-bench (not a benchmark): a small broadcast run against a real server must
# finish, lose nothing, and report deliveries and the server's CPU in its JSON result.
#   tests/e2e/bench_smoke.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: bench_smoke.sh BUILD_DIR}
port=18470
steering=kernel
[ "$(id -u)" -eq 0 ] && steering=bpf
out=$(mktemp -d)
"$build/steerchat" --port "$port" --workers 2 --steering "$steering" 2>"$out/server.log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$out"' EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.05
done
"$build/userspace/bench/steerchat-bench" broadcast --port "$port" --clients 20 --rooms 2 \
    --rate 10 --duration 1 --server-pid "$pid" --json "$out/result.json"
jq -e '.expected_deliveries > 0 and .received_deliveries == .expected_deliveries
       and .loss_ratio == 0 and .server_cpu_s > 0 and .deliveries_per_server_cpu_s > 0
       and .connections_lost == 0' "$out/result.json" >/dev/null || {
    echo "bench_smoke: unexpected result:" >&2
    cat "$out/result.json" >&2
    exit 1
}
echo "bench_smoke: ok ($(jq -r '.received_deliveries' "$out/result.json") deliveries)"
