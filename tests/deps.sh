#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# Installs the Debian packages needed to build volley and run its tests
# (make test, make asan, make valgrind, make fuzz). Plain `make` needs only
# the compiler and the -dev packages.
#
# When everything is installed already it only queries dpkg and exits, so it
# is cheap enough to run before every build. Otherwise it needs root, runs
# "apt-get update" once and installs exactly the missing packages.

set -eu

PACKAGES=(
    build-essential
    pkg-config
    libhiredis-dev
    libev-dev
    libmariadb-dev
    libcmocka-dev
    libjansson-dev
    # TLS: lib/tls.c builds on OpenSSL 3; the openssl command line tool
    # makes the test certificates (tests/tls_certs.sh).
    libssl-dev
    openssl
    redis-server
    redis-tools
    mariadb-server
    mariadb-client
    # make test-galera: the Galera provider, and what its rsync state
    # transfer runs (rsync, and ss to watch the transfer's port).
    galera-4
    rsync
    iproute2
    gnuplot-nox
    # tools/examples: the HTTP service runs libmicrohttpd on the loop; its
    # test drives it with curl and loads it with wrk.
    libmicrohttpd-dev
    curl
    wrk
    jq
    python3
    # make fuzz and the fuzz smoke in make test: clang-14 builds the
    # libFuzzer targets, libclang-rt-14-dev has libFuzzer's runtime and the
    # sanitizers' for clang, llvm-14 the symbolizer for readable reports.
    clang-14
    libclang-rt-14-dev
    llvm-14
    # make valgrind.
    valgrind
)

# dpkg-query reports "install ok installed" only for a fully installed
# package; anything else (unknown, removed, half-configured) needs apt-get.
missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [ "$status" != "install ok installed" ]; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: missing packages (run as root to install them): ${missing[*]}" >&2
    exit 1
fi

echo "deps.sh: installing ${missing[*]}"

# Installing redis-server or mariadb-server makes their maintainer scripts
# start the system-wide services. The tests never use those (they start
# private servers on random ports), so a policy-rc.d that answers 101
# ("action forbidden") keeps invoke-rc.d from starting them. An existing
# policy is left as it is, and ours is removed afterwards however the
# script ends.
POLICY=/usr/sbin/policy-rc.d
LOG=""
cleanup() {
    if [ "${created_policy:-0}" -eq 1 ]; then
        rm -f "$POLICY"
    fi
    if [ -n "$LOG" ]; then
        rm -f "$LOG"
    fi
}
trap cleanup EXIT
# Turning signals into a normal exit makes the EXIT trap do the cleanup.
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

created_policy=0
if [ ! -e "$POLICY" ]; then
    created_policy=1
    printf '#!/bin/sh\n# Temporary, from volley tests/deps.sh.\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
fi

# apt-get is chatty; its output is kept and shown only if it fails, so that
# a successful run prints just the line above.
LOG=$(mktemp /tmp/volley-deps.XXXXXX)
if ! apt-get update >"$LOG" 2>&1 ||
    ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        "${missing[@]}" >>"$LOG" 2>&1; then
    echo "deps.sh: apt-get failed:" >&2
    tail -n 30 "$LOG" >&2
    exit 1
fi

# If a service was started anyway (for instance because a policy-rc.d that
# was already there allowed it), it is left alone: system services are not
# ours to stop.
