#!/usr/bin/env bash
# Runs agora's test suite from a fresh checkout.
#
# The Redis tests start their own redis-server on a free port in a temporary directory (they
# never touch a Redis you run yourself). This script installs redis-server first when it is
# missing: with apt-get on Debian and Ubuntu, with brew on macOS. Set REDIS_SERVER to use a
# redis-server binary somewhere else (and REDIS_CLI for redis-cli, which the Redis Cluster
# tests use to join three servers into a cluster). The tests of behaviours written in Python need python3
# (standard library only), installed the same way when it is missing.
#
# Extra arguments go to `cargo test`, for example: scripts/test.sh --test conformance
set -euo pipefail
cd "$(dirname "$0")/.."

# Installs Debian packages, reading the package lists once first (a fresh image has none).
apt_updated=""
apt_install() {
    local sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    if [ -z "$apt_updated" ]; then
        $sudo apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# Installs what provides COMMAND when it is missing: Debian package APT or Homebrew formula
# BREW; otherwise stops with what to install (WANTED), for tests of WHAT.
install_missing() {
    local command="$1" apt="$2" brew="$3" what="$4" wanted="$5"
    if command -v "$command" >/dev/null 2>&1; then return; fi
    echo "$command is not installed; installing it for $what" >&2
    if command -v apt-get >/dev/null 2>&1; then
        apt_install "$apt"
    elif command -v brew >/dev/null 2>&1; then
        brew install "$brew"
    else
        echo "error: cannot install $command here; install $wanted and run again" >&2
        exit 1
    fi
}

if [ -z "${REDIS_SERVER:-}" ]; then
    install_missing redis-server redis-server redis "the Redis tests" "Redis 7 (or set REDIS_SERVER)"
fi
# The Redis Cluster tests join three redis-servers with redis-cli (Debian: redis-tools).
if [ -z "${REDIS_CLI:-}" ]; then
    install_missing redis-cli redis-tools redis "the Redis Cluster tests" "Redis 7 (or set REDIS_CLI)"
fi
install_missing python3 python3 python "the tests of behaviours written in Python" "Python 3.8 or later"

if ! command -v openssl >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    echo "openssl is not installed; installing it for the TLS test" >&2
    apt_install openssl
fi

# The plots' text is drawn with a TrueType font the system has (src/plot/font.rs).
if [ -z "${AGORA_FONT:-}" ] && ! find /usr/share/fonts /usr/local/share/fonts /System/Library/Fonts /Library/Fonts \
        -iname '*sans*.ttf' 2>/dev/null | grep -q . && command -v apt-get >/dev/null 2>&1; then
    echo "no TrueType font found; installing fonts-dejavu-core for the plot tests" >&2
    apt_install fonts-dejavu-core
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo is not installed; get Rust from https://rustup.rs and run again" >&2
    exit 1
fi

cargo test --locked "$@"
