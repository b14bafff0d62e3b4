/* SPDX-License-Identifier: BSD-3-Clause */
/* volley/queue.h - queues and semaphores between futures on one loop:
 * asyncio.Queue, LifoQueue, PriorityQueue and BoundedSemaphore.
 *
 * A vl_queue hands items (void *) from producers to consumers; a
 * vl_semaphore caps how many operations run at once. Both live on one loop
 * and belong to its thread (volley/loop.h); neither does any I/O. A call
 * that would wait in asyncio returns a vl_future * that follows the rules
 * of volley/future.h; the _nowait and try_ calls never wait and return an
 * int.
 *
 * ---- Queues ---------------------------------------------------------------
 *
 * Kinds, the order in which gets receive the queued items:
 *   VL_QUEUE_FIFO      first in, first out (asyncio.Queue);
 *   VL_QUEUE_LIFO      last in, first out (asyncio.LifoQueue);
 *   VL_QUEUE_PRIORITY  the lowest priority number first (asyncio's
 *                      PriorityQueue gives the smallest entry); equal
 *                      priorities in the order their items entered the
 *                      queue. The priority is a per-item int64_t given to
 *                      vl_queue_put_priority; vl_queue_put means priority 0.
 *                      FIFO and LIFO queues ignore priorities.
 * max_size bounds the items queued (0 = unbounded). A put into a full
 * queue waits for room; putters are admitted in the order they called
 * (fair FIFO), each as soon as a get makes room, so a later put never
 * overtakes a waiting one. Gets that find the queue empty wait likewise, in
 * the order they called.
 *
 * Ownership of an item. An item is the caller's until its put succeeds:
 * vl_queue_put_nowait returned VL_OK, or the put future completed with
 * VL_OK (at once when there was room, else when it was admitted). From then
 * it is the queue's, until a get hands it out: get_nowait stores it in
 * *item (the caller's now), a get future carries it as its value (take it
 * with vl_future_take; the caller then owns it). A put that fails
 * (VL_ECLOSED, VL_ECANCELED, VL_ETIMEDOUT, VL_ENOMEM, or NULL returned)
 * never enqueued its item: it stays the caller's, and volley never frees
 * it. The queue's free_fn (may be NULL) frees only what the queue owns:
 * items still queued when the queue is freed, and the value of a get future
 * that is freed without vl_future_take (future.h rule 3: a consumed future
 * frees its value after its callback returns; one you hold frees it in
 * vl_future_free). With free_fn NULL, volley never frees an item. An item
 * may be NULL (the get's value is then NULL); free_fn is never called with
 * NULL. free_fn must not call into the queue.
 *
 * ---- Rules ----------------------------------------------------------------
 *
 *  1. A call that returns a future returns NULL only when out of memory or
 *     when the queue or semaphore is NULL; nothing changed then (an item
 *     stays the caller's). Every other failure arrives through the future:
 *     VL_ECLOSED for a put into a closed queue, a get from a closed queue
 *     that is empty, or any call on an object being freed with its loop.
 *  2. Every future completes exactly once, and its callback runs from the
 *     loop, never inside the call that made it, even when it completed at
 *     once (a put with room, a get with an item queued, an acquire with a
 *     permit free). A future may complete inside a later call of the same
 *     queue or semaphore (a put completes the oldest waiting get), but its
 *     callback still runs from the loop afterwards.
 *  3. An item is never lost and never delivered twice. It leaves the queue
 *     only in the step that completes one get future with it (or in
 *     get_nowait), and a completed future cannot be cancelled any more
 *     (future.h rule 4): its callback, or whoever holds it, receives the
 *     item. So a get cancelled, timed out or freed while it waits takes
 *     nothing: the items stay queued, in their order, for the next get. The
 *     same holds for permits: a permit leaves the semaphore only by
 *     completing an acquire with VL_OK (or by try_acquire), and that
 *     acquire's caller then holds it; an acquire cancelled while it waits
 *     holds nothing, and the next release goes to the next waiter. Likewise
 *     a put cancelled while it waits never enters the queue.
 *  4. vl_queue_shutdown (asyncio's Queue.shutdown): every waiting get and put
 *     completes once with VL_ECLOSED; later puts fail with VL_ECLOSED;
 *     gets go on receiving the items still queued, then fail with
 *     VL_ECLOSED. vl_queue_free and vl_semaphore_free complete every
 *     waiting future (gets, puts, joins, acquires) with VL_ECANCELED;
 *     vl_loop_free frees a queue or semaphore still open on it.
 *  5. Freeing a queue or semaphore, closing a queue, cancelling or freeing
 *     any of their futures is legal from inside any callback, their own
 *     included. None of these calls runs a callback inside itself.
 *  6. The loop-alive rule of volley/loop.h: a waiting get, put, join or
 *     acquire keeps vl_loop_run running (someone awaits it), as a pending
 *     command does; an idle queue or semaphore does not. A get on a queue
 *     nobody will ever put into therefore waits as asyncio's would: give it
 *     a deadline (vl_future_timeout) or close the queue.
 *
 * Counting work (asyncio's task_done and join): each successful put adds
 * one unfinished item; vl_queue_task_done removes one; vl_queue_join
 * completes when the count is zero. Closing does not change the count.
 *
 * ---- Semaphores -------------------------------------------------------------
 *
 * A vl_semaphore holds `value` permits (asyncio.BoundedSemaphore): acquire
 * takes one, waiting in FIFO order when none is free, and release gives one
 * back, to the oldest waiting acquire if there is one. Releasing more
 * permits than were taken is refused (VL_EINVAL). Capping the Redis
 * commands in flight at 8, whatever the number of jobs:
 *
 *     struct job { vl_redis_pool *pool; vl_semaphore *sem; const char *key; int held; };
 *
 *     static vl_future *send(vl_future *acquired, void *ud)
 *     {
 *         struct job *j = ud;
 *
 *         (void)acquired;               // VL_OK: we hold a permit now
 *         j->held = 1;
 *         return vl_redis_pool_command(j->pool, "GET %s", j->key);
 *     }
 *
 *     static void done(vl_future *f, void *ud)
 *     {
 *         struct job *j = ud;
 *
 *         if (j->held)                  // the acquire succeeded, so release
 *             vl_semaphore_release(j->sem);
 *         // ... vl_future_status(f), vl_future_redis_reply(f) ...
 *     }
 *
 *     vl_semaphore *sem = vl_semaphore_new(loop, 8);
 *     // for each job j:
 *     vl_future_then(vl_future_chain(vl_semaphore_acquire(sem), send, j), done, j);
 *
 * The chain never runs `send` when the acquire failed (the semaphore was
 * freed: VL_ECANCELED), so `held` tells `done` whether to release. Error
 * handling of NULL returns is left out for brevity.
 */
#ifndef VOLLEY_QUEUE_H
#define VOLLEY_QUEUE_H

#include "future.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vl_queue vl_queue;
typedef struct vl_semaphore vl_semaphore;

typedef enum vl_queue_kind {
    VL_QUEUE_FIFO = 0,
    VL_QUEUE_LIFO = 1,
    VL_QUEUE_PRIORITY = 2
} vl_queue_kind;

/* Makes an empty queue of `kind` on `loop`, holding at most max_size items
 * (0 = unbounded). free_fn (may be NULL) frees the items the queue owns
 * when it drops them (see "Ownership of an item"). Returns NULL when out of
 * memory, when loop is NULL or when kind is none of the three. The caller
 * frees it with vl_queue_free, or vl_loop_free does. */
VL_EXPORT vl_queue *vl_queue_new(vl_loop *loop, vl_queue_kind kind, size_t max_size,
                                 vl_free_fn free_fn);

/* Puts `item` (priority 0) at its place in the queue. Returns a future that
 * completes with VL_OK once the item is queued: at once when there is room
 * (or a get waits for it, which then receives it), otherwise when a get
 * made room for it and every put waiting before it was admitted. Fails with
 * VL_ECLOSED when the queue is closed, or becomes closed while the put
 * waits. On any failure the item stays the caller's (it was never queued).
 * The future has no value. Returns NULL only when out of memory or q is
 * NULL. */
VL_EXPORT vl_future *vl_queue_put(vl_queue *q, void *item);

/* vl_queue_put with a priority: on a VL_QUEUE_PRIORITY queue the lowest
 * number comes out first; FIFO and LIFO queues ignore it. */
VL_EXPORT vl_future *vl_queue_put_priority(vl_queue *q, void *item, int64_t priority);

/* Puts without waiting. Returns VL_OK (the item left the caller: it is
 * queued, or went to the oldest waiting get), VL_EBUSY when the queue is full,
 * VL_ECLOSED when it is closed, VL_ENOMEM when out of memory, VL_EINVAL
 * when q is NULL. On any failure the item stays the caller's. */
VL_EXPORT int vl_queue_put_nowait(vl_queue *q, void *item);

/* vl_queue_put_nowait with a priority (as vl_queue_put_priority). */
VL_EXPORT int vl_queue_put_nowait_priority(vl_queue *q, void *item, int64_t priority);

/* Takes the next item (by the queue's kind). Returns a future that completes
 * with VL_OK and the item as its value (read it with vl_future_value, keep
 * it with vl_future_take): at once when an item is queued, otherwise when a
 * put gives one, the gets that waited before it served first. When the get
 * took an item from a full queue, the oldest waiting put is admitted.
 * Fails with VL_ECLOSED when the queue is closed and empty. Cancelling it,
 * a deadline on it or freeing it while it waits takes no item (rule 3).
 * Returns NULL only when out of memory or q is NULL. */
VL_EXPORT vl_future *vl_queue_get(vl_queue *q);

/* Takes the next item without waiting, into *item (the caller's now).
 * Returns VL_OK, VL_EBUSY when the queue is empty (nothing to take without
 * waiting: the code every _nowait and try_ call gives when it would have to
 * wait), VL_ECLOSED when it is closed and empty, VL_EINVAL when q or item
 * is NULL. *item is NULL on failure. Like vl_queue_get, it admits the
 * oldest waiting put. */
VL_EXPORT int vl_queue_get_nowait(vl_queue *q, void **item);

/* Items queued now (not counting those of waiting puts); 0 for NULL. */
VL_EXPORT size_t vl_queue_size(const vl_queue *q);

/* 1 when no item is queued (also for NULL), else 0. */
VL_EXPORT int vl_queue_empty(const vl_queue *q);

/* 1 when the queue is bounded and holds max_size items, else 0 (also for
 * NULL). A put would then wait. */
VL_EXPORT int vl_queue_full(const vl_queue *q);

/* Marks one item taken from the queue as processed (asyncio's task_done).
 * When no item is left unfinished, every waiting join completes with VL_OK
 * (from the loop). Returns VL_OK, VL_ESTATE when called more often than
 * items were put, VL_EINVAL when q is NULL. */
VL_EXPORT int vl_queue_task_done(vl_queue *q);

/* Returns a future that completes with VL_OK once every item put so far
 * (and any put before that) was marked with vl_queue_task_done: at once
 * when none is unfinished. No value. Returns NULL only when out of memory
 * or q is NULL. */
VL_EXPORT vl_future *vl_queue_join(vl_queue *q);

/* Shuts the queue down (rule 4; asyncio's Queue.shutdown, and not a
 * volley _close, which would also free it): waiting gets and puts complete
 * with VL_ECLOSED, later puts fail, gets drain what is queued and then
 * fail. The queue stays allocated until vl_queue_free. A second call does
 * nothing. Returns VL_OK, or VL_EINVAL when q is NULL. */
VL_EXPORT int vl_queue_shutdown(vl_queue *q);

/* Frees the queue at once: every waiting get, put and join completes with
 * VL_ECANCELED (callbacks from the loop; a waiting put's item stays the
 * caller's), queued items are freed with free_fn (not touched when it is
 * NULL). Futures already completed
 * keep their results: a get that received an item still delivers it. Legal
 * from inside any callback. NULL is a no-op. */
VL_EXPORT void vl_queue_free(vl_queue *q);

/* Makes a semaphore with `value` permits (1 or more), which is also the
 * most it may hold: a release beyond it is refused. Returns NULL when out
 * of memory, loop is NULL or value is 0. */
VL_EXPORT vl_semaphore *vl_semaphore_new(vl_loop *loop, size_t value);

/* Takes a permit. Returns a future that completes with VL_OK when the
 * caller holds one: at once when one is free and nobody waits, otherwise
 * when a release passes one on, the acquires that waited before it served
 * first. The holder gives it back with vl_semaphore_release. Cancelling it,
 * a deadline on it or freeing it while it waits takes no permit (rule 3).
 * Fails with VL_ECANCELED when the semaphore is freed while it waits. No
 * value. Returns NULL only when out of memory or s is NULL. */
VL_EXPORT vl_future *vl_semaphore_acquire(vl_semaphore *s);

/* Takes a permit without waiting. Returns VL_OK (the caller holds it),
 * VL_EBUSY when none is free, VL_EINVAL when s is NULL, VL_ECLOSED while
 * its loop frees it. */
VL_EXPORT int vl_semaphore_try_acquire(vl_semaphore *s);

/* Gives a permit back: to the oldest waiting acquire, which completes with
 * VL_OK (from the loop), or to the semaphore. Returns VL_OK, VL_EINVAL when
 * every permit is already free (bounded: more releases than acquires) or s
 * is NULL, VL_ECLOSED while its loop frees it. */
VL_EXPORT int vl_semaphore_release(vl_semaphore *s);

/* Permits free now; 0 for NULL. */
VL_EXPORT size_t vl_semaphore_value(const vl_semaphore *s);

/* Frees the semaphore at once: every waiting acquire completes with
 * VL_ECANCELED. Permits still held are forgotten: their holders must not
 * release them afterwards. Legal from inside any callback. NULL is a no-op. */
VL_EXPORT void vl_semaphore_free(vl_semaphore *s);

#ifdef __cplusplus
}
#endif
#endif
