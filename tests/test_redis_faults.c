/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_redis_faults.c - real redis-server instances (tests/servers.sh)
 * made to fail under load: CLIENT KILL of every client, maxclients below the
 * pool size, SIGSTOP longer than every timeout then SIGCONT, kill -9 and a
 * restart.
 *
 * Each scenario keeps a pipeline of ECHO commands in flight, each asking
 * for its own token, and counts what it submitted against what completed:
 * every future completes exactly once, nothing is lost, every reply is the
 * token its command asked for (wrong replies: 0), and errors are of the
 * kinds the fault explains. The process itself must survive (SIGPIPE). Each
 * prints a TAP diagnostic line with its figures:
 *   # fault <scenario>: requests N completions N ok N timeout N conn N proto N wrong 0
 */
#include "testutil.h"

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* The longest a scenario waits for its last completions. */
#define DRAIN_MS 15000

typedef struct driver {
    vl_loop *loop;
    vl_redis *c[4];
    int nc, rr;
    vl_redis_pool *p;
    long target; /* commands kept in flight */
    long issued, done, ok, timeout, conn, proto, server, other, wrong;
    long next_id;
} driver;

typedef struct req {
    driver *d;
    long id;
} req;

static void req_cb(vl_future *f, void *ud)
{
    req *r = ud;
    driver *d = r->d;
    char want[32];
    size_t len;
    const char *s;

    d->done++;
    switch (vl_future_status(f)) {
    case VL_OK:
        d->ok++;
        snprintf(want, sizeof(want), "tok-%ld", r->id);
        s = vl_redis_reply_str(vl_future_redis_reply(f), &len);
        if (s == NULL || len != strlen(want) || memcmp(s, want, len) != 0)
            d->wrong++;
        break;
    case VL_ETIMEDOUT:
        d->timeout++;
        break;
    case VL_ECONN:
        d->conn++;
        break;
    case VL_EPROTO:
        d->proto++;
        break;
    case VL_ESERVER:
        /* ECHO never fails on a healthy server: a server error here is a
         * connect refusal handed to a command, the bug of old. */
        d->server++;
        fprintf(stderr, "server error: %s\n", vl_future_error(f));
        break;
    default:
        d->other++;
        fprintf(stderr, "status %d: %s\n", vl_future_status(f), vl_future_error(f));
        break;
    }
    free(r);
}

static void issue(driver *d)
{
    req *r = malloc(sizeof(*r));
    vl_future *f;

    assert_non_null(r);
    r->d = d;
    r->id = d->next_id++;
    if (d->p != NULL) {
        f = vl_redis_pool_command(d->p, "ECHO tok-%ld", r->id);
    } else {
        f = vl_redis_command(d->c[d->rr], "ECHO tok-%ld", r->id);
        d->rr = (d->rr + 1) % d->nc;
    }
    assert_non_null(f);
    d->issued++;
    assert_int_equal(vl_future_then(f, req_cb, r), VL_OK);
}

/* Keeps `target` commands in flight for `ms` of loop time. */
static void drive(driver *d, uint64_t ms)
{
    uint64_t end = vl_loop_now_ms(d->loop) + ms;

    while (vl_loop_now_ms(d->loop) < end) {
        while (d->issued - d->done < d->target)
            issue(d);
        tu_sleep_ms(d->loop, 5);
    }
}

/* Waits (bounded) until every command issued has completed. */
static void drain(driver *d)
{
    uint64_t end = vl_loop_now_ms(d->loop) + DRAIN_MS;

    while (d->done < d->issued && vl_loop_now_ms(d->loop) < end)
        tu_sleep_ms(d->loop, 10);
}

static void report(const char *scenario, const driver *d)
{
    printf("# fault %s: requests %ld completions %ld ok %ld timeout %ld conn %ld proto %ld "
           "wrong %ld\n",
           scenario, d->issued, d->done, d->ok, d->timeout, d->conn, d->proto, d->wrong);
    fflush(stdout);
}

/* What every scenario asserts at the end. */
static void check_counts(const driver *d)
{
    assert_int_equal(d->done, d->issued);
    assert_int_equal(d->ok + d->timeout + d->conn + d->proto + d->server + d->other, d->done);
    assert_int_equal(d->wrong, 0);
    assert_int_equal(d->server, 0);
    assert_int_equal(d->other, 0);
    assert_int_equal(d->proto, 0); /* a real server never breaks RESP */
    assert_true(d->ok > 0);
}

static void conn_opts(vl_redis_options *o)
{
    vl_redis_options_init(o);
    o->reconnect_min_ms = 10;
    o->reconnect_max_ms = 50;
}

static void restart_server(int n)
{
    assert_int_equal(tu_sh("%s restart-redis %s %d >/dev/null 2>&1", tu_env("VL_TEST_SERVERS"),
                           tu_env("VL_TEST_DIR"), n),
                     0);
}

/* Every connection eventually answers again after the fault. */
static void wait_recovered(driver *d)
{
    int i, k, ok;

    for (k = 0; k < d->nc; k++) {
        for (i = 0, ok = 0; i < 300 && !ok; i++) {
            vl_future *f = vl_redis_command(d->c[k], "PING");
            ok = tu_await(d->loop, f) == VL_OK;
            vl_future_free(f);
            if (!ok)
                tu_sleep_ms(d->loop, 20);
        }
        assert_true(ok);
    }
}

/* ---- CLIENT KILL under load ---- */

static void client_kill_under_load(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_options o;
    vl_redis *ctl;
    driver d;
    long killed = 0;
    int i;

    (void)state;
    memset(&d, 0, sizeof(d));
    d.loop = loop;
    d.nc = 4;
    d.target = 4000;
    conn_opts(&o);
    for (i = 0; i < d.nc; i++)
        d.c[i] = vl_redis_new(loop, tu_redis_url(0), &o);
    ctl = vl_redis_new(loop, tu_redis_url(0), NULL);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(ctl, "PING"), VL_OK));
    drive(&d, 200);
    for (i = 0; i < 5; i++) {
        vl_future *f = tu_run_cmd(loop,
                                  vl_redis_command(ctl, "CLIENT KILL TYPE normal SKIPME yes"),
                                  VL_OK);
        killed += reply_int(vl_future_redis_reply(f));
        vl_future_free(f);
        drive(&d, 150);
    }
    drain(&d);
    report("client_kill", &d);
    check_counts(&d);
    assert_true(killed >= d.nc);
    assert_true(d.conn > 0);
    wait_recovered(&d);
    for (i = 0; i < d.nc; i++)
        vl_redis_free(d.c[i]);
    vl_redis_free(ctl);
    tu_finish(loop);
}

/* ---- maxclients below the pool size ---- */

static const char *maxclients_port(void)
{
    return tu_env_item("VL_TEST_REDIS_PORTS", 1);
}

static int restore_maxclients(void **state)
{
    (void)state;
    (void)tu_sh("redis-cli -h 127.0.0.1 -p %s CONFIG SET maxclients 10000 >/dev/null 2>&1",
                maxclients_port());
    return 0;
}

static void maxclients_below_pool_size(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options po;
    vl_pool_stats st;
    vl_redis *ctl;
    vl_future *f;
    driver d;
    long clients;

    (void)state;
    memset(&d, 0, sizeof(d));
    d.loop = loop;
    d.target = 500;
    ctl = vl_redis_new(loop, tu_redis_url(1), NULL);
    /* Room for the control connection and two more. */
    f = tu_run_cmd(loop, vl_redis_command(ctl, "CLIENT LIST"), VL_OK);
    {
        const char *s = vl_redis_reply_str(vl_future_redis_reply(f), NULL);
        for (clients = 0; s != NULL && (s = strchr(s, '\n')) != NULL; s++)
            clients++;
    }
    vl_future_free(f);
    vl_future_free(tu_run_cmd(
        loop, vl_redis_command(ctl, "CONFIG SET maxclients %ld", clients + 2), VL_OK));
    vl_redis_pool_options_init(&po);
    po.max_size = 8;
    po.min_idle = 8;
    po.reconnect_min_ms = 20;
    po.reconnect_max_ms = 100;
    d.p = vl_redis_pool_new(loop, tu_redis_url(1), &po);
    tu_sleep_ms(loop, 300);
    drive(&d, 1000);
    drain(&d);
    vl_future_free(
        tu_run_cmd(loop, vl_redis_command(ctl, "CONFIG SET maxclients 10000"), VL_OK));
    assert_int_equal((vl_pool_stats_init(&st), vl_redis_pool_stats_get(d.p, &st)), VL_OK);
    report("maxclients", &d);
    printf("# fault maxclients: pool ready %zu of %zu, connect errors %llu\n", st.ready, st.open,
           (unsigned long long)st.connect_failures);
    check_counts(&d);
    /* The refused connections failed their connects instead of handing
     * the refusal to a command; the others served everything. */
    assert_true(st.connect_failures > 0);
    assert_true(st.ready >= 1 && st.ready <= 2);
    vl_redis_pool_free(d.p);
    vl_redis_free(ctl);
    tu_finish(loop);
}

/* ---- SIGSTOP longer than every timeout, then SIGCONT ---- */

static long stopped_pid;

static int resume_server(void **state)
{
    (void)state;
    if (stopped_pid > 0)
        kill((pid_t)stopped_pid, SIGCONT);
    stopped_pid = 0;
    return 0;
}

static void sigstop_then_sigcont(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_options o;
    driver d;
    long ok_before;
    int i;

    (void)state;
    memset(&d, 0, sizeof(d));
    d.loop = loop;
    d.nc = 2;
    d.target = 1000;
    conn_opts(&o);
    o.command_timeout_ms = 300;
    o.connect_timeout_ms = 300;
    for (i = 0; i < d.nc; i++)
        d.c[i] = vl_redis_new(loop, tu_redis_url(2), &o);
    drive(&d, 200);
    stopped_pid = tu_server_pid("redis-3");
    assert_int_equal(kill((pid_t)stopped_pid, SIGSTOP), 0);
    drive(&d, 1500); /* five command timeouts and connect timeouts */
    resume_server(NULL);
    ok_before = d.ok;
    drive(&d, 300);
    drain(&d);
    wait_recovered(&d);
    drive(&d, 200);
    drain(&d);
    report("sigstop", &d);
    check_counts(&d);
    /* The oldest reply overdue closed each connection: a few commands time
     * out, those behind them fail at once with VL_ECONN instead of each
     * waiting out its own timeout, and so do the reconnects meanwhile. */
    assert_true(d.timeout > 0);
    assert_true(d.conn > d.timeout);
    assert_true(d.ok > ok_before);
    for (i = 0; i < d.nc; i++)
        vl_redis_free(d.c[i]);
    tu_finish(loop);
}

/* ---- kill -9 and restart ---- */

static void kill9_and_restart(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_options o;
    driver d;
    long ok_before;
    int i;

    (void)state;
    memset(&d, 0, sizeof(d));
    d.loop = loop;
    d.nc = 2;
    d.target = 1000;
    conn_opts(&o);
    for (i = 0; i < d.nc; i++)
        d.c[i] = vl_redis_new(loop, tu_redis_url(2), &o);
    drive(&d, 200);
    tu_kill_server("redis-3");
    drive(&d, 300);
    restart_server(3);
    ok_before = d.ok;
    wait_recovered(&d);
    drive(&d, 300);
    drain(&d);
    report("kill9_restart", &d);
    check_counts(&d);
    assert_true(d.conn > 0);
    assert_true(d.ok > ok_before);
    for (i = 0; i < d.nc; i++)
        vl_redis_free(d.c[i]);
    tu_finish(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(client_kill_under_load, tu_setup),
        cmocka_unit_test_setup_teardown(maxclients_below_pool_size, tu_setup, restore_maxclients),
        cmocka_unit_test_setup_teardown(sigstop_then_sigcont, tu_setup, resume_server),
        cmocka_unit_test_setup(kill9_and_restart, tu_setup),
    };

    return tu_run("redis_faults", tests, sizeof(tests) / sizeof(tests[0]));
}
