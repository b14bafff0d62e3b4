#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# tests/test_install.sh - make install and make uninstall as a user and a
# packager run them, in a temporary directory only. Prints TAP; needs no
# server.
#
#  - `make` (default PREFIX), then `make install PREFIX=T/x`: volley.pc says
#    T/x, and a program built with `pkg-config --cflags --libs volley`
#    compiles and runs; it finds libvolley.so.0 through -Wl,-rpath set to
#    pkg-config's libdir (so LD_LIBRARY_PATH plays no part), and a program
#    linked with `pkg-config --static` runs too. The installed CLI loads the
#    installed library.
#  - `make install DESTDIR=T/stage PREFIX=/usr` from a build directory that
#    does not exist yet (install builds what it installs): every file lands
#    under the stage, volley.pc says /usr, and a program built against the
#    stage (PKG_CONFIG_SYSROOT_DIR) runs with LD_LIBRARY_PATH set to the
#    staged libdir, since its run path would be the real /usr/lib.
#  - ldconfig runs after install and uninstall into the live tree as root,
#    never for a staged one; LDCONFIG is replaced by a recorder here, so the
#    test never touches the system's linker cache.
#  - `make uninstall` with the same variables leaves no file or symlink
#    behind (the list of files before install and after uninstall agree).
#  - `make` on a machine without the -dev packages names the Debian packages
#    to install; CPPFLAGS reaches the compiler; WERROR=0 drops -Werror.
#  - Every tracked source file starts with its SPDX-License-Identifier line.
#
# Each make uses a build directory inside the temporary directory, so the
# test never writes into the tree's own build while other tests run from it.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
T=$(mktemp -d /tmp/volley-install.XXXXXX)
trap 'rm -rf "$T"' EXIT
# A make started from `make test` must not inherit its variables or jobs.
unset MAKEFLAGS MFLAGS MAKELEVEL

n=0
fails=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() {
    n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $1"
    sed 's/^/# /' "$T/log" | tail -n 20
}
check() { # check DESC COMMAND... : ok when COMMAND succeeds
    local desc=$1; shift
    if "$@" >"$T/log" 2>&1; then ok "$desc"; else not_ok "$desc"; fi
}
files_under() { # every file and symlink below $1, sorted, one per line
    if [ -d "$1" ]; then (cd "$1" && find . \( -type f -o -type l \) | sort); fi
}
mk() { make -C "$ROOT" -j2 LDCONFIG="echo ldconfig-ran >>$T/ldconfig.log; :" "$@"; }

# The program a newcomer writes first: the header's version is the
# library's, and a loop can be made, run and freed.
cat >"$T/prog.c" <<'C'
#include <stdio.h>
#include <string.h>
#include <volley.h>
int main(void)
{
    vl_loop *loop = vl_loop_new();
    if (loop == NULL || vl_loop_run(loop) != VL_OK)
        return 1;
    vl_loop_free(loop);
    if (strcmp(vl_version(), VL_VERSION_STRING) != 0) {
        printf("header %s, library %s\n", VL_VERSION_STRING, vl_version());
        return 1;
    }
    printf("volley %s\n", vl_version());
    return 0;
}
C

# Every installed path the Makefile promises, relative to the prefix.
expected_files() {
    local v=$1
    printf '%s\n' ./bin/volley ./include/volley.h ./lib/libvolley.a ./lib/libvolley.so \
        "./lib/libvolley.so.0" "./lib/libvolley.so.$v" ./lib/pkgconfig/volley.pc \
        ./share/man/man1/volley.1
    (cd "$ROOT/include" && for h in volley/*.h; do echo "./include/$h"; done)
    python3 "$ROOT/doc/mkman.py" --list "$ROOT/include/volley.h" "$ROOT"/include/volley/*.h |
        sed 's|^|./share/man/man3/|'
}
VERSION=$(sed -n 's/^#define VL_VERSION_STRING "\(.*\)"/\1/p' "$ROOT/include/volley/common.h")

echo "1..23"

# ---- make, then make install PREFIX=T/x --------------------------------------
X=$T/x
before=$(files_under "$X")
check "make (default PREFIX) builds" mk BUILD="$T/build"
check "make install PREFIX=$X after it" mk BUILD="$T/build" PREFIX="$X" install
if [ "$(files_under "$X")" = "$(expected_files "$VERSION" | sort)" ]; then
    ok "install put exactly the libraries, headers, volley.pc, CLI and man pages there"
else
    diff <(expected_files "$VERSION" | sort) <(files_under "$X") >"$T/log"
    not_ok "install put exactly the libraries, headers, volley.pc, CLI and man pages there"
fi
# The shared library exports the public API and nothing else (the tools
# link it, so this is what holds them to that API), and each exported
# function has its page in man3.
nm -D --defined-only "$X/lib/libvolley.so" | awk '{ print $3 }' | sort >"$T/symbols"
if [ -s "$T/symbols" ] && ! grep -qv '^vl_' "$T/symbols"; then
    ok "libvolley.so exports only vl_ names"
else
    grep -v '^vl_' "$T/symbols" >"$T/log"
    not_ok "libvolley.so exports only vl_ names"
fi
missing_pages=$(while read -r sym; do
    [ -f "$X/share/man/man3/$sym.3" ] || echo "$sym"
done <"$T/symbols")
if [ -s "$T/symbols" ] && [ -z "$missing_pages" ]; then
    ok "every exported function has its man page ($(wc -l <"$T/symbols") functions)"
else
    echo "no page: $missing_pages" >"$T/log"
    not_ok "every exported function has its man page"
fi
export PKG_CONFIG_PATH=$X/lib/pkgconfig
check "volley.pc says prefix=$X and libdir=\${prefix}/lib" \
    sh -c 'grep -qx "prefix=$1" "$2" && grep -qxF "libdir=\${prefix}/lib" "$2"' \
    _ "$X" "$X/lib/pkgconfig/volley.pc"
check "pkg-config's libdir and version are the install's" \
    test "$(pkg-config --variable=libdir volley)/$(pkg-config --modversion volley)" = "$X/lib/$VERSION"
libdir=$(pkg-config --variable=libdir volley)
check "a program built with pkg-config --cflags --libs volley runs" \
    sh -c 'cc -std=c99 -o "$1/prog" "$1/prog.c" $(pkg-config --cflags --libs volley) \
               -Wl,-rpath,"$2" && env -u LD_LIBRARY_PATH "$1/prog"' _ "$T" "$libdir"
check "it loads libvolley.so.0 from $X/lib" \
    sh -c 'ldd "$1/prog" | grep -q "libvolley.so.0 => $2/libvolley.so.0 "' _ "$T" "$libdir"
check "a program linked with pkg-config --static runs" \
    sh -c 'cc -std=c99 -o "$1/prog-static" "$1/prog.c" \
               $(pkg-config --cflags volley) "$2/libvolley.a" \
               $(pkg-config --static --libs volley | sed "s/-lvolley//") && "$1/prog-static"' \
    _ "$T" "$libdir"
check "the installed CLI runs on the installed library" \
    sh -c '"$1/bin/volley" --version | grep -q "libvolley $2" &&
           ldd "$1/bin/volley" | grep -q "libvolley.so.0 => $1/bin/../lib/libvolley.so.0 "' \
    _ "$X" "$VERSION"
check "make uninstall PREFIX=$X" mk BUILD="$T/build" PREFIX="$X" uninstall
if [ "$(files_under "$X")" = "$before" ]; then
    ok "uninstall left no file behind in $X"
else
    files_under "$X" >"$T/log"
    not_ok "uninstall left no file behind in $X"
fi
if [ "$(grep -c ldconfig-ran "$T/ldconfig.log" 2>/dev/null)" = "$([ "$(id -u)" -eq 0 ] && echo 2 || echo 0)" ]; then
    ok "ldconfig ran after install and uninstall exactly when root"
else
    echo "ldconfig runs: $(grep -c ldconfig-ran "$T/ldconfig.log" 2>/dev/null)" >"$T/log"
    not_ok "ldconfig ran after install and uninstall exactly when root"
fi
rm -f "$T/ldconfig.log"

# ---- make install DESTDIR=T/stage PREFIX=/usr, from nothing built -----------
S=$T/stage
check "make install DESTDIR=$S PREFIX=/usr builds what it installs" \
    mk BUILD="$T/build-stage" DESTDIR="$S" PREFIX=/usr install
if [ "$(files_under "$S/usr")" = "$(expected_files "$VERSION" | sort)" ] &&
    [ "$(files_under "$S")" = "$(expected_files "$VERSION" | sed 's|^\./|./usr/|' | sort)" ]; then
    ok "every staged file lies under $S/usr, and none is missing"
else
    diff <(expected_files "$VERSION" | sed 's|^\./|./usr/|' | sort) <(files_under "$S") >"$T/log"
    not_ok "every staged file lies under $S/usr, and none is missing"
fi
export PKG_CONFIG_PATH=$S/usr/lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$S
check "the staged volley.pc says prefix=/usr and libdir /usr/lib" \
    test "$(env -u PKG_CONFIG_SYSROOT_DIR pkg-config --variable=prefix volley) $(
            env -u PKG_CONFIG_SYSROOT_DIR pkg-config --variable=libdir volley)" = "/usr /usr/lib"
check "a program built against the stage runs with LD_LIBRARY_PATH=$S/usr/lib" \
    sh -c 'cc -std=c99 -o "$1/prog2" "$1/prog.c" $(pkg-config --cflags --libs volley) &&
           LD_LIBRARY_PATH="$2/usr/lib" "$1/prog2"' _ "$T" "$S"
unset PKG_CONFIG_SYSROOT_DIR
mk BUILD="$T/build-stage" DESTDIR="$S" PREFIX=/usr uninstall >"$T/log" 2>&1
if [ -z "$(files_under "$S")" ] && [ ! -s "$T/ldconfig.log" ]; then
    ok "make uninstall DESTDIR=$S PREFIX=/usr leaves no file, and ldconfig never ran"
else
    files_under "$S" >>"$T/log"
    not_ok "make uninstall DESTDIR=$S PREFIX=/usr leaves no file, and ldconfig never ran"
fi
# ---- what make asks of the machine and takes from the caller -------------
# A compiler that sees no system headers stands for a machine without the
# -dev packages: make must name the Debian packages, not fail on ev.h.
if mk BUILD="$T/bare" CC="cc -nostdinc" lib >"$T/log" 2>&1; then
    not_ok "make without the -dev packages names them"
elif grep -q 'missing Debian packages: libev-dev libhiredis-dev libmariadb-dev libjansson-dev' \
        "$T/log" && ! grep -q 'No such file' "$T/log" && [ ! -e "$T/bare/lib" ]; then
    ok "make without the -dev packages names them and compiles nothing"
else
    not_ok "make without the -dev packages names them and compiles nothing"
fi
# The compile lines, as make would run them from scratch (-B -n: nothing is
# built).
mk -B -n BUILD="$T/flags" CPPFLAGS=-DVL_FROM_CPPFLAGS lib >"$T/flags-default" 2>&1
mk -B -n BUILD="$T/flags" WERROR=0 lib >"$T/flags-nowerror" 2>&1
if grep -q 'lib/alloc.c .*' "$T/flags-default" &&
    grep 'lib/alloc.c' "$T/flags-default" | grep -q -- '-DVL_FROM_CPPFLAGS'; then
    ok "CPPFLAGS reaches the compiler"
else
    cp "$T/flags-default" "$T/log"; not_ok "CPPFLAGS reaches the compiler"
fi
if grep 'lib/alloc.c' "$T/flags-default" | grep -q -- '-Werror' &&
    grep 'lib/alloc.c' "$T/flags-nowerror" | grep -q -- '-Wall' &&
    ! grep 'lib/alloc.c' "$T/flags-nowerror" | grep -q -- '-Werror'; then
    ok "-Werror by default, warnings without it under WERROR=0"
else
    cat "$T/flags-default" "$T/flags-nowerror" >"$T/log"
    not_ok "-Werror by default, warnings without it under WERROR=0"
fi
# ---- the licence ------------------------------------------------------------
# Every source file (code, headers, scripts, fixtures, fuzz targets and
# dictionaries, suppressions, the Makefile, volley.pc.in, the man page)
# names its licence on its first line, or its second after a shebang. Only
# prose, the licence itself, editor/git settings and fuzz corpus inputs
# (data, byte for byte) are exempt.
if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$ROOT" ls-files >"$T/tracked"
else
    (cd "$ROOT" && find . -path ./.git -prune -o -path './build*' -prune -o -type f -print |
        sed 's|^\./||') >"$T/tracked"
fi
: >"$T/log"
while read -r f; do
    case "$f" in
        *.md | LICENSE | .gitignore | .clang-format | tests/fuzz/corpus/*) continue ;;
    esac
    [ -f "$ROOT/$f" ] || continue
    first=$(head -n 1 "$ROOT/$f")
    case "$first" in '#!'*) first=$(sed -n 2p "$ROOT/$f") ;; esac
    case "$first" in
        *'SPDX-License-Identifier: BSD-3-Clause'*) ;;
        *) echo "$f" >>"$T/log" ;;
    esac
done <"$T/tracked"
if [ -s "$T/tracked" ] && [ ! -s "$T/log" ]; then
    ok "every tracked source file starts with its SPDX-License-Identifier line"
else
    not_ok "every tracked source file starts with its SPDX-License-Identifier line"
fi
[ "$fails" -eq 0 ]
