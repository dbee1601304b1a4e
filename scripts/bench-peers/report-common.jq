# Number formatting shared by report.jq (scripts/bench) and report-tls.jq (scripts/bench --tls);
# jq -L scripts/bench-peers.

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
