/* SPDX-License-Identifier: BSD-3-Clause */
/* async.c - the `async` mode: volley futures on one loop, through volley's
 * public API only. `window` requests are kept in flight: each completion
 * callback checks its reply and issues the next request, and a promise
 * resolved by the last completion ends vl_loop_run_until.
 *
 * Redis: one vl_redis_pool per host (max_size = min_idle = connections per
 * host, so every connection is open before the clock starts) or, with one
 * connection per host or --no-pool, plain vl_redis connections: the window
 * starts spread evenly over them and each reply's connection gets the next
 * request, as in raw (the pools choose the connection themselves). MySQL: one vl_mysql_pool of
 * `connections`; requests past the pool size wait in the pool's FIFO queue,
 * their latency counting from the call. With --no-pool, plain vl_mysql
 * connections, each given a statement only when idle. Point selects and
 * inserts bind their values (vl_mysql_pool_execute / vl_mysql_execute);
 * SELECT 1 and SLEEP are text queries. mysql-bulk inserts the insert's rows
 * either row by row as above or `chunk` rows per call
 * (vl_mysql_pool_execute_bulk / vl_mysql_execute_bulk); its requests count
 * rows, so its ops/s are rows/s.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <volley.h>
#include <volley/mysql.h>

#include "bench.h"

int bench_async_no_pool;

typedef struct bench_async bench_async;

typedef struct bench_slot {
    bench_async *x;
    uint64_t i, t0;
    int conn; /* without pool: the connection it runs on */
} bench_slot;

/* The bench's own bookkeeping per request in flight, which the memory
 * figure leaves out of volley's share (see bench_bytes_in_flight). */
const size_t bench_slot_bytes = sizeof(bench_slot);

struct bench_async {
    vl_loop *loop;
    const bench_env *e;
    const bench_case *c;
    bench_run *r;
    uint64_t next, done;
    vl_promise *finish;
    char *store;
    /* Redis */
    vl_redis **rc;
    vl_redis_pool **rp;
    int nrc, nrp;
    /* MySQL */
    vl_mysql_pool *mp;
    vl_mysql **mc;
    int nmc;
    int *idle;
    int nidle;
    bench_slot **queue; /* issued, waiting for an idle connection */
    size_t qcap, qhead, qlen;
    /* mysql-bulk: one call's parameters and the text of its values
     * (volley copies them, so one set serves every call) */
    vl_mysql_param *bulk;
    char *bulk_v;
    /* Open loop (c->rate): slots waiting for their request's send time. */
    bench_slot **free_slots;
    size_t nfree;
};

/* Percent-encodes s for a part of a URL: a user or a password, or (with
 * `path`) a file name in a query value, whose slashes stay. */
static void bench_url_part(char *out, size_t cap, const char *s, int path)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; s && *s && o + 4 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~' || (path && ch == '/')) {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = '\0';
}

void bench_redis_url(const bench_env *e, int tls, int port, char *url, size_t cap)
{
    char file[3 * sizeof e->tls_cacert];
    if (!tls) {
        snprintf(url, cap, "redis://%s:%d", e->redis_host, port);
        return;
    }
    bench_url_part(file, sizeof file, e->tls_cacert, 1);
    snprintf(url, cap, "rediss://127.0.0.1:%d?cacert=%s", port, file);
}

static void bench_mysql_url(const bench_env *e, char *url, size_t cap)
{
    char user[256], pass[256];
    bench_url_part(user, sizeof user, e->mysql_user, 0);
    bench_url_part(pass, sizeof pass, e->mysql_password ? e->mysql_password : "", 0);
    if (e->mysql_sock)
        snprintf(url, cap, "mysql://%s:%s@localhost/%s?socket=%s", user, pass, e->mysql_db,
                 e->mysql_sock);
    else
        snprintf(url, cap, "mysql://%s:%s@%s:%d/%s", user, pass, e->mysql_host, e->mysql_port,
                 e->mysql_db);
}

/* Counts a finished request (`n` rows of a bulk call) and ends the run
 * after the last one. */
static void bench_async_count(bench_async *x, bench_slot *s, uint64_t n)
{
    uint64_t before = x->done;
    bench_hist_add(&x->r->hist, bench_now_us() - s->t0);
    x->done += n;
    x->r->done = x->done;
    if (before < 1000000 && x->done >= 1000000)
        x->r->rss_1m_kb = bench_rss_kb();
    if ((x->done & ~(uint64_t)1023) != (before & ~(uint64_t)1023))
        bench_progress(x->c, x->done);
    if (x->done == x->c->requests && x->finish) {
        vl_promise_resolve(x->finish, NULL, NULL);
        x->finish = NULL;
    }
}

/* ---- Redis ---- */

int bench_redis_check_future(const bench_env *e, int op, uint64_t i, vl_future *f,
                             const char *mode)
{
    const vl_redis_reply *rep = vl_future_redis_reply(f);
    bench_rreply br;
    if (rep == NULL) {
        bench_fail(mode, i, vl_strerror(vl_future_status(f)), vl_future_error(f));
        return -1;
    }
    memset(&br, 0, sizeof br);
    switch (vl_redis_reply_type(rep)) {
    case VL_REDIS_STRING: br.type = BENCH_R_STRING; break;
    case VL_REDIS_ARRAY: br.type = BENCH_R_ARRAY; break;
    case VL_REDIS_INTEGER: br.type = BENCH_R_INTEGER; break;
    case VL_REDIS_NIL: br.type = BENCH_R_NIL; break;
    case VL_REDIS_STATUS: br.type = BENCH_R_STATUS; break;
    case VL_REDIS_ERROR: br.type = BENCH_R_ERROR; break;
    default: br.type = 0;
    }
    br.str = vl_redis_reply_str(rep, &br.len);
    br.integer = 0; /* stays 0 for a reply that is not an integer */
    (void)vl_redis_reply_integer(rep, &br.integer);
    br.count = vl_redis_reply_count(rep);
    for (size_t j = 0; j < br.count && j < 2 * BENCH_MAX_HASH_FIELDS; j++)
        br.el[j] = vl_redis_reply_str(vl_redis_reply_element(rep, j), &br.el_len[j]);
    return bench_redis_check(e, op, i, &br, mode);
}

static void bench_async_redis_issue(bench_slot *s);

static void bench_async_mysql_issue(bench_async *x, bench_slot *s);

/* Sends the next request on slot s. */
static void bench_async_send_next(bench_async *x, bench_slot *s)
{
    if (x->c->backend == BENCH_REDIS)
        bench_async_redis_issue(s);
    else
        bench_async_mysql_issue(x, s);
}

/* When the next request is to be sent: now (closed loop), or its intended
 * time (open loop). */
static uint64_t bench_async_t0(const bench_async *x)
{
    return x->c->rate > 0 ? bench_intended_us(x->c, x->r->t0, x->next) : bench_now_us();
}

/* Slot s is free: closed loop, it sends the next request at once; open
 * loop, only when that request is due, and otherwise it waits for the
 * tick (bench_async_tick_cb). */
static void bench_async_reuse(bench_async *x, bench_slot *s)
{
    if (x->next >= x->c->requests)
        return;
    if (x->c->rate <= 0 || bench_async_t0(x) <= bench_now_us())
        bench_async_send_next(x, s);
    else
        x->free_slots[x->nfree++] = s;
}

static void bench_async_mysql_dispatch(bench_async *x);
static void bench_async_tick_arm(bench_async *x);

/* Every millisecond of an open-loop run: every request now due goes out on
 * a free slot; those that find none wait for a reply to free one, their
 * latency still counting from their intended time. */
static void bench_async_tick_cb(vl_future *f, void *ud)
{
    bench_async *x = ud;
    if (f != NULL && vl_future_status(f) != VL_OK)
        return; /* the loop is being freed */
    uint64_t now = bench_now_us();
    while (x->nfree > 0 && x->next < x->c->requests && bench_async_t0(x) <= now)
        bench_async_send_next(x, x->free_slots[--x->nfree]);
    if (x->mc)
        bench_async_mysql_dispatch(x);
    if (x->next < x->c->requests)
        bench_async_tick_arm(x);
}

static void bench_async_tick_arm(bench_async *x)
{
    vl_future *f = vl_loop_sleep(x->loop, 1);
    if (f == NULL || vl_future_then(f, bench_async_tick_cb, x) != VL_OK)
        bench_oom("async");
}

static void bench_async_redis_cb(vl_future *f, void *ud)
{
    bench_slot *s = ud;
    bench_async *x = s->x;
    if (bench_redis_check_future(x->e, x->c->op, s->i, f, "async") != 0)
        x->r->errors++;
    bench_async_count(x, s, 1);
    bench_async_reuse(x, s);
}

static void bench_async_redis_issue(bench_slot *s)
{
    bench_async *x = s->x;
    const char *argv[BENCH_MAX_ARGS];
    size_t lens[BENCH_MAX_ARGS];
    s->t0 = bench_async_t0(x);
    s->i = x->next++;
    int argc = bench_redis_argv(x->e, x->c->op, s->i, argv, lens, x->store);
    vl_future *f;
    if (x->rp)
        f = vl_redis_pool_command_argv(x->rp[s->i % (uint64_t)x->nrp], argc, argv, lens);
    else
        f = vl_redis_command_argv(x->rc[s->conn], argc, argv, lens);
    if (f == NULL || vl_future_then(f, bench_async_redis_cb, s) != VL_OK)
        bench_oom("async");
}

/* Waits until every connection answers a PING, so that connecting is not
 * part of the measure. */
static int bench_async_redis_warm(bench_async *x)
{
    int n = x->rp ? x->nrp : x->nrc;
    vl_future **fs = calloc((size_t)n, sizeof *fs);
    if (fs == NULL)
        return -1;
    if (x->rp) {
        /* A pool opens min_idle connections at once; wait until all are up,
         * within 10 s. */
        for (int h = 0; h < x->nrp; h++)
            fs[h] = vl_future_timeout(vl_redis_pool_ready(x->rp[h]), 10000);
        vl_future *up = vl_future_all(x->loop, fs, (size_t)x->nrp);
        int st = up != NULL ? vl_loop_run_until(x->loop, up) : VL_ENOMEM;
        if (st != VL_OK) {
            fprintf(stderr, "volley-bench: async: the pools did not connect: %s\n",
                    up != NULL ? vl_future_error(up) : "out of memory");
            vl_future_free(up);
            free(fs);
            return -1;
        }
        vl_future_free(up);
    }
    for (int k = 0; k < n; k++)
        fs[k] = x->rp ? vl_redis_pool_command(x->rp[k], "PING") : vl_redis_command(x->rc[k], "PING");
    vl_future *all = vl_future_all(x->loop, fs, (size_t)n);
    free(fs);
    if (all == NULL)
        return -1;
    int st = vl_loop_run_until(x->loop, all);
    if (st != VL_OK)
        fprintf(stderr, "volley-bench: async: %s\n", vl_future_error(all));
    vl_future_free(all);
    return st == VL_OK ? 0 : -1;
}

static int bench_async_redis_open(bench_async *x)
{
    const bench_case *c = x->c;
    char url[2048];
    int per_host = c->conns / c->hosts;
    if (per_host < 1)
        per_host = 1;
    if (per_host > 1 && !bench_async_no_pool && !c->no_pool) {
        x->nrp = c->hosts;
        x->rp = calloc((size_t)x->nrp, sizeof *x->rp);
        if (x->rp == NULL)
            return -1;
        for (int h = 0; h < c->hosts; h++) {
            vl_redis_pool_options o;
            vl_redis_pool_options_init(&o);
            o.max_size = (size_t)per_host;
            o.min_idle = (size_t)per_host;
            bench_redis_url(x->e, c->tls, bench_redis_port(x->e, c, h), url, sizeof url);
            x->rp[h] = vl_redis_pool_new(x->loop, url, &o);
            if (x->rp[h] == NULL)
                return -1;
        }
        return 0;
    }
    x->nrc = c->conns > 0 ? c->conns : 1;
    x->rc = calloc((size_t)x->nrc, sizeof *x->rc);
    if (x->rc == NULL)
        return -1;
    for (int j = 0; j < x->nrc; j++) {
        bench_redis_url(x->e, c->tls, bench_redis_port(x->e, c, j % c->hosts), url, sizeof url);
        x->rc[j] = vl_redis_new(x->loop, url, NULL);
        if (x->rc[j] == NULL)
            return -1;
    }
    return 0;
}

int bench_fill(vl_loop *loop, const bench_env *e, bench_send_fn send, void *h, char *why,
               size_t cap)
{
    enum { BATCH = 1000 };
    char *store = malloc(bench_redis_store_size(e));
    vl_future **fs = calloc(BATCH, sizeof *fs);
    int rc = -1;
    snprintf(why, cap, "out of memory");
    if (store == NULL || fs == NULL)
        goto out;
    /* The SET of request k writes key k with the value a GET of it must
     * return; a batch at a time, every reply checked by vl_future_all (a
     * server error fails it). volley copies the arguments, so one store
     * serves every command. */
    for (size_t k0 = 0; k0 < e->keys; k0 += BATCH) {
        size_t n = e->keys - k0 < BATCH ? e->keys - k0 : BATCH;
        for (size_t j = 0; j < n; j++) {
            const char *argv[BENCH_MAX_ARGS];
            size_t lens[BENCH_MAX_ARGS];
            int argc = bench_redis_argv(e, BENCH_OP_SET, k0 + j, argv, lens, store);
            fs[j] = send(h, argc, argv, lens);
            if (fs[j] == NULL) {
                while (j-- > 0)
                    vl_future_free(fs[j]);
                goto out;
            }
        }
        vl_future *all = vl_future_all(loop, fs, n);
        int st = all ? vl_loop_run_until(loop, all) : VL_ENOMEM;
        if (st != VL_OK) {
            snprintf(why, cap, "%s", all ? vl_future_error(all) : "out of memory");
            vl_future_free(all);
            goto out;
        }
        vl_future_free(all);
    }
    rc = 0;
out:
    free(store);
    free(fs);
    return rc;
}

static vl_future *bench_async_send(void *h, int argc, const char **argv, const size_t *lens)
{
    return vl_redis_command_argv(h, argc, argv, lens);
}

int bench_async_redis_fill(const bench_env *e, const char *url, char *why, size_t cap)
{
    vl_loop *loop = vl_loop_new();
    vl_redis *c = loop ? vl_redis_new(loop, url, NULL) : NULL;
    int rc = -1;
    snprintf(why, cap, "out of memory");
    if (c == NULL)
        goto out;
    vl_future *up = vl_redis_ready(c);
    int st = up ? vl_loop_run_until(loop, up) : VL_ENOMEM;
    if (st != VL_OK) {
        snprintf(why, cap, "%s", up ? vl_future_error(up) : "out of memory");
        vl_future_free(up);
        rc = st == VL_EUNSUPPORTED ? 1 : -1;
        goto out;
    }
    vl_future_free(up);
    rc = bench_fill(loop, e, bench_async_send, c, why, cap);
out:
    vl_redis_free(c);
    if (loop)
        vl_loop_free(loop);
    return rc;
}

/* ---- MySQL ---- */

/* Rows of the call that starts at row i: a chunk, or what is left. */
static uint64_t bench_async_rows(const bench_async *x, uint64_t i)
{
    uint64_t chunk = x->c->op == BENCH_OP_BULK && x->c->chunk > 1 ? (uint64_t)x->c->chunk : 1;
    return x->c->requests - i < chunk ? x->c->requests - i : chunk;
}

static void bench_async_mysql_cb(vl_future *f, void *ud)
{
    bench_slot *s = ud;
    bench_async *x = s->x;
    if (vl_future_status(f) != VL_OK) {
        bench_fail("async", s->i, vl_strerror(vl_future_status(f)), vl_future_error(f));
        x->r->errors++;
    } else {
        const vl_mysql_result *res = vl_future_mysql_result(f);
        bench_mreply rep;
        memset(&rep, 0, sizeof rep);
        if (res && vl_mysql_result_has_rows(res)) {
            rep.rows = vl_mysql_result_rows(res);
            rep.cols = vl_mysql_result_columns(res);
        }
        if (res)
            rep.affected = vl_mysql_result_affected_rows(res);
        if (rep.rows > 0 && rep.cols > 0)
            rep.has_c0 = vl_mysql_result_int64(res, 0, 0, &rep.c0) == VL_OK;
        if (rep.rows > 0 && rep.cols > 1)
            rep.c1 = vl_mysql_result_value(res, 0, 1, &rep.c1_len);
        if (x->c->op == BENCH_OP_BULK) {
            /* Row by row or in bulk, each row is one affected row. */
            uint64_t want = bench_async_rows(x, s->i);
            if (rep.rows != 0 || rep.cols != 0 || rep.affected != want) {
                fprintf(stderr, "volley-bench: async: insert of rows %" PRIu64 "..: %" PRIu64
                                " affected, %" PRIu64 " expected\n", s->i, rep.affected, want);
                x->r->errors++;
            }
        } else if (bench_mysql_check(x->e, x->c->op, s->i, &rep, "async") != 0) {
            x->r->errors++;
        }
    }
    if (x->mc)
        x->idle[x->nidle++] = s->conn;
    bench_async_count(x, s, bench_async_rows(x, s->i));
    bench_async_reuse(x, s);
    if (x->mc)
        bench_async_mysql_dispatch(x);
}

/* One bulk call: rows s->i.. of the insert, their values bound, 2 per row. */
static vl_future *bench_async_bulk_send(bench_async *x, bench_slot *s)
{
    uint64_t n = bench_async_rows(x, s->i);
    for (uint64_t k = 0; k < n; k++) {
        bench_mreq q;
        char *v = x->bulk_v + k * sizeof q.v;
        bench_mysql_req(x->e, BENCH_OP_INSERT, s->i + k, &q);
        memcpy(v, q.v, q.v_len);
        x->bulk[2 * k] = vl_mysql_p_int64(q.id);
        x->bulk[2 * k + 1].type = VL_MYSQL_P_STRING;
        x->bulk[2 * k + 1].v.str.ptr = v;
        x->bulk[2 * k + 1].v.str.len = q.v_len;
    }
    return x->mp ? vl_mysql_pool_execute_bulk(x->mp, BENCH_SQL_INSERT, x->bulk, 2, (size_t)n)
                 : vl_mysql_execute_bulk(x->mc[s->conn], BENCH_SQL_INSERT, x->bulk, 2,
                                         (size_t)n);
}

static void bench_async_mysql_send(bench_async *x, bench_slot *s)
{
    bench_mreq q;
    vl_mysql_param ps[2];
    vl_future *f;
    /* Row by row, mysql-bulk's rows are the insert's. */
    int op = x->c->op == BENCH_OP_BULK ? BENCH_OP_INSERT : x->c->op;
    bench_mysql_req(x->e, op, s->i, &q);
    if (x->bulk) {
        f = bench_async_bulk_send(x, s);
    } else if (q.nparams > 0) {
        /* Bound values over the binary protocol; volley prepares the
         * statement once per connection and reuses it from its cache. */
        ps[0] = vl_mysql_p_int64(q.id);
        ps[1] = vl_mysql_p_str(q.v);
        size_t n = (size_t)q.nparams;
        f = x->mp ? vl_mysql_pool_execute(x->mp, q.sql, ps, n)
                  : vl_mysql_execute(x->mc[s->conn], q.sql, ps, n);
    } else {
        f = x->mp ? vl_mysql_pool_query(x->mp, q.sql) : vl_mysql_query(x->mc[s->conn], q.sql);
    }
    if (f == NULL || vl_future_then(f, bench_async_mysql_cb, s) != VL_OK)
        bench_oom("async");
}

static void bench_async_mysql_dispatch(bench_async *x)
{
    while (x->nidle > 0 && x->qlen > 0) {
        bench_slot *s = x->queue[x->qhead];
        x->qhead = (x->qhead + 1) % x->qcap;
        x->qlen--;
        s->conn = x->idle[--x->nidle];
        bench_async_mysql_send(x, s);
    }
}

static void bench_async_mysql_issue(bench_async *x, bench_slot *s)
{
    s->t0 = bench_async_t0(x);
    s->i = x->next;
    x->next += bench_async_rows(x, s->i);
    if (x->mp) {
        bench_async_mysql_send(x, s);
        return;
    }
    x->queue[(x->qhead + x->qlen) % x->qcap] = s;
    x->qlen++;
}

static int bench_async_mysql_open(bench_async *x)
{
    const bench_case *c = x->c;
    char url[2048];
    int n = c->conns > 0 ? c->conns : 1;
    bench_mysql_url(x->e, url, sizeof url);
    if (c->op == BENCH_OP_BULK && c->chunk > 1) {
        x->bulk = calloc(2 * (size_t)c->chunk, sizeof *x->bulk);
        x->bulk_v = malloc((size_t)c->chunk * sizeof(((bench_mreq *)0)->v));
        if (x->bulk == NULL || x->bulk_v == NULL)
            return -1;
    }
    if (!bench_async_no_pool) {
        vl_mysql_pool_options o;
        vl_mysql_pool_options_init(&o);
        o.max_size = (size_t)n;
        o.min_idle = (size_t)n;
        o.max_waiters = SIZE_MAX; /* the window bounds the queue */
        x->mp = vl_mysql_pool_new(x->loop, url, &o);
        if (x->mp == NULL)
            return -1;
        /* Warm up: n statements at once make the pool open n connections. */
        vl_future **fs = calloc((size_t)n, sizeof *fs);
        if (fs == NULL)
            return -1;
        for (int k = 0; k < n; k++)
            fs[k] = vl_mysql_pool_query(x->mp, "SELECT 1");
        vl_future *all = vl_future_all(x->loop, fs, (size_t)n);
        free(fs);
        int st = all ? vl_loop_run_until(x->loop, all) : VL_ENOMEM;
        if (st != VL_OK)
            fprintf(stderr, "volley-bench: async: mysql pool: %s\n",
                    all ? vl_future_error(all) : "out of memory");
        vl_future_free(all);
        return st == VL_OK ? 0 : -1;
    }
    x->nmc = n;
    x->mc = calloc((size_t)n, sizeof *x->mc);
    x->idle = calloc((size_t)n, sizeof *x->idle);
    x->qcap = (size_t)(c->window > 0 ? c->window : 1) + 1;
    x->queue = calloc(x->qcap, sizeof *x->queue);
    vl_future **fs = calloc((size_t)n, sizeof *fs);
    if (!x->mc || !x->idle || !x->queue || !fs) {
        free(fs);
        return -1;
    }
    for (int k = 0; k < n; k++) {
        x->mc[k] = vl_mysql_new(x->loop, url, NULL);
        if (x->mc[k] == NULL) {
            free(fs);
            return -1;
        }
        fs[k] = vl_mysql_ready(x->mc[k]);
        x->idle[x->nidle++] = k;
    }
    vl_future *all = vl_future_all(x->loop, fs, (size_t)n);
    free(fs);
    int st = all ? vl_loop_run_until(x->loop, all) : VL_ENOMEM;
    if (st != VL_OK)
        fprintf(stderr, "volley-bench: async: mysql connect: %s\n",
                all ? vl_future_error(all) : "out of memory");
    vl_future_free(all);
    return st == VL_OK ? 0 : -1;
}

/* Puts the w slots to work: closed loop, each sends its first request;
 * open loop, each waits for the tick, and the first tick runs now (the
 * first request is due at once). */
static void bench_async_start(bench_async *x, bench_slot *slots, uint64_t w)
{
    for (uint64_t k = 0; k < w; k++) {
        bench_slot *s = &slots[k];
        s->x = x;
        /* Plain Redis connections: the window spread evenly, each slot
         * then staying on its connection, as in raw. */
        s->conn = x->nrc > 0 ? (int)(k % (uint64_t)x->nrc) : 0;
        if (x->c->rate > 0)
            x->free_slots[x->nfree++] = &slots[w - 1 - k];
        else if (x->next < x->c->requests)
            bench_async_send_next(x, s);
    }
    if (x->c->rate > 0)
        bench_async_tick_cb(NULL, x);
    if (x->c->backend == BENCH_MYSQL && x->mc)
        bench_async_mysql_dispatch(x);
}

int bench_async_run(const bench_env *e, const bench_case *c, bench_run *r)
{
    bench_async x;
    bench_slot *slots = NULL;
    int rc = -1;
    if (c->cluster)
        return bench_cluster_run(e, c, r);
    if (c->loop_group)
        return bench_group_run(e, c, r);
    memset(&x, 0, sizeof x);
    x.e = e;
    x.c = c;
    x.r = r;
    x.loop = vl_loop_new();
    x.store = malloc(bench_redis_store_size(e));
    if (x.loop == NULL || x.store == NULL)
        goto out;
    if (c->backend == BENCH_REDIS) {
        if (bench_async_redis_open(&x) != 0 || bench_async_redis_warm(&x) != 0)
            goto out;
    } else if (bench_async_mysql_open(&x) != 0) {
        goto out;
    }
    x.finish = vl_promise_new(x.loop);
    vl_future *finished = x.finish ? vl_promise_future(x.finish) : NULL;
    if (finished == NULL)
        goto out;
    bench_run_begin(r);
    uint64_t w = c->window > 0 ? (uint64_t)c->window : 1;
    /* The window's bookkeeping in one array, as raw keeps its own: each
     * request in flight costs the bench sizeof(bench_slot) bytes, which
     * the memory figure subtracts (BENCH_SLOT_BYTES). */
    slots = calloc((size_t)w, sizeof *slots);
    x.free_slots = c->rate > 0 ? calloc((size_t)w, sizeof *x.free_slots) : NULL;
    if (slots == NULL || (c->rate > 0 && x.free_slots == NULL))
        goto out;
    bench_async_start(&x, slots, w);
    vl_loop_run_until(x.loop, finished);
    bench_run_end(r);
    bench_progress(c, c->requests);
    vl_future_free(finished);
    rc = 0;
out:
    if (x.finish)
        vl_promise_free(x.finish);
    for (int k = 0; x.rp && k < x.nrp; k++)
        vl_redis_pool_free(x.rp[k]);
    for (int k = 0; x.rc && k < x.nrc; k++)
        vl_redis_free(x.rc[k]);
    if (x.mp)
        vl_mysql_pool_free(x.mp);
    for (int k = 0; x.mc && k < x.nmc; k++)
        vl_mysql_free(x.mc[k]);
    if (x.loop)
        vl_loop_free(x.loop);
    free(x.rp);
    free(x.rc);
    free(x.mc);
    free(x.idle);
    free(x.queue);
    free(x.bulk);
    free(x.bulk_v);
    free(x.store);
    free(x.free_slots);
    free(slots);
    return rc;
}
