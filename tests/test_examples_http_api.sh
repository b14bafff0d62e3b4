#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# tests/test_examples_http_api.sh - tools/examples/http_api (libmicrohttpd on
# the volley loop) and its thread-per-connection twin http_api_threads,
# against the harness's first redis-server: every route's JSON, a value of
# quotes, backslashes and UTF-8 stored and returned intact, a task polled
# until done, 100 concurrent tasks, a Redis on a closed port answered with
# 503 within the deadline, SIGTERM exiting 0; then wrk against /red on both
# builds, whose figures are printed as comments and never asserted. Prints
# TAP; needs the env from tests/servers.sh (tests/run.sh provides it), curl,
# jq and wrk.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${VOLLEY_BUILD:-$ROOT/build}
ASYNC=$BUILD/tools/examples/http_api
THREADS=$BUILD/tools/examples/http_api_threads
T=$(mktemp -d /tmp/volley-http.XXXXXX)
SPID=""
REDIS_PID=""

cleanup() {
    [ -n "$SPID" ] && kill -KILL "$SPID" 2>/dev/null
    # Never leave the shared redis-server stopped.
    [ -n "$REDIS_PID" ] && kill -CONT "$REDIS_PID" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

n=0
fails=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() {
    n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $1"; shift
    for l in "$@"; do echo "# $l"; done
}
check() { # check DESC 'SHELL CONDITION' (evaluated here, so $vars are current)
    if eval "$2"; then ok "$1"; else not_ok "$1" "failed: $2" "code $code body $(head -c 300 "$T/body")"; fi
}

PLAN=58
echo "1..$PLAN"
for c in curl jq wrk redis-cli; do
    command -v "$c" >/dev/null || MISSING="$c"
done
if [ -z "${VL_TEST_REDIS_PORTS:-}" ] || [ ! -x "$ASYNC" ] || [ ! -x "$THREADS" ] ||
    [ -n "${MISSING:-}" ]; then
    echo "# the harness env, ${MISSING:-a tool}, $ASYNC or $THREADS is missing"
    for _ in $(seq "$PLAN"); do not_ok "setup"; done
    exit 1
fi
IFS=, read -r RP _ <<<"$VL_TEST_REDIS_PORTS"
REDIS="redis://127.0.0.1:$RP"
rcli() { timeout 10 redis-cli -p "$RP" "$@"; }
# A port nobody listens on: bind-test a few until one refuses.
CLOSED=1
for p in 1 9 13 17 19; do
    if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then CLOSED=$p; break; fi
done
K="http-api-test:$$"
rcli DEL "$K" "$K:t" >/dev/null

# start BIN URL [ARGS]: starts a server on a free port, sets SPID and PORT.
# Returns 1 when it did not say "listening on" within 10 s.
start() {
    local bin=$1 url=$2
    shift 2
    : >"$T/out"
    "$bin" --listen 0 --redis "$url" "$@" >"$T/out" 2>"$T/err" &
    SPID=$!
    for _ in $(seq 100); do
        PORT=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$T/out")
        [ -n "$PORT" ] && return 0
        sleep 0.1
    done
    return 1
}
# stop: SIGTERM, then the exit status in $rc (124: not gone within 10 s).
stop() {
    kill -TERM "$SPID"
    rc=124
    for _ in $(seq 100); do
        if ! kill -0 "$SPID" 2>/dev/null; then wait "$SPID"; rc=$?; break; fi
        sleep 0.1
    done
    SPID=""
}
# req METHOD PATH: the body in $T/body, the status in $code (000: no answer
# within MAXT seconds, 8 by default; the servers' Redis deadlines are 1 and
# 2 s).
MAXT=8
req() {
    code=$(timeout 10 curl -s --max-time "$MAXT" -o "$T/body" -w '%{http_code}' -X "$1" \
        "http://127.0.0.1:$PORT$2")
    [ -n "$code" ] || code=000
}
uri() { jq -rn --arg v "$1" '$v|@uri'; }
# jqb FILTER [ARGS]: the body matches the filter.
jqb() { jq -e "$@" "$T/body" >/dev/null 2>&1; }
# The value every /red check sends: quotes, backslashes, a slash, an
# ampersand and an equals sign (URL-escaped), a tab, and multi-byte UTF-8.
TRICKY=$(printf 'say "hi" \\ back\\slash / a&b=c \t\xc3\xa9\xe6\x97\xa5\xe6\x9c\xac\xf0\x9f\x98\x80')

# load NAME: wrk -t2 -c64 -d5s --latency against /red on $PORT, its figures
# printed as a comment. Returns 0 when wrk ran and every answer was 2xx.
load() {
    local out=$T/wrk.$1 rps p99 non2xx
    timeout 30 wrk -t2 -c64 -d5s --latency \
        "http://127.0.0.1:$PORT/red?key=$(uri "$K:load")&field=f&value=v" >"$out" 2>&1
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    p99=$(awk '$1 == "99%" {v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
        f = u == "us" ? 0.001 : u == "s" ? 1000 : u == "m" ? 60000 : 1;
        printf "%.2f", v * f}' "$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$out")
    echo "# $1: ${rps:-?} req/s p99 ${p99:-?} ms (wrk -t2 -c64 -d5s --latency /red)"
    [ -n "$rps" ] && [ -z "$non2xx" ]
}

# started NAME: the check that the server is listening.
started() {
    if [ "$1" = 0 ]; then ok "$2: listening"; else not_ok "$2: listening" "$(cat "$T/err")"; fi
}

# suite NAME BIN [ARGS]: every check, on one build, against the harness's
# Redis; 29 checks.
suite() {
    local name=$1 bin=$2 id
    shift 2
    MAXT=8
    rcli DEL "$K" "$K:load" >/dev/null
    rcli SET "$K:t" str >/dev/null
    start "$bin" "$REDIS" "$@"
    started $? "$name"
    req GET /actuator/health
    check "$name: health is 200 UP" '[ "$code" = 200 ] && jqb ".status == \"UP\""'

    req GET "/red?key=$(uri "$K")&field=f&value=v1"
    check "$name: /red answers the hash" '[ "$code" = 200 ] && jqb ". == {\"f\": \"v1\"}"'
    req GET "/red?key=$(uri "$K")&field=$(uri "fé\"ld")&value=$(uri "$TRICKY")"
    check "$name: /red returns quotes, backslashes and UTF-8 intact" \
        '[ "$code" = 200 ] && jqb --arg v "$TRICKY" ". == {\"f\": \"v1\", \"fé\\\"ld\": \$v}"'
    rcli --raw HGET "$K" 'fé"ld' >"$T/stored"
    printf '%s\n' "$TRICKY" >"$T/sent"
    check "$name: the value stored in Redis is the one sent, byte for byte" \
        'cmp -s "$T/stored" "$T/sent"'
    req GET "/red?key=$(uri "$K")&field=f"
    check "$name: /red without a value is 400" '[ "$code" = 400 ] && jqb ".error | length > 0"'
    req GET "/red?key=$(uri "$K")&field=f&value=%FF"
    check "$name: /red with a value that is not UTF-8 is 400" '[ "$code" = 400 ]'
    req GET "/red?key=$(uri "$K:t")&field=f&value=v"
    check "$name: a Redis error (WRONGTYPE) is a 502 with the server's text" \
        '[ "$code" = 502 ] && jqb ".error | test(\"WRONGTYPE\")"'

    req POST "/task?n=100"
    id=$(jq -r '.id // empty' "$T/body" 2>/dev/null)
    check "$name: POST /task is 202 with an id" '[ "$code" = 202 ] && [[ "$id" =~ ^[0-9]+$ ]]'
    req GET "/task/$id"
    check "$name: the task is running at first (it sleeps 1 s)" \
        '[ "$code" = 200 ] && jqb ". == {\"status\": \"running\"}"'
    for _ in $(seq 100); do
        req GET "/task/$id"
        jqb '.status == "running"' || break
        sleep 0.1
    done
    check "$name: the task ends done with the sum of squares of 1..100" \
        '[ "$code" = 200 ] && jqb ". == {\"status\": \"done\", \"n\": 100, \"result\": 338350}"'
    req GET /task/999999999
    check "$name: an unknown task is 404" '[ "$code" = 404 ] && jqb ".error | length > 0"'
    req GET /task/abc
    check "$name: a task id that is no number is 404" '[ "$code" = 404 ]'
    req POST "/task?n=x"
    check "$name: POST /task with a bad n is 400" '[ "$code" = 400 ]'
    req GET /task
    check "$name: GET /task is 405" '[ "$code" = 405 ]'
    req GET /nowhere
    check "$name: an unknown path is 404" '[ "$code" = 404 ]'

    # 100 tasks posted at once, task i with n = i; then one curl fetches
    # every /task/<id> in order, until all are done.
    rm -f "$T"/t.*
    seq 100 | timeout 30 xargs -P 100 -I{} curl -s --max-time 20 -o "$T/t.{}" -X POST \
        "http://127.0.0.1:$PORT/task?n={}"
    for i in $(seq 100); do jq -r '.id // "none"' "$T/t.$i" 2>/dev/null || echo none; done \
        >"$T/ids"
    check "$name: 100 concurrent POST /task give 100 distinct ids" \
        '[ "$(grep -c "^[0-9][0-9]*$" "$T/ids")" = 100 ] && [ "$(sort -u "$T/ids" | wc -l)" = 100 ]'
    local urls=()
    while read -r id; do urls+=("http://127.0.0.1:$PORT/task/$id"); done <"$T/ids"
    for _ in $(seq 60); do
        timeout 20 curl -s --max-time 15 "${urls[@]}" | jq -s '.' >"$T/body" 2>/dev/null
        jqb 'length == 100 and all(.status == "done")' && break
        sleep 0.5
    done
    check "$name: all 100 tasks finish, each with its own result" \
        'jqb "length == 100 and (to_entries | all(.value == {status: \"done\", n: (.key + 1),
            result: ((.key + 1) * (.key + 2) * (2 * .key + 3) / 6)}))"'

    # wrk's figures are printed, never asserted: the machine is shared.
    if load "$name"; then ok "$name: wrk ran against /red, every answer 2xx"; else
        not_ok "$name: wrk ran against /red, every answer 2xx" "$(cat "$T/wrk.$name")"
    fi
    req GET "/red?key=$(uri "$K:load")&field=g&value=after"
    check "$name: /red still answers after the load" \
        '[ "$code" = 200 ] && jqb ". == {\"f\": \"v\", \"g\": \"after\"}"'

    # SIGTERM while a task runs and a /red waits for a stopped Redis.
    req POST "/task?n=1"
    REDIS_PID=$(cat "$VL_TEST_DIR/redis-1.pid")
    kill -STOP "$REDIS_PID"
    timeout 10 curl -s --max-time 8 -o "$T/parked" -w '%{http_code}' \
        "http://127.0.0.1:$PORT/red?key=$(uri "$K")&field=f&value=v" >"$T/parked.code" &
    local parked=$!
    sleep 0.5
    stop
    wait "$parked"
    kill -CONT "$REDIS_PID"
    REDIS_PID=""
    check "$name: SIGTERM with a task running and a request waiting exits 0" '[ "$rc" = 0 ]'
    check "$name: the waiting request is answered 503 on the way out" \
        '[ "$(cat "$T/parked.code")" = 503 ] && jq -e ".error" "$T/parked" >/dev/null'

    # Redis on a closed port: every answer within 4 s, twice the longest
    # Redis deadline of the servers.
    MAXT=4
    start "$bin" "redis://127.0.0.1:$CLOSED" --keep-tasks 3 "$@"
    started $? "$name, no Redis"
    req GET /actuator/health
    check "$name, no Redis: health is 503 DOWN, within the deadline" \
        '[ "$code" = 503 ] && jqb ".status == \"DOWN\" and (.redis | length > 0)"'
    req GET "/red?key=k&field=f&value=v"
    check "$name, no Redis: /red is 503 with an error, within the deadline" \
        '[ "$code" = 503 ] && jqb ".error | test(\"^redis: \")"'
    sleep 1.2
    req GET "/red?key=k&field=f&value=v"
    check "$name, no Redis: /red is still 503 a second later" '[ "$code" = 503 ]'
    req POST "/task?n=3"
    check "$name, no Redis: tasks still start" '[ "$code" = 202 ] && jqb ".id == 1"'
    # --keep-tasks 3: of 5 finished tasks, the 2 oldest are forgotten. One
    # pass of GETs is not a snapshot (a task may finish between two of
    # them), but after a pass that saw none running every task has ended
    # and the table no longer changes: the pass after it is the answer.
    for i in 1 2 3 4; do req POST "/task?n=$i"; done
    local states="" pass last=""
    for pass in $(seq 51); do
        states=""
        for i in 1 2 3 4 5; do
            req GET "/task/$i"
            states+="$code:$(jq -r '.status // .error' "$T/body" 2>/dev/null) "
        done
        [ -n "$last" ] && break
        [[ "$states" == *running* ]] || last=$pass
        [ -n "$last" ] || sleep 0.1
    done
    check "$name, no Redis: --keep-tasks 3 keeps the 3 newest finished tasks" \
        '[ "$states" = "404:no such task 404:no such task 200:done 200:done 200:done " ] ||
         { echo "# states: $states"; false; }'
    stop
    check "$name, no Redis: SIGTERM with a task running exits 0" '[ "$rc" = 0 ]'
}

# 64 worker threads: the 100 concurrent tasks (1 s each) take some 2 s.
suite async "$ASYNC" --threads 64
suite threads "$THREADS"

rcli DEL "$K" "$K:t" "$K:load" >/dev/null
if [ "$n" -ne "$PLAN" ]; then
    not_ok "plan" "ran $n checks, planned $PLAN"
fi
[ "$fails" -eq 0 ]
