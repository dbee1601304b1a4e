#!/bin/sh
# Runs a command in a private network namespace with lo up (as root; otherwise as it is, and the
# test skips what needs root). Its loopback connections, TIME_WAITs and ports stay out of the
# host's.
if [ "$(id -u)" = 0 ]; then
    exec unshare -n sh -c 'ip link set lo up && exec "$@"' sh "$@"
fi
exec "$@"
