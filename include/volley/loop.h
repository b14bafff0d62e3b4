/* SPDX-License-Identifier: BSD-3-Clause */
/* volley/loop.h - the event loop every volley object lives on.
 *
 * A vl_loop wraps one libev loop. Bring your own (vl_loop_wrap) when the
 * service already runs libev, or let volley make one (vl_loop_new).
 *
 * Threads: a loop and everything made on it (futures, connections, pools)
 * belong to the thread that runs the loop. No volley call on those objects is
 * safe from another thread. The one documented cross-thread path is
 * vl_loop_run_in_thread() in volley/future.h.
 *
 * Fair shares: one loop iteration handles at most 128 Redis replies (and
 * the completion callbacks they run), however many requests are in flight
 * and however fast the servers answer; what arrived beyond that waits in
 * its connection for the next iterations, whose poll does not block, and
 * the connections take turns, round robin. A timer, a new connection or a
 * quiet connection among busy ones waits for one such share of work at
 * most, never for a whole burst (volley-bench -t cluster-refresh measures
 * the longest iteration with 1,000 requests in flight over a cluster while
 * its map is refreshed). Nothing is lost or reordered: replies that
 * arrived before a connection closed are all delivered before it is seen
 * to be down (over TLS, those OpenSSL had not yet decrypted when a write
 * failed cannot be), and a command or connect deadline that fires while
 * its connection waits for a turn first takes what has arrived, so a reply
 * that came in time is never judged late.
 */
#ifndef VOLLEY_LOOP_H
#define VOLLEY_LOOP_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

struct ev_loop;
typedef struct vl_loop vl_loop;
typedef struct vl_future vl_future;

/* Makes a loop on a new libev loop that volley owns and frees.
 * Returns NULL when out of memory or when libev cannot make a backend. */
VL_EXPORT vl_loop *vl_loop_new(void);

/* Makes a loop on the caller's libev loop. volley never frees `ev` and never
 * calls ev_run on it except from vl_loop_run / vl_loop_run_until; the caller
 * may run it with ev_run as usual, and volley's callbacks then fire from there.
 * Returns NULL when out of memory. */
VL_EXPORT vl_loop *vl_loop_wrap(struct ev_loop *ev);

/* The libev loop underneath (borrowed; valid until vl_loop_free). */
VL_EXPORT struct ev_loop *vl_loop_ev(vl_loop *loop);

/* Runs the loop until it has nothing left to do. Returns VL_OK, or
 * VL_ECLOSED when a callback freed the loop (it is gone when this returns).
 *
 * The loop-alive rule, the same for every object (Redis and MySQL
 * connections and pools, fan-outs): an object keeps vl_loop_run running
 * only while a future of it is pending: a command or statement queued or in
 * flight, a connect that a future waits for (vl_redis_ready, vl_mysql_ready,
 * a pool's _ready, a request waiting in a pool), a sleep, a job on a
 * thread. Idle connections and pools, their reconnect, keepalive and
 * housekeeping timers, and a connect nobody waits for (one whose future was
 * cancelled or timed out) never do: they go on working while the loop runs
 * for another reason, and vl_loop_run returns without waiting for them. A
 * future's own deadline (vl_future_timeout) keeps the loop running until it
 * fires. One object differs, because messages are what it waits for: a
 * Redis subscriber (volley/pubsub.h) keeps the loop running while it has a
 * subscription or a pending future, as a listening server would. */
VL_EXPORT int vl_loop_run(vl_loop *loop);

/* Runs the loop until `f` completes, like asyncio's run_until_complete.
 * `f` stays owned by the caller, who reads its result and then calls
 * vl_future_free(). Returns f's status; VL_EINVAL when f is NULL, was given
 * to vl_future_then or a combinator, or belongs to another loop; VL_ESTATE
 * when nothing is left that could complete f (no watcher, nothing queued:
 * f stays pending) or when called from inside a volley callback; VL_ECLOSED
 * when a callback freed the loop. Other futures and connections keep
 * running while it waits. */
VL_EXPORT int vl_loop_run_until(vl_loop *loop, vl_future *f);

/* Number of volley's watchers that keep the loop running (timers, sockets,
 * pending callbacks; an idle pooled connection does not count). 0 means volley
 * has nothing left to do on it; every test ends by checking that. */
VL_EXPORT unsigned vl_loop_alive(vl_loop *loop);

/* Milliseconds of a monotonic clock (never steps back with the wall clock). */
VL_EXPORT uint64_t vl_loop_now_ms(vl_loop *loop);

/* ---- Futures the loop makes -------------------------------------------- */

/* A sleep (asyncio.sleep): completes with VL_OK after `ms` milliseconds,
 * counted from this call (never less). Cancelling it stops the timer.
 * Returns NULL when out of memory. */
VL_EXPORT vl_future *vl_loop_sleep(vl_loop *loop, uint64_t ms);

/* A signal (asyncio's loop.add_signal_handler, as a future): completes
 * with VL_OK when the process next receives `signo`, from the loop like
 * any callback (never from the signal handler, so the callback may call
 * anything). Signals that arrive while no future waits for them keep their
 * default disposition: a second SIGINT while nothing waits ends the
 * process, as a user pressing Ctrl-C twice expects. To keep catching a
 * signal, ask again from the callback. Any number of futures of one loop
 * may wait for the same signal (each completes once); a signal another
 * loop of the process waits for fails the future with VL_EBUSY (libev lets
 * one loop at a time watch a signal), SIGKILL, SIGSTOP or a number out of
 * range with VL_EINVAL. A waiting future keeps vl_loop_run running (a
 * server waits for its SIGTERM); cancel or free it to stop waiting, which
 * gives the signal back its default disposition once no future of the loop
 * waits for it. Freeing the loop completes it with VL_ECANCELED. Returns
 * NULL only when out of memory or loop is NULL. */
VL_EXPORT vl_future *vl_loop_signal(vl_loop *loop, int signo);

/* ---- Work on a thread ----------------------------------------------------
 * The one cross-thread path (asyncio's run_in_executor): `fn(ud)` runs on a
 * worker thread owned by the loop; its return value becomes the future's
 * value, freed with `free_fn` if nobody takes it. `fn` must not touch volley
 * objects. Cancelling the future does not stop a running `fn`: its result is
 * then freed when it returns. If the loop is freed before a worker took the
 * job, `fn` never runs and the future fails with VL_ECANCELED ("loop freed
 * before the job ran"): memory that `fn` would have freed is then the
 * caller's to free. Workers start on first use (at most `threads`
 * of them, set by vl_loop_set_threads, default 4) and stop with the loop. */
typedef void *(*vl_work_fn)(void *ud);
VL_EXPORT vl_future *vl_loop_run_in_thread(vl_loop *loop, vl_work_fn fn, void *ud,
                                           vl_free_fn free_fn);
/* Sets the most worker threads vl_loop_run_in_thread may start (1..256).
 * Returns VL_OK, VL_EINVAL out of range, VL_ESTATE once a worker started. */
VL_EXPORT int vl_loop_set_threads(vl_loop *loop, unsigned threads);

/* Frees the loop. Every connection and pool still open on it is freed first,
 * which completes their pending futures with VL_ECANCELED; those callbacks,
 * and any already due, run before this returns. The libev loop is destroyed
 * only if volley made it. Legal from inside a callback: the teardown then
 * happens once the callback returns to the loop. When volley made the libev
 * loop, run it with vl_loop_run / vl_loop_run_until, not your own ev_run:
 * a free from a callback needs them to destroy it. */
VL_EXPORT void vl_loop_free(vl_loop *loop);

#ifdef __cplusplus
}
#endif
#endif
