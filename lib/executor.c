/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/executor.c - vl_loop_run_in_thread: blocking work on worker threads.
 *
 * This is the one cross-thread path. Workers touch only the job queue and the
 * done list, under one mutex, and wake the loop with an ev_async watcher
 * (vl__async_send is the only loop call made off the loop thread). Futures
 * are completed on the loop thread, in the async callback. The async watcher
 * is started only while jobs are outstanding, so an idle executor does not
 * keep the loop alive; nor does one whose every outstanding job was
 * cancelled (nobody waits for them: the watcher stays started, unref'd, to
 * free their results when they come back while the loop runs).
 *
 * Jobs and the executor itself use the C library's malloc, not volley's
 * allocator: a worker stuck in a long call may outlive the loop and free
 * them on its own thread, and a caller's allocator need not be thread-safe.
 */
#include "internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct job job;
struct job {
    job *next;
    job *aprev, *anext;  /* the loop's list of undelivered jobs */
    vl_work_fn fn;
    void *ud;
    vl_free_fn ud_free; /* frees ud when fn never runs; may be NULL */
    vl_free_fn free_fn;
    void *result;
    vl_future *f;     /* NULL once cancelled: the result is then dropped */
    struct executor *ex;
    int weak;         /* does not hold the loop (vl__loop_job_weak) */
};

typedef struct executor {
    vl_loop *loop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job *queue_head, *queue_tail; /* waiting to run (guarded by mu) */
    job *done;                    /* finished, for the loop (guarded by mu) */
    pthread_t *threads;
    unsigned max_threads;
    unsigned nthreads;
    unsigned idle;                /* workers waiting on cv (guarded by mu) */
    unsigned outstanding;         /* jobs not yet delivered (loop thread) */
    unsigned abandoned;           /* of those, cancelled ones (loop thread) */
    unsigned weak;                /* of those, ones that do not hold the loop */
    int unref;                    /* the async watcher does not hold the loop */
    int stopping;                 /* guarded by mu */
    unsigned refs;                /* workers alive, plus one for the loop (mu) */
    job *all;                     /* jobs not yet delivered (loop thread) */
    vl__async async;
    vl__handle handle;            /* the loop frees us with its objects */
} executor;

static void executor_release(executor *ex);
static void executor_handle_free(vl__handle *h);

static void *worker(void *arg)
{
    executor *ex = arg;
    job *j;
    int last;

    pthread_mutex_lock(&ex->mu);
    for (;;) {
        while (ex->queue_head == NULL && !ex->stopping) {
            ex->idle++;
            pthread_cond_wait(&ex->cv, &ex->mu);
            ex->idle--;
        }
        if (ex->stopping)
            break;
        j = ex->queue_head;
        ex->queue_head = j->next;
        if (ex->queue_head == NULL)
            ex->queue_tail = NULL;
        pthread_mutex_unlock(&ex->mu);
        j->result = j->fn(j->ud);
        pthread_mutex_lock(&ex->mu);
        if (ex->stopping) {
            /* The loop is gone: nobody will take the result. */
            pthread_mutex_unlock(&ex->mu);
            if (j->result != NULL && j->free_fn != NULL)
                j->free_fn(j->result);
            pthread_mutex_lock(&ex->mu);
            j->next = ex->done; /* its memory goes with the executor */
            ex->done = j;
            break;
        }
        j->next = ex->done;
        ex->done = j;
        vl__async_send(&ex->async);
    }
    last = --ex->refs == 0;
    pthread_mutex_unlock(&ex->mu);
    if (last)
        executor_release(ex);
    return NULL;
}

static void all_remove(executor *ex, job *j)
{
    if (j->aprev != NULL)
        j->aprev->anext = j->anext;
    else
        ex->all = j->anext;
    if (j->anext != NULL)
        j->anext->aprev = j->aprev;
    j->aprev = j->anext = NULL;
}

/* The loop-alive rule: the watcher holds the loop while someone waits for
 * one of the outstanding jobs. */
static void settle_ref(executor *ex)
{
    int weak = ex->outstanding > 0 && ex->abandoned + ex->weak == ex->outstanding;

    if (weak && !ex->unref) {
        vl__loop_unref(ex->loop);
        ex->unref = 1;
    } else if (!weak && ex->unref) {
        vl__loop_ref(ex->loop);
        ex->unref = 0;
    }
}

static void deliver(executor *ex, job *j)
{
    all_remove(ex, j);
    if (j->f == NULL)
        ex->abandoned--;
    else if (j->weak)
        ex->weak--;
    if (j->f != NULL)
        vl__future_complete(j->f, VL_OK, j->result, VL__VAL_USER, j->free_fn, NULL);
    else if (j->result != NULL && j->free_fn != NULL)
        j->free_fn(j->result);
    free(j);
}

static void async_cb(vl__async *a, void *ud)
{
    executor *ex = ud;
    job *list, *rev = NULL;

    VL__UNUSED(a);
    pthread_mutex_lock(&ex->mu);
    list = ex->done;
    ex->done = NULL;
    pthread_mutex_unlock(&ex->mu);
    while (list != NULL) { /* the done list is LIFO: restore finishing order */
        job *n = list->next;
        list->next = rev;
        rev = list;
        list = n;
    }
    while (rev != NULL) {
        job *n = rev->next;
        deliver(ex, rev);
        ex->outstanding--;
        rev = n;
    }
    settle_ref(ex);
    if (ex->outstanding == 0)
        vl__async_stop(&ex->async);
}

static void job_cancel(void *source, vl_future *f, int status)
{
    job *j = source;

    VL__UNUSED(f);
    VL__UNUSED(status);
    j->f = NULL; /* it may be running: its result is freed when it returns */
    j->ex->abandoned++;
    if (j->weak) {
        j->weak = 0;
        j->ex->weak--;
    }
    settle_ref(j->ex);
}

static const vl__source_ops job_ops;

void vl__loop_job_weak(vl_future *f, int weak)
{
    job *j = vl__future_source(f, &job_ops);

    if (j == NULL || j->weak == (weak != 0))
        return;
    j->weak = weak != 0;
    if (j->weak)
        j->ex->weak++;
    else
        j->ex->weak--;
    settle_ref(j->ex);
}

static void job_describe(void *source, char *buf, size_t n)
{
    VL__UNUSED(source);
    snprintf(buf, n, "work on a thread");
}

static const vl__source_ops job_ops = {.cancel = job_cancel, .describe = job_describe};

static executor *executor_get(vl_loop *loop)
{
    unsigned threads;
    executor *ex = vl__loop_executor(loop, &threads);

    if (ex != NULL)
        return ex;
    ex = calloc(1, sizeof(*ex));
    if (ex == NULL)
        return NULL;
    ex->threads = calloc(threads, sizeof(*ex->threads));
    if (ex->threads == NULL) {
        free(ex);
        return NULL;
    }
    ex->loop = loop;
    ex->max_threads = threads;
    ex->refs = 1; /* the loop's */
    pthread_mutex_init(&ex->mu, NULL);
    pthread_cond_init(&ex->cv, NULL);
    vl__async_init(&ex->async, loop, async_cb, ex);
    vl__loop_set_executor(loop, ex);
    vl__handle_add(loop, &ex->handle, executor_handle_free);
    return ex;
}

vl_future *vl_loop_run_in_thread(vl_loop *loop, vl_work_fn fn, void *ud, vl_free_fn free_fn)
{
    return vl__loop_run_in_thread_owned(loop, fn, ud, NULL, free_fn);
}

vl_future *vl__loop_run_in_thread_owned(vl_loop *loop, vl_work_fn fn, void *ud,
                                        vl_free_fn ud_free, vl_free_fn free_fn)
{
    executor *ex;
    job *j;
    vl_future *f;
    int spawn;

    if (loop == NULL)
        return NULL;
    if (fn == NULL)
        return vl__future_failed(loop, VL_EINVAL, "run_in_thread: no function");
    if (vl__loop_closing(loop))
        return vl__future_failed(loop, VL_ECLOSED, "loop is closing");
    ex = executor_get(loop);
    j = calloc(1, sizeof(*j));
    if (ex == NULL || j == NULL) {
        free(j);
        return NULL;
    }
    f = vl__future_make(loop, &job_ops, j);
    if (f == NULL) {
        free(j);
        return NULL;
    }
    j->fn = fn;
    j->ud = ud;
    j->ud_free = ud_free;
    j->free_fn = free_fn;
    j->f = f;
    j->ex = ex;
    j->anext = ex->all;
    if (ex->all != NULL)
        ex->all->aprev = j;
    ex->all = j;
    if (ex->outstanding++ == 0)
        vl__async_start(&ex->async);
    settle_ref(ex);
    pthread_mutex_lock(&ex->mu);
    if (ex->queue_tail != NULL)
        ex->queue_tail->next = j;
    else
        ex->queue_head = j;
    ex->queue_tail = j;
    spawn = ex->idle == 0 && ex->nthreads < ex->max_threads;
    pthread_cond_signal(&ex->cv);
    pthread_mutex_unlock(&ex->mu);
    if (spawn) {
        pthread_mutex_lock(&ex->mu);
        ex->refs++;
        pthread_mutex_unlock(&ex->mu);
        if (pthread_create(&ex->threads[ex->nthreads], NULL, worker, ex) == 0) {
            ex->nthreads++;
        } else {
            pthread_mutex_lock(&ex->mu);
            ex->refs--;
            pthread_mutex_unlock(&ex->mu);
        }
    }
    if (ex->nthreads == 0) {
        /* No worker could start: fail this job rather than let it wait forever. */
        pthread_mutex_lock(&ex->mu);
        ex->queue_head = ex->queue_tail = NULL;
        pthread_mutex_unlock(&ex->mu);
        all_remove(ex, j);
        if (j->ud_free != NULL)
            j->ud_free(j->ud); /* fn never runs */
        free(j);
        vl__future_set_source(f, NULL, NULL);
        vl__future_fail(f, VL_ENOMEM, "run_in_thread: cannot start a worker thread");
        --ex->outstanding;
        settle_ref(ex);
        if (ex->outstanding == 0)
            vl__async_stop(&ex->async);
    }
    return f;
}

/* Frees what the loop side and the workers shared; the last one out calls it. */
static void executor_release(executor *ex)
{
    job *j;

    while ((j = ex->done) != NULL) {
        ex->done = j->next;
        free(j);
    }
    pthread_mutex_destroy(&ex->mu);
    pthread_cond_destroy(&ex->cv);
    free(ex->threads);
    free(ex);
}

/* The loop frees its handles with it. This never waits for a running job (a
 * worker may be stuck in a DNS lookup for seconds): finished results are
 * delivered, queued jobs cancelled, and workers still busy are detached; the
 * last of them frees the executor and drops its result. */
static void executor_handle_free(vl__handle *h)
{
    executor *ex = (executor *)(void *)((char *)h - offsetof(executor, handle));
    unsigned i;
    job *j, *done;
    int last, all_idle;

    vl__loop_set_executor(ex->loop, NULL);
    pthread_mutex_lock(&ex->mu);
    /* Workers that wait for work leave at once: those are joined, so that
     * nothing of theirs (a TLS library's per-thread state) outlives the
     * loop. One stuck in a job is never waited for. */
    all_idle = ex->idle == ex->nthreads && ex->queue_head == NULL;
    ex->stopping = 1;
    pthread_cond_broadcast(&ex->cv);
    done = ex->done;
    ex->done = NULL;
    j = ex->queue_head;
    ex->queue_head = ex->queue_tail = NULL;
    pthread_mutex_unlock(&ex->mu);
    /* Deliver what finished, cancel what never started. */
    while (done != NULL) {
        job *n = done->next;
        deliver(ex, done);
        done = n;
    }
    while (j != NULL) {
        job *n = j->next;
        all_remove(ex, j);
        if (j->f != NULL) {
            vl__future_set_source(j->f, NULL, NULL);
            vl__future_fail(j->f, VL_ECANCELED, "loop freed before the job ran");
        }
        if (j->ud_free != NULL)
            j->ud_free(j->ud); /* fn never runs */
        free(j);
        j = n;
    }
    /* What is left is running on a worker: its future completes now, and
     * the worker frees its result when it returns. */
    while ((j = ex->all) != NULL) {
        all_remove(ex, j);
        if (j->f != NULL) {
            vl_future *f = j->f;
            j->f = NULL;
            vl__future_set_source(f, NULL, NULL);
            vl__future_fail(f, VL_ECANCELED, "loop freed while the job ran");
        }
    }
    if (ex->unref) {
        vl__loop_ref(ex->loop); /* libev wants a watcher ref'd before it stops */
        ex->unref = 0;
    }
    vl__async_stop(&ex->async);
    for (i = 0; i < ex->nthreads; i++) {
        if (all_idle)
            pthread_join(ex->threads[i], NULL);
        else
            pthread_detach(ex->threads[i]);
    }
    pthread_mutex_lock(&ex->mu);
    last = --ex->refs == 0;
    pthread_mutex_unlock(&ex->mu);
    if (last)
        executor_release(ex);
}
