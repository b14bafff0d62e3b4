/* SPDX-License-Identifier: BSD-3-Clause */
/* sync.c - the blocking baselines: `sync` (one connection per host, one
 * request after another) and `threads` (N threads, each with its own
 * blocking connections, taking request numbers from a shared counter). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis.h>

#include "bench.h"
#include "mysqlc.h"

void bench_rreply_hiredis(const redisReply *r, bench_rreply *out)
{
    memset(out, 0, sizeof *out);
    switch (r->type) {
    case REDIS_REPLY_STRING: out->type = BENCH_R_STRING; break;
    case REDIS_REPLY_ARRAY: out->type = BENCH_R_ARRAY; break;
    case REDIS_REPLY_INTEGER: out->type = BENCH_R_INTEGER; break;
    case REDIS_REPLY_NIL: out->type = BENCH_R_NIL; break;
    case REDIS_REPLY_STATUS: out->type = BENCH_R_STATUS; break;
    case REDIS_REPLY_ERROR: out->type = BENCH_R_ERROR; break;
    default: out->type = 0;
    }
    out->str = r->str;
    out->len = r->str ? (size_t)r->len : 0;
    out->integer = r->integer;
    out->count = r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
    for (size_t j = 0; j < out->count && j < 2 * BENCH_MAX_HASH_FIELDS; j++) {
        const redisReply *el = r->element[j];
        out->el[j] = el->type == REDIS_REPLY_STRING ? el->str : NULL;
        out->el_len[j] = el->type == REDIS_REPLY_STRING ? (size_t)el->len : 0;
    }
}

int bench_redis_port(const bench_env *e, const bench_case *c, int h)
{
    int k = h % e->nredis;
    if (c->tls)
        return e->redis_tls_port;
    return c->via_proxy ? e->proxy_ports[k] : e->redis_ports[k];
}

/* One client's blocking connections: one per Redis host, or one MySQL
 * with the scenario's statement prepared on it once (point select and
 * insert; SELECT 1 and SLEEP are text queries). */
typedef struct bench_blocking {
    redisContext *rc[BENCH_MAX_HOSTS];
    MYSQL *m;
    bench_stmt stmt; /* stmt.st is NULL for a text query */
    int hosts;
    char *store;
} bench_blocking;

static void bench_blocking_close(bench_blocking *b)
{
    for (int h = 0; h < b->hosts; h++)
        if (b->rc[h])
            redisFree(b->rc[h]);
    bench_stmt_close(&b->stmt);
    if (b->m)
        mysql_close(b->m);
    free(b->store);
    memset(b, 0, sizeof *b);
}

static int bench_blocking_open(const bench_env *e, const bench_case *c, bench_blocking *b)
{
    memset(b, 0, sizeof *b);
    if (c->backend == BENCH_MYSQL) {
        b->m = bench_mysql_connect(e, 0);
        if (b->m == NULL)
            return -1;
        if (bench_mysql_prepared(c->op) && bench_stmt_open(&b->stmt, b->m, c->op) != 0) {
            bench_blocking_close(b);
            return -1;
        }
        return 0;
    }
    b->hosts = c->hosts;
    b->store = malloc(bench_redis_store_size(e));
    if (b->store == NULL)
        return -1;
    for (int h = 0; h < c->hosts; h++) {
        int port = bench_redis_port(e, c, h);
        /* The proxy and the TLS server listen on loopback. */
        const char *host = c->via_proxy || c->tls ? "127.0.0.1" : e->redis_host;
        b->rc[h] = redisConnect(host, port);
        if (b->rc[h] == NULL || b->rc[h]->err) {
            fprintf(stderr, "volley-bench: connect %s:%d: %s\n", host, port,
                    b->rc[h] ? b->rc[h]->errstr : "out of memory");
            bench_blocking_close(b);
            return -1;
        }
    }
    return 0;
}

/* Runs request i on b and checks its reply. Returns 0 or -1. */
static int bench_blocking_do(const bench_env *e, const bench_case *c, bench_blocking *b,
                             uint64_t i, const char *mode)
{
    if (c->backend == BENCH_REDIS) {
        const char *argv[BENCH_MAX_ARGS];
        size_t lens[BENCH_MAX_ARGS];
        int argc = bench_redis_argv(e, c->op, i, argv, lens, b->store);
        redisContext *rc = b->rc[i % (uint64_t)b->hosts];
        redisReply *r = redisCommandArgv(rc, argc, argv, lens);
        if (r == NULL) {
            bench_fail(mode, i, "redis", rc->errstr);
            return -1;
        }
        bench_rreply rr;
        bench_rreply_hiredis(r, &rr);
        int ok = bench_redis_check(e, c->op, i, &rr, mode);
        freeReplyObject(r);
        return ok;
    }
    bench_mreply rep;
    if (b->stmt.st) {
        /* Binary protocol: the values travel bound, never in the SQL. */
        MYSQL_STMT *st = b->stmt.st;
        bench_mysql_req(e, c->op, i, &b->stmt.q);
        if (bench_stmt_bind(&b->stmt) != 0 || mysql_stmt_execute(st) != 0 ||
            (mysql_stmt_field_count(st) > 0 && mysql_stmt_store_result(st) != 0) ||
            bench_stmt_read(&b->stmt, &rep) != 0) {
            bench_fail(mode, i, "mysql", mysql_stmt_error(st));
            return -1;
        }
        return bench_mysql_check(e, c->op, i, &rep, mode);
    }
    bench_mreq q;
    bench_mysql_req(e, c->op, i, &q);
    if (mysql_real_query(b->m, q.sql, (unsigned long)strlen(q.sql)) != 0) {
        bench_fail(mode, i, "mysql", mysql_error(b->m));
        return -1;
    }
    MYSQL_RES *res = mysql_store_result(b->m);
    if (res == NULL && mysql_field_count(b->m) != 0) {
        bench_fail(mode, i, "mysql", mysql_error(b->m));
        return -1;
    }
    bench_text_reply(b->m, res, &rep);
    int ok = bench_mysql_check(e, c->op, i, &rep, mode);
    if (res)
        mysql_free_result(res);
    return ok;
}

int bench_sync_run(const bench_env *e, const bench_case *c, bench_run *r)
{
    bench_blocking b;
    if (bench_blocking_open(e, c, &b) != 0)
        return -1;
    bench_run_begin(r);
    for (uint64_t i = 0; i < c->requests; i++) {
        uint64_t t0 = c->rate > 0 ? bench_pace(c, r->t0, i) : bench_now_us();
        if (bench_blocking_do(e, c, &b, i, "sync") != 0)
            r->errors++;
        bench_hist_add(&r->hist, bench_now_us() - t0);
        r->done++;
        if (r->done == 1000000)
            r->rss_1m_kb = bench_rss_kb();
        if ((i & 255) == 0)
            bench_progress(c, i);
    }
    bench_run_end(r);
    bench_progress(c, c->requests);
    bench_blocking_close(&b);
    return 0;
}

typedef struct bench_thread {
    pthread_t tid;
    const bench_env *e;
    const bench_case *c;
    bench_blocking b;
    bench_hist hist;
    uint64_t errors;
    int index;
    atomic_uint_fast64_t *next;
    atomic_uint_fast64_t *done;
    pthread_barrier_t *start;
    uint64_t t0; /* the run's start, for the open loop's pacing */
} bench_thread;

static void *bench_thread_main(void *arg)
{
    bench_thread *t = arg;
    const bench_case *c = t->c;
    /* All threads start together, so none runs alone for a while. */
    pthread_barrier_wait(t->start);
    for (;;) {
        uint64_t i = atomic_fetch_add(t->next, 1);
        if (i >= c->requests)
            break;
        uint64_t t0 = c->rate > 0 ? bench_pace(c, t->t0, i) : bench_now_us();
        if (bench_blocking_do(t->e, c, &t->b, i, "threads") != 0)
            t->errors++;
        bench_hist_add(&t->hist, bench_now_us() - t0);
        uint64_t d = atomic_fetch_add(t->done, 1) + 1;
        if (t->index == 0 && (d & 255) == 0)
            bench_progress(c, d);
    }
    return NULL;
}

int bench_threads_run(const bench_env *e, const bench_case *c, bench_run *r)
{
    int n = c->threads > 0 ? c->threads : 1;
    bench_thread *ts = calloc((size_t)n, sizeof *ts);
    atomic_uint_fast64_t next = 0, done = 0;
    pthread_barrier_t start;
    int rc = 0, started = 0;
    if (ts == NULL)
        return -1;
    for (int k = 0; k < n; k++) {
        if (bench_blocking_open(e, c, &ts[k].b) != 0) {
            rc = -1;
            n = k;
            break;
        }
    }
    /* Connections are open: the timed part starts with the threads. */
    if (rc == 0 && pthread_barrier_init(&start, NULL, (unsigned)n) == 0) {
        bench_run_begin(r);
        for (int k = 0; k < n; k++) {
            ts[k].e = e;
            ts[k].c = c;
            ts[k].index = k;
            ts[k].next = &next;
            ts[k].done = &done;
            ts[k].start = &start;
            ts[k].t0 = r->t0;
            bench_hist_init(&ts[k].hist);
            if (pthread_create(&ts[k].tid, NULL, bench_thread_main, &ts[k]) != 0) {
                fprintf(stderr, "volley-bench: cannot start thread %d\n", k);
                abort(); /* the barrier would wait forever */
            }
            started++;
        }
        for (int k = 0; k < started; k++)
            pthread_join(ts[k].tid, NULL);
        bench_run_end(r);
        for (int k = 0; k < started; k++) {
            bench_hist_merge(&r->hist, &ts[k].hist);
            r->errors += ts[k].errors;
        }
        pthread_barrier_destroy(&start);
        r->done = atomic_load(&done);
        bench_progress(c, c->requests);
    } else {
        rc = -1;
    }
    for (int k = 0; k < n; k++)
        bench_blocking_close(&ts[k].b);
    free(ts);
    return rc;
}
