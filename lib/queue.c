/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/queue.c - queues (FIFO, LIFO, priority) and bounded semaphores.
 *
 * Everything here is synchronous bookkeeping: no watcher, no deferred pump.
 * A put, get, release or close moves items and permits at once and
 * completes the futures concerned with vl__future_complete, which only
 * queues their callbacks on the loop (rule 2 of volley/queue.h). So the
 * state is consistent whenever user code runs, and two invariants hold
 * after every call:
 *   - gets wait only while the queue is empty, puts only while it is full;
 *   - acquires wait only while no permit is free.
 * Handing an item to a get and completing that get are one step, so there
 * is no moment at which a get has been given an item but can still be
 * cancelled (rule 3): a completed future's cancel does nothing.
 *
 * Each waiting future has a waiter node, its source (lib/internal.h), and
 * holds one reference on the loop (the loop-alive rule), dropped when the
 * node leaves its list.
 */
#include "internal.h"

#include <inttypes.h>

/* ---- waiting futures ---- */

typedef struct waiter waiter;
typedef struct wlist wlist;

struct waiter {
    waiter *prev, *next;
    wlist *list;
    vl_future *f;
    void *item;       /* a waiting put's item (still the caller's) */
    int64_t priority; /* and its priority */
};

struct wlist {
    waiter *head, *tail;
    size_t n;
    vl_loop *loop;
    const char *what; /* "get", "put", "join", "acquire": for messages */
    void *owner;      /* the queue or semaphore, for describe */
};

static void wlist_init(wlist *l, vl_loop *loop, const char *what, void *owner)
{
    l->head = l->tail = NULL;
    l->n = 0;
    l->loop = loop;
    l->what = what;
    l->owner = owner;
}

static void wlist_append(wlist *l, waiter *w)
{
    w->list = l;
    w->next = NULL;
    w->prev = l->tail;
    if (l->tail != NULL)
        l->tail->next = w;
    else
        l->head = w;
    l->tail = w;
    l->n++;
    vl__loop_ref(l->loop);
}

static void wlist_unlink(waiter *w)
{
    wlist *l = w->list;

    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        l->head = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    else
        l->tail = w->prev;
    l->n--;
    w->prev = w->next = NULL;
    w->list = NULL;
    vl__loop_unref(l->loop);
}

/* The cancel hook of every waiting future: it just leaves its list. Nothing
 * was reserved for it, so nothing has to be given back. */
static void waiter_cancel(void *source, vl_future *f, int status)
{
    waiter *w = source;

    VL__UNUSED(f);
    VL__UNUSED(status);
    wlist_unlink(w);
    vl__free(w);
}

static void waiter_describe(void *source, char *buf, size_t n);

static const vl__source_ops waiter_ops = {.cancel = waiter_cancel, .describe = waiter_describe};

/* Makes `f` wait at the end of `l`. Returns VL_OK, or VL_ENOMEM (f is then
 * untouched). */
static int wait_on(wlist *l, vl_future *f, void *item, int64_t priority)
{
    waiter *w = vl__calloc(1, sizeof(*w));

    if (w == NULL)
        return VL_ENOMEM;
    w->f = f;
    w->item = item;
    w->priority = priority;
    wlist_append(l, w);
    vl__future_set_source(f, &waiter_ops, w);
    return VL_OK;
}

/* Takes w off its list and completes its future. */
static void wake(waiter *w, int status, void *value, vl_free_fn free_fn, const char *msg)
{
    vl_future *f = w->f;

    wlist_unlink(w);
    vl__free(w);
    vl__future_complete(f, status, value, value != NULL ? VL__VAL_USER : VL__VAL_NONE, free_fn,
                        msg);
}

static void wake_all(wlist *l, int status, const char *msg)
{
    while (l->head != NULL)
        wake(l->head, status, NULL, NULL, msg);
}

/* A future to be completed at once by its maker, or NULL. */
static vl_future *fresh(vl_loop *loop)
{
    return vl__future_make(loop, NULL, NULL);
}

static void done_ok(vl_future *f)
{
    vl__future_complete(f, VL_OK, NULL, VL__VAL_NONE, NULL, NULL);
}

/* The shape of join and acquire: a future that completed with VL_OK at
 * once when `ready`, else one waiting at the end of `l`. NULL when out of
 * memory. */
static vl_future *ready_or_wait(wlist *l, int ready)
{
    vl_future *f = fresh(l->loop);

    if (f == NULL)
        return NULL;
    if (ready) {
        done_ok(f);
        return f;
    }
    if (wait_on(l, f, NULL, 0) != VL_OK) {
        vl_future_free(f);
        return NULL;
    }
    return f;
}

/* ---- queues ---- */

typedef struct qent {
    void *item;
    int64_t priority;
    uint64_t seq; /* entry order: ties of equal priority go first in, first out */
} qent;

struct vl_queue {
    vl_loop *loop;
    vl__handle handle;
    vl_queue_kind kind;
    size_t max_size; /* 0 = unbounded */
    vl_free_fn free_fn;
    qent *buf;       /* FIFO: a ring from head; LIFO: a stack; PRIORITY: a heap */
    size_t cap, head, count;
    uint64_t seq;
    size_t unfinished; /* put and not yet task_done */
    wlist getters, putters, joiners;
    int closed;
    int freeing; /* torn down; only reachable while the loop frees it */
};

static const char *kind_name(vl_queue_kind k)
{
    return k == VL_QUEUE_FIFO ? "FIFO" : k == VL_QUEUE_LIFO ? "LIFO" : "priority";
}

static void waiter_describe(void *source, char *buf, size_t n)
{
    const waiter *w = source;
    const wlist *l = w->list;

    if (strcmp(l->what, "acquire") == 0) {
        snprintf(buf, n, "semaphore acquire (%zu waiting)", l->n);
        return;
    }
    const vl_queue *q = l->owner;
    if (l == &q->joiners)
        snprintf(buf, n, "%s queue join (%zu unfinished)", kind_name(q->kind), q->unfinished);
    else if (q->max_size > 0)
        snprintf(buf, n, "%s queue %s (%zu of %zu queued, %zu waiting)", kind_name(q->kind),
                 l->what, q->count, q->max_size, l->n);
    else
        snprintf(buf, n, "%s queue %s (%zu queued, %zu waiting)", kind_name(q->kind), l->what,
                 q->count, l->n);
}

static int q_full(const vl_queue *q)
{
    return q->max_size > 0 && q->count >= q->max_size;
}

/* Room for one more entry. VL_OK or VL_ENOMEM (nothing changed). The ring
 * is laid out from 0 again in the new block. */
static int q_reserve(vl_queue *q)
{
    size_t ncap, i;
    qent *nb;

    if (q->count < q->cap)
        return VL_OK;
    ncap = q->cap == 0 ? 16 : q->cap * 2;
    if (q->max_size > 0 && ncap > q->max_size)
        ncap = q->max_size;
    if (ncap <= q->cap || ncap > SIZE_MAX / sizeof(qent))
        return VL_ENOMEM;
    nb = vl__malloc(ncap * sizeof(qent));
    if (nb == NULL)
        return VL_ENOMEM;
    for (i = 0; i < q->count; i++)
        nb[i] = q->buf[(q->head + i) % q->cap];
    vl__free(q->buf);
    q->buf = nb;
    q->cap = ncap;
    q->head = 0;
    return VL_OK;
}

static int ent_before(const qent *a, const qent *b)
{
    return a->priority < b->priority || (a->priority == b->priority && a->seq < b->seq);
}

static void heap_up(qent *h, size_t i)
{
    qent e = h[i];

    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!ent_before(&e, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static void heap_down(qent *h, size_t n, size_t i)
{
    qent e = h[i];

    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && ent_before(&h[c + 1], &h[c]))
            c++;
        if (!ent_before(&h[c], &e))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = e;
}

/* Stores an item; the caller made room with q_reserve. */
static void q_push(vl_queue *q, void *item, int64_t priority)
{
    qent e = {item, priority, q->seq++};

    if (q->kind == VL_QUEUE_FIFO) {
        q->buf[(q->head + q->count) % q->cap] = e;
        q->count++;
    } else {
        q->buf[q->count++] = e;
        if (q->kind == VL_QUEUE_PRIORITY)
            heap_up(q->buf, q->count - 1);
    }
}

/* Removes the next item; the queue is not empty. */
static void *q_pop(vl_queue *q)
{
    void *item;

    if (q->kind == VL_QUEUE_FIFO) {
        item = q->buf[q->head].item;
        q->head = (q->head + 1) % q->cap;
        q->count--;
    } else if (q->kind == VL_QUEUE_LIFO) {
        item = q->buf[--q->count].item;
    } else {
        item = q->buf[0].item;
        q->buf[0] = q->buf[--q->count];
        if (q->count > 0)
            heap_down(q->buf, q->count, 0);
    }
    return item;
}

/* Admits waiting puts while there is room: an item just left the queue.
 * Room cannot run out here (the block never shrinks and held max_size
 * items), but should it, the put fails rather than its item getting lost. */
static void admit_putters(vl_queue *q)
{
    while (q->putters.head != NULL && !q_full(q)) {
        waiter *w = q->putters.head;
        if (q_reserve(q) != VL_OK) {
            wake(w, VL_ENOMEM, NULL, NULL, "out of memory admitting a put");
            continue;
        }
        q_push(q, w->item, w->priority);
        q->unfinished++;
        wake(w, VL_OK, NULL, NULL, NULL);
    }
}

static void queue_teardown(vl_queue *q, const char *msg)
{
    size_t i;

    q->freeing = 1;
    q->closed = 1;
    wake_all(&q->getters, VL_ECANCELED, msg);
    wake_all(&q->putters, VL_ECANCELED, msg);
    wake_all(&q->joiners, VL_ECANCELED, msg);
    if (q->free_fn != NULL)
        for (i = 0; i < q->count; i++) {
            void *item = q->buf[(q->head + i) % q->cap].item;
            if (item != NULL)
                q->free_fn(item);
        }
    q->count = 0;
    q->head = 0;
    vl__free(q->buf);
    q->buf = NULL;
    q->cap = 0;
}

static void queue_release(vl__handle *h)
{
    vl__free((char *)h - offsetof(vl_queue, handle));
}

/* vl_loop_free frees a queue still open: its memory stays until the loop's
 * callbacks have run, since they may still pass it to vl_queue_free. */
static void queue_handle_free(vl__handle *h)
{
    vl_queue *q = (vl_queue *)(void *)((char *)h - offsetof(vl_queue, handle));

    queue_teardown(q, "loop freed");
    vl__handle_bury(q->loop, &q->handle, queue_release);
}

vl_queue *vl_queue_new(vl_loop *loop, vl_queue_kind kind, size_t max_size, vl_free_fn free_fn)
{
    vl_queue *q;

    if (loop == NULL ||
        (kind != VL_QUEUE_FIFO && kind != VL_QUEUE_LIFO && kind != VL_QUEUE_PRIORITY))
        return NULL;
    q = vl__calloc(1, sizeof(*q));
    if (q == NULL)
        return NULL;
    q->loop = loop;
    q->kind = kind;
    q->max_size = max_size;
    q->free_fn = free_fn;
    wlist_init(&q->getters, loop, "get", q);
    wlist_init(&q->putters, loop, "put", q);
    wlist_init(&q->joiners, loop, "join", q);
    vl__handle_add(loop, &q->handle, queue_handle_free);
    return q;
}

/* The put, with or without waiting. Returns VL_OK when the item is the
 * queue's now, VL_EBUSY when it must wait, or the failure. */
static int put_now(vl_queue *q, void *item, int64_t priority)
{
    if (q->closed)
        return VL_ECLOSED;
    if (q->getters.head != NULL) {
        /* The queue is empty (invariant): the oldest get takes it. */
        q->unfinished++;
        wake(q->getters.head, VL_OK, item, q->free_fn, NULL);
        return VL_OK;
    }
    if (q_full(q))
        return VL_EBUSY;
    if (q_reserve(q) != VL_OK)
        return VL_ENOMEM;
    q_push(q, item, priority);
    q->unfinished++;
    return VL_OK;
}

vl_future *vl_queue_put_priority(vl_queue *q, void *item, int64_t priority)
{
    vl_future *f;
    int rc;

    if (q == NULL)
        return NULL;
    if (q->freeing)
        return vl__future_failed(q->loop, VL_ECLOSED, "queue freed");
    if (q->closed)
        return vl__future_failed(q->loop, VL_ECLOSED, "put: queue closed");
    f = fresh(q->loop);
    if (f == NULL)
        return NULL;
    rc = put_now(q, item, priority);
    if (rc == VL_OK) {
        done_ok(f);
        return f;
    }
    if (rc == VL_EBUSY && wait_on(&q->putters, f, item, priority) == VL_OK)
        return f;
    vl_future_free(f); /* out of memory: nothing changed */
    return NULL;
}

vl_future *vl_queue_put(vl_queue *q, void *item)
{
    return vl_queue_put_priority(q, item, 0);
}

int vl_queue_put_nowait_priority(vl_queue *q, void *item, int64_t priority)
{
    if (q == NULL)
        return VL_EINVAL;
    return put_now(q, item, priority);
}

int vl_queue_put_nowait(vl_queue *q, void *item)
{
    return vl_queue_put_nowait_priority(q, item, 0);
}

vl_future *vl_queue_get(vl_queue *q)
{
    vl_future *f;

    if (q == NULL)
        return NULL;
    if (q->freeing)
        return vl__future_failed(q->loop, VL_ECLOSED, "queue freed");
    f = fresh(q->loop);
    if (f == NULL)
        return NULL;
    /* The future carries its item with free_fn, which vl__future_complete
     * keeps in room it may have to allocate. Were that to fail then, the
     * future would free the item: an item lost. So the room is made now,
     * while nothing is at stake. */
    if (q->free_fn != NULL && vl__future_reserve(f) != VL_OK) {
        vl_future_free(f);
        return NULL;
    }
    if (q->count > 0) {
        void *item = q_pop(q);
        admit_putters(q);
        vl__future_complete(f, VL_OK, item, item != NULL ? VL__VAL_USER : VL__VAL_NONE,
                            q->free_fn, NULL);
        return f;
    }
    if (q->closed) {
        vl__future_complete(f, VL_ECLOSED, NULL, VL__VAL_NONE, NULL, "get: queue closed and empty");
        return f;
    }
    if (wait_on(&q->getters, f, NULL, 0) != VL_OK) {
        vl_future_free(f);
        return NULL;
    }
    return f;
}

int vl_queue_get_nowait(vl_queue *q, void **item)
{
    if (item != NULL)
        *item = NULL;
    if (q == NULL || item == NULL)
        return VL_EINVAL;
    if (q->count == 0)
        return q->closed ? VL_ECLOSED : VL_EBUSY;
    *item = q_pop(q);
    admit_putters(q);
    return VL_OK;
}

size_t vl_queue_size(const vl_queue *q)
{
    return q != NULL ? q->count : 0;
}

int vl_queue_empty(const vl_queue *q)
{
    return q == NULL || q->count == 0;
}

int vl_queue_full(const vl_queue *q)
{
    return q != NULL && q_full(q);
}

int vl_queue_task_done(vl_queue *q)
{
    if (q == NULL)
        return VL_EINVAL;
    if (q->unfinished == 0)
        return VL_ESTATE;
    if (--q->unfinished == 0)
        wake_all(&q->joiners, VL_OK, NULL);
    return VL_OK;
}

vl_future *vl_queue_join(vl_queue *q)
{
    if (q == NULL)
        return NULL;
    if (q->freeing)
        return vl__future_failed(q->loop, VL_ECLOSED, "queue freed");
    return ready_or_wait(&q->joiners, q->unfinished == 0);
}

int vl_queue_shutdown(vl_queue *q)
{
    if (q == NULL)
        return VL_EINVAL;
    if (q->closed)
        return VL_OK;
    q->closed = 1;
    wake_all(&q->getters, VL_ECLOSED, "get: queue closed and empty");
    wake_all(&q->putters, VL_ECLOSED, "put: queue closed");
    return VL_OK;
}

void vl_queue_free(vl_queue *q)
{
    if (q == NULL || q->freeing)
        return;
    vl__handle_remove(q->loop, &q->handle);
    queue_teardown(q, "queue freed");
    vl__handle_bury(q->loop, &q->handle, queue_release);
}

/* ---- semaphores ---- */

struct vl_semaphore {
    vl_loop *loop;
    vl__handle handle;
    size_t value;   /* permits free */
    size_t initial; /* and the most it may hold */
    wlist waiters;
    int freeing;
};

static void sem_release_mem(vl__handle *h)
{
    vl__free((char *)h - offsetof(vl_semaphore, handle));
}

static void sem_handle_free(vl__handle *h)
{
    vl_semaphore *s = (vl_semaphore *)(void *)((char *)h - offsetof(vl_semaphore, handle));

    s->freeing = 1;
    wake_all(&s->waiters, VL_ECANCELED, "loop freed");
    vl__handle_bury(s->loop, &s->handle, sem_release_mem);
}

vl_semaphore *vl_semaphore_new(vl_loop *loop, size_t value)
{
    vl_semaphore *s;

    if (loop == NULL || value == 0)
        return NULL;
    s = vl__calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->loop = loop;
    s->value = s->initial = value;
    wlist_init(&s->waiters, loop, "acquire", s);
    vl__handle_add(loop, &s->handle, sem_handle_free);
    return s;
}

vl_future *vl_semaphore_acquire(vl_semaphore *s)
{
    vl_future *f;
    int ready;

    if (s == NULL)
        return NULL;
    if (s->freeing)
        return vl__future_failed(s->loop, VL_ECLOSED, "semaphore freed");
    ready = s->value > 0;
    f = ready_or_wait(&s->waiters, ready);
    if (f != NULL && ready)
        s->value--;
    return f;
}

int vl_semaphore_try_acquire(vl_semaphore *s)
{
    if (s == NULL)
        return VL_EINVAL;
    if (s->freeing)
        return VL_ECLOSED;
    if (s->value == 0)
        return VL_EBUSY;
    s->value--;
    return VL_OK;
}

int vl_semaphore_release(vl_semaphore *s)
{
    if (s == NULL)
        return VL_EINVAL;
    if (s->freeing)
        return VL_ECLOSED;
    if (s->waiters.head != NULL) {
        /* No permit is free (invariant): this one passes straight on. */
        wake(s->waiters.head, VL_OK, NULL, NULL, NULL);
        return VL_OK;
    }
    if (s->value >= s->initial)
        return VL_EINVAL;
    s->value++;
    return VL_OK;
}

size_t vl_semaphore_value(const vl_semaphore *s)
{
    return s != NULL ? s->value : 0;
}

void vl_semaphore_free(vl_semaphore *s)
{
    if (s == NULL || s->freeing)
        return;
    vl__handle_remove(s->loop, &s->handle);
    s->freeing = 1;
    wake_all(&s->waiters, VL_ECANCELED, "semaphore freed");
    vl__handle_bury(s->loop, &s->handle, sem_release_mem);
}
