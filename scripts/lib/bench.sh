# Process handling shared by scripts/bench and scripts/bench-tls (sourced after common.sh): every
# pid a benchmark starts is ended, with its descendants, whatever happens.
# shellcheck shell=bash

alive() {  # pid: running (a child that exited stays a zombie until waited for)
    local st
    st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    st=${st##*) }
    [ "${st%% *}" != Z ]
}
descendants() {  # pid -> its descendants, deepest last
    local c
    for c in $(pgrep -P "$1" 2>/dev/null); do
        echo "$c"
        descendants "$c"
    done
}
stop_pids() {  # pids...: TERM, wait up to 6 s, then KILL what is left (and its descendants)
    local p all=() deadline
    for p in "$@"; do
        kill -0 "$p" 2>/dev/null || continue
        local kids=()
        mapfile -t kids < <(descendants "$p")
        all+=("$p" "${kids[@]}")
        kill -TERM "$p" 2>/dev/null || true
    done
    [ ${#all[@]} -gt 0 ] || return 0
    deadline=$((SECONDS + 6))
    while [ $SECONDS -lt $deadline ]; do
        local alive=0
        for p in "${all[@]}"; do alive "$p" && alive=1; done
        [ $alive -eq 0 ] && break
        sleep 0.1
    done
    for p in "${all[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for p in "$@"; do wait "$p" 2>/dev/null || true; done
}
die_peer() {  # message, log files...
    local msg=$1 f
    shift
    log "$msg"
    for f in "$@"; do
        [ -f "$f" ] || continue
        echo "---- last lines of $f" >&2
        tail -n 30 "$f" >&2
    done
    exit 1
}

wait_ready() {  # what, timeout s, pids to watch, -- command (until it succeeds)
    local what=$1 timeout=$2 pids=() p
    shift 2
    while [ "$1" != -- ]; do pids+=("$1"); shift; done
    shift
    local deadline=$((SECONDS + timeout))
    while [ $SECONDS -lt $deadline ]; do
        for p in "${pids[@]}"; do
            alive "$p" || { echo "$what: process $p exited"; return 1; }
        done
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "$what: not ready after ${timeout} s"
    return 1
}

