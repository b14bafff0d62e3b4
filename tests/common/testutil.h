/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/common/testutil.h - shared helpers for the cmocka suites.
 *
 * Every suite installs the counting allocator, so each test can end by
 * asserting that volley freed everything it allocated, and that the loop has
 * no active watchers left.
 */
#ifndef VOLLEY_TESTUTIL_H
#define VOLLEY_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include <volley.h>

/* Installs the counting allocator (fails the Nth allocation when armed). */
void tu_alloc_install(void);
/* Live allocations made through volley's allocator. */
long tu_alloc_live(void);
/* Fail the allocation numbered `n` from now on (1 = the next), 0 disarms. */
void tu_alloc_fail_at(long n);
/* Allocations counted since the last tu_alloc_fail_at / install. */
long tu_alloc_count(void);
/* The largest single allocation asked of volley's allocator since install. */
size_t tu_alloc_largest(void);
/* The process's resident memory now, and its peak since the last reset
 * (VmRSS, VmHWM), in KiB; -1 when /proc does not say. */
long tu_rss_kb(void);
long tu_rss_peak_kb(void);
void tu_rss_peak_reset(void);

/* The end of every test: the loop is empty, freed, and nothing leaked. */
void tu_loop_finish(vl_loop *loop);

/* Environment from tests/servers.sh; a missing variable fails the test
 * under CI=true and skips it otherwise. */
const char *tu_env(const char *name);
/* The i-th comma-separated item of an env list (static buffer). */
const char *tu_env_item(const char *name, int i);
/* Parses the ports listed in env variable `var` (separated by spaces or
 * commas: VL_TEST_CLUSTER_PORTS, VL_TEST_SENTINEL_PORTS,
 * VL_TEST_REDIS_PORTS) into ports[0..max) and returns how many there are.
 * Fails the test when the variable is not a list of 1..max ports, and
 * skips or fails it as tu_env does when it is not set. */
int tu_env_ports(const char *var, int *ports, int max);

/* Runs `cmd` with /bin/sh and returns its exit status. */
int tu_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Counter callback: increments *(int *)ud. */
void tu_count_cb(vl_future *f, void *ud);

/* cmocka setup for every test: installs the counting allocator. */
int tu_setup(void **state);

/* Runs until f completes; asserts it did and returns it (still the caller's). */
vl_future *tu_wait_for(vl_loop *loop, vl_future *f);
/* Runs until f completes and returns its status. */
int tu_await(vl_loop *loop, vl_future *f);
/* tu_await, failing the test unless the status is `want`; returns f. */
vl_future *tu_run_cmd(vl_loop *loop, vl_future *f, int want);
/* `ms` times VL_TEST_TIME_SCALE (default 1). For bounds that only guard
 * against a hang (how long to wait for a reply that must come): `make
 * valgrind`, which runs everything some ten times slower, stretches them.
 * Never for a bound the test asserts a behaviour with. */
uint64_t tu_ms(uint64_t ms);

/* Lets `ms` milliseconds of loop time pass. */
void tu_sleep_ms(vl_loop *loop, uint64_t ms);
/* Runs the loop until it has nothing left, then tu_loop_finish. */
void tu_finish(vl_loop *loop);

/* "redis://127.0.0.1:PORT" of harness instance i (rotating static buffers). */
const char *tu_redis_url(int i);
/* Asserts that a Redis reply is the string `want`. */
void tu_check_str(const vl_redis_reply *r, const char *want);

/* The pid of a harness server by its name ("redis-1", "redis-auth", "mysql",
 * "cluster-1".."cluster-6", "sentinel-1".."sentinel-3", "sentinel-master",
 * "sentinel-replica"), read from its pidfile in VL_TEST_DIR. */
long tu_server_pid(const char *name);
/* kill -9 that server and wait until it is really gone (or a zombie). */
void tu_kill_server(const char *name);

/* Runs the suite `name`, each test in a child process of its own (libuv's
 * runner is the model), so that nothing one test does (a failed assertion
 * that skipped its cleanup, a leak, a crash, a hang) reaches the next: every
 * test starts with the allocation counter at zero and a fresh process.
 * Prints TAP on stdout: one plan, one result per test, and the child's own
 * output as "# " diagnostics (its stdout is unbuffered, so a crash loses
 * nothing it printed). A test fails when cmocka fails it, when its process
 * dies of a signal or exits non-zero (so a sanitizer's or valgrind's report
 * at exit fails it too), or when it runs longer than VL_TEST_CASE_TIMEOUT
 * seconds (default 120); its process group is then killed, and the result
 * line is followed by the reason. VL_TEST_FILTER selects tests by name with
 * shell wildcards, as cmocka_set_test_filter does. Returns the number of
 * failed tests. */
int tu_run(const char *name, const struct CMUnitTest *tests, size_t n);

/* Restarts a harness server by its name ("redis-1", "redis-auth",
 * "redis-tls", "mysql", "mysql-primary", "mysql-replica", "cluster-N",
 * "sentinel-N", "sentinel-master", "sentinel-replica"...) on the same
 * port, data and options, through VL_TEST_SERVERS, whether it is running or
 * was killed (tu_kill_server); fails the test unless it is serving again
 * (it answers PING: a cluster node may not have rejoined yet, see
 * tu_cluster_wait_ok). A restarted mysql-primary is found again by
 * mysql-replica on its own within a second or two (MASTER_CONNECT_RETRY=1),
 * a restarted mysql-replica resumes replicating where it stopped. A
 * restarted cluster node rejoins as the node it was (its nodes.conf); a
 * restarted sentinel-master or sentinel-replica comes back in the role the
 * sentinels give it now (a replica of the present master, or the master). */
void tu_restart_server(const char *name);

/* Waits until the Redis Cluster of VL_TEST_CLUSTER_PORTS is healthy: every
 * node answers, says cluster_state:ok and sees the same map, with no node
 * marked failed, 3 primaries serving all 16384 slots and one replica each
 * (redis-cli --cluster check agrees). Which nodes are primaries may have
 * changed (a killed primary's replica took over; restarted, the old
 * primary is its replica). Fails the test after 30 s (times
 * VL_TEST_TIME_SCALE). A test that kills, restarts, fails over or
 * reshards nodes calls it at its end (after restarting what it killed),
 * so that the next test finds a healthy cluster. */
void tu_cluster_wait_ok(void);

/* Waits likewise until the sentinel set is healthy: all 3 sentinels
 * (VL_TEST_SENTINEL_PORTS) name the same master of VL_TEST_SENTINEL_MASTER
 * and see it up, know the other two sentinels and one replica that is up,
 * the master says it is one and the replica is in sync with it. Which of
 * sentinel-master and sentinel-replica is the master may have changed.
 * After a failover the old master, if still running, is made a replica of
 * the new one (what the sentinels would do some 10 s later), so this
 * returns within some 2 s of a failover. Fails the test after 30 s (times
 * VL_TEST_TIME_SCALE). */
void tu_sentinel_wait_ok(void);

/* A TCP socket listening on 127.0.0.1 that never accepts: a connect to it
 * completes (the kernel queues it) and then hears nothing, like a server
 * that hangs before its greeting. Stores the port in *port and returns the
 * socket, which the caller closes (that resets the queued connections). */
int tu_silent_listener(int *port);

/* Waits (at most 5 s) until this process has no thread but the main one:
 * worker threads told to stop when their loop was freed are gone. OpenSSL
 * frees what it keeps per thread as a thread exits; a test process that
 * ended first would have it reported as leaked. */
void tu_workers_gone(void);

#endif
