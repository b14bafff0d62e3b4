#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# Client instructions per MySQL request, volley (async) against the
# hand-written Connector/C loop (raw), counted by callgrind.
#
#   bench/callgrind-mysql.sh            SELECT 1 and the point select
#   BUILD=build-x bench/callgrind-mysql.sh
#
# For each of mysql-select1 and mysql-point, and each of async and raw, it
# runs volley-bench under callgrind twice, with N1 and N2 requests
# (VL_CG_N1, VL_CG_N2; default 1000 and 5000), counting only inside the
# mode's run function (--toggle-collect=bench_MODE_run), and takes
#   (instructions at N2 - instructions at N1) / (N2 - N1)
# per request: the difference cancels what a run does once (connecting,
# preparing, the pool's warm-up, closing), so what is left is what each
# request costs the client: volley (or raw's own loop), Connector/C, libev
# and the bench's checks. How many loop iterations a request takes depends
# on the server's timing, so a single figure moves by a few per cent: each
# is measured VL_CG_REPS times (default 3) and the median printed, then the
# ratio async / raw, whose target is <= 1.3x. Both modes use 8 connections
# and 8 requests in flight. About a minute.
#
# Servers: those of the environment when VL_TEST_MYSQL_PORT is set (source
# the env file of tests/servers.sh), otherwise throwaway ones started with
# tests/servers.sh and stopped at the end.

set -eu

# shellcheck source=bench/paths.sh
. "$(dirname "$0")/paths.sh"
N1=${VL_CG_N1:-1000}
N2=${VL_CG_N2:-5000}
REPS=${VL_CG_REPS:-3}

if [ ! -x "$BIN" ]; then
    echo "callgrind-mysql.sh: $BIN is not built; run 'make all' first" >&2
    exit 1
fi
if [ "$N2" -le "$N1" ]; then
    echo "callgrind-mysql.sh: VL_CG_N2 ($N2) must exceed VL_CG_N1 ($N1)" >&2
    exit 2
fi
for tool in valgrind callgrind_annotate; do
    if ! command -v "$tool" >/dev/null; then
        echo "callgrind-mysql.sh: $tool is not installed" >&2
        exit 1
    fi
done

DIR=$(mktemp -d /tmp/volley-cg.XXXXXX)
STARTED=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -n "$STARTED" ]; then
        "$ROOT/tests/servers.sh" stop "$DIR/servers" >/dev/null 2>&1 || true
    fi
    rm -rf "$DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

if [ -z "${VL_TEST_MYSQL_PORT:-}" ]; then
    mkdir "$DIR/servers"
    STARTED=1
    if ! "$ROOT/tests/servers.sh" start "$DIR/servers" 1 >"$DIR/start.log" 2>&1; then
        cat "$DIR/start.log" >&2
        echo "callgrind-mysql.sh: the servers did not start" >&2
        exit 1
    fi
    # shellcheck disable=SC1091
    . "$DIR/servers/env"
fi

# Instructions counted inside bench_MODE_run for one run of N requests.
# --keep: the table the first run fills serves the others (filling it
# under valgrind is slow); the bench's tables stay afterwards.
count() {
    local scenario=$1 mode=$2 n=$3 out=$DIR/cg.$1.$2.$3
    if ! valgrind --tool=callgrind --toggle-collect="bench_${mode}_run" \
        --callgrind-out-file="$out" \
        "$BIN" --no-fork --once --keep -t "$scenario" -m "$mode" -n "$n" --no-ref -q \
        >"$out.log" 2>&1; then
        cat "$out.log" >&2
        echo "callgrind-mysql.sh: $scenario $mode -n $n failed" >&2
        exit 1
    fi
    callgrind_annotate "$out" | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }'
}

# The median over REPS of the instructions per request of one mode.
per_request() {
    local scenario=$1 mode=$2 a b
    for _ in $(seq "$REPS"); do
        a=$(count "$scenario" "$mode" "$N1")
        b=$(count "$scenario" "$mode" "$N2")
        echo "$(( (b - a) / (N2 - N1) ))"
    done | sort -n | sed -n "$(( (REPS + 1) / 2 ))p"
}

printf '%-14s %12s %12s %8s  %s\n' scenario "async ins" "raw ins" ratio "target <= 1.3x"
for scenario in mysql-select1 mysql-point; do
    per=()
    for mode in async raw; do
        per+=("$(per_request "$scenario" "$mode")")
    done
    awk -v s="$scenario" -v a="${per[0]}" -v r="${per[1]}" 'BEGIN {
        ratio = a / r
        printf "%-14s %12d %12d %7.3fx  %s\n", s, a, r, ratio, ratio <= 1.3 ? "met" : "NOT met"
    }'
done
echo "(instructions per request, from -n $N1 and -n $N2 runs under callgrind; median of $REPS)"
