/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_mysql_cluster.c - a primary and its replica behind one
 * vl_mysql_cluster, against the harness's GTID pair (mysql-primary,
 * server_id 1, and mysql-replica, server_id 2, read_only): routing, lag,
 * read-your-writes, the circuit breaker, failover, 1000 requests through a
 * kill -9, and the lifecycle rules. Each test puts back what it changed
 * (slave threads, MASTER_DELAY, read_only, killed servers).
 */
#include "testutil.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

static char url_buf[4][768];
static int url_slot;

/* mysql://user:pw@127.0.0.1:P[,127.0.0.1:R]/db?extra */
static const char *cluster_url(int with_replica, const char *extra)
{
    char *u = url_buf[url_slot++ % 4];

    snprintf(u, sizeof(url_buf[0]), "mysql://%s:%s@127.0.0.1:%s%s%s/%s%s%s",
             tu_env("VL_TEST_MYSQL_USER"), tu_env("VL_TEST_MYSQL_PASSWORD"),
             tu_env("VL_TEST_MYSQL_PRIMARY_PORT"), with_replica ? ",127.0.0.1:" : "",
             with_replica ? tu_env("VL_TEST_MYSQL_REPLICA_PORT") : "", tu_env("VL_TEST_MYSQL_DB"),
             extra != NULL ? "?" : "", extra != NULL ? extra : "");
    return u;
}

static const char *host_url(const char *port_var)
{
    char *u = url_buf[url_slot++ % 4];

    snprintf(u, sizeof(url_buf[0]), "mysql://%s:%s@127.0.0.1:%s/%s",
             tu_env("VL_TEST_MYSQL_USER"), tu_env("VL_TEST_MYSQL_PASSWORD"), tu_env(port_var),
             tu_env("VL_TEST_MYSQL_DB"));
    return u;
}

/* Runs `sql` on one server directly (not through the cluster): the test's
 * own hands on the pair. */
static void admin(vl_loop *loop, const char *port_var, const char *sql)
{
    vl_mysql *c = vl_mysql_new(loop, host_url(port_var), NULL);
    vl_future *f = tu_wait_for(loop, vl_mysql_query(c, sql));

    if (vl_future_status(f) != VL_OK)
        fail_msg("%s on %s: %s", sql, port_var, vl_future_error(f));
    vl_future_free(f);
    vl_mysql_free(c);
}

/* The first row's cell `col` of a result (static copy), "" for none. */
static const char *cell(vl_future *f, const char *col)
{
    static char buf[64];
    const vl_mysql_result *r = vl_future_mysql_result(f);
    long i = vl_mysql_result_column_index(r, col);
    const char *v = i >= 0 ? vl_mysql_result_value(r, 0, (size_t)i, NULL) : NULL;

    snprintf(buf, sizeof(buf), "%s", v != NULL ? v : "");
    return buf;
}

/* Each test ends by putting the pair back as it found it; this setup also
 * repairs what a failed test could not (a killed server, stopped threads,
 * a MASTER_DELAY, a writable replica), so that one failure stays one. */
static int pair_setup(void **state)
{
    vl_loop *loop;
    vl_mysql *c;
    vl_future *f;
    int sane, i;

    tu_setup(state);
    /* A server a failed test left stopped (SIGSTOP) goes on. */
    kill((pid_t)tu_server_pid("mysql-primary"), SIGCONT);
    kill((pid_t)tu_server_pid("mysql-replica"), SIGCONT);
    loop = vl_loop_new();
    for (i = 0; i < 2; i++) {
        const char *var = i ? "VL_TEST_MYSQL_REPLICA_PORT" : "VL_TEST_MYSQL_PRIMARY_PORT";
        c = vl_mysql_new(loop, host_url(var), NULL);
        f = tu_wait_for(loop, vl_mysql_ready(c));
        if (vl_future_status(f) == VL_ECONN)
            tu_restart_server(i ? "mysql-replica" : "mysql-primary");
        vl_future_free(f);
        vl_mysql_free(c);
    }
    c = vl_mysql_new(loop, host_url("VL_TEST_MYSQL_REPLICA_PORT"), NULL);
    f = tu_wait_for(loop, vl_mysql_query(c, "SHOW SLAVE STATUS"));
    sane = vl_future_status(f) == VL_OK && strcmp(cell(f, "SQL_Delay"), "0") == 0 &&
           strcmp(cell(f, "Slave_SQL_Running"), "Yes") == 0;
    vl_future_free(f);
    if (!sane) {
        vl_future_free(tu_wait_for(loop, vl_mysql_query(c, "STOP SLAVE")));
        vl_future_free(tu_wait_for(loop, vl_mysql_query(c, "CHANGE MASTER TO MASTER_DELAY = 0")));
        vl_future_free(tu_wait_for(loop, vl_mysql_query(c, "START SLAVE")));
        /* Until both threads run again and it has caught up. */
        for (;;) {
            f = tu_wait_for(loop, vl_mysql_query(c, "SHOW SLAVE STATUS"));
            sane = strcmp(cell(f, "Slave_IO_Running"), "Yes") == 0 &&
                   strcmp(cell(f, "Slave_SQL_Running"), "Yes") == 0 &&
                   strcmp(cell(f, "Seconds_Behind_Master"), "0") == 0;
            vl_future_free(f);
            if (sane)
                break;
            tu_sleep_ms(loop, 100);
        }
    }
    vl_future_free(tu_wait_for(loop, vl_mysql_query(c, "SET GLOBAL read_only = 1")));
    vl_mysql_free(c);
    vl_loop_free(loop);
    return tu_setup(state); /* the allocation count starts at zero */
}

/* MASTER_DELAY on the replica (both threads must stop to change it). */
static void set_delay(vl_loop *loop, int seconds)
{
    char sql[64];

    snprintf(sql, sizeof(sql), "CHANGE MASTER TO MASTER_DELAY = %d", seconds);
    admin(loop, "VL_TEST_MYSQL_REPLICA_PORT", "STOP SLAVE");
    admin(loop, "VL_TEST_MYSQL_REPLICA_PORT", sql);
    admin(loop, "VL_TEST_MYSQL_REPLICA_PORT", "START SLAVE");
}

static void fast_options(vl_mysql_cluster_options *o, vl_mysql_pool_options *po)
{
    vl_mysql_cluster_options_init(o);
    vl_mysql_pool_options_init(po);
    po->acquire_timeout_ms = 20000;
    o->pool = po;
    o->check_interval_ms = 100;
    o->check_timeout_ms = 1000;
    o->breaker_failures = 2;
    o->breaker_open_ms = 200;
}

static vl_mysql_cluster *cluster_new(vl_loop *loop, const char *url,
                                     const vl_mysql_cluster_options *o)
{
    vl_mysql_cluster *cl = vl_mysql_cluster_new(loop, url, o);

    assert_non_null(cl);
    vl_future_free(tu_run_cmd(loop, vl_mysql_cluster_ready(cl), VL_OK));
    return cl;
}

static void refresh(vl_loop *loop, vl_mysql_cluster *cl)
{
    vl_future_free(tu_run_cmd(loop, vl_mysql_cluster_refresh(cl), VL_OK));
}

static vl_mysql_host_stats host(vl_mysql_cluster *cl, size_t i)
{
    vl_mysql_host_stats s;

    vl_mysql_host_stats_init(&s);
    assert_int_equal(vl_mysql_cluster_host_stats(cl, i, &s), VL_OK);
    return s;
}

/* Refreshes until host i is in `state` (the watchdog bounds it). */
static void wait_state(vl_loop *loop, vl_mysql_cluster *cl, size_t i, int state)
{
    for (;;) {
        vl_mysql_host_stats s;
        refresh(loop, cl);
        s = host(cl, i);
        if (s.state == state)
            return;
        tu_sleep_ms(loop, 100);
    }
}

/* Refreshes until host i is (or is not) the primary. */
static void wait_primary(vl_loop *loop, vl_mysql_cluster *cl, size_t i, int yes)
{
    for (;;) {
        refresh(loop, cl);
        if (host(cl, i).primary == yes)
            return;
        tu_sleep_ms(loop, 100);
    }
}

static int64_t first_int(vl_future *f)
{
    int64_t v = -1;

    if (vl_future_status(f) != VL_OK)
        fail_msg("%s", vl_future_error(f));
    assert_int_equal(vl_mysql_result_int64(vl_future_mysql_result(f), 0, 0, &v), VL_OK);
    return v;
}

/* @@server_id of where a statement ran: 1 is the primary, 2 the replica. */
static int64_t read_id(vl_loop *loop, vl_mysql_cluster *cl, unsigned flags)
{
    vl_future *f = tu_wait_for(loop, vl_mysql_cluster_read(cl, "SELECT @@server_id", flags));
    int64_t v = first_int(f);

    vl_future_free(f);
    return v;
}

static int64_t write_id(vl_loop *loop, vl_mysql_cluster *cl)
{
    vl_future *f = tu_wait_for(loop, vl_mysql_cluster_query(cl, "SELECT @@server_id"));
    int64_t v = first_int(f);

    vl_future_free(f);
    return v;
}

static void ok(vl_loop *loop, vl_future *f)
{
    f = tu_wait_for(loop, f);
    if (vl_future_status(f) != VL_OK)
        fail_msg("%s", vl_future_error(f));
    vl_future_free(f);
}

static void finish(vl_loop *loop, vl_mysql_cluster *cl)
{
    vl_loop_run(loop);
    assert_int_equal(vl_loop_alive(loop), 0);
    vl_mysql_cluster_free(cl);
    vl_loop_run(loop);
    tu_loop_finish(loop);
}

/* Counts each future's completions and keeps its status. */
typedef struct tally {
    int calls;
    int status;
} tally;

static void tally_cb(vl_future *f, void *ud)
{
    tally *t = ud;

    t->calls++;
    t->status = vl_future_status(f);
}

/* ---- tests ---- */

/* Writes, transactions and unmarked statements run on the primary; reads
 * on the replica, spread by outstanding count; the stats say so. */
static void routing(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_cluster_options o;
    vl_mysql_pool_options po;
    vl_mysql_cluster *cl;
    vl_future *fs[40], *all, *f;
    vl_mysql_host_stats s0, s1;
    vl_mysql_tx *tx;
    size_t i;

    (void)state;
    fast_options(&o, &po);
    /* Issued before the first checks ended: they wait for them, then go
     * where they belong. */
    cl = vl_mysql_cluster_new(loop, cluster_url(1, NULL), &o);
    assert_non_null(cl);
    assert_int_equal(read_id(loop, cl, 0), 2);
    vl_mysql_cluster_free(cl);
    cl = vl_mysql_cluster_new(loop, cluster_url(1, NULL), &o);
    assert_int_equal(write_id(loop, cl), 1);
    vl_future_free(tu_run_cmd(loop, vl_mysql_cluster_ready(cl), VL_OK));
    assert_int_equal(vl_mysql_cluster_hosts(cl), 2);
    assert_int_equal(write_id(loop, cl), 1);
    assert_int_equal(read_id(loop, cl, 0), 2);
    {
        vl_mysql_param p = vl_mysql_p_int64(40);
        f = tu_wait_for(loop, vl_mysql_cluster_read_execute(cl, "SELECT ? + 2, @@server_id", &p,
                                                            1, 0));
        assert_int_equal(vl_future_status(f), VL_OK);
        assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, NULL), "42");
        assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 1, NULL), "2");
        vl_future_free(f);
        f = tu_wait_for(loop, vl_mysql_cluster_execute(cl, "SELECT ? + 2, @@server_id", &p, 1));
        assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 1, NULL), "1");
        vl_future_free(f);
    }
    /* A transaction is a lease on the primary. */
    f = tu_wait_for(loop, vl_mysql_cluster_begin(cl));
    assert_int_equal(vl_future_status(f), VL_OK);
    tx = vl_future_take(f);
    assert_non_null(tx);
    vl_future_free(f);
    f = tu_wait_for(loop, vl_mysql_tx_query(tx, "SELECT @@server_id"));
    assert_int_equal(first_int(f), 1);
    vl_future_free(f);
    ok(loop, vl_mysql_cluster_commit(cl, tx));
    /* Forty reads at once: every one on the replica, none left over. */
    for (i = 0; i < 40; i++)
        fs[i] = vl_mysql_cluster_read(cl, "SELECT @@server_id, SLEEP(0.01)", 0);
    s1 = host(cl, 1);
    assert_int_equal(s1.outstanding, 40);
    all = tu_wait_for(loop, vl_future_all(loop, fs, 40));
    assert_int_equal(vl_future_status(all), VL_OK);
    for (i = 0; i < 40; i++)
        assert_string_equal(
            vl_mysql_result_value(vl_future_mysql_result(vl_future_child(all, i)), 0, 0, NULL),
            "2");
    vl_future_free(all);
    s0 = host(cl, 0);
    s1 = host(cl, 1);
    assert_int_equal(s0.state, VL_MYSQL_HOST_HEALTHY);
    assert_int_equal(s0.primary, 1);
    assert_int_equal(s0.candidate, 1);
    assert_int_equal(s0.read_only, 0);
    assert_int_equal(s0.lag_ms, 0);
    assert_int_equal(s1.state, VL_MYSQL_HOST_HEALTHY);
    assert_int_equal(s1.primary, 0);
    assert_int_equal(s1.candidate, 0);
    assert_int_equal(s1.read_only, 1);
    assert_true(s1.lag_ms >= 0);
    assert_int_equal(s0.outstanding + s1.outstanding, 0);
    assert_int_equal(s1.requests, 42);
    assert_true(s0.checks >= 1 && s1.checks >= 1);
    assert_non_null(strstr(s1.display, tu_env("VL_TEST_MYSQL_REPLICA_PORT")));
    assert_null(strstr(s1.display, tu_env("VL_TEST_MYSQL_PASSWORD")));
    /* The same through explicit URLs. */
    vl_mysql_cluster_free(cl);
    {
        const char *p[1], *r[1];
        p[0] = host_url("VL_TEST_MYSQL_PRIMARY_PORT");
        r[0] = host_url("VL_TEST_MYSQL_REPLICA_PORT");
        cl = vl_mysql_cluster_new_hosts(loop, p, 1, r, 1, &o);
        vl_future_free(tu_run_cmd(loop, vl_mysql_cluster_ready(cl), VL_OK));
        assert_int_equal(write_id(loop, cl), 1);
        assert_int_equal(read_id(loop, cl, 0), 2);
    }
    finish(loop, cl);
}

/* A bad URL or option is VL_EINVAL with a reason, through every future. */
static void bad_urls(void **state)
{
    static const char *const bad[] = {
        "mysql://u:secretpw@127.0.0.1:1,,127.0.0.1:2/db",
        "mysql://u:secretpw@127.0.0.1:99999/db",
        "mysql://u:secretpw@127.0.0.1:1,127.0.0.1:2/db?bogus=1",
        "mysql://u:secretpw@127.0.0.1:1/db?primaries=x",
        "nothing here",
        NULL,
    };
    vl_loop *loop = vl_loop_new();
    vl_mysql_cluster_options o;
    vl_mysql_cluster *cl;
    vl_future *f;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cl = vl_mysql_cluster_new(loop, bad[i], NULL);
        assert_non_null(cl);
        assert_int_equal(vl_mysql_cluster_hosts(cl), 0);
        f = tu_run_cmd(loop, vl_mysql_cluster_read(cl, "SELECT 1", 0), VL_EINVAL);
        assert_true(strlen(vl_future_error(f)) > 0);
        assert_null(strstr(vl_future_error(f), "secretpw"));
        vl_future_free(f);
        vl_future_free(tu_run_cmd(loop, vl_mysql_cluster_query(cl, "SELECT 1"), VL_EINVAL));
        vl_future_free(tu_run_cmd(loop, vl_mysql_cluster_ready(cl), VL_EINVAL));
        vl_mysql_cluster_free(cl);
    }
    /* 65 hosts is one too many; so is none. */
    {
        char big[65 * 20 + 64];
        size_t n = 0;
        n += (size_t)snprintf(big + n, sizeof(big) - n, "mysql://u@");
        for (i = 0; i < 65; i++)
            n += (size_t)snprintf(big + n, sizeof(big) - n, "%s127.0.0.1:%zu", i ? "," : "",
                                  1000 + i);
        snprintf(big + n, sizeof(big) - n, "/db");
        cl = vl_mysql_cluster_new(loop, big, NULL);
        f = tu_run_cmd(loop, vl_mysql_cluster_read(cl, "SELECT 1", 0), VL_EINVAL);
        assert_non_null(strstr(vl_future_error(f), "65 hosts"));
        vl_future_free(f);
        vl_mysql_cluster_free(cl);
        cl = vl_mysql_cluster_new_hosts(loop, NULL, 0, NULL, 0, NULL);
        vl_future_free(tu_run_cmd(loop, vl_mysql_cluster_begin(cl), VL_EINVAL));
        vl_mysql_cluster_free(cl);
    }
    /* Options from a newer header, and unknown read flags. */
    vl_mysql_cluster_options_init(&o);
    o.struct_size = sizeof(o) + 8;
    cl = vl_mysql_cluster_new(loop, "mysql://u@127.0.0.1:1/db", &o);
    f = tu_run_cmd(loop, vl_mysql_cluster_query(cl, "SELECT 1"), VL_EINVAL);
    assert_non_null(strstr(vl_future_error(f), "struct_size"));
    vl_future_free(f);
    vl_mysql_cluster_free(cl);
    cl = vl_mysql_cluster_new(loop, "mysql://u@127.0.0.1:1/db", NULL);
    vl_future_free(tu_run_cmd(loop, vl_mysql_cluster_read(cl, "SELECT 1", 0x100), VL_EINVAL));
    vl_future_free(tu_run_cmd(loop, vl_mysql_cluster_commit(cl, NULL), VL_EINVAL));
    vl_mysql_cluster_free(cl);
    assert_null(vl_mysql_cluster_read(NULL, "SELECT 1", 0));
    assert_int_equal(vl_mysql_cluster_hosts(NULL), 0);
    tu_finish(loop);
}

/* The URL's host list: IPv6 in brackets, the cluster's parameters taken
 * off before the connections see them, the password never shown. Nothing
 * listens on those ports: every future still completes, with the reason. */
static void url_forms(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_cluster *cl;
    vl_mysql_host_stats s0, s1;
    vl_future *f;

    (void)state;
    cl = vl_mysql_cluster_new(
        loop, "mysql://u:se%40cret@[::1]:1,127.0.0.1:2/db?connect_timeout_ms=500&primaries=2"
              "&max_lag_ms=7&read_your_writes=0&galera=0",
        NULL);
    assert_int_equal(vl_mysql_cluster_hosts(cl), 2);
    s0 = host(cl, 0);
    s1 = host(cl, 1);
    assert_string_equal(s0.display, "mysql://[::1]:1/db");
    assert_string_equal(s1.display, "mysql://127.0.0.1:2/db");
    assert_int_equal(s0.candidate, 1);
    assert_int_equal(s1.candidate, 1);
    assert_int_equal(s0.state, VL_MYSQL_HOST_UNKNOWN);
    f = tu_run_cmd(loop, vl_mysql_cluster_ready(cl), VL_ECONN);
    assert_non_null(strstr(vl_future_error(f), "mysql://[::1]:1/db: down"));
    assert_non_null(strstr(vl_future_error(f), "mysql://127.0.0.1:2/db: down"));
    assert_null(strstr(vl_future_error(f), "se@cret"));
    vl_future_free(f);
    f = tu_run_cmd(loop, vl_mysql_cluster_query(cl, "SELECT 1"), VL_ECONN);
    assert_non_null(strstr(vl_future_error(f), "no writable primary"));
    vl_future_free(f);
    f = tu_run_cmd(loop, vl_mysql_cluster_read(cl, "SELECT 1", 0), VL_ECONN);
    assert_non_null(strstr(vl_future_error(f), "no healthy replica"));
    vl_future_free(f);
    assert_int_equal(host(cl, 0).state, VL_MYSQL_HOST_DOWN);
    finish(loop, cl);
}

/* A replica whose SQL thread stopped is skipped (reads go to the primary,
 * or fail when they must not), and used again once it runs. */
static void lagging_replica(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_cluster_options o;
    vl_mysql_pool_options po;
    vl_mysql_cluster *cl;
    vl_mysql_host_stats s;
    vl_future *f;

    (void)state;
    fast_options(&o, &po);
    cl = cluster_new(loop, cluster_url(1, NULL), &o);
    assert_int_equal(read_id(loop, cl, 0), 2);
    admin(loop, "VL_TEST_MYSQL_REPLICA_PORT", "STOP SLAVE SQL_THREAD");
    ok(loop, vl_mysql_cluster_query(cl, "CREATE TABLE IF NOT EXISTS lag_t (id INT PRIMARY KEY)"));
    ok(loop, vl_mysql_cluster_query(cl, "REPLACE INTO lag_t VALUES (1)"));
    wait_state(loop, cl, 1, VL_MYSQL_HOST_LAGGING);
    s = host(cl, 1);
    assert_int_equal(s.lag_ms, -1);
    assert_int_equal(read_id(loop, cl, 0), 1);
    f = tu_run_cmd(loop, vl_mysql_cluster_read(cl, "SELECT 1", VL_MYSQL_READ_NO_PRIMARY), VL_ECONN);
    assert_non_null(strstr(vl_future_error(f), "lagging"));
    vl_future_free(f);
    admin(loop, "VL_TEST_MYSQL_REPLICA_PORT", "START SLAVE SQL_THREAD");
    wait_state(loop, cl, 1, VL_MYSQL_HOST_HEALTHY);
    assert_int_equal(read_id(loop, cl, VL_MYSQL_READ_NO_PRIMARY), 2);
    ok(loop, vl_mysql_cluster_query(cl, "DROP TABLE lag_t"));
    finish(loop, cl);
}

/* A replica more than max_lag_ms behind (MASTER_DELAY holds it back) is
 * skipped; with the bound raised it is read again. */
static void delayed_replica(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_cluster_options o;
    vl_mysql_pool_options po;
    vl_mysql_cluster *cl;
    vl_mysql_host_stats s;
    int i;

    (void)state;
    fast_options(&o, &po);
    /* 1 s is the resolution of Seconds_Behind_Master: anything seen above
     * 0 s is too much here. */
    cl = cluster_new(loop, cluster_url(1, "max_lag_ms=500"), &o);
    set_delay(loop, 4);
    ok(loop, vl_mysql_cluster_query(cl, "CREATE TABLE IF NOT EXISTS delay_t (id INT PRIMARY KEY)"));
    /* Writes keep coming, so the replica has events it holds back. */
    for (i = 0;; i++) {
        vl_mysql_param p = vl_mysql_p_int64(i);
        ok(loop, vl_mysql_cluster_execute(cl, "REPLACE INTO delay_t VALUES (?)", &p, 1));
        refresh(loop, cl);
        s = host(cl, 1);
        /* Lagging by its lag, not for the moment its threads restart
         * (lag unknown, -1). */
        if (s.state == VL_MYSQL_HOST_LAGGING && s.lag_ms > 500)
            break;
        tu_sleep_ms(loop, 200);
    }
    assert_int_equal(read_id(loop, cl, 0), 1);
    set_delay(loop, 0);
    wait_state(loop, cl, 1, VL_MYSQL_HOST_HEALTHY);
    assert_int_equal(read_id(loop, cl, 0), 2);
    ok(loop, vl_mysql_cluster_query(cl, "DROP TABLE delay_t"));
    finish(loop, cl);
}

/* Read-your-writes: the replica applies with a delay; a fresh read waits
 * for the write's GTID there (bound as a parameter) and sees the row; when
 * the wait's bound is shorter than the delay, the read goes to the
 * primary and still sees it. */
static void read_your_writes(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_cluster_options o;
    vl_mysql_pool_options po;
    vl_mysql_cluster *cl;
    vl_mysql_host_stats s;
    vl_future *f;
    vl_mysql_param p[2];
    vl_mysql_tx *tx;

    (void)state;
    fast_options(&o, &po);
    o.max_lag_ms = 0; /* the delay is not what this test skips on */
    o.gtid_wait_ms = 20000;
    cl = cluster_new(loop, cluster_url(1, NULL), &o);
    /* A fresh table: a write that changes nothing logs nothing, and so
     * has no GTID to wait for. */
    ok(loop, vl_mysql_cluster_query(cl, "DROP TABLE IF EXISTS ryw"));
    ok(loop, vl_mysql_cluster_query(cl, "CREATE TABLE ryw (id INT PRIMARY KEY, v INT)"));
    set_delay(loop, 1);
    wait_state(loop, cl, 1, VL_MYSQL_HOST_HEALTHY);
    p[0] = vl_mysql_p_int64(1);
    p[1] = vl_mysql_p_int64(7);
    ok(loop, vl_mysql_cluster_execute(cl, "REPLACE INTO ryw VALUES (?, ?)", p, 2));
    assert_true(strlen(vl_mysql_cluster_gtid(cl)) > 0);
    f = tu_wait_for(loop, vl_mysql_cluster_read_execute(cl, "SELECT v, @@server_id FROM ryw WHERE id = ?",
                                                        p, 1, VL_MYSQL_READ_FRESH));
    assert_int_equal(vl_future_status(f), VL_OK);
    assert_int_equal(vl_mysql_result_rows(vl_future_mysql_result(f)), 1);
    assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, NULL), "7");
    assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 1, NULL), "2");
    vl_future_free(f);
    s = host(cl, 1);
    assert_true(s.gtid_waits >= 1);
    assert_int_equal(s.gtid_timeouts, 0);
    /* A transaction's COMMIT counts too. */
    f = tu_wait_for(loop, vl_mysql_cluster_begin(cl));
    tx = vl_future_take(f);
    vl_future_free(f);
    p[1] = vl_mysql_p_int64(8);
    ok(loop, vl_mysql_tx_execute(tx, "REPLACE INTO ryw VALUES (?, ?)", p, 2));
    ok(loop, vl_mysql_cluster_commit(cl, tx));
    f = tu_wait_for(loop, vl_mysql_cluster_read(cl, "SELECT v, @@server_id FROM ryw WHERE id = 1",
                                                VL_MYSQL_READ_FRESH));
    assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, NULL), "8");
    assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 1, NULL), "2");
    vl_future_free(f);
    vl_mysql_cluster_free(cl);

    /* The wait bounded below the delay: it times out (-1) and the read
     * ends on the primary, which has the row. read_your_writes on. */
    set_delay(loop, 3);
    o.gtid_wait_ms = 200;
    o.read_fallback = 0;
    cl = cluster_new(loop, cluster_url(1, "read_your_writes=1"), &o);
    wait_state(loop, cl, 1, VL_MYSQL_HOST_HEALTHY); /* its threads restarted */
    p[1] = vl_mysql_p_int64(9);
    ok(loop, vl_mysql_cluster_execute(cl, "REPLACE INTO ryw VALUES (?, ?)", p, 2));
    f = tu_wait_for(loop, vl_mysql_cluster_read(cl, "SELECT v, @@server_id FROM ryw WHERE id = 1", 0));
    assert_int_equal(vl_future_status(f), VL_OK);
    assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, NULL), "9");
    assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 1, NULL), "1");
    vl_future_free(f);
    s = host(cl, 1);
    assert_int_equal(s.gtid_waits, 1);
    assert_int_equal(s.gtid_timeouts, 1);
    /* STALE skips the wait: it runs on the replica. */
    assert_int_equal(read_id(loop, cl, VL_MYSQL_READ_STALE), 2);
    set_delay(loop, 0);
    ok(loop, vl_mysql_cluster_query(cl, "DROP TABLE ryw"));
    finish(loop, cl);
}

/* kill -9 of the replica: reads move to the primary at once, the breaker
 * opens, one probe at a time asks whether it is back, and once restarted
 * it takes reads again. */
static void breaker(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_cluster_options o;
    vl_mysql_pool_options po;
    vl_mysql_cluster *cl;
    vl_mysql_host_stats s, before;
    uint64_t t0, elapsed;
    int i;

    (void)state;
    fast_options(&o, &po);
    cl = cluster_new(loop, cluster_url(1, NULL), &o);
    assert_int_equal(read_id(loop, cl, 0), 2);
    tu_kill_server("mysql-replica");
    /* Every read succeeds: the lost ones are tried again on the primary. */
    for (i = 0; i < 20; i++)
        assert_int_equal(read_id(loop, cl, 0), 1);
    wait_state(loop, cl, 1, VL_MYSQL_HOST_OPEN);
    before = host(cl, 1);
    assert_true(before.opens >= 1);
    t0 = vl_loop_now_ms(loop);
    /* While it is dead: probes only, one per breaker_open_ms at most. */
    for (i = 0; i < 15; i++) {
        tu_sleep_ms(loop, 100);
        s = host(cl, 1);
        assert_true(s.state == VL_MYSQL_HOST_OPEN || s.state == VL_MYSQL_HOST_HALF_OPEN);
        assert_int_equal(read_id(loop, cl, 0), 1);
    }
    elapsed = vl_loop_now_ms(loop) - t0;
    s = host(cl, 1);
    assert_true(s.probes > before.probes);
    assert_true(s.probes - before.probes <= elapsed / o.breaker_open_ms + 1);
    assert_true(s.checks - before.checks == s.probes - before.probes);
    assert_int_equal(s.outstanding, 0);
    assert_true(strlen(s.last_error) > 0);
    tu_restart_server("mysql-replica");
    wait_state(loop, cl, 1, VL_MYSQL_HOST_HEALTHY);
    s = host(cl, 1);
    assert_int_equal(s.failures, 0);
    assert_int_equal(read_id(loop, cl, 0), 2);
    finish(loop, cl);
}

/* A hung replica (SIGSTOP: connections stay open, nothing answers):
 * reads already sent there are taken back once its breaker opens and
 * succeed on the primary; later ones go to the primary at once. None
 * hangs. SIGCONT brings it back. */
static void hung_replica(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_cluster_options o;
    vl_mysql_pool_options po;
    vl_mysql_cluster *cl;
    vl_future *fs[20], *all;
    pid_t pid = (pid_t)tu_server_pid("mysql-replica");
    size_t i;

    (void)state;
    fast_options(&o, &po);
    o.check_timeout_ms = 300;
    cl = cluster_new(loop, cluster_url(1, NULL), &o);
    assert_int_equal(read_id(loop, cl, 0), 2);
    assert_int_equal(kill(pid, SIGSTOP), 0);
    for (i = 0; i < 20; i++)
        fs[i] = vl_mysql_cluster_read(cl, "SELECT @@server_id", 0);
    all = tu_wait_for(loop, vl_future_all(loop, fs, 20));
    kill(pid, SIGCONT);
    assert_int_equal(vl_future_status(all), VL_OK);
    for (i = 0; i < 20; i++)
        assert_string_equal(
            vl_mysql_result_value(vl_future_mysql_result(vl_future_child(all, i)), 0, 0, NULL),
            "1");
    vl_future_free(all);
    assert_true(host(cl, 1).opens >= 1);
    wait_state(loop, cl, 1, VL_MYSQL_HOST_HEALTHY);
    assert_int_equal(read_id(loop, cl, 0), 2);
    finish(loop, cl);
}

/* Two primary candidates: the primary is killed, writes fail fast, the
 * replica is made writable and writes move there; then everything is put
 * back and the primary is the first candidate again. While no primary
 * answers, reads stay on the replica. */
static void failover(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_cluster_options o;
    vl_mysql_pool_options po;
    vl_mysql_cluster *cl;
    vl_future *f;

    (void)state;
    fast_options(&o, &po);
    cl = cluster_new(loop, cluster_url(1, "primaries=2"), &o);
    assert_int_equal(host(cl, 1).candidate, 1);
    assert_int_equal(write_id(loop, cl), 1);
    tu_kill_server("mysql-primary");
    wait_primary(loop, cl, 0, 0);
    f = tu_run_cmd(loop, vl_mysql_cluster_query(cl, "SELECT @@server_id"), VL_ECONN);
    assert_non_null(strstr(vl_future_error(f), "no writable primary"));
    vl_future_free(f);
    assert_int_equal(read_id(loop, cl, 0), 2);
    admin(loop, "VL_TEST_MYSQL_REPLICA_PORT", "SET GLOBAL read_only = 0");
    wait_primary(loop, cl, 1, 1);
    assert_int_equal(write_id(loop, cl), 2);
    /* Put it back: the primary restarts, the replica is read-only again,
     * and the primary role returns to the first candidate. */
    tu_restart_server("mysql-primary");
    admin(loop, "VL_TEST_MYSQL_REPLICA_PORT", "SET GLOBAL read_only = 1");
    wait_primary(loop, cl, 0, 1);
    assert_int_equal(write_id(loop, cl), 1);
    wait_state(loop, cl, 1, VL_MYSQL_HOST_HEALTHY);
    assert_int_equal(read_id(loop, cl, 0), 2);
    finish(loop, cl);
}

/* With primary_wait_ms, a write waits for a writable primary instead of
 * failing, and times out when none comes. */
static void primary_wait(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_cluster_options o;
    vl_mysql_pool_options po;
    vl_mysql_cluster *cl;
    vl_future *f;
    uint64_t t0;

    (void)state;
    fast_options(&o, &po);
    o.primary_wait_ms = 300;
    /* The replica alone as the one candidate: read-only, so no primary. */
    {
        const char *p[1];
        p[0] = host_url("VL_TEST_MYSQL_REPLICA_PORT");
        cl = vl_mysql_cluster_new_hosts(loop, p, 1, NULL, 0, &o);
    }
    f = tu_run_cmd(loop, vl_mysql_cluster_ready(cl), VL_ECONN);
    assert_non_null(strstr(vl_future_error(f), "read_only"));
    vl_future_free(f);
    assert_int_equal(host(cl, 0).state, VL_MYSQL_HOST_HEALTHY);
    t0 = vl_loop_now_ms(loop);
    f = tu_run_cmd(loop, vl_mysql_cluster_query(cl, "SELECT 1"), VL_ETIMEDOUT);
    assert_true(vl_loop_now_ms(loop) - t0 >= 300); /* never early */
    vl_future_free(f);
    vl_mysql_cluster_free(cl);
    /* It becomes writable while a write waits: the write runs there. */
    o.primary_wait_ms = 60000;
    {
        const char *p[1];
        p[0] = host_url("VL_TEST_MYSQL_REPLICA_PORT");
        cl = vl_mysql_cluster_new_hosts(loop, p, 1, NULL, 0, &o);
    }
    f = vl_mysql_cluster_query(cl, "SELECT @@server_id");
    tu_sleep_ms(loop, 200);
    assert_false(vl_future_done(f));
    admin(loop, "VL_TEST_MYSQL_REPLICA_PORT", "SET GLOBAL read_only = 0");
    f = tu_wait_for(loop, f);
    vl_mysql_cluster_free(cl);
    admin(loop, "VL_TEST_MYSQL_REPLICA_PORT", "SET GLOBAL read_only = 1");
    assert_int_equal(first_int(f), 2);
    vl_future_free(f);
    tu_finish(loop);
}

#define STORM 1000

/* 1000 reads and writes in flight or queued while the primary is killed:
 * each completes exactly once; reads keep landing on the replica. */
static void storm_kill_primary(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_cluster_options o;
    vl_mysql_pool_options po;
    vl_mysql_cluster *cl;
    static tally t[STORM];
    int i, done, reads_ok = 0, writes_ok = 0, writes_failed = 0;

    (void)state;
    fast_options(&o, &po);
    cl = cluster_new(loop, cluster_url(1, NULL), &o);
    ok(loop, vl_mysql_cluster_query(cl, "CREATE TABLE IF NOT EXISTS storm (id INT PRIMARY KEY)"));
    ok(loop, vl_mysql_cluster_query(cl, "DELETE FROM storm"));
    memset(t, 0, sizeof(t));
    for (i = 0; i < STORM; i++) {
        vl_mysql_param p = vl_mysql_p_int64(i);
        vl_future *f = i % 2 ? vl_mysql_cluster_read(cl, "SELECT @@server_id, SLEEP(0.002)", 0)
                             : vl_mysql_cluster_execute(cl, "INSERT INTO storm VALUES (?)", &p, 1);
        assert_non_null(f);
        assert_int_equal(vl_future_then(f, tally_cb, &t[i]), VL_OK);
    }
    tu_sleep_ms(loop, 30);
    tu_kill_server("mysql-primary");
    for (;;) {
        for (i = done = 0; i < STORM; i++)
            done += t[i].calls > 0;
        if (done == STORM)
            break;
        tu_sleep_ms(loop, 50);
    }
    tu_sleep_ms(loop, 200);
    for (i = 0; i < STORM; i++) {
        assert_int_equal(t[i].calls, 1);
        if (i % 2) {
            reads_ok += t[i].status == VL_OK;
        } else if (t[i].status == VL_OK) {
            writes_ok++;
        } else {
            writes_failed++;
            assert_true(t[i].status == VL_ECONN || t[i].status == VL_ECLOSED ||
                        t[i].status == VL_ETIMEDOUT);
        }
    }
    /* Reads had the replica all along. */
    assert_int_equal(reads_ok, STORM / 2);
    assert_int_equal(writes_ok + writes_failed, STORM / 2);
    printf("# storm: %d writes ok, %d failed\n", writes_ok, writes_failed);
    assert_true(writes_failed > 0);
    tu_restart_server("mysql-primary");
    wait_primary(loop, cl, 0, 1);
    ok(loop, vl_mysql_cluster_query(cl, "DROP TABLE storm"));
    wait_state(loop, cl, 1, VL_MYSQL_HOST_HEALTHY);
    finish(loop, cl);
}

/* 500 reads in flight or queued on the replica when it is killed: every
 * one succeeds, exactly once, the lost and the taken back ones on the
 * primary. */
static void storm_kill_replica(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_cluster_options o;
    vl_mysql_pool_options po;
    vl_mysql_cluster *cl;
    static tally t[STORM / 2];
    int i, done;

    (void)state;
    fast_options(&o, &po);
    cl = cluster_new(loop, cluster_url(1, NULL), &o);
    memset(t, 0, sizeof(t));
    for (i = 0; i < STORM / 2; i++)
        vl_future_then(vl_mysql_cluster_read(cl, "SELECT @@server_id, SLEEP(0.002)", 0), tally_cb,
                       &t[i]);
    assert_true(host(cl, 1).outstanding > 0);
    tu_sleep_ms(loop, 30);
    tu_kill_server("mysql-replica");
    for (;;) {
        for (i = done = 0; i < STORM / 2; i++)
            done += t[i].calls > 0;
        if (done == STORM / 2)
            break;
        tu_sleep_ms(loop, 50);
    }
    tu_sleep_ms(loop, 200);
    for (i = 0; i < STORM / 2; i++) {
        assert_int_equal(t[i].calls, 1);
        assert_int_equal(t[i].status, VL_OK);
    }
    assert_true(host(cl, 0).requests > 0); /* they went to the primary */
    assert_true(host(cl, 1).errors > 0);   /* after failing where they were */
    tu_restart_server("mysql-replica");
    wait_state(loop, cl, 1, VL_MYSQL_HOST_HEALTHY);
    finish(loop, cl);
}

/* Freeing the cluster completes everything with VL_ECANCELED exactly once:
 * requests waiting for the first checks, running ones, readiness; a free
 * from inside a callback; vl_loop_free with a cluster still open. */
static int freed_in_cb;

static void free_cluster_cb(vl_future *f, void *ud)
{
    (void)f;
    freed_in_cb++;
    vl_mysql_cluster_free(ud);
}

static void free_with_pending(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_cluster_options o;
    vl_mysql_pool_options po;
    vl_mysql_cluster *cl;
    tally t[6];
    int i;

    (void)state;
    fast_options(&o, &po);
    memset(t, 0, sizeof(t));
    /* Before the first check ended: they wait; then freed. */
    cl = vl_mysql_cluster_new(loop, cluster_url(1, NULL), &o);
    vl_future_then(vl_mysql_cluster_read(cl, "SELECT 1", 0), tally_cb, &t[0]);
    vl_future_then(vl_mysql_cluster_query(cl, "SELECT 1"), tally_cb, &t[1]);
    vl_future_then(vl_mysql_cluster_ready(cl), tally_cb, &t[2]);
    vl_mysql_cluster_free(cl);
    vl_loop_run(loop);
    for (i = 0; i < 3; i++) {
        assert_int_equal(t[i].calls, 1);
        assert_int_equal(t[i].status, VL_ECANCELED);
    }
    /* Running: a sleep on each host, freed from a callback. */
    memset(t, 0, sizeof(t));
    cl = cluster_new(loop, cluster_url(1, NULL), &o);
    vl_future_then(vl_mysql_cluster_read(cl, "SELECT SLEEP(5)", 0), tally_cb, &t[0]);
    vl_future_then(vl_mysql_cluster_query(cl, "SELECT SLEEP(5)"), tally_cb, &t[1]);
    vl_future_then(vl_mysql_cluster_refresh(cl), tally_cb, &t[2]);
    vl_future_then(vl_loop_sleep(loop, 100), free_cluster_cb, cl);
    freed_in_cb = 0;
    vl_loop_run(loop);
    assert_int_equal(freed_in_cb, 1);
    assert_int_equal(t[0].calls, 1);
    assert_int_equal(t[0].status, VL_ECANCELED);
    assert_int_equal(t[1].calls, 1);
    assert_int_equal(t[1].status, VL_ECANCELED);
    assert_int_equal(t[2].calls, 1);
    /* Cancelling a request waits for nothing: VL_ECANCELED, once. */
    memset(t, 0, sizeof(t));
    cl = cluster_new(loop, cluster_url(1, NULL), &o);
    {
        vl_future *f = vl_mysql_cluster_read(cl, "SELECT SLEEP(5)", 0);
        vl_future_then(f, tally_cb, &t[0]);
        tu_sleep_ms(loop, 50);
        assert_int_equal(vl_future_cancel(f), 1);
        tu_sleep_ms(loop, 50);
        assert_int_equal(t[0].calls, 1);
        assert_int_equal(t[0].status, VL_ECANCELED);
        assert_int_equal(host(cl, 1).outstanding, 0);
    }
    /* vl_loop_free with the cluster and a request still open. */
    vl_future_then(vl_mysql_cluster_query(cl, "SELECT SLEEP(5)"), tally_cb, &t[1]);
    tu_sleep_ms(loop, 20);
    vl_loop_free(loop);
    assert_int_equal(t[1].calls, 1);
    assert_int_equal(t[1].status, VL_ECANCELED);
    assert_int_equal(tu_alloc_live(), 0);
}

/* The header's numbered rules, one by one where the other tests do not
 * already show them. */
static void contract_rules(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_cluster_options o;
    vl_mysql_pool_options po;
    vl_mysql_cluster *cl;
    vl_future *f;
    vl_mysql_tx *tx;
    tally t[3];

    (void)state;
    fast_options(&o, &po);
    memset(t, 0, sizeof(t));
    /* 1: a NULL cluster gives NULL; a bad URL a failed future. */
    assert_null(vl_mysql_cluster_query(NULL, "SELECT 1"));
    assert_null(vl_mysql_cluster_ready(NULL));
    assert_null(vl_mysql_cluster_commit(NULL, NULL));
    /* 2: never inside the call that made it, even when known at once. */
    cl = vl_mysql_cluster_new(loop, "mysql://u@127.0.0.1:1,,/db", NULL);
    vl_future_then(vl_mysql_cluster_read(cl, "SELECT 1", 0), tally_cb, &t[0]);
    assert_int_equal(t[0].calls, 0);
    vl_loop_run(loop);
    assert_int_equal(t[0].calls, 1);
    assert_int_equal(t[0].status, VL_EINVAL);
    vl_mysql_cluster_free(cl);
    cl = cluster_new(loop, cluster_url(1, NULL), &o);
    vl_future_then(vl_mysql_cluster_ready(cl), tally_cb, &t[1]);
    assert_int_equal(t[1].calls, 0);
    tu_sleep_ms(loop, 1);
    assert_int_equal(t[1].calls, 1);
    assert_int_equal(t[1].status, VL_OK);
    /* 3: a server error is data, with its errno, naming the host. */
    f = tu_run_cmd(loop, vl_mysql_cluster_read(cl, "SELEC 1", 0), VL_ESERVER);
    assert_int_equal(vl_future_mysql_errno(f), 1064);
    assert_non_null(strstr(vl_future_error(f), tu_env("VL_TEST_MYSQL_REPLICA_PORT")));
    vl_future_free(f);
    f = tu_run_cmd(loop, vl_mysql_cluster_query(cl, "SELEC 1"), VL_ESERVER);
    assert_non_null(strstr(vl_future_error(f), tu_env("VL_TEST_MYSQL_PRIMARY_PORT")));
    vl_future_free(f);
    assert_int_equal(host(cl, 0).failures + host(cl, 1).failures, 0); /* not transport */
    /* 5: a waiting request is cancelled in place; a deadline works too. */
    vl_mysql_cluster_free(cl);
    cl = vl_mysql_cluster_new(loop, cluster_url(1, NULL), &o);
    f = vl_mysql_cluster_read(cl, "SELECT 1", 0); /* waits for the first checks */
    assert_int_equal(vl_future_cancel(f), 1);
    assert_int_equal(vl_future_status(f), VL_ECANCELED);
    vl_future_free(f);
    f = tu_run_cmd(loop, vl_future_timeout(vl_mysql_cluster_query(cl, "SELECT SLEEP(5)"), 50),
                   VL_ETIMEDOUT);
    assert_non_null(strstr(vl_future_error(f), "cluster write"));
    vl_future_free(f);
    assert_int_equal(host(cl, 0).outstanding, 0);
    /* 4: a transaction of a freed cluster is dead, still the caller's. */
    f = tu_wait_for(loop, vl_mysql_cluster_begin(cl));
    tx = vl_future_take(f);
    vl_future_free(f);
    assert_non_null(tx);
    vl_mysql_cluster_free(cl);
    vl_future_free(tu_run_cmd(loop, vl_mysql_tx_query(tx, "SELECT 1"), VL_ECLOSED));
    vl_mysql_tx_free(tx);
    /* 6: an idle cluster lets vl_loop_run return, its timers armed. */
    cl = cluster_new(loop, cluster_url(1, NULL), &o);
    tu_sleep_ms(loop, 300); /* a few check rounds */
    finish(loop, cl);
}

/* Every allocation of a cluster's life failing in turn (a sample of them):
 * NULL or a failed future, never a hang, a crash or a leak. */
static void out_of_memory(void **state)
{
    vl_mysql_cluster_options o;
    vl_mysql_pool_options po;
    long n, total, step;
    int ok_runs = 0;

    (void)state;
    fast_options(&o, &po);
    o.check_timeout_ms = 500;
    cluster_url(1, NULL);
    {
        vl_loop *loop = vl_loop_new();
        vl_mysql_cluster *cl;
        tu_alloc_fail_at(0);
        cl = vl_mysql_cluster_new(loop, url_buf[(url_slot - 1) % 4], &o);
        ok(loop, vl_mysql_cluster_read(cl, "SELECT 1", 0));
        ok(loop, vl_mysql_cluster_query(cl, "SELECT 1"));
        total = tu_alloc_count();
        vl_mysql_cluster_free(cl);
        tu_finish(loop);
    }
    step = total / 400 + 1; /* every one, unless there are very many */
    for (n = 1; n <= total + 2; n += step) {
        vl_loop *loop;
        vl_mysql_cluster *cl;
        vl_future *f[2];
        int i, good = 0;
        tu_alloc_fail_at(n);
        loop = vl_loop_new();
        if (loop == NULL)
            continue;
        cl = vl_mysql_cluster_new(loop, url_buf[(url_slot - 1) % 4], &o);
        if (cl != NULL) {
            f[0] = vl_mysql_cluster_read(cl, "SELECT 1", 0);
            f[1] = vl_mysql_cluster_query(cl, "SELECT 1");
            for (i = 0; i < 2; i++) {
                if (f[i] == NULL)
                    continue;
                assert_int_not_equal(vl_loop_run_until(loop, f[i]), VL_ESTATE);
                good += vl_future_status(f[i]) == VL_OK;
                vl_future_free(f[i]);
            }
            vl_mysql_cluster_free(cl);
        }
        ok_runs += good == 2;
        vl_loop_run(loop);
        tu_alloc_fail_at(0);
        tu_loop_finish(loop);
    }
    printf("# out_of_memory: %ld allocations, one in %ld failed in turn, %d runs fine\n",
           total, step, ok_runs);
    assert_true(ok_runs > 0);
}

/* The stats and options follow the ABI rule: an older, smaller struct is
 * written only as far as it goes. */
typedef struct old_host_stats {
    size_t struct_size;
    const char *display;
    int state;
} old_host_stats;

static void stats_abi(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_cluster *cl;
    old_host_stats old;
    vl_mysql_host_stats s;
    vl_mysql_cluster_options o;

    (void)state;
    vl_mysql_cluster_options_init(&o);
    assert_int_equal(o.check_interval_ms, 1000);
    assert_int_equal(o.breaker_failures, 3);
    assert_int_equal(o.read_fallback, 1);
    assert_int_equal(o.primaries, 1);
    cl = cluster_new(loop, cluster_url(1, NULL), NULL);
    memset(&old, 0xee, sizeof(old));
    vl_mysql_host_stats_init_sized((vl_mysql_host_stats *)(void *)&old, sizeof(old));
    assert_int_equal(vl_mysql_cluster_host_stats(cl, 1, (vl_mysql_host_stats *)(void *)&old),
                     VL_OK);
    assert_int_equal(old.state, VL_MYSQL_HOST_HEALTHY);
    vl_mysql_host_stats_init(&s);
    s.struct_size = sizeof(s) + 1;
    assert_int_equal(vl_mysql_cluster_host_stats(cl, 0, &s), VL_EINVAL);
    vl_mysql_host_stats_init(&s);
    assert_int_equal(vl_mysql_cluster_host_stats(cl, 2, &s), VL_EINVAL);
    finish(loop, cl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(routing, pair_setup),
        cmocka_unit_test_setup(bad_urls, tu_setup),
        cmocka_unit_test_setup(url_forms, tu_setup),
        cmocka_unit_test_setup(lagging_replica, pair_setup),
        cmocka_unit_test_setup(delayed_replica, pair_setup),
        cmocka_unit_test_setup(read_your_writes, pair_setup),
        cmocka_unit_test_setup(breaker, pair_setup),
        cmocka_unit_test_setup(hung_replica, pair_setup),
        cmocka_unit_test_setup(failover, pair_setup),
        cmocka_unit_test_setup(primary_wait, pair_setup),
        cmocka_unit_test_setup(storm_kill_primary, pair_setup),
        cmocka_unit_test_setup(storm_kill_replica, pair_setup),
        cmocka_unit_test_setup(free_with_pending, pair_setup),
        cmocka_unit_test_setup(stats_abi, pair_setup),
        cmocka_unit_test_setup(contract_rules, pair_setup),
        cmocka_unit_test_setup(out_of_memory, pair_setup),
    };

    return tu_run("mysql_cluster", tests, sizeof(tests) / sizeof(tests[0]));
}
