/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/future.c - futures, combinators, deadlines, sleeps and promises.
 *
 * A future is pending, then completed once. Completing it never runs the
 * callback: the future goes on the loop's ready list (lib/loop.c) and the
 * callback runs from the loop's check phase. A future that must be freed while
 * it sits on the ready list becomes a zombie: the dispatcher frees it instead
 * of calling it, so the list never holds a dangling pointer.
 */
#include "internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

enum { ST_PENDING = 0, ST_DONE = 1 };

typedef struct group group;

/* A child of all/any: its callback's user data, which says whose and where. */
typedef struct kid {
    group *g;
    vl_future *f;
} kid;

struct group {
    vl_future *parent;
    kid *kids;
    size_t n;
    size_t remaining;
    long winner;        /* any: index of the first child, or -1 */
    long first_error;   /* all: index of the first failed child, or -1 */
    int is_any;
};

/* What few futures need: a failure message, a deadline, a group. Made on
 * first use, so that the common future (a command that succeeds) stays
 * small: it is the memory every request in flight costs. */
typedef struct fext {
    char *msg;
    vl_free_fn value_free;         /* of a value that is not a Redis reply */
    vl__timer *deadline;
    uint64_t timeout_ms;           /* of the deadline, for its message */
    group *grp;                    /* all/any */
} fext;

struct vl_future {
    vl__ready ready;               /* the loop's ready list; first member */
    vl_loop *loop;
    const vl__source_ops *ops;     /* cancel hook of the pending operation */
    void *source;
    vl_future_cb cb;
    void *ud;
    void *value;                   /* freed by vl_redis_reply_free for
                                    * VL__VAL_REDIS, vl__mres_free_value when
                                    * mysql_result, else by x->value_free */
    fext *x;                       /* NULL until needed */
    int status;
    unsigned char state;
    unsigned char vtype;
    unsigned consumed : 1;         /* then was called */
    unsigned child : 1;            /* owned by an all/any, which frees it */
    unsigned queued : 1;           /* on the ready list */
    unsigned in_cb : 1;            /* its callback is running */
    unsigned zombie : 1;           /* freed while queued */
    unsigned mysql_result : 1;     /* value is a vl_mysql_result */
};

static void future_destroy(vl_future *f);
static void future_destroy_on_loop(vl_future *f);

/* How the value is freed: a Redis reply (the common case, kept out of the
 * future itself), or what the completion said. */
static void free_redis_reply(void *v)
{
    vl_redis_reply_free(v);
}

static vl_free_fn free_fn_of(const vl_future *f)
{
    if (f->vtype == VL__VAL_REDIS)
        return free_redis_reply;
    if (f->mysql_result)
        return vl__mres_free_value;
    return f->x != NULL ? f->x->value_free : NULL;
}

static void forget_value(vl_future *f)
{
    f->value = NULL;
    f->mysql_result = 0;
    if (f->x != NULL)
        f->x->value_free = NULL;
}

static fext *ext(vl_future *f)
{
    if (f->x == NULL)
        f->x = vl__calloc(1, sizeof(*f->x));
    return f->x;
}

int vl__future_reserve(vl_future *f)
{
    return f != NULL && ext(f) != NULL ? VL_OK : VL_ENOMEM;
}

static const char *msg_of(const vl_future *f)
{
    return f->x != NULL ? f->x->msg : NULL;
}

static group *grp_of(const vl_future *f)
{
    return f->x != NULL ? f->x->grp : NULL;
}

static void deadline_drop(vl_future *f)
{
    if (f->x != NULL && f->x->deadline != NULL) {
        vl__timer_stop(f->x->deadline);
        vl__free(f->x->deadline);
        f->x->deadline = NULL;
    }
}

vl_future *vl__future_make(vl_loop *loop, const vl__source_ops *ops, void *source)
{
    vl_future *f = vl__cache_get(loop, VL__CACHE_FUTURE);

    if (f != NULL)
        memset(f, 0, sizeof(*f));
    else if ((f = vl__calloc(1, sizeof(*f))) == NULL)
        return NULL;
    f->loop = loop;
    f->ops = ops;
    f->source = source;
    return f;
}

void vl__future_set_source(vl_future *f, const vl__source_ops *ops, void *source)
{
    f->ops = ops;
    f->source = source;
}

int vl__future_vtype(const vl_future *f)
{
    return f->vtype;
}

int vl__future_owned(const vl_future *f)
{
    return f->consumed || f->child;
}

vl_loop *vl_future_loop(const vl_future *f)
{
    return f->loop;
}

static void enqueue(vl_future *f)
{
    if (f->queued)
        return;
    f->queued = 1;
    vl__loop_ready(f->loop, &f->ready);
}

void vl__future_complete(vl_future *f, int status, void *value, int vtype,
                         vl_free_fn free_fn, const char *msg)
{
    if (f->state != ST_PENDING) {
        if (value != NULL && free_fn != NULL)
            free_fn(value);
        return;
    }
    /* The two common values, Redis replies and MySQL results, are freed by
     * functions the future knows: no extension to hold a pointer. */
    int known = vtype == VL__VAL_REDIS || free_fn == vl__mres_free_value;

    if (value != NULL && free_fn != NULL && !known && ext(f) == NULL) {
        /* Nowhere to keep how to free it: it goes now. */
        free_fn(value);
        value = NULL;
        status = VL_ENOMEM;
        msg = "out of memory completing the future";
    }
    f->state = ST_DONE;
    f->status = status;
    f->value = value;
    f->vtype = (unsigned char)(value != NULL ? vtype : VL__VAL_NONE);
    f->mysql_result = value != NULL && free_fn == vl__mres_free_value;
    if (value != NULL && !known && f->x != NULL)
        f->x->value_free = free_fn;
    f->ops = NULL;
    f->source = NULL;
    if (msg != NULL && msg[0] != '\0' && ext(f) != NULL)
        f->x->msg = vl__strdup(msg); /* on ENOMEM the status still tells */
    deadline_drop(f);
    if (f->cb != NULL)
        enqueue(f);
    else if (f->loop != NULL)
        vl__loop_note_done(f->loop); /* vl_loop_run_until may be its watcher */
}

void vl__future_fail(vl_future *f, int status, const char *fmt, ...)
{
    va_list ap;
    char *msg;

    va_start(ap, fmt);
    msg = vl__vasprintf(fmt, ap);
    va_end(ap);
    vl__future_complete(f, status, NULL, VL__VAL_NONE, NULL, msg != NULL ? msg : vl_strerror(status));
    vl__free(msg);
}

void *vl__future_source(const vl_future *f, const vl__source_ops *ops)
{
    return f != NULL && f->state == ST_PENDING && f->ops == ops ? f->source : NULL;
}

vl_future *vl__future_failed(vl_loop *loop, int status, const char *fmt, ...)
{
    vl_future *f = vl__future_make(loop, NULL, NULL);
    va_list ap;
    char *msg;

    if (f == NULL)
        return NULL;
    va_start(ap, fmt);
    msg = vl__vasprintf(fmt, ap);
    va_end(ap);
    vl__future_complete(f, status, NULL, VL__VAL_NONE, NULL, msg != NULL ? msg : vl_strerror(status));
    vl__free(msg);
    return f;
}

/* Tells the source to forget the future, then completes it with `status`. */
static void abandon(vl_future *f, int status, const char *msg)
{
    const vl__source_ops *ops = f->ops;
    void *source = f->source;

    if (f->state != ST_PENDING)
        return;
    f->ops = NULL;
    f->source = NULL;
    if (ops != NULL && ops->cancel != NULL)
        ops->cancel(source, f, status);
    vl__future_complete(f, status, NULL, VL__VAL_NONE, NULL, msg);
}

/* The loop calls this for a queued future: its callback runs now. */
void vl__future_run(vl__ready *r)
{
    vl_future *f = (vl_future *)(void *)r;

    f->queued = 0;
    if (f->zombie) {
        future_destroy_on_loop(f);
        return;
    }
    f->in_cb = 1;
    f->cb(f, f->ud);
    f->in_cb = 0;
    /* A child of all/any belongs to its parent, which frees it. */
    if (!f->child || f->zombie)
        future_destroy_on_loop(f);
}

int vl_future_then(vl_future *f, vl_future_cb cb, void *ud)
{
    if (f == NULL || cb == NULL || f->consumed || f->child)
        return VL_EINVAL;
    f->consumed = 1;
    f->cb = cb;
    f->ud = ud;
    if (f->state == ST_DONE)
        enqueue(f);
    return VL_OK;
}

int vl_future_done(const vl_future *f)
{
    return f != NULL && f->state == ST_DONE;
}

int vl_future_status(const vl_future *f)
{
    if (f == NULL)
        return VL_EINVAL;
    return f->state == ST_DONE ? f->status : VL_ESTATE;
}

const char *vl_future_error(const vl_future *f)
{
    if (f == NULL || f->state != ST_DONE || f->status == VL_OK)
        return "";
    return msg_of(f) != NULL ? msg_of(f) : vl_strerror(f->status);
}

void *vl_future_value(const vl_future *f)
{
    return f != NULL && f->state == ST_DONE ? f->value : NULL;
}

void *vl_future_take(vl_future *f)
{
    void *v;

    if (f == NULL || f->state != ST_DONE)
        return NULL;
    v = f->value;
    forget_value(f);
    return v;
}

int vl_future_cancel(vl_future *f)
{
    if (f == NULL || f->state != ST_PENDING)
        return 0;
    abandon(f, VL_ECANCELED, "cancelled");
    return 1;
}

/* Frees the future. `on_loop`: called by the loop's dispatcher, so the loop
 * is alive and its caches may keep the future's memory and its result's
 * (a future its owner frees may outlive its loop). */
static void future_free_mem(vl_future *f, int on_loop)
{
    vl_loop *loop = f->loop;

    if (f->value != NULL && f->mysql_result && on_loop)
        vl__mres_release(loop, f->value);
    else if (f->value != NULL && free_fn_of(f) != NULL)
        free_fn_of(f)(f->value);
    if (f->x != NULL) {
        deadline_drop(f);
        vl__free(f->x->msg);
        vl__free(f->x);
    }
    if (!on_loop || !vl__cache_put(loop, VL__CACHE_FUTURE, f))
        vl__free(f);
}

static void future_destroy_on_loop(vl_future *f)
{
    if (f->queued || f->state == ST_PENDING || grp_of(f) != NULL) {
        future_destroy(f); /* the rare cases, made by the general path */
        return;
    }
    future_free_mem(f, 1);
}

static void future_destroy(vl_future *f)
{
    if (f->queued) {
        /* On the ready list: the dispatcher frees it when it gets there. */
        f->zombie = 1;
        return;
    }
    if (f->state == ST_PENDING) {
        f->cb = NULL; /* nobody is left to call */
        abandon(f, VL_ECANCELED, "cancelled");
    }
    if (grp_of(f) != NULL) {
        group *g = f->x->grp;
        size_t i;
        for (i = 0; i < g->n; i++) {
            vl_future *k = g->kids[i].f;
            if (k == NULL)
                continue;
            k->child = 0;
            k->cb = NULL;
            future_destroy(k);
        }
        vl__free(g);
    }
    future_free_mem(f, 0);
}

void vl_future_free(vl_future *f)
{
    if (f == NULL || f->child || f->zombie)
        return;
    if (f->in_cb)
        return; /* its callback is running: freed when it returns (rule 5) */
    if (f->consumed) {
        /* The callback is still owed exactly once: cancel, it runs, then frees. */
        vl_future_cancel(f);
        return;
    }
    future_destroy(f);
}

/* ---- run until complete ---- */

static int still_pending(void *arg)
{
    return ((vl_future *)arg)->state == ST_PENDING;
}

int vl_loop_run_until(vl_loop *loop, vl_future *f)
{
    int rc;

    if (loop == NULL || f == NULL || f->loop != loop || vl__future_owned(f))
        return VL_EINVAL;
    rc = vl__loop_run_while(loop, still_pending, f);
    return rc == VL_OK ? f->status : rc;
}

/* ---- chains ---- */

/* One link: `g` is the chain's future, `inner` the step pending under it
 * (first the input, then the future the step returned). The inner future's
 * callback is what moves the chain on, so the link is freed there, and only
 * there: a cancelled chain forgets `g` and cancels `inner`, whose callback
 * then runs and frees the link. */
typedef struct chainlink {
    vl_future *g;
    vl_future *inner;
    vl_future_step_fn step; /* NULL once it ran: inner is the last step */
    void *ud;
} chainlink;

static void link_cancel(void *source, vl_future *g, int status)
{
    chainlink *l = source;

    VL__UNUSED(g);
    VL__UNUSED(status);
    l->g = NULL;
    if (l->inner != NULL)
        vl_future_cancel(l->inner);
}

static void link_describe(void *source, char *buf, size_t n)
{
    chainlink *l = source;

    if (l->inner != NULL)
        vl__future_describe(l->inner, buf, n);
}

static const vl__source_ops link_ops = {.cancel = link_cancel, .describe = link_describe};

/* Completes g with what `from` holds, moving its value. */
static void forward(vl_future *g, vl_future *from)
{
    void *value = from->value;
    vl_free_fn free_fn = free_fn_of(from);

    forget_value(from);
    vl__future_complete(g, from->status, value, from->vtype, free_fn, msg_of(from));
}

static void link_cb(vl_future *inner, void *ud)
{
    chainlink *l = ud;
    vl_future *g = l->g, *next;
    vl_future_step_fn step = l->step;

    l->inner = NULL;
    if (g == NULL) {
        vl__free(l); /* the chain was cancelled: its result is dropped */
        return;
    }
    if (step == NULL || inner->status != VL_OK) {
        vl__future_set_source(g, NULL, NULL);
        forward(g, inner);
        vl__free(l);
        return;
    }
    l->step = NULL;
    next = step(inner, l->ud);
    if (l->g == NULL) {
        /* The step cancelled or freed the chain's future: what it started
         * is cancelled with it. */
        if (next != NULL && !vl__future_owned(next))
            vl_future_free(next);
        vl__free(l);
        return;
    }
    if (next == NULL || vl_future_then(next, link_cb, l) != VL_OK) {
        vl__future_set_source(g, NULL, NULL);
        if (next == NULL)
            vl__future_complete(g, VL_ENOMEM, NULL, VL__VAL_NONE, NULL,
                                "chain: a step returned no future (out of memory)");
        else
            vl__future_complete(g, VL_EINVAL, NULL, VL__VAL_NONE, NULL,
                                "chain: a step returned a future that is already consumed");
        vl__free(l);
        return;
    }
    l->inner = next;
}

vl_future *vl_future_chain(vl_future *f, vl_future_step_fn step, void *ud)
{
    chainlink *l;
    vl_future *g;

    if (f == NULL)
        return NULL;
    if (vl__future_owned(f))
        return vl__future_failed(f->loop, VL_EINVAL, "chain: future already consumed");
    if (step == NULL) {
        vl_loop *loop = f->loop;
        vl_future_free(f); /* ours now, as with every combinator */
        return vl__future_failed(loop, VL_EINVAL, "chain: no step");
    }
    l = vl__calloc(1, sizeof(*l));
    g = l != NULL ? vl__future_make(f->loop, &link_ops, l) : NULL;
    if (g == NULL) {
        vl__free(l);
        vl_future_free(f);
        return NULL;
    }
    l->g = g;
    l->inner = f;
    l->step = step;
    l->ud = ud;
    vl_future_then(f, link_cb, l); /* cannot fail: f is ours and unconsumed */
    return g;
}

/* ---- deadlines ---- */

void vl__future_describe(const vl_future *f, char *buf, size_t n)
{
    if (n == 0)
        return;
    buf[0] = '\0';
    if (f->state == ST_PENDING && f->ops != NULL && f->ops->describe != NULL)
        f->ops->describe(f->source, buf, n);
}

static void deadline_cb(vl__timer *t, void *ud)
{
    vl_future *f = ud;
    char what[192], msg[256];

    VL__UNUSED(t);
    vl__future_describe(f, what, sizeof(what));
    snprintf(msg, sizeof(msg), "%s%stimed out after %" PRIu64 " ms", what, what[0] ? ": " : "",
             f->x->timeout_ms);
    abandon(f, VL_ETIMEDOUT, msg);
}

vl_future *vl_future_timeout(vl_future *f, uint64_t timeout_ms)
{
    if (f == NULL || f->state != ST_PENDING)
        return f;
    if (timeout_ms == 0) {
        deadline_drop(f);
        return f;
    }
    if (ext(f) == NULL) {
        abandon(f, VL_ENOMEM, "out of memory setting a deadline");
        return f;
    }
    if (f->x->deadline == NULL) {
        f->x->deadline = vl__malloc(sizeof(*f->x->deadline));
        if (f->x->deadline == NULL) {
            abandon(f, VL_ENOMEM, "out of memory setting a deadline");
            return f;
        }
        vl__timer_init(f->x->deadline, f->loop, deadline_cb, f);
    }
    f->x->timeout_ms = timeout_ms;
    vl__timer_start(f->x->deadline, timeout_ms);
    return f;
}

/* ---- all / any ---- */

static void group_cancel(void *source, vl_future *parent, int status)
{
    group *g = source;
    size_t i;

    VL__UNUSED(parent);
    for (i = 0; i < g->n; i++) {
        vl_future *k = g->kids[i].f;
        char what[192], msg[256];

        if (k->state != ST_PENDING)
            continue;
        vl__future_describe(k, what, sizeof(what));
        snprintf(msg, sizeof(msg), "%s%s%s", what, what[0] ? ": " : "",
                 status == VL_ETIMEDOUT ? "timed out with the group's deadline"
                                        : "cancelled with the group");
        abandon(k, status, msg);
    }
}

static void group_describe(void *source, char *buf, size_t n)
{
    group *g = source;

    snprintf(buf, n, "%s of %zu (%zu pending)", g->is_any ? "first" : "gather", g->n,
             g->remaining);
}

static const vl__source_ops group_ops = {.cancel = group_cancel, .describe = group_describe};

static void child_done(vl_future *k, void *ud)
{
    kid *slot = ud;
    group *g = slot->g;
    vl_future *parent = g->parent;
    long index = (long)(slot - g->kids);

    if (parent->state != ST_PENDING)
        return;
    g->remaining--;
    if (g->is_any) {
        size_t i;
        g->winner = index;
        parent->ops = NULL;
        parent->source = NULL;
        /* The winner's value moves to the parent, so typed accessors work on
         * the any future itself. */
        vl__future_complete(parent, k->status, k->value, k->vtype, free_fn_of(k),
                            k->status == VL_OK ? NULL : vl_future_error(k));
        forget_value(k);
        for (i = 0; i < g->n; i++)
            if (g->kids[i].f != k)
                vl_future_cancel(g->kids[i].f);
        return;
    }
    if (k->status != VL_OK && g->first_error < 0)
        g->first_error = index;
    if (g->remaining == 0) {
        parent->ops = NULL;
        parent->source = NULL;
        if (g->first_error < 0) {
            vl__future_complete(parent, VL_OK, NULL, VL__VAL_NONE, NULL, NULL);
        } else {
            vl_future *e = g->kids[g->first_error].f;
            vl__future_fail(parent, e->status, "item %ld: %s", g->first_error,
                            vl_future_error(e));
        }
    }
}

/* Frees the inputs a failed combinator owns: each distinct one that is not
 * consumed elsewhere. The repeat test compares pointers before anything is
 * read through them, since an earlier copy may be freed already. */
static void free_inputs(vl_loop *loop, vl_future **fs, size_t n)
{
    size_t j, k;

    for (j = 0; j < n; j++) {
        vl_future *f = fs[j];
        if (f == NULL)
            continue;
        for (k = 0; k < j && fs[k] != f; k++)
            ;
        if (k < j || f->consumed || f->child || f->loop != loop)
            continue;
        vl_future_free(f);
    }
}

static vl_future *group_make(vl_loop *loop, vl_future **fs, size_t n, int is_any)
{
    vl_future *parent;
    group *g;
    size_t i;

    /* Each input is marked consumed as it is checked, so one given twice is
     * caught as consumed the second time. */
    for (i = 0; i < n; i++) {
        if (fs[i] == NULL || fs[i]->consumed || fs[i]->child || fs[i]->loop != loop) {
            size_t j;
            for (j = 0; j < i; j++)
                fs[j]->consumed = 0; /* distinct: a repeat would have stopped earlier */
            free_inputs(loop, fs, n);
            return vl__future_failed(loop, VL_EINVAL,
                                     "input %zu is NULL, given twice, consumed or on another loop",
                                     i);
        }
        fs[i]->consumed = 1;
    }
    parent = vl__future_make(loop, NULL, NULL);
    /* The group and its kids in one block. */
    g = n < (SIZE_MAX - sizeof(*g)) / sizeof(kid) ? vl__calloc(1, sizeof(*g) + n * sizeof(kid))
                                                  : NULL;
    if (parent == NULL || g == NULL || ext(parent) == NULL) {
        vl__free(g);
        if (parent != NULL)
            vl__free(parent->x);
        vl__free(parent);
        for (i = 0; i < n; i++)
            fs[i]->consumed = 0;
        free_inputs(loop, fs, n);
        return NULL;
    }
    g->n = g->remaining = n;
    g->winner = -1;
    g->first_error = -1;
    g->is_any = is_any;
    g->kids = (kid *)(void *)(g + 1);
    g->parent = parent;
    parent->x->grp = g;
    vl__future_set_source(parent, &group_ops, g);
    for (i = 0; i < n; i++) {
        vl_future *k = fs[i];
        g->kids[i].g = g;
        g->kids[i].f = k;
        k->child = 1;
        k->consumed = 1;
        k->cb = child_done;
        k->ud = &g->kids[i];
        if (k->state == ST_DONE)
            enqueue(k);
    }
    if (n == 0) {
        if (is_any)
            abandon(parent, VL_EINVAL, "any of no futures");
        else
            vl__future_complete(parent, VL_OK, NULL, VL__VAL_NONE, NULL, NULL);
    }
    return parent;
}

vl_future *vl_future_all(vl_loop *loop, vl_future **fs, size_t n)
{
    if (loop == NULL || (fs == NULL && n > 0))
        return loop != NULL ? vl__future_failed(loop, VL_EINVAL, "no input array") : NULL;
    return group_make(loop, fs, n, 0);
}

vl_future *vl_future_any(vl_loop *loop, vl_future **fs, size_t n)
{
    if (loop == NULL || (fs == NULL && n > 0))
        return loop != NULL ? vl__future_failed(loop, VL_EINVAL, "no input array") : NULL;
    return group_make(loop, fs, n, 1);
}

size_t vl_future_count(const vl_future *f)
{
    return f != NULL && grp_of(f) != NULL ? grp_of(f)->n : 0;
}

vl_future *vl_future_child(const vl_future *f, size_t i)
{
    if (f == NULL || grp_of(f) == NULL || i >= grp_of(f)->n)
        return NULL;
    return grp_of(f)->kids[i].f;
}

long vl_future_index(const vl_future *f)
{
    if (f == NULL || grp_of(f) == NULL || !grp_of(f)->is_any)
        return -1;
    return grp_of(f)->winner;
}

/* ---- sleep ---- */

typedef struct sleeper {
    vl__timer timer;
    vl__handle handle;
    vl_future *f;
    uint64_t ms;
} sleeper;

static void sleeper_drop(sleeper *s)
{
    vl__timer_stop(&s->timer);
    vl__handle_remove(s->timer.loop, &s->handle);
    vl__free(s);
}

static void sleep_fire(vl__timer *t, void *ud)
{
    sleeper *s = ud;
    vl_future *f = s->f;

    VL__UNUSED(t);
    sleeper_drop(s);
    vl__future_complete(f, VL_OK, NULL, VL__VAL_NONE, NULL, NULL);
}

static void sleep_cancel(void *source, vl_future *f, int status)
{
    VL__UNUSED(f);
    VL__UNUSED(status);
    sleeper_drop(source);
}

static void sleep_handle_free(vl__handle *h)
{
    sleeper *s = (sleeper *)(void *)((char *)h - offsetof(sleeper, handle));
    vl_future *f = s->f;

    vl__handle_remove(s->timer.loop, &s->handle); /* already off; harmless */
    vl__timer_stop(&s->timer);
    vl__free(s);
    vl__future_set_source(f, NULL, NULL);
    abandon(f, VL_ECANCELED, "loop freed");
}

static void sleep_describe(void *source, char *buf, size_t n)
{
    const sleeper *s = source;

    snprintf(buf, n, "sleep of %" PRIu64 " ms", s->ms);
}

static const vl__source_ops sleep_ops = {.cancel = sleep_cancel, .describe = sleep_describe};

vl_future *vl_loop_sleep(vl_loop *loop, uint64_t ms)
{
    sleeper *s;
    vl_future *f;

    if (loop == NULL)
        return NULL;
    if (vl__loop_closing(loop))
        return vl__future_failed(loop, VL_ECLOSED, "loop is closing");
    s = vl__calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    f = vl__future_make(loop, &sleep_ops, s);
    if (f == NULL) {
        vl__free(s);
        return NULL;
    }
    s->f = f;
    s->ms = ms;
    vl__timer_init(&s->timer, loop, sleep_fire, s);
    vl__timer_start(&s->timer, ms);
    vl__handle_add(loop, &s->handle, sleep_handle_free);
    return f;
}

/* ---- promises ---- */

struct vl_promise {
    vl_loop *loop;      /* NULL once the loop was freed */
    vl_future *f;       /* NULL once abandoned or completed */
    vl__handle handle;
    int given;          /* vl_promise_future was called */
};

static void promise_cancel(void *source, vl_future *f, int status)
{
    vl_promise *p = source;

    VL__UNUSED(f);
    VL__UNUSED(status);
    p->f = NULL;
}

static void promise_describe(void *source, char *buf, size_t n)
{
    VL__UNUSED(source);
    snprintf(buf, n, "promise");
}

static const vl__source_ops promise_ops = {.cancel = promise_cancel, .describe = promise_describe};

static void promise_handle_free(vl__handle *h)
{
    vl_promise *p = (vl_promise *)(void *)((char *)h - offsetof(vl_promise, handle));

    if (p->f != NULL) {
        vl_future *f = p->f;
        p->f = NULL;
        vl__future_set_source(f, NULL, NULL);
        if (p->given)
            abandon(f, VL_ECANCELED, "loop freed");
        else
            future_destroy(f);
    }
    p->loop = NULL; /* the producer still owns p and ends it later */
}

vl_promise *vl_promise_new(vl_loop *loop)
{
    vl_promise *p;

    if (loop == NULL)
        return NULL;
    p = vl__calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->f = vl__future_make(loop, &promise_ops, p);
    if (p->f == NULL) {
        vl__free(p);
        return NULL;
    }
    p->loop = loop;
    if (vl__loop_closing(loop)) {
        /* Nothing can wait on it any more: born abandoned, never registered. */
        promise_handle_free(&p->handle);
        return p;
    }
    vl__handle_add(loop, &p->handle, promise_handle_free);
    return p;
}

vl_future *vl_promise_future(vl_promise *p)
{
    if (p == NULL || p->given)
        return NULL;
    p->given = 1;
    return p->f;
}

int vl_promise_abandoned(const vl_promise *p)
{
    return p == NULL || p->f == NULL;
}

static void promise_end(vl_promise *p)
{
    if (p->loop != NULL)
        vl__handle_remove(p->loop, &p->handle);
    /* A future never handed out has no consumer: free it with the promise. */
    if (!p->given && p->f != NULL) {
        vl__future_set_source(p->f, NULL, NULL);
        future_destroy(p->f);
    }
    vl__free(p);
}

int vl_promise_resolve(vl_promise *p, void *value, vl_free_fn free_fn)
{
    vl_future *f;

    if (p == NULL)
        return VL_EINVAL;
    f = p->f;
    if (f == NULL || !p->given) {
        if (value != NULL && free_fn != NULL)
            free_fn(value);
        promise_end(p);
        return VL_ECANCELED;
    }
    p->f = NULL;
    vl__future_complete(f, VL_OK, value, VL__VAL_USER, free_fn, NULL);
    promise_end(p);
    return VL_OK;
}

int vl_promise_fail(vl_promise *p, int status, const char *msg)
{
    vl_future *f;
    int rc = VL_OK;

    if (p == NULL)
        return VL_EINVAL;
    f = p->f;
    if (f == NULL || !p->given) {
        promise_end(p);
        return VL_ECANCELED;
    }
    p->f = NULL;
    if (status >= 0) {
        rc = VL_EINVAL;
        status = VL_EINVAL;
        msg = "promise failed with a non-negative status";
    }
    vl__future_complete(f, status, NULL, VL__VAL_NONE, NULL, msg);
    promise_end(p);
    return rc;
}

void vl_promise_free(vl_promise *p)
{
    if (p == NULL)
        return;
    if (p->f != NULL && p->given) {
        vl_future *f = p->f;
        p->f = NULL;
        vl__future_set_source(f, NULL, NULL);
        abandon(f, VL_ECANCELED, "promise dropped");
    }
    promise_end(p);
}

/* Every request in flight costs one future: keep it at nine words (one
 * 80-byte block from malloc). */
_Static_assert(sizeof(struct vl_future) <= 72, "vl_future grew");
