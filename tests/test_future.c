/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_future.c - contract tests for the numbered rules of
 * volley/future.h, driven by sleeps (timers) and by promises completed by
 * hand. No server is needed.
 */
#include "testutil.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct rec {
    int calls;
    int status;
    int inside;   /* set while the call that might run the callback runs */
    int ran_inside;
    char msg[128];
} rec;

static void rec_cb(vl_future *f, void *ud)
{
    rec *r = ud;

    r->calls++;
    r->status = vl_future_status(f);
    if (r->inside)
        r->ran_inside = 1;
    snprintf(r->msg, sizeof(r->msg), "%s", vl_future_error(f));
}

static int frees;
static void count_free(void *p)
{
    frees++;
    free(p);
}

/* Rule 1: an error known up front still comes through a future. */
static void rule1_errors_through_future(void **state)
{
    vl_loop *loop = vl_loop_new();
    rec r1 = {0}, r2 = {0}, r3 = {0};
    vl_future *bad[1] = {NULL};
    vl_future *f;

    (void)state;
    f = vl_future_all(loop, bad, 1);
    assert_non_null(f);
    assert_int_equal(vl_future_then(f, rec_cb, &r1), VL_OK);
    f = vl_loop_run_in_thread(loop, NULL, NULL, NULL);
    assert_non_null(f);
    assert_int_equal(vl_future_then(f, rec_cb, &r2), VL_OK);
    f = vl_future_any(loop, NULL, 0);
    assert_non_null(f);
    assert_int_equal(vl_future_then(f, rec_cb, &r3), VL_OK);
    assert_int_equal(r1.calls + r2.calls + r3.calls, 0);
    vl_loop_run(loop);
    assert_int_equal(r1.calls, 1);
    assert_int_equal(r1.status, VL_EINVAL);
    assert_non_null(strstr(r1.msg, "input 0"));
    assert_int_equal(r2.calls, 1);
    assert_int_equal(r2.status, VL_EINVAL);
    assert_int_equal(r3.calls, 1);
    assert_int_equal(r3.status, VL_EINVAL);
    tu_loop_finish(loop);
}

/* Rule 2: never inside the creating call nor inside then; exactly once. */
static void rule2_callback_from_loop_once(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_promise *p = vl_promise_new(loop);
    vl_future *f = vl_promise_future(p);
    rec r = {0};
    int *v = malloc(sizeof(int));

    (void)state;
    *v = 42;
    assert_int_equal(vl_promise_resolve(p, v, count_free), VL_OK);
    assert_true(vl_future_done(f));
    assert_int_equal(vl_future_status(f), VL_OK);
    /* Attached after completion: still runs from the loop, not from then. */
    r.inside = 1;
    assert_int_equal(vl_future_then(f, rec_cb, &r), VL_OK);
    r.inside = 0;
    assert_int_equal(r.calls, 0);
    assert_true(vl_loop_alive(loop) > 0); /* the callback is owed */
    frees = 0;
    vl_loop_run(loop);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.ran_inside, 0);
    assert_int_equal(frees, 1); /* the value went with the consumed future */
    vl_loop_run(loop);
    assert_int_equal(r.calls, 1);
    tu_loop_finish(loop);
}

static void take_cb(vl_future *f, void *ud)
{
    *(int **)ud = vl_future_take(f);
}

/* Rule 3: then consumes; a second then is refused; take keeps the value. */
static void rule3_then_consumes(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_promise *p = vl_promise_new(loop);
    vl_future *f = vl_promise_future(p);
    int *kept = NULL;
    int *v = malloc(sizeof(int));
    rec r = {0};

    (void)state;
    *v = 7;
    assert_int_equal(vl_future_then(f, take_cb, &kept), VL_OK);
    assert_int_equal(vl_future_then(f, rec_cb, &r), VL_EINVAL);
    assert_int_equal(vl_future_then(NULL, rec_cb, &r), VL_EINVAL);
    assert_null(vl_promise_future(p)); /* only once */
    frees = 0;
    vl_promise_resolve(p, v, count_free);
    vl_loop_run(loop);
    assert_non_null(kept);
    assert_int_equal(*kept, 7);
    assert_int_equal(frees, 0);
    assert_int_equal(r.calls, 0);
    count_free(kept);
    tu_loop_finish(loop);
}

/* Rule 4: cancel before completion delivers VL_ECANCELED once; after
 * completion it does nothing. */
static void rule4_cancel_before_and_after(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_future *a = vl_loop_sleep(loop, 1000);
    vl_future *b = vl_loop_sleep(loop, 1);
    rec ra = {0};

    (void)state;
    assert_int_equal(vl_future_then(a, rec_cb, &ra), VL_OK);
    assert_int_equal(vl_future_cancel(a), 1);
    assert_int_equal(vl_future_cancel(a), 0);
    assert_int_equal(ra.calls, 0); /* not inside cancel either */
    assert_int_equal(vl_loop_run_until(loop, b), VL_OK);
    assert_int_equal(vl_future_cancel(b), 0);
    assert_int_equal(vl_future_status(b), VL_OK);
    vl_future_free(b);
    vl_loop_run(loop);
    assert_int_equal(ra.calls, 1);
    assert_int_equal(ra.status, VL_ECANCELED);
    tu_loop_finish(loop);
}

/* Rule 4: freeing the owner (here the loop, and a promise) completes every
 * pending future with VL_ECANCELED. */
static void rule4_free_owner_cancels(void **state)
{
    vl_loop *loop = vl_loop_new();
    rec r[3];
    vl_promise *p = vl_promise_new(loop);
    vl_promise *q = vl_promise_new(loop);

    (void)state;
    memset(r, 0, sizeof(r));
    vl_future_then(vl_loop_sleep(loop, 60000), rec_cb, &r[0]);
    vl_future_then(vl_promise_future(p), rec_cb, &r[1]);
    vl_future_then(vl_promise_future(q), rec_cb, &r[2]);
    vl_promise_free(q);
    vl_loop_free(loop); /* runs the owed callbacks before returning */
    assert_int_equal(r[0].calls, 1);
    assert_int_equal(r[0].status, VL_ECANCELED);
    assert_int_equal(r[1].calls, 1);
    assert_int_equal(r[1].status, VL_ECANCELED);
    assert_int_equal(r[2].calls, 1);
    assert_int_equal(r[2].status, VL_ECANCELED);
    assert_true(vl_promise_abandoned(p));
    assert_int_equal(vl_promise_resolve(p, NULL, NULL), VL_ECANCELED);
    assert_int_equal(tu_alloc_live(), 0);
}

typedef struct freer {
    vl_loop *loop;
    vl_future *other;
    int calls;
} freer;

static void free_things_cb(vl_future *f, void *ud)
{
    freer *fr = ud;

    fr->calls++;
    vl_future_free(f);        /* its own future: deferred until return */
    vl_future_free(fr->other); /* a pending one: cancelled */
    vl_loop_free(fr->loop);   /* the loop itself: at the next safe point */
    assert_int_equal(vl_future_status(f), VL_OK); /* still readable */
}

/* Rule 5: freeing anything from inside a callback is safe. */
static void rule5_free_inside_callback(void **state)
{
    vl_loop *loop = vl_loop_new();
    freer fr = {loop, NULL, 0};
    vl_future *f = vl_loop_sleep(loop, 1);

    (void)state;
    fr.other = vl_loop_sleep(loop, 60000);
    vl_future_then(f, free_things_cb, &fr);
    assert_int_equal(vl_loop_run(loop), VL_ECLOSED); /* the loop is gone */
    assert_int_equal(fr.calls, 1);
    assert_int_equal(tu_alloc_live(), 0);
}

/* Gather 10,000 futures: results in input order, first error reported,
 * every other result kept. */
static void gather_ten_thousand(void **state)
{
    enum { N = 10000 };
    vl_loop *loop = vl_loop_new();
    vl_future **fs = malloc(N * sizeof(*fs));
    vl_promise **ps = malloc(N * sizeof(*ps));
    vl_future *all;
    size_t i;

    (void)state;
    for (i = 0; i < N; i++) {
        if (i % 3 == 0) {
            fs[i] = vl_loop_sleep(loop, (uint64_t)(i % 7));
            ps[i] = NULL;
        } else {
            ps[i] = vl_promise_new(loop);
            fs[i] = vl_promise_future(ps[i]);
        }
    }
    all = vl_future_all(loop, fs, N);
    assert_non_null(all);
    /* Resolve in reverse order, failing two: 9998 fails first in time. */
    for (i = N; i-- > 0;) {
        if (ps[i] == NULL)
            continue;
        if (i == 9998 || i == 5000) {
            vl_promise_fail(ps[i], VL_ESERVER, i == 9998 ? "boom 9998" : "boom 5000");
        } else {
            size_t *v = malloc(sizeof(*v));
            *v = i;
            vl_promise_resolve(ps[i], v, free);
        }
    }
    assert_int_equal(vl_loop_run_until(loop, all), VL_ESERVER);
    assert_non_null(strstr(vl_future_error(all), "item 9998: boom 9998"));
    assert_int_equal(vl_future_count(all), N);
    for (i = 0; i < N; i++) {
        vl_future *k = vl_future_child(all, i);
        assert_true(vl_future_done(k));
        if (i == 9998 || i == 5000) {
            assert_int_equal(vl_future_status(k), VL_ESERVER);
        } else {
            assert_int_equal(vl_future_status(k), VL_OK);
            if (ps[i] != NULL)
                assert_int_equal(*(size_t *)vl_future_value(k), i);
        }
    }
    vl_future_free(all);
    free(fs);
    free(ps);
    tu_loop_finish(loop);
}

/* Any: the first to complete wins, the others are cancelled. */
static void any_first_completed(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_future *fs[3];
    vl_future *any;

    (void)state;
    fs[0] = vl_loop_sleep(loop, 500);
    fs[1] = vl_loop_sleep(loop, 5);
    fs[2] = vl_loop_sleep(loop, 300);
    any = vl_future_any(loop, fs, 3);
    assert_int_equal(vl_loop_run_until(loop, any), VL_OK);
    assert_int_equal(vl_future_index(any), 1);
    vl_loop_run(loop); /* the losers' cancellations are delivered */
    assert_int_equal(vl_future_status(vl_future_child(any, 0)), VL_ECANCELED);
    assert_int_equal(vl_future_status(vl_future_child(any, 2)), VL_ECANCELED);
    vl_future_free(any);
    tu_loop_finish(loop);
}

/* A timeout that fires cancels the operation; one that does not fire leaves
 * no timer behind. */
static void timeout_fires_and_not(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_future *slow = vl_future_timeout(vl_loop_sleep(loop, 60000), 10);
    vl_future *fast = vl_future_timeout(vl_loop_sleep(loop, 1), 60000);
    vl_future *pair[2];
    vl_future *all;

    (void)state;
    pair[0] = slow;
    pair[1] = fast;
    all = vl_future_all(loop, pair, 2);
    assert_int_equal(vl_loop_run_until(loop, all), VL_ETIMEDOUT);
    assert_int_equal(vl_future_status(vl_future_child(all, 0)), VL_ETIMEDOUT);
    assert_int_equal(vl_future_status(vl_future_child(all, 1)), VL_OK);
    assert_non_null(strstr(vl_future_error(all), "item 0"));
    vl_future_free(all);
    /* The 60 s sleep and the 60 s deadline are gone: the loop is empty. */
    tu_loop_finish(loop);
}

/* A deadline on a gather cancels what is still pending in it. */
static void timeout_on_gather(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_future *fs[2];
    vl_future *all;

    (void)state;
    fs[0] = vl_loop_sleep(loop, 1);
    fs[1] = vl_loop_sleep(loop, 60000);
    all = vl_future_timeout(vl_future_all(loop, fs, 2), 30);
    assert_int_equal(vl_loop_run_until(loop, all), VL_ETIMEDOUT);
    vl_loop_run(loop);
    assert_int_equal(vl_future_status(vl_future_child(all, 0)), VL_OK);
    assert_int_equal(vl_future_status(vl_future_child(all, 1)), VL_ETIMEDOUT);
    vl_future_free(all);
    tu_loop_finish(loop);
}

/* Nested: a gather of gathers and an any inside. */
static void nested_combinators(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_future *inner[2], *outer[2], *any2[2];
    vl_future *all;

    (void)state;
    inner[0] = vl_loop_sleep(loop, 2);
    inner[1] = vl_loop_sleep(loop, 3);
    any2[0] = vl_loop_sleep(loop, 50000);
    any2[1] = vl_loop_sleep(loop, 1);
    outer[0] = vl_future_all(loop, inner, 2);
    outer[1] = vl_future_any(loop, any2, 2);
    all = vl_future_all(loop, outer, 2);
    assert_int_equal(vl_loop_run_until(loop, all), VL_OK);
    assert_int_equal(vl_future_index(vl_future_child(all, 1)), 1);
    vl_loop_run(loop);
    vl_future_free(all);
    tu_loop_finish(loop);
}

/* Freeing an unconsumed pending future cancels its operation. */
static void free_pending_future(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_future *f = vl_loop_sleep(loop, 60000);
    vl_future *fs[2];

    (void)state;
    assert_true(vl_loop_alive(loop) > 0);
    vl_future_free(f);
    assert_int_equal(vl_loop_alive(loop), 0);
    fs[0] = vl_loop_sleep(loop, 60000);
    fs[1] = vl_loop_sleep(loop, 60000);
    vl_future_free(vl_future_all(loop, fs, 2));
    vl_loop_run(loop);
    tu_loop_finish(loop);
}

/* run_until refuses a future that nothing can complete. */
static void run_until_deadlock(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_promise *p = vl_promise_new(loop);
    vl_future *f = vl_promise_future(p);

    (void)state;
    assert_int_equal(vl_loop_run_until(loop, f), VL_ESTATE);
    assert_false(vl_future_done(f));
    vl_promise_fail(p, VL_ESERVER, "late");
    assert_int_equal(vl_loop_run_until(loop, f), VL_ESERVER);
    assert_string_equal(vl_future_error(f), "late");
    vl_future_free(f);
    tu_loop_finish(loop);
}

static void *work_square(void *ud)
{
    long *v = malloc(sizeof(*v));

    usleep(2000);
    *v = (long)(intptr_t)ud * (long)(intptr_t)ud;
    return v;
}

/* run_in_thread: results come back on the loop thread, in their futures. */
static void run_in_thread_results(void **state)
{
    enum { N = 32 };
    vl_loop *loop = vl_loop_new();
    vl_future *fs[N];
    vl_future *all;
    long i;

    (void)state;
    assert_int_equal(vl_loop_set_threads(loop, 3), VL_OK);
    for (i = 0; i < N; i++)
        fs[i] = vl_loop_run_in_thread(loop, work_square, (void *)(intptr_t)i, free);
    all = vl_future_all(loop, fs, N);
    assert_int_equal(vl_loop_run_until(loop, all), VL_OK);
    for (i = 0; i < N; i++)
        assert_int_equal(*(long *)vl_future_value(vl_future_child(all, (size_t)i)), i * i);
    vl_future_free(all);
    /* A cancelled job still runs; its result is freed, not leaked. */
    fs[0] = vl_loop_run_in_thread(loop, work_square, (void *)(intptr_t)3, free);
    assert_int_equal(vl_future_cancel(fs[0]), 1);
    vl_future_free(fs[0]);
    vl_loop_run(loop);
    tu_loop_finish(loop);
}

static void ev_cb_stop(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(ev, EVBREAK_ALL);
}

/* Bring your own libev loop: volley's callbacks run from the caller's ev_run. */
static void byo_ev_loop(void **state)
{
    struct ev_loop *ev = ev_loop_new(EVFLAG_AUTO);
    vl_loop *loop = vl_loop_wrap(ev);
    ev_timer guard;
    rec r = {0};

    (void)state;
    assert_ptr_equal(vl_loop_ev(loop), ev);
    vl_future_then(vl_loop_sleep(loop, 2), rec_cb, &r);
    ev_timer_init(&guard, ev_cb_stop, 5.0, 0.);
    ev_timer_start(ev, &guard);
    ev_unref(ev); /* the guard alone must not keep ev_run going */
    ev_run(ev, 0);
    ev_ref(ev);
    ev_timer_stop(ev, &guard);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, VL_OK);
    tu_loop_finish(loop);
    ev_loop_destroy(ev); /* volley never frees the caller's loop */
}

/* run_until refuses a future it does not own: one given to then. */
static void run_until_consumed(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_future *f = vl_loop_sleep(loop, 1);
    rec r = {0};

    (void)state;
    vl_future_then(f, rec_cb, &r);
    assert_int_equal(vl_loop_run_until(loop, f), VL_EINVAL);
    vl_loop_run(loop);
    assert_int_equal(r.calls, 1);
    tu_loop_finish(loop);
}

/* The same future twice in one gather is refused, and freed once. */
static void duplicate_inputs(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_future *a = vl_loop_sleep(loop, 60000);
    vl_future *b = vl_loop_sleep(loop, 60000);
    vl_future *fs[3];
    vl_future *all;

    (void)state;
    fs[0] = a;
    fs[1] = b;
    fs[2] = a;
    all = vl_future_all(loop, fs, 3);
    assert_int_equal(vl_loop_run_until(loop, all), VL_EINVAL);
    assert_non_null(strstr(vl_future_error(all), "input 2"));
    vl_future_free(all);
    tu_loop_finish(loop); /* both sleeps were freed: no watcher left */
}

static void promise_in_teardown_cb(vl_future *f, void *ud)
{
    vl_promise *p = vl_promise_new(vl_future_loop(f));

    (void)ud;
    assert_non_null(p);
    assert_true(vl_promise_abandoned(p)); /* the loop is closing */
    vl_promise_free(p);
}

/* A promise made and dropped by a callback that the loop's teardown runs. */
static void promise_during_teardown(void **state)
{
    vl_loop *loop = vl_loop_new();

    (void)state;
    vl_future_then(vl_loop_sleep(loop, 60000), promise_in_teardown_cb, NULL);
    vl_loop_free(loop);
    assert_int_equal(tu_alloc_live(), 0);
}

static void *work_slow(void *ud)
{
    (void)ud;
    usleep(200000);
    return malloc(16);
}

/* Freeing the loop while a job runs does not wait for it: its future
 * completes with VL_ECANCELED and the worker drops the result later. */
static void loop_free_with_running_job(void **state)
{
    vl_loop *loop = vl_loop_new();
    rec r = {0};
    vl_future *guard;

    (void)state;
    vl_future_then(vl_loop_run_in_thread(loop, work_slow, NULL, free), rec_cb, &r);
    guard = vl_loop_sleep(loop, 20); /* let the worker pick the job up */
    vl_loop_run_until(loop, guard);
    vl_future_free(guard);
    vl_loop_free(loop);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, VL_ECANCELED);
    assert_int_equal(tu_alloc_live(), 0);
    usleep(300000); /* the detached worker finishes and cleans up */
}

/* Every allocation failure is reported, never a crash or a leak. */
static void out_of_memory_everywhere(void **state)
{
    long n;
    int saw_success = 0;

    (void)state;
    for (n = 1; n < 200 && !saw_success; n++) {
        vl_loop *loop;
        vl_future *fs[3];
        vl_future *all;
        vl_promise *p;
        int rc;

        tu_alloc_fail_at(n);
        loop = vl_loop_new();
        if (loop == NULL) {
            assert_int_equal(tu_alloc_live(), 0);
            continue;
        }
        fs[0] = vl_future_timeout(vl_loop_sleep(loop, 1), 1000);
        fs[1] = vl_loop_sleep(loop, 2);
        p = vl_promise_new(loop);
        fs[2] = vl_promise_future(p); /* NULL if OOM */
        all = vl_future_all(loop, fs, 3);
        if (all == NULL) {
            vl_loop_free(loop);
            vl_promise_free(p);
            assert_int_equal(tu_alloc_live(), 0);
            continue;
        }
        rc = vl_loop_run_until(loop, all);
        /* Either a clean failure or, with the promise pending, no progress. */
        assert_true(rc == VL_EINVAL || rc == VL_ENOMEM || rc == VL_ESTATE || rc == VL_OK);
        if (rc == VL_ESTATE)
            saw_success = 1; /* everything allocated: the promise keeps it open */
        vl_future_free(all);
        vl_loop_free(loop);
        vl_promise_free(p);
        assert_int_equal(tu_alloc_live(), 0);
    }
    tu_alloc_fail_at(0);
    assert_true(saw_success);
}

/* Rule 1, NULL handles: calls that return a future give NULL (there is no
 * loop to deliver on), int calls VL_EINVAL, void calls nothing, in every
 * part of the API. */
static void rule1_null_handles(void **state)
{
    vl_redis_pool_options ro;
    vl_pool_stats st;

    (void)state;
    assert_null(vl_loop_sleep(NULL, 1));
    assert_null(vl_loop_run_in_thread(NULL, NULL, NULL, NULL));
    assert_null(vl_promise_new(NULL));
    assert_int_equal(vl_loop_run(NULL), VL_EINVAL);
    assert_int_equal(vl_loop_run_until(NULL, NULL), VL_EINVAL);
    assert_int_equal(vl_loop_set_threads(NULL, 1), VL_EINVAL);
    assert_null(vl_redis_command(NULL, "PING"));
    assert_null(vl_redis_ready(NULL));
    assert_null(vl_redis_pool_command(NULL, "PING"));
    assert_null(vl_redis_pool_ready(NULL));
    assert_null(vl_redis_pool_lease(NULL));
    assert_null(vl_redis_lease_command(NULL, "PING"));
    assert_null(vl_mysql_query(NULL, "SELECT 1"));
    assert_null(vl_mysql_ready(NULL));
    assert_null(vl_mysql_pool_query(NULL, "SELECT 1"));
    assert_null(vl_mysql_pool_ready(NULL));
    assert_null(vl_mysql_pool_begin(NULL));
    assert_null(vl_mysql_tx_query(NULL, "SELECT 1"));
    vl_pool_stats_init(&st);
    assert_int_equal(vl_redis_pool_stats_get(NULL, &st), VL_EINVAL);
    assert_int_equal(vl_mysql_pool_stats_get(NULL, &st), VL_EINVAL);
    vl_redis_pool_options_init(&ro);
    assert_null(vl_redis_pool_new(NULL, "redis://127.0.0.1:1", &ro));
    assert_null(vl_redis_new(NULL, "redis://127.0.0.1:1", NULL));
    assert_null(vl_mysql_new(NULL, "mysql://u@127.0.0.1:1/d", NULL));
    assert_null(vl_mysql_pool_new(NULL, "mysql://u@127.0.0.1:1/d", NULL));
    vl_redis_free(NULL);
    vl_redis_pool_free(NULL);
    vl_mysql_free(NULL);
    vl_mysql_pool_free(NULL);
    vl_mysql_tx_free(NULL);
    vl_future_free(NULL);
    vl_loop_free(NULL);
    assert_int_equal(tu_alloc_live(), 0);
}

/* ---- chains (vl_future_chain) ---- */

typedef struct steps {
    vl_loop *loop;
    char log[16];
    int in_chain_call; /* set around vl_future_chain */
    int ran_inside;
    vl_promise *held; /* a step's pending future, completed by the test */
    int held_rc;
} steps;

static void steps_log(steps *s, char c)
{
    size_t n = strlen(s->log);

    if (s->in_chain_call)
        s->ran_inside = 1;
    if (n + 1 < sizeof(s->log))
        s->log[n] = c;
}

static vl_future *resolved_int(vl_loop *loop, int v)
{
    vl_promise *p = vl_promise_new(loop);
    vl_future *f = vl_promise_future(p);
    int *box = malloc(sizeof(*box));

    assert_non_null(box);
    *box = v;
    assert_int_equal(vl_promise_resolve(p, box, count_free), VL_OK);
    return f;
}

static vl_future *step_one(vl_future *done, void *ud)
{
    steps *s = ud;

    assert_int_equal(vl_future_status(done), VL_OK);
    steps_log(s, '1');
    return resolved_int(s->loop, 41);
}

static vl_future *step_two(vl_future *done, void *ud)
{
    steps *s = ud;
    int *v = vl_future_value(done);

    assert_non_null(v);
    assert_int_equal(*v, 41);
    steps_log(s, '2');
    return resolved_int(s->loop, *v + 1);
}

static vl_future *step_never(vl_future *done, void *ud)
{
    (void)done;
    steps_log(ud, 'X');
    return NULL;
}

static vl_future *step_hold(vl_future *done, void *ud)
{
    steps *s = ud;

    (void)done;
    steps_log(s, 'H');
    s->held = vl_promise_new(s->loop);
    return vl_promise_future(s->held);
}

static vl_future *step_null(vl_future *done, void *ud)
{
    (void)done;
    steps_log(ud, 'N');
    return NULL;
}

static vl_future *step_consumed(vl_future *done, void *ud)
{
    (void)ud;
    return done; /* borrowed and consumed already: the chain must refuse it */
}

static void value_cb(vl_future *f, void *ud)
{
    int *out = ud;
    int *v = vl_future_value(f);

    *out = vl_future_status(f) == VL_OK && v != NULL ? *v : vl_future_status(f);
}

/* Steps run in order, from the loop (never inside vl_future_chain, even when
 * the input is already done), each reading the value of the one before; the
 * chain's future carries the last step's value. */
static void chain_runs_steps_in_order(void **state)
{
    vl_loop *loop = vl_loop_new();
    steps s;
    vl_future *g;
    int out = 0;

    (void)state;
    memset(&s, 0, sizeof(s));
    s.loop = loop;
    frees = 0;
    s.in_chain_call = 1;
    g = vl_future_chain(vl_future_chain(resolved_int(loop, 0), step_one, &s), step_two, &s);
    s.in_chain_call = 0;
    assert_non_null(g);
    assert_string_equal(s.log, "");
    assert_int_equal(vl_future_then(g, value_cb, &out), VL_OK);
    assert_int_equal(vl_loop_run(loop), VL_OK);
    assert_string_equal(s.log, "12");
    assert_int_equal(s.ran_inside, 0);
    assert_int_equal(out, 42);
    assert_int_equal(frees, 3); /* every value freed once, none leaked */
    tu_finish(loop);
}

/* A failed step skips the rest; the chain fails with its status and message. */
static void chain_failure_skips_steps(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_promise *p = vl_promise_new(loop);
    steps s;
    rec r = {0};

    (void)state;
    memset(&s, 0, sizeof(s));
    s.loop = loop;
    assert_int_equal(vl_future_then(vl_future_chain(vl_future_chain(vl_promise_future(p),
                                                                    step_never, &s),
                                                    step_never, &s),
                                    rec_cb, &r),
                     VL_OK);
    assert_int_equal(vl_promise_fail(p, VL_ESERVER, "ERR boom"), VL_OK);
    assert_int_equal(vl_loop_run(loop), VL_OK);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, VL_ESERVER);
    assert_string_equal(r.msg, "ERR boom");
    assert_string_equal(s.log, "");
    tu_finish(loop);
}

static void held_started(vl_future *f, void *ud)
{
    (void)f;
    (void)ud;
}

/* Cancelling the chain cancels the step pending under it, and the steps
 * after it never run. */
static void chain_cancel_flows_down(void **state)
{
    vl_loop *loop = vl_loop_new();
    steps s;
    rec r = {0};
    vl_future *g;

    (void)state;
    memset(&s, 0, sizeof(s));
    s.loop = loop;
    g = vl_future_chain(vl_future_chain(vl_loop_sleep(loop, 1), step_hold, &s), step_never, &s);
    assert_int_equal(vl_future_then(g, rec_cb, &r), VL_OK);
    while (s.held == NULL)
        tu_sleep_ms(loop, 1);
    assert_int_equal(vl_future_cancel(g), 1);
    assert_int_equal(vl_promise_resolve(s.held, NULL, NULL), VL_ECANCELED);
    vl_future_then(vl_loop_sleep(loop, 1), held_started, NULL);
    assert_int_equal(vl_loop_run(loop), VL_OK);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, VL_ECANCELED);
    assert_string_equal(s.log, "H");
    tu_finish(loop);
}

/* A deadline on the chain cancels the pending step the same way. */
static void chain_timeout_flows_down(void **state)
{
    vl_loop *loop = vl_loop_new();
    steps s;
    rec r = {0};

    (void)state;
    memset(&s, 0, sizeof(s));
    s.loop = loop;
    assert_int_equal(
        vl_future_then(vl_future_timeout(vl_future_chain(vl_future_chain(vl_loop_sleep(loop, 1),
                                                                         step_hold, &s),
                                                         step_never, &s),
                                         30),
                       rec_cb, &r),
        VL_OK);
    assert_int_equal(vl_loop_run(loop), VL_OK);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, VL_ETIMEDOUT);
    assert_non_null(s.held);
    assert_int_equal(vl_promise_resolve(s.held, NULL, NULL), VL_ECANCELED);
    assert_string_equal(s.log, "H");
    tu_finish(loop);
}

/* A step that returns NULL (out of memory) or a future it does not own
 * fails the chain instead of hanging it. */
static void chain_bad_steps(void **state)
{
    vl_loop *loop = vl_loop_new();
    steps s;
    rec r1 = {0}, r2 = {0}, r3 = {0}, r4 = {0};
    vl_future *consumed = vl_loop_sleep(loop, 1);

    (void)state;
    memset(&s, 0, sizeof(s));
    s.loop = loop;
    assert_int_equal(vl_future_then(vl_future_chain(vl_loop_sleep(loop, 1), step_null, &s),
                                    rec_cb, &r1), VL_OK);
    assert_int_equal(vl_future_then(vl_future_chain(vl_loop_sleep(loop, 1), step_consumed, &s),
                                    rec_cb, &r2), VL_OK);
    assert_int_equal(vl_future_then(vl_future_chain(vl_loop_sleep(loop, 1), NULL, &s),
                                    rec_cb, &r3), VL_OK);
    assert_int_equal(vl_future_then(consumed, held_started, NULL), VL_OK);
    assert_int_equal(vl_future_then(vl_future_chain(consumed, step_never, &s), rec_cb, &r4),
                     VL_OK);
    assert_null(vl_future_chain(NULL, step_never, &s));
    assert_int_equal(vl_loop_run(loop), VL_OK);
    assert_int_equal(r1.calls, 1);
    assert_int_equal(r1.status, VL_ENOMEM);
    assert_int_equal(r2.calls, 1);
    assert_int_equal(r2.status, VL_EINVAL);
    assert_int_equal(r3.calls, 1);
    assert_int_equal(r3.status, VL_EINVAL);
    assert_int_equal(r4.calls, 1);
    assert_int_equal(r4.status, VL_EINVAL);
    assert_string_equal(s.log, "N");
    tu_finish(loop);
}

/* Freeing the loop mid-chain completes the chain once with VL_ECANCELED. */
static void chain_loop_freed(void **state)
{
    vl_loop *loop = vl_loop_new();
    steps s;
    rec r = {0};

    (void)state;
    memset(&s, 0, sizeof(s));
    s.loop = loop;
    assert_int_equal(vl_future_then(vl_future_chain(vl_loop_sleep(loop, 10000), step_never, &s),
                                    rec_cb, &r), VL_OK);
    tu_sleep_ms(loop, 2);
    vl_loop_free(loop);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, VL_ECANCELED);
    assert_string_equal(s.log, "");
    assert_int_equal(tu_alloc_live(), 0);
}

/* Out of memory at every allocation of a two-step chain: either the chain
 * call returns NULL with nothing leaked, or its callback runs exactly once. */
static void chain_out_of_memory(void **state)
{
    long n;
    int complete = 0;

    (void)state;
    for (n = 1; n < 200 && !complete; n++) {
        vl_loop *loop;
        steps s;
        rec r = {0};
        vl_future *g;

        memset(&s, 0, sizeof(s));
        tu_alloc_fail_at(n);
        loop = vl_loop_new();
        if (loop == NULL) {
            assert_int_equal(tu_alloc_live(), 0);
            continue;
        }
        s.loop = loop;
        g = vl_future_chain(vl_future_chain(vl_loop_sleep(loop, 1), step_hold, &s), step_never, &s);
        if (g == NULL || vl_future_then(g, rec_cb, &r) != VL_OK) {
            vl_future_free(g);
            vl_loop_free(loop);
            assert_int_equal(tu_alloc_live(), 0);
            continue;
        }
        /* Runs until the step holds its promise (or the chain failed): a
         * pending promise keeps no watcher, so the loop then returns. */
        assert_int_equal(vl_loop_run(loop), VL_OK);
        if (s.held != NULL)
            vl_promise_fail(s.held, VL_ESERVER, "held");
        assert_int_equal(vl_loop_run(loop), VL_OK);
        assert_int_equal(r.calls, 1);
        complete = r.status == VL_ESERVER && strcmp(r.msg, "held") == 0;
        /* Short of memory the message may be lost; the status never is. */
        if (!complete)
            assert_true(r.status == VL_ENOMEM || r.status == VL_ESERVER);
        tu_alloc_fail_at(0);
        tu_loop_finish(loop);
    }
    assert_true(complete);
}

static void child_msg_cb(vl_future *f, void *ud)
{
    char *out = ud;

    snprintf(out, 128, "%s", vl_future_error(vl_future_child(f, 1)));
}

/* A deadline's message names what timed out and after how long; a gather's
 * names the item, and a gather's own deadline says so in each child. */
static void timeout_messages_name_what(void **state)
{
    vl_loop *loop = vl_loop_new();
    rec r1 = {0}, r2 = {0}, r3 = {0};
    char child[128] = "";
    vl_future *fs[2];

    (void)state;
    vl_future_then(vl_future_timeout(vl_loop_sleep(loop, 5000), 20), rec_cb, &r1);
    fs[0] = vl_loop_sleep(loop, 1);
    fs[1] = vl_future_timeout(vl_loop_sleep(loop, 5000), 20);
    vl_future_then(vl_future_all(loop, fs, 2), rec_cb, &r2);
    fs[0] = vl_loop_sleep(loop, 1);
    fs[1] = vl_loop_sleep(loop, 5000);
    vl_future_then(vl_future_timeout(vl_future_all(loop, fs, 2), 20), rec_cb, &r3);
    fs[0] = vl_loop_sleep(loop, 1);
    fs[1] = vl_loop_sleep(loop, 5000);
    vl_future_then(vl_future_timeout(vl_future_all(loop, fs, 2), 20), child_msg_cb, child);
    assert_int_equal(vl_loop_run(loop), VL_OK);
    assert_string_equal(r1.msg, "sleep of 5000 ms: timed out after 20 ms");
    assert_string_equal(r2.msg, "item 1: sleep of 5000 ms: timed out after 20 ms");
    assert_string_equal(r3.msg, "gather of 2 (1 pending): timed out after 20 ms");
    assert_string_equal(child, "sleep of 5000 ms: timed out with the group's deadline");
    tu_finish(loop);
}

static int slow_done;   /* set by the worker when it returns */
static int slow_freed;  /* set when its result is freed */

static void *work_slow_ptr(void *ud)
{
    int *r = malloc(sizeof(*r));

    (void)ud;
    usleep(300 * 1000);
    __atomic_store_n(&slow_done, 1, __ATOMIC_RELEASE);
    return r;
}

static void free_slow(void *v)
{
    free(v);
    slow_freed++;
}

/* A job nobody waits for any more (its future cancelled) does not keep
 * vl_loop_run running; its result is still freed, once, when it comes back
 * while the loop runs. */
static void cancelled_job_lets_loop_return(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_future *f, *keep;

    (void)state;
    slow_done = slow_freed = 0;
    f = vl_loop_run_in_thread(loop, work_slow_ptr, NULL, free_slow);
    assert_non_null(f);
    vl_future_cancel(f);
    vl_loop_run(loop); /* returns at once: only the cancelled job is left */
    assert_int_equal(__atomic_load_n(&slow_done, __ATOMIC_ACQUIRE), 0);
    assert_int_equal(vl_future_status(f), VL_ECANCELED);
    vl_future_free(f);
    /* A job someone waits for holds the loop again, and meanwhile the
     * cancelled one comes back and is freed. */
    keep = vl_loop_run_in_thread(loop, work_slow_ptr, NULL, free_slow);
    assert_int_equal(vl_loop_run_until(loop, keep), VL_OK);
    while (slow_freed < 1)
        tu_sleep_ms(loop, 10);
    vl_future_free(keep); /* frees the second result */
    assert_int_equal(slow_freed, 2);
    tu_finish(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(rule1_errors_through_future, tu_setup),
        cmocka_unit_test_setup(rule2_callback_from_loop_once, tu_setup),
        cmocka_unit_test_setup(rule3_then_consumes, tu_setup),
        cmocka_unit_test_setup(rule4_cancel_before_and_after, tu_setup),
        cmocka_unit_test_setup(rule4_free_owner_cancels, tu_setup),
        cmocka_unit_test_setup(rule5_free_inside_callback, tu_setup),
        cmocka_unit_test_setup(gather_ten_thousand, tu_setup),
        cmocka_unit_test_setup(any_first_completed, tu_setup),
        cmocka_unit_test_setup(timeout_fires_and_not, tu_setup),
        cmocka_unit_test_setup(timeout_on_gather, tu_setup),
        cmocka_unit_test_setup(nested_combinators, tu_setup),
        cmocka_unit_test_setup(free_pending_future, tu_setup),
        cmocka_unit_test_setup(run_until_deadlock, tu_setup),
        cmocka_unit_test_setup(run_in_thread_results, tu_setup),
        cmocka_unit_test_setup(byo_ev_loop, tu_setup),
        cmocka_unit_test_setup(out_of_memory_everywhere, tu_setup),
        cmocka_unit_test_setup(run_until_consumed, tu_setup),
        cmocka_unit_test_setup(duplicate_inputs, tu_setup),
        cmocka_unit_test_setup(promise_during_teardown, tu_setup),
        cmocka_unit_test_setup(loop_free_with_running_job, tu_setup),
        cmocka_unit_test_setup(rule1_null_handles, tu_setup),
        cmocka_unit_test_setup(timeout_messages_name_what, tu_setup),
        cmocka_unit_test_setup(chain_runs_steps_in_order, tu_setup),
        cmocka_unit_test_setup(chain_failure_skips_steps, tu_setup),
        cmocka_unit_test_setup(chain_cancel_flows_down, tu_setup),
        cmocka_unit_test_setup(chain_timeout_flows_down, tu_setup),
        cmocka_unit_test_setup(chain_bad_steps, tu_setup),
        cmocka_unit_test_setup(chain_loop_freed, tu_setup),
        cmocka_unit_test_setup(chain_out_of_memory, tu_setup),
        cmocka_unit_test_setup(cancelled_job_lets_loop_return, tu_setup),
    };

    return tu_run("future", tests, sizeof(tests) / sizeof(tests[0]));
}
