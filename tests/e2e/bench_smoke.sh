#!/usr/bin/env bash
# Smoke test of steerchat-bench (not a benchmark): a short run of every scenario against a real
# server must finish, lose nothing and report its figures and the server's CPU in its JSON result.
#   tests/e2e/bench_smoke.sh BUILD_DIR
# broadcast and idle also run over Socket.IO (--protocol sio); every scenario also runs over TLS
# (--tls, against the same server's --tls-port with a test CA made here), connect with and without
# --resume (the resumed share must be near 1, and 0 without it), and a wrong CA must fail.
set -euo pipefail
build=${1:?usage: bench_smoke.sh BUILD_DIR}
bench="$build/userspace/bench/steerchat-bench"
port=18470
tls_port=19590
steering=kernel
[ "$(id -u)" -eq 0 ] && steering=bpf
out=$(mktemp -d)
pki() {  # DIR: a CA and a server certificate for 127.0.0.1 signed by it (ECDSA P-256)
    mkdir -p "$1"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -subj "/CN=bench smoke CA" -keyout "$1/ca.key" -out "$1/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
        -keyout "$1/server.key" -out "$1/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$1/ext.cnf"
    openssl x509 -req -in "$1/server.csr" -CA "$1/ca.pem" -CAkey "$1/ca.key" -CAcreateserial \
        -days 1 -extfile "$1/ext.cnf" -out "$1/server.pem" 2>/dev/null
}
pki "$out/pki"
pki "$out/other"   # a CA that did not sign the server's certificate
"$build/steerchat" --port "$port" --workers 2 --steering "$steering" --tls-port "$tls_port" \
    --tls-cert "$out/pki/server.pem" --tls-key "$out/pki/server.key" 2>"$out/server.log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$out"' EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.05
done

# check NAME JQ_FILTER: the JSON result of NAME must satisfy the filter.
check() {
    jq -e "$2" "$out/$1.json" >/dev/null || {
        echo "bench_smoke: unexpected $1 result:" >&2
        cat "$out/$1.json" >&2
        exit 1
    }
}

"$bench" broadcast --port "$port" --clients 20 --rooms 2 --rate 10 --duration 1 \
    --server-pid "$pid" --json "$out/broadcast.json"
check broadcast '.expected_deliveries > 0 and .received_deliveries == .expected_deliveries
       and .loss_ratio == 0 and .server_cpu_s > 0 and .deliveries_per_server_cpu_s > 0
       and .connections_lost == 0 and .server_processes == 3 and .protocol == "native"'

"$bench" connect --port "$port" --concurrency 8 --duration 1 --server-pid "$pid" \
    --json "$out/connect.json"
check connect '.connections > 0 and .connections_per_s > 0 and .errors == 0
       and .handshake_latency_ms.p50 > 0 and .handshake_latency_ms.p99 >= .handshake_latency_ms.p50
       and (.connections_per_server_cpu_s | type) == "number" and .server_processes == 3'

"$bench" connect --port "$port" --concurrency 4 --close clean --duration 1 \
    --json "$out/connect_clean.json"
check connect_clean '.connections > 0 and .errors == 0 and .unfinished == 0 and .close == "clean"'

"$bench" echo --port "$port" --clients 10 --duration 1 --server-pid "$pid" --json "$out/echo.json"
check echo '.round_trips > 0 and .loss_ratio == 0 and .connections_lost == 0
       and .latency_ms.p50 > 0 and .server_cpu_s > 0 and .round_trips_per_server_cpu_s > 0'

"$bench" echo --port "$port" --clients 10 --rate 20 --size 100 --duration 1 \
    --json "$out/echo_paced.json"
check echo_paced '.round_trips > 0 and .loss_ratio == 0 and .rate_per_client == 20'

# Two load processes, to exercise the split the 20000-connection run needs.
"$bench" idle --port "$port" --clients 200 --processes 2 --threads 2 --duration 1 \
    --server-pid "$pid" --json "$out/idle.json"
check idle '.clients == 200 and .processes == 2 and .connections_lost == 0
       and .server_memory_after.pss_bytes > 0 and .pss_complete
       and (.bytes_per_connection | type) == "number" and .tcp_inuse_after > .tcp_inuse_before'

ran="broadcast, connect, echo, idle"
"$bench" broadcast --protocol sio --port "$port" --clients 20 --rooms 2 --rate 10 \
    --duration 1 --name-prefix sio --server-pid "$pid" --json "$out/broadcast_sio.json"
check broadcast_sio '.expected_deliveries > 0 and .received_deliveries == .expected_deliveries
       and .connections_lost == 0 and .protocol == "sio"'
"$bench" idle --protocol sio --port "$port" --clients 50 --duration 1 \
    --server-pid "$pid" --json "$out/idle_sio.json"
check idle_sio '.connections_lost == 0 and .protocol == "sio"'
ran="$ran, broadcast and idle over Socket.IO"

# The same over TLS.
tls=(--port "$tls_port" --tls --ca "$out/pki/ca.pem")
"$bench" connect "${tls[@]}" --concurrency 8 --duration 1 --server-pid "$pid" \
    --json "$out/connect_tls.json"
check connect_tls '.tls and .connections > 0 and .errors == 0 and .resumed == 0
       and .connections_per_server_cpu_s > 0'
"$bench" connect "${tls[@]}" --protocol sio --resume --concurrency 4 --duration 1 \
    --json "$out/connect_resume.json"
check connect_resume '.tls and .connections > 0 and .errors == 0 and .resume
       and .resumed_ratio > 0.9'
if "$bench" connect --port "$tls_port" --tls --ca "$out/other/ca.pem" --concurrency 2 \
    --duration 1 --json "$out/connect_wrong_ca.json" >/dev/null 2>&1; then
    echo "bench_smoke: a server certificate that does not chain to --ca was accepted" >&2
    exit 1
fi
check connect_wrong_ca '.connections == 0 and .errors > 0
       and (.first_error | test("certificate verify failed"))'
"$bench" broadcast "${tls[@]}" --clients 20 --rooms 2 --rate 10 --duration 1 \
    --name-prefix tls --server-pid "$pid" --json "$out/broadcast_tls.json"
check broadcast_tls '.tls and .expected_deliveries > 0
       and .received_deliveries == .expected_deliveries and .connections_lost == 0'
"$bench" broadcast "${tls[@]}" --protocol sio --clients 20 --rooms 2 --rate 10 --duration 1 \
    --name-prefix tlssio --json "$out/broadcast_tls_sio.json"
check broadcast_tls_sio '.tls and .expected_deliveries > 0
       and .received_deliveries == .expected_deliveries and .connections_lost == 0'
"$bench" echo "${tls[@]}" --clients 10 --duration 1 --json "$out/echo_tls.json"
check echo_tls '.tls and .round_trips > 0 and .loss_ratio == 0 and .connections_lost == 0'
"$bench" idle "${tls[@]}" --protocol sio --clients 100 --processes 2 --duration 1 \
    --server-pid "$pid" --json "$out/idle_tls.json"
check idle_tls '.tls and .clients == 100 and .connections_lost == 0
       and (.bytes_per_connection | type) == "number"'
ran="$ran, all over TLS"
echo "bench_smoke: ok ($ran; $(jq -r '.received_deliveries' "$out/broadcast.json") deliveries," \
    "$(jq -r '.connections' "$out/connect.json") connections," \
    "$(jq -r '.round_trips' "$out/echo.json") round trips," \
    "$(jq -r '.bytes_per_connection | floor' "$out/idle.json") B per idle connection)"
