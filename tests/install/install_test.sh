#!/usr/bin/env bash
# install.layout: `cmake --install` into a temporary DESTDIR with the default prefix, then checks
# what an operator gets: every file in its place, the systemd unit naming the installed binary
# and config and passing `systemd-analyze verify`, the man page rendering without a groff
# warning, the scripts running from the install directory (no repository around them).
#   tests/install/install_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
dest=$(mktemp -d /tmp/steerchat-install-test.XXXXXX)
trap 'rm -rf "$dest"' EXIT
fail() {
    echo "install.layout: $*" >&2
    exit 1
}

DESTDIR=$dest cmake --install "$build" --prefix /usr/local >"$dest.log" 2>&1 ||
    { cat "$dest.log" >&2; rm -f "$dest.log"; fail "cmake --install failed"; }
rm -f "$dest.log"
root=$dest/usr/local

for f in bin/steerchat bin/steerchat-inspect bin/steerchat-tune; do
    [ -x "$root/$f" ] || fail "$f is missing or not executable"
done
for f in lib/systemd/system/steerchat.service lib/sysusers.d/steerchat.conf \
    etc/steerchat/steerchat.conf share/man/man1/steerchat.1 share/doc/steerchat/README.md \
    share/doc/steerchat/operations.md; do
    [ -s "$root/$f" ] || fail "$f is missing or empty"
done
cmp -s "$root/etc/steerchat/steerchat.conf" "$src/packaging/steerchat.conf" ||
    fail "the installed config is not packaging/steerchat.conf"
echo "files: ok"

# The unit starts the installed binary with the installed config.
unit=$root/lib/systemd/system/steerchat.service
grep -qx 'ExecStart=/usr/local/bin/steerchat --config /usr/local/etc/steerchat/steerchat.conf' "$unit" ||
    fail "ExecStart does not name /usr/local/bin/steerchat and its config: $(grep ExecStart= "$unit")"
grep -qx 'Type=notify' "$unit" || fail "the unit is not Type=notify"
# systemd-analyze verify checks that ExecStart is executable, so a copy of the unit whose
# ExecStart (and --config) point into the DESTDIR is verified; the man page named by
# Documentation= is not installed on this host yet (--man=no; it is checked below).
mkdir -p "$dest/verify"
sed -e "s|=/usr/local/|=$root/|" -e "s| /usr/local/| $root/|g" "$unit" >"$dest/verify/steerchat.service"
grep -q "^ExecStart=$root/bin/steerchat --config $root/etc/" "$dest/verify/steerchat.service" ||
    fail "could not point the unit's copy into the DESTDIR"
out=$(systemd-analyze verify --man=no "$dest/verify/steerchat.service" 2>&1) ||
    fail "systemd-analyze verify failed: $out"
if [ -n "$out" ]; then fail "systemd-analyze verify warned: $out"; fi
echo "unit: systemd-analyze verify ok"
# systemd-sysusers accepts the user's definition (dry run: --root makes it write only there).
mkdir -p "$dest/etc"
cp /etc/passwd /etc/group "$dest/etc/" 2>/dev/null || true
out=$(systemd-sysusers --root="$dest" "$root/lib/sysusers.d/steerchat.conf" 2>&1) ||
    fail "systemd-sysusers refused lib/sysusers.d/steerchat.conf: $out"
grep -q '^steerchat:' "$dest/etc/passwd" || fail "systemd-sysusers made no user steerchat: $out"
echo "sysusers: ok"

# The man page: groff parses it without a warning, and it renders the options.
man1=$root/share/man/man1/steerchat.1
warn=$(groff -man -Tutf8 -ww -z "$man1" 2>&1) || fail "groff failed on steerchat.1: $warn"
[ -z "$warn" ] || fail "groff warns on steerchat.1: $warn"
text=$(MANWIDTH=100 man -l "$man1" 2>/dev/null)
for want in "--config" "--version" "--log-format" "--port" "SIGNALS" "CONFIGURATION FILE"; do
    grep -q -- "$want" <<<"$text" || fail "the man page does not show '$want'"
done
echo "man page: ok"

# The binary and the scripts from the install directory, run from somewhere else.
cd /
"$root/bin/steerchat" --version | grep -q '^steerchat [0-9]' || fail "steerchat --version"
"$root/bin/steerchat-inspect" --help | grep -q '^usage: steerchat-inspect' ||
    fail "steerchat-inspect --help"
"$root/bin/steerchat-tune" --help | grep -q '^usage: steerchat-tune' || fail "steerchat-tune --help"
"$root/bin/steerchat-tune" >/dev/null || fail "steerchat-tune (show) failed"
echo "binary and scripts from the install directory: ok"
