/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/mysql_pool.c - a pool of MySQL connections per endpoint, and
 * transactions as leases of one pooled connection.
 *
 * HikariCP's vocabulary, nginx's keepalive mechanics:
 *  - Requests wait in one FIFO queue. A connection that becomes free goes
 *    straight to the oldest waiter (direct hand-off), never back through the
 *    idle set where a newcomer could take it first.
 *  - Idle connections form a stack: the most recently used is reused first,
 *    so the others age out by idle_timeout_ms. lib/mysql.c watches idle
 *    sockets for read readiness, and the hook below evicts a connection
 *    whose server hung up; a zero-timeout poll just before hand-out catches a
 *    hang-up the loop has not seen yet. Like HikariCP's alive-bypass window,
 *    a connection used within the last PROBE_AFTER_MS skips that poll: it
 *    would cost a system call per statement on a busy pool, and a hang-up
 *    that recent is reported by the statement itself (nothing is retried).
 *  - A connection comes back only if clean (see volley/mysql.h); a dirty one
 *    is reset first, a broken one closed.
 *  - A failed connect puts the pool in backoff: while failing, at most one
 *    connect (the probe) is in flight, retried after a jittered, doubling
 *    delay. The delay doubles once per failed probe: connects that were
 *    already in flight when the server went away fail together, and count
 *    as one failure, not as max_size doublings. Nothing already sent is
 *    retried.
 *
 * Lifetimes: a pooled connection (pconn) may have callbacks pending on its
 * futures (connect, reset, ping, a running request) when the pool lets go of
 * it. `refs` counts those callbacks; the pconn is freed when it is dead and
 * the last one has run. The same holds for requests: a running request is
 * freed by its own completion callback, after the pool is gone if need be.
 */
#include "mysql_internal.h"
#include "url.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

enum { PC_CONNECTING, PC_IDLE, PC_BUSY, PC_RESETTING, PC_DEAD };
enum { RQ_QUERY, RQ_EXEC, RQ_BULK, RQ_BEGIN, RQ_END };

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define TICK_MS 1000
#define PROBE_AFTER_MS 500

typedef struct pconn pconn;
typedef struct request request;

struct pconn {
    pconn *prev, *next;      /* the pool's idle stack or its other list */
    vl_mysql_pool *pool;     /* NULL once the pool let go */
    vl_mysql *c;
    int state;
    int refs;                /* pending callbacks that will touch this */
    uint64_t created_ms;
    uint64_t expires_ms;     /* 0: no lifetime limit */
    uint64_t idle_since_ms;
    vl_mysql_tx *tx;         /* the transaction leasing it */
    int probe;               /* opened while the pool was failing */
    int direct;              /* runs a statement handed out directly (pc_done) */
};

/* A request is one allocation: the struct, then its copied parameters,
 * their string and blob bytes and the SQL text. A waiter costs that block
 * and its future, nothing more: the queue's deadlines share one timer. */
struct request {
    request *prev, *next;    /* waiters or running */
    vl_mysql_pool *pool;     /* NULL once the pool is gone */
    vl_future *f;            /* the caller's future; NULL once abandoned */
    int kind;
    int waiting;
    char *sql;               /* in the block; NULL for BEGIN */
    vl_mysql_param *params;  /* in the block */
    size_t nparams;          /* ncols * nrows for a bulk request */
    size_t ncols;            /* a bulk request's columns */
    uint64_t enq_ms;         /* when it started waiting */
    pconn *pc;
    vl_future *inner;        /* the connection's future while running */
};

struct vl_mysql_tx {
    uint32_t magic;
    vl_loop *loop;
    vl_mysql_pool *pool;     /* NULL once the pool is gone */
    pconn *pc;               /* NULL once dead */
};

typedef struct ready_wait {
    struct ready_wait *prev, *next;
    vl_mysql_pool *pool;
    vl_future *f;
} ready_wait;

typedef struct list {
    pconn *head;
    size_t n;
} list;

struct vl_mysql_pool {
    vl_loop *loop;
    vl__handle handle;
    int freed;               /* vl_mysql_pool_free ran; the memory may be buried */
    char *url;
    vl_mysql_options copts;
    char *init_sql;
    vl_mysql_pool_options o;
    int fail_status;         /* a bad URL: every request fails with it */
    char *fail_msg;
    list idle;               /* a stack: head is the most recently used */
    list others;             /* connecting, busy, resetting */
    size_t connecting;
    size_t busy;
    request *wait_head, *wait_tail;
    size_t nwaiters;
    vl__timer qtimer;        /* the oldest waiter's acquire deadline */
    request *running;
    /* backoff */
    int failing;
    uint64_t backoff_ms;
    uint64_t next_attempt_ms;
    char *last_error;
    /* maintenance */
    vl__timer timer;
    int timer_unref;
    vl_pool_stats st;
    size_t nrunning;         /* requests running on a connection */
    ready_wait *readies;     /* vl_mysql_pool_ready futures waiting */
    int holding;             /* connecting connections hold the loop */
    char *display;           /* the URL without its password */
};

static void dispatch(vl_mysql_pool *p);
static void pc_release(pconn *pc);
static void pc_release_as(pconn *pc, unsigned s);
static void holds_update(vl_mysql_pool *p);
static void readies_check(vl_mysql_pool *p);

/* Counts a request's outcome, as the Redis pool does. */
static void count_result(vl_mysql_pool *p, int status)
{
    if (p == NULL || status == VL_OK || status == VL_ESERVER)
        return;
    p->st.errors++;
    if (status == VL_ETIMEDOUT)
        p->st.timeouts++;
    if (status == VL_EBUSY)
        p->st.rejected++;
}

/* ---- lists ---- */

static void list_push(list *l, pconn *pc)
{
    pc->prev = NULL;
    pc->next = l->head;
    if (l->head != NULL)
        l->head->prev = pc;
    l->head = pc;
    l->n++;
}

static void list_remove(list *l, pconn *pc)
{
    if (pc->prev != NULL)
        pc->prev->next = pc->next;
    else
        l->head = pc->next;
    if (pc->next != NULL)
        pc->next->prev = pc->prev;
    pc->prev = pc->next = NULL;
    l->n--;
}

static void wait_remove(vl_mysql_pool *p, request *r)
{
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        p->wait_head = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    else
        p->wait_tail = r->prev;
    r->prev = r->next = NULL;
    r->waiting = 0;
    p->nwaiters--;
    /* An empty queue owes no deadline: the timer must not keep the loop
     * running. Otherwise it stays armed for a head that may have left, and
     * queue_timeout moves it on to the new head when it fires. */
    if (p->nwaiters == 0)
        vl__timer_stop(&p->qtimer);
    holds_update(p);
}

static void running_add(vl_mysql_pool *p, request *r)
{
    r->prev = NULL;
    r->next = p->running;
    if (p->running != NULL)
        p->running->prev = r;
    p->running = r;
    p->nrunning++;
}

static void running_remove(vl_mysql_pool *p, request *r)
{
    if (r->prev != NULL)
        r->prev->next = r->next;
    else if (p->running == r)
        p->running = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
    p->nrunning--;
}

/* ---- the maintenance timer ----
 * It never keeps the loop alive by itself, except while requests wait for a
 * connection that only a future backoff probe can bring. */

static void timer_set(vl_mysql_pool *p, uint64_t ms)
{
    if (p->timer_unref) {
        vl__loop_ref(p->loop);
        p->timer_unref = 0;
    }
    vl__timer_start(&p->timer, ms);
    if (p->nwaiters == 0 && p->readies == NULL) {
        vl__loop_unref(p->loop);
        p->timer_unref = 1;
    }
}

static void timer_stop(vl_mysql_pool *p)
{
    if (p->timer_unref) {
        vl__loop_ref(p->loop);
        p->timer_unref = 0;
    }
    vl__timer_stop(&p->timer);
}

/* ---- connections ---- */

static void pc_unref(pconn *pc)
{
    if (--pc->refs == 0 && pc->state == PC_DEAD)
        vl__free(pc);
}

/* Closes a connection and forgets it. `why` counts it in the stats. */
static void pc_close(pconn *pc, uint64_t *why)
{
    vl_mysql_pool *p = pc->pool;
    vl_mysql *c = pc->c;

    if (pc->state == PC_DEAD)
        return;
    if (p != NULL) {
        if (pc->state == PC_IDLE)
            list_remove(&p->idle, pc);
        else
            list_remove(&p->others, pc);
        if (pc->state == PC_CONNECTING)
            p->connecting--;
        if (pc->state == PC_BUSY || pc->state == PC_RESETTING)
            p->busy--;
        if (why != NULL)
            (*why)++;
    }
    pc->state = PC_DEAD;
    pc->c = NULL;
    pc->pool = NULL;
    if (pc->tx != NULL) {
        pc->tx->pc = NULL;
        pc->tx = NULL;
    }
    if (pc->direct) {
        pc->direct = 0;
        if (p != NULL)
            p->nrunning--;
    }
    if (c != NULL) {
        vl__mysql_set_hook(c, NULL, NULL);
        vl__mysql_set_done_hook(c, NULL, NULL);
        vl_mysql_free(c);
    }
    pc->refs++;
    pc_unref(pc);
}

/* The connection broke or its server hung up. Idle ones go at once; busy
 * ones are closed when released, since their request is still owed its
 * completion. */
static void pc_hook(vl_mysql *c, void *ud)
{
    pconn *pc = ud;

    VL__UNUSED(c);
    if (pc->pool != NULL && pc->state == PC_IDLE)
        pc_close(pc, &pc->pool->st.closed_broken);
}

/* A statement handed out directly (request_direct) finished: its future has
 * completed; the connection comes back. Runs from the loop. */
static void pc_done(vl_mysql *c, void *ud, int status)
{
    pconn *pc = ud;

    /* Not ours: a reset or ping of the pool's own, or the late call for a
     * queued request's statement that finished before this one started
     * (calls for one connection are folded into one): ours is still
     * running. */
    unsigned s;

    if (!pc->direct || ((s = vl__mysql_state(c)) & VL__MYSQL_BUSY))
        return;
    pc->direct = 0;
    if (pc->pool != NULL) {
        pc->pool->nrunning--;
        count_result(pc->pool, status);
    }
    pc_release_as(pc, s);
}

static void connect_done(vl_future *f, void *ud);

static uint64_t jitter(uint64_t ms)
{
    return ms / 2 + vl__rand64() % (ms / 2 + 1);
}

/* Opens one connection if the pool may (size, backoff). */
static int pc_open(vl_mysql_pool *p)
{
    pconn *pc;
    vl_future *f;
    uint64_t now = vl_loop_now_ms(p->loop);

    if (p->idle.n + p->others.n >= p->o.max_size)
        return 0;
    if (p->failing && (p->connecting > 0 || now < p->next_attempt_ms))
        return 0; /* one probe at a time, after the backoff */
    pc = vl__calloc(1, sizeof(*pc));
    if (pc == NULL)
        return 0;
    pc->pool = p;
    pc->c = vl__mysql_new_pooled(p->loop, p->url, &p->copts);
    f = pc->c != NULL ? vl_mysql_ready(pc->c) : NULL;
    if (f == NULL) {
        vl_mysql_free(pc->c);
        vl__free(pc);
        return 0;
    }
    vl__mysql_set_hook(pc->c, pc_hook, pc);
    vl__mysql_set_done_hook(pc->c, pc_done, pc);
    vl__mysql_hold(pc->c, p->holding);
    pc->state = PC_CONNECTING;
    pc->probe = p->failing;
    pc->created_ms = now;
    if (p->o.max_lifetime_ms != 0) {
        /* Up to 2.5% earlier, so connections made together do not all
         * expire together. */
        uint64_t span = p->o.max_lifetime_ms / 40;
        pc->expires_ms = now + p->o.max_lifetime_ms - (span ? vl__rand64() % (span + 1) : 0);
    }
    list_push(&p->others, pc);
    p->connecting++;
    pc->refs++;
    vl_future_then(f, connect_done, pc);
    return 1;
}

static void connect_done(vl_future *f, void *ud)
{
    pconn *pc = ud;
    vl_mysql_pool *p = pc->pool;

    if (p == NULL || pc->state != PC_CONNECTING) {
        pc_unref(pc);
        return;
    }
    if (vl_future_status(f) != VL_OK) {
        uint64_t now = vl_loop_now_ms(p->loop);
        p->st.connect_failures++;
        vl__free(p->last_error);
        p->last_error = vl__strdup(vl_future_error(f));
        /* Only the first failure and failed probes move the backoff on: the
         * other connects opened before the pool knew it was failing report
         * the same outage again. */
        if (!p->failing || pc->probe) {
            p->backoff_ms = p->backoff_ms == 0 ? BACKOFF_MIN_MS : p->backoff_ms * 2;
            if (p->backoff_ms > BACKOFF_MAX_MS)
                p->backoff_ms = BACKOFF_MAX_MS;
            p->next_attempt_ms = now + jitter(p->backoff_ms);
        }
        p->failing = 1;
        pc_close(pc, NULL);
        pc_unref(pc);
        timer_set(p, p->next_attempt_ms > now ? p->next_attempt_ms - now : 0);
        readies_check(p);
        return;
    }
    p->st.connects++;
    p->failing = 0;
    p->backoff_ms = 0;
    p->connecting--;
    list_remove(&p->others, pc);
    pc->state = PC_IDLE;
    pc->idle_since_ms = vl_loop_now_ms(p->loop);
    list_push(&p->idle, pc);
    pc_unref(pc);
    readies_check(p);
    dispatch(p);
}

static void reset_done(vl_future *f, void *ud)
{
    pconn *pc = ud;

    if (pc->pool != NULL && pc->state == PC_RESETTING) {
        if (vl_future_status(f) == VL_OK) {
            pc->state = PC_BUSY;
            pc_release(pc);
        } else {
            pc_close(pc, &pc->pool->st.closed_dirty);
        }
    }
    pc_unref(pc);
}

/* A connection comes back from use: idle (or straight to a waiter) if
 * clean, reset if its session changed, closed otherwise. */
static void pc_release(pconn *pc)
{
    if (pc->pool != NULL && pc->state == PC_BUSY)
        pc_release_as(pc, vl__mysql_state(pc->c));
}

/* pc_release for a connection whose vl__mysql_state the caller just read
 * (nothing ran since). */
static void pc_release_as(pconn *pc, unsigned s)
{
    vl_mysql_pool *p = pc->pool;
    uint64_t now;

    if (p == NULL || pc->state != PC_BUSY) {
        return;
    }
    pc->tx = NULL;
    now = vl_loop_now_ms(p->loop);
    if (s & VL__MYSQL_BROKEN) {
        pc_close(pc, &p->st.closed_broken);
    } else if (s & VL__MYSQL_BUSY) {
        pc_close(pc, &p->st.closed_dirty); /* a statement still in flight */
    } else if (pc->expires_ms != 0 && now >= pc->expires_ms) {
        pc_close(pc, &p->st.closed_lifetime);
    } else if (s & (VL__MYSQL_IN_TRANS | VL__MYSQL_DIRTY)) {
        vl_future *f = vl__mysql_reset(pc->c);
        if (f == NULL) {
            pc_close(pc, &p->st.closed_dirty);
        } else {
            pc->state = PC_RESETTING;
            pc->refs++;
            vl_future_then(f, reset_done, pc);
        }
        return;
    } else {
        p->busy--;
        list_remove(&p->others, pc);
        pc->state = PC_IDLE;
        pc->idle_since_ms = now;
        list_push(&p->idle, pc);
    }
    dispatch(p);
}

/* ---- requests ---- */

static void request_free(request *r)
{
    vl__free(r);
}

static void tx_value_free(void *v)
{
    vl_mysql_tx_free(v);
}

static void result_free_fn(void *v)
{
    vl_mysql_result_free(v);
}

/* Frees a future that was never handed out. */
static void future_drop(vl_future *f)
{
    if (f != NULL) {
        vl__future_set_source(f, NULL, NULL);
        vl_future_free(f);
    }
}

static void request_done(vl_future *inner, void *ud);

static void request_cancel(void *source, vl_future *f, int status)
{
    request *r = source;

    VL__UNUSED(f);
    r->f = NULL;
    count_result(r->pool, status);
    if (r->waiting) {
        wait_remove(r->pool, r);
        request_free(r);
        return;
    }
    /* Running: cancelling the statement closes its connection (a reply can
     * no longer be matched); request_done then releases it, dead. */
    if (r->inner != NULL)
        vl_future_cancel(r->inner);
}

static void request_describe(void *source, char *buf, size_t n)
{
    request *r = source;
    const char *p = r->sql;
    char verb[20];
    size_t i = 0;

    while (p != NULL && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '('))
        p++;
    while (p != NULL && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')) && i < 15)
        verb[i++] = (char)(*p++ & ~0x20);
    verb[i] = '\0';
    if (r->kind == RQ_BEGIN)
        snprintf(verb, sizeof(verb), "BEGIN");
    else if (i == 0)
        snprintf(verb, sizeof(verb), "statement");
    if (r->pool == NULL)
        snprintf(buf, n, "%s", verb);
    else if (r->waiting)
        snprintf(buf, n, "%s waiting for a connection of pool %s", verb, r->pool->display);
    else
        snprintf(buf, n, "%s on pool %s", verb, r->pool->display);
}

static const vl__source_ops request_ops = {.cancel = request_cancel, .describe = request_describe};

/* Starts a request on a connection it now holds. */
/* A waiting request's statement goes to the connection it got, which from
 * then on owns the request's future and completes it; the request itself
 * is done. pc_done takes the connection back, as for request_direct. */
static void request_hand_over(request *r, pconn *pc)
{
    vl_mysql_pool *p = r->pool;
    int kind = r->kind == RQ_QUERY  ? VL__MYSQL_QUERY
               : r->kind == RQ_EXEC ? VL__MYSQL_EXEC
                                    : VL__MYSQL_BULK;
    size_t n = r->kind == RQ_BULK ? r->ncols : r->nparams;
    size_t nrows = r->kind == RQ_BULK ? r->nparams / r->ncols : 1;
    int rc = VL_ECANCELED;

    p->nrunning++;
    pc->direct = 1;
    if (r->f != NULL)
        rc = vl__mysql_submit_into(pc->c, r->f, kind, r->sql, r->params, n, nrows);
    if (rc != VL_OK) {
        if (r->f != NULL) {
            vl__future_set_source(r->f, NULL, NULL);
            vl__future_fail(r->f, rc, "out of memory");
        }
    }
    r->f = NULL;
    request_free(r);
    /* Nothing runs (out of memory, or the request was abandoned): nothing
     * will call pc_done. */
    if (pc->direct && (rc != VL_OK || !vl__mysql_in_use(pc->c))) {
        pc->direct = 0;
        p->nrunning--;
        pc_release(pc);
    }
}

static void request_run(request *r, pconn *pc)
{
    vl_mysql_pool *p = r->pool;
    vl_future *inner = NULL;

    pc->state = PC_BUSY;
    list_push(&p->others, pc);
    p->busy++;
    r->pc = pc;
    if (r->kind == RQ_QUERY || r->kind == RQ_EXEC || r->kind == RQ_BULK) {
        request_hand_over(r, pc);
        return;
    }
    switch (r->kind) {
    case RQ_QUERY:
        inner = vl_mysql_query(pc->c, r->sql);
        break;
    case RQ_EXEC:
        inner = vl_mysql_execute(pc->c, r->sql, r->params, r->nparams);
        break;
    case RQ_BULK:
        inner = vl_mysql_execute_bulk(pc->c, r->sql, r->params, r->ncols, r->nparams / r->ncols);
        break;
    default:
        inner = vl_mysql_query(pc->c, "START TRANSACTION");
        break;
    }
    if (inner == NULL) {
        if (r->f != NULL)
            vl__future_fail(r->f, VL_ENOMEM, "out of memory");
        r->f = NULL;
        pc_release(pc);
        request_free(r);
        return;
    }
    r->inner = inner;
    running_add(p, r);
    pc->refs++;
    vl_future_then(inner, request_done, r);
}

static void request_done(vl_future *inner, void *ud)
{
    request *r = ud;
    vl_mysql_pool *p = r->pool;
    pconn *pc = r->pc;
    int status = vl_future_status(inner);
    void *value = vl_future_take(inner);

    r->inner = NULL;
    if (p != NULL)
        running_remove(p, r);
    if (r->kind == RQ_BEGIN && status == VL_OK && r->f != NULL && p != NULL &&
        pc->state == PC_BUSY) {
        vl_mysql_tx *tx = vl__calloc(1, sizeof(*tx));
        vl_mysql_result_free(value);
        if (tx == NULL) {
            vl__future_fail(r->f, VL_ENOMEM, "out of memory");
            pc_release(pc);
        } else {
            tx->magic = VL__MYSQL_MAGIC_TX;
            tx->loop = p->loop;
            tx->pool = p;
            tx->pc = pc;
            pc->tx = tx;
            vl__future_complete(r->f, VL_OK, tx, VL__VAL_MYSQL, tx_value_free, NULL);
        }
    } else {
        if (r->f != NULL) {
            count_result(p, status);
            vl__future_complete(r->f, status, value, VL__VAL_MYSQL,
                                result_free_fn,
                                status == VL_OK ? NULL : vl_future_error(inner));
        } else
            vl_mysql_result_free(value);
        if (p != NULL && r->kind == RQ_END && status != VL_OK)
            pc_close(pc, &p->st.closed_dirty); /* the outcome is unknown: never reuse */
        else if (p != NULL)
            pc_release(pc);
    }
    r->f = NULL;
    pc_unref(pc);
    request_free(r);
}

/* Every waiter waits acquire_timeout_ms and the queue is FIFO, so the
 * deadlines grow in queue order: one timer, armed for the head, serves
 * them all (as in the Redis pool). */
static void queue_arm(vl_mysql_pool *p)
{
    uint64_t now, due;

    if (p->wait_head == NULL || p->o.acquire_timeout_ms == 0) {
        vl__timer_stop(&p->qtimer);
        return;
    }
    now = vl_loop_now_ms(p->loop);
    due = p->wait_head->enq_ms + p->o.acquire_timeout_ms;
    vl__timer_start(&p->qtimer, due > now ? due - now : 0);
}

static void request_expire(vl_mysql_pool *p, request *r, uint64_t now)
{
    vl_future *f = r->f;
    uint64_t waited = now - r->enq_ms;

    wait_remove(p, r);
    p->st.wait_count++;
    p->st.wait_total_ms += waited;
    r->f = NULL;
    vl__future_set_source(f, NULL, NULL);
    count_result(p, VL_ETIMEDOUT);
    if (p->last_error != NULL && p->failing)
        vl__future_fail(f, VL_ETIMEDOUT,
                        "pool %s: no connection available after %" PRIu64
                        " ms (last connect error: %s)",
                        p->display, waited, p->last_error);
    else
        vl__future_fail(f, VL_ETIMEDOUT, "pool %s: no connection available after %" PRIu64 " ms",
                        p->display, waited);
    request_free(r);
}

/* Fails the waiters whose deadline has passed, never one early (the timer
 * may fire for a head that already left, or a little before the monotonic
 * clock agrees), then re-arms for the next. The futures' callbacks run
 * later, from the loop, so the queue cannot change under this walk. */
static void queue_timeout(vl__timer *t, void *ud)
{
    vl_mysql_pool *p = ud;
    uint64_t now = vl_loop_now_ms(p->loop);

    VL__UNUSED(t);
    while (p->wait_head != NULL && p->wait_head->enq_ms + p->o.acquire_timeout_ms <= now)
        request_expire(p, p->wait_head, now);
    queue_arm(p);
}

/* 1 when an idle connection may be handed out (see the header comment). */
static int pc_usable(vl_mysql_pool *p, pconn *pc)
{
    int stale = vl_loop_now_ms(p->loop) - pc->idle_since_ms >= PROBE_AFTER_MS;

    return vl__mysql_probe_idle(pc->c, stale);
}

/* Hands free connections to waiters, oldest first; opens more if needed. */
static void dispatch(vl_mysql_pool *p)
{
    while (p->wait_head != NULL && p->idle.head != NULL) {
        request *r = p->wait_head;
        pconn *pc = p->idle.head;
        list_remove(&p->idle, pc);
        pc->state = PC_BUSY;
        if (!pc_usable(p, pc)) {
            /* Hung up while idle: replace it. */
            pc->state = PC_IDLE;
            list_push(&p->idle, pc);
            pc_close(pc, &p->st.closed_broken);
            continue;
        }
        wait_remove(p, r);
        p->st.wait_count++;
        p->st.wait_total_ms += vl_loop_now_ms(p->loop) - r->enq_ms;
        request_run(r, pc);
    }
    while (p->nwaiters > p->connecting && pc_open(p))
        ;
    if (p->nwaiters > 0 && p->failing && p->connecting == 0) {
        uint64_t now = vl_loop_now_ms(p->loop);
        timer_set(p, p->next_attempt_ms > now ? p->next_attempt_ms - now : 0);
    }
}

/* The common case, a statement while a connection is free and nobody
 * waits: it goes straight to the connection, whose own future the caller
 * gets (the SQL and parameters are copied once, by the connection), and
 * pc_done takes the connection back once it finished. NULL with *used 0
 * when no connection is free (the request then queues); NULL with *used 1
 * when out of memory. */
static vl_future *request_direct(vl_mysql_pool *p, int kind, const char *sql,
                                 const vl_mysql_param *params, size_t ncols, size_t nrows,
                                 size_t total, int *used)
{
    pconn *pc;
    vl_future *f;

    *used = 0;
    if (p->wait_head != NULL)
        return NULL; /* first come, first served */
    while ((pc = p->idle.head) != NULL) {
        list_remove(&p->idle, pc);
        if (pc_usable(p, pc))
            break;
        pc->state = PC_IDLE;
        list_push(&p->idle, pc);
        pc_close(pc, &p->st.closed_broken);
    }
    if (pc == NULL)
        return NULL;
    *used = 1;
    pc->state = PC_BUSY;
    list_push(&p->others, pc);
    p->busy++;
    p->nrunning++;
    pc->direct = 1;
    /* request_new checked the SQL and parameters as the connection would. */
    f = vl__mysql_run_checked(pc->c,
                              kind == RQ_QUERY  ? VL__MYSQL_QUERY
                              : kind == RQ_EXEC ? VL__MYSQL_EXEC
                                                : VL__MYSQL_BULK,
                              sql, params, ncols, nrows, total);
    /* No statement was made (out of memory, or refused before one was:
     * the pool's own checks above make that unreachable): nothing will
     * call pc_done, so the connection comes back now. */
    if (pc->direct && (f == NULL || !vl__mysql_in_use(pc->c))) {
        pc->direct = 0;
        p->nrunning--;
        if (f != NULL)
            count_result(p, vl_future_status(f));
        pc_release(pc);
    }
    return f;
}

/* Takes a free connection now, or queues the request. */
static void request_submit(vl_mysql_pool *p, request *r)
{
    while (p->idle.head != NULL) {
        pconn *pc = p->idle.head;
        list_remove(&p->idle, pc);
        if (pc_usable(p, pc)) {
            request_run(r, pc);
            return;
        }
        pc->state = PC_IDLE;
        list_push(&p->idle, pc);
        pc_close(pc, &p->st.closed_broken);
    }
    if (p->nwaiters >= p->o.max_waiters) {
        vl_future *f = r->f;
        r->f = NULL;
        vl__future_set_source(f, NULL, NULL);
        count_result(p, VL_EBUSY);
        vl__future_fail(f, VL_EBUSY,
                        "pool %s: no connection free and %zu waiting (max_waiters %zu)",
                        p->display, p->nwaiters, p->o.max_waiters);
        request_free(r);
        return;
    }
    r->waiting = 1;
    r->enq_ms = vl_loop_now_ms(p->loop);
    r->prev = p->wait_tail;
    r->next = NULL;
    if (p->wait_tail != NULL)
        p->wait_tail->next = r;
    else
        p->wait_head = r;
    p->wait_tail = r;
    p->nwaiters++;
    holds_update(p);
    /* An armed timer is due no later than this request: leave it. */
    if (!vl__timer_active(&p->qtimer))
        queue_arm(p);
    dispatch(p);
}

/* Makes a request, copies what it was given into its one block and submits
 * it. Its parameters are `nrows` rows of `ncols`: one row but for a bulk
 * request. */
static vl_future *request_new(vl_mysql_pool *p, int kind, const char *sql,
                              const vl_mysql_param *params, size_t ncols, size_t nrows)
{
    request *r;
    size_t n, total = 0, bad = 0, sql_len, size;
    const char *why = NULL;
    char *data;

    if (p == NULL)
        return NULL;
    p->st.requests++;
    if (p->freed) /* only while the loop is being freed (vl__handle_bury) */
        return vl__future_failed(p->loop, VL_ECLOSED, "pool freed");
    if (p->fail_status != VL_OK) {
        count_result(p, p->fail_status);
        return vl__future_failed(p->loop, p->fail_status, "%s", p->fail_msg);
    }
    if (vl__loop_closing(p->loop))
        return vl__future_failed(p->loop, VL_ECLOSED, "loop is closing");
    if (kind != RQ_BEGIN && sql == NULL)
        return vl__future_failed(p->loop, VL_EINVAL, "no SQL");
    /* Checked now, as the connection does: the copy below must not read
     * bytes the caller never gave. */
    if (kind == RQ_BULK) {
        /* The connection's own checks, so that the request fails now
         * rather than once it has waited for a connection. */
        size_t row = 0, col = 0;
        char bwhy[160];
        if (params == NULL || ncols == 0 || nrows == 0 || nrows > SIZE_MAX / ncols ||
            nrows * ncols > SIZE_MAX / sizeof(*params))
            return vl__future_failed(p->loop, VL_EINVAL,
                                     "bulk execution needs at least one row and column");
        if (vl__mbulk_check(params, ncols, nrows, &total, &row, &col, bwhy, sizeof(bwhy)) !=
            VL_OK)
            return vl__future_failed(p->loop, VL_EINVAL, "bulk row %zu column %zu %s", row, col,
                                     bwhy);
    }
    n = ncols * nrows; /* one row, or a bulk shape checked above */
    if (n > 0 && params == NULL)
        return vl__future_failed(p->loop, VL_EINVAL, "no parameters");
    if (kind != RQ_BULK && vl__mysql_check_params(params, n, &total, &bad, &why) != VL_OK)
        return vl__future_failed(p->loop, VL_EINVAL, "parameter %zu %s", bad, why);
    if (kind == RQ_QUERY || kind == RQ_EXEC || kind == RQ_BULK) {
        int used;
        vl_future *f = request_direct(p, kind, sql, params, ncols, nrows, total, &used);
        if (used)
            return f;
    }
    sql_len = sql != NULL ? strlen(sql) + 1 : 0;
    size = sizeof(*r) + n * sizeof(*params); /* no overflow: checked above */
    if (total > SIZE_MAX - size || sql_len > SIZE_MAX - size - total)
        return vl__future_failed(p->loop, VL_EINVAL, "parameters too long");
    r = vl__malloc(size + total + sql_len);
    if (r == NULL)
        return NULL;
    memset(r, 0, sizeof(*r));
    r->pool = p;
    r->kind = kind;
    r->f = vl__future_make(p->loop, &request_ops, r);
    if (r->f == NULL) {
        vl__free(r);
        return NULL;
    }
    /* Everything is copied now (the caller's buffers may go away). */
    r->params = n > 0 ? (vl_mysql_param *)(void *)(r + 1) : NULL;
    data = (char *)(r + 1) + n * sizeof(*params);
    r->nparams = n;
    r->ncols = kind == RQ_BULK ? ncols : 0;
    vl__mysql_params_copy(r->params, data, params, n);
    if (sql != NULL) {
        r->sql = data + total;
        memcpy(r->sql, sql, sql_len);
    }
    {
        vl_future *f = r->f;
        request_submit(p, r);
        return f;
    }
}

vl_future *vl_mysql_pool_query(vl_mysql_pool *p, const char *sql)
{
    return request_new(p, RQ_QUERY, sql, NULL, 0, 1);
}

vl_future *vl_mysql_pool_execute(vl_mysql_pool *p, const char *sql,
                                 const vl_mysql_param *params, size_t n)
{
    return request_new(p, RQ_EXEC, sql, params, n, 1);
}

vl_future *vl_mysql_pool_execute_bulk(vl_mysql_pool *p, const char *sql,
                                      const vl_mysql_param *params, size_t ncols, size_t nrows)
{
    return request_new(p, RQ_BULK, sql, params, ncols, nrows);
}

vl_future *vl_mysql_pool_begin(vl_mysql_pool *p)
{
    return request_new(p, RQ_BEGIN, NULL, NULL, 0, 1);
}

/* ---- maintenance ---- */

static void tick(vl__timer *t, void *ud)
{
    vl_mysql_pool *p = ud;
    uint64_t now = vl_loop_now_ms(p->loop), next = TICK_MS;
    pconn *pc, *nx;

    VL__UNUSED(t);
    if (p->timer_unref) {
        /* libev already stopped the one-shot timer: undo the unref. */
        vl__loop_ref(p->loop);
        p->timer_unref = 0;
    }
    for (pc = p->idle.head; pc != NULL; pc = nx) {
        size_t open = p->idle.n + p->others.n;
        nx = pc->next;
        if (pc->expires_ms != 0 && now >= pc->expires_ms)
            pc_close(pc, &p->st.closed_lifetime);
        else if (p->o.idle_timeout_ms != 0 && now - pc->idle_since_ms >= p->o.idle_timeout_ms &&
                 open > p->o.min_idle)
            pc_close(pc, &p->st.closed_idle);
        else if (p->o.keepalive_ms != 0 && now - pc->idle_since_ms >= p->o.keepalive_ms) {
            vl_future *f;
            /* A ping is a short lease by the pool itself. Lease first: the
             * ping fails inside vl_mysql_ping when the server hung up in
             * this very loop pass, and the hook must then find a connection
             * in use (closed by reset_done), not an idle one to free under
             * us. */
            list_remove(&p->idle, pc);
            pc->state = PC_RESETTING;
            list_push(&p->others, pc);
            p->busy++;
            pc->refs++;
            f = vl_mysql_ping(pc->c);
            if (f == NULL) {
                pc_close(pc, &p->st.closed_dirty); /* out of memory */
                pc_unref(pc);
            } else {
                p->st.keepalives++;
                vl_future_then(f, reset_done, pc);
            }
        }
    }
    while (p->idle.n + p->others.n < p->o.min_idle && pc_open(p))
        ;
    dispatch(p);
    if (p->failing && p->next_attempt_ms > now && p->next_attempt_ms - now < next)
        next = p->next_attempt_ms - now;
    if (p->o.keepalive_ms != 0 && p->o.keepalive_ms / 2 < next)
        next = p->o.keepalive_ms / 2 ? p->o.keepalive_ms / 2 : 1;
    if (p->o.max_lifetime_ms != 0 && p->o.max_lifetime_ms / 2 < next)
        next = p->o.max_lifetime_ms / 2 ? p->o.max_lifetime_ms / 2 : 1;
    if (p->o.idle_timeout_ms != 0 && p->o.idle_timeout_ms / 2 < next)
        next = p->o.idle_timeout_ms / 2 ? p->o.idle_timeout_ms / 2 : 1;
    timer_set(p, next);
}

/* ---- lifecycle ---- */

static const size_t opts_ends[] = {
    VL__END(vl_mysql_pool_options, struct_size),
    VL__END(vl_mysql_pool_options, max_size),
    VL__END(vl_mysql_pool_options, min_idle),
    VL__END(vl_mysql_pool_options, acquire_timeout_ms),
    VL__END(vl_mysql_pool_options, max_waiters),
    VL__END(vl_mysql_pool_options, connect_timeout_ms),
    VL__END(vl_mysql_pool_options, idle_timeout_ms),
    VL__END(vl_mysql_pool_options, max_lifetime_ms),
    VL__END(vl_mysql_pool_options, keepalive_ms),
    VL__END(vl_mysql_pool_options, init_sql),
};
/* No padding at the end: see lib/mysql.c. */
_Static_assert(sizeof(vl_mysql_pool_options) == VL__END(vl_mysql_pool_options, init_sql),
               "vl_mysql_pool_options ends with padding");
static const vl__opts_desc opts_desc = {"vl_mysql_pool_options", sizeof(vl_mysql_pool_options),
                                        opts_ends, sizeof(opts_ends) / sizeof(opts_ends[0])};

static void opts_defaults(vl_mysql_pool_options *o)
{
    memset(o, 0, sizeof(*o));
    o->struct_size = sizeof(*o);
    o->max_size = 10;
    o->min_idle = 1;
    o->acquire_timeout_ms = 5000;
    o->max_waiters = SIZE_MAX; /* bounded by acquire_timeout_ms, not by count */
    o->connect_timeout_ms = 5000;
    o->idle_timeout_ms = 600000;
    o->max_lifetime_ms = 1800000;
}

void vl_mysql_pool_options_init_sized(vl_mysql_pool_options *o, size_t struct_size)
{
    vl_mysql_pool_options d;

    opts_defaults(&d);
    vl__opts_init(o, struct_size, &d, &opts_desc);
}

/* ---- readiness ---- */

static void ready_unlink(vl_mysql_pool *p, ready_wait *w)
{
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        p->readies = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    vl__free(w);
    holds_update(p);
}

static void ready_cancel(void *source, vl_future *f, int status)
{
    ready_wait *w = source;

    VL__UNUSED(f);
    VL__UNUSED(status);
    ready_unlink(w->pool, w);
}

static void ready_describe(void *source, char *buf, size_t n)
{
    ready_wait *w = source;

    snprintf(buf, n, "readiness of pool %s", w->pool->display);
}

static const vl__source_ops ready_ops = {.cancel = ready_cancel, .describe = ready_describe};

/* 1 when min_idle connections are open, -1 when none is open and the last
 * connect failed with nothing being tried, 0 while it is undecided. */
static int ready_state(const vl_mysql_pool *p)
{
    size_t open = p->idle.n + p->busy;

    if (open >= p->o.min_idle)
        return 1;
    if (open == 0 && p->failing && p->connecting == 0)
        return -1;
    return 0;
}

/* Completes the readiness futures once the answer is known. */
static void readies_check(vl_mysql_pool *p)
{
    int st;

    if (p->readies == NULL)
        return;
    st = ready_state(p);
    if (st == 0)
        return;
    while (p->readies != NULL) {
        ready_wait *w = p->readies;
        vl_future *f = w->f;
        ready_unlink(p, w);
        vl__future_set_source(f, NULL, NULL);
        if (st > 0)
            vl__future_complete(f, VL_OK, NULL, VL__VAL_NONE, NULL, NULL);
        else
            vl__future_fail(f, VL_ECONN, "pool %s: %s", p->display,
                            p->last_error != NULL ? p->last_error : "connect failed");
    }
}

/* Connecting connections keep the loop running only while somebody waits
 * for the pool (the loop-alive rule of volley/loop.h). */
static void holds_update(vl_mysql_pool *p)
{
    int want = !p->freed && (p->nwaiters > 0 || p->readies != NULL);
    pconn *pc;

    if (want == p->holding)
        return;
    p->holding = want;
    for (pc = p->others.head; pc != NULL; pc = pc->next)
        if (pc->state == PC_CONNECTING && pc->c != NULL)
            vl__mysql_hold(pc->c, want);
    /* The maintenance timer holds the loop while somebody waits (a backoff
     * probe may be what they wait for), and not a moment longer. */
    if (want && p->timer_unref && vl__timer_active(&p->timer)) {
        vl__loop_ref(p->loop);
        p->timer_unref = 0;
    } else if (!want && !p->timer_unref && vl__timer_active(&p->timer)) {
        vl__loop_unref(p->loop);
        p->timer_unref = 1;
    }
}

vl_future *vl_mysql_pool_ready(vl_mysql_pool *p)
{
    ready_wait *w;
    vl_future *f;
    int st;

    if (p == NULL)
        return NULL;
    if (p->freed)
        return vl__future_failed(p->loop, VL_ECLOSED, "pool freed");
    if (p->fail_status != VL_OK)
        return vl__future_failed(p->loop, p->fail_status, "%s", p->fail_msg);
    st = ready_state(p);
    if (st != 0) {
        /* Known now: completed at once, its callback still runs from the
         * loop (rule 2). */
        if (st > 0) {
            f = vl__future_make(p->loop, NULL, NULL);
            if (f != NULL)
                vl__future_complete(f, VL_OK, NULL, VL__VAL_NONE, NULL, NULL);
            return f;
        }
        return vl__future_failed(p->loop, VL_ECONN, "pool %s: %s", p->display,
                                 p->last_error != NULL ? p->last_error : "connect failed");
    }
    w = vl__calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    f = vl__future_make(p->loop, &ready_ops, w);
    if (f == NULL) {
        vl__free(w);
        return NULL;
    }
    w->pool = p;
    w->f = f;
    w->next = p->readies;
    if (p->readies != NULL)
        p->readies->prev = w;
    p->readies = w;
    holds_update(p);
    return f;
}

static void pool_release(vl__handle *h)
{
    vl_mysql_pool *p = (vl_mysql_pool *)(void *)((char *)h - offsetof(vl_mysql_pool, handle));

    vl__free(p->display);
    vl__free(p);
}

/* The URL as it may be printed (no password); a copy, NULL on ENOMEM. */
static char *pool_display(const char *url)
{
    vl__url u;
    char why[160];
    char *d;

    if (url == NULL || vl__url_parse(url, &u, why, sizeof(why)) != VL_OK)
        return vl__strdup("mysql://?");
    d = vl__strdup(u.display);
    vl__url_clear(&u);
    return d;
}

static void pool_handle_free(vl__handle *h)
{
    vl_mysql_pool *p = (vl_mysql_pool *)(void *)((char *)h - offsetof(vl_mysql_pool, handle));

    vl_mysql_pool_free(p);
}

vl_mysql_pool *vl_mysql_pool_new(vl_loop *loop, const char *url, const vl_mysql_pool_options *opts)
{
    vl_mysql_pool *p;
    char owhy[160];
    int orc;

    if (loop == NULL)
        return NULL;
    p = vl__calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->loop = loop;
    opts_defaults(&p->o);
    orc = vl__opts_copy(&p->o, opts, &opts_desc, owhy, sizeof(owhy));
    if (orc != VL_OK)
        p->o.init_sql = NULL; /* not read: the struct is not understood */
    if (p->o.max_size == 0)
        p->o.max_size = 1;
    if (p->o.min_idle > p->o.max_size)
        p->o.min_idle = p->o.max_size;
    vl__timer_init(&p->timer, loop, tick, p);
    vl__timer_init(&p->qtimer, loop, queue_timeout, p);
    vl_mysql_options_init(&p->copts);
    p->copts.connect_timeout_ms = p->o.connect_timeout_ms;
    if (p->o.init_sql != NULL) {
        p->init_sql = vl__strdup(p->o.init_sql);
        if (p->init_sql == NULL) {
            vl__free(p);
            return NULL;
        }
    }
    p->copts.init_sql = p->init_sql;
    p->o.init_sql = p->init_sql;
    p->url = url != NULL ? vl__strdup(url) : NULL;
    if (url != NULL && p->url == NULL) {
        vl__free(p->init_sql);
        vl__free(p);
        return NULL;
    }
    /* Check the URL once: a bad URL is reported by every request instead
     * of by every connect. */
    {
        int rc = orc;
        if (rc != VL_OK)
            p->fail_msg = vl__strdup(owhy);
        else
            rc = vl__mysql_check_url(loop, url, &p->copts, &p->fail_msg);
        p->display = pool_display(url);
        if (rc == VL_ENOMEM || (rc != VL_OK && p->fail_msg == NULL) || p->display == NULL) {
            vl__free(p->display);
            vl__free(p->fail_msg);
            vl__free(p->url);
            vl__free(p->init_sql);
            vl__free(p);
            return NULL;
        }
        p->fail_status = rc;
    }
    vl__handle_add(loop, &p->handle, pool_handle_free);
    if (p->fail_status == VL_OK)
        tick(&p->timer, p); /* opens min_idle and arms the maintenance timer */
    return p;
}

void vl_mysql_pool_free(vl_mysql_pool *p)
{
    request *r;
    pconn *pc;

    if (p == NULL || p->freed)
        return;
    p->freed = 1;
    vl__handle_remove(p->loop, &p->handle);
    timer_stop(p);
    vl__timer_stop(&p->qtimer);
    while (p->readies != NULL) {
        vl_future *f = p->readies->f;
        ready_unlink(p, p->readies);
        vl__future_set_source(f, NULL, NULL);
        vl__future_fail(f, VL_ECANCELED, "pool freed");
    }
    while ((r = p->wait_head) != NULL) {
        vl_future *f = r->f;
        wait_remove(p, r);
        r->f = NULL;
        if (f != NULL) {
            vl__future_set_source(f, NULL, NULL);
            vl__future_fail(f, VL_ECANCELED, "pool freed");
        }
        request_free(r);
    }
    /* Running requests finish through their own callbacks, with ECANCELED
     * from their connection; they must not touch the pool any more. */
    while ((r = p->running) != NULL) {
        running_remove(p, r);
        r->pool = NULL;
        if (r->f != NULL) {
            vl_future *f = r->f;
            r->f = NULL;
            vl__future_set_source(f, NULL, NULL);
            vl__future_fail(f, VL_ECANCELED, "pool freed");
        }
    }
    while ((pc = p->idle.head) != NULL)
        pc_close(pc, NULL);
    while ((pc = p->others.head) != NULL) {
        if (pc->tx != NULL)
            pc->tx->pool = NULL;
        pc_close(pc, NULL);
    }
    vl__free(p->url);
    vl__free(p->init_sql);
    vl__free(p->fail_msg);
    vl__free(p->last_error);
    p->url = p->init_sql = p->fail_msg = p->last_error = NULL;
    p->copts.init_sql = p->o.init_sql = NULL;
    /* While the loop is being freed, callbacks that still hold `p` run after
     * this: keep the memory until they have (vl__handle_bury). */
    vl__handle_bury(p->loop, &p->handle, pool_release);
}

int vl_mysql_pool_stats_get(const vl_mysql_pool *p, vl_pool_stats *out)
{
    vl_pool_stats st;
    const pconn *pc;

    if (p == NULL || out == NULL)
        return VL_EINVAL;
    st = p->st;
    st.open = p->idle.n + p->others.n;
    st.idle = p->idle.n;
    st.busy = p->busy;
    st.ready = p->idle.n + p->busy;
    st.waiters = p->nwaiters;
    st.pending = p->nrunning;
    st.leased = 0;
    for (pc = p->others.head; pc != NULL; pc = pc->next)
        if (pc->tx != NULL)
            st.leased++;
    return vl__pool_stats_out(out, &st);
}

/* ---- transactions ---- */

vl_mysql_tx *vl_future_mysql_tx(const vl_future *f)
{
    vl_mysql_tx *tx;

    if (f == NULL || vl__future_vtype(f) != VL__VAL_MYSQL)
        return NULL;
    tx = vl_future_value(f);
    return tx != NULL && tx->magic == VL__MYSQL_MAGIC_TX ? tx : NULL;
}

vl_future *vl_mysql_tx_query(vl_mysql_tx *tx, const char *sql)
{
    if (tx == NULL)
        return NULL;
    if (tx->pc == NULL || tx->pool == NULL)
        return vl__future_failed(tx->loop, VL_ECLOSED, "the transaction's connection is gone");
    return vl_mysql_query(tx->pc->c, sql);
}

vl_future *vl_mysql_tx_execute(vl_mysql_tx *tx, const char *sql, const vl_mysql_param *params,
                               size_t n)
{
    if (tx == NULL)
        return NULL;
    if (tx->pc == NULL || tx->pool == NULL)
        return vl__future_failed(tx->loop, VL_ECLOSED, "the transaction's connection is gone");
    return vl_mysql_execute(tx->pc->c, sql, params, n);
}

/* COMMIT or ROLLBACK as a request of its own that already holds the
 * connection: request_done releases it afterwards. */
static vl_future *tx_end(vl_mysql_tx *tx, const char *sql)
{
    vl_mysql_pool *p;
    pconn *pc;
    request *r;
    vl_future *f;

    if (tx == NULL)
        return NULL;
    p = tx->pool;
    pc = tx->pc;
    if (p == NULL || pc == NULL || pc->state != PC_BUSY) {
        /* The connection was lost (or the pool freed): nothing to end. */
        vl_loop *loop = tx->loop;
        vl_mysql_tx_free(tx);
        return vl__future_failed(loop, VL_ECLOSED, "the transaction's connection is gone");
    }
    r = vl__calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->pool = p;
    r->kind = RQ_END;
    r->f = vl__future_make(p->loop, &request_ops, r);
    if (r->f == NULL) {
        vl__free(r);
        return NULL;
    }
    r->inner = vl_mysql_query(pc->c, sql);
    if (r->inner == NULL) {
        future_drop(r->f);
        vl__free(r);
        return NULL;
    }
    f = r->f;
    pc->tx = NULL;
    tx->pc = NULL;
    vl_mysql_tx_free(tx);
    r->pc = pc;
    running_add(p, r);
    pc->refs++;
    vl_future_then(r->inner, request_done, r);
    return f;
}

vl_future *vl_mysql_tx_commit(vl_mysql_tx *tx)
{
    return tx_end(tx, "COMMIT");
}

vl_future *vl_mysql_tx_rollback(vl_mysql_tx *tx)
{
    return tx_end(tx, "ROLLBACK");
}

void vl_mysql_tx_free(vl_mysql_tx *tx)
{
    pconn *pc;

    if (tx == NULL)
        return;
    pc = tx->pc;
    tx->magic = 0;
    if (pc != NULL) {
        pc->tx = NULL;
        /* Release: the open transaction makes the pool reset the
         * connection, which rolls it back (or close it if busy). */
        pc_release(pc);
    }
    vl__free(tx);
}
