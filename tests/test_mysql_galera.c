/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_mysql_galera.c - a vl_mysql_cluster over a 3-node Galera
 * cluster (make test-galera: VL_TEST_GALERA_PORTS=p1,p2,p3, the test user
 * and database of the main instance): writes on one node, reads spread over
 * the synced ones, and a node cut off from the primary component
 * (gmcast.isolate=1) drained, its in-flight reads finishing there, until it
 * rejoins.
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NODES 3

static char url_buf[2][768];
static int url_slot;

/* The Galera nodes run only under `make test-galera`: without them the
 * test is skipped, or failed under CI=true (tu_env), before it makes
 * anything. */
static void need_galera(void)
{
    (void)tu_env("VL_TEST_GALERA_PORTS");
}

static const char *node_port(int i)
{
    return tu_env_item("VL_TEST_GALERA_PORTS", i);
}

static const char *galera_url(void)
{
    char *u = url_buf[url_slot++ % 2];
    char ports[3][16];
    int i;

    for (i = 0; i < NODES; i++)
        snprintf(ports[i], sizeof(ports[i]), "%s", node_port(i));
    snprintf(u, sizeof(url_buf[0]),
             "mysql://%s:%s@127.0.0.1:%s,127.0.0.1:%s,127.0.0.1:%s/%s?galera=1",
             tu_env("VL_TEST_MYSQL_USER"), tu_env("VL_TEST_MYSQL_PASSWORD"), ports[0], ports[1],
             ports[2], tu_env("VL_TEST_MYSQL_DB"));
    return u;
}

/* The test's own hands on node i, not through the cluster. */
static void admin(vl_loop *loop, int i, const char *sql)
{
    char *u = url_buf[url_slot++ % 2];
    vl_mysql *c;
    vl_future *f;

    snprintf(u, sizeof(url_buf[0]), "mysql://%s:%s@127.0.0.1:%s/%s", tu_env("VL_TEST_MYSQL_USER"),
             tu_env("VL_TEST_MYSQL_PASSWORD"), node_port(i), tu_env("VL_TEST_MYSQL_DB"));
    c = vl_mysql_new(loop, u, NULL);
    f = tu_wait_for(loop, vl_mysql_query(c, sql));
    if (vl_future_status(f) != VL_OK)
        fail_msg("%s on node %d: %s", sql, i + 1, vl_future_error(f));
    vl_future_free(f);
    vl_mysql_free(c);
}

static void wait_state(vl_loop *loop, vl_mysql_cluster *cl, size_t i, int state);

/* Every node in the primary component and synced, whatever an earlier
 * test left behind. */
static vl_mysql_cluster *cluster_new(vl_loop *loop)
{
    vl_mysql_cluster_options o;
    vl_mysql_cluster *cl;
    int i;

    vl_mysql_cluster_options_init(&o);
    o.check_interval_ms = 100;
    o.check_timeout_ms = 2000;
    /* A first cluster only to watch the nodes come back... */
    cl = vl_mysql_cluster_new(loop, galera_url(), &o);
    assert_non_null(cl);
    for (i = 0; i < NODES; i++)
        admin(loop, i, "SET GLOBAL wsrep_provider_options = 'gmcast.isolate=0'");
    for (i = 0; i < NODES; i++)
        wait_state(loop, cl, (size_t)i, VL_MYSQL_HOST_HEALTHY);
    vl_mysql_cluster_free(cl);
    /* ...and the test's, which finds them all synced. */
    cl = vl_mysql_cluster_new(loop, galera_url(), &o);
    assert_non_null(cl);
    vl_future_free(tu_run_cmd(loop, vl_mysql_cluster_ready(cl), VL_OK));
    return cl;
}

static vl_mysql_host_stats host(vl_mysql_cluster *cl, size_t i)
{
    vl_mysql_host_stats s;

    vl_mysql_host_stats_init(&s);
    assert_int_equal(vl_mysql_cluster_host_stats(cl, i, &s), VL_OK);
    return s;
}

static void wait_state(vl_loop *loop, vl_mysql_cluster *cl, size_t i, int state)
{
    for (;;) {
        vl_future_free(tu_run_cmd(loop, vl_mysql_cluster_refresh(cl), VL_OK));
        if (host(cl, i).state == state)
            return;
        tu_sleep_ms(loop, 100);
    }
}

/* The node (0..2) a result's second column (@@port) names. */
static int node_of(const vl_mysql_result *r)
{
    const char *port = vl_mysql_result_value(r, 0, 1, NULL);
    int i;

    for (i = 0; port != NULL && i < NODES; i++)
        if (strcmp(port, node_port(i)) == 0)
            return i;
    fail_msg("port %s is no node's", port != NULL ? port : "NULL");
    return -1;
}

/* Reads `n` at once (each sleeping `sleep_s`) and counts them per node. */
static void spread(vl_loop *loop, vl_mysql_cluster *cl, size_t n, const char *sql, int seen[NODES])
{
    vl_future *fs[60], *all;
    size_t i;

    assert_true(n <= 60);
    memset(seen, 0, NODES * sizeof(int));
    for (i = 0; i < n; i++)
        fs[i] = vl_mysql_cluster_read(cl, sql, 0);
    all = tu_wait_for(loop, vl_future_all(loop, fs, n));
    if (vl_future_status(all) != VL_OK)
        fail_msg("%s", vl_future_error(all));
    for (i = 0; i < n; i++)
        seen[node_of(vl_future_mysql_result(vl_future_child(all, i)))]++;
    vl_future_free(all);
}

static void finish(vl_loop *loop, vl_mysql_cluster *cl)
{
    vl_loop_run(loop);
    assert_int_equal(vl_loop_alive(loop), 0);
    vl_mysql_cluster_free(cl);
    vl_loop_run(loop);
    tu_loop_finish(loop);
}

/* Every node synced: the first is the writer, reads reach all three. */
static void healthy_routing(void **state)
{
    vl_loop *loop;
    vl_mysql_cluster *cl;
    vl_future *f;
    int seen[NODES], i;

    (void)state;
    need_galera();
    loop = vl_loop_new();
    cl = cluster_new(loop);
    assert_int_equal(vl_mysql_cluster_hosts(cl), NODES);
    for (i = 0; i < NODES; i++)
        assert_int_equal(host(cl, (size_t)i).state, VL_MYSQL_HOST_HEALTHY);
    assert_int_equal(host(cl, 0).primary, 1);
    for (i = 0; i < 5; i++) {
        f = tu_wait_for(loop, vl_mysql_cluster_query(cl, "SELECT 1, @@port"));
        assert_int_equal(vl_future_status(f), VL_OK);
        assert_int_equal(node_of(vl_future_mysql_result(f)), 0);
        vl_future_free(f);
    }
    spread(loop, cl, 30, "SELECT SLEEP(0.05), @@port", seen);
    for (i = 0; i < NODES; i++)
        assert_true(seen[i] > 0);
    /* A fresh read goes to the writer, which has every write. */
    for (i = 0; i < 5; i++) {
        f = tu_wait_for(loop, vl_mysql_cluster_read(cl, "SELECT 1, @@port", VL_MYSQL_READ_FRESH));
        assert_int_equal(vl_future_status(f), VL_OK);
        assert_int_equal(node_of(vl_future_mysql_result(f)), 0);
        vl_future_free(f);
    }
    finish(loop, cl);
}

/* Node 2 isolated: drained (no new reads; the ones it holds finish), the
 * others carry on; it rejoins and takes reads again. Then the writer is
 * isolated: writes move to the next synced node. */
static void isolated_node_drained(void **state)
{
    vl_loop *loop;
    vl_mysql_cluster *cl;
    vl_future *fs[30], *all, *f;
    int seen[NODES], i, w, on_node2 = 0;

    (void)state;
    need_galera();
    loop = vl_loop_new();
    cl = cluster_new(loop);
    for (i = 0; i < 30; i++)
        fs[i] = vl_mysql_cluster_read(cl, "SELECT SLEEP(1), @@port", 0);
    tu_sleep_ms(loop, 100);
    admin(loop, 1, "SET GLOBAL wsrep_provider_options = 'gmcast.isolate=1'");
    wait_state(loop, cl, 1, VL_MYSQL_HOST_DRAINED);
    all = tu_wait_for(loop, vl_future_all(loop, fs, 30));
    assert_int_equal(vl_future_status(all), VL_OK);
    for (i = 0; i < 30; i++)
        on_node2 += node_of(vl_future_mysql_result(vl_future_child(all, (size_t)i))) == 1;
    vl_future_free(all);
    assert_true(on_node2 > 0); /* they finished where they were */
    spread(loop, cl, 30, "SELECT SLEEP(0.02), @@port", seen);
    assert_int_equal(seen[1], 0);
    assert_true(seen[0] > 0 && seen[2] > 0);
    assert_true(strlen(host(cl, 1).last_error) > 0);
    admin(loop, 1, "SET GLOBAL wsrep_provider_options = 'gmcast.isolate=0'");
    wait_state(loop, cl, 1, VL_MYSQL_HOST_HEALTHY);
    spread(loop, cl, 30, "SELECT SLEEP(0.05), @@port", seen);
    assert_true(seen[1] > 0);

    /* The writer leaves: another synced node writes (the first one synced
     * when the cluster looked: the two left reform their component, and
     * either may be the first to say Synced). */
    admin(loop, 0, "SET GLOBAL wsrep_provider_options = 'gmcast.isolate=1'");
    wait_state(loop, cl, 0, VL_MYSQL_HOST_DRAINED);
    while ((w = host(cl, 1).primary ? 1 : host(cl, 2).primary ? 2 : -1) < 0)
        wait_state(loop, cl, 1, VL_MYSQL_HOST_HEALTHY);
    assert_int_equal(host(cl, 0).primary, 0);
    f = tu_wait_for(loop, vl_mysql_cluster_query(cl, "SELECT 1, @@port"));
    assert_int_equal(node_of(vl_future_mysql_result(f)), w);
    vl_future_free(f);
    admin(loop, 0, "SET GLOBAL wsrep_provider_options = 'gmcast.isolate=0'");
    wait_state(loop, cl, 0, VL_MYSQL_HOST_HEALTHY);
    /* Sticky: the writer stays where it moved. */
    assert_int_equal(host(cl, (size_t)w).primary, 1);
    finish(loop, cl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(healthy_routing, tu_setup),
        cmocka_unit_test_setup(isolated_node_drained, tu_setup),
    };

    return tu_run("mysql_galera", tests, sizeof(tests) / sizeof(tests[0]));
}
