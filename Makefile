# volley - plain Makefile. `make` builds the libraries and tools, `make test`
# installs what is missing, starts throwaway servers and runs every test
# (the fuzz targets' smoke included), `make asan` does the same under
# AddressSanitizer and UBSan, `make valgrind` runs the C tests under
# memcheck, `make fuzz` runs each libFuzzer target for FUZZ_SECONDS, and
# `make bench` runs the sync-vs-async comparison.
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

VERSION := 0.1.0
SOVERSION := 0
BUILD ?= build

CC ?= cc
OPT ?= -O2 -g
WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Werror
DEPCFLAGS := $(shell pkg-config --cflags hiredis libmariadb 2>/dev/null)
CFLAGS ?=
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) -Iinclude $(DEPCFLAGS) $(CFLAGS) $(SAN)
LIB_CFLAGS := $(ALL_CFLAGS) -fPIC -fvisibility=hidden -DVL_BUILDING
DEPLIBS := -lhiredis -lmariadb -lev -lpthread
LDFLAGS ?=

LIB_SRC := $(wildcard lib/*.c)
LIB_OBJ := $(patsubst lib/%.c,$(BUILD)/lib/%.o,$(LIB_SRC))
SHARED := $(BUILD)/libvolley.so.$(VERSION)
SONAME := libvolley.so.$(SOVERSION)
STATIC := $(BUILD)/libvolley.a

TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
TEST_SH := $(wildcard tests/test_*.sh)
TEST_COMMON := $(wildcard tests/common/*.c)

TOOL_SRC := $(wildcard tools/*.c)
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

.PHONY: all lib test asan valgrind fuzz fuzz-build fuzz-bins bench install uninstall clean deps \
    format tests-build tools-build bench-build

all: lib $(BUILD)/volley.pc tools-build bench-build

lib: $(SHARED) $(STATIC)

$(BUILD)/lib/%.o: lib/%.c $(wildcard lib/*.h) $(wildcard include/*.h include/volley/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(LIB_CFLAGS) -c $< -o $@

$(SHARED): $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,$(SONAME) -o $@ $(LIB_OBJ) $(LDFLAGS) $(DEPLIBS) $(SAN)
	ln -sf libvolley.so.$(VERSION) $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $(BUILD)/libvolley.so

$(STATIC): $(LIB_OBJ)
	rm -f $@
	ar rcs $@ $(LIB_OBJ)

$(BUILD)/volley.pc: volley.pc.in Makefile
	@mkdir -p $(BUILD)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' $< > $@

# Tests link the static library so they can reach the internal helpers.
$(BUILD)/tests/%: tests/%.c $(TEST_COMMON) $(wildcard tests/common/*.h) $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Ilib -Itests/common -o $@ $< $(TEST_COMMON) $(STATIC) \
	    $(LDFLAGS) -lcmocka $(DEPLIBS)

tests-build: $(TEST_BIN)

# Tools and bench use the public API only; the link against the static
# library keeps them runnable from the build tree.
TOOL_BIN := $(if $(TOOL_SRC),$(BUILD)/tools/volley)
tools-build: $(TOOL_BIN)
$(BUILD)/tools/volley: $(TOOL_SRC) tools/cli.h $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $(TOOL_SRC) $(STATIC) $(LDFLAGS) -ljansson $(DEPLIBS)

BENCH_BIN := $(if $(BENCH_SRC),$(BUILD)/bench/volley-bench)
bench-build: $(BENCH_BIN)
$(BUILD)/bench/volley-bench: $(BENCH_SRC) $(wildcard bench/*.h) $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $(BENCH_SRC) $(STATIC) $(LDFLAGS) $(DEPLIBS) -lm

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
	    VOLLEY_BIN=$(CURDIR)/$(BUILD)/tools/volley tests/run.sh $(TEST_BIN) $(TEST_SH)

# The whole suite under ASan and UBSan: every C test, every shell test
# (the CLI's with the sanitized binary) and the fuzz smoke, whose targets
# carry both sanitizers anyway. The header test compiles small programs
# with plain flags, so it links the unsanitized library.
asan: deps
	$(MAKE) BUILD=$(ASAN_BUILD) OPT="$(ASAN_OPT)" SAN="$(ASAN_SAN)" all tests-build
	$(MAKE) lib fuzz-build
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	    LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
	    VOLLEY_BIN=$(CURDIR)/$(ASAN_BUILD)/tools/volley VL_FUZZ_BUILD=$(FUZZ_BUILD) \
	    VOLLEY_BUILD=$(CURDIR)/$(BUILD) \
	    tests/run.sh $(patsubst $(BUILD)/%,$(ASAN_BUILD)/%,$(TEST_BIN)) $(TEST_SH)

# The C tests under memcheck, against the harness's servers; an error in any
# test's process fails that test. The tests' timeouts are stretched for
# valgrind's slowdown.
valgrind: deps
	$(MAKE) all tests-build
	VL_TEST_WRAPPER="$(VALGRIND)" VL_TEST_CASE_TIMEOUT=600 VL_TEST_TIMEOUT=3600 \
	    tests/run.sh $(TEST_BIN)

# Each fuzz target for FUZZ_SECONDS on its seeds; new inputs go to a
# temporary directory, never into the tree.
fuzz: deps
	$(MAKE) fuzz-build
	VL_FUZZ_BUILD=$(FUZZ_BUILD) VL_FUZZ_SECONDS=$(FUZZ_SECONDS) tests/test_fuzz.sh

bench: deps
	$(MAKE) all
	@if [ -x bench/run.sh ]; then bench/run.sh; \
	 else echo "volley-bench is not built yet: the benchmark lands with bench/."; fi

install: lib $(BUILD)/volley.pc
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)/volley
	install -m 644 $(STATIC) $(DESTDIR)$(LIBDIR)/
	install -m 755 $(SHARED) $(DESTDIR)$(LIBDIR)/
	ln -sf libvolley.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libvolley.so
	install -m 644 include/volley.h $(DESTDIR)$(INCLUDEDIR)/
	install -m 644 include/volley/*.h $(DESTDIR)$(INCLUDEDIR)/volley/
	install -m 644 $(BUILD)/volley.pc $(DESTDIR)$(LIBDIR)/pkgconfig/
	@if [ -n "$(TOOL_BIN)" ]; then install -d $(DESTDIR)$(BINDIR) && \
	    install -m 755 $(TOOL_BIN) $(DESTDIR)$(BINDIR)/; fi
	@if [ -f tools/volley.1 ]; then install -d $(DESTDIR)$(MANDIR)/man1 && \
	    install -m 644 tools/volley.1 $(DESTDIR)$(MANDIR)/man1/; fi

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libvolley.* $(DESTDIR)$(LIBDIR)/pkgconfig/volley.pc
	rm -rf $(DESTDIR)$(INCLUDEDIR)/volley $(DESTDIR)$(INCLUDEDIR)/volley.h

format:
	clang-format -i lib/*.c lib/*.h include/*.h include/volley/*.h tests/*.c

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
