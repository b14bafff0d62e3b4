/* SPDX-License-Identifier: BSD-3-Clause */
/* group.c - the loop-group scenario: a CPU-bound client workload on one
 * loop and on a vl_loop_group, through volley's public API only.
 *
 * Before the run, BENCH_LG_KEYS keys (bench:lg:N) are written to the first
 * Redis server, each holding BENCH_LG_VALUES comma-separated integers. A
 * job GETs every one of them through a vl_redis_pool, parses every reply's
 * integers and aggregates their sum, minimum and maximum, so that most of
 * a job's time is the client's CPU, not the server's. `window` jobs are in
 * flight. In the one-loop row the jobs run on the bench's loop with a pool
 * there; in the group row vl_loop_group_submit hands them to a group of
 * one loop per CPU (vl_loop_group_new with n 0), each worker loop with its
 * own pool (opened by the group's init callback), and a job's aggregate
 * travels back with vl_loop_group_value. Every reply is checked on the loop
 * that parsed it (500 integers whose sum is the key's), and every job's
 * aggregate on the home loop (the sum, minimum and maximum of all keys).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <volley.h>

#include "bench.h"

#define BENCH_LG_KEYS 20
#define BENCH_LG_VALUES 500

/* What every job reads and nobody writes once the run has begun, so the
 * worker threads share it. */
typedef struct bench_lg_spec {
    long long key_sum[BENCH_LG_KEYS]; /* the expected sum of each key */
    long long sum, min, max;          /* over every key */
} bench_lg_spec;

/* A job's result. `bad` counts the replies that were not what their key
 * holds. */
typedef struct bench_lg_agg {
    long long sum, min, max, n, bad;
} bench_lg_agg;

typedef struct bench_lg bench_lg;

typedef struct bench_lg_slot {
    bench_lg *x;
    uint64_t i, t0;
    bench_lg_agg agg; /* the one-loop row's result */
} bench_lg_slot;

struct bench_lg {
    vl_loop *loop;
    vl_redis_pool *pool; /* on the home loop */
    vl_loop_group *g;    /* the group row */
    const bench_case *c;
    bench_run *r;
    bench_lg_spec spec;
    uint64_t next, done, goal;
    int warming;
    vl_promise *finish;
};

/* Element j of key k: spread over 0..1000002, the same on every run. */
static long long bench_lg_element(int k, int j)
{
    return ((long long)k * 7919 + (long long)j * 104729) % 1000003;
}

/* Parses one reply of key k into a; returns 0, or -1 when it is not the
 * key's value. */
static int bench_lg_parse(const bench_lg_spec *s, int k, vl_future *f, bench_lg_agg *a)
{
    const vl_redis_reply *rep = vl_future_status(f) == VL_OK ? vl_future_redis_reply(f) : NULL;
    const char *p = rep != NULL ? vl_redis_reply_str(rep, NULL) : NULL;
    long long sum = 0, n = 0;
    if (p == NULL)
        return -1;
    while (*p != '\0') {
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p)
            return -1;
        sum += v;
        if (a->n + n == 0 || v < a->min)
            a->min = v;
        if (a->n + n == 0 || v > a->max)
            a->max = v;
        n++;
        if (*end == ',')
            end++;
        else if (*end != '\0')
            return -1;
        p = end;
    }
    a->sum += sum;
    a->n += n;
    return n == BENCH_LG_VALUES && sum == s->key_sum[k] ? 0 : -1;
}

static vl_future *bench_lg_resolved(vl_loop *loop)
{
    vl_promise *p = vl_promise_new(loop);
    vl_future *f = p != NULL ? vl_promise_future(p) : NULL;
    if (f != NULL)
        vl_promise_resolve(p, NULL, NULL);
    return f;
}

/* Parses every reply of `all` (the GETs of every key) into a. */
static void bench_lg_sum(const bench_lg_spec *s, vl_future *all, bench_lg_agg *a)
{
    memset(a, 0, sizeof *a);
    for (size_t k = 0; k < vl_future_count(all); k++)
        if (bench_lg_parse(s, (int)k, vl_future_child(all, k), a) != 0)
            a->bad++;
}

/* GET every key through `pool`, on its loop. */
static vl_future *bench_lg_gets(vl_loop *loop, vl_redis_pool *pool)
{
    vl_future *fs[BENCH_LG_KEYS];
    for (int k = 0; k < BENCH_LG_KEYS; k++)
        fs[k] = vl_redis_pool_command(pool, "GET bench:lg:%d", k);
    return vl_future_all(loop, fs, BENCH_LG_KEYS);
}

/* The one-loop row's step: the aggregate goes into the slot. */
static vl_future *bench_lg_step_home(vl_future *all, void *ud)
{
    bench_lg_slot *slot = ud;
    bench_lg_sum(&slot->x->spec, all, &slot->agg);
    return bench_lg_resolved(vl_future_loop(all));
}

/* The group row's step, on a worker loop: the aggregate travels home. */
static vl_future *bench_lg_step_group(vl_future *all, void *ud)
{
    bench_lg_agg *a = malloc(sizeof *a);
    if (a == NULL)
        return NULL;
    bench_lg_sum(ud, all, a);
    vl_future *f = vl_loop_group_value(vl_future_loop(all), a, free);
    if (f == NULL)
        free(a);
    return f;
}

/* The group row's job: loop_ud is that worker loop's pool, arg the spec. */
static vl_future *bench_lg_job(vl_loop *loop, void *loop_ud, void *arg)
{
    return vl_future_chain(bench_lg_gets(loop, loop_ud), bench_lg_step_group, arg);
}

static int bench_lg_open_pool(vl_loop *loop, size_t index, void **loop_ud, void *ud)
{
    (void)index;
    *loop_ud = vl_redis_pool_new(loop, ud, NULL);
    return *loop_ud != NULL ? VL_OK : VL_ENOMEM;
}

static void bench_lg_close_pool(vl_loop *loop, size_t index, void *loop_ud, void *ud)
{
    (void)loop;
    (void)index;
    (void)ud;
    vl_redis_pool_free(loop_ud);
}

static void bench_lg_issue(bench_lg_slot *s);

static void bench_lg_done_cb(vl_future *f, void *ud)
{
    bench_lg_slot *s = ud;
    bench_lg *x = s->x;
    const bench_lg_agg *a = x->g != NULL ? vl_future_value(f) : &s->agg;
    const bench_lg_spec *sp = &x->spec;
    if (vl_future_status(f) != VL_OK || a == NULL) {
        bench_fail("async loop-group", s->i, "job", vl_future_error(f));
        x->r->errors++;
    } else if (a->bad != 0 || a->n != (long long)BENCH_LG_KEYS * BENCH_LG_VALUES ||
               a->sum != sp->sum || a->min != sp->min || a->max != sp->max) {
        bench_fail("async loop-group", s->i, "aggregate",
                   "a reply or the job's sum, minimum or maximum is wrong");
        x->r->errors++;
    }
    if (!x->warming) {
        bench_hist_add(&x->r->hist, bench_now_us() - s->t0);
        x->r->done = ++x->done;
        if ((x->done & 63) == 0)
            bench_progress(x->c, x->done);
    } else {
        x->done++;
    }
    if (x->next < x->goal)
        bench_lg_issue(s);
    if (x->done == x->goal && x->finish) {
        vl_promise_resolve(x->finish, NULL, NULL);
        x->finish = NULL;
    }
}

static void bench_lg_issue(bench_lg_slot *s)
{
    bench_lg *x = s->x;
    vl_future *f;
    s->i = x->next++;
    s->t0 = bench_now_us();
    if (x->g != NULL)
        f = vl_loop_group_submit(x->g, bench_lg_job, &x->spec);
    else
        f = vl_future_chain(bench_lg_gets(x->loop, x->pool), bench_lg_step_home, s);
    if (f == NULL || vl_future_then(f, bench_lg_done_cb, s) != VL_OK)
        bench_oom("loop-group");
}

/* Keeps `w` jobs in flight until jobs 0..n) are done. Returns 0, or -1
 * when the loop ended first. */
static int bench_lg_load(bench_lg *x, bench_lg_slot *slots, uint64_t w, uint64_t n)
{
    x->next = x->done = 0;
    x->goal = n;
    vl_future *finished = bench_load_begin(x->loop, &x->finish);
    if (finished == NULL)
        return -1;
    for (uint64_t k = 0; k < w && x->next < x->goal; k++) {
        slots[k].x = x;
        bench_lg_issue(&slots[k]);
    }
    return bench_load_wait(x->loop, &x->finish, finished);
}

/* Writes the keys through the home pool and fills the spec. Returns 0, or
 * -1 after saying why. */
static int bench_lg_fill(bench_lg *x)
{
    char *val = malloc(BENCH_LG_VALUES * 12);
    if (val == NULL)
        return -1;
    x->spec.sum = 0;
    for (int k = 0; k < BENCH_LG_KEYS; k++) {
        size_t off = 0;
        long long sum = 0;
        for (int j = 0; j < BENCH_LG_VALUES; j++) {
            long long v = bench_lg_element(k, j);
            off += (size_t)sprintf(val + off, "%s%lld", j ? "," : "", v);
            sum += v;
            if ((k == 0 && j == 0) || v < x->spec.min)
                x->spec.min = v;
            if ((k == 0 && j == 0) || v > x->spec.max)
                x->spec.max = v;
        }
        x->spec.key_sum[k] = sum;
        x->spec.sum += sum;
        vl_future *f = vl_future_timeout(vl_redis_pool_command(x->pool, "SET bench:lg:%d %s", k,
                                                               val), 10000);
        int st = f != NULL ? vl_loop_run_until(x->loop, f) : VL_ENOMEM;
        if (st != VL_OK) {
            fprintf(stderr, "volley-bench: loop-group: writing the keys: %s\n",
                    f != NULL ? vl_future_error(f) : "out of memory");
            vl_future_free(f);
            free(val);
            return -1;
        }
        vl_future_free(f);
    }
    free(val);
    return 0;
}

int bench_group_run(const bench_env *e, const bench_case *c, bench_run *r)
{
    bench_lg x;
    char url[600];
    uint64_t w = c->window > 0 ? (uint64_t)c->window : 1;
    bench_lg_slot *slots = calloc((size_t)w, sizeof *slots);
    int rc = -1;
    memset(&x, 0, sizeof x);
    x.c = c;
    x.r = r;
    bench_redis_url(e, 0, bench_redis_port(e, c, 0), url, sizeof url);
    x.loop = vl_loop_new();
    x.pool = x.loop ? vl_redis_pool_new(x.loop, url, NULL) : NULL;
    if (slots == NULL || x.pool == NULL || bench_lg_fill(&x) != 0)
        goto out;
    if (c->loop_group == 2) {
        vl_loop_group_options o;
        vl_loop_group_options_init(&o);
        o.init = bench_lg_open_pool;
        o.fini = bench_lg_close_pool;
        o.ud = url;
        x.g = vl_loop_group_new(x.loop, 0, &o);
        if (x.g == NULL) {
            fprintf(stderr, "volley-bench: loop-group: the group did not start\n");
            goto out;
        }
        r->loops = (int)vl_loop_group_size(x.g);
    } else {
        r->loops = 1;
    }
    /* One window of jobs before the clock: every pool opens its
     * connections now, not during the measure. */
    x.warming = 1;
    if (bench_lg_load(&x, slots, w, w) != 0)
        goto out;
    x.warming = 0;
    bench_run_begin(r);
    int st = bench_lg_load(&x, slots, w, c->requests);
    bench_run_end(r);
    bench_progress(c, c->requests);
    rc = st;
out:
    vl_loop_group_free(x.g);
    vl_redis_pool_free(x.pool);
    if (x.loop)
        vl_loop_free(x.loop);
    free(slots);
    return rc;
}
