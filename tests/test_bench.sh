#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# tests/test_bench.sh - bench/run.sh and volley-bench: arguments checked
# before anything starts, and tiny runs (-n small) whose output has the
# promised shape: rows at equal concurrency, labelled speedups, verdicts,
# repeats, the open loop, --time, --warmup, --redis/--mysql URLs and the
# cleanup of keys and tables. Never asserts a speed. Prints TAP; needs the
# env from tests/servers.sh (tests/run.sh provides it).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${VOLLEY_BUILD:-$ROOT/build}
BIN=$BUILD/bench/volley-bench
T=$(mktemp -d /tmp/volley-bench-test.XXXXXX)
trap 'rm -rf "$T"' EXIT
export BUILD

n=0
fails=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() {
    n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $1"
    [ -f "$T/log" ] && sed 's/^/# /' "$T/log" | head -n 30
}
# check DESCRIPTION CONDITION...: ok when the condition (a command) holds.
check() { local d=$1; shift; if "$@" >>"$T/log" 2>&1; then ok "$d"; else not_ok "$d"; fi; }
# bench OUT ARGS...: runs volley-bench with a watchdog, output in $T/OUT,
# its status in $T/OUT.rc.
bench() {
    local out=$1; shift
    timeout -k 5 120 "$BIN" "$@" >"$T/$out" 2>&1
    echo $? >"$T/$out.rc"
    cp "$T/$out" "$T/log"
}
rc_is() { [ "$(cat "$T/$1.rc")" = "$2" ]; }
has() { grep -q -- "$2" "$T/$1"; }
# The table row of LABEL in output OUT (the first).
row() { grep -m1 -E "^$2 +[0-9]" "$T/$1"; }
# Column K (1-based, after the label of W words) of that row.
col() { row "$1" "$2" | awk -v k="$3" -v w="$4" '{ print $(k + w) }'; }
redis_keys() { redis-cli -h 127.0.0.1 -p "$1" --scan --pattern 'bench:*' | wc -l; }
mysql_tables() {
    MYSQL_PWD=${VL_TEST_MYSQL_PASSWORD:-} mariadb --no-defaults -h 127.0.0.1 \
        -P "$VL_TEST_MYSQL_PORT" -u "$VL_TEST_MYSQL_USER" -N -B \
        -e "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '$VL_TEST_MYSQL_DB' AND table_name IN ('bench_kv', 'bench_ins')"
}

echo "1..29"
IFS=, read -r P1 _ <<<"${VL_TEST_REDIS_PORTS:-}"

# 1-4: run.sh answers --help and bad arguments before any server starts
# and before the results of an earlier run are removed.
mkdir -p "$T/results"
echo old >"$T/results/latest.csv"
VL_BENCH_RESULTS=$T/results timeout 20 "$ROOT/bench/run.sh" --help >"$T/help" 2>&1
echo $? >"$T/help.rc"
cp "$T/help" "$T/log"
check "run.sh --help exits 0 with the usage of both" \
    eval 'rc_is help 0 && has help "usage: volley-bench" && has help "bench/run.sh \[volley-bench options\]" && has help -- "--rate N"'
check "run.sh --help starts no server and keeps the old results" \
    eval '! has help "servers.sh: started" && [ "$(cat "$T/results/latest.csv")" = old ]'
VL_BENCH_RESULTS=$T/results timeout 20 "$ROOT/bench/run.sh" -t redis-get,redis-gett >"$T/typo" 2>&1
echo $? >"$T/typo.rc"
cp "$T/typo" "$T/log"
check "run.sh with a misspelt scenario fails with 2 before starting anything" \
    eval 'rc_is typo 2 && has typo "unknown scenario .redis-gett." && ! has typo "started" && [ "$(cat "$T/results/latest.csv")" = old ]'
VL_BENCH_RESULTS=$T/results timeout 20 "$ROOT/bench/run.sh" -m sync,asink >"$T/mode" 2>&1
echo $? >"$T/mode.rc"
cp "$T/mode" "$T/log"
check "run.sh with a misspelt mode fails with 2 before starting anything" \
    eval 'rc_is mode 2 && has mode "unknown mode .asink." && [ "$(cat "$T/results/latest.csv")" = old ]'

# 5-6: more bad arguments, refused by --check-args without a server.
check "--rate 0, --time -1, -r 0 and a --redis URL with a password are refused" \
    eval '! env -i "$BIN" --check-args --rate 0 && ! env -i "$BIN" --check-args --time -1 && ! env -i "$BIN" --check-args -r 0 && ! env -i "$BIN" --check-args --redis redis://u:pw@127.0.0.1:1'
env -i "$BIN" --check-args --redis redis://u:hunter2@127.0.0.1:1 >"$T/pw" 2>&1
cp "$T/pw" "$T/log"
check "a refused URL's password is not printed" eval '! has pw hunter2'

# 7-14: one cpu scenario, every mode, twice each.
bench get -t redis-get -n 300 -r 2 --no-ref --csv "$T/get.csv" --json "$T/get.json"
check "redis-get -n 300 -r 2 exits 0" rc_is get 0
check "it has the rows sync, threads, async, raw and async at 1 and at 4 in flight" \
    eval 'row get sync && row get threads && row get async && row get raw && row get "async 1 in flight" && row get "async 4 in flight"'
check "async 1 in flight has 1 connection, window 1; async 4 in flight 4 and 4" \
    eval '[ "$(col get "async 1 in flight" 2 4)" = 1 ] && [ "$(col get "async 1 in flight" 3 4)" = 1 ] && [ "$(col get "async 4 in flight" 2 4)" = 4 ] && [ "$(col get "async 4 in flight" 3 4)" = 4 ]'
check "every row ran twice and shows its min-max" \
    eval '[ "$(col get sync 6 1)" = 2 ] && [ "$(col get "async 4 in flight" 6 4)" = 2 ] && row get raw | grep -qE " 2 [0-9]+-[0-9]+ "'
check "each speedup names what it compares with, at equal load where there is one" \
    eval 'row get threads | grep -qE "[0-9.]+x sync@1$" && row get "async 1 in flight" | grep -qE "x sync@1$" && row get "async 4 in flight" | grep -qE "x threads@4$" && row get async | grep -qE "x sync@1$"'
check "the scenario ends with its verdict at equal concurrency" \
    eval 'grep -qE "^verdict: redis-get: async at 1 in flight [0-9.]+x sync; at 4 in flight [0-9.]+x sync, [0-9.]+x threads, using [0-9.]+x the CPU per request; at its own load \(4 connections, 64 in flight\) [0-9.]+x sync$" "$T/get"'
check "the CSV has a row per run with speedup_over, runs, ops_min and ops_max" \
    eval 'head -1 "$T/get.csv" | grep -q ",speedup_over,runs,ops_min,ops_max$" && [ "$(grep -c "^[0-9]*,\"redis-get\"" "$T/get.csv")" -eq 6 ] && grep -q "\"threads@4\",2," "$T/get.csv"'
check "the keys are gone after the run (SCAN of every server)" \
    eval 'has get "cleanup: removed" && (for p in ${VL_TEST_REDIS_PORTS//,/ }; do [ "$(redis_keys "$p")" -eq 0 ] || exit 1; done)'

# 15-17: --keep, and the MySQL tables dropped.
bench keep -t redis-get -m async -n 100 --no-ref --keep
check "--keep leaves the keys" eval 'rc_is keep 0 && [ "$(redis_keys "$P1")" -gt 0 ]'
bench my -t mysql-point -m sync,async -n 100 --no-ref
check "mysql-point -n 100 exits 0 with its verdict" \
    eval 'rc_is my 0 && grep -q "^verdict: mysql-point: async at 1 in flight" "$T/my"'
check "its tables are dropped at the end" eval '[ "$(mysql_tables)" -eq 0 ]'

# 18-19: the cluster's keys go too, from every primary.
bench cl -t cluster-get -n 200 --no-ref
check "cluster-get -n 200 exits 0" eval 'rc_is cl 0 && row cl "async cluster"'
check "no bench key is left on any cluster node" \
    eval '[ -n "${VL_TEST_CLUSTER_URL:-}" ] && (for p in $(echo "${VL_TEST_CLUSTER_URL#*://}" | tr , "\n" | sed "s/.*://"); do [ "$(redis_keys "$p")" -eq 0 ] || exit 1; done)'

# The loop group against one loop: both rows, every aggregate checked, a ratio.
bench lg -t loop-group -n 100 -r 1 --no-ref
check "loop-group -n 100 exits 0 with its ratio line" \
    eval 'rc_is lg 0 && grep -qE "^loop-group: group of [0-9]+ loops [0-9]+ jobs/s, one loop [0-9]+ jobs/s: [0-9.]+x one loop$" "$T/lg"'

# 20-22: the open loop.
bench rate -t redis-get -m sync,async,raw --rate 400 -n 80 --no-ref
check "--rate 400 -n 80 exits 0, raw left out" \
    eval 'rc_is rate 0 && row rate sync && row rate async && ! row rate raw && has rate "rows left out"'
check "its rows send 80 requests each" \
    eval '[ "$(col rate sync 4 1)" = 80 ] && [ "$(col rate "async 1 in flight" 4 4)" = 80 ]'
check "its verdict compares latency under that load" \
    eval 'grep -qE "^verdict: redis-get: open loop at 400/s, p50/p99: sync [0-9]+/[0-9]+ us; async@1 [0-9]+/[0-9]+ us; async@64 [0-9]+/[0-9]+ us;$" "$T/rate"'

# 23-24: --time and --warmup.
bench time -t redis-get -m async --time 0.3 --no-ref
check "--time 0.3 sizes the row (not the default 100000 requests)" \
    eval 'rc_is time 0 && [ "$(col time async 4 1)" -gt 0 ] && [ "$(col time async 4 1)" -ne 100000 ]'
bench warm -t redis-get -m sync --warmup 50 -n 100 --no-ref
check "--warmup 50 -n 100 exits 0 and reports the 100 timed requests" \
    eval 'rc_is warm 0 && [ "$(col warm sync 4 1)" = 100 ]'

# 25-27: an existing server by URL, the environment's servers unset.
env -u VL_TEST_REDIS_PORTS -u VL_TEST_MYSQL_PORT -u VL_TEST_MYSQL_SOCK \
    timeout -k 5 120 "$BIN" --redis "redis://localhost:$P1" -t redis-get -m async -n 100 --no-ref >"$T/url" 2>&1
echo $? >"$T/url.rc"
cp "$T/url" "$T/log"
check "--redis redis://localhost:PORT runs against that server" eval 'rc_is url 0 && row url async'
env -u VL_TEST_REDIS_PORTS -u VL_TEST_MYSQL_PORT -u VL_TEST_MYSQL_SOCK -u VL_TEST_MYSQL_USER \
    -u VL_TEST_MYSQL_PASSWORD -u VL_TEST_MYSQL_DB timeout -k 5 120 "$BIN" \
    --mysql "mysql://$VL_TEST_MYSQL_USER:${VL_TEST_MYSQL_PASSWORD:-}@127.0.0.1:$VL_TEST_MYSQL_PORT/$VL_TEST_MYSQL_DB" \
    -t mysql-select1 -m sync -n 50 --no-ref >"$T/murl" 2>&1
echo $? >"$T/murl.rc"
cp "$T/murl" "$T/log"
check "--mysql mysql://USER:PASS@HOST:PORT/DB runs against that server" \
    eval 'rc_is murl 0 && row murl sync'
env -u VL_TEST_REDIS_PORTS -u VL_TEST_MYSQL_PORT -u VL_TEST_MYSQL_SOCK \
    "$BIN" --check-args --redis "redis://127.0.0.1:$P1" -t redis-delay,redis-get >"$T/delay" 2>&1
echo $? >"$T/delay.rc"
cp "$T/delay" "$T/log"
check "with --redis the default suite is valid, and redis-delay needs loopback only" \
    eval 'env -u VL_TEST_REDIS_PORTS "$BIN" --check-args --redis "redis://127.0.0.1:$P1" && rc_is delay 0'

# 28: run.sh with --redis starts no server and writes its results.
VL_BENCH_RESULTS=$T/results timeout 120 "$ROOT/bench/run.sh" --redis "redis://127.0.0.1:$P1" \
    -t redis-get -m async -n 100 --no-ref >"$T/ext" 2>&1
echo $? >"$T/ext.rc"
cp "$T/ext" "$T/log"
check "run.sh --redis URL starts no server, runs and writes latest.csv" \
    eval 'rc_is ext 0 && has ext "no server started" && ! has ext "servers.sh: started" && grep -q "\"redis-get\"" "$T/results/latest.csv"'

[ "$fails" -eq 0 ]
