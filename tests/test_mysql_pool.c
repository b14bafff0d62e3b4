/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_mysql_pool.c - MySQL pools and transactions against a real
 * mariadbd (tests/servers.sh): gathering, the clean-return rule, bounded
 * waiting, deadlines, transactions, and recovery after the server is killed.
 */
#include "testutil.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static char url_buf[512];

static const char *tcp_url(void)
{
    snprintf(url_buf, sizeof(url_buf), "mysql://%s:%s@127.0.0.1:%s/%s",
             tu_env("VL_TEST_MYSQL_USER"), tu_env("VL_TEST_MYSQL_PASSWORD"),
             tu_env("VL_TEST_MYSQL_PORT"), tu_env("VL_TEST_MYSQL_DB"));
    return url_buf;
}

/* The same server with no default database in the URL. */
static const char *tcp_url_nodb(void)
{
    snprintf(url_buf, sizeof(url_buf), "mysql://%s:%s@127.0.0.1:%s/", tu_env("VL_TEST_MYSQL_USER"),
             tu_env("VL_TEST_MYSQL_PASSWORD"), tu_env("VL_TEST_MYSQL_PORT"));
    return url_buf;
}

static vl_mysql_pool *pool_new(vl_loop *loop, size_t max_size)
{
    vl_mysql_pool_options o;
    vl_mysql_pool *p;

    vl_mysql_pool_options_init(&o);
    o.max_size = max_size;
    o.acquire_timeout_ms = 20000;
    p = vl_mysql_pool_new(loop, tcp_url(), &o);
    assert_non_null(p);
    return p;
}

static vl_future *pool_ok(vl_loop *loop, vl_mysql_pool *p, const char *sql)
{
    vl_future *f = tu_wait_for(loop, vl_mysql_pool_query(p, sql));

    if (vl_future_status(f) != VL_OK)
        fail_msg("%s: %s", sql, vl_future_error(f));
    return f;
}

static void pool_exec(vl_loop *loop, vl_mysql_pool *p, const char *sql)
{
    vl_future_free(pool_ok(loop, p, sql));
}

static int64_t pool_int(vl_loop *loop, vl_mysql_pool *p, const char *sql)
{
    vl_future *f = pool_ok(loop, p, sql);
    int64_t v = -1;

    if (vl_mysql_result_int64(vl_future_mysql_result(f), 0, 0, &v) != VL_OK)
        v = -1;
    vl_future_free(f);
    return v;
}

/* The loop must be empty at the end even with idle pooled connections, and
 * freeing the pool leaves nothing behind. */
static void finish(vl_loop *loop, vl_mysql_pool *p)
{
    vl_loop_run(loop);
    assert_int_equal(vl_loop_alive(loop), 0);
    vl_mysql_pool_free(p);
    vl_loop_run(loop);
    tu_loop_finish(loop);
}

/* 32 sleeps gathered over 32 connections: correctness only, no timing. */
static void gather_32(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool *p = pool_new(loop, 32);
    vl_future *fs[32], *all;
    vl_pool_stats st;
    size_t i;

    (void)state;
    for (i = 0; i < 32; i++)
        fs[i] = vl_mysql_pool_query(p, "SELECT SLEEP(0.05)");
    all = tu_wait_for(loop, vl_future_all(loop, fs, 32));
    assert_int_equal(vl_future_status(all), VL_OK);
    for (i = 0; i < 32; i++) {
        const vl_mysql_result *r = vl_future_mysql_result(vl_future_child(all, i));
        assert_int_equal(vl_mysql_result_rows(r), 1);
        assert_string_equal(vl_mysql_result_value(r, 0, 0, NULL), "0");
    }
    vl_future_free(all);
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
    assert_true(st.open <= 32);
    assert_int_equal(st.busy, 0);
    assert_int_equal(st.waiters, 0);
    assert_int_equal(st.idle, st.open);
    finish(loop, p);
}

/* A clean connection is reused (most recent first); a session change is
 * reset away before the next user sees it. */
static void clean_return(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool *p = pool_new(loop, 1);
    vl_pool_stats st;
    int64_t id1, id2;
    vl_future *f;

    (void)state;
    id1 = pool_int(loop, p, "SELECT CONNECTION_ID()");
    id2 = pool_int(loop, p, "SELECT CONNECTION_ID()");
    assert_int_equal(id1, id2);
    pool_exec(loop, p, "SET @leak = 42");
    f = pool_ok(loop, p, "SELECT @leak, CONNECTION_ID()");
    assert_true(vl_mysql_result_is_null(vl_future_mysql_result(f), 0, 0));
    vl_future_free(f);
    pool_exec(loop, p, "SET SESSION sql_mode = 'ANSI_QUOTES'");
    f = pool_ok(loop, p, "SELECT @@SESSION.sql_mode LIKE '%ANSI_QUOTES%'");
    assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, NULL), "0");
    vl_future_free(f);
    /* Reset, not closed: the same connection carries on. */
    assert_int_equal(pool_int(loop, p, "SELECT CONNECTION_ID()"), id1);
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
    assert_int_equal((st.closed_dirty + st.closed_broken), 0);
    assert_int_equal(st.open, 1);
    /* Prepared statements work across a reset (the cache was dropped). */
    {
        vl_mysql_param prm = vl_mysql_p_int64(41);
        f = tu_wait_for(loop, vl_mysql_pool_execute(p, "SELECT ? + 1", &prm, 1));
        assert_int_equal(vl_future_status(f), VL_OK);
        assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, NULL), "42");
        vl_future_free(f);
        pool_exec(loop, p, "SET @x = 1");
        f = tu_wait_for(loop, vl_mysql_pool_execute(p, "SELECT ? + 1", &prm, 1));
        assert_int_equal(vl_future_status(f), VL_OK);
        vl_future_free(f);
    }
    finish(loop, p);
}

/* Bounded, fair waiting: VL_EBUSY past max_waiters, VL_ETIMEDOUT past the
 * acquire deadline, FIFO order otherwise. */
static void bounded_waiting(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool_options o;
    vl_mysql_pool *p;
    vl_future *a, *b, *c, *d, *all;
    vl_future *fs[4];
    vl_pool_stats st;
    size_t i;

    (void)state;
    vl_mysql_pool_options_init(&o);
    o.max_size = 1;
    o.max_waiters = 2;
    o.acquire_timeout_ms = 20000;
    p = vl_mysql_pool_new(loop, tcp_url(), &o);
    /* With the one connection open and idle, `a` takes it at once. */
    pool_exec(loop, p, "SELECT 1");
    a = vl_mysql_pool_query(p, "SELECT SLEEP(0.1), 'a'");
    b = vl_mysql_pool_query(p, "SELECT 'b'");
    c = vl_mysql_pool_query(p, "SELECT 'c'");
    d = tu_wait_for(loop, vl_mysql_pool_query(p, "SELECT 'd'"));
    assert_int_equal(vl_future_status(d), VL_EBUSY);
    vl_future_free(d);
    fs[0] = a;
    fs[1] = b;
    fs[2] = c;
    all = tu_wait_for(loop, vl_future_all(loop, fs, 3));
    assert_int_equal(vl_future_status(all), VL_OK);
    vl_future_free(all);
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
    assert_true(st.wait_count >= 2);
    vl_mysql_pool_free(p);

    /* Acquire deadline (no bound on the waiters). */
    o.max_waiters = SIZE_MAX;
    o.acquire_timeout_ms = 50;
    p = vl_mysql_pool_new(loop, tcp_url(), &o);
    fs[0] = vl_mysql_pool_query(p, "SELECT SLEEP(0.5)");
    for (i = 1; i < 4; i++)
        fs[i] = vl_mysql_pool_query(p, "SELECT 1");
    all = tu_wait_for(loop, vl_future_all(loop, fs, 4));
    assert_int_equal(vl_future_status(vl_future_child(all, 0)), VL_OK);
    for (i = 1; i < 4; i++)
        assert_int_equal(vl_future_status(vl_future_child(all, i)), VL_ETIMEDOUT);
    vl_future_free(all);
    finish(loop, p);
}

/* ---- an unbounded queue, bounded by the deadline ---- */

#define GATHER_N 10000

/* The value the gather table holds for `id` (also made by the SQL that
 * fills it: CONCAT('v', id * 7)). */
static void gather_value(int64_t id, char *buf, size_t cap)
{
    snprintf(buf, cap, "v%lld", (long long)(id * 7));
}

/* Creates t_gather with ids 1..n (n <= 10000), filled by the server itself. */
static void gather_table(vl_loop *loop, vl_mysql_pool *p, size_t n)
{
    vl_mysql_param prm = vl_mysql_p_int64((int64_t)n);
    vl_future *f;

    pool_exec(loop, p, "DROP TABLE IF EXISTS t_gather");
    pool_exec(loop, p, "CREATE TABLE t_gather (id INT PRIMARY KEY, v VARCHAR(32) NOT NULL) "
                       "ENGINE=InnoDB");
    f = tu_wait_for(loop, vl_mysql_pool_execute(
                              p,
                              "INSERT INTO t_gather (id, v) "
                              "WITH d(n) AS (SELECT 0 UNION ALL SELECT 1 UNION ALL SELECT 2 "
                              "UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 "
                              "UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 "
                              "UNION ALL SELECT 9), s(n) AS (SELECT 1 + a.n + 10 * b.n + "
                              "100 * c.n + 1000 * e.n FROM d a, d b, d c, d e) "
                              "SELECT n, CONCAT('v', n * 7) FROM s WHERE n <= ?",
                              &prm, 1));
    if (vl_future_status(f) != VL_OK)
        fail_msg("fill t_gather: %s", vl_future_error(f));
    assert_int_equal(vl_mysql_result_affected_rows(vl_future_mysql_result(f)), n);
    vl_future_free(f);
}

static vl_future *point_select(vl_mysql_pool *p, int64_t id)
{
    vl_mysql_param prm = vl_mysql_p_int64(id);

    return vl_mysql_pool_execute(p, "SELECT id, v FROM t_gather WHERE id = ?", &prm, 1);
}

/* Checks that f is the row of `id`. */
static void check_point(vl_future *f, int64_t id)
{
    const vl_mysql_result *r = vl_future_mysql_result(f);
    char want[32];
    int64_t got = -1;

    if (vl_future_status(f) != VL_OK)
        fail_msg("id %lld: %s", (long long)id, vl_future_error(f));
    assert_int_equal(vl_mysql_result_rows(r), 1);
    assert_int_equal(vl_mysql_result_int64(r, 0, 0, &got), VL_OK);
    assert_int_equal(got, id);
    gather_value(id, want, sizeof(want));
    assert_string_equal(vl_mysql_result_value(r, 0, 1, NULL), want);
}

/* One request's outcome, recorded by its continuation. */
typedef struct outcome {
    int calls;
    int status;
    int64_t id;
    uint64_t submitted_ms, done_ms;
    vl_loop *loop;
    int *total;
} outcome;

static void outcome_cb(vl_future *f, void *ud)
{
    outcome *o = ud;

    o->calls++;
    (*o->total)++;
    o->status = vl_future_status(f);
    o->done_ms = vl_loop_now_ms(o->loop);
    if (o->status == VL_OK && o->id > 0)
        check_point(f, o->id);
}

static void outcomes_watch(outcome *os, size_t n, vl_loop *loop, int *total)
{
    size_t i;

    for (i = 0; i < n; i++) {
        os[i].loop = loop;
        os[i].total = total;
        os[i].status = 1; /* no VL_* code */
    }
}

/* A gather of 10,000 point selects on a pool with the default options:
 * every request queues (no VL_EBUSY past some count), each gets its own row,
 * and every future completes exactly once. */
static void default_pool_queues_10000(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool *p = vl_mysql_pool_new(loop, tcp_url(), NULL);
    vl_future **fs = calloc(GATHER_N, sizeof(*fs));
    outcome *os = calloc(GATHER_N, sizeof(*os));
    vl_future *all;
    vl_pool_stats st;
    int total = 0;
    size_t i;

    (void)state;
    assert_non_null(p);
    assert_non_null(fs);
    assert_non_null(os);
    gather_table(loop, p, GATHER_N);
    /* Ids in a scrambled order, so a row that came back for the wrong
     * request cannot pass. */
    for (i = 0; i < GATHER_N; i++)
        fs[i] = point_select(p, (int64_t)((i * 7919) % GATHER_N) + 1);
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
    /* Queued, far past the old bound of 1000. (Not all: a statement may
     * complete inside the call that made it, when the server's reply is in
     * before Connector/C first reads, as under valgrind, and its connection
     * then takes the next request.) */
    assert_true(st.waiters > 1000);
    all = tu_wait_for(loop, vl_future_all(loop, fs, GATHER_N));
    assert_int_equal(vl_future_status(all), VL_OK);
    for (i = 0; i < GATHER_N; i++)
        check_point(vl_future_child(all, i), (int64_t)((i * 7919) % GATHER_N) + 1);
    vl_future_free(all);
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
    assert_int_equal(st.rejected, 0);
    assert_int_equal(st.errors, 0);
    assert_int_equal(st.waiters, 0);
    assert_true(st.open <= 10);

    /* The same through continuations, counting each completion. */
    outcomes_watch(os, GATHER_N, loop, &total);
    for (i = 0; i < GATHER_N; i++) {
        os[i].id = (int64_t)(GATHER_N - i);
        assert_int_equal(vl_future_then(point_select(p, os[i].id), outcome_cb, &os[i]), VL_OK);
    }
    vl_loop_run(loop);
    assert_int_equal(total, GATHER_N);
    for (i = 0; i < GATHER_N; i++) {
        assert_int_equal(os[i].calls, 1);
        assert_int_equal(os[i].status, VL_OK);
    }
    pool_exec(loop, p, "DROP TABLE t_gather");
    free(fs);
    free(os);
    finish(loop, p);
}

/* An explicit small max_waiters still refuses the excess at once. */
static void small_max_waiters_refuses(void **state)
{
    enum { N = 2000, WAITERS = 100 };
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool_options o;
    vl_mysql_pool *p;
    outcome *os = calloc(N, sizeof(*os));
    vl_pool_stats st;
    int total = 0, ok = 0, busy = 0;
    size_t i;

    (void)state;
    assert_non_null(os);
    vl_mysql_pool_options_init(&o);
    o.max_size = 4;
    o.max_waiters = WAITERS;
    p = vl_mysql_pool_new(loop, tcp_url(), &o);
    gather_table(loop, p, 100);
    outcomes_watch(os, N, loop, &total);
    for (i = 0; i < N; i++) {
        vl_future *f;
        os[i].id = (int64_t)(i % 100) + 1;
        f = point_select(p, os[i].id);
        assert_non_null(f);
        /* Past the waiting room (and the connections free at the time:
         * at most max_size) it fails at once (rule 2: still reported from
         * the loop). A statement on a free connection may also complete
         * inside the call, when the server's reply is in before
         * Connector/C first reads (a slow client: valgrind, ASan). */
        if (vl_future_done(f) && vl_future_status(f) != VL_OK) {
            assert_int_equal(vl_future_status(f), VL_EBUSY);
            assert_non_null(strstr(vl_future_error(f), "max_waiters 100"));
        }
        assert_int_equal(vl_future_then(f, outcome_cb, &os[i]), VL_OK);
    }
    vl_loop_run(loop);
    assert_int_equal(total, N);
    for (i = 0; i < N; i++) {
        assert_int_equal(os[i].calls, 1);
        if (os[i].status == VL_OK)
            ok++;
        else if (os[i].status == VL_EBUSY)
            busy++;
        else
            fail_msg("request %zu: status %d", i, os[i].status);
    }
    /* At least the waiting room was served; a few more when statements
     * completed inside their calls and freed a connection (see above). */
    assert_true(ok >= WAITERS && busy > N / 2);
    assert_int_equal(ok + busy, N);
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
    assert_int_equal(st.rejected, (uint64_t)busy);
    pool_exec(loop, p, "DROP TABLE t_gather");
    free(os);
    finish(loop, p);
}

/* Every connection is held by a transaction: thousands of waiters (more
 * than the old bound) all fail with VL_ETIMEDOUT, each after its own
 * acquire_timeout_ms and never before, exactly once. Two batches a while
 * apart show that each waiter keeps its own deadline although one timer
 * serves the queue. */
static void waiters_time_out(void **state)
{
    enum { N = 3000, TIMEOUT_MS = 300, GAP_MS = 150 };
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool_options o;
    vl_mysql_pool *p;
    outcome *os = calloc(N, sizeof(*os));
    vl_mysql_tx *tx[2];
    vl_pool_stats st;
    vl_future *f;
    int total = 0;
    size_t i;

    (void)state;
    assert_non_null(os);
    vl_mysql_pool_options_init(&o);
    o.max_size = 2;
    o.min_idle = 2;
    o.acquire_timeout_ms = TIMEOUT_MS;
    p = vl_mysql_pool_new(loop, tcp_url(), &o);
    /* Connected first: a connect can take longer than the deadline (under
     * valgrind it does), and readiness does not wait under it. */
    vl_future_free(tu_run_cmd(loop, vl_mysql_pool_ready(p), VL_OK));
    for (i = 0; i < 2; i++) {
        f = tu_run_cmd(loop, vl_mysql_pool_begin(p), VL_OK);
        tx[i] = vl_future_take(f);
        assert_non_null(tx[i]);
        vl_future_free(f);
    }
    outcomes_watch(os, N, loop, &total);
    for (i = 0; i < N; i++) {
        if (i == N / 2)
            tu_sleep_ms(loop, GAP_MS); /* the second batch comes later */
        os[i].submitted_ms = vl_loop_now_ms(loop);
        f = vl_mysql_pool_query(p, "SELECT 1");
        assert_non_null(f);
        assert_int_equal(vl_future_then(f, outcome_cb, &os[i]), VL_OK);
    }
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
    assert_true(st.waiters > 0);
    while (total < N)
        tu_sleep_ms(loop, 10);
    for (i = 0; i < N; i++) {
        assert_int_equal(os[i].calls, 1);
        assert_int_equal(os[i].status, VL_ETIMEDOUT);
        if (os[i].done_ms < os[i].submitted_ms + TIMEOUT_MS)
            fail_msg("request %zu timed out after %llu ms", i,
                     (unsigned long long)(os[i].done_ms - os[i].submitted_ms));
    }
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
    assert_int_equal(st.timeouts, N);
    assert_int_equal(st.rejected, 0);
    assert_int_equal(st.waiters, 0);
    /* The transactions go on, and once they end the pool serves again. */
    vl_future_free(tu_run_cmd(loop, vl_mysql_tx_query(tx[0], "SELECT 1"), VL_OK));
    for (i = 0; i < 2; i++)
        vl_future_free(tu_run_cmd(loop, vl_mysql_tx_commit(tx[i]), VL_OK));
    pool_exec(loop, p, "SELECT 1");
    free(os);
    finish(loop, p);
}

/* The head of the queue leaves for a connection before its deadline: the
 * one timer must not fail the next waiter at the old head's deadline. */
static void deadline_follows_each_waiter(void **state)
{
    enum { TIMEOUT_MS = 400 };
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool_options o;
    vl_mysql_pool *p;
    outcome os[4];
    int total = 0;
    size_t i;

    (void)state;
    memset(os, 0, sizeof(os));
    vl_mysql_pool_options_init(&o);
    o.max_size = 1;
    o.acquire_timeout_ms = TIMEOUT_MS;
    p = vl_mysql_pool_new(loop, tcp_url(), &o);
    vl_future_free(tu_run_cmd(loop, vl_mysql_pool_ready(p), VL_OK)); /* see waiters_time_out */
    outcomes_watch(os, 4, loop, &total);
    /* 0 holds the connection for 0.2 s; 1 waits, then holds it for 1 s; 2
     * and 3 come 0.1 s after 1, so the timer armed for 1's deadline fires
     * while they still have 0.1 s to go. */
    os[0].submitted_ms = vl_loop_now_ms(loop);
    assert_int_equal(vl_future_then(vl_mysql_pool_query(p, "SELECT SLEEP(0.2)"), outcome_cb,
                                    &os[0]), VL_OK);
    os[1].submitted_ms = vl_loop_now_ms(loop);
    assert_int_equal(vl_future_then(vl_mysql_pool_query(p, "SELECT SLEEP(1)"), outcome_cb,
                                    &os[1]), VL_OK);
    tu_sleep_ms(loop, 100);
    for (i = 2; i < 4; i++) {
        os[i].submitted_ms = vl_loop_now_ms(loop);
        assert_int_equal(vl_future_then(vl_mysql_pool_query(p, "SELECT 1"), outcome_cb, &os[i]),
                         VL_OK);
    }
    vl_loop_run(loop);
    assert_int_equal(total, 4);
    assert_int_equal(os[0].status, VL_OK);
    assert_int_equal(os[1].status, VL_OK);
    for (i = 0; i < 4; i++)
        assert_int_equal(os[i].calls, 1);
    for (i = 2; i < 4; i++) {
        assert_int_equal(os[i].status, VL_ETIMEDOUT);
        assert_true(os[i].done_ms >= os[i].submitted_ms + TIMEOUT_MS);
    }
    finish(loop, p);
}

/* ---- bulk execution ---- */

#define BULK_ROWS 1000

/* Row r of the bulk table: id r + 1, name "n<7r>", score r / 4 or NULL for
 * every seventh row. */
static void bulk_fill(vl_mysql_param *ps, char (*names)[16], size_t rows)
{
    size_t r;

    for (r = 0; r < rows; r++) {
        snprintf(names[r], sizeof(names[r]), "n%zu", r * 7);
        ps[3 * r] = vl_mysql_p_int64((int64_t)r + 1);
        ps[3 * r + 1] = vl_mysql_p_str(names[r]);
        ps[3 * r + 2] = r % 7 == 3 ? vl_mysql_p_null() : vl_mysql_p_double((double)r / 4);
    }
}

static void bulk_table(vl_loop *loop, vl_mysql_pool *p)
{
    pool_exec(loop, p, "DROP TABLE IF EXISTS t_bulk");
    pool_exec(loop, p, "CREATE TABLE t_bulk (id INT PRIMARY KEY, name VARCHAR(16) NOT NULL, "
                       "score DOUBLE NULL) ENGINE=InnoDB");
}

/* 1000 rows in one call, queued behind a busy connection like any request;
 * the caller's buffers are reused at once (everything was copied), and
 * every row reads back as sent. */
static void bulk_insert_1000(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool *p = pool_new(loop, 1);
    vl_mysql_param *ps = calloc(3 * BULK_ROWS, sizeof(*ps));
    char(*names)[16] = calloc(BULK_ROWS, sizeof(*names));
    vl_future *busy, *f;
    const vl_mysql_result *res;
    vl_pool_stats st;
    size_t r;

    (void)state;
    assert_non_null(ps);
    assert_non_null(names);
    bulk_table(loop, p);
    bulk_fill(ps, names, BULK_ROWS);
    busy = vl_mysql_pool_query(p, "SELECT SLEEP(0.1)");
    f = vl_mysql_pool_execute_bulk(p, "INSERT INTO t_bulk (id, name, score) VALUES (?, ?, ?)",
                                   ps, 3, BULK_ROWS);
    assert_non_null(f);
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
    assert_int_equal(st.waiters, 1); /* queued behind the sleep */
    /* The pool copied the values: what the caller's buffers hold now is
     * never sent. */
    memset(names, 'x', BULK_ROWS * sizeof(*names));
    memset(ps, 0xff, 3 * BULK_ROWS * sizeof(*ps));
    f = tu_wait_for(loop, f);
    if (vl_future_status(f) != VL_OK)
        fail_msg("bulk insert: %s", vl_future_error(f));
    assert_int_equal(vl_mysql_result_affected_rows(vl_future_mysql_result(f)), BULK_ROWS);
    vl_future_free(f);
    assert_int_equal(tu_await(loop, busy), VL_OK);
    vl_future_free(busy);
    f = pool_ok(loop, p, "SELECT id, name, score FROM t_bulk ORDER BY id");
    res = vl_future_mysql_result(f);
    assert_int_equal(vl_mysql_result_rows(res), BULK_ROWS);
    for (r = 0; r < BULK_ROWS; r++) {
        char want[16];
        int64_t id = -1;
        double score = -1;
        assert_int_equal(vl_mysql_result_int64(res, r, 0, &id), VL_OK);
        assert_int_equal(id, (int64_t)r + 1);
        snprintf(want, sizeof(want), "n%zu", r * 7);
        assert_string_equal(vl_mysql_result_value(res, r, 1, NULL), want);
        if (r % 7 == 3) {
            assert_true(vl_mysql_result_is_null(res, r, 2));
        } else {
            assert_int_equal(vl_mysql_result_double(res, r, 2, &score), VL_OK);
            assert_true(score == (double)r / 4);
        }
    }
    vl_future_free(f);
    pool_exec(loop, p, "DROP TABLE t_bulk");
    free(ps);
    free(names);
    finish(loop, p);
}

/* Fails at once (the future is complete when the call returns, so nothing
 * can have been sent) with VL_EINVAL and a message holding `what`. */
static void bulk_refused(vl_loop *loop, vl_future *f, const char *what)
{
    assert_non_null(f);
    assert_true(vl_future_done(f));
    f = tu_run_cmd(loop, f, VL_EINVAL);
    if (what != NULL && strstr(vl_future_error(f), what) == NULL)
        fail_msg("'%s' does not say '%s'", vl_future_error(f), what);
    vl_future_free(f);
}

/* A bad shape or parameter fails at once with VL_EINVAL, naming the row and
 * column, before anything is sent: the table stays empty. */
static void bulk_bad_params(void **state)
{
    static const char sql[] = "INSERT INTO t_bulk (id, name, score) VALUES (?, ?, ?)";
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool *p = pool_new(loop, 1);
    vl_mysql_param ps[3 * 8];
    char names[8][16];
    vl_future *f;

    (void)state;
    bulk_table(loop, p);
    bulk_fill(ps, names, 8);
    /* Row 5's name is an integer where the other rows have strings. */
    ps[3 * 5 + 1] = vl_mysql_p_int64(5);
    bulk_refused(loop, vl_mysql_pool_execute_bulk(p, sql, ps, 3, 8), "row 5 column 1");
    /* A NULL cell is fine in any column; a string with bytes but no
     * pointer is not. */
    ps[3 * 5 + 1] = vl_mysql_p_null();
    ps[3 * 6 + 1].v.str.ptr = NULL;
    bulk_refused(loop, vl_mysql_pool_execute_bulk(p, sql, ps, 3, 8), "row 6 column 1");
    /* No rows, no columns, no parameters, a count that overflows. */
    bulk_refused(loop, vl_mysql_pool_execute_bulk(p, sql, ps, 3, 0), NULL);
    bulk_refused(loop, vl_mysql_pool_execute_bulk(p, sql, ps, 0, 8), NULL);
    bulk_refused(loop, vl_mysql_pool_execute_bulk(p, sql, NULL, 3, 8), NULL);
    bulk_refused(loop, vl_mysql_pool_execute_bulk(p, sql, ps, SIZE_MAX / 2, 4), NULL);
    assert_int_equal(pool_int(loop, p, "SELECT COUNT(*) FROM t_bulk"), 0);
    /* The same rows, fixed, go in. */
    ps[3 * 5 + 1] = vl_mysql_p_str(names[5]);
    ps[3 * 6 + 1] = vl_mysql_p_str(names[6]);
    f = tu_run_cmd(loop, vl_mysql_pool_execute_bulk(p, sql, ps, 3, 8), VL_OK);
    assert_int_equal(vl_mysql_result_affected_rows(vl_future_mysql_result(f)), 8);
    vl_future_free(f);
    assert_int_equal(pool_int(loop, p, "SELECT COUNT(*) FROM t_bulk"), 8);
    pool_exec(loop, p, "DROP TABLE t_bulk");
    finish(loop, p);
}

/* A client-side deadline closes the connection; the pool replaces it. A
 * server-side limit keeps it. */
static void deadlines(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool *p = pool_new(loop, 1);
    vl_pool_stats st;
    vl_future *f;
    int64_t id1;

    (void)state;
    id1 = pool_int(loop, p, "SELECT CONNECTION_ID()");
    f = tu_wait_for(loop, vl_future_timeout(vl_mysql_pool_query(p, "SELECT SLEEP(5)"), 50));
    assert_int_equal(vl_future_status(f), VL_ETIMEDOUT);
    vl_future_free(f);
    assert_true(pool_int(loop, p, "SELECT CONNECTION_ID()") != id1);
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
    assert_int_equal((st.closed_dirty + st.closed_broken), 1);
    assert_int_equal(st.open, 1);

    /* Cancel while waiting for a connection: it just leaves the queue. */
    {
        vl_future *busy = vl_mysql_pool_query(p, "SELECT SLEEP(0.1)");
        vl_future *w = vl_mysql_pool_query(p, "SELECT 1");
        assert_int_equal(vl_future_cancel(w), 1);
        tu_wait_for(loop, busy);
        assert_int_equal(vl_future_status(busy), VL_OK);
        assert_int_equal(vl_future_status(w), VL_ECANCELED);
        vl_future_free(busy);
        vl_future_free(w);
    }
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
    assert_int_equal((st.closed_dirty + st.closed_broken), 1);
    finish(loop, p);
}

static void transactions(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool *p = pool_new(loop, 2);
    vl_mysql_tx *tx;
    vl_future *f;
    vl_mysql_param prm[1];

    (void)state;
    pool_exec(loop, p, "DROP TABLE IF EXISTS t_tx");
    pool_exec(loop, p, "CREATE TABLE t_tx (id INT PRIMARY KEY) ENGINE=InnoDB");

    /* Released without commit: rolled back. */
    f = tu_wait_for(loop, vl_mysql_pool_begin(p));
    assert_int_equal(vl_future_status(f), VL_OK);
    tx = vl_future_take(f);
    assert_non_null(tx);
    vl_future_free(f);
    f = tu_wait_for(loop, vl_mysql_tx_query(tx, "INSERT INTO t_tx VALUES (1)"));
    assert_int_equal(vl_future_status(f), VL_OK);
    vl_future_free(f);
    prm[0] = vl_mysql_p_int64(2);
    f = tu_wait_for(loop, vl_mysql_tx_execute(tx, "INSERT INTO t_tx VALUES (?)", prm, 1));
    assert_int_equal(vl_future_status(f), VL_OK);
    vl_future_free(f);
    /* Another connection does not see the uncommitted rows. */
    assert_int_equal(pool_int(loop, p, "SELECT COUNT(*) FROM t_tx"), 0);
    vl_mysql_tx_free(tx);
    vl_loop_run(loop);
    assert_int_equal(pool_int(loop, p, "SELECT COUNT(*) FROM t_tx"), 0);
    {
        /* Checked from a separate, unpooled connection too. */
        vl_mysql *c = vl_mysql_new(loop, tcp_url(), NULL);
        f = tu_wait_for(loop, vl_mysql_query(c, "SELECT COUNT(*) FROM t_tx"));
        assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, NULL), "0");
        vl_future_free(f);
        vl_mysql_free(c);
    }

    /* Committed. */
    f = tu_wait_for(loop, vl_mysql_pool_begin(p));
    tx = vl_future_take(f);
    vl_future_free(f);
    f = tu_wait_for(loop, vl_mysql_tx_query(tx, "INSERT INTO t_tx VALUES (3)"));
    assert_int_equal(vl_future_status(f), VL_OK);
    vl_future_free(f);
    f = tu_wait_for(loop, vl_mysql_tx_commit(tx));
    assert_int_equal(vl_future_status(f), VL_OK);
    vl_future_free(f);
    assert_int_equal(pool_int(loop, p, "SELECT COUNT(*) FROM t_tx"), 1);

    /* Explicit rollback. */
    f = tu_wait_for(loop, vl_mysql_pool_begin(p));
    tx = vl_future_take(f);
    vl_future_free(f);
    vl_future_free(tu_wait_for(loop, vl_mysql_tx_query(tx, "INSERT INTO t_tx VALUES (4)")));
    f = tu_wait_for(loop, vl_mysql_tx_rollback(tx));
    assert_int_equal(vl_future_status(f), VL_OK);
    vl_future_free(f);
    assert_int_equal(pool_int(loop, p, "SELECT COUNT(*) FROM t_tx"), 1);

    /* A transaction nobody took is rolled back with its future. */
    f = tu_wait_for(loop, vl_mysql_pool_begin(p));
    assert_non_null(vl_future_mysql_tx(f));
    assert_null(vl_future_mysql_result(f));
    vl_future_free(tu_wait_for(loop, vl_mysql_tx_query(vl_future_mysql_tx(f), "INSERT INTO t_tx VALUES (5)")));
    vl_future_free(f);
    assert_int_equal(pool_int(loop, p, "SELECT COUNT(*) FROM t_tx"), 1);

    /* The connection is killed mid-transaction: an error, then VL_ECLOSED,
     * never a silent reconnect. */
    f = tu_wait_for(loop, vl_mysql_pool_begin(p));
    tx = vl_future_take(f);
    vl_future_free(f);
    f = tu_wait_for(loop, vl_mysql_tx_query(tx, "SELECT CONNECTION_ID()"));
    {
        char sql[64];
        snprintf(sql, sizeof(sql), "KILL CONNECTION %s",
                 vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, NULL));
        vl_future_free(f);
        f = tu_wait_for(loop, vl_mysql_tx_query(tx, "INSERT INTO t_tx VALUES (6)"));
        assert_int_equal(vl_future_status(f), VL_OK);
        vl_future_free(f);
        pool_exec(loop, p, sql);
    }
    f = tu_wait_for(loop, vl_mysql_tx_query(tx, "INSERT INTO t_tx VALUES (7)"));
    assert_int_equal(vl_future_status(f), VL_ECONN);
    vl_future_free(f);
    f = tu_wait_for(loop, vl_mysql_tx_query(tx, "INSERT INTO t_tx VALUES (8)"));
    assert_int_equal(vl_future_status(f), VL_ECLOSED);
    vl_future_free(f);
    f = tu_wait_for(loop, vl_mysql_tx_commit(tx));
    assert_int_equal(vl_future_status(f), VL_ECLOSED);
    vl_future_free(f);
    assert_int_equal(pool_int(loop, p, "SELECT COUNT(*) FROM t_tx"), 1);
    pool_exec(loop, p, "DROP TABLE t_tx");
    finish(loop, p);
}

static void free_cb(vl_future *f, void *ud)
{
    int *calls = ud;

    calls[0]++;
    calls[1] = vl_future_status(f);
}

/* Freeing the pool completes running and waiting requests with
 * VL_ECANCELED; a leased transaction becomes dead. */
static void free_with_pending(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool *p = pool_new(loop, 1);
    int ca[2] = {0, 0}, cb[2] = {0, 0};
    vl_future *f, *r;

    (void)state;
    f = vl_mysql_pool_query(p, "SELECT SLEEP(1)");
    vl_future_then(f, free_cb, ca);
    f = vl_mysql_pool_query(p, "SELECT 2");
    vl_future_then(f, free_cb, cb);
    r = tu_wait_for(loop, vl_loop_sleep(loop, 30));
    vl_future_free(r);
    vl_mysql_pool_free(p);
    vl_loop_run(loop);
    assert_int_equal(ca[0], 1);
    assert_int_equal(ca[1], VL_ECANCELED);
    assert_int_equal(cb[0], 1);
    assert_int_equal(cb[1], VL_ECANCELED);

    /* A pool with a leased transaction, freed with the loop. */
    p = pool_new(loop, 1);
    f = tu_wait_for(loop, vl_mysql_pool_begin(p));
    {
        vl_mysql_tx *tx = vl_future_take(f);
        vl_future_free(f);
        vl_mysql_pool_free(p);
        f = tu_wait_for(loop, vl_mysql_tx_query(tx, "SELECT 1"));
        assert_int_equal(vl_future_status(f), VL_ECLOSED);
        vl_future_free(f);
        vl_mysql_tx_free(tx);
    }
    p = pool_new(loop, 2);
    pool_exec(loop, p, "SELECT 1");
    f = vl_mysql_pool_query(p, "SELECT SLEEP(1)");
    ca[0] = 0;
    vl_future_then(f, free_cb, ca);
    vl_loop_free(loop);
    assert_int_equal(ca[0], 1);
    assert_int_equal(ca[1], VL_ECANCELED);
    assert_int_equal(tu_alloc_live(), 0);
}

typedef struct pool_freer {
    vl_mysql_pool *p;
    int calls;
    int status;
    int again_calls;
    int again_status;
} pool_freer;

static void pool_again_cb(vl_future *f, void *ud)
{
    pool_freer *pf = ud;

    pf->again_calls++;
    pf->again_status = vl_future_status(f);
}

/* A request's callback that frees its pool (twice: the second is a no-op),
 * reads its stats and asks it for more work. */
static void pool_free_self_cb(vl_future *f, void *ud)
{
    pool_freer *pf = ud;
    vl_pool_stats st;

    pf->calls++;
    pf->status = vl_future_status(f);
    vl_mysql_pool_free(pf->p);
    vl_mysql_pool_free(pf->p);
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(pf->p, &st));
    assert_int_equal(st.open, 0);
    vl_future_then(vl_mysql_pool_query(pf->p, "SELECT 1"), pool_again_cb, pf);
    vl_future_then(vl_mysql_pool_begin(pf->p), pool_again_cb, pf);
}

/* vl_loop_free with a running and a waiting request whose callbacks free
 * the pool: the loop frees the pool first and runs the callbacks after, so
 * the pool must still be there for them (and refuse new work). */
static void free_self_in_loop_teardown(void **state)
{
    vl_loop *loop = vl_loop_new();
    pool_freer running = {0}, waiting = {0};

    (void)state;
    running.p = waiting.p = pool_new(loop, 1);
    pool_exec(loop, running.p, "SELECT 1");
    vl_future_then(vl_mysql_pool_query(running.p, "SELECT SLEEP(1)"), pool_free_self_cb,
                   &running);
    vl_future_then(vl_mysql_pool_query(waiting.p, "SELECT 2"), pool_free_self_cb, &waiting);
    vl_loop_free(loop);
    assert_int_equal(running.calls, 1);
    assert_int_equal(running.status, VL_ECANCELED);
    assert_int_equal(running.again_calls, 2);
    assert_int_equal(running.again_status, VL_ECLOSED);
    assert_int_equal(waiting.calls, 1);
    assert_int_equal(waiting.status, VL_ECANCELED);
    assert_int_equal(waiting.again_calls, 2);
    assert_int_equal(waiting.again_status, VL_ECLOSED);
    assert_int_equal(tu_alloc_live(), 0);
}

/* Parameters are checked up front, as vl_mysql_execute checks them: bytes
 * announced without a pointer must not send uninitialised memory. */
static void pool_bad_params(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool *p = pool_new(loop, 1);
    vl_mysql_param prm[2];
    vl_future *f;

    (void)state;
    prm[0] = vl_mysql_p_int64(1);
    prm[1].type = VL_MYSQL_P_BLOB;
    prm[1].v.str.ptr = NULL;
    prm[1].v.str.len = 16;
    f = tu_wait_for(loop, vl_mysql_pool_execute(p, "SELECT ?, HEX(?)", prm, 2));
    assert_int_equal(vl_future_status(f), VL_EINVAL);
    vl_future_free(f);
    prm[1].type = VL_MYSQL_P_STRING;
    f = tu_wait_for(loop, vl_mysql_pool_execute(p, "SELECT ?, HEX(?)", prm, 2));
    assert_int_equal(vl_future_status(f), VL_EINVAL);
    vl_future_free(f);
    prm[1].type = 99;
    f = tu_wait_for(loop, vl_mysql_pool_execute(p, "SELECT ?, HEX(?)", prm, 2));
    assert_int_equal(vl_future_status(f), VL_EINVAL);
    vl_future_free(f);
    /* A NULL pointer with no bytes is an empty value. */
    prm[1].type = VL_MYSQL_P_BLOB;
    prm[1].v.str.len = 0;
    f = tu_wait_for(loop, vl_mysql_pool_execute(p, "SELECT ?, HEX(?)", prm, 2));
    assert_int_equal(vl_future_status(f), VL_OK);
    assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 1, NULL), "");
    vl_future_free(f);
    finish(loop, p);
}

/* USE changes the connection's database and a reset keeps it: the next
 * user must still find the pool's own database. */
static void schema_restored(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool *p = pool_new(loop, 1);
    vl_pool_stats st;
    vl_future *f;
    int64_t id;

    (void)state;
    id = pool_int(loop, p, "SELECT CONNECTION_ID()");
    pool_exec(loop, p, "USE mysql");
    f = pool_ok(loop, p, "SELECT DATABASE(), CONNECTION_ID()");
    assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, NULL),
                        tu_env("VL_TEST_MYSQL_DB"));
    vl_future_free(f);
    /* Restored, not replaced. */
    assert_int_equal(pool_int(loop, p, "SELECT CONNECTION_ID()"), id);
    /* The same through a prepared statement and inside a transaction. */
    {
        vl_future *g = tu_wait_for(loop, vl_mysql_pool_execute(p, "USE mysql", NULL, 0));
        assert_int_equal(vl_future_status(g), VL_OK);
        vl_future_free(g);
    }
    f = pool_ok(loop, p, "SELECT DATABASE()");
    assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, NULL),
                        tu_env("VL_TEST_MYSQL_DB"));
    vl_future_free(f);
    {
        vl_mysql_tx *tx;
        f = tu_wait_for(loop, vl_mysql_pool_begin(p));
        tx = vl_future_take(f);
        vl_future_free(f);
        vl_future_free(tu_wait_for(loop, vl_mysql_tx_query(tx, "USE mysql")));
        f = tu_wait_for(loop, vl_mysql_tx_commit(tx));
        assert_int_equal(vl_future_status(f), VL_OK);
        vl_future_free(f);
    }
    f = pool_ok(loop, p, "SELECT DATABASE()");
    assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, NULL),
                        tu_env("VL_TEST_MYSQL_DB"));
    vl_future_free(f);
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
    assert_int_equal((st.closed_dirty + st.closed_broken), 0);
    vl_mysql_pool_free(p);

    /* Without a database in the URL there is none to go back to: the
     * connection is closed instead. */
    p = pool_new(loop, 1);
    vl_mysql_pool_free(p);
    p = vl_mysql_pool_new(loop, tcp_url_nodb(), NULL);
    assert_non_null(p);
    id = pool_int(loop, p, "SELECT CONNECTION_ID()");
    pool_exec(loop, p, "USE mysql");
    f = pool_ok(loop, p, "SELECT DATABASE() IS NULL, CONNECTION_ID()");
    assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, NULL), "1");
    vl_future_free(f);
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
    assert_int_equal((st.closed_dirty + st.closed_broken), 1);
    finish(loop, p);
}

/* A named lock (GET_LOCK) sets no session-state flag, yet it belongs to the
 * session: the next user of the connection must not hold it. */
static void named_locks(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool *p = pool_new(loop, 1);
    vl_mysql_tx *tx;
    vl_future *f;
    vl_mysql_param prm = vl_mysql_p_str("vl_pool_lock");

    (void)state;
    assert_int_equal(pool_int(loop, p, "SELECT GET_LOCK('vl_pool_lock', 0)"), 1);
    assert_int_equal(pool_int(loop, p, "SELECT IS_USED_LOCK('vl_pool_lock') IS NULL"), 1);
    f = tu_wait_for(loop, vl_mysql_pool_execute(p, "SELECT get_lock(?, 0)", &prm, 1));
    assert_int_equal(vl_future_status(f), VL_OK);
    vl_future_free(f);
    assert_int_equal(pool_int(loop, p, "SELECT IS_USED_LOCK('vl_pool_lock') IS NULL"), 1);
    /* Taken inside a transaction: COMMIT does not release it, the pool must. */
    f = tu_wait_for(loop, vl_mysql_pool_begin(p));
    tx = vl_future_take(f);
    vl_future_free(f);
    vl_future_free(tu_wait_for(loop, vl_mysql_tx_query(tx, "SELECT Get_Lock('vl_pool_lock', 0)")));
    f = tu_wait_for(loop, vl_mysql_tx_commit(tx));
    assert_int_equal(vl_future_status(f), VL_OK);
    vl_future_free(f);
    assert_int_equal(pool_int(loop, p, "SELECT IS_USED_LOCK('vl_pool_lock') IS NULL"), 1);
    finish(loop, p);
}

/* A COMMIT that fails leaves the transaction's outcome unknown to the
 * caller: the connection is closed, never reset and reused. */
static void failed_commit(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool *p = pool_new(loop, 2);
    vl_pool_stats st;
    vl_mysql_tx *tx;
    vl_future *f;
    int64_t id;

    (void)state;
    /* The server refuses COMMIT while an XA transaction is active (1399):
     * an error on a connection that is still open. */
    f = tu_wait_for(loop, vl_mysql_pool_begin(p));
    tx = vl_future_take(f);
    vl_future_free(f);
    f = tu_wait_for(loop, vl_mysql_tx_query(tx, "SELECT CONNECTION_ID()"));
    assert_int_equal(vl_mysql_result_int64(vl_future_mysql_result(f), 0, 0, &id), VL_OK);
    vl_future_free(f);
    vl_future_free(tu_wait_for(loop, vl_mysql_tx_query(tx, "COMMIT")));
    f = tu_wait_for(loop, vl_mysql_tx_query(tx, "XA START 'vl_failed_commit'"));
    assert_int_equal(vl_future_status(f), VL_OK);
    vl_future_free(f);
    f = tu_wait_for(loop, vl_mysql_tx_commit(tx));
    assert_int_equal(vl_future_status(f), VL_ESERVER);
    assert_int_equal(vl_future_mysql_errno(f), 1399);
    vl_future_free(f);
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
    assert_int_equal((st.closed_dirty + st.closed_broken), 1);
    assert_int_equal(st.open, 0);
    assert_true(pool_int(loop, p, "SELECT CONNECTION_ID()") != id);

    /* The connection killed under the transaction: COMMIT fails and the
     * connection is not reused either. */
    f = tu_wait_for(loop, vl_mysql_pool_begin(p));
    tx = vl_future_take(f);
    vl_future_free(f);
    f = tu_wait_for(loop, vl_mysql_tx_query(tx, "SELECT CONNECTION_ID()"));
    assert_int_equal(vl_mysql_result_int64(vl_future_mysql_result(f), 0, 0, &id), VL_OK);
    vl_future_free(f);
    {
        char sql[64];
        snprintf(sql, sizeof(sql), "KILL CONNECTION %lld", (long long)id);
        pool_exec(loop, p, sql);
    }
    f = tu_wait_for(loop, vl_mysql_tx_commit(tx));
    assert_int_equal(vl_future_status(f), VL_ECONN);
    vl_future_free(f);
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
    assert_int_equal((st.closed_dirty + st.closed_broken), 2);
    assert_true(pool_int(loop, p, "SELECT CONNECTION_ID()") != id);
    finish(loop, p);
}

static void bad_url(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool *p = vl_mysql_pool_new(loop, "mysql://u:secret@127.0.0.1/db?ssl_ca=x", NULL);
    vl_future *f;

    (void)state;
    assert_non_null(p);
    f = tu_wait_for(loop, vl_mysql_pool_query(p, "SELECT 1"));
    assert_int_equal(vl_future_status(f), VL_EINVAL); /* ssl_ca is not ssl-ca */
    assert_non_null(strstr(vl_future_error(f), "ssl_ca"));
    assert_null(strstr(vl_future_error(f), "secret"));
    vl_future_free(f);
    vl_mysql_pool_free(p);
    p = vl_mysql_pool_new(loop, "nope", NULL);
    f = tu_wait_for(loop, vl_mysql_pool_begin(p));
    assert_int_equal(vl_future_status(f), VL_EINVAL);
    vl_future_free(f);
    vl_mysql_pool_free(p);
    tu_loop_finish(loop);
}


static void nap(vl_loop *loop, uint64_t ms)
{
    vl_future_free(tu_wait_for(loop, vl_loop_sleep(loop, ms)));
}

static void kill_connection(vl_loop *loop, int64_t id)
{
    vl_mysql *c = vl_mysql_new(loop, tcp_url(), NULL);
    char sql[64];
    vl_future *f;

    snprintf(sql, sizeof(sql), "KILL CONNECTION %lld", (long long)id);
    f = tu_wait_for(loop, vl_mysql_query(c, sql));
    assert_int_equal(vl_future_status(f), VL_OK);
    vl_future_free(f);
    vl_mysql_free(c);
}

/* An idle connection whose server side goes away is evicted and replaced;
 * the next request never sees it. */
static void idle_eviction(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool *p = pool_new(loop, 2);
    vl_pool_stats st;
    int64_t id, id2;

    (void)state;
    id = pool_int(loop, p, "SELECT CONNECTION_ID()");
    kill_connection(loop, id);
    nap(loop, 100);
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
    assert_int_equal((st.closed_dirty + st.closed_broken), 1);
    assert_int_equal(st.open, 0);
    id2 = pool_int(loop, p, "SELECT CONNECTION_ID()");
    assert_true(id2 > 0 && id2 != id);
    /* Killed and asked for at once: still a fresh connection. A connection
     * used in the last 500 ms skips the poll before hand-out (its hang-up
     * is reported by the statement), so let it age past that first. */
    nap(loop, 600);
    kill_connection(loop, id2);
    assert_true(pool_int(loop, p, "SELECT CONNECTION_ID()") != id2);
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
    assert_int_equal((st.closed_dirty + st.closed_broken), 2);
    finish(loop, p);
}

/* idle_timeout_ms, max_lifetime_ms, keepalive_ms and min_idle. */
static void housekeeping(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool_options o;
    vl_mysql_pool *p;
    vl_pool_stats st;
    int64_t id;

    (void)state;
    vl_mysql_pool_options_init(&o);
    o.max_size = 2;
    o.min_idle = 0; /* idle_timeout_ms closes down to min_idle */
    o.idle_timeout_ms = 100;
    p = vl_mysql_pool_new(loop, tcp_url(), &o);
    pool_exec(loop, p, "SELECT 1");
    nap(loop, 400);
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
    assert_int_equal(st.open, 0);
    assert_int_equal(st.closed_idle, 1);
    vl_mysql_pool_free(p);

    vl_mysql_pool_options_init(&o);
    o.min_idle = 0; /* no replacement opened behind the test's back */
    o.max_lifetime_ms = 100;
    p = vl_mysql_pool_new(loop, tcp_url(), &o);
    id = pool_int(loop, p, "SELECT CONNECTION_ID()");
    nap(loop, 400);
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
    assert_int_equal(st.closed_lifetime, 1);
    assert_true(pool_int(loop, p, "SELECT CONNECTION_ID()") != id);
    vl_mysql_pool_free(p);

    vl_mysql_pool_options_init(&o);
    o.keepalive_ms = 50;
    o.min_idle = 2;
    o.max_size = 3;
    p = vl_mysql_pool_new(loop, tcp_url(), &o);
    nap(loop, 300);
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
    assert_int_equal(st.open, 2);
    assert_int_equal(st.idle, 2);
    assert_int_equal((st.closed_dirty + st.closed_broken) + st.closed_idle + st.closed_lifetime, 0);
    pool_exec(loop, p, "SELECT 1");
    finish(loop, p);
}

typedef struct killer {
    vl_mysql *k;
    const char *sql;
    int killed;
} killer;

static void killed_cb(vl_future *f, void *ud)
{
    killer *kl = ud;

    assert_int_equal(vl_future_status(f), VL_OK);
    kl->killed++;
}

/* Sends the KILL (the statement is written inside vl_mysql_query), then
 * blocks the loop: the hang-up of the killed connection and the pool's due
 * timer are then seen in one loop pass. */
static void kill_and_stall_cb(vl_future *f, void *ud)
{
    killer *kl = ud;

    (void)f;
    vl_future_then(vl_mysql_query(kl->k, kl->sql), killed_cb, kl);
    usleep(200 * 1000);
}

/* keepalive_ms: an idle connection killed on the server, whose hang-up and
 * the keepalive tick arrive in the same loop pass. The ping fails inside the
 * call that sends it; the pool must survive that and serve the next query on
 * a fresh connection. */
static void keepalive_killed(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool_options o;
    vl_mysql_pool *p;
    vl_pool_stats st;
    killer kl = {0};
    char sql[64];
    int64_t id;
    vl_future *f;

    (void)state;
    vl_mysql_pool_options_init(&o);
    o.max_size = 1;
    o.keepalive_ms = 50;
    p = vl_mysql_pool_new(loop, tcp_url(), &o);
    id = pool_int(loop, p, "SELECT CONNECTION_ID()");
    kl.k = vl_mysql_new(loop, tcp_url(), NULL);
    f = tu_wait_for(loop, vl_mysql_ready(kl.k));
    assert_int_equal(vl_future_status(f), VL_OK);
    vl_future_free(f);
    snprintf(sql, sizeof(sql), "KILL CONNECTION %lld", (long long)id);
    kl.sql = sql;
    vl_future_then(vl_loop_sleep(loop, 1), kill_and_stall_cb, &kl);
    nap(loop, 300);
    assert_int_equal(kl.killed, 1);
    vl_mysql_free(kl.k);
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
    assert_int_equal((st.closed_dirty + st.closed_broken), 1);
    assert_int_equal(st.busy, 0);
    assert_true(pool_int(loop, p, "SELECT CONNECTION_ID()") != id);
    finish(loop, p);
}

/* A request made while an allocation was set to fail either succeeded,
 * with the right value when `want` is given, or failed with VL_ENOMEM:
 * never another status, which would mean an out-of-memory path that
 * reports the wrong thing. */
static void check_oom_status(vl_future *f, long n, const char *want)
{
    int st = vl_future_status(f);

    if (st == VL_OK) {
        if (want != NULL)
            assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, NULL),
                                want);
        return;
    }
    if (st != VL_ENOMEM)
        fail_msg("allocation %ld failed: status %d (%s), wanted VL_OK or VL_ENOMEM", n, st,
                 vl_future_error(f));
}

/* Out of memory at each allocation of pool + query: clean errors, no leak.
 * The query's result is bigger than a result's first chunk, which the
 * loop's cache hands out without an allocation once the pool's connect
 * freed one: the query then still allocates, and its failure is seen. */
#define OOM_SQL "SELECT 1, REPEAT('x', 2000)"
static void pool_out_of_memory(void **state)
{
    long n, total;
    int ok = 0, failed = 0;

    (void)state;
    tcp_url();
    {
        vl_loop *loop = vl_loop_new();
        vl_mysql_pool *p;
        vl_future *f;
        tu_alloc_fail_at(0);
        p = vl_mysql_pool_new(loop, url_buf, NULL);
        f = tu_wait_for(loop, vl_mysql_pool_query(p, OOM_SQL));
        assert_int_equal(vl_future_status(f), VL_OK);
        vl_future_free(f);
        vl_mysql_pool_free(p);
        total = tu_alloc_count();
        vl_loop_run(loop);
        tu_loop_finish(loop);
    }
    for (n = 1; n <= total + 2; n++) {
        vl_loop *loop;
        vl_mysql_pool_options o;
        vl_mysql_pool *p;
        vl_future *f;
        tu_alloc_fail_at(n);
        loop = vl_loop_new();
        if (loop == NULL)
            continue;
        vl_mysql_pool_options_init(&o);
        o.acquire_timeout_ms = 2000;
        p = vl_mysql_pool_new(loop, url_buf, &o);
        if (p != NULL) {
            f = vl_mysql_pool_query(p, OOM_SQL);
            if (f != NULL) {
                vl_loop_run_until(loop, f);
                check_oom_status(f, n, "1");
                if (vl_future_status(f) == VL_OK)
                    ok++;
                else
                    failed++;
                vl_future_free(f);
            }
            vl_mysql_pool_free(p);
        }
        vl_loop_run(loop);
        tu_alloc_fail_at(0);
        tu_loop_finish(loop);
    }
    assert_true(ok > 0);
    assert_true(failed > 0);
}

/* Out of memory at each allocation of a transaction (begin, a prepared
 * statement inside, commit): each step either succeeds with the right
 * result or fails with VL_ENOMEM, and nothing leaks. */
static void tx_out_of_memory(void **state)
{
    long n, total = 0;
    int ok = 0, failed = 0;

    (void)state;
    tcp_url();
    for (n = 0; n == 0 || n <= total + 2; n++) {
        vl_loop *loop = vl_loop_new();
        vl_mysql_pool_options o;
        vl_mysql_pool *p;
        vl_future *f;
        vl_mysql_tx *tx;
        vl_mysql_param prm = vl_mysql_p_int64(42);
        int done = 0;

        assert_non_null(loop);
        vl_mysql_pool_options_init(&o);
        o.acquire_timeout_ms = 5000;
        p = vl_mysql_pool_new(loop, url_buf, &o);
        assert_non_null(p);
        /* The pool's connection is set up before the failure is armed, so
         * the count covers the transaction alone. */
        pool_exec(loop, p, "SELECT 1");
        tu_alloc_fail_at(n);
        f = vl_mysql_pool_begin(p);
        if (f != NULL) {
            vl_loop_run_until(loop, f);
            check_oom_status(f, n, NULL);
            tx = vl_future_status(f) == VL_OK ? vl_future_take(f) : NULL;
            vl_future_free(f);
            if (tx != NULL) {
                f = vl_mysql_tx_execute(tx, "SELECT ?", &prm, 1);
                if (f != NULL) {
                    vl_loop_run_until(loop, f);
                    check_oom_status(f, n, "42");
                    vl_future_free(f);
                }
                f = vl_mysql_tx_commit(tx);
                if (f == NULL) {
                    vl_mysql_tx_free(tx);
                } else {
                    vl_loop_run_until(loop, f);
                    check_oom_status(f, n, NULL);
                    done = vl_future_status(f) == VL_OK;
                    vl_future_free(f);
                }
            }
        }
        if (n == 0) {
            total = tu_alloc_count();
            assert_true(done);
        }
        if (done)
            ok++;
        else
            failed++;
        tu_alloc_fail_at(0);
        vl_mysql_pool_free(p);
        vl_loop_run(loop);
        tu_loop_finish(loop);
    }
    assert_true(ok > 1);
    assert_true(failed > 0);
}


/* init_sql runs on every connection, and again after a reset. */
static void init_sql_survives_reset(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool_options o;
    vl_mysql_pool *p;
    int64_t id;

    (void)state;
    vl_mysql_pool_options_init(&o);
    o.max_size = 1;
    o.init_sql = "SET @init = 7";
    p = vl_mysql_pool_new(loop, tcp_url(), &o);
    assert_int_equal(pool_int(loop, p, "SELECT @init"), 7);
    id = pool_int(loop, p, "SELECT CONNECTION_ID()");
    pool_exec(loop, p, "SET @init = 8");
    assert_int_equal(pool_int(loop, p, "SELECT @init"), 7);
    assert_int_equal(pool_int(loop, p, "SELECT CONNECTION_ID()"), id);
    finish(loop, p);
}

/* mariadbd killed with statements in flight: each completes once with an
 * error; after a restart the pool recovers with fresh connections. */
static void server_killed(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool_options o;
    vl_mysql_pool *p;
    vl_future *fs[6], *r;
    int calls[6][2];
    vl_pool_stats st;
    size_t i;

    (void)state;
    vl_mysql_pool_options_init(&o);
    o.max_size = 6;
    o.min_idle = 2;
    o.acquire_timeout_ms = 30000;
    p = vl_mysql_pool_new(loop, tcp_url(), &o);
    /* Two idle connections and four busy ones when the server dies. */
    pool_exec(loop, p, "SELECT 1");
    memset(calls, 0, sizeof(calls));
    for (i = 0; i < 4; i++) {
        fs[i] = vl_mysql_pool_query(p, "SELECT SLEEP(10)");
        vl_future_then(fs[i], free_cb, calls[i]);
    }
    r = tu_wait_for(loop, vl_loop_sleep(loop, 200));
    vl_future_free(r);
    tu_kill_server("mysql");
    r = tu_wait_for(loop, vl_loop_sleep(loop, 300));
    vl_future_free(r);
    for (i = 0; i < 4; i++) {
        assert_int_equal(calls[i][0], 1);
        assert_int_equal(calls[i][1], VL_ECONN);
    }
    /* While the server is down requests fail after the acquire deadline, and
     * the pool probes rather than storms. */
    {
        vl_pool_stats before;
        (vl_pool_stats_init(&before), vl_mysql_pool_stats_get(p, &before));
        fs[4] = vl_future_timeout(vl_mysql_pool_query(p, "SELECT 1"), 400);
        tu_wait_for(loop, fs[4]);
        assert_true(vl_future_status(fs[4]) == VL_ETIMEDOUT || vl_future_status(fs[4]) == VL_ECONN);
        vl_future_free(fs[4]);
        (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
        assert_true(st.connect_failures - before.connect_failures <= 4);
    }
    assert_int_equal(tu_sh("%s restart-mysql %s >/dev/null", tu_env("VL_TEST_SERVERS"),
                           tu_env("VL_TEST_DIR")),
                     0);
    for (i = 0; i < 3; i++) {
        fs[i] = vl_mysql_pool_query(p, "SELECT 'back'");
    }
    r = tu_wait_for(loop, vl_future_all(loop, fs, 3));
    assert_int_equal(vl_future_status(r), VL_OK);
    for (i = 0; i < 3; i++)
        assert_string_equal(
            vl_mysql_result_value(vl_future_mysql_result(vl_future_child(r, i)), 0, 0, NULL), "back");
    vl_future_free(r);
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
    assert_true((st.closed_dirty + st.closed_broken) >= 4);
    finish(loop, p);
}

/* A program built against an older header: options cut after max_waiters
 * (connect_timeout_ms, the lifetimes and init_sql take their defaults). */
typedef struct old_mysql_pool_options {
    size_t struct_size;
    size_t max_size;
    size_t min_idle;
    uint64_t acquire_timeout_ms;
    size_t max_waiters;
} old_mysql_pool_options;

static void options_from_an_older_header(void **state)
{
    vl_loop *loop = vl_loop_new();
    old_mysql_pool_options o;
    vl_mysql_pool_options big;
    vl_mysql_pool *p;
    vl_pool_stats st;
    vl_future *f;

    (void)state;
    vl_mysql_pool_options_init_sized((vl_mysql_pool_options *)(void *)&o, sizeof(o));
    assert_int_equal(o.max_size, 10);
    assert_int_equal(o.min_idle, 1);
    assert_int_equal(o.acquire_timeout_ms, 5000);
    assert_true(o.max_waiters == SIZE_MAX); /* unbounded: the deadline bounds waiting */
    o.max_size = 2;
    o.min_idle = 2;
    p = vl_mysql_pool_new(loop, tcp_url(), (const vl_mysql_pool_options *)(const void *)&o);
    vl_future_free(tu_run_cmd(loop, vl_mysql_pool_ready(p), VL_OK));
    /* Nobody waits any more: idle connections and the maintenance timer
     * do not hold the loop (the loop-alive rule). */
    assert_int_equal(vl_loop_alive(loop), 0);
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
    assert_int_equal(st.open, 2);
    assert_int_equal(st.ready, 2);
    assert_int_equal(st.connects, 2);
    pool_exec(loop, p, "SELECT 1");
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
    assert_int_equal(st.requests, 1);
    vl_mysql_pool_free(p);

    vl_mysql_pool_options_init(&big);
    big.struct_size = sizeof(big) + 16;
    p = vl_mysql_pool_new(loop, tcp_url(), &big);
    f = tu_run_cmd(loop, vl_mysql_pool_query(p, "SELECT 1"), VL_EINVAL);
    assert_non_null(strstr(vl_future_error(f), "newer header"));
    vl_future_free(f);
    vl_future_free(tu_run_cmd(loop, vl_mysql_pool_ready(p), VL_EINVAL));
    finish(loop, p);
}

/* Readiness like the Redis pool's; a failing endpoint fails it with the
 * connect error, and a deadline names what it waited for. */
static void pool_ready(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool_options o;
    vl_mysql_pool *p;
    vl_future *f;

    (void)state;
    vl_mysql_pool_options_init(&o);
    o.min_idle = 0;
    p = vl_mysql_pool_new(loop, tcp_url(), &o);
    vl_future_free(tu_run_cmd(loop, vl_mysql_pool_ready(p), VL_OK)); /* at once */
    vl_mysql_pool_free(p);
    p = vl_mysql_pool_new(loop, "mysql://u:secret@127.0.0.1:1/db", NULL);
    f = tu_run_cmd(loop, vl_mysql_pool_ready(p), VL_ECONN);
    assert_non_null(strstr(vl_future_error(f), "127.0.0.1:1"));
    assert_null(strstr(vl_future_error(f), "secret"));
    vl_future_free(f);
    f = tu_run_cmd(loop, vl_future_timeout(vl_mysql_pool_query(p, "SELECT 1"), 30), VL_ETIMEDOUT);
    assert_non_null(strstr(vl_future_error(f), "SELECT waiting for a connection of pool mysql://"));
    assert_null(strstr(vl_future_error(f), "secret"));
    vl_future_free(f);
    finish(loop, p);
}

typedef struct back_state {
    vl_mysql_pool *p;
    int calls;
    size_t idle_seen, busy_seen;
} back_state;

static void note_idle(vl_future *f, void *ud)
{
    back_state *b = ud;
    vl_pool_stats st;

    assert_int_equal(vl_future_status(f), VL_OK);
    vl_pool_stats_init(&st);
    vl_mysql_pool_stats_get(b->p, &st);
    b->idle_seen = st.idle;
    b->busy_seen = st.busy;
    b->calls++;
}

/* A statement made while a connection is free goes straight to it; the
 * connection is back in the pool by the time the statement's callback
 * runs, so a chain of statements reuses one connection. A statement
 * cancelled there closes that connection (its reply can no longer be
 * matched) and the pool carries on; one refused by the server leaves it
 * clean and idle. Counted exactly once each. */
static void direct_statements_come_back(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool *p = pool_new(loop, 2);
    back_state b = {p, 0, 0, 0};
    vl_pool_stats st;
    vl_future *f;
    int i;

    (void)state;
    vl_future_free(tu_run_cmd(loop, vl_mysql_pool_ready(p), VL_OK));
    for (i = 0; i < 50; i++) {
        vl_mysql_param k = vl_mysql_p_int64(i);
        f = vl_mysql_pool_execute(p, "SELECT ? + 0", &k, 1);
        assert_non_null(f);
        vl_future_then(f, note_idle, &b);
        while (b.calls == i)
            tu_sleep_ms(loop, 1);
        assert_int_equal(b.busy_seen, 0);
        assert_int_equal(b.idle_seen, 1);
    }
    vl_pool_stats_init(&st);
    vl_mysql_pool_stats_get(p, &st);
    assert_int_equal(st.connects, 1); /* min_idle 1, and no more needed */
    assert_int_equal(st.requests, 50);

    /* The server refuses: the connection stays and is idle again. */
    f = tu_run_cmd(loop, vl_mysql_pool_query(p, "SELECT * FROM no_such_table_here"), VL_ESERVER);
    vl_future_free(f);
    vl_pool_stats_init(&st);
    vl_mysql_pool_stats_get(p, &st);
    assert_int_equal(st.idle, 1);
    assert_int_equal(st.closed_broken + st.closed_dirty, 0);

    /* Cancelled while it runs: that connection goes, the next statement
     * gets a new one. */
    f = vl_mysql_pool_query(p, "SELECT SLEEP(2)");
    tu_sleep_ms(loop, 50);
    vl_future_cancel(f);
    f = tu_wait_for(loop, f);
    assert_int_equal(vl_future_status(f), VL_ECANCELED);
    vl_future_free(f);
    pool_exec(loop, p, "SELECT 1");
    vl_pool_stats_init(&st);
    vl_mysql_pool_stats_get(p, &st);
    assert_int_equal(st.busy, 0);
    assert_int_equal(st.pending, 0);
    assert_true(st.connects >= 2);
    vl_mysql_pool_free(p);
    tu_finish(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(gather_32, tu_setup),
        cmocka_unit_test_setup(clean_return, tu_setup),
        cmocka_unit_test_setup(bounded_waiting, tu_setup),
        cmocka_unit_test_setup(default_pool_queues_10000, tu_setup),
        cmocka_unit_test_setup(small_max_waiters_refuses, tu_setup),
        cmocka_unit_test_setup(waiters_time_out, tu_setup),
        cmocka_unit_test_setup(deadline_follows_each_waiter, tu_setup),
        cmocka_unit_test_setup(bulk_insert_1000, tu_setup),
        cmocka_unit_test_setup(bulk_bad_params, tu_setup),
        cmocka_unit_test_setup(deadlines, tu_setup),
        cmocka_unit_test_setup(transactions, tu_setup),
        cmocka_unit_test_setup(free_with_pending, tu_setup),
        cmocka_unit_test_setup(bad_url, tu_setup),
        cmocka_unit_test_setup(free_self_in_loop_teardown, tu_setup),
        cmocka_unit_test_setup(pool_bad_params, tu_setup),
        cmocka_unit_test_setup(schema_restored, tu_setup),
        cmocka_unit_test_setup(named_locks, tu_setup),
        cmocka_unit_test_setup(failed_commit, tu_setup),
        cmocka_unit_test_setup(idle_eviction, tu_setup),
        cmocka_unit_test_setup(init_sql_survives_reset, tu_setup),
        cmocka_unit_test_setup(housekeeping, tu_setup),
        cmocka_unit_test_setup(keepalive_killed, tu_setup),
        cmocka_unit_test_setup(pool_out_of_memory, tu_setup),
        cmocka_unit_test_setup(tx_out_of_memory, tu_setup),
        cmocka_unit_test_setup(server_killed, tu_setup),
        cmocka_unit_test_setup(options_from_an_older_header, tu_setup),
        cmocka_unit_test_setup(pool_ready, tu_setup),
        cmocka_unit_test_setup(direct_statements_come_back, tu_setup),
    };

    return tu_run("mysql_pool", tests, sizeof(tests) / sizeof(tests[0]));
}
