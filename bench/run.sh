#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# Runs volley-bench against throwaway servers: `make bench` calls this.
#
# Starts K redis-server instances (separate hosts, K=4 by default), the TLS
# redis-server, the Redis Cluster (the cluster-* scenarios) and one mariadbd
# with tests/servers.sh, which starts its other servers too, runs
# $BUILD/bench/volley-bench (the default suite, or whatever arguments are
# given here), writes bench/results/latest.{json,csv,svg} and always stops
# the servers, also on failure or Ctrl-C. The arguments are checked before
# any server starts; --help prints volley-bench's help and this script's.
#
#   bench/run.sh                       the default suite (about two minutes)
#   bench/run.sh -x 10                 every run ten times longer
#   VL_BENCH_HOSTS=64 bench/run.sh --scale
#                                      the full scale sweep up to 64 hosts
#   bench/run.sh -t redis-get -m async,raw -n 1M -c 100 -w 1000
#
# Environment: BUILD (the build directory, default build; `make BUILD=x
# bench` passes it), VL_BENCH_HOSTS (Redis servers to start, default 4),
# VL_BENCH_RESULTS (output directory, default bench/results),
# VL_BENCH_TIMEOUT (seconds before volley-bench is stopped, default 900).

set -eu

# shellcheck source=bench/paths.sh
. "$(dirname "$0")/paths.sh"
SERVERS=$ROOT/tests/servers.sh
RESULTS=${VL_BENCH_RESULTS:-$ROOT/bench/results}
HOSTS=${VL_BENCH_HOSTS:-4}
LIMIT=${VL_BENCH_TIMEOUT:-900}

usage() {
    cat <<'EOF'

bench/run.sh [volley-bench options] starts the servers (tests/servers.sh),
runs volley-bench with --json and --csv into bench/results, draws
latest.svg and stops the servers. With --redis URL or --mysql URL it
starts no server and runs against those given. Environment: BUILD (the
build directory, default build), VL_BENCH_HOSTS (Redis servers, default
4), VL_BENCH_RESULTS (the output directory), VL_BENCH_TIMEOUT (seconds,
default 900).
EOF
}

# Help and bad arguments are answered before anything starts or is
# removed: --help has no side effect, and a misspelt scenario or mode
# fails at once.
EXTERNAL=0
for arg in "$@"; do
    case $arg in
        -h | --help)
            if [ -x "$BIN" ]; then "$BIN" --help; echo; fi
            usage
            exit 0
            ;;
        --redis | --redis=* | --mysql | --mysql=*) EXTERNAL=1 ;;
    esac
done
if [ ! -x "$BIN" ]; then
    echo "run.sh: $BIN is not built; run 'make all' first" >&2
    exit 1
fi
"$BIN" --check-args "$@" || exit $?
mkdir -p "$RESULTS"
# Results of an earlier run must not pass for this one's.
rm -f "$RESULTS/latest.json" "$RESULTS/latest.csv" "$RESULTS/latest.svg"

# A short directory name: unix socket paths are limited to 107 bytes.
DIR=$(mktemp -d /tmp/volley-bench.XXXXXX)

BENCH_PID=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    [ "$EXTERNAL" -eq 1 ] || "$SERVERS" stop "$DIR" || true
    rm -rf "$DIR"
    exit "$rc"
}
# On a signal, stop volley-bench first (it stops its proxy and its current
# run), then exit, which makes the EXIT trap stop the servers.
on_signal() {
    if [ -n "$BENCH_PID" ]; then
        kill -TERM "$BENCH_PID" 2>/dev/null || true
        wait "$BENCH_PID" 2>/dev/null || true
    fi
    exit "$1"
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap 'on_signal 129' HUP

t0=$SECONDS
if [ "$EXTERNAL" -eq 1 ]; then
    echo "run.sh: --redis or --mysql given: no server started"
    # Only the servers named on the command line: none from the caller's
    # environment (a sourced tests/servers.sh env) slips in.
    unset VL_TEST_REDIS_PORTS VL_TEST_MYSQL_PORT VL_TEST_MYSQL_SOCK VL_TEST_REDIS_TLS_PORT \
        VL_TEST_CLUSTER_URL VL_TEST_TLS_DIR
else
    if ! "$SERVERS" start "$DIR" "$HOSTS" >"$DIR/start.log" 2>&1; then
        cat "$DIR/start.log" >&2
        echo "run.sh: the servers did not start" >&2
        exit 1
    fi
    tail -n 1 "$DIR/start.log"
    # shellcheck disable=SC1091
    . "$DIR/env"
fi

# In the background so that `wait` returns as soon as a signal arrives.
status=0
timeout -k 10 "$LIMIT" "$BIN" \
    --json "$RESULTS/latest.json" --csv "$RESULTS/latest.csv" "$@" &
BENCH_PID=$!
wait "$BENCH_PID" || status=$?
BENCH_PID=
if [ "$status" -eq 124 ]; then
    echo "run.sh: volley-bench did not finish in $LIMIT s" >&2
fi

if [ -s "$RESULTS/latest.csv" ] && command -v gnuplot >/dev/null; then
    if gnuplot -e "csv='$RESULTS/latest.csv'; svg='$RESULTS/latest.svg'" \
        "$ROOT/bench/plot.gp"; then
        echo "run.sh: wrote $RESULTS/latest.json, latest.csv and latest.svg"
    else
        echo "run.sh: gnuplot failed; the chart is missing" >&2
        [ "$status" -ne 0 ] || status=1
    fi
fi
echo "run.sh: done in $((SECONDS - t0)) s (exit $status)"
exit "$status"
