#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# tests/test_cli.sh - the volley CLI against the harness's real servers.
# Prints TAP. Needs the env from tests/servers.sh (tests/run.sh provides it).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VOLLEY=${VOLLEY_BIN:-$ROOT/build/tools/volley}
T=$(mktemp -d /tmp/volley-cli.XXXXXX)
STOPPED_PID=""
cleanup() {
    # Never leave a server stopped, whatever happened above.
    [ -n "$STOPPED_PID" ] && kill -CONT "$STOPPED_PID" 2>/dev/null
    [ -n "${SILENT_PID:-}" ] && kill "$SILENT_PID" 2>/dev/null
    [ -n "${FAKE_PID:-}" ] && kill "$FAKE_PID" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

n=0
fails=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $1"; shift; for l in "$@"; do echo "# $l"; done; }
check() { # check DESC CONDITION...
    local desc=$1; shift
    if "$@"; then ok "$desc"; else not_ok "$desc" "failed: $*"; fi
}
# run: runs volley, stdout to $T/out, stderr to $T/err, exit code in $rc
run() { timeout 60 "$VOLLEY" "$@" <"${STDIN:-/dev/null}" >"$T/out" 2>"$T/err"; rc=$?; }
has() { grep -qF -- "$1" "$2"; }
lines() { wc -l <"$1" | tr -d ' '; }

PLAN=106
echo "1..$PLAN"
if [ -z "${VL_TEST_REDIS_PORTS:-}" ] || [ ! -x "$VOLLEY" ]; then
    echo "# the harness env or $VOLLEY is missing"
    for _ in $(seq "$PLAN"); do not_ok "setup"; done
    exit 1
fi
IFS=, read -r P1 P2 P3 _ <<<"$VL_TEST_REDIS_PORTS"
PA=$VL_TEST_REDIS_AUTH_PORT
PW=$VL_TEST_REDIS_PASSWORD
MY="mysql://$VL_TEST_MYSQL_USER:$VL_TEST_MYSQL_PASSWORD@127.0.0.1:$VL_TEST_MYSQL_PORT/$VL_TEST_MYSQL_DB"
MYH="mysql://$VL_TEST_MYSQL_USER:$VL_TEST_MYSQL_PASSWORD@localhost:$VL_TEST_MYSQL_PORT/$VL_TEST_MYSQL_DB"
# A port nobody listens on: bind-test a few until one refuses.
CLOSED=1
for p in 1 9 13 17 19; do
    if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then CLOSED=$p; break; fi
done

# --- 5 hosts: one stopped with SIGSTOP, one closed port ---
"$VOLLEY" -H 127.0.0.1:$P1,127.0.0.1:$P2,127.0.0.1:$P3 SET cli:k v1 >/dev/null 2>&1
redis-cli -p "$PA" -a "$PW" --no-auth-warning SET cli:k v1 >/dev/null
STOPPED_PID=$(cat "$VL_TEST_DIR/redis-3.pid")
kill -STOP "$STOPPED_PID"
run -t 1000 -H "127.0.0.1:$P1,127.0.0.1:$P2,127.0.0.1:$P3,127.0.0.1:$CLOSED" \
    -H "redis://:$PW@127.0.0.1:$PA" GET cli:k
cp "$T/out" "$T/out5"; cp "$T/err" "$T/err5"
# The stopped host comes first in the list, yet with --stream it is printed
# last: it never holds up the others.
run --stream -t 1000 -H "127.0.0.1:$P3,127.0.0.1:$P1,127.0.0.1:$P2" GET cli:k
cp "$T/out" "$T/stream"
kill -CONT "$STOPPED_PID"; STOPPED_PID=""
cp "$T/out5" "$T/out"; cp "$T/err5" "$T/err"
check "a stopped host and a closed port give exit status 2" [ "$rc" -eq 2 ]
check "the three healthy hosts print their reply" [ "$(grep -c ': v1$' "$T/out")" -eq 3 ]
check "the stopped host is reported as a timeout" has "127.0.0.1:$P3: (timeout)" "$T/out"
check "the closed port is reported as a connect error" has "127.0.0.1:$CLOSED: (connect)" "$T/out"
check "the summary counts every outcome" has "5 hosts: 3 ok, 1 timeout (127.0.0.1:$P3), 1 connect (127.0.0.1:$CLOSED)" "$T/err"
check "--stream prints the healthy hosts before the stopped host's timeout" \
    bash -c "[ \$(head -2 '$T/stream' | grep -c ': v1\$') -eq 2 ] && tail -1 '$T/stream' | grep -qF '127.0.0.1:$P3: (timeout)'"
check "the password in a URL appears nowhere" bash -c "! grep -qF -- '$PW' '$T/out' '$T/err'"

# --- a server error ---
"$VOLLEY" -H 127.0.0.1:$P1 RPUSH cli:list a >/dev/null 2>&1
run -H 127.0.0.1:$P1,127.0.0.1:$P2 GET cli:list
check "a WRONGTYPE gives exit status 1" [ "$rc" -eq 1 ]
check "the server's message is printed" has "127.0.0.1:$P1: (error) WRONGTYPE" "$T/out"
check "the other host still answers" has "127.0.0.1:$P2: " "$T/out"

# --- grouping and JSON ---
run -g -H "127.0.0.1:[$P1,$P2,$P3]" PING
check "-g merges identical replies under one host list, with their latency range" \
    bash -c "grep -qE '\(3\) [0-9]+\.[0-9]{3}-[0-9]+\.[0-9]{3} ms\$' '$T/out' && [ \$(grep -c '^PONG\$' '$T/out') -eq 1 ]"
run --json -H "127.0.0.1:$P1,127.0.0.1:$P2,127.0.0.1:$CLOSED" HGETALL cli:nohash
check "--json prints one object per host" [ "$(lines "$T/out")" -eq 3 ]
check "--json output parses, with host/status/latency_ms" \
    bash -c "jq -e 'has(\"host\") and has(\"status\") and has(\"latency_ms\")' '$T/out' >/dev/null"
check "--json reports the dead host as connect with an error" \
    bash -c "jq -e 'select(.status==\"connect\") | .error | length > 0' '$T/out' >/dev/null"
run --json -H 127.0.0.1:$P1 EVAL "return {1, 'two', {3}}" 0
check "--json keeps reply types (integer, string, nested array)" \
    bash -c "jq -e '.reply == [1, \"two\", [3]]' '$T/out' >/dev/null"

# --- SQL ---
run -H "$MY,$MYH" -e "SELECT 41 + 1 AS answer, NULL AS nothing"
check "-e over two MariaDB endpoints succeeds" [ "$rc" -eq 0 ]
check "both endpoints print a table" [ "$(grep -c '| 42     | NULL    |' "$T/out")" -eq 2 ]
run -H "$MY,$MYH" -e "SELEC 1"
check "a bad query gives exit status 1" [ "$rc" -eq 1 ]
check "a bad query reports errno and SQLSTATE per host" \
    [ "$(grep -c 'ERROR 1064 (42000)' "$T/out")" -eq 2 ]
run --json -H "$MY" -e "SELEC 1"
check "--json carries errno and sqlstate" \
    bash -c "jq -e '.errno == 1064 and .sqlstate == \"42000\"' '$T/out' >/dev/null"
check "no MySQL password in any output" \
    bash -c "! grep -qF -- '$VL_TEST_MYSQL_PASSWORD' '$T/out' '$T/err'"

# --- bad input: one line on stderr, exit 64 ---
bad_input() { # DESC ARGS...
    local desc=$1; shift
    run "$@"
    if [ "$rc" -eq 64 ] && [ "$(lines "$T/err")" -eq 1 ] && [ ! -s "$T/out" ]; then
        ok "$desc"
    else
        not_ok "$desc" "rc=$rc" "$(head -3 "$T/err")"
    fi
}
bad_input "an unknown option is a usage error" --frobnicate -H 127.0.0.1:$P1 PING
bad_input "an empty host list is a usage error" -H "" PING
bad_input "no hosts at all is a usage error" PING
bad_input "a malformed URL is a usage error" -H "redis://:$PW@127.0.0.1:99999" PING
bad_input "a malformed range is a usage error" -H "127.0.0.1:[7005-7000]" PING
bad_input "a missing command is a usage error" -H 127.0.0.1:$P1
bad_input "a negative range is a usage error" -H "127.0.0.1:[-1]" PING
bad_input "a huge range is a usage error" -H "127.0.0.1:[0-18446744073709551615]" PING
bad_input "mixing Redis and MySQL hosts is a usage error" -H "127.0.0.1:$P1,$MY" PING
check "a usage error never prints the password" bash -c "! grep -qF -- '$PW' '$T/err'"

# --- a password typed without a scheme, or with '/' in it, is never shown ---
run -t 2000 -H "default:S3cret/PW@127.0.0.1:$CLOSED" PING
check "user:password@host without a scheme does not print the password" \
    bash -c "[ $rc -eq 2 ] && ! grep -qF 'S3cret' '$T/out' '$T/err'"
run -t 2000 -H "mysql://volley:4321/x@Secret@127.0.0.1:$CLOSED/db" -e "SELECT 1"
check "a password with '/' and '@' in a MySQL URL is never shown" \
    bash -c "[ $rc -eq 2 ] && ! grep -qF 'Secret' '$T/out' '$T/err' && ! grep -qF '4321' '$T/out' '$T/err'"

# --- a hosts file with 1,000 entries of three hosts: each runs once ---
{
    echo "# 1,000 entries over the three instances"
    for i in $(seq 1000); do
        case $((i % 3)) in 0) echo "127.0.0.1:$P1";; 1) echo "127.0.0.1:$P2  # two";; 2) echo "127.0.0.1:$P3";; esac
    done
} >"$T/hosts"
run -c 100 -f "$T/hosts" PING
check "a hosts file with 1,000 entries runs its three hosts once each and says so" \
    bash -c "[ $rc -eq 0 ] && [ \$(grep -c ': PONG\$' '$T/out') -eq 3 ] && grep -q '^3 hosts: 3 ok' '$T/err' && grep -qF '997 repeated hosts dropped' '$T/err'"

# --- wrong password: a connect error without the password ---
run -H "redis://:wrong-$PW@127.0.0.1:$PA" PING
check "a wrong password is a connect error (exit 2) without the password" \
    bash -c "[ $rc -eq 2 ] && grep -q '(connect)' '$T/out' && ! grep -qF -- 'wrong-$PW' '$T/out' '$T/err'"
REDISCLI_AUTH=$PW "$VOLLEY" -H 127.0.0.1:$PA PING >"$T/out" 2>"$T/err"
check "REDISCLI_AUTH supplies the password" has "127.0.0.1:$PA: PONG" "$T/out"
run --version
check "--version prints the version" grep -q '^volley [0-9]' "$T/out"

# --- '[' in a password: never printed, never a range ---
run -t 2000 -H "redis://:Wr0ng[P@ss@127.0.0.1:$PA" PING
check "a wrong password with '[' is one host's connect error, not a usage error" \
    bash -c "[ $rc -eq 2 ] && grep -q '^1 host: 0 ok, 1 connect' '$T/err'"
check "a password with '[' is never printed" bash -c "! grep -qF 'Wr0ng' '$T/out' '$T/err'"
run -H "redis://:Wr0ng[P@ss@127.0.0.1:[7000-" PING
check "a bad range after a password with '[' is a usage error without the password" \
    bash -c "[ $rc -eq 64 ] && grep -qF \"unclosed '[' in host 'redis://127.0.0.1:[7000-'\" '$T/err' && ! grep -qF 'Wr0ng' '$T/err'"
run -H "unix:///tmp/r[1-.sock?password=Qu3ry[PW&x=a@b" PING
check "a bad range before a password in the query is a usage error without it" \
    bash -c "[ $rc -eq 64 ] && ! grep -qF 'Qu3ry' '$T/err'"
ACLUSER=volley-cli-range
redis-cli -p "$PA" -a "$PW" --no-auth-warning ACL SETUSER "$ACLUSER" on '>Rng[1-2]@pw' '+ping' >/dev/null
run -H "redis://$ACLUSER:Rng[1-2]@pw@127.0.0.1:[$PA]" PING
redis-cli -p "$PA" -a "$PW" --no-auth-warning ACL DELUSER "$ACLUSER" >/dev/null
check "'[1-2]' in a password is sent as typed, not expanded into two hosts" \
    bash -c "[ $rc -eq 0 ] && grep -q '^1 host: 1 ok' '$T/err' && [ \"\$(cat '$T/out')\" = 'redis://$ACLUSER@127.0.0.1:$PA: PONG' ]"
check "that password is never printed" bash -c "! grep -qF 'Rng[' '$T/out' '$T/err'"

# --- passwords leave argv (ps, /proc/PID/cmdline) at start-up ---
STOPPED_PID=$(cat "$VL_TEST_DIR/redis-3.pid")
kill -STOP "$STOPPED_PID"
"$VOLLEY" -t 3000 -H "redis://:Cmdl1nePW@127.0.0.1:$P3" \
    --hosts="unix:///nonexistent/r.sock?db=0&password=Qu3ryPW,default:N0Sch3me@127.0.0.1:$P3" \
    PING >"$T/out" 2>"$T/err" &
VPID=$!
seen=""
for _ in $(seq 50); do
    cmdline=$( (tr '\0' ' ' <"/proc/$VPID/cmdline") 2>/dev/null)
    # Until exec, the child is still this shell: wait for volley's own argv.
    case $cmdline in
    *"127.0.0.1:$P3"*PING*) seen=$cmdline; break;;
    esac
    sleep 0.1
done
sleep 0.2
cmdline=$( (tr '\0' ' ' <"/proc/$VPID/cmdline") 2>/dev/null)
alive=0; kill -0 "$VPID" 2>/dev/null && alive=1
wait "$VPID"; vrc=$?
kill -CONT "$STOPPED_PID"; STOPPED_PID=""
echo "# cmdline of the running volley: $cmdline"
clean=0
case $cmdline in
*"127.0.0.1:$P3"*PING*)
    printf '%s' "$cmdline" | grep -qE 'Cmdl1nePW|Qu3ryPW|N0Sch3me' || clean=1;;
esac
[ -n "$seen" ] || clean=0
check "/proc/PID/cmdline of a running volley holds no password" [ "$alive$clean" = 11 ]
check "the scrubbed run still used the passwords (a timeout, not a usage error)" \
    bash -c "[ $vrc -eq 2 ] && grep -q '^3 hosts: 0 ok, 2 timeout' '$T/err'"

# --- host lists compress the same as ever (the summary and -g use it) ---
U="unix://$T"
run -t 2000 -H "$U/r[1-3].sock,127.0.0.1:$CLOSED,$U/r07.sock,127.0.0.1:$CLOSED,$U/rx.sock,$U/r5.sock" \
    -H "$U/r[9-10].sock,127.0.0.2:$CLOSED,$U/s2.sock,$U/r4.sock,$U/r2.sock" PING
check "the summary compresses ranges, padding and order as before, each host once" \
    has "12 hosts: 0 ok, 12 connect ($U/r[1-5,9-10].sock,127.0.0.1:$CLOSED,$U/r07.sock,$U/rx.sock,127.0.0.2:$CLOSED,$U/s2.sock)" "$T/err"
# A number inside a literal '[' is left alone: "a[x[1-2]]" would not read back.
run -t 2000 -H "$U/a[x1].sock,$U/a[x2].sock" PING
check "no range is made inside a literal '['" \
    has "2 hosts: 0 ok, 2 connect ($U/a[x1].sock,$U/a[x2].sock)" "$T/err"
run -g -H "$MY,$MY" -e "SELECT 1 AS one"
check "-g runs two identical MySQL URLs once, named with their user and no password" \
    bash -c "[ $rc -eq 0 ] && sed -n 2p '$T/out' | grep -qE '^mysql://$VL_TEST_MYSQL_USER@127\.0\.0\.1:$VL_TEST_MYSQL_PORT/$VL_TEST_MYSQL_DB \(1\) ' && grep -qF '1 repeated host dropped' '$T/err' && ! grep -qF -- '$VL_TEST_MYSQL_PASSWORD' '$T/out' '$T/err'"

# --- TLS: rediss:// URLs and --tls for host:port, verified against --cacert ---
TP=$VL_TEST_REDIS_TLS_PORT
run -H "127.0.0.1:$TP,rediss://localhost:$TP" --tls --cacert "$VL_TEST_TLS_DIR/ca.crt" PING
check "--tls and rediss:// hosts answer over TLS, verified with --cacert" \
    bash -c "[ $rc -eq 0 ] && [ \$(grep -c ': PONG\$' '$T/out') -eq 2 ]"
run -H "rediss://localhost:$VL_TEST_REDIS_TLS_WRONGHOST_PORT" --cacert "$VL_TEST_TLS_DIR/ca.crt" PING
check "a host-name mismatch is a connect error that says so" \
    bash -c "[ $rc -eq 2 ] && grep -q 'host name mismatch' '$T/out'"
run -H "rediss://localhost:$VL_TEST_REDIS_TLS_WRONGHOST_PORT" --insecure PING
check "--insecure connects and warns on stderr" \
    bash -c "[ $rc -eq 0 ] && grep -q 'PONG' '$T/out' && grep -q 'warning: TLS certificates are not verified' '$T/err'"
run -H "rediss://localhost:$VL_TEST_REDIS_TLS_WRONGHOST_PORT?insecure=1" PING
check "insecure=1 in a URL warns too" grep -q 'warning: TLS certificates are not verified' "$T/err"
run -H "127.0.0.1:$TP" --tls --cacert "$VL_TEST_TLS_DIR/other-ca.crt" PING
check "an untrusted CA fails verification" \
    bash -c "[ $rc -eq 2 ] && grep -q 'certificate verify failed' '$T/out' && ! grep -q warning '$T/err'"

# --- --cluster: a seed expands to every node of the harness's cluster ---
read -r C1 C2 C3 C4 C5 C6 _ <<<"$(printf '%s' "${VL_TEST_CLUSTER_PORTS:-}" | tr ',' ' ')"
printf '127.0.0.1:%s\n' $C1 $C2 $C3 $C4 $C5 $C6 | sort >"$T/cnodes"
run --cluster -H 127.0.0.1:$C1 PING
check "--cluster runs the command on all six nodes" \
    bash -c "[ $rc -eq 0 ] && [ \$(grep -c ': PONG\$' '$T/out') -eq 6 ] && grep -q '^6 hosts: 6 ok\$' '$T/err'"
check "--cluster names each node host:port, each once" \
    bash -c "sed 's/: PONG\$//' '$T/out' | sort | cmp -s - '$T/cnodes'"
run --cluster --primaries -H 127.0.0.1:$C2 ROLE
check "--primaries gives the three primaries" \
    bash -c "[ $rc -eq 0 ] && [ \$(grep -c ': 1) \"master\"\$' '$T/out') -eq 3 ] && ! grep -q slave '$T/out' && grep -q '^3 hosts: 3 ok\$' '$T/err'"
run --cluster -H 127.0.0.1:$CLOSED,127.0.0.1:$C3 DBSIZE
check "a dead seed is passed over for the next one" \
    bash -c "[ $rc -eq 0 ] && [ \$(grep -c ': (integer) [0-9]*\$' '$T/out') -eq 6 ]"
run --cluster -g -H "redis://127.0.0.1:$C4" PING
check "--cluster -g groups the nodes' identical replies, a redis:// seed too" \
    bash -c "[ $rc -eq 0 ] && sed -n 2p '$T/out' | grep -qE '^127\.0\.0\.1:\[.*\] \(6\) [0-9.]+-[0-9.]+ ms\$'"
run --cluster --json -H "127.0.0.1:$C5" PING
check "--cluster --json prints one object per node" \
    bash -c "[ $rc -eq 0 ] && jq -r 'select(.status == \"ok\") | .host' '$T/out' | sort | cmp -s - '$T/cnodes'"
run --cluster -t 2000 -H 127.0.0.1:$CLOSED PING
check "a seed that refuses is an unreachable cluster: exit 2, one line that says why" \
    bash -c "[ $rc -eq 2 ] && [ ! -s '$T/out' ] && [ \$(wc -l <'$T/err') -eq 1 ] && grep -q 'no Redis Cluster found at 127.0.0.1:$CLOSED: .*refused' '$T/err'"
run --cluster -t 2000 -H 127.0.0.1:$P1 PING
check "a seed that is no cluster node says so (exit 2)" \
    bash -c "[ $rc -eq 2 ] && [ ! -s '$T/out' ] && grep -qF '127.0.0.1:$P1 is not a Redis Cluster node' '$T/err'"
run --cluster --primaries -H "redis://127.0.0.1:[$C1,$C2]/0" DBSIZE
check "seeds from a range of URLs join into one cluster" \
    bash -c "[ $rc -eq 0 ] && grep -q '^3 hosts: 3 ok\$' '$T/err'"
REDISCLI_AUTH=Cl0sterPW "$VOLLEY" --cluster -t 2000 -H "redis://someone@127.0.0.1:$C1" PING \
    >"$T/out" 2>"$T/err"; rc=$?
check "a refused password is an unreachable cluster, and is never printed" \
    bash -c "[ $rc -eq 2 ] && grep -q 'WRONGPASS' '$T/err' && ! grep -qF 'Cl0sterPW' '$T/out' '$T/err'"
bad_input "--primaries without --cluster is a usage error" --primaries -H 127.0.0.1:$C1 PING
bad_input "--cluster with -e SQL is a usage error" --cluster -H 127.0.0.1:$C1 -e "SELECT 1"
bad_input "--cluster with a MySQL seed is a usage error" --cluster -H "$MY" PING
# A stopped replica (a primary would be failed over) times out alone.
VICTIM=""
for p in $C1 $C2 $C3 $C4 $C5 $C6; do
    if [ "$(redis-cli -p "$p" ROLE | head -1)" = slave ]; then VICTIM=$p; break; fi
done
SEED=$C1; [ "$VICTIM" = "$C1" ] && SEED=$C2
i=1
for p in $C1 $C2 $C3 $C4 $C5 $C6; do [ "$p" = "$VICTIM" ] && VNAME=cluster-$i; i=$((i + 1)); done
STOPPED_PID=$(cat "$VL_TEST_DIR/$VNAME.pid")
kill -STOP "$STOPPED_PID"
run --cluster -t 400 -H 127.0.0.1:$SEED PING
kill -CONT "$STOPPED_PID"; STOPPED_PID=""
check "a stopped node times out alone: exit 2, five PONGs" \
    bash -c "[ $rc -eq 2 ] && [ \$(grep -c ': PONG\$' '$T/out') -eq 5 ] && grep -qF '127.0.0.1:$VICTIM: (timeout)' '$T/out' && grep -qF '6 hosts: 5 ok, 1 timeout (127.0.0.1:$VICTIM)' '$T/err'"

# --- a silent host: a listener that accepts and never answers ---
SILENT_PID=""
start_silent() {
    rm -f "$T/silent.port"
    timeout 60 python3 -c 'import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(64)
print(s.getsockname()[1], flush=True)
time.sleep(60)' >"$T/silent.port" &
    SILENT_PID=$!
    for _ in $(seq 50); do [ -s "$T/silent.port" ] && break; sleep 0.1; done
    SPORT=$(cat "$T/silent.port")
}
start_silent
# The name pkill knows volley by (a process name is cut to 15 bytes).
VPROC=$(basename "$VOLLEY" | cut -c1-15)
# sigint_run ARGS...: runs volley in the background, waits until the fast
# hosts have surely answered, sends SIGINT (twice with TWICE=1), and waits.
sigint_run() {
    timeout 30 "$VOLLEY" "$@" </dev/null >"$T/out" 2>"$T/err" &
    local vp=$!
    sleep 1
    pkill -INT -P "$vp" -x "$VPROC"
    [ "${TWICE:-0}" = 1 ] && { sleep 0.05; pkill -INT -P "$vp" -x "$VPROC"; }
    wait "$vp"; rc=$?
}
sigint_run -t 20000 -H "127.0.0.1:$P1,127.0.0.1:$SPORT,127.0.0.1:$P2" PING
check "Ctrl-C while a host never answers exits 130" [ "$rc" -eq 130 ]
check "Ctrl-C prints the hosts that completed" [ "$(grep -c ': PONG$' "$T/out")" -eq 2 ]
check "Ctrl-C marks the rest interrupted, in host order" \
    bash -c "sed -n 2p '$T/out' | grep -qxF '127.0.0.1:$SPORT: (interrupted)'"
check "Ctrl-C prints the summary" has "3 hosts: 2 ok, 1 interrupted (127.0.0.1:$SPORT)" "$T/err"
sigint_run --json -t 20000 -H "127.0.0.1:$SPORT,127.0.0.1:$P1" PING
check "Ctrl-C with --json: the interrupted host is an entry with status interrupted" \
    bash -c "[ $rc -eq 130 ] && jq -s -e 'map(select(.host == \"127.0.0.1:$SPORT\"))[0].status == \"interrupted\" and map(select(.host == \"127.0.0.1:$P1\"))[0].reply == \"PONG\"' '$T/out' >/dev/null"
sigint_run --stream -t 20000 -H "127.0.0.1:$SPORT,127.0.0.1:$P1" PING
check "Ctrl-C with --stream prints each host once" \
    bash -c "[ $rc -eq 130 ] && [ \$(wc -l <'$T/out') -eq 2 ] && head -1 '$T/out' | grep -qxF '127.0.0.1:$P1: PONG' && tail -1 '$T/out' | grep -qxF '127.0.0.1:$SPORT: (interrupted)'"
# A fake server that answers the handshake and the first 64 commands, then
# takes the connection for the next 64 and never answers: Ctrl-C then
# keeps the 64 replies and marks the host interrupted, not ok.
cat >"$T/fake64.py" <<'PY'
import re, socket, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
buf = b""
hello = re.compile(rb"\*2\r\n\$4\r\nPING\r\n(\$\d+\r\n[^\r]*\r\n)")
while not hello.match(buf):
    d = c.recv(65536)
    if not d: raise SystemExit
    buf += d
m = hello.match(buf)
c.sendall(m.group(1))
buf = buf[m.end():]
while buf.count(b"*1\r\n$4\r\nPING\r\n") < 64:
    d = c.recv(65536)
    if not d: raise SystemExit
    buf += d
c.sendall(b"+PONG\r\n" * 64)
c2, _ = s.accept()
time.sleep(60)
PY
timeout 60 python3 "$T/fake64.py" >"$T/fake.port" &
FAKE_PID=$!
for _ in $(seq 50); do [ -s "$T/fake.port" ] && break; sleep 0.1; done
for _ in $(seq 65); do echo PING; done >"$T/p65"
sigint_run --json -t 20000 -F "$T/p65" -H "127.0.0.1:$(cat "$T/fake.port")"
kill "$FAKE_PID" 2>/dev/null; wait "$FAKE_PID" 2>/dev/null
check "Ctrl-C in the second chunk of 64 keeps the first 64 replies, and the host is interrupted" \
    bash -c "[ $rc -eq 130 ] && jq -e '.status == \"interrupted\" and (.replies | length) == 64' '$T/out' >/dev/null"
TWICE=1 sigint_run -t 20000 -H "127.0.0.1:$SPORT" PING
check "a second Ctrl-C still exits 130" [ "$rc" -eq 130 ]

# --- progress, only when stderr is a terminal (script(1) gives it one) ---
timeout 30 script -qec "'$VOLLEY' -t 1500 -H 127.0.0.1:$P1,127.0.0.1:$SPORT PING >'$T/pout'" "$T/tty" </dev/null >/dev/null
check "a run longer than a second shows 1/2 done on a terminal's stderr" \
    bash -c "grep -qF '1/2 done' '$T/tty' && ! grep -q 'done' '$T/pout'"
run -t 1500 -H "127.0.0.1:$P1,127.0.0.1:$SPORT" PING
check "no progress when stderr is no terminal" bash -c "[ $rc -eq 2 ] && ! grep -q ' done' '$T/err'"

# --- several commands: stdin or -F FILE, pipelined per host ---
redis-cli -p "$P1" DEL cli:seq cli:many >/dev/null; redis-cli -p "$P2" DEL cli:seq cli:many >/dev/null
printf 'SET cli:seq 1\nINCR cli:seq\nGET cli:seq\n' >"$T/cmds"
STDIN=$T/cmds run -H "127.0.0.1:$P1,127.0.0.1:$P2"
check "commands on stdin run in order on every host" \
    bash -c "[ $rc -eq 0 ] && [ \"\$(grep -F '127.0.0.1:$P1: ' '$T/out')\" = \"\$(printf '127.0.0.1:$P1: OK\n127.0.0.1:$P1: (integer) 2\n127.0.0.1:$P1: 2')\" ] && [ \$(grep -c '^127.0.0.1:$P2: ' '$T/out') -eq 3 ]"
cat >"$T/quoted" <<'CMDS'
SET cli:q "a\tb\x41\"c"
GET cli:q
SET cli:s 'it\'s "raw" \n'
GET cli:s

CMDS
run --json -F "$T/quoted" -H "127.0.0.1:$P1"
cat >"$T/quoted.jq" <<'JQ'
.replies == ["OK", "a\tbA\"c", "OK", "it's \"raw\" \\n"]
JQ
check "-F reads redis-cli quoting: double-quote escapes, single quotes literal" \
    bash -c "jq -e -f '$T/quoted.jq' '$T/out' >/dev/null"
{ echo "DEL cli:many"; for _ in $(seq 1000); do echo "INCR cli:many"; done; } >"$T/many"
run --json -F "$T/many" -H "127.0.0.1:$P1,127.0.0.1:$P2"
check "a 1,001-line file runs every command on every host, in order" \
    bash -c "[ $rc -eq 0 ] && [ \$(jq -e 'select((.replies | length) == 1001 and .replies[1000] == 1000 and .replies[1] == 1)' '$T/out' | grep -c host) -eq 2 ]"
printf 'GET cli:seq\nSET cli:x "unclosed\n' >"$T/badq"
bad_input "unbalanced quotes in -F are a usage error" -F "$T/badq" -H "127.0.0.1:$P1"
printf '127.0.0.1:%s\n' "$P1" >"$T/hosts1"
STDIN=$T/hosts1 run -f -
check "hosts on stdin leave no stdin for commands: a usage error that says so" \
    bash -c "[ $rc -eq 64 ] && grep -q 'no command' '$T/err' && [ ! -s '$T/out' ]"
printf 'PING\nMONITOR\n' >"$T/mon"
bad_input "MONITOR in a command file is a usage error" -F "$T/mon" -H "127.0.0.1:$P1"

# --- a fleet of Redis and MySQL hosts in one run ---
run -H "redis://127.0.0.1:$P1,$MY" -e "SELECT 7 AS seven" PING
check "-e SQL and a Redis command in one run go each to its kind of host" \
    bash -c "[ $rc -eq 0 ] && grep -qxF 'redis://127.0.0.1:$P1: PONG' '$T/out' && grep -q '^mysql://.*| 7     |' '$T/out' && grep -q '^2 hosts: 2 ok' '$T/err'"
bad_input "a bare host:port in a run of both kinds is a usage error" -H "127.0.0.1:$P1,$MY" -e "SELECT 1" PING

# --- the output views: latency, sort, diff ---
run --latency -H "127.0.0.1:$P1" PING
check "--latency adds a latency column" grep -qE "^127\.0\.0\.1:$P1: +[0-9]+\.[0-9]{3} ms  PONG\$" "$T/out"
run --sort host -t 2000 -H "127.0.0.1:$P2,127.0.0.1:$CLOSED,127.0.0.1:$P1" PING
printf '127.0.0.1:%s\n' "$P2" "$CLOSED" "$P1" | sort >"$T/sorted"
check "--sort host prints the hosts in name order" \
    bash -c "cut -d: -f1-2 '$T/out' | cmp -s - '$T/sorted'"
run --sort status -t 2000 -H "127.0.0.1:$CLOSED,127.0.0.1:$P1" PING
check "--sort status prints the ok hosts first" \
    bash -c "head -1 '$T/out' | grep -qxF '127.0.0.1:$P1: PONG'"
run --json --sort latency -H "127.0.0.1:[$P1,$P2,$P3],127.0.0.1:$CLOSED" PING
check "--sort latency prints the fastest first" \
    bash -c "jq -s -e '[.[].latency_ms] as \$l | \$l == (\$l | sort) and (\$l | length) == 4' '$T/out' >/dev/null"
redis-cli -p "$P1" SET cli:d same >/dev/null; redis-cli -p "$P2" SET cli:d same >/dev/null
redis-cli -p "$P3" SET cli:d other >/dev/null
run --diff -H "127.0.0.1:$P1,127.0.0.1:$P2,127.0.0.1:$P3" GET cli:d
check "--diff shows the majority once and only the host that differs" \
    bash -c "[ \$(grep -c '^same\$' '$T/out') -eq 1 ] && grep -q '^the majority: 127.0.0.1:\[.*\] (2) ' '$T/out' && [ \"\$(tail -1 '$T/out')\" = '127.0.0.1:$P3: other' ] && [ \$(wc -l <'$T/out') -eq 5 ]"
bad_input "--stream with -g is a usage error" --stream -g -H "127.0.0.1:$P1" PING
bad_input "a bad --sort key is a usage error" --sort size -H "127.0.0.1:$P1" PING

# --- JSON details ---
run --json -H "127.0.0.1:$P1,redis://127.0.0.1:$P2" PING
check "--json: latency_ms has at most 3 decimals" \
    bash -c "[ \$(grep -cE '\"latency_ms\":[0-9]+(\.[0-9]{1,3})?[,}]' '$T/out') -eq 2 ]"
check "--json: the host is named as in text mode" \
    bash -c "jq -r .host '$T/out' | tr '\n' ' ' | grep -qxF '127.0.0.1:$P1 redis://127.0.0.1:$P2 '"
run --json -H "127.0.0.1:$P1" EVAL "return redis.error_reply('ERR cli boom')" 0
check "--json: an error entry says its text once" \
    bash -c "[ $rc -eq 1 ] && jq -e 'has(\"reply\") | not' '$T/out' >/dev/null && [ \$(grep -o 'cli boom' '$T/out' | wc -l) -eq 1 ]"
run --json -H "127.0.0.1:$P1" EVAL "return {string.char(255, 0, 65), 'caf\195\169'}" 0
check "--json: bytes that are not UTF-8 come as base64, UTF-8 as a string" \
    bash -c "jq -e '.reply == [{\"encoding\": \"base64\", \"value\": \"/wBB\"}, \"caf\u00e9\"]' '$T/out' >/dev/null"
run --json -H "127.0.0.1:$P1" EVAL "return string.char(1, 2, 255)" 0
check "--json: a top-level binary reply is base64 with \"encoding\":\"base64\"" \
    bash -c "jq -e '.reply == \"AQL/\" and .encoding == \"base64\"' '$T/out' >/dev/null"

# --- errors ---
bad_input "SUBSCRIBE is a usage error" -H "127.0.0.1:$P1" SUBSCRIBE ch
bad_input "PSUBSCRIBE is a usage error" -H "127.0.0.1:$P1" psubscribe 'c*'
bad_input "SSUBSCRIBE is a usage error" -H "127.0.0.1:$P1" SSUBSCRIBE ch
bad_input "MONITOR is a usage error" -H "127.0.0.1:$P1" MONITOR
run -H "$MY" -e "SELEC 1"
check "a MySQL error names its host once" \
    bash -c "[ $rc -eq 1 ] && [ \$(grep -o '127.0.0.1:$VL_TEST_MYSQL_PORT' '$T/out' | wc -l) -eq 1 ] && grep -q ': (error) SELEC: ERROR 1064 (42000)' '$T/out'"
MTP=$VL_TEST_REDIS_MTLS_PORT
run -H "rediss://localhost:$MTP" --cacert "$VL_TEST_TLS_DIR/ca.crt" \
    --cert "$VL_TEST_TLS_CLIENT_CERT" --key "$VL_TEST_TLS_CLIENT_KEY" PING
check "rediss:// with --cacert, --cert and --key passes a mutual-TLS server" \
    bash -c "[ $rc -eq 0 ] && grep -qxF 'rediss://localhost:$MTP: PONG' '$T/out'"
run -H "rediss://localhost:$MTP" --cacert "$VL_TEST_TLS_DIR/ca.crt" PING
check "the same server refuses a client without --cert" [ "$rc" -eq 2 ]

# --- a password for a server that has none: warn and go on ---
REDISCLI_AUTH=N0tNeeded timeout 30 "$VOLLEY" -H "127.0.0.1:$P1,127.0.0.1:$PA" PING \
    </dev/null >"$T/out" 2>"$T/err"; rc=$?
check "a password the server does not need: a warning, then the command runs" \
    bash -c "[ $rc -eq 2 ] && grep -qxF '127.0.0.1:$P1: PONG' '$T/out' && grep -qF 'warning: 127.0.0.1:$P1 needs no password' '$T/err' && grep -q '(connect)' '$T/out' && ! grep -qF N0tNeeded '$T/out' '$T/err'"
(sleep 1; printf 'N0tNeeded\n') | timeout 30 script -qec "'$VOLLEY' --askpass -H 127.0.0.1:$P1 PING" "$T/tty" >/dev/null
check "--askpass for a server without a password warns and runs" \
    bash -c "grep -qF 'needs no password' '$T/tty' && grep -qF '127.0.0.1:$P1: PONG' '$T/tty' && grep -qF 'COMMAND_EXIT_CODE=\"0\"' '$T/tty'"
kill "$SILENT_PID" 2>/dev/null; wait "$SILENT_PID" 2>/dev/null

[ "$fails" -eq 0 ]
