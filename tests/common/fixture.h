/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/common/fixture.h - fake servers on loopback for misbehaviour that a
 * real redis-server or mariadbd never produces (garbage, truncated replies,
 * replies nobody asked for, stalls mid-reply).
 *
 * A fixture is a script under tests/fixtures/ run with python3. Its contract:
 *   python3 tests/fixtures/NAME SCENARIO [ARGS...]
 * listens on 127.0.0.1 on a port the kernel picks, prints that port and a
 * newline on stdout as its first output, serves connections according to
 * SCENARIO, and exits by itself after at most 120 s (its own watchdog), so a
 * crashed test never leaves one behind.
 */
#ifndef VOLLEY_FIXTURE_H
#define VOLLEY_FIXTURE_H

typedef struct tu_fixture {
    long pid;
    int port;
    char url[64]; /* "127.0.0.1:PORT", for building redis:// or mysql:// URLs */
} tu_fixture;

/* Starts fixture `script` (a file name under tests/fixtures/, found through
 * VL_TEST_FIXTURES or ./tests/fixtures) with `scenario` and waits for its
 * port. Fails the test (cmocka) if it cannot start. */
void tu_fixture_start(tu_fixture *fx, const char *script, const char *scenario);
/* Stops it (SIGKILL) and reaps it; safe to call twice. */
void tu_fixture_stop(tu_fixture *fx);

#endif
