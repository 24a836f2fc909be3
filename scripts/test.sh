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

if [ -z "${REDIS_SERVER:-}" ] && ! command -v redis-server >/dev/null 2>&1; then
    echo "redis-server is not installed; installing it for the Redis tests" >&2
    if command -v apt-get >/dev/null 2>&1; then
        apt_install redis-server
    elif command -v brew >/dev/null 2>&1; then
        brew install redis
    else
        echo "error: cannot install redis-server here; install Redis 7 and run again (or set REDIS_SERVER)" >&2
        exit 1
    fi
fi

# The Redis Cluster tests join three redis-servers with redis-cli (Debian: redis-tools).
if [ -z "${REDIS_CLI:-}" ] && ! command -v redis-cli >/dev/null 2>&1; then
    echo "redis-cli is not installed; installing it for the Redis Cluster tests" >&2
    if command -v apt-get >/dev/null 2>&1; then
        apt_install redis-tools
    elif command -v brew >/dev/null 2>&1; then
        brew install redis
    else
        echo "error: cannot install redis-cli here; install Redis 7 and run again (or set REDIS_CLI)" >&2
        exit 1
    fi
fi

if ! command -v python3 >/dev/null 2>&1; then
    echo "python3 is not installed; installing it for the tests of behaviours written in Python" >&2
    if command -v apt-get >/dev/null 2>&1; then
        apt_install python3
    elif command -v brew >/dev/null 2>&1; then
        brew install python
    else
        echo "error: cannot install python3 here; install Python 3.8 or later and run again" >&2
        exit 1
    fi
fi

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
