#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# A TAP test of the test harness itself: tests/run.sh runs it like any other
# test. It proves that the harness leaves nothing behind:
#   (a) servers.sh start brings up working servers (the Redis Cluster and
#       the sentinel set included, each failed over and restored once) and
#       servers.sh stop ends every one of them and frees every port;
#   (b) a run.sh sub-run whose only test fails reports "0 passed, 1 failed",
#       exits non-zero, stops its servers and removes its directory;
#   (c) a run.sh sub-run interrupted with SIGINT in the middle of a test exits
#       promptly with status 130, and no process it started survives;
#   (d) tu_run (tests/common/testutil.c) runs each cmocka test in a process
#       of its own: a failed test's leftovers never reach the next test, a
#       killed or hanging test is reported with its reason, a hanging test's
#       whole process group is killed, and VL_TEST_FILTER still selects.
#       It builds a small suite against VOLLEY_BUILD's libvolley.a (default
#       build/), which make test and make asan set;
#   (e) tests/test_fuzz.sh passes a clean libFuzzer target with its figures,
#       fails a crashing one with the sanitizer's report and keeps the input,
#       and writes nothing into the tree.
# The sub-runs start their own servers on random ports, so they coexist with
# the servers of the run.sh that runs this test.

set -eu

HERE=$(cd "$(dirname "$0")" && pwd -P)
readonly SERVERS=$HERE/servers.sh
readonly RUN=$HERE/run.sh
ROOT=$(cd "$HERE/.." && pwd -P)
readonly ROOT
readonly BUILD=${VOLLEY_BUILD:-$ROOT/build}

T=$(mktemp -d /tmp/volley-harness.XXXXXX)
SUBRUN=""

# Stops whatever a failed or interrupted check may have left behind, so that
# this test cleans up even when the harness under test does not. When a
# sub-run removed its directory without stopping its servers, servers.sh can
# no longer find them, so the pids the sub-run's test recorded are used, and
# each is checked before it is killed: a server must have its working
# directory in the sub-run's directory, the test script must name our
# directory, and the sleep must be the child of that test script.
reap_recorded() {
    local rec=$1 dir=$2 pid cwd cmdline stat ppid script=""
    [ -r "$rec" ] || return 0
    # The first pass kills stray servers and finds the test script.
    while read -r pid; do
        [ -n "$pid" ] || continue
        ! pid_gone "$pid" || continue
        cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null) || continue
        cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || continue
        case $cmdline in
            *redis-server* | *mariadbd*)
                case $cwd in "$dir"/*) kill -KILL "$pid" 2>/dev/null || true ;; esac
                ;;
            *"$T"/*)
                script=$pid
                ;;
        esac
    done <"$rec"
    [ -n "$script" ] || return 0
    # The second pass kills the script's children (the sleep), then the
    # script itself; in that order the parent link is still there to check.
    while read -r pid; do
        [ -n "$pid" ] || continue
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        stat=${stat##*) }
        ppid=$(echo "$stat" | cut -d' ' -f2)
        if [ "$ppid" = "$script" ]; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done <"$rec"
    kill -KILL "$script" 2>/dev/null || true
}

cleanup() {
    local sub d
    if [ -n "$SUBRUN" ]; then
        kill -TERM "$SUBRUN" 2>/dev/null || true
        wait "$SUBRUN" 2>/dev/null || true
    fi
    "$SERVERS" stop "$T/a" >/dev/null 2>&1 || true
    for sub in b c; do
        [ -s "$T/$sub/dir" ] || continue
        d=$(cat "$T/$sub/dir")
        case $d in
            /tmp/volley-test.*) ;;
            *) continue ;;
        esac
        "$SERVERS" stop "$d" >/dev/null 2>&1 || true
        reap_recorded "$T/$sub/pids" "$d"
        rm -rf "$d"
    done
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ----------------------------------------------------------------- TAP ----

N=0
FAILED=0
echo "1..34"

# check DESCRIPTION COMMAND...: runs the command and prints one TAP result.
check() {
    local desc=$1
    shift
    N=$((N + 1))
    if "$@"; then
        echo "ok $N - $desc"
    else
        echo "not ok $N - $desc"
        FAILED=$((FAILED + 1))
    fi
}

# Shows a file as TAP diagnostics. The "# " prefix matters: a sub-run's raw
# output contains "not ok" lines that the outer runner must not count.
diag_file() {
    if [ -s "$1" ]; then
        echo "# ---- $1"
        sed 's/^/#   /' "$1"
    fi
}

# -------------------------------------------------------------- helpers ----

# Succeeds if process $1 no longer exists or is a zombie. Zombies count as
# gone: they hold no ports or files, and orphans stay zombies forever when
# PID 1 does not reap them (as in some containers).
pid_gone() {
    local stat state
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    state=${stat##*) }
    state=${state%% *}
    [ "$state" = Z ] || [ "$state" = X ]
}

# Succeeds if every pid listed in file $1 is gone, and the file lists at
# least $2 of them (an empty list would prove nothing).
all_gone() {
    local pid count=0 ok=0
    [ -r "$1" ] || { echo "# $1 is missing"; return 1; }
    while read -r pid; do
        [ -n "$pid" ] || continue
        count=$((count + 1))
        if ! pid_gone "$pid"; then
            echo "# pid $pid is still alive: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)"
            ok=1
        fi
    done <"$1"
    if [ "$count" -lt "$2" ]; then
        echo "# expected at least $2 pids in $1, found $count"
        return 1
    fi
    return "$ok"
}

# Succeeds if every port listed in file $1 (one a line) refuses connections.
all_refuse() {
    local port ok=0 count=0
    [ -r "$1" ] || { echo "# $1 is missing"; return 1; }
    while read -r port; do
        [ -n "$port" ] || continue
        count=$((count + 1))
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "# port $port still accepts connections"
            ok=1
        fi
    done <"$1"
    [ "$count" -gt 0 ] || { echo "# no ports listed in $1"; return 1; }
    return "$ok"
}

# Writes to file $2 the pid in each pidfile listed in file $1.
read_pids() {
    local f
    while read -r f; do
        cat "$f" 2>/dev/null || true
    done <"$1" >"$2"
}

# The body of a test script, for sub-runs, that records what its run.sh
# started into directory $1 while the pidfiles still exist: the pid of every
# server and every port (VL_TEST_* comes from the sub-run's env file).
record_script() {
    cat <<EOF
#!/bin/sh
for f in \$(cat "\$VL_TEST_DIR/pids"); do cat "\$f"; done >"$1/pids"
{
    echo "\$VL_TEST_REDIS_PORTS" | tr ',' '\n'
    echo "\$VL_TEST_REDIS_AUTH_PORT"
    echo "\$VL_TEST_MYSQL_PORT"
    echo "\$VL_TEST_MYSQL_PRIMARY_PORT"
    echo "\$VL_TEST_MYSQL_REPLICA_PORT"
    for p in \$VL_TEST_CLUSTER_PORTS; do echo "\$p"; echo \$((p + 10000)); done
    echo "\$VL_TEST_SENTINEL_PORTS" | tr ' ' '\n'
    echo "\$VL_TEST_SENTINEL_MASTER_PORT"
    echo "\$VL_TEST_SENTINEL_REPLICA_PORT"
} >"$1/ports"
EOF
}

# Succeeds if the directory recorded in file $1 existed and is gone now.
dir_removed() {
    local d
    [ -s "$1" ] || { echo "# the sub-run did not record its directory"; return 1; }
    d=$(cat "$1")
    if [ -e "$d" ]; then
        echo "# $d still exists"
        return 1
    fi
}

# ------------------------------------ (a) servers.sh start, then stop ----

A=$T/a
mkdir -p "$T/a-rec"

a_start() {
    "$SERVERS" start "$A" 3 >"$T/a-start.log" 2>&1 || { diag_file "$T/a-start.log"; return 1; }
    read_pids "$A/pids" "$T/a-rec/pids"
    # shellcheck source=/dev/null # Generated by servers.sh start.
    (. "$A/env" && {
        echo "$VL_TEST_REDIS_PORTS" | tr ',' '\n'
        echo "$VL_TEST_REDIS_AUTH_PORT"
        echo "$VL_TEST_MYSQL_PORT"
        echo "$VL_TEST_MYSQL_PRIMARY_PORT"
        echo "$VL_TEST_MYSQL_REPLICA_PORT"
        for p in $VL_TEST_CLUSTER_PORTS; do echo "$p"; echo $((p + 10000)); done
        echo "$VL_TEST_SENTINEL_PORTS" | tr ' ' '\n'
        echo "$VL_TEST_SENTINEL_MASTER_PORT"
        echo "$VL_TEST_SENTINEL_REPLICA_PORT"
    }) >"$T/a-rec/ports"
}

a_ping() {
    local port answered=0
    # shellcheck source=/dev/null
    . "$A/env" || return 1
    for port in ${VL_TEST_REDIS_PORTS//,/ }; do
        if [ "$(timeout 5 redis-cli -h 127.0.0.1 -p "$port" ping 2>&1)" = PONG ]; then
            answered=$((answered + 1))
        else
            echo "# redis on port $port does not answer PING"
        fi
    done
    [ "$answered" -eq 3 ] || return 1
    [ "$(REDISCLI_AUTH=$VL_TEST_REDIS_PASSWORD timeout 5 redis-cli -h 127.0.0.1 \
        -p "$VL_TEST_REDIS_AUTH_PORT" ping 2>&1)" = PONG ]
}

a_select() {
    local out
    # shellcheck source=/dev/null
    . "$A/env" || return 1
    out=$(timeout 10 mariadb --no-defaults -S "$VL_TEST_MYSQL_SOCK" \
        -u "$VL_TEST_MYSQL_USER" -p"$VL_TEST_MYSQL_PASSWORD" \
        -N -B -e 'SELECT 1' "$VL_TEST_MYSQL_DB" 2>&1)
    [ "$out" = 1 ] || { echo "# mariadb said: $out"; return 1; }
}

# Runs SQL $3 on the pair's instance with port $2 as user $1 (the test user
# or the app user, whose password comes from the environment so that it
# never shows in ps) and prints the result, errors included: one row a
# line, tab-separated, or "column: value" lines when $4 is -E.
pair_sql() {
    local pass=$VL_TEST_MYSQL_PASSWORD format=(-N -B)
    [ "$1" = "$VL_TEST_MYSQL_USER" ] || pass=$VL_TEST_MYSQL_APP_PASSWORD
    [ "${4:-}" != -E ] || format=(-E)
    MYSQL_PWD=$pass timeout 20 mariadb --no-defaults -h 127.0.0.1 -P "$2" -u "$1" \
        "${format[@]}" -e "$3" "$VL_TEST_MYSQL_DB" 2>&1
}

# Writes a row numbered $1 on the primary and succeeds when the replica has
# applied it: MASTER_GTID_WAIT returns 0, and the row is there.
pair_replicates() {
    local pos out
    out=$(pair_sql "$VL_TEST_MYSQL_USER" "$VL_TEST_MYSQL_PRIMARY_PORT" \
        "CREATE TABLE IF NOT EXISTS harness_pair (n INT PRIMARY KEY);
         INSERT INTO harness_pair VALUES ($1)") || { echo "# primary: $out"; return 1; }
    pos=$(pair_sql "$VL_TEST_MYSQL_USER" "$VL_TEST_MYSQL_PRIMARY_PORT" \
        'SELECT @@GLOBAL.gtid_binlog_pos') || { echo "# primary: $pos"; return 1; }
    out=$(pair_sql "$VL_TEST_MYSQL_USER" "$VL_TEST_MYSQL_REPLICA_PORT" \
        "SELECT MASTER_GTID_WAIT('$pos', 15)")
    [ "$out" = 0 ] || { echo "# replica: MASTER_GTID_WAIT('$pos') said: $out"; return 1; }
    out=$(pair_sql "$VL_TEST_MYSQL_USER" "$VL_TEST_MYSQL_REPLICA_PORT" \
        "SELECT n FROM harness_pair WHERE n = $1")
    [ "$out" = "$1" ] || { echo "# replica: row $1 is missing: $out"; return 1; }
}

a_pair() {
    local out
    # shellcheck source=/dev/null
    . "$A/env" || return 1
    out=$(pair_sql "$VL_TEST_MYSQL_USER" "$VL_TEST_MYSQL_REPLICA_PORT" \
        'SELECT @@server_id, @@read_only')
    [ "$out" = "2	1" ] || { echo "# replica server_id, read_only: $out"; return 1; }
    out=$(pair_sql "$VL_TEST_MYSQL_USER" "$VL_TEST_MYSQL_PRIMARY_PORT" \
        'SELECT @@server_id, @@read_only, @@log_bin')
    [ "$out" = "1	0	1" ] || { echo "# primary server_id, read_only, log_bin: $out"; return 1; }
    pair_replicates 1
}

# The test user can drive replication and read_only; the app user's write
# to the read_only replica is refused.
a_pair_privileges() {
    local out
    # shellcheck source=/dev/null
    . "$A/env" || return 1
    out=$(pair_sql "$VL_TEST_MYSQL_APP_USER" "$VL_TEST_MYSQL_REPLICA_PORT" \
        'INSERT INTO harness_pair VALUES (100)')
    case $out in
        *"ERROR 1290"*) ;;
        *) echo "# the app user's write to the replica: $out"; return 1 ;;
    esac
    out=$(pair_sql "$VL_TEST_MYSQL_USER" "$VL_TEST_MYSQL_REPLICA_PORT" \
        "STOP SLAVE SQL_THREAD; SHOW SLAVE STATUS" -E) || { echo "# $out"; return 1; }
    case $out in
        *"Slave_IO_Running: Yes"*"Slave_SQL_Running: No"*) ;;
        *) echo "# SHOW SLAVE STATUS after STOP SLAVE SQL_THREAD: $out"; return 1 ;;
    esac
    out=$(pair_sql "$VL_TEST_MYSQL_USER" "$VL_TEST_MYSQL_REPLICA_PORT" \
        'START SLAVE; SET GLOBAL read_only = 0; SELECT @@read_only;
         SET GLOBAL read_only = 1; SELECT @@read_only')
    [ "$out" = "0
1" ] || { echo "# START SLAVE and SET GLOBAL read_only on the replica: $out"; return 1; }
    pair_replicates 2
}

# kill -9 of server $1, restart-mysql, and replication works again.
a_pair_kill() {
    local pid out
    # shellcheck source=/dev/null
    . "$A/env" || return 1
    pid=$(cat "$A/$1.pid")
    kill -KILL "$pid" || return 1
    while ! pid_gone "$pid"; do sleep 0.05; done
    out=$("$SERVERS" restart-mysql "$A" "$1" 2>&1) || { echo "# $out"; return 1; }
    pair_replicates "$2"
}

# The TLS accounts of the main mariadbd refuse what they must: volley_tls
# without TLS, volley_x509 without a client certificate, and a client that
# trusts only the unrelated CA fails verification (2026); ed25519 logs in.
a_mysql_tls() {
    local out
    # shellcheck source=/dev/null
    . "$A/env" || return 1
    my() {
        local pass=$1
        shift
        MYSQL_PWD=$pass timeout 20 mariadb --no-defaults -h 127.0.0.1 -P "$VL_TEST_MYSQL_PORT" \
            -N -B "$@" -e 'SELECT CURRENT_USER()' "$VL_TEST_MYSQL_DB" 2>&1
    }
    out=$(my "$VL_TEST_MYSQL_TLS_PASSWORD" -u "$VL_TEST_MYSQL_TLS_USER" --skip-ssl)
    case $out in *"ERROR 1045"*) ;; *) echo "# volley_tls without TLS: $out"; return 1 ;; esac
    out=$(my "$VL_TEST_MYSQL_X509_PASSWORD" -u "$VL_TEST_MYSQL_X509_USER" \
        --ssl-ca="$VL_TEST_TLS_CA")
    case $out in *"ERROR 1045"*) ;; *) echo "# volley_x509 without a certificate: $out"; return 1 ;; esac
    out=$(my "$VL_TEST_MYSQL_TLS_PASSWORD" -u "$VL_TEST_MYSQL_TLS_USER" \
        --ssl-ca="$VL_TEST_TLS_OTHER_CA" --ssl-verify-server-cert)
    case $out in *"ERROR 2026"*) ;; *) echo "# trusting the unrelated CA: $out"; return 1 ;; esac
    out=$(my "$VL_TEST_MYSQL_X509_PASSWORD" -u "$VL_TEST_MYSQL_X509_USER" \
        --ssl-ca="$VL_TEST_TLS_CA" --ssl-verify-server-cert \
        --ssl-cert="$VL_TEST_TLS_CLIENT_CERT" --ssl-key="$VL_TEST_TLS_CLIENT_KEY")
    [ "$out" = "$VL_TEST_MYSQL_X509_USER@127.0.0.1" ] || { echo "# volley_x509: $out"; return 1; }
    out=$(my "$VL_TEST_MYSQL_ED25519_PASSWORD" -u "$VL_TEST_MYSQL_ED25519_USER")
    [ "$out" = "$VL_TEST_MYSQL_ED25519_USER@127.0.0.1" ] || { echo "# volley_ed25519: $out"; return 1; }
}

# -------------------------------------- the Redis Cluster and Sentinel ----

# Prints field $1 of a "key:value" INFO-style text on stdin.
info_field() {
    tr -d '\r' | sed -n "s/^$1://p"
}

# The cluster as every node sees it: cluster_state:ok, 6 known nodes, 3
# primaries that serve all 16384 slots, each with one replica; a key
# written through one node is read back through another.
a_cluster() {
    local port info masters=0 replicas=0 role slaves ok=0 p1 p6 out
    # shellcheck source=/dev/null
    . "$A/env" || return 1
    set -- $VL_TEST_CLUSTER_PORTS
    [ "$#" -eq 6 ] || { echo "# VL_TEST_CLUSTER_PORTS: $VL_TEST_CLUSTER_PORTS"; return 1; }
    for port in "$@"; do
        info=$(timeout 5 redis-cli -h 127.0.0.1 -p "$port" cluster info 2>&1)
        if [ "$(echo "$info" | info_field cluster_state)" != ok ] ||
            [ "$(echo "$info" | info_field cluster_slots_ok)" != 16384 ] ||
            [ "$(echo "$info" | info_field cluster_known_nodes)" != 6 ] ||
            [ "$(echo "$info" | info_field cluster_size)" != 3 ]; then
            echo "# node $port: $(echo "$info" | tr -d '\r' | head -n 7 | tr '\n' ' ')"
            ok=1
        fi
        role=$(timeout 5 redis-cli -h 127.0.0.1 -p "$port" role 2>&1 | head -n 1)
        case $role in
            master)
                masters=$((masters + 1))
                slaves=$(timeout 5 redis-cli -h 127.0.0.1 -p "$port" info replication |
                    info_field connected_slaves)
                [ "$slaves" = 1 ] || { echo "# primary $port has $slaves replicas"; ok=1; }
                ;;
            slave) replicas=$((replicas + 1)) ;;
            *) echo "# node $port: role $role"; ok=1 ;;
        esac
    done
    [ "$masters" -eq 3 ] && [ "$replicas" -eq 3 ] ||
        { echo "# $masters primaries, $replicas replicas"; ok=1; }
    p1=$1
    p6=$6
    out=$(timeout 5 redis-cli -c -h 127.0.0.1 -p "$p1" set harness:cluster "v$p1" 2>&1)
    [ "$out" = OK ] || { echo "# SET through $p1: $out"; ok=1; }
    out=$(timeout 5 redis-cli -c -h 127.0.0.1 -p "$p6" get harness:cluster 2>&1)
    [ "$out" = "v$p1" ] || { echo "# GET through $p6: $out"; ok=1; }
    return "$ok"
}

# Succeeds within $3 s once the node on port $1 says role $2.
role_within() {
    local deadline=$((SECONDS + $3))
    while [ "$SECONDS" -lt "$deadline" ]; do
        [ "$(timeout 5 redis-cli -h 127.0.0.1 -p "$1" role 2>/dev/null | head -n 1)" != "$2" ] ||
            return 0
        sleep 0.1
    done
    echo "# the server on port $1 is not a $2 after $3 s"
    return 1
}

# kill -9 of the primary cluster-1 (with its replica's port found from
# cluster-1 itself): the replica takes over; restart-redis brings cluster-1
# back as its replica, and wait-cluster finds the cluster healthy.
a_cluster_kill() {
    local p1 id replica out
    # shellcheck source=/dev/null
    . "$A/env" || return 1
    p1=${VL_TEST_CLUSTER_PORTS%% *}
    id=$(timeout 5 redis-cli -h 127.0.0.1 -p "$p1" cluster myid)
    replica=$(timeout 5 redis-cli -h 127.0.0.1 -p "$p1" cluster nodes |
        awk -v id="$id" '$4 == id { p = $2; sub(/@.*/, "", p); sub(/.*:/, "", p); print p }')
    [ -n "$replica" ] || { echo "# cluster-1 ($p1) has no replica"; return 1; }
    kill -KILL "$(cat "$A/cluster-1.pid")" || return 1
    role_within "$replica" master 20 || return 1
    out=$("$SERVERS" restart-redis "$A" cluster-1 2>&1) || { echo "# $out"; return 1; }
    out=$("$SERVERS" wait-cluster "$A" 2>&1) || { echo "# $out"; return 1; }
    role_within "$p1" slave 1 || return 1
    a_cluster
}

# The sentinels: each names the master's port, knows one replica and the
# two other sentinels.
a_sentinel() {
    local port ok=0 out n
    # shellcheck source=/dev/null
    . "$A/env" || return 1
    [ "$VL_TEST_SENTINEL_MASTER" = vlmaster ] || return 1
    for port in $VL_TEST_SENTINEL_PORTS; do
        n=$((${n:-0} + 1))
        out=$(timeout 5 redis-cli -h 127.0.0.1 -p "$port" \
            sentinel get-master-addr-by-name vlmaster 2>&1 | tr '\n' ' ')
        [ "$out" = "127.0.0.1 $VL_TEST_SENTINEL_MASTER_PORT " ] ||
            { echo "# sentinel $port names the master $out"; ok=1; }
        out=$(timeout 5 redis-cli -h 127.0.0.1 -p "$port" sentinel replicas vlmaster 2>&1 |
            awk 'NR % 2 == 1 { k = $0; next } k == "port" { print }')
        [ "$out" = "$VL_TEST_SENTINEL_REPLICA_PORT" ] ||
            { echo "# sentinel $port knows replicas $out"; ok=1; }
        out=$(timeout 5 redis-cli -h 127.0.0.1 -p "$port" sentinel sentinels vlmaster 2>&1 |
            awk 'NR % 2 == 1 { k = $0; next } k == "port" { print }' | sort | tr '\n' ' ')
        [ "$out" = "$(echo "$VL_TEST_SENTINEL_PORTS" | tr ' ' '\n' | grep -vx "$port" |
            sort | tr '\n' ' ')" ] || { echo "# sentinel $port knows sentinels $out"; ok=1; }
    done
    [ "${n:-0}" -eq 3 ] || { echo "# VL_TEST_SENTINEL_PORTS: $VL_TEST_SENTINEL_PORTS"; ok=1; }
    out=$(timeout 5 redis-cli -h 127.0.0.1 -p "$VL_TEST_SENTINEL_REPLICA_PORT" info replication |
        info_field master_link_status)
    [ "$out" = up ] || { echo "# the replica's master_link_status: $out"; ok=1; }
    return "$ok"
}

# Succeeds once every sentinel names port $1 as the master, within $2 s.
sentinels_name() {
    local deadline=$((SECONDS + $2)) port all
    while [ "$SECONDS" -lt "$deadline" ]; do
        all=1
        for port in $VL_TEST_SENTINEL_PORTS; do
            [ "$(timeout 5 redis-cli -h 127.0.0.1 -p "$port" \
                sentinel get-master-addr-by-name vlmaster 2>/dev/null | sed -n 2p)" = "$1" ] ||
                all=0
        done
        [ "$all" -eq 0 ] || return 0
        sleep 0.1
    done
    echo "# the sentinels do not all name port $1 after $2 s"
    return 1
}

# SENTINEL FAILOVER promotes the replica; wait-sentinel then finds the set
# healthy, with the old master its replica.
a_sentinel_failover() {
    local out
    # shellcheck source=/dev/null
    . "$A/env" || return 1
    out=$(timeout 5 redis-cli -h 127.0.0.1 -p "${VL_TEST_SENTINEL_PORTS%% *}" \
        sentinel failover vlmaster 2>&1)
    [ "$out" = OK ] || { echo "# SENTINEL FAILOVER: $out"; return 1; }
    role_within "$VL_TEST_SENTINEL_REPLICA_PORT" master 20 || return 1
    sentinels_name "$VL_TEST_SENTINEL_REPLICA_PORT" 20 || return 1
    out=$("$SERVERS" wait-sentinel "$A" 2>&1) || { echo "# $out"; return 1; }
    role_within "$VL_TEST_SENTINEL_MASTER_PORT" slave 1
}

# kill -9 of the master (sentinel-replica since the failover): the
# sentinels promote sentinel-master again; restart-redis brings the killed
# one back as its replica.
a_sentinel_kill() {
    local out
    # shellcheck source=/dev/null
    . "$A/env" || return 1
    kill -KILL "$(cat "$A/sentinel-replica.pid")" || return 1
    sentinels_name "$VL_TEST_SENTINEL_MASTER_PORT" 30 || return 1
    role_within "$VL_TEST_SENTINEL_MASTER_PORT" master 5 || return 1
    out=$("$SERVERS" restart-redis "$A" sentinel-replica 2>&1) || { echo "# $out"; return 1; }
    role_within "$VL_TEST_SENTINEL_REPLICA_PORT" slave 1 || return 1
    out=$("$SERVERS" wait-sentinel "$A" 2>&1) || { echo "# $out"; return 1; }
    a_sentinel
}

a_stop() {
    "$SERVERS" stop "$A" >"$T/a-stop.log" 2>&1 || { diag_file "$T/a-stop.log"; return 1; }
}

check "servers.sh start brings up 3 redis, redis-auth, mariadb, a cluster and sentinels" a_start
check "the 3 redis instances and redis-auth answer PING" a_ping
check "mariadb answers SELECT 1 through its socket" a_select
check "the TLS, X509 and ed25519 accounts of mariadb accept and refuse as they must" a_mysql_tls
check "mysql-replica replicates mysql-primary by GTID, read_only" a_pair
check "the test user drives replication and read_only; read_only refuses the app user" \
    a_pair_privileges
check "after kill -9 and restart-mysql of mysql-primary the replica reconnects" \
    a_pair_kill mysql-primary 3
check "after kill -9 and restart-mysql of mysql-replica it resumes replicating" \
    a_pair_kill mysql-replica 4
check "the cluster: 6 nodes say cluster_state:ok, 3 primaries with a replica each, all slots" \
    a_cluster
check "after kill -9 of cluster-1 its replica takes over; restarted, cluster-1 is its replica" \
    a_cluster_kill
check "the 3 sentinels name the master and know the replica and each other" a_sentinel
check "SENTINEL FAILOVER promotes the replica; wait-sentinel finds the set healthy" \
    a_sentinel_failover
check "after kill -9 of the new master the sentinels promote the old one; restarted, a replica" \
    a_sentinel_kill
# The restarts made new processes, which stop must end too.
read_pids "$A/pids" "$T/a-rec/pids"
check "servers.sh stop succeeds" a_stop
check "every server process is gone after stop" all_gone "$T/a-rec/pids" 22
check "every server port refuses connections after stop" all_refuse "$T/a-rec/ports"
a_stop_again() {
    "$SERVERS" stop "$A" >"$T/a-stop2.log" 2>&1 || { diag_file "$T/a-stop2.log"; return 1; }
}

check "a second servers.sh stop is harmless" a_stop_again

# --------------------------------------- (b) a sub-run whose test fails ----

B=$T/b
mkdir -p "$B"
{
    record_script "$B"
    echo 'echo "1..1"'
    echo 'echo "not ok 1 - deliberate"'
} >"$B/fail.sh"
chmod +x "$B/fail.sh"

B_RC=0
VL_TEST_DIR_RECORD=$B/dir "$RUN" "$B/fail.sh" </dev/null >"$B/out" 2>"$B/err" || B_RC=$?

b_exit() {
    [ "$B_RC" -ne 0 ] || { diag_file "$B/out"; return 1; }
}

b_summary() {
    local last
    last=$(tail -n 1 "$B/out")
    [ "$last" = "0 passed, 1 failed" ] || {
        echo "# last line: $last"
        diag_file "$B/out"
        diag_file "$B/err"
        return 1
    }
}

check "a failing sub-run exits non-zero" b_exit
check "a failing sub-run ends with '0 passed, 1 failed'" b_summary
check "a failing sub-run stops all its servers" all_gone "$B/pids" 22
check "a failing sub-run removes its directory" dir_removed "$B/dir"

# ---------------------------------- (c) a sub-run interrupted by SIGINT ----

C=$T/c
mkdir -p "$C"
{
    record_script "$C"
    echo "echo \$\$ >>\"$C/pids\""
    echo 'echo "1..1"'
    echo "sleep 60 &"
    echo "echo \$! >>\"$C/pids\""
    echo "touch \"$C/ready\""
    echo "wait"
    echo 'echo "ok 1 - slept"'
} >"$C/sleep.sh"
chmod +x "$C/sleep.sh"

# A background job of a non-interactive shell starts with SIGINT ignored,
# and bash cannot trap a signal that was ignored when it started. Job control
# (set -m) avoids that, and gives the sub-run its own process group like a
# job started from an interactive shell.
set -m
VL_TEST_DIR_RECORD=$C/dir "$RUN" "$C/sleep.sh" </dev/null >"$C/out" 2>"$C/err" &
SUBRUN=$!
set +m

deadline=$((SECONDS + 30))
while [ ! -e "$C/ready" ] && [ "$SECONDS" -lt "$deadline" ] && kill -0 "$SUBRUN" 2>/dev/null; do
    sleep 0.05
done

C_RC=""
C_TIME=""
if [ -e "$C/ready" ]; then
    t0=$EPOCHREALTIME
    kill -INT "$SUBRUN"
    # Wait at most 20 s; a sub-run that ignores the signal must not make
    # this test hang for the full minute of the sleeping test.
    deadline=$((SECONDS + 20))
    while kill -0 "$SUBRUN" 2>/dev/null && ! pid_gone "$SUBRUN" && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 0.05
    done
    if pid_gone "$SUBRUN"; then
        wait "$SUBRUN" && C_RC=0 || C_RC=$?
        C_TIME=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
        SUBRUN=""
    fi
else
    echo "# the sub-run's test never became ready"
    diag_file "$C/err"
fi

c_status() {
    [ "$C_RC" = 130 ] || { echo "# exit status: ${C_RC:-still running}"; diag_file "$C/err"; return 1; }
}

c_prompt() {
    [ -n "$C_TIME" ] || return 1
    echo "# the sub-run exited $C_TIME s after SIGINT"
    awk -v t="$C_TIME" 'BEGIN { exit !(t < 10) }'
}

c_gone() {
    local ok=0
    all_gone "$C/pids" 24 || ok=1
    all_refuse "$C/ports" || ok=1
    return "$ok"
}

check "an interrupted sub-run exits with status 130" c_status
check "an interrupted sub-run exits within 10 s" c_prompt
check "no process of an interrupted sub-run survives, no port stays open" c_gone
check "an interrupted sub-run removes its directory" dir_removed "$C/dir"

# ------------------------------------ (d) one process per cmocka test ----

D=$T/d
mkdir -p "$D"
cat >"$D/runner.c" <<EOF
#include "testutil.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

/* Fails with a loop and its allocations still live. */
static void t_leak(void **state)
{
    (void)state;
    assert_non_null(vl_loop_new());
    fail_msg("deliberate");
}

/* Passes only if nothing is live, whatever ran before. */
static void t_clean(void **state)
{
    (void)state;
    assert_int_equal(tu_alloc_live(), 0);
}

static void t_killed(void **state)
{
    (void)state;
    printf("printed before the kill");
    kill(getpid(), SIGKILL);
}

/* Leaves a grandchild behind in its process group, then hangs. */
static void t_hang(void **state)
{
    pid_t pid = fork();
    FILE *fp;

    (void)state;
    if (pid == 0) {
        sleep(60);
        _exit(0);
    }
    fp = fopen("$D/grandchild", "w");
    fprintf(fp, "%ld\\n", (long)pid);
    fclose(fp);
    sleep(60);
}

static void t_skip(void **state)
{
    (void)state;
    skip();
}

/* A sanitizer's or valgrind's report at exit changes the exit status. */
static void exit_23(void)
{
    _exit(23);
}

static void t_report_at_exit(void **state)
{
    (void)state;
    atexit(exit_23);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(t_leak, tu_setup),
        cmocka_unit_test_setup(t_clean, tu_setup),
        cmocka_unit_test_setup(t_killed, tu_setup),
        cmocka_unit_test_setup(t_hang, tu_setup),
        cmocka_unit_test_setup(t_skip, tu_setup),
        cmocka_unit_test_setup(t_clean, tu_setup),
        cmocka_unit_test_setup(t_report_at_exit, tu_setup),
    };

    return tu_run("runner", tests, sizeof(tests) / sizeof(tests[0]));
}
EOF

d_build() {
    [ -r "$BUILD/libvolley.a" ] || { echo "# $BUILD/libvolley.a is missing (make lib)"; return 1; }
    cc -std=c11 -D_GNU_SOURCE -I"$ROOT/include" -I"$ROOT/tests/common" -o "$D/runner" \
        "$D/runner.c" "$ROOT/tests/common/testutil.c" "$BUILD/libvolley.a" -lcmocka \
        -lhiredis -lmariadb -lev -lpthread >"$D/cc.log" 2>&1 || { diag_file "$D/cc.log"; return 1; }
}

D_RC=""
D_TIME=""
if d_build; then
    D_RC=0
    t0=$SECONDS
    env -u VL_TEST_FILTER VL_TEST_CASE_TIMEOUT=2 "$D/runner" </dev/null >"$D/out" 2>&1 ||
        D_RC=$?
    D_TIME=$((SECONDS - t0))
    env -u VL_TEST_CASE_TIMEOUT VL_TEST_FILTER='*clean' "$D/runner" </dev/null >"$D/filtered" 2>&1 ||
        true
fi

# has FILE LINE...: succeeds if FILE has each LINE as a whole line, the
# first of them before the last; shows the file otherwise.
has() {
    local f=$1 want first last
    shift
    [ -n "$D_RC" ] || return 1
    for want in "$@"; do
        if ! grep -qxF -- "$want" "$f"; then
            echo "# no line '$want' in:"
            diag_file "$f"
            return 1
        fi
    done
    first=$(grep -nxF -- "$1" "$f" | head -n 1 | cut -d: -f1)
    last=$(grep -nxF -- "${!#}" "$f" | tail -n 1 | cut -d: -f1)
    [ "$first" -le "$last" ] || { echo "# out of order in:"; diag_file "$f"; return 1; }
}

d_isolated() {
    has "$D/out" "not ok 1 - t_leak" "ok 2 - t_clean" "ok 6 - t_clean"
}

d_killed() {
    has "$D/out" "# printed before the kill" "not ok 3 - t_killed" \
        "# killed by SIGKILL (Killed), before the test reported a result"
}

d_timeout() {
    local pid
    has "$D/out" "not ok 4 - t_hang" \
        "# timed out after 2 s (VL_TEST_CASE_TIMEOUT); its process group was killed, before the test reported a result" ||
        return 1
    [ "$D_TIME" -lt 30 ] || { echo "# the suite took $D_TIME s"; return 1; }
    pid=$(cat "$D/grandchild" 2>/dev/null) || { echo "# no grandchild recorded"; return 1; }
    pid_gone "$pid" || { echo "# the hanging test's child $pid survived"; return 1; }
}

d_exit() {
    has "$D/out" "not ok 7 - t_report_at_exit" \
        "# exit status 23, after the test itself had passed"
}

d_plan() {
    has "$D/out" "1..7" "ok 5 - t_skip # SKIP" || return 1
    [ "$D_RC" -eq 4 ] || { echo "# exit status $D_RC, wanted 4 (the failed tests)"; return 1; }
}

d_filter() {
    has "$D/filtered" "1..2" "ok 1 - t_clean" "ok 2 - t_clean" || return 1
    if grep -q -e t_leak -e t_hang "$D/filtered"; then
        diag_file "$D/filtered"
        return 1
    fi
}

check "tu_run: a failed test's leftovers never reach the next test" d_isolated
check "tu_run: a killed test fails with the signal's name and keeps its output" d_killed
check "tu_run: a hanging test fails after VL_TEST_CASE_TIMEOUT, its process group killed" d_timeout
check "tu_run: one plan, skips marked, the exit status counts the failures" d_plan
check "tu_run: VL_TEST_FILTER selects tests by wildcard" d_filter
check "tu_run: a test whose process exits non-zero after it passed fails" d_exit

# ------------------------------------------------ (e) the fuzz smoke ----

E=$T/e
mkdir -p "$E/fuzz"
cat >"$E/ok.c" <<'EOF'
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return size > 2 && data[0] == 'v' && data[1] == 'l';
}
EOF
cat >"$E/crash.c" <<'EOF'
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *p = malloc(1);

    (void)data;
    p[size + 16] = 1; /* a heap overflow on the first input */
    free(p);
    return 0;
}
EOF

e_build() {
    local name
    for name in ok crash; do
        clang-14 -g -fsanitize=fuzzer,address -o "$E/fuzz/fuzz_harness_$name" "$E/$name.c" \
            >"$E/cc-$name.log" 2>&1 || { diag_file "$E/cc-$name.log"; return 1; }
    done
}

E_OK=""
E_CRASH=""
if e_build; then
    E_OK=0
    E_CRASH=0
    VL_FUZZ_BUILD=$E VL_FUZZ_SMOKE_RUNS=2000 "$HERE/test_fuzz.sh" harness_ok \
        </dev/null >"$E/ok.out" 2>&1 || E_OK=$?
    VL_FUZZ_BUILD=$E "$HERE/test_fuzz.sh" harness_crash </dev/null >"$E/crash.out" 2>&1 ||
        E_CRASH=$?
fi

e_ok() {
    [ "$E_OK" = 0 ] || { echo "# exit status ${E_OK:-not run}"; diag_file "$E/ok.out"; return 1; }
    grep -qE '^ok 1 - fuzz_harness_ok: [0-9]+ execs, cov [0-9]+, ft [0-9]+,' "$E/ok.out" ||
        { diag_file "$E/ok.out"; return 1; }
}

e_crash() {
    [ -n "$E_CRASH" ] && [ "$E_CRASH" -ne 0 ] ||
        { echo "# exit status ${E_CRASH:-not run}"; diag_file "$E/crash.out"; return 1; }
    grep -q '^not ok 1 - fuzz_harness_crash' "$E/crash.out" &&
        grep -q 'AddressSanitizer: heap-buffer-overflow' "$E/crash.out" ||
        { diag_file "$E/crash.out"; return 1; }
    compgen -G "$E/artifacts/fuzz_harness_crash-crash-*" >/dev/null ||
        { echo "# no crashing input kept in $E/artifacts"; return 1; }
}

check "test_fuzz.sh: a target that runs clean is ok, with its executions and coverage" e_ok
check "test_fuzz.sh: a crashing target fails, with the report and the input kept" e_crash
check "test_fuzz.sh: nothing is written into tests/fuzz" test ! -e "$HERE/fuzz/corpus/harness_ok"

# The TAP lines carry the results; the exit status agrees with them.
[ "$FAILED" -eq 0 ]
