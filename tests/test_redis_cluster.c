/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_redis_cluster.c - vl_redis_cluster against the harness's
 * Redis Cluster (6 nodes: 3 primaries, 3 replicas; VL_TEST_CLUSTER_PORTS):
 * readiness, routing by key and hash tag, refusals before anything is sent,
 * batches, leases, replica reads, a slot moved by hand (MOVED), resharding
 * under load (ASK), a primary killed under load and a manual failover, and
 * teardown with work pending. Without VL_TEST_CLUSTER_PORTS every test is
 * skipped (a failure under CI=true).
 *
 * Every wait is bounded (tu_ms of a generous watchdog, and the runner's
 * per-test timeout); no test asserts a speed.
 */
#include "testutil.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NODES 6

/* The port of node i of VL_TEST_CLUSTER_PORTS, in the harness's order:
 * cluster-1 first. */
static int port_of(int i)
{
    int ports[NODES];

    assert_int_equal(tu_env_ports("VL_TEST_CLUSTER_PORTS", ports, NODES), NODES);
    return ports[i];
}

/* "redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...[?extra]" over every node. */
static const char *cluster_url(const char *extra)
{
    static char buf[512];
    size_t used;
    int i;

    used = (size_t)snprintf(buf, sizeof(buf), "redis+cluster://");
    for (i = 0; i < NODES; i++)
        used += (size_t)snprintf(buf + used, sizeof(buf) - used, "%s127.0.0.1:%d", i ? "," : "",
                                 port_of(i));
    if (extra != NULL)
        snprintf(buf + used, sizeof(buf) - used, "?%s", extra);
    return buf;
}

/* The harness name of the node on `port` ("cluster-3"). */
static const char *name_of_port(int port)
{
    static char buf[32];
    int i;

    for (i = 0; i < NODES; i++)
        if (port_of(i) == port) {
            snprintf(buf, sizeof(buf), "cluster-%d", i + 1);
            return buf;
        }
    fail_msg("port %d is not a harness cluster node", port);
    return NULL;
}

static vl_redis_cluster_stats cstats(const vl_redis_cluster *cl)
{
    vl_redis_cluster_stats st;

    vl_redis_cluster_stats_init(&st);
    assert_int_equal(vl_redis_cluster_stats_get(cl, &st), VL_OK);
    return st;
}

static long long reply_int(const vl_redis_reply *r)
{
    long long v = LLONG_MIN;

    if (vl_redis_reply_integer(r, &v) != VL_OK)
        return LLONG_MIN;
    return v;
}

static vl_redis_cluster *cluster_ready(vl_loop *loop, const char *extra,
                                       const vl_redis_cluster_options *o)
{
    vl_redis_cluster *cl = vl_redis_cluster_new(loop, cluster_url(extra), o);
    vl_future *f;

    assert_non_null(cl);
    f = vl_future_timeout(vl_redis_cluster_ready(cl), tu_ms(20000));
    assert_int_equal(tu_await(loop, f), VL_OK);
    vl_future_free(f);
    return cl;
}

/* Runs a command on the cluster and returns its future (the caller's). */
static vl_future *run(vl_loop *loop, vl_future *f, int want)
{
    assert_non_null(f);
    return tu_run_cmd(loop, f, want);
}

/* A plain connection to a node, ready. */
static vl_redis *node_conn(vl_loop *loop, int port)
{
    char url[64];
    vl_redis *c;
    vl_future *f;

    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    c = vl_redis_new(loop, url, NULL);
    assert_non_null(c);
    f = vl_redis_ready(c);
    assert_int_equal(tu_await(loop, f), VL_OK);
    vl_future_free(f);
    return c;
}

/* ---- readiness and the map ---- */

static void ready_and_map(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster *cl;
    size_t i, n, primaries = 0, replicas = 0, slots = 0;

    (void)state;
    cl = cluster_ready(loop, NULL, NULL);
    n = vl_redis_cluster_nodes(cl);
    assert_int_equal(n, NODES);
    for (i = 0; i < n; i++) {
        vl_redis_node_info ni;
        vl_redis_node_info_init(&ni);
        assert_int_equal(vl_redis_cluster_node(cl, i, &ni), VL_OK);
        assert_int_equal(strlen(ni.id), 40);
        assert_non_null(strstr(ni.addr, "127.0.0.1:"));
        if (ni.role == VL_REDIS_ROLE_PRIMARY) {
            primaries++;
            slots += ni.slots;
            assert_int_equal(ni.primary, i);
            assert_int_equal(ni.state, VL_REDIS_READY);
        } else {
            vl_redis_node_info p;
            replicas++;
            assert_int_equal(ni.role, VL_REDIS_ROLE_REPLICA);
            vl_redis_node_info_init(&p);
            assert_int_equal(vl_redis_cluster_node(cl, ni.primary, &p), VL_OK);
            assert_int_equal(p.role, VL_REDIS_ROLE_PRIMARY);
            assert_int_equal(p.slots, ni.slots);
        }
    }
    assert_int_equal(primaries, 3);
    assert_int_equal(replicas, 3);
    assert_int_equal(slots, 16384);
    {
        vl_redis_node_info ni;
        vl_redis_node_info_init(&ni);
        assert_int_equal(vl_redis_cluster_node(cl, n, &ni), VL_EINVAL);
    }
    assert_true(cstats(cl).refreshes >= 1);
    assert_true(cstats(cl).map_epoch >= 1);
    /* An idle cluster lets vl_loop_run return: its refresh timer, its
     * topology connections and its pools' idle connections hold nothing
     * (the runner's timeout is the watchdog). */
    assert_int_equal(vl_loop_run(loop), VL_OK);
    {
        /* An explicit refresh reads the map again. */
        uint64_t before = cstats(cl).refreshes;
        vl_future *f = run(loop, vl_redis_cluster_refresh(cl), VL_OK);
        vl_future_free(f);
        assert_int_equal(cstats(cl).refreshes, before + 1);
    }
    vl_redis_cluster_free(cl);
    tu_finish(loop);
}

/* The periodic refresh runs while the loop runs for something else, and
 * never keeps it running by itself. */
static void periodic_refresh(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster_options o;
    vl_redis_cluster *cl;
    uint64_t before;
    int i;

    (void)state;
    vl_redis_cluster_options_init(&o);
    o.refresh_interval_ms = 100;
    o.refresh_min_interval_ms = 50;
    cl = cluster_ready(loop, NULL, &o);
    before = cstats(cl).refreshes;
    for (i = 0; i < 200 && cstats(cl).refreshes < before + 3; i++)
        tu_sleep_ms(loop, 20);
    assert_true(cstats(cl).refreshes >= before + 3);
    assert_int_equal(cstats(cl).refresh_errors, 0);
    /* The same map each time: the epoch moves, the nodes stay. */
    assert_int_equal(vl_redis_cluster_nodes(cl), NODES);
    assert_int_equal(vl_loop_run(loop), VL_OK);
    vl_redis_cluster_free(cl);
    tu_finish(loop);
}

/* name= reaches every connection the cluster makes, pools' and its own. */
static void name_on_every_connection(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster *cl;
    int i;

    (void)state;
    cl = cluster_ready(loop, "name=vlclusterT", NULL);
    for (i = 0; i < NODES; i++) {
        vl_redis *c = node_conn(loop, port_of(i));
        vl_future *f = run(loop, vl_redis_command(c, "CLIENT LIST"), VL_OK);
        const char *list = vl_redis_reply_str(vl_future_redis_reply(f), NULL);
        /* The pool's connection and the topology connection of the seed
         * asked first at least; every node has its pool's. */
        assert_non_null(strstr(list, "name=vlclusterT"));
        vl_future_free(f);
        vl_redis_free(c);
    }
    vl_redis_cluster_free(cl);
    tu_finish(loop);
}

/* ---- many commands over many slots ---- */

typedef struct sg {
    int done;
    int bad;
    int ok;
    char want[32];
} sg;

static void set_cb(vl_future *f, void *ud)
{
    sg *s = ud;

    s->done++;
    if (vl_future_status(f) == VL_OK)
        s->ok++;
    else
        s->bad++;
}

static void get_cb(vl_future *f, void *ud)
{
    sg *s = ud;
    size_t len;
    const char *v = vl_redis_reply_str(vl_future_redis_reply(f), &len);

    s->done++;
    if (vl_future_status(f) == VL_OK && v != NULL && len == strlen(s->want) &&
        memcmp(v, s->want, len) == 0)
        s->ok++;
    else
        s->bad++;
}

static void ten_thousand_set_get(void **state)
{
    enum { N = 10000 };
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster *cl;
    sg *s = calloc(N, sizeof(*s));
    int i, done = 0, ok = 0, pass;
    uint64_t before;

    (void)state;
    assert_non_null(s);
    cl = cluster_ready(loop, NULL, NULL);
    before = cstats(cl).commands;
    for (pass = 0; pass < 2; pass++) {
        for (i = 0; i < N; i++) {
            char key[32];
            vl_future *f;
            snprintf(key, sizeof(key), "sg:%d", i);
            snprintf(s[i].want, sizeof(s[i].want), "value-%d", i * 7);
            if (pass == 0)
                f = vl_redis_cluster_command(cl, "SET %s %s", key, s[i].want);
            else
                f = vl_redis_cluster_command(cl, "GET %s", key);
            assert_non_null(f);
            assert_int_equal(vl_future_then(f, pass == 0 ? set_cb : get_cb, &s[i]), VL_OK);
        }
        /* Nothing completes inside the call that made it. */
        for (i = 0; i < N; i++)
            assert_int_equal(s[i].done, pass);
        vl_loop_run(loop);
        for (i = 0; i < N; i++)
            assert_int_equal(s[i].done, pass + 1);
    }
    for (i = 0; i < N; i++) {
        done += s[i].done;
        ok += s[i].ok;
    }
    assert_int_equal(done, 2 * N);
    assert_int_equal(ok, 2 * N); /* every SET and every GET's value right */
    assert_int_equal(cstats(cl).commands - before, 2 * N);
    {
        /* The keys are spread: every primary served some. */
        size_t k;
        for (k = 0; k < vl_redis_cluster_nodes(cl); k++) {
            vl_redis_node_info ni;
            vl_redis_node_info_init(&ni);
            assert_int_equal(vl_redis_cluster_node(cl, k, &ni), VL_OK);
            if (ni.role == VL_REDIS_ROLE_PRIMARY)
                assert_true(ni.requests > N / 10);
        }
    }
    free(s);
    vl_redis_cluster_free(cl);
    tu_finish(loop);
}

/* ---- keys ---- */

static void hash_tags_share_a_slot(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster *cl;
    vl_future *f;
    const vl_redis_reply *r;
    const char *a = "{user1000}.following", *b = "{user1000}.followers";

    (void)state;
    assert_int_equal(vl_redis_cluster_slot(a, strlen(a)), vl_redis_cluster_slot(b, strlen(b)));
    assert_int_equal(vl_redis_cluster_slot("user1000", 8), vl_redis_cluster_slot(a, strlen(a)));
    assert_int_equal(vl_redis_cluster_slot("foo", 3), 12182); /* CLUSTER KEYSLOT foo */
    cl = cluster_ready(loop, NULL, NULL);
    f = run(loop, vl_redis_cluster_command(cl, "MSET %s 1 %s 2", a, b), VL_OK);
    vl_future_free(f);
    f = run(loop, vl_redis_cluster_command(cl, "MGET %s %s", a, b), VL_OK);
    r = vl_future_redis_reply(f);
    assert_int_equal(vl_redis_reply_count(r), 2);
    tu_check_str(vl_redis_reply_element(r, 0), "1");
    tu_check_str(vl_redis_reply_element(r, 1), "2");
    vl_future_free(f);
    vl_redis_cluster_free(cl);
    tu_finish(loop);
}

static void refusals_before_sending(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster *cl;
    vl_future *f;
    uint64_t reqs = 0;
    size_t i;

    (void)state;
    cl = cluster_ready(loop, NULL, NULL);
    for (i = 0; i < vl_redis_cluster_nodes(cl); i++) {
        vl_redis_node_info ni;
        vl_redis_node_info_init(&ni);
        assert_int_equal(vl_redis_cluster_node(cl, i, &ni), VL_OK);
        reqs += ni.requests;
    }
    /* "a" and "b" hash to different slots. */
    assert_int_not_equal(vl_redis_cluster_slot("a", 1), vl_redis_cluster_slot("b", 1));
    f = vl_redis_cluster_command(cl, "MSET a 1 b 2");
    f = run(loop, f, VL_EINVAL);
    assert_non_null(strstr(vl_future_error(f), "CROSSSLOT"));
    assert_non_null(strstr(vl_future_error(f), "MSET"));
    vl_future_free(f);
    f = run(loop, vl_redis_cluster_command(cl, "INFO"), VL_EINVAL);
    assert_non_null(strstr(vl_future_error(f), "no key"));
    vl_future_free(f);
    f = run(loop, vl_redis_cluster_command(cl, "FOOBARCMD x"), VL_EINVAL);
    vl_future_free(f);
    f = run(loop, vl_redis_cluster_command(cl, "MULTI"), VL_EUNSUPPORTED);
    vl_future_free(f);
    f = run(loop, vl_redis_cluster_command(cl, "GET"), VL_EINVAL); /* too few arguments */
    vl_future_free(f);
    /* None of them reached a node. */
    for (i = 0; i < vl_redis_cluster_nodes(cl); i++) {
        vl_redis_node_info ni;
        vl_redis_node_info_init(&ni);
        assert_int_equal(vl_redis_cluster_node(cl, i, &ni), VL_OK);
        reqs -= ni.requests;
    }
    assert_int_equal(reqs, 0);
    vl_redis_cluster_free(cl);
    tu_finish(loop);
}

static void command_key_routes_by_key(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster *cl;
    vl_future *f;
    const char *argv[] = {"EVAL", "return redis.call('SET', KEYS[1], ARGV[1])", "1",
                          "{ck}one", "42"};
    const char *get[] = {"GET", "{ck}one"};

    (void)state;
    cl = cluster_ready(loop, NULL, NULL);
    f = run(loop, vl_redis_cluster_command_key(cl, "ck", 2, 5, argv, NULL), VL_OK);
    vl_future_free(f);
    f = run(loop, vl_redis_cluster_command_argv(cl, 2, get, NULL), VL_OK);
    tu_check_str(vl_future_redis_reply(f), "42");
    vl_future_free(f);
    /* A command the rules do not know goes where the key says. */
    {
        const char *dbg[] = {"OBJECT", "ENCODING", "{ck}one"};
        f = run(loop, vl_redis_cluster_command_key(cl, "{ck}one", 7, 3, dbg, NULL), VL_OK);
        assert_int_equal(vl_redis_reply_type(vl_future_redis_reply(f)), VL_REDIS_STRING);
        vl_future_free(f);
    }
    vl_redis_cluster_free(cl);
    tu_finish(loop);
}

static void batch_in_callers_order(void **state)
{
    enum { N = 200 };
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster *cl;
    vl_redis_cmd cmds[N + 1];
    static char keys[N][24], vals[N][24];
    const char *argvs[N + 1][3];
    vl_future *f;
    int i;

    (void)state;
    cl = cluster_ready(loop, NULL, NULL);
    for (i = 0; i < N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "batch:%d", i);
        snprintf(vals[i], sizeof(vals[i]), "v%d", i * 3);
        argvs[i][0] = "SET";
        argvs[i][1] = keys[i];
        argvs[i][2] = vals[i];
        cmds[i].argc = 3;
        cmds[i].argv = argvs[i];
        cmds[i].argvlen = NULL;
    }
    f = run(loop, vl_redis_cluster_batch(cl, cmds, N), VL_OK);
    assert_int_equal(vl_future_count(f), N);
    vl_future_free(f);
    for (i = 0; i < N; i++) {
        argvs[i][0] = "GET";
        cmds[i].argc = 2;
    }
    /* One refused up front fails alone, in its place. */
    argvs[N][0] = "MSET";
    argvs[N][1] = "a";
    argvs[N][2] = "b";
    cmds[N].argc = 3;
    cmds[N].argv = argvs[N];
    cmds[N].argvlen = NULL;
    {
        const char *const mset[] = {"MSET", "a", "1", "b", "2"};
        cmds[N].argc = 5;
        cmds[N].argv = mset;
        f = vl_redis_cluster_batch(cl, cmds, N + 1);
        assert_int_equal(tu_await(loop, f), VL_EINVAL);
    }
    assert_int_equal(vl_future_count(f), N + 1);
    for (i = 0; i < N; i++) {
        vl_future *c = vl_future_child(f, (size_t)i);
        assert_int_equal(vl_future_status(c), VL_OK);
        tu_check_str(vl_future_redis_reply(c), vals[i]);
    }
    assert_int_equal(vl_future_status(vl_future_child(f, N)), VL_EINVAL);
    vl_future_free(f);
    f = run(loop, vl_redis_cluster_batch(cl, cmds, 0), VL_EINVAL);
    vl_future_free(f);
    vl_redis_cluster_free(cl);
    tu_finish(loop);
}

static void lease_multi_exec_on_one_slot(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster *cl;
    vl_redis_lease *l;
    vl_future *f;
    const vl_redis_reply *r;

    (void)state;
    cl = cluster_ready(loop, NULL, NULL);
    f = run(loop, vl_redis_cluster_command(cl, "DEL {tx}a {tx}b"), VL_OK);
    vl_future_free(f);
    f = run(loop, vl_redis_cluster_lease(cl, "{tx}", 4), VL_OK);
    l = vl_future_take(f);
    assert_non_null(l);
    vl_future_free(f);
    f = run(loop, vl_redis_lease_command(l, "MULTI"), VL_OK);
    vl_future_free(f);
    f = run(loop, vl_redis_lease_command(l, "INCR {tx}a"), VL_OK);
    vl_future_free(f);
    f = run(loop, vl_redis_lease_command(l, "INCRBY {tx}b 5"), VL_OK);
    vl_future_free(f);
    f = run(loop, vl_redis_lease_command(l, "EXEC"), VL_OK);
    r = vl_future_redis_reply(f);
    assert_int_equal(vl_redis_reply_count(r), 2);
    assert_int_equal(reply_int(vl_redis_reply_element(r, 0)), 1);
    assert_int_equal(reply_int(vl_redis_reply_element(r, 1)), 5);
    vl_future_free(f);
    assert_int_equal(vl_redis_lease_release(l), 1);
    vl_redis_cluster_free(cl);
    tu_finish(loop);
}

/* A blocking command waits as long as it asked, past command_timeout_ms;
 * any other command keeps the deadline. */
static void blocking_commands_keep_their_timeout(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster_options o;
    vl_redis_cluster *cl;
    vl_future *f;
    const char *eval[] = {"EVAL", "local t = redis.call('TIME') "
                                  "while true do local n = redis.call('TIME') "
                                  "if (n[1] - t[1]) * 1000000 + n[2] - t[2] > 600000 then "
                                  "return 1 end end",
                          "1", "{blk}x"};

    (void)state;
    vl_redis_cluster_options_init(&o);
    o.command_timeout_ms = 300;
    cl = cluster_ready(loop, NULL, &o);
    f = run(loop, vl_redis_cluster_command(cl, "DEL {blk}list"), VL_OK);
    vl_future_free(f);
    f = run(loop, vl_redis_cluster_command(cl, "BLPOP {blk}list 1"), VL_OK);
    assert_int_equal(vl_redis_reply_type(vl_future_redis_reply(f)), VL_REDIS_NIL);
    vl_future_free(f);
    /* A script that runs 600 ms is cut at 300. */
    f = run(loop, vl_redis_cluster_command_argv(cl, 4, eval, NULL), VL_ETIMEDOUT);
    vl_future_free(f);
    vl_redis_cluster_free(cl);
    tu_finish(loop);
}

/* ---- replica reads ---- */

/* cmdstat_get calls of the node on `port`, from INFO commandstats. */
static long long gets_on(vl_loop *loop, vl_redis *c)
{
    vl_future *f = run(loop, vl_redis_command(c, "INFO commandstats"), VL_OK);
    const char *s = vl_redis_reply_str(vl_future_redis_reply(f), NULL);
    const char *p = s != NULL ? strstr(s, "cmdstat_get:calls=") : NULL;
    long long n = p != NULL ? atoll(p + strlen("cmdstat_get:calls=")) : 0;

    vl_future_free(f);
    return n;
}

/* Runs n GETs of keys written first, through a cluster reading from
 * `mode`; returns the GETs the replicas and the primaries served. */
static void reads_with(const char *mode, int n, long long *on_replicas, long long *on_primaries)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster *cl;
    vl_redis *conns[NODES];
    int roles[NODES];
    long long before[NODES];
    char extra[64];
    sg *s = calloc((size_t)n, sizeof(*s));
    int i, ok = 0;
    size_t k;

    assert_non_null(s);
    snprintf(extra, sizeof(extra), "read_from=%s", mode);
    cl = cluster_ready(loop, extra, NULL);
    for (i = 0; i < n; i++) {
        char key[32];
        vl_future *f;
        snprintf(key, sizeof(key), "rr:%d", i);
        snprintf(s[i].want, sizeof(s[i].want), "r%d", i);
        f = run(loop, vl_redis_cluster_command(cl, "SET %s %s", key, s[i].want), VL_OK);
        vl_future_free(f);
    }
    /* Replication is asynchronous: WAIT on each primary for its replica. */
    for (k = 0; k < vl_redis_cluster_nodes(cl); k++) {
        vl_redis_node_info ni;
        vl_redis_node_info_init(&ni);
        assert_int_equal(vl_redis_cluster_node(cl, k, &ni), VL_OK);
        if (ni.role == VL_REDIS_ROLE_PRIMARY) {
            vl_redis *c = node_conn(loop, atoi(strrchr(ni.addr, ':') + 1));
            vl_future *f = run(loop, vl_redis_command(c, "WAIT 1 5000"), VL_OK);
            vl_future_free(f);
            vl_redis_free(c);
        }
    }
    for (i = 0; i < NODES; i++) {
        vl_future *f;
        conns[i] = node_conn(loop, port_of(i));
        f = run(loop, vl_redis_command(conns[i], "ROLE"), VL_OK);
        roles[i] = strcmp(vl_redis_reply_str(vl_redis_reply_element(vl_future_redis_reply(f), 0),
                                             NULL),
                          "master") == 0
                       ? VL_REDIS_ROLE_PRIMARY
                       : VL_REDIS_ROLE_REPLICA;
        vl_future_free(f);
        before[i] = gets_on(loop, conns[i]);
    }
    for (i = 0; i < n; i++) {
        char key[32];
        vl_future *f;
        snprintf(key, sizeof(key), "rr:%d", i);
        f = vl_redis_cluster_command(cl, "GET %s", key);
        assert_non_null(f);
        vl_future_then(f, get_cb, &s[i]);
    }
    vl_loop_run(loop);
    for (i = 0; i < n; i++) {
        assert_int_equal(s[i].done, 1);
        ok += s[i].ok;
    }
    assert_int_equal(ok, n);
    *on_replicas = *on_primaries = 0;
    for (i = 0; i < NODES; i++) {
        long long d = gets_on(loop, conns[i]) - before[i];
        if (roles[i] == VL_REDIS_ROLE_PRIMARY)
            *on_primaries += d;
        else
            *on_replicas += d;
        vl_redis_free(conns[i]);
    }
    free(s);
    vl_redis_cluster_free(cl);
    tu_finish(loop);
}

static void replica_reads(void **state)
{
    long long rep, pri;

    (void)state;
    reads_with("replica", 300, &rep, &pri);
    assert_int_equal(rep, 300);
    assert_int_equal(pri, 0);
    reads_with("prefer_replica", 300, &rep, &pri);
    assert_int_equal(rep, 300); /* every replica is up */
    assert_int_equal(pri, 0);
    reads_with("primary", 300, &rep, &pri);
    assert_int_equal(rep, 0);
    assert_int_equal(pri, 300);
}

static void nearest_measures_round_trips(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster_options o;
    vl_redis_cluster *cl;
    size_t k, measured = 0;
    int i;

    (void)state;
    vl_redis_cluster_options_init(&o);
    o.read_from = VL_REDIS_READ_NEAREST;
    cl = cluster_ready(loop, NULL, &o);
    /* The pings run every second: wait (bounded) until every node has one. */
    for (i = 0; i < 100 && measured < NODES; i++) {
        tu_sleep_ms(loop, 50);
        measured = 0;
        for (k = 0; k < vl_redis_cluster_nodes(cl); k++) {
            vl_redis_node_info ni;
            vl_redis_node_info_init(&ni);
            assert_int_equal(vl_redis_cluster_node(cl, k, &ni), VL_OK);
            if (ni.rtt_ms > 0)
                measured++;
        }
    }
    assert_int_equal(measured, NODES);
    for (i = 0; i < 50; i++) {
        char key[32];
        vl_future *f;
        snprintf(key, sizeof(key), "near:%d", i);
        f = run(loop, vl_redis_cluster_command(cl, "SET %s x%d", key, i), VL_OK);
        vl_future_free(f);
        f = run(loop, vl_redis_cluster_command(cl, "GET %s", key), VL_OK);
        /* A replica may lag; the reply is the value or nil, never an error. */
        assert_true(vl_redis_reply_type(vl_future_redis_reply(f)) == VL_REDIS_STRING ||
                    vl_redis_reply_type(vl_future_redis_reply(f)) == VL_REDIS_NIL);
        vl_future_free(f);
    }
    vl_redis_cluster_free(cl);
    tu_finish(loop);
}

/* ---- bad input and teardown ---- */

static void bad_urls(void **state)
{
    static const char *const urls[] = {
        "http://127.0.0.1:7000",
        "redis+cluster://127.0.0.1:7000?read_from=everywhere",
        "redis+cluster://127.0.0.1:7000?bogus=1",
        "redis+cluster://127.0.0.1:7000/3",
        "redis+cluster://127.0.0.1:7000,,127.0.0.1:7001",
    };
    vl_loop *loop = vl_loop_new();
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
        vl_redis_cluster *cl = vl_redis_cluster_new(loop, urls[i], NULL);
        vl_future *f;
        assert_non_null(cl);
        assert_true(vl_redis_cluster_error(cl)[0] != '\0');
        f = run(loop, vl_redis_cluster_command(cl, "GET k"), VL_EINVAL);
        vl_future_free(f);
        f = run(loop, vl_redis_cluster_ready(cl), VL_EINVAL);
        vl_future_free(f);
        assert_int_equal(vl_redis_cluster_nodes(cl), 0);
        vl_redis_cluster_free(cl);
    }
    {
        vl_redis_cluster_options o;
        vl_redis_cluster *cl;
        vl_future *f;
        memset(&o, 0, sizeof(o)); /* never initialised */
        cl = vl_redis_cluster_new(loop, "redis+cluster://127.0.0.1:7000", &o);
        assert_non_null(cl);
        f = run(loop, vl_redis_cluster_command(cl, "GET k"), VL_EINVAL);
        vl_future_free(f);
        vl_redis_cluster_free(cl);
    }
    /* The password never shows. */
    {
        vl_redis_cluster *cl =
            vl_redis_cluster_new(loop, "redis+cluster://u:s3cret@127.0.0.1:1?nope=1", NULL);
        assert_null(strstr(vl_redis_cluster_error(cl), "s3cret"));
        vl_redis_cluster_free(cl);
    }
    tu_finish(loop);
}

static void unreachable_seeds_fail(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster *cl;
    vl_future *f, *g;
    int port;
    int fd = tu_silent_listener(&port); /* a port nobody answers on: closed below */
    char url[128];

    (void)state;
    close(fd); /* now refused */
    snprintf(url, sizeof(url), "redis+cluster://127.0.0.1:%d", port);
    cl = vl_redis_cluster_new(loop, url, NULL);
    assert_non_null(cl);
    f = vl_redis_cluster_ready(cl);
    g = vl_redis_cluster_command(cl, "GET k");
    assert_int_equal(tu_await(loop, f), VL_ECONN);
    assert_int_equal(tu_await(loop, g), VL_ECONN);
    assert_true(vl_redis_cluster_error(cl)[0] != '\0');
    assert_true(cstats(cl).refresh_errors >= 1);
    vl_future_free(f);
    vl_future_free(g);
    vl_redis_cluster_free(cl);
    tu_finish(loop);
}

typedef struct once {
    int calls;
    int status;
} once;

static void once_cb(vl_future *f, void *ud)
{
    once *o = ud;

    o->calls++;
    o->status = vl_future_status(f);
}

static void free_with_pending(void **state)
{
    enum { N = 1000 };
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster *cl;
    once *o = calloc(N + 1, sizeof(*o));
    int i;

    (void)state;
    assert_non_null(o);
    cl = cluster_ready(loop, NULL, NULL);
    for (i = 0; i < N; i++) {
        vl_future *f = vl_redis_cluster_command(cl, "INCR fp:%d", i);
        assert_non_null(f);
        vl_future_then(f, once_cb, &o[i]);
    }
    vl_future_then(vl_redis_cluster_refresh(cl), once_cb, &o[N]);
    vl_redis_cluster_free(cl);
    for (i = 0; i <= N; i++)
        assert_int_equal(o[i].calls, 0); /* never inside the free */
    vl_loop_run(loop);
    for (i = 0; i <= N; i++) {
        assert_int_equal(o[i].calls, 1);
        assert_int_equal(o[i].status, VL_ECANCELED);
    }
    free(o);
    tu_finish(loop);
}

/* vl_loop_free frees a cluster left open: its pending commands, one
 * waiting for a lease and a refresh complete once, cancelled. */
static void loop_free_frees_the_cluster(void **state)
{
    enum { N = 200 };
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster *cl;
    once o[N + 2];
    int i;

    (void)state;
    memset(o, 0, sizeof(o));
    cl = cluster_ready(loop, NULL, NULL);
    for (i = 0; i < N; i++)
        vl_future_then(vl_redis_cluster_command(cl, "GET lf:%d", i), once_cb, &o[i]);
    vl_future_then(vl_redis_cluster_lease(cl, "lf", 2), once_cb, &o[N]);
    vl_future_then(vl_redis_cluster_refresh(cl), once_cb, &o[N + 1]);
    vl_loop_free(loop);
    for (i = 0; i < N + 2; i++) {
        assert_int_equal(o[i].calls, 1);
        assert_int_equal(o[i].status, VL_ECANCELED);
    }
    tu_workers_gone();
    assert_int_equal(tu_alloc_live(), 0);
}

/* A cluster made and freed before its first map, with commands waiting. */
static void free_before_the_map(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster *cl;
    once o[3];
    int i;

    (void)state;
    memset(o, 0, sizeof(o));
    cl = vl_redis_cluster_new(loop, cluster_url(NULL), NULL);
    vl_future_then(vl_redis_cluster_command(cl, "GET x"), once_cb, &o[0]);
    vl_future_then(vl_redis_cluster_ready(cl), once_cb, &o[1]);
    vl_future_then(vl_redis_cluster_lease(cl, "x", 1), once_cb, &o[2]);
    vl_redis_cluster_free(cl);
    vl_loop_run(loop);
    for (i = 0; i < 3; i++) {
        assert_int_equal(o[i].calls, 1);
        assert_int_equal(o[i].status, VL_ECANCELED);
    }
    tu_finish(loop);
}

/* Commands issued before the map is known wait for it. */
static void commands_wait_for_the_first_map(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster *cl;
    vl_future *f;

    (void)state;
    cl = vl_redis_cluster_new(loop, cluster_url(NULL), NULL);
    assert_int_equal(vl_redis_cluster_nodes(cl), 0);
    f = vl_redis_cluster_command(cl, "SET early 1");
    assert_false(vl_future_done(f));
    f = run(loop, f, VL_OK);
    vl_future_free(f);
    assert_int_equal(vl_redis_cluster_nodes(cl), NODES);
    vl_redis_cluster_free(cl);
    tu_finish(loop);
}

/* ---- moving slots ---- */

typedef struct nodeinfo {
    int port;
    char id[41];
} nodeinfo;

/* The primary serving `slot`, and another primary. */
static void primaries_for(vl_loop *loop, vl_redis_cluster *cl, unsigned slot, nodeinfo *src,
                          nodeinfo *dst, nodeinfo *other)
{
    size_t k;
    nodeinfo ps[3];
    size_t np = 0, si = 0;

    for (k = 0; k < vl_redis_cluster_nodes(cl); k++) {
        vl_redis_node_info ni;
        vl_redis_node_info_init(&ni);
        assert_int_equal(vl_redis_cluster_node(cl, k, &ni), VL_OK);
        if (ni.role != VL_REDIS_ROLE_PRIMARY)
            continue;
        assert_true(np < 3);
        ps[np].port = atoi(strrchr(ni.addr, ':') + 1);
        snprintf(ps[np].id, sizeof(ps[np].id), "%s", ni.id);
        np++;
    }
    assert_int_equal(np, 3);
    /* Which one serves the slot: ask a node. */
    {
        vl_redis *c = node_conn(loop, ps[0].port);
        vl_future *f = run(loop, vl_redis_command(c, "CLUSTER SHARDS"), VL_OK);
        const vl_redis_reply *r = vl_future_redis_reply(f);
        size_t i, j;
        int owner = -1;
        for (i = 0; i < vl_redis_reply_count(r) && owner < 0; i++) {
            const vl_redis_reply *sh = vl_redis_reply_element(r, i);
            const vl_redis_reply *sl = vl_redis_reply_map_get(sh, "slots", 5);
            const vl_redis_reply *nodes = vl_redis_reply_map_get(sh, "nodes", 5);
            for (j = 0; j + 1 < vl_redis_reply_count(sl); j += 2) {
                long long a = reply_int(vl_redis_reply_element(sl, j));
                long long b = reply_int(vl_redis_reply_element(sl, j + 1));
                if ((long long)slot >= a && (long long)slot <= b) {
                    size_t m;
                    for (m = 0; m < vl_redis_reply_count(nodes); m++) {
                        const vl_redis_reply *nd = vl_redis_reply_element(nodes, m);
                        const vl_redis_reply *role = vl_redis_reply_map_get(nd, "role", 4);
                        if (strcmp(vl_redis_reply_str(role, NULL), "master") == 0)
                            owner = (int)reply_int(vl_redis_reply_map_get(nd, "port", 4));
                    }
                }
            }
        }
        vl_future_free(f);
        vl_redis_free(c);
        assert_true(owner > 0);
        for (si = 0; si < 3 && ps[si].port != owner; si++)
            ;
        assert_true(si < 3);
    }
    *src = ps[si];
    *dst = ps[(si + 1) % 3];
    if (other != NULL)
        *other = ps[(si + 2) % 3];
}

/* "MIGRATE 127.0.0.1 port "" 0 5000 KEYS k..." for the keys of a
 * CLUSTER GETKEYSINSLOT reply, at most max arguments in argv; `port` must
 * live as long as argv. Returns argc. */
static int migrate_argv(const char **argv, int max, const char *port, const vl_redis_reply *keys)
{
    static const char *const head[] = {"MIGRATE", "127.0.0.1", NULL, "", "0", "5000", "KEYS"};
    size_t k;
    int argc;

    for (argc = 0; argc < 7; argc++)
        argv[argc] = argc == 2 ? port : head[argc];
    for (k = 0; k < vl_redis_reply_count(keys) && argc < max; k++)
        argv[argc++] = vl_redis_reply_str(vl_redis_reply_element(keys, k), NULL);
    return argc;
}

/* Moves `slot` from src to dst by hand, keys included, synchronously on
 * `loop` through plain connections. */
static void move_slot(vl_loop *loop, unsigned slot, const nodeinfo *src, const nodeinfo *dst,
                      const nodeinfo *other)
{
    vl_redis *s = node_conn(loop, src->port), *d = node_conn(loop, dst->port);
    vl_redis *o = node_conn(loop, other->port);
    vl_future *f;
    char port[16];

    snprintf(port, sizeof(port), "%d", dst->port);
    f = run(loop, vl_redis_command(d, "CLUSTER SETSLOT %u IMPORTING %s", slot, src->id), VL_OK);
    vl_future_free(f);
    f = run(loop, vl_redis_command(s, "CLUSTER SETSLOT %u MIGRATING %s", slot, dst->id), VL_OK);
    vl_future_free(f);
    for (;;) {
        const vl_redis_reply *r;
        const char *argv[64];
        size_t n;
        int argc;
        vl_future *g;
        f = run(loop, vl_redis_command(s, "CLUSTER GETKEYSINSLOT %u 50", slot), VL_OK);
        r = vl_future_redis_reply(f);
        n = vl_redis_reply_count(r);
        if (n == 0) {
            vl_future_free(f);
            break;
        }
        argc = migrate_argv(argv, 64, port, r);
        g = run(loop, vl_redis_command_argv(s, argc, argv, NULL), VL_OK);
        vl_future_free(g);
        vl_future_free(f);
    }
    f = run(loop, vl_redis_command(d, "CLUSTER SETSLOT %u NODE %s", slot, dst->id), VL_OK);
    vl_future_free(f);
    f = run(loop, vl_redis_command(s, "CLUSTER SETSLOT %u NODE %s", slot, dst->id), VL_OK);
    vl_future_free(f);
    f = run(loop, vl_redis_command(o, "CLUSTER SETSLOT %u NODE %s", slot, dst->id), VL_OK);
    vl_future_free(f);
    vl_redis_free(s);
    vl_redis_free(d);
    vl_redis_free(o);
}

static void moved_is_followed(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster_options o;
    vl_redis_cluster *cl;
    nodeinfo src, dst, other;
    const char *key = "{moveme}k";
    unsigned slot = vl_redis_cluster_slot(key, strlen(key));
    vl_redis_cluster_stats before, after;
    vl_future *f;
    int i;

    (void)state;
    vl_redis_cluster_options_init(&o);
    o.refresh_interval_ms = 0; /* only the MOVED may refresh */
    cl = cluster_ready(loop, NULL, &o);
    f = run(loop, vl_redis_cluster_command(cl, "SET %s before-the-move", key), VL_OK);
    vl_future_free(f);
    primaries_for(loop, cl, slot, &src, &dst, &other);
    move_slot(loop, slot, &src, &dst, &other);
    before = cstats(cl);
    f = run(loop, vl_redis_cluster_command(cl, "GET %s", key), VL_OK);
    tu_check_str(vl_future_redis_reply(f), "before-the-move");
    vl_future_free(f);
    after = cstats(cl);
    assert_int_equal(after.moved - before.moved, 1);
    assert_true(after.map_epoch > before.map_epoch);
    /* The next command goes straight to the new owner. */
    f = run(loop, vl_redis_cluster_command(cl, "SET %s after", key), VL_OK);
    vl_future_free(f);
    assert_int_equal(cstats(cl).moved, after.moved);
    /* And the MOVED scheduled a refresh of the whole map. */
    for (i = 0; i < 200 && cstats(cl).refreshes == before.refreshes; i++)
        tu_sleep_ms(loop, 20);
    assert_true(cstats(cl).refreshes > before.refreshes);
    vl_redis_cluster_free(cl);
    tu_cluster_wait_ok();
    tu_finish(loop);
}

/* ---- resharding under load ---- */

#define RS_TAGS 4
#define RS_COUNTERS 20

/* The counts of a load: commands issued, completed, and how. */
typedef struct load {
    vl_redis_cluster *cl;
    int issued, completed, ok, failed;
    int inflight;
    char last_err[256];
} load;

/* Counts a completed command of the load; 1 when it succeeded. */
static int load_done(load *L, vl_future *f)
{
    L->completed++;
    L->inflight--;
    if (vl_future_status(f) == VL_OK) {
        L->ok++;
        return 1;
    }
    L->failed++;
    snprintf(L->last_err, sizeof(L->last_err), "%s", vl_future_error(f));
    return 0;
}

typedef struct rs_load {
    load b;
    int target;
    int wrong;
    int expect[RS_TAGS][RS_COUNTERS];
} rs_load;

typedef struct rs_op {
    rs_load *L;
    int tag, ctr, kind;
} rs_op;

static void rs_issue(rs_load *L);

static void rs_done(vl_future *f, void *ud)
{
    rs_op *op = ud;
    rs_load *L = op->L;

    if (load_done(&L->b, f)) {
        const vl_redis_reply *r = vl_future_redis_reply(f);
        const char *v = vl_redis_reply_str(r, NULL);
        if (op->kind == 0)
            L->expect[op->tag][op->ctr]++;
        /* A GET sees nothing yet or a value some SET wrote, never garbage
         * nor another command's reply. */
        if (op->kind == 2 && vl_redis_reply_type(r) != VL_REDIS_NIL && (v == NULL || v[0] != 'v'))
            L->wrong++;
        if (op->kind == 1 && vl_redis_reply_type(r) != VL_REDIS_STATUS)
            L->wrong++;
    }
    free(op);
    rs_issue(L);
}

static void rs_issue(rs_load *L)
{
    while (L->b.issued < L->target && L->b.inflight < 200) {
        rs_op *op = calloc(1, sizeof(*op));
        vl_future *f;
        int n = L->b.issued++;
        assert_non_null(op);
        op->L = L;
        op->tag = n % RS_TAGS;
        op->ctr = (n / RS_TAGS) % RS_COUNTERS;
        op->kind = (n / 7) % 3; /* INCR, SET, GET */
        if (op->kind == 0)
            f = vl_redis_cluster_command(L->b.cl, "INCR {rs%d}c%d", op->tag, op->ctr);
        else if (op->kind == 1)
            f = vl_redis_cluster_command(L->b.cl, "SET {rs%d}s%d v%d", op->tag, op->ctr, n);
        else
            f = vl_redis_cluster_command(L->b.cl, "GET {rs%d}s%d", op->tag, op->ctr);
        assert_non_null(f);
        L->b.inflight++;
        vl_future_then(f, rs_done, op);
    }
}

/* The migration, step by step on the loop: each slot's keys move in small
 * batches with a pause between, so that commands meet a half-moved slot. */
typedef struct mig {
    vl_loop *loop;
    vl_redis *src[RS_TAGS], *dst[RS_TAGS], *oth[RS_TAGS];
    nodeinfo s[RS_TAGS], d[RS_TAGS], o[RS_TAGS];
    unsigned slot[RS_TAGS];
    int i;      /* slot being moved */
    int step;
    int done;
    int error;
    char msg[256];
} mig;

static void mig_next(vl_future *f, void *ud);

static void mig_on(mig *m, vl_future *f)
{
    assert_non_null(f);
    vl_future_then(f, mig_next, m);
}

static void mig_go(mig *m)
{
    int i = m->i;
    char port[16];

    if (i == RS_TAGS) {
        m->done = 1;
        return;
    }
    snprintf(port, sizeof(port), "%d", m->d[i].port);
    switch (m->step) {
    case 0:
        mig_on(m, vl_redis_command(m->dst[i], "CLUSTER SETSLOT %u IMPORTING %s", m->slot[i],
                                   m->s[i].id));
        break;
    case 1:
        mig_on(m, vl_redis_command(m->src[i], "CLUSTER SETSLOT %u MIGRATING %s", m->slot[i],
                                   m->d[i].id));
        break;
    case 2:
        mig_on(m, vl_redis_command(m->src[i], "CLUSTER GETKEYSINSLOT %u 3", m->slot[i]));
        break;
    case 4:
        mig_on(m, vl_loop_sleep(m->loop, 20));
        break;
    case 5:
    case 6:
    case 7: {
        /* The new owner first, then the old one, then the third primary. */
        vl_redis *who[3] = {m->dst[i], m->src[i], m->oth[i]};
        mig_on(m, vl_redis_command(who[m->step - 5], "CLUSTER SETSLOT %u NODE %s", m->slot[i],
                                   m->d[i].id));
        break;
    }
    default:
        break;
    }
}

static void mig_next(vl_future *f, void *ud)
{
    mig *m = ud;

    if (vl_future_status(f) != VL_OK) {
        m->error = 1;
        snprintf(m->msg, sizeof(m->msg), "step %d of slot %u: %s", m->step, m->slot[m->i],
                 vl_future_error(f));
        m->done = 1;
        return;
    }
    if (m->step == 2) {
        const vl_redis_reply *r = vl_future_redis_reply(f);
        size_t n = vl_redis_reply_count(r);
        const char *argv[16];
        int argc;
        char port[16];
        if (n == 0) {
            m->step = 5;
            mig_go(m);
            return;
        }
        snprintf(port, sizeof(port), "%d", m->d[m->i].port);
        argc = migrate_argv(argv, 16, port, r);
        m->step = 3;
        mig_on(m, vl_redis_command_argv(m->src[m->i], argc, argv, NULL));
        return;
    }
    if (m->step == 3) {
        m->step = 4;
    } else if (m->step == 4) {
        m->step = 2;
    } else if (m->step == 7) {
        m->i++;
        m->step = 0;
    } else {
        m->step++;
    }
    mig_go(m);
}

static void reshard_under_load(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster *cl;
    rs_load *L = calloc(1, sizeof(*L));
    mig *m = calloc(1, sizeof(*m));
    int t, c, guard;
    long long total = 0, want = 0;

    (void)state;
    assert_non_null(L);
    assert_non_null(m);
    cl = cluster_ready(loop, NULL, NULL);
    /* Start from zero counters. */
    for (t = 0; t < RS_TAGS; t++)
        for (c = 0; c < RS_COUNTERS; c++) {
            vl_future *f = run(loop, vl_redis_cluster_command(cl, "DEL {rs%d}c%d", t, c), VL_OK);
            vl_future_free(f);
        }
    m->loop = loop;
    for (t = 0; t < RS_TAGS; t++) {
        char tag[16];
        snprintf(tag, sizeof(tag), "rs%d", t);
        m->slot[t] = vl_redis_cluster_slot(tag, strlen(tag));
        primaries_for(loop, cl, m->slot[t], &m->s[t], &m->d[t], &m->o[t]);
        m->src[t] = node_conn(loop, m->s[t].port);
        m->dst[t] = node_conn(loop, m->d[t].port);
        m->oth[t] = node_conn(loop, m->o[t].port);
    }
    L->b.cl = cl;
    L->target = 10000;
    /* Seed the keys so that there is something to migrate, then load. */
    rs_issue(L);
    mig_go(m);
    for (guard = 0; guard < 12000 && (!m->done || L->b.completed < L->b.issued); guard++) {
        tu_sleep_ms(loop, 10);
        if (!m->done && L->b.issued == L->target && L->b.inflight == 0) {
            L->target += 2000; /* keep the load on while slots move */
            rs_issue(L);
        }
    }
    assert_true(m->done);
    assert_false(m->error);
    vl_loop_run(loop);
    assert_int_equal(L->b.completed, L->b.issued);
    if (L->b.failed != 0)
        fail_msg("%d of %d commands failed; last: %s", L->b.failed, L->b.issued, L->b.last_err);
    assert_int_equal(L->wrong, 0);
    print_message("# %d commands while %d slots moved: %llu ASK, %llu MOVED followed\n",
                  L->b.issued, RS_TAGS, (unsigned long long)cstats(cl).ask,
                  (unsigned long long)cstats(cl).moved);
    assert_true(cstats(cl).ask > 0);
    /* Every INCR that succeeded counted once, none more. */
    for (t = 0; t < RS_TAGS; t++)
        for (c = 0; c < RS_COUNTERS; c++) {
            vl_future *f = run(loop, vl_redis_cluster_command(cl, "GET {rs%d}c%d", t, c), VL_OK);
            const char *v = vl_redis_reply_str(vl_future_redis_reply(f), NULL);
            long long got = v != NULL ? atoll(v) : 0;
            assert_int_equal(got, L->expect[t][c]);
            total += got;
            want += L->expect[t][c];
            vl_future_free(f);
        }
    assert_int_equal(total, want);
    assert_true(total > 0);
    for (t = 0; t < RS_TAGS; t++) {
        vl_redis_free(m->src[t]);
        vl_redis_free(m->dst[t]);
        vl_redis_free(m->oth[t]);
    }
    free(m);
    free(L);
    vl_redis_cluster_free(cl);
    tu_cluster_wait_ok();
    tu_finish(loop);
}

/* ---- a replica down ---- */

/* The index in the map of a replica, and the port of its primary. */
static size_t some_replica(vl_redis_cluster *cl, int *primary_port)
{
    size_t k;

    for (k = 0; k < vl_redis_cluster_nodes(cl); k++) {
        vl_redis_node_info ni, p;
        vl_redis_node_info_init(&ni);
        vl_redis_node_info_init(&p);
        assert_int_equal(vl_redis_cluster_node(cl, k, &ni), VL_OK);
        if (ni.role != VL_REDIS_ROLE_REPLICA)
            continue;
        assert_int_equal(vl_redis_cluster_node(cl, ni.primary, &p), VL_OK);
        *primary_port = atoi(strrchr(p.addr, ':') + 1);
        return k;
    }
    fail_msg("no replica in the map");
    return 0;
}

static int node_state_of(vl_redis_cluster *cl, size_t k)
{
    vl_redis_node_info ni;

    vl_redis_node_info_init(&ni);
    assert_int_equal(vl_redis_cluster_node(cl, k, &ni), VL_OK);
    return ni.state;
}

/* With a shard's only replica stopped, prefer_replica reads go to its
 * primary and replica reads fail with VL_ECONN; the other shards' replicas
 * still serve theirs. */
static void replica_down(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster_options o;
    vl_redis_cluster *pref, *only;
    char keys[10][32];
    int primary_port = 0, port, i, n = 0;
    size_t k;
    vl_redis_node_info ni;
    const char *name;

    (void)state;
    tu_cluster_wait_ok();
    vl_redis_cluster_options_init(&o);
    o.read_from = VL_REDIS_READ_PREFER_REPLICA;
    pref = cluster_ready(loop, NULL, &o);
    o.read_from = VL_REDIS_READ_REPLICA;
    only = cluster_ready(loop, NULL, &o);
    k = some_replica(pref, &primary_port);
    vl_redis_node_info_init(&ni);
    assert_int_equal(vl_redis_cluster_node(pref, k, &ni), VL_OK);
    port = atoi(strrchr(ni.addr, ':') + 1);
    name = name_of_port(port);
    /* Keys of that shard. */
    for (i = 0; n < 10 && i < 10000; i++) {
        nodeinfo src, dst;
        char key[32];
        snprintf(key, sizeof(key), "rd:%d", i);
        if (vl_redis_cluster_slot(key, strlen(key)) % 16 != 0)
            continue; /* fewer map lookups */
        primaries_for(loop, pref, vl_redis_cluster_slot(key, strlen(key)), &src, &dst, NULL);
        if (src.port == primary_port)
            snprintf(keys[n++], sizeof(keys[0]), "%s", key);
    }
    assert_int_equal(n, 10);
    for (i = 0; i < n; i++) {
        vl_future *f = run(loop, vl_redis_cluster_command(pref, "SET %s v", keys[i]), VL_OK);
        vl_future_free(f);
    }
    tu_kill_server(name);
    /* Each cluster notices (bounded): its pool to the replica is down. */
    for (i = 0; i < 500 && (node_state_of(pref, k) != VL_REDIS_DOWN ||
                            node_state_of(only, k) != VL_REDIS_DOWN);
         i++) {
        vl_future *f = vl_redis_cluster_command(only, "GET %s", keys[0]);
        tu_await(loop, f); /* a read routed there fails, and marks it down */
        vl_future_free(f);
        tu_sleep_ms(loop, 20);
    }
    assert_int_equal(node_state_of(pref, k), VL_REDIS_DOWN);
    assert_int_equal(node_state_of(only, k), VL_REDIS_DOWN);
    for (i = 0; i < n; i++) {
        vl_future *f = run(loop, vl_redis_cluster_command(pref, "GET %s", keys[i]), VL_OK);
        tu_check_str(vl_future_redis_reply(f), "v");
        vl_future_free(f);
        f = run(loop, vl_redis_cluster_command(only, "GET %s", keys[i]), VL_ECONN);
        vl_future_free(f);
    }
    vl_redis_cluster_free(pref);
    vl_redis_cluster_free(only);
    tu_restart_server(name);
    tu_cluster_wait_ok();
    tu_finish(loop);
}

/* ---- failover under load ---- */

typedef struct fo_load {
    load b;
    int running;
    int streak;       /* successes in a row on the watched slot */
    int64_t calls[4096];
} fo_load;

typedef struct fo_op {
    fo_load *L;
    int n;
    int watched;
} fo_op;

static void fo_issue(fo_load *L);

static void fo_done(vl_future *f, void *ud)
{
    fo_op *op = ud;
    fo_load *L = op->L;
    int ok = load_done(&L->b, f);

    L->calls[op->n % 4096]++;
    if (op->watched)
        L->streak = ok ? L->streak + 1 : 0;
    free(op);
    if (L->running)
        fo_issue(L);
}

static void fo_issue(fo_load *L)
{
    while (L->running && L->b.inflight < 50) {
        fo_op *op = calloc(1, sizeof(*op));
        vl_future *f;
        assert_non_null(op);
        op->L = L;
        op->n = L->b.issued++;
        op->watched = op->n % 2 == 0;
        if (op->watched)
            f = vl_redis_cluster_command(L->b.cl, "SET {fo}%d x", op->n % 100);
        else
            f = vl_redis_cluster_command(L->b.cl, "INCR fo:%d", op->n % 1000);
        assert_non_null(f);
        L->b.inflight++;
        vl_future_then(f, fo_done, op);
    }
}

/* The port of the primary of `slot` in the cluster's map. */
static int map_primary_port(vl_loop *loop, vl_redis_cluster *cl, const char *key)
{
    nodeinfo s, d;

    primaries_for(loop, cl, vl_redis_cluster_slot(key, strlen(key)), &s, &d, NULL);
    return s.port;
}

static void fo_finish(vl_loop *loop, fo_load *L)
{
    vl_future *f;
    int i;

    L->running = 0;
    vl_loop_run(loop);
    /* A map patched by MOVED replies until the whole of it is read again. */
    f = run(loop, vl_redis_cluster_refresh(L->b.cl), VL_OK);
    vl_future_free(f);
    assert_int_equal(L->b.completed, L->b.issued);
    assert_int_equal(L->b.inflight, 0);
    for (i = 0; i < 4096 && i < L->b.issued; i++) {
        /* Each op number n maps to calls[n % 4096]: the counts add up to
         * exactly the ops issued with that residue. */
        int64_t want = L->b.issued / 4096 + (i < L->b.issued % 4096 ? 1 : 0);
        assert_int_equal(L->calls[i], want);
    }
}

static void primary_killed_under_load(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster_options o;
    vl_redis_cluster *cl;
    fo_load *L = calloc(1, sizeof(*L));
    int victim, i;
    uint64_t t0, t1;
    vl_redis_cluster_stats before, after;
    const char *name;

    (void)state;
    assert_non_null(L);
    tu_cluster_wait_ok();
    vl_redis_cluster_options_init(&o);
    o.command_timeout_ms = 2000;
    cl = cluster_ready(loop, NULL, &o);
    victim = map_primary_port(loop, cl, "fo");
    name = name_of_port(victim);
    L->b.cl = cl;
        L->running = 1;
    fo_issue(L);
    tu_sleep_ms(loop, 300);
    assert_true(L->b.ok > 0);
    before = cstats(cl);
    tu_kill_server(name);
    t0 = vl_loop_now_ms(loop);
    /* Wait (bounded) until the slot's commands succeed again: 200 in a row. */
    L->streak = 0;
    tu_sleep_ms(loop, 100);
    L->streak = 0;
    for (i = 0; i < 6000 && L->streak < 200; i++)
        tu_sleep_ms(loop, 10);
    t1 = vl_loop_now_ms(loop);
    assert_true(L->streak >= 200);
    after = cstats(cl);
    print_message("# failover followed after %llu ms (%d ok, %d failed)\n",
                  (unsigned long long)(t1 - t0), L->b.ok, L->b.failed);
    /* The new primary of the slot is not the dead node. */
    assert_int_not_equal(map_primary_port(loop, cl, "fo"), victim);
    assert_true(after.refreshes > before.refreshes);
    /* No reconnect storm: each of the dead node's connections tries at
     * most about once per backoff step (100 ms doubling to 5 s). */
    {
        uint64_t secs = (t1 - t0) / 1000 + 1;
        uint64_t bound = (o.node_max_size + 1) * (8 + secs);
        print_message("# connect errors during the outage: %llu (bound %llu)\n",
                      (unsigned long long)(after.connect_errors - before.connect_errors),
                      (unsigned long long)bound);
        assert_true(after.connect_errors - before.connect_errors <= bound);
    }
    fo_finish(loop, L);
    free(L);
    vl_redis_cluster_free(cl);
    tu_restart_server(name);
    tu_cluster_wait_ok();
    tu_finish(loop);
}

static void manual_failover_under_load(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster *cl;
    fo_load *L = calloc(1, sizeof(*L));
    int old, i, replica_port = 0;
    size_t k;
    vl_redis *c;
    vl_future *f;

    (void)state;
    assert_non_null(L);
    tu_cluster_wait_ok();
    cl = cluster_ready(loop, NULL, NULL);
    old = map_primary_port(loop, cl, "fo");
    /* A replica of that primary. */
    for (k = 0; k < vl_redis_cluster_nodes(cl); k++) {
        vl_redis_node_info ni, p;
        vl_redis_node_info_init(&ni);
        vl_redis_node_info_init(&p);
        assert_int_equal(vl_redis_cluster_node(cl, k, &ni), VL_OK);
        assert_int_equal(vl_redis_cluster_node(cl, ni.primary, &p), VL_OK);
        if (ni.role == VL_REDIS_ROLE_REPLICA && atoi(strrchr(p.addr, ':') + 1) == old)
            replica_port = atoi(strrchr(ni.addr, ':') + 1);
    }
    assert_true(replica_port > 0);
    L->b.cl = cl;
        L->running = 1;
    fo_issue(L);
    tu_sleep_ms(loop, 200);
    c = node_conn(loop, replica_port);
    f = run(loop, vl_redis_command(c, "CLUSTER FAILOVER"), VL_OK);
    vl_future_free(f);
    /* Until the replica says it is the primary, then a while more. */
    for (i = 0; i < 1000; i++) {
        const char *role;
        f = run(loop, vl_redis_command(c, "ROLE"), VL_OK);
        role = vl_redis_reply_str(vl_redis_reply_element(vl_future_redis_reply(f), 0), NULL);
        if (strcmp(role, "master") == 0) {
            vl_future_free(f);
            break;
        }
        vl_future_free(f);
        tu_sleep_ms(loop, 20);
    }
    assert_true(i < 1000);
    L->streak = 0;
    for (i = 0; i < 3000 && L->streak < 500; i++)
        tu_sleep_ms(loop, 10);
    assert_true(L->streak >= 500);
    print_message("# manual failover: %d ok, %d failed of %d\n", L->b.ok, L->b.failed, L->b.issued);
    assert_true(L->b.failed * 20 < L->b.issued); /* most succeeded */
    fo_finish(loop, L);
    /* The MOVED replies moved the slot; the map's shard order is the next
     * refresh's to settle, and a node that has not heard of the failover
     * yet (the cluster's gossip takes its time) still answers with the old
     * map: the refreshes converge on the new one within seconds. */
    for (i = 0; i < 50; i++) {
        vl_future_free(tu_wait_for(loop, vl_redis_cluster_refresh(cl)));
        if (map_primary_port(loop, cl, "fo") == replica_port)
            break;
        tu_sleep_ms(loop, 100);
    }
    if (i > 0)
        print_message("# the map named the new primary after %d refreshes\n", i + 1);
    assert_int_equal(map_primary_port(loop, cl, "fo"), replica_port);
    vl_redis_free(c);
    free(L);
    vl_redis_cluster_free(cl);
    tu_cluster_wait_ok();
    tu_finish(loop);
}

/* A refresh that reads the map in place again changes nothing: no new
 * epoch, the same nodes; routing goes on as before. */
static void stable_refresh_keeps_the_map(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster *cl;
    vl_future *f;
    uint64_t epoch, refreshes;
    int i;

    (void)state;
    tu_cluster_wait_ok();
    cl = cluster_ready(loop, NULL, NULL);
    /* A replica still syncing may join the map a refresh later. */
    for (i = 0; i < 100 && vl_redis_cluster_nodes(cl) < 6; i++) {
        vl_future_free(tu_wait_for(loop, vl_redis_cluster_refresh(cl)));
        tu_sleep_ms(loop, 50);
    }
    assert_int_equal(vl_redis_cluster_nodes(cl), 6);
    epoch = cstats(cl).map_epoch;
    refreshes = cstats(cl).refreshes;
    for (i = 0; i < 5; i++) {
        f = run(loop, vl_redis_cluster_refresh(cl), VL_OK);
        vl_future_free(f);
    }
    assert_int_equal(cstats(cl).refreshes, refreshes + 5);
    assert_int_equal(cstats(cl).map_epoch, epoch);
    assert_int_equal(vl_redis_cluster_nodes(cl), 6);
    f = run(loop, vl_redis_cluster_command(cl, "SET %s %s", "stable:k", "v"), VL_OK);
    vl_future_free(f);
    f = run(loop, vl_redis_cluster_command(cl, "GET %s", "stable:k"), VL_OK);
    tu_check_str(vl_future_redis_reply(f), "v");
    vl_future_free(f);
    vl_redis_cluster_free(cl);
    tu_finish(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(ready_and_map, tu_setup),
        cmocka_unit_test_setup(stable_refresh_keeps_the_map, tu_setup),
        cmocka_unit_test_setup(periodic_refresh, tu_setup),
        cmocka_unit_test_setup(name_on_every_connection, tu_setup),
        cmocka_unit_test_setup(ten_thousand_set_get, tu_setup),
        cmocka_unit_test_setup(hash_tags_share_a_slot, tu_setup),
        cmocka_unit_test_setup(refusals_before_sending, tu_setup),
        cmocka_unit_test_setup(command_key_routes_by_key, tu_setup),
        cmocka_unit_test_setup(batch_in_callers_order, tu_setup),
        cmocka_unit_test_setup(lease_multi_exec_on_one_slot, tu_setup),
        cmocka_unit_test_setup(blocking_commands_keep_their_timeout, tu_setup),
        cmocka_unit_test_setup(replica_reads, tu_setup),
        cmocka_unit_test_setup(nearest_measures_round_trips, tu_setup),
        cmocka_unit_test_setup(bad_urls, tu_setup),
        cmocka_unit_test_setup(unreachable_seeds_fail, tu_setup),
        cmocka_unit_test_setup(free_with_pending, tu_setup),
        cmocka_unit_test_setup(free_before_the_map, tu_setup),
        cmocka_unit_test_setup(loop_free_frees_the_cluster, tu_setup),
        cmocka_unit_test_setup(commands_wait_for_the_first_map, tu_setup),
        cmocka_unit_test_setup(moved_is_followed, tu_setup),
        cmocka_unit_test_setup(reshard_under_load, tu_setup),
        cmocka_unit_test_setup(replica_down, tu_setup),
        cmocka_unit_test_setup(primary_killed_under_load, tu_setup),
        cmocka_unit_test_setup(manual_failover_under_load, tu_setup),
    };

    return tu_run("redis_cluster", tests, sizeof(tests) / sizeof(tests[0]));
}
