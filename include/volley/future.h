/* SPDX-License-Identifier: BSD-3-Clause */
/* volley/future.h - futures: one result, delivered once, from the loop.
 *
 * Every volley operation returns a vl_future *. The future completes with a
 * status (VL_OK or a negative code from volley/common.h), an optional value
 * (a Redis reply, a MySQL result...) and, on failure, a message.
 *
 * The rules. Each has a contract test in tests/test_future.c.
 *
 *  1. A call returns a vl_future *. NULL means out of memory, or that the
 *     handle it was given (loop, connection, pool, lease, transaction) is
 *     NULL: with no loop there is nowhere to deliver a failure, and a NULL
 *     handle is a programming error, never something the network causes.
 *     Every other failure, even one known before any I/O (a bad argument, a
 *     closed pool, a malformed URL), arrives through the future. The same
 *     rule for the other calls: one returning int gives VL_EINVAL for a
 *     NULL handle, one returning void does nothing.
 *  2. A future completes exactly once. Its callback runs exactly once, from
 *     the event loop: never inside the call that created the future and never
 *     inside vl_future_then, even when the result is already known.
 *  3. vl_future_then consumes the future: volley frees it (and its value,
 *     unless taken with vl_future_take) after the callback returns.
 *     Combinators (vl_future_all, vl_future_any) take ownership of their
 *     inputs; vl_future_timeout returns its input. A future nobody consumed is
 *     the caller's to vl_future_free.
 *  4. Cancelling delivers VL_ECANCELED once; cancelling a completed future
 *     does nothing. Freeing a connection, pool or loop completes each of its
 *     pending futures with VL_ECANCELED: nothing is silently dropped.
 *  5. Freeing anything (a future, a connection, a pool, the loop) from inside
 *     a callback is legal; the teardown waits for a safe point.
 *
 * Callbacks run in the order their futures completed. Inside the callback,
 * the value is borrowed: keep it only by vl_future_take.
 *
 * The futures the loop itself makes (vl_loop_sleep, vl_loop_run_in_thread)
 * and vl_loop_run_until are declared with the loop, in volley/loop.h.
 */
#ifndef VOLLEY_FUTURE_H
#define VOLLEY_FUTURE_H

#include "common.h"
#include "loop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*vl_future_cb)(vl_future *f, void *ud);

/* Attaches the one continuation and consumes `f` (rule 3). `cb` runs once,
 * from the loop, after `f` completes, even if it already has (rule 2).
 * Inside `cb` the future and its value are readable; both are freed after
 * `cb` returns. The handle stays valid for vl_future_cancel until then.
 * Returns VL_OK, or VL_EINVAL (f or cb NULL, or a second then): on error
 * nothing changes and `cb` is never called. */
VL_EXPORT int vl_future_then(vl_future *f, vl_future_cb cb, void *ud);

/* A step of a chain: runs once `done` succeeded and returns the next step's
 * future (which the chain consumes), or NULL when out of memory. */
typedef vl_future *(*vl_future_step_fn)(vl_future *done, void *ud);

/* Sequencing (asyncio's `await` one after another, folly's thenValue):
 * consumes `f` and returns a future for the whole chain. When `f` succeeds,
 * `step(f, ud)` runs from the loop (rule 2; `f` is borrowed there: read it,
 * take its value) and returns the next future; the chain's future then
 * completes with that future's status, message and value. When `f` fails,
 * `step` never runs and the chain's future fails with f's status, message
 * and value (a MySQL or Redis server error stays readable). Chains compose:
 *
 *     vl_future_chain(vl_future_chain(take_job(q), run_query, ctx), write_ack, ctx)
 *
 * runs the three steps in order and completes with the ack's result.
 * Cancelling the chain's future, its deadline or freeing it cancels the step
 * that is pending at that moment (f, or the future `step` returned), so
 * cancellation flows down the chain; a step that has not started never runs.
 * A step that returns NULL fails the chain with VL_ENOMEM; one that returns a
 * future already consumed fails it with VL_EINVAL (that future is not
 * touched). Returns NULL only when out of memory, or when `f` is NULL (the
 * call that made it ran out of memory); `f` is freed then. `step` NULL or `f`
 * already consumed gives a future failed with VL_EINVAL. */
VL_EXPORT vl_future *vl_future_chain(vl_future *f, vl_future_step_fn step, void *ud);

/* Status: 1 when completed, 0 while pending. */
VL_EXPORT int vl_future_done(const vl_future *f);

/* VL_OK, a failure code, or VL_ESTATE while pending. */
VL_EXPORT int vl_future_status(const vl_future *f);

/* A detailed message when the future failed, "" on success or while pending.
 * Borrowed; valid while the future is. Never contains a password. */
VL_EXPORT const char *vl_future_error(const vl_future *f);

/* The value (borrowed; NULL when there is none or while pending). Typed
 * accessors live with each backend: vl_future_redis_reply(),
 * vl_future_mysql_result(). */
VL_EXPORT void *vl_future_value(const vl_future *f);

/* Takes the value out of the future: the caller now owns it and frees it with
 * the backend's own _free (vl_redis_reply_free, vl_mysql_result_free...).
 * Returns NULL when there is no value or it was already taken. */
VL_EXPORT void *vl_future_take(vl_future *f);

/* Cancels a pending future: its operation is abandoned (a late reply is read
 * and dropped, never given to another request) and it completes with
 * VL_ECANCELED. Returns 1 when it was cancelled, 0 when it had already
 * completed (rule 4). Legal on a consumed future until its callback ran. */
VL_EXPORT int vl_future_cancel(vl_future *f);

/* Frees a future the caller owns (one not given to then or a combinator).
 * A pending future is cancelled first, as by vl_future_cancel. NULL is a
 * no-op. Inside its own callback the future is freed when the callback
 * returns (rule 5). */
VL_EXPORT void vl_future_free(vl_future *f);

/* The loop the future belongs to (borrowed). */
VL_EXPORT vl_loop *vl_future_loop(const vl_future *f);

/* ---- Combinators ---------------------------------------------------------
 * They take ownership of the input futures, even on error. The children stay
 * readable through vl_future_child() until the combined future is freed. */

/* Gather (asyncio.gather): completes when every input has completed. Status
 * is VL_OK when all succeeded, otherwise the status of the first input to
 * fail (in completion order), with a message "item I: ..."; every child's own
 * result stays readable in input order. n == 0 completes with VL_OK.
 * Returns NULL only when out of memory (the inputs are then freed). */
VL_EXPORT vl_future *vl_future_all(vl_loop *loop, vl_future **fs, size_t n);

/* First completed (asyncio.wait with FIRST_COMPLETED, then cancel the rest):
 * completes with the status, message and value of the first input to
 * complete, whichever its status; the others are cancelled. The winner's index
 * is vl_future_index(). n == 0 completes with VL_EINVAL. */
VL_EXPORT vl_future *vl_future_any(vl_loop *loop, vl_future **fs, size_t n);

/* Number of children of an all/any future (0 for any other future). */
VL_EXPORT size_t vl_future_count(const vl_future *f);

/* Child i of an all/any future (borrowed; NULL when out of range). */
VL_EXPORT vl_future *vl_future_child(const vl_future *f, size_t i);

/* For an any future: index of the winning child; -1 otherwise. */
VL_EXPORT long vl_future_index(const vl_future *f);

/* A deadline (asyncio.wait_for): if `f` has not completed `timeout_ms` after
 * this call, its operation is cancelled and it completes with VL_ETIMEDOUT.
 * Returns `f` itself, for chaining. timeout_ms == 0 removes a deadline. A
 * completed or NULL future is returned unchanged. */
VL_EXPORT vl_future *vl_future_timeout(vl_future *f, uint64_t timeout_ms);

/* ---- Futures made by hand ----------------------------------------------- */

/* A promise is the producer side of a future (asyncio's loop.create_future,
 * set_result, set_exception). The producer owns the promise and must end it
 * with exactly one of vl_promise_resolve, vl_promise_fail or vl_promise_free;
 * each of them frees the promise. The consumer owns the future. */
typedef struct vl_promise vl_promise;

/* Makes a promise and its future. Returns NULL when out of memory. */
VL_EXPORT vl_promise *vl_promise_new(vl_loop *loop);

/* The future of the promise. Call it once; the caller owns what it returns. */
VL_EXPORT vl_future *vl_promise_future(vl_promise *p);

/* 1 when the future was cancelled, timed out or freed: nobody waits any more. */
VL_EXPORT int vl_promise_abandoned(const vl_promise *p);

/* Completes the future with VL_OK and `value`, freed later with `free_fn`
 * (may be NULL for a value volley must not free). If the future was abandoned,
 * the value is freed at once and VL_ECANCELED returned. Frees the promise. */
VL_EXPORT int vl_promise_resolve(vl_promise *p, void *value, vl_free_fn free_fn);

/* Completes the future with `status` (< 0) and a copy of `msg` (may be NULL).
 * Returns VL_OK, VL_ECANCELED when abandoned, VL_EINVAL when status >= 0
 * (the future then fails with VL_EINVAL). Frees the promise. */
VL_EXPORT int vl_promise_fail(vl_promise *p, int status, const char *msg);

/* Drops the promise; a still pending future completes with VL_ECANCELED. */
VL_EXPORT void vl_promise_free(vl_promise *p);

#ifdef __cplusplus
}
#endif
#endif
