#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# tests/test_readme.sh - the C examples in README.md build and behave as the
# README says, against the harness's servers and against a closed port.
# Prints TAP; needs the env from tests/servers.sh (tests/run.sh provides it).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${VOLLEY_BUILD:-$ROOT/build}
T=$(mktemp -d /tmp/volley-readme.XXXXXX)
trap 'rm -rf "$T"' EXIT

n=0
fails=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() {
    n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $1"
    [ -f "$T/log" ] && sed 's/^/# /' "$T/log" | head -n 20
}
check() { local d=$1; shift; if "$@" >"$T/log" 2>&1; then ok "$d"; else not_ok "$d"; fi; }

echo "1..15"
# The ```c blocks, in order: ex1.c, ex2.c, ex3.c, ex4.c (pub/sub), ex5.c
# (Redis Cluster), ex6.c (a queue), ex7.c (streams).
awk -v dir="$T" '/^```c$/ { n++; f = dir "/ex" n ".c"; next }
                 /^```$/  { f = ""; next }
                 f != ""  { print > f }' "$ROOT/README.md"
CC_ARGS=(-std=c11 -Wall -Wextra -Werror -I"$ROOT/include")
LIBS=("$BUILD/libvolley.a" -lhiredis -lmariadb -lev -lssl -lcrypto -lpthread)

check "README example 1 (gather with a deadline) builds" \
    gcc "${CC_ARGS[@]}" "$T/ex1.c" "${LIBS[@]}" -o "$T/ex1"
if timeout 20 "$T/ex1" >"$T/out1" 2>&1 && grep -q 'gather: timed out' "$T/out1" &&
    [ "$(grep -c ': success' "$T/out1")" -eq 2 ]; then
    ok "example 1 prints the gather's timeout and two children OK"
else cp "$T/out1" "$T/log"; not_ok "example 1 prints the gather's timeout and two children OK"; fi

check "README example 2 (Redis and MySQL together) builds" \
    gcc "${CC_ARGS[@]}" "$T/ex2.c" "${LIBS[@]}" -o "$T/ex2"
IFS=, read -r P1 _ <<<"${VL_TEST_REDIS_PORTS:-}"
MY="mysql://${VL_TEST_MYSQL_USER:-}:${VL_TEST_MYSQL_PASSWORD:-}@127.0.0.1:${VL_TEST_MYSQL_PORT:-1}/${VL_TEST_MYSQL_DB:-}"
if timeout 20 "$T/ex2" "redis://127.0.0.1:$P1/0" "$MY" >"$T/out2" 2>&1 &&
    grep -qx 'cache: (miss), db: bob' "$T/out2"; then
    ok "example 2 against the harness servers prints the miss and the row"
else cp "$T/out2" "$T/log"; not_ok "example 2 against the harness servers prints the miss and the row"; fi
# Nothing listens on port 1: a clear failure, exit 1, no hang, no password.
rc=0
timeout 20 "$T/ex2" "redis://127.0.0.1:1/0" "mysql://app:S3cr3tPw@127.0.0.1:1/app" >"$T/out3" 2>&1 || rc=$?
if [ "$rc" -eq 1 ] && grep -q '^failed: item 0: GET: connect redis://127.0.0.1:1/0: Connection refused' "$T/out3" &&
    ! grep -q S3cr3tPw "$T/out3"; then
    ok "example 2 with no servers fails at once with a named, password-free error"
else { echo "rc=$rc"; cat "$T/out3"; } >"$T/log"; not_ok "example 2 with no servers fails at once with a named, password-free error"; fi

# Example 3 is the chain worker: a driver around it moves three lines from a
# Redis list into MySQL and counts the acks.
cat "$T/ex3.c" >"$T/worker.c"
cat >>"$T/worker.c" <<'C'
#include <stdlib.h>

static int run(vl_loop *loop, vl_future *f)
{
    int rc = vl_loop_run_until(loop, f);
    if (rc != VL_OK)
        fprintf(stderr, "setup: %s\n", vl_future_error(f));
    vl_future_free(f);
    return rc;
}

int main(int argc, char **argv)
{
    vl_loop *loop = vl_loop_new();
    worker w = {0};
    const vl_redis_reply *r;
    vl_future *f;
    long long acked = -1;
    int i;

    (void)argc;
    w.queue = vl_redis_new(loop, argv[1], NULL);
    w.acks = vl_redis_pool_new(loop, argv[1], NULL);
    w.db = vl_mysql_pool_new(loop, argv[2], NULL);
    w.left = 3;
    if (run(loop, vl_mysql_pool_query(w.db, "DROP TABLE IF EXISTS log_lines")) ||
        run(loop, vl_mysql_pool_query(w.db, "CREATE TABLE log_lines (line BLOB)")) ||
        run(loop, vl_redis_pool_command(w.acks, "DEL log:queue log:acked")))
        return 2;
    for (i = 0; i < 3; i++)
        if (run(loop, vl_redis_pool_command(w.acks, "RPUSH log:queue line-%d", i)))
            return 2;
    take_job(&w);
    vl_loop_run(loop);
    f = vl_redis_pool_command(w.acks, "GET log:acked");
    vl_loop_run_until(loop, f);
    r = vl_future_redis_reply(f);
    if (r != NULL && vl_redis_reply_str(r, NULL) != NULL)
        acked = atoll(vl_redis_reply_str(r, NULL));
    vl_future_free(f);
    f = vl_mysql_pool_query(w.db, "SELECT COUNT(*) FROM log_lines WHERE line LIKE 'line-%'");
    vl_loop_run_until(loop, f);
    printf("acked %lld rows %s\n", acked,
           vl_future_status(f) == VL_OK
               ? vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, NULL) : "?");
    vl_future_free(f);
    run(loop, vl_mysql_pool_query(w.db, "DROP TABLE log_lines"));
    vl_loop_free(loop);
    return 0;
}
C
check "README example 3 (a chain worker) builds in a driver" \
    gcc "${CC_ARGS[@]}" "$T/worker.c" "${LIBS[@]}" -o "$T/worker"
if timeout 30 "$T/worker" "redis://127.0.0.1:$P1/0" "$MY" >"$T/out4" 2>&1 &&
    grep -qx 'acked 3 rows 3' "$T/out4"; then
    ok "the chain worker moves three lines into MySQL and acks each once"
else cp "$T/out4" "$T/log"; not_ok "the chain worker moves three lines into MySQL and acks each once"; fi
check "README example 4 (pub/sub) builds" \
    gcc "${CC_ARGS[@]}" "$T/ex4.c" "${LIBS[@]}" -o "$T/ex4"
if timeout 20 "$T/ex4" "redis://127.0.0.1:$P1/0" >"$T/out5" 2>&1 &&
    grep -qx 'news: hello' "$T/out5" && grep -qx 'alerts.disk via alerts.\*: full' "$T/out5"; then
    ok "example 4 receives a channel message and a pattern message"
else cp "$T/out5" "$T/log"; not_ok "example 4 receives a channel message and a pattern message"; fi
check "README example 5 (Redis Cluster) builds" \
    gcc "${CC_ARGS[@]}" "$T/ex5.c" "${LIBS[@]}" -o "$T/ex5"
if timeout 30 "$T/ex5" "${VL_TEST_CLUSTER_URL:-redis+cluster://127.0.0.1:1}" >"$T/out6" 2>&1 &&
    grep -qx '100 SETs: ok' "$T/out6" && grep -qx 'MSET with a hash tag: OK' "$T/out6" &&
    grep -qx 'MSET a b: MSET: keys in different slots (CROSSSLOT): a and b' "$T/out6" &&
    grep -q '^primaries: 3, keys: [0-9]' "$T/out6"; then
    ok "example 5 routes by slot, refuses a cross-slot MSET and counts keys on every primary"
else cp "$T/out6" "$T/log"; not_ok "example 5 routes by slot, refuses a cross-slot MSET and counts keys on every primary"; fi
check "README example 6 (a queue and two workers) builds" \
    gcc "${CC_ARGS[@]}" "$T/ex6.c" "${LIBS[@]}" -o "$T/ex6"
if timeout 20 "$T/ex6" >"$T/out7" 2>&1 &&
    [ "$(grep -c '^did ' "$T/out7")" -eq 5 ] && tail -n 1 "$T/out7" | grep -qx 'all 5 done'; then
    ok "example 6 moves five jobs through a bounded queue, then join completes"
else cp "$T/out7" "$T/log"; not_ok "example 6 moves five jobs through a bounded queue, then join completes"; fi
check "README example 7 (a stream server and client) builds" \
    gcc "${CC_ARGS[@]}" "$T/ex7.c" "${LIBS[@]}" -o "$T/ex7"
if timeout 20 "$T/ex7" >"$T/out8" 2>&1 && grep -qx 'HELLO, VOLLEY' "$T/out8"; then
    ok "example 7's server answers the client's line upper-cased"
else cp "$T/out8" "$T/log"; not_ok "example 7's server answers the client's line upper-cased"; fi
[ "$fails" -eq 0 ]
