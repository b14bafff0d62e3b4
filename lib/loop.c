/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/loop.c - the seam to libev. The only file that includes <ev.h>.
 *
 * Layers: this file knows libev and nothing of futures, connections or the
 * executor. What runs from the loop reaches it as a vl__ready node (a
 * completed future's callback) or a vl__handle (an object to free with the
 * loop); future.c, executor.c and the backends call down into it, never the
 * other way.
 *
 * Completion callbacks never run where a future completes. vl__loop_ready()
 * puts the node on the loop's ready list and arms an ev_check watcher (plus
 * an ev_idle one, so the next poll does not block); the check callback runs
 * the callbacks that were ready when it started, in completion order, then
 * (for a few rounds) those they completed. When
 * the completion came from one of volley's own I/O or timer callbacks, the
 * list runs as that callback returns to libev instead (see leave_watcher). A
 * callback that completes more futures queues them for the next iteration, so
 * a chain of callbacks cannot starve I/O. This is libev's "avoid finishing
 * before returning", applied to every operation at once.
 *
 * Turns (vl__turn, internal.h): readers share each iteration's budget of
 * work. Once it is spent, or while others wait, a reader queues its turn
 * and the check callback runs the queue in order, the budget of the next
 * iteration at a time, with the idle watcher keeping the poll in between
 * from blocking. libev reports ready descriptors in the same order every
 * time, so a reader that was cut short goes to the back of the queue, and
 * the readers it held up go first: nobody starves.
 *
 * Safe points: every watcher callback of volley runs through a trampoline
 * here that counts its depth. vl_loop_free() inside a callback only marks the
 * loop; the teardown happens when the outermost callback returns.
 */
#include "internal.h"

#include <ev.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>

_Static_assert(sizeof(ev_timer) <= sizeof(((vl__timer *)0)->w), "ev_timer does not fit");
_Static_assert(sizeof(ev_io) <= sizeof(((vl__io *)0)->w), "ev_io does not fit");
_Static_assert(sizeof(ev_async) <= sizeof(((vl__async *)0)->w), "ev_async does not fit");

struct vl_loop {
    struct ev_loop *ev;
    int owned;           /* volley made ev and destroys it */
    ev_check check;      /* runs the ready list */
    ev_idle idle;        /* keeps the poll from blocking while work is ready */
    ev_prepare prepare;  /* runs the defer list before the loop blocks */
    ev_idle nudge;       /* keeps a poll from blocking while defers wait */
    vl__defer *defer_head;
    vl__defer *defer_running; /* the rest of the batch prepare_cb is running */
    vl__ready *ready_head;
    vl__ready *ready_tail;
    vl__turn *turn_head;  /* readers waiting for their turn, in order */
    vl__turn *turn_tail;
    unsigned turn_iter;   /* the iteration turn_left belongs to */
    unsigned turn_left;   /* units of work left in it */
    int done_uncalled;    /* a future without a callback completed (note_done) */
    vl__handle handles;  /* sentinel of the open connections, pools, timers */
    vl__handle *graveyard; /* freed during vl_loop_free, released at its end */
    int closing;         /* vl_loop_free is tearing down */
    int cb_depth;        /* volley callbacks running right now */
    int run_depth;       /* inside vl_loop_run / vl_loop_run_until */
    int free_requested;  /* vl_loop_free was called from a callback */
    unsigned active;     /* volley's active watchers, less unref'd ones */
    void *executor;      /* lib/executor.c's slot: made on first use, a handle */
    unsigned threads;
    /* freed blocks kept for reuse (vl__cache_get), each a list through its
     * first word */
    void *cache[VL__CACHE_KINDS];
    unsigned ncache[VL__CACHE_KINDS];
};

/* How many blocks of each kind a loop keeps: enough for the statements a
 * busy loop has in flight, few enough (64 KiB of result chunks) not to
 * matter to its memory. */
#define CACHE_MAX 64

static void loop_destroy(vl_loop *loop);
static void dispatch(vl_loop *loop);

static void enter(vl_loop *loop)
{
    loop->cb_depth++;
}

/* Makes the loop run the ready list soon: the check watcher runs it after
 * the next poll, and the idle watcher keeps that poll from blocking. */
static void ready_arm(vl_loop *loop)
{
    if (!ev_is_active(&loop->check)) {
        ev_check_start(loop->ev, &loop->check);
        ev_idle_start(loop->ev, &loop->idle);
        loop->active++;
    }
}

/* Stops the watchers of ready_arm once neither callbacks nor turns wait. */
static void ready_disarm(vl_loop *loop)
{
    if (loop->ready_head == NULL && loop->turn_head == NULL && ev_is_active(&loop->check)) {
        ev_check_stop(loop->ev, &loop->check);
        ev_idle_stop(loop->ev, &loop->idle);
        loop->active--;
    }
}

/* Leaves a callback; at the outermost level a requested free happens now.
 * Futures completed inside it and not yet run get the watchers that run
 * them (see vl__loop_ready). */
static void leave(vl_loop *loop)
{
    if (--loop->cb_depth > 0)
        return;
    if (loop->ready_head != NULL)
        ready_arm(loop);
    if (!loop->free_requested)
        return;
    if (loop->run_depth > 0)
        ev_break(loop->ev, EVBREAK_ALL); /* vl_loop_run* frees it on return */
    else if (!loop->owned)
        loop_destroy(loop); /* the caller's ev_run goes on without us */
    else
        ev_break(loop->ev, EVBREAK_ALL);
}

/* Leaves an I/O, timer or async callback. When it was the outermost one,
 * the futures it completed run now, in the same loop iteration: the library
 * code that completed them (hiredis, Connector/C) has returned, so this is a
 * safe point, and waiting for the check phase would cost one more poll per
 * batch of replies. */
static void leave_watcher(vl_loop *loop)
{
    if (loop->cb_depth == 1 && loop->ready_head != NULL && !loop->free_requested)
        dispatch(loop);
    leave(loop);
}

/* ---- turns ---- */

/* The budget of the iteration libev is in, refilled on its first use. */
static unsigned turn_budget(vl_loop *loop)
{
    unsigned it = ev_iteration(loop->ev);

    if (it != loop->turn_iter) {
        loop->turn_iter = it;
        loop->turn_left = VL__TURN_BUDGET;
    }
    return loop->turn_left;
}

static void turn_queue(vl_loop *loop, vl__turn *t)
{
    if (t->queued)
        return;
    t->queued = 1;
    t->next = NULL;
    if (loop->turn_tail != NULL)
        loop->turn_tail->next = t;
    else
        loop->turn_head = t;
    loop->turn_tail = t;
    ready_arm(loop);
}

int vl__turn_ask(vl_loop *loop, vl__turn *t)
{
    if (t->queued)
        return 0;
    if (loop->turn_head == NULL && turn_budget(loop) > 0)
        return 1;
    turn_queue(loop, t);
    return 0;
}

int vl__turn_take(vl_loop *loop, vl__turn *t)
{
    if (turn_budget(loop) > 0) {
        loop->turn_left--;
        return 1;
    }
    turn_queue(loop, t);
    return 0;
}

void vl__turn_cancel(vl_loop *loop, vl__turn *t)
{
    vl__turn **pp, *prev = NULL;

    if (!t->queued)
        return;
    for (pp = &loop->turn_head; *pp != NULL && *pp != t; pp = &(*pp)->next)
        prev = *pp;
    if (*pp == t) {
        *pp = t->next;
        if (loop->turn_tail == t)
            loop->turn_tail = prev;
    }
    t->queued = 0;
    t->next = NULL;
}

/* Runs queued turns, oldest first, while the iteration's budget lasts; the
 * callbacks each one completes run after it, as after an I/O callback. A
 * turn cut short again queues itself at the back. */
static void turns_run(vl_loop *loop)
{
    vl__turn *t;

    while ((t = loop->turn_head) != NULL && turn_budget(loop) > 0 && !loop->free_requested) {
        loop->turn_head = t->next;
        if (loop->turn_head == NULL)
            loop->turn_tail = NULL;
        t->queued = 0;
        t->next = NULL;
        t->cb(t);
        if (loop->ready_head != NULL && !loop->free_requested)
            dispatch(loop);
    }
}

static void check_cb(struct ev_loop *ev, ev_check *w, int revents)
{
    vl_loop *loop = w->data;

    VL__UNUSED(ev);
    VL__UNUSED(revents);
    enter(loop);
    dispatch(loop);
    if (loop->turn_head != NULL) {
        turns_run(loop);
        ready_disarm(loop);
    }
    leave(loop);
}

static void idle_cb(struct ev_loop *ev, ev_idle *w, int revents)
{
    VL__UNUSED(ev);
    VL__UNUSED(w);
    VL__UNUSED(revents);
}

/* An iteration with nothing else to do: the nudge has done its work. */
static void nudge_cb(struct ev_loop *ev, ev_idle *w, int revents)
{
    VL__UNUSED(revents);
    ev_idle_stop(ev, w);
}

/* Runs the defer list, then the callbacks it completed, and again while
 * either produced more: libev does not run a prepare watcher started during
 * the prepare phase before it polls, so a write queued by a callback here
 * would otherwise wait for some other event, perhaps forever. If work is
 * still queued after the bound, or if a future without a callback completed
 * here (the one vl_loop_run_until waits for, perhaps: it looks only once
 * the poll returns; one with a callback has run it already), the nudge
 * watcher keeps that poll from blocking; it stops itself at the first
 * iteration with nothing else to do. */
#define VL_PREPARE_PASSES 16

static void prepare_cb(struct ev_loop *ev, ev_prepare *w, int revents)
{
    vl_loop *loop = w->data;
    int pass;

    VL__UNUSED(ev);
    VL__UNUSED(revents);
    if (ev_is_active(&loop->nudge))
        ev_idle_stop(loop->ev, &loop->nudge);
    enter(loop);
    loop->done_uncalled = 0;
    for (pass = 0; pass < VL_PREPARE_PASSES && !loop->free_requested; pass++) {
        vl__defer *d = loop->defer_head;

        if (d == NULL && loop->ready_head == NULL)
            break;
        loop->defer_head = NULL;
        if (d != NULL && ev_is_active(&loop->prepare)) {
            ev_prepare_stop(loop->ev, &loop->prepare);
            loop->active--;
        }
        /* The batch stays where vl__defer_cancel finds it: a callback may
         * cancel (and free the owner of) a node further down it. */
        loop->defer_running = d;
        while ((d = loop->defer_running) != NULL) {
            loop->defer_running = d->next;
            d->queued = 0;
            d->next = NULL;
            d->cb(d);
        }
        if (loop->ready_head != NULL)
            dispatch(loop);
    }
    if ((loop->defer_head != NULL || loop->done_uncalled) && !ev_is_active(&loop->nudge))
        ev_idle_start(loop->ev, &loop->nudge);
    leave(loop);
}

void vl__defer_queue(vl_loop *loop, vl__defer *d)
{
    if (d->queued)
        return;
    d->queued = 1;
    d->next = loop->defer_head;
    loop->defer_head = d;
    if (!ev_is_active(&loop->prepare)) {
        ev_prepare_start(loop->ev, &loop->prepare);
        loop->active++;
    }
}

void vl__defer_cancel(vl_loop *loop, vl__defer *d)
{
    vl__defer **pp;

    if (!d->queued)
        return;
    /* Queued for the next batch, or waiting in the batch being run. */
    for (pp = &loop->defer_head; *pp != NULL && *pp != d; pp = &(*pp)->next)
        ;
    if (*pp == NULL)
        for (pp = &loop->defer_running; *pp != NULL && *pp != d; pp = &(*pp)->next)
            ;
    if (*pp == d)
        *pp = d->next;
    d->queued = 0;
    d->next = NULL;
    if (loop->defer_head == NULL && ev_is_active(&loop->prepare)) {
        ev_prepare_stop(loop->ev, &loop->prepare);
        loop->active--;
    }
}

static vl_loop *loop_make(struct ev_loop *ev, int owned)
{
    vl_loop *loop = vl__calloc(1, sizeof(*loop));

    if (loop == NULL)
        return NULL;
    loop->ev = ev;
    loop->owned = owned;
    loop->handles.prev = loop->handles.next = &loop->handles;
    loop->threads = 4;
    loop->turn_iter = ~0u; /* not an iteration yet: the first refills */
    ev_check_init(&loop->check, check_cb);
    loop->check.data = loop;
    ev_idle_init(&loop->idle, idle_cb);
    loop->idle.data = loop;
    ev_prepare_init(&loop->prepare, prepare_cb);
    loop->prepare.data = loop;
    ev_idle_init(&loop->nudge, nudge_cb);
    loop->nudge.data = loop;
    return loop;
}

vl_loop *vl_loop_new(void)
{
    struct ev_loop *ev = ev_loop_new(EVFLAG_AUTO);
    vl_loop *loop;

    if (ev == NULL)
        return NULL;
    loop = loop_make(ev, 1);
    if (loop == NULL)
        ev_loop_destroy(ev);
    return loop;
}

vl_loop *vl_loop_wrap(struct ev_loop *ev)
{
    if (ev == NULL)
        return NULL;
    return loop_make(ev, 0);
}

struct ev_loop *vl_loop_ev(vl_loop *loop)
{
    return loop->ev;
}

unsigned vl_loop_alive(vl_loop *loop)
{
    return loop->active;
}

/* libev's ev_now() follows the wall clock, which can step back; deadlines
 * and idle ages need a clock that cannot. */
uint64_t vl_loop_now_ms(vl_loop *loop)
{
    struct timespec ts;

    VL__UNUSED(loop);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void vl__loop_note_done(vl_loop *loop)
{
    loop->done_uncalled = 1;
}

int vl__loop_closing(const vl_loop *loop)
{
    return loop->closing;
}

void vl__loop_ready(vl_loop *loop, vl__ready *r)
{
    r->next = NULL;
    if (loop->ready_tail != NULL)
        loop->ready_tail->next = r;
    else
        loop->ready_head = r;
    loop->ready_tail = r;
    /* Inside one of volley's callbacks the list runs as it returns
     * (leave_watcher, check_cb), and leave arms the watchers for what is
     * left then: most completions come from there, and starting and
     * stopping two watchers for each cost more than running it. */
    if (loop->cb_depth == 0)
        ready_arm(loop);
}

/* Rounds of the ready list per dispatch. A round takes the whole list;
 * what its callbacks complete runs in the next round. Internal hand-offs (a
 * pool forwarding a connection's result, a gather counting a child) take a
 * round each, so a few rounds keep them out of an extra poll, while the
 * bound stops a callback that keeps completing futures from starving I/O. */
#define VL_DISPATCH_ROUNDS 4

static void dispatch(vl_loop *loop)
{
    int round;

    for (round = 0; round < VL_DISPATCH_ROUNDS && loop->ready_head != NULL; round++) {
        vl__ready *r = loop->ready_head;

        loop->ready_head = loop->ready_tail = NULL;
        while (r != NULL) {
            vl__ready *next = r->next; /* run may free r */
            vl__future_run(r);
            r = next;
        }
        if (loop->free_requested)
            break;
    }
    ready_disarm(loop);
}

int vl_loop_run(vl_loop *loop)
{
    if (loop == NULL)
        return VL_EINVAL;
    if (loop->cb_depth > 0)
        return VL_ESTATE;
    loop->run_depth++;
    while (!loop->free_requested && ev_run(loop->ev, 0))
        ;
    loop->run_depth--;
    if (loop->free_requested) {
        loop_destroy(loop);
        return VL_ECLOSED;
    }
    return VL_OK;
}

int vl__loop_run_while(vl_loop *loop, int (*more)(void *arg), void *arg)
{
    if (loop->cb_depth > 0)
        return VL_ESTATE;
    loop->run_depth++;
    while (more(arg) && !loop->free_requested) {
        /* ev_run returns 0 when no watcher is left: nothing can change
         * more()'s answer any more, and waiting would spin forever. */
        if (!ev_run(loop->ev, EVRUN_ONCE) && more(arg) && loop->ready_head == NULL) {
            loop->run_depth--;
            return VL_ESTATE;
        }
    }
    loop->run_depth--;
    if (loop->free_requested) {
        loop_destroy(loop);
        return VL_ECLOSED;
    }
    return VL_OK;
}

void vl__handle_add(vl_loop *loop, vl__handle *h, void (*free_fn)(vl__handle *))
{
    h->free_fn = free_fn;
    h->next = &loop->handles;
    h->prev = loop->handles.prev;
    loop->handles.prev->next = h;
    loop->handles.prev = h;
}

void vl__handle_remove(vl_loop *loop, vl__handle *h)
{
    VL__UNUSED(loop);
    if (h->next == NULL)
        return;
    h->prev->next = h->next;
    h->next->prev = h->prev;
    h->next = h->prev = NULL;
}

void vl__handle_bury(vl_loop *loop, vl__handle *h, void (*release)(vl__handle *h))
{
    if (!loop->closing) {
        release(h);
        return;
    }
    h->free_fn = release;
    h->prev = NULL;
    h->next = loop->graveyard;
    loop->graveyard = h;
}

static void free_open_handles(vl_loop *loop)
{
    while (loop->handles.next != &loop->handles) {
        vl__handle *h = loop->handles.next;
        vl__handle_remove(loop, h);
        h->free_fn(h);
    }
}

/* Teardown in two phases. First every open object is freed, which completes
 * its futures with VL_ECANCELED; objects bury their memory (vl__handle_bury)
 * instead of releasing it, so the callbacks that run next may still pass
 * them to their _free (a no-op by then) without touching freed memory. Only
 * when every callback has run is the graveyard released. */
void *vl__cache_get(vl_loop *loop, int kind)
{
    void *p = loop->cache[kind];

    if (p != NULL) {
        loop->cache[kind] = *(void **)p;
        loop->ncache[kind]--;
    }
    return p;
}

int vl__cache_put(vl_loop *loop, int kind, void *p)
{
    if (loop->closing || loop->ncache[kind] >= CACHE_MAX)
        return 0;
    *(void **)p = loop->cache[kind];
    loop->cache[kind] = p;
    loop->ncache[kind]++;
    return 1;
}

size_t vl__cache_count(const vl_loop *loop)
{
    size_t n = 0;
    int k;

    for (k = 0; k < VL__CACHE_KINDS; k++)
        n += loop->ncache[k];
    return n;
}

static void cache_free(vl_loop *loop)
{
    int k;

    for (k = 0; k < VL__CACHE_KINDS; k++) {
        while (loop->cache[k] != NULL) {
            void *p = loop->cache[k];
            loop->cache[k] = *(void **)p;
            vl__free(p);
        }
        loop->ncache[k] = 0;
    }
}

static void loop_destroy(vl_loop *loop)
{
    int rounds;

    loop->closing = 1;
    loop->free_requested = 0;
    loop->cb_depth++; /* everything below runs as one safe point */
    free_open_handles(loop);
    /* Deliver every completion. A callback that keeps making work sees
     * VL_ECLOSED; the bound stops a pathological one from looping forever. */
    for (rounds = 0; loop->ready_head != NULL && rounds < 1000; rounds++) {
        dispatch(loop);
        free_open_handles(loop);
    }
    while (loop->graveyard != NULL) {
        vl__handle *h = loop->graveyard;
        loop->graveyard = h->next;
        h->next = NULL;
        h->free_fn(h);
    }
    /* Unconditional: a wrapped ev_loop lives on, and a watcher of ours left
     * pending in it would be called on freed memory. */
    ev_check_stop(loop->ev, &loop->check);
    ev_idle_stop(loop->ev, &loop->idle);
    ev_prepare_stop(loop->ev, &loop->prepare);
    ev_idle_stop(loop->ev, &loop->nudge);
    if (loop->owned)
        ev_loop_destroy(loop->ev);
    cache_free(loop);
    vl__free(loop);
}

void vl_loop_free(vl_loop *loop)
{
    if (loop == NULL)
        return;
    if (loop->cb_depth > 0 || loop->run_depth > 0) {
        loop->free_requested = 1;
        if (loop->cb_depth == 0)
            ev_break(loop->ev, EVBREAK_ALL);
        return;
    }
    loop_destroy(loop);
}

void *vl__loop_executor(vl_loop *loop, unsigned *threads)
{
    *threads = loop->threads;
    return loop->executor;
}

void vl__loop_set_executor(vl_loop *loop, void *executor)
{
    loop->executor = executor;
}

int vl_loop_set_threads(vl_loop *loop, unsigned threads)
{
    if (loop == NULL || threads == 0 || threads > 256)
        return VL_EINVAL;
    if (loop->executor != NULL)
        return VL_ESTATE;
    loop->threads = threads;
    return VL_OK;
}

/* ---- watchers ---- */

/* Watcher states. libev stops a one-shot timer before it calls it, and any
 * watcher can be inactive but pending: its event was collected in this
 * iteration and its callback has not run yet. A watcher freed in that state
 * is still called later, on freed memory. So every stop below calls libev's
 * stop function, which also clears a pending event, whether or not the
 * watcher is active; and a timer keeps its own `armed` flag, because
 * ev_is_active says nothing about an expiry still to be delivered. The loop's
 * `active` count follows `armed` for timers and ev_is_active for the others. */

static void timer_cb(struct ev_loop *ev, ev_timer *w, int revents)
{
    vl__timer *t = (vl__timer *)(void *)w;
    vl_loop *loop = t->loop;

    VL__UNUSED(ev);
    VL__UNUSED(revents);
    t->armed = 0;
    loop->active--;
    enter(loop);
    t->cb(t, t->ud);
    leave_watcher(loop);
}

void vl__timer_init(vl__timer *t, vl_loop *loop, vl__timer_cb cb, void *ud)
{
    memset(t->w, 0, sizeof(t->w));
    ev_timer_init((ev_timer *)(void *)t->w, timer_cb, 0., 0.);
    t->loop = loop;
    t->cb = cb;
    t->ud = ud;
    t->armed = 0;
}

void vl__timer_start(vl__timer *t, uint64_t ms)
{
    ev_timer *w = (ev_timer *)(void *)t->w;

    if (t->armed) {
        ev_timer_stop(t->loop->ev, w); /* also drops an expiry not yet run */
    } else {
        t->armed = 1;
        t->loop->active++;
    }
    /* libev measures the interval from the time it cached at its last
     * poll; time spent since, in callbacks or outside the loop, would be
     * taken off the deadline. */
    ev_now_update(t->loop->ev);
    ev_timer_set(w, (double)ms / 1000.0, 0.);
    ev_timer_start(t->loop->ev, w);
}

void vl__timer_stop(vl__timer *t)
{
    if (!t->armed)
        return;
    ev_timer_stop(t->loop->ev, (ev_timer *)(void *)t->w);
    t->armed = 0;
    t->loop->active--;
}

int vl__timer_active(const vl__timer *t)
{
    return t->armed;
}

static void io_cb(struct ev_loop *ev, ev_io *w, int revents)
{
    vl__io *io = (vl__io *)(void *)w;
    vl_loop *loop = io->loop;
    int events = 0;

    VL__UNUSED(ev);
    if (revents & EV_READ)
        events |= VL__READ;
    if (revents & EV_WRITE)
        events |= VL__WRITE;
    enter(loop);
    io->cb(io, events, io->ud);
    leave_watcher(loop);
}

void vl__io_init(vl__io *io, vl_loop *loop, int fd, vl__io_cb cb, void *ud)
{
    memset(io->w, 0, sizeof(io->w));
    ev_io_init((ev_io *)(void *)io->w, io_cb, fd < 0 ? 0 : fd, 0);
    io->loop = loop;
    io->cb = cb;
    io->ud = ud;
    io->fd = fd;
    io->events = 0;
}

void vl__io_set(vl__io *io, int fd, int events)
{
    ev_io *w = (ev_io *)(void *)io->w;
    int evs = 0;

    if (fd == io->fd && events == io->events && (events == 0) == !ev_is_active(w))
        return;
    if (ev_is_active(w))
        io->loop->active--;
    ev_io_stop(io->loop->ev, w); /* also drops a pending event */
    io->fd = fd;
    io->events = events;
    if (events == 0 || fd < 0)
        return;
    if (events & VL__READ)
        evs |= EV_READ;
    if (events & VL__WRITE)
        evs |= EV_WRITE;
    ev_io_set(w, fd, evs);
    ev_io_start(io->loop->ev, w);
    io->loop->active++;
}

void vl__io_stop(vl__io *io)
{
    ev_io *w = (ev_io *)(void *)io->w;

    if (ev_is_active(w))
        io->loop->active--;
    ev_io_stop(io->loop->ev, w); /* also drops a pending event */
    io->events = 0;
}

static void async_cb(struct ev_loop *ev, ev_async *w, int revents)
{
    vl__async *a = (vl__async *)(void *)w;
    vl_loop *loop = a->loop;

    VL__UNUSED(ev);
    VL__UNUSED(revents);
    enter(loop);
    a->cb(a, a->ud);
    leave_watcher(loop);
}

void vl__async_init(vl__async *a, vl_loop *loop, vl__async_cb cb, void *ud)
{
    memset(a->w, 0, sizeof(a->w));
    ev_async_init((ev_async *)(void *)a->w, async_cb);
    a->loop = loop;
    a->cb = cb;
    a->ud = ud;
}

void vl__async_start(vl__async *a)
{
    ev_async *w = (ev_async *)(void *)a->w;

    if (!ev_is_active(w)) {
        ev_async_start(a->loop->ev, w);
        a->loop->active++;
    }
}

void vl__async_stop(vl__async *a)
{
    ev_async *w = (ev_async *)(void *)a->w;

    if (ev_is_active(w))
        a->loop->active--;
    ev_async_stop(a->loop->ev, w); /* also drops a pending wake-up */
}

/* The only volley call that is safe from another thread. */
void vl__async_send(vl__async *a)
{
    ev_async_send(a->loop->ev, (ev_async *)(void *)a->w);
}

/* Keeps a watcher from holding the loop open (idle pool connections). */
void vl__loop_unref(vl_loop *loop)
{
    ev_unref(loop->ev);
    loop->active--;
}

void vl__loop_ref(vl_loop *loop)
{
    ev_ref(loop->ev);
    loop->active++;
}

/* ---- signals (vl_loop_signal) ----
 * One ev_signal per waiting future. libev catches the signal with a handler
 * of its own and runs the watcher from the loop, never from the handler, so
 * the future completes like any other. Stopping the last watcher of a
 * signal gives it back its default disposition: a second SIGINT while no
 * future waits for it ends the process, as it should. */
/* libev lets one loop at a time watch a given signal (it asserts
 * otherwise): which loop holds each signal, and for how many futures. */
static pthread_mutex_t sig_lock = PTHREAD_MUTEX_INITIALIZER;
static vl_loop *sig_owner[NSIG];
static unsigned sig_users[NSIG];

typedef struct sigwaiter {
    ev_signal w;        /* first: the callback finds the struct from it */
    vl_loop *loop;
    vl_future *f;
    vl__handle handle;  /* vl_loop_free completes the future */
} sigwaiter;

static void sigwait_drop(sigwaiter *s)
{
    if (ev_is_active(&s->w)) {
        int signo = s->w.signum;

        ev_signal_stop(s->loop->ev, &s->w);
        s->loop->active--;
        pthread_mutex_lock(&sig_lock);
        if (--sig_users[signo] == 0)
            sig_owner[signo] = NULL;
        pthread_mutex_unlock(&sig_lock);
    }
    vl__handle_remove(s->loop, &s->handle);
    vl__free(s);
}

static void sigwait_cb(struct ev_loop *ev, ev_signal *w, int revents)
{
    sigwaiter *s = (sigwaiter *)(void *)w;
    vl_loop *loop = s->loop;
    vl_future *f = s->f;

    VL__UNUSED(ev);
    VL__UNUSED(revents);
    enter(loop);
    sigwait_drop(s);
    vl__future_set_source(f, NULL, NULL);
    vl__future_complete(f, VL_OK, NULL, VL__VAL_NONE, NULL, NULL);
    leave_watcher(loop);
}

static void sigwait_cancel(void *source, vl_future *f, int status)
{
    VL__UNUSED(f);
    VL__UNUSED(status);
    sigwait_drop(source);
}

static void sigwait_describe(void *source, char *buf, size_t n)
{
    const sigwaiter *s = source;

    snprintf(buf, n, "signal %d", s->w.signum);
}

static const vl__source_ops sigwait_ops = {.cancel = sigwait_cancel,
                                           .describe = sigwait_describe};

static void sigwait_handle_free(vl__handle *h)
{
    sigwaiter *s = (sigwaiter *)(void *)((char *)h - offsetof(sigwaiter, handle));
    vl_future *f = s->f;

    vl__future_set_source(f, NULL, NULL);
    sigwait_drop(s);
    vl__future_complete(f, VL_ECANCELED, NULL, VL__VAL_NONE, NULL, "loop freed");
}

vl_future *vl_loop_signal(vl_loop *loop, int signo)
{
    sigwaiter *s;
    vl_future *f;

    if (loop == NULL)
        return NULL;
    if (loop->closing)
        return vl__future_failed(loop, VL_ECLOSED, "loop is closing");
    if (signo <= 0 || signo >= NSIG || signo == SIGKILL || signo == SIGSTOP)
        return vl__future_failed(loop, VL_EINVAL, "signal %d cannot be caught", signo);
    s = vl__calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    f = vl__future_make(loop, &sigwait_ops, s);
    if (f == NULL) {
        vl__free(s);
        return NULL;
    }
    s->loop = loop;
    s->f = f;
    pthread_mutex_lock(&sig_lock);
    if (sig_owner[signo] != NULL && sig_owner[signo] != loop) {
        pthread_mutex_unlock(&sig_lock);
        vl__future_set_source(f, NULL, NULL);
        vl__free(s);
        vl__future_fail(f, VL_EBUSY, "signal %d is watched by another loop", signo);
        return f;
    }
    sig_owner[signo] = loop;
    sig_users[signo]++;
    pthread_mutex_unlock(&sig_lock);
    ev_signal_init(&s->w, sigwait_cb, signo);
    ev_signal_start(loop->ev, &s->w);
    loop->active++;
    vl__handle_add(loop, &s->handle, sigwait_handle_free);
    return f;
}
