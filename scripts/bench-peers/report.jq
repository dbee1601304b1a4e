# scripts/bench: turns results.json (machine, versions, loads, runs) into the generated section of
# BENCHMARKS.md. jq -r -f report.jq results.json

def zeros(n): [range(0; n)] | map("0") | join("");
def fixed(d):
  if d == 0 then (round | tostring)
  else (. < 0) as $neg
    | ((if $neg then -. else . end) * pow(10; d) | round | tostring) as $s
    | (zeros([d + 1 - ($s | length), 0] | max) + $s) as $p
    | (if $neg then "-" else "" end) + $p[0:($p | length) - d] + "." + $p[($p | length) - d:]
  end;
# 3 significant figures, k / M above 10 000
def num:
  if . == null or (type != "number") then "–"
  elif . >= 1e7 then "\(. / 1e6 | fixed(1)) M"
  elif . >= 1e6 then "\(. / 1e6 | fixed(2)) M"
  elif . >= 1e5 then "\(. / 1e3 | fixed(0)) k"
  elif . >= 1e4 then "\(. / 1e3 | fixed(1)) k"
  elif . >= 100 then fixed(0)
  elif . >= 10 then fixed(1)
  elif . >= 1 then fixed(2)
  elif . == 0 then "0"
  else fixed(3) end;
def ms: if . == null then "–" else num end;
def pct: if . == null then "–" else (. * 100 | if . == 0 then "0" elif . < 0.1 then "<0.1" else fixed(1) end) + " %" end;
def kib: if . == null then "–" else (. / 1024 | fixed(1)) end;
def ratio: if . == null or (type != "number") then "–" elif . >= 100 then "\(fixed(0))x" elif . >= 10 then "\(fixed(1))x"
  elif . >= 0.1 or . <= 0 then "\(fixed(2))x" else "\(fixed(1 - (log10 | floor)))x" end;   # 2 significant figures below 0.1

. as $all
| ["node-cluster-redis", "balance", "nginx-node", "sticky", "nginx", "steerchat-kernel", "steerchat-bpf"] as $order
| {
    "node-cluster-redis": "Node cluster; the primary accepts with `pauseOnConnect` and hands each socket to worker FNV-1a(ip) % N; socket.io 4 in the workers; rooms across workers via `@socket.io/redis-adapter` and a redis-server on a Unix socket (its CPU counted)",
    "balance": "the same socket.io 4 app and Redis adapter as node-cluster-redis, as N processes under `steerchat balance` (BPF steering, each process its own listener as fd 3: no process in the data path; the master's and Redis's CPU counted)",
    "nginx-node": "the balance peer's Node app as N processes on ports of their own behind nginx `hash $remote_addr consistent` (rooms through a redis-server on a Unix socket); CPU of nginx, Node and Redis",
    "sticky": "socket.io 4 with `@socket.io/sticky` (`least-connection`: it has no IP-hash method) and `@socket.io/cluster-adapter`",
    "nginx": "nginx, `hash $remote_addr consistent`, over N single-worker steerchat processes (`--steering kernel`); CPU of nginx and the backends",
    "steerchat-kernel": "steerchat `--steering kernel`: plain SO_REUSEPORT",
    "steerchat-bpf": "steerchat `--steering bpf`: ours"
  } as $what
| def run($p; $s; $proto): first($all.runs[] | select(.peer == $p and .scenario == $s and .protocol == $proto)) // null;
  def res($p; $s; $proto): (run($p; $s; $proto) | if . != null and .status == "ok" then .result else null end);
  def val($p; $s; $proto; f): (res($p; $s; $proto) | if . == null then null else f end);
  # steerchat's figure to set against a peer's: the same protocol, else the other one
  def ours($s; $proto; f):
    (val("steerchat-bpf"; $s; $proto; f)) as $same
    | if $same != null then {v: $same, proto: $proto}
      else ([ "native", "sio" ] | map(select(. != $proto)) | .[0]) as $other
        | {v: val("steerchat-bpf"; $s; $other; f), proto: $other} end;
  def div(a; b): if a == null or b == null or b == 0 then null else a / b end;
  # steerchat-bpf's whole result to set against a peer's: the same protocol, else the other one
  def oursres($s; $proto):
    res("steerchat-bpf"; $s; $proto) as $same
    | if $same != null then {r: $same, proto: $proto}
      else ([ "native", "sio" ] | map(select(. != $proto)) | .[0]) as $other
        | {r: res("steerchat-bpf"; $s; $other), proto: $other} end;
  # deliveries per second a broadcast level offers: says/s x members per room
  def offered($s): first($all.runs[] | select(.scenario == $s and .status == "ok") | .result
                          | .target_msgs_per_s * .clients / .rooms) // null;
  def level($s): (if $s == "broadcast" then "moderate" else "heavy" end)
                 + (offered($s) as $o | if $o == null then "" else " (\($o | num) deliveries/s offered)" end);
  def bsum($r): if $r == null then "not measured"
                else "\($r.deliveries_per_s | num)/s delivered, \($r.loss_ratio | pct) missing, p99 \($r.latency_ms.p99 | ms) ms" end;
  def cmp($p; $s; f):   # steerchat-bpf / peer $p, per protocol the peer was measured with
    [ $all.runs[] | select(.peer == $p and .scenario == $s and .status == "ok") | .protocol ] as $protos
    | if ($protos | length) == 0 then "–"
      else [ $protos[] as $proto
             | ours($s; $proto; f) as $o
             | div($o.v; val($p; $s; $proto; f)) as $r
             | if $r == null then empty
               elif $o.proto != $proto then "\($r | ratio) (ours \($o.proto) / \($proto))"
               elif ($protos | length) > 1 then "\($proto) \($r | ratio)"
               else ($r | ratio) end ]
        | if length == 0 then "–" else join(" · ") end
      end;
  def row(cells): "| " + (cells | join(" | ")) + " |";
  def table($s; header; cols):
    row(header),
    row(header | map("---")),
    ( $order[] as $p
      | ($all.runs | map(select(.peer == $p and .scenario == $s)) | sort_by(.protocol)) []
      | . as $r
      | if $r.status == "ok" then row([$p, $r.protocol] + ($r.result | cols))
        else row([$p, $r.protocol, "not measured (see Notes)"] + ([range(0; (header | length) - 3)] | map(""))) end );

"## Side by side against the usual setups (issue 5)",
"",
"_Generated by `scripts/bench\(if $all.mode == "quick" then " --quick" else "" end)` on \($all.date) (\($all.elapsed_s) s); rerun it rather than edit this section. Raw results: [docs/bench-results.json](docs/bench-results.json)._",
"",
"![steerchat against the peers](docs/bench.svg)",
"",
"Machine: \($all.machine.nproc) CPUs (\($all.machine.cpu)), kernel `\($all.machine.kernel)`, open-files hard limit \($all.machine.open_files); every peer runs \($all.workers) workers, all on loopback with the load generator on the same CPUs. Versions: steerchat \($all.versions.steerchat), Node \($all.versions.node), socket.io \($all.versions["socket.io"]), @socket.io/sticky \($all.versions["@socket.io/sticky"]), @socket.io/cluster-adapter \($all.versions["@socket.io/cluster-adapter"]), @socket.io/redis-adapter \($all.versions["@socket.io/redis-adapter"]), redis (client) \($all.versions.redis_client), nginx \($all.versions.nginx), redis-server \($all.versions["redis-server"]).",
"",
"| peer | what | started as |",
"|---|---|---|",
( $order[] as $p | select($all.peer_commands[$p] != null)
  | "| \($p) | \($what[$p]) | `\($all.peer_commands[$p] | gsub("\\|"; "/"))` |" ),
"",
"Every Socket.IO peer serves the same chat events as steerchat (`createsession`, `join`, `leave`, `say` to a room, acks); the load is the same `steerchat-bench` command line for every peer, only `--port`, `--protocol` and the `--server-pid` roots (each peer's whole process tree) differ:",
"",
"```sh",
"steerchat-bench idle      --protocol sio|native \($all.loads.idle)",
"steerchat-bench connect   --protocol sio|native \($all.loads.connect)",
"steerchat-bench echo      \($all.loads.echo)            # native /echo: steerchat and nginx only",
"steerchat-bench broadcast --protocol sio|native \($all.loads.broadcast)   # moderate",
"steerchat-bench broadcast --protocol sio|native \($all.loads.broadcast_heavy // "–")    # heavy",
"steerchat-ring-bench --json\(if ($all.loads.ring // "") == "" then "" else " " + $all.loads.ring end)",
"```",
"",
"### Targets",
"",
( (ours("connect"; "native"; .connections_per_s)) as $cn
  | (val("steerchat-kernel"; "connect"; $cn.proto; .connections_per_s)) as $kn
  | div($cn.v; $kn) as $accept
  | res("steerchat-bpf"; "idle"; "native") as $in
  | res("steerchat-bpf"; "idle"; "sio") as $is
  | ($all.ring // null | if . == null then null else (.modes[]? | select(.mode == "ring-spin") | .p50_us) end) as $ring
  | def met(c): if c == null then "not measured" elif c then "**met**" else "**not met**" end;
    def via($o; $proto): if $o.proto == $proto or $o.r == null then "" else " (steerchat \($o.proto): its \($proto) run failed)" end;
    # deliveries per server CPU-s, steerchat-bpf / $p at level $s, against $min
    def cpurow($p; $proto; $s; $min):
      res($p; $s; $proto) as $x | oursres($s; $proto) as $o
      | div($o.r.deliveries_per_server_cpu_s; $x.deliveries_per_server_cpu_s) as $r
      | "| broadcast deliveries per server CPU-s ≥ \($min)x \($p)\(if $proto == "native" then " (native /ws)" else "" end) | \(level($s)) | \(if $r == null then "–" else "\($r | ratio): \($o.r.deliveries_per_server_cpu_s | num) vs \($x.deliveries_per_server_cpu_s | num)\(via($o; $proto)). steerchat: \(bsum($o.r)); \($p): \(bsum($x))" end) | \(met(if $r == null then null else $r >= $min end)) |";
    def p99row($p; $s):
      res($p; $s; "sio") as $x | oursres($s; "sio") as $o
      | div($o.r.latency_ms.p99; $x.latency_ms.p99) as $r
      | "| broadcast p99 ≤ 1/10 of \($p), same offered load | \(level($s)) | \(if $r == null then "–" else "\($r | ratio)\(if $r > 0 and $r < 1 then " (1/\(1 / $r | if . >= 10 then fixed(0) else fixed(1) end))" else "" end): \($o.r.latency_ms.p99 | ms) vs \($x.latency_ms.p99 | ms) ms" end)\(via($o; "sio"))\(if $x != null and $x.loss_ratio > 0.01 then "; \($p) left \($x.loss_ratio | pct) undelivered 1 s after the window, so its p99 (over what it delivered) is a lower bound" else "" end) | \(met(if $r == null then null else $r <= 0.1 end)) |";
    "| target | load | measured (steerchat-bpf vs peer) | |",
    "|---|---|---|---|",
    ( $all.accept_ab as $ab
      | if ($ab // null) != null and $ab.ratio != null then
          "| accept rate, BPF steering ≥ 0.97x plain SO_REUSEPORT | connect, A/B: the two side by side, \($ab.kernel | length) alternating rounds each (`\($ab.args)`) | \($ab.ratio | ratio) (\($ab.bpf_mean | num) vs \($ab.kernel_mean | num) connections/s, native; rounds bpf \($ab.bpf | map(num) | join(", ")), kernel \($ab.kernel | map(num) | join(", ")); the single passes below: \($accept | ratio)) | \(met($ab.ratio >= 0.97)) |"
        else
          "| accept rate, BPF steering ≥ 0.97x plain SO_REUSEPORT | connect | \($accept | ratio) (\($cn.v | num) vs \($kn | num) connections/s, \($cn.proto)) | \(met(if $accept == null then null else $accept >= 0.97 end)) |"
        end ),
    cpurow("node-cluster-redis"; "sio"; "broadcast_heavy"; 20),
    cpurow("sticky"; "sio"; "broadcast_heavy"; 20),
    cpurow("nginx"; "native"; "broadcast_heavy"; 2),
    cpurow("node-cluster-redis"; "sio"; "broadcast"; 20),
    cpurow("sticky"; "sio"; "broadcast"; 20),
    cpurow("nginx"; "native"; "broadcast"; 2),
    p99row("node-cluster-redis"; "broadcast_heavy"),
    p99row("sticky"; "broadcast_heavy"),
    p99row("node-cluster-redis"; "broadcast"),
    p99row("sticky"; "broadcast"),
    "| idle WebSocket ≤ 6 KiB of server memory at 20,000 connections | idle | \(if $in == null then "–" else "\($in.bytes_per_connection | kib) KiB native at \($in.clients | num)" end)\(if $is == null then "" else "; \($is.bytes_per_connection | kib) KiB Socket.IO at \($is.clients | num)" end) | \(if $in == null then "not measured" elif $in.clients < 20000 then met($in.bytes_per_connection <= 6144) + " at \($in.clients) connections only" else met($in.bytes_per_connection <= 6144) end) |",
    "| ring hop p50 < 2 µs, reader spinning | ring | \(if $ring == null then "–" else "\($ring | fixed(2)) µs" end) | \(met(if $ring == null then null else $ring < 2 end)) |"
),
"",
"Per server CPU-second counts only the deliveries a server made (within 1 s after the measured window): a peer that falls behind at the heavy level is credited with what it delivered, and its backlog and latency are shown next to it rather than folded into the ratio. Its p99 is over the messages it delivered; the ones it did not deliver would only raise it. nginx's single-worker backends do not share rooms (see Notes), so about half of each room's deliveries never happen there; its figure counts only what it delivered and it is spared the cross-backend fan-out, so the ratio against it is conservative (in nginx's favour).",
"",
"### Ratios: steerchat-bpf / peer (same protocol)",
"",
"Above 1 is better for throughput figures; below 1 is better for latency and memory.",
"",
row(["figure"] + ($order | map(select(. != "steerchat-bpf")))),
row(["---"] + ($order | map(select(. != "steerchat-bpf")) | map("---"))),
row(["connect: connections/s"] + ($order | map(select(. != "steerchat-bpf")) | map(cmp(.; "connect"; .connections_per_s)))),
row(["connect: per server CPU-s"] + ($order | map(select(. != "steerchat-bpf")) | map(cmp(.; "connect"; .connections_per_server_cpu_s)))),
row(["echo: round trips per server CPU-s"] + ($order | map(select(. != "steerchat-bpf")) | map(cmp(.; "echo"; .round_trips_per_server_cpu_s)))),
row(["broadcast moderate: deliveries per server CPU-s"] + ($order | map(select(. != "steerchat-bpf")) | map(cmp(.; "broadcast"; .deliveries_per_server_cpu_s)))),
row(["broadcast moderate: p99 latency (lower is better)"] + ($order | map(select(. != "steerchat-bpf")) | map(cmp(.; "broadcast"; .latency_ms.p99)))),
row(["broadcast heavy: deliveries/s"] + ($order | map(select(. != "steerchat-bpf")) | map(cmp(.; "broadcast_heavy"; .deliveries_per_s)))),
row(["broadcast heavy: deliveries per server CPU-s"] + ($order | map(select(. != "steerchat-bpf")) | map(cmp(.; "broadcast_heavy"; .deliveries_per_server_cpu_s)))),
row(["broadcast heavy: p99 latency (lower is better)"] + ($order | map(select(. != "steerchat-bpf")) | map(cmp(.; "broadcast_heavy"; .latency_ms.p99)))),
row(["idle: memory per connection (lower is better)"] + ($order | map(select(. != "steerchat-bpf")) | map(cmp(.; "idle"; .bytes_per_connection)))),
"",
"### idle: connections held, server memory",
"",
table("idle"; ["peer", "protocol", "connections", "PSS KiB / conn", "RSS KiB / conn", "lost"];
  [(.clients | num), (.bytes_per_connection | kib), (.rss_bytes_per_connection | kib), (.connections_lost | tostring)]),
"",
"### connect: new WebSocket (Socket.IO: until its CONNECT) per second",
"",
table("connect"; ["peer", "protocol", "connections/s", "per server CPU-s", "server CPU %", "p50 ms", "p99 ms", "errors"];
  [(.connections_per_s | num), (.connections_per_server_cpu_s | num), (if .server_cpu_s then (.server_cpu_s / .duration_s * 100 | fixed(0)) else "–" end), (.handshake_latency_ms.p50 | ms), (.handshake_latency_ms.p99 | ms), (.errors | tostring)]),
"",
"### echo: round trips on /echo (closed loop)",
"",
table("echo"; ["peer", "protocol", "round trips/s", "per server CPU-s", "p50 ms", "p99 ms"];
  [(.round_trips_per_s | num), (.round_trips_per_server_cpu_s | num), (.latency_ms.p50 | ms), (.latency_ms.p99 | ms)]),
"",
( ["broadcast", "broadcast_heavy"][] as $s
  | "### broadcast, \(level($s))",
    "",
    "`steerchat-bench broadcast \($all.loads[$s] // "")`: every client says at the given rate to its room; \"offered\" is what the load generator sent in the window (below its target when a server stops reading), \"missing\" the deliveries of those messages that had not arrived 1 s after the window.",
    "",
    table($s; ["peer", "protocol", "offered msgs/s", "deliveries/s", "missing", "per server CPU-s", "server CPU %", "p50 ms", "p99 ms", "p99.9 ms"];
      [(.offered_msgs_per_s | num), (.deliveries_per_s | num), (.loss_ratio | pct), (.deliveries_per_server_cpu_s | num), (if .server_cpu_s then (.server_cpu_s / .duration_s * 100 | fixed(0)) else "–" end), (.latency_ms.p50 | ms), (.latency_ms.p99 | ms), (.latency_ms.p999 | ms)]),
    "" ),
"",
"### Notes",
"",
"- Server CPU is utime + stime of each peer's whole process tree over the measured window (`--server-pid` roots and their descendants: Node's primary and workers and, for node-cluster-redis, redis-server; nginx's master and workers and its steerchat backends). Per server CPU-second is the fair figure here: the load generator shares the same CPUs.",
"- nginx's backends are independent single-worker steerchat processes: a room does not span them, so a message reaches only the room's members on the sender's backend (about half of each room with 2 backends), and \"missing\" counts the others. Its deliveries per CPU-second count only what it delivered: it is spared the cross-backend fan-out a shared room would cost, so the ratio against it is conservative (in nginx's favour).",
"- At the heavy level a server that cannot keep up falls behind: its queues grow for the whole run, its latency grows with them and what is still queued 1 s after the window counts as missing. Its per CPU-second figure is then its throughput at saturation (CPU of the window, deliveries of the window's messages), not a figure at the offered load.",
"- sticky: `@socket.io/sticky` 2.0.1 drops, on loopback, the first bytes a client sends while the primary is still passing its socket to a worker (about 1 connection in 50 hangs before its Socket.IO CONNECT); `scripts/bench-peers/sticky.js` stops the primary's reads of a socket it hands over, as peer 1's `pauseOnConnect` does. Nothing else differs from the package's README setup.",
( $order[] as $p
  | ($all.runs | map(select(.peer == $p and (.status != "ok" or (.note // "") != ""))) | group_by([.status, .note]))[]
  | "- \($p) (\(map("\(.scenario) \(.protocol)") | join(", "))): \(if .[0].status == "ok" then "" else "not measured: " end)\(.[0].note | gsub("\\|"; "/"))" )
