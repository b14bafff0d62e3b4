/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_redis_cluster_hostile.c - a Redis Cluster handle against fake
 * nodes that misbehave (tests/fixtures/redis_cluster_fake.py): MOVED
 * ping-pong, ASK to a node that is down, TRYAGAIN forever, CLUSTERDOWN,
 * a connection lost after a write, maps that are garbage, truncated,
 * wrongly typed, enormous or leave slots uncovered, a node that does not
 * exist, a node that stalls, a storm of MOVED replies, and the caller
 * freeing the cluster or cancelling a command while it is being
 * redirected.
 *
 * A real cluster never produces most of this on demand; the fake nodes do,
 * and count what they receive (commands per node, connections accepted),
 * which the tests read through the fake's control port. Every command a
 * test submits is tracked to its one completion; every wait is bounded;
 * every test ends with the loop empty and nothing leaked.
 */
#include "testutil.h"
#include "fixture.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A hang guard for outcomes that must come: stretched under valgrind. */
#define WAIT_MS tu_ms(10000)

/* ---- the fake cluster ---- */

#define FAKE_NODES_MAX 64

typedef struct fake {
    tu_fixture fx;
    vl_redis *ctl;                /* the fake's control port */
    int ports[FAKE_NODES_MAX];    /* its nodes' ports */
    size_t n;
    char url[96];                 /* redis+cluster:// seeded by node 0 */
} fake;

/* Starts scenario `sc` of the fake and learns its nodes' ports, through a
 * control connection on `loop`. */
static void fake_start(vl_loop *loop, fake *fk, const char *sc)
{
    char url[96];
    vl_future *f;
    const vl_redis_reply *r;
    size_t i;

    memset(fk, 0, sizeof(*fk));
    tu_fixture_start(&fk->fx, "redis_cluster_fake.py", sc);
    snprintf(url, sizeof(url), "redis://%s", fk->fx.url);
    fk->ctl = vl_redis_new(loop, url, NULL);
    f = tu_run_cmd(loop, vl_future_timeout(vl_redis_command(fk->ctl, "FAKE PORTS"), WAIT_MS),
                   VL_OK);
    r = vl_future_redis_reply(f);
    fk->n = vl_redis_reply_count(r);
    assert_true(fk->n >= 1 && fk->n <= FAKE_NODES_MAX);
    for (i = 0; i < fk->n; i++) {
        long long p = 0;
        assert_int_equal(vl_redis_reply_integer(vl_redis_reply_element(r, i), &p), VL_OK);
        fk->ports[i] = (int)p;
    }
    vl_future_free(f);
    snprintf(fk->url, sizeof(fk->url), "redis+cluster://127.0.0.1:%d", fk->ports[0]);
}

/* A counter of the fake ("conn:1", "cmd:GET:0"...), 0 when it never
 * counted it. */
static long long fake_stat(vl_loop *loop, fake *fk, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static long long fake_stat(vl_loop *loop, fake *fk, const char *fmt, ...)
{
    char name[96];
    va_list ap;
    vl_future *f;
    const vl_redis_reply *v;
    long long n = 0;

    va_start(ap, fmt);
    vsnprintf(name, sizeof(name), fmt, ap);
    va_end(ap);
    f = tu_run_cmd(loop, vl_future_timeout(vl_redis_command(fk->ctl, "FAKE STATS"), WAIT_MS),
                   VL_OK);
    v = vl_redis_reply_map_get(vl_future_redis_reply(f), name, strlen(name));
    if (v != NULL)
        assert_int_equal(vl_redis_reply_integer(v, &n), VL_OK);
    vl_future_free(f);
    return n;
}

/* CLUSTER SHARDS and CLUSTER SLOTS requests every node of the fake got. */
static long long fake_map_requests(vl_loop *loop, fake *fk)
{
    long long n = 0;
    size_t i;

    for (i = 0; i < fk->n; i++)
        n += fake_stat(loop, fk, "cmd:CLUSTER SHARDS:%zu", i) +
             fake_stat(loop, fk, "cmd:CLUSTER SLOTS:%zu", i);
    return n;
}

/* "127.0.0.1:PORT" of node i (rotating static buffers). */
static const char *fake_addr(const fake *fk, size_t i)
{
    static char buf[4][32];
    static int slot;
    char *out = buf[slot++ % 4];

    snprintf(out, 32, "127.0.0.1:%d", fk->ports[i]);
    return out;
}

static void fake_stop(fake *fk)
{
    vl_redis_free(fk->ctl);
    fk->ctl = NULL;
    tu_fixture_stop(&fk->fx);
}

/* ---- keys ---- */

/* The first key "PREFIX-N" whose slot is in [lo, hi] and that `skip`
 * earlier matches did not take, into key[0..n). */
static void key_in(char *key, size_t n, const char *prefix, unsigned lo, unsigned hi, int skip)
{
    int i;

    for (i = 0; i < 1000000; i++) {
        unsigned s;
        snprintf(key, n, "%s-%d", prefix, i);
        s = vl_redis_cluster_slot(key, strlen(key));
        if (s >= lo && s <= hi && skip-- == 0)
            return;
    }
    fail_msg("no key %s-N in slots %u-%u", prefix, lo, hi);
}

/* ---- tracking every submission to its one completion ---- */

#define CALLS_MAX 1100

typedef struct tally tally;
typedef struct call {
    tally *t;
    int completed;  /* how many times its callback ran: must end at 1 */
    int status;
    uint64_t at;    /* loop time of the completion */
    char msg[256];
    char val[96];   /* a string reply, "" otherwise */
} call;

struct tally {
    vl_loop *loop;
    int submitted, completed;
    call calls[CALLS_MAX];
    /* Runs inside the callback of the call numbered `hook_at` (-1: none). */
    void (*hook)(tally *t, call *c);
    int hook_at;
    void *hook_ud;
};

static void tally_init(tally *t, vl_loop *loop)
{
    memset(t, 0, sizeof(*t));
    t->loop = loop;
    t->hook_at = -1;
}

static void call_cb(vl_future *f, void *ud)
{
    call *c = ud;
    const char *s;
    size_t len = 0;

    c->completed++;
    c->t->completed++;
    c->status = vl_future_status(f);
    c->at = vl_loop_now_ms(c->t->loop);
    snprintf(c->msg, sizeof(c->msg), "%s", vl_future_error(f));
    s = vl_redis_reply_str(vl_future_redis_reply(f), &len);
    if (s != NULL && vl_redis_reply_type(vl_future_redis_reply(f)) == VL_REDIS_STRING)
        snprintf(c->val, sizeof(c->val), "%.*s", (int)len, s);
    if (c->t->hook != NULL && c - c->t->calls == c->t->hook_at)
        c->t->hook(c->t, c);
}

/* Tracks f (a command's future; NULL fails the test); returns its call. */
static call *submit(tally *t, vl_future *f)
{
    call *c;

    assert_non_null(f);
    assert_true(t->submitted < CALLS_MAX);
    c = &t->calls[t->submitted++];
    c->t = t;
    assert_int_equal(vl_future_then(f, call_cb, c), VL_OK);
    return c;
}

/* Runs the loop until every submission completed (bounded), then checks
 * that each completed exactly once. */
static void tally_wait(tally *t)
{
    uint64_t end = vl_loop_now_ms(t->loop) + WAIT_MS;
    int i;

    while (t->completed < t->submitted && vl_loop_now_ms(t->loop) < end)
        tu_sleep_ms(t->loop, 5);
    if (t->completed != t->submitted)
        fail_msg("%d of %d commands completed", t->completed, t->submitted);
    for (i = 0; i < t->submitted; i++)
        if (t->calls[i].completed != 1)
            fail_msg("command %d completed %d times", i, t->calls[i].completed);
}

static void expect_text(const char *got, const char *want)
{
    if (strstr(got, want) == NULL)
        fail_msg("message '%s' does not contain '%s'", got, want);
}

static void expect_status(const call *c, int want)
{
    if (c->status != want)
        fail_msg("status %d (%s), wanted %d (%s)", c->status, c->msg, want, vl_strerror(want));
}

/* ---- a scene: one fake cluster, one cluster handle, one tally ---- */

typedef struct scene {
    vl_loop *loop;
    fake fk;
    vl_redis_cluster_options o; /* change before scene_ready */
    vl_redis_cluster *cl;
    tally t;
} scene;

/* Starts scenario `sc` of the fake on a new loop, with options for fakes:
 * short waits, no periodic refresh (so the fake's counts of map requests
 * are the ones the commands caused). */
static scene *scene_open(const char *sc)
{
    scene *s = calloc(1, sizeof(*s));

    assert_non_null(s);
    s->loop = vl_loop_new();
    fake_start(s->loop, &s->fk, sc);
    tally_init(&s->t, s->loop);
    vl_redis_cluster_options_init(&s->o);
    s->o.connect_timeout_ms = tu_ms(1000);
    s->o.command_timeout_ms = tu_ms(5000);
    s->o.acquire_timeout_ms = tu_ms(2000);
    s->o.refresh_timeout_ms = tu_ms(1000);
    s->o.refresh_interval_ms = 0;
    return s;
}

/* Makes the cluster, seeded by node 0, with s->o. */
static vl_redis_cluster *scene_cluster(scene *s)
{
    s->cl = vl_redis_cluster_new(s->loop, s->fk.url, &s->o);
    assert_non_null(s->cl);
    return s->cl;
}

/* Makes the cluster and waits until it is ready (VL_OK). */
static vl_redis_cluster *scene_ready(scene *s)
{
    scene_cluster(s);
    vl_future_free(tu_run_cmd(
        s->loop, vl_future_timeout(vl_redis_cluster_ready(s->cl), WAIT_MS), VL_OK));
    return s->cl;
}

/* Frees the cluster (if not yet), stops the fake, and checks that the loop
 * ends empty with nothing leaked. */
static void scene_close(scene *s)
{
    vl_redis_cluster_free(s->cl);
    fake_stop(&s->fk);
    tu_finish(s->loop);
    free(s);
}

/* A counter of the scene's fake. */
static long long stat_of(scene *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static long long stat_of(scene *s, const char *fmt, ...)
{
    char name[96];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(name, sizeof(name), fmt, ap);
    va_end(ap);
    return fake_stat(s->loop, &s->fk, "%s", name);
}

/* GETs both nodes of a two-node scenario received. */
static long long gets_of_two(scene *s)
{
    return stat_of(s, "cmd:GET:0") + stat_of(s, "cmd:GET:1");
}

static call *get(scene *s, const char *key)
{
    return submit(&s->t, vl_redis_cluster_command(s->cl, "GET %s", key));
}

static vl_redis_cluster_stats cluster_stats(const vl_redis_cluster *cl)
{
    vl_redis_cluster_stats st;

    vl_redis_cluster_stats_init(&st);
    assert_int_equal(vl_redis_cluster_stats_get(cl, &st), VL_OK);
    return st;
}

/* The cluster's entry for node `i` of the fake, in its present map:
 * 1 and *ni filled, or 0 when the map does not have it. */
static int node_of(scene *s, size_t i, vl_redis_node_info *ni)
{
    size_t k, n = vl_redis_cluster_nodes(s->cl);

    for (k = 0; k < n; k++) {
        vl_redis_node_info_init(ni);
        assert_int_equal(vl_redis_cluster_node(s->cl, k, ni), VL_OK);
        if (strcmp(ni->addr, fake_addr(&s->fk, i)) == 0)
            return 1;
    }
    return 0;
}

/* The slots node `i` of the fake serves in the cluster's present map (0
 * when the map does not have it). */
static size_t slots_of(scene *s, size_t i)
{
    vl_redis_node_info ni;

    return node_of(s, i, &ni) ? ni.slots : 0;
}

/* Its state (VL_REDIS_DOWN when the map does not have it). */
static int state_of(scene *s, size_t i)
{
    vl_redis_node_info ni;

    return node_of(s, i, &ni) ? ni.state : VL_REDIS_DOWN;
}

/* ---- redirections ---- */

/* Two nodes that send a key back and forth with MOVED: the command is
 * redirected max_redirects times, so sent max_redirects + 1 times in all,
 * then fails with VL_ESERVER and the documented message. */
static void moved_ping_pong(size_t max_redirects)
{
    scene *s = scene_open("pingpong");
    char want[64];
    call *c;

    if (max_redirects != 0)
        s->o.max_redirects = max_redirects;
    max_redirects = s->o.max_redirects;
    scene_ready(s);
    c = get(s, "pp");
    tally_wait(&s->t);
    expect_status(c, VL_ESERVER);
    snprintf(want, sizeof(want), "too many redirections (%zu): last MOVED", max_redirects);
    expect_text(c->msg, want);
    assert_int_equal(gets_of_two(s), max_redirects + 1);
    assert_int_equal(cluster_stats(s->cl).moved, max_redirects);
    scene_close(s);
}

static void moved_ping_pong_default(void **state)
{
    (void)state;
    moved_ping_pong(0);
}

static void moved_ping_pong_two(void **state)
{
    (void)state;
    moved_ping_pong(2);
}

/* The deadline runs from the call across redirections: with a redirect
 * limit it never reaches, a ping-pong ends with VL_ETIMEDOUT, never before
 * command_timeout_ms; the MOVED replies meanwhile cause only rate-limited
 * refreshes. */
static void moved_ping_pong_deadline(void **state)
{
    scene *s = scene_open("pingpong");
    uint64_t t0, took;
    long long maps0, maps;
    call *c;

    (void)state;
    s->o.max_redirects = 100000000;
    s->o.command_timeout_ms = 600;
    scene_ready(s);
    maps0 = fake_map_requests(s->loop, &s->fk);
    t0 = vl_loop_now_ms(s->loop);
    c = get(s, "pp");
    tally_wait(&s->t);
    took = c->at - t0;
    expect_status(c, VL_ETIMEDOUT);
    assert_true(took + 1 >= s->o.command_timeout_ms);
    assert_true(gets_of_two(s) > 2);
    maps = fake_map_requests(s->loop, &s->fk) - maps0;
    print_message("# %llu ms of ping-pong: %lld GETs, %lld map requests\n",
                  (unsigned long long)took, gets_of_two(s), maps);
    assert_true(maps <= 2 + (long long)(took / s->o.refresh_min_interval_ms));
    scene_close(s);
}

/* ASK names a node that accepts and hangs up at once: the command fails
 * with VL_ECONN naming that node, within its deadline; the map is not
 * changed (ASK never moves a slot), and the dead node is not hammered. */
static void ask_to_a_node_that_is_down(void **state)
{
    scene *s = scene_open("ask_down");
    long long conns;
    call *c;

    (void)state;
    scene_ready(s);
    c = get(s, "ask");
    tally_wait(&s->t);
    expect_status(c, VL_ECONN);
    expect_text(c->msg, fake_addr(&s->fk, 1));
    assert_int_equal(cluster_stats(s->cl).ask, 1);
    assert_int_equal(vl_redis_cluster_nodes(s->cl), 1);
    assert_int_equal(stat_of(s, "cmd:GET:0"), 1);
    conns = stat_of(s, "conn:1");
    assert_true(conns >= 1 && conns <= (long long)s->o.node_max_size + 1);
    scene_close(s);
}

/* ASK to a node that serves the slot only after ASKING: ASKING and the
 * command go back to back on one connection, the answer is that node's,
 * and the map is unchanged (the next command goes to node 0 again). */
static void ask_then_asking(void **state)
{
    scene *s = scene_open("ask_ok");
    vl_redis_cluster_stats st;
    int i;

    (void)state;
    scene_ready(s);
    for (i = 1; i <= 2; i++) {
        call *c = get(s, "k1");
        tally_wait(&s->t);
        expect_status(c, VL_OK);
        assert_string_equal(c->val, "n1:k1");
        assert_int_equal(stat_of(s, "cmd:GET:0"), i);
        assert_int_equal(stat_of(s, "cmd:ASKING:1"), i);
        assert_int_equal(stat_of(s, "cmd:GET:1"), i);
    }
    st = cluster_stats(s->cl);
    assert_int_equal(st.ask, 2);
    assert_int_equal(st.moved, 0);
    scene_close(s);
}

/* One GET on a fake that refuses it before execution (TRYAGAIN,
 * CLUSTERDOWN), with max_retries 3 and a first backoff of 20 ms; *took
 * is the time from the call to its completion. */
static call *refused_before_execution(scene *s, uint64_t *took)
{
    uint64_t t0;
    call *c;

    s->o.max_retries = 3;
    s->o.retry_backoff_ms = 20;
    scene_ready(s);
    t0 = vl_loop_now_ms(s->loop);
    c = get(s, "again");
    tally_wait(&s->t);
    *took = c->at - t0;
    return c;
}

/* TRYAGAIN forever: max_retries retries after a doubling backoff, then
 * VL_ESERVER with the server's text. */
static void tryagain_is_bounded(void **state)
{
    scene *s = scene_open("tryagain");
    uint64_t took;
    call *c = refused_before_execution(s, &took);

    (void)state;
    expect_status(c, VL_ESERVER);
    expect_text(c->msg, "TRYAGAIN Multiple keys request during rehashing of slot");
    assert_int_equal(stat_of(s, "cmd:GET:0"), 4);
    assert_int_equal(cluster_stats(s->cl).retries, 3);
    assert_true(took + 1 >= 20 + 40 + 80); /* the backoffs were waited */
    scene_close(s);
}

/* CLUSTERDOWN once, then an answer: retried after the backoff, and the
 * command succeeds with the answer. */
static void clusterdown_then_ok(void **state)
{
    scene *s = scene_open("clusterdown");
    uint64_t took;
    call *c = refused_before_execution(s, &took);

    (void)state;
    expect_status(c, VL_OK);
    assert_string_equal(c->val, "n0:again");
    assert_int_equal(stat_of(s, "cmd:GET:0"), 2);
    assert_int_equal(cluster_stats(s->cl).retries, 1);
    assert_true(took + 1 >= 20);
    scene_close(s);
}

/* A node answers SSUBSCRIBE with LOADING twice: the channel waits for the
 * next map, and the refreshes it asks for find the map unchanged (no new
 * epoch). The subscriber still hears of each refresh and asks again, so
 * the subscription is confirmed on the third SSUBSCRIBE. */
static void subscribe_loading_then_ok(void **state)
{
    scene *s = scene_open("sub_loading");
    vl_redis_cluster_sub *sub;
    const char *chans[] = {"news"};
    uint64_t epoch;
    vl_future *f;

    (void)state;
    s->o.refresh_min_interval_ms = 10;
    scene_ready(s);
    epoch = cluster_stats(s->cl).map_epoch;
    sub = vl_redis_cluster_sub_new(s->cl, NULL, NULL, NULL);
    assert_non_null(sub);
    f = vl_future_timeout(vl_redis_cluster_ssubscribe(sub, 1, chans), WAIT_MS);
    tu_await(s->loop, f);
    print_message("# %d %s; SSUBSCRIBE %lld, refreshes %llu, map requests %lld\n",
                  vl_future_status(f), vl_future_error(f), stat_of(s, "cmd:SSUBSCRIBE:0"),
                  (unsigned long long)cluster_stats(s->cl).refreshes, fake_map_requests(s->loop, &s->fk));
    assert_int_equal(vl_future_status(f), VL_OK);
    vl_future_free(f);
    assert_int_equal(stat_of(s, "cmd:SSUBSCRIBE:0"), 3);
    assert_true(cluster_stats(s->cl).refreshes >= 3);
    assert_int_equal(cluster_stats(s->cl).map_epoch, epoch);
    vl_redis_cluster_sub_free(sub);
    scene_close(s);
}

/* A command waiting out a TRYAGAIN backoff: cancelled, it completes once
 * with VL_ECANCELED and is never sent again; reaching its deadline, it
 * completes with VL_ETIMEDOUT then, not after the backoff. */
static void backoff_cancelled_or_overdue(void **state)
{
    scene *s = scene_open("tryagain");
    vl_future *f;
    call *c, *d;
    uint64_t t0;

    (void)state;
    s->o.retry_backoff_ms = tu_ms(2000);
    s->o.command_timeout_ms = tu_ms(300);
    scene_ready(s);
    f = vl_redis_cluster_command(s->cl, "GET cancel");
    c = submit(&s->t, f);
    while (stat_of(s, "cmd:GET:0") < 1 && c->completed == 0)
        tu_sleep_ms(s->loop, 5);
    tu_sleep_ms(s->loop, 50); /* the TRYAGAIN is in: the backoff runs */
    assert_int_equal(c->completed, 0);
    assert_int_equal(vl_future_cancel(f), 1);
    t0 = vl_loop_now_ms(s->loop);
    d = get(s, "overdue");
    tally_wait(&s->t);
    expect_status(c, VL_ECANCELED);
    expect_status(d, VL_ETIMEDOUT);
    assert_true(d->at - t0 < s->o.retry_backoff_ms); /* the deadline, not the backoff */
    tu_sleep_ms(s->loop, s->o.retry_backoff_ms + 500);
    assert_int_equal(stat_of(s, "cmd:GET:0"), 2); /* one each, no retry after the end */
    scene_close(s);
}

/* A SET that got no reply before its connection dropped may have run: it
 * fails with VL_ECONN and is never sent again (the fake saw it once, also
 * well after every backoff), while the cluster itself recovers. */
static void lost_after_write_is_not_retried(void **state)
{
    scene *s = scene_open("noreply_drop");
    call *c;

    (void)state;
    s->o.retry_backoff_ms = 10;
    scene_ready(s);
    c = submit(&s->t, vl_redis_cluster_command(s->cl, "SET once v"));
    tally_wait(&s->t);
    expect_status(c, VL_ECONN);
    tu_sleep_ms(s->loop, 500);
    assert_int_equal(stat_of(s, "cmd:SET:0"), 1);
    assert_int_equal(cluster_stats(s->cl).retries, 0);
    c = get(s, "after");
    tally_wait(&s->t);
    expect_status(c, VL_OK);
    assert_string_equal(c->val, "n0:after");
    assert_int_equal(stat_of(s, "cmd:SET:0"), 1);
    scene_close(s);
}

/* Redirections that cannot be followed (no slot, a slot out of range, no
 * port, port 0, a host too long...) are the server's error replies: the
 * command fails with VL_ESERVER and the text, nothing is sent anywhere
 * else. One with an empty host ("MOVED 5 :PORT") is followed to that port
 * on the host of the node that sent it. */
static void unusable_redirections(void **state)
{
    scene *s = scene_open("badredirect");
    call *c[32], *good;
    vl_future *nf;
    long long n = 0;
    vl_redis_cluster_stats st;
    int i;

    (void)state;
    nf = tu_run_cmd(s->loop, vl_redis_command(s->fk.ctl, "FAKE BADREDIRECTS"), VL_OK);
    assert_int_equal(vl_redis_reply_integer(vl_future_redis_reply(nf), &n), VL_OK);
    vl_future_free(nf);
    assert_true(n > 0 && n <= 32);
    scene_ready(s);
    for (i = 0; i < n; i++) {
        char k[32];
        snprintf(k, sizeof(k), "bad-%d", i);
        c[i] = get(s, k);
    }
    good = get(s, "good");
    tally_wait(&s->t);
    for (i = 0; i < n; i++) {
        print_message("# bad-%d: %d (%s)\n", i, c[i]->status, c[i]->msg);
        expect_status(c[i], VL_ESERVER);
        if (strstr(c[i]->msg, "MOVED") == NULL && strstr(c[i]->msg, "ASK") == NULL)
            fail_msg("bad-%d: '%s' is not the server's text", i, c[i]->msg);
    }
    expect_status(good, VL_OK);
    assert_string_equal(good->val, "n1:good");
    assert_int_equal(stat_of(s, "cmd:GET:1"), 1);
    assert_int_equal(stat_of(s, "cmd:GET:0"), n + 1);
    st = cluster_stats(s->cl);
    assert_int_equal(st.moved, 1);
    assert_int_equal(st.ask, 0);
    scene_close(s);
}

/* A batch whose commands a node partly redirects: only the redirected
 * ones are sent again, each child completes once with its own node's
 * answer, in the caller's order. */
static void batch_resends_only_the_redirected(void **state)
{
    enum { N = 10 };
    scene *s = scene_open("batch");
    char keys[N][32];
    const char *argv[N][2];
    vl_redis_cmd cmds[N];
    vl_future *f;
    size_t i;

    (void)state;
    scene_ready(s);
    for (i = 0; i < N; i++) {
        if (i < 4)
            key_in(keys[i], sizeof(keys[i]), "mv", 0, 8191, (int)i);
        else if (i < 8)
            key_in(keys[i], sizeof(keys[i]), "st", 0, 8191, (int)i);
        else
            key_in(keys[i], sizeof(keys[i]), "hi", 8192, 16383, (int)i);
        argv[i][0] = "GET";
        argv[i][1] = keys[i];
        cmds[i].argc = 2;
        cmds[i].argv = argv[i];
        cmds[i].argvlen = NULL;
    }
    f = tu_run_cmd(s->loop, vl_future_timeout(vl_redis_cluster_batch(s->cl, cmds, N), WAIT_MS),
                   VL_OK);
    assert_int_equal(vl_future_count(f), N);
    for (i = 0; i < N; i++) {
        char want[48];
        vl_future *child = vl_future_child(f, i);
        assert_int_equal(vl_future_status(child), VL_OK);
        snprintf(want, sizeof(want), "n%d:%s", i < 4 || i >= 8 ? 1 : 0, keys[i]);
        tu_check_str(vl_future_redis_reply(child), want);
    }
    vl_future_free(f);
    assert_int_equal(stat_of(s, "cmd:GET:0"), 8);
    assert_int_equal(stat_of(s, "cmd:GET:1"), 6);
    assert_int_equal(cluster_stats(s->cl).moved, 4);
    scene_close(s);
}

/* MOVED to a node outside the map that never answers, not even the
 * handshake: the redirected command fails (its connect or its deadline)
 * and completes once, while node 0 goes on answering meanwhile. */
static void moved_to_a_mute_node(void **state)
{
    enum { N = 20 };
    scene *s = scene_open("moved_mute");
    call *mute, *c[N];
    int i;

    (void)state;
    s->o.command_timeout_ms = tu_ms(3000);
    scene_ready(s);
    mute = get(s, "mute");
    while (stat_of(s, "conn:1") < 1 && mute->completed == 0)
        tu_sleep_ms(s->loop, 10);
    for (i = 0; i < N; i++) {
        char k[32];
        snprintf(k, sizeof(k), "meanwhile-%d", i);
        c[i] = get(s, k);
    }
    tally_wait(&s->t);
    if (mute->status != VL_ECONN && mute->status != VL_ETIMEDOUT)
        fail_msg("GET redirected to the mute node: %d (%s)", mute->status, mute->msg);
    for (i = 0; i < N; i++) {
        expect_status(c[i], VL_OK);
        assert_true(c[i]->at <= mute->at); /* node 0 did not wait for node 1 */
    }
    assert_int_equal(stat_of(s, "cmd:GET:1"), 0);
    scene_close(s);
}

/* ---- maps ---- */

/* What the message of a refused map must say, by the fake's label: the
 * reason, never only "no answer" from a node that did answer. */
static const char *refusal_text(const char *label)
{
    static const struct {
        const char *label, *text;
    } texts[] = {
        {"garbage", "bad reply type byte 0x21"},
        {"truncated", "closed the connection in the middle of a reply"},
        {"error", "no map here either"}, /* the server's text (CLUSTER SLOTS) */
        {"huge array", "exceeds max_elements"},
        {"deep", "nested deeper than max_depth"},
        {"slots: garbage", "bad reply type byte 0x21"},
    };
    size_t i;

    for (i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
        if (strcmp(label, texts[i].label) == 0)
            return texts[i].text;
    return strncmp(label, "slots:", 6) == 0 ? "malformed CLUSTER SLOTS answer"
                                            : "malformed CLUSTER SHARDS answer";
}

/* Every node of scenario badmap answers CLUSTER SHARDS / SLOTS with a map
 * that cannot be used (garbage, truncated, wrong types, out-of-range
 * slots, no nodes, an enormous length, a host too long to keep...). A
 * cluster seeded by each, all at once: readiness fails with VL_ECONN and a
 * message (that says why, with `say_why`), a command issued before any map
 * completes once with a failure, and nothing crashes or leaks. */
static void unusable_maps(int say_why)
{
    scene *s = scene_open("badmap");
    vl_redis_cluster *cls[FAKE_NODES_MAX];
    call *ready[FAKE_NODES_MAX], *cmd[FAKE_NODES_MAX];
    const vl_redis_reply *labels;
    vl_future *lf;
    size_t i;
    int wrong = 0;

    lf = tu_run_cmd(s->loop, vl_redis_command(s->fk.ctl, "FAKE BADMAPS"), VL_OK);
    labels = vl_future_redis_reply(lf);
    assert_int_equal(vl_redis_reply_count(labels), s->fk.n);
    s->o.command_timeout_ms = tu_ms(4000);
    for (i = 0; i < s->fk.n; i++) {
        char url[96];
        snprintf(url, sizeof(url), "redis+cluster://%s", fake_addr(&s->fk, i));
        cls[i] = vl_redis_cluster_new(s->loop, url, &s->o);
        assert_non_null(cls[i]);
        ready[i] = submit(&s->t, vl_future_timeout(vl_redis_cluster_ready(cls[i]), WAIT_MS));
        cmd[i] = submit(&s->t, vl_redis_cluster_command(cls[i], "GET early"));
    }
    tally_wait(&s->t);
    for (i = 0; i < s->fk.n; i++) {
        const char *label = vl_redis_reply_str(vl_redis_reply_element(labels, i), NULL);
        int bad = ready[i]->status != VL_ECONN || ready[i]->msg[0] == '\0' ||
                  vl_redis_cluster_error(cls[i])[0] == '\0' || cmd[i]->status == VL_OK ||
                  (say_why && strstr(ready[i]->msg, refusal_text(label)) == NULL);
        print_message("# %s%s: ready %d (%s); GET %d (%s)\n", bad ? "WRONG: " : "", label,
                      ready[i]->status, ready[i]->msg, cmd[i]->status, cmd[i]->msg);
        wrong += bad;
        vl_redis_cluster_free(cls[i]);
    }
    assert_int_equal(wrong, 0);
    vl_future_free(lf);
    scene_close(s);
}

static void unusable_maps_refused(void **state)
{
    (void)state;
    unusable_maps(0);
}

static void unusable_maps_say_why(void **state)
{
    (void)state;
    unusable_maps(1);
}

/* A map that leaves slots 5461-16383 uncovered: readiness fails with the
 * documented message; a command to an uncovered slot fails clearly (its
 * message names the slot), while one to a covered slot is answered. */
static void uncovered_slots(void **state)
{
    scene *s = scene_open("uncovered");
    char kin[32], kout[32], slot[16];
    call *r, *in, *out;

    (void)state;
    scene_cluster(s);
    r = submit(&s->t, vl_future_timeout(vl_redis_cluster_ready(s->cl), WAIT_MS));
    tally_wait(&s->t);
    expect_status(r, VL_ECONN);
    expect_text(r->msg, "slots 5461-16383 not served");
    key_in(kin, sizeof(kin), "in", 0, 5460, 0);
    key_in(kout, sizeof(kout), "out", 5461, 16383, 0);
    in = get(s, kin);
    out = get(s, kout);
    tally_wait(&s->t);
    expect_status(in, VL_OK);
    assert_string_equal(in->val + 3, kin);
    if (out->status == VL_OK || out->status == VL_ETIMEDOUT)
        fail_msg("GET of an uncovered slot: %d (%s)", out->status, out->msg);
    snprintf(slot, sizeof(slot), "%u", vl_redis_cluster_slot(kout, strlen(kout)));
    expect_text(out->msg, slot);
    assert_int_equal(stat_of(s, "cmd:GET:0"), 1);
    scene_close(s);
}

/* The map names a primary that accepts and hangs up (a node that is not
 * there): readiness never reports VL_OK, commands for its slots fail with
 * VL_ECONN while node 0's are answered, and the connection attempts to it
 * follow the backoff: no more than a doubling schedule from
 * reconnect_min_ms allows for each of its pool's connections, plus one per
 * refresh. */
static void node_that_does_not_exist(void **state)
{
    scene *s = scene_open("ghost");
    char k0[32], k1[32];
    uint64_t t0, w;
    long long conns, bound;
    unsigned per;
    call *r;
    int i;

    (void)state;
    s->o.node_max_size = 2;
    s->o.reconnect_min_ms = 100;
    s->o.command_timeout_ms = tu_ms(3000);
    scene_cluster(s);
    t0 = vl_loop_now_ms(s->loop);
    r = submit(&s->t, vl_future_timeout(vl_redis_cluster_ready(s->cl), tu_ms(1500)));
    for (i = 0; i < 20; i++) {
        call *c0, *c1;
        key_in(k0, sizeof(k0), "live", 0, 8191, i);
        key_in(k1, sizeof(k1), "ghost", 8192, 16383, i);
        c0 = get(s, k0);
        c1 = get(s, k1);
        tally_wait(&s->t);
        expect_status(c0, VL_OK);
        assert_string_equal(c0->val + 3, k0);
        expect_status(c1, VL_ECONN);
        tu_sleep_ms(s->loop, 50);
    }
    if (r->status == VL_OK)
        fail_msg("ready with a primary that is not there");
    w = vl_loop_now_ms(s->loop) - t0;
    conns = stat_of(s, "conn:1");
    /* The backoff's delays are at least half of reconnect_min_ms doubled
     * each time: `per` attempts take at least 50 * (2^(per-1) - 1) ms. */
    for (per = 1; 50 * ((1ull << per) - 1) <= w; per++)
        ;
    bound = (long long)s->o.node_max_size * (long long)(per + 1) + 2 +
            (long long)(w / s->o.refresh_min_interval_ms);
    print_message("# %llu ms: %lld connections to the ghost (bound %lld)\n",
                  (unsigned long long)w, conns, bound);
    assert_true(conns >= 1);
    assert_true(conns <= bound);
    scene_close(s);
}

/* Every node goes down (they hang up on every connection) while the
 * cluster keeps being used and refreshes itself often: each command fails
 * with VL_ECONN, and the reconnects stay within the pools' and the ctl
 * connections' backoff (no storm), the refreshes within their rate. */
static void whole_cluster_down(uint64_t refresh_interval_ms)
{
    scene *s = scene_open("two");
    uint64_t t0, w;
    long long before, conns, bound;
    unsigned per;
    vl_redis_cluster_stats st;
    int i;

    s->o.node_max_size = 2;
    s->o.reconnect_min_ms = 100;
    s->o.refresh_interval_ms = refresh_interval_ms;
    scene_ready(s);
    before = stat_of(s, "conn:0") + stat_of(s, "conn:1");
    vl_future_free(tu_run_cmd(s->loop, vl_redis_command(s->fk.ctl, "FAKE KILL"), VL_OK));
    t0 = vl_loop_now_ms(s->loop);
    for (i = 0; i < 40; i++) {
        char k[32];
        call *c;
        snprintf(k, sizeof(k), "down-%d", i);
        c = get(s, k);
        tally_wait(&s->t);
        if (c->status == VL_OK)
            fail_msg("GET %d answered by a dead cluster", i);
        tu_sleep_ms(s->loop, 50);
    }
    w = vl_loop_now_ms(s->loop) - t0;
    conns = stat_of(s, "conn:0") + stat_of(s, "conn:1") - before;
    st = cluster_stats(s->cl);
    /* Per node: its pool's connections and its ctl connection, each at
     * most one attempt per doubling backoff step (at least half of
     * reconnect_min_ms, doubled); plus one attempt a refresh. */
    for (per = 1; 50 * ((1ull << per) - 1) <= w; per++)
        ;
    bound = 2 * ((long long)s->o.node_max_size + 1) * (long long)(per + 1) + 2 +
            2 * (long long)(w / s->o.refresh_min_interval_ms);
    print_message("# %llu ms down: %lld connections (bound %lld), %llu refresh errors\n",
                  (unsigned long long)w, conns, bound, (unsigned long long)st.refresh_errors);
    assert_true(conns >= 1);
    assert_true(conns <= bound);
    assert_true(st.refreshes + st.refresh_errors <= 2 + w / s->o.refresh_min_interval_ms + 2);
    scene_close(s);
}

/* The commands' failures ask for refreshes; none is periodic. */
static void whole_cluster_down_no_storm(void **state)
{
    (void)state;
    whole_cluster_down(0);
}

/* A periodic refresh more frequent than refresh_min_interval_ms is held
 * to that floor too ("at most one refresh per" it). */
static void whole_cluster_down_refresh_floor(void **state)
{
    (void)state;
    whole_cluster_down(100);
}

/* Node 1 stops answering after the handshake: the commands routed to it
 * fail, and meanwhile every command to node 0 completes, all of them
 * before the first of node 1's does. */
static void stalled_node_costs_only_its_commands(void **state)
{
    enum { N = 50 };
    scene *s = scene_open("stall");
    call *c0[N], *c1[N];
    char k[32];
    uint64_t last0 = 0, first1 = UINT64_MAX;
    int i;

    (void)state;
    s->o.command_timeout_ms = tu_ms(1500);
    scene_ready(s);
    for (i = 0; i < N; i++) {
        key_in(k, sizeof(k), "stalled", 8192, 16383, i);
        c1[i] = get(s, k);
        key_in(k, sizeof(k), "alive", 0, 8191, i);
        c0[i] = get(s, k);
    }
    tally_wait(&s->t);
    for (i = 0; i < N; i++) {
        expect_status(c0[i], VL_OK);
        /* Timed out, or failed with the connection that an overdue reply
         * made the pool close. */
        if (c1[i]->status != VL_ETIMEDOUT &&
            !(c1[i]->status == VL_ECONN && strstr(c1[i]->msg, "overdue") != NULL))
            fail_msg("GET %d of the stalled node: %d (%s)", i, c1[i]->status, c1[i]->msg);
        last0 = c0[i]->at > last0 ? c0[i]->at : last0;
        first1 = c1[i]->at < first1 ? c1[i]->at : first1;
    }
    assert_true(last0 <= first1);
    scene_close(s);
}

/* A command on every primary while node 1 stalls: node 0's answer is
 * there, node 1 fails alone (within its pool's command timeout), and the
 * whole completes with VL_OK, one host per primary in map order. */
static void each_with_a_stalled_node(void **state)
{
    scene *s = scene_open("stall");
    const char *argv[1] = {"PING"};
    const vl_fanout_result *fr;
    vl_future *f;

    (void)state;
    s->o.command_timeout_ms = tu_ms(1500);
    scene_ready(s);
    f = tu_run_cmd(s->loop,
                   vl_future_timeout(vl_redis_cluster_each(s->cl, VL_REDIS_CLUSTER_PRIMARIES, 1,
                                                           argv, NULL),
                                     WAIT_MS),
                   VL_OK);
    fr = vl_future_fanout(f);
    assert_non_null(fr);
    assert_int_equal(vl_fanout_count(fr), 2);
    assert_string_equal(vl_fanout_host(fr, 0), fake_addr(&s->fk, 0));
    assert_string_equal(vl_fanout_host(fr, 1), fake_addr(&s->fk, 1));
    assert_int_equal(vl_fanout_status(fr, 0), VL_OK);
    tu_check_str(vl_fanout_redis_reply(fr, 0), "PONG");
    if (vl_fanout_status(fr, 1) != VL_ETIMEDOUT && vl_fanout_status(fr, 1) != VL_ECONN)
        fail_msg("the stalled node: %d (%s)", vl_fanout_status(fr, 1), vl_fanout_error(fr, 1));
    vl_future_free(f);
    scene_close(s);
}

/* A map of 16384 one-slot ranges (slot s on node s % 3), from CLUSTER
 * SHARDS or from CLUSTER SLOTS: parsed whole, so 300 GETs of different
 * slots all go straight to their node (no MOVED). */
static void enormous_map(const char *scenario)
{
    scene *s = scene_open(scenario);
    char k[32];
    size_t i;

    s->o.refresh_timeout_ms = tu_ms(5000);
    scene_ready(s);
    assert_int_equal(vl_redis_cluster_nodes(s->cl), 3);
    for (i = 0; i < 3; i++) {
        vl_redis_node_info ni;
        vl_redis_node_info_init(&ni);
        assert_int_equal(vl_redis_cluster_node(s->cl, i, &ni), VL_OK);
        assert_int_equal(ni.role, VL_REDIS_ROLE_PRIMARY);
        assert_int_equal(ni.slots, i == 0 ? 5462 : 5461);
    }
    for (i = 0; i < 300; i++) {
        snprintf(k, sizeof(k), "e-%zu", i);
        get(s, k);
    }
    tally_wait(&s->t);
    for (i = 0; i < 300; i++) {
        char want[48];
        snprintf(k, sizeof(k), "e-%zu", i);
        snprintf(want, sizeof(want), "n%u:%s", vl_redis_cluster_slot(k, strlen(k)) % 3, k);
        expect_status(&s->t.calls[i], VL_OK);
        assert_string_equal(s->t.calls[i].val, want);
    }
    assert_int_equal(cluster_stats(s->cl).moved, 0);
    scene_close(s);
}

static void enormous_map_shards(void **state)
{
    (void)state;
    enormous_map("enormous");
}

static void enormous_map_slots(void **state)
{
    (void)state;
    enormous_map("enormous_slots");
}

/* Node 0 hands every slot to node 1: 1000 GETs in one burst all come back
 * MOVED. Each is answered by node 1, exactly once, and the map requests
 * they cause are single-flight and rate-limited: at most one per
 * refresh_min_interval_ms of the burst, plus the one under way. After the
 * refresh, commands go straight to node 1. */
static void moved_storm_refreshes_few(void **state)
{
    enum { N = 1000 };
    scene *s = scene_open("storm");
    char k[32];
    long long maps0, maps, get0;
    uint64_t t0, took, end, refreshes0;
    vl_redis_cluster_stats st;
    int i;

    (void)state;
    scene_ready(s);
    maps0 = fake_map_requests(s->loop, &s->fk);
    refreshes0 = cluster_stats(s->cl).refreshes;
    t0 = vl_loop_now_ms(s->loop);
    for (i = 0; i < N; i++) {
        key_in(k, sizeof(k), "storm", 0, 8191, i);
        get(s, k);
    }
    tally_wait(&s->t);
    took = vl_loop_now_ms(s->loop) - t0;
    for (i = 0; i < N; i++) {
        expect_status(&s->t.calls[i], VL_OK);
        assert_memory_equal(s->t.calls[i].val, "n1:", 3);
    }
    maps = fake_map_requests(s->loop, &s->fk) - maps0;
    st = cluster_stats(s->cl);
    print_message("# %d MOVED in %llu ms: %lld map requests, %llu refreshes, %llu moved\n", N,
                  (unsigned long long)took, maps, (unsigned long long)st.refreshes,
                  (unsigned long long)st.moved);
    assert_true(st.moved >= 1 && st.moved <= N);
    assert_true(maps <= 2 + (long long)(took / s->o.refresh_min_interval_ms));
    /* The refresh the MOVED replies scheduled comes (once the rate limit
     * allows, maybe during the burst), and with the new map node 0 gets
     * nothing more. */
    end = vl_loop_now_ms(s->loop) + WAIT_MS;
    while (cluster_stats(s->cl).refreshes == refreshes0 && vl_loop_now_ms(s->loop) < end)
        tu_sleep_ms(s->loop, 20);
    assert_true(cluster_stats(s->cl).refreshes > refreshes0);
    took = vl_loop_now_ms(s->loop) - t0;
    maps = fake_map_requests(s->loop, &s->fk) - maps0;
    assert_true(maps >= 1);
    assert_true(maps <= 2 + (long long)(took / s->o.refresh_min_interval_ms));
    get0 = stat_of(s, "cmd:GET:0");
    tally_init(&s->t, s->loop);
    for (i = 0; i < 20; i++) {
        key_in(k, sizeof(k), "after", 0, 8191, i);
        get(s, k);
    }
    tally_wait(&s->t);
    for (i = 0; i < 20; i++)
        expect_status(&s->t.calls[i], VL_OK);
    assert_int_equal(stat_of(s, "cmd:GET:0"), get0);
    scene_close(s);
}

/* A refresh drops node 1 from the map while GETs it received are still
 * unanswered: they are not cut off but complete with node 1's answers,
 * and the slot's next command goes to node 0. */
static void node_leaves_with_commands_pending(void **state)
{
    enum { N = 3 };
    scene *s = scene_open("leave");
    char keys[N][32];
    call *c[N], *after;
    int i;

    (void)state;
    scene_ready(s);
    for (i = 0; i < N; i++) {
        key_in(keys[i], sizeof(keys[i]), "leaving", 8192, 16383, i);
        c[i] = get(s, keys[i]);
    }
    while (stat_of(s, "cmd:GET:1") < 1 && s->t.completed == 0)
        tu_sleep_ms(s->loop, 10);
    vl_future_free(tu_run_cmd(
        s->loop, vl_future_timeout(vl_redis_cluster_refresh(s->cl), WAIT_MS), VL_OK));
    assert_int_equal(vl_redis_cluster_nodes(s->cl), 1);
    tally_wait(&s->t);
    for (i = 0; i < N; i++) {
        char want[128];
        expect_status(c[i], VL_OK);
        /* The first was at node 1 before it left; the others were there
         * or waited for a connection and went by the new map. */
        snprintf(want, sizeof(want), "n1:%s", keys[i]);
        if (strcmp(c[i]->val, want) != 0 && (i == 0 || strcmp(c[i]->val + 3, keys[i]) != 0))
            fail_msg("GET %d: '%s'", i, c[i]->val);
    }
    after = get(s, keys[0]);
    tally_wait(&s->t);
    expect_status(after, VL_OK);
    assert_memory_equal(after->val, "n0:", 3);
    scene_close(s);
}

/* A refresh gives up on node 0, which answers late, and takes node 1's
 * newer map. The next refresh asks node 0 again and then its late answer
 * to the abandoned question arrives, with the map as it was before: it
 * must not be taken for the answer to the new question (a late reply is
 * dropped, never given to another request), so the newer map stays. */
static void late_answer_is_not_taken(void **state)
{
    scene *s = scene_open("late");
    vl_future *r1, *r2;
    long long asked;

    (void)state;
    /* Node 0's share: 1000 ms, less than its delay of 1500 ms (not
     * stretched: it shapes the behaviour, it is no hang guard). */
    s->o.refresh_timeout_ms = 2000;
    scene_ready(s);
    assert_int_equal(slots_of(s, 0), 8192);
    r1 = vl_future_timeout(vl_redis_cluster_refresh(s->cl), WAIT_MS);
    while (stat_of(s, "cmd:CLUSTER SHARDS:0") < 2 && !vl_future_done(r1))
        tu_sleep_ms(s->loop, 5);
    /* Node 0 took the question with the old map; the map changes now. */
    vl_future_free(tu_run_cmd(s->loop, vl_redis_command(s->fk.ctl, "FAKE FLIP"), VL_OK));
    vl_future_free(tu_run_cmd(s->loop, r1, VL_OK));
    assert_true(stat_of(s, "cmd:CLUSTER SHARDS:1") >= 1);
    assert_int_equal(slots_of(s, 0), 1);
    assert_int_equal(slots_of(s, 1), 16383);
    asked = stat_of(s, "cmd:CLUSTER SHARDS:0");
    r2 = vl_future_timeout(vl_redis_cluster_refresh(s->cl), WAIT_MS);
    vl_future_free(tu_run_cmd(s->loop, r2, VL_OK));
    print_message("# node 0 asked %lld times by the second refresh\n",
                  stat_of(s, "cmd:CLUSTER SHARDS:0") - asked);
    if (slots_of(s, 0) != 1)
        fail_msg("node 0 serves %zu slots again: the late answer (the map before) was taken",
                 slots_of(s, 0));
    assert_int_equal(slots_of(s, 1), 16383);
    scene_close(s);
}

/* A node that never answers CLUSTER SHARDS: commands wait for the first
 * map, each within its own deadline, and freeing the cluster meanwhile
 * completes every one of them, its readiness and a refresh with
 * VL_ECANCELED. */
static void free_while_waiting_for_the_map(void **state)
{
    enum { N = 20 };
    scene *s = scene_open("mapstall");
    char k[32];
    int i;

    (void)state;
    s->o.refresh_timeout_ms = tu_ms(60000);
    scene_cluster(s);
    submit(&s->t, vl_redis_cluster_ready(s->cl));
    submit(&s->t, vl_redis_cluster_refresh(s->cl));
    for (i = 0; i < N; i++) {
        snprintf(k, sizeof(k), "wait-%d", i);
        get(s, k);
    }
    while (stat_of(s, "cmd:CLUSTER SHARDS:0") < 1)
        tu_sleep_ms(s->loop, 10);
    tu_sleep_ms(s->loop, 100);
    assert_int_equal(s->t.completed, 0);
    vl_redis_cluster_free(s->cl);
    s->cl = NULL;
    tally_wait(&s->t);
    for (i = 0; i < s->t.submitted; i++)
        expect_status(&s->t.calls[i], VL_ECANCELED);
    scene_close(s);
}

/* A lease is on one node's connection and is not redirected: the MOVED
 * reply is the caller's (VL_ESERVER), sent once. */
static void lease_is_not_redirected(void **state)
{
    scene *s = scene_open("pingpong");
    vl_future *lf, *f;
    vl_redis_lease *l;

    (void)state;
    scene_ready(s);
    lf = tu_run_cmd(s->loop, vl_future_timeout(vl_redis_cluster_lease(s->cl, "pp", 2), WAIT_MS),
                    VL_OK);
    l = vl_future_value(lf);
    assert_non_null(l);
    f = tu_run_cmd(s->loop, vl_future_timeout(vl_redis_lease_command(l, "GET pp"), WAIT_MS),
                   VL_ESERVER);
    expect_text(vl_future_error(f), "MOVED");
    vl_future_free(f);
    assert_int_equal(gets_of_two(s), 1);
    vl_future_free(lf); /* releases the lease */
    scene_close(s);
}

/* ---- replica reads ---- */

/* read_from prefer_replica: the replica's connections come up by
 * themselves (readiness waits only for the primaries), and then a read
 * goes to the replica, on a connection that sent READONLY (the replica
 * answers it itself instead of MOVED), and a write to the primary. */
static void replica_reads_with_readonly(void **state)
{
    scene *s = scene_open("replica");
    uint64_t end;
    call *rd, *wr;

    (void)state;
    s->o.read_from = VL_REDIS_READ_PREFER_REPLICA;
    scene_ready(s);
    end = vl_loop_now_ms(s->loop) + WAIT_MS;
    while (state_of(s, 1) != VL_REDIS_READY && vl_loop_now_ms(s->loop) < end)
        tu_sleep_ms(s->loop, 10);
    assert_int_equal(state_of(s, 1), VL_REDIS_READY);
    rd = get(s, "r");
    wr = submit(&s->t, vl_redis_cluster_command(s->cl, "SET w v"));
    tally_wait(&s->t);
    expect_status(rd, VL_OK);
    assert_string_equal(rd->val, "n1:r");
    expect_status(wr, VL_OK);
    assert_int_equal(stat_of(s, "cmd:SET:0"), 1);
    assert_int_equal(stat_of(s, "cmd:GET:0"), 0);
    assert_true(stat_of(s, "cmd:READONLY:1") >= 1);
    assert_int_equal(cluster_stats(s->cl).moved, 0);
    scene_close(s);
}

/* A replica that refuses READONLY is not up for reads: with read_from
 * replica a read fails with VL_ECONN (the replica's own text, or that no
 * replica is up once that is known), and nothing reaches the replica. */
static void replica_refusing_readonly(void **state)
{
    scene *s = scene_open("replica_refuses");
    call *c;

    (void)state;
    s->o.read_from = VL_REDIS_READ_REPLICA;
    scene_ready(s);
    c = get(s, "only");
    tally_wait(&s->t);
    expect_status(c, VL_ECONN);
    if (strstr(c->msg, "cluster support disabled") == NULL && strstr(c->msg, "no replica") == NULL)
        fail_msg("read_from replica: '%s'", c->msg);
    assert_int_equal(stat_of(s, "cmd:GET:1"), 0);
    scene_close(s);
}

/* With prefer_replica, a replica that is not up (it refuses READONLY, so
 * its connections never become ready) leaves the reads to the primary:
 * the first read (issued with the cluster, while the replica's first
 * connection is being made) as much as the later ones. */
static void prefer_replica_falls_back_to_primary(void **state)
{
    scene *s = scene_open("replica_refuses");
    int i;

    (void)state;
    s->o.read_from = VL_REDIS_READ_PREFER_REPLICA;
    scene_cluster(s);
    for (i = 0; i < 3; i++) {
        call *c = get(s, "prefer");
        tally_wait(&s->t);
        if (c->status != VL_OK)
            fail_msg("prefer_replica read %d: %d (%s)", i, c->status, c->msg);
        assert_string_equal(c->val, "n0:prefer");
        tu_sleep_ms(s->loop, 100);
    }
    assert_int_equal(stat_of(s, "cmd:GET:1"), 0);
    scene_close(s);
}

/* ---- the caller ---- */

static void free_cluster_hook(tally *t, call *c)
{
    scene *s = t->hook_ud;

    (void)c;
    vl_redis_cluster_free(s->cl);
    s->cl = NULL;
}

/* The cluster is freed from inside its readiness callback while commands
 * issued before the map are being sent: each completes exactly once
 * (answered, or VL_ECANCELED), and the loop ends empty. */
static void free_inside_ready_callback(void **state)
{
    enum { N = 50 };
    scene *s = scene_open("two");
    char k[32];
    int i, cancelled = 0;

    (void)state;
    scene_cluster(s);
    s->t.hook = free_cluster_hook;
    s->t.hook_ud = s;
    s->t.hook_at = 0;
    submit(&s->t, vl_future_timeout(vl_redis_cluster_ready(s->cl), WAIT_MS));
    for (i = 0; i < N; i++) {
        snprintf(k, sizeof(k), "early-%d", i);
        get(s, k);
    }
    tally_wait(&s->t);
    assert_null(s->cl);
    expect_status(&s->t.calls[0], VL_OK);
    for (i = 1; i <= N; i++) {
        if (s->t.calls[i].status == VL_ECANCELED)
            cancelled++;
        else
            expect_status(&s->t.calls[i], VL_OK);
    }
    print_message("# %d of %d cancelled by the free\n", cancelled, N);
    scene_close(s);
}

/* Waits (bounded) until node `i` of the fake has received `n` GETs. */
static void wait_gets(scene *s, size_t i, long long n)
{
    uint64_t end = vl_loop_now_ms(s->loop) + WAIT_MS;

    while (stat_of(s, "cmd:GET:%zu", i) < n && vl_loop_now_ms(s->loop) < end)
        tu_sleep_ms(s->loop, 10);
    assert_true(stat_of(s, "cmd:GET:%zu", i) >= n);
}

/* The cluster is freed from inside a command's callback while 20 others
 * have been redirected by MOVED to a node that answers slowly: each of
 * those completes exactly once, with VL_ECANCELED. */
static void free_inside_callback_mid_redirect(void **state)
{
    enum { N = 20 };
    scene *s = scene_open("slow");
    call *direct;
    char k[32];
    int i;

    (void)state;
    scene_ready(s);
    for (i = 0; i < N; i++) {
        key_in(k, sizeof(k), "redir", 0, 8191, i);
        get(s, k);
    }
    wait_gets(s, 1, 1); /* redirections are under way */
    key_in(k, sizeof(k), "direct", 0, 8191, 0);
    s->t.hook = free_cluster_hook;
    s->t.hook_ud = s;
    s->t.hook_at = N;
    direct = get(s, k);
    tally_wait(&s->t);
    assert_null(s->cl); /* the hook ran */
    expect_status(direct, VL_OK);
    for (i = 0; i < N; i++) {
        if (s->t.calls[i].status != VL_ECANCELED)
            fail_msg("redirected GET %d: %d (%s), wanted VL_ECANCELED", i, s->t.calls[i].status,
                     s->t.calls[i].msg);
    }
    scene_close(s);
}

/* A command cancelled after MOVED sent it to a slow node: it completes
 * once, with VL_ECANCELED; the late reply is dropped, never given to the
 * next command, which gets its own. */
static void cancel_mid_redirect(void **state)
{
    scene *s = scene_open("slow");
    char k[32], k2[32];
    vl_future *f;
    call *c, *next;

    (void)state;
    scene_ready(s);
    key_in(k, sizeof(k), "cancel", 0, 8191, 0);
    f = vl_redis_cluster_command(s->cl, "GET %s", k);
    c = submit(&s->t, f);
    wait_gets(s, 1, 1);
    assert_int_equal(c->completed, 0);
    assert_int_equal(vl_future_cancel(f), 1);
    key_in(k2, sizeof(k2), "next", 8192, 16383, 0);
    next = get(s, k2);
    tally_wait(&s->t);
    expect_status(c, VL_ECANCELED);
    expect_status(next, VL_OK);
    assert_memory_equal(next->val, "n1:", 3);
    assert_string_equal(next->val + 3, k2);
    tu_sleep_ms(s->loop, 300);
    assert_int_equal(c->completed, 1);
    scene_close(s);
}

/* Every allocation in turn fails, from making the cluster through its
 * first map and a command: each call returns NULL or a future that
 * completes once; nothing crashes, nothing leaks. */
static void alloc_failure_anywhere(void **state)
{
    vl_loop *ctl = vl_loop_new();
    fake fk;
    char url[96];
    long n;

    (void)state;
    fake_start(ctl, &fk, "two");
    snprintf(url, sizeof(url), "%s", fk.url);
    vl_redis_free(fk.ctl);
    fk.ctl = NULL;
    tu_finish(ctl); /* nothing of it may count as live below */
    for (n = 1; n < 20000; n++) {
        vl_redis_cluster_options o;
        vl_redis_cluster *cl;
        vl_loop *loop;
        int done;

        tu_alloc_fail_at(n);
        loop = vl_loop_new();
        if (loop == NULL)
            continue;
        vl_redis_cluster_options_init(&o);
        o.connect_timeout_ms = tu_ms(1000);
        o.refresh_interval_ms = 0;
        cl = vl_redis_cluster_new(loop, url, &o);
        if (cl != NULL) {
            /* The deadlines only guard against a hang: a future that
             * reaches one is a failure. */
            vl_future *r = vl_future_timeout(vl_redis_cluster_ready(cl), tu_ms(3000));
            vl_future *g = vl_future_timeout(vl_redis_cluster_command(cl, "GET oom"),
                                             tu_ms(3000));
            if (r != NULL) {
                int rc = vl_loop_run_until(loop, r);
                if (rc != VL_OK && rc != VL_ENOMEM && rc != VL_ECONN)
                    fail_msg("allocation %ld failed: ready %d (%s)", n, rc, vl_future_error(r));
                vl_future_free(r);
            }
            if (g != NULL) {
                int rc = vl_loop_run_until(loop, g);
                if (rc != VL_OK && rc != VL_ENOMEM && rc != VL_ECONN)
                    fail_msg("allocation %ld failed: GET %d (%s)", n, rc, vl_future_error(g));
                vl_future_free(g);
            }
            vl_redis_cluster_free(cl);
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
    assert_true(n < 20000);
    tu_fixture_stop(&fk.fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(moved_ping_pong_default, tu_setup),
        cmocka_unit_test_setup(moved_ping_pong_two, tu_setup),
        cmocka_unit_test_setup(moved_ping_pong_deadline, tu_setup),
        cmocka_unit_test_setup(ask_to_a_node_that_is_down, tu_setup),
        cmocka_unit_test_setup(ask_then_asking, tu_setup),
        cmocka_unit_test_setup(tryagain_is_bounded, tu_setup),
        cmocka_unit_test_setup(clusterdown_then_ok, tu_setup),
        cmocka_unit_test_setup(subscribe_loading_then_ok, tu_setup),
        cmocka_unit_test_setup(backoff_cancelled_or_overdue, tu_setup),
        cmocka_unit_test_setup(lost_after_write_is_not_retried, tu_setup),
        cmocka_unit_test_setup(unusable_redirections, tu_setup),
        cmocka_unit_test_setup(batch_resends_only_the_redirected, tu_setup),
        cmocka_unit_test_setup(moved_to_a_mute_node, tu_setup),
        cmocka_unit_test_setup(unusable_maps_refused, tu_setup),
        cmocka_unit_test_setup(unusable_maps_say_why, tu_setup),
        cmocka_unit_test_setup(uncovered_slots, tu_setup),
        cmocka_unit_test_setup(node_that_does_not_exist, tu_setup),
        cmocka_unit_test_setup(whole_cluster_down_no_storm, tu_setup),
        cmocka_unit_test_setup(whole_cluster_down_refresh_floor, tu_setup),
        cmocka_unit_test_setup(stalled_node_costs_only_its_commands, tu_setup),
        cmocka_unit_test_setup(each_with_a_stalled_node, tu_setup),
        cmocka_unit_test_setup(enormous_map_shards, tu_setup),
        cmocka_unit_test_setup(enormous_map_slots, tu_setup),
        cmocka_unit_test_setup(moved_storm_refreshes_few, tu_setup),
        cmocka_unit_test_setup(node_leaves_with_commands_pending, tu_setup),
        cmocka_unit_test_setup(late_answer_is_not_taken, tu_setup),
        cmocka_unit_test_setup(free_while_waiting_for_the_map, tu_setup),
        cmocka_unit_test_setup(lease_is_not_redirected, tu_setup),
        cmocka_unit_test_setup(replica_reads_with_readonly, tu_setup),
        cmocka_unit_test_setup(replica_refusing_readonly, tu_setup),
        cmocka_unit_test_setup(prefer_replica_falls_back_to_primary, tu_setup),
        cmocka_unit_test_setup(free_inside_ready_callback, tu_setup),
        cmocka_unit_test_setup(free_inside_callback_mid_redirect, tu_setup),
        cmocka_unit_test_setup(cancel_mid_redirect, tu_setup),
        cmocka_unit_test_setup(alloc_failure_anywhere, tu_setup),
    };

    return tu_run("redis_cluster_hostile", tests, sizeof(tests) / sizeof(tests[0]));
}
