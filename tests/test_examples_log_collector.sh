#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# tests/test_examples_log_collector.sh - tools/examples/log_collector against
# the harness's main mariadbd: 50 clients send 20,000 lines and every line is
# acked once and stored once; the same while mariadbd is killed with -9 and
# restarted (with retries, and with none, so that lines are acked err); the
# protocol's refusals and a resend after a reconnect; SIGTERM with lines
# still queued. Prints TAP; needs the env from tests/servers.sh (tests/run.sh
# provides it) and python3 for the clients.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${VOLLEY_BUILD:-$ROOT/build}
BIN=$BUILD/tools/examples/log_collector
T=$(mktemp -d /tmp/volley-logc.XXXXXX)
DB=volley_log_collector
CLIENTS=50
LINES=400 # per client: 20,000 in all
COLLECTOR=""
MYSQL_DOWN=0

cleanup() {
    [ -n "$COLLECTOR" ] && kill -KILL "$COLLECTOR" 2>/dev/null
    # Never leave the shared mariadbd dead for the tests after this one.
    if [ "$MYSQL_DOWN" -eq 1 ]; then
        timeout 60 "$VL_TEST_SERVERS" restart-mysql "$VL_TEST_DIR" mysql >/dev/null 2>&1
    fi
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
    if eval "$2"; then ok "$1"; else not_ok "$1" "failed: $2" "$(summary)"; fi
}

PLAN=35
echo "1..$PLAN"
if [ -z "${VL_TEST_MYSQL_PORT:-}" ] || [ ! -x "$BIN" ] || ! command -v python3 >/dev/null; then
    echo "# the harness env, python3 or $BIN is missing"
    for _ in $(seq "$PLAN"); do not_ok "setup"; done
    exit 1
fi
export MYSQL_PWD=$VL_TEST_MYSQL_PASSWORD # keeps the password off command lines
sql() { timeout 30 mariadb -h127.0.0.1 -P"$VL_TEST_MYSQL_PORT" -u"$VL_TEST_MYSQL_USER" -N -B "$@"; }
URL="mysql://$VL_TEST_MYSQL_USER:$VL_TEST_MYSQL_PASSWORD@127.0.0.1:$VL_TEST_MYSQL_PORT/$DB"
sql -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB"

# ---- The clients ------------------------------------------------------------
# client.py PORT PREFIX CLIENTS LINES PACE_S OUT [READY]: each client says
# hello as PREFIX-cK, sends lines "I <text>" (pausing PACE_S after each),
# ends its side and reads acks until the server closes; OUT gets every ack
# received, the lines each client managed to send and the seconds it all
# took. The file READY is made once every client's hello was answered.
cat >"$T/client.py" <<'EOF'
import asyncio, json, sys, time

def text_of(prefix, c, i):
    # Deterministic, so that the checker can compare every stored body.
    return "%s client %d line %d %s" % (prefix, c, i, "x" * (i % 97))

hellos = 0

async def client(port, prefix, c, nlines, pace, acks, sent, nclients, ready):
    global hellos
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(("hello %s-c%d\n" % (prefix, c)).encode())
    await writer.drain()
    first = await reader.readline()
    if first != b"ok hello\n":
        raise RuntimeError("hello answered %r" % first)
    hellos += 1
    if hellos == nclients and ready:
        open(ready, "w").close()
    async def send():
        try:
            for i in range(nlines):
                writer.write(("%d %s\n" % (i, text_of(prefix, c, i))).encode())
                await writer.drain()
                sent[c] = i + 1
                if pace:
                    await asyncio.sleep(pace)
            writer.write_eof()
        except (ConnectionError, OSError):
            pass  # the server stopped reading (SIGTERM): the rest stays unsent
    task = asyncio.ensure_future(send())
    while True:
        try:
            line = await reader.readline()
        except (ConnectionError, OSError):
            break
        if not line:
            break
        parts = line.decode().rstrip("\n").split(" ", 2)
        lid = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        acks.append([c, parts[0], lid, parts[2] if len(parts) > 2 else ""])
    await task
    writer.close()

async def main():
    port, prefix, nclients, nlines, pace, out = (int(sys.argv[1]), sys.argv[2],
        int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6])
    acks, sent = [], {}
    t0 = time.monotonic()
    ready = sys.argv[7] if len(sys.argv) > 7 else None
    await asyncio.gather(*(client(port, prefix, c, nlines, pace, acks, sent, nclients, ready)
                           for c in range(nclients)))
    json.dump({"acks": acks, "sent": sent, "seconds": time.monotonic() - t0}, open(out, "w"))

if __name__ == "__main__":
    asyncio.run(main())
EOF

# check.py ACKS ROWS PREFIX CLIENTS LINES: compares the acks with the rows
# (client_id, line_id, body from the table) and prints counts as k=v:
# ok, err (lines acked once, so), multi (acked more than once), unacked,
# bad (malformed acks), rows, dups, lost (acked ok, no row), wrong (a body
# that is not the text sent), stray (a row for a line never sent), err_rows
# (lines acked err whose row exists), noprefix (clients whose acked lines
# are not exactly 0..k-1), secs.
cat >"$T/check.py" <<'EOF'
import json, sys
from client import text_of
d = json.load(open(sys.argv[1]))
prefix, nclients, nlines = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
acks, bad = {}, 0
for c, kind, lid, why in d["acks"]:
    if kind not in ("ok", "err") or lid is None:
        bad += 1
        continue
    acks.setdefault((c, lid), []).append(kind)
rows, dups = {}, 0
for line in open(sys.argv[2], "rb"):
    cid, lid, body = line.rstrip(b"\n").split(b"\t", 2)
    cid = cid.decode()
    if not cid.startswith(prefix + "-c"):
        continue
    key = (int(cid[len(prefix) + 2:]), int(lid))
    dups += key in rows
    rows[key] = body.decode()
ok = [k for k, v in acks.items() if v == ["ok"]]
err = [k for k, v in acks.items() if v == ["err"]]
acked = {}
for c, i in acks:
    acked.setdefault(c, set()).add(i)
r = {
    "ok": len(ok), "err": len(err), "bad": bad,
    "multi": sum(1 for v in acks.values() if len(v) != 1),
    "unacked": sum(1 for c in range(nclients) for i in range(nlines) if (c, i) not in acks),
    "rows": len(rows), "dups": dups,
    "lost": sum(1 for k in ok if k not in rows),
    "wrong": sum(1 for k, b in rows.items() if b != text_of(prefix, k[0], k[1])),
    "stray": sum(1 for k in rows if not (0 <= k[0] < nclients and 0 <= k[1] < nlines)),
    "err_rows": sum(1 for k in err if k in rows),
    "noprefix": sum(1 for s in acked.values() if s != set(range(len(s)))),
    "secs": "%.3f" % d["seconds"],
}
print(" ".join("%s=%s" % kv for kv in r.items()))
EOF

# ---- Helpers ------------------------------------------------------------------

# start_collector ARGS...: starts it in the background and waits (10 s at
# most) for its "listening on port N" line; PORT then holds N.
start_collector() {
    PORT=""
    : >"$T/col.out"
    "$BIN" --listen tcp://127.0.0.1:0 --mysql "$URL" "$@" >"$T/col.out" 2>"$T/col.err" &
    COLLECTOR=$!
    for _ in $(seq 100); do
        PORT=$(sed -n 's/^listening on port \([0-9][0-9]*\)$/\1/p' "$T/col.out")
        [ -n "$PORT" ] && return 0
        kill -0 "$COLLECTOR" 2>/dev/null || break
        sleep 0.1
    done
    return 1
}

# stop_collector [SECONDS]: SIGTERM, then waits for the exit (killing it
# after SECONDS, default 60); COL_RC is its status and COL the numbers of
# its exit line: lines ok err dropped retries.
stop_collector() {
    local deadline=$((SECONDS + ${1:-60}))
    kill -TERM "$COLLECTOR" 2>/dev/null
    while kill -0 "$COLLECTOR" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    kill -KILL "$COLLECTOR" 2>/dev/null
    wait "$COLLECTOR"
    COL_RC=$?
    COLLECTOR=""
    read -r -a COL <<<"$(sed -n 's/.*exit: lines \([0-9]*\) ok \([0-9]*\) err \([0-9]*\) dropped \([0-9]*\) retries \([0-9]*\)$/\1 \2 \3 \4 \5/p' "$T/col.err")"
    [ "${#COL[@]}" -eq 5 ] || COL=(x x x x x)
}

# verify PREFIX ACKS: the table's rows for PREFIX against the acks; sets R_*
# from check.py and SQL_ROWS/SQL_DISTINCT from the server's own count.
verify() {
    local kv v
    for v in ${!R_*}; do unset "$v"; done # a failed check must not see the last run's
    sql -e "SELECT client_id, line_id, body FROM $DB.log_lines" >"$T/rows.tsv"
    (cd "$T" && timeout 60 python3 check.py "$2" rows.tsv "$1" "$CLIENTS" "$LINES") >"$T/summary" 2>&1
    for kv in $(cat "$T/summary"); do
        case $kv in *=*) printf -v "R_${kv%%=*}" '%s' "${kv#*=}" ;; esac
    done
    read -r SQL_ROWS SQL_DISTINCT <<<"$(sql -e "SELECT COUNT(*), COUNT(DISTINCT client_id, line_id)
        FROM $DB.log_lines WHERE client_id LIKE '$1-c%'")"
}
summary() { cat "$T/summary" 2>/dev/null; echo "collector: ${COL[*]:-} rc ${COL_RC:-}"; }

# wait_until SECONDS 'CONDITION': polls every 0.1 s.
wait_until() {
    local deadline=$((SECONDS + $1))
    until eval "$2"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

# kill9_mysql: mariadbd killed with -9, down for 2 s, then restarted.
kill9_mysql() {
    MYSQL_DOWN=1
    kill -KILL "$(cat "$VL_TEST_DIR/mysql.pid")" || return 1
    sleep 2
    timeout 60 "$VL_TEST_SERVERS" restart-mysql "$VL_TEST_DIR" mysql >"$T/restart.log" 2>&1 || return 1
    MYSQL_DOWN=0
}

# ---- Run 1: 50 clients, 20,000 lines, a healthy server ------------------------
check "the collector creates its table and listens" \
    'start_collector --workers 4 --batch 100'
timeout 120 python3 "$T/client.py" "$PORT" r1 "$CLIENTS" "$LINES" 0 "$T/acks1.json"
RC=$?
check "50 clients sent 20,000 lines and read their acks" \
    '[ $RC -eq 0 ]'
verify r1 "$T/acks1.json"
check "run 1: every line got exactly one ack" \
    '[ "${R_unacked:-x}" = 0 ] && [ "${R_multi:-x}" = 0 ] && [ "${R_bad:-x}" = 0 ]'
check "run 1: with the server up, every ack is ok" \
    '[ "${R_ok:-x}" = 20000 ]'
check "run 1: every ok line is in the table once, with the text sent" \
    '[ "${R_lost:-x}" = 0 ] && [ "${R_dups:-x}" = 0 ] && [ "${R_wrong:-x}" = 0 ] && [ "${R_stray:-x}" = 0 ]'
check "run 1: the server counts 20,000 rows, 20,000 distinct" \
    '[ "${SQL_ROWS:-x}" = 20000 ] && [ "${SQL_DISTINCT:-x}" = 20000 ]'
if [ -n "${R_secs:-}" ]; then
    echo "# run 1 throughput: $(awk -v s="$R_secs" 'BEGIN { printf "%.0f", 20000 / s }') lines/s (20,000 lines, 50 clients, $R_secs s)"
fi

# ---- The protocol, on the same collector ----------------------------------------
# Refusals: no hello, a malformed line, a line too long; and a line resent
# on a new connection after its ack was "lost" is stored once, with the
# first text.
cat >"$T/proto.py" <<'EOF'
import socket, sys
port = int(sys.argv[1])
def conn():
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s, s.makefile("rb")
def say(s, f, line):
    s.sendall(line)
    return f.readline()
out = []
s, f = conn()
out.append(say(s, f, b"5 no hello\n")); out.append(f.readline()); s.close()
s, f = conn()
out.append(say(s, f, b"hello proto\n"))
out.append(say(s, f, b"abc\n"))
out.append(say(s, f, b"18446744073709551616 too big\n"))
out.append(say(s, f, b"7 first\r\n"))
out.append(say(s, f, b"x" * 70000 + b"\n"))
out.append(f.readline()); s.close()
s, f = conn()
out.append(say(s, f, b"hello proto\n"))
out.append(say(s, f, b"7 second\n"))
s.shutdown(socket.SHUT_WR); out.append(f.readline()); s.close()
for o in out:
    print(repr(o))
EOF
timeout 60 python3 "$T/proto.py" "$PORT" >"$T/proto.out" 2>&1
cat >"$T/proto.want" <<'EOF'
b'err - hello first\n'
b''
b'ok hello\n'
b'err - malformed line\n'
b'err - malformed line\n'
b'ok 7\n'
b'err too long\n'
b''
b'ok hello\n'
b'ok 7\n'
b''
EOF
check "protocol: hello first, malformed ids, 64 KiB lines and a resend" \
    'diff -u "$T/proto.want" "$T/proto.out"'
PROTO_ROW=$(sql -e "SELECT COUNT(*), MAX(body) FROM $DB.log_lines WHERE client_id = 'proto'")
check "protocol: the resent line is stored once, with the first text" \
    '[ "$PROTO_ROW" = "$(printf "1\tfirst")" ]'
stop_collector
check "run 1: SIGTERM ends the collector with status 0" \
    '[ "$COL_RC" = 0 ]'
check "run 1: the collector acked every line it read" \
    '[ "${COL[0]}" = 20002 ] && [ "${COL[1]}" = 20002 ] && [ "${COL[2]}" = 0 ]'

# kill_run NAME PREFIX RETRIES: a collector with --retries RETRIES, the
# clients pacing themselves (some 10 s in all) so that the kill of mariadbd
# falls in the middle of the run, and the checks every such run passes.
kill_run() {
    check "$1: the collector starts with --retries $3" \
        "start_collector --workers 4 --batch 100 --retries $3"
    timeout 150 python3 "$T/client.py" "$PORT" "$2" "$CLIENTS" "$LINES" 0.02 "$T/acks-$2.json" &
    CLIENT_PID=$!
    sleep 3
    check "$1: mariadbd killed with -9 and restarted 2 s later" \
        'kill9_mysql'
    wait "$CLIENT_PID"
    RC=$?
    check "$1: the clients finished" \
        '[ $RC -eq 0 ]'
    verify "$2" "$T/acks-$2.json"
    check "$1: every line got exactly one ack (ok or err)" \
        '[ "${R_unacked:-x}" = 0 ] && [ "${R_multi:-x}" = 0 ] && [ "${R_bad:-x}" = 0 ]'
    check "$1: no ok line lost, none duplicated, none altered" \
        '[ "${R_lost:-x}" = 0 ] && [ "${R_dups:-x}" = 0 ] && [ "${R_wrong:-x}" = 0 ] && [ "${R_stray:-x}" = 0 ]'
    # A line acked err may have a row: its statement committed, the answer
    # was lost with the connection, and no retry was left to find that out.
    # So the rows are the ok lines plus some of the err lines, each once.
    check "$1: the rows are the ok lines and some err lines, each once" \
        '[ "${SQL_ROWS:-x}" = "${SQL_DISTINCT:-y}" ] && [ "$SQL_ROWS" = "${R_rows:-x}" ] && [ "$SQL_ROWS" -eq "$((R_ok + R_err_rows))" ]'
    stop_collector
    check "$1: exit status 0, the collector's counts are the clients'" \
        '[ "$COL_RC" = 0 ] && [ "${COL[0]}" = 20000 ] && [ "${COL[1]}" = "${R_ok:-x}" ] && [ "${COL[2]}" = "${R_err:-x}" ]'
}

# ---- Run 2: mariadbd killed with -9 for 2 s mid-run, batches retried ----------
# A statement cut off by the kill may have committed before its answer was
# lost: its retry then finds the rows and changes nothing, so every line is
# still stored once, and with retries enough for the outage none is err.
kill_run "run 2" r2 10
check "run 2: the kill hit the run (batches were retried) and no line was acked err" \
    '[ "${COL[4]}" != x ] && [ "${COL[4]}" -gt 0 ] && [ "${R_err:-x}" = 0 ]'
echo "# run 2 (kill -9): ok ${R_ok:-?}, err ${R_err:-?}, rows ${SQL_ROWS:-?}, batches retried ${COL[4]}"

# ---- Run 3: the same kill with no retries: failed batches are acked err ---------
kill_run "run 3" r3 0
check "run 3: with no retries, the lines of the failed batches were acked err" \
    '[ "${R_err:-0}" -gt 0 ] && [ "${COL[4]}" = 0 ]'
echo "# run 3 (kill -9, no retries): ok ${R_ok:-?}, err ${R_err:-?} (of which ${R_err_rows:-?} stored), rows ${SQL_ROWS:-?}"

# ---- Run 4: SIGTERM with lines queued ------------------------------------------------
# A session holds the table locked, so the inserts wait and the queue (500
# lines) fills up; SIGTERM comes meanwhile, once every client is sending,
# and then the lock goes. The collector stops reading, inserts and acks
# every line it had read, then exits 0. Lines it never read get no ack
# (the clients keep them): what a client sees acked is its first k lines.
check "run 4: the collector starts" \
    'start_collector --workers 4 --batch 100 --queue 500'
mkfifo "$T/lock.fifo"
sql <"$T/lock.fifo" >"$T/lock.out" 2>&1 &
LOCK_PID=$!
exec 3>"$T/lock.fifo"
echo "LOCK TABLES $DB.log_lines WRITE;" >&3
wait_until 20 '[ -n "$(sql -e "SHOW OPEN TABLES FROM $DB WHERE In_use > 0")" ]'
LOCKED=$?
timeout 120 python3 "$T/client.py" "$PORT" r4 "$CLIENTS" "$LINES" 0 "$T/acks4.json" "$T/ready4" &
CLIENT_PID=$!
wait_until 60 '[ -f "$T/ready4" ]'
check "run 4: the table is locked and every client is sending" \
    '[ $LOCKED -eq 0 ] && [ -f "$T/ready4" ]'
sleep 0.5
kill -TERM "$COLLECTOR"
sleep 0.5
echo "UNLOCK TABLES;" >&3
exec 3>&-
stop_collector 60
wait "$LOCK_PID"
wait "$CLIENT_PID"
RC=$?
check "run 4: the clients finished" \
    '[ $RC -eq 0 ]'
QUEUED=$(sed -n 's/.*stopping: \([0-9]*\) lines queued.*/\1/p' "$T/col.err")
check "run 4: lines were queued when SIGTERM came" \
    '[ "${QUEUED:-0}" -gt 0 ]'
check "run 4: the collector exits with status 0" \
    '[ "$COL_RC" = 0 ]'
verify r4 "$T/acks4.json"
check "run 4: every line read was acked ok, once, and the clients got every ack" \
    '[ "${R_multi:-x}" = 0 ] && [ "${R_bad:-x}" = 0 ] && [ "${R_err:-x}" = 0 ] && [ "${COL[0]}" = "${R_ok:-y}" ] && [ "${COL[1]}" = "$R_ok" ] && [ "$R_ok" -ge "$QUEUED" ]'
check "run 4: each client's acked lines are its first k lines" \
    '[ "${R_noprefix:-x}" = 0 ]'
check "run 4: the acked lines are in the table once" \
    '[ "${R_lost:-x}" = 0 ] && [ "${R_dups:-x}" = 0 ] && [ "${SQL_ROWS:-x}" = "$R_ok" ] && [ "$SQL_DISTINCT" = "$R_ok" ]'
echo "# run 4 (SIGTERM): $QUEUED lines queued at SIGTERM, ${R_ok:-?} acked ok before exit"

sql -e "DROP DATABASE IF EXISTS $DB"
check "the shared mariadbd is up again after the kills" '[ "$(sql -e "SELECT 1")" = 1 ]'
[ "$n" -eq "$PLAN" ] || echo "# planned $PLAN, ran $n"
[ "$fails" -eq 0 ] && [ "$n" -eq "$PLAN" ]
