#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# tests/test_headers.sh - the public headers as a user's compiler sees them:
# strict C99 and C++11 accept <volley.h> and every header on its own, and the
# version macros agree with the library. Prints TAP; needs no server.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${VOLLEY_BUILD:-$ROOT/build}
T=$(mktemp -d /tmp/volley-headers.XXXXXX)
trap 'rm -rf "$T"' EXIT

n=0
fails=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() {
    n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $1"
    sed 's/^/# /' "$T/log" | head -n 20
}
compiles() { # compiles DESC COMPILER ARGS...
    local desc=$1; shift
    if "$@" >"$T/log" 2>&1; then ok "$desc"; else not_ok "$desc"; fi
}

# Every public header, so a new one is checked the day it lands.
HEADERS=(volley.h)
for f in "$ROOT"/include/volley/*.h; do
    HEADERS+=("volley/$(basename "$f")")
done
echo "1..$((2 * ${#HEADERS[@]} + 1))"

for h in "${HEADERS[@]}"; do
    printf '#include <%s>\nint main(void) { return 0; }\n' "$h" >"$T/one.c"
    cp "$T/one.c" "$T/one.cc"
    compiles "$h alone: gcc -std=c99 -pedantic-errors" \
        gcc -std=c99 -pedantic-errors -Wall -Wextra -Werror -I"$ROOT/include" -c "$T/one.c" -o "$T/one.o"
    compiles "$h alone: g++ -std=c++11 -pedantic-errors" \
        g++ -std=c++11 -pedantic-errors -Wall -Wextra -Werror -I"$ROOT/include" -c "$T/one.cc" -o "$T/one.o"
done

# The compile-time version is the run-time one, and VL_VERSION_NUM orders.
cat >"$T/ver.c" <<'C'
#include <stdio.h>
#include <string.h>
#include <volley.h>
#if VL_VERSION_NUM < VL_VERSION_AT(0, 1, 0)
#error "VL_VERSION_NUM is below the first release"
#endif
int main(void)
{
    char want[32];
    snprintf(want, sizeof(want), "%d.%d.%d", VL_VERSION_MAJOR, VL_VERSION_MINOR, VL_VERSION_PATCH);
    if (strcmp(want, VL_VERSION_STRING) != 0 || strcmp(vl_version(), VL_VERSION_STRING) != 0) {
        printf("macros %s, string %s, library %s\n", want, VL_VERSION_STRING, vl_version());
        return 1;
    }
    return 0;
}
C
if gcc -std=c99 -pedantic-errors -I"$ROOT/include" "$T/ver.c" "$BUILD/libvolley.a" \
        -lhiredis -lmariadb -lev -lpthread -o "$T/ver" >"$T/log" 2>&1 && "$T/ver" >>"$T/log" 2>&1; then
    ok "version macros, VL_VERSION_NUM and vl_version() agree"
else
    not_ok "version macros, VL_VERSION_NUM and vl_version() agree"
fi
[ "$fails" -eq 0 ]
