#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# The test runner behind "make test".
#
# Usage: tests/run.sh TEST...
#
# Each TEST is an executable (a cmocka binary or a shell script) that prints
# TAP on stdout. The runner starts a private set of servers with
# tests/servers.sh, exports their VL_TEST_* variables (see DIR/env), runs
# every test with CMOCKA_MESSAGE_OUTPUT=TAP under a timeout, tees its output
# to the terminal, counts the TAP results and stops the servers again, also
# when it is interrupted.
#
# The last line on stdout is always the summary
#   "N passed, N failed"   or   "N passed, N failed, N skipped"
# and the exit status is 0 only if nothing failed and something passed.
#
# Environment:
#   VL_TEST_FILTER       passed through to the tests unchanged
#   VL_TEST_TIMEOUT      seconds each test may run (default 600); the cmocka
#                        binaries also time out each of their tests on their
#                        own (VL_TEST_CASE_TIMEOUT, tests/common/testutil.h)
#   VL_TEST_WRAPPER      a command line that runs each compiled test (not the
#                        shell scripts), such as "valgrind --error-exitcode=99"
#   VL_TEST_GALERA       1 also starts the 3-node Galera cluster (servers.sh
#                        start --galera: some 15 s more), for make test-galera
#   VL_TEST_DIR_RECORD   if set, the path of the run's temporary directory is
#                        written to this file as soon as it exists, so that a
#                        caller (tests/test_harness.sh) can check afterwards
#                        that it was removed
#
# Harness messages go to stderr, so that stdout carries only the tests' own
# output and the summary.

set -eu

HERE=$(cd "$(dirname "$0")" && pwd -P)
readonly SERVERS=$HERE/servers.sh
readonly REDIS_COUNT=3
readonly TEST_TIMEOUT=${VL_TEST_TIMEOUT:-600}

# cmocka's TAP output (checked with libcmocka 1.1.5) is, per test group:
#   1..N
#   ok 1 - name
#   not ok 2 - name
#   # diagnostic lines
#   not ok 3 # SKIP name        <- a skipped test, although it says "not ok"
#   # ok - group   /   # not ok - group
# A binary with several groups prints several plans, each numbered from 1,
# so plans are summed rather than taken from the last one. All of it goes to
# stdout. The volley suites run cmocka through tu_run (testutil.c), which
# runs each test in a process of its own and prints the TAP itself: one plan,
# then "ok N - name", "not ok N - name" followed by the reason, or
# "ok N - name # SKIP". A test program that dies anyway can lose output
# still in stdio buffers, which the plan check below turns into failures.

say() {
    echo "run.sh: $*" >&2
}

if [ "$#" -eq 0 ]; then
    echo "usage: $0 TEST..." >&2
    exit 2
fi

DIR=""
# The background job being waited for: "servers.sh start" or the timeout(1)
# process wrapping a test. Waiting on a background job instead of running it
# in the foreground matters: bash runs a trap only after a foreground command
# has finished, so a SIGINT would otherwise wait for a test to complete.
CHILD=""
TEE=""
CLEANED=0

# Ends the current background job. timeout(1) makes itself the leader of a
# new process group and forwards a SIGTERM to the test; anything of that
# group still alive after the grace period is killed outright.
stop_child() {
    local deadline=$((SECONDS + 15))
    kill -TERM "$CHILD" 2>/dev/null || true
    while kill -0 "$CHILD" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 0.05
    done
    kill -KILL -- "-$CHILD" 2>/dev/null || true
    kill -KILL "$CHILD" 2>/dev/null || true
    wait "$CHILD" 2>/dev/null || true
    CHILD=""
}

# Stops the servers and removes the temporary directory. It runs from the
# EXIT trap and from the signal traps, and must do its work only once.
cleanup() {
    if [ "$CLEANED" -eq 1 ]; then
        return 0
    fi
    CLEANED=1
    if [ -n "$CHILD" ]; then
        stop_child
    fi
    if [ -n "$TEE" ]; then
        kill -TERM "$TEE" 2>/dev/null || true
        wait "$TEE" 2>/dev/null || true
        TEE=""
    fi
    if [ -n "$DIR" ]; then
        "$SERVERS" stop "$DIR" >&2 || say "stopping the servers failed"
        rm -rf "$DIR"
    fi
}

# On a signal: clean up, then exit with the conventional 128 + signal number.
# shellcheck disable=SC2317 # Invoked from the traps below.
on_signal() {
    trap - INT TERM HUP
    say "interrupted by SIG$1, cleaning up"
    cleanup
    exit "$2"
}

# The traps are in place before the directory exists, so that there is no
# moment at which an interruption would leak it.
trap cleanup EXIT
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM
trap 'on_signal HUP 129' HUP

DIR=$(mktemp -d /tmp/volley-test.XXXXXX)
say "volley-test dir: $DIR"
if [ -n "${VL_TEST_DIR_RECORD:-}" ]; then
    echo "$DIR" >"$VL_TEST_DIR_RECORD"
fi

# Runs a command as the awaited background job and returns its exit status.
# LAST_CHILD keeps its pid for the caller.
LAST_CHILD=""
run_child() {
    local rc=0
    "$@" &
    CHILD=$!
    LAST_CHILD=$CHILD
    wait "$CHILD" || rc=$?
    CHILD=""
    return "$rc"
}

START_ARGS=("$REDIS_COUNT")
if [ "${VL_TEST_GALERA:-0}" = 1 ]; then
    START_ARGS+=(--galera)
fi
if ! run_child "$SERVERS" start "$DIR" "${START_ARGS[@]}" >&2; then
    say "could not start the test servers"
    cleanup
    echo "0 passed, 1 failed"
    exit 1
fi
# shellcheck source=/dev/null # DIR/env is generated by servers.sh start.
. "$DIR/env"

export CMOCKA_MESSAGE_OUTPUT=TAP
export VL_TEST_FIXTURES=$HERE/fixtures
if [ -n "${VL_TEST_FILTER+set}" ]; then
    export VL_TEST_FILTER
fi

WRAPPER=()
if [ -n "${VL_TEST_WRAPPER:-}" ]; then
    read -r -a WRAPPER <<<"$VL_TEST_WRAPPER"
fi

PASSED=0
FAILED=0
SKIPPED=0

# Describes an exit status for the diagnostic line of a failed test.
describe_status() {
    local rc=$1
    case $rc in
        124) echo "timed out after $TEST_TIMEOUT s" ;;
        126) echo "could not be executed" ;;
        127) echo "not found" ;;
        *)
            if [ "$rc" -gt 128 ]; then
                echo "killed by SIG$(kill -l "$((rc - 128))" 2>/dev/null || echo "$((rc - 128))")"
            else
                echo "exit status $rc"
            fi
            ;;
    esac
}

# Runs one test and adds its TAP results to the totals.
run_test() {
    local test=$1 n=$2 out fifo rc=0 counts plan has_plan pass fail skip missing magic t0
    local wrap=()

    # A bare name would be looked up in PATH by timeout(1); the tests are
    # files given relative to the current directory.
    case $test in
        */*) ;;
        *) test=./$test ;;
    esac

    # The wrapper is for compiled tests; a script runs as it is.
    if [ "${#WRAPPER[@]}" -gt 0 ]; then
        magic=$(head -c 2 "$test" 2>/dev/null || true)
        if [ "$magic" != "#!" ]; then
            wrap=("${WRAPPER[@]}")
        fi
    fi

    out=$DIR/test-$n.out
    fifo=$DIR/test-$n.fifo
    mkfifo "$fifo"
    echo "# run.sh: $1"

    # tee copies the output to the terminal and keeps it for counting; it
    # reads from a FIFO so that timeout's pid can be waited for directly.
    tee "$out" <"$fifo" &
    TEE=$!
    t0=$SECONDS
    run_child timeout -k 10 "$TEST_TIMEOUT" ${wrap[@]+"${wrap[@]}"} "$test" >"$fifo" || rc=$?
    # Processes the test left behind in its process group (which timeout(1)
    # created) would keep the FIFO open and tee waiting forever. Servers
    # restarted through servers.sh are not affected: they run in their own
    # sessions.
    kill -KILL -- "-$LAST_CHILD" 2>/dev/null || true
    wait "$TEE" || true
    TEE=""
    rm -f "$fifo"

    counts=$(awk '
        /^1\.\.[0-9]+/ { plan += substr($1, 4); has_plan = 1; next }
        /^(not )?ok([ \t]|$)/ {
            if (tolower($0) ~ /^(not )?ok[^#]*#[ \t]*skip/) skip++
            else if ($0 ~ /^ok/) pass++
            else fail++
        }
        END { print plan + 0, has_plan + 0, pass + 0, fail + 0, skip + 0 }
    ' "$out")
    read -r plan has_plan pass fail skip <<<"$counts"

    # Results that were announced but never reported count as failures, and
    # so does a non-zero exit that no "not ok" line explains, and a test
    # that printed no TAP at all.
    missing=0
    if [ "$((pass + fail + skip))" -lt "$plan" ]; then
        missing=$((plan - pass - fail - skip))
    fi
    if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ] && [ "$missing" -eq 0 ]; then
        missing=1
    fi
    if [ "$has_plan" -eq 0 ] && [ "$((pass + fail + skip))" -eq 0 ] && [ "$missing" -eq 0 ]; then
        missing=1
    fi
    if [ "$missing" -gt 0 ]; then
        echo "# run.sh: $1: $(describe_status "$rc"); $missing result(s) missing or unexplained, counted as failed"
    fi
    # Whole seconds are enough to see where the suite's time goes.
    echo "# run.sh: $1 took $((SECONDS - t0)) s"

    PASSED=$((PASSED + pass))
    FAILED=$((FAILED + fail + missing))
    SKIPPED=$((SKIPPED + skip))
}

n=0
for test in "$@"; do
    n=$((n + 1))
    run_test "$test" "$n"
done

# Clean up before printing the summary, so that nothing the cleanup says can
# end up after it.
cleanup

if [ "$SKIPPED" -gt 0 ]; then
    echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
else
    echo "$PASSED passed, $FAILED failed"
fi
if [ "$FAILED" -eq 0 ] && [ "$PASSED" -gt 0 ]; then
    exit 0
fi
exit 1
