/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/loop_group.c - vl_loop_group: worker loops on threads of their own.
 *
 * A job crosses threads twice, and nothing else does. The home thread puts
 * it on its worker's inbox (under the worker's mutex) and wakes that loop
 * with an ev_async; the worker runs the job function there and attaches
 * job_done to the future it returned; job_done moves the result into the
 * job and puts the job on the group's done list (under the group's mutex),
 * waking the home loop, whose async callback completes the home future. A
 * job is owned by one thread at a time: the home thread until it is on an
 * inbox, the worker from the moment it takes it off, the home thread again
 * once it is on the done list. Only the home thread frees a job.
 *
 * A cancel is the one message that does not move a job: the home thread
 * sets the job's atomic `cancel` flag, bumps its worker's atomic counter
 * and wakes the worker, which (seeing the counter moved) cancels the worker
 * futures of its flagged jobs, or does not start a flagged job at all. The
 * job itself stays alive, since only the home thread frees it and only
 * after it came back.
 *
 * The worker futures belong to the worker loops; the home futures, the
 * counts and the placement to the home thread. Freeing the group stops
 * each worker from inside its own loop (cancel, fini, vl_loop_free) and
 * joins the threads, so that afterwards everything left is the home
 * thread's.
 */
#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#define GROUP_MAX_LOOPS 256

/* The value type of vl_loop_group_value's futures: a box holding the
 * caller's value and its free function, which the future itself keeps
 * out of reach. Private to this file, far from lib/internal.h's VL__VAL_
 * numbers, so no typed accessor of another file ever claims it; chains
 * forward it with the value like any other type. */
#define GROUP_VAL_BOX 0x47

typedef struct vbox {
    void *value;
    vl_free_fn free_fn;
} vbox;

typedef struct worker worker;
typedef struct gjob gjob;

struct gjob {
    gjob *next;           /* on an inbox or on the done list */
    gjob *hprev, *hnext;  /* home: the group's jobs not yet delivered */
    gjob *wprev, *wnext;  /* worker: jobs whose worker future is pending */
    vl_group_fn fn;
    void *arg;
    worker *w;
    vl_future *home;      /* home: NULL once cancelled or completed */
    vl_future *wf;        /* worker: the pending worker future */
    atomic_int cancel;    /* set by the home thread, read by the worker */
    int cancel_sent;      /* worker: wf was cancelled */
    /* The result: written by the worker, read by home after the hand-off. */
    int status;
    int vtype;
    void *value;
    vl_free_fn value_free;
    char *msg;
};

struct worker {
    vl_loop_group *g;
    size_t index;
    vl_loop *loop;
    void *loop_ud;
    pthread_t thread;
    int started;            /* home: the thread was created */
    int inited;             /* worker: init succeeded, so fini is owed */
    vl__async wake;         /* on the worker loop */
    pthread_mutex_t mu;
    gjob *in_head, *in_tail; /* guarded by mu */
    int stop;                /* guarded by mu */
    atomic_uint cancels;     /* bumped by home for each cancel */
    unsigned cancels_seen;   /* worker */
    gjob *running;           /* worker */
    size_t pending;          /* home */
    uint64_t completed;      /* home */
};

struct vl_loop_group {
    vl_loop *home;
    pthread_t home_thread;
    size_t n;
    worker *w;
    size_t next;             /* round-robin cursor among equally loaded loops */
    vl_loop_group_options o;
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* the start handshake */
    size_t init_done;        /* guarded by mu */
    int init_failed;         /* guarded by mu */
    gjob *done_head, *done_tail; /* guarded by mu */
    vl__async wake;          /* on the home loop */
    size_t outstanding;      /* jobs submitted and not delivered */
    size_t abandoned;        /* of those, ones whose home future is gone */
    int unref;               /* the home watcher does not hold the loop */
    gjob *all;               /* the outstanding jobs */
    vl__handle handle;
    int freeing;
};

/* ---- options ---- */

static const size_t opts_ends[] = {
    VL__END(vl_loop_group_options, struct_size),
    VL__END(vl_loop_group_options, init),
    VL__END(vl_loop_group_options, fini),
    VL__END(vl_loop_group_options, ud),
};
_Static_assert(sizeof(vl_loop_group_options) == VL__END(vl_loop_group_options, ud),
               "vl_loop_group_options ends with padding");
static const vl__opts_desc opts_desc = {"vl_loop_group_options", sizeof(vl_loop_group_options),
                                        opts_ends, sizeof(opts_ends) / sizeof(opts_ends[0])};

static void opts_defaults(vl_loop_group_options *o)
{
    memset(o, 0, sizeof(*o));
    o->struct_size = sizeof(*o);
}

void vl_loop_group_options_init_sized(vl_loop_group_options *o, size_t struct_size)
{
    vl_loop_group_options d;

    opts_defaults(&d);
    vl__opts_init(o, struct_size, &d, &opts_desc);
}

/* ---- the worker side ---- */

static void redis_value_free(void *v)
{
    vl_redis_reply_free(v);
}

static void fanout_value_free(void *v)
{
    vl_fanout_result_free(v);
}

/* A box that never reached the home thread: its value goes with it. */
static void vbox_free(void *v)
{
    vbox *b = v;

    if (b->value != NULL && b->free_fn != NULL)
        b->free_fn(b->value);
    vl__free(b);
}

vl_future *vl_loop_group_value(vl_loop *loop, void *value, vl_free_fn free_fn)
{
    vbox *b;
    vl_future *f;

    if (loop == NULL)
        return NULL;
    b = vl__malloc(sizeof(*b));
    if (b == NULL)
        return NULL;
    f = vl__future_make(loop, NULL, NULL);
    if (f == NULL) {
        vl__free(b);
        return NULL;
    }
    b->value = value;
    b->free_fn = free_fn;
    vl__future_complete(f, VL_OK, b, GROUP_VAL_BOX, vbox_free, NULL);
    return f;
}

/* Appends to an inbox or the done list (its mutex held). Returns 1 when the
 * list was empty: the other side drains the whole list per wake-up, so a
 * list that was not empty already has a wake-up on its way. */
static int list_append(gjob **head, gjob **tail, gjob *j)
{
    int was_empty = *head == NULL;

    j->next = NULL;
    if (*tail != NULL)
        (*tail)->next = j;
    else
        *head = j;
    *tail = j;
    return was_empty;
}

/* Hands a finished job back to the home thread. */
static void job_return(worker *w, gjob *j)
{
    vl_loop_group *g = w->g;
    int wake;

    pthread_mutex_lock(&g->mu);
    wake = list_append(&g->done_head, &g->done_tail, j);
    pthread_mutex_unlock(&g->mu);
    if (wake)
        vl__async_send(&g->wake);
}

static void job_fail(worker *w, gjob *j, int status, const char *msg)
{
    j->status = status;
    j->msg = vl__strdup(msg); /* on ENOMEM the status still tells */
    job_return(w, j);
}

/* Moves the worker future's value into the job, with its free function,
 * for the kinds whose free function is known and that are self-contained. */
static int take_value(gjob *j, vl_future *f)
{
    if (vl_future_value(f) == NULL)
        return VL_OK;
    if (vl__future_vtype(f) == GROUP_VAL_BOX) {
        vbox *b = vl_future_take(f);

        j->vtype = VL__VAL_USER;
        j->value = b->value;
        j->value_free = b->free_fn;
        vl__free(b);
        return VL_OK;
    }
    if (vl_future_redis_reply(f) != NULL) {
        j->vtype = VL__VAL_REDIS;
        j->value_free = redis_value_free;
    } else if (vl_future_mysql_result(f) != NULL) {
        j->vtype = VL__VAL_MYSQL;
        j->value_free = vl__mres_free_value;
    } else if (vl_future_fanout(f) != NULL) {
        j->vtype = VL__VAL_FANOUT;
        j->value_free = fanout_value_free;
    } else {
        return VL_EUNSUPPORTED; /* it stays in f, which frees it here */
    }
    j->value = vl_future_take(f);
    return VL_OK;
}

static void running_remove(worker *w, gjob *j)
{
    if (j->wprev != NULL)
        j->wprev->wnext = j->wnext;
    else
        w->running = j->wnext;
    if (j->wnext != NULL)
        j->wnext->wprev = j->wprev;
    j->wprev = j->wnext = NULL;
}

/* The worker future's continuation, on the worker loop. */
static void job_done(vl_future *f, void *ud)
{
    gjob *j = ud;
    worker *w = j->w;

    j->wf = NULL;
    running_remove(w, j);
    if (take_value(j, f) != VL_OK) {
        job_fail(w, j, VL_EUNSUPPORTED,
                 "loop group: the job's value cannot leave its loop (only Redis replies, "
                 "MySQL results and fan-out results travel)");
        return;
    }
    j->status = vl_future_status(f);
    if (j->status != VL_OK)
        j->msg = vl__strdup(vl_future_error(f));
    job_return(w, j);
}

static void job_start(worker *w, gjob *j, int stopping)
{
    vl_future *f;

    if (stopping) {
        job_fail(w, j, VL_ECANCELED, "loop group freed before the job ran");
        return;
    }
    if (atomic_load(&j->cancel)) {
        job_fail(w, j, VL_ECANCELED, "cancelled before the job ran");
        return;
    }
    f = j->fn(w->loop, w->loop_ud, j->arg);
    if (f == NULL) {
        job_fail(w, j, VL_ENOMEM, "loop group: the job returned no future (out of memory)");
        return;
    }
    if (vl_future_loop(f) != w->loop) {
        /* Not ours to touch: it belongs to another loop's thread. */
        job_fail(w, j, VL_EINVAL, "loop group: the job returned a future of another loop");
        return;
    }
    if (vl_future_then(f, job_done, j) != VL_OK) {
        job_fail(w, j, VL_EINVAL, "loop group: the job returned a future already consumed");
        return;
    }
    j->wf = f;
    j->wnext = w->running;
    if (w->running != NULL)
        w->running->wprev = j;
    w->running = j;
}

/* Cancels the worker futures of the jobs the home thread gave up on. Their
 * continuations run later, from this loop, and hand the jobs back. */
static void cancel_flagged(worker *w, int all)
{
    gjob *j, *next;

    for (j = w->running; j != NULL; j = next) {
        next = j->wnext;
        if (!j->cancel_sent && (all || atomic_load(&j->cancel))) {
            j->cancel_sent = 1;
            vl_future_cancel(j->wf);
        }
    }
}

/* From the worker's wake-up, on its own loop: the teardown of rule 4. The
 * loop is freed when this callback returns; the cancelled futures'
 * continuations run then and hand their jobs back. */
static void worker_stop(worker *w)
{
    vl_loop_group *g = w->g;

    cancel_flagged(w, 1);
    if (w->inited && g->o.fini != NULL)
        g->o.fini(w->loop, w->index, w->loop_ud, g->o.ud);
    vl__async_stop(&w->wake);
    vl_loop_free(w->loop);
}

static void worker_wake(vl__async *a, void *ud)
{
    worker *w = ud;
    gjob *list;
    unsigned cancels;
    int stop;

    VL__UNUSED(a);
    pthread_mutex_lock(&w->mu);
    list = w->in_head;
    w->in_head = w->in_tail = NULL;
    stop = w->stop;
    pthread_mutex_unlock(&w->mu);
    while (list != NULL) {
        gjob *next = list->next;
        job_start(w, list, stop);
        list = next;
    }
    /* Read after the inbox: a cancel of a job just started is seen now, or
     * its wake-up (sent after the counter moved) brings us back. */
    cancels = atomic_load(&w->cancels);
    if (cancels != w->cancels_seen) {
        w->cancels_seen = cancels;
        cancel_flagged(w, 0);
    }
    if (stop)
        worker_stop(w);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    vl_loop_group *g = w->g;
    int rc = VL_OK;

    vl__async_start(&w->wake);
    if (g->o.init != NULL)
        rc = g->o.init(w->loop, w->index, &w->loop_ud, g->o.ud);
    w->inited = rc == VL_OK;
    pthread_mutex_lock(&g->mu);
    g->init_done++;
    if (rc != VL_OK)
        g->init_failed = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    /* Until worker_stop frees the loop: the wake watcher holds it. */
    vl_loop_run(w->loop);
    return NULL;
}

/* ---- the home side ---- */

static void all_remove(vl_loop_group *g, gjob *j)
{
    if (j->hprev != NULL)
        j->hprev->hnext = j->hnext;
    else
        g->all = j->hnext;
    if (j->hnext != NULL)
        j->hnext->hprev = j->hprev;
    j->hprev = j->hnext = NULL;
}

/* The loop-alive rule: the watcher holds the home loop while a home
 * future waits for an outstanding job. */
static void settle_ref(vl_loop_group *g)
{
    int weak = g->outstanding > 0 && g->abandoned == g->outstanding;

    if (weak && !g->unref) {
        vl__loop_unref(g->home);
        g->unref = 1;
    } else if (!weak && g->unref) {
        vl__loop_ref(g->home);
        g->unref = 0;
    }
}

static void job_release(gjob *j)
{
    if (j->value != NULL && j->value_free != NULL)
        j->value_free(j->value);
    vl__free(j->msg);
    vl__free(j);
}

/* A job is back: its home future completes with what the worker's did. */
static void deliver(vl_loop_group *g, gjob *j)
{
    all_remove(g, j);
    g->outstanding--;
    j->w->pending--;
    j->w->completed++;
    if (j->home == NULL) {
        g->abandoned--;
        job_release(j);
        return;
    }
    vl__future_set_source(j->home, NULL, NULL);
    vl__future_complete(j->home, j->status, j->value, j->vtype, j->value_free, j->msg);
    j->value = NULL;
    job_release(j);
}

static gjob *done_grab(vl_loop_group *g)
{
    gjob *list;

    pthread_mutex_lock(&g->mu);
    list = g->done_head;
    g->done_head = g->done_tail = NULL;
    pthread_mutex_unlock(&g->mu);
    return list;
}

static void home_wake(vl__async *a, void *ud)
{
    vl_loop_group *g = ud;
    gjob *list = done_grab(g);

    VL__UNUSED(a);
    while (list != NULL) {
        gjob *next = list->next;
        deliver(g, list);
        list = next;
    }
    settle_ref(g);
    if (g->outstanding == 0)
        vl__async_stop(&g->wake);
}

static void job_cancel(void *source, vl_future *f, int status)
{
    gjob *j = source;
    vl_loop_group *g = j->w->g;

    VL__UNUSED(f);
    VL__UNUSED(status);
    j->home = NULL;
    g->abandoned++;
    settle_ref(g);
    atomic_store(&j->cancel, 1);
    atomic_fetch_add(&j->w->cancels, 1u);
    vl__async_send(&j->w->wake);
}

static void job_describe(void *source, char *buf, size_t n)
{
    gjob *j = source;

    snprintf(buf, n, "a job on loop %zu of a loop group", j->w->index);
}

static const vl__source_ops job_ops = {.cancel = job_cancel, .describe = job_describe};

static vl_future *submit(vl_loop_group *g, worker *w, vl_group_fn fn, void *arg)
{
    gjob *j = vl__calloc(1, sizeof(*j));
    vl_future *f;
    int wake;

    if (j == NULL)
        return NULL;
    f = vl__future_make(g->home, &job_ops, j);
    if (f == NULL) {
        vl__free(j);
        return NULL;
    }
    j->fn = fn;
    j->arg = arg;
    j->w = w;
    j->home = f;
    atomic_init(&j->cancel, 0);
    j->hnext = g->all;
    if (g->all != NULL)
        g->all->hprev = j;
    g->all = j;
    if (g->outstanding++ == 0)
        vl__async_start(&g->wake);
    settle_ref(g);
    w->pending++;
    pthread_mutex_lock(&w->mu);
    wake = list_append(&w->in_head, &w->in_tail, j);
    pthread_mutex_unlock(&w->mu);
    if (wake)
        vl__async_send(&w->wake);
    return f;
}

/* The checks both submits share: NULL when the call is refused outright,
 * else `fail` is set to a failed future or left NULL to go on. */
static int submit_refused(vl_loop_group *g, vl_group_fn fn, vl_future **fail)
{
    *fail = NULL;
    if (g == NULL || !pthread_equal(pthread_self(), g->home_thread))
        return 1;
    if (g->freeing || vl__loop_closing(g->home))
        *fail = vl__future_failed(g->home, VL_ECLOSED, "loop group: the group is being freed");
    else if (fn == NULL)
        *fail = vl__future_failed(g->home, VL_EINVAL, "loop group: no job function");
    return 0;
}

vl_future *vl_loop_group_submit(vl_loop_group *g, vl_group_fn fn, void *arg)
{
    vl_future *fail;
    size_t k, pick = 0, best = SIZE_MAX;

    if (submit_refused(g, fn, &fail))
        return NULL;
    if (fail != NULL)
        return fail;
    /* The fewest unfinished jobs; ties go to the first after the last pick. */
    for (k = 0; k < g->n; k++) {
        size_t i = (g->next + k) % g->n;
        if (g->w[i].pending < best) {
            best = g->w[i].pending;
            pick = i;
        }
    }
    g->next = (pick + 1) % g->n;
    return submit(g, &g->w[pick], fn, arg);
}

vl_future *vl_loop_group_submit_to(vl_loop_group *g, size_t index, vl_group_fn fn, void *arg)
{
    vl_future *fail;

    if (submit_refused(g, fn, &fail))
        return NULL;
    if (fail != NULL)
        return fail;
    if (index >= g->n)
        return vl__future_failed(g->home, VL_EINVAL,
                                 "loop group: loop %zu out of range (the group has %zu)", index,
                                 g->n);
    return submit(g, &g->w[index], fn, arg);
}

size_t vl_loop_group_size(const vl_loop_group *g)
{
    return g != NULL ? g->n : 0;
}

size_t vl_loop_group_pending(const vl_loop_group *g, size_t index)
{
    return g != NULL && index < g->n ? g->w[index].pending : 0;
}

uint64_t vl_loop_group_completed(const vl_loop_group *g, size_t index)
{
    return g != NULL && index < g->n ? g->w[index].completed : 0;
}

/* ---- making and freeing ---- */

/* Tells every started worker to stop and joins it; afterwards everything
 * of the group is the home thread's. Worker loops whose thread never
 * started are freed here. */
static void workers_stop(vl_loop_group *g)
{
    size_t i;

    for (i = 0; i < g->n; i++) {
        worker *w = &g->w[i];
        if (!w->started)
            continue;
        /* The wake-up goes out before the worker can see stop: once it has,
         * it may free its loop, and the watcher with it. */
        pthread_mutex_lock(&w->mu);
        w->stop = 1;
        vl__async_send(&w->wake);
        pthread_mutex_unlock(&w->mu);
    }
    for (i = 0; i < g->n; i++) {
        worker *w = &g->w[i];
        if (w->started)
            pthread_join(w->thread, NULL);
        else if (w->loop != NULL)
            vl_loop_free(w->loop);
        w->loop = NULL;
        pthread_mutex_destroy(&w->mu);
    }
}

static void group_teardown(vl_loop_group *g)
{
    gjob *j, *list;

    g->freeing = 1;
    /* Home futures first (rule 4), so that no cancel hook wakes a worker
     * that is gone. */
    for (j = g->all; j != NULL; j = j->hnext) {
        if (j->home == NULL)
            continue;
        vl__future_set_source(j->home, NULL, NULL);
        vl__future_fail(j->home, VL_ECANCELED, "loop group freed");
        j->home = NULL;
    }
    workers_stop(g);
    /* What came back, and anything that did not (nothing should: the
     * workers cancelled and delivered every job before their loops went). */
    list = done_grab(g);
    while (list != NULL) {
        gjob *next = list->next;
        all_remove(g, list);
        job_release(list);
        list = next;
    }
    while ((j = g->all) != NULL) {
        all_remove(g, j);
        job_release(j);
    }
    g->outstanding = g->abandoned = 0;
    if (g->unref) {
        vl__loop_ref(g->home); /* libev wants a watcher ref'd before it stops */
        g->unref = 0;
    }
    vl__async_stop(&g->wake);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    vl__free(g->w);
    g->w = NULL;
    g->n = 0;
}

static void group_release(vl__handle *h)
{
    vl__free((char *)h - offsetof(vl_loop_group, handle));
}

/* vl_loop_free(home) frees a group still open; its memory stays until the
 * loop's callbacks have run, since they may still pass it to _free. */
static void group_handle_free(vl__handle *h)
{
    vl_loop_group *g = (vl_loop_group *)(void *)((char *)h - offsetof(vl_loop_group, handle));

    group_teardown(g);
    vl__handle_bury(g->home, &g->handle, group_release);
}

void vl_loop_group_free(vl_loop_group *g)
{
    if (g == NULL || g->freeing)
        return;
    vl__handle_remove(g->home, &g->handle);
    group_teardown(g);
    vl__handle_bury(g->home, &g->handle, group_release);
}

static size_t online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    if (n < 1)
        return 1;
    return n > GROUP_MAX_LOOPS ? GROUP_MAX_LOOPS : (size_t)n;
}

/* Starts the threads and waits for their init callbacks. VL_OK, or a
 * failure after which the caller stops what started. */
static int workers_start(vl_loop_group *g)
{
    size_t i, started = 0;
    int rc = VL_OK;

    for (i = 0; i < g->n; i++) {
        if (pthread_create(&g->w[i].thread, NULL, worker_main, &g->w[i]) != 0) {
            rc = VL_ENOMEM;
            break;
        }
        g->w[i].started = 1;
        started++;
    }
    pthread_mutex_lock(&g->mu);
    while (g->init_done < started)
        pthread_cond_wait(&g->cv, &g->mu);
    if (g->init_failed)
        rc = VL_ESTATE;
    pthread_mutex_unlock(&g->mu);
    return rc;
}

vl_loop_group *vl_loop_group_new(vl_loop *home, size_t n, const vl_loop_group_options *o)
{
    vl_loop_group *g;
    char why[160];
    size_t i;

    if (home == NULL || n > GROUP_MAX_LOOPS || vl__loop_closing(home))
        return NULL;
    if (n == 0)
        n = online_cpus();
    g = vl__calloc(1, sizeof(*g));
    if (g == NULL)
        return NULL;
    opts_defaults(&g->o);
    if (vl__opts_copy(&g->o, o, &opts_desc, why, sizeof(why)) != VL_OK ||
        (g->w = vl__calloc(n, sizeof(*g->w))) == NULL) {
        vl__free(g);
        return NULL;
    }
    g->home = home;
    g->home_thread = pthread_self();
    g->n = n;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    vl__async_init(&g->wake, home, home_wake, g);
    for (i = 0; i < n; i++) {
        worker *w = &g->w[i];
        w->g = g;
        w->index = i;
        pthread_mutex_init(&w->mu, NULL);
        atomic_init(&w->cancels, 0u);
    }
    for (i = 0; i < n; i++) {
        g->w[i].loop = vl_loop_new();
        if (g->w[i].loop == NULL)
            break;
        vl__async_init(&g->w[i].wake, g->w[i].loop, worker_wake, &g->w[i]);
    }
    if (i < n || workers_start(g) != VL_OK) {
        group_teardown(g);
        vl__free(g);
        return NULL;
    }
    vl__handle_add(home, &g->handle, group_handle_free);
    return g;
}
