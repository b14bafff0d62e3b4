/* SPDX-License-Identifier: BSD-3-Clause */
/* cluster.c - the Redis Cluster runs of the async mode, through volley's
 * public API only (vl_redis_cluster; the loop's ev_loop, from vl_loop_ev,
 * for the iteration clock).
 *
 * cluster-get and cluster-set: the GET or SET load of redis-get/redis-set,
 * `window` requests in flight, each routed by vl_redis_cluster_command_argv
 * to the primary of its key's slot over node_max_size connections per
 * node. The keys (bench:k:N, no hash tags) spread over every slot, so the
 * three primaries share the load; the same load on one plain
 * redis-server is the scenario's other row (bench_async_run).
 *
 * cluster-refresh: the GET load with 1000 requests in flight, while
 * vl_redis_cluster_refresh is called again as soon as the previous refresh
 * completed (or, in the baseline row, never). Two clocks watch the loop:
 * the longest iteration (from libev's return from its poll to its next
 * call of it, caught with ev_set_loop_release_cb: every callback of the
 * iteration, whatever watcher ran it, in any order), in wall-clock time
 * and in the thread's CPU time, with the part of it beyond what the
 * replies it handled cost
 * (bench_cl_extra_ms), and the worst lateness of a repeating 1 ms timer (vl_loop_sleep),
 * which is what a stall costs every other user of the loop. On a machine
 * whose cores are shared with the servers (and other work), wall-clock
 * figures also count the times the scheduler gave the core to another
 * process in the middle of an iteration; the CPU time of an iteration
 * counts only the work done in it, which is what a refresh that parsed a
 * topology in one go would show. All are printed, never asserted.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>
#include <volley.h>

#include "bench.h"

typedef struct bench_cl bench_cl;

/* One loop iteration of cluster-refresh: its CPU time and how many of the
 * bench's replies it handled. */
typedef struct bench_cl_iter {
    float cpu_us;
    uint32_t replies;
} bench_cl_iter;

typedef struct bench_cl_slot {
    bench_cl *x;
    uint64_t i, t0;
} bench_cl_slot;

struct bench_cl {
    vl_loop *loop;
    vl_redis_cluster *cl;
    const bench_env *e;
    const bench_case *c;
    bench_run *r;
    char *store;
    uint64_t next, done, goal; /* goal: the requests of this phase */
    int warming;               /* the untimed first requests: not counted */
    vl_promise *finish;
    /* cluster-refresh */
    int stopping;              /* the load is done: the chains below end */
    vl_promise *refresh_end, *timer_end;
    uint64_t timer_t0;         /* when the pending 1 ms sleep started, us */
    uint64_t iter_t0;          /* the last return from the poll, us; 0 before */
    double iter_cpu0;          /* the thread's CPU time then, us */
    uint32_t iter_replies;     /* replies handled since then */
    bench_cl_iter *iters;      /* every iteration's CPU time and replies */
    size_t niters, iters_cap;
    void *ev_data;             /* the loop's userdata, put back at the end */
};

static void bench_cl_issue(bench_cl_slot *s);

static void bench_cl_reply_cb(vl_future *f, void *ud)
{
    bench_cl_slot *s = ud;
    bench_cl *x = s->x;
    if (bench_redis_check_future(x->e, x->c->op, s->i, f, "async cluster") != 0)
        x->r->errors++;
    if (!x->warming) {
        uint64_t before = x->done;
        x->iter_replies++;
        bench_hist_add(&x->r->hist, bench_now_us() - s->t0);
        x->r->done = ++x->done;
        if ((x->done & ~(uint64_t)1023) != (before & ~(uint64_t)1023))
            bench_progress(x->c, x->done);
    } else {
        x->done++;
    }
    if (x->next < x->goal)
        bench_cl_issue(s);
    if (x->done == x->goal && x->finish) {
        vl_promise_resolve(x->finish, NULL, NULL);
        x->finish = NULL;
    }
}

static void bench_cl_issue(bench_cl_slot *s)
{
    bench_cl *x = s->x;
    const char *argv[BENCH_MAX_ARGS];
    size_t lens[BENCH_MAX_ARGS];
    s->i = x->next++;
    int argc = bench_redis_argv(x->e, x->c->op, s->i, argv, lens, x->store);
    s->t0 = bench_now_us();
    vl_future *f = vl_redis_cluster_command_argv(x->cl, argc, argv, lens);
    if (f == NULL || vl_future_then(f, bench_cl_reply_cb, s) != VL_OK)
        bench_oom("async cluster");
}

/* Keeps the window full until requests 0..n) have completed. Returns 0, or
 * -1 when the loop ended first. */
static int bench_cl_load(bench_cl *x, bench_cl_slot *slots, uint64_t w, uint64_t n)
{
    x->next = x->done = 0;
    x->goal = n;
    vl_future *finished = bench_load_begin(x->loop, &x->finish);
    if (finished == NULL)
        return -1;
    for (uint64_t k = 0; k < w && x->next < x->goal; k++) {
        slots[k].x = x;
        bench_cl_issue(&slots[k]);
    }
    return bench_load_wait(x->loop, &x->finish, finished);
}

vl_future *bench_load_begin(vl_loop *loop, vl_promise **finish)
{
    *finish = vl_promise_new(loop);
    return *finish != NULL ? vl_promise_future(*finish) : NULL;
}

int bench_load_wait(vl_loop *loop, vl_promise **finish, vl_future *finished)
{
    int st = vl_loop_run_until(loop, finished);
    vl_future_free(finished);
    if (*finish != NULL) {
        vl_promise_free(*finish);
        *finish = NULL;
    }
    return st == VL_OK ? 0 : -1;
}

/* ---- cluster-refresh: the two clocks and the refresh chain ---- */

/* libev's poll returned: an iteration starts. */
static void bench_cl_on_acquire(struct ev_loop *l)
{
    bench_cl *x = ev_userdata(l);
    x->iter_t0 = bench_now_us();
    x->iter_cpu0 = bench_thread_cpu_us();
    x->iter_replies = 0;
}

/* libev is about to poll: the iteration ends. */
static void bench_cl_on_release(struct ev_loop *l)
{
    bench_cl *x = ev_userdata(l);
    if (x->iter_t0 != 0) {
        double ms = (double)(bench_now_us() - x->iter_t0) / 1000.0;
        double cpu = (bench_thread_cpu_us() - x->iter_cpu0) / 1000.0;
        if (ms > x->r->iter_max_ms)
            x->r->iter_max_ms = ms;
        if (cpu > x->r->iter_cpu_max_ms)
            x->r->iter_cpu_max_ms = cpu;
        if (x->niters == x->iters_cap) {
            size_t cap = x->iters_cap ? 2 * x->iters_cap : 4096;
            bench_cl_iter *n = realloc(x->iters, cap * sizeof *n);
            if (n == NULL)
                bench_oom("async cluster");
            x->iters = n;
            x->iters_cap = cap;
        }
        x->iters[x->niters].cpu_us = (float)(cpu * 1000.0);
        x->iters[x->niters++].replies = x->iter_replies;
    }
}

static void bench_cl_timer_arm(bench_cl *x);

static void bench_cl_timer_cb(vl_future *f, void *ud)
{
    bench_cl *x = ud;
    (void)f;
    /* How much later than asked the 1 ms sleep ended. */
    uint64_t now = bench_now_us();
    double late = now > x->timer_t0 + 1000 ? (double)(now - x->timer_t0 - 1000) / 1000.0 : 0;
    if (late > x->r->timer_late_ms)
        x->r->timer_late_ms = late;
    if (x->stopping) {
        vl_promise_resolve(x->timer_end, NULL, NULL);
        x->timer_end = NULL;
        return;
    }
    bench_cl_timer_arm(x);
}

static void bench_cl_timer_arm(bench_cl *x)
{
    x->timer_t0 = bench_now_us();
    vl_future *f = vl_loop_sleep(x->loop, 1);
    if (f == NULL || vl_future_then(f, bench_cl_timer_cb, x) != VL_OK)
        bench_oom("async cluster");
}

static void bench_cl_refresh_arm(bench_cl *x);

static void bench_cl_refresh_cb(vl_future *f, void *ud)
{
    bench_cl *x = ud;
    if (vl_future_status(f) == VL_OK) {
        x->r->refreshes++;
    } else {
        bench_fail("async cluster", x->r->refreshes, "refresh", vl_future_error(f));
        x->r->errors++;
    }
    if (x->stopping) {
        vl_promise_resolve(x->refresh_end, NULL, NULL);
        x->refresh_end = NULL;
        return;
    }
    bench_cl_refresh_arm(x);
}

static void bench_cl_refresh_arm(bench_cl *x)
{
    vl_future *f = vl_redis_cluster_refresh(x->cl);
    if (f == NULL || vl_future_then(f, bench_cl_refresh_cb, x) != VL_OK)
        bench_oom("async cluster");
}

/* Starts the clocks (and, for the refreshing row, the refresh chain). */
static int bench_cl_watch_start(bench_cl *x)
{
    struct ev_loop *l = vl_loop_ev(x->loop);
    x->timer_end = vl_promise_new(x->loop);
    if (x->c->refresh)
        x->refresh_end = vl_promise_new(x->loop);
    if (l == NULL || x->timer_end == NULL || (x->c->refresh && x->refresh_end == NULL))
        return -1;
    x->ev_data = ev_userdata(l);
    ev_set_userdata(l, x);
    ev_set_loop_release_cb(l, bench_cl_on_release, bench_cl_on_acquire);
    bench_cl_timer_arm(x);
    if (x->c->refresh)
        bench_cl_refresh_arm(x);
    return 0;
}

static int bench_cl_by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The most CPU time an iteration spent beyond what its replies cost, in
 * ms. With 1000 requests in flight one iteration may handle hundreds of
 * replies, which is work, not a stall; the cost of a reply is the median
 * of CPU time per reply over the iterations that handled at least 16 (so
 * that the few big ones cannot move it), and what an iteration took above
 * its replies times that cost is what something else (a refresh) took. */
static double bench_cl_extra_ms(const bench_cl *x)
{
    size_t n = 0;
    double per = 0, extra = 0;
    double *ratios = malloc((x->niters + 1) * sizeof *ratios);
    if (ratios == NULL)
        return 0;
    for (size_t k = 0; k < x->niters; k++)
        if (x->iters[k].replies >= 16)
            ratios[n++] = x->iters[k].cpu_us / x->iters[k].replies;
    if (n > 0) {
        qsort(ratios, n, sizeof *ratios, bench_cl_by_value);
        per = ratios[n / 2];
    }
    free(ratios);
    for (size_t k = 0; k < x->niters; k++) {
        double e = x->iters[k].cpu_us - per * x->iters[k].replies;
        if (e > extra)
            extra = e;
    }
    return extra / 1000.0;
}

/* Lets the chains end (each at its next completion) and stops the clocks. */
static void bench_cl_watch_stop(bench_cl *x)
{
    struct ev_loop *l = vl_loop_ev(x->loop);
    vl_future *fs[2];
    size_t n = 0;
    x->stopping = 1;
    x->r->iter_extra_ms = bench_cl_extra_ms(x);
    if (x->timer_end)
        fs[n++] = vl_promise_future(x->timer_end);
    if (x->refresh_end)
        fs[n++] = vl_promise_future(x->refresh_end);
    vl_future *all = n ? vl_future_all(x->loop, fs, n) : NULL;
    if (all != NULL) {
        (void)vl_loop_run_until(x->loop, all);
        vl_future_free(all);
    }
    if (x->timer_end)
        vl_promise_free(x->timer_end);
    if (x->refresh_end)
        vl_promise_free(x->refresh_end);
    x->timer_end = x->refresh_end = NULL;
    ev_set_loop_release_cb(l, NULL, NULL);
    ev_set_userdata(l, x->ev_data);
}

/* ---- the runs ---- */

/* A cluster handle on e->cluster_url, ready (the map known, a connection
 * to every primary up) within 10 s; NULL after saying why. */
static vl_redis_cluster *bench_cl_open(vl_loop *loop, const bench_env *e, const bench_case *c)
{
    vl_redis_cluster_options o;
    vl_redis_cluster_options_init(&o);
    if (c != NULL && c->conns > 0)
        o.node_max_size = (size_t)c->conns;
    /* cluster-refresh asks for refreshes back to back. */
    o.refresh_min_interval_ms = 1;
    vl_redis_cluster *cl = vl_redis_cluster_new(loop, e->cluster_url, &o);
    if (cl == NULL)
        return NULL;
    vl_future *up = vl_future_timeout(vl_redis_cluster_ready(cl), 10000);
    int st = up != NULL ? vl_loop_run_until(loop, up) : VL_ENOMEM;
    if (st != VL_OK) {
        fprintf(stderr, "volley-bench: async cluster: %s: %s\n", e->cluster_url,
                up != NULL ? vl_future_error(up) : "out of memory");
        vl_future_free(up);
        vl_redis_cluster_free(cl);
        return NULL;
    }
    vl_future_free(up);
    return cl;
}

int bench_cluster_run(const bench_env *e, const bench_case *c, bench_run *r)
{
    bench_cl x;
    bench_cl_slot *slots = NULL;
    uint64_t w = c->window > 0 ? (uint64_t)c->window : 1;
    int rc = -1;
    memset(&x, 0, sizeof x);
    x.e = e;
    x.c = c;
    x.r = r;
    x.loop = vl_loop_new();
    x.store = malloc(bench_redis_store_size(e));
    slots = calloc((size_t)w, sizeof *slots);
    if (x.loop == NULL || x.store == NULL || slots == NULL)
        goto out;
    x.cl = bench_cl_open(x.loop, e, c);
    if (x.cl == NULL)
        goto out;
    /* One window's worth of requests before the clock: every node's pool
     * opens its connections now, not during the measure. */
    x.warming = 1;
    if (bench_cl_load(&x, slots, w, w) != 0)
        goto out;
    x.warming = 0;
    if (c->kind == BENCH_KIND_LATENCY && bench_cl_watch_start(&x) != 0)
        goto out;
    bench_run_begin(r);
    int st = bench_cl_load(&x, slots, w, c->requests);
    bench_run_end(r);
    if (c->kind == BENCH_KIND_LATENCY)
        bench_cl_watch_stop(&x);
    bench_progress(c, c->requests);
    rc = st;
out:
    vl_redis_cluster_free(x.cl);
    if (x.loop)
        vl_loop_free(x.loop);
    free(x.store);
    free(x.iters);
    free(slots);
    return rc;
}

static vl_future *bench_cl_send(void *h, int argc, const char **argv, const size_t *lens)
{
    return vl_redis_cluster_command_argv(h, argc, argv, lens);
}

int bench_cluster_fill(const bench_env *e, char *why, size_t cap)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_cluster *cl = loop ? bench_cl_open(loop, e, NULL) : NULL;
    int rc = -1;
    snprintf(why, cap, "%s", loop == NULL ? "out of memory" : "the cluster did not become ready");
    if (cl != NULL)
        rc = bench_fill(loop, e, bench_cl_send, cl, why, cap);
    vl_redis_cluster_free(cl);
    if (loop)
        vl_loop_free(loop);
    return rc;
}
