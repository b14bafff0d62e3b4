#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# Throwaway Redis and MariaDB servers for the volley test suite.
#
# Usage:
#   tests/servers.sh start DIR [K]        start K (default 3) plain redis-server
#                                         instances, one password-protected
#                                         redis-server ("redis-auth"), the TLS
#                                         redis-servers (below) and one
#                                         mariadbd, all private to DIR
#   tests/servers.sh stop DIR             stop everything started into DIR
#   tests/servers.sh status DIR           list the servers; exit 0 if all run
#   tests/servers.sh restart-redis DIR N  restart redis instance N (1-based,
#                                         "auth", "tls", "mtls", "tls-expired"
#                                         or "tls-wronghost") on the same port
#                                         and options
#   tests/servers.sh restart-mysql DIR    restart mariadbd on the same port,
#                                         socket and data directory
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
#   NAME.log     the log of each redis server; mysql.err for mariadbd
#   tls/         the certificates of tests/tls_certs.sh (CA, server, client,
#                an unrelated CA, an expired and a wrong-host certificate)
#
# The TLS redis-servers listen only on a TLS port (and their unix socket,
# which is plain): "redis-tls" presents tls/server.crt and takes a client
# certificate signed by tls/ca.crt if one is offered, "redis-mtls" requires
# one, "redis-tls-expired" presents tls/expired.crt and "redis-tls-wronghost"
# tls/wronghost.crt (valid, but for another host name).
#
# "stop" never deletes DIR: whoever created it removes it.

set -eu

readonly REDIS_PASSWORD=volleypass
readonly MYSQL_USER=volley
readonly MYSQL_PASSWORD=volleypass
readonly MYSQL_DB=volley_test

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
    echo "usage: $0 start DIR [K] | stop DIR | status DIR |" \
         "restart-redis DIR N|auth|tls|mtls|tls-expired|tls-wronghost |" \
         "restart-mysql DIR" >&2
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
redis_cmd() {
    local name=$1 port=$2 tls cert
    local -a listen=(--port "$port")
    shift 2
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
        pick_port || return 1
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

# -------------------------------------------------------------- mariadb ----

# The client command for administrative access as root through the socket.
# --no-defaults keeps the user's ~/.my.cnf and /etc/mysql out of the picture.
mysql_root() {
    mariadb --no-defaults -uroot -S "$DIR/mysql.sock" "$@"
}

# Runs the saved mariadbd command line in the background. setsid puts the
# server into its own session, so a Ctrl-C in the terminal reaches only the
# test runner (which then stops the server cleanly), and stdio goes to a file
# so that the server never holds a caller's pipe open. Because the subshell
# is never a process group leader, setsid execs in place instead of forking,
# which makes $! the server's own pid; it is written to the pidfile at once,
# before mariadbd writes it itself, so that "stop" can find a server that is
# still initialising.
mysql_launch() {
    local pid deadline
    (cd "$DIR/mysql" && eval "exec setsid $(cat "$DIR/mysql.cmd")") \
        </dev/null >>"$DIR/mysql.out" 2>&1 &
    pid=$!
    echo "$pid" >"$DIR/mysql.pid"
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

# Waits until mariadbd accepts a root login on its socket. Fails early if the
# server process has died, which is what happens when the port is taken.
mysql_wait() {
    local deadline=$((SECONDS + MYSQL_READY_SECONDS))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if mysql_root -e 'SELECT 1' >/dev/null 2>&1; then
            return 0
        fi
        if ! our_pid "$DIR/mysql.pid" >/dev/null; then
            return 1
        fi
        sleep 0.1
    done
    return 1
}

# Creates a fresh data directory, starts mariadbd on it and sets up the test
# database and user.
mysql_start() {
    local t0 attempt user_opt=()
    t0=$(now)
    mkdir -p "$DIR/mysql"
    # --user is only accepted (and only needed) when running as root.
    if [ "$(id -u)" -eq 0 ]; then
        user_opt=(--user=root)
    fi
    # --skip-name-resolve and --force stop the installer from needing the
    # machine's hostname (or even "localhost") to resolve, which is not a
    # given in a minimal container or chroot without /etc/hosts.
    # On a machine busy with other builds and servers the installer's
    # bootstrap server has been seen to fail once and then succeed; a real
    # problem fails both tries, and each failure shows its log.
    for attempt in 1 2; do
        if mariadb-install-db --no-defaults "${user_opt[@]}" \
            --auth-root-authentication-method=normal \
            --datadir="$DIR/mysql" --skip-test-db --skip-name-resolve --force \
            >"$DIR/mysql-install.log" 2>&1; then
            break
        fi
        warn "mariadb-install-db failed (attempt $attempt of 2)"
        show_log "$DIR/mysql-install.log"
        if [ "$attempt" -eq 2 ]; then
            return 1
        fi
        rm -rf "$DIR/mysql"
        mkdir -p "$DIR/mysql"
    done
    say "mariadb data directory created in $(elapsed_since "$t0") s"

    echo "$DIR/mysql.pid" >>"$DIR/pids"
    for attempt in 1 2 3; do
        pick_port || return 1
        echo "$PORT" >"$DIR/mysql.port"
        CMD=(mariadbd --no-defaults "${user_opt[@]}"
            --skip-name-resolve
            --datadir="$DIR/mysql"
            --port="$PORT"
            --bind-address=127.0.0.1
            --socket="$DIR/mysql.sock"
            --pid-file="$DIR/mysql.pid"
            --log-error="$DIR/mysql.err"
            --skip-log-bin
            --innodb-buffer-pool-size=64M
            --max-connections=2000
            --max-allowed-packet=64M)
        save_cmd mysql
        : >"$DIR/mysql.err"
        mysql_launch
        if mysql_wait; then
            break
        fi
        terminate "$DIR/mysql.pid" >/dev/null || true
        if [ "$attempt" -lt 3 ] && log_says_port_taken "$DIR/mysql.err"; then
            warn "mysql: port $PORT was taken, retrying with another port"
            continue
        fi
        warn "mariadbd failed to start"
        show_log "$DIR/mysql.err"
        show_log "$DIR/mysql.out"
        return 1
    done

    # The tests create and drop tables and need PROCESS and KILL to test
    # connection loss, hence ALL on *.*. Both hosts are needed: 'localhost'
    # matches socket logins and '127.0.0.1' TCP logins (name resolution is
    # off). Anonymous users, if the installer made any, are dropped so they
    # can never shadow the test user.
    if ! mysql_root >"$DIR/mysql-setup.log" 2>&1 <<SQL; then
DELETE FROM mysql.global_priv WHERE User = '';
FLUSH PRIVILEGES;
CREATE DATABASE IF NOT EXISTS \`$MYSQL_DB\`;
CREATE USER '$MYSQL_USER'@'127.0.0.1' IDENTIFIED BY '$MYSQL_PASSWORD';
CREATE USER '$MYSQL_USER'@'localhost' IDENTIFIED BY '$MYSQL_PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO '$MYSQL_USER'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO '$MYSQL_USER'@'localhost';
SQL
        warn "creating the test database and user failed"
        show_log "$DIR/mysql-setup.log"
        return 1
    fi
    # Prove that the test user can really log in over TCP, the way the
    # library will, rather than finding out in the middle of a test.
    if ! mariadb --no-defaults -h 127.0.0.1 -P "$PORT" -u "$MYSQL_USER" \
        -p"$MYSQL_PASSWORD" "$MYSQL_DB" -e 'SELECT 1' \
        >>"$DIR/mysql-setup.log" 2>&1; then
        warn "the test user cannot log in over TCP"
        show_log "$DIR/mysql-setup.log"
        return 1
    fi
    say "mysql ready on port $PORT in $(elapsed_since "$t0") s"
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
        env_line VL_TEST_TLS_DIR "$DIR/tls"
        env_line VL_TEST_REDIS_TLS_PORT "$(cat "$DIR/redis-tls.port")"
        env_line VL_TEST_REDIS_MTLS_PORT "$(cat "$DIR/redis-mtls.port")"
        env_line VL_TEST_REDIS_TLS_EXPIRED_PORT "$(cat "$DIR/redis-tls-expired.port")"
        env_line VL_TEST_REDIS_TLS_WRONGHOST_PORT "$(cat "$DIR/redis-tls-wronghost.port")"
    } >"$DIR/env.tmp"
    mv "$DIR/env.tmp" "$DIR/env"
}

# Undoes a partial start and exits; used on failure and on signals.
abort_start() {
    trap - INT TERM HUP
    warn "start failed; stopping what was started"
    if [ -f "$DIR/pids" ]; then
        local files
        mapfile -t files <"$DIR/pids"
        terminate "${files[@]}" >&2 || true
    fi
    exit 1
}

cmd_start() {
    local k=$1 i t0
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
    for i in redis-server redis-cli mariadbd mariadb mariadb-install-db openssl; do
        if ! command -v "$i" >/dev/null; then
            warn "$i not found; run tests/deps.sh"
            exit 1
        fi
    done
    t0=$(now)
    # An interrupted start must not leave servers behind.
    trap abort_start INT TERM HUP
    : >"$DIR/pids"

    for i in $(seq 1 "$k"); do
        redis_start "redis-$i" || abort_start
    done
    redis_start redis-auth --requirepass "$REDIS_PASSWORD" || abort_start
    "$TLS_CERTS" "$DIR/tls" || abort_start
    for i in $REDIS_TLS_INSTANCES; do
        redis_start "${i%%:*}" || abort_start
    done
    mysql_start || abort_start

    write_env "$k"
    trap - INT TERM HUP
    say "started $k redis + redis-auth + 4 TLS redis + mariadb in $(elapsed_since "$t0") s" \
        "(env: $DIR/env)"
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
        '' | *[!0-9]*)
            warn "N must be a number, 'auth', 'tls', 'mtls', 'tls-expired' or" \
                "'tls-wronghost', got '$n'"
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
    logsize=$(stat -c %s "$DIR/$name.log" 2>/dev/null || echo 0)
    if ! redis_launch "$name" || ! redis_wait "$name" "$logsize"; then
        warn "$name failed to restart"
        show_log "$DIR/$name.log"
        terminate "$DIR/$name.pid" >/dev/null || true
        exit 1
    fi
    say "$name restarted on port $(cat "$DIR/$name.port") in $(elapsed_since "$t0") s"
}

cmd_restart_mysql() {
    local t0
    if [ ! -f "$DIR/mysql.cmd" ]; then
        warn "no mariadb server was started in $DIR"
        exit 1
    fi
    t0=$(now)
    terminate "$DIR/mysql.pid" >/dev/null
    mysql_launch
    if ! mysql_wait; then
        warn "mariadbd failed to restart"
        show_log "$DIR/mysql.err"
        terminate "$DIR/mysql.pid" >/dev/null || true
        exit 1
    fi
    say "mysql restarted on port $(cat "$DIR/mysql.port") in $(elapsed_since "$t0") s"
}

main() {
    [ "$#" -ge 2 ] || usage
    local cmd=$1
    case $cmd in
        start)
            [ "$#" -le 3 ] || usage
            DIR=$(resolve_dir "$2" create)
            cmd_start "${3:-3}"
            ;;
        stop | status | restart-mysql)
            [ "$#" -eq 2 ] || usage
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
                restart-mysql) cmd_restart_mysql ;;
            esac
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
