/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_redis_sentinel.c - redis+sentinel:// pools against the
 * harness's Sentinel set (tests/servers.sh: one master, one replica, three
 * sentinels): finding the master and a replica, following a forced
 * failover and a killed master, dead sentinels, a wrong master name, bad
 * URLs, passwords kept out of messages, and a pool freed mid-discovery.
 *
 * The tests share the servers and a failover swaps the two data servers'
 * roles, so every test starts by waiting until the sentinels agree on a
 * master and the other server replicates it, and then works with whichever
 * is master. A test that kills a server restarts it and waits so again.
 */
#include "testutil.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WATCHDOG_S 110

/* Internal: discoveries and switches of a Sentinel pool, and the sentinel
 * it is subscribed to (lib/redis_pool.c). */
void vl__redis_pool_sentinel_counts(const vl_redis_pool *p, uint64_t *discoveries,
                                    uint64_t *switches);
const char *vl__redis_pool_sentinel_subscribed(const vl_redis_pool *p);
/* +switch-master announcements the pool's discovery received so far. */
uint64_t vl__redis_pool_sentinel_news(const vl_redis_pool *p);

static void on_watchdog(int sig)
{
    static const char msg[] = "# watchdog: the test hung\n";
    ssize_t n;

    (void)sig;
    n = write(STDOUT_FILENO, msg, sizeof(msg) - 1);
    (void)n;
    _exit(124);
}

static int setup(void **state)
{
    signal(SIGALRM, on_watchdog);
    alarm(WATCHDOG_S);
    return tu_setup(state);
}

static int teardown(void **state)
{
    (void)state;
    alarm(0);
    return 0;
}

/* ---- the harness ---- */

static const char *master_name(void)
{
    return tu_env("VL_TEST_SENTINEL_MASTER");
}

static int sentinel_port(int i)
{
    int ports[3];

    assert_int_equal(tu_env_ports("VL_TEST_SENTINEL_PORTS", ports, 3), 3);
    return ports[i];
}

static int data_port(int which)
{
    return atoi(tu_env(which == 0 ? "VL_TEST_SENTINEL_MASTER_PORT"
                                  : "VL_TEST_SENTINEL_REPLICA_PORT"));
}

/* The harness's name of the data server on `port`. */
static const char *server_of(int port)
{
    return port == data_port(0) ? "sentinel-master" : "sentinel-replica";
}

/* The pool's URL over the three sentinels, with `extra` before them
 * ("127.0.0.1:1," or "") and `tail` after the name ("?role=replica"). */
static const char *pool_url(const char *extra, const char *name, const char *tail)
{
    static char buf[512];

    snprintf(buf, sizeof(buf), "redis+sentinel://%s127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d/%s%s",
             extra, sentinel_port(0), sentinel_port(1), sentinel_port(2), name, tail);
    return buf;
}

/* One command on a connection of its own to 127.0.0.1:port: the reply
 * (the caller's to free), or NULL when it failed. */
static vl_redis_reply *ask(vl_loop *loop, int port, int argc, const char **argv)
{
    char url[64];
    vl_redis_options o;
    vl_redis *c;
    vl_future *f;
    vl_redis_reply *r = NULL;

    vl_redis_options_init(&o);
    o.connect_timeout_ms = 1000;
    o.command_timeout_ms = 2000;
    o.reconnect = 0;
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    c = vl_redis_new(loop, url, &o);
    assert_non_null(c);
    f = vl_redis_command_argv(c, argc, argv, NULL);
    if (tu_await(loop, f) == VL_OK)
        r = vl_future_take(f);
    vl_future_free(f);
    vl_redis_free(c);
    return r;
}

static vl_redis_reply *ask2(vl_loop *loop, int port, const char *a, const char *b)
{
    const char *argv[2] = {a, b};
    return ask(loop, port, b != NULL ? 2 : 1, argv);
}

static const char *elem_str(const vl_redis_reply *r, size_t i)
{
    const char *s = vl_redis_reply_str(vl_redis_reply_element(r, i), NULL);
    return s != NULL ? s : "";
}

/* The master port sentinel i names, 0 when it names none. */
static int named_master(vl_loop *loop, int i)
{
    const char *argv[3] = {"SENTINEL", "get-master-addr-by-name", master_name()};
    vl_redis_reply *r = ask(loop, sentinel_port(i), 3, argv);
    int port = r != NULL && vl_redis_reply_count(r) == 2 ? atoi(elem_str(r, 1)) : 0;

    vl_redis_reply_free(r);
    return port;
}

/* 1 when sentinel i lists `port` as a replica that is up. */
static int replica_known(vl_loop *loop, int i, int port)
{
    const char *argv[3] = {"SENTINEL", "replicas", master_name()};
    vl_redis_reply *r = ask(loop, sentinel_port(i), 3, argv);
    int ok = 0;
    size_t k;

    for (k = 0; r != NULL && k < vl_redis_reply_count(r); k++) {
        const vl_redis_reply *m = vl_redis_reply_element(r, k);
        const char *p = vl_redis_reply_str(vl_redis_reply_map_get(m, "port", 4), NULL);
        const char *fl = vl_redis_reply_str(vl_redis_reply_map_get(m, "flags", 5), NULL);
        if (p != NULL && atoi(p) == port && fl != NULL && strcmp(fl, "slave") == 0)
            ok = 1;
    }
    vl_redis_reply_free(r);
    return ok;
}

/* 1 when the data server on `port` says ROLE `role` (for "slave": of
 * master_port, with its link up). */
static int has_role(vl_loop *loop, int port, const char *role, int master_port)
{
    vl_redis_reply *r = ask2(loop, port, "ROLE", NULL);
    int ok = r != NULL && strcmp(elem_str(r, 0), role) == 0;

    if (ok && strcmp(role, "slave") == 0) {
        long long mp = 0;
        ok = vl_redis_reply_integer(vl_redis_reply_element(r, 2), &mp) == VL_OK &&
             mp == master_port && strcmp(elem_str(r, 3), "connected") == 0;
    }
    vl_redis_reply_free(r);
    return ok;
}

/* Waits until the harness finds the sentinel set healthy, then (the
 * watchdog bounds it) until this test sees it so too: every sentinel names
 * the same master, which says so, and the other data server replicates it
 * and is known up by every sentinel. Stores the two ports. */
static void settle(vl_loop *loop, int *master, int *replica)
{
    tu_sentinel_wait_ok();
    for (;;) {
        int m = named_master(loop, 0), r, i, ok = m != 0;
        for (i = 1; ok && i < 3; i++)
            ok = named_master(loop, i) == m;
        r = m == data_port(0) ? data_port(1) : data_port(0);
        ok = ok && (m == data_port(0) || m == data_port(1)) && has_role(loop, m, "master", 0) &&
             has_role(loop, r, "slave", m);
        for (i = 0; ok && i < 3; i++)
            ok = replica_known(loop, i, r);
        if (ok) {
            *master = m;
            *replica = r;
            return;
        }
        tu_sleep_ms(loop, 200);
    }
}

static vl_redis_pool *sentinel_pool(vl_loop *loop, const char *url, uint64_t acquire_ms)
{
    vl_redis_pool_options o;
    vl_redis_pool *p;

    vl_redis_pool_options_init(&o);
    o.max_size = 4;
    o.min_idle = 2;
    o.connect_timeout_ms = 1000;
    o.command_timeout_ms = 5000;
    if (acquire_ms > 0)
        o.acquire_timeout_ms = acquire_ms;
    p = vl_redis_pool_new(loop, url, &o);
    assert_non_null(p);
    return p;
}

static void await_ready(vl_loop *loop, vl_redis_pool *p)
{
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_ready(p), VL_OK));
}

static int port_of(const char *endpoint)
{
    const char *c = strrchr(endpoint, ':');
    return c != NULL ? atoi(c + 1) : 0;
}

static uint64_t discoveries(const vl_redis_pool *p, uint64_t *switches)
{
    uint64_t d, s;

    vl__redis_pool_sentinel_counts(p, &d, &s);
    if (switches != NULL)
        *switches = s;
    return d;
}

/* ---- finding the servers ---- */

static void pool_finds_the_master(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool *p;
    vl_redis_reply *r;
    vl_future *f;
    char want[32];
    int m, rp;

    (void)state;
    settle(loop, &m, &rp);
    p = sentinel_pool(loop, pool_url("", master_name(), "?name=vl-sentinel-test"), 0);
    assert_string_equal(vl_redis_pool_endpoint(p), ""); /* nothing known yet */
    await_ready(loop, p);
    snprintf(want, sizeof(want), "127.0.0.1:%d", m);
    assert_string_equal(vl_redis_pool_endpoint(p), want);
    assert_int_equal(discoveries(p, NULL), 1);
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_command(p, "SET sentinel:a %d", m), VL_OK));
    f = tu_run_cmd(loop, vl_redis_pool_command(p, "GET sentinel:a"), VL_OK);
    snprintf(want, sizeof(want), "%d", m);
    tu_check_str(vl_future_redis_reply(f), want);
    vl_future_free(f);
    /* It was the master that took it, with the URL's name= parameter. */
    r = ask2(loop, m, "GET", "sentinel:a");
    assert_non_null(r);
    tu_check_str(r, want);
    vl_redis_reply_free(r);
    r = ask2(loop, m, "CLIENT", "LIST");
    assert_non_null(strstr(vl_redis_reply_str(r, NULL), "name=vl-sentinel-test"));
    vl_redis_reply_free(r);
    vl_redis_pool_free(p);
    tu_finish(loop);
}

/* An error reply that says the server is no master (READONLY, here from
 * a script) makes the pool ask the sentinels again; any other (WRONGTYPE)
 * does not: a service whose commands fail for its own reasons never
 * storms the sentinels. */
static void only_readonly_replies_rediscover(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool *p;
    vl_future *f;
    uint64_t before;
    int m, rp, i;

    (void)state;
    settle(loop, &m, &rp);
    p = sentinel_pool(loop, pool_url("", master_name(), ""), 0);
    await_ready(loop, p);
    before = discoveries(p, NULL);
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_command(p, "SET sentinel:wt str"), VL_OK));
    for (i = 0; i < 5; i++) {
        f = tu_run_cmd(loop, vl_redis_pool_command(p, "LPUSH sentinel:wt x"), VL_ESERVER);
        assert_non_null(strstr(vl_future_error(f), "WRONGTYPE"));
        vl_future_free(f);
    }
    /* A discovery asked for would have run by now (at most once a second). */
    tu_sleep_ms(loop, 1500);
    assert_int_equal(discoveries(p, NULL), before);
    f = tu_run_cmd(loop,
                   vl_redis_pool_command(p, "EVAL %s 0",
                                         "return redis.error_reply('READONLY test reply')"),
                   VL_ESERVER);
    assert_non_null(strstr(vl_future_error(f), "READONLY"));
    vl_future_free(f);
    for (i = 0; i < 100 && discoveries(p, NULL) == before; i++)
        tu_sleep_ms(loop, 50);
    assert_true(discoveries(p, NULL) > before);
    /* The sentinels still name the same master: the pool stays there. */
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_command(p, "DEL sentinel:wt"), VL_OK));
    vl_redis_pool_free(p);
    tu_finish(loop);
}

static void commands_issued_before_the_answer_wait_for_it(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool *p;
    vl_future *fs[20], *all, *lf, *f;
    vl_redis_lease *l;
    int m, rp, i;

    (void)state;
    settle(loop, &m, &rp);
    p = sentinel_pool(loop, pool_url("", master_name(), ""), 0);
    lf = vl_redis_pool_lease(p);
    for (i = 0; i < 20; i++)
        fs[i] = vl_redis_pool_command(p, "SET sentinel:early:%d %d", i, i);
    all = vl_future_all(loop, fs, 20);
    assert_int_equal(tu_await(loop, all), VL_OK);
    vl_future_free(all);
    assert_int_equal(port_of(vl_redis_pool_endpoint(p)), m);
    /* The lease asked before the answer is on the master too. */
    assert_int_equal(tu_await(loop, lf), VL_OK);
    l = vl_future_take(lf);
    vl_future_free(lf);
    f = tu_run_cmd(loop, vl_redis_lease_command(l, "ROLE"), VL_OK);
    assert_string_equal(elem_str(vl_future_redis_reply(f), 0), "master");
    vl_future_free(f);
    assert_int_equal(vl_redis_lease_release(l), 1);
    vl_redis_pool_free(p);
    tu_finish(loop);
}

static void role_replica_reads_from_the_replica(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool *p;
    vl_redis_reply *r;
    vl_future *f;
    const char *set[3] = {"SET", "sentinel:replicated", "yes"};
    char want[32];
    int m, rp;

    (void)state;
    settle(loop, &m, &rp);
    r = ask(loop, m, 3, set);
    assert_non_null(r);
    vl_redis_reply_free(r);
    for (;;) { /* until the replica has it */
        r = ask2(loop, rp, "GET", "sentinel:replicated");
        if (r != NULL && vl_redis_reply_type(r) == VL_REDIS_STRING)
            break;
        vl_redis_reply_free(r);
        tu_sleep_ms(loop, 50);
    }
    vl_redis_reply_free(r);
    p = sentinel_pool(loop, pool_url("", master_name(), "?role=replica"), 0);
    await_ready(loop, p);
    snprintf(want, sizeof(want), "127.0.0.1:%d", rp);
    assert_string_equal(vl_redis_pool_endpoint(p), want);
    f = tu_run_cmd(loop, vl_redis_pool_command(p, "GET sentinel:replicated"), VL_OK);
    tu_check_str(vl_future_redis_reply(f), "yes");
    vl_future_free(f);
    f = tu_run_cmd(loop, vl_redis_pool_command(p, "ROLE"), VL_OK);
    assert_string_equal(elem_str(vl_future_redis_reply(f), 0), "slave");
    vl_future_free(f);
    /* A write there is the replica's to refuse. */
    f = tu_run_cmd(loop, vl_redis_pool_command(p, "SET sentinel:x 1"), VL_ESERVER);
    assert_non_null(strstr(vl_future_error(f), "READONLY"));
    vl_future_free(f);
    vl_redis_pool_free(p);
    tu_finish(loop);
}

/* ---- following a failover ---- */

typedef struct writer {
    vl_redis_pool *p;
    int issued, completed, ok, failed, after_switch_failed;
    int switch_at;       /* the first write issued once the switch was seen; -1 before */
    int stop;
    int inflight;
    char old_ep[64];
    uint64_t t0, switch_ms;
    vl_loop *loop;
} writer;

typedef struct wstep {
    writer *w;
    int i;
} wstep;

static void write_next(writer *w);

static void write_done(vl_future *f, void *ud)
{
    wstep *ws = ud;
    writer *w = ws->w;

    w->completed++;
    w->inflight--;
    if (vl_future_status(f) == VL_OK) {
        w->ok++;
    } else {
        w->failed++;
        if (w->switch_at >= 0 && ws->i >= w->switch_at) {
            w->after_switch_failed++;
            print_message("# write %d after the switch failed: %s\n", ws->i, vl_future_error(f));
        }
    }
    free(ws);
    /* A write that failed fast (no connection up) is followed by the next
     * one at the writer's pace, not at once. */
    if (vl_future_status(f) == VL_OK)
        write_next(w);
}

/* Keeps a few writes of unique keys in flight; notes when the pool's
 * endpoint changes. */
static void write_next(writer *w)
{
    if (w->switch_at < 0 && strcmp(vl_redis_pool_endpoint(w->p), w->old_ep) != 0 &&
        vl_redis_pool_endpoint(w->p)[0] != '\0') {
        w->switch_at = w->issued;
        w->switch_ms = vl_loop_now_ms(w->loop) - w->t0;
    }
    while (!w->stop && w->inflight < 4) {
        wstep *ws = malloc(sizeof(*ws));
        vl_future *f;
        assert_non_null(ws);
        ws->w = w;
        ws->i = w->issued++;
        f = vl_redis_pool_command(w->p, "SET sentinel:fo:%d %d", ws->i, ws->i);
        assert_non_null(f);
        w->inflight++;
        assert_int_equal(vl_future_then(f, write_done, ws), VL_OK);
        if (w->stop)
            break;
    }
}

/* Runs the writer until `done` says so, for at most limit_ms of loop time
 * (then fails), topping the writes up every 20 ms. */
static void run_writer(vl_loop *loop, writer *w, int (*done)(writer *w), uint64_t limit_ms)
{
    uint64_t start = vl_loop_now_ms(loop);

    write_next(w);
    while (!done(w)) {
        tu_sleep_ms(loop, 20);
        write_next(w);
        if (vl_loop_now_ms(loop) - start > limit_ms)
            fail_msg("the pool did not follow within %llu ms (endpoint %s)",
                     (unsigned long long)limit_ms, vl_redis_pool_endpoint(w->p));
    }
    w->stop = 1;
    while (w->inflight > 0)
        tu_sleep_ms(loop, 10);
}

/* Moved, and 200 writes made after the move. */
static int moved_and_wrote(writer *w)
{
    return w->switch_at >= 0 && w->ok > 0 && w->issued >= w->switch_at + 200;
}

/* Every key written after the pool saw the switch is on the new master:
 * one that had gone to the old master would be missing there (the old
 * master, now its replica, never passes its own writes on). */
static void check_after_switch(vl_loop *loop, const writer *w, int new_master)
{
    int i, missing = 0;
    char key[48];

    for (i = w->switch_at; i < w->issued; i++) {
        const char *argv[2] = {"GET", key};
        vl_redis_reply *r;
        snprintf(key, sizeof(key), "sentinel:fo:%d", i);
        r = ask(loop, new_master, 2, argv);
        if (r == NULL || vl_redis_reply_type(r) != VL_REDIS_STRING)
            missing++;
        vl_redis_reply_free(r);
    }
    assert_int_equal(missing, 0);
}

/* No connection named vl-sentinel-fo is left on `port`. Waits for the
 * retired ones to close (housekeeping closes them once drained). */
static void no_pool_connection_on(vl_loop *loop, int port)
{
    for (;;) {
        vl_redis_reply *r = ask2(loop, port, "CLIENT", "LIST");
        int left = r == NULL || strstr(vl_redis_reply_str(r, NULL), "name=vl-sentinel-fo") != NULL;
        vl_redis_reply_free(r);
        if (!left)
            return;
        tu_sleep_ms(loop, 100);
    }
}

/* A writer on a pool that finds `master`; its clock starts now. */
static void writer_start(vl_loop *loop, writer *w, int master)
{
    memset(w, 0, sizeof(*w));
    w->loop = loop;
    w->switch_at = -1;
    w->p = sentinel_pool(loop, pool_url("", master_name(), "?name=vl-sentinel-fo"), 0);
    await_ready(loop, w->p);
    snprintf(w->old_ep, sizeof(w->old_ep), "%s", vl_redis_pool_endpoint(w->p));
    assert_int_equal(port_of(w->old_ep), master);
    w->t0 = vl_loop_now_ms(loop);
}

/* The pool moved to `master`, no write made once it had failed, and every
 * write completed once. */
static void writer_check(const writer *w, int master)
{
    assert_int_equal(port_of(vl_redis_pool_endpoint(w->p)), master);
    assert_int_equal(w->after_switch_failed, 0);
    assert_int_equal(w->completed, w->issued);
}

static void forced_failover_moves_the_pool(void **state)
{
    vl_loop *loop = vl_loop_new();
    const char *argv[3] = {"SENTINEL", "FAILOVER", master_name()};
    vl_redis_reply *r;
    writer w;
    uint64_t sw;
    int m, rp;

    (void)state;
    settle(loop, &m, &rp);
    writer_start(loop, &w, m);
    r = ask(loop, sentinel_port(1), 3, argv);
    assert_non_null(r);
    tu_check_str(r, "OK");
    vl_redis_reply_free(r);
    run_writer(loop, &w, moved_and_wrote, tu_ms(60000));
    print_message("# forced failover: the pool moved %llu ms after SENTINEL FAILOVER; "
                  "%d writes, %d failed before the switch\n",
                  (unsigned long long)w.switch_ms, w.issued, w.failed);
    writer_check(&w, rp);
    assert_true(discoveries(w.p, &sw) >= 2);
    assert_int_equal(sw, 1);
    settle(loop, &m, &rp);
    assert_int_equal(port_of(vl_redis_pool_endpoint(w.p)), m);
    check_after_switch(loop, &w, m);
    no_pool_connection_on(loop, rp);
    vl_redis_pool_free(w.p);
    tu_finish(loop);
}

static void killed_master_is_followed(void **state)
{
    vl_loop *loop = vl_loop_new();
    writer w;
    int m, rp;

    (void)state;
    settle(loop, &m, &rp);
    writer_start(loop, &w, m);
    tu_kill_server(server_of(m));
    w.t0 = vl_loop_now_ms(loop);
    run_writer(loop, &w, moved_and_wrote, tu_ms(80000));
    print_message("# killed master: the pool moved %llu ms after kill -9; %d writes, "
                  "%d failed meanwhile\n",
                  (unsigned long long)w.switch_ms, w.issued, w.failed);
    writer_check(&w, rp);
    check_after_switch(loop, &w, rp);
    vl_redis_pool_free(w.p);
    /* Back to a known state for the next test, whichever is master. */
    tu_restart_server(server_of(m));
    settle(loop, &m, &rp);
    tu_finish(loop);
}

static void replica_pool_follows_a_failover(void **state)
{
    vl_loop *loop = vl_loop_new();
    const char *argv[3] = {"SENTINEL", "FAILOVER", master_name()};
    vl_redis_pool *p;
    vl_redis_reply *r;
    vl_future *f;
    uint64_t t0;
    int m, rp;

    (void)state;
    settle(loop, &m, &rp);
    p = sentinel_pool(loop, pool_url("", master_name(), "?role=replica"), 0);
    await_ready(loop, p);
    assert_int_equal(port_of(vl_redis_pool_endpoint(p)), rp);
    r = ask(loop, sentinel_port(0), 3, argv);
    assert_non_null(r);
    tu_check_str(r, "OK");
    vl_redis_reply_free(r);
    /* The old master is the replica once the sentinels have turned it
     * into one; the pool asks until ROLE agrees (the watchdog bounds it). */
    t0 = vl_loop_now_ms(loop);
    while (port_of(vl_redis_pool_endpoint(p)) != m)
        tu_sleep_ms(loop, 20);
    print_message("# role=replica: the pool moved to the old master %llu ms after "
                  "SENTINEL FAILOVER\n", (unsigned long long)(vl_loop_now_ms(loop) - t0));
    f = tu_run_cmd(loop, vl_redis_pool_command(p, "ROLE"), VL_OK);
    assert_string_equal(elem_str(vl_future_redis_reply(f), 0), "slave");
    vl_future_free(f);
    vl_redis_pool_free(p);
    settle(loop, &m, &rp);
    tu_finish(loop);
}

/* ---- nothing reaches the old master once the switch is known ---- */

/* The old master's own count of INCRBYFLOAT calls it executed, plus the
 * ones it refused and the ones that failed (INFO commandstats).
 *
 * Why this instrument: once the sentinels demote the old master it
 * resyncs from the new one and its data is replaced, so the presence of
 * a key there proves nothing either way. Its command statistics survive
 * a role change and a resync, though (only CONFIG RESETSTAT clears them),
 * and INCRBYFLOAT is replicated as a SET: the INCRBYFLOATs the new master
 * executes reach the old one as SETs, never as INCRBYFLOAT. So a test
 * whose only INCRBYFLOATs are the writes that must not reach the old
 * master sees this count grow there if, and only if, one did, whenever it
 * reads it. */
static long long incrbyfloat_count(vl_loop *loop, int port)
{
    vl_redis_reply *r = ask2(loop, port, "INFO", "commandstats");
    const char *t, *line;
    long long calls = 0, rejected = 0, failed = 0;

    assert_non_null(r);
    t = vl_redis_reply_str(r, NULL);
    assert_non_null(t);
    line = strstr(t, "cmdstat_incrbyfloat:");
    if (line != NULL) {
        const char *c = strstr(line, "calls="), *rj = strstr(line, "rejected_calls="),
                   *fl = strstr(line, "failed_calls="), *eol = strchr(line, '\n');
        assert_non_null(c);
        calls = atoll(c + 6);
        if (rj != NULL && (eol == NULL || rj < eol))
            rejected = atoll(rj + 15);
        if (fl != NULL && (eol == NULL || fl < eol))
            failed = atoll(fl + 13);
    }
    vl_redis_reply_free(r);
    return calls + rejected + failed;
}

static void failover_now(vl_loop *loop)
{
    const char *argv[3] = {"SENTINEL", "FAILOVER", master_name()};
    vl_redis_reply *r = ask(loop, sentinel_port(1), 3, argv);

    assert_non_null(r);
    tu_check_str(r, "OK");
    vl_redis_reply_free(r);
}

static void lease_on_the_old_master_fails_once_it_moved(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool *p;
    vl_redis_lease *l;
    vl_future *f;
    vl_pool_stats st;
    char want[96];
    long long before;
    uint64_t dirty;
    int m, rp;

    (void)state;
    settle(loop, &m, &rp);
    p = sentinel_pool(loop, pool_url("", master_name(), ""), 0);
    await_ready(loop, p);
    f = tu_run_cmd(loop, vl_redis_pool_lease(p), VL_OK);
    l = vl_future_take(f);
    vl_future_free(f);
    vl_future_free(tu_run_cmd(loop, vl_redis_lease_command(l, "SET sentinel:lease:a 1"), VL_OK));
    /* The instrument works: the lease's INCRBYFLOAT counts on the master. */
    before = incrbyfloat_count(loop, m);
    vl_future_free(
        tu_run_cmd(loop, vl_redis_lease_command(l, "INCRBYFLOAT sentinel:lease:n 1"), VL_OK));
    assert_int_equal(incrbyfloat_count(loop, m), before + 1);
    before++;
    failover_now(loop);
    while (port_of(vl_redis_pool_endpoint(p)) != rp) /* the watchdog bounds it */
        tu_sleep_ms(loop, 20);
    /* Every command on the lease now fails, without reaching the server. */
    f = tu_run_cmd(loop, vl_redis_lease_command(l, "INCRBYFLOAT sentinel:lease:n 1"), VL_ECONN);
    snprintf(want, sizeof(want), "the master moved from 127.0.0.1:%d to 127.0.0.1:%d: release "
             "the lease", m, rp);
    assert_non_null(strstr(vl_future_error(f), want));
    vl_future_free(f);
    vl_future_free(tu_run_cmd(loop, vl_redis_lease_command(l, "ROLE"), VL_ECONN));
    /* Released, the connection is closed, not handed to anyone. */
    vl_pool_stats_init(&st);
    assert_int_equal(vl_redis_pool_stats_get(p, &st), VL_OK);
    dirty = st.closed_dirty;
    assert_int_equal(vl_redis_lease_release(l), 0);
    vl_pool_stats_init(&st);
    assert_int_equal(vl_redis_pool_stats_get(p, &st), VL_OK);
    assert_int_equal(st.closed_dirty, dirty + 1);
    /* The pool writes to the new master... */
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_command(p, "INCRBYFLOAT sentinel:lease:p 1"),
                              VL_OK));
    f = tu_run_cmd(loop, vl_redis_pool_command(p, "ROLE"), VL_OK);
    assert_string_equal(elem_str(vl_future_redis_reply(f), 0), "master");
    vl_future_free(f);
    vl_redis_pool_free(p);
    /* ...and no INCRBYFLOAT reached the old one after the switch, even
     * once the sentinels have demoted it and it resynced. */
    settle(loop, &m, &rp);
    assert_int_equal(incrbyfloat_count(loop, m == data_port(0) ? data_port(1) : data_port(0)),
                     before);
    tu_finish(loop);
}

typedef struct nwriter {
    vl_redis_pool *p;
    vl_loop *loop;
    int issued, inflight, stop;
    int after, after_ok, after_failed; /* writes issued once the news was in */
    uint64_t t0, news_ms;
} nwriter;

typedef struct nstep {
    nwriter *w;
    int after;
} nstep;

static void nwrite_next(nwriter *w);

static void nwrite_done(vl_future *f, void *ud)
{
    nstep *ns = ud;
    nwriter *w = ns->w;

    w->inflight--;
    if (ns->after && vl_future_status(f) == VL_OK)
        w->after_ok++;
    else if (ns->after) {
        w->after_failed++;
        print_message("# a write issued after the news failed: %s\n", vl_future_error(f));
    }
    free(ns);
    if (vl_future_status(f) == VL_OK)
        nwrite_next(w);
}

/* Keeps 4 writes in flight: SET while the pool has not heard of a switch,
 * INCRBYFLOAT from the moment it has (see incrbyfloat_count). The news
 * counter is read as each write is issued, on the loop that also delivers
 * the news, so "after" is exact. */
static void nwrite_next(nwriter *w)
{
    while (!w->stop && w->inflight < 4) {
        nstep *ns = malloc(sizeof(*ns));
        vl_future *f;
        assert_non_null(ns);
        ns->w = w;
        ns->after = vl__redis_pool_sentinel_news(w->p) > 0;
        if (ns->after && w->after == 0)
            w->news_ms = vl_loop_now_ms(w->loop) - w->t0;
        w->after += ns->after;
        f = ns->after ? vl_redis_pool_command(w->p, "INCRBYFLOAT sentinel:sw:%d 1", w->issued)
                      : vl_redis_pool_command(w->p, "SET sentinel:sw:%d 1", w->issued);
        assert_non_null(f);
        w->issued++;
        w->inflight++;
        assert_int_equal(vl_future_then(f, nwrite_done, ns), VL_OK);
    }
}

static void no_write_after_the_news_reaches_the_old_master(void **state)
{
    vl_loop *loop = vl_loop_new();
    nwriter w;
    long long before;
    uint64_t moved_ms = 0;
    int m, rp, old;

    (void)state;
    settle(loop, &m, &rp);
    old = m;
    memset(&w, 0, sizeof(w));
    w.loop = loop;
    w.p = sentinel_pool(loop, pool_url("", master_name(), ""), 10000);
    await_ready(loop, w.p);
    /* The instrument works: a pool INCRBYFLOAT counts on the master. */
    before = incrbyfloat_count(loop, m);
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_command(w.p, "INCRBYFLOAT sentinel:sw:n 1"),
                              VL_OK));
    assert_int_equal(incrbyfloat_count(loop, m), before + 1);
    before++;
    assert_int_equal(vl__redis_pool_sentinel_news(w.p), 0);
    w.t0 = vl_loop_now_ms(loop);
    failover_now(loop);
    nwrite_next(&w);
    /* Until the pool moved and 200 writes issued after the news went
     * through (the watchdog bounds it). */
    while (port_of(vl_redis_pool_endpoint(w.p)) != rp || w.after_ok < 200) {
        if (moved_ms == 0 && port_of(vl_redis_pool_endpoint(w.p)) == rp)
            moved_ms = vl_loop_now_ms(loop) - w.t0;
        tu_sleep_ms(loop, 20);
        nwrite_next(&w);
    }
    w.stop = 1;
    while (w.inflight > 0)
        tu_sleep_ms(loop, 10);
    print_message("# the news came %llu ms after SENTINEL FAILOVER, the pool moved %llu ms "
                  "after it; %d writes, %d after the news\n",
                  (unsigned long long)w.news_ms, (unsigned long long)moved_ms, w.issued,
                  w.after);
    assert_int_equal(w.after_failed, 0);
    assert_true(w.after >= 200);
    /* None of the writes issued after the news reached the old master:
     * not while it was still master, not once demoted (a READONLY refusal
     * counts too). Read again once the set is healthy, for writes that
     * might have been on their way. */
    assert_int_equal(incrbyfloat_count(loop, old), before);
    vl_redis_pool_free(w.p);
    settle(loop, &m, &rp);
    assert_int_equal(incrbyfloat_count(loop, old), before);
    tu_finish(loop);
}

/* Waits until the pool is subscribed to a sentinel other than `not`
 * (0: any) and returns that sentinel's index. */
static int subscribed_sentinel(vl_loop *loop, vl_redis_pool *p, int not)
{
    for (;;) {
        int port = port_of(vl__redis_pool_sentinel_subscribed(p)), i;
        for (i = 0; port != 0 && port != not && i < 3; i++)
            if (sentinel_port(i) == port)
                return i;
        tu_sleep_ms(loop, 10);
    }
}

static void subscription_moves_when_its_sentinel_dies(void **state)
{
    vl_loop *loop = vl_loop_new();
    const char *argv[3] = {"SENTINEL", "FAILOVER", master_name()};
    vl_redis_reply *r;
    char name[32];
    writer w;
    int m, rp, i, j;

    (void)state;
    settle(loop, &m, &rp);
    writer_start(loop, &w, m);
    i = subscribed_sentinel(loop, w.p, 0);
    snprintf(name, sizeof(name), "sentinel-%d", i + 1);
    tu_kill_server(name);
    j = subscribed_sentinel(loop, w.p, sentinel_port(i));
    assert_int_not_equal(j, i);
    /* The switch is news only the live sentinels can tell. */
    w.t0 = vl_loop_now_ms(loop);
    r = ask(loop, sentinel_port(3 - i - j), 3, argv);
    assert_non_null(r);
    tu_check_str(r, "OK");
    vl_redis_reply_free(r);
    run_writer(loop, &w, moved_and_wrote, tu_ms(60000));
    print_message("# with sentinel %d dead: the pool moved %llu ms after SENTINEL FAILOVER\n",
                  i + 1, (unsigned long long)w.switch_ms);
    writer_check(&w, rp);
    check_after_switch(loop, &w, rp);
    vl_redis_pool_free(w.p);
    tu_restart_server(name);
    settle(loop, &m, &rp);
    tu_finish(loop);
}

/* ---- sentinels that do not answer ---- */

static void dead_sentinels_first_are_skipped(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool *p;
    char extra[64];
    int m, rp, silent, fd = tu_silent_listener(&silent);

    (void)state;
    settle(loop, &m, &rp);
    /* Port 1 refuses; the silent listener accepts and never answers, so
     * that step costs connect_timeout_ms. */
    snprintf(extra, sizeof(extra), "127.0.0.1:1,127.0.0.1:%d,", silent);
    p = sentinel_pool(loop, pool_url(extra, master_name(), ""), 0);
    await_ready(loop, p);
    assert_int_equal(port_of(vl_redis_pool_endpoint(p)), m);
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_command(p, "SET sentinel:b 1"), VL_OK));
    vl_redis_pool_free(p);
    close(fd);
    tu_finish(loop);
}

static void no_sentinel_answers(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool *p;
    vl_future *f, *ready;
    uint64_t t0;
    int silent, fd = tu_silent_listener(&silent);
    char url[128];

    (void)state;
    snprintf(url, sizeof(url), "redis+sentinel://127.0.0.1:1,127.0.0.1:%d/%s", silent, "any");
    p = sentinel_pool(loop, url, 300);
    t0 = vl_loop_now_ms(loop);
    f = vl_redis_pool_command(p, "GET x");
    ready = vl_redis_pool_ready(p);
    assert_int_equal(tu_await(loop, f), VL_ECONN);
    assert_true(vl_loop_now_ms(loop) - t0 >= 300); /* it waited its acquire_timeout_ms */
    print_message("# %s\n", vl_future_error(f));
    assert_non_null(strstr(vl_future_error(f), "no master known within 300 ms"));
    assert_non_null(strstr(vl_future_error(f), "sentinel 127.0.0.1:1:"));
    vl_future_free(f);
    /* Readiness fails once a whole round found nothing (the silent one
     * costs its connect timeout). */
    assert_int_equal(tu_await(loop, ready), VL_ECONN);
    assert_non_null(strstr(vl_future_error(ready), "none of 2 sentinels"));
    vl_future_free(ready);
    assert_string_equal(vl_redis_pool_endpoint(p), "");
    vl_redis_pool_free(p);
    close(fd);
    tu_finish(loop);
}

static void wrong_master_name(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool *p;
    vl_future *f;

    (void)state;
    p = sentinel_pool(loop, pool_url("", "no-such-master", ""), 300);
    f = vl_redis_pool_command(p, "GET x");
    assert_int_equal(tu_await(loop, f), VL_ECONN);
    print_message("# %s\n", vl_future_error(f));
    assert_non_null(strstr(vl_future_error(f), "no master named 'no-such-master'"));
    vl_future_free(f);
    f = vl_redis_pool_ready(p);
    assert_int_equal(tu_await(loop, f), VL_ECONN);
    vl_future_free(f);
    vl_redis_pool_free(p);
    p = sentinel_pool(loop, pool_url("", "no-such-master", "?role=replica"), 300);
    f = vl_redis_pool_command(p, "GET x");
    assert_int_equal(tu_await(loop, f), VL_ECONN);
    assert_non_null(strstr(vl_future_error(f), "No such master"));
    vl_future_free(f);
    vl_redis_pool_free(p);
    tu_finish(loop);
}

/* ---- URLs and passwords ---- */

static void bad_sentinel_urls(void **state)
{
    static const char *const bad[] = {
        "redis+sentinel://127.0.0.1:26379",             /* no master name */
        "redis+sentinel://127.0.0.1:26379/",            /* empty name */
        "redis+sentinel://127.0.0.1:26379/m?role=boss", /* bad role */
        "redis+sentinel://127.0.0.1:26379/m?bogus=1",   /* unknown parameter */
        "redis+sentinel://127.0.0.1:26379/m/x",         /* bad db */
        "redis+sentinel://127.0.0.1:26379,/m",          /* empty host */
        "redis+sentinel://127.0.0.1:99999/m",           /* bad port */
    };
    vl_loop *loop = vl_loop_new();
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        vl_redis_pool *p = vl_redis_pool_new(loop, bad[i], NULL);
        vl_future *f;
        assert_non_null(p);
        f = vl_redis_pool_command(p, "PING");
        assert_int_equal(tu_await(loop, f), VL_EINVAL);
        print_message("# %s: %s\n", bad[i], vl_future_error(f));
        vl_future_free(f);
        assert_string_equal(vl_redis_pool_endpoint(p), "");
        vl_redis_pool_free(p);
    }
    /* A single connection cannot follow a master: it refuses the URL. */
    {
        vl_redis *c = vl_redis_new(loop, "redis+sentinel://127.0.0.1:26379/m", NULL);
        vl_future *f = vl_redis_command(c, "PING");
        assert_int_equal(tu_await(loop, f), VL_EINVAL);
        assert_non_null(strstr(vl_future_error(f), "a Sentinel endpoint needs a pool"));
        vl_future_free(f);
        vl_redis_free(c);
        /* Nor can it follow a cluster. */
        c = vl_redis_new(loop, "redis+cluster://127.0.0.1:7000,127.0.0.1:7001", NULL);
        f = vl_redis_command(c, "PING");
        assert_int_equal(tu_await(loop, f), VL_EINVAL);
        assert_non_null(strstr(vl_future_error(f), "needs vl_redis_cluster_new"));
        vl_future_free(f);
        vl_redis_free(c);
    }
    /* A plain pool tells its endpoint too. */
    {
        vl_redis_pool *p = vl_redis_pool_new(loop, "redis://127.0.0.1:6390/2", NULL);
        assert_string_equal(vl_redis_pool_endpoint(p), "127.0.0.1:6390");
        vl_redis_pool_free(p);
        p = vl_redis_pool_new(loop, "redis://[::1]/2", NULL);
        assert_string_equal(vl_redis_pool_endpoint(p), "[::1]:6379");
        vl_redis_pool_free(p);
    }
    tu_finish(loop);
}

static void passwords_are_never_printed(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool *p;
    vl_future *f;
    int m, rp;

    (void)state;
    settle(loop, &m, &rp);
    /* The sentinels have no password: AUTH to them fails. */
    p = sentinel_pool(loop, pool_url("", master_name(), "?sentinel_password=s3cr%2Ft"), 300);
    f = vl_redis_pool_command(p, "GET x");
    assert_int_equal(tu_await(loop, f), VL_ECONN);
    print_message("# %s\n", vl_future_error(f));
    assert_null(strstr(vl_future_error(f), "s3cr"));
    assert_non_null(strstr(vl_future_error(f), "AUTH"));
    vl_future_free(f);
    vl_redis_pool_free(p);
    /* Nor has the master: the check of the address named fails. */
    {
        char url[256];
        snprintf(url, sizeof(url), "redis+sentinel://:hunter%%40two@127.0.0.1:%d/%s",
                 sentinel_port(0), master_name());
        p = sentinel_pool(loop, url, 300);
    }
    f = vl_redis_pool_command(p, "GET x");
    assert_int_equal(tu_await(loop, f), VL_ECONN);
    print_message("# %s\n", vl_future_error(f));
    assert_null(strstr(vl_future_error(f), "hunter"));
    assert_non_null(strstr(vl_future_error(f), "AUTH"));
    vl_future_free(f);
    vl_redis_pool_free(p);
    tu_finish(loop);
}

/* ---- teardown ---- */

typedef struct freer {
    vl_redis_pool *p;
    int fired;
} freer;

static void free_pool_cb(vl_future *f, void *ud)
{
    freer *fr = ud;

    (void)f;
    fr->fired++;
    vl_redis_pool_free(fr->p);
}

static void freed_during_discovery(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_future *f, *sl;
    freer fr = {NULL, 0};
    int silent, fd = tu_silent_listener(&silent);
    char url[128];

    (void)state;
    snprintf(url, sizeof(url), "redis+sentinel://127.0.0.1:%d/m", silent);
    fr.p = sentinel_pool(loop, url, 0); /* the wait has no deadline */
    f = vl_redis_pool_command(fr.p, "GET x");
    /* 100 ms in, the discovery waits on the silent sentinel. */
    sl = vl_loop_sleep(loop, 100);
    assert_int_equal(vl_future_then(sl, free_pool_cb, &fr), VL_OK);
    assert_int_equal(tu_await(loop, f), VL_ECANCELED);
    assert_int_equal(fr.fired, 1);
    vl_future_free(f);
    close(fd);
    tu_finish(loop);
}

/* Every allocation of making the pool, of discovery and of the first
 * commands fails in turn: each future still completes once, with the
 * answer or a failure, and nothing leaks. */
static void out_of_memory_during_discovery(void **state)
{
    long n;
    int m, rp;

    (void)state;
    {
        vl_loop *loop = vl_loop_new();
        settle(loop, &m, &rp);
        tu_finish(loop);
    }
    for (n = 1; n < 2000; n++) {
        vl_loop *loop;
        vl_redis_pool *p;
        vl_redis_pool_options o;
        int done;

        tu_alloc_fail_at(n);
        loop = vl_loop_new();
        if (loop == NULL)
            continue;
        vl_redis_pool_options_init(&o);
        o.acquire_timeout_ms = 3000;
        o.connect_timeout_ms = 1000;
        p = vl_redis_pool_new(loop, pool_url("", master_name(), ""), &o);
        if (p != NULL) {
            vl_future *f = vl_redis_pool_command(p, "SET oom:s %ld", n);
            vl_future *g = vl_redis_pool_ready(p);
            if (f != NULL) {
                int rc = vl_loop_run_until(loop, f);
                if (rc != VL_OK && rc != VL_ENOMEM && rc != VL_ECONN)
                    fail_msg("allocation %ld: %d %s", n, rc, vl_future_error(f));
                vl_future_free(f);
            }
            if (g != NULL) {
                int rc = vl_loop_run_until(loop, g);
                if (rc != VL_OK && rc != VL_ENOMEM && rc != VL_ECONN)
                    fail_msg("allocation %ld: ready %d %s", n, rc, vl_future_error(g));
                vl_future_free(g);
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
    print_message("# %ld allocations failed in turn\n", n);
    assert_true(n > 100 && n < 2000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(bad_sentinel_urls, setup, teardown),
        cmocka_unit_test_setup_teardown(freed_during_discovery, setup, teardown),
        cmocka_unit_test_setup_teardown(out_of_memory_during_discovery, setup, teardown),
        cmocka_unit_test_setup_teardown(no_sentinel_answers, setup, teardown),
        cmocka_unit_test_setup_teardown(pool_finds_the_master, setup, teardown),
        cmocka_unit_test_setup_teardown(only_readonly_replies_rediscover, setup, teardown),
        cmocka_unit_test_setup_teardown(commands_issued_before_the_answer_wait_for_it, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(role_replica_reads_from_the_replica, setup, teardown),
        cmocka_unit_test_setup_teardown(dead_sentinels_first_are_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(wrong_master_name, setup, teardown),
        cmocka_unit_test_setup_teardown(passwords_are_never_printed, setup, teardown),
        cmocka_unit_test_setup_teardown(forced_failover_moves_the_pool, setup, teardown),
        cmocka_unit_test_setup_teardown(killed_master_is_followed, setup, teardown),
        cmocka_unit_test_setup_teardown(subscription_moves_when_its_sentinel_dies, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(replica_pool_follows_a_failover, setup, teardown),
        cmocka_unit_test_setup_teardown(lease_on_the_old_master_fails_once_it_moved, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(no_write_after_the_news_reaches_the_old_master, setup,
                                        teardown),
    };

    return tu_run("redis_sentinel", tests, sizeof(tests) / sizeof(tests[0]));
}
