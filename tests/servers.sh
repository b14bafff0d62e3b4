#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# Throwaway Redis and MariaDB servers for the volley test suite.
#
# Usage:
#   tests/servers.sh start DIR [K] [--galera]
#                                         start K (default 3) plain redis-server
#                                         instances, one password-protected
#                                         redis-server ("redis-auth"), the TLS
#                                         redis-servers (below), the main
#                                         mariadbd ("mysql") and a GTID
#                                         primary/replica pair of mariadbd
#                                         ("mysql-primary", "mysql-replica"),
#                                         a 6-node Redis Cluster and a Redis
#                                         Sentinel set (below),
#                                         all private to DIR; with --galera
#                                         also a 3-node Galera cluster
#                                         ("galera-1".."galera-3", below)
#   tests/servers.sh stop DIR             stop everything started into DIR
#   tests/servers.sh status DIR           list the servers; exit 0 if all run
#   tests/servers.sh restart-redis DIR N  restart redis instance N (1-based,
#                                         "auth", "tls", "mtls", "tls-expired",
#                                         "tls-wronghost", "cluster-N",
#                                         "sentinel-N", "sentinel-master" or
#                                         "sentinel-replica") on the same port
#                                         and options (see below for the
#                                         cluster and sentinel servers)
#   tests/servers.sh wait-cluster DIR     wait (at most 30 s) until the Redis
#                                         Cluster is healthy again; exit 0 if
#                                         it is
#   tests/servers.sh wait-sentinel DIR    the same for the sentinel set
#   tests/servers.sh restart-mysql DIR [NAME]
#                                         restart mariadbd instance NAME
#                                         ("mysql", the default,
#                                         "mysql-primary", "mysql-replica" or
#                                         "galera-N") on the same port,
#                                         socket, data directory and options;
#                                         a Galera node is back once it has
#                                         rejoined and is synced
#
# Every server listens on 127.0.0.1 only, on a random free port in
# 20000-29999, and keeps all its files (data, socket, log, pidfile) inside
# DIR, so that several test runs can coexist with each other and with any
# system-wide Redis or MariaDB service, which this script never touches.
#
# After a successful start, DIR contains:
#   env          a sourceable file exporting the VL_TEST_* variables
#   pids         the list of pidfiles, one per line, which "stop" works from
#   NAME.cmd     the exact command line of each server, reused by restart-*
#   NAME.port    the TCP port of each server
#   NAME.log     the log of each redis server; NAME.err for each mariadbd
#   tls/         the certificates of tests/tls_certs.sh (CA, server, client,
#                an unrelated CA, an expired and a wrong-host certificate)
#
# The TLS redis-servers listen only on a TLS port (and their unix socket,
# which is plain): "redis-tls" presents tls/server.crt and takes a client
# certificate signed by tls/ca.crt if one is offered, "redis-mtls" requires
# one, "redis-tls-expired" presents tls/expired.crt and "redis-tls-wronghost"
# tls/wronghost.crt (valid, but for another host name).
#
# The Redis Cluster: "cluster-1".."cluster-6", made by redis-cli --cluster
# create --cluster-replicas 1: 3 primaries (first cluster-1..3) serving the
# 16384 slots between them, each with one replica. Each node's cluster bus
# listens on its port + 10000 (at most 39999; both ports were free), its
# nodes.conf is DIR/cluster-N/nodes.conf, and cluster-node-timeout is
# 1000 ms: a primary killed with -9 is replaced by its replica within some
# 3 s. Nodes restarted with restart-redis rejoin with their nodes.conf (a
# replaced primary as the replica of its successor). The start returns once
# every node says cluster_state:ok and all see the same map (and redis-cli
# --cluster check agrees); wait-cluster waits for that again, with 3
# primaries of one replica each and no node marked failed, whichever nodes
# are primaries by then.
#
# The Sentinel set: "sentinel-master", its replica "sentinel-replica"
# (replicaof, in sync before the start returns) and 3 sentinels
# "sentinel-1".."sentinel-3" (redis-server --sentinel, configuration files
# DIR/sentinel-N/sentinel.conf, which they rewrite) monitoring the master
# as "vlmaster" with quorum 2, down-after-milliseconds 1000 and
# failover-timeout 3000: SENTINEL FAILOVER vlmaster promotes the replica in
# under a second, and a master killed with -9 is replaced within some 3 s.
# The start returns once every sentinel knows the replica and the two other
# sentinels, so a failover works at once. restart-redis of sentinel-master
# or sentinel-replica brings it back in the role the sentinels give it by
# then (a replica of the present master, or the master); wait-sentinel
# waits until all sentinels name the same master, see it up, and know the
# other sentinels and the replica, which is in sync. After a failover an
# old master that still runs is made a replica of the new one by
# wait-sentinel, as the sentinels themselves would some 10 s later.
# The replicating servers of both sets sync at once (diskless, no delay).
# Without a Redis build with cluster and sentinel support (Debian's
# redis-server has both) the start fails.
#
# The main mariadbd serves TLS with tls/server.crt (tls/ca.crt as its CA,
# for the client certificates of REQUIRE X509 accounts); clients that do not
# ask for TLS connect in plain text as before.
#
# The GTID pair: "mysql-primary" writes a binary log (server_id 1, ROW);
# "mysql-replica" (server_id 2, read_only=1, log_slave_updates) replicates
# it with MASTER_USE_GTID=slave_pos and MASTER_CONNECT_RETRY=1, so it
# reconnects by itself to a primary that was killed and restarted. The test
# database and user were created on the primary and reached the replica by
# replication before the start returns.
#
# The Galera cluster (--galera): galera-1 bootstraps it, galera-2 and
# galera-3 join one at a time, each receiving galera-1's data by rsync
# (SST); all have the test database and user. A node killed with -9 and
# restarted with restart-mysql rejoins the others (with a full transfer).
# The failure detector is tuned for tests: a node killed, or cut off with
# SET GLOBAL wsrep_provider_options='gmcast.isolate=1', leaves the primary
# component within some 4 s, and one back from isolation
# (gmcast.isolate=0) is synced again within some 5 s.
#
# DIR/env exports:
#   VL_TEST_DIR, VL_TEST_SERVERS      DIR and the path of this script
#   VL_TEST_REDIS_PORTS, _SOCKS       the K plain redis instances, comma-
#                                     separated
#   VL_TEST_REDIS_AUTH_PORT, _SOCK, VL_TEST_REDIS_PASSWORD
#                                     redis-auth and its password
#   VL_TEST_TLS_DIR                   DIR/tls
#   VL_TEST_TLS_CA, _OTHER_CA         DIR/tls/ca.crt (which signed every
#                                     server certificate) and an unrelated CA
#   VL_TEST_TLS_CLIENT_CERT, _KEY     a client certificate signed by the CA
#   VL_TEST_REDIS_TLS_PORT, _MTLS_PORT, _TLS_EXPIRED_PORT,
#   _TLS_WRONGHOST_PORT               the TLS redis instances
#   VL_TEST_MYSQL_PORT, _SOCK         the main mariadbd
#   VL_TEST_MYSQL_USER, _PASSWORD, _DB
#                                     the test account and database, the same
#                                     on every mariadbd
#   VL_TEST_MYSQL_TLS_USER, _PASSWORD     on the main mariadbd: REQUIRE SSL
#   VL_TEST_MYSQL_X509_USER, _PASSWORD    REQUIRE X509 (the client
#                                         certificate above)
#   VL_TEST_MYSQL_ED25519_USER, _PASSWORD IDENTIFIED VIA ed25519
#                                     (each of the three may use the test
#                                     database only)
#   VL_TEST_MYSQL_PRIMARY_PORT, _SOCK and VL_TEST_MYSQL_REPLICA_PORT, _SOCK
#                                     the GTID pair. The test user may run
#                                     STOP/START SLAVE, SHOW SLAVE STATUS
#                                     and SET GLOBAL read_only on both, and
#                                     read_only does not stop its writes
#                                     (ALL includes READ_ONLY ADMIN)
#   VL_TEST_MYSQL_APP_USER, _APP_PASSWORD
#                                     on the pair only: an account with
#                                     everything but READ_ONLY ADMIN, whose
#                                     writes a read_only server refuses
#                                     with error 1290
#   VL_TEST_CLUSTER_PORTS             the 6 cluster nodes' ports, space-
#                                     separated, cluster-1 first
#   VL_TEST_CLUSTER_URL               redis+cluster://127.0.0.1:P1,...,P6
#                                     (every node a seed)
#   VL_TEST_CLUSTER_NODE_TIMEOUT_MS   their cluster-node-timeout (1000)
#   VL_TEST_SENTINEL_PORTS            the 3 sentinels' ports, space-separated
#   VL_TEST_SENTINEL_MASTER           the name they monitor: vlmaster
#   VL_TEST_SENTINEL_MASTER_PORT, _REPLICA_PORT
#                                     sentinel-master and sentinel-replica,
#                                     as started (a failover swaps roles:
#                                     ask the sentinels who the master is)
#   VL_TEST_SENTINEL_URL              redis+sentinel://127.0.0.1:S1,S2,S3/vlmaster
#   VL_TEST_SENTINEL_DOWN_AFTER_MS    their down-after-milliseconds (1000)
#   VL_TEST_GALERA_PORTS, _SOCKS      with --galera only: the nodes' client
#                                     ports and sockets, comma-separated, in
#                                     order (galera-1 first)
#
# "stop" never deletes DIR: whoever created it removes it.

set -eu

readonly REDIS_PASSWORD=volleypass
readonly MYSQL_USER=volley
readonly MYSQL_PASSWORD=volleypass
readonly MYSQL_DB=volley_test
# The TLS and authentication accounts of the main instance: one that
# requires TLS, one that requires a client certificate signed by the test
# CA, and one that authenticates with ed25519.
readonly MYSQL_TLS_USER=volley_tls
readonly MYSQL_TLS_PASSWORD=volleytls
readonly MYSQL_X509_USER=volley_x509
readonly MYSQL_X509_PASSWORD=volleyx509
readonly MYSQL_ED25519_USER=volley_ed25519
readonly MYSQL_ED25519_PASSWORD=volleyed25519
# The account mysql-replica replicates through; only the pair has it.
readonly MYSQL_REPL_USER=volley_repl
readonly MYSQL_REPL_PASSWORD=volleyrepl
# On the pair, an account that read_only applies to: the test user's ALL
# PRIVILEGES include READ_ONLY ADMIN, which lets it write to a read_only
# server (and set read_only); this one has everything else.
readonly MYSQL_APP_USER=volley_app
readonly MYSQL_APP_PASSWORD=volleyapp

# The readiness timeouts are generous because a loaded CI machine can be slow,
# yet short enough that a broken server fails the run quickly.
readonly REDIS_READY_SECONDS=10
readonly MYSQL_READY_SECONDS=30
readonly STOP_SECONDS=10

# The absolute path of this script is written into DIR/env so that tests can
# call it back (for example to restart a server they have killed).
SELF=$(cd "$(dirname "$0")" && pwd -P)/$(basename "$0")
readonly SELF
TLS_CERTS=$(dirname "$SELF")/tls_certs.sh
readonly TLS_CERTS

# The TLS redis instances, as name:certificate:client-auth.
readonly REDIS_TLS_INSTANCES="redis-tls:server:optional redis-mtls:server:yes
redis-tls-expired:expired:optional redis-tls-wronghost:wronghost:optional"

usage() {
    echo "usage: $0 start DIR [K] [--galera] | stop DIR | status DIR |" \
         "restart-redis DIR N|auth|tls|mtls|tls-expired|tls-wronghost|cluster-N|" \
         "sentinel-N|sentinel-master|sentinel-replica | wait-cluster DIR |" \
         "wait-sentinel DIR |" \
         "restart-mysql DIR [mysql|mysql-primary|mysql-replica|galera-N]" >&2
    exit 2
}

say() {
    echo "servers.sh: $*"
}

warn() {
    echo "servers.sh: $*" >&2
}

# Seconds since an arbitrary origin, with microseconds, for timing messages.
# EPOCHREALTIME avoids forking date(1) in polling loops.
now() {
    echo "$EPOCHREALTIME"
}

# Prints the time elapsed since the given now() value, in seconds.
elapsed_since() {
    awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'
}

# Resolves DIR to an absolute, symlink-free path. The process ownership check
# in our_pid compares it with /proc/PID/cwd, which is always canonical.
resolve_dir() {
    if [ "$2" = create ]; then
        mkdir -p "$1"
    fi
    if [ ! -d "$1" ]; then
        return 1
    fi
    (cd "$1" && pwd -P)
}

# Succeeds if something accepts TCP connections on 127.0.0.1:$1. On loopback
# a closed port refuses at once, so this never waits for a timeout.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Sets PORT to a random free loopback port in 20000-29999 that this
# invocation has not handed out yet. Another program could still grab the
# port before our server binds it; the start functions retry for that case.
CHOSEN_PORTS=" "
pick_port() {
    local tries=0 p
    while [ "$tries" -lt 500 ]; do
        tries=$((tries + 1))
        p=$((20000 + RANDOM % 10000))
        case $CHOSEN_PORTS in
            *" $p "*) continue ;;
        esac
        if port_in_use "$p"; then
            continue
        fi
        CHOSEN_PORTS="$CHOSEN_PORTS$p "
        PORT=$p
        return 0
    done
    warn "could not find a free port in 20000-29999"
    return 1
}

# Succeeds if process $1 exists and is not a zombie. A zombie counts as gone:
# it no longer holds ports or files, and an init process that does not reap
# orphans would otherwise make it look alive forever.
pid_alive() {
    local stat state
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    # The command name in field 2 may contain spaces, so cut after its ")".
    state=${stat##*) }
    state=${state%% *}
    [ "$state" != Z ] && [ "$state" != X ]
}

# Prints the pid recorded in pidfile $1 and succeeds only if that process is
# alive, is a redis-server or mariadbd, and has its working directory inside
# DIR (both servers chdir into their data directory). The last two checks
# guarantee that a stale pidfile whose pid was recycled, or a system server,
# is never signalled.
our_pid() {
    local pid cmdline cwd
    [ -r "$1" ] || return 1
    pid=$(head -n 1 "$1" 2>/dev/null) || return 1
    case $pid in
        '' | *[!0-9]*) return 1 ;;
    esac
    pid_alive "$pid" || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    case $cmdline in
        *redis-server* | *mariadbd*) ;;
        *) return 1 ;;
    esac
    cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null) || return 1
    case $cwd in
        "$DIR" | "$DIR"/*) ;;
        *) return 1 ;;
    esac
    echo "$pid"
}

# The server name of a pidfile: DIR/redis-2.pid is "redis-2".
name_of() {
    local base=${1##*/}
    echo "${base%.pid}"
}

# Stops the servers whose pidfiles are given as arguments: SIGCONT first
# (a test may have stopped one with SIGSTOP, and a stopped process would
# never act on SIGTERM), then SIGTERM, a grace period of STOP_SECONDS for
# all of them together, and SIGKILL for whatever survives. Prints one line
# saying what happened. Fails only if a process outlives even SIGKILL.
terminate() {
    local f pid name deadline
    local -a pids=() names=() killed=()
    for f in "$@"; do
        pid=$(our_pid "$f") || continue
        name=$(name_of "$f")
        kill -CONT "$pid" 2>/dev/null || true
        kill -TERM "$pid" 2>/dev/null || true
        pids+=("$pid")
        names+=("$name($pid)")
    done
    if [ "${#pids[@]}" -eq 0 ]; then
        say "stop: no server running"
        return 0
    fi

    deadline=$((SECONDS + STOP_SECONDS))
    while :; do
        local alive=0
        for pid in "${pids[@]}"; do
            if pid_alive "$pid"; then
                alive=1
                break
            fi
        done
        [ "$alive" -eq 1 ] || break
        [ "$SECONDS" -lt "$deadline" ] || break
        sleep 0.05
    done

    for pid in "${pids[@]}"; do
        if pid_alive "$pid"; then
            kill -KILL "$pid" 2>/dev/null || true
            killed+=("$pid")
        fi
    done

    # SIGKILL is asynchronous too; give the kernel a moment to finish it so
    # that callers can rely on the ports and files being released.
    local survivors=()
    if [ "${#killed[@]}" -gt 0 ]; then
        deadline=$((SECONDS + 3))
        while [ "$SECONDS" -lt "$deadline" ]; do
            survivors=()
            for pid in "${killed[@]}"; do
                if pid_alive "$pid"; then
                    survivors+=("$pid")
                fi
            done
            [ "${#survivors[@]}" -gt 0 ] || break
            sleep 0.05
        done
    fi

    say "stop: stopped ${names[*]}; ${#killed[@]} needed SIGKILL"
    if [ "${#survivors[@]}" -gt 0 ]; then
        warn "stop: still alive after SIGKILL: ${survivors[*]}"
        return 1
    fi
    return 0
}

# Prints the last lines of a log file, to explain a failed start.
show_log() {
    if [ -s "$1" ]; then
        # The cause is usually an [ERROR] line early in a long log, above
        # the generic advice the tail shows.
        if grep -q -i -e '\[ERROR\]' -e '^ERROR' "$1"; then
            warn "---- error lines of $1 ----"
            grep -i -m 20 -e '\[ERROR\]' -e '^ERROR' "$1" >&2
        fi
        warn "---- last lines of $1 ----"
        tail -n 25 "$1" >&2
        warn "---- end of $1 ----"
    fi
}

# Succeeds if the log file $1 says the server could not bind its port, which
# is the one failure worth retrying with another port.
log_says_port_taken() {
    grep -q -e 'Address already in use' -e 'errno: 98' -e 'error: 98' \
        "$1" 2>/dev/null
}

# Writes the command line in CMD to DIR/$1.cmd, quoted so that restart-*
# can evaluate it again exactly as it was first run.
save_cmd() {
    printf '%q ' "${CMD[@]}" >"$DIR/$1.cmd"
    echo >>"$DIR/$1.cmd"
}

# ---------------------------------------------------------------- redis ----

# The command line being built for a server; save_cmd stores it in DIR.
CMD=()
# The port whose server sentinel-master or sentinel-replica is to replicate
# (--replicaof); empty for a master.
REPLICAOF=""

# Prints the "certificate:client-auth" of TLS instance $1; fails for a
# plain instance.
redis_tls_of() {
    local i
    for i in $REDIS_TLS_INSTANCES; do
        if [ "${i%%:*}" = "$1" ]; then
            echo "${i#*:}"
            return 0
        fi
    done
    return 1
}

# Builds the redis-server command line for instance $1 on port $2 into the
# global array CMD. Extra arguments are appended (used for requirepass).
# Every option is on the command line so that no /etc config file is read.
# A TLS instance (redis_tls_of) serves TLS on the port and no plain TCP.
# A cluster node gets the cluster options, the two servers of the sentinel
# set the replication options (REPL_OPTS, REPLICAOF), and a sentinel its
# configuration file (sentinel_cmd).
redis_cmd() {
    local name=$1 port=$2 tls cert
    local -a listen=(--port "$port")
    shift 2
    case $name in
        sentinel-[0-9]*)
            sentinel_cmd "$name" "$port"
            return
            ;;
        cluster-*)
            set -- "$@" "${REPL_OPTS[@]}" --cluster-enabled yes \
                --cluster-config-file "$DIR/$name/nodes.conf" \
                --cluster-node-timeout "$CLUSTER_NODE_TIMEOUT_MS" \
                --cluster-replica-validity-factor 0
            ;;
        sentinel-master | sentinel-replica)
            set -- "$@" "${REPL_OPTS[@]}"
            if [ -n "$REPLICAOF" ]; then
                set -- "$@" --replicaof 127.0.0.1 "$REPLICAOF"
            fi
            ;;
    esac
    if tls=$(redis_tls_of "$name"); then
        cert=${tls%%:*}
        listen=(--port 0 --tls-port "$port"
            --tls-cert-file "$DIR/tls/$cert.crt"
            --tls-key-file "$DIR/tls/$cert.key"
            --tls-ca-cert-file "$DIR/tls/ca.crt"
            --tls-auth-clients "${tls#*:}")
    fi
    CMD=(redis-server
        "${listen[@]}"
        --bind 127.0.0.1
        --daemonize yes
        --pidfile "$DIR/$name.pid"
        --dir "$DIR/$name"
        --unixsocket "$DIR/$name.sock"
        --unixsocketperm 700
        --save ""
        --appendonly no
        --logfile "$DIR/$name.log"
        --protected-mode no
        "$@")
}

# Runs the saved command line of redis instance $1. With --daemonize yes the
# command returns as soon as the server has forked into the background; the
# server itself calls setsid and detaches its stdio, so it outlives us and
# never holds a caller's pipe open.
redis_launch() {
    (cd "$DIR/$1" && eval "$(cat "$DIR/$1.cmd")") </dev/null >>"$DIR/$1.out" 2>&1
}

# Waits until redis instance $1 answers PING on its TCP port and its unix
# socket. Fails early if the process has died. The password, if any, comes
# from the environment so that it does not show up in ps output. $2 is the
# size the log had before the launch: a restart appends to the old log, whose
# earlier lines must not be mistaken for a new failure.
# A TLS instance is asked over TLS: the ones whose certificate is meant to
# verify are checked against the test CA (with the client certificate, which
# redis-mtls requires), the expired and wrong-host ones with --insecure.
redis_wait() {
    local name=$1 skip=${2:-0} port deadline pass="" tls
    local -a tcp=()
    port=$(cat "$DIR/$name.port")
    if [ "$name" = redis-auth ]; then
        pass=$REDIS_PASSWORD
    fi
    if tls=$(redis_tls_of "$name"); then
        case ${tls%%:*} in
            server) tcp=(--tls --cacert "$DIR/tls/ca.crt"
                --cert "$DIR/tls/client.crt" --key "$DIR/tls/client.key") ;;
            *) tcp=(--tls --insecure) ;;
        esac
    fi
    deadline=$((SECONDS + REDIS_READY_SECONDS))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if [ "$(REDISCLI_AUTH=$pass timeout 5 redis-cli ${tcp[@]+"${tcp[@]}"} -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ] &&
            [ "$(REDISCLI_AUTH=$pass timeout 5 redis-cli -s "$DIR/$name.sock" ping 2>/dev/null)" = PONG ]; then
            return 0
        fi
        # Redis binds its ports before writing the pidfile, so a bind
        # failure only shows in the log; fail at once instead of waiting.
        if tail -c "+$((skip + 1))" "$DIR/$name.log" 2>/dev/null |
            grep -q -e 'aborting' -e 'Address already in use'; then
            return 1
        fi
        # Once the pidfile exists the server is fully initialised; if its
        # process is gone by then, it failed.
        if [ -s "$DIR/$name.pid" ] && ! our_pid "$DIR/$name.pid" >/dev/null; then
            return 1
        fi
        sleep 0.05
    done
    return 1
}

# A port chosen by the caller for the first attempt of redis_start; empty:
# redis_start picks one.
FIRST_PORT=""

# Sets PORT for a new instance named $1: a cluster node needs its bus port
# free too.
pick_port_for() {
    case $1 in
        cluster-*) pick_cluster_port ;;
        *) pick_port ;;
    esac
}

# Starts the brand new redis instances named as arguments at the same
# time, each on a port chosen here first (so that no two get the same one),
# and waits until all are ready; fails if one did not start. Most of a
# start is waiting for the server to answer, and on a busy machine that
# adds up for six nodes one after another.
redis_start_together() {
    local name job failed=0
    local -a ports=() jobs=()
    for name in "$@"; do
        pick_port_for "$name" || return 1
        ports+=("$PORT")
    done
    # Ended (by abort_start), this job ends the starts it is waiting for.
    trap 'kill "${jobs[@]}" 2>/dev/null; exit 1' TERM
    for name in "$@"; do
        (FIRST_PORT=${ports[0]} redis_start "$name" >/dev/null) &
        jobs+=("$!")
        ports=("${ports[@]:1}")
    done
    for job in "${jobs[@]}"; do
        wait "$job" || failed=1
    done
    trap - TERM
    return "$failed"
}

# Starts a brand new redis instance named $1, retrying on another port if
# the first one turns out to be taken. Extra arguments go to redis-server.
redis_start() {
    local name=$1 attempt t0
    shift
    t0=$(now)
    mkdir -p "$DIR/$name"
    # Record the pidfile before launching, so that a stop issued while we
    # are still starting (or after we fail) knows about this server.
    echo "$DIR/$name.pid" >>"$DIR/pids"
    for attempt in 1 2 3; do
        if [ "$attempt" -eq 1 ] && [ -n "$FIRST_PORT" ]; then
            PORT=$FIRST_PORT
        else
            pick_port_for "$name" || return 1
        fi
        echo "$PORT" >"$DIR/$name.port"
        redis_cmd "$name" "$PORT" "$@"
        save_cmd "$name"
        : >"$DIR/$name.log"
        rm -f "$DIR/$name.pid"
        if redis_launch "$name" && redis_wait "$name"; then
            say "$name ready on port $PORT in $(elapsed_since "$t0") s"
            return 0
        fi
        # A server that started but never answered must not linger.
        terminate "$DIR/$name.pid" >/dev/null || true
        if ! log_says_port_taken "$DIR/$name.log"; then
            break
        fi
        warn "$name: port $PORT was taken, retrying with another port"
    done
    warn "$name failed to start"
    show_log "$DIR/$name.log"
    show_log "$DIR/$name.out"
    return 1
}

# ------------------------------------------------- cluster and sentinel ----

# The Redis Cluster: CLUSTER_NODES redis-servers "cluster-1".."cluster-6"
# with cluster-enabled, made into 3 primaries with one replica each by
# "redis-cli --cluster create --cluster-replicas 1". Each keeps its
# nodes.conf in DIR/cluster-N, so a node restarted with restart-redis
# rejoins as the node it was. The cluster bus of each listens on its port +
# 10000 (pick_cluster_port makes sure both are free).
readonly CLUSTER_NODES=6
# A node that does not answer for CLUSTER_NODE_TIMEOUT_MS is suspected
# (PFAIL), then failed by the majority; its replica is elected some 1-2 s
# later, so a primary killed with -9 is replaced within some 3 s. The
# default (15 s) would make every failover test wait that long. On loopback
# a healthy node never misses a second of pings.
readonly CLUSTER_NODE_TIMEOUT_MS=1000
# The Sentinel set: "sentinel-master", "sentinel-replica" (its replica) and
# SENTINEL_COUNT sentinels "sentinel-1".."sentinel-3" that monitor the
# master as SENTINEL_MASTER with quorum SENTINEL_QUORUM. A master that does
# not answer for SENTINEL_DOWN_AFTER_MS is subjectively down; the failover
# that follows (or a SENTINEL FAILOVER) completes within a few seconds.
# failover-timeout bounds a failover that stalls; it also spaces two
# automatic failovers of the same master (2 x failover-timeout), which a
# forced one ignores.
readonly SENTINEL_COUNT=3
readonly SENTINEL_MASTER=vlmaster
readonly SENTINEL_QUORUM=2
readonly SENTINEL_DOWN_AFTER_MS=1000
readonly SENTINEL_FAILOVER_TIMEOUT_MS=3000
# How long start, wait-cluster and wait-sentinel wait for a healthy
# cluster or sentinel set, times VL_TEST_TIME_SCALE (as tu_ms does).
TIME_SCALE=${VL_TEST_TIME_SCALE:-1}
case $TIME_SCALE in '' | *[!0-9]* | 0) TIME_SCALE=1 ;; esac
readonly CLUSTER_READY_SECONDS=$((30 * TIME_SCALE))
readonly SENTINEL_READY_SECONDS=$((30 * TIME_SCALE))
# Options of every replicating server of the two sets: a replica's first
# sync starts at once (Redis 7 waits 5 s for more replicas to come by
# default), and replicas ping their primary every second, so that a lost
# primary is noticed as fast as the node timeout allows.
readonly REPL_OPTS=(--repl-diskless-sync yes --repl-diskless-sync-delay 0
    --repl-ping-replica-period 1)

# Sets PORT as pick_port does, to a port whose cluster bus port (PORT +
# 10000, at most 39999) is free and not handed out either.
pick_cluster_port() {
    local tries=0 bus
    while [ "$tries" -lt 50 ]; do
        tries=$((tries + 1))
        pick_port || return 1
        bus=$((PORT + 10000))
        case $CHOSEN_PORTS in
            *" $bus "*) continue ;;
        esac
        if ! port_in_use "$bus"; then
            CHOSEN_PORTS="$CHOSEN_PORTS$bus "
            return 0
        fi
    done
    warn "could not find a free port pair for a cluster node"
    return 1
}

# Writes the configuration of sentinel $1 on port $2 into DIR/$1/sentinel.conf
# and sets CMD to run it. A sentinel must have a writable configuration file:
# it rewrites it with its id, the replicas and sentinels it learnt and
# every failover, so that a restarted sentinel (restart-redis) carries on
# from what it knew.
sentinel_cmd() {
    local name=$1 port=$2
    cat >"$DIR/$name/sentinel.conf" <<CONF
port $port
bind 127.0.0.1
protected-mode no
daemonize yes
pidfile $DIR/$name.pid
logfile $DIR/$name.log
dir $DIR/$name
unixsocket $DIR/$name.sock
unixsocketperm 700
sentinel monitor $SENTINEL_MASTER 127.0.0.1 $(cat "$DIR/sentinel-master.port") $SENTINEL_QUORUM
sentinel down-after-milliseconds $SENTINEL_MASTER $SENTINEL_DOWN_AFTER_MS
sentinel failover-timeout $SENTINEL_MASTER $SENTINEL_FAILOVER_TIMEOUT_MS
sentinel parallel-syncs $SENTINEL_MASTER 1
CONF
    CMD=(redis-server "$DIR/$name/sentinel.conf" --sentinel)
}

# Runs redis-cli against the server on port $1 with a bounded wait; the
# output is raw (one reply element a line) because it is not a terminal.
rcli() {
    local port=$1
    shift
    timeout 5 redis-cli -h 127.0.0.1 -p "$port" "$@" 2>/dev/null | tr -d '\r'
}

# Prints the cluster as the node on port $1 sees it (CLUSTER NODES), one
# line per node, sorted, in words that do not depend on who is asked:
#   PORT primary SLOTS...       or   PORT replica of PORT
# with the node's flags in parentheses after the role when they say it
# failed, is suspected or is not known yet (fail, fail?, handshake,
# noaddr). Slots being imported or migrated ("[...]", shown only by the
# node doing it) are left out.
cluster_view() {
    rcli "$1" cluster nodes | awk '
        NF >= 8 {
            p = $2; sub(/@.*/, "", p); sub(/.*:/, "", p)
            port[$1] = p; n++; id[n] = $1; flags[n] = $3; primary[n] = $4
            s = ""
            for (j = 9; j <= NF; j++)
                if ($j !~ /^\[/)
                    s = s " " $j
            slots[n] = s
        }
        END {
            for (i = 1; i <= n; i++) {
                role = flags[i] ~ /master/ ? "primary" : "replica"
                if (flags[i] ~ /fail|handshake|noaddr/)
                    role = role "(" flags[i] ")"
                line = port[id[i]] " " role
                if (role ~ /^replica/)
                    line = line " of " port[primary[i]]
                print line slots[i]
            }
        }' | sort
}

# Checks a cluster view (cluster_view's output, on stdin): CLUSTER_NODES
# nodes, none failed, 3 primaries that serve all 16384 slots between them,
# each with exactly one replica. Prints what is wrong and fails otherwise.
cluster_view_sound() {
    awk -v want="$CLUSTER_NODES" '
        { n++ }
        $2 ~ /\(/ { bad = bad "; " $1 " is " $2 }
        $2 == "primary" {
            primaries++
            for (j = 3; j <= NF; j++) {
                k = split($j, r, "-")
                slots += k == 2 ? r[2] - r[1] + 1 : 1
            }
        }
        $2 == "replica" { replicas[$4]++ }
        END {
            if (n != want) bad = bad "; " n " nodes, not " want
            if (primaries != want / 2) bad = bad "; " primaries " primaries"
            if (slots != 16384) bad = bad "; " slots " slots served, not 16384"
            for (p in replicas)
                if (replicas[p] != 1) bad = bad "; " p " has " replicas[p] " replicas"
            if (bad != "") { print substr(bad, 3); exit 1 }
        }'
}

# The ports of the cluster nodes, in order.
cluster_ports() {
    local n
    for n in $(seq 1 "$CLUSTER_NODES"); do
        cat "$DIR/cluster-$n.port"
    done
}

# Succeeds if the cluster is healthy: every node answers, says
# cluster_state:ok, and sees the same sound cluster (cluster_view_sound).
# Otherwise sets REASON and fails.
cluster_healthy() {
    local n=0 port view first="" why
    for port in $(cluster_ports); do
        n=$((n + 1))
        case $(rcli "$port" cluster info) in
            *cluster_state:ok*) ;;
            '') REASON="cluster-$n (port $port) does not answer"; return 1 ;;
            *) REASON="cluster-$n (port $port) says cluster_state is not ok"; return 1 ;;
        esac
        view=$(cluster_view "$port")
        if [ "$n" -eq 1 ]; then
            first=$view
            if ! why=$(echo "$view" | cluster_view_sound); then
                REASON="as cluster-1 sees it: $why"
                return 1
            fi
        elif [ "$view" != "$first" ]; then
            REASON="cluster-$n (port $port) does not see the cluster as cluster-1 does"
            return 1
        fi
    done
    # The same check from redis-cli, which also compares every node's
    # configuration epoch and open slots.
    local check
    check=$(timeout 10 redis-cli --cluster check "127.0.0.1:$(head -n 1 "$DIR/cluster-1.port")" 2>&1)
    case $check in
        *"[OK] All nodes agree about slots configuration."*"[OK] All 16384 slots covered."*) ;;
        *) REASON="redis-cli --cluster check: $(echo "$check" | grep -e ERR -e WARN | head -n 3)"; return 1 ;;
    esac
}

# Waits, at most $2 seconds, until "$1_healthy" (cluster or sentinel)
# succeeds; says why not when it never does.
wait_healthy() {
    local deadline=$((SECONDS + $2))
    REASON=""
    while :; do
        "$1_healthy" && return 0
        [ "$SECONDS" -lt "$deadline" ] || break
        sleep 0.1
    done
    warn "the $1 is not healthy after $2 s: $REASON"
    return 1
}

cluster_wait() {
    wait_healthy cluster "$CLUSTER_READY_SECONDS"
}

# Starts the cluster nodes and makes them a cluster. Meant to run in the
# background while the other servers start (cmd_start).
cluster_start() {
    local n t0 nodes=()
    t0=$(now)
    redis_start_together $(seq -f 'cluster-%g' 1 "$CLUSTER_NODES") || return 1
    for n in $(seq 1 "$CLUSTER_NODES"); do
        nodes+=("127.0.0.1:$(cat "$DIR/cluster-$n.port")")
    done
    # redis-cli assigns the slots, meets the nodes, makes the last three
    # replicas and waits until every node has the same configuration.
    if ! timeout $((30 * TIME_SCALE)) redis-cli --cluster create "${nodes[@]}" \
        --cluster-replicas 1 --cluster-yes >"$DIR/cluster-create.log" 2>&1; then
        warn "redis-cli --cluster create failed"
        show_log "$DIR/cluster-create.log"
        return 1
    fi
    cluster_wait || return 1
    say "cluster: $CLUSTER_NODES nodes on ports $(cluster_ports | tr '\n' ' ')ready in $(elapsed_since "$t0") s"
}

# The value of field $1 in the key/value lines on stdin (a Redis map
# reply printed by redis-cli, key and value on alternate lines); of its
# first occurrence.
field() {
    awk -v k="$1" 'NR % 2 == 1 { key = $0; next } key == k { print; exit }'
}

# The port of the master as sentinel $1 sees it (SENTINEL
# get-master-addr-by-name); empty when it does not answer.
sentinel_master_port() {
    rcli "$(cat "$DIR/$1.port")" sentinel get-master-addr-by-name "$SENTINEL_MASTER" | sed -n 2p
}

# Succeeds if the sentinel set is healthy: every sentinel answers, names
# the same master, sees it up ("master" and nothing else in its flags),
# knows exactly one replica, up, and knows the other sentinels; the master
# itself says role:master and the replica that it is in sync with it.
# Otherwise sets REASON and fails.
sentinel_healthy() {
    local n port out master="" flags others replicas replica=""
    for n in $(seq 1 "$SENTINEL_COUNT"); do
        port=$(cat "$DIR/sentinel-$n.port")
        out=$(rcli "$port" sentinel master "$SENTINEL_MASTER")
        [ -n "$out" ] || { REASON="sentinel-$n (port $port) does not answer"; return 1; }
        flags=$(echo "$out" | field flags)
        others=$(echo "$out" | field num-other-sentinels)
        if [ -z "$master" ]; then
            master=$(echo "$out" | field port)
        elif [ "$(echo "$out" | field port)" != "$master" ]; then
            REASON="sentinel-$n names master port $(echo "$out" | field port), sentinel-1 $master"
            return 1
        fi
        [ "$flags" = master ] || { REASON="sentinel-$n sees the master as $flags"; return 1; }
        [ "$others" = $((SENTINEL_COUNT - 1)) ] ||
            { REASON="sentinel-$n knows $others other sentinels"; return 1; }
        replicas=$(rcli "$port" sentinel replicas "$SENTINEL_MASTER" |
            awk 'NR % 2 == 1 { key = $0; next }
                 key == "port" { p = $0 }
                 key == "flags" { n++; if ($0 == "slave") up = p }
                 END { print n + 0, up }')
        replica=${replicas#* }
        case $replicas in
            "1 $replica") ;;
            *) REASON="sentinel-$n knows $replicas (replicas, the port of the one up)"; return 1 ;;
        esac
    done
    case $(rcli "$master" role | head -n 1) in
        master) ;;
        *) REASON="the server on port $master that the sentinels name is not a master"; return 1 ;;
    esac
    # After a failover the old master, if it still runs, stays a master
    # until the sentinels notice (some 10 s: they wait for two more rounds
    # of INFO before reconfiguring a replica that says it is a master). All
    # three already name the new master, so the harness does what they
    # would do anyway, instead of every test waiting for them.
    case $(rcli "$replica" role | head -n 1) in
        master) rcli "$replica" replicaof 127.0.0.1 "$master" >/dev/null ;;
    esac
    # The sentinels learn a replica's link state from its INFO, which they
    # ask for every 10 s only; the replica itself knows at once.
    case $(rcli "$replica" info replication) in
        *"master_port:$master"*"master_link_status:up"*) ;;
        *) REASON="the replica on port $replica is not in sync with port $master"; return 1 ;;
    esac
}

sentinel_wait() {
    wait_healthy sentinel "$SENTINEL_READY_SECONDS"
}

# Starts the master, its replica, waits until the replica is in sync (so
# that the sentinels' first INFO of the master lists it), then the
# sentinels, and waits until they know each other (they announce
# themselves on the master every 2 s): from then on a forced failover
# works at once. Meant to run in the background (cmd_start).
sentinel_start() {
    local n t0 deadline port
    t0=$(now)
    redis_start sentinel-master >/dev/null || return 1
    REPLICAOF=$(cat "$DIR/sentinel-master.port")
    redis_start sentinel-replica >/dev/null || return 1
    REPLICAOF=""
    port=$(cat "$DIR/sentinel-replica.port")
    deadline=$((SECONDS + SENTINEL_READY_SECONDS))
    until rcli "$port" info replication | grep -q '^master_link_status:up'; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            warn "sentinel-replica did not sync with sentinel-master"
            show_log "$DIR/sentinel-replica.log"
            return 1
        fi
        sleep 0.05
    done
    redis_start_together $(seq -f 'sentinel-%g' 1 "$SENTINEL_COUNT") || return 1
    sentinel_wait || return 1
    say "sentinel: master $SENTINEL_MASTER on port $(cat "$DIR/sentinel-master.port")," \
        "replica on $(cat "$DIR/sentinel-replica.port"), $SENTINEL_COUNT sentinels on" \
        "$(for n in $(seq 1 "$SENTINEL_COUNT"); do cat "$DIR/sentinel-$n.port"; done | tr '\n' ' ')ready in $(elapsed_since "$t0") s"
}

# -------------------------------------------------------------- mariadb ----

# The mariadbd instances are named "mysql" (the main one), "mysql-primary",
# "mysql-replica" and, with --galera, "galera-1".."galera-3"; each keeps its
# data in DIR/NAME, its temporary files in DIR/NAME.tmp and its socket,
# pidfile, error log and command line in DIR/NAME.*.

# The client command for administrative access as root to instance $1
# through its socket. --no-defaults keeps the user's ~/.my.cnf and
# /etc/mysql out of the picture.
mysql_root() {
    local name=$1
    shift
    # root has no password: a MYSQL_PWD in the environment (the client reads
    # it) would only make the login fail.
    env -u MYSQL_PWD mariadb --no-defaults -uroot -S "$DIR/$name.sock" "$@"
}

# Runs the saved mariadbd command line of instance $1 in the background.
# setsid puts the server into its own session, so a Ctrl-C in the terminal
# reaches only the test runner (which then stops the server cleanly), and
# stdio goes to a file so that the server never holds a caller's pipe open.
# Because the subshell is never a process group leader, setsid execs in
# place instead of forking, which makes $! the server's own pid; it is
# written to the pidfile at once, before mariadbd writes it itself, so that
# "stop" can find a server that is still initialising.
# Further arguments are appended for this launch only (not saved), as
# --wsrep-new-cluster is for the first start of a Galera cluster.
mysql_launch() {
    local name=$1 pid deadline extra=""
    shift
    if [ "$#" -gt 0 ]; then
        extra=$(printf '%q ' "$@")
    fi
    (cd "$DIR/$name" && eval "exec setsid $(cat "$DIR/$name.cmd") $extra") \
        </dev/null >>"$DIR/$name.out" 2>&1 &
    pid=$!
    echo "$pid" >"$DIR/$name.pid"
    # Until the exec has happened the pid still names a copy of this shell,
    # which our_pid rightly refuses to treat as a server. Wait for the exec so
    # that from here on "stop" and mysql_wait recognise the server.
    deadline=$((SECONDS + 5))
    while pid_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do
        case $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) in
            *mariadbd*) break ;;
        esac
        sleep 0.01
    done
}

# Waits until instance $1 accepts a root login on its socket. Fails early if
# the server process has died, which is what happens when the port is taken.
mysql_wait() {
    poll_server "$1" "$MYSQL_READY_SECONDS" mysql_answers
}

# Succeeds if instance $1 answers a root login.
mysql_answers() {
    mysql_root "$1" -e 'SELECT 1' >/dev/null 2>&1
}

# Polls "$3 $1" every 0.1 s for up to $2 seconds until it succeeds; fails
# at once when the process of server $1 is gone.
poll_server() {
    local name=$1 deadline=$((SECONDS + $2))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if "$3" "$name"; then
            return 0
        fi
        if ! our_pid "$DIR/$name.pid" >/dev/null; then
            return 1
        fi
        sleep 0.1
    done
    return 1
}

# --user is only accepted (and only needed) when running as root.
USER_OPT=()
if [ "$(id -u)" -eq 0 ]; then
    USER_OPT=(--user=root)
fi

# Creates a fresh data directory for instance $1.
mysql_install() {
    local name=$1 t0 attempt
    t0=$(now)
    mkdir -p "$DIR/$name" "$DIR/$name.tmp"
    # --skip-name-resolve and --force stop the installer from needing the
    # machine's hostname (or even "localhost") to resolve, which is not a
    # given in a minimal container or chroot without /etc/hosts.
    # Each instance has a tmpdir of its own: with the default, /tmp,
    # installers running at the same time (ours in parallel, or another
    # test run's) have been seen to fail on their temporary tables
    # ("Unknown table 'mysql.tmp_user_sys'"). On a machine busy with other
    # builds and servers the installer's bootstrap server has also been seen
    # to fail once and then succeed; a real problem fails both tries, and
    # each failure shows its log.
    for attempt in 1 2; do
        if mariadb-install-db --no-defaults "${USER_OPT[@]}" \
            --auth-root-authentication-method=normal \
            --datadir="$DIR/$name" --skip-test-db --skip-name-resolve --force \
            --tmpdir="$DIR/$name.tmp" >"$DIR/$name-install.log" 2>&1; then
            break
        fi
        warn "mariadb-install-db for $name failed (attempt $attempt of 2)"
        show_log "$DIR/$name-install.log"
        if [ "$attempt" -eq 2 ]; then
            return 1
        fi
        rm -rf "${DIR:?}/$name"
        mkdir -p "$DIR/$name"
    done
    say "$name data directory created in $(elapsed_since "$t0") s"
}

# Builds into CMD the mariadbd command line of instance $1 on port $2;
# further arguments are options of this instance.
mysql_cmd() {
    local name=$1 port=$2
    shift 2
    CMD=(mariadbd --no-defaults "${USER_OPT[@]}"
        --skip-name-resolve
        --datadir="$DIR/$name"
        --port="$port"
        --bind-address=127.0.0.1
        --socket="$DIR/$name.sock"
        --pid-file="$DIR/$name.pid"
        --log-error="$DIR/$name.err"
        --tmpdir="$DIR/$name.tmp"
        "$@")
}

# Creates a fresh data directory for instance $1 and starts mariadbd on it,
# on port $2 if it is not empty and otherwise on a port of its own (a taken
# port is retried with another). Further arguments are options of this
# instance. The test database and users are set up by the callers.
mysql_start() {
    local name=$1 port=$2 t0 attempt
    shift 2
    t0=$(now)
    mysql_install "$name" || return 1
    echo "$DIR/$name.pid" >>"$DIR/pids"
    for attempt in 1 2 3; do
        if [ -n "$port" ] && [ "$attempt" -eq 1 ]; then
            PORT=$port
        else
            pick_port || return 1
        fi
        echo "$PORT" >"$DIR/$name.port"
        mysql_cmd "$name" "$PORT" "$@"
        save_cmd "$name"
        : >"$DIR/$name.err"
        mysql_launch "$name"
        if mysql_wait "$name"; then
            break
        fi
        terminate "$DIR/$name.pid" >/dev/null || true
        if [ "$attempt" -lt 3 ] && log_says_port_taken "$DIR/$name.err"; then
            warn "$name: port $PORT was taken, retrying with another port"
            continue
        fi
        warn "mariadbd $name failed to start"
        show_log "$DIR/$name.err"
        show_log "$DIR/$name.out"
        return 1
    done
    say "$name up on port $PORT in $(elapsed_since "$t0") s"
}

# Runs the SQL on stdin as root on instance $1, logging to DIR/$1-setup.log;
# $2 says what it does, for the message when it fails.
mysql_setup() {
    if ! mysql_root "$1" >>"$DIR/$1-setup.log" 2>&1; then
        warn "$1: $2 failed"
        show_log "$DIR/$1-setup.log"
        return 1
    fi
}

# Proves that the test user can log in to instance $1 over TCP and use the
# test database, the way the library will, rather than finding out in the
# middle of a test.
mysql_check_login() {
    if ! mariadb --no-defaults -h 127.0.0.1 -P "$(cat "$DIR/$1.port")" -u "$MYSQL_USER" \
        -p"$MYSQL_PASSWORD" "$MYSQL_DB" -e 'SELECT 1' >>"$DIR/$1-setup.log" 2>&1; then
        warn "$1: the test user cannot log in over TCP"
        show_log "$DIR/$1-setup.log"
        return 1
    fi
}

# The SQL that drops the installer's anonymous users, if it made any, so
# that they can never shadow the test user. It is kept out of the binary
# log: each instance has its own installer's rows, which a replica must
# not try to delete a second time.
anonymous_users_sql() {
    cat <<SQL
SET SESSION sql_log_bin = 0;
DELETE FROM mysql.global_priv WHERE User = '';
FLUSH PRIVILEGES;
SET SESSION sql_log_bin = 1;
SQL
}

# The SQL that creates the test database and user. The tests create and drop
# tables and need PROCESS and KILL to test connection loss, hence ALL on
# *.*, which also covers what the replication tests run (STOP SLAVE, SHOW
# SLAVE STATUS, MASTER_GTID_WAIT, SET GLOBAL read_only). Both hosts are
# needed: 'localhost' matches socket logins and '127.0.0.1' TCP logins (name
# resolution is off).
test_user_sql() {
    cat <<SQL
CREATE DATABASE IF NOT EXISTS \`$MYSQL_DB\`;
CREATE USER '$MYSQL_USER'@'127.0.0.1' IDENTIFIED BY '$MYSQL_PASSWORD';
CREATE USER '$MYSQL_USER'@'localhost' IDENTIFIED BY '$MYSQL_PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO '$MYSQL_USER'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO '$MYSQL_USER'@'localhost';
SQL
}

# The accounts of the TLS and authentication tests, on the main instance
# only. Each may use the test database and nothing else.
tls_users_sql() {
    local host
    echo "INSTALL SONAME 'auth_ed25519';"
    for host in 127.0.0.1 localhost; do
        cat <<SQL
CREATE USER '$MYSQL_TLS_USER'@'$host' IDENTIFIED BY '$MYSQL_TLS_PASSWORD' REQUIRE SSL;
CREATE USER '$MYSQL_X509_USER'@'$host' IDENTIFIED BY '$MYSQL_X509_PASSWORD' REQUIRE X509;
CREATE USER '$MYSQL_ED25519_USER'@'$host'
    IDENTIFIED VIA ed25519 USING PASSWORD('$MYSQL_ED25519_PASSWORD');
GRANT ALL PRIVILEGES ON \`$MYSQL_DB\`.* TO '$MYSQL_TLS_USER'@'$host';
GRANT ALL PRIVILEGES ON \`$MYSQL_DB\`.* TO '$MYSQL_X509_USER'@'$host';
GRANT ALL PRIVILEGES ON \`$MYSQL_DB\`.* TO '$MYSQL_ED25519_USER'@'$host';
SQL
    done
}

# Proves that the TLS accounts work as they should before any test relies
# on it: volley_tls logs in over TLS verified against the test CA and is
# refused without TLS, and volley_x509 logs in with the client certificate.
mysql_check_tls() {
    local port out
    port=$(cat "$DIR/mysql.port")
    out=$(MYSQL_PWD=$MYSQL_TLS_PASSWORD mariadb --no-defaults -h 127.0.0.1 -P "$port" \
        -u "$MYSQL_TLS_USER" --ssl-ca="$DIR/tls/ca.crt" --ssl-verify-server-cert -N -B \
        -e "SHOW SESSION STATUS LIKE 'Ssl_cipher'" "$MYSQL_DB" 2>&1) || out="failed: $out"
    case $out in
        Ssl_cipher?[A-Z]*) ;;
        *) warn "mysql: a TLS login of $MYSQL_TLS_USER: $out"; return 1 ;;
    esac
    if MYSQL_PWD=$MYSQL_TLS_PASSWORD mariadb --no-defaults -h 127.0.0.1 -P "$port" \
        -u "$MYSQL_TLS_USER" --skip-ssl -e 'SELECT 1' "$MYSQL_DB" >/dev/null 2>&1; then
        warn "mysql: $MYSQL_TLS_USER (REQUIRE SSL) logged in without TLS"
        return 1
    fi
    if ! out=$(MYSQL_PWD=$MYSQL_X509_PASSWORD mariadb --no-defaults -h 127.0.0.1 -P "$port" \
        -u "$MYSQL_X509_USER" --ssl-ca="$DIR/tls/ca.crt" --ssl-cert="$DIR/tls/client.crt" \
        --ssl-key="$DIR/tls/client.key" -e 'SELECT 1' "$MYSQL_DB" 2>&1); then
        warn "mysql: a TLS login of $MYSQL_X509_USER with the client certificate: $out"
        return 1
    fi
}

# The main instance: no binary log, room for the connection-heavy tests, and
# TLS with the server certificate of tests/tls_certs.sh (clients choose:
# plain connections stay plain). It needs DIR/tls.
mysql_main_start() {
    local t0
    t0=$(now)
    mysql_start mysql "" \
        --skip-log-bin \
        --innodb-buffer-pool-size=64M \
        --max-connections=2000 \
        --max-allowed-packet=64M \
        --ssl-ca="$DIR/tls/ca.crt" \
        --ssl-cert="$DIR/tls/server.crt" \
        --ssl-key="$DIR/tls/server.key" || return 1
    { anonymous_users_sql; test_user_sql; tls_users_sql; } |
        mysql_setup mysql "creating the test database and users" || return 1
    mysql_check_login mysql || return 1
    mysql_check_tls || return 1
    say "mysql ready on port $(cat "$DIR/mysql.port") in $(elapsed_since "$t0") s"
}

# The Redis Cluster: "cluster-1".."cluster-6", made by redis-cli --cluster
# create --cluster-replicas 1: 3 primaries (first cluster-1..3) serving the
# 16384 slots between them, each with one replica. Each node's cluster bus
# listens on its port + 10000 (at most 39999; both ports were free), its
# nodes.conf is DIR/cluster-N/nodes.conf, and cluster-node-timeout is
# 1000 ms: a primary killed with -9 is replaced by its replica within some
# 3 s. Nodes restarted with restart-redis rejoin with their nodes.conf (a
# replaced primary as the replica of its successor). The start returns once
# every node says cluster_state:ok and all see the same map (and redis-cli
# --cluster check agrees); wait-cluster waits for that again, with 3
# primaries of one replica each and no node marked failed, whichever nodes
# are primaries by then.
#
# The Sentinel set: "sentinel-master", its replica "sentinel-replica"
# (replicaof, in sync before the start returns) and 3 sentinels
# "sentinel-1".."sentinel-3" (redis-server --sentinel, configuration files
# DIR/sentinel-N/sentinel.conf, which they rewrite) monitoring the master
# as "vlmaster" with quorum 2, down-after-milliseconds 1000 and
# failover-timeout 3000: SENTINEL FAILOVER vlmaster promotes the replica in
# under a second, and a master killed with -9 is replaced within some 3 s.
# The start returns once every sentinel knows the replica and the two other
# sentinels, so a failover works at once. restart-redis of sentinel-master
# or sentinel-replica brings it back in the role the sentinels give it by
# then (a replica of the present master, or the master); wait-sentinel
# waits until all sentinels name the same master, see it up, and know the
# other sentinels and the replica, which is in sync. After a failover an
# old master that still runs is made a replica of the new one by
# wait-sentinel, as the sentinels themselves would some 10 s later.
# The replicating servers of both sets sync at once (diskless, no delay).
# Without a Redis build with cluster and sentinel support (Debian's
# redis-server has both) the start fails.
#
# The main mariadbd serves TLS with tls/server.crt (tls/ca.crt as its CA,
# for the client certificates of REQUIRE X509 accounts); clients that do not
# ask for TLS connect in plain text as before.
#
# The GTID pair: "mysql-primary" writes a binary log, "mysql-replica"
# replicates it by GTID (read_only, and logging what it applies, so that it
# could be promoted). They are their own instances because the replication
# tests kill the primary and stop the replica's threads. Both start in the
# background (see cmd_start); mysql_pair_setup then links them.
mysql_pair_opts() {
    PAIR_OPTS=(--log-basename="$1" --log-bin --server-id="$2"
        --innodb-buffer-pool-size=32M --max-connections=200 --max-allowed-packet=64M)
}

mysql_primary_start() {
    local PAIR_OPTS
    mysql_pair_opts mysql-primary 1
    mysql_start mysql-primary "$1" "${PAIR_OPTS[@]}" --binlog-format=ROW
}

# A replica that restarts on its own (after a kill -9 too) resumes
# replication: its master settings live in its data directory.
mysql_replica_start() {
    local PAIR_OPTS
    mysql_pair_opts mysql-replica 2
    mysql_start mysql-replica "$1" "${PAIR_OPTS[@]}" --binlog-format=ROW \
        --log-slave-updates --read-only=1
}

# Creates the test database and users on the primary (whence they reach the
# replica by replication, so the replica proves it works before any test
# runs), points the replica at the primary by GTID and waits until it has
# applied everything. MASTER_CONNECT_RETRY=1 makes the replica reconnect
# within a second of a restarted primary coming back.
mysql_pair_setup() {
    local t0 pos
    t0=$(now)
    {
        anonymous_users_sql
        test_user_sql
        cat <<SQL
CREATE USER '$MYSQL_REPL_USER'@'127.0.0.1' IDENTIFIED BY '$MYSQL_REPL_PASSWORD';
GRANT REPLICATION SLAVE ON *.* TO '$MYSQL_REPL_USER'@'127.0.0.1';
CREATE USER '$MYSQL_APP_USER'@'127.0.0.1' IDENTIFIED BY '$MYSQL_APP_PASSWORD';
CREATE USER '$MYSQL_APP_USER'@'localhost' IDENTIFIED BY '$MYSQL_APP_PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO '$MYSQL_APP_USER'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO '$MYSQL_APP_USER'@'localhost';
REVOKE READ_ONLY ADMIN ON *.* FROM '$MYSQL_APP_USER'@'127.0.0.1';
REVOKE READ_ONLY ADMIN ON *.* FROM '$MYSQL_APP_USER'@'localhost';
SQL
    } | mysql_setup mysql-primary "creating the test database and users" || return 1
    {
        anonymous_users_sql
        cat <<SQL
CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = $(cat "$DIR/mysql-primary.port"),
    MASTER_USER = '$MYSQL_REPL_USER', MASTER_PASSWORD = '$MYSQL_REPL_PASSWORD',
    MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1;
START SLAVE;
SQL
    } | mysql_setup mysql-replica "starting replication" || return 1
    pos=$(mysql_root mysql-primary -N -B -e 'SELECT @@GLOBAL.gtid_binlog_pos' 2>>"$DIR/mysql-primary-setup.log")
    # MASTER_GTID_WAIT returns 0 once the position is applied, -1 on timeout.
    if [ "$(mysql_root mysql-replica -N -B -e "SELECT MASTER_GTID_WAIT('$pos', $MYSQL_READY_SECONDS)" \
        2>>"$DIR/mysql-replica-setup.log")" != 0 ]; then
        warn "mysql-replica did not apply the primary's $pos"
        mysql_root mysql-replica -e 'SHOW SLAVE STATUS\G' >&2 || true
        show_log "$DIR/mysql-replica.err"
        return 1
    fi
    mysql_check_login mysql-primary || return 1
    mysql_check_login mysql-replica || return 1
    say "mysql-primary (port $(cat "$DIR/mysql-primary.port")) and mysql-replica" \
        "(port $(cat "$DIR/mysql-replica.port")) replicating at $pos," \
        "linked in $(elapsed_since "$t0") s"
}

# --------------------------------------------------------------- galera ----

# The Galera cluster (servers.sh start --galera only): GALERA_NODES
# mariadbd nodes "galera-1".."galera-N", each with its client port
# (NAME.port), its group communication port (NAME.gport), and the ports on
# which it receives a state snapshot (NAME.sport, rsync) and an incremental
# state transfer (NAME.iport).
readonly GALERA_NODES=3
readonly GALERA_PROVIDER=/usr/lib/galera/libgalera_smm.so
# A joiner copies the whole data directory of a donor first (SST).
readonly GALERA_READY_SECONDS=90

# Succeeds once Galera node $1 is a synced member of the primary component
# (wsrep_ready ON): until then it refuses most statements. SHOW STATUS is
# one it always answers; its rows come sorted by name. Fails early if the
# node died.
galera_wait() {
    poll_server "$1" "$GALERA_READY_SECONDS" galera_synced
}

galera_synced() {
    [ "$(mysql_root "$1" -N -B -e "SHOW GLOBAL STATUS WHERE Variable_name IN
        ('wsrep_local_state_comment', 'wsrep_ready')" 2>/dev/null | cut -f2 |
        tr '\n' ' ')" = "Synced ON " ]
}

# Builds into CMD the command line of node $1 (1-based) from the ports in
# DIR. Every node lists all the others, so that any of them can rejoin the
# cluster after a restart. gcache.size bounds the ring buffer that serves
# incremental transfers (the default, 128 MiB, is made in full at start).
# The group's failure detector is quicker than by default (a silent peer is
# suspected after 2 s instead of 5, declared gone after 4 s instead of 15)
# so that a test that isolates a node (gmcast.isolate=1) or kills one sees
# the primary component change within seconds; on loopback a healthy peer
# is never silent that long.
galera_cmd() {
    local n=$1 i name=galera-$1 peers=""
    for i in $(seq 1 "$GALERA_NODES"); do
        peers="$peers${peers:+,}127.0.0.1:$(cat "$DIR/galera-$i.gport")"
    done
    mysql_cmd "$name" "$(cat "$DIR/$name.port")" \
        --innodb-buffer-pool-size=32M --max-connections=200 --max-allowed-packet=64M \
        --binlog-format=ROW --default-storage-engine=InnoDB --innodb-autoinc-lock-mode=2 \
        --wsrep-on=ON --wsrep-provider="$GALERA_PROVIDER" \
        --wsrep-cluster-name="volley-${DIR##*/}" \
        --wsrep-cluster-address="gcomm://$peers" \
        --wsrep-node-name="$name" \
        --wsrep-node-address="127.0.0.1:$(cat "$DIR/$name.gport")" \
        --wsrep-node-incoming-address="127.0.0.1:$(cat "$DIR/$name.port")" \
        --wsrep-sst-method=rsync \
        --wsrep-sst-receive-address="127.0.0.1:$(cat "$DIR/$name.sport")" \
        --wsrep-provider-options="gmcast.listen_addr=tcp://127.0.0.1:$(cat "$DIR/$name.gport");ist.recv_addr=127.0.0.1:$(cat "$DIR/$name.iport");gcache.size=32M;evs.suspect_timeout=PT2S;evs.inactive_timeout=PT4S;evs.install_timeout=PT4S;evs.keepalive_period=PT0.5S;gmcast.time_wait=PT1S"
}

# A node that joins copies a donor's data directory into its own through
# an rsync daemon, which, started by root, writes as "nobody" (the SST
# script's rsyncd.conf names no uid). So, when we are root, that user must
# be able to pass through DIR and own everything in node $1's data
# directory, whatever the server created there since (a node restarted
# after kill -9 needs a full transfer again). The server itself, as root,
# reads and writes the files whoever owns them.
galera_own() {
    if [ "$(id -u)" -eq 0 ]; then
        chmod o+x "$DIR"
        chown -R "$(id -u nobody):$(id -g nobody)" "$DIR/$1"
    fi
}

# Launches node $1 (extra arguments for this launch only) and waits until it
# is synced.
galera_launch() {
    local n=$1 name=galera-$1 t0
    shift
    t0=$(now)
    : >"$DIR/$name.err"
    galera_own "$name"
    mysql_launch "$name" "$@"
    if ! galera_wait "$name"; then
        warn "galera node $name did not become synced"
        show_log "$DIR/$name.err"
        show_log "$DIR/$name.out"
        return 1
    fi
    say "$name synced on port $(cat "$DIR/$name.port") in $(elapsed_since "$t0") s"
}

# Starts the cluster: node 1 bootstraps it (--wsrep-new-cluster, for this
# launch only: a restarted node 1 must join the others, not found a second
# cluster) and gets the test database and user, then the others join one at
# a time, each copying node 1's data by rsync (joining at once, they would
# queue for the same donor anyway). Its ports are chosen by the caller
# (cmd_start) and are already in DIR; the ports are not retried, a clash
# fails the start with the node's log.
galera_start() {
    local n t0 size
    t0=$(now)
    mysql_install galera-1 || return 1
    for n in $(seq 1 "$GALERA_NODES"); do
        # A joiner's data directory is filled by the snapshot transfer.
        mkdir -p "$DIR/galera-$n" "$DIR/galera-$n.tmp"
        echo "$DIR/galera-$n.pid" >>"$DIR/pids"
        galera_cmd "$n"
        save_cmd "galera-$n"
    done
    galera_launch 1 --wsrep-new-cluster || return 1
    { anonymous_users_sql; test_user_sql; } |
        mysql_setup galera-1 "creating the test database and user" || return 1
    for n in $(seq 2 "$GALERA_NODES"); do
        galera_launch "$n" || return 1
    done
    size=$(mysql_root galera-1 -N -B -e "SHOW GLOBAL STATUS LIKE 'wsrep_cluster_size'" | cut -f2)
    if [ "$size" != "$GALERA_NODES" ]; then
        warn "galera: the cluster has $size nodes, not $GALERA_NODES"
        return 1
    fi
    for n in $(seq 1 "$GALERA_NODES"); do
        mysql_check_login "galera-$n" || return 1
    done
    say "galera: $GALERA_NODES nodes synced in $(elapsed_since "$t0") s"
}

# ------------------------------------------------------------- commands ----

# Prints one "export NAME='value'" line. Plain single quotes keep the file
# readable by tools that do not run a shell; cmd_start has made sure that DIR
# contains no quote, and the other values are fixed strings and numbers.
env_line() {
    printf "export %s='%s'\n" "$1" "$2"
}

# Writes DIR/env. It is written to a temporary name and renamed, so that its
# existence means the start completed.
write_env() {
    local k=$1 i ports="" socks=""
    for i in $(seq 1 "$k"); do
        ports="$ports${ports:+,}$(cat "$DIR/redis-$i.port")"
        socks="$socks${socks:+,}$DIR/redis-$i.sock"
    done
    {
        echo "# Written by tests/servers.sh start; source this file to reach"
        echo "# the throwaway test servers."
        env_line VL_TEST_DIR "$DIR"
        env_line VL_TEST_SERVERS "$SELF"
        env_line VL_TEST_REDIS_PORTS "$ports"
        env_line VL_TEST_REDIS_SOCKS "$socks"
        env_line VL_TEST_REDIS_AUTH_PORT "$(cat "$DIR/redis-auth.port")"
        env_line VL_TEST_REDIS_AUTH_SOCK "$DIR/redis-auth.sock"
        env_line VL_TEST_REDIS_PASSWORD "$REDIS_PASSWORD"
        env_line VL_TEST_MYSQL_PORT "$(cat "$DIR/mysql.port")"
        env_line VL_TEST_MYSQL_SOCK "$DIR/mysql.sock"
        env_line VL_TEST_MYSQL_USER "$MYSQL_USER"
        env_line VL_TEST_MYSQL_PASSWORD "$MYSQL_PASSWORD"
        env_line VL_TEST_MYSQL_DB "$MYSQL_DB"
        env_line VL_TEST_MYSQL_PRIMARY_PORT "$(cat "$DIR/mysql-primary.port")"
        env_line VL_TEST_MYSQL_PRIMARY_SOCK "$DIR/mysql-primary.sock"
        env_line VL_TEST_MYSQL_REPLICA_PORT "$(cat "$DIR/mysql-replica.port")"
        env_line VL_TEST_MYSQL_REPLICA_SOCK "$DIR/mysql-replica.sock"
        env_line VL_TEST_MYSQL_APP_USER "$MYSQL_APP_USER"
        env_line VL_TEST_MYSQL_APP_PASSWORD "$MYSQL_APP_PASSWORD"
        if [ -f "$DIR/galera-1.port" ]; then
            local gports="" gsocks=""
            for i in $(seq 1 "$GALERA_NODES"); do
                gports="$gports${gports:+,}$(cat "$DIR/galera-$i.port")"
                gsocks="$gsocks${gsocks:+,}$DIR/galera-$i.sock"
            done
            env_line VL_TEST_GALERA_PORTS "$gports"
            env_line VL_TEST_GALERA_SOCKS "$gsocks"
        fi
        env_line VL_TEST_TLS_DIR "$DIR/tls"
        env_line VL_TEST_TLS_CA "$DIR/tls/ca.crt"
        env_line VL_TEST_TLS_OTHER_CA "$DIR/tls/other-ca.crt"
        env_line VL_TEST_TLS_CLIENT_CERT "$DIR/tls/client.crt"
        env_line VL_TEST_TLS_CLIENT_KEY "$DIR/tls/client.key"
        env_line VL_TEST_MYSQL_TLS_USER "$MYSQL_TLS_USER"
        env_line VL_TEST_MYSQL_TLS_PASSWORD "$MYSQL_TLS_PASSWORD"
        env_line VL_TEST_MYSQL_X509_USER "$MYSQL_X509_USER"
        env_line VL_TEST_MYSQL_X509_PASSWORD "$MYSQL_X509_PASSWORD"
        env_line VL_TEST_MYSQL_ED25519_USER "$MYSQL_ED25519_USER"
        env_line VL_TEST_MYSQL_ED25519_PASSWORD "$MYSQL_ED25519_PASSWORD"
        env_line VL_TEST_REDIS_TLS_PORT "$(cat "$DIR/redis-tls.port")"
        env_line VL_TEST_REDIS_MTLS_PORT "$(cat "$DIR/redis-mtls.port")"
        env_line VL_TEST_REDIS_TLS_EXPIRED_PORT "$(cat "$DIR/redis-tls-expired.port")"
        env_line VL_TEST_REDIS_TLS_WRONGHOST_PORT "$(cat "$DIR/redis-tls-wronghost.port")"
        local cports sports seeds="" sseeds="" p
        cports=$(cluster_ports | tr '\n' ' ')
        cports=${cports% }
        for p in $cports; do
            seeds="$seeds${seeds:+,}127.0.0.1:$p"
        done
        sports=$(for i in $(seq 1 "$SENTINEL_COUNT"); do cat "$DIR/sentinel-$i.port"; done |
            tr '\n' ' ')
        sports=${sports% }
        for p in $sports; do
            sseeds="$sseeds${sseeds:+,}127.0.0.1:$p"
        done
        env_line VL_TEST_CLUSTER_PORTS "$cports"
        env_line VL_TEST_CLUSTER_URL "redis+cluster://$seeds"
        env_line VL_TEST_CLUSTER_NODE_TIMEOUT_MS "$CLUSTER_NODE_TIMEOUT_MS"
        env_line VL_TEST_SENTINEL_PORTS "$sports"
        env_line VL_TEST_SENTINEL_MASTER "$SENTINEL_MASTER"
        env_line VL_TEST_SENTINEL_MASTER_PORT "$(cat "$DIR/sentinel-master.port")"
        env_line VL_TEST_SENTINEL_REPLICA_PORT "$(cat "$DIR/sentinel-replica.port")"
        env_line VL_TEST_SENTINEL_URL "redis+sentinel://$sseeds/$SENTINEL_MASTER"
        env_line VL_TEST_SENTINEL_DOWN_AFTER_MS "$SENTINEL_DOWN_AFTER_MS"
    } >"$DIR/env.tmp"
    mv "$DIR/env.tmp" "$DIR/env"
}

# The background jobs of cmd_start that have not been waited for yet.
BG_JOBS=""

# Undoes a partial start and exits; used on failure and on signals.
abort_start() {
    local job
    trap - INT TERM HUP
    warn "start failed; stopping what was started"
    # The background starts are ended first, so that none of them launches
    # a server after the servers have been stopped.
    for job in $BG_JOBS; do
        kill -TERM "$job" 2>/dev/null || true
    done
    for job in $BG_JOBS; do
        wait "$job" 2>/dev/null || true
    done
    BG_JOBS=""
    if [ -f "$DIR/pids" ]; then
        local files
        mapfile -t files <"$DIR/pids"
        terminate "${files[@]}" >&2 || true
    fi
    exit 1
}

cmd_start() {
    local k=$1 galera=$2 i t0
    case $k in
        '' | *[!0-9]* | 0) warn "K must be a positive number, got '$k'"; exit 2 ;;
    esac
    # DIR ends up in line-based files, in a sourceable env file and in unix
    # socket paths, which the kernel limits to 107 bytes.
    case $DIR in
        *[[:space:]\'\"\\]*) warn "DIR must not contain whitespace, quotes or backslashes"; exit 2 ;;
    esac
    if [ "${#DIR}" -gt 90 ]; then
        warn "DIR is too long for unix socket paths: $DIR"
        exit 2
    fi
    if [ -e "$DIR/pids" ]; then
        warn "$DIR was already used for a start; use a fresh directory"
        exit 1
    fi
    for i in redis-server redis-cli timeout mariadbd mariadb mariadb-install-db openssl; do
        if ! command -v "$i" >/dev/null; then
            warn "$i not found; run tests/deps.sh"
            exit 1
        fi
    done
    t0=$(now)
    # An interrupted start must not leave servers behind.
    trap abort_start INT TERM HUP
    : >"$DIR/pids"

    # The GTID pair starts in the background while the others start here:
    # most of a mariadbd start is waiting for the installer and InnoDB.
    # Their ports are chosen first, so that no port is handed out twice.
    local primary_port replica_port job failed=0
    pick_port || abort_start
    primary_port=$PORT
    pick_port || abort_start
    replica_port=$PORT
    mysql_primary_start "$primary_port" &
    BG_JOBS="$BG_JOBS $!"
    mysql_replica_start "$replica_port" &
    BG_JOBS="$BG_JOBS $!"
    if [ "$galera" = 1 ]; then
        local n kind
        for n in $(seq 1 "$GALERA_NODES"); do
            for kind in port gport sport iport; do
                pick_port || abort_start
                echo "$PORT" >"$DIR/galera-$n.$kind"
            done
        done
        galera_start &
        BG_JOBS="$BG_JOBS $!"
    fi

    # The cluster and the sentinel set mostly wait for their servers to
    # agree (cluster gossip, sentinel announcements), so they start in the
    # background too. They pick their ports themselves: a clash with a port
    # chosen here shows as a failed bind, which redis_start retries.
    cluster_start &
    BG_JOBS="$BG_JOBS $!"
    sentinel_start &
    BG_JOBS="$BG_JOBS $!"

    for i in $(seq 1 "$k"); do
        redis_start "redis-$i" || abort_start
    done
    redis_start redis-auth --requirepass "$REDIS_PASSWORD" || abort_start
    "$TLS_CERTS" "$DIR/tls" || abort_start
    for i in $REDIS_TLS_INSTANCES; do
        redis_start "${i%%:*}" || abort_start
    done
    mysql_main_start || abort_start

    for job in $BG_JOBS; do
        wait "$job" || failed=1
    done
    BG_JOBS=""
    [ "$failed" -eq 0 ] || abort_start
    mysql_pair_setup || abort_start

    write_env "$k"
    trap - INT TERM HUP
    local what="$k redis + redis-auth + 4 TLS redis + a $CLUSTER_NODES-node cluster"
    what="$what + a sentinel set + mariadb + a GTID primary/replica"
    if [ "$galera" = 1 ]; then
        what="$what + a $GALERA_NODES-node Galera cluster"
    fi
    say "started $what in $(elapsed_since "$t0") s (env: $DIR/env)"
}

cmd_stop() {
    if [ ! -f "$DIR/pids" ]; then
        say "stop: nothing was started in $DIR"
        return 0
    fi
    local files
    mapfile -t files <"$DIR/pids"
    terminate "${files[@]}"
}

cmd_status() {
    local f pid name port all=0
    if [ ! -s "$DIR/pids" ]; then
        say "status: nothing was started in $DIR"
        return 1
    fi
    while read -r f; do
        name=$(name_of "$f")
        port=$(cat "$DIR/$name.port" 2>/dev/null || echo '?')
        if pid=$(our_pid "$f"); then
            echo "$name: running, pid $pid, port $port"
        else
            echo "$name: NOT running, port $port"
            all=1
        fi
    done <"$DIR/pids"
    return "$all"
}

cmd_restart_redis() {
    local n=$1 name t0 logsize
    case $n in
        auth) name=redis-auth ;;
        tls | mtls | tls-expired | tls-wronghost) name=redis-$n ;;
        cluster-[1-9] | sentinel-[1-9] | sentinel-master | sentinel-replica) name=$n ;;
        '' | *[!0-9]*)
            warn "N must be a number, 'auth', 'tls', 'mtls', 'tls-expired'," \
                "'tls-wronghost', 'cluster-N', 'sentinel-N', 'sentinel-master' or" \
                "'sentinel-replica', got '$n'"
            exit 2
            ;;
        *) name=redis-$n ;;
    esac
    if [ ! -f "$DIR/$name.cmd" ]; then
        warn "no such redis instance: $name"
        exit 1
    fi
    t0=$(now)
    terminate "$DIR/$name.pid" >/dev/null
    rm -f "$DIR/$name.pid"
    case $name in
        sentinel-master | sentinel-replica) sentinel_data_cmd "$name" ;;
    esac
    logsize=$(stat -c %s "$DIR/$name.log" 2>/dev/null || echo 0)
    if ! redis_launch "$name" || ! redis_wait "$name" "$logsize"; then
        warn "$name failed to restart"
        show_log "$DIR/$name.log"
        terminate "$DIR/$name.pid" >/dev/null || true
        exit 1
    fi
    say "$name restarted on port $(cat "$DIR/$name.port") in $(elapsed_since "$t0") s"
}

# Rewrites the saved command line of sentinel-master or sentinel-replica
# ($1) so that it comes back in the role the sentinels give it now: after a
# failover the replica is the master and the master a replica. Restarted
# as it was first started, a demoted master would take writes until the
# sentinels noticed, and two servers could end up replicating each other.
# When no sentinel answers, the first role is kept.
sentinel_data_cmd() {
    local name=$1 n master="" port
    port=$(cat "$DIR/$name.port")
    for n in $(seq 1 "$SENTINEL_COUNT"); do
        master=$(sentinel_master_port "sentinel-$n")
        [ -z "$master" ] || break
    done
    [ -n "$master" ] || return 0
    REPLICAOF=""
    if [ "$master" != "$port" ]; then
        REPLICAOF=$master
    fi
    redis_cmd "$name" "$port"
    save_cmd "$name"
}

# wait-cluster and wait-sentinel: wait until the set is healthy again.
cmd_wait() {
    local t0
    t0=$(now)
    if [ ! -f "$DIR/$1-1.port" ]; then
        warn "no $1 was started in $DIR"
        exit 1
    fi
    case $1 in
        cluster) cluster_wait ;;
        sentinel) sentinel_wait ;;
    esac || exit 1
    say "$1 healthy after $(elapsed_since "$t0") s"
}

# Restarts mariadb instance $1 ("mysql", "mysql-primary" or "mysql-replica")
# on the same port, socket, data directory and options. A replica resumes
# replicating on its own, and reconnects on its own to a restarted primary.
cmd_restart_mysql() {
    local name=$1 t0 wait=mysql_wait
    case $name in
        mysql | mysql-primary | mysql-replica) ;;
        galera-[1-9]) wait=galera_wait ;;
        *) warn "no such mariadb instance: '$name'"; exit 2 ;;
    esac
    if [ ! -f "$DIR/$name.cmd" ]; then
        warn "no mariadb server $name was started in $DIR"
        exit 1
    fi
    t0=$(now)
    terminate "$DIR/$name.pid" >/dev/null
    if [ "$wait" = galera_wait ]; then
        galera_own "$name"
    fi
    mysql_launch "$name"
    if ! "$wait" "$name"; then
        warn "mariadbd $name failed to restart"
        show_log "$DIR/$name.err"
        terminate "$DIR/$name.pid" >/dev/null || true
        exit 1
    fi
    say "$name restarted on port $(cat "$DIR/$name.port") in $(elapsed_since "$t0") s"
}

main() {
    [ "$#" -ge 2 ] || usage
    local cmd=$1
    case $cmd in
        start)
            local galera=0 k=3
            DIR=$(resolve_dir "$2" create)
            shift 2
            for arg in "$@"; do
                case $arg in
                    --galera) galera=1 ;;
                    *) k=$arg ;;
                esac
            done
            [ "$#" -le 2 ] || usage
            cmd_start "$k" "$galera"
            ;;
        stop | status | restart-mysql)
            [ "$#" -eq 2 ] || { [ "$cmd" = restart-mysql ] && [ "$#" -eq 3 ]; } || usage
            # Stopping a directory that is already gone is not an error:
            # stop must be safe to run more than once.
            if ! DIR=$(resolve_dir "$2" existing); then
                say "$cmd: $2 does not exist"
                [ "$cmd" = stop ] && exit 0
                exit 1
            fi
            case $cmd in
                stop) cmd_stop ;;
                status) cmd_status ;;
                restart-mysql) cmd_restart_mysql "${3:-mysql}" ;;
            esac
            ;;
        wait-cluster | wait-sentinel)
            [ "$#" -eq 2 ] || usage
            DIR=$(resolve_dir "$2" existing) || { warn "$2 does not exist"; exit 1; }
            cmd_wait "${cmd#wait-}"
            ;;
        restart-redis)
            [ "$#" -eq 3 ] || usage
            DIR=$(resolve_dir "$2" existing) || { warn "$2 does not exist"; exit 1; }
            cmd_restart_redis "$3"
            ;;
        *)
            usage
            ;;
    esac
}

main "$@"
