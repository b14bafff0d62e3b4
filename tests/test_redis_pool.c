/* tests/test_redis_pool.c - the Redis pool against real redis-server
 * instances: spreading, back-pressure, leases and their release rule, a
 * server killed under load, teardown with work pending, stats.
 */
#include "testutil.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int setup(void **state)
{
    (void)state;
    tu_alloc_install();
    return 0;
}

static const char *redis_url(int i)
{
    static char buf[4][128];
    static int slot;
    char *out = buf[slot++ % 4];

    snprintf(out, 128, "redis://127.0.0.1:%s", tu_env_item("VL_TEST_REDIS_PORTS", i));
    return out;
}

static void finish(vl_loop *loop)
{
    vl_loop_run(loop);
    tu_loop_finish(loop);
}

static int await(vl_loop *loop, vl_future *f)
{
    assert_non_null(f);
    return vl_loop_run_until(loop, f);
}

static vl_future *run_cmd(vl_loop *loop, vl_future *f, int want)
{
    int rc = await(loop, f);

    if (rc != want) {
        fprintf(stderr, "status %d (%s), wanted %d\n", rc, vl_future_error(f), want);
        fail();
    }
    return f;
}

static void check_str(const vl_redis_reply *r, const char *want)
{
    size_t len;
    const char *s = vl_redis_reply_str(r, &len);

    assert_non_null(s);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(s, want, len);
}

static void sleep_ms(vl_loop *loop, uint64_t ms)
{
    vl_future *s = vl_loop_sleep(loop, ms);

    assert_int_equal(await(loop, s), VL_OK);
    vl_future_free(s);
}

static vl_redis_stats stats(vl_redis_pool *p)
{
    vl_redis_stats st;

    assert_int_equal(vl_redis_pool_stats(p, &st), VL_OK);
    return st;
}

/* Waits until the pool has `n` ready connections. */
static void wait_ready(vl_loop *loop, vl_redis_pool *p, unsigned n)
{
    int i;

    for (i = 0; i < 500 && stats(p).ready < n; i++)
        sleep_ms(loop, 5);
    assert_true(stats(p).ready >= n);
}

static vl_redis_lease *take_lease(vl_loop *loop, vl_redis_pool *p)
{
    vl_future *f = vl_redis_pool_lease(p);
    vl_redis_lease *l;

    assert_int_equal(await(loop, f), VL_OK);
    l = vl_future_take(f);
    assert_non_null(l);
    vl_future_free(f);
    return l;
}

static long long lease_client_id(vl_loop *loop, vl_redis_lease *l)
{
    vl_future *f = run_cmd(loop, vl_redis_lease_command(l, "CLIENT ID"), VL_OK);
    long long id = vl_redis_reply_integer(vl_future_redis_reply(f));

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
    vl_redis_stats st;
    char key[32];
    int i;

    (void)state;
    vl_redis_pool_options_init(&o);
    o.max_size = 4;
    o.min_idle = 2;
    p = vl_redis_pool_new(loop, redis_url(0), &o);
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
    assert_int_equal(await(loop, all), VL_OK);
    /* A GET may overtake its SET on another connection: check the SETs,
     * then read every value again in order. */
    for (i = 0; i < 500; i++)
        check_str(vl_future_redis_reply(vl_future_child(all, (size_t)i)), "OK");
    vl_future_free(all);
    for (i = 0; i < 500; i++) {
        snprintf(key, sizeof(key), "pool:%d", i);
        fs[i] = vl_redis_pool_command(p, "GET %s", key);
    }
    all = vl_future_all(loop, fs, 500);
    assert_int_equal(await(loop, all), VL_OK);
    for (i = 0; i < 500; i++) {
        snprintf(key, sizeof(key), "%d", i);
        check_str(vl_future_redis_reply(vl_future_child(all, (size_t)i)), key);
    }
    vl_future_free(all);
    st = stats(p);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.commands, 1500);
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
    finish(loop);
}

static void server_error_through_pool(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool *p = vl_redis_pool_new(loop, redis_url(1), NULL);
    vl_future *f;

    (void)state;
    f = run_cmd(loop, vl_redis_pool_command(p, "NOSUCHCOMMAND x"), VL_ESERVER);
    assert_non_null(strstr(vl_future_error(f), "unknown command"));
    assert_int_equal(vl_redis_reply_type(vl_future_redis_reply(f)), VL_REDIS_ERROR);
    vl_future_free(f);
    assert_int_equal(stats(p).errors, 0); /* data, not a failure of the pool */
    vl_future_free(run_cmd(loop, vl_redis_pool_command(p, "SUBSCRIBE x"), VL_EUNSUPPORTED));
    vl_future_free(run_cmd(loop, vl_redis_pool_command(p, ""), VL_EINVAL));
    vl_redis_pool_free(p);
    finish(loop);
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
    p = vl_redis_pool_new(loop, redis_url(1), &o);
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
        sleep_ms(loop, 1);
    assert_int_equal(t.ok, 10);
    /* Room again. */
    vl_future_free(run_cmd(loop, vl_redis_pool_command(p, "PING"), VL_OK));
    assert_int_equal(busy, 5);
    vl_redis_pool_free(p);
    finish(loop);
}

static void backpressure_wait_and_timeout(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options o;
    vl_redis_pool *p;
    vl_redis *pauser = vl_redis_new(loop, redis_url(2), NULL);
    vl_future *a, *b, *c, *d;

    (void)state;
    vl_redis_pool_options_init(&o);
    o.max_size = 1;
    o.max_pending = 1;
    o.on_full = VL_REDIS_POOL_WAIT;
    o.acquire_timeout_ms = 100;
    p = vl_redis_pool_new(loop, redis_url(2), &o);
    wait_ready(loop, p, 1);
    vl_future_free(run_cmd(loop, vl_redis_command(pauser, "CLIENT PAUSE 400"), VL_OK));
    a = vl_redis_pool_command(p, "PING");
    b = vl_redis_pool_command(p, "PING");
    c = vl_redis_pool_command(p, "PING");
    assert_false(vl_future_done(b));
    assert_int_equal(stats(p).queued, 2);
    assert_int_equal(await(loop, b), VL_ETIMEDOUT);
    assert_int_equal(await(loop, c), VL_ETIMEDOUT);
    assert_non_null(strstr(vl_future_error(c), "no room within 100 ms"));
    assert_int_equal(stats(p).queued, 0);
    assert_int_equal(await(loop, a), VL_OK);
    vl_future_free(a);
    vl_future_free(b);
    vl_future_free(c);
    assert_int_equal(stats(p).timeouts, 2);

    /* A waiting request is admitted, in order, when room comes back. */
    vl_redis_pool_free(p);
    o.acquire_timeout_ms = 5000;
    p = vl_redis_pool_new(loop, redis_url(2), &o);
    wait_ready(loop, p, 1);
    vl_future_free(run_cmd(loop, vl_redis_command(pauser, "CLIENT PAUSE 200"), VL_OK));
    a = vl_redis_pool_command(p, "ECHO first");
    b = vl_redis_pool_command(p, "ECHO second");
    c = vl_redis_pool_command(p, "ECHO third");
    assert_int_equal(stats(p).queued, 2);
    d = vl_redis_pool_command(p, "ECHO fourth");
    vl_future_cancel(c); /* leaves the queue without a trace */
    assert_int_equal(stats(p).queued, 2);
    assert_int_equal(await(loop, d), VL_OK);
    check_str(vl_future_redis_reply(a), "first");
    check_str(vl_future_redis_reply(b), "second");
    check_str(vl_future_redis_reply(d), "fourth");
    assert_int_equal(vl_future_status(c), VL_ECANCELED);
    vl_future_free(a);
    vl_future_free(b);
    vl_future_free(c);
    vl_future_free(d);
    vl_redis_pool_free(p);
    vl_redis_free(pauser);
    finish(loop);
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
    p = vl_redis_pool_new(loop, redis_url(0), &o);
    l = take_lease(loop, p);
    assert_int_equal(stats(p).leased, 1);
    id1 = lease_client_id(loop, l);
    vl_future_free(run_cmd(loop, vl_redis_lease_command(l, "DEL tx:n"), VL_OK));
    vl_future_free(run_cmd(loop, vl_redis_lease_command(l, "WATCH tx:n"), VL_OK));
    vl_future_free(run_cmd(loop, vl_redis_lease_command(l, "MULTI"), VL_OK));
    q1 = vl_redis_lease_command(l, "INCR tx:n");
    q2 = vl_redis_lease_command(l, "INCRBY tx:n 10");
    f = run_cmd(loop, vl_redis_lease_command(l, "EXEC"), VL_OK);
    assert_int_equal(await(loop, q1), VL_OK);
    check_str(vl_future_redis_reply(q1), "QUEUED");
    r = vl_future_redis_reply(f);
    assert_int_equal(vl_redis_reply_count(r), 2);
    assert_int_equal(vl_redis_reply_integer(vl_redis_reply_element(r, 0)), 1);
    assert_int_equal(vl_redis_reply_integer(vl_redis_reply_element(r, 1)), 11);
    vl_future_free(f);
    vl_future_free(q1);
    vl_future_free(q2);
    /* EXEC ended MULTI and WATCH: clean, back to the pool. */
    assert_int_equal(vl_redis_lease_release(l), 1);
    assert_int_equal(stats(p).leased, 0);
    assert_int_equal(stats(p).dirty_closes, 0);
    /* The same connection serves the next lease (max_size 1). */
    l = take_lease(loop, p);
    id2 = lease_client_id(loop, l);
    assert_true(id1 == id2);
    /* A lease left in its future is released with the future. */
    assert_int_equal(vl_redis_lease_release(l), 1);
    f = vl_redis_pool_lease(p);
    assert_int_equal(await(loop, f), VL_OK);
    assert_int_equal(stats(p).leased, 1);
    vl_future_free(f);
    assert_int_equal(stats(p).leased, 0);
    /* Pool commands still flow. */
    vl_future_free(run_cmd(loop, vl_redis_pool_command(p, "PING"), VL_OK));
    vl_redis_pool_free(p);
    finish(loop);
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
    p = vl_redis_pool_new(loop, redis_url(1), &o);
    for (i = 0; i < sizeof(dirty) / sizeof(dirty[0]); i++) {
        vl_future *late = NULL;
        l = take_lease(loop, p);
        id = lease_client_id(loop, l);
        vl_future_free(run_cmd(loop, vl_redis_lease_command(l, dirty[i][0]), VL_OK));
        if (dirty[i][1] != NULL)
            late = vl_redis_lease_command(l, dirty[i][1]);
        assert_int_equal(vl_redis_lease_release(l), 0);
        if (late != NULL) {
            assert_int_equal(await(loop, late), VL_ECANCELED);
            vl_future_free(late);
            sleep_ms(loop, 120);
        }
        assert_int_equal(stats(p).dirty_closes, i + 1);
        l = take_lease(loop, p);
        next = lease_client_id(loop, l);
        assert_true(next != id);
        assert_int_equal(vl_redis_lease_release(l), 1);
    }
    /* DISCARD and UNWATCH make it clean again. */
    l = take_lease(loop, p);
    id = lease_client_id(loop, l);
    vl_future_free(run_cmd(loop, vl_redis_lease_command(l, "WATCH dirty:k"), VL_OK));
    vl_future_free(run_cmd(loop, vl_redis_lease_command(l, "UNWATCH"), VL_OK));
    vl_future_free(run_cmd(loop, vl_redis_lease_command(l, "MULTI"), VL_OK));
    vl_future_free(run_cmd(loop, vl_redis_lease_command(l, "DISCARD"), VL_OK));
    assert_int_equal(vl_redis_lease_release(l), 1);
    l = take_lease(loop, p);
    assert_true(lease_client_id(loop, l) == id);
    vl_redis_lease_release(l);
    assert_int_equal(stats(p).dirty_closes, 4);
    vl_redis_pool_free(p);
    finish(loop);
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
    p = vl_redis_pool_new(loop, redis_url(0), &o);
    l = take_lease(loop, p);
    f = run_cmd(loop, vl_redis_pool_command(p, "PING"), VL_EBUSY);
    assert_non_null(strstr(vl_future_error(f), "leased"));
    vl_future_free(f);
    f = vl_redis_pool_lease(p);
    assert_int_equal(await(loop, f), VL_ETIMEDOUT);
    assert_non_null(strstr(vl_future_error(f), "lease"));
    vl_future_free(f);
    f = vl_redis_pool_lease(p);
    sleep_ms(loop, 10);
    assert_false(vl_future_done(f));
    assert_int_equal(vl_redis_lease_release(l), 1);
    assert_int_equal(await(loop, f), VL_OK);
    l2 = vl_future_take(f);
    vl_future_free(f);
    vl_future_free(run_cmd(loop, vl_redis_lease_command(l2, "PING"), VL_OK));
    vl_redis_lease_release(l2);
    vl_redis_pool_free(p);
    finish(loop);
}

/* ---- failures ---- */

static long server_pid(int n)
{
    char path[512];
    FILE *fp;
    long pid = -1;

    snprintf(path, sizeof(path), "%s/redis-%d.pid", tu_env("VL_TEST_DIR"), n);
    fp = fopen(path, "r");
    assert_non_null(fp);
    assert_int_equal(fscanf(fp, "%ld", &pid), 1);
    fclose(fp);
    return pid;
}

static void kill_server(int n)
{
    long pid = server_pid(n);
    char path[64];
    int i;

    assert_int_equal(kill((pid_t)pid, SIGKILL), 0);
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    for (i = 0; i < 500; i++) {
        FILE *fp = fopen(path, "r");
        char buf[512];
        char *st;
        if (fp == NULL)
            return;
        st = fgets(buf, sizeof(buf), fp);
        fclose(fp);
        st = st != NULL ? strrchr(buf, ')') : NULL;
        if (st == NULL || st[2] == 'Z' || st[2] == 'X')
            return;
        usleep(10000);
    }
    fail_msg("redis-%d did not die", n);
}

/* kill -9 with 1,000 commands in flight: each completes exactly once with
 * VL_ECONN (none retried), and after a restart the pool serves again. */
static void server_killed_under_load(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options o;
    vl_redis_pool *p;
    vl_redis *pauser;
    tally t = {0, 0, 0, 0, 0};
    vl_redis_stats st;
    int i, ok = 0;

    (void)state;
    vl_redis_pool_options_init(&o);
    o.max_size = 4;
    o.min_idle = 4;
    o.reconnect_min_ms = 20;
    o.reconnect_max_ms = 200;
    p = vl_redis_pool_new(loop, redis_url(2), &o);
    pauser = vl_redis_new(loop, redis_url(2), NULL);
    wait_ready(loop, p, 4);
    /* Paused, the server holds every command unanswered: all are in flight. */
    vl_future_free(run_cmd(loop, vl_redis_command(pauser, "CLIENT PAUSE 10000"), VL_OK));
    for (i = 0; i < 1000; i++)
        assert_int_equal(vl_future_then(vl_redis_pool_command(p, "INCR killed:n"), tally_cb, &t),
                         VL_OK);
    sleep_ms(loop, 100); /* written */
    assert_int_equal(t.calls, 0);
    assert_int_equal(stats(p).pending, 1000);
    kill_server(3);
    while (t.calls < 1000)
        sleep_ms(loop, 5);
    sleep_ms(loop, 50);
    assert_int_equal(t.calls, 1000); /* exactly once each */
    assert_int_equal(t.econn, 1000);
    st = stats(p);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.ready, 0);
    assert_int_equal(st.errors, 1000);
    /* While it is down: fail fast, naming the endpoint. */
    {
        vl_future *f = vl_redis_pool_command(p, "PING");
        assert_int_equal(await(loop, f), VL_ECONN);
        assert_non_null(strstr(vl_future_error(f), "redis://127.0.0.1:"));
        vl_future_free(f);
    }
    assert_int_equal(tu_sh("%s restart-redis %s 3 >/dev/null 2>&1", tu_env("VL_TEST_SERVERS"),
                           tu_env("VL_TEST_DIR")),
                     0);
    for (i = 0; i < 300 && !ok; i++) {
        vl_future *f = vl_redis_pool_command(p, "PING");
        ok = await(loop, f) == VL_OK;
        vl_future_free(f);
        if (!ok)
            sleep_ms(loop, 20);
    }
    assert_true(ok);
    st = stats(p);
    assert_true(st.reconnects >= 1);
    assert_true(st.connect_errors >= 1);
    vl_redis_free(pauser);
    vl_redis_pool_free(p);
    finish(loop);
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
    o.on_full = VL_REDIS_POOL_WAIT;
    p = vl_redis_pool_new(loop, redis_url(0), &o);
    l = take_lease(loop, p);
    for (i = 0; i < 30; i++) /* 20 on connections, 10 waiting for room */
        vl_future_then(vl_redis_pool_command(p, "PING"), tally_cb, &t);
    vl_future_then(vl_redis_pool_lease(p), tally_cb, &t);
    vl_future_then(vl_redis_lease_command(l, "PING"), tally_cb, &t);
    assert_int_equal(stats(p).queued, 11);
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
    p = vl_redis_pool_new(loop, redis_url(0), NULL);
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
    f = run_cmd(loop, vl_redis_pool_command(p, "PING"), VL_EINVAL);
    assert_non_null(strstr(vl_future_error(f), "URL"));
    assert_null(strstr(vl_future_error(f), "hunter2"));
    vl_future_free(f);
    vl_future_free(run_cmd(loop, vl_redis_pool_lease(p), VL_EINVAL));
    assert_int_equal(stats(p).open, 0);
    vl_redis_pool_free(p);
    finish(loop);
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
        p = vl_redis_pool_new(loop, redis_url(0), NULL);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(gather_over_pool, setup),
        cmocka_unit_test_setup(server_error_through_pool, setup),
        cmocka_unit_test_setup(backpressure_fail_fast, setup),
        cmocka_unit_test_setup(backpressure_wait_and_timeout, setup),
        cmocka_unit_test_setup(lease_multi_exec, setup),
        cmocka_unit_test_setup(dirty_lease_is_closed, setup),
        cmocka_unit_test_setup(lease_wait_and_timeout, setup),
        cmocka_unit_test_setup(server_killed_under_load, setup),
        cmocka_unit_test_setup(pool_free_cancels_everything, setup),
        cmocka_unit_test_setup(pool_bad_url, setup),
        cmocka_unit_test_setup(pool_out_of_memory, setup),
    };

    return tu_run("redis_pool", tests, sizeof(tests) / sizeof(tests[0]));
}
