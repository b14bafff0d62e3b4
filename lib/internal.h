/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/internal.h - helpers shared inside libvolley; not installed.
 *
 * The seam to libev: only lib/loop.c includes <ev.h>. Other files embed a
 * vl__timer or vl__io in their own structs; the storage is sized here and
 * loop.c checks at compile time that libev's watcher fits.
 *
 * The seam to futures: an operation that completes a future (a Redis command,
 * a MySQL query, a timer) is its "source". It completes the future with
 * vl__future_complete() and gives vl__future_make() a cancel hook. The hook is
 * called at most once, when the future is cancelled, times out or is freed
 * while pending; the source must then forget the future (a late reply is
 * dropped) and never complete it. After vl__future_complete the source must
 * not touch the future again.
 */
#ifndef VOLLEY_INTERNAL_H
#define VOLLEY_INTERNAL_H

#define VL_BUILDING 1
#include "volley.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define VL__UNUSED(x) ((void)(x))

/* ---- allocation (lib/alloc.c) ---- */
void *vl__malloc(size_t n);
void *vl__calloc(size_t n, size_t size);
void *vl__realloc(void *p, size_t n);
void vl__free(void *p);
char *vl__strdup(const char *s);
char *vl__strndup(const char *s, size_t n);
/* printf into a fresh allocation; NULL when out of memory. */
char *vl__asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *vl__vasprintf(const char *fmt, va_list ap);

/* ---- watchers (lib/loop.c) ---- */
typedef struct vl__timer vl__timer;
typedef struct vl__io vl__io;
typedef void (*vl__timer_cb)(vl__timer *t, void *ud);
typedef void (*vl__io_cb)(vl__io *io, int events, void *ud);

#define VL__READ 1
#define VL__WRITE 2

struct vl__timer {
    _Alignas(16) unsigned char w[64]; /* an ev_timer; first so casts work */
    vl_loop *loop;
    vl__timer_cb cb;
    void *ud;
    int armed; /* started and its callback not yet run: active or pending */
};

struct vl__io {
    _Alignas(16) unsigned char w[64]; /* an ev_io */
    vl_loop *loop;
    vl__io_cb cb;
    void *ud;
    int fd;
    int events;
};

void vl__timer_init(vl__timer *t, vl_loop *loop, vl__timer_cb cb, void *ud);
/* (Re)arms once, ms from now: from the clock's present, not from the time
 * libev cached when it last polled, so a deadline never fires early. */
void vl__timer_start(vl__timer *t, uint64_t ms);
/* Stops the timer, also when it expired and its callback has not run yet:
 * after this the callback never runs and the memory may be freed. */
void vl__timer_stop(vl__timer *t);
int vl__timer_active(const vl__timer *t); /* armed: started, callback owed */

void vl__io_init(vl__io *io, vl_loop *loop, int fd, vl__io_cb cb, void *ud);
/* Sets the watched events (VL__READ|VL__WRITE); 0 stops the watcher.
 * Changing fd is allowed: the watcher is re-armed on the new one. */
void vl__io_set(vl__io *io, int fd, int events);
void vl__io_stop(vl__io *io);

typedef struct vl__async vl__async;
typedef void (*vl__async_cb)(vl__async *a, void *ud);
struct vl__async {
    _Alignas(16) unsigned char w[64]; /* an ev_async */
    vl_loop *loop;
    vl__async_cb cb;
    void *ud;
};
void vl__async_init(vl__async *a, vl_loop *loop, vl__async_cb cb, void *ud);
void vl__async_start(vl__async *a);
void vl__async_stop(vl__async *a);
void vl__async_send(vl__async *a); /* the one call safe from another thread */

/* Work to do once before the loop next waits for I/O (libev's prepare
 * phase): the Redis adapter writes every command issued during an iteration
 * in one write() per connection here, instead of arming a write watcher and
 * paying a poll round trip and two epoll_ctl calls per batch. A queued defer
 * keeps the loop alive. */
typedef struct vl__defer vl__defer;
struct vl__defer {
    vl__defer *next;
    void (*cb)(vl__defer *d);
    int queued;
};
void vl__defer_queue(vl_loop *loop, vl__defer *d);
void vl__defer_cancel(vl_loop *loop, vl__defer *d);

/* Turns: fair shares of one loop iteration (lib/loop.c). An iteration
 * handles at most VL__TURN_BUDGET units of work (a Redis reply is one, with
 * the callbacks it completes), so that no iteration runs long however many
 * requests are in flight, and the timers and the other connections of the
 * loop get their turn. A reader asks before it reads (vl__turn_ask) and
 * takes a unit before each piece of work (vl__turn_take); when the budget is
 * spent, or others already wait, its turn is queued instead: queued turns
 * run in order, round robin, from the next iterations' check phase, with a
 * poll that does not block in between. A queued turn must be cancelled
 * before its owner goes away. */
#ifndef VL__TURN_BUDGET
#define VL__TURN_BUDGET 128
#endif
typedef struct vl__turn vl__turn;
struct vl__turn {
    vl__turn *next;
    void (*cb)(vl__turn *t);
    int queued;
};
/* 1: read now. 0: t is queued (its cb reads when its turn comes). */
int vl__turn_ask(vl_loop *loop, vl__turn *t);
/* 1: one unit of work may run now. 0: the budget is spent, t is queued. */
int vl__turn_take(vl_loop *loop, vl__turn *t);
void vl__turn_cancel(vl_loop *loop, vl__turn *t);

/* Keep a started watcher from holding the loop open, and undo it. */
void vl__loop_unref(vl_loop *loop);
void vl__loop_ref(vl_loop *loop);

/* The slot where lib/executor.c keeps the loop's worker pool, made on first
 * use; the pool registers itself as a handle, so the loop frees it like any
 * other object and never calls into executor.c. `threads` is the most
 * workers it may start (vl_loop_set_threads). */
void *vl__loop_executor(vl_loop *loop, unsigned *threads);
/* vl_loop_run_in_thread for work that owns `ud` (fn frees it): when fn never
 * runs (the loop was freed before a worker took the job, or no worker could
 * start), the executor frees ud with ud_free on the loop thread instead. */
vl_future *vl__loop_run_in_thread_owned(vl_loop *loop, vl_work_fn fn, void *ud,
                                        vl_free_fn ud_free, vl_free_fn free_fn);
/* Marks a job of the executor (by its pending future) as one that keeps
 * vl_loop_run running (weak 0, the default) or not (weak 1), as the
 * loop-alive rule wants for work nobody waits for yet, such as a
 * background connect. No-op once the job's future completed. */
void vl__loop_job_weak(vl_future *f, int weak);
void vl__loop_set_executor(vl_loop *loop, void *executor);

/* ---- handles that the loop frees on vl_loop_free (lib/loop.c) ---- */
typedef struct vl__handle vl__handle;
struct vl__handle {
    vl__handle *prev, *next;
    void (*free_fn)(vl__handle *h); /* frees the owner; h is embedded in it */
};
void vl__handle_add(vl_loop *loop, vl__handle *h, void (*free_fn)(vl__handle *));
void vl__handle_remove(vl_loop *loop, vl__handle *h);
/* How an object with a handle releases its memory at the end of its _free:
 * at once normally, but while the loop is being freed only after every
 * callback has run (the callbacks may still hold the object; its _free must
 * then be a no-op). `release` frees the owner of h. */
void vl__handle_bury(vl_loop *loop, vl__handle *h, void (*release)(vl__handle *h));

/* 1 while the loop is being freed: new operations fail with VL_ECLOSED. */
int vl__loop_closing(const vl_loop *loop);

/* ---- the ready queue (lib/loop.c) ----
 * Work that must run from the loop, never inside the call that produced it
 * (rule 2): a completed future's callback. Only futures are queued (a
 * function pointer per node would cost every request in flight a word): the
 * loop hands each node to vl__future_run. A node is queued at most once at
 * a time, and run once per queueing, in queueing order. */
typedef struct vl__ready vl__ready;
struct vl__ready {
    vl__ready *next;
};
void vl__loop_ready(vl_loop *loop, vl__ready *r);
/* A future of the loop completed with no callback to run: its caller may be
 * waiting in vl_loop_run_until, which looks only when the poll returns. */
void vl__loop_note_done(vl_loop *loop);
void vl__future_run(vl__ready *r);

/* Runs the loop while more(arg) says so. Returns VL_OK once it says no,
 * VL_ESTATE when it still says yes but nothing is left that could change
 * that (no watcher, nothing queued), VL_ESTATE from inside a callback, and
 * VL_ECLOSED when a callback freed the loop (it is gone then). */
int vl__loop_run_while(vl_loop *loop, int (*more)(void *arg), void *arg);

/* ---- futures (lib/future.c) ---- */
typedef struct vl__source_ops {
    /* Called once when the future gives up on its source (cancel, timeout,
     * free while pending). `status` is the future's final status: usually
     * VL_ECANCELED or VL_ETIMEDOUT, VL_ENOMEM when a deadline could not be
     * set. */
    void (*cancel)(void *source, vl_future *f, int status);
    /* Optional: writes what the future waits for into buf ("GET on
     * 127.0.0.1:6379"), never a password, so that a deadline's message
     * names it. Called only when a message is made, never on a hot path. */
    void (*describe)(void *source, char *buf, size_t n);
} vl__source_ops;

/* ---- per-loop caches of freed blocks (lib/loop.c) ----
 * Every statement makes and frees a future and its result's first chunk.
 * A loop keeps a few such blocks once freed, for the next statement,
 * instead of giving them back to malloc (whose free of a 1 KiB block costs
 * hundreds of instructions once its per-thread cache is full). Each kind
 * holds blocks of one size, the one its user allocates. Only code running
 * on the loop's thread while the loop is alive may use them; the loop frees
 * what they hold when it is freed (and keeps nothing while it is being
 * freed), so the leak checks at loop end still balance, and a fresh loop
 * makes its first blocks through the allocator, whose failures tests
 * inject. */
enum { VL__CACHE_FUTURE, VL__CACHE_MRES, VL__CACHE_KINDS };
/* A cached block of that kind, or NULL when there is none (allocate). */
void *vl__cache_get(vl_loop *loop, int kind);
/* Keeps a freed block: 1 when kept, 0 when the cache is full or the loop
 * is being freed (the caller frees it). */
int vl__cache_put(vl_loop *loop, int kind, void *p);
/* Blocks the loop's caches hold now, every kind together: memory that is
 * the loop's, not a leak (tests that count live allocations subtract it). */
size_t vl__cache_count(const vl_loop *loop);

/* Value types, so typed accessors can refuse a foreign value. */
enum { VL__VAL_NONE = 0, VL__VAL_USER, VL__VAL_REDIS, VL__VAL_MYSQL, VL__VAL_FANOUT };
/* Frees a vl_mysql_result given as a future's value (lib/mysql_result.c).
 * The future knows it, so a MySQL result needs no extension to say how it
 * is freed (as for Redis replies). */
void vl__mres_free_value(void *v);
/* The same for a future freed by the loop's dispatcher (the loop is alive,
 * on its thread): the result's first chunk may go to the loop's cache. */
void vl__mres_release(vl_loop *loop, void *v);

vl_future *vl__future_make(vl_loop *loop, const vl__source_ops *ops, void *source);
/* Changes the cancel hook's source pointer (for sources that move). */
void vl__future_set_source(vl_future *f, const vl__source_ops *ops, void *source);
/* The pending future's source if its hook is `ops`, else NULL. */
void *vl__future_source(const vl_future *f, const vl__source_ops *ops);
/* Completes the future. Takes `value` (freed with free_fn unless taken).
 * `msg` is copied; NULL means none. Does nothing but free the value if the
 * future already completed. Never runs the callback itself: it is queued on
 * the loop. */
void vl__future_complete(vl_future *f, int status, void *value, int vtype,
                         vl_free_fn free_fn, const char *msg);
/* The same with a printf message. */
void vl__future_fail(vl_future *f, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A new future already failed (for errors known up front, rule 1). */
vl_future *vl__future_failed(vl_loop *loop, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int vl__future_vtype(const vl_future *f);
/* What a pending future waits for, from its source's describe hook; "" when
 * it has none or is done. */
void vl__future_describe(const vl_future *f, char *buf, size_t n);
/* 1 when the future was given to vl_future_then or a combinator. */
int vl__future_owned(const vl_future *f);
/* Makes the room a pending future needs to hold a value with a free
 * function (and a message) now, so that completing it later cannot fail for
 * want of memory and drop the value: VL_OK, or VL_ENOMEM (the future is
 * unchanged). For sources that hand over something that must not be lost,
 * such as a queue's item. */
int vl__future_reserve(vl_future *f);


/* ---- options structs that grow (every vl_X_options, vl_pool_stats) ----
 * Each public struct starts with `size_t struct_size` and only ever grows at
 * its end. A struct is described by the end (offset + size) of each of its
 * fields, in order, so that only whole fields are ever read or written: a
 * program built against an older header passes the smaller size it knew,
 * and the fields past it keep the library's defaults. */
#define VL__END(type, field) (offsetof(type, field) + sizeof(((type *)0)->field))

typedef struct vl__opts_desc {
    const char *name;   /* "vl_redis_options", for messages */
    size_t size;        /* the library's sizeof */
    const size_t *ends; /* VL__END of every field, in order */
    size_t n;
} vl__opts_desc;

/* The bytes of the whole fields that lie within `size` (0 when even
 * struct_size itself does not). */
static inline size_t vl__opts_prefix(const vl__opts_desc *d, size_t size)
{
    size_t i, end = 0;

    for (i = 0; i < d->n && d->ends[i] <= size; i++)
        end = d->ends[i];
    return end;
}

/* The body of every vl_X_options_init_sized: zeroes the first `size` bytes,
 * then copies the defaults of every whole field within them and stores
 * `size`. Sizes beyond the library's are treated as the library's (the
 * caller's newer fields stay zero, and the struct is refused when used). */
static inline void vl__opts_init(void *o, size_t size, const void *defaults,
                                 const vl__opts_desc *d)
{
    size_t n = size < d->size ? size : d->size, keep;

    if (o == NULL || size < sizeof(size_t))
        return;
    memset(o, 0, n);
    keep = vl__opts_prefix(d, n);
    memcpy(o, defaults, keep);
    *(size_t *)o = size;
}

/* Checks the struct_size of a caller's struct: VL_OK, or VL_EINVAL when it
 * is smaller than struct_size itself (never initialised) or larger than the
 * library's struct (built against a newer header), with the message in why. */
static inline int vl__opts_check(const void *src, const vl__opts_desc *d, char *why, size_t whyn)
{
    size_t size = *(const size_t *)src;

    if (size < sizeof(size_t)) {
        snprintf(why, whyn, "options: struct_size %zu: start from %s_init()", size, d->name);
        return VL_EINVAL;
    }
    if (size > d->size) {
        snprintf(why, whyn,
                 "options: struct_size %zu unknown to this volley (built against a newer "
                 "header?)",
                 size);
        return VL_EINVAL;
    }
    return VL_OK;
}

/* The one reading of a caller's options: `dst` holds the library's full
 * defaults; the caller's whole fields within its struct_size are copied
 * over them. VL_OK, or vl__opts_check's VL_EINVAL (dst untouched). src NULL
 * keeps the defaults. */
static inline int vl__opts_copy(void *dst, const void *src, const vl__opts_desc *d, char *why,
                                size_t whyn)
{
    size_t keep;

    if (src == NULL)
        return VL_OK;
    if (vl__opts_check(src, d, why, whyn) != VL_OK)
        return VL_EINVAL;
    keep = vl__opts_prefix(d, *(const size_t *)src);
    memcpy((char *)dst + sizeof(size_t), (const char *)src + sizeof(size_t),
           keep - sizeof(size_t));
    *(size_t *)dst = d->size;
    return VL_OK;
}

/* Copies the whole fields of `full` within out->struct_size to `out`
 * (lib/pool.c). VL_OK, or VL_EINVAL (nothing written) for an unknown
 * struct_size. */
int vl__pool_stats_out(vl_pool_stats *out, const vl_pool_stats *full);

/* ---- small helpers ---- */
/* Copies "msg" into an owned string with the password hidden. */
uint64_t vl__rand64(void); /* not for security: jitter only */

#endif
