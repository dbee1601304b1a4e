#!/bin/sh
# Runs browser.test.mjs (the web pages in chromium) in a private network namespace in which
# 127.0.0.2-40 are each their own source address. On a stock host, Linux picks 127.0.0.1 as the
# source of every connection to 127.0.0.0/8 (the local route's "src 127.0.0.1"), so all browser
# contexts would be one client; here each address gets a local route with itself as "src", and a
# page at http://127.0.0.K:PORT/ is client 127.0.0.K. Needs root (unshare, BPF steering): else
# skipped (77). The test file: $1 (default browser.test.mjs; browser-tls.test.mjs: over https).
set -eu
test_file=${1:-browser.test.mjs}
cd "$(dirname "$0")"
if [ "$(id -u)" -ne 0 ]; then
    echo "e2e.browser skipped: needs root (a private network namespace and BPF steering)"
    exit 77
fi
exec unshare --net sh -ec '
test_file=$1
ip link set lo up
k=2
while [ $k -le 40 ]; do
    ip route replace local 127.0.0.$k dev lo proto kernel scope host src 127.0.0.$k table local
    k=$((k + 1))
done
exec node --test --test-reporter=spec "$test_file"' sh "$test_file"
