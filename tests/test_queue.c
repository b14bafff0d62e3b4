/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_queue.c - contract tests for the numbered rules of
 * volley/queue.h: queues (FIFO, LIFO, priority), task_done and join, close
 * and free, and bounded semaphores. No server is needed, except by the last
 * test, which caps Redis commands in flight with a semaphore as the header's
 * example does, against the harness's Redis.
 */
#include "testutil.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Every test here stops by itself well within this; a hang fails it. */
#define WATCHDOG_S 60

static void on_watchdog(int sig)
{
    static const char msg[] = "# watchdog: the queue test hung\n";
    ssize_t n;

    (void)sig;
    n = write(STDOUT_FILENO, msg, sizeof(msg) - 1);
    (void)n;
    _exit(124);
}

static int q_setup(void **state)
{
    signal(SIGALRM, on_watchdog);
    alarm(WATCHDOG_S);
    return tu_setup(state);
}

/* What a callback saw. `after` is set by the test once the call that made
 * the future has returned: a callback that finds it clear ran inside. */
typedef struct rec {
    int calls;
    int status;
    int after;
    int ran_inside;
    void *item;   /* taken from a get's future */
    char msg[160];
} rec;

static void rec_cb(vl_future *f, void *ud)
{
    rec *r = ud;

    r->calls++;
    r->status = vl_future_status(f);
    if (!r->after)
        r->ran_inside = 1;
    r->item = vl_future_take(f);
    snprintf(r->msg, sizeof(r->msg), "%s", vl_future_error(f));
}

/* Attaches rec_cb; the call that made f has returned by now. */
static void watch(vl_future *f, rec *r)
{
    assert_non_null(f);
    assert_int_equal(vl_future_then(f, rec_cb, r), VL_OK);
    r->after = 1;
}

/* Items the tests own: free_fn counts how often each one is freed. */
typedef struct item {
    int id;
    int freed;
} item;

static int free_calls;
static void item_free(void *p)
{
    ((item *)p)->freed++;
    free_calls++;
}

#define ID(p) ((int)(intptr_t)(p))
#define PTR(i) ((void *)(intptr_t)(i))

/* Rule 2: a put with room, a get with an item, a join with nothing
 * unfinished and an acquire with a permit free all complete at once, and
 * still call back from the loop, once; so does a get that waited, whose
 * future completed inside the put that fed it. */
static void rule2_never_inside_the_call(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_queue *q = vl_queue_new(loop, VL_QUEUE_FIFO, 0, NULL);
    vl_semaphore *s = vl_semaphore_new(loop, 1);
    rec put = {0}, get = {0}, join = {0}, acq = {0}, waited = {0}, feed = {0};
    vl_future *f;

    (void)state;
    f = vl_queue_put(q, PTR(7));
    assert_true(vl_future_done(f)); /* completed at once... */
    watch(f, &put);
    f = vl_queue_get(q);
    assert_true(vl_future_done(f));
    watch(f, &get);
    watch(vl_queue_join(q), &join); /* unfinished: 1 (no task_done yet) */
    watch(vl_semaphore_acquire(s), &acq);
    f = vl_queue_get(q);
    assert_false(vl_future_done(f)); /* empty: it waits */
    watch(f, &waited);
    watch(vl_queue_put(q, PTR(8)), &feed);
    assert_true(vl_future_done(f)); /* fed inside the put... */
    assert_int_equal(put.calls + get.calls + acq.calls + waited.calls + feed.calls, 0);
    assert_int_equal(vl_queue_task_done(q), VL_OK);
    assert_int_equal(vl_queue_task_done(q), VL_OK);
    assert_int_equal(join.calls, 0); /* ...but nothing called back yet */
    assert_int_equal(vl_loop_run(loop), VL_OK);
    assert_int_equal(put.calls, 1);
    assert_int_equal(put.status, VL_OK);
    assert_int_equal(get.calls, 1);
    assert_int_equal(ID(get.item), 7);
    assert_int_equal(join.calls, 1);
    assert_int_equal(join.status, VL_OK);
    assert_int_equal(acq.calls, 1);
    assert_int_equal(acq.status, VL_OK);
    assert_int_equal(waited.calls, 1);
    assert_int_equal(ID(waited.item), 8);
    assert_int_equal(feed.calls, 1);
    assert_int_equal(put.ran_inside + get.ran_inside + join.ran_inside + acq.ran_inside +
                         waited.ran_inside + feed.ran_inside,
                     0);
    assert_int_equal(vl_semaphore_release(s), VL_OK);
    vl_semaphore_free(s);
    vl_queue_free(q);
    tu_finish(loop);
}

/* The three kinds' orders through the _nowait calls; equal priorities come
 * out in the order they went in; VL_EBUSY for full and for empty. */
static void kinds_order_nowait(void **state)
{
    static const int64_t prio[] = {5, -3, 5, 0, -3, 9, 0};
    static const int prio_order[] = {1, 4, 3, 6, 0, 2, 5};
    vl_loop *loop = vl_loop_new();
    vl_queue *fifo = vl_queue_new(loop, VL_QUEUE_FIFO, 7, NULL);
    vl_queue *lifo = vl_queue_new(loop, VL_QUEUE_LIFO, 7, NULL);
    vl_queue *pq = vl_queue_new(loop, VL_QUEUE_PRIORITY, 7, NULL);
    void *v;
    int i;

    (void)state;
    assert_true(vl_queue_empty(fifo));
    assert_int_equal(vl_queue_get_nowait(fifo, &v), VL_EBUSY);
    assert_null(v);
    for (i = 0; i < 7; i++) {
        /* id 1 + i, so that NULL never stands for an item here */
        assert_int_equal(vl_queue_put_nowait(fifo, PTR(i + 1)), VL_OK);
        assert_int_equal(vl_queue_put_nowait_priority(lifo, PTR(i + 1), prio[i]), VL_OK);
        assert_int_equal(vl_queue_put_nowait_priority(pq, PTR(i + 1), prio[i]), VL_OK);
    }
    assert_true(vl_queue_full(fifo));
    assert_int_equal(vl_queue_size(pq), 7);
    assert_int_equal(vl_queue_put_nowait(fifo, PTR(99)), VL_EBUSY);
    assert_int_equal(vl_queue_put_nowait_priority(pq, PTR(99), -100), VL_EBUSY);
    for (i = 0; i < 7; i++) {
        assert_int_equal(vl_queue_get_nowait(fifo, &v), VL_OK);
        assert_int_equal(ID(v), i + 1);
        assert_int_equal(vl_queue_get_nowait(lifo, &v), VL_OK); /* priorities ignored */
        assert_int_equal(ID(v), 7 - i);
        assert_int_equal(vl_queue_get_nowait(pq, &v), VL_OK);
        assert_int_equal(ID(v), prio_order[i] + 1);
    }
    assert_true(vl_queue_empty(pq));
    assert_false(vl_queue_full(fifo));
    /* A NULL item is an item. */
    assert_int_equal(vl_queue_put_nowait(fifo, NULL), VL_OK);
    assert_int_equal(vl_queue_size(fifo), 1);
    v = PTR(1);
    assert_int_equal(vl_queue_get_nowait(fifo, &v), VL_OK);
    assert_null(v);
    assert_int_equal(vl_queue_get_nowait(fifo, &v), VL_EBUSY);
    /* The ring wraps and grows past its first block in order. */
    vl_queue_free(fifo);
    fifo = vl_queue_new(loop, VL_QUEUE_FIFO, 0, NULL);
    for (i = 0; i < 10; i++)
        assert_int_equal(vl_queue_put_nowait(fifo, PTR(i)), VL_OK);
    for (i = 0; i < 5; i++) {
        assert_int_equal(vl_queue_get_nowait(fifo, &v), VL_OK);
        assert_int_equal(ID(v), i);
    }
    for (i = 10; i < 100; i++)
        assert_int_equal(vl_queue_put_nowait(fifo, PTR(i)), VL_OK);
    for (i = 5; i < 100; i++) {
        assert_int_equal(vl_queue_get_nowait(fifo, &v), VL_OK);
        assert_int_equal(ID(v), i);
    }
    vl_queue_free(fifo);
    vl_queue_free(lifo);
    vl_queue_free(pq);
    /* An idle queue holds no reference on the loop. */
    assert_int_equal(vl_loop_alive(loop), 0);
    tu_finish(loop);
}

/* A full queue's puts wait, admitted one per get in the order they called;
 * a put_nowait never overtakes them. */
static void full_queue_puts_wait_in_order(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_queue *q = vl_queue_new(loop, VL_QUEUE_FIFO, 2, NULL);
    rec c = {0}, d = {0};
    vl_future *pc, *pd;
    void *v;

    (void)state;
    assert_int_equal(vl_queue_put_nowait(q, PTR(1)), VL_OK);
    assert_int_equal(vl_queue_put_nowait(q, PTR(2)), VL_OK);
    pc = vl_queue_put(q, PTR(3));
    pd = vl_queue_put(q, PTR(4));
    assert_false(vl_future_done(pc));
    assert_false(vl_future_done(pd));
    watch(pc, &c);
    watch(pd, &d);
    assert_int_equal(vl_queue_put_nowait(q, PTR(5)), VL_EBUSY);
    assert_true(vl_loop_alive(loop) > 0); /* the waiting puts hold the loop */
    assert_int_equal(vl_queue_get_nowait(q, &v), VL_OK);
    assert_int_equal(ID(v), 1);
    assert_true(vl_future_done(pc)); /* admitted at once, called back later */
    assert_false(vl_future_done(pd));
    assert_int_equal(vl_queue_size(q), 2);
    assert_int_equal(vl_queue_put_nowait(q, PTR(5)), VL_EBUSY);
    assert_int_equal(vl_queue_get_nowait(q, &v), VL_OK);
    assert_int_equal(ID(v), 2);
    assert_int_equal(vl_loop_run(loop), VL_OK);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.status, VL_OK);
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.status, VL_OK);
    assert_int_equal(vl_queue_get_nowait(q, &v), VL_OK);
    assert_int_equal(ID(v), 3);
    assert_int_equal(vl_queue_get_nowait(q, &v), VL_OK);
    assert_int_equal(ID(v), 4);
    vl_queue_free(q);
    tu_finish(loop);
}

/* Gets that wait are served in the order they called, one item each. */
static void waiting_gets_served_in_order(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_queue *q = vl_queue_new(loop, VL_QUEUE_LIFO, 0, NULL);
    rec r[3];
    int i;

    (void)state;
    memset(r, 0, sizeof(r));
    for (i = 0; i < 3; i++)
        watch(vl_queue_get(q), &r[i]);
    for (i = 0; i < 3; i++)
        assert_int_equal(vl_queue_put_nowait(q, PTR(10 + i)), VL_OK);
    assert_int_equal(vl_queue_size(q), 0); /* each went straight to a get */
    assert_int_equal(vl_loop_run(loop), VL_OK);
    for (i = 0; i < 3; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(ID(r[i].item), 10 + i);
    }
    vl_queue_free(q);
    tu_finish(loop);
}

/* Rule 3 for gets: cancelling, a deadline or freeing a waiting get takes no
 * item; a get that already completed cannot be cancelled and delivers its
 * item; a deadline that did not fire leaves nothing behind. */
static void cancelled_gets_lose_nothing(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_queue *q = vl_queue_new(loop, VL_QUEUE_FIFO, 0, item_free);
    item it[4] = {{0, 0}, {1, 0}, {2, 0}, {3, 0}};
    rec g1 = {0}, g2 = {0}, g3 = {0}, g4 = {0}, late = {0};
    vl_future *f1, *f2, *f4, *held;
    void *v;

    (void)state;
    free_calls = 0;
    f1 = vl_queue_get(q);
    watch(f1, &g1);
    f2 = vl_future_timeout(vl_queue_get(q), 60000);
    watch(f2, &g2);
    held = vl_queue_get(q); /* the caller's own future, never given to then */
    assert_int_equal(vl_future_cancel(f1), 1);
    assert_int_equal(vl_future_cancel(f1), 0);
    vl_future_free(held); /* pending: cancelled and gone */
    assert_int_equal(vl_queue_put_nowait(q, &it[0]), VL_OK);
    assert_true(vl_future_done(f2)); /* the oldest get still waiting took it */
    assert_int_equal(vl_future_cancel(f2), 0); /* done: too late to cancel */
    vl_future_free(f2);                        /* consumed: the callback still runs */
    /* A get whose deadline passes takes nothing either. */
    watch(vl_future_timeout(vl_queue_get(q), 20), &g3);
    assert_int_equal(vl_loop_run(loop), VL_OK);
    assert_int_equal(g1.calls, 1);
    assert_int_equal(g1.status, VL_ECANCELED);
    assert_int_equal(g2.calls, 1);
    assert_int_equal(g2.status, VL_OK);
    assert_ptr_equal(g2.item, &it[0]);
    assert_int_equal(g3.calls, 1);
    assert_int_equal(g3.status, VL_ETIMEDOUT);
    assert_string_equal(g3.msg, "FIFO queue get (0 queued, 1 waiting): timed out after 20 ms");
    assert_int_equal(free_calls, 0);
    /* Nothing waits now: the next items stay queued, in order. */
    assert_int_equal(vl_queue_put_nowait(q, &it[1]), VL_OK);
    assert_int_equal(vl_queue_put_nowait(q, &it[2]), VL_OK);
    assert_int_equal(vl_queue_size(q), 2);
    f4 = vl_future_timeout(vl_queue_get(q), 30); /* completes before its deadline */
    watch(f4, &g4);
    assert_int_equal(vl_queue_get_nowait(q, &v), VL_OK);
    assert_ptr_equal(v, &it[2]);
    /* A completed get nobody takes from frees its item once, with free_fn. */
    held = vl_queue_get(q);
    assert_true(vl_future_done(held) == 0); /* empty again: it waits */
    assert_int_equal(vl_queue_put_nowait(q, &it[3]), VL_OK);
    assert_int_equal(vl_future_status(held), VL_OK);
    assert_ptr_equal(vl_future_value(held), &it[3]);
    vl_future_free(held);
    assert_int_equal(it[3].freed, 1);
    /* Let the 30 ms deadline's time pass: it must not fire late. */
    watch(vl_future_timeout(vl_queue_get(q), 60), &late);
    assert_int_equal(vl_loop_run(loop), VL_OK);
    assert_int_equal(g4.calls, 1);
    assert_int_equal(g4.status, VL_OK);
    assert_ptr_equal(g4.item, &it[1]);
    assert_int_equal(late.status, VL_ETIMEDOUT);
    assert_int_equal(it[0].freed + it[1].freed + it[2].freed, 0);
    assert_int_equal(free_calls, 1);
    vl_queue_free(q);
    tu_finish(loop);
}

/* Rule 3 for puts: a put cancelled or timed out while it waits never enters
 * the queue (its item stays the caller's and is not freed), and the puts
 * behind it move up. */
static void cancelled_puts_never_enter(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_queue *q = vl_queue_new(loop, VL_QUEUE_FIFO, 1, item_free);
    item it[4] = {{0, 0}, {1, 0}, {2, 0}, {3, 0}};
    rec pb = {0}, pc = {0}, pd = {0};
    vl_future *b;
    void *v;

    (void)state;
    free_calls = 0;
    assert_int_equal(vl_queue_put_nowait(q, &it[0]), VL_OK);
    b = vl_queue_put(q, &it[1]);
    watch(b, &pb);
    watch(vl_future_timeout(vl_queue_put(q, &it[2]), 20), &pc);
    watch(vl_queue_put(q, &it[3]), &pd);
    assert_int_equal(vl_future_cancel(b), 1);
    tu_sleep_ms(loop, 40); /* the deadline of it[2]'s put passes */
    assert_int_equal(pb.status, VL_ECANCELED);
    assert_int_equal(pc.status, VL_ETIMEDOUT);
    assert_int_equal(pd.calls, 0);
    assert_int_equal(vl_queue_get_nowait(q, &v), VL_OK);
    assert_ptr_equal(v, &it[0]);
    assert_int_equal(vl_queue_get_nowait(q, &v), VL_OK);
    assert_ptr_equal(v, &it[3]); /* the two before it never entered */
    assert_int_equal(vl_queue_get_nowait(q, &v), VL_EBUSY);
    assert_int_equal(vl_loop_run(loop), VL_OK);
    assert_int_equal(pd.calls, 1);
    assert_int_equal(pd.status, VL_OK);
    assert_int_equal(free_calls, 0);
    vl_queue_free(q);
    assert_int_equal(free_calls, 0);
    tu_finish(loop);
}

/* Rule 4, close: waiting gets and puts complete once with VL_ECLOSED; puts
 * after it fail and keep their items; gets drain what is queued, then fail. */
static void close_with_waiters(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_queue *empty = vl_queue_new(loop, VL_QUEUE_FIFO, 0, item_free);
    vl_queue *full = vl_queue_new(loop, VL_QUEUE_PRIORITY, 2, item_free);
    item it[5] = {{0, 0}, {1, 0}, {2, 0}, {3, 0}, {4, 0}};
    rec g[2], p[2], after = {0}, drain[3], join = {0};
    void *v;
    int i;

    (void)state;
    memset(g, 0, sizeof(g));
    memset(p, 0, sizeof(p));
    memset(drain, 0, sizeof(drain));
    free_calls = 0;
    watch(vl_queue_get(empty), &g[0]);
    watch(vl_queue_get(empty), &g[1]);
    assert_int_equal(vl_queue_put_nowait_priority(full, &it[0], 2), VL_OK);
    assert_int_equal(vl_queue_put_nowait_priority(full, &it[1], 1), VL_OK);
    watch(vl_queue_put(full, &it[2]), &p[0]);
    watch(vl_queue_put(full, &it[3]), &p[1]);
    watch(vl_queue_join(full), &join);
    assert_int_equal(vl_queue_shutdown(empty), VL_OK);
    assert_int_equal(vl_queue_shutdown(full), VL_OK);
    assert_int_equal(vl_queue_shutdown(full), VL_OK); /* twice: nothing more */
    watch(vl_queue_put(full, &it[4]), &after);
    assert_int_equal(vl_queue_put_nowait(empty, &it[4]), VL_ECLOSED);
    for (i = 0; i < 3; i++)
        watch(vl_queue_get(full), &drain[i]);
    assert_int_equal(vl_queue_get_nowait(full, &v), VL_ECLOSED);
    assert_int_equal(vl_queue_get_nowait(empty, &v), VL_ECLOSED);
    tu_sleep_ms(loop, 1); /* vl_loop_run would wait for the join */
    for (i = 0; i < 2; i++) {
        assert_int_equal(g[i].calls, 1);
        assert_int_equal(g[i].status, VL_ECLOSED);
        assert_int_equal(p[i].calls, 1);
        assert_int_equal(p[i].status, VL_ECLOSED);
    }
    assert_string_equal(g[0].msg, "get: queue closed and empty");
    assert_int_equal(after.status, VL_ECLOSED);
    assert_ptr_equal(drain[0].item, &it[1]);
    assert_ptr_equal(drain[1].item, &it[0]);
    assert_int_equal(drain[2].status, VL_ECLOSED);
    assert_int_equal(free_calls, 0); /* the refused items are still ours */
    /* Closing leaves the unfinished count alone: the join still waits. */
    assert_int_equal(join.calls, 0);
    assert_int_equal(vl_queue_task_done(full), VL_OK);
    assert_int_equal(vl_queue_task_done(full), VL_OK);
    assert_int_equal(vl_loop_run(loop), VL_OK);
    assert_int_equal(join.calls, 1);
    assert_int_equal(join.status, VL_OK);
    vl_queue_free(empty);
    vl_queue_free(full);
    tu_finish(loop);
}

/* Rule 4, free: every waiting get, put and join completes with
 * VL_ECANCELED; queued items are freed once; a get that already received
 * its item still delivers it. */
static void free_with_waiters(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_queue *a = vl_queue_new(loop, VL_QUEUE_FIFO, 0, item_free);
    vl_queue *b = vl_queue_new(loop, VL_QUEUE_LIFO, 2, item_free);
    vl_semaphore *s = vl_semaphore_new(loop, 1);
    item it[5] = {{0, 0}, {1, 0}, {2, 0}, {3, 0}, {4, 0}};
    rec ga = {0}, got = {0}, pb = {0}, jb = {0}, acq = {0};
    int i;

    (void)state;
    free_calls = 0;
    watch(vl_queue_get(a), &ga);
    assert_int_equal(vl_queue_put_nowait(b, &it[0]), VL_OK);
    assert_int_equal(vl_queue_put_nowait(b, &it[1]), VL_OK);
    watch(vl_queue_get(b), &got); /* it[1], at once */
    assert_int_equal(vl_queue_put_nowait(b, &it[2]), VL_OK);
    watch(vl_queue_put(b, &it[3]), &pb);
    watch(vl_queue_join(b), &jb);
    assert_int_equal(vl_semaphore_try_acquire(s), VL_OK);
    watch(vl_semaphore_acquire(s), &acq);
    vl_queue_free(a);
    vl_queue_free(b);
    vl_semaphore_free(s);
    assert_int_equal(it[0].freed, 1);
    assert_int_equal(it[2].freed, 1);
    assert_int_equal(free_calls, 2);
    assert_int_equal(ga.calls + got.calls + pb.calls + jb.calls + acq.calls, 0);
    assert_int_equal(vl_loop_run(loop), VL_OK);
    assert_int_equal(ga.status, VL_ECANCELED);
    assert_string_equal(ga.msg, "queue freed");
    assert_int_equal(got.status, VL_OK);
    assert_ptr_equal(got.item, &it[1]);
    assert_int_equal(pb.status, VL_ECANCELED);
    assert_int_equal(jb.status, VL_ECANCELED);
    assert_int_equal(acq.status, VL_ECANCELED);
    for (i = 0; i < 5; i++)
        assert_int_equal(it[i].freed, i == 0 || i == 2);
    tu_finish(loop);
}

typedef struct freeing {
    vl_queue *q;
    vl_semaphore *s;
    int calls;
} freeing;

static void free_queue_cb(vl_future *f, void *ud)
{
    freeing *fr = ud;

    fr->calls++;
    assert_int_equal(vl_future_status(f), VL_OK);
    vl_queue_free(fr->q); /* from its own get's callback */
    vl_semaphore_free(fr->s);
    vl_future_free(f); /* its own future, inside its callback: deferred */
}

/* Rule 5: freeing the queue and the semaphore from inside their own
 * callbacks; the other waiters still complete once. */
static void free_from_callback(void **state)
{
    vl_loop *loop = vl_loop_new();
    freeing fr = {NULL, NULL, 0};
    rec other = {0}, acq = {0};

    (void)state;
    fr.q = vl_queue_new(loop, VL_QUEUE_FIFO, 0, NULL);
    fr.s = vl_semaphore_new(loop, 1);
    assert_int_equal(vl_semaphore_try_acquire(fr.s), VL_OK);
    watch(vl_semaphore_acquire(fr.s), &acq);
    assert_int_equal(vl_future_then(vl_queue_get(fr.q), free_queue_cb, &fr), VL_OK);
    watch(vl_queue_get(fr.q), &other);
    assert_int_equal(vl_queue_put_nowait(fr.q, PTR(1)), VL_OK);
    assert_int_equal(vl_loop_run(loop), VL_OK);
    assert_int_equal(fr.calls, 1);
    assert_int_equal(other.calls, 1);
    assert_int_equal(other.status, VL_ECANCELED);
    assert_int_equal(acq.calls, 1);
    assert_int_equal(acq.status, VL_ECANCELED);
    tu_finish(loop);
}

static void close_cb(vl_future *f, void *ud)
{
    (void)f;
    assert_int_equal(vl_queue_shutdown(ud), VL_OK);
}

/* Rule 5: closing from a callback (here a sleep's) while gets wait. */
static void close_from_callback(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_queue *q = vl_queue_new(loop, VL_QUEUE_FIFO, 0, NULL);
    rec g = {0};

    (void)state;
    watch(vl_queue_get(q), &g);
    assert_int_equal(vl_future_then(vl_loop_sleep(loop, 5), close_cb, q), VL_OK);
    assert_int_equal(vl_loop_run(loop), VL_OK);
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.status, VL_ECLOSED);
    vl_queue_free(q);
    tu_finish(loop);
}

/* vl_loop_free frees queues and semaphores still open: their waiters
 * complete once with VL_ECANCELED, and a callback that then frees or uses
 * them does no harm. */
typedef struct late_use {
    vl_queue *q;
    vl_semaphore *s;
    int calls;
    int status;
} late_use;

static void late_use_cb(vl_future *f, void *ud)
{
    late_use *u = ud;
    void *v;

    u->calls++;
    u->status = vl_future_status(f);
    assert_int_equal(vl_queue_put_nowait(u->q, PTR(1)), VL_ECLOSED);
    assert_int_equal(vl_queue_get_nowait(u->q, &v), VL_ECLOSED);
    assert_int_equal(vl_semaphore_release(u->s), VL_ECLOSED);
    vl_future_free(vl_queue_get(u->q));
    vl_queue_free(u->q);
    vl_semaphore_free(u->s);
}

static void loop_free_with_waiters(void **state)
{
    vl_loop *loop = vl_loop_new();
    late_use u = {NULL, NULL, 0, 0};
    rec acq = {0};

    (void)state;
    u.q = vl_queue_new(loop, VL_QUEUE_FIFO, 1, free);
    u.s = vl_semaphore_new(loop, 1);
    assert_int_equal(vl_future_then(vl_queue_get(u.q), late_use_cb, &u), VL_OK);
    assert_int_equal(vl_semaphore_try_acquire(u.s), VL_OK);
    watch(vl_semaphore_acquire(u.s), &acq);
    vl_loop_free(loop);
    assert_int_equal(u.calls, 1);
    assert_int_equal(u.status, VL_ECANCELED);
    assert_int_equal(acq.status, VL_ECANCELED);
    assert_int_equal(tu_alloc_live(), 0);
}

/* task_done and join (asyncio's semantics): the count of unfinished items
 * goes up with each put that succeeded, down with each task_done. */
static void join_and_task_done(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_queue *q = vl_queue_new(loop, VL_QUEUE_FIFO, 0, NULL);
    rec j0 = {0}, j1 = {0}, j2 = {0}, jc = {0}, jt = {0};
    vl_future *c;
    void *v;
    int i;

    (void)state;
    assert_int_equal(vl_queue_task_done(q), VL_ESTATE);
    watch(vl_queue_join(q), &j0); /* nothing unfinished: at once */
    for (i = 0; i < 3; i++)
        assert_int_equal(vl_queue_put_nowait(q, PTR(i)), VL_OK);
    watch(vl_queue_join(q), &j1);
    watch(vl_queue_join(q), &j2);
    c = vl_queue_join(q);
    watch(c, &jc);
    assert_int_equal(vl_future_cancel(c), 1);
    watch(vl_future_timeout(vl_queue_join(q), 5), &jt);
    for (i = 0; i < 3; i++)
        assert_int_equal(vl_queue_get_nowait(q, &v), VL_OK);
    assert_int_equal(vl_queue_task_done(q), VL_OK);
    assert_int_equal(vl_queue_task_done(q), VL_OK);
    tu_sleep_ms(loop, 20);
    assert_string_equal(jt.msg, "FIFO queue join (1 unfinished): timed out after 5 ms");
    assert_int_equal(j0.calls, 1);
    assert_int_equal(j0.status, VL_OK);
    assert_int_equal(j1.calls, 0); /* one item is still unfinished */
    assert_int_equal(jc.status, VL_ECANCELED);
    assert_true(vl_loop_alive(loop) > 0); /* the waiting joins hold the loop */
    assert_int_equal(vl_queue_task_done(q), VL_OK);
    assert_int_equal(vl_queue_task_done(q), VL_ESTATE);
    assert_int_equal(vl_loop_run(loop), VL_OK);
    assert_int_equal(j1.calls, 1);
    assert_int_equal(j1.status, VL_OK);
    assert_int_equal(j2.calls, 1);
    assert_int_equal(jc.calls, 1);
    assert_int_equal(jc.status, VL_ECANCELED);
    vl_queue_free(q);
    tu_finish(loop);
}

/* The loop-alive rule (rule 6): an idle queue, even holding items, lets
 * vl_loop_run return; a waiting get holds it until a put, here from a
 * sleep's callback, feeds it. */
typedef struct feeder {
    vl_queue *q;
    int rc;
} feeder;

static void feed_cb(vl_future *f, void *ud)
{
    feeder *fd = ud;

    (void)f;
    fd->rc = vl_queue_put_nowait(fd->q, PTR(42));
}

static void waiting_holds_the_loop(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_queue *q = vl_queue_new(loop, VL_QUEUE_FIFO, 0, NULL);
    feeder fd = {q, -100};
    rec g = {0};
    vl_future *f;
    void *v;

    (void)state;
    assert_int_equal(vl_queue_put_nowait(q, PTR(1)), VL_OK);
    assert_int_equal(vl_loop_alive(loop), 0);
    assert_int_equal(vl_loop_run(loop), VL_OK); /* returns at once */
    assert_int_equal(vl_queue_get_nowait(q, &v), VL_OK);
    watch(vl_queue_get(q), &g);
    assert_int_equal(vl_loop_alive(loop), 1);
    /* The sleep's callback runs while the get holds the loop; the sleep
     * itself would not keep vl_loop_run going past its own 20 ms. */
    assert_int_equal(vl_future_then(vl_loop_sleep(loop, 20), feed_cb, &fd), VL_OK);
    assert_int_equal(vl_loop_run(loop), VL_OK);
    assert_int_equal(fd.rc, VL_OK);
    assert_int_equal(g.calls, 1);
    assert_int_equal(ID(g.item), 42);
    assert_int_equal(vl_loop_alive(loop), 0);
    /* run_until on a get: a sleep feeds it. */
    f = vl_queue_get(q);
    assert_int_equal(vl_future_then(vl_loop_sleep(loop, 5), feed_cb, &fd), VL_OK);
    assert_int_equal(vl_loop_run_until(loop, f), VL_OK);
    assert_int_equal(ID(vl_future_take(f)), 42);
    vl_future_free(f);
    vl_queue_free(q);
    tu_finish(loop);
}

/* Semaphores: try_acquire and release within the bound, FIFO wake-up, and
 * rule 3: an acquire cancelled, timed out or freed while it waits takes no
 * permit; the permit goes to the next waiter, or back to the semaphore. */
static void semaphore_rules(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_semaphore *s = vl_semaphore_new(loop, 2);
    rec a[5];
    vl_future *f[5];
    int i;

    (void)state;
    memset(a, 0, sizeof(a));
    assert_null(vl_semaphore_new(loop, 0));
    assert_int_equal(vl_semaphore_value(s), 2);
    assert_int_equal(vl_semaphore_release(s), VL_EINVAL); /* all free already */
    assert_int_equal(vl_semaphore_try_acquire(s), VL_OK);
    assert_int_equal(vl_semaphore_try_acquire(s), VL_OK);
    assert_int_equal(vl_semaphore_try_acquire(s), VL_EBUSY);
    assert_int_equal(vl_semaphore_value(s), 0);
    for (i = 0; i < 5; i++) {
        f[i] = vl_semaphore_acquire(s);
        assert_false(vl_future_done(f[i]));
    }
    vl_future_timeout(f[0], 10);
    for (i = 0; i < 5; i++)
        watch(f[i], &a[i]);
    assert_int_equal(vl_future_cancel(f[1]), 1);
    vl_future_free(f[2]); /* consumed and pending: cancelled */
    tu_sleep_ms(loop, 30);
    assert_int_equal(a[0].status, VL_ETIMEDOUT);
    assert_string_equal(a[0].msg, "semaphore acquire (3 waiting): timed out after 10 ms");
    assert_int_equal(a[1].status, VL_ECANCELED);
    assert_int_equal(a[2].status, VL_ECANCELED);
    assert_int_equal(a[3].calls + a[4].calls, 0);
    assert_int_equal(vl_semaphore_try_acquire(s), VL_EBUSY); /* two still wait */
    assert_int_equal(vl_semaphore_release(s), VL_OK);         /* to f[3] */
    assert_true(vl_future_done(f[3]));
    assert_int_equal(vl_semaphore_value(s), 0);
    assert_int_equal(vl_semaphore_release(s), VL_OK); /* to f[4] */
    assert_int_equal(vl_loop_run(loop), VL_OK);
    assert_int_equal(a[3].calls, 1);
    assert_int_equal(a[3].status, VL_OK);
    assert_int_equal(a[4].calls, 1);
    assert_int_equal(a[4].status, VL_OK);
    assert_int_equal(a[3].ran_inside + a[4].ran_inside, 0);
    assert_int_equal(vl_semaphore_release(s), VL_OK);
    assert_int_equal(vl_semaphore_release(s), VL_OK);
    assert_int_equal(vl_semaphore_value(s), 2); /* no permit lost on the way */
    assert_int_equal(vl_semaphore_release(s), VL_EINVAL);
    vl_semaphore_free(s);
    tu_finish(loop);
}

/* Rule 1: NULL handles. */
static void null_handles(void **state)
{
    vl_loop *loop = vl_loop_new();
    void *v = PTR(1);

    (void)state;
    assert_null(vl_queue_new(NULL, VL_QUEUE_FIFO, 0, NULL));
    assert_null(vl_queue_new(loop, (vl_queue_kind)7, 0, NULL));
    assert_null(vl_semaphore_new(NULL, 1));
    assert_null(vl_queue_put(NULL, NULL));
    assert_null(vl_queue_put_priority(NULL, NULL, 1));
    assert_null(vl_queue_get(NULL));
    assert_null(vl_queue_join(NULL));
    assert_null(vl_semaphore_acquire(NULL));
    assert_int_equal(vl_queue_put_nowait(NULL, NULL), VL_EINVAL);
    assert_int_equal(vl_queue_put_nowait_priority(NULL, NULL, 0), VL_EINVAL);
    assert_int_equal(vl_queue_get_nowait(NULL, &v), VL_EINVAL);
    assert_null(v);
    assert_int_equal(vl_queue_task_done(NULL), VL_EINVAL);
    assert_int_equal(vl_queue_shutdown(NULL), VL_EINVAL);
    assert_int_equal(vl_semaphore_try_acquire(NULL), VL_EINVAL);
    assert_int_equal(vl_semaphore_release(NULL), VL_EINVAL);
    assert_int_equal(vl_queue_size(NULL), 0);
    assert_int_equal(vl_queue_empty(NULL), 1);
    assert_int_equal(vl_queue_full(NULL), 0);
    assert_int_equal(vl_semaphore_value(NULL), 0);
    vl_queue_free(NULL);
    vl_semaphore_free(NULL);
    {
        vl_queue *q = vl_queue_new(loop, VL_QUEUE_FIFO, 0, NULL);
        assert_int_equal(vl_queue_get_nowait(q, NULL), VL_EINVAL);
        vl_queue_free(q);
    }
    tu_finish(loop);
}

/* ---- 4 producers and 4 consumers, 100,000 items through each kind ----
 *
 * Producers and consumers are chains of futures on one loop: each put's
 * callback makes the next put, each get's callback the next get, with a
 * short sleep now and then so that the bounded queue (64) fills up and puts
 * wait, and empties so that gets wait. Every item must arrive exactly once
 * (a bitmap). The order is checked exactly against a model of the queue:
 * items enter and leave a queue only inside the calls the test makes (rule
 * 2: completing a future runs no callback), so after each call the test
 * looks at the futures it has pending and learns which item entered (a put
 * that completed) and which left (a get that completed) in that call. In a
 * put, its item enters and may leave at once to a waiting get; in a get, an
 * item leaves, then a waiting put's item may enter. The model (a FIFO, a
 * stack or a heap on priority and entry order) must then give out exactly
 * the item the queue gave: for FIFO and LIFO that is the kind's order, for
 * PRIORITY that no item left while one with a lower number (or the same
 * number, put earlier) was queued. */

#define S_ITEMS 100000
#define S_ACTORS 4
#define S_BOUND 64

typedef struct stress stress;

typedef struct actor {
    stress *s;
    int idx;
    vl_future *pending; /* our queue future, until the test saw it complete */
    size_t done;        /* items put or received */
} actor;

typedef struct ment {
    int64_t priority;
    uint64_t order;
    int id;
} ment;

struct stress {
    vl_loop *loop;
    vl_queue *q;
    vl_queue_kind kind;
    actor prod[S_ACTORS], cons[S_ACTORS];
    unsigned char *seen;
    size_t received;
    int producers_left;
    int in_call;        /* set around every queue call */
    size_t puts_waited; /* puts that did not complete inside their call */
    size_t gets_waited;
    long last_k[S_ACTORS]; /* the last item number seen of each producer */
    ment *model;           /* FIFO: from mhead; LIFO: a stack; PRIORITY: a heap */
    size_t mhead, mcount;
    uint64_t morder;
    vl_future *join;
};

static int64_t item_priority(int id)
{
    return (int64_t)(((uint32_t)id * 2654435761u) % 97u) - 48;
}

static int ment_before(const ment *a, const ment *b)
{
    return a->priority < b->priority || (a->priority == b->priority && a->order < b->order);
}

static void model_enter(stress *s, int id)
{
    ment e = {item_priority(id), s->morder++, id};
    size_t i;

    if (s->kind != VL_QUEUE_PRIORITY) {
        s->model[s->mhead + s->mcount++] = e;
        return;
    }
    i = s->mcount++;
    while (i > 0 && ment_before(&e, &s->model[(i - 1) / 2])) {
        s->model[i] = s->model[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->model[i] = e;
}

/* The item the model says must leave now; fails the test if it differs. */
static void model_leave(stress *s, int id)
{
    ment want, last;
    size_t i = 0;

    assert_true(s->mcount > 0);
    if (s->kind == VL_QUEUE_FIFO) {
        want = s->model[s->mhead++];
        s->mcount--;
    } else if (s->kind == VL_QUEUE_LIFO) {
        want = s->model[s->mhead + --s->mcount];
    } else {
        want = s->model[0];
        last = s->model[--s->mcount];
        for (;;) {
            size_t c = 2 * i + 1;
            if (c >= s->mcount)
                break;
            if (c + 1 < s->mcount && ment_before(&s->model[c + 1], &s->model[c]))
                c++;
            if (!ment_before(&s->model[c], &last))
                break;
            s->model[i] = s->model[c];
            i = c;
        }
        if (s->mcount > 0)
            s->model[i] = last;
    }
    if (want.id != id)
        fail_msg("%s queue gave item %d (priority %lld) where %d (priority %lld) was due",
                 s->kind == VL_QUEUE_FIFO ? "FIFO" : s->kind == VL_QUEUE_LIFO ? "LIFO" : "priority",
                 id, (long long)item_priority(id), want.id, (long long)want.priority);
}

/* What completed inside the call the test just made: `getting` says
 * whether it was a get (an item leaves, then one may enter) or a put or
 * close (an item enters, then it may leave to a waiting get). */
static void observe(stress *s, int getting)
{
    int pass, i;

    for (pass = 0; pass < 2; pass++) {
        int leaving = getting ? pass == 0 : pass == 1;
        for (i = 0; i < S_ACTORS; i++) {
            actor *a = leaving ? &s->cons[i] : &s->prod[i];
            vl_future *f = a->pending;
            if (f == NULL || !vl_future_done(f))
                continue;
            a->pending = NULL;
            if (vl_future_status(f) != VL_OK)
                continue;
            if (leaving)
                model_leave(s, ID(vl_future_value(f)) - 1);
            else
                model_enter(s, a->idx + (int)(a->done * S_ACTORS));
        }
    }
}

static void put_done(vl_future *f, void *ud);
static void get_done(vl_future *f, void *ud);

static void next_put(actor *a)
{
    stress *s = a->s;
    int id = a->idx + (int)(a->done * S_ACTORS);
    vl_future *f;

    s->in_call = 1;
    f = vl_queue_put_priority(s->q, PTR(id + 1), item_priority(id));
    s->in_call = 0;
    assert_non_null(f);
    a->pending = f;
    if (!vl_future_done(f))
        s->puts_waited++;
    observe(s, 0);
    assert_int_equal(vl_future_then(f, put_done, a), VL_OK);
}

static void next_get(actor *a)
{
    stress *s = a->s;
    vl_future *f;

    s->in_call = 1;
    f = vl_queue_get(s->q);
    s->in_call = 0;
    assert_non_null(f);
    a->pending = f;
    if (!vl_future_done(f))
        s->gets_waited++;
    observe(s, 1);
    assert_int_equal(vl_future_then(f, get_done, a), VL_OK);
}

static void resume_put(vl_future *f, void *ud)
{
    (void)f;
    next_put(ud);
}

static void resume_get(vl_future *f, void *ud)
{
    (void)f;
    next_get(ud);
}

static void put_done(vl_future *f, void *ud)
{
    actor *a = ud;
    stress *s = a->s;

    assert_false(s->in_call);
    assert_null(a->pending); /* the test saw it complete inside a call */
    assert_int_equal(vl_future_status(f), VL_OK);
    if (++a->done == S_ITEMS / S_ACTORS) {
        if (--s->producers_left == 0) {
            s->join = vl_queue_join(s->q);
            assert_non_null(s->join);
            s->in_call = 1;
            assert_int_equal(vl_queue_shutdown(s->q), VL_OK);
            s->in_call = 0;
            observe(s, 0);
        }
        return;
    }
    if (a->done % 5000 == (size_t)a->idx * 1000)
        assert_int_equal(vl_future_then(vl_loop_sleep(s->loop, 1), resume_put, a), VL_OK);
    else
        next_put(a);
}

static void get_done(vl_future *f, void *ud)
{
    actor *a = ud;
    stress *s = a->s;
    int id, p;
    long k;

    assert_false(s->in_call);
    assert_null(a->pending);
    if (vl_future_status(f) == VL_ECLOSED)
        return; /* closed and drained: this consumer is done */
    assert_int_equal(vl_future_status(f), VL_OK);
    id = ID(vl_future_take(f)) - 1;
    assert_true(id >= 0 && id < S_ITEMS);
    assert_int_equal(s->seen[id], 0);
    s->seen[id] = 1;
    s->received++;
    a->done++;
    p = id % S_ACTORS;
    k = id / S_ACTORS;
    if (s->kind == VL_QUEUE_FIFO) /* per producer, in the order it put */
        assert_true(k > s->last_k[p]);
    s->last_k[p] = k;
    assert_int_equal(vl_queue_task_done(s->q), VL_OK);
    if (a->done % 7000 == (size_t)a->idx * 1500)
        assert_int_equal(vl_future_then(vl_loop_sleep(s->loop, 1), resume_get, a), VL_OK);
    else
        next_get(a);
}

static void stress_run(vl_queue_kind kind)
{
    stress s;
    size_t i;

    memset(&s, 0, sizeof(s));
    s.loop = vl_loop_new();
    s.kind = kind;
    s.q = vl_queue_new(s.loop, kind, S_BOUND, NULL);
    s.seen = calloc(S_ITEMS, 1);
    s.model = calloc(S_ITEMS, sizeof(ment));
    assert_non_null(s.q);
    assert_non_null(s.seen);
    assert_non_null(s.model);
    s.producers_left = S_ACTORS;
    for (i = 0; i < S_ACTORS; i++) {
        s.last_k[i] = -1;
        s.prod[i] = (actor){&s, (int)i, NULL, 0};
        s.cons[i] = (actor){&s, (int)i, NULL, 0};
    }
    /* Consumers first, so that they wait; the producers start a little
     * later and soon fill the queue. */
    for (i = 0; i < S_ACTORS; i++)
        next_get(&s.cons[i]);
    for (i = 0; i < S_ACTORS; i++)
        assert_int_equal(vl_future_then(vl_loop_sleep(s.loop, 2), resume_put, &s.prod[i]), VL_OK);
    assert_int_equal(vl_loop_run(s.loop), VL_OK);
    assert_int_equal(s.received, S_ITEMS);
    for (i = 0; i < S_ITEMS; i++)
        assert_int_equal(s.seen[i], 1);
    assert_int_equal(s.mcount, 0);
    assert_true(s.puts_waited > 0);
    assert_true(s.gets_waited > 0);
    print_message("# %s: %zu puts and %zu gets waited\n",
                  kind == VL_QUEUE_FIFO ? "FIFO" : kind == VL_QUEUE_LIFO ? "LIFO" : "priority",
                  s.puts_waited, s.gets_waited);
    assert_non_null(s.join);
    assert_int_equal(vl_future_status(s.join), VL_OK);
    vl_future_free(s.join);
    vl_queue_free(s.q);
    free(s.seen);
    free(s.model);
    tu_finish(s.loop);
}

static void stress_fifo(void **state)
{
    (void)state;
    stress_run(VL_QUEUE_FIFO);
}

static void stress_lifo(void **state)
{
    (void)state;
    stress_run(VL_QUEUE_LIFO);
}

static void stress_priority(void **state)
{
    (void)state;
    stress_run(VL_QUEUE_PRIORITY);
}

/* The plain check of priorities: with all 100,000 items queued before the
 * 4 consumers start, the order in which their callbacks receive the items
 * (the order the gets completed) is sorted by priority, and by put order
 * among equal priorities. */
typedef struct sorted {
    vl_queue *q;
    int last;
    size_t n;
} sorted;

static void sorted_get(vl_future *f, void *ud)
{
    sorted *so = ud;
    int id;

    if (vl_future_status(f) == VL_ECLOSED)
        return;
    assert_int_equal(vl_future_status(f), VL_OK);
    id = ID(vl_future_value(f)) - 1;
    if (so->last >= 0) {
        int64_t a = item_priority(so->last), b = item_priority(id);
        assert_true(a < b || (a == b && so->last < id));
    }
    so->last = id;
    so->n++;
    assert_int_equal(vl_future_then(vl_queue_get(so->q), sorted_get, so), VL_OK);
}

static void priority_prefilled_is_sorted(void **state)
{
    vl_loop *loop = vl_loop_new();
    sorted so = {vl_queue_new(loop, VL_QUEUE_PRIORITY, 0, NULL), -1, 0};
    int i;

    (void)state;
    for (i = 0; i < S_ITEMS; i++)
        assert_int_equal(vl_queue_put_nowait_priority(so.q, PTR(i + 1), item_priority(i)), VL_OK);
    for (i = 0; i < S_ACTORS; i++)
        assert_int_equal(vl_future_then(vl_queue_get(so.q), sorted_get, &so), VL_OK);
    assert_int_equal(vl_queue_shutdown(so.q), VL_OK); /* gets drain, then stop */
    assert_int_equal(vl_loop_run(loop), VL_OK);
    assert_int_equal(so.n, S_ITEMS);
    vl_queue_free(so.q);
    tu_finish(loop);
}

/* ---- out of memory ---- */

/* Runs `call` and checks rule 1: a NULL return only when the armed
 * allocation failure (number n) happened inside it. */
#define OOM_CALL(var, n, call)                                                                 \
    do {                                                                                       \
        long before_ = tu_alloc_count();                                                       \
        (var) = (call);                                                                        \
        if ((var) == NULL)                                                                     \
            assert_true(before_ < (n) && (n) <= tu_alloc_count());                             \
    } while (0)

static int oom_freeing; /* set around vl_queue_free: the only place free_fn may run */
static void oom_item_free(void *p)
{
    assert_true(oom_freeing);
    item_free(p);
}

/* Every allocation of a sequence of gets, puts, a join and acquires fails
 * in turn. NULL comes back only from the call whose allocation failed, and
 * every item ends exactly one way: received by a get, still queued (freed
 * by vl_queue_free), or refused and so still the caller's. Nothing leaks. */
static void out_of_memory_everywhere(void **state)
{
    long n;
    int complete = 0;

    (void)state;
    for (n = 1; n < 400 && !complete; n++) {
        item it[3] = {{0, 0}, {1, 0}, {2, 0}};
        int mine[3] = {1, 1, 1}; /* the caller's until a put succeeds */
        int got[3] = {0, 0, 0};
        vl_future *g1, *g2, *p[3], *j, *a1, *a2;
        vl_loop *loop;
        vl_queue *q;
        vl_semaphore *s;
        int i;

        tu_alloc_fail_at(n);
        loop = vl_loop_new();
        if (loop == NULL) {
            assert_int_equal(tu_alloc_live(), 0);
            continue;
        }
        OOM_CALL(q, n, vl_queue_new(loop, VL_QUEUE_FIFO, 1, oom_item_free));
        OOM_CALL(s, n, vl_semaphore_new(loop, 1));
        if (q == NULL || s == NULL) {
            vl_queue_free(q);
            vl_semaphore_free(s);
            tu_loop_finish(loop);
            continue;
        }
        OOM_CALL(g1, n, vl_queue_get(q));          /* waits */
        OOM_CALL(p[0], n, vl_queue_put(q, &it[0])); /* to g1, or queued */
        OOM_CALL(p[1], n, vl_queue_put(q, &it[1])); /* queued, or waits */
        OOM_CALL(p[2], n, vl_queue_put(q, &it[2])); /* waits */
        OOM_CALL(g2, n, vl_queue_get(q));          /* takes one, admits one */
        OOM_CALL(j, n, vl_queue_join(q));
        OOM_CALL(a1, n, vl_semaphore_acquire(s)); /* at once */
        OOM_CALL(a2, n, vl_semaphore_acquire(s)); /* waits */
        if (a1 != NULL && vl_future_status(a1) == VL_OK)
            assert_int_equal(vl_semaphore_release(s), VL_OK); /* to a2, if it waits */
        for (i = 0; i < 3; i++)
            if (p[i] != NULL && vl_future_status(p[i]) == VL_OK)
                mine[i] = 0;
        /* Whatever is still pending (a join, a put) is freed, cancelled. */
        if (g1 != NULL && vl_future_status(g1) == VL_OK)
            got[((item *)vl_future_take(g1))->id]++;
        if (g2 != NULL && vl_future_status(g2) == VL_OK)
            got[((item *)vl_future_take(g2))->id]++;
        vl_future_free(g1);
        vl_future_free(g2);
        for (i = 0; i < 3; i++) {
            /* A put still waiting is cancelled here: its item stays mine. */
            if (p[i] != NULL && !vl_future_done(p[i]))
                assert_int_equal(vl_future_cancel(p[i]), 1);
            vl_future_free(p[i]);
        }
        if (a2 != NULL) /* at once, or from a1's release */
            assert_int_equal(vl_future_status(a2), VL_OK);
        vl_future_free(j);
        vl_future_free(a1);
        vl_future_free(a2);
        complete = n > tu_alloc_count(); /* no allocation failed this time */
        if (complete) {
            assert_int_equal(got[0] + got[1], 2); /* g1 took it[0], g2 it[1] */
            assert_int_equal(mine[0] + mine[1] + mine[2], 0);
        }
        oom_freeing = 1;
        vl_queue_free(q);
        oom_freeing = 0;
        vl_semaphore_free(s);
        for (i = 0; i < 3; i++)
            assert_int_equal(got[i] + it[i].freed + mine[i], 1);
        tu_alloc_fail_at(0);
        tu_finish(loop);
    }
    assert_true(complete);
}

/* ---- a real use: capping Redis commands in flight ----
 *
 * The header's example against the harness's Redis: 200 INCRs through a
 * pool of 16 connections, at most 5 in flight at any time, each one
 * acquiring before it sends and releasing when its reply came. */
#define R_JOBS 200
#define R_CAP 5

typedef struct rjob {
    vl_redis_pool *pool;
    vl_semaphore *sem;
    int *in_flight, *most, *ok;
    int held;
} rjob;

static vl_future *rjob_send(vl_future *acquired, void *ud)
{
    rjob *j = ud;

    (void)acquired;
    j->held = 1;
    if (++*j->in_flight > *j->most)
        *j->most = *j->in_flight;
    return vl_redis_pool_command(j->pool, "INCR volley:test_queue:sem");
}

static void rjob_done(vl_future *f, void *ud)
{
    rjob *j = ud;

    if (j->held) {
        --*j->in_flight;
        assert_int_equal(vl_semaphore_release(j->sem), VL_OK);
    }
    if (vl_future_status(f) == VL_OK)
        ++*j->ok;
}

static void semaphore_caps_redis_commands(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options o;
    vl_redis_pool *pool;
    vl_semaphore *sem = vl_semaphore_new(loop, R_CAP);
    rjob jobs[R_JOBS];
    int in_flight = 0, most = 0, ok = 0, i;
    vl_future *f;
    long long before, after;

    (void)state;
    vl_redis_pool_options_init(&o);
    o.max_size = 16;
    pool = vl_redis_pool_new(loop, tu_redis_url(0), &o);
    assert_non_null(pool);
    f = tu_run_cmd(loop, vl_redis_pool_command(pool, "INCR volley:test_queue:sem"), VL_OK);
    assert_int_equal(vl_redis_reply_integer(vl_future_redis_reply(f), &before), VL_OK);
    vl_future_free(f);
    for (i = 0; i < R_JOBS; i++) {
        jobs[i] = (rjob){pool, sem, &in_flight, &most, &ok, 0};
        assert_int_equal(vl_future_then(vl_future_chain(vl_semaphore_acquire(sem), rjob_send,
                                                        &jobs[i]),
                                        rjob_done, &jobs[i]),
                         VL_OK);
    }
    assert_int_equal(vl_semaphore_value(sem), 0);
    assert_int_equal(vl_loop_run(loop), VL_OK);
    assert_int_equal(ok, R_JOBS);
    assert_int_equal(most, R_CAP);
    assert_int_equal(in_flight, 0);
    assert_int_equal(vl_semaphore_value(sem), R_CAP);
    f = tu_run_cmd(loop, vl_redis_pool_command(pool, "INCR volley:test_queue:sem"), VL_OK);
    assert_int_equal(vl_redis_reply_integer(vl_future_redis_reply(f), &after), VL_OK);
    vl_future_free(f);
    assert_int_equal(after - before, R_JOBS + 1); /* each INCR ran once */
    vl_semaphore_free(sem);
    vl_redis_pool_free(pool);
    tu_finish(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(rule2_never_inside_the_call, q_setup),
        cmocka_unit_test_setup(kinds_order_nowait, q_setup),
        cmocka_unit_test_setup(full_queue_puts_wait_in_order, q_setup),
        cmocka_unit_test_setup(waiting_gets_served_in_order, q_setup),
        cmocka_unit_test_setup(cancelled_gets_lose_nothing, q_setup),
        cmocka_unit_test_setup(cancelled_puts_never_enter, q_setup),
        cmocka_unit_test_setup(close_with_waiters, q_setup),
        cmocka_unit_test_setup(free_with_waiters, q_setup),
        cmocka_unit_test_setup(free_from_callback, q_setup),
        cmocka_unit_test_setup(close_from_callback, q_setup),
        cmocka_unit_test_setup(loop_free_with_waiters, q_setup),
        cmocka_unit_test_setup(join_and_task_done, q_setup),
        cmocka_unit_test_setup(waiting_holds_the_loop, q_setup),
        cmocka_unit_test_setup(semaphore_rules, q_setup),
        cmocka_unit_test_setup(null_handles, q_setup),
        cmocka_unit_test_setup(stress_fifo, q_setup),
        cmocka_unit_test_setup(stress_lifo, q_setup),
        cmocka_unit_test_setup(stress_priority, q_setup),
        cmocka_unit_test_setup(priority_prefilled_is_sorted, q_setup),
        cmocka_unit_test_setup(out_of_memory_everywhere, q_setup),
        cmocka_unit_test_setup(semaphore_caps_redis_commands, q_setup),
    };

    return tu_run("queue", tests, sizeof(tests) / sizeof(tests[0]));
}
