# volley - plain Makefile. `make` builds the libraries and tools, `make test`
# installs what is missing, starts throwaway servers and runs every test,
# `make asan` does the same under AddressSanitizer and UBSan, `make bench`
# runs the sync-vs-async comparison.

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

.PHONY: all lib test asan bench install uninstall clean deps format tests-build tools-build bench-build

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

deps:
	@tests/deps.sh

test: deps
	$(MAKE) all tests-build
	tests/run.sh $(TEST_BIN) $(TEST_SH)

asan: deps
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer" \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" all tests-build
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	    LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
	    VOLLEY_BIN=$(CURDIR)/build-asan/tools/volley \
	    tests/run.sh $(patsubst $(BUILD)/%,build-asan/%,$(TEST_BIN)) tests/test_cli.sh

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
	rm -rf build build-asan
