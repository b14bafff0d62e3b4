/* SPDX-License-Identifier: BSD-3-Clause */
/* raw.c - the async load written directly on hiredis's async API and
 * Connector/C's non-blocking API, both on libev, without volley. It issues
 * the same requests with the same window as the `async` mode, so the gap
 * between the two is the cost of volley's layer (futures, queues, checks).
 *
 * Connection j talks to host j % hosts; request i goes to connection
 * i % connections for Redis (pipelined), and to the next idle connection
 * for MySQL (one statement at a time per connection, the rest wait in a
 * FIFO queue, as they do in a volley pool).
 *
 * MySQL point selects and inserts use Connector/C's non-blocking prepared
 * statements: each connection prepares its statement once before the
 * clock starts, then each request binds its values and runs
 * mysql_stmt_execute_start/_cont and mysql_stmt_store_result_start/_cont
 * on the loop; the fetch reads the stored rows without I/O. SELECT 1 and
 * SLEEP stay text queries (mysql_real_query_start/_cont).
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>
#include <hiredis.h>
#include <async.h>
#include <adapters/libev.h>
#include <mysql.h>

#include "bench.h"
#include "mysqlc.h"

typedef struct bench_raw {
    struct ev_loop *loop;
    const bench_env *e;
    const bench_case *c;
    bench_run *r;
    uint64_t next;  /* next request number to issue */
    uint64_t done;
    int nconn;
    int connected;
    int failed;
    char *store;
} bench_raw;

/* ---- Redis ---- */

typedef struct bench_raw_req {
    bench_raw *x;
    uint64_t i;
    uint64_t t0;
} bench_raw_req;

typedef struct bench_raw_redis {
    bench_raw x;
    redisAsyncContext **ac;
} bench_raw_redis;

static void bench_raw_redis_issue(bench_raw_redis *rr, bench_raw_req *q);

static void bench_raw_redis_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    bench_raw_req *q = priv;
    bench_raw *x = q->x;
    (void)ac;
    if (reply == NULL) {
        /* Freed while pending (teardown) or the connection broke. */
        if (x->done < x->c->requests) {
            bench_fail("raw", q->i, "redis", ac->errstr[0] ? ac->errstr : "no reply");
            x->r->errors++;
            x->done++;
            x->r->done = x->done;
            if (x->done == x->c->requests)
                ev_break(x->loop, EVBREAK_ALL);
        }
        free(q);
        return;
    }
    bench_rreply br;
    bench_rreply_hiredis(reply, &br);
    if (bench_redis_check(x->e, x->c->op, q->i, &br, "raw") != 0)
        x->r->errors++;
    bench_hist_add(&x->r->hist, bench_now_us() - q->t0);
    x->done++;
    x->r->done = x->done;
    if (x->done == 1000000)
        x->r->rss_1m_kb = bench_rss_kb();
    if ((x->done & 1023) == 0)
        bench_progress(x->c, x->done);
    if (x->next < x->c->requests) {
        bench_raw_redis_issue((bench_raw_redis *)x, q);
        return;
    }
    free(q);
    if (x->done == x->c->requests)
        ev_break(x->loop, EVBREAK_ALL);
}

static void bench_raw_redis_issue(bench_raw_redis *rr, bench_raw_req *q)
{
    bench_raw *x = &rr->x;
    const char *argv[BENCH_MAX_ARGS];
    size_t lens[BENCH_MAX_ARGS];
    q->i = x->next++;
    int argc = bench_redis_argv(x->e, x->c->op, q->i, argv, lens, x->store);
    q->t0 = bench_now_us();
    redisAsyncContext *ac = rr->ac[q->i % (uint64_t)x->nconn];
    if (redisAsyncCommandArgv(ac, bench_raw_redis_reply, q, argc, argv, lens) != REDIS_OK) {
        bench_fail("raw", q->i, "redis", ac->errstr);
        x->r->errors++;
        x->done++;
        free(q);
        if (x->done == x->c->requests)
            ev_break(x->loop, EVBREAK_ALL);
    }
}

static void bench_raw_redis_connected(const redisAsyncContext *ac, int status)
{
    bench_raw *x = ac->data;
    if (status != REDIS_OK) {
        fprintf(stderr, "volley-bench: raw: connect: %s\n", ac->errstr);
        x->failed++;
    }
    if (++x->connected == x->nconn)
        ev_break(x->loop, EVBREAK_ALL);
}

static int bench_raw_redis_run(const bench_env *e, const bench_case *c, bench_run *r)
{
    bench_raw_redis rr;
    bench_raw *x = &rr.x;
    int rc = 0;
    memset(&rr, 0, sizeof rr);
    x->loop = ev_loop_new(EVFLAG_AUTO);
    x->e = e;
    x->c = c;
    x->r = r;
    x->nconn = c->conns > 0 ? c->conns : 1;
    x->store = malloc(bench_redis_store_size(e));
    rr.ac = calloc((size_t)x->nconn, sizeof *rr.ac);
    if (x->loop == NULL || x->store == NULL || rr.ac == NULL) {
        rc = -1;
        goto out;
    }
    for (int j = 0; j < x->nconn; j++) {
        int port = bench_redis_port(e, c, j % c->hosts);
        rr.ac[j] = redisAsyncConnect("127.0.0.1", port);
        if (rr.ac[j] == NULL || rr.ac[j]->err) {
            fprintf(stderr, "volley-bench: raw: connect 127.0.0.1:%d: %s\n", port,
                    rr.ac[j] ? rr.ac[j]->errstr : "out of memory");
            if (rr.ac[j])
                redisAsyncFree(rr.ac[j]);
            rr.ac[j] = NULL;
            rc = -1;
            goto out;
        }
        rr.ac[j]->data = x;
        redisLibevAttach(x->loop, rr.ac[j]);
        redisAsyncSetConnectCallback(rr.ac[j], bench_raw_redis_connected);
    }
    ev_run(x->loop, 0);
    if (x->failed) {
        rc = -1;
        goto out;
    }
    bench_run_begin(r);
    uint64_t w = c->window > 0 ? (uint64_t)c->window : 1;
    for (uint64_t k = 0; k < w && x->next < c->requests; k++) {
        bench_raw_req *q = malloc(sizeof *q);
        if (q == NULL) {
            rc = -1;
            break;
        }
        q->x = x;
        bench_raw_redis_issue(&rr, q);
    }
    if (x->done < c->requests)
        ev_run(x->loop, 0);
    bench_run_end(r);
    bench_progress(c, c->requests);
out:
    /* Outside any hiredis callback, so freeing at once is safe. */
    for (int j = 0; rr.ac && j < x->nconn; j++)
        if (rr.ac[j])
            redisAsyncFree(rr.ac[j]);
    free(rr.ac);
    free(x->store);
    if (x->loop)
        ev_loop_destroy(x->loop);
    return rc;
}

/* ---- MySQL ---- */

/* Text: QUERY then STORE. Prepared: EXEC then (with columns) SSTORE. */
enum { BENCH_RAW_IDLE, BENCH_RAW_QUERY, BENCH_RAW_STORE, BENCH_RAW_EXEC, BENCH_RAW_SSTORE };

struct bench_raw_mysql;

typedef struct bench_raw_conn {
    ev_io io;
    ev_timer tm;
    MYSQL *m;
    int phase;
    uint64_t i, t0;
    struct bench_raw_mysql *rm;
    bench_stmt stmt; /* stmt.q is the request; stmt.st NULL for text */
} bench_raw_conn;

typedef struct bench_raw_mysql {
    bench_raw x;
    bench_raw_conn *conns;
    /* Issued requests waiting for a connection: (number, issue time). */
    uint64_t *qi, *qt;
    size_t qcap, qhead, qlen;
    int *idle;
    int nidle;
} bench_raw_mysql;

static void bench_raw_conn_step(bench_raw_conn *k, int status);

static void bench_raw_conn_wait(bench_raw_conn *k, int status)
{
    struct ev_loop *loop = k->rm->x.loop;
    int ev = 0;
    if (status & MYSQL_WAIT_READ)
        ev |= EV_READ;
    if (status & MYSQL_WAIT_WRITE)
        ev |= EV_WRITE;
    if (ev_is_active(&k->io) && k->io.events != ev)
        ev_io_stop(loop, &k->io);
    if (!ev_is_active(&k->io) && ev) {
        ev_io_set(&k->io, mysql_get_socket(k->m), ev);
        ev_io_start(loop, &k->io);
    }
    if (status & MYSQL_WAIT_TIMEOUT) {
        ev_timer_stop(loop, &k->tm);
        ev_timer_set(&k->tm, mysql_get_timeout_value_ms(k->m) / 1000.0, 0.);
        ev_timer_start(loop, &k->tm);
    }
}

static void bench_raw_conn_idle(bench_raw_conn *k)
{
    struct ev_loop *loop = k->rm->x.loop;
    ev_io_stop(loop, &k->io);
    ev_timer_stop(loop, &k->tm);
    k->phase = BENCH_RAW_IDLE;
}

static void bench_raw_mysql_dispatch(bench_raw_mysql *rm);

/* One request finished on k (checked already); refill the window. */
static void bench_raw_mysql_finish(bench_raw_conn *k)
{
    bench_raw_mysql *rm = k->rm;
    bench_raw *x = &rm->x;
    bench_hist_add(&x->r->hist, bench_now_us() - k->t0);
    x->done++;
    x->r->done = x->done;
    if (x->done == 1000000)
        x->r->rss_1m_kb = bench_rss_kb();
    if ((x->done & 255) == 0)
        bench_progress(x->c, x->done);
    bench_raw_conn_idle(k);
    rm->idle[rm->nidle++] = (int)(k - rm->conns);
    if (x->next < x->c->requests) {
        size_t tail = (rm->qhead + rm->qlen) % rm->qcap;
        rm->qi[tail] = x->next++;
        rm->qt[tail] = bench_now_us();
        rm->qlen++;
    }
    if (x->done == x->c->requests)
        ev_break(x->loop, EVBREAK_ALL);
    else
        bench_raw_mysql_dispatch(rm);
}

static void bench_raw_conn_fail(bench_raw_conn *k, const char *msg)
{
    bench_fail("raw", k->i, "mysql", msg);
    k->rm->x.r->errors++;
    bench_raw_mysql_finish(k);
}

static void bench_raw_conn_stored(bench_raw_conn *k, MYSQL_RES *res)
{
    bench_raw *x = &k->rm->x;
    bench_mreply rep;
    if (res == NULL && mysql_field_count(k->m) != 0) {
        bench_raw_conn_fail(k, mysql_error(k->m));
        return;
    }
    bench_text_reply(k->m, res, &rep);
    if (bench_mysql_check(x->e, x->c->op, k->i, &rep, "raw") != 0)
        x->r->errors++;
    if (res)
        mysql_free_result(res);
    bench_raw_mysql_finish(k);
}

/* The prepared statement ran and its rows (if any) are stored. */
static void bench_raw_conn_executed(bench_raw_conn *k)
{
    bench_raw *x = &k->rm->x;
    bench_mreply rep;
    if (bench_stmt_read(&k->stmt, &rep) != 0) {
        bench_raw_conn_fail(k, mysql_stmt_error(k->stmt.st));
        return;
    }
    if (bench_mysql_check(x->e, x->c->op, k->i, &rep, "raw") != 0)
        x->r->errors++;
    bench_raw_mysql_finish(k);
}

/* Advances k's state machine; `status` is what the socket reported (0 to
 * start a phase). */
static void bench_raw_conn_step(bench_raw_conn *k, int status)
{
    int err = 0;
    MYSQL_RES *res = NULL;
    MYSQL_STMT *st = k->stmt.st;
    if (k->phase == BENCH_RAW_EXEC) {
        status = status ? mysql_stmt_execute_cont(&err, st, status)
                        : mysql_stmt_execute_start(&err, st);
        if (status) {
            bench_raw_conn_wait(k, status);
            return;
        }
        if (err) {
            bench_raw_conn_fail(k, mysql_stmt_error(st));
            return;
        }
        if (mysql_stmt_field_count(st) == 0) {
            bench_raw_conn_executed(k);
            return;
        }
        k->phase = BENCH_RAW_SSTORE;
        status = 0;
    }
    if (k->phase == BENCH_RAW_SSTORE) {
        status = status ? mysql_stmt_store_result_cont(&err, st, status)
                        : mysql_stmt_store_result_start(&err, st);
        if (status) {
            bench_raw_conn_wait(k, status);
            return;
        }
        if (err) {
            bench_raw_conn_fail(k, mysql_stmt_error(st));
            return;
        }
        bench_raw_conn_executed(k);
        return;
    }
    if (k->phase == BENCH_RAW_QUERY) {
        const char *sql = k->stmt.q.sql;
        status = status ? mysql_real_query_cont(&err, k->m, status)
                        : mysql_real_query_start(&err, k->m, sql, (unsigned long)strlen(sql));
        if (status) {
            bench_raw_conn_wait(k, status);
            return;
        }
        if (err) {
            bench_raw_conn_fail(k, mysql_error(k->m));
            return;
        }
        k->phase = BENCH_RAW_STORE;
        status = 0;
    }
    if (k->phase == BENCH_RAW_STORE) {
        status = status ? mysql_store_result_cont(&res, k->m, status)
                        : mysql_store_result_start(&res, k->m);
        if (status) {
            bench_raw_conn_wait(k, status);
            return;
        }
        bench_raw_conn_stored(k, res);
    }
}

static void bench_raw_conn_io(struct ev_loop *loop, ev_io *w, int revents)
{
    bench_raw_conn *k = w->data;
    int status = 0;
    (void)loop;
    if (revents & EV_READ)
        status |= MYSQL_WAIT_READ;
    if (revents & EV_WRITE)
        status |= MYSQL_WAIT_WRITE;
    bench_raw_conn_step(k, status);
}

static void bench_raw_conn_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    bench_raw_conn_step(w->data, MYSQL_WAIT_TIMEOUT);
}

/* Prepares op's statement on k's non-blocking connection with
 * mysql_stmt_prepare_start/_cont, waiting with poll() between steps: the
 * setup is not timed, so it may block. Returns 0, or -1 after printing
 * why. */
static int bench_raw_prepare(bench_raw_conn *k, int op)
{
    const char *sql = op == BENCH_OP_POINT ? BENCH_SQL_POINT : BENCH_SQL_INSERT;
    int err = 0;
    if (bench_stmt_init(&k->stmt, k->m) != 0)
        return -1;
    int status = mysql_stmt_prepare_start(&err, k->stmt.st, sql, (unsigned long)strlen(sql));
    while (status) {
        struct pollfd p = {.fd = mysql_get_socket(k->m), .events = 0, .revents = 0};
        int ms = status & MYSQL_WAIT_TIMEOUT ? (int)mysql_get_timeout_value_ms(k->m) : -1;
        if (status & MYSQL_WAIT_READ)
            p.events |= POLLIN;
        if (status & MYSQL_WAIT_WRITE)
            p.events |= POLLOUT;
        int n = poll(&p, 1, ms);
        if (n < 0 && errno == EINTR)
            continue;
        int got = 0;
        if (n == 0)
            got = MYSQL_WAIT_TIMEOUT;
        if (p.revents & (POLLIN | POLLERR | POLLHUP))
            got |= MYSQL_WAIT_READ;
        if (p.revents & POLLOUT)
            got |= MYSQL_WAIT_WRITE;
        status = mysql_stmt_prepare_cont(&err, k->stmt.st, got);
    }
    if (err) {
        fprintf(stderr, "volley-bench: raw: prepare %s: %s\n", sql, mysql_stmt_error(k->stmt.st));
        return -1;
    }
    return 0;
}

static void bench_raw_mysql_dispatch(bench_raw_mysql *rm)
{
    while (rm->nidle > 0 && rm->qlen > 0) {
        bench_raw_conn *k = &rm->conns[rm->idle[--rm->nidle]];
        k->i = rm->qi[rm->qhead];
        k->t0 = rm->qt[rm->qhead];
        rm->qhead = (rm->qhead + 1) % rm->qcap;
        rm->qlen--;
        bench_mysql_req(rm->x.e, rm->x.c->op, k->i, &k->stmt.q);
        if (k->stmt.st == NULL) {
            k->phase = BENCH_RAW_QUERY;
        } else if (bench_stmt_bind(&k->stmt) == 0) {
            k->phase = BENCH_RAW_EXEC;
        } else {
            bench_raw_conn_fail(k, mysql_stmt_error(k->stmt.st));
            continue;
        }
        bench_raw_conn_step(k, 0);
    }
}

static int bench_raw_mysql_run(const bench_env *e, const bench_case *c, bench_run *r)
{
    bench_raw_mysql rm;
    bench_raw *x = &rm.x;
    int rc = 0;
    memset(&rm, 0, sizeof rm);
    x->e = e;
    x->c = c;
    x->r = r;
    x->nconn = c->conns > 0 ? c->conns : 1;
    x->loop = ev_loop_new(EVFLAG_AUTO);
    rm.qcap = (size_t)(c->window > 0 ? c->window : 1) + 1;
    rm.conns = calloc((size_t)x->nconn, sizeof *rm.conns);
    rm.idle = calloc((size_t)x->nconn, sizeof *rm.idle);
    rm.qi = calloc(rm.qcap, sizeof *rm.qi);
    rm.qt = calloc(rm.qcap, sizeof *rm.qt);
    if (x->loop == NULL || !rm.conns || !rm.idle || !rm.qi || !rm.qt) {
        rc = -1;
        goto out;
    }
    /* Connecting is not part of the measure; it is done blocking. */
    for (int j = 0; j < x->nconn; j++) {
        bench_raw_conn *k = &rm.conns[j];
        k->rm = &rm;
        k->m = bench_mysql_connect(e, 1);
        if (k->m == NULL || (bench_mysql_prepared(c->op) && bench_raw_prepare(k, c->op) != 0)) {
            rc = -1;
            goto out;
        }
        ev_init(&k->io, bench_raw_conn_io);
        ev_timer_init(&k->tm, bench_raw_conn_timeout, 0., 0.);
        k->io.data = k->tm.data = k;
        rm.idle[rm.nidle++] = j;
    }
    bench_run_begin(r);
    uint64_t w = c->window > 0 ? (uint64_t)c->window : 1;
    for (uint64_t k = 0; k < w && x->next < c->requests; k++) {
        rm.qi[rm.qlen] = x->next++;
        rm.qt[rm.qlen] = bench_now_us();
        rm.qlen++;
    }
    bench_raw_mysql_dispatch(&rm);
    if (x->done < c->requests)
        ev_run(x->loop, 0);
    bench_run_end(r);
    bench_progress(c, c->requests);
out:
    for (int j = 0; rm.conns && j < x->nconn; j++) {
        if (rm.conns[j].m) {
            ev_io_stop(x->loop, &rm.conns[j].io);
            ev_timer_stop(x->loop, &rm.conns[j].tm);
            /* Outside the timed part: the statement's blocking close
             * (COM_STMT_CLOSE) is fine here. */
            if (rm.conns[j].stmt.st)
                mysql_stmt_close(rm.conns[j].stmt.st);
            mysql_close(rm.conns[j].m);
        }
    }
    free(rm.conns);
    free(rm.idle);
    free(rm.qi);
    free(rm.qt);
    if (x->loop)
        ev_loop_destroy(x->loop);
    return rc;
}

int bench_raw_run(const bench_env *e, const bench_case *c, bench_run *r)
{
    return c->backend == BENCH_REDIS ? bench_raw_redis_run(e, c, r) : bench_raw_mysql_run(e, c, r);
}
