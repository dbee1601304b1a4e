# Shared by scripts/run, scripts/test and scripts/bench: install what is missing, build.
# Sourced, not executed.

STEERCHAT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD_DIR=${BUILD_DIR:-$STEERCHAT_ROOT/build}
# The AddressSanitizer + UndefinedBehaviorSanitizer tree scripts/test builds beside it.
ASAN_BUILD_DIR=${ASAN_BUILD_DIR:-$STEERCHAT_ROOT/build-asan}

# Debian 12 packages the project needs to build, run and test.
STEERCHAT_PACKAGES=(
    g++ cmake ninja-build pkg-config make
    clang clang-14 libclang-rt-14-dev      # BPF target; libFuzzer and sanitizers
    libbpf-dev libelf-dev zlib1g-dev bpftool
    libboost1.81-dev libboost-json1.81-dev libboost-program-options1.81-dev
    libfmt-dev libssl-dev libseccomp-dev libsystemd-dev
    help2man man-db groff-base systemd   # man page at build time; tests/install checks the unit
    libgtest-dev libbenchmark-dev
    iproute2 util-linux jq curl procps
    prometheus                           # promtool: integration.Metrics checks a real /metrics scrape
    redis-server                         # e2e.balance_socketio: the example app's Redis adapter
    chromium                             # e2e.browser drives the web pages (playwright-core)
)

log() { printf '==> %s\n' "$*" >&2; }

# Installs those of the given Debian packages (and node/npm) that are missing (needs root).
install_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    # Node.js for the independent test clients (tests/e2e); any node >= 18 already on PATH does.
    command -v node >/dev/null || missing+=(nodejs)
    command -v npm >/dev/null || missing+=(npm)
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        log "missing packages: ${missing[*]}"
        log "install them as root: apt-get update && apt-get install -y ${missing[*]}"
        return 1
    fi
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# Installs the packages above that are not installed yet.
install_deps() {
    install_packages "${STEERCHAT_PACKAGES[@]}"
}

# configure_and_build DIR CMAKE_ARGS...: configures DIR once (with those arguments), then builds
# it with one job per CPU.
configure_and_build() {
    local dir=$1 gen=()
    shift
    command -v ninja >/dev/null && [ ! -f "$dir/Makefile" ] && gen=(-G Ninja)
    if [ ! -f "$dir/CMakeCache.txt" ]; then
        log "configuring $dir"
        cmake -S "$STEERCHAT_ROOT" -B "$dir" "${gen[@]}" "$@" >&2
    fi
    log "building $dir"
    cmake --build "$dir" -j "$(nproc)" >&2
}

# Configures (once) and builds the Release tree in $BUILD_DIR.
build() {
    configure_and_build "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release
}

# Configures (once) and builds the sanitizer tree in $ASAN_BUILD_DIR: everything but the benchmarks
# with -fsanitize=address,undefined at -O1 (Debug: assertions on); its tests are named asan.*.
build_sanitized() {
    configure_and_build "$ASAN_BUILD_DIR" -DCMAKE_BUILD_TYPE=Debug \
        -DSTEERCHAT_SANITIZE=address,undefined
}

# scripts/bench's peers: Debian packages, then the npm packages of scripts/bench-peers from its
# package-lock.json (npm ci; skipped when node_modules already matches the lock file).
BENCH_PACKAGES=(nginx redis-server redis-tools gnuplot-nox jq curl procps)
install_bench_deps() {
    install_packages "${BENCH_PACKAGES[@]}" || return 1
    local dir=$STEERCHAT_ROOT/scripts/bench-peers
    local stamp=$dir/node_modules/.steerchat-lock.sha256 want
    want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
        [ -f "$dir/node_modules/socket.io/package.json" ]; then
        return 0
    fi
    log "scripts/bench-peers: npm ci"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
    echo "$want" >"$stamp"
}
