/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_redis_cluster_pubsub.c - sharded pub/sub over a Redis Cluster
 * (volley/redis_cluster.h, "Sharded pub/sub") against the harness's 6-node
 * cluster (tests/servers.sh: VL_TEST_CLUSTER_URL, VL_TEST_CLUSTER_PORTS).
 *
 * Messages are published with SPUBLISH on plain connections to the nodes,
 * following MOVED by hand, so that what is tested is the subscriber alone:
 * SPUBLISH answers how many subscribers the owner delivered to, which shows
 * where the subscription is. A slot is migrated with CLUSTER SETSLOT as an
 * operator would, and a primary is killed for a failover; both are undone
 * before the test ends, so the next test finds the cluster healthy. Every
 * wait is bounded, and every test ends with the loop empty and nothing
 * leaked.
 */
#include "testutil.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NODES 6
#define NCH 50

/* ---- the cluster's nodes, by plain connections ---- */

typedef struct nodes {
    vl_loop *loop;
    int port[NODES];
    vl_redis *c[NODES];
} nodes;

static void nodes_open(vl_loop *loop, nodes *n)
{
    vl_redis_options o;
    char url[64];
    int i;

    memset(n, 0, sizeof(*n));
    assert_int_equal(tu_env_ports("VL_TEST_CLUSTER_PORTS", n->port, NODES), NODES);
    n->loop = loop;
    vl_redis_options_init(&o);
    o.reconnect_min_ms = 10;
    o.reconnect_max_ms = 100;
    for (i = 0; i < NODES; i++) {
        snprintf(url, sizeof(url), "redis://127.0.0.1:%d", n->port[i]);
        n->c[i] = vl_redis_new(loop, url, &o);
        assert_non_null(n->c[i]);
    }
}

static void nodes_close(nodes *n)
{
    int i;

    for (i = 0; i < NODES; i++)
        vl_redis_free(n->c[i]);
}

static int index_of_port(const nodes *n, int port)
{
    int i;

    for (i = 0; i < NODES; i++)
        if (n->port[i] == port)
            return i;
    return -1;
}

/* A command on node i, bounded; the caller frees the future. */
static vl_future *node_cmd(nodes *n, int i, const char *fmt, ...)
{
    vl_future *f;
    va_list ap;

    va_start(ap, fmt);
    f = vl_redis_commandv(n->c[i], fmt, ap);
    va_end(ap);
    assert_non_null(f);
    vl_future_timeout(f, tu_ms(3000));
    tu_wait_for(n->loop, f);
    return f;
}

/* Node i's command that must succeed, its reply dropped. */
static void node_ok(nodes *n, int i, const char *fmt, const char *a, const char *b,
                    const char *c)
{
    vl_future *f = node_cmd(n, i, fmt, a, b, c);

    if (vl_future_status(f) != VL_OK)
        fail_msg("%s on port %d: %s", fmt, n->port[i], vl_future_error(f));
    vl_future_free(f);
}

/* "MOVED 3999 127.0.0.1:6381": the node index of the address, -1 if none. */
static int moved_to(const nodes *n, const char *text)
{
    const char *colon;

    if (text == NULL || strncmp(text, "MOVED ", 6) != 0 || (colon = strrchr(text, ':')) == NULL)
        return -1;
    return index_of_port(n, atoi(colon + 1));
}

/* Node i itself when it is a primary, its primary when it is a replica
 * (ROLE), -1 when it does not answer. */
static int primary_of(nodes *n, int i)
{
    vl_future *f = node_cmd(n, i, "ROLE");
    const vl_redis_reply *r = vl_future_redis_reply(f);
    const char *role = vl_redis_reply_str(vl_redis_reply_element(r, 0), NULL);
    long long port = 0;
    int k = -1;

    if (vl_future_status(f) == VL_OK && role != NULL && strcmp(role, "master") == 0)
        k = i;
    else if (vl_future_status(f) == VL_OK && role != NULL && strcmp(role, "slave") == 0 &&
             vl_redis_reply_integer(vl_redis_reply_element(r, 2), &port) == VL_OK)
        k = index_of_port(n, (int)port);
    vl_future_free(f);
    return k;
}

/* SPUBLISH ch payload on the owner of its slot, found by following MOVED
 * from node `start` (a node that does not answer: the next one). Returns
 * the receivers it reports, and the owner's index in *owner; -1 when no
 * node took it. */
static long long spublish(nodes *n, int start, const char *ch, const char *payload, int *owner)
{
    int i = start, tries;

    for (tries = 0; tries < 4 * NODES; tries++) {
        vl_future *f;
        const vl_redis_reply *r;
        long long v;
        int next = (i + 1) % NODES, primary = primary_of(n, i);
        /* A replica takes SPUBLISH too, for its own subscribers only. */
        if (primary != i) {
            i = primary >= 0 ? primary : next;
            continue;
        }
        f = node_cmd(n, i, "SPUBLISH %s %s", ch, payload);
        r = vl_future_redis_reply(f);
        if (vl_future_status(f) == VL_OK && vl_redis_reply_integer(r, &v) == VL_OK) {
            vl_future_free(f);
            if (owner != NULL)
                *owner = i;
            return v;
        }
        if (vl_redis_reply_type(r) == VL_REDIS_ERROR) {
            int m = moved_to(n, vl_redis_reply_str(r, NULL));
            if (m >= 0)
                next = m;
        }
        vl_future_free(f);
        i = next;
    }
    return -1;
}

/* The node id of node i (CLUSTER MYID), into id[41]. */
static void node_id(nodes *n, int i, char *id)
{
    vl_future *f = node_cmd(n, i, "CLUSTER MYID");
    const char *p = vl_redis_reply_str(vl_future_redis_reply(f), NULL);

    assert_int_equal(vl_future_status(f), VL_OK);
    assert_non_null(p);
    snprintf(id, 41, "%s", p);
    vl_future_free(f);
}

/* The index of a primary other than `not` (by ROLE), -1 if none answers. */
static int other_primary(nodes *n, int not)
{
    int i;

    for (i = 0; i < NODES; i++)
        if (i != not && primary_of(n, i) == i)
            return i;
    return -1;
}

/* Gives `slot` (with no keys) of node `from` to node `to`, as an operator
 * does: importing and migrating first, then the owner on the destination,
 * the source and every other primary (CLUSTER SETSLOT ... NODE). */
static void move_slot(nodes *n, unsigned slot, int from, int to)
{
    char from_id[41], to_id[41], s[16];
    vl_future *f;
    long long keys = -1;
    int i;

    node_id(n, from, from_id);
    node_id(n, to, to_id);
    snprintf(s, sizeof(s), "%u", slot);
    f = node_cmd(n, from, "CLUSTER COUNTKEYSINSLOT %s", s);
    assert_int_equal(vl_redis_reply_integer(vl_future_redis_reply(f), &keys), VL_OK);
    vl_future_free(f);
    assert_int_equal(keys, 0); /* the test's channels name slots without keys */
    node_ok(n, to, "CLUSTER SETSLOT %s IMPORTING %s", s, from_id, NULL);
    node_ok(n, from, "CLUSTER SETSLOT %s MIGRATING %s", s, to_id, NULL);
    node_ok(n, to, "CLUSTER SETSLOT %s NODE %s", s, to_id, NULL);
    node_ok(n, from, "CLUSTER SETSLOT %s NODE %s", s, to_id, NULL);
    for (i = 0; i < NODES; i++)
        if (i != from && i != to && primary_of(n, i) == i)
            node_ok(n, i, "CLUSTER SETSLOT %s NODE %s", s, to_id, NULL);
}

/* ---- what the callbacks saw ---- */

typedef struct rx {
    vl_redis_cluster_sub *s;
    long msgs, bad;
    long per[NCH];         /* messages of "sp:<i>" */
    long gaps;
    long gaps_of[NCH];
    uint64_t gap_ms;       /* the last gap */
    char last_gap[64];
    char last[64];         /* the last payload */
    long free_at;          /* free the subscriber at this message */
    vl_future *late;       /* a call made just before that free */
    long call_at;          /* subscribe to "sp:49" at this message */
    vl_future *inside;     /* that call */
} rx;

static long chan_index(const char *ch, size_t len)
{
    char buf[16];

    if (len <= 3 || len >= sizeof(buf) || memcmp(ch, "sp:", 3) != 0)
        return -1;
    memcpy(buf, ch + 3, len - 3);
    buf[len - 3] = '\0';
    return strtol(buf, NULL, 10);
}

static void on_message(vl_redis_cluster_sub *s, const char *ch, size_t len,
                       const vl_redis_reply *payload, void *ud)
{
    rx *x = ud;
    size_t plen = 0;
    const char *p = vl_redis_reply_str(payload, &plen);
    long i = chan_index(ch, len);
    char want[64];

    assert_ptr_equal(s, x->s);
    x->msgs++;
    snprintf(x->last, sizeof(x->last), "%.*s", (int)plen, p != NULL ? p : "");
    if (i >= 0 && i < NCH) {
        /* Each payload names its channel: a message on the wrong one fails. */
        snprintf(want, sizeof(want), "to %ld", i);
        if (strncmp(x->last, want, strlen(want)) != 0)
            x->bad++;
        x->per[i]++;
    }
    if (x->call_at > 0 && x->msgs == x->call_at) {
        const char *more = "sp:49";
        x->inside = vl_redis_cluster_ssubscribe(s, 1, &more);
    }
    if (x->free_at > 0 && x->msgs == x->free_at) {
        const char *other = "sp:late";
        x->late = vl_redis_cluster_ssubscribe(s, 1, &other);
        vl_redis_cluster_sub_free(s);
        x->s = NULL;
    }
}

static void on_gap(vl_redis_cluster_sub *s, const char *ch, size_t len, uint64_t down_ms,
                   void *ud)
{
    rx *x = ud;
    long i = chan_index(ch, len);

    assert_ptr_equal(s, x->s);
    x->gaps++;
    x->gap_ms = down_ms;
    snprintf(x->last_gap, sizeof(x->last_gap), "%.*s", (int)len, ch);
    if (i >= 0 && i < NCH)
        x->gaps_of[i]++;
}

/* Lets the loop run until *counter reaches want, at most ms. */
static void wait_count(vl_loop *loop, const long *counter, long want, uint64_t ms)
{
    uint64_t end = vl_loop_now_ms(loop) + tu_ms(ms);

    while (*counter < want && vl_loop_now_ms(loop) < end)
        tu_sleep_ms(loop, 5);
}

static vl_redis_cluster *cluster_new(vl_loop *loop)
{
    vl_redis_cluster_options o;
    vl_redis_cluster *cl;

    vl_redis_cluster_options_init(&o);
    o.reconnect_min_ms = 20;
    o.reconnect_max_ms = 200;
    cl = vl_redis_cluster_new(loop, tu_env("VL_TEST_CLUSTER_URL"), &o);
    assert_non_null(cl);
    vl_future_free(
        tu_run_cmd(loop, vl_future_timeout(vl_redis_cluster_ready(cl), tu_ms(10000)), VL_OK));
    return cl;
}

/* Runs a call of the subscriber to completion, bounded; returns its status. */
static int run_call(vl_loop *loop, vl_future *f)
{
    int st;

    assert_non_null(f);
    vl_future_timeout(f, tu_ms(10000));
    st = tu_await(loop, f);
    vl_future_free(f);
    return st;
}

static rx *rx_new(vl_redis_cluster *cl)
{
    rx *x = calloc(1, sizeof(*x));

    assert_non_null(x);
    x->s = vl_redis_cluster_sub_new(cl, on_message, on_gap, x);
    assert_non_null(x->s);
    return x;
}

/* What every test against the cluster starts with: a loop, connections
 * to each node, a ready cluster and a subscriber. Skips without the
 * harness's cluster. */
typedef struct fx {
    vl_loop *loop;
    nodes n;
    vl_redis_cluster *cl;
    rx *x;
} fx;

static void fx_open(fx *t)
{
    tu_env("VL_TEST_CLUSTER_PORTS");
    t->loop = vl_loop_new();
    assert_non_null(t->loop);
    nodes_open(t->loop, &t->n);
    t->cl = cluster_new(t->loop);
    t->x = rx_new(t->cl);
}

/* Frees everything (the subscriber unless a test did) and checks that the
 * loop is empty and nothing leaked. */
static void fx_close(fx *t)
{
    vl_redis_cluster_sub_free(t->x->s);
    free(t->x);
    vl_redis_cluster_free(t->cl);
    nodes_close(&t->n);
    tu_finish(t->loop);
}

/* Subscribes to names[0..n) and checks that a message published to
 * names[0], which is "sp:<first>", arrives. Returns the index of the
 * node that owns its slot. */
static int subscribed(fx *t, size_t n, const char *const *names, int first)
{
    char payload[32];
    int owner = -1;

    assert_int_equal(run_call(t->loop, vl_redis_cluster_ssubscribe(t->x->s, n, names)), VL_OK);
    snprintf(payload, sizeof(payload), "to %d before", first);
    assert_int_equal(spublish(&t->n, 0, names[0], payload, &owner), 1);
    wait_count(t->loop, &t->x->per[first], 1, 5000);
    assert_int_equal(t->x->per[first], 1);
    return owner;
}

/* ---- 50 channels over many slots ---- */

static void fifty_channels(void **state)
{
    const char *names[NCH], *bad[2] = {"sp:ok", NULL};
    char buf[NCH][16], payload[32];
    int i, owner, owners[NODES] = {0}, used = 0;
    unsigned slots[NCH];
    long distinct = 0;
    vl_loop *loop;
    fx t;
    rx *x;

    (void)state;
    fx_open(&t);
    loop = t.loop;
    x = t.x;
    for (i = 0; i < NCH; i++) {
        int k, seen = 0;
        snprintf(buf[i], sizeof(buf[i]), "sp:%d", i);
        names[i] = buf[i];
        slots[i] = vl_redis_cluster_slot(buf[i], strlen(buf[i]));
        for (k = 0; k < i; k++)
            seen |= slots[k] == slots[i];
        distinct += !seen;
    }
    assert_true(distinct >= 40); /* one command per slot, many slots */

    /* Refused up front, through the future. */
    assert_int_equal(run_call(loop, vl_redis_cluster_ssubscribe(x->s, 0, names)), VL_EINVAL);
    assert_int_equal(run_call(loop, vl_redis_cluster_ssubscribe(x->s, 2, bad)), VL_EINVAL);

    assert_int_equal(run_call(loop, vl_redis_cluster_ssubscribe(x->s, NCH, names)), VL_OK);
    for (i = 0; i < NCH; i++) {
        snprintf(payload, sizeof(payload), "to %d", i);
        /* One receiver on the owner: the subscription is where the slot is. */
        assert_int_equal(spublish(&t.n, i % NODES, names[i], payload, &owner), 1);
        if (owners[owner]++ == 0)
            used++;
    }
    assert_int_equal(used, NODES / 2); /* every primary has some */
    wait_count(loop, &x->msgs, NCH, 5000);
    tu_sleep_ms(loop, 50); /* a message doubled would arrive meanwhile */
    assert_int_equal(x->msgs, NCH);
    assert_int_equal(x->bad, 0);
    for (i = 0; i < NCH; i++)
        assert_int_equal(x->per[i], 1);
    assert_int_equal(x->gaps, 0);

    /* Subscribing again to what is subscribed completes and changes
     * nothing; unsubscribing from half leaves the other half. */
    assert_int_equal(run_call(loop, vl_redis_cluster_ssubscribe(x->s, 3, names)), VL_OK);
    assert_int_equal(run_call(loop, vl_redis_cluster_sunsubscribe(x->s, NCH / 2, names)),
                     VL_OK);
    for (i = 0; i < NCH; i++) {
        snprintf(payload, sizeof(payload), "to %d", i);
        assert_int_equal(spublish(&t.n, 0, names[i], payload, NULL), i < NCH / 2 ? 0 : 1);
    }
    wait_count(loop, &x->msgs, NCH + NCH / 2, 5000);
    tu_sleep_ms(loop, 50);
    assert_int_equal(x->msgs, NCH + NCH / 2);
    for (i = 0; i < NCH; i++)
        assert_int_equal(x->per[i], i < NCH / 2 ? 1 : 2);

    /* No names: every channel. */
    assert_int_equal(run_call(loop, vl_redis_cluster_sunsubscribe(x->s, 0, NULL)), VL_OK);
    for (i = 0; i < NCH; i++)
        assert_int_equal(spublish(&t.n, 0, names[i], "to none", NULL), 0);
    tu_sleep_ms(loop, 50);
    assert_int_equal(x->msgs, NCH + NCH / 2);
    assert_int_equal(x->bad, 0);
    fx_close(&t);
}

/* ---- the nodes' connections cut: everything subscribed again ---- */

static void connections_cut(void **state)
{
    const char *names[NCH];
    char buf[NCH][16], payload[32];
    int i;
    fx t;

    (void)state;
    fx_open(&t);
    for (i = 0; i < NCH; i++) {
        snprintf(buf[i], sizeof(buf[i]), "sp:%d", i);
        names[i] = buf[i];
    }
    assert_int_equal(run_call(t.loop, vl_redis_cluster_ssubscribe(t.x->s, NCH, names)), VL_OK);
    /* Every primary drops its pub/sub clients: each node's subscriber
     * reconnects, and every channel (a node holds channels of many slots,
     * which one SSUBSCRIBE cannot carry) is subscribed again, with its gap. */
    for (i = 0; i < NODES; i++)
        if (primary_of(&t.n, i) == i)
            vl_future_free(node_cmd(&t.n, i, "CLIENT KILL TYPE pubsub"));
    wait_count(t.loop, &t.x->gaps, NCH, 10000);
    assert_int_equal(t.x->gaps, NCH);
    for (i = 0; i < NCH; i++) {
        assert_int_equal(t.x->gaps_of[i], 1);
        snprintf(payload, sizeof(payload), "to %d", i);
        assert_int_equal(spublish(&t.n, 0, names[i], payload, NULL), 1);
    }
    wait_count(t.loop, &t.x->msgs, NCH, 5000);
    tu_sleep_ms(t.loop, 50);
    assert_int_equal(t.x->msgs, NCH);
    assert_int_equal(t.x->bad, 0);
    fx_close(&t);
}

/* ---- a slot migrated to another primary, and back ---- */

/* Waits until channel i had `want` gaps, then checks that a message
 * published afterwards on the slot's owner reaches it. Returns the owner. */
static int follows(vl_loop *loop, nodes *n, rx *x, int i, long want_gaps)
{
    char ch[16], payload[32];
    long before;
    int owner = -1;

    snprintf(ch, sizeof(ch), "sp:%d", i);
    wait_count(loop, &x->gaps_of[i], want_gaps, 15000);
    if (x->gaps_of[i] < want_gaps)
        fail_msg("%s: %ld gaps, wanted %ld", ch, x->gaps_of[i], want_gaps);
    before = x->per[i];
    snprintf(payload, sizeof(payload), "to %d after", i);
    assert_int_equal(spublish(n, 0, ch, payload, &owner), 1);
    wait_count(loop, &x->per[i], before + 1, 5000);
    assert_int_equal(x->per[i], before + 1);
    return owner;
}

/* The node the migration test took a slot from, while the slot is away
 * (-1: none). */
static int slot_home = -1;

/* After the migration test, whatever became of it: the slot of "sp:7" is
 * back on its node, and the cluster healthy. */
static int restore_slot(void **state)
{
    const char *ch = "sp:7";
    unsigned slot = vl_redis_cluster_slot(ch, strlen(ch));
    char s[16];
    vl_loop *loop;
    nodes n;
    int i, owner = -1;

    (void)state;
    if (slot_home < 0)
        return 0;
    loop = vl_loop_new();
    nodes_open(loop, &n);
    snprintf(s, sizeof(s), "%u", slot);
    for (i = 0; i < NODES; i++)
        vl_future_free(node_cmd(&n, i, "CLUSTER SETSLOT %s STABLE", s));
    assert_true(spublish(&n, 0, ch, "home", &owner) >= 0);
    if (owner != slot_home)
        move_slot(&n, slot, owner, slot_home);
    slot_home = -1;
    nodes_close(&n);
    /* Not tu_finish: what the failed test left behind is still allocated. */
    vl_loop_free(loop);
    tu_cluster_wait_ok();
    return 0;
}

static void slot_migration(void **state)
{
    const char *names[NCH];
    char buf[NCH][16];
    unsigned slot = vl_redis_cluster_slot("sp:7", 4);
    int from, to, i, k = 1, same = 0;
    fx t;

    (void)state;
    fx_open(&t);
    /* Every channel, "sp:7" first: the others of its node show whether
     * that node's connection was dropped (each would have a gap). */
    names[0] = "sp:7";
    for (i = 0; i < NCH; i++) {
        snprintf(buf[i], sizeof(buf[i]), "sp:%d", i);
        if (i != 7)
            names[k++] = buf[i];
    }
    from = subscribed(&t, NCH, names, 7);
    to = other_primary(&t.n, from);
    assert_true(to >= 0);
    for (i = 0; i < NCH; i++) {
        char payload[32];
        int owner = -1;
        if (i == 7)
            continue;
        snprintf(payload, sizeof(payload), "to %d where", i);
        assert_int_equal(spublish(&t.n, 0, buf[i], payload, &owner), 1);
        same += owner == from;
    }
    assert_true(same > 0);
    wait_count(t.loop, &t.x->msgs, NCH, 5000);
    assert_int_equal(t.x->msgs, NCH);

    slot_home = from;
    move_slot(&t.n, slot, from, to);
    assert_int_equal(follows(t.loop, &t.n, t.x, 7, 1), to);
    printf("# migrated: followed to port %d, gap %llu ms\n", t.n.port[to],
           (unsigned long long)t.x->gap_ms);
    /* Without a reconnect of the old node: no other channel had a gap,
     * though `same` of them are on it (a dropped connection is back within
     * some 20 ms here, and their gaps with it). */
    tu_sleep_ms(t.loop, 300);
    assert_int_equal(t.x->gaps, 1);
    /* Every channel is still subscribed where its slot is. */
    assert_int_equal(spublish(&t.n, 0, "sp:8", "to 8 still", NULL), 1);
    wait_count(t.loop, &t.x->per[8], 2, 5000);
    assert_int_equal(t.x->per[8], 2);

    /* Back where it was, followed again, again alone. */
    move_slot(&t.n, slot, to, from);
    slot_home = -1;
    assert_int_equal(follows(t.loop, &t.n, t.x, 7, 2), from);
    tu_sleep_ms(t.loop, 300);
    assert_int_equal(t.x->gaps, 2);
    assert_int_equal(t.x->bad, 0);
    for (i = 0; i < NCH; i++)
        if (i != 7 && i != 8)
            assert_int_equal(t.x->per[i], 1);
    fx_close(&t);
    tu_cluster_wait_ok();
}

/* The slot of "sp:7" given away by its node while its SSUBSCRIBE is on the
 * way: the node answers it, and ends it with an unasked "sunsubscribe", or
 * answers MOVED, as the two commands fall. Either way the call completes
 * once the channel is subscribed on the new owner. */
static void given_away_while_subscribing(void **state)
{
    const char *ch = "sp:7", *mate = NULL;
    char buf[NCH][16], from_id[41], to_id[41], sl[16];
    int from = -1, to, i, owner = -1;
    vl_future *f, *g;
    fx t;

    (void)state;
    fx_open(&t);
    assert_int_equal(spublish(&t.n, 0, ch, "to 7 nobody", &from), 0);
    /* Another channel of that node first, so that its subscriber is up
     * and the SSUBSCRIBE is written at once. */
    for (i = 0; i < NCH && mate == NULL; i++) {
        snprintf(buf[i], sizeof(buf[i]), "sp:%d", i);
        if (i != 7 && spublish(&t.n, 0, buf[i], "nobody", &owner) == 0 && owner == from)
            mate = buf[i];
    }
    assert_non_null(mate);
    assert_int_equal(run_call(t.loop, vl_redis_cluster_ssubscribe(t.x->s, 1, &mate)), VL_OK);
    to = other_primary(&t.n, from);
    assert_true(to >= 0);
    node_id(&t.n, from, from_id);
    node_id(&t.n, to, to_id);
    snprintf(sl, sizeof(sl), "%u", vl_redis_cluster_slot(ch, strlen(ch)));
    slot_home = from;
    node_ok(&t.n, to, "CLUSTER SETSLOT %s IMPORTING %s", sl, from_id, NULL);
    node_ok(&t.n, from, "CLUSTER SETSLOT %s MIGRATING %s", sl, to_id, NULL);
    node_ok(&t.n, to, "CLUSTER SETSLOT %s NODE %s", sl, to_id, NULL);
    /* Written in the same loop iteration: the SSUBSCRIBE, and the
     * source's hand-over on another connection. */
    f = vl_redis_cluster_ssubscribe(t.x->s, 1, &ch);
    g = vl_redis_command(t.n.c[from], "CLUSTER SETSLOT %s NODE %s", sl, to_id);
    assert_non_null(g);
    assert_int_equal(run_call(t.loop, f), VL_OK);
    tu_wait_for(t.loop, vl_future_timeout(g, tu_ms(3000)));
    assert_int_equal(vl_future_status(g), VL_OK);
    vl_future_free(g);
    for (i = 0; i < NODES; i++)
        if (i != from && i != to && primary_of(&t.n, i) == i)
            node_ok(&t.n, i, "CLUSTER SETSLOT %s NODE %s", sl, to_id, NULL);
    assert_int_equal(spublish(&t.n, 0, ch, "to 7 there", &owner), 1);
    assert_int_equal(owner, to);
    wait_count(t.loop, &t.x->per[7], 1, 5000);
    assert_int_equal(t.x->per[7], 1);
    assert_int_equal(t.x->gaps, 0); /* never confirmed before: no gap */

    move_slot(&t.n, vl_redis_cluster_slot(ch, strlen(ch)), to, from);
    slot_home = -1;
    assert_int_equal(follows(t.loop, &t.n, t.x, 7, 1), from);
    assert_int_equal(t.x->bad, 0);
    fx_close(&t);
    tu_cluster_wait_ok();
}

/* ---- the owner's primary killed: its replica takes over ---- */

/* The node the failover test killed and has not restarted yet ("" none). */
static char killed[32];

/* After the failover test, whatever became of it: the killed node runs
 * again and the cluster is healthy, for the tests that come next. */
static int restore_cluster(void **state)
{
    (void)state;
    if (killed[0] != '\0') {
        tu_restart_server(killed);
        killed[0] = '\0';
        tu_cluster_wait_ok();
    }
    return 0;
}

static void failover(void **state)
{
    const char *names[1] = {"sp:3"};
    int from, owner;
    fx t;

    (void)state;
    fx_open(&t);
    from = subscribed(&t, 1, names, 3);
    snprintf(killed, sizeof(killed), "cluster-%d", from + 1);
    tu_kill_server(killed);
    /* The replica is promoted within some seconds; the subscriber follows
     * without being told, and reports the gap. */
    owner = follows(t.loop, &t.n, t.x, 3, 1);
    assert_int_not_equal(owner, from);
    assert_true(t.x->gap_ms > 0);
    printf("# failover: followed to port %d, gap %llu ms\n", t.n.port[owner],
           (unsigned long long)t.x->gap_ms);

    /* The old primary comes back as a replica; the cluster is whole again
     * before the next test. */
    restore_cluster(NULL);
    assert_int_equal(spublish(&t.n, from, names[0], "to 3 after restart", NULL), 1);
    wait_count(t.loop, &t.x->per[3], 3, 5000);
    assert_int_equal(t.x->per[3], 3);
    assert_int_equal(t.x->bad, 0);
    fx_close(&t);
}

/* ---- freed inside its own message callback ---- */

static void free_inside_message(void **state)
{
    const char *names[3] = {"sp:0", "sp:1", "sp:2"};
    fx t;

    (void)state;
    fx_open(&t);
    subscribed(&t, 3, names, 0);
    t.x->free_at = 2;
    assert_int_equal(spublish(&t.n, 0, names[1], "to 1", NULL), 1);
    wait_count(t.loop, &t.x->msgs, 2, 5000);
    assert_int_equal(t.x->msgs, 2);
    assert_null(t.x->s);
    assert_non_null(t.x->late);
    /* The call made inside the callback, just before the free, completes
     * once, cancelled. */
    assert_int_equal(tu_await(t.loop, t.x->late), VL_ECANCELED);
    vl_future_free(t.x->late);
    /* Nothing is delivered any more: the nodes' subscribers are gone. */
    assert_int_equal(spublish(&t.n, 0, names[0], "to 0", NULL), 0);
    assert_int_equal(spublish(&t.n, 0, names[2], "to 2", NULL), 0);
    tu_sleep_ms(t.loop, 50);
    assert_int_equal(t.x->msgs, 2);
    fx_close(&t);
}

/* ---- before the map, and published through the cluster ---- */

/* Frees the subscriber once its call is confirmed; marks it with msgs -1. */
static void confirmed_then_free(vl_future *f, void *ud)
{
    rx *x = ud;

    x->msgs = vl_future_status(f) == VL_OK ? -1 : -2;
    vl_redis_cluster_sub_free(x->s);
    x->s = NULL;
}

static void before_the_map(void **state)
{
    const char *names[3] = {"sp:10", "sp:11", "sp:12"};
    vl_redis_cluster *cl;
    vl_loop *loop;
    vl_future *f;
    rx *x;
    int i;

    (void)state;
    tu_env("VL_TEST_CLUSTER_URL");
    loop = vl_loop_new();
    cl = vl_redis_cluster_new(loop, tu_env("VL_TEST_CLUSTER_URL"), NULL);
    assert_non_null(cl);
    x = rx_new(cl);
    /* No map yet: the call waits for it, then goes to the owners. */
    f = vl_redis_cluster_ssubscribe(x->s, 3, names);
    assert_non_null(f);
    assert_false(vl_future_done(f));
    assert_int_equal(run_call(loop, f), VL_OK);
    for (i = 0; i < 3; i++) {
        long long v = -1;
        f = vl_redis_cluster_command(cl, "SPUBLISH %s %s", names[i], i == 0   ? "to 10"
                                                                  : i == 1 ? "to 11"
                                                                           : "to 12");
        tu_run_cmd(loop, vl_future_timeout(f, tu_ms(5000)), VL_OK);
        assert_int_equal(vl_redis_reply_integer(vl_future_redis_reply(f), &v), VL_OK);
        assert_int_equal(v, 1);
        vl_future_free(f);
    }
    wait_count(loop, &x->msgs, 3, 5000);
    assert_int_equal(x->msgs, 3);
    assert_int_equal(x->bad, 0);
    assert_int_equal(x->per[10] + x->per[11] + x->per[12], 3);
    assert_int_equal(x->gaps, 0);

    vl_redis_cluster_sub_free(x->s);
    free(x);
    vl_redis_cluster_free(cl);

    /* The loop-alive rule: a call made before the map keeps vl_loop_run
     * itself running (not only vl_loop_run_until) until it is confirmed;
     * its callback frees the subscriber, and then the loop may return. */
    cl = vl_redis_cluster_new(loop, tu_env("VL_TEST_CLUSTER_URL"), NULL);
    x = rx_new(cl);
    f = vl_redis_cluster_ssubscribe(x->s, 3, names);
    assert_non_null(f);
    x->msgs = 0;
    assert_int_equal(vl_future_then(f, confirmed_then_free, x), VL_OK);
    vl_loop_run(loop);
    assert_int_equal(x->msgs, -1); /* the callback ran, with VL_OK */
    free(x);
    vl_redis_cluster_free(cl);
    tu_finish(loop);
}

/* ---- every future completes once, whoever frees what ---- */

typedef struct done {
    int calls, status;
} done;

static void on_done(vl_future *f, void *ud)
{
    done *d = ud;

    d->calls++;
    d->status = vl_future_status(f);
}

static void freed_with_pending(void **state)
{
    /* One slot: the second keeps the node when the first goes. */
    const char *names[2] = {"{fp}a", "{fp}b"};
    vl_redis_cluster *cl;
    vl_loop *loop;
    done d1 = {0, 0}, d2 = {0, 0}, d3 = {0, 0};
    rx *x;

    (void)state;
    tu_env("VL_TEST_CLUSTER_URL");
    loop = vl_loop_new();
    cl = cluster_new(loop);
    x = rx_new(cl);
    /* Freed before any node answered: cancelled, once. */
    assert_int_equal(vl_future_then(vl_redis_cluster_ssubscribe(x->s, 2, names), on_done, &d1),
                     VL_OK);
    vl_redis_cluster_sub_free(x->s);
    tu_sleep_ms(loop, 50);
    assert_int_equal(d1.calls, 1);
    assert_int_equal(d1.status, VL_ECANCELED);

    /* The loop freed with a subscriber and its cluster still there: the
     * pending calls (a subscribe, and an unsubscribe whose SUNSUBSCRIBE is
     * on the wire) are cancelled, once each, and nothing is left. */
    x->s = vl_redis_cluster_sub_new(cl, on_message, on_gap, x);
    assert_non_null(x->s);
    assert_int_equal(run_call(loop, vl_redis_cluster_ssubscribe(x->s, 1, names)), VL_OK);
    assert_int_equal(vl_future_then(vl_redis_cluster_ssubscribe(x->s, 1, names + 1), on_done,
                                    &d2),
                     VL_OK);
    assert_int_equal(vl_future_then(vl_redis_cluster_sunsubscribe(x->s, 1, names), on_done, &d3),
                     VL_OK);
    vl_loop_free(loop);
    assert_int_equal(d2.calls, 1);
    assert_int_equal(d2.status, VL_ECANCELED);
    assert_int_equal(d3.calls, 1);
    assert_int_equal(d3.status, VL_ECANCELED);
    free(x);
    assert_int_equal(tu_alloc_live(), 0);
}

/* A cluster with a bad URL: every call fails with its status (no server). */
static void bad_cluster_url(void **state)
{
    vl_loop *loop = vl_loop_new();
    const char *names[1] = {"sp:0"};
    vl_redis_cluster *cl = vl_redis_cluster_new(loop, "redis+cluster://127.0.0.1:99999", NULL);
    vl_redis_cluster_sub *s;

    (void)state;
    assert_non_null(cl);
    s = vl_redis_cluster_sub_new(cl, NULL, NULL, NULL);
    assert_non_null(s);
    assert_int_equal(run_call(loop, vl_redis_cluster_ssubscribe(s, 1, names)), VL_EINVAL);
    assert_int_equal(run_call(loop, vl_redis_cluster_sunsubscribe(s, 0, NULL)), VL_EINVAL);
    assert_null(vl_redis_cluster_ssubscribe(NULL, 1, names));
    assert_null(vl_redis_cluster_sub_new(NULL, NULL, NULL, NULL));
    vl_redis_cluster_sub_free(NULL);
    vl_redis_cluster_sub_free(s);
    vl_redis_cluster_free(cl);
    tu_finish(loop);
}

/* ---- calls given up, superseded, and made from a callback ---- */

/* SPUBLISH until it reports `want` receivers (a subscription still on its
 * way), at most ms; returns the last count. */
static long long spublish_until(fx *t, const char *ch, long long want, uint64_t ms)
{
    uint64_t end = vl_loop_now_ms(t->loop) + tu_ms(ms);
    long long v;

    while ((v = spublish(&t->n, 0, ch, "to none", NULL)) != want && vl_loop_now_ms(t->loop) < end)
        tu_sleep_ms(t->loop, 10);
    return v;
}

static void calls_in_between(void **state)
{
    /* One slot: the node keeps "sp:40" while the others come and go. */
    const char *a = "sp:40", *b = "{sp:40}b", *c = "{sp:40}c", *inside = "sp:49";
    vl_future *f, *g;
    fx t;

    (void)state;
    fx_open(&t);
    subscribed(&t, 1, &a, 40);

    /* Cancelled: only the wait ends; the subscription comes all the same. */
    f = vl_redis_cluster_ssubscribe(t.x->s, 1, &b);
    assert_non_null(f);
    assert_int_equal(vl_future_cancel(f), 1);
    assert_int_equal(tu_await(t.loop, f), VL_ECANCELED);
    vl_future_free(f);
    assert_int_equal(spublish_until(&t, b, 1, 5000), 1);

    /* Unsubscribed before its confirmation: the subscribe counts it done. */
    f = vl_redis_cluster_ssubscribe(t.x->s, 1, &c);
    g = vl_redis_cluster_sunsubscribe(t.x->s, 1, &c);
    assert_int_equal(run_call(t.loop, g), VL_OK);
    assert_int_equal(run_call(t.loop, f), VL_OK);
    assert_int_equal(spublish(&t.n, 0, c, "to none", NULL), 0);

    /* A call from inside the message callback. */
    t.x->call_at = t.x->msgs + 1;
    assert_int_equal(spublish(&t.n, 0, a, "to 40", NULL), 1);
    wait_count(t.loop, &t.x->msgs, t.x->call_at, 5000);
    assert_non_null(t.x->inside);
    assert_int_equal(run_call(t.loop, t.x->inside), VL_OK);
    assert_int_equal(spublish(&t.n, 0, inside, "to 49", NULL), 1);
    wait_count(t.loop, &t.x->per[49], 1, 5000);
    assert_int_equal(t.x->per[49], 1);
    assert_int_equal(t.x->bad, 0);
    fx_close(&t);
}

/* ---- out of memory: every allocation of the subscriber failing in turn ---- */

/* A call's status when one allocation failed somewhere: done, or failed
 * for want of memory; never left hanging (the deadline is generous). */
static int oom_ok(vl_loop *loop, vl_future *f)
{
    int st;

    if (f == NULL)
        return 1; /* out of memory for the future itself */
    vl_future_timeout(f, tu_ms(5000));
    st = tu_await(loop, f);
    vl_future_free(f);
    if (st != VL_OK && st != VL_ENOMEM)
        printf("# status %d\n", st);
    return st == VL_OK || st == VL_ENOMEM;
}

static void out_of_memory(void **state)
{
    const char *names[4] = {"sp:30", "sp:31", "sp:32", "{sp:30}b"};
    vl_redis_cluster *cl;
    vl_loop *loop;
    long n;

    (void)state;
    tu_env("VL_TEST_CLUSTER_URL");
    loop = vl_loop_new();
    cl = cluster_new(loop);
    for (n = 1; n < 2000; n++) {
        vl_redis_cluster_sub *s;
        int last;

        tu_alloc_fail_at(n);
        s = vl_redis_cluster_sub_new(cl, NULL, NULL, NULL);
        if (s != NULL) {
            assert_true(oom_ok(loop, vl_redis_cluster_ssubscribe(s, 4, names)));
            assert_true(oom_ok(loop, vl_redis_cluster_ssubscribe(s, 2, names + 1)));
            assert_true(oom_ok(loop, vl_redis_cluster_sunsubscribe(s, 1, names)));
            assert_true(oom_ok(loop, vl_redis_cluster_sunsubscribe(s, 0, NULL)));
            vl_redis_cluster_sub_free(s);
        }
        last = tu_alloc_count() < n;
        tu_alloc_fail_at(0);
        if (last)
            break;
    }
    printf("# out of memory: every one of %ld allocations failed in turn\n", n - 1);
    assert_true(n < 2000);
    vl_redis_cluster_free(cl);
    tu_finish(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(bad_cluster_url, tu_setup),
        cmocka_unit_test_setup(fifty_channels, tu_setup),
        cmocka_unit_test_setup(before_the_map, tu_setup),
        cmocka_unit_test_setup(freed_with_pending, tu_setup),
        cmocka_unit_test_setup(free_inside_message, tu_setup),
        cmocka_unit_test_setup(calls_in_between, tu_setup),
        cmocka_unit_test_setup(out_of_memory, tu_setup),
        cmocka_unit_test_setup(connections_cut, tu_setup),
        cmocka_unit_test_setup_teardown(slot_migration, tu_setup, restore_slot),
        cmocka_unit_test_setup_teardown(given_away_while_subscribing, tu_setup, restore_slot),
        cmocka_unit_test_setup_teardown(failover, tu_setup, restore_cluster),
    };

    return tu_run("redis_cluster_pubsub", tests, sizeof(tests) / sizeof(tests[0]));
}
