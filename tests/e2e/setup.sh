#!/usr/bin/env bash
# Installs the e2e tests' node dependencies (tests/e2e/node_modules) from package-lock.json, and
# those of the app e2e.balance_socketio runs (examples/balance/node, its own package-lock.json).
# Idempotent: does nothing when node_modules matches the lock file. Needs node >= 18 and npm.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

for tool in node npm; do
    command -v "$tool" >/dev/null || {
        echo "tests/e2e/setup.sh: $tool is not installed (Debian: apt-get install nodejs npm)" >&2
        exit 1
    }
done

# npm writes node_modules/.package-lock.json on install; when it equals the lock file's package
# list, the install is current.
# npm_ci DIR PACKAGE: npm ci in DIR unless its node_modules was installed from this lock file
# (and holds PACKAGE).
npm_ci() (
    cd "$1"
    local stamp=node_modules/.steerchat-lock.sha256 want
    want=$(sha256sum package-lock.json | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "node_modules/$2/package.json" ]; then
        exit 0
    fi
    echo "==> $1: npm ci" >&2
    npm ci --no-audit --no-fund --loglevel=error >&2
    echo "$want" >"$stamp"
)
npm_ci . ws
npm_ci ../../examples/balance/node socket.io
