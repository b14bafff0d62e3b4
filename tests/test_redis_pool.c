/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_redis_pool.c - the Redis pool against real redis-server
 * instances: spreading, back-pressure, leases and their release rule, a
 * server killed under load, teardown with work pending, stats, readiness,
 * lifetimes (idle timeout, max lifetime, keepalive) and lease fairness.
 */
#include "testutil.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The integer of an INTEGER reply; LLONG_MIN (which no test expects) when
 * the reply is not one. */
static long long reply_int(const vl_redis_reply *r)
{
    long long v = LLONG_MIN;

    if (vl_redis_reply_integer(r, &v) != VL_OK)
        return LLONG_MIN;
    return v;
}

static vl_pool_stats stats(vl_redis_pool *p)
{
    vl_pool_stats st;

    assert_int_equal((vl_pool_stats_init(&st), vl_redis_pool_stats_get(p, &st)), VL_OK);
    return st;
}

/* Waits until the pool has `n` ready connections. */
static void wait_ready(vl_loop *loop, vl_redis_pool *p, unsigned n)
{
    int i;

    for (i = 0; i < 500 && stats(p).ready < n; i++)
        tu_sleep_ms(loop, 5);
    assert_true(stats(p).ready >= n);
}

static vl_redis_lease *take_lease(vl_loop *loop, vl_redis_pool *p)
{
    vl_future *f = vl_redis_pool_lease(p);
    vl_redis_lease *l;

    assert_int_equal(tu_await(loop, f), VL_OK);
    l = vl_future_take(f);
    assert_non_null(l);
    vl_future_free(f);
    return l;
}

static long long lease_client_id(vl_loop *loop, vl_redis_lease *l)
{
    vl_future *f = tu_run_cmd(loop, vl_redis_lease_command(l, "CLIENT ID"), VL_OK);
    long long id = reply_int(vl_future_redis_reply(f));

    vl_future_free(f);
    return id;
}

typedef struct tally {
    int calls, ok, econn, canceled, other;
} tally;

static void tally_cb(vl_future *f, void *ud)
{
    tally *t = ud;

    t->calls++;
    switch (vl_future_status(f)) {
    case VL_OK: t->ok++; break;
    case VL_ECONN: t->econn++; break;
    case VL_ECANCELED: t->canceled++; break;
    default: t->other++; break;
    }
}

/* ---- spreading and stats ---- */

static void gather_over_pool(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options o;
    vl_redis_pool *p;
    vl_future *fs[1000], *all;
    vl_pool_stats st;
    char key[32];
    int i;

    (void)state;
    vl_redis_pool_options_init(&o);
    o.max_size = 4;
    o.min_idle = 2;
    p = vl_redis_pool_new(loop, tu_redis_url(0), &o);
    assert_non_null(p);
    st = stats(p);
    assert_int_equal(st.open, 2); /* min_idle opened at once */
    wait_ready(loop, p, 2);
    for (i = 0; i < 500; i++) {
        snprintf(key, sizeof(key), "pool:%d", i);
        fs[i] = vl_redis_pool_command(p, "SET %s %d", key, i);
    }
    for (i = 0; i < 500; i++) {
        const char *argv[2] = {"GET", key};
        snprintf(key, sizeof(key), "pool:%d", i);
        fs[500 + i] = vl_redis_pool_command_argv(p, 2, argv, NULL);
    }
    st = stats(p);
    assert_int_equal(st.pending, 1000);
    assert_true(st.open >= 2 && st.open <= 4);
    all = vl_future_all(loop, fs, 1000);
    assert_int_equal(tu_await(loop, all), VL_OK);
    /* A GET may overtake its SET on another connection: check the SETs,
     * then read every value again in order. */
    for (i = 0; i < 500; i++)
        tu_check_str(vl_future_redis_reply(vl_future_child(all, (size_t)i)), "OK");
    vl_future_free(all);
    for (i = 0; i < 500; i++) {
        snprintf(key, sizeof(key), "pool:%d", i);
        fs[i] = vl_redis_pool_command(p, "GET %s", key);
    }
    all = vl_future_all(loop, fs, 500);
    assert_int_equal(tu_await(loop, all), VL_OK);
    for (i = 0; i < 500; i++) {
        snprintf(key, sizeof(key), "%d", i);
        tu_check_str(vl_future_redis_reply(vl_future_child(all, (size_t)i)), key);
    }
    vl_future_free(all);
    st = stats(p);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.waiters, 0);
    assert_int_equal(st.requests, 1500);
    assert_int_equal(st.errors, 0);
    assert_true(st.open > 2); /* it grew under load */
    assert_true(st.open <= 4);
    assert_int_equal(st.busy, 0);
    assert_int_equal(st.idle, st.ready);
    assert_int_equal(st.connects, st.ready);
    /* An idle pool does not keep vl_loop_run running. */
    vl_loop_run(loop);
    assert_int_equal(vl_loop_alive(loop), 0);
    vl_redis_pool_free(p);
    tu_finish(loop);
}

static void server_error_through_pool(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool *p = vl_redis_pool_new(loop, tu_redis_url(1), NULL);
    vl_future *f;

    (void)state;
    f = tu_run_cmd(loop, vl_redis_pool_command(p, "NOSUCHCOMMAND x"), VL_ESERVER);
    assert_non_null(strstr(vl_future_error(f), "unknown command"));
    assert_int_equal(vl_redis_reply_type(vl_future_redis_reply(f)), VL_REDIS_ERROR);
    vl_future_free(f);
    assert_int_equal(stats(p).errors, 0); /* data, not a failure of the pool */
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_command(p, "SUBSCRIBE x"), VL_EUNSUPPORTED));
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_command(p, ""), VL_EINVAL));
    vl_redis_pool_free(p);
    tu_finish(loop);
}

/* A command refused before it reaches the server (SUBSCRIBE, an empty
 * command) is counted out of `pending` like any other, so with max_pending 1
 * the next command still finds room; the same through a lease. */
static void refused_commands_leave_no_pending(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options o;
    vl_redis_pool *p;
    vl_redis_lease *l;
    vl_pool_stats st;

    (void)state;
    vl_redis_pool_options_init(&o);
    o.max_size = 1;
    o.max_pending = 1;
    p = vl_redis_pool_new(loop, tu_redis_url(0), &o);
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_ready(p), VL_OK));
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_command(p, "SUBSCRIBE ch"), VL_EUNSUPPORTED));
    st = stats(p);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.errors, 1);
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_command(p, "PING"), VL_OK));
    l = take_lease(loop, p);
    vl_future_free(tu_run_cmd(loop, vl_redis_lease_command(l, "SUBSCRIBE ch"), VL_EUNSUPPORTED));
    vl_future_free(tu_run_cmd(loop, vl_redis_lease_command(l, ""), VL_EINVAL));
    st = stats(p);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.errors, 3);
    vl_future_free(tu_run_cmd(loop, vl_redis_lease_command(l, "PING"), VL_OK));
    assert_int_equal(vl_redis_lease_release(l), 1);
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_command(p, "PING"), VL_OK));
    assert_int_equal(stats(p).pending, 0);
    vl_redis_pool_free(p);
    tu_finish(loop);
}

/* A pool command runs on a connection other callers share: MULTI, WATCH,
 * SELECT and the like would change it for all of them, so they are refused
 * and need a lease. A plain connection still takes them. */
static void state_commands_need_a_lease(void **state)
{
    static const char *refused[] = {
        "MULTI", "exec", "DISCARD", "WATCH k", "UNWATCH", "SELECT 1",
        "RESET", "AUTH pw", "CLIENT TRACKING on", "SWAPDB 5 6",
    };
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options o;
    vl_redis_pool *p;
    vl_redis *c;
    vl_future *f;
    size_t i;

    (void)state;
    vl_redis_pool_options_init(&o);
    o.max_size = 1;
    p = vl_redis_pool_new(loop, tu_redis_url(0), &o);
    for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        char buf[64], *save = NULL, *w;
        const char *argv[4];
        int argc = 0;
        snprintf(buf, sizeof(buf), "%s", refused[i]);
        for (w = strtok_r(buf, " ", &save); w != NULL && argc < 4; w = strtok_r(NULL, " ", &save))
            argv[argc++] = w;
        f = tu_run_cmd(loop, vl_redis_pool_command_argv(p, argc, argv, NULL), VL_EUNSUPPORTED);
        assert_non_null(strstr(vl_future_error(f), "needs a lease"));
        vl_future_free(f);
    }
    f = tu_run_cmd(loop, vl_redis_pool_command(p, "MULTI"), VL_EUNSUPPORTED);
    assert_string_equal(vl_future_error(f), "MULTI needs a lease (vl_redis_pool_lease)");
    vl_future_free(f);
    assert_int_equal(stats(p).pending, 0);
    /* The shared connection is untouched: no transaction swallows this. */
    tu_check_str(vl_future_redis_reply(f = tu_run_cmd(loop, vl_redis_pool_command(p, "PING"),
                                                       VL_OK)),
                 "PONG");
    vl_future_free(f);
    c = vl_redis_new(loop, tu_redis_url(0), NULL);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "MULTI"), VL_OK));
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "DISCARD"), VL_OK));
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "SELECT 1"), VL_OK));
    vl_redis_free(c);
    vl_redis_pool_free(p);
    tu_finish(loop);
}

/* ---- back-pressure ---- */

static void backpressure_fail_fast(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options o;
    vl_redis_pool *p;
    tally t = {0, 0, 0, 0, 0};
    vl_future *f;
    int i, busy = 0;

    (void)state;
    vl_redis_pool_options_init(&o);
    o.max_size = 2;
    o.max_pending = 10;
    o.max_waiters = 0; /* nothing may wait: past max_pending, VL_EBUSY */
    p = vl_redis_pool_new(loop, tu_redis_url(1), &o);
    for (i = 0; i < 10; i++)
        vl_future_then(vl_redis_pool_command(p, "PING"), tally_cb, &t);
    for (i = 0; i < 5; i++) {
        f = vl_redis_pool_command(p, "PING");
        assert_true(vl_future_done(f)); /* at once, no waiting */
        assert_int_equal(vl_future_status(f), VL_EBUSY);
        assert_non_null(strstr(vl_future_error(f), "max_pending 10"));
        busy++;
        vl_future_free(f);
    }
    assert_int_equal(stats(p).rejected, 5);
    assert_int_equal(stats(p).pending, 10);
    while (t.calls < 10)
        tu_sleep_ms(loop, 1);
    assert_int_equal(t.ok, 10);
    /* Room again. */
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_command(p, "PING"), VL_OK));
    assert_int_equal(busy, 5);
    vl_redis_pool_free(p);
    tu_finish(loop);
}

static void backpressure_wait_and_timeout(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options o;
    vl_redis_pool *p;
    vl_redis *pauser = vl_redis_new(loop, tu_redis_url(2), NULL);
    vl_future *a, *b, *c, *d;

    (void)state;
    vl_redis_pool_options_init(&o);
    o.max_size = 1;
    o.max_pending = 1;
    o.acquire_timeout_ms = 100;
    p = vl_redis_pool_new(loop, tu_redis_url(2), &o);
    wait_ready(loop, p, 1);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(pauser, "CLIENT PAUSE 400"), VL_OK));
    a = vl_redis_pool_command(p, "PING");
    b = vl_redis_pool_command(p, "PING");
    c = vl_redis_pool_command(p, "PING");
    assert_false(vl_future_done(b));
    assert_int_equal(stats(p).waiters, 2);
    assert_int_equal(tu_await(loop, b), VL_ETIMEDOUT);
    assert_int_equal(tu_await(loop, c), VL_ETIMEDOUT);
    assert_non_null(strstr(vl_future_error(c), "no room within 100 ms"));
    assert_int_equal(stats(p).waiters, 0);
    assert_int_equal(tu_await(loop, a), VL_OK);
    vl_future_free(a);
    vl_future_free(b);
    vl_future_free(c);
    assert_int_equal(stats(p).timeouts, 2);

    /* A waiting request is admitted, in order, when room comes back. */
    vl_redis_pool_free(p);
    o.acquire_timeout_ms = 5000;
    p = vl_redis_pool_new(loop, tu_redis_url(2), &o);
    wait_ready(loop, p, 1);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(pauser, "CLIENT PAUSE 200"), VL_OK));
    a = vl_redis_pool_command(p, "ECHO first");
    b = vl_redis_pool_command(p, "ECHO second");
    c = vl_redis_pool_command(p, "ECHO third");
    assert_int_equal(stats(p).waiters, 2);
    d = vl_redis_pool_command(p, "ECHO fourth");
    vl_future_cancel(c); /* leaves the queue without a trace */
    assert_int_equal(stats(p).waiters, 2);
    assert_int_equal(tu_await(loop, d), VL_OK);
    tu_check_str(vl_future_redis_reply(a), "first");
    tu_check_str(vl_future_redis_reply(b), "second");
    tu_check_str(vl_future_redis_reply(d), "fourth");
    assert_int_equal(vl_future_status(c), VL_ECANCELED);
    vl_future_free(a);
    vl_future_free(b);
    vl_future_free(c);
    vl_future_free(d);
    vl_redis_pool_free(p);
    vl_redis_free(pauser);
    tu_finish(loop);
}

/* ---- an unbounded queue, bounded by the deadline ---- */

#define GATHER_N 100000

/* One request's outcome, recorded by its continuation: how often it ran
 * (exactly once is the rule), its status, and when. */
typedef struct outcome {
    int calls;
    int status;
    long key;      /* a GET of key `key` must return its value; -1: not checked */
    uint64_t submitted_ms, done_ms;
    vl_loop *loop;
    int *total;
} outcome;

static void gather_value(long k, char *buf, size_t cap)
{
    snprintf(buf, cap, "value:%ld", k * 13);
}

static void outcome_cb(vl_future *f, void *ud)
{
    outcome *o = ud;

    o->calls++;
    (*o->total)++;
    o->status = vl_future_status(f);
    o->done_ms = vl_loop_now_ms(o->loop);
    if (o->status == VL_OK && o->key >= 0) {
        char want[32];
        gather_value(o->key, want, sizeof(want));
        tu_check_str(vl_future_redis_reply(f), want);
    }
}

static outcome *outcomes_new(size_t n, vl_loop *loop, int *total)
{
    outcome *os = calloc(n, sizeof(*os));
    size_t i;

    assert_non_null(os);
    for (i = 0; i < n; i++) {
        os[i].loop = loop;
        os[i].total = total;
        os[i].status = 1; /* no VL_* code */
        os[i].key = -1;
    }
    return os;
}

static vl_future *gather_get(vl_redis_pool *p, long k)
{
    char key[32];
    const char *argv[2] = {"GET", key};

    snprintf(key, sizeof(key), "gather:%ld", k);
    return vl_redis_pool_command_argv(p, 2, argv, NULL);
}

/* Writes gather:K = value:(13 K) for K in [0, n), in batches. */
static void gather_keys(vl_loop *loop, vl_redis_pool *p, long n)
{
    enum { BATCH = 10000 };
    vl_future *fs[BATCH], *all;
    long k0, k;

    for (k0 = 0; k0 < n; k0 += BATCH) {
        for (k = k0; k < k0 + BATCH && k < n; k++) {
            char key[32], val[32];
            const char *argv[3] = {"SET", key, val};
            snprintf(key, sizeof(key), "gather:%ld", k);
            gather_value(k, val, sizeof(val));
            fs[k - k0] = vl_redis_pool_command_argv(p, 3, argv, NULL);
        }
        all = vl_future_all(loop, fs, (size_t)(k - k0));
        assert_int_equal(tu_await(loop, all), VL_OK);
        vl_future_free(all);
    }
}

/* 100,000 GETs gathered on a pool with the default options, then on one
 * whose max_pending makes nearly all of them wait: each gets its own value,
 * none is refused, every future completes exactly once. */
static void default_pool_queues_100000(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options o;
    vl_redis_pool *p = vl_redis_pool_new(loop, tu_redis_url(0), NULL);
    vl_future **fs = calloc(GATHER_N, sizeof(*fs));
    vl_future *all;
    outcome *os;
    vl_pool_stats st;
    int total = 0;
    long i;

    (void)state;
    assert_non_null(p);
    assert_non_null(fs);
    gather_keys(loop, p, GATHER_N);
    for (i = 0; i < GATHER_N; i++)
        fs[i] = gather_get(p, (i * 7919) % GATHER_N);
    all = vl_future_all(loop, fs, GATHER_N);
    assert_int_equal(tu_await(loop, all), VL_OK);
    for (i = 0; i < GATHER_N; i++) {
        char want[32];
        gather_value((i * 7919) % GATHER_N, want, sizeof(want));
        tu_check_str(vl_future_redis_reply(vl_future_child(all, (size_t)i)), want);
    }
    vl_future_free(all);
    st = stats(p);
    assert_int_equal(st.rejected, 0);
    assert_int_equal(st.errors, 0);
    vl_redis_pool_free(p);

    /* The default waiting room with a cap on what is in flight: the
     * requests past it wait (99,984 of them), none is refused. */
    vl_redis_pool_options_init(&o);
    o.max_pending = 16;
    /* The default deadline, stretched like every test time: under valgrind
     * the last of 100,000 waiters would otherwise wait past it. */
    o.acquire_timeout_ms = tu_ms(o.acquire_timeout_ms);
    p = vl_redis_pool_new(loop, tu_redis_url(0), &o);
    os = outcomes_new(GATHER_N, loop, &total);
    for (i = 0; i < GATHER_N; i++) {
        os[i].key = GATHER_N - 1 - i;
        assert_int_equal(vl_future_then(gather_get(p, os[i].key), outcome_cb, &os[i]), VL_OK);
    }
    st = stats(p);
    assert_int_equal(st.waiters + st.pending, GATHER_N);
    assert_true(st.waiters >= GATHER_N - 16);
    while (total < GATHER_N)
        tu_sleep_ms(loop, 10);
    for (i = 0; i < GATHER_N; i++) {
        assert_int_equal(os[i].calls, 1);
        assert_int_equal(os[i].status, VL_OK);
    }
    st = stats(p);
    assert_int_equal(st.rejected, 0);
    assert_int_equal(st.errors, 0);
    assert_int_equal(st.waiters, 0);
    {
        const char *argv[2] = {"FLUSHDB", NULL};
        vl_future_free(tu_run_cmd(loop, vl_redis_pool_command_argv(p, 1, argv, NULL), VL_OK));
    }
    free(fs);
    free(os);
    vl_redis_pool_free(p);
    tu_finish(loop);
}

/* An explicit small max_waiters still refuses the excess at once, and a
 * server that stops answering (CLIENT PAUSE) makes thousands of waiters,
 * more than the old bound of 1000, fail with VL_ETIMEDOUT after their own
 * acquire_timeout_ms, never before, exactly once. */
static void waiting_room_and_deadline(void **state)
{
    enum { N = 2000, WAITERS = 100, PENDING = 8, TN = 5000, TIMEOUT_MS = 200 };
    vl_loop *loop = vl_loop_new();
    vl_redis *pauser = vl_redis_new(loop, tu_redis_url(2), NULL);
    vl_redis_pool_options o;
    vl_redis_pool *p;
    outcome *os;
    int total = 0, ok = 0, busy = 0, timedout = 0;
    size_t i;

    (void)state;
    vl_redis_pool_options_init(&o);
    o.max_size = 2;
    o.max_pending = PENDING;
    o.max_waiters = WAITERS;
    p = vl_redis_pool_new(loop, tu_redis_url(2), &o);
    wait_ready(loop, p, 1);
    os = outcomes_new(N, loop, &total);
    for (i = 0; i < N; i++) {
        vl_future *f = vl_redis_pool_command(p, "PING");
        assert_non_null(f);
        if (i >= PENDING + WAITERS) {
            assert_true(vl_future_done(f)); /* at once, no waiting */
            assert_int_equal(vl_future_status(f), VL_EBUSY);
        }
        assert_int_equal(vl_future_then(f, outcome_cb, &os[i]), VL_OK);
    }
    while (total < N)
        tu_sleep_ms(loop, 5);
    for (i = 0; i < N; i++) {
        assert_int_equal(os[i].calls, 1);
        ok += os[i].status == VL_OK;
        busy += os[i].status == VL_EBUSY;
    }
    assert_int_equal(ok, PENDING + WAITERS);
    assert_int_equal(busy, N - PENDING - WAITERS);
    assert_int_equal(stats(p).rejected, (uint64_t)busy);
    vl_redis_pool_free(p);
    free(os);

    /* The deadline: the default waiting room, the server paused. */
    vl_redis_pool_options_init(&o);
    o.max_size = 2;
    o.max_pending = PENDING;
    o.acquire_timeout_ms = TIMEOUT_MS;
    o.command_timeout_ms = 0; /* the paused replies are late, not lost */
    p = vl_redis_pool_new(loop, tu_redis_url(2), &o);
    wait_ready(loop, p, 1);
    total = 0;
    os = outcomes_new(TN, loop, &total);
    /* Long enough to outlast the submission and every deadline, however
     * slow the run (tu_ms). */
    vl_future_free(tu_run_cmd(loop,
                              vl_redis_command(pauser, "CLIENT PAUSE %llu",
                                               (unsigned long long)tu_ms(1000)),
                              VL_OK));
    for (i = 0; i < TN; i++) {
        if (i == TN / 2)
            tu_sleep_ms(loop, 100); /* the second half comes later */
        os[i].submitted_ms = vl_loop_now_ms(loop);
        assert_int_equal(vl_future_then(vl_redis_pool_command(p, "PING"), outcome_cb, &os[i]),
                         VL_OK);
    }
    while (total < TN)
        tu_sleep_ms(loop, 10);
    ok = 0;
    for (i = 0; i < TN; i++) {
        assert_int_equal(os[i].calls, 1);
        if (os[i].status == VL_OK) {
            ok++;
            continue;
        }
        assert_int_equal(os[i].status, VL_ETIMEDOUT);
        timedout++;
        if (os[i].done_ms < os[i].submitted_ms + TIMEOUT_MS)
            fail_msg("request %zu timed out after %llu ms", i,
                     (unsigned long long)(os[i].done_ms - os[i].submitted_ms));
    }
    /* The first PENDING were on the connections, answered once the pause
     * ended; every other one waited and timed out. */
    assert_int_equal(ok, PENDING);
    assert_int_equal(timedout, TN - PENDING);
    assert_int_equal(stats(p).timeouts, (uint64_t)timedout);
    assert_int_equal(stats(p).rejected, 0);
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_command(p, "PING"), VL_OK));
    vl_redis_pool_free(p);
    vl_redis_free(pauser);
    free(os);
    tu_finish(loop);
}

/* ---- leases ---- */

static void lease_multi_exec(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options o;
    vl_redis_pool *p;
    vl_redis_lease *l;
    vl_future *f, *q1, *q2;
    const vl_redis_reply *r;
    long long id1, id2;

    (void)state;
    vl_redis_pool_options_init(&o);
    o.max_size = 1;
    p = vl_redis_pool_new(loop, tu_redis_url(0), &o);
    l = take_lease(loop, p);
    assert_int_equal(stats(p).leased, 1);
    id1 = lease_client_id(loop, l);
    vl_future_free(tu_run_cmd(loop, vl_redis_lease_command(l, "DEL tx:n"), VL_OK));
    vl_future_free(tu_run_cmd(loop, vl_redis_lease_command(l, "WATCH tx:n"), VL_OK));
    vl_future_free(tu_run_cmd(loop, vl_redis_lease_command(l, "MULTI"), VL_OK));
    q1 = vl_redis_lease_command(l, "INCR tx:n");
    q2 = vl_redis_lease_command(l, "INCRBY tx:n 10");
    f = tu_run_cmd(loop, vl_redis_lease_command(l, "EXEC"), VL_OK);
    assert_int_equal(tu_await(loop, q1), VL_OK);
    tu_check_str(vl_future_redis_reply(q1), "QUEUED");
    r = vl_future_redis_reply(f);
    assert_int_equal(vl_redis_reply_count(r), 2);
    assert_int_equal(reply_int(vl_redis_reply_element(r, 0)), 1);
    assert_int_equal(reply_int(vl_redis_reply_element(r, 1)), 11);
    vl_future_free(f);
    vl_future_free(q1);
    vl_future_free(q2);
    /* EXEC ended MULTI and WATCH: clean, back to the pool. */
    assert_int_equal(vl_redis_lease_release(l), 1);
    assert_int_equal(stats(p).leased, 0);
    assert_int_equal(stats(p).closed_dirty, 0);
    /* The same connection serves the next lease (max_size 1). */
    l = take_lease(loop, p);
    id2 = lease_client_id(loop, l);
    assert_true(id1 == id2);
    /* A lease left in its future is released with the future. */
    assert_int_equal(vl_redis_lease_release(l), 1);
    f = vl_redis_pool_lease(p);
    assert_int_equal(tu_await(loop, f), VL_OK);
    assert_int_equal(stats(p).leased, 1);
    vl_future_free(f);
    assert_int_equal(stats(p).leased, 0);
    /* Pool commands still flow. */
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_command(p, "PING"), VL_OK));
    vl_redis_pool_free(p);
    tu_finish(loop);
}

/* Released inside MULTI, with a WATCH, after SELECT, or with a reply still
 * due: the connection is closed, never handed to the next user. */
static void dirty_lease_is_closed(void **state)
{
    static const char *dirty[][2] = {
        {"MULTI", NULL},
        {"WATCH dirty:k", NULL},
        {"SELECT 1", NULL},
        {"CLIENT PAUSE 100", "PING"}, /* PING's reply is still due at release */
    };
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options o;
    vl_redis_pool *p;
    vl_redis_lease *l;
    long long id, next;
    size_t i;

    (void)state;
    vl_redis_pool_options_init(&o);
    o.max_size = 1;
    p = vl_redis_pool_new(loop, tu_redis_url(1), &o);
    for (i = 0; i < sizeof(dirty) / sizeof(dirty[0]); i++) {
        vl_future *late = NULL;
        l = take_lease(loop, p);
        id = lease_client_id(loop, l);
        vl_future_free(tu_run_cmd(loop, vl_redis_lease_command(l, dirty[i][0]), VL_OK));
        if (dirty[i][1] != NULL)
            late = vl_redis_lease_command(l, dirty[i][1]);
        assert_int_equal(vl_redis_lease_release(l), 0);
        if (late != NULL) {
            assert_int_equal(tu_await(loop, late), VL_ECANCELED);
            vl_future_free(late);
            tu_sleep_ms(loop, 120);
        }
        assert_int_equal(stats(p).closed_dirty, i + 1);
        l = take_lease(loop, p);
        next = lease_client_id(loop, l);
        assert_true(next != id);
        assert_int_equal(vl_redis_lease_release(l), 1);
    }
    /* DISCARD and UNWATCH make it clean again. */
    l = take_lease(loop, p);
    id = lease_client_id(loop, l);
    vl_future_free(tu_run_cmd(loop, vl_redis_lease_command(l, "WATCH dirty:k"), VL_OK));
    vl_future_free(tu_run_cmd(loop, vl_redis_lease_command(l, "UNWATCH"), VL_OK));
    vl_future_free(tu_run_cmd(loop, vl_redis_lease_command(l, "MULTI"), VL_OK));
    vl_future_free(tu_run_cmd(loop, vl_redis_lease_command(l, "DISCARD"), VL_OK));
    assert_int_equal(vl_redis_lease_release(l), 1);
    l = take_lease(loop, p);
    assert_true(lease_client_id(loop, l) == id);
    vl_redis_lease_release(l);
    assert_int_equal(stats(p).closed_dirty, 4);
    vl_redis_pool_free(p);
    tu_finish(loop);
}

/* The lease's connection is killed and reconnects by itself: its WATCH is
 * gone, so the lease's next command fails with VL_ECONN instead of running
 * on the new connection, and the release closes it. */
static void lease_fails_after_reconnect(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options o;
    vl_redis_pool *p;
    vl_redis *other;
    vl_redis_lease *l;
    vl_future *f;
    long long id;
    int i;

    (void)state;
    vl_redis_pool_options_init(&o);
    o.max_size = 1;
    o.reconnect_min_ms = 10;
    o.reconnect_max_ms = 20;
    p = vl_redis_pool_new(loop, tu_redis_url(0), &o);
    other = vl_redis_new(loop, tu_redis_url(0), NULL);
    l = take_lease(loop, p);
    id = lease_client_id(loop, l);
    vl_future_free(tu_run_cmd(loop, vl_redis_lease_command(l, "WATCH lost:k"), VL_OK));
    vl_future_free(tu_run_cmd(loop, vl_redis_command(other, "CLIENT KILL ID %lld", id), VL_OK));
    for (i = 0; i < 400 && (stats(p).reconnects < 1 || stats(p).ready < 1); i++)
        tu_sleep_ms(loop, 5);
    assert_int_equal(stats(p).reconnects, 1);
    assert_int_equal(stats(p).ready, 1);
    f = tu_run_cmd(loop, vl_redis_lease_command(l, "MULTI"), VL_ECONN);
    assert_non_null(strstr(vl_future_error(f), "lease's connection was lost"));
    vl_future_free(f);
    assert_int_equal(vl_redis_lease_release(l), 0);
    assert_int_equal(stats(p).closed_dirty, 1);
    l = take_lease(loop, p);
    assert_true(lease_client_id(loop, l) != id);
    assert_int_equal(vl_redis_lease_release(l), 1);
    vl_redis_free(other);
    vl_redis_pool_free(p);
    tu_finish(loop);
}

/* max_size 1: a lease waits for the connection, which a BLPOP keeps busy,
 * and the connection is killed. While hiredis fails the BLPOP the connection
 * is going down: the lease must not be handed out on it, but on the
 * connection that comes back, where its first command succeeds. */
static void lease_not_given_on_a_dying_connection(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options o;
    vl_redis_pool *p;
    vl_redis *other;
    vl_redis_lease *l;
    vl_future *f, *bl, *lf;
    long long id;

    (void)state;
    vl_redis_pool_options_init(&o);
    o.max_size = 1;
    o.acquire_timeout_ms = 3000;
    o.reconnect_min_ms = 10;
    o.reconnect_max_ms = 20;
    p = vl_redis_pool_new(loop, tu_redis_url(0), &o);
    other = vl_redis_new(loop, tu_redis_url(0), NULL);
    f = tu_run_cmd(loop, vl_redis_pool_command(p, "CLIENT ID"), VL_OK);
    id = reply_int(vl_future_redis_reply(f));
    vl_future_free(f);
    bl = vl_redis_pool_command(p, "BLPOP dying:nolist 0");
    lf = vl_redis_pool_lease(p);
    tu_sleep_ms(loop, 50);
    assert_false(vl_future_done(lf));
    vl_future_free(tu_run_cmd(loop, vl_redis_command(other, "CLIENT KILL ID %lld", id), VL_OK));
    assert_int_equal(tu_await(loop, lf), VL_OK);
    assert_int_equal(tu_await(loop, bl), VL_ECONN);
    l = vl_future_take(lf);
    vl_future_free(lf);
    vl_future_free(bl);
    assert_true(lease_client_id(loop, l) != id);
    vl_future_free(tu_run_cmd(loop, vl_redis_lease_command(l, "PING"), VL_OK));
    assert_int_equal(vl_redis_lease_release(l), 1);
    vl_redis_free(other);
    vl_redis_pool_free(p);
    tu_finish(loop);
}

/* Commands whose effect on the connection cannot be undone make a lease
 * dirty whatever their reply: after RESET the next user would land in db 0
 * instead of the URL's db 3. */
static void lease_reset_auth_tracking_are_dirty(void **state)
{
    static const struct {
        const char *cmd;
        int status;
    } dirty[] = {
        {"RESET", VL_OK},
        {"AUTH nosuchpassword", VL_ESERVER},
        {"CLIENT TRACKING on", VL_OK},
        {"SWAPDB 5 6", VL_OK},
    };
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options o;
    vl_redis_pool *p;
    vl_redis_lease *l;
    vl_future *f;
    char url[160];
    long long id;
    size_t i;

    (void)state;
    snprintf(url, sizeof(url), "%s/3", tu_redis_url(1));
    vl_redis_pool_options_init(&o);
    o.max_size = 1;
    p = vl_redis_pool_new(loop, url, &o);
    for (i = 0; i < sizeof(dirty) / sizeof(dirty[0]); i++) {
        l = take_lease(loop, p);
        id = lease_client_id(loop, l);
        vl_future_free(tu_run_cmd(loop, vl_redis_lease_command(l, dirty[i].cmd), dirty[i].status));
        assert_int_equal(vl_redis_lease_release(l), 0);
        assert_int_equal(stats(p).closed_dirty, i + 1);
        f = tu_run_cmd(loop, vl_redis_pool_command(p, "CLIENT INFO"), VL_OK);
        assert_non_null(strstr(vl_redis_reply_str(vl_future_redis_reply(f), NULL), " db=3 "));
        vl_future_free(f);
        l = take_lease(loop, p);
        assert_true(lease_client_id(loop, l) != id);
        assert_int_equal(vl_redis_lease_release(l), 1);
    }
    vl_redis_pool_free(p);
    tu_finish(loop);
}

/* Every connection leased: the next lease waits, then times out; a release
 * hands the connection to a waiting lease. Pool commands meanwhile fail fast
 * with VL_EBUSY: no connection is left to route them to. */
static void lease_wait_and_timeout(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options o;
    vl_redis_pool *p;
    vl_redis_lease *l, *l2;
    vl_future *f;

    (void)state;
    vl_redis_pool_options_init(&o);
    o.max_size = 1;
    o.acquire_timeout_ms = 80;
    p = vl_redis_pool_new(loop, tu_redis_url(0), &o);
    l = take_lease(loop, p);
    f = tu_run_cmd(loop, vl_redis_pool_command(p, "PING"), VL_EBUSY);
    assert_non_null(strstr(vl_future_error(f), "leased"));
    vl_future_free(f);
    f = vl_redis_pool_lease(p);
    assert_int_equal(tu_await(loop, f), VL_ETIMEDOUT);
    assert_non_null(strstr(vl_future_error(f), "lease"));
    vl_future_free(f);
    f = vl_redis_pool_lease(p);
    tu_sleep_ms(loop, 10);
    assert_false(vl_future_done(f));
    assert_int_equal(vl_redis_lease_release(l), 1);
    assert_int_equal(tu_await(loop, f), VL_OK);
    l2 = vl_future_take(f);
    vl_future_free(f);
    vl_future_free(tu_run_cmd(loop, vl_redis_lease_command(l2, "PING"), VL_OK));
    vl_redis_lease_release(l2);
    vl_redis_pool_free(p);
    tu_finish(loop);
}


/* ---- readiness ---- */

/* A barrier for warm-up: done once min_idle connections are up. */
static void pool_ready_barrier(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options o;
    vl_redis_pool *p;
    vl_future *f;
    int n = 0;

    (void)state;
    vl_redis_pool_options_init(&o);
    o.max_size = 4;
    o.min_idle = 3;
    p = vl_redis_pool_new(loop, tu_redis_url(0), &o);
    f = vl_redis_pool_ready(p);
    assert_non_null(f);
    assert_false(vl_future_done(f)); /* connecting takes a loop turn at least */
    assert_int_equal(tu_await(loop, f), VL_OK);
    assert_int_equal(stats(p).ready, 3);
    assert_int_equal(stats(p).waiters, 0);
    vl_future_free(f);
    /* Up already: completed on return, and the callback still runs from
     * the loop (rule 2). */
    f = vl_redis_pool_ready(p);
    assert_true(vl_future_done(f));
    assert_int_equal(vl_future_status(f), VL_OK);
    assert_int_equal(vl_future_then(f, tu_count_cb, &n), VL_OK);
    assert_int_equal(n, 0);
    vl_loop_run(loop);
    assert_int_equal(n, 1);
    vl_redis_pool_free(p);
    /* Freeing the pool cancels a waiting barrier (rule 4). */
    p = vl_redis_pool_new(loop, tu_redis_url(0), &o);
    f = vl_redis_pool_ready(p);
    assert_false(vl_future_done(f));
    vl_redis_pool_free(p);
    assert_int_equal(tu_await(loop, f), VL_ECANCELED);
    vl_future_free(f);
    /* min_idle 0 is ready at once. */
    o.min_idle = 0;
    p = vl_redis_pool_new(loop, tu_redis_url(0), &o);
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_ready(p), VL_OK));
    vl_redis_pool_free(p);
    tu_finish(loop);
}

/* A loopback port bound but not listening: every connect is refused. */
static int refusing_port(int *fd)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);

    *fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(*fd >= 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(*fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(*fd, (struct sockaddr *)&a, &len), 0);
    return ntohs(a.sin_port);
}

static void pool_ready_fails(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options o;
    vl_redis_pool *p;
    vl_future *f;
    char url[64];
    int fd, port = refusing_port(&fd);

    (void)state;
    vl_redis_pool_options_init(&o);
    o.min_idle = 2;
    o.reconnect_min_ms = 50;
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    p = vl_redis_pool_new(loop, url, &o);
    f = vl_redis_pool_ready(p);
    assert_int_equal(tu_await(loop, f), VL_ECONN);
    assert_non_null(strstr(vl_future_error(f), "connect redis://127.0.0.1:"));
    assert_true(stats(p).connect_failures >= 2); /* the first attempt of each */
    vl_future_free(f);
    /* Asked again while still down: fails at once. */
    f = vl_redis_pool_ready(p);
    assert_true(vl_future_done(f));
    assert_int_equal(vl_future_status(f), VL_ECONN);
    vl_future_free(f);
    vl_redis_pool_free(p);
    /* A bad URL fails with its own status. */
    p = vl_redis_pool_new(loop, "redis://127.0.0.1:notaport", NULL);
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_ready(p), VL_EINVAL));
    vl_redis_pool_free(p);
    close(fd);
    tu_finish(loop);
}

/* With acquire_timeout_ms 0, a lease (or a barrier) waiting on a
 * connection still in its handshake keeps vl_loop_run_until going: nothing
 * else is left to hold the loop. The paused server holds the SELECT. */
static void waiting_holds_the_loop(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options o;
    vl_redis_pool *p;
    vl_redis_lease *l;
    vl_future *f;
    char url[160];
    int round;

    (void)state;
    snprintf(url, sizeof(url), "%s/1", tu_redis_url(1));
    vl_redis_pool_options_init(&o);
    o.max_size = 1;
    o.acquire_timeout_ms = 0;
    for (round = 0; round < 2; round++) {
        vl_redis *pauser = vl_redis_new(loop, tu_redis_url(1), NULL);
        vl_future_free(tu_run_cmd(loop, vl_redis_command(pauser, "CLIENT PAUSE 200"), VL_OK));
        vl_redis_free(pauser); /* it must not be what keeps the loop running */
        p = vl_redis_pool_new(loop, url, &o);
        assert_int_equal(stats(p).ready, 0);
        f = round == 0 ? vl_redis_pool_ready(p) : vl_redis_pool_lease(p);
        assert_int_equal(tu_await(loop, f), VL_OK);
        assert_int_equal(stats(p).ready, 1);
        if (round == 1) {
            l = vl_future_take(f);
            assert_non_null(l);
            vl_future_free(tu_run_cmd(loop, vl_redis_lease_command(l, "PING"), VL_OK));
            assert_int_equal(vl_redis_lease_release(l), 1);
        }
        vl_future_free(f);
        /* Nobody waits any more: the idle pool lets the loop go. */
        vl_loop_run(loop);
        assert_int_equal(vl_loop_alive(loop), 0);
        vl_redis_pool_free(p);
    }
    tu_finish(loop);
}

/* ---- lifetimes ---- */

static void idle_timeout_shrinks_to_min_idle(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options o;
    vl_redis_pool *p;
    vl_future *fs[1000], *all;
    vl_pool_stats st;
    unsigned grown;
    int i;

    (void)state;
    vl_redis_pool_options_init(&o);
    o.max_size = 4;
    o.min_idle = 1;
    o.idle_timeout_ms = 100;
    o.keepalive_ms = 30; /* its PINGs must not reset the idle clock */
    p = vl_redis_pool_new(loop, tu_redis_url(1), &o);
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_ready(p), VL_OK));
    for (i = 0; i < 1000; i++)
        fs[i] = vl_redis_pool_command(p, "PING");
    all = vl_future_all(loop, fs, 1000);
    assert_int_equal(tu_await(loop, all), VL_OK);
    vl_future_free(all);
    grown = stats(p).open;
    assert_true(grown > 1);
    tu_sleep_ms(loop, 400);
    st = stats(p);
    assert_int_equal(st.open, 1); /* never below min_idle */
    assert_int_equal(st.closed_idle, grown - 1);
    assert_true(st.keepalives >= 1);
    assert_int_equal(st.closed_broken, 0);
    assert_int_equal(st.requests, 1000); /* PINGs of its own are not commands */
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_command(p, "PING"), VL_OK));
    /* The housekeeping timer does not keep vl_loop_run running. */
    vl_loop_run(loop);
    assert_int_equal(vl_loop_alive(loop), 0);
    vl_redis_pool_free(p);
    tu_finish(loop);
}

/* Keeps `want` commands in flight, issued from their own callbacks while
 * `running`. With `big`, each is a GET of a 64 KB value: the replies come
 * in over several reads, so a connection that has some due always gets new
 * commands before the last one is in, and never empties by itself. */
typedef struct stream {
    vl_redis_pool *p;
    int running, inflight, ok, busy, bad, want, big;
} stream;


static void stream_issue(stream *s);

static void stream_cb(vl_future *f, void *ud)
{
    stream *s = ud;

    s->inflight--;
    if (vl_future_status(f) == VL_OK)
        s->ok++;
    else if (vl_future_status(f) == VL_EBUSY)
        s->busy++;
    else
        s->bad++;
    while (s->running && s->inflight < s->want)
        stream_issue(s);
}

static void stream_issue(stream *s)
{
    vl_future *f = s->big ? vl_redis_pool_command(s->p, "GET stream:big")
                           : vl_redis_pool_command(s->p, "INCR stream:n");

    assert_non_null(f);
    s->inflight++;
    assert_int_equal(vl_future_then(f, stream_cb, s), VL_OK);
}

static void stream_start(stream *s, vl_redis_pool *p, int want, int big)
{
    memset(s, 0, sizeof(*s));
    s->p = p;
    s->want = want;
    s->big = big;
    s->running = 1;
    while (s->inflight < want)
        stream_issue(s);
}

static void stream_stop(vl_loop *loop, stream *s)
{
    s->running = 0;
    while (s->inflight > 0)
        tu_sleep_ms(loop, 5);
}

/* Connections past max_lifetime_ms retire under load without failing a
 * command, are replaced, and a leased one is closed on release. */
static void max_lifetime_retires_gracefully(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options o;
    vl_redis_pool *p;
    vl_redis_lease *l;
    vl_pool_stats st;
    stream s;
    uint64_t closes;

    (void)state;
    vl_redis_pool_options_init(&o);
    o.max_size = 2;
    o.min_idle = 2;
    o.max_lifetime_ms = 150;
    p = vl_redis_pool_new(loop, tu_redis_url(2), &o);
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_ready(p), VL_OK));
    stream_start(&s, p, 20, 0);
    tu_sleep_ms(loop, 500);
    stream_stop(loop, &s);
    assert_true(s.ok > 0);
    assert_int_equal(s.bad + s.busy, 0); /* retired gracefully: nothing failed */
    st = stats(p);
    assert_int_equal(st.errors, 0);
    assert_true(st.closed_lifetime >= 2);
    assert_true(st.connects >= 4);
    assert_int_equal(st.closed_broken, 0);
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_ready(p), VL_OK)); /* replaced */
    /* A lease outliving max_lifetime_ms is closed when released, clean. */
    l = take_lease(loop, p);
    closes = stats(p).closed_lifetime;
    tu_sleep_ms(loop, 250);
    vl_future_free(tu_run_cmd(loop, vl_redis_lease_command(l, "PING"), VL_OK));
    assert_int_equal(vl_redis_lease_release(l), 1);
    st = stats(p);
    assert_true(st.closed_lifetime >= closes + 1);
    assert_int_equal(st.closed_dirty, 0);
    assert_int_equal(st.leased, 0);
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_ready(p), VL_OK));
    vl_redis_pool_free(p);
    tu_finish(loop);
}

/* Idle connections are pinged; a server that stops answering gets its
 * connection dropped and reopened. */
static void keepalive_notices_a_silent_server(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options o;
    vl_redis_pool *p;
    vl_redis *pauser;
    vl_pool_stats st;

    (void)state;
    vl_redis_pool_options_init(&o);
    o.max_size = 1;
    o.min_idle = 1;
    o.keepalive_ms = 50;
    o.reconnect_min_ms = 20;
    o.reconnect_max_ms = 50;
    p = vl_redis_pool_new(loop, tu_redis_url(0), &o);
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_ready(p), VL_OK));
    tu_sleep_ms(loop, 250);
    st = stats(p);
    assert_true(st.keepalives >= 2);
    assert_int_equal(st.closed_broken, 0);
    assert_int_equal(st.connects, 1);
    assert_int_equal(st.requests, 0);
    pauser = vl_redis_new(loop, tu_redis_url(0), NULL);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(pauser, "CLIENT PAUSE 300"), VL_OK));
    vl_redis_free(pauser);
    tu_sleep_ms(loop, 500);
    st = stats(p);
    assert_true(st.closed_broken >= 1);
    assert_true(st.reconnects >= 1);
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_command(p, "PING"), VL_OK));
    vl_loop_run(loop);
    assert_int_equal(vl_loop_alive(loop), 0);
    vl_redis_pool_free(p);
    tu_finish(loop);
}

/* ---- fairness ---- */

/* A steady stream keeps both connections busy, so neither ever empties by
 * itself; a lease still gets one within its acquire timeout, while the
 * stream goes on over the other. Lease requests are served in order. */
static void lease_fair_under_load(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options o;
    vl_redis_pool *p;
    vl_redis_lease *l;
    vl_future *f, *b, *c;
    stream s;
    int before;
    static char big[65536];

    (void)state;
    vl_redis_pool_options_init(&o);
    o.max_size = 2;
    o.min_idle = 2;
    o.acquire_timeout_ms = tu_ms(1000); /* a hang guard */
    p = vl_redis_pool_new(loop, tu_redis_url(1), &o);
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_ready(p), VL_OK));
    memset(big, 'x', sizeof(big));
    vl_future_free(
        tu_run_cmd(loop, vl_redis_pool_command(p, "SET stream:big %b", big, sizeof(big)), VL_OK));
    stream_start(&s, p, 50, 1);
    tu_sleep_ms(loop, 100);
    assert_true(s.ok > 0);
    f = vl_redis_pool_lease(p);
    assert_int_equal(tu_await(loop, f), VL_OK);
    l = vl_future_take(f);
    vl_future_free(f);
    assert_non_null(l);
    vl_future_free(tu_run_cmd(loop, vl_redis_lease_command(l, "PING"), VL_OK));
    before = s.ok;
    tu_sleep_ms(loop, 50);
    assert_true(s.ok > before); /* the other connection carries the stream */
    assert_int_equal(s.busy + s.bad, 0);
    /* Two more requests: the first gets the other connection once it has
     * drained (pool commands fail fast with VL_EBUSY from then on: every
     * connection is leased or reserved), the second the first one back. */
    b = vl_redis_pool_lease(p);
    c = vl_redis_pool_lease(p);
    assert_int_equal(tu_await(loop, b), VL_OK);
    assert_false(vl_future_done(c));
    vl_future_free(b); /* releases its lease */
    assert_int_equal(tu_await(loop, c), VL_OK);
    vl_future_free(c);
    assert_int_equal(vl_redis_lease_release(l), 1);
    before = s.ok;
    tu_sleep_ms(loop, 50);
    assert_true(s.ok > before); /* routing resumed on both */
    stream_stop(loop, &s);
    assert_int_equal(s.bad, 0);
    assert_int_equal(stats(p).timeouts, 0);
    vl_redis_pool_free(p);
    tu_finish(loop);
}

/* ---- failures ---- */

/* kill -9 with 1,000 commands in flight: each completes exactly once with
 * VL_ECONN (none retried), and after a restart the pool serves again. */
static void server_killed_under_load(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options o;
    vl_redis_pool *p;
    vl_redis *pauser;
    tally t = {0, 0, 0, 0, 0};
    vl_pool_stats st;
    int i, ok = 0;

    (void)state;
    vl_redis_pool_options_init(&o);
    o.max_size = 4;
    o.min_idle = 4;
    o.reconnect_min_ms = 20;
    o.reconnect_max_ms = 200;
    p = vl_redis_pool_new(loop, tu_redis_url(2), &o);
    pauser = vl_redis_new(loop, tu_redis_url(2), NULL);
    wait_ready(loop, p, 4);
    /* Paused, the server holds every command unanswered: all are in flight. */
    vl_future_free(tu_run_cmd(loop, vl_redis_command(pauser, "CLIENT PAUSE 10000"), VL_OK));
    for (i = 0; i < 1000; i++)
        assert_int_equal(vl_future_then(vl_redis_pool_command(p, "INCR killed:n"), tally_cb, &t),
                         VL_OK);
    tu_sleep_ms(loop, 100); /* written */
    assert_int_equal(t.calls, 0);
    assert_int_equal(stats(p).pending, 1000);
    tu_kill_server("redis-3");
    while (t.calls < 1000)
        tu_sleep_ms(loop, 5);
    tu_sleep_ms(loop, 50);
    assert_int_equal(t.calls, 1000); /* exactly once each */
    assert_int_equal(t.econn, 1000);
    st = stats(p);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.ready, 0);
    assert_int_equal(st.errors, 1000);
    /* While it is down: fail fast, naming the endpoint. */
    {
        vl_future *f = vl_redis_pool_command(p, "PING");
        assert_int_equal(tu_await(loop, f), VL_ECONN);
        assert_non_null(strstr(vl_future_error(f), "redis://127.0.0.1:"));
        vl_future_free(f);
    }
    assert_int_equal(tu_sh("%s restart-redis %s 3 >/dev/null 2>&1", tu_env("VL_TEST_SERVERS"),
                           tu_env("VL_TEST_DIR")),
                     0);
    for (i = 0; i < 300 && !ok; i++) {
        vl_future *f = vl_redis_pool_command(p, "PING");
        ok = tu_await(loop, f) == VL_OK;
        vl_future_free(f);
        if (!ok)
            tu_sleep_ms(loop, 20);
    }
    assert_true(ok);
    st = stats(p);
    assert_true(st.reconnects >= 1);
    assert_true(st.connect_failures >= 1);
    vl_redis_free(pauser);
    vl_redis_pool_free(p);
    tu_finish(loop);
}

static void pool_free_cancels_everything(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options o;
    vl_redis_pool *p;
    vl_redis_lease *l;
    tally t = {0, 0, 0, 0, 0};
    vl_future *f;
    int i;

    (void)state;
    vl_redis_pool_options_init(&o);
    o.max_size = 2;
    o.max_pending = 20;
    p = vl_redis_pool_new(loop, tu_redis_url(0), &o);
    l = take_lease(loop, p);
    for (i = 0; i < 30; i++) /* 20 on connections, 10 waiting for room */
        vl_future_then(vl_redis_pool_command(p, "PING"), tally_cb, &t);
    vl_future_then(vl_redis_pool_lease(p), tally_cb, &t);
    vl_future_then(vl_redis_lease_command(l, "PING"), tally_cb, &t);
    assert_int_equal(stats(p).waiters, 11);
    vl_redis_pool_free(p);
    vl_loop_run(loop);
    assert_int_equal(t.calls, 32);
    assert_int_equal(t.canceled, 32);
    /* The lease outlives its pool, inert. */
    f = vl_redis_lease_command(l, "PING");
    assert_int_equal(vl_future_status(f), VL_ECLOSED);
    vl_future_free(f);
    assert_int_equal(vl_redis_lease_release(l), 0);
    /* And the loop frees a pool left open, cancelling what it holds. */
    memset(&t, 0, sizeof(t));
    p = vl_redis_pool_new(loop, tu_redis_url(0), NULL);
    for (i = 0; i < 5; i++)
        vl_future_then(vl_redis_pool_command(p, "PING"), tally_cb, &t);
    vl_loop_free(loop);
    assert_int_equal(t.calls, 5);
    assert_int_equal(t.canceled, 5);
    assert_int_equal(tu_alloc_live(), 0);
}

static void pool_bad_url(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool *p = vl_redis_pool_new(loop, "redis://:hunter2@127.0.0.1:0", NULL);
    vl_future *f;

    (void)state;
    assert_non_null(p);
    f = tu_run_cmd(loop, vl_redis_pool_command(p, "PING"), VL_EINVAL);
    assert_non_null(strstr(vl_future_error(f), "URL"));
    assert_null(strstr(vl_future_error(f), "hunter2"));
    vl_future_free(f);
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_lease(p), VL_EINVAL));
    assert_int_equal(stats(p).open, 0);
    vl_redis_pool_free(p);
    tu_finish(loop);
}

/* Fails each allocation in turn across pool creation, a command and a
 * lease: clean statuses, no crash, no leak. */
static void pool_out_of_memory(void **state)
{
    long n;

    (void)state;
    for (n = 1; n < 400; n++) {
        vl_loop *loop;
        vl_redis_pool *p;
        int done;

        tu_alloc_fail_at(n);
        loop = vl_loop_new();
        if (loop == NULL)
            continue;
        p = vl_redis_pool_new(loop, tu_redis_url(0), NULL);
        if (p != NULL) {
            vl_future *f = vl_redis_pool_command(p, "SET oom:p %ld", n);
            vl_future *g = vl_redis_pool_lease(p);
            if (f != NULL) {
                int rc = vl_loop_run_until(loop, f);
                assert_true(rc == VL_OK || rc == VL_ENOMEM || rc == VL_ECONN);
                vl_future_free(f);
            }
            if (g != NULL) {
                int rc = vl_loop_run_until(loop, g);
                assert_true(rc == VL_OK || rc == VL_ENOMEM || rc == VL_ECONN ||
                            rc == VL_ETIMEDOUT);
                vl_future_free(g); /* releases the lease inside */
            }
            vl_redis_pool_free(p);
        }
        done = tu_alloc_count() < n;
        tu_alloc_fail_at(0);
        vl_loop_run(loop);
        assert_int_equal(vl_loop_alive(loop), 0);
        vl_loop_free(loop);
        assert_int_equal(tu_alloc_live(), 0);
        if (done)
            break;
    }
    assert_true(n < 400);
}

/* A program built against an older header: pool options cut after
 * max_waiters, stats cut after `waiters`. Unknown fields take defaults,
 * and only the fields the program knows are written. */
typedef struct old_pool_options {
    size_t struct_size;
    size_t max_size;
    size_t min_idle;
    uint64_t acquire_timeout_ms;
    size_t max_waiters;
} old_pool_options;

typedef struct old_pool_stats {
    size_t struct_size;
    size_t open, ready, busy, idle, leased, pending, waiters;
    uint64_t canary; /* where `requests` lies in the real struct */
} old_pool_stats;

static void options_and_stats_from_an_older_header(void **state)
{
    vl_loop *loop = vl_loop_new();
    old_pool_options o;
    old_pool_stats st;
    vl_pool_stats full;
    vl_redis_pool *p;

    (void)state;
    vl_redis_pool_options_init_sized((vl_redis_pool_options *)(void *)&o, sizeof(o));
    assert_int_equal(o.max_size, 8);
    assert_int_equal(o.min_idle, 1);
    assert_int_equal(o.acquire_timeout_ms, 5000);
    assert_true(o.max_waiters == SIZE_MAX); /* unbounded: the deadline bounds waiting */
    o.max_size = 3;
    o.min_idle = 2;
    p = vl_redis_pool_new(loop, tu_redis_url(0),
                          (const vl_redis_pool_options *)(const void *)&o);
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_ready(p), VL_OK));
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_command(p, "PING"), VL_OK));
    st.canary = 12345;
    vl_pool_stats_init_sized((vl_pool_stats *)(void *)&st, offsetof(old_pool_stats, canary));
    assert_int_equal(vl_redis_pool_stats_get(p, (vl_pool_stats *)(void *)&st), VL_OK);
    assert_int_equal(st.open, 2);
    assert_int_equal(st.ready, 2);
    assert_int_equal(st.canary, 12345); /* past its struct_size: untouched */
    full = stats(p);
    assert_int_equal(full.requests, 1);
    /* An unknown size is refused and nothing is written. */
    full.struct_size = sizeof(full) + 8;
    full.open = 99;
    assert_int_equal(vl_redis_pool_stats_get(p, &full), VL_EINVAL);
    assert_int_equal(full.open, 99);
    vl_redis_pool_free(p);

    o.struct_size = 0; /* never initialised */
    p = vl_redis_pool_new(loop, tu_redis_url(0),
                          (const vl_redis_pool_options *)(const void *)&o);
    {
        vl_future *f = tu_run_cmd(loop, vl_redis_pool_command(p, "PING"), VL_EINVAL);
        assert_non_null(strstr(vl_future_error(f), "struct_size 0"));
        vl_future_free(f);
    }
    vl_redis_pool_free(p);
    tu_finish(loop);
}

/* max_waiters bounds the waiting room of commands and leases alike. */
static void max_waiters_bounds_waiting(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options o;
    vl_redis_pool *p;
    vl_future *l, *w, *busy;
    vl_redis_lease *lease;
    uint64_t waited;

    (void)state;
    vl_redis_pool_options_init(&o);
    o.max_size = 1;
    o.max_waiters = 1;
    p = vl_redis_pool_new(loop, tu_redis_url(0), &o);
    l = tu_run_cmd(loop, vl_redis_pool_lease(p), VL_OK);
    lease = vl_future_take(l);
    vl_future_free(l);
    waited = stats(p).wait_count; /* 0 or 1: the first may have waited for the connect */
    w = vl_redis_pool_lease(p); /* waits: one may */
    assert_false(vl_future_done(w));
    assert_int_equal(stats(p).waiters, 1);
    busy = tu_run_cmd(loop, vl_redis_pool_lease(p), VL_EBUSY);
    assert_non_null(strstr(vl_future_error(busy), "max_waiters 1"));
    vl_future_free(busy);
    assert_int_equal(stats(p).rejected, 1);
    assert_int_equal(vl_redis_lease_release(lease), 1);
    l = tu_run_cmd(loop, w, VL_OK);
    assert_int_equal(stats(p).wait_count, waited + 1); /* not the refused one */
    vl_future_free(l); /* releases the lease left in it */
    vl_redis_pool_free(p);
    tu_finish(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(gather_over_pool, tu_setup),
        cmocka_unit_test_setup(server_error_through_pool, tu_setup),
        cmocka_unit_test_setup(refused_commands_leave_no_pending, tu_setup),
        cmocka_unit_test_setup(state_commands_need_a_lease, tu_setup),
        cmocka_unit_test_setup(backpressure_fail_fast, tu_setup),
        cmocka_unit_test_setup(backpressure_wait_and_timeout, tu_setup),
        cmocka_unit_test_setup(default_pool_queues_100000, tu_setup),
        cmocka_unit_test_setup(waiting_room_and_deadline, tu_setup),
        cmocka_unit_test_setup(lease_multi_exec, tu_setup),
        cmocka_unit_test_setup(dirty_lease_is_closed, tu_setup),
        cmocka_unit_test_setup(lease_wait_and_timeout, tu_setup),
        cmocka_unit_test_setup(lease_fails_after_reconnect, tu_setup),
        cmocka_unit_test_setup(lease_not_given_on_a_dying_connection, tu_setup),
        cmocka_unit_test_setup(lease_reset_auth_tracking_are_dirty, tu_setup),
        cmocka_unit_test_setup(pool_ready_barrier, tu_setup),
        cmocka_unit_test_setup(pool_ready_fails, tu_setup),
        cmocka_unit_test_setup(waiting_holds_the_loop, tu_setup),
        cmocka_unit_test_setup(idle_timeout_shrinks_to_min_idle, tu_setup),
        cmocka_unit_test_setup(max_lifetime_retires_gracefully, tu_setup),
        cmocka_unit_test_setup(keepalive_notices_a_silent_server, tu_setup),
        cmocka_unit_test_setup(lease_fair_under_load, tu_setup),
        cmocka_unit_test_setup(server_killed_under_load, tu_setup),
        cmocka_unit_test_setup(pool_free_cancels_everything, tu_setup),
        cmocka_unit_test_setup(pool_bad_url, tu_setup),
        cmocka_unit_test_setup(pool_out_of_memory, tu_setup),
        cmocka_unit_test_setup(options_and_stats_from_an_older_header, tu_setup),
        cmocka_unit_test_setup(max_waiters_bounds_waiting, tu_setup),
    };

    return tu_run("redis_pool", tests, sizeof(tests) / sizeof(tests[0]));
}
