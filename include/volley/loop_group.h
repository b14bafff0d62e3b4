/* SPDX-License-Identifier: BSD-3-Clause */
/* volley/loop_group.h - a loop on every core (aiomultiprocess's Pool).
 *
 * A vl_loop_group runs n worker threads, each with a vl_loop of its own,
 * and hands jobs to them from the "home" loop, the loop of the thread that
 * made the group. A job is a function that runs on one worker loop's thread
 * and returns a future of that loop (a chain of Redis commands, say); when
 * that future completes, its status, message and value travel back and
 * complete the future the home loop got from vl_loop_group_submit.
 *
 * Threads. The group belongs to the home loop's thread, like every object
 * of a loop (volley/loop.h): vl_loop_group_new, _submit, _submit_to, the
 * stats calls and _free are called from that thread only (a submit from
 * another thread is refused: it returns NULL). Each worker loop and
 * everything made on it (its Redis pools, its futures) belongs to that
 * worker's thread: only the group's callbacks and the job functions, which
 * run there, may touch them. The hand-off between threads is the one path
 * of this file: a mutex-guarded list per direction and an ev_async wake-up,
 * as vl_loop_run_in_thread does; no volley object is shared.
 *
 * The allocator (vl_allocator_set) is then called from every worker thread
 * at once, and memory allocated on one thread (a reply, a message) is freed
 * on another: it must be thread-safe, as malloc, the default, is.
 *
 * The rules, in the numbering of volley/future.h:
 *
 *  1. vl_loop_group_submit returns NULL only when out of memory, when g is
 *     NULL or when called off the home thread. Every other failure arrives
 *     through the future: no job function or an index out of range
 *     (VL_EINVAL), a job returning a future of another loop or one already
 *     consumed (VL_EINVAL: that future is not touched), a group being
 *     freed (VL_ECLOSED), a job function that returned NULL (VL_ENOMEM), the
 *     worker future's own failure (its status and message).
 *  2. The home future completes exactly once, and its callback runs from the
 *     home loop, never inside submit (the job runs on another thread, so
 *     its result is always later).
 *  3. The home future is the caller's (then, a combinator, or
 *     vl_future_free). The worker future is the group's: the job function
 *     gives it up by returning it, and the group consumes it on the worker.
 *  4. Cancelling the home future (vl_future_cancel, a deadline, freeing it)
 *     completes it at once with VL_ECANCELED and cancels the worker future
 *     on its own thread shortly after (a job that has not started yet never
 *     runs); whatever the worker future delivers then is freed there or on
 *     the home thread, never given to anyone. Freeing the group completes
 *     every pending home future with VL_ECANCELED.
 *  5. vl_loop_group_free is legal from inside a home-loop callback.
 *
 * Values. The worker future's value moves to the home future: read it there
 * with the same typed accessor (vl_future_redis_reply,
 * vl_future_mysql_result, vl_future_fanout) and keep it with
 * vl_future_take; its free function travels with it, so a value nobody
 * takes is freed exactly once, on the home thread. A value must not hold
 * pointers into the worker loop's objects: a vl_redis_reply, a
 * vl_mysql_result and a vl_fanout_result are self-contained and travel; a
 * vl_mysql_tx or a lease, which are connections of the worker loop, never
 * may. A job's own result (an aggregate of many replies, say) travels when
 * it is made with vl_loop_group_value, which records its free function.
 * Those are the kinds that travel; a worker future with a value of another
 * kind (a promise's or vl_loop_run_in_thread's, whose free function the
 * future does not give away) fails the home future with VL_EUNSUPPORTED,
 * and the value is freed on the worker.
 *
 * Placement. vl_loop_group_submit picks the least-loaded loop: the fewest
 * jobs submitted and not yet finished there (a cancelled job counts until
 * its worker future is done, since it still occupies that loop); among
 * equals, the next one after the loop chosen last (round-robin).
 *
 * The loop-alive rule of volley/loop.h: a pending home future keeps the
 * home loop's vl_loop_run running; an idle group, or one whose every job
 * was cancelled, does not. The worker loops run until the group is freed.
 *
 * Tuning: each worker loop runs for as long as the group lives, so the
 * cost of a job is one hand-off each way (a lock and, when the other side
 * sleeps, one wake-up); jobs that do a few microseconds of work are better
 * batched into one job.
 *
 *     static vl_future *get(vl_loop *loop, void *loop_ud, void *arg)
 *     {
 *         (void)loop;
 *         return vl_redis_pool_command(loop_ud, "GET %s", (const char *)arg);
 *     }
 *
 *     static int open_pool(vl_loop *loop, size_t index, void **loop_ud, void *ud)
 *     {
 *         (void)index;
 *         *loop_ud = vl_redis_pool_new(loop, ud, NULL);
 *         return *loop_ud != NULL ? VL_OK : VL_ENOMEM;
 *     }
 *
 *     static void close_pool(vl_loop *loop, size_t index, void *loop_ud, void *ud)
 *     {
 *         vl_redis_pool_free(loop_ud);
 *     }
 *
 *     vl_loop_group_options o;
 *     vl_loop_group_options_init(&o);
 *     o.init = open_pool;
 *     o.fini = close_pool;
 *     o.ud = "redis://127.0.0.1:6379";
 *     vl_loop_group *g = vl_loop_group_new(loop, 0, &o);   // one loop per CPU
 *     vl_future_then(vl_loop_group_submit(g, get, "key"), on_reply, NULL);
 *     vl_loop_run(loop);                                    // on_reply gets the GET's reply
 *     vl_loop_group_free(g);
 */
#ifndef VOLLEY_LOOP_GROUP_H
#define VOLLEY_LOOP_GROUP_H

#include "future.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vl_loop_group vl_loop_group;

/* A job: runs once, from worker loop `loop` (index's loop), on its thread,
 * with that loop's user pointer (set by the init callback; NULL without
 * one) and the `arg` given to submit. Returns a future of `loop` (the group
 * consumes it), or NULL when out of memory (the home future then fails with
 * VL_ENOMEM). It may return a future that has already completed. */
typedef vl_future *(*vl_group_fn)(vl_loop *loop, void *loop_ud, void *arg);

/* Runs on worker loop number `index`'s thread before it takes any job, to
 * open that loop's own connections; stores that loop's user pointer in
 * *loop_ud (NULL before the call). Returns VL_OK, or a failure, which makes
 * vl_loop_group_new fail. `ud` is the options' ud. */
typedef int (*vl_group_init_fn)(vl_loop *loop, size_t index, void **loop_ud, void *ud);

/* Runs on worker loop `index`'s thread when the group is freed (only for a
 * loop whose init succeeded), after every job's worker future there was
 * cancelled and before the loop is freed (which frees what fini left). */
typedef void (*vl_group_fini_fn)(vl_loop *loop, size_t index, void *loop_ud, void *ud);

/* Options; the ABI rule of vl_redis_options: start from
 * vl_loop_group_options_init(&o), which records the size your program was
 * built with. */
typedef struct vl_loop_group_options {
    size_t struct_size;    /* set by vl_loop_group_options_init */
    vl_group_init_fn init; /* NULL: none */
    vl_group_fini_fn fini; /* NULL: none */
    void *ud;              /* passed to init and fini; borrowed until the group is freed */
} vl_loop_group_options;

VL_EXPORT void vl_loop_group_options_init_sized(vl_loop_group_options *o, size_t struct_size);
#define vl_loop_group_options_init(o) vl_loop_group_options_init_sized((o), sizeof(*(o)))

/* Makes a group of `n` worker loops (0: one per online CPU, at most 256),
 * each on a thread of its own, for jobs submitted from `home`, whose thread
 * must be the calling one. Waits until every worker's init callback has
 * returned (init does not block: it starts connecting). `o` may be NULL.
 * Returns NULL when home is NULL, n is over 256, `o` has an unknown
 * struct_size, out of memory, a thread cannot start, or an init callback
 * failed (fini then runs on the loops whose init succeeded, and every
 * thread is joined before this returns). The caller frees the group with
 * vl_loop_group_free; vl_loop_free(home) frees it too. */
VL_EXPORT vl_loop_group *vl_loop_group_new(vl_loop *home, size_t n,
                                           const vl_loop_group_options *o);

/* Submits a job to the least-loaded loop (see "Placement"): fn(loop,
 * loop_ud, arg) runs there on its thread. Returns a future of the home loop
 * that completes (from the home loop) with the status, message and value of
 * the future fn returned (see "Values"), VL_ENOMEM when fn returned NULL,
 * VL_ECANCELED when cancelled or the group was freed. `arg` is borrowed by
 * fn and its future until they are done on the worker: after a cancel that
 * may be a little later than the home future's completion; once the group
 * is freed, it is certain. fn NULL fails the future with VL_EINVAL. Returns
 * NULL when out of memory, g is NULL, or when called from a thread that is
 * not the home loop's (the one that made the group). */
VL_EXPORT vl_future *vl_loop_group_submit(vl_loop_group *g, vl_group_fn fn, void *arg);

/* The same on loop number `index` (0 .. vl_loop_group_size(g) - 1); an
 * index out of range fails the future with VL_EINVAL. */
VL_EXPORT vl_future *vl_loop_group_submit_to(vl_loop_group *g, size_t index, vl_group_fn fn,
                                             void *arg);

/* For a job's own result: returns a future of `loop` (a worker loop: call
 * it on its thread, from the job or a step of its chain), already completed
 * with VL_OK and `value`, which travels to the home future with `free_fn`
 * (may be NULL: volley never frees it then). On home, vl_future_value
 * returns `value`; vl_future_take gives it to the caller. If the future is
 * freed before it reached home (a cancelled job), value is freed with
 * free_fn on the worker. The caller owns the future (a job returns it).
 * Returns NULL when out of memory or loop is NULL: `value` is then still
 * the caller's. */
VL_EXPORT vl_future *vl_loop_group_value(vl_loop *loop, void *value, vl_free_fn free_fn);

/* The number of worker loops; 0 for NULL. */
VL_EXPORT size_t vl_loop_group_size(const vl_loop_group *g);

/* Jobs submitted to loop `index` whose home future has not been given its
 * result yet (a cancelled one counts until its worker future is done);
 * 0 for NULL or an index out of range. Home thread only. */
VL_EXPORT size_t vl_loop_group_pending(const vl_loop_group *g, size_t index);

/* Jobs of loop `index` finished since the group was made (whatever their
 * status, cancelled ones included); 0 for NULL or out of range. */
VL_EXPORT uint64_t vl_loop_group_completed(const vl_loop_group *g, size_t index);

/* Frees the group now: every pending home future completes with
 * VL_ECANCELED (callbacks from the home loop, later), every job's worker
 * future is cancelled on its thread, fini runs on each worker loop, the
 * worker loops are freed and their threads joined before this returns (so
 * it waits for a job function or fini that is running). Results that were
 * on their way are freed. Legal from inside a home-loop callback; never
 * from a job function, init or fini. NULL is a no-op. */
VL_EXPORT void vl_loop_group_free(vl_loop_group *g);

#ifdef __cplusplus
}
#endif
#endif
