/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_fanout.c - one command on many endpoints, against the harness's
 * redis-server instances and mariadbd, and vl_redis_cluster_each on the
 * nodes of its Redis Cluster. */
#include "testutil.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

typedef struct seen {
    int calls[8];
} seen;

static void on_host(const vl_fanout_result *r, size_t i, void *ud)
{
    seen *s = ud;

    assert_true(i < 8);
    assert_int_not_equal(vl_fanout_status(r, i), VL_ESTATE);
    s->calls[i]++;
}

static void redis_hosts_with_a_dead_one(void **state)
{
    vl_loop *loop = vl_loop_new();
    char u[4][128];
    const char *urls[4];
    const char *argv[] = {"ECHO", "hi\0there"};
    const size_t lens[] = {4, 8};
    vl_fanout_options o;
    seen s;
    vl_future *f;
    const vl_fanout_result *r;
    int i;

    (void)state;
    memset(&s, 0, sizeof(s));
    for (i = 0; i < 3; i++)
        snprintf(u[i], sizeof(u[i]), "redis://127.0.0.1:%s", tu_env_item("VL_TEST_REDIS_PORTS", i));
    snprintf(u[3], sizeof(u[3]), "redis://127.0.0.1:1");
    for (i = 0; i < 4; i++)
        urls[i] = u[i];
    vl_fanout_options_init(&o);
    o.concurrency = 2; /* the hosts queue behind each other */
    o.on_host = on_host;
    o.ud = &s;
    f = vl_fanout_redis(loop, urls, 4, 2, argv, lens, &o);
    assert_non_null(f);
    assert_int_equal(vl_loop_run_until(loop, f), VL_OK);
    r = vl_future_fanout(f);
    assert_non_null(r);
    assert_int_equal(vl_fanout_count(r), 4);
    for (i = 0; i < 3; i++) {
        size_t len;
        const char *v;
        assert_int_equal(vl_fanout_status(r, (size_t)i), VL_OK);
        v = vl_redis_reply_str(vl_fanout_redis_reply(r, (size_t)i), &len);
        assert_int_equal(len, 8);
        assert_memory_equal(v, "hi\0there", 8);
        assert_int_equal(s.calls[i], 1);
        assert_string_equal(vl_fanout_host(r, (size_t)i), u[i]);
    }
    assert_int_equal(vl_fanout_status(r, 3), VL_ECONN);
    assert_non_null(strstr(vl_fanout_error(r, 3), "127.0.0.1:1"));
    assert_int_equal(s.calls[3], 1);
    vl_future_free(f);
    tu_loop_finish(loop);
}

static void default_password_and_bad_url(void **state)
{
    vl_loop *loop = vl_loop_new();
    char u[128];
    const char *urls[2];
    const char *argv[] = {"PING"};
    vl_fanout_options o;
    vl_future *f;
    const vl_fanout_result *r;
    const char *pw = tu_env("VL_TEST_REDIS_PASSWORD");

    (void)state;
    snprintf(u, sizeof(u), "redis://127.0.0.1:%s", tu_env("VL_TEST_REDIS_AUTH_PORT"));
    urls[0] = u;
    vl_fanout_options_init(&o);
    o.password = pw;
    f = vl_fanout_redis(loop, urls, 1, 1, argv, NULL, &o);
    assert_int_equal(vl_loop_run_until(loop, f), VL_OK);
    r = vl_future_fanout(f);
    assert_int_equal(vl_fanout_status(r, 0), VL_OK);
    assert_null(strstr(vl_fanout_host(r, 0), pw));
    vl_future_free(f);
    /* A malformed URL fails the whole call, naming its position only. */
    urls[1] = "redis://:sekret-pw@127.0.0.1:99999";
    f = vl_fanout_redis(loop, urls, 2, 1, argv, NULL, NULL);
    assert_int_equal(vl_loop_run_until(loop, f), VL_EINVAL);
    assert_non_null(strstr(vl_future_error(f), "host 2"));
    assert_null(strstr(vl_future_error(f), "sekret"));
    vl_future_free(f);
    tu_loop_finish(loop);
}

static void cancel_with_a_stopped_host(void **state)
{
    vl_loop *loop = vl_loop_new();
    char u[2][128];
    const char *urls[2];
    const char *argv[] = {"PING"};
    vl_fanout_options o;
    vl_future *f, *guard;
    long pid;
    int rc;

    (void)state;
    pid = tu_server_pid("redis-3");
    snprintf(u[0], sizeof(u[0]), "redis://127.0.0.1:%s", tu_env_item("VL_TEST_REDIS_PORTS", 0));
    snprintf(u[1], sizeof(u[1]), "redis://127.0.0.1:%s", tu_env_item("VL_TEST_REDIS_PORTS", 2));
    urls[0] = u[0];
    urls[1] = u[1];
    vl_fanout_options_init(&o);
    o.timeout_ms = 60000;
    kill((pid_t)pid, SIGSTOP);
    f = vl_fanout_redis(loop, urls, 2, 1, argv, NULL, &o);
    guard = vl_loop_sleep(loop, 100);
    rc = vl_loop_run_until(loop, guard);
    assert_int_equal(rc, VL_OK);
    vl_future_free(guard);
    assert_false(vl_future_done(f));
    assert_int_equal(vl_future_cancel(f), 1);
    kill((pid_t)pid, SIGCONT);
    assert_int_equal(vl_future_status(f), VL_ECANCELED);
    vl_future_free(f);
    vl_loop_run(loop); /* the hosts' own callbacks come back and free the rest */
    tu_loop_finish(loop);
}

/* A batch is pipelined per host; the first failing command decides the
 * host's status, and every reply stays readable. */
static void redis_batch(void **state)
{
    vl_loop *loop = vl_loop_new();
    char u[2][128];
    const char *urls[2];
    const char *set[] = {"SET", "fanout:batch", "v1"};
    const char *get[] = {"GET", "fanout:batch"};
    const char *push[] = {"LPUSH", "fanout:batch", "x"};
    vl_redis_cmd cmds[3];
    vl_future *f;
    const vl_fanout_result *r;
    size_t i;

    (void)state;
    cmds[0].argc = 3, cmds[0].argv = set, cmds[0].argvlen = NULL;
    cmds[1].argc = 2, cmds[1].argv = get, cmds[1].argvlen = NULL;
    cmds[2].argc = 3, cmds[2].argv = push, cmds[2].argvlen = NULL;
    for (i = 0; i < 2; i++) {
        snprintf(u[i], sizeof(u[i]), "redis://127.0.0.1:%s",
                 tu_env_item("VL_TEST_REDIS_PORTS", (int)i));
        urls[i] = u[i];
    }
    f = vl_fanout_redis_batch(loop, urls, 2, cmds, 3, NULL);
    assert_int_equal(vl_loop_run_until(loop, f), VL_OK);
    r = vl_future_fanout(f);
    assert_int_equal(vl_fanout_batch_size(r), 3);
    for (i = 0; i < 2; i++) {
        assert_int_equal(vl_fanout_status(r, i), VL_ESERVER);
        assert_true(strncmp(vl_fanout_error(r, i), "command 3: ", 11) == 0);
        assert_non_null(strstr(vl_fanout_error(r, i), ": WRONGTYPE"));
        tu_check_str(vl_fanout_redis_reply_at(r, i, 0), "OK");
        tu_check_str(vl_fanout_redis_reply_at(r, i, 1), "v1");
        assert_int_equal(vl_redis_reply_type(vl_fanout_redis_reply_at(r, i, 2)), VL_REDIS_ERROR);
        assert_null(vl_fanout_redis_reply_at(r, i, 3));
    }
    vl_future_free(f);
    /* An empty command in a batch is a bad argument, before any I/O. */
    cmds[1].argc = 0;
    f = vl_fanout_redis_batch(loop, urls, 2, cmds, 3, NULL);
    assert_int_equal(vl_loop_run_until(loop, f), VL_EINVAL);
    assert_non_null(strstr(vl_future_error(f), "command 2"));
    vl_future_free(f);
    tu_loop_finish(loop);
}

typedef struct canceller {
    vl_future *f;
    int calls;
} canceller;

static void cancel_on_first_host(const vl_fanout_result *r, size_t i, void *ud)
{
    canceller *c = ud;

    (void)r;
    (void)i;
    if (c->calls++ == 0)
        assert_int_equal(vl_future_cancel(c->f), 1);
}

/* The on_host callback may cancel the fan-out it reports on. */
static void cancel_from_on_host(void **state)
{
    vl_loop *loop = vl_loop_new();
    char u[2][128];
    const char *urls[2];
    const char *argv[] = {"PING"};
    vl_fanout_options o;
    canceller c = {NULL, 0};

    (void)state;
    snprintf(u[0], sizeof(u[0]), "redis://127.0.0.1:%s", tu_env_item("VL_TEST_REDIS_PORTS", 0));
    snprintf(u[1], sizeof(u[1]), "redis://127.0.0.1:%s", tu_env_item("VL_TEST_REDIS_PORTS", 1));
    urls[0] = u[0];
    urls[1] = u[1];
    vl_fanout_options_init(&o);
    o.concurrency = 1;
    o.on_host = cancel_on_first_host;
    o.ud = &c;
    c.f = vl_fanout_redis(loop, urls, 2, 1, argv, NULL, &o);
    assert_int_equal(vl_loop_run_until(loop, c.f), VL_ECANCELED);
    assert_int_equal(c.calls, 1);
    vl_future_free(c.f);
    vl_loop_run(loop);
    tu_loop_finish(loop);
}

static void fanout_done(vl_future *f, void *ud)
{
    int *st = ud;

    *st = vl_future_status(f);
    assert_non_null(vl_future_fanout(f));
}

/* Freeing the loop with a fan-out running completes it with VL_ECANCELED. */
static void loop_free_cancels_fanout(void **state)
{
    vl_loop *loop = vl_loop_new();
    char u[256];
    const char *urls[1];
    int st = 1;

    (void)state;
    snprintf(u, sizeof(u), "mysql://%s:%s@127.0.0.1:%s/%s", tu_env("VL_TEST_MYSQL_USER"),
             tu_env("VL_TEST_MYSQL_PASSWORD"), tu_env("VL_TEST_MYSQL_PORT"),
             tu_env("VL_TEST_MYSQL_DB"));
    urls[0] = u;
    vl_future_then(vl_fanout_mysql(loop, urls, 1, "SELECT SLEEP(5)", NULL), fanout_done, &st);
    vl_loop_free(loop);
    assert_int_equal(st, VL_ECANCELED);
    assert_int_equal(tu_alloc_live(), 0);
}

static void mysql_hosts(void **state)
{
    vl_loop *loop = vl_loop_new();
    char u[2][256];
    const char *urls[2];
    vl_future *f;
    const vl_fanout_result *r;
    int64_t v;
    int i;

    (void)state;
    snprintf(u[0], sizeof(u[0]), "mysql://%s:%s@127.0.0.1:%s/%s", tu_env("VL_TEST_MYSQL_USER"),
             tu_env("VL_TEST_MYSQL_PASSWORD"), tu_env("VL_TEST_MYSQL_PORT"),
             tu_env("VL_TEST_MYSQL_DB"));
    snprintf(u[1], sizeof(u[1]), "mysql://%s:wrong@127.0.0.1:%s/%s", tu_env("VL_TEST_MYSQL_USER"),
             tu_env("VL_TEST_MYSQL_PORT"), tu_env("VL_TEST_MYSQL_DB"));
    for (i = 0; i < 2; i++)
        urls[i] = u[i];
    f = vl_fanout_mysql(loop, urls, 2, "SELECT 6 * 7", NULL);
    assert_int_equal(vl_loop_run_until(loop, f), VL_OK);
    r = vl_future_fanout(f);
    assert_int_equal(vl_fanout_status(r, 0), VL_OK);
    assert_int_equal(vl_mysql_result_int64(vl_fanout_mysql_result(r, 0), 0, 0, &v), VL_OK);
    assert_int_equal(v, 42);
    assert_int_equal(vl_fanout_status(r, 1), VL_ECONN);
    assert_int_equal(vl_fanout_mysql_errno(r, 1), 1045);
    assert_null(strstr(vl_fanout_error(r, 1), "wrong"));
    vl_future_free(f);
    tu_loop_finish(loop);
}

static void out_of_memory(void **state)
{
    long n;
    int completed = 0;
    char u[128];
    const char *urls[1];
    const char *argv[] = {"PING"};

    (void)state;
    snprintf(u, sizeof(u), "redis://127.0.0.1:%s", tu_env_item("VL_TEST_REDIS_PORTS", 0));
    urls[0] = u;
    for (n = 1; n < 300 && !completed; n++) {
        vl_loop *loop;
        vl_future *f;
        tu_alloc_fail_at(n);
        loop = vl_loop_new();
        if (loop == NULL)
            continue;
        f = vl_fanout_redis(loop, urls, 1, 1, argv, NULL, NULL);
        if (f != NULL) {
            int rc = vl_loop_run_until(loop, f);
            /* Out of memory is the only failure the fan-out itself may
             * report here (the URL is good); VL_ESTATE would mean that the
             * future never completed, which rule 2 forbids. A host that ran
             * out of memory says so, or fails its connect (hiredis reports
             * its own allocation failures as connection errors). */
            if (rc == VL_OK) {
                int st = vl_fanout_status(vl_future_fanout(f), 0);
                if (st != VL_OK && st != VL_ENOMEM && st != VL_ECONN)
                    fail_msg("allocation %ld: host status %d (%s)", n, st,
                             vl_fanout_error(vl_future_fanout(f), 0));
                completed = st == VL_OK;
            } else if (rc != VL_ENOMEM) {
                fail_msg("allocation %ld: fan-out status %d (%s)", n, rc, vl_future_error(f));
            }
            vl_future_free(f);
        }
        vl_loop_free(loop);
        assert_int_equal(tu_alloc_live(), 0);
    }
    tu_alloc_fail_at(0);
    assert_true(completed);
}

/* A program built against an older header: fan-out options cut after
 * timeout_ms (no concurrency, password or on_host): the defaults apply. */
typedef struct old_fanout_options {
    size_t struct_size;
    uint64_t connect_timeout_ms;
    uint64_t timeout_ms;
} old_fanout_options;

static void options_from_an_older_header(void **state)
{
    vl_loop *loop = vl_loop_new();
    old_fanout_options o;
    vl_fanout_options big;
    const char *urls[2];
    const char *argv[] = {"PING"};
    vl_future *f;
    const vl_fanout_result *r;

    (void)state;
    urls[0] = tu_redis_url(0);
    urls[1] = tu_redis_url(1);
    vl_fanout_options_init_sized((vl_fanout_options *)(void *)&o, sizeof(o));
    assert_int_equal(o.timeout_ms, 10000);
    o.timeout_ms = 3000;
    f = vl_fanout_redis(loop, urls, 2, 1, argv, NULL,
                        (const vl_fanout_options *)(const void *)&o);
    assert_int_equal(vl_loop_run_until(loop, f), VL_OK);
    r = vl_future_fanout(f);
    assert_int_equal(vl_fanout_status(r, 0), VL_OK);
    assert_int_equal(vl_fanout_status(r, 1), VL_OK);
    vl_future_free(f);

    vl_fanout_options_init(&big);
    big.struct_size = sizeof(big) + 8;
    f = vl_fanout_redis(loop, urls, 2, 1, argv, NULL, &big);
    assert_int_equal(vl_loop_run_until(loop, f), VL_EINVAL);
    assert_non_null(strstr(vl_future_error(f), "struct_size"));
    vl_future_free(f);
    tu_loop_finish(loop);
}

/* ---- vl_redis_cluster_each, against the harness's 6-node cluster ---- */

/* Each cluster test stops by itself well within this; a hang fails it. */
#define CLUSTER_WATCHDOG_S 60

static long stopped_pid; /* a SIGSTOPped node, continued by teardown */

/* The watchdog: a hung test must not leave a cluster node stopped for the
 * tests after it. */
static void on_cluster_watchdog(int sig)
{
    static const char msg[] = "# watchdog: the cluster test hung\n";
    ssize_t n;

    (void)sig;
    if (stopped_pid > 0)
        kill((pid_t)stopped_pid, SIGCONT);
    n = write(STDOUT_FILENO, msg, sizeof(msg) - 1);
    (void)n;
    _exit(124);
}

static int cluster_setup(void **state)
{
    stopped_pid = 0;
    signal(SIGALRM, on_cluster_watchdog);
    alarm(CLUSTER_WATCHDOG_S);
    return tu_setup(state);
}

/* Runs after a failed assertion too: a stopped node is always continued. */
static int cluster_teardown(void **state)
{
    (void)state;
    if (stopped_pid > 0)
        kill((pid_t)stopped_pid, SIGCONT);
    stopped_pid = 0;
    alarm(0);
    return 0;
}

/* Port i of VL_TEST_CLUSTER_PORTS (cluster-1 first), a list separated by
 * spaces or commas (rotating static buffers). */
static const char *cluster_port_at(int i)
{
    static char buf[4][16];
    static int slot;
    const char *v = tu_env("VL_TEST_CLUSTER_PORTS");
    char *out = buf[slot++ % 4];
    size_t n;
    int k;

    v += strspn(v, " ,");
    for (k = 0; k < i && *v != '\0'; k++) {
        v += strcspn(v, " ,");
        v += strspn(v, " ,");
    }
    n = strcspn(v, " ,");
    if (n == 0 || n >= sizeof(buf[0]))
        fail_msg("VL_TEST_CLUSTER_PORTS has no item %d", i);
    snprintf(out, sizeof(buf[0]), "%.*s", (int)n, v);
    return out;
}

/* The index in VL_TEST_CLUSTER_PORTS (cluster-1 first) of "host:port". */
static int cluster_index(const char *addr)
{
    const char *colon = strrchr(addr, ':');
    int i;

    assert_non_null(colon);
    assert_memory_equal(addr, "127.0.0.1:", 10);
    for (i = 0; i < 6; i++)
        if (strcmp(colon + 1, cluster_port_at(i)) == 0)
            return i;
    fail_msg("%s is no node of the harness's cluster", addr);
    return -1;
}

/* A cluster from the first node as its seed, ready (every primary
 * connected) before it is returned. */
static vl_redis_cluster *cluster_ready(vl_loop *loop, const vl_redis_cluster_options *o)
{
    char url[128];
    vl_redis_cluster *cl;
    vl_future *f;

    snprintf(url, sizeof(url), "redis+cluster://127.0.0.1:%s",
             cluster_port_at(0));
    cl = vl_redis_cluster_new(loop, url, o);
    assert_non_null(cl);
    f = vl_redis_cluster_ready(cl);
    tu_run_cmd(loop, f, VL_OK);
    vl_future_free(f);
    /* Ready needs the primaries; these tests count every node, and a
     * replica still syncing after the harness started (or after another
     * suite's failover) may not be in the first map yet. */
    for (int i = 0; i < 100 && vl_redis_cluster_nodes(cl) < 6; i++) {
        vl_future_free(tu_wait_for(loop, vl_redis_cluster_refresh(cl)));
        tu_sleep_ms(loop, 100);
    }
    return cl;
}

/* Runs one command on `which` nodes; fails the test unless the fan-out
 * itself completes with VL_OK. The caller frees the future. */
static vl_future *each(vl_loop *loop, vl_redis_cluster *cl, int which, int argc,
                       const char **argv)
{
    vl_future *f = vl_redis_cluster_each(cl, which, argc, argv, NULL);

    tu_run_cmd(loop, f, VL_OK);
    assert_non_null(vl_future_fanout(f));
    return f;
}

/* The value of "field:" in an INFO reply, as a number. */
static long info_field(const vl_redis_reply *r, const char *field)
{
    const char *s = vl_redis_reply_str(r, NULL), *p;

    assert_non_null(s);
    p = strstr(s, field);
    if (p == NULL)
        fail_msg("no %s in INFO", field);
    return strtol(p + strlen(field), NULL, 10);
}

/* INFO and DBSIZE on every primary: three hosts, each a different primary
 * of the harness's cluster, each answering itself. */
static void cluster_each_primaries(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster *cl;
    const char *info[] = {"INFO", "server"}, *repl[] = {"INFO", "replication"};
    const char *dbsize[] = {"DBSIZE"};
    const vl_fanout_result *r;
    vl_future *f;
    size_t i, k;
    long long n;

    (void)state;
    cl = cluster_ready(loop, NULL);
    f = each(loop, cl, VL_REDIS_CLUSTER_PRIMARIES, 2, info);
    r = vl_future_fanout(f);
    assert_int_equal(vl_fanout_count(r), 3);
    for (i = 0; i < 3; i++) {
        const char *host = vl_fanout_host(r, i);
        int idx = cluster_index(host);

        assert_int_equal(vl_fanout_status(r, i), VL_OK);
        assert_string_equal(vl_fanout_error(r, i), "");
        /* The node that answered is the one named. */
        assert_int_equal(info_field(vl_fanout_redis_reply(r, i), "tcp_port:"),
                         atol(cluster_port_at(idx)));
        for (k = 0; k < i; k++)
            assert_string_not_equal(vl_fanout_host(r, k), host);
    }
    vl_future_free(f);
    f = each(loop, cl, VL_REDIS_CLUSTER_PRIMARIES, 2, repl);
    r = vl_future_fanout(f);
    for (i = 0; i < vl_fanout_count(r); i++)
        assert_non_null(strstr(vl_redis_reply_str(vl_fanout_redis_reply(r, i), NULL),
                               "role:master"));
    vl_future_free(f);
    f = each(loop, cl, VL_REDIS_CLUSTER_PRIMARIES, 1, dbsize);
    r = vl_future_fanout(f);
    assert_int_equal(vl_fanout_count(r), 3);
    for (i = 0; i < 3; i++) {
        assert_int_equal(vl_fanout_status(r, i), VL_OK);
        assert_int_equal(vl_redis_reply_integer(vl_fanout_redis_reply(r, i), &n), VL_OK);
        assert_true(n >= 0);
    }
    vl_future_free(f);
    vl_redis_cluster_free(cl);
    tu_finish(loop);
}

/* Every node: all six, each once, each primary followed by its replica. */
static void cluster_each_node(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster *cl;
    const char *repl[] = {"INFO", "replication"};
    const vl_fanout_result *r;
    int times[6] = {0}, primaries = 0;
    long primary_port = 0;
    vl_future *f;
    size_t i;

    (void)state;
    cl = cluster_ready(loop, NULL);
    f = each(loop, cl, VL_REDIS_CLUSTER_NODES, 2, repl);
    r = vl_future_fanout(f);
    assert_int_equal(vl_fanout_count(r), 6);
    for (i = 0; i < 6; i++) {
        const vl_redis_reply *rep = vl_fanout_redis_reply(r, i);
        const char *s;
        int idx = cluster_index(vl_fanout_host(r, i));

        assert_int_equal(vl_fanout_status(r, i), VL_OK);
        times[idx]++;
        s = vl_redis_reply_str(rep, NULL);
        assert_non_null(s);
        if (strstr(s, "role:master") != NULL) {
            primaries++;
            primary_port = atol(cluster_port_at(idx));
        } else {
            /* A replica comes after the primary it replicates. */
            assert_non_null(strstr(s, "role:slave"));
            assert_true(i > 0);
            assert_int_equal(info_field(rep, "master_port:"), primary_port);
        }
    }
    assert_int_equal(primaries, 3);
    for (i = 0; i < 6; i++)
        assert_int_equal(times[i], 1);
    vl_future_free(f);
    vl_redis_cluster_free(cl);
    tu_finish(loop);
}

/* The keys written through the cluster are the sum of the primaries'
 * DBSIZE, spread over all three. */
static void cluster_each_dbsize_sums(void **state)
{
    enum { KEYS = 500 };
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster *cl;
    const char *flush[] = {"FLUSHALL"}, *dbsize[] = {"DBSIZE"};
    const vl_fanout_result *r;
    vl_future *f, *sets[KEYS];
    long long n, sum = 0;
    size_t i;

    (void)state;
    cl = cluster_ready(loop, NULL);
    f = each(loop, cl, VL_REDIS_CLUSTER_PRIMARIES, 1, flush);
    r = vl_future_fanout(f);
    for (i = 0; i < vl_fanout_count(r); i++)
        assert_int_equal(vl_fanout_status(r, i), VL_OK);
    vl_future_free(f);
    for (i = 0; i < KEYS; i++)
        sets[i] = vl_redis_cluster_command(cl, "SET each:%zu v", i);
    f = vl_future_all(loop, sets, KEYS);
    tu_run_cmd(loop, f, VL_OK);
    vl_future_free(f);
    f = each(loop, cl, VL_REDIS_CLUSTER_PRIMARIES, 1, dbsize);
    r = vl_future_fanout(f);
    assert_int_equal(vl_fanout_count(r), 3);
    for (i = 0; i < 3; i++) {
        assert_int_equal(vl_fanout_status(r, i), VL_OK);
        assert_int_equal(vl_redis_reply_integer(vl_fanout_redis_reply(r, i), &n), VL_OK);
        assert_true(n > 0); /* 500 keys reach every third of the slots */
        sum += n;
    }
    assert_int_equal(sum, KEYS);
    vl_future_free(f);
    vl_redis_cluster_free(cl);
    tu_finish(loop);
}

/* A stopped node (a replica, so that the cluster does not fail it over)
 * fails alone, with its own deadline, which never fires early, while the
 * five others answer. */
static void cluster_each_stopped_node(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster_options o;
    vl_redis_cluster *cl;
    const char *role[] = {"ROLE"}, *ping[] = {"PING"};
    const vl_fanout_result *r;
    char name[32];
    size_t i, victim = 0;
    vl_future *f;

    (void)state;
    vl_redis_cluster_options_init(&o);
    o.command_timeout_ms = 300;
    cl = cluster_ready(loop, &o);
    /* First every node answers: every pool has its connection, so the
     * stopped node's failure below is its command's deadline. */
    f = each(loop, cl, VL_REDIS_CLUSTER_NODES, 1, role);
    r = vl_future_fanout(f);
    assert_int_equal(vl_fanout_count(r), 6);
    for (i = 0; i < 6; i++) {
        const vl_redis_reply *first = vl_redis_reply_element(vl_fanout_redis_reply(r, i), 0);

        assert_int_equal(vl_fanout_status(r, i), VL_OK);
        if (strcmp(vl_redis_reply_str(first, NULL), "slave") == 0)
            victim = i;
    }
    assert_true(victim > 0);
    snprintf(name, sizeof(name), "cluster-%d", cluster_index(vl_fanout_host(r, victim)) + 1);
    vl_future_free(f);

    stopped_pid = tu_server_pid(name);
    assert_int_equal(kill((pid_t)stopped_pid, SIGSTOP), 0);
    f = each(loop, cl, VL_REDIS_CLUSTER_NODES, 1, ping);
    kill((pid_t)stopped_pid, SIGCONT);
    stopped_pid = 0;
    r = vl_future_fanout(f);
    assert_int_equal(vl_fanout_count(r), 6);
    for (i = 0; i < 6; i++) {
        if (i == victim) {
            assert_int_equal(vl_fanout_status(r, i), VL_ETIMEDOUT);
            assert_true(vl_fanout_error(r, i)[0] != '\0');
            assert_true(vl_fanout_latency_ms(r, i) >= 300.0 - 1.0);
        } else {
            assert_int_equal(vl_fanout_status(r, i), VL_OK);
            tu_check_str(vl_fanout_redis_reply(r, i), "PONG");
        }
    }
    vl_future_free(f);
    vl_redis_cluster_free(cl);
    tu_finish(loop);
}

/* Runs a fan-out that must fail itself with `want` and returns its message
 * (static copy). */
static const char *each_fails(vl_loop *loop, vl_redis_cluster *cl, int which, int argc,
                              const char **argv, int want)
{
    static char msg[256];
    vl_future *f = vl_redis_cluster_each(cl, which, argc, argv, NULL);

    tu_run_cmd(loop, f, want);
    assert_null(vl_future_fanout(f));
    snprintf(msg, sizeof(msg), "%s", vl_future_error(f));
    vl_future_free(f);
    return msg;
}

/* Bad arguments and a cluster without a map fail the fan-out itself. */
static void cluster_each_refusals(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster *cl;
    const char *ping[] = {"PING"}, *holed[] = {"ECHO", NULL};
    const int all = VL_REDIS_CLUSTER_NODES;

    (void)state;
    assert_null(vl_redis_cluster_each(NULL, all, 1, ping, NULL));
    cl = cluster_ready(loop, NULL);
    assert_non_null(strstr(each_fails(loop, cl, 0, 1, ping, VL_EINVAL),
                           "VL_REDIS_CLUSTER_PRIMARIES"));
    assert_non_null(strstr(each_fails(loop, cl, all, 0, ping, VL_EINVAL), "no command"));
    assert_non_null(strstr(each_fails(loop, cl, all, 2, holed, VL_EINVAL), "argument 1"));
    vl_redis_cluster_free(cl);
    /* A seed that refuses: no map, ever. */
    cl = vl_redis_cluster_new(loop, "redis+cluster://127.0.0.1:1", NULL);
    assert_non_null(cl);
    each_fails(loop, cl, all, 1, ping, VL_ECONN);
    vl_redis_cluster_free(cl);
    /* A bad URL: the cluster's own status. */
    cl = vl_redis_cluster_new(loop, "redis+cluster://127.0.0.1:1?bogus=1", NULL);
    assert_non_null(cl);
    assert_non_null(strstr(each_fails(loop, cl, all, 1, ping, VL_EINVAL), "bogus"));
    vl_redis_cluster_free(cl);
    tu_finish(loop);
}

/* Cancelling a cluster fan-out with a node stopped: VL_ECANCELED at once,
 * and the nodes' commands still come back and free what is left. */
static void cluster_each_cancel(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster *cl;
    const char *ping[] = {"PING"};
    vl_future *f, *guard;
    int idx;

    (void)state;
    cl = cluster_ready(loop, NULL);
    f = each(loop, cl, VL_REDIS_CLUSTER_NODES, 1, ping);
    idx = cluster_index(vl_fanout_host(vl_future_fanout(f), 1)); /* a replica */
    vl_future_free(f);
    {
        char name[32];

        snprintf(name, sizeof(name), "cluster-%d", idx + 1);
        stopped_pid = tu_server_pid(name);
    }
    assert_int_equal(kill((pid_t)stopped_pid, SIGSTOP), 0);
    f = vl_redis_cluster_each(cl, VL_REDIS_CLUSTER_NODES, 1, ping, NULL);
    assert_non_null(f);
    guard = vl_loop_sleep(loop, 100);
    tu_run_cmd(loop, guard, VL_OK);
    vl_future_free(guard);
    assert_false(vl_future_done(f));
    assert_int_equal(vl_future_cancel(f), 1);
    assert_int_equal(vl_future_status(f), VL_ECANCELED);
    kill((pid_t)stopped_pid, SIGCONT);
    stopped_pid = 0;
    vl_future_free(f);
    vl_redis_cluster_free(cl);
    tu_finish(loop);
}

/* Every allocation of a cluster fan-out failing in turn: the future still
 * completes once (or the call says NULL), a host that lost an allocation
 * says so, and nothing leaks. */
static void cluster_each_out_of_memory(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster_options o;
    vl_redis_cluster *cl;
    const char *ping[] = {"PING"};
    int completed = 0;
    long n;

    (void)state;
    vl_redis_cluster_options_init(&o);
    o.refresh_interval_ms = 0; /* nothing but the fan-out allocates below */
    cl = cluster_ready(loop, &o);
    for (n = 1; n < 400 && !completed; n++) {
        vl_future *f;

        tu_alloc_fail_at(n);
        f = vl_redis_cluster_each(cl, VL_REDIS_CLUSTER_PRIMARIES, 1, ping, NULL);
        if (f != NULL) {
            int rc = vl_loop_run_until(loop, f);

            if (rc == VL_OK) {
                const vl_fanout_result *r = vl_future_fanout(f);
                size_t i, ok = 0;

                assert_int_equal(vl_fanout_count(r), 3);
                for (i = 0; i < 3; i++) {
                    int st = vl_fanout_status(r, i);

                    if (st != VL_OK && st != VL_ENOMEM && st != VL_ECONN)
                        fail_msg("allocation %ld: node %zu status %d (%s)", n, i, st,
                                 vl_fanout_error(r, i));
                    ok += st == VL_OK;
                }
                completed = ok == 3;
            } else if (rc != VL_ENOMEM) {
                fail_msg("allocation %ld: fan-out status %d (%s)", n, rc, vl_future_error(f));
            }
            vl_future_free(f);
        }
    }
    tu_alloc_fail_at(0);
    assert_true(completed);
    vl_redis_cluster_free(cl);
    tu_finish(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(redis_hosts_with_a_dead_one, tu_setup),
        cmocka_unit_test_setup(default_password_and_bad_url, tu_setup),
        cmocka_unit_test_setup(cancel_with_a_stopped_host, tu_setup),
        cmocka_unit_test_setup(cancel_from_on_host, tu_setup),
        cmocka_unit_test_setup(redis_batch, tu_setup),
        cmocka_unit_test_setup(mysql_hosts, tu_setup),
        cmocka_unit_test_setup(loop_free_cancels_fanout, tu_setup),
        cmocka_unit_test_setup(out_of_memory, tu_setup),
        cmocka_unit_test_setup(options_from_an_older_header, tu_setup),
        cmocka_unit_test_setup_teardown(cluster_each_primaries, cluster_setup, cluster_teardown),
        cmocka_unit_test_setup_teardown(cluster_each_node, cluster_setup, cluster_teardown),
        cmocka_unit_test_setup_teardown(cluster_each_dbsize_sums, cluster_setup, cluster_teardown),
        cmocka_unit_test_setup_teardown(cluster_each_stopped_node, cluster_setup,
                                        cluster_teardown),
        cmocka_unit_test_setup_teardown(cluster_each_refusals, cluster_setup, cluster_teardown),
        cmocka_unit_test_setup_teardown(cluster_each_cancel, cluster_setup, cluster_teardown),
        cmocka_unit_test_setup_teardown(cluster_each_out_of_memory, cluster_setup,
                                        cluster_teardown),
    };

    return tu_run("fanout", tests, sizeof(tests) / sizeof(tests[0]));
}
