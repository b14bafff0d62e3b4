# SPDX-License-Identifier: BSD-3-Clause
# volley - plain Makefile. `make` builds the libraries, the tools and the
# man pages (it never installs packages: it names the missing ones), `make
# install` and `make uninstall` put them under PREFIX (DESTDIR for
# staging), `make test` installs what is missing, starts throwaway servers
# and runs every test (the fuzz targets' smoke included; the Galera tests
# have `make test-galera`, which also starts a Galera cluster), `make asan` does
# the same under AddressSanitizer and UBSan, `make valgrind` runs the C
# tests under memcheck, `make fuzz` runs each libFuzzer target for
# FUZZ_SECONDS, and `make bench` runs the sync-vs-async comparison.
#
# BUILD names the build directory; the sanitizer builds go next to it
# ($(BUILD)-asan, $(BUILD)-fuzz), so that people sharing a tree never build
# into each other's directories.

PREFIX ?= /usr/local
DESTDIR ?=
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
# Run after install and uninstall into the live system (DESTDIR empty) as
# root, so that the dynamic linker's cache knows the new libvolley.so.0;
# a staged install leaves that to the package that ships it.
LDCONFIG ?= ldconfig
PYTHON ?= python3

# The version is defined once, in include/volley/common.h, and read from
# there. The SONAME follows the major version only. While it is 0, volley
# has made no ABI promise between releases (0.x is where the ABI is
# settled): libvolley.so.0 names that pre-release series, and a program is
# rebuilt for each 0.x release (the README lists what changed). From 1.0 on
# the SONAME changes exactly when the ABI breaks, and only with the major.
VERSION_H := include/volley/common.h
version_part = $(shell sed -n 's/^\#define VL_VERSION_$(1) *\([0-9][0-9]*\).*/\1/p' $(VERSION_H))
VERSION_MAJOR := $(call version_part,MAJOR)
VERSION_MINOR := $(call version_part,MINOR)
VERSION_PATCH := $(call version_part,PATCH)
VERSION := $(VERSION_MAJOR).$(VERSION_MINOR).$(VERSION_PATCH)
SOVERSION := $(VERSION_MAJOR)
BUILD ?= build

CC ?= cc
OPT ?= -O2 -g
# WERROR=0 keeps the warnings but lets them through (a newer compiler's new
# warning should not stop a distribution's build).
WERROR ?= 1
WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
    $(if $(filter 0,$(WERROR)),,-Werror)
DEPCFLAGS := $(shell pkg-config --cflags hiredis libmariadb 2>/dev/null)
CFLAGS ?=
CPPFLAGS ?=
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) -Iinclude $(DEPCFLAGS) $(CPPFLAGS) $(CFLAGS) \
    $(SAN)
LIB_CFLAGS := $(ALL_CFLAGS) -fPIC -fvisibility=hidden -DVL_BUILDING
# The library needs Connector/C, OpenSSL and libev; the tests, the fuzz
# targets and the bench also call hiredis (its reader is the fuzz oracle,
# its blocking API the bench's sync baseline).
LIB_DEPLIBS := -lmariadb -lssl -lcrypto -lev -lpthread
DEPLIBS := -lhiredis $(LIB_DEPLIBS)
LDFLAGS ?=

LIB_SRC := $(wildcard lib/*.c)
LIB_OBJ := $(patsubst lib/%.c,$(BUILD)/lib/%.o,$(LIB_SRC))
SHARED := $(BUILD)/libvolley.so.$(VERSION)
SONAME := libvolley.so.$(SOVERSION)
STATIC := $(BUILD)/libvolley.a

TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
# The Galera tests need the 3-node cluster that only `make test-galera`
# starts; the other targets build them but do not run them.
TEST_GALERA_BIN := $(filter $(BUILD)/tests/test_mysql_galera%,$(TEST_BIN))
TEST_RUN_BIN := $(filter-out $(TEST_GALERA_BIN),$(TEST_BIN))
TEST_SH := $(wildcard tests/test_*.sh)
TEST_COMMON := $(wildcard tests/common/*.c)

TOOL_SRC := $(wildcard tools/*.c)
# tools/examples/NAME.c: the services volley exists for, one program each,
# built by `make` (not installed) and tested by tests/test_examples_*.sh.
# EXAMPLE_LIBS_NAME adds the libraries one of them needs besides volley's.
EXAMPLE_SRC := $(wildcard tools/examples/*.c)
EXAMPLE_BIN := $(patsubst tools/examples/%.c,$(BUILD)/tools/examples/%,$(EXAMPLE_SRC))
EXAMPLE_LIBS_http_api := -lmicrohttpd -ljansson
EXAMPLE_LIBS_http_api_threads := -lmicrohttpd -lhiredis -ljansson
BENCH_SRC := $(wildcard bench/*.c)

ASAN_BUILD ?= $(BUILD)-asan
ASAN_OPT := -O1 -g -fno-omit-frame-pointer
ASAN_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined

# libFuzzer targets: tests/fuzz/fuzz_NAME.c, with its committed seeds in
# tests/fuzz/corpus/NAME/. They are built with clang-14 into FUZZ_BUILD,
# from libvolley's objects compiled with fuzzer-no-link, ASan and UBSan;
# targets named fuzz_cli_* also get the CLI's objects (every tools/*.c but
# the one with main) and jansson.
FUZZ_CC ?= clang-14
FUZZ_BUILD ?= $(BUILD)-fuzz
FUZZ_SECONDS ?= 60
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_H := $(wildcard tests/fuzz/*.h)
FUZZ_BIN := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC))
FUZZ_CLI_BIN := $(filter $(BUILD)/fuzz/fuzz_cli_%,$(FUZZ_BIN))
FUZZ_LIB_BIN := $(filter-out $(FUZZ_CLI_BIN),$(FUZZ_BIN))
CLI_OBJ := $(patsubst tools/%.c,$(BUILD)/tools/%.o,$(filter-out tools/volley.c,$(TOOL_SRC)))

# memcheck for `make valgrind`: any error, or a definite or possible leak,
# makes the test's process exit with 99, which fails the test. The suites'
# own allocator interposers (tests/test_mysql.c replaces calloc to fail
# Connector/C's allocations) keep working: nouserintercepts leaves the
# program's own allocation functions alone and replaces only the C
# library's.
VALGRIND := valgrind --quiet --error-exitcode=99 --num-callers=30 --track-origins=yes \
    --leak-check=full --show-leak-kinds=definite,possible \
    --errors-for-leak-kinds=definite,possible --soname-synonyms=somalloc=nouserintercepts \
    --suppressions=$(CURDIR)/tests/valgrind.supp

.PHONY: all lib man check-deps test test-galera asan valgrind fuzz fuzz-build fuzz-bins bench install uninstall clean deps \
    format tests-build tools-build bench-build examples-build

all: lib tools-build bench-build examples-build man

lib: $(SHARED) $(STATIC)

# What a build needs, as header:Debian package. `make` checks it before it
# compiles anything, so that a machine without the -dev packages hears which
# packages to install instead of "ev.h: No such file or directory". It never
# installs them itself: `make deps` (run by make test and make bench) does.
# The header is looked up with pkg-config's flags, or in Debian's places
# when pkg-config itself is missing.
BUILD_DEPS := ev.h:libev-dev hiredis/async.h:libhiredis-dev mysql.h:libmariadb-dev \
    jansson.h:libjansson-dev openssl/ssl.h:libssl-dev microhttpd.h:libmicrohttpd-dev
check-deps:
	@missing=; \
	command -v pkg-config >/dev/null 2>&1 || missing="$$missing pkg-config"; \
	for dep in $(BUILD_DEPS); do \
	    printf '#include <%s>\n' "$${dep%%:*}" | $(CC) $(DEPCFLAGS) -I/usr/include/mariadb \
	        $(CPPFLAGS) -E -x c - >/dev/null 2>&1 || missing="$$missing $${dep#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "volley: missing Debian packages:$$missing" >&2; \
	    echo "volley: install them with: apt-get install$$missing (or run make deps as root)" >&2; \
	    exit 1; \
	fi

$(BUILD)/lib/%.o: lib/%.c $(wildcard lib/*.h) $(wildcard include/*.h include/volley/*.h) | check-deps
	@mkdir -p $(dir $@)
	$(CC) $(LIB_CFLAGS) -c $< -o $@

$(SHARED): $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,$(SONAME) -o $@ $(LIB_OBJ) $(LDFLAGS) $(LIB_DEPLIBS) $(SAN)
	ln -sf libvolley.so.$(VERSION) $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $(BUILD)/libvolley.so

$(STATIC): $(LIB_OBJ)
	rm -f $@
	ar rcs $@ $(LIB_OBJ)

# Section-3 pages, one per exported function and one per header, made
# from the headers' comments by doc/mkman.py (which also lists them for
# uninstall). The stamp stands for the whole directory.
MAN_HEADERS := include/volley.h $(wildcard include/volley/*.h)
MAN3_DIR := $(BUILD)/man/man3
man: $(BUILD)/man/stamp
$(BUILD)/man/stamp: doc/mkman.py $(MAN_HEADERS) $(VERSION_H)
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
	    echo "volley: missing Debian package: python3 (the man pages need it)" >&2; exit 1; }
	$(PYTHON) doc/mkman.py --version $(VERSION) --out $(MAN3_DIR) $(MAN_HEADERS)
	@touch $@

# Tests link the static library so they can reach the internal helpers.
$(BUILD)/tests/%: tests/%.c $(TEST_COMMON) $(wildcard tests/common/*.h) $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Ilib -Itests/common -o $@ $< $(TEST_COMMON) $(STATIC) \
	    $(LDFLAGS) -lcmocka $(DEPLIBS)

tests-build: $(TEST_BIN)

# Tools and bench link the shared library, which exports only the public
# API (-fvisibility=hidden): a call to anything else fails at link time, as
# curl's src/ is held to libcurl's API. The run path finds the library in
# the build tree first ($ORIGIN/.. from BUILD/tools and BUILD/bench), then
# next to an installed BINDIR ($ORIGIN/../lib, where PREFIX/lib is), and
# otherwise the system's search path.
TOOL_RPATH := -Wl,-rpath,'$$ORIGIN/..:$$ORIGIN/../lib'
TOOL_BIN := $(if $(TOOL_SRC),$(BUILD)/tools/volley)
tools-build: $(TOOL_BIN)
$(BUILD)/tools/volley: $(TOOL_SRC) tools/cli.h $(SHARED) | check-deps
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $(TOOL_SRC) $(SHARED) $(TOOL_RPATH) $(LDFLAGS) -ljansson \
	    $(DEPLIBS)

# The bench's synchronous baseline calls hiredis and Connector/C itself,
# hence DEPLIBS.
examples-build: $(EXAMPLE_BIN)
$(BUILD)/tools/examples/%: tools/examples/%.c $(wildcard tools/examples/*.h) $(STATIC) | check-deps
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itools/examples -o $@ $< $(STATIC) $(LDFLAGS) $(EXAMPLE_LIBS_$*) \
	    $(LIB_DEPLIBS) -lm

BENCH_BIN := $(if $(BENCH_SRC),$(BUILD)/bench/volley-bench)
bench-build: $(BENCH_BIN)
$(BUILD)/bench/volley-bench: $(BENCH_SRC) $(wildcard bench/*.h) $(SHARED) | check-deps
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $(BENCH_SRC) $(SHARED) $(TOOL_RPATH) $(LDFLAGS) $(DEPLIBS) -lm

# The fuzz targets, built in FUZZ_BUILD by a make of its own with clang-14.
fuzz-build:
	$(MAKE) BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) OPT="$(ASAN_OPT)" \
	    SAN="-fsanitize=fuzzer-no-link $(ASAN_SAN)" fuzz-bins

fuzz-bins: $(FUZZ_BIN)

$(BUILD)/tools/%.o: tools/%.c tools/cli.h $(wildcard include/*.h include/volley/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

# Static pattern rules, so that the choice between the two never depends on
# which objects happen to exist.
$(FUZZ_CLI_BIN): $(BUILD)/fuzz/%: tests/fuzz/%.c $(FUZZ_H) $(LIB_OBJ) $(CLI_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -fsanitize=fuzzer -Ilib -Itools -o $@ $< $(LIB_OBJ) $(CLI_OBJ) \
	    $(LDFLAGS) -ljansson $(DEPLIBS)

$(FUZZ_LIB_BIN): $(BUILD)/fuzz/%: tests/fuzz/%.c $(FUZZ_H) $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -fsanitize=fuzzer -Ilib -Itools -o $@ $< $(LIB_OBJ) $(LDFLAGS) $(DEPLIBS)

deps:
	@tests/deps.sh

test: deps
	$(MAKE) all tests-build
	$(MAKE) fuzz-build
	VL_FUZZ_BUILD=$(FUZZ_BUILD) VOLLEY_BUILD=$(CURDIR)/$(BUILD) \
	    VOLLEY_BIN=$(CURDIR)/$(BUILD)/tools/volley tests/run.sh $(TEST_RUN_BIN) $(TEST_SH)

# The tests named tests/test_mysql_galera*, against a 3-node Galera cluster
# on loopback that tests/servers.sh starts for this target only (start
# --galera: the nodes join one at a time, each copying the first's data, so
# it takes some 15 s more than the other servers).
test-galera: deps
	@if [ -z "$(TEST_GALERA_BIN)" ]; then \
	    echo "volley: no tests/test_mysql_galera*.c to run" >&2; exit 1; fi
	$(MAKE) $(TEST_GALERA_BIN)
	VL_TEST_GALERA=1 tests/run.sh $(TEST_GALERA_BIN)

# The whole suite under ASan and UBSan: every C test, every shell test
# (the CLI's with the sanitized binary) and the fuzz smoke, whose targets
# carry both sanitizers anyway. The header test compiles small programs
# with plain flags, so it links the unsanitized library.
asan: deps
	$(MAKE) BUILD=$(ASAN_BUILD) OPT="$(ASAN_OPT)" SAN="$(ASAN_SAN)" all tests-build
	# The shell suites run the plain build's programs (the bench, the
	# examples, the README's examples linked against libvolley.a).
	$(MAKE) all fuzz-build
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	    LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
	    VOLLEY_BIN=$(CURDIR)/$(ASAN_BUILD)/tools/volley VL_FUZZ_BUILD=$(FUZZ_BUILD) \
	    VOLLEY_BUILD=$(CURDIR)/$(BUILD) \
	    tests/run.sh $(patsubst $(BUILD)/%,$(ASAN_BUILD)/%,$(TEST_RUN_BIN)) $(TEST_SH)

# The C tests under memcheck, against the harness's servers; an error in any
# test's process fails that test. The tests' timeouts are stretched for
# valgrind's slowdown.
valgrind: deps
	$(MAKE) all tests-build
	VL_TEST_WRAPPER="$(VALGRIND)" VL_TEST_CASE_TIMEOUT=600 VL_TEST_TIMEOUT=3600 VL_TEST_TIME_SCALE=10 \
	    tests/run.sh $(TEST_RUN_BIN)

# Each fuzz target for FUZZ_SECONDS on its seeds; new inputs go to a
# temporary directory, never into the tree.
fuzz: deps
	$(MAKE) fuzz-build
	VL_FUZZ_BUILD=$(FUZZ_BUILD) VL_FUZZ_SECONDS=$(FUZZ_SECONDS) tests/test_fuzz.sh

bench: deps
	$(MAKE) all
	@if [ -x bench/run.sh ]; then bench/run.sh; \
	 else echo "volley-bench is not built yet: the benchmark lands with bench/."; fi

# volley.pc is written at install time, for the PREFIX and LIBDIR of that
# install, with paths relative to ${prefix} where they lie under it (as
# pkg-config expects, so that a relocated prefix keeps working). A static
# link also needs OpenSSL (lib/tls.c), which volley.pc requires privately
# as libssl and libcrypto, as it does libmariadb. install
# builds what it installs first, so that a clean tree never installs half.
pc_rel = $(patsubst $(PREFIX)/%,$${prefix}/%,$(patsubst $(PREFIX),$${prefix},$(1)))
ldconfig_live = if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" -eq 0 ]; then $(LDCONFIG); fi

install: lib tools-build man
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)/volley \
	    $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man3
	install -m 644 $(STATIC) $(DESTDIR)$(LIBDIR)/
	install -m 755 $(SHARED) $(DESTDIR)$(LIBDIR)/
	ln -sf libvolley.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libvolley.so
	install -m 644 include/volley.h $(DESTDIR)$(INCLUDEDIR)/
	install -m 644 include/volley/*.h $(DESTDIR)$(INCLUDEDIR)/volley/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(call pc_rel,$(LIBDIR))|' \
	    -e 's|@INCLUDEDIR@|$(call pc_rel,$(INCLUDEDIR))|' -e 's|@VERSION@|$(VERSION)|' \
	    volley.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/volley.pc
	chmod 644 $(DESTDIR)$(LIBDIR)/pkgconfig/volley.pc
	install -m 755 $(TOOL_BIN) $(DESTDIR)$(BINDIR)/
	install -m 644 tools/volley.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 644 $(MAN3_DIR)/*.3 $(DESTDIR)$(MANDIR)/man3/
	@$(ldconfig_live)

# Removes every file install put there, and the include/volley directory,
# which is volley's own; the shared directories (lib, bin, share/man/...)
# stay. It needs no build: the man pages are listed from the headers.
uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libvolley.a $(DESTDIR)$(LIBDIR)/libvolley.so \
	    $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libvolley.so.$(VERSION) \
	    $(DESTDIR)$(LIBDIR)/pkgconfig/volley.pc $(DESTDIR)$(BINDIR)/volley \
	    $(DESTDIR)$(MANDIR)/man1/volley.1 $(DESTDIR)$(INCLUDEDIR)/volley.h
	rm -rf $(DESTDIR)$(INCLUDEDIR)/volley
	$(PYTHON) doc/mkman.py --list $(MAN_HEADERS) | sed 's|^|$(DESTDIR)$(MANDIR)/man3/|' | \
	    xargs rm -f
	@$(ldconfig_live)

format:
	clang-format -i lib/*.c lib/*.h include/*.h include/volley/*.h tests/*.c

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
