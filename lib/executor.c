/* lib/executor.c - vl_loop_run_in_thread: blocking work on worker threads.
 *
 * This is the one cross-thread path. Workers touch only the job queue and the
 * done list, under one mutex, and wake the loop with an ev_async watcher
 * (vl__async_send is the only loop call made off the loop thread). Futures
 * are completed on the loop thread, in the async callback. The async watcher
 * is started only while jobs are outstanding, so an idle executor does not
 * keep the loop alive.
 */
#include "internal.h"

#include <pthread.h>

typedef struct job job;
struct job {
    job *next;
    vl_work_fn fn;
    void *ud;
    vl_free_fn free_fn;
    void *result;
    vl_future *f;     /* NULL once cancelled: the result is then dropped */
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
    int stopping;                 /* guarded by mu */
    vl__async async;
} executor;

static void *worker(void *arg)
{
    executor *ex = arg;
    job *j;

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
        j->next = ex->done;
        ex->done = j;
        vl__async_send(&ex->async);
    }
    pthread_mutex_unlock(&ex->mu);
    return NULL;
}

static void deliver(job *j)
{
    if (j->f != NULL)
        vl__future_complete(j->f, VL_OK, j->result, VL__VAL_USER, j->free_fn, NULL);
    else if (j->result != NULL && j->free_fn != NULL)
        j->free_fn(j->result);
    vl__free(j);
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
        deliver(rev);
        ex->outstanding--;
        rev = n;
    }
    if (ex->outstanding == 0)
        vl__async_stop(&ex->async);
}

static void job_cancel(void *source, vl_future *f, int status)
{
    job *j = source;

    VL__UNUSED(f);
    VL__UNUSED(status);
    j->f = NULL; /* it may be running: its result is freed when it returns */
}

static const vl__source_ops job_ops = {job_cancel};

static executor *executor_get(vl_loop *loop)
{
    unsigned threads;
    executor *ex = vl__loop_executor(loop, &threads);

    if (ex != NULL)
        return ex;
    ex = vl__calloc(1, sizeof(*ex));
    if (ex == NULL)
        return NULL;
    ex->threads = vl__calloc(threads, sizeof(*ex->threads));
    if (ex->threads == NULL) {
        vl__free(ex);
        return NULL;
    }
    ex->loop = loop;
    ex->max_threads = threads;
    pthread_mutex_init(&ex->mu, NULL);
    pthread_cond_init(&ex->cv, NULL);
    vl__async_init(&ex->async, loop, async_cb, ex);
    vl__loop_set_executor(loop, ex);
    return ex;
}

vl_future *vl_loop_run_in_thread(vl_loop *loop, vl_work_fn fn, void *ud, vl_free_fn free_fn)
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
    j = vl__calloc(1, sizeof(*j));
    if (ex == NULL || j == NULL) {
        vl__free(j);
        return NULL;
    }
    f = vl__future_make(loop, &job_ops, j);
    if (f == NULL) {
        vl__free(j);
        return NULL;
    }
    j->fn = fn;
    j->ud = ud;
    j->free_fn = free_fn;
    j->f = f;
    if (ex->outstanding++ == 0)
        vl__async_start(&ex->async);
    pthread_mutex_lock(&ex->mu);
    if (ex->queue_tail != NULL)
        ex->queue_tail->next = j;
    else
        ex->queue_head = j;
    ex->queue_tail = j;
    spawn = ex->idle == 0 && ex->nthreads < ex->max_threads;
    pthread_cond_signal(&ex->cv);
    pthread_mutex_unlock(&ex->mu);
    if (spawn && pthread_create(&ex->threads[ex->nthreads], NULL, worker, ex) == 0)
        ex->nthreads++;
    if (ex->nthreads == 0) {
        /* No worker could start: fail this job rather than let it wait forever. */
        pthread_mutex_lock(&ex->mu);
        ex->queue_head = ex->queue_tail = NULL;
        pthread_mutex_unlock(&ex->mu);
        vl__free(j);
        vl__future_set_source(f, NULL, NULL);
        vl__future_fail(f, VL_ENOMEM, "run_in_thread: cannot start a worker thread");
        if (--ex->outstanding == 0)
            vl__async_stop(&ex->async);
    }
    return f;
}

/* Called by vl_loop_free: waits for running jobs, cancels queued ones. */
void vl__executor_free(vl_loop *loop, void *arg)
{
    executor *ex = arg;
    unsigned i;
    job *j;

    VL__UNUSED(loop);
    pthread_mutex_lock(&ex->mu);
    ex->stopping = 1;
    pthread_cond_broadcast(&ex->cv);
    pthread_mutex_unlock(&ex->mu);
    for (i = 0; i < ex->nthreads; i++)
        pthread_join(ex->threads[i], NULL);
    async_cb(&ex->async, ex); /* deliver what finished */
    while ((j = ex->queue_head) != NULL) {
        ex->queue_head = j->next;
        if (j->f != NULL) {
            vl__future_set_source(j->f, NULL, NULL);
            vl__future_fail(j->f, VL_ECANCELED, "loop freed before the job ran");
        }
        vl__free(j);
    }
    vl__async_stop(&ex->async);
    pthread_mutex_destroy(&ex->mu);
    pthread_cond_destroy(&ex->cv);
    vl__free(ex->threads);
    vl__free(ex);
}
