/* SPDX-License-Identifier: BSD-3-Clause */
/* raw.c - the async load written without volley, as tightly as a good
 * hand-written client would, so that the gap between `async` and `raw` is
 * the cost of volley's layer (futures, queues, checks).
 *
 * Redis: a non-blocking TCP socket per connection, hiredis's reply reader
 * (redisReader: the RESP parser alone, no hiredis context) and libev. Each
 * command is formatted as RESP into its connection's output buffer; one
 * ev_prepare watcher flushes every connection that has something to send
 * with one send(MSG_NOSIGNAL) per connection per loop iteration (the rest,
 * if the socket is full, when it becomes writable); each readable event is
 * one recv() into a large buffer, fed to the reader, which then gives back
 * every complete reply. Request i goes to connection i % connections
 * (pipelined); replies come back in order on each connection.
 *
 * MySQL: Connector/C's non-blocking API on libev. Connection j talks to
 * the server, and each request goes to the next idle connection (one
 * statement at a time per connection, the rest wait in a FIFO queue, as
 * they do in a volley pool). Point selects and inserts use Connector/C's
 * non-blocking prepared statements: each connection prepares its
 * statement once before the clock starts, then each request binds its
 * values and runs mysql_stmt_execute_start/_cont and
 * mysql_stmt_store_result_start/_cont on the loop; the fetch reads the
 * stored rows without I/O. SELECT 1 and SLEEP stay text queries
 * (mysql_real_query_start/_cont).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>
#include <hiredis.h>
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
    int failed; /* Redis: a connection broke, the run ends */
    char *store;
} bench_raw;

/* ---- Redis ---- */

/* What one recv() may bring: with 1000 GETs in flight of small values the
 * replies of a whole window fit. */
#define BENCH_RAW_RBUF (64 * 1024)

typedef struct bench_raw_redis bench_raw_redis;

/* A request sent and not yet answered. */
typedef struct bench_raw_pending {
    uint64_t i, t0;
} bench_raw_pending;

/* One connection: its socket, its reply reader, the commands formatted and
 * not yet sent (out[out_off..out_len)), and its requests in flight, oldest
 * first, in a ring that grows when full. */
typedef struct bench_raw_rconn {
    ev_io rio, wio;
    int fd;
    int dirty; /* on the flush list */
    redisReader *rd;
    char *out;
    size_t out_off, out_len, out_cap;
    bench_raw_pending *pend;
    size_t pcap, phead, plen;
    bench_raw_redis *rr;
} bench_raw_rconn;

struct bench_raw_redis {
    bench_raw x;
    bench_raw_rconn *conns;
    bench_raw_rconn **flush; /* connections with output to send */
    int nflush;
    ev_prepare prep;
    char *rbuf;
};

/* Ends the run at the first transport or protocol failure: the requests
 * never answered count as errors (the driver adds them), so a broken
 * connection can neither hang the run nor pass for a good one. */
static void bench_raw_redis_abort(bench_raw_rconn *k, const char *what)
{
    bench_raw *x = &k->rr->x;
    uint64_t i = k->plen ? k->pend[k->phead].i : x->next;
    bench_fail("raw", i, "redis", what);
    x->r->errors++;
    x->failed = 1;
    ev_break(x->loop, EVBREAK_ALL);
}

/* Appends one command to k's output buffer as RESP ("*2\r\n$3\r\nGET\r\n
 * $...") and notes it as pending. */
static int bench_raw_redis_put(bench_raw_rconn *k, uint64_t i, int argc, const char **argv,
                               const size_t *lens)
{
    size_t need = 16;
    for (int a = 0; a < argc; a++)
        need += lens[a] + 26;
    if (k->out_len + need > k->out_cap) {
        size_t cap = k->out_cap ? k->out_cap : 4096;
        while (cap < k->out_len + need)
            cap *= 2;
        char *o = realloc(k->out, cap);
        if (o == NULL)
            return -1;
        k->out = o;
        k->out_cap = cap;
    }
    if (k->plen == k->pcap) {
        /* Unwrap the ring into a bigger one, oldest first. */
        size_t cap = k->pcap ? 2 * k->pcap : 64;
        bench_raw_pending *p = malloc(cap * sizeof *p);
        if (p == NULL)
            return -1;
        for (size_t j = 0; j < k->plen; j++)
            p[j] = k->pend[(k->phead + j) % k->pcap];
        free(k->pend);
        k->pend = p;
        k->pcap = cap;
        k->phead = 0;
    }
    char *o = k->out + k->out_len;
    *o++ = '*';
    o += bench_put_u(o, (size_t)argc);
    *o++ = '\r';
    *o++ = '\n';
    for (int a = 0; a < argc; a++) {
        *o++ = '$';
        o += bench_put_u(o, lens[a]);
        *o++ = '\r';
        *o++ = '\n';
        memcpy(o, argv[a], lens[a]);
        o += lens[a];
        *o++ = '\r';
        *o++ = '\n';
    }
    k->out_len = (size_t)(o - k->out);
    bench_raw_pending *q = &k->pend[(k->phead + k->plen) % k->pcap];
    q->i = i;
    q->t0 = bench_now_us();
    k->plen++;
    return 0;
}

/* Issues the next request on k. */
static void bench_raw_redis_issue(bench_raw_redis *rr, bench_raw_rconn *k)
{
    bench_raw *x = &rr->x;
    const char *argv[BENCH_MAX_ARGS];
    size_t lens[BENCH_MAX_ARGS];
    uint64_t i = x->next++;
    int argc = bench_redis_argv(x->e, x->c->op, i, argv, lens, x->store);
    if (bench_raw_redis_put(k, i, argc, argv, lens) != 0) {
        bench_raw_redis_abort(k, "out of memory");
        return;
    }
    if (!k->dirty) {
        k->dirty = 1;
        rr->flush[rr->nflush++] = k;
    }
}

/* One send() of what k has to say; what the socket did not take waits for
 * it to become writable. */
static void bench_raw_redis_send(bench_raw_rconn *k)
{
    struct ev_loop *loop = k->rr->x.loop;
    ssize_t n = send(k->fd, k->out + k->out_off, k->out_len - k->out_off, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        bench_raw_redis_abort(k, strerror(errno));
        return;
    }
    if (n > 0)
        k->out_off += (size_t)n;
    if (k->out_off == k->out_len) {
        k->out_off = k->out_len = 0;
        if (ev_is_active(&k->wio))
            ev_io_stop(loop, &k->wio);
    } else if (!ev_is_active(&k->wio)) {
        ev_io_start(loop, &k->wio);
    }
}

/* Before each poll: every connection given commands since the last one
 * sends them, all at once. */
static void bench_raw_redis_flush(struct ev_loop *loop, ev_prepare *w, int revents)
{
    bench_raw_redis *rr = w->data;
    (void)loop;
    (void)revents;
    for (int j = 0; j < rr->nflush; j++) {
        bench_raw_rconn *k = rr->flush[j];
        k->dirty = 0;
        /* A connection waiting to be writable sends from its own watcher. */
        if (!ev_is_active(&k->wio) && !rr->x.failed)
            bench_raw_redis_send(k);
    }
    rr->nflush = 0;
}

static void bench_raw_redis_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    bench_raw_redis_send(w->data);
}

/* Checks one reply against the oldest request in flight on k and keeps
 * the window full. */
static void bench_raw_redis_reply(bench_raw_rconn *k, redisReply *reply)
{
    bench_raw_redis *rr = k->rr;
    bench_raw *x = &rr->x;
    bench_raw_pending q = k->pend[k->phead];
    k->phead = (k->phead + 1) % k->pcap;
    k->plen--;
    bench_rreply br;
    bench_rreply_hiredis(reply, &br);
    if (bench_redis_check(x->e, x->c->op, q.i, &br, "raw") != 0)
        x->r->errors++;
    bench_hist_add(&x->r->hist, bench_now_us() - q.t0);
    x->done++;
    x->r->done = x->done;
    if (x->done == 1000000)
        x->r->rss_1m_kb = bench_rss_kb();
    if ((x->done & 1023) == 0)
        bench_progress(x->c, x->done);
    if (x->next < x->c->requests)
        bench_raw_redis_issue(rr, k);
    else if (x->done == x->c->requests)
        ev_break(x->loop, EVBREAK_ALL);
}

static void bench_raw_redis_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    bench_raw_rconn *k = w->data;
    bench_raw *x = &k->rr->x;
    (void)loop;
    (void)revents;
    ssize_t n = recv(k->fd, k->rr->rbuf, BENCH_RAW_RBUF, 0);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            bench_raw_redis_abort(k, strerror(errno));
        return;
    }
    if (n == 0) {
        bench_raw_redis_abort(k, "the server closed the connection");
        return;
    }
    if (redisReaderFeed(k->rd, k->rr->rbuf, (size_t)n) != REDIS_OK) {
        bench_raw_redis_abort(k, k->rd->errstr);
        return;
    }
    while (!x->failed) {
        void *reply = NULL;
        if (redisReaderGetReply(k->rd, &reply) != REDIS_OK) {
            bench_raw_redis_abort(k, k->rd->errstr);
            return;
        }
        if (reply == NULL)
            return;
        if (k->plen == 0) {
            freeReplyObject(reply);
            bench_raw_redis_abort(k, "a reply nobody asked for");
            return;
        }
        bench_raw_redis_reply(k, reply);
        freeReplyObject(reply);
    }
}

/* A blocking connect (not timed), then the socket goes non-blocking.
 * Returns the socket, or -1 after printing why. */
static int bench_raw_redis_connect(const char *host, int port)
{
    struct sockaddr_in sa;
    int one = 1;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "volley-bench: raw: %s is not an IPv4 address\n", host);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 ||
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
        fprintf(stderr, "volley-bench: raw: connect %s:%d: %s\n", host, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
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
    rr.rbuf = malloc(BENCH_RAW_RBUF);
    rr.conns = calloc((size_t)x->nconn, sizeof *rr.conns);
    rr.flush = calloc((size_t)x->nconn, sizeof *rr.flush);
    for (int j = 0; rr.conns && j < x->nconn; j++)
        rr.conns[j].fd = -1;
    if (x->loop == NULL || x->store == NULL || rr.rbuf == NULL || rr.conns == NULL ||
        rr.flush == NULL) {
        rc = -1;
        goto out;
    }
    for (int j = 0; j < x->nconn; j++) {
        bench_raw_rconn *k = &rr.conns[j];
        k->rr = &rr;
        k->fd = bench_raw_redis_connect(c->via_proxy ? "127.0.0.1" : e->redis_host,
                                        bench_redis_port(e, c, j % c->hosts));
        k->rd = redisReaderCreate();
        if (k->fd < 0 || k->rd == NULL) {
            rc = -1;
            goto out;
        }
        ev_io_init(&k->rio, bench_raw_redis_readable, k->fd, EV_READ);
        ev_io_init(&k->wio, bench_raw_redis_writable, k->fd, EV_WRITE);
        k->rio.data = k->wio.data = k;
        ev_io_start(x->loop, &k->rio);
    }
    ev_prepare_init(&rr.prep, bench_raw_redis_flush);
    rr.prep.data = &rr;
    ev_prepare_start(x->loop, &rr.prep);
    bench_run_begin(r);
    uint64_t w = c->window > 0 ? (uint64_t)c->window : 1;
    for (uint64_t k = 0; k < w && x->next < c->requests && !x->failed; k++)
        bench_raw_redis_issue(&rr, &rr.conns[x->next % (uint64_t)x->nconn]);
    if (x->done < c->requests && !x->failed)
        ev_run(x->loop, 0);
    bench_run_end(r);
    bench_progress(c, c->requests);
out:
    for (int j = 0; rr.conns && j < x->nconn; j++) {
        bench_raw_rconn *k = &rr.conns[j];
        if (k->fd >= 0) {
            ev_io_stop(x->loop, &k->rio);
            ev_io_stop(x->loop, &k->wio);
            close(k->fd);
        }
        if (k->rd)
            redisReaderFree(k->rd);
        free(k->out);
        free(k->pend);
    }
    if (x->loop) {
        ev_prepare_stop(x->loop, &rr.prep);
        ev_loop_destroy(x->loop);
    }
    free(rr.conns);
    free(rr.flush);
    free(rr.rbuf);
    free(x->store);
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
