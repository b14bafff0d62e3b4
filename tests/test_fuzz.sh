#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# The libFuzzer targets' smoke test (tests/run.sh runs it like any other
# test) and the runner behind `make fuzz`.
#
# Usage: tests/test_fuzz.sh [NAME...]
#
# For each tests/fuzz/fuzz_NAME.c (or only the NAMEs given) it runs the
# target built in VL_FUZZ_BUILD over its committed seeds in
# tests/fuzz/corpus/NAME/, then on mutations of them, and prints one TAP
# line per target with its executions and coverage. A crash, a sanitizer
# report, a leak, an input slower than 10 s or a missing binary fails that
# target. The seeds are only read: libFuzzer writes the inputs it finds into
# a temporary directory, which is removed afterwards; an input that made a
# target fail is copied to VL_FUZZ_BUILD/artifacts/ so that it can be
# replayed with `VL_FUZZ_BUILD/fuzz/fuzz_NAME FILE`. A dictionary in
# tests/fuzz/fuzz_NAME.dict is used when there is one.
#
# Environment:
#   VL_FUZZ_BUILD         where `make fuzz-build` put the targets
#                         (default: build-fuzz in the source tree)
#   VL_FUZZ_SECONDS       run each target this long, with a random seed
#                         (`make fuzz`); unset, the run is a smoke: the seeds
#                         plus mutations up to VL_FUZZ_SMOKE_RUNS executions
#                         (default 20000) or VL_FUZZ_SMOKE_SECONDS (default
#                         15), whichever comes first, with a fixed seed so
#                         that a failure reproduces
#   VL_FUZZ_SEED          libFuzzer's -seed (smoke default 1; 0 = random)

set -eu

HERE=$(cd "$(dirname "$0")" && pwd -P)
ROOT=$(cd "$HERE/.." && pwd -P)
BUILD=${VL_FUZZ_BUILD:-build-fuzz}
case $BUILD in
    /*) ;;
    *) BUILD=$ROOT/$BUILD ;;
esac

if [ -n "${VL_FUZZ_SECONDS:-}" ]; then
    MODE=long
    SECONDS_EACH=$VL_FUZZ_SECONDS
    SEED=${VL_FUZZ_SEED:-0}
    LIMIT=(-max_total_time="$SECONDS_EACH")
else
    MODE=smoke
    SECONDS_EACH=${VL_FUZZ_SMOKE_SECONDS:-15}
    SEED=${VL_FUZZ_SEED:-1}
    LIMIT=(-max_total_time="$SECONDS_EACH" -runs="${VL_FUZZ_SMOKE_RUNS:-20000}")
fi
case $SECONDS_EACH in
    '' | *[!0-9]*)
        echo "test_fuzz.sh: the number of seconds must be a whole number" >&2
        exit 2
        ;;
esac

# Readable stack traces in the reports, where LLVM's symbolizer is
# installed (tests/deps.sh installs it).
if [ -z "${ASAN_SYMBOLIZER_PATH:-}" ] && [ -x /usr/lib/llvm-14/bin/llvm-symbolizer ]; then
    export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer
fi
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$HERE/lsan.supp}

NAMES=()
if [ "$#" -gt 0 ]; then
    NAMES=("$@")
else
    for src in "$HERE"/fuzz/fuzz_*.c; do
        [ -e "$src" ] || continue
        src=${src##*/fuzz_}
        NAMES+=("${src%.c}")
    done
fi

if [ "${#NAMES[@]}" -eq 0 ]; then
    echo "1..0 # SKIP no fuzz targets in tests/fuzz"
    exit 0
fi

T=$(mktemp -d /tmp/volley-fuzz.XXXXXX)
CHILD=""
cleanup() {
    if [ -n "$CHILD" ]; then
        kill -TERM "$CHILD" 2>/dev/null || true
        wait "$CHILD" 2>/dev/null || true
    fi
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# The value of libFuzzer's "stat::NAME:" line in a log, or "?".
fuzz_stat() {
    local v
    v=$(sed -n "s/^stat::$1: *//p" "$2" | tail -n 1)
    echo "${v:-?}"
}

# The value after "KEY: " on the last status line that has one, or "?".
status_field() {
    local v
    v=$(grep -o "$1: [0-9]*" "$2" | tail -n 1 | sed 's/.*: //')
    echo "${v:-?}"
}

# The part of a failed run's log worth reading: the sanitizer's or
# libFuzzer's report from its first line (without ASan's shadow-byte map),
# else the end of the log.
report() {
    if grep -q -E 'ERROR: |runtime error: |WARNING: ' "$1"; then
        awk '/ERROR: |runtime error: |WARNING: / { p = 1 }
             /^Shadow bytes around/ { skip = 1 }
             /^==[0-9]+==ABORTING/ { skip = 0 }
             p && !skip' "$1" | head -n 80
    else
        tail -n 40 "$1"
    fi
}

echo "1..${#NAMES[@]}"
n=0
failed=0
SUMMARY=()
for name in "${NAMES[@]}"; do
    n=$((n + 1))
    bin=$BUILD/fuzz/fuzz_$name
    seeds=$HERE/fuzz/corpus/$name
    work=$T/$name
    log=$work/log
    mkdir -p "$work/corpus" "$work/artifacts"

    if [ ! -x "$bin" ]; then
        echo "not ok $n - fuzz_$name"
        echo "# $bin is not built (make fuzz-build)"
        failed=$((failed + 1))
        continue
    fi
    args=(-seed="$SEED" "${LIMIT[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$work/artifacts/")
    if [ -f "$HERE/fuzz/fuzz_$name.dict" ]; then
        args+=(-dict="$HERE/fuzz/fuzz_$name.dict")
    fi
    # The first directory receives the new inputs; the seeds are only read.
    dirs=("$work/corpus")
    if [ -d "$seeds" ]; then
        dirs+=("$seeds")
    else
        echo "# fuzz_$name has no seeds in tests/fuzz/corpus/$name/"
    fi

    rc=0
    start=$(date +%s.%N)
    # timeout(1) bounds a target that ignores its own time limit.
    timeout -k 10 "$((SECONDS_EACH + 120))" "$bin" "${args[@]}" "${dirs[@]}" >"$log" 2>&1 &
    CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=""
    took=$(echo "$start $(date +%s.%N)" | awk '{ printf "%.1f", $2 - $1 }')

    execs=$(fuzz_stat number_of_executed_units "$log")
    added=$(fuzz_stat new_units_added "$log")
    cov=$(status_field cov "$log")
    ft=$(status_field ft "$log")
    line="fuzz_$name: $execs execs, cov $cov, ft $ft, $added new inputs, ${took} s"
    if [ "$rc" -eq 0 ]; then
        echo "ok $n - $line"
        SUMMARY+=("ok      $line")
    else
        echo "not ok $n - $line"
        why="exited with status $rc"
        if [ "$rc" -eq 124 ]; then
            why="timed out after $((SECONDS_EACH + 120)) s"
        fi
        echo "# fuzz_$name $why; its report:"
        report "$log" | sed 's/^/#   /'
        for a in "$work"/artifacts/*; do
            [ -e "$a" ] || continue
            mkdir -p "$BUILD/artifacts"
            cp "$a" "$BUILD/artifacts/fuzz_$name-${a##*/}"
            echo "# input kept: $BUILD/artifacts/fuzz_$name-${a##*/}"
        done
        SUMMARY+=("FAILED  $line")
        failed=$((failed + 1))
    fi
done

if [ "$MODE" = long ]; then
    echo "# fuzzing summary, ${SECONDS_EACH} s per target:"
    for line in "${SUMMARY[@]}"; do
        echo "#   $line"
    done
fi
[ "$failed" -eq 0 ]
