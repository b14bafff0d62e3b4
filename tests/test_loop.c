/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_loop.c - the loop's seams: timers that expire together, deadlines
 * armed after time spent outside the loop, and (against a real server) writes
 * deferred to the prepare phase, which must go out even when the callbacks
 * that queue them run in that phase. */
#include "testutil.h"
#include "internal.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Blocks the thread, as a slow callback or work between two runs of the
 * loop would. */
static void block_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0)
        ;
}

typedef struct tally {
    int calls, ok, timedout, other;
} tally;

static void tally_cb(vl_future *f, void *ud)
{
    tally *t = ud;
    int st = vl_future_status(f);

    t->calls++;
    if (st == VL_OK)
        t->ok++;
    else if (st == VL_ETIMEDOUT)
        t->timedout++;
    else
        t->other++;
}

/* A sleep and its deadline expire in the same loop iteration: whichever runs
 * first frees the other's timer while libev still holds it as pending. The
 * freed timer must never be called (it was a heap use-after-free), and every
 * callback runs exactly once. */
static void timers_expiring_together(void **state)
{
    enum { N = 200 };
    vl_loop *loop = vl_loop_new();
    tally t;
    int i;

    (void)state;
    memset(&t, 0, sizeof(t));
    for (i = 0; i < N; i++)
        assert_int_equal(vl_future_then(vl_future_timeout(vl_loop_sleep(loop, 20), 20),
                                        tally_cb, &t),
                         VL_OK);
    /* Past both deadlines before the loop looks: they expire together. */
    block_ms(40);
    assert_int_equal(vl_loop_run(loop), VL_OK);
    assert_int_equal(t.calls, N);
    assert_int_equal(t.ok + t.timedout, N);
    assert_int_equal(t.other, 0);
    tu_finish(loop);
}

typedef struct rearm {
    vl_future *g;
    uint64_t rearmed_at, done_at;
} rearm;

static void rearm_cb(vl_future *f, void *ud)
{
    rearm *r = ud;

    (void)f;
    r->rearmed_at = vl_loop_now_ms(vl_future_loop(r->g));
    assert_ptr_equal(vl_future_timeout(r->g, 300), r->g);
}

/* A deadline that expired but has not run yet is moved by another callback
 * of the same iteration: the stale expiry must not fire it early. */
static void deadline_rearmed_while_pending(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_promise *p = vl_promise_new(loop);
    rearm r;

    (void)state;
    memset(&r, 0, sizeof(r));
    /* The sleep is armed first and the deadline 1 ms longer, so however slow
     * the machine (valgrind), the deadline expires after the sleep. */
    assert_int_equal(vl_future_then(vl_loop_sleep(loop, 20), rearm_cb, &r), VL_OK);
    r.g = vl_future_timeout(vl_promise_future(p), 21);
    block_ms(40); /* both expire in the first iteration; the sleep runs first */
    assert_int_equal(vl_loop_run_until(loop, r.g), VL_ETIMEDOUT);
    r.done_at = vl_loop_now_ms(loop);
    assert_true(r.rearmed_at != 0);
    if (r.done_at < r.rearmed_at + 300)
        fail_msg("the moved deadline fired %llu ms after it was set to 300 ms",
                 (unsigned long long)(r.done_at - r.rearmed_at));
    vl_future_free(r.g);
    vl_promise_free(p);
    tu_finish(loop);
}

/* Time spent outside the loop (here 250 ms between two runs) must not be
 * taken off a deadline armed afterwards: libev's cached time is stale. */
static void deadline_after_time_outside_loop(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_promise *p = vl_promise_new(loop);
    vl_future *f;
    uint64_t t0, t1;

    (void)state;
    tu_sleep_ms(loop, 5); /* the loop has run and cached its time */
    block_ms(250);
    t0 = vl_loop_now_ms(loop);
    f = vl_future_timeout(vl_promise_future(p), 300);
    assert_int_equal(vl_loop_run_until(loop, f), VL_ETIMEDOUT);
    t1 = vl_loop_now_ms(loop);
    if (t1 < t0 + 300)
        fail_msg("a 300 ms deadline fired after %llu ms", (unsigned long long)(t1 - t0));
    vl_future_free(f);
    vl_promise_free(p);
    tu_finish(loop);
}

typedef struct slow {
    uint64_t armed_at, done_at;
    int calls;
} slow;

static void slept(vl_future *f, void *ud)
{
    slow *s = ud;

    assert_int_equal(vl_future_status(f), VL_OK);
    s->calls++;
    s->done_at = vl_loop_now_ms(vl_future_loop(f));
}

static void slow_cb(vl_future *f, void *ud)
{
    slow *s = ud;
    vl_loop *loop = vl_future_loop(f);

    block_ms(250); /* a long callback */
    s->armed_at = vl_loop_now_ms(loop);
    assert_int_equal(vl_future_then(vl_loop_sleep(loop, 20), slept, s), VL_OK);
}

/* The same inside a long callback: a 20 ms sleep armed after it lasts 20 ms,
 * as vl_loop_now_ms measures it. */
static void sleep_after_long_callback(void **state)
{
    vl_loop *loop = vl_loop_new();
    slow s;

    (void)state;
    memset(&s, 0, sizeof(s));
    assert_int_equal(vl_future_then(vl_loop_sleep(loop, 1), slow_cb, &s), VL_OK);
    assert_int_equal(vl_loop_run(loop), VL_OK);
    assert_int_equal(s.calls, 1);
    if (s.done_at < s.armed_at + 20)
        fail_msg("a 20 ms sleep ended after %llu ms", (unsigned long long)(s.done_at - s.armed_at));
    tu_finish(loop);
}

typedef struct chain {
    vl_redis *a, *b;
    long depth, n;
    vl_promise *done;
} chain;

static void noop(vl_future *f, void *ud)
{
    (void)f;
    (void)ud;
}

static void ping_done(vl_future *f, void *ud)
{
    chain *c = ud;

    assert_int_equal(vl_future_status(f), VL_OK);
    vl_promise_resolve(c->done, NULL, NULL);
}

/* Each link is a command that fails at once (bad format), so its callback
 * runs in a later dispatch round; the last link sends a real PING. */
static void link_cb(vl_future *f, void *ud)
{
    chain *c = ud;

    (void)f;
    if (++c->depth < c->n) {
        vl_future_then(vl_redis_command(c->b, NULL), link_cb, c);
        return;
    }
    vl_future_then(vl_redis_command(c->b, "PING"), ping_done, c);
}

static void start_cb(vl_future *f, void *ud)
{
    chain *c = ud;

    (void)f;
    /* Connection a blocks the poll: without it the loop would spin. */
    vl_future_then(vl_redis_command(c->a, "BLPOP test_loop:none 5"), noop, NULL);
    vl_future_then(vl_redis_command(c->b, NULL), link_cb, c);
}

/* However long the chain of callbacks before it, a command issued from a
 * callback is written without waiting for some other event. */
static void deferred_write_after_callback_chain(void **state)
{
    long n;

    (void)state;
    for (n = 1; n <= 14; n++) {
        vl_loop *loop = vl_loop_new();
        chain c;
        vl_future *done, *f;

        memset(&c, 0, sizeof(c));
        c.n = n;
        c.a = vl_redis_new(loop, tu_redis_url(0), NULL);
        c.b = vl_redis_new(loop, tu_redis_url(0), NULL);
        vl_future_free(tu_run_cmd(loop, vl_redis_command(c.a, "PING"), VL_OK));
        vl_future_free(tu_run_cmd(loop, vl_redis_command(c.b, "PING"), VL_OK));
        c.done = vl_promise_new(loop);
        done = vl_future_timeout(vl_promise_future(c.done), 2000);
        vl_future_then(vl_loop_sleep(loop, 1), start_cb, &c);
        f = tu_wait_for(loop, done);
        if (vl_future_status(f) != VL_OK)
            fail_msg("chain of %ld: the PING was not written (%s)", n, vl_future_error(f));
        vl_future_free(f);
        vl_redis_free(c.a);
        vl_redis_free(c.b);
        tu_finish(loop);
    }
}

typedef struct pair {
    vl_redis *c[2];
    int calls, ok, canceled, other;
} pair;

/* The first reply's callback frees the other connection, whose socket may
 * be readable in the same iteration: its watcher is pending when it goes. */
static void free_other(vl_future *f, void *ud)
{
    pair *p = ud;
    int st = vl_future_status(f), i;

    p->calls++;
    if (st == VL_OK)
        p->ok++;
    else if (st == VL_ECANCELED)
        p->canceled++;
    else
        p->other++;
    for (i = 0; i < 2; i++) {
        if (p->c[i] != NULL) {
            vl_redis_free(p->c[i]);
            p->c[i] = NULL;
            break;
        }
    }
}

/* io watchers: a connection freed while its socket's event is pending is
 * never called again, and each command completes exactly once. */
static void connection_freed_while_readable(void **state)
{
    int round;

    (void)state;
    for (round = 0; round < 100; round++) {
        vl_loop *loop = vl_loop_new();
        pair p;
        int i;

        memset(&p, 0, sizeof(p));
        for (i = 0; i < 2; i++) {
            p.c[i] = vl_redis_new(loop, tu_redis_url(i), NULL);
            vl_future_free(tu_run_cmd(loop, vl_redis_command(p.c[i], "PING"), VL_OK));
        }
        for (i = 0; i < 2; i++)
            assert_int_equal(vl_future_then(vl_redis_command(p.c[i], "PING"), free_other, &p),
                             VL_OK);
        assert_int_equal(vl_loop_run(loop), VL_OK);
        assert_int_equal(p.calls, 2);
        assert_int_equal(p.other, 0);
        assert_int_equal(p.ok + p.canceled, 2);
        assert_null(p.c[0]);
        assert_null(p.c[1]);
        tu_finish(loop);
    }
}

static void *work_answer(void *ud)
{
    (void)ud;
    return NULL;
}

/* Allocation failure at every step of the loop's own operations: making the
 * loop, a sleep, a deadline, a job on a worker thread, and the callbacks
 * attached to them. Each call fails cleanly (NULL, or a future failed with
 * VL_ENOMEM) and every callback that was attached runs exactly once. */
static void loop_out_of_memory(void **state)
{
    long n;
    int complete = 0;

    (void)state;
    for (n = 1; n < 400 && !complete; n++) {
        vl_loop *loop;
        vl_future *fs[3];
        tally t;
        int i, attached = 0;

        memset(&t, 0, sizeof(t));
        tu_alloc_fail_at(n);
        loop = vl_loop_new();
        if (loop == NULL) {
            assert_int_equal(tu_alloc_live(), 0);
            continue;
        }
        fs[0] = vl_loop_sleep(loop, 2);
        fs[1] = vl_future_timeout(vl_loop_sleep(loop, 500), 5);
        fs[2] = vl_future_timeout(vl_loop_run_in_thread(loop, work_answer, NULL, NULL), 2000);
        for (i = 0; i < 3; i++) {
            if (fs[i] == NULL)
                continue;
            if (vl_future_then(fs[i], tally_cb, &t) == VL_OK)
                attached++;
            else
                vl_future_free(fs[i]);
        }
        assert_int_equal(vl_loop_run(loop), VL_OK);
        assert_int_equal(t.calls, attached);
        assert_int_equal(t.other + t.ok + t.timedout, attached);
        complete = attached == 3 && t.ok == 2 && t.timedout == 1;
        tu_alloc_fail_at(0);
        tu_loop_finish(loop);
    }
    assert_true(complete);
}

/* Name resolutions still queued for the worker when the loop is freed never
 * run: what they own is freed anyway (LeakSanitizer in `make asan` reports
 * it otherwise), and each connection's future completes once. */
static void loop_freed_with_resolutions_queued(void **state)
{
    enum { N = 8 };
    vl_loop *loop = vl_loop_new();
    tally t;
    int i;

    (void)state;
    memset(&t, 0, sizeof(t));
    assert_int_equal(vl_loop_set_threads(loop, 1), VL_OK);
    for (i = 0; i < N; i++) {
        vl_redis *c = vl_redis_new(loop, "redis://localhost:1", NULL);
        assert_non_null(c);
        assert_int_equal(vl_future_then(vl_redis_command(c, "PING"), tally_cb, &t), VL_OK);
    }
    vl_loop_free(loop);
    assert_int_equal(t.calls, N);
    assert_int_equal(t.ok, 0);
    assert_int_equal(tu_alloc_live(), 0);
}

/* A deferred callback that cancels (and frees) another one of the same
 * batch: the cancelled one never runs, and the rest of the batch still
 * runs, and can be queued again. */
typedef struct dnode {
    vl__defer d;
    vl_loop *loop;
    struct dnode *victim;
    int runs;
} dnode;

static void dnode_cb(vl__defer *d)
{
    dnode *n = (dnode *)(void *)d;

    n->runs++;
    if (n->victim != NULL) {
        vl__defer_cancel(n->loop, &n->victim->d);
        free(n->victim); /* as a connection freed from its own defer */
        n->victim = NULL;
    }
}

static void defer_cancelled_inside_batch(void **state)
{
    vl_loop *loop = vl_loop_new();
    dnode *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b)), *c = calloc(1, sizeof(*c));
    int k;

    (void)state;
    a->d.cb = b->d.cb = c->d.cb = dnode_cb;
    a->loop = b->loop = c->loop = loop;
    /* A batch runs newest first: c, then b, then a. c cancels and frees
     * b, which is still waiting further down the batch. */
    vl__defer_queue(loop, &a->d);
    vl__defer_queue(loop, &b->d);
    vl__defer_queue(loop, &c->d);
    c->victim = b;
    assert_int_equal(vl_loop_run(loop), VL_OK);
    assert_int_equal(c->runs, 1);
    assert_int_equal(a->runs, 1); /* after the cancelled one: still ran */
    /* Both can be queued again. */
    for (k = 0; k < 3; k++) {
        vl__defer_queue(loop, &a->d);
        vl__defer_queue(loop, &c->d);
        assert_int_equal(vl_loop_run(loop), VL_OK);
    }
    assert_int_equal(a->runs, 4);
    assert_int_equal(c->runs, 4);
    free(a);
    free(c);
    tu_finish(loop);
}

/* ---- vl_loop_signal ---- */

static void raise_usr1(vl_future *f, void *ud)
{
    (void)f;
    (void)ud;
    raise(SIGUSR1);
}

static int handler_is_default(int signo)
{
    struct sigaction sa;

    assert_int_equal(sigaction(signo, NULL, &sa), 0);
    return sa.sa_handler == SIG_DFL;
}

/* A signal completes every future waiting for it once, from the loop and
 * never from inside raise(); a waiting future keeps vl_loop_run running;
 * afterwards the signal has its default disposition again. */
static void signal_completes_waiters(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_future *a, *b;
    int calls = 0;

    (void)state;
    a = vl_loop_signal(loop, SIGUSR1);
    b = vl_loop_signal(loop, SIGUSR1);
    assert_non_null(a);
    assert_non_null(b);
    assert_false(handler_is_default(SIGUSR1));
    raise(SIGUSR1);
    assert_false(vl_future_done(a)); /* libev's handler only takes note */
    assert_int_equal(vl_future_then(a, tu_count_cb, &calls), VL_OK);
    assert_int_equal(vl_future_then(b, tu_count_cb, &calls), VL_OK);
    assert_int_equal(calls, 0);
    vl_loop_run(loop); /* returns once both ran: nothing else holds it */
    assert_int_equal(calls, 2);
    assert_true(handler_is_default(SIGUSR1));

    /* vl_loop_run waits for a signal raised later, from a callback. */
    a = vl_loop_signal(loop, SIGUSR1);
    vl_future_then(vl_loop_sleep(loop, tu_ms(20)), raise_usr1, NULL);
    assert_int_equal(vl_future_then(a, tu_count_cb, &calls), VL_OK);
    vl_loop_run(loop);
    assert_int_equal(calls, 3);
    tu_loop_finish(loop);
}

/* Cancelling gives the signal back its default disposition; bad numbers
 * and a signal held by another loop fail through the future; freeing the
 * loop completes a waiting future with VL_ECANCELED. */
static void signal_refusals_and_cancel(void **state)
{
    vl_loop *loop = vl_loop_new(), *other = vl_loop_new();
    vl_future *f, *g;

    (void)state;
    f = vl_loop_signal(loop, SIGUSR2);
    assert_false(handler_is_default(SIGUSR2));
    assert_int_equal(vl_future_cancel(f), 1);
    assert_int_equal(vl_future_status(f), VL_ECANCELED);
    assert_true(handler_is_default(SIGUSR2));
    vl_future_free(f);

    f = vl_loop_signal(loop, SIGKILL);
    assert_int_equal(tu_await(loop, f), VL_EINVAL);
    vl_future_free(f);
    f = vl_loop_signal(loop, 0);
    assert_int_equal(tu_await(loop, f), VL_EINVAL);
    vl_future_free(f);
    f = vl_loop_signal(loop, 100000);
    assert_int_equal(tu_await(loop, f), VL_EINVAL);
    vl_future_free(f);

    f = vl_loop_signal(loop, SIGUSR2);
    g = vl_loop_signal(other, SIGUSR2);
    assert_int_equal(tu_await(other, g), VL_EBUSY);
    assert_non_null(strstr(vl_future_error(g), "another loop"));
    vl_future_free(g);
    vl_future_free(f); /* pending: freeing it stops the wait */
    assert_true(handler_is_default(SIGUSR2));
    g = vl_loop_signal(other, SIGUSR2); /* free now */
    assert_false(handler_is_default(SIGUSR2));
    vl_future_free(g);

    f = vl_loop_signal(loop, SIGUSR2);
    vl_loop_free(loop);
    assert_int_equal(vl_future_status(f), VL_ECANCELED);
    vl_future_free(f);
    assert_true(handler_is_default(SIGUSR2));
    tu_loop_finish(other);
}

/* A deferred callback (the prepare phase, right before the loop polls)
 * that completes the future vl_loop_run_until waits for. */
typedef struct resolver {
    vl__defer d;
    vl_promise *p;
} resolver;

static void resolver_cb(vl__defer *d)
{
    resolver *r = (resolver *)(void *)d;

    vl_promise_resolve(r->p, NULL, NULL);
}

/* vl_loop_run_until returns as soon as its future completes, also when it
 * completes in the prepare phase: the poll after it does not block until
 * the loop's next event (here a 30 s sleep, still pending when it
 * returns: no clock is read). Three times, the second and third from a
 * loop that has run already. */
static void run_until_sees_a_prepare_phase_completion(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_future *keep = vl_loop_sleep(loop, 30000);
    resolver r;
    int k;

    (void)state;
    for (k = 0; k < 3; k++) {
        vl_future *f;
        memset(&r, 0, sizeof(r));
        r.d.cb = resolver_cb;
        r.p = vl_promise_new(loop);
        f = vl_promise_future(r.p);
        vl__defer_queue(loop, &r.d);
        assert_int_equal(vl_loop_run_until(loop, f), VL_OK);
        assert_false(vl_future_done(keep));
        vl_future_free(f); /* (the resolve ended the promise) */
    }
    vl_future_cancel(keep);
    vl_future_free(keep);
    /* Nothing left: vl_loop_run returns (the nudge that kept the polls
     * from blocking is gone too). */
    assert_int_equal(vl_loop_run(loop), VL_OK);
    tu_finish(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(timers_expiring_together, tu_setup),
        cmocka_unit_test_setup(signal_completes_waiters, tu_setup),
        cmocka_unit_test_setup(signal_refusals_and_cancel, tu_setup),
        cmocka_unit_test_setup(defer_cancelled_inside_batch, tu_setup),
        cmocka_unit_test_setup(deadline_rearmed_while_pending, tu_setup),
        cmocka_unit_test_setup(deadline_after_time_outside_loop, tu_setup),
        cmocka_unit_test_setup(sleep_after_long_callback, tu_setup),
        cmocka_unit_test_setup(loop_out_of_memory, tu_setup),
        cmocka_unit_test_setup(loop_freed_with_resolutions_queued, tu_setup),
        cmocka_unit_test_setup(connection_freed_while_readable, tu_setup),
        cmocka_unit_test_setup(deferred_write_after_callback_chain, tu_setup),
        cmocka_unit_test_setup(run_until_sees_a_prepare_phase_completion, tu_setup),
    };

    return tu_run("loop", tests, sizeof(tests) / sizeof(tests[0]));
}
