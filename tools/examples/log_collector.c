/* SPDX-License-Identifier: BSD-3-Clause */
/* log_collector - a TCP log collector that stores every line in MariaDB
 * exactly once and tells the client when it is safe to forget it.
 *
 *   log_collector --listen tcp://127.0.0.1:PORT --mysql URL
 *                 [--workers N] [--batch M] [--queue Q] [--retries R]
 *
 * ---- The protocol (one line per message, "\n" or "\r\n" ended) ----------
 *
 *   client -> server   hello <client-id>     first line, once; 1-64 bytes,
 *                                            no spaces: names the client
 *                                            across its reconnects
 *   server -> client   ok hello
 *   client -> server   <line-id> <text>      line-id: decimal, 0 to 2^64-1,
 *                                            unique per client; text: any
 *                                            bytes up to 64 KiB in all
 *   server -> client   ok <line-id>          the row is committed
 *                      err <line-id> <why>   it could not be stored
 *                      err - <why>           a malformed line (no id)
 *                      err too long          the line passed 64 KiB; the
 *                                            server then closes
 *
 * Acks may come in any order (several workers insert at once). A client
 * keeps each line until its ack: after "ok" it may forget the line; after
 * "err", or when the connection drops before the ack, it sends the line
 * again with the same id, on any connection with the same client id. The
 * table's UNIQUE key on (client_id, line_id) makes that resend harmless:
 * the row is stored once however often it arrives (exactly once).
 *
 * ---- How it works -------------------------------------------------------
 *
 * Each connection reads one line at a time and puts it on one bounded
 * queue. When the queue is full the put waits, and while it waits the
 * connection reads nothing more: the stream stops reading ahead and the
 * client's own socket buffers fill, so a flood costs us at most the queue
 * (Q lines of at most 64 KiB) plus a bounded read buffer per connection.
 * N workers each take up to M queued lines at once and insert them with
 * one bulk statement on a pool of N MariaDB connections; after the
 * statement commits, each line is acked to its client. A failed batch is
 * retried R times with a growing delay (mariadbd restarting), then acked
 * "err". SIGTERM or SIGINT stops accepting and reading, lets the workers
 * drain the queue (every line already read is inserted and acked), then
 * exits 0. A connection closes once its last line is acked; if we stopped
 * reading before the client stopped sending, we first read and drop its
 * input for a moment (a lingering close), so that the kernel does not
 * reset the connection over unread bytes and destroy acks in flight.
 *
 * Memory is bounded whatever the clients do: Q lines of at most 64 KiB in
 * the queue, N * M lines being inserted, and per connection the stream's
 * read-ahead (256 KiB) and its acks (a client that reads none is paused,
 * then cut off). On exit it prints its counts on stderr:
 *   log_collector: exit: lines L ok K err E dropped D retries R
 *
 * Built with the rest of volley (make builds every tools/examples program); a test
 * drives it in tests/test_examples_log_collector.sh.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* volley has no signal watcher of its own yet, so SIGTERM is watched with
 * libev's ev_signal on the libev loop under volley's (vl_loop_ev): it wakes
 * the loop safely from the signal and runs our callback from the loop, like
 * any other event, where calling volley is legal. */
#include <ev.h>
#include <volley.h>

#define LINE_MAX_BYTES (64 * 1024)
#define CLIENT_ID_MAX 64
#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 2000
#define CLOSE_TIMEOUT_MS 5000
#define LINGER_MS 2000

/* The table. The client's ids are the natural key, so the UNIQUE key on
 * them is what makes a retried batch or a resent line harmless; id only
 * orders the rows. The text is stored as bytes (MEDIUMBLOB): a log line
 * need not be valid in any character set, and bytes never fail to convert,
 * so one bad line cannot fail the batch it travels in. */
static const char CREATE_SQL[] =
    "CREATE TABLE IF NOT EXISTS log_lines ("
    " id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
    " client_id VARBINARY(64) NOT NULL,"
    " line_id BIGINT UNSIGNED NOT NULL,"
    " body MEDIUMBLOB NOT NULL,"
    " UNIQUE KEY client_line (client_id, line_id)"
    ") ENGINE=InnoDB";

/* ON DUPLICATE KEY UPDATE (a no-op update) rather than INSERT IGNORE:
 * IGNORE would also turn real errors (a value too long) into warnings and
 * acknowledge a line that was not stored as sent. The values are bound
 * parameters: a log line is untrusted text and never part of the SQL. */
static const char INSERT_SQL[] =
    "INSERT INTO log_lines (client_id, line_id, body) VALUES (?, ?, ?)"
    " ON DUPLICATE KEY UPDATE line_id = line_id";

struct app;

/* One client connection. It lives while anyone may still use its stream:
 * refs counts the reader (while it reads) and every line of it that is
 * queued or being inserted, so an ack for a client that has gone finds a
 * valid (if failed) stream, and the write is simply refused. */
struct conn {
    struct app *app;
    vl_stream *s;
    struct conn *prev, *next; /* app->conns, to stop the readers on SIGTERM */
    size_t refs;
    vl_future *wait;          /* the pending read or drain, cancelled on SIGTERM */
    struct line *putting;     /* the line a waiting queue put holds */
    int ended;                /* the client's end of stream (or a failure) was read */
    uint64_t linger_until;    /* see conn_linger */
    size_t client_len;        /* 0 until "hello" */
    char client[CLIENT_ID_MAX];
};

/* One received line: it owns the read's buffer, so the text is not copied. */
struct line {
    struct conn *c;
    uint64_t id;
    vl_stream_buf *buf;
    const char *text;
    size_t len;
};

/* A worker chain: get a batch, insert it (retrying), ack it, again. */
struct worker {
    struct app *app;
    struct line **lines;
    vl_mysql_param *params;
    size_t n;
    unsigned attempt;
};

struct app {
    vl_loop *loop;
    vl_stream_server *srv;
    vl_stream_options so;
    vl_queue *q;
    vl_mysql_pool *pool;
    struct worker *workers;
    size_t nworkers, batch;
    unsigned retries;
    ev_signal sigterm, sigint;
    int stopping;
    size_t readers, workers_running, in_flight;
    struct conn *conns;
    uint64_t lines, acked_ok, acked_err, acks_dropped, batch_retries;
};

/* ---- Connections --------------------------------------------------------- */

static void conn_read_next(struct conn *c);

static void on_closed(vl_future *f, void *ud)
{
    (void)ud;
    if (vl_future_status(f) != VL_OK)
        fprintf(stderr, "log_collector: close: %s\n", vl_future_error(f));
}

static void conn_finish(struct conn *c)
{
    vl_future *f = vl_stream_close(c->s); /* NULL: out of memory, stream freed */

    /* The deadline keeps a client that stopped reading from holding us. */
    if (f != NULL)
        vl_future_then(vl_future_timeout(f, CLOSE_TIMEOUT_MS), on_closed, NULL);
    free(c);
}

static void conn_linger(struct conn *c);

static void on_linger(vl_future *f, void *ud)
{
    struct conn *c = ud;
    vl_stream_buf *b = vl_future_value(f);

    if (vl_future_status(f) == VL_OK && vl_stream_buf_len(b) > 0)
        conn_linger(c); /* the bytes are dropped with the future */
    else
        conn_finish(c); /* end of stream, failure or the deadline */
}

/* A lingering close (as nginx's lingering_close): when we stop reading
 * before the client stopped sending (SIGTERM, a line too long), closing at
 * once with its bytes unread would make the kernel reset the connection,
 * which can destroy the acks still on their way. So we read and drop what
 * the client sends, for at most LINGER_MS, while the acks go out, and close
 * at its end of stream. Those dropped lines were never acked: the client
 * still holds them and resends them. */
static void conn_linger(struct conn *c)
{
    uint64_t now = vl_loop_now_ms(c->app->loop);
    vl_future *f;

    if (now >= c->linger_until) {
        conn_finish(c);
        return;
    }
    f = vl_future_timeout(vl_stream_read(c->s, 0), c->linger_until - now);
    if (f == NULL || vl_future_then(f, on_linger, c) != VL_OK) {
        vl_future_free(f);
        conn_finish(c);
    }
}

/* Drops one reference; the last one closes the stream gracefully, so that
 * the acks still buffered reach the client before the socket closes. */
static void conn_unref(struct conn *c)
{
    if (--c->refs > 0)
        return;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        c->app->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    if (c->ended) {
        conn_finish(c);
        return;
    }
    c->linger_until = vl_loop_now_ms(c->app->loop) + LINGER_MS;
    conn_linger(c);
}

/* The reader is done (end of stream, error, protocol breach or SIGTERM).
 * The last reader to finish during a shutdown closes the queue: from then
 * on nothing can be added, and the workers' gets drain what is queued and
 * then fail, which is how each worker learns it is finished. */
static void conn_reader_done(struct conn *c)
{
    struct app *app = c->app;

    app->readers--;
    conn_unref(c);
    if (app->stopping && app->readers == 0)
        vl_queue_shutdown(app->q);
}

/* Writes one reply. A refusal means the client has gone (VL_ECONN) or has
 * let a whole output buffer of acks pile up unread (VL_EBUSY); either way
 * the reply is dropped, and a stalled client is cut off so that its acks
 * cannot grow our memory: it resends what it did not see acked. */
static void conn_reply_len(struct conn *c, const char *msg, size_t len)
{
    int rc = vl_stream_write(c->s, msg, len);

    if (rc == VL_OK)
        return;
    c->app->acks_dropped++;
    if (rc == VL_EBUSY)
        vl_stream_abort(c->s);
}

static void conn_reply(struct conn *c, const char *msg)
{
    conn_reply_len(c, msg, strlen(msg));
}

/* Acks one line and lets it go: its memory and its reference on the
 * connection. */
static void line_ack(struct line *l, const char *why)
{
    struct app *app = l->c->app;
    char msg[256];
    int len;

    if (why == NULL) {
        len = snprintf(msg, sizeof msg, "ok %" PRIu64 "\n", l->id);
        app->acked_ok++;
    } else {
        len = snprintf(msg, sizeof msg, "err %" PRIu64 " %s\n", l->id, why);
        app->acked_err++;
    }
    if (len >= (int)sizeof msg) { /* a long reason is cut, the line kept whole */
        len = (int)sizeof msg - 1;
        msg[len - 1] = '\n';
    }
    conn_reply_len(l->c, msg, (size_t)len);
    conn_unref(l->c);
    vl_stream_buf_free(l->buf);
    free(l);
}

static void on_put(vl_future *f, void *ud)
{
    struct conn *c = ud;

    /* On success the line is the queue's and maybe already acked and
     * freed: only the failure path touches it. */
    if (vl_future_status(f) != VL_OK)
        line_ack(c->putting, "queue closed");
    c->putting = NULL;
    conn_read_next(c);
}

/* Parses "<line-id> <text>" into l; 0 when malformed. */
static int line_parse(struct line *l, const char *p, size_t len)
{
    size_t i = 0;
    uint64_t v = 0;

    for (; i < len && p[i] >= '0' && p[i] <= '9'; i++) {
        unsigned d = (unsigned)(p[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    if (i == 0 || (i < len && p[i] != ' '))
        return 0;
    l->id = v;
    l->text = i < len ? p + i + 1 : p + i;
    l->len = i < len ? len - i - 1 : 0;
    return 1;
}

/* A line arrived: hello, or a record for the queue. Takes the buffer.
 * Returns 1 when the reader reads on, 0 when it is done, -1 when a queue
 * put waits for room (on_put resumes the reader). */
static int conn_handle(struct conn *c, vl_stream_buf *buf)
{
    struct app *app = c->app;
    const char *p = vl_stream_buf_data(buf);
    size_t len = vl_stream_buf_len(buf);
    struct line *l;
    int rc;

    if (c->client_len == 0) {
        /* Without a client id a resent line could not be recognised. */
        if (len <= 6 || len - 6 > CLIENT_ID_MAX || memcmp(p, "hello ", 6) != 0 ||
            memchr(p + 6, ' ', len - 6) != NULL) {
            conn_reply(c, "err - hello first\n");
            vl_stream_buf_free(buf);
            return 0;
        }
        c->client_len = len - 6;
        memcpy(c->client, p + 6, c->client_len);
        conn_reply(c, "ok hello\n");
        vl_stream_buf_free(buf);
        return 1;
    }
    l = calloc(1, sizeof *l);
    if (l == NULL || !line_parse(l, p, len)) {
        conn_reply(c, l == NULL ? "err - out of memory\n" : "err - malformed line\n");
        free(l);
        vl_stream_buf_free(buf);
        return 1;
    }
    l->c = c;
    l->buf = buf;
    c->refs++;
    app->lines++;
    /* The fast path: room in the queue, no future needed. */
    rc = vl_queue_put_nowait(app->q, l);
    if (rc == VL_OK)
        return 1;
    if (rc == VL_EBUSY) {
        vl_future *f = vl_queue_put(app->q, l);
        if (f != NULL) {
            /* The queue is full: this connection waits here, reading
             * nothing, until a worker makes room (back-pressure). */
            c->putting = l;
            vl_future_then(f, on_put, c);
            return -1;
        }
    }
    /* Not queued: say so at once rather than drop it. */
    line_ack(l, rc == VL_ECLOSED ? "shutting down" : "out of memory");
    return 1;
}

static void on_line(vl_future *f, void *ud)
{
    struct conn *c = ud;
    int st = vl_future_status(f), go;

    c->wait = NULL;
    if (st == VL_OK) {
        go = conn_handle(c, vl_future_take(f));
        if (go == 1)
            conn_read_next(c);
        else if (go == 0)
            conn_reader_done(c);
        return; /* go == -1: a queue put waits and resumes the reader */
    }
    if (st == VL_EPROTO)
        conn_reply(c, "err too long\n");
    c->ended = st == VL_ECLOSED || st == VL_ECONN;
    /* VL_ECLOSED: the client finished sending; VL_ECONN: it went away;
     * VL_ECANCELED: SIGTERM. Lines already queued are still acked. */
    conn_reader_done(c);
}

static void on_drained(vl_future *f, void *ud)
{
    struct conn *c = ud;

    c->wait = NULL;
    if (vl_future_status(f) == VL_OK)
        conn_read_next(c);
    else
        conn_reader_done(c);
}

/* Reads the next line, unless the client is behind on reading its acks:
 * then it first waits until they drained, so a client that sends without
 * reading cannot make us buffer acks without bound. */
static void conn_read_next(struct conn *c)
{
    vl_future *f;

    if (c->app->stopping) {
        conn_reader_done(c);
        return;
    }
    if (vl_stream_write_buffered(c->s) > c->app->so.write_low_water) {
        f = vl_stream_drain(c->s);
        if (f != NULL && vl_future_then(f, on_drained, c) == VL_OK) {
            c->wait = f;
            return;
        }
    } else {
        f = vl_stream_read_line(c->s, LINE_MAX_BYTES);
        if (f != NULL && vl_future_then(f, on_line, c) == VL_OK) {
            c->wait = f;
            return;
        }
    }
    conn_reader_done(c); /* out of memory: stop this client, not the service */
}

static void on_accept(vl_stream_server *srv, vl_stream *s, void *ud)
{
    struct app *app = ud;
    struct conn *c = calloc(1, sizeof *c);

    (void)srv;
    if (c == NULL) {
        vl_stream_free(s);
        return;
    }
    c->app = app;
    c->s = s;
    c->refs = 1; /* the reader's */
    c->next = app->conns;
    if (app->conns != NULL)
        app->conns->prev = c;
    app->conns = c;
    app->readers++;
    conn_read_next(c);
}

/* ---- Workers ------------------------------------------------------------- */

static void worker_next(struct worker *w);
static void worker_insert(struct worker *w);

/* Which failures are worth a retry: the server or the connection to it was
 * lost or did not answer in time, or the server asked for one (a deadlock,
 * a lock wait timeout, shutting down). Other server errors would fail the
 * same way again. Retrying is safe because the insert is idempotent. */
static int retryable(vl_future *f)
{
    switch (vl_future_status(f)) {
    case VL_ECONN:
    case VL_ETIMEDOUT:
        return 1;
    case VL_ESERVER:
        switch (vl_future_mysql_errno(f)) {
        case 1040: /* too many connections */
        case 1053: /* server shutdown in progress */
        case 1205: /* lock wait timeout */
        case 1213: /* deadlock */
        case 1927: /* connection killed */
        case 2006: /* server has gone away */
        case 2013: /* lost connection during query */
            return 1;
        }
        return 0;
    default:
        return 0;
    }
}

/* Acks the whole batch and frees it; why NULL means committed. */
static void worker_ack(struct worker *w, const char *why)
{
    struct app *app = w->app;

    for (size_t i = 0; i < w->n; i++)
        line_ack(w->lines[i], why);
    app->in_flight -= w->n;
    w->n = 0;
}

static void on_backoff(vl_future *f, void *ud)
{
    (void)f;
    worker_insert(ud);
}

static void on_inserted(vl_future *f, void *ud)
{
    struct worker *w = ud;
    char why[200];
    size_t i;

    if (vl_future_status(f) == VL_OK) {
        /* Committed (autocommit: the statement is its own transaction), so
         * now, and only now, the clients may forget these lines. */
        worker_ack(w, NULL);
        worker_next(w);
        return;
    }
    if (retryable(f) && w->attempt < w->app->retries) {
        uint64_t ms = (uint64_t)BACKOFF_FIRST_MS << (w->attempt < 8 ? w->attempt : 8);
        vl_future *sleep;

        if (ms > BACKOFF_MAX_MS)
            ms = BACKOFF_MAX_MS;
        w->attempt++;
        w->app->batch_retries++;
        fprintf(stderr, "log_collector: insert of %zu lines failed (%s), retry %u in %" PRIu64
                " ms\n", w->n, vl_future_error(f), w->attempt, ms);
        sleep = vl_loop_sleep(w->app->loop, ms);
        if (sleep != NULL && vl_future_then(sleep, on_backoff, w) == VL_OK)
            return;
    }
    /* Given up: each line is told, never dropped. Whether its row exists is
     * unknown (a commit whose answer was lost): the client resends it, and
     * the UNIQUE key keeps the row single either way. The reason goes on
     * one line, so newlines in the server's message become spaces. */
    snprintf(why, sizeof why, "insert failed: %s", vl_future_error(f));
    for (i = 0; why[i] != '\0'; i++)
        if (why[i] == '\n' || why[i] == '\r')
            why[i] = ' ';
    fprintf(stderr, "log_collector: %zu lines acked err: %s\n", w->n, why);
    worker_ack(w, why);
    worker_next(w);
}

/* Sends the batch as one bulk statement (one round trip for all rows). The
 * parameters only point into the lines; volley copies them before the call
 * returns, and the lines stay for a retry. */
static void worker_insert(struct worker *w)
{
    vl_future *f;

    for (size_t i = 0; i < w->n; i++) {
        struct line *l = w->lines[i];
        w->params[3 * i] = vl_mysql_p_blob(l->c->client, l->c->client_len);
        w->params[3 * i + 1] = vl_mysql_p_uint64(l->id);
        w->params[3 * i + 2] = vl_mysql_p_blob(l->text, l->len);
    }
    f = vl_mysql_pool_execute_bulk(w->app->pool, INSERT_SQL, w->params, 3, w->n);
    if (f == NULL || vl_future_then(f, on_inserted, w) != VL_OK) {
        vl_future_free(f);
        worker_ack(w, "insert failed: out of memory");
        worker_next(w);
    }
}

static void worker_done(struct worker *w)
{
    struct app *app = w->app;

    if (--app->workers_running > 0)
        return;
    /* Every worker has left: the queue is shut and empty, every line read
     * was acked. The signal watchers were all that still held the loop
     * (the listener is closed, the streams close by themselves). */
    ev_signal_stop(vl_loop_ev(app->loop), &app->sigterm);
    ev_signal_stop(vl_loop_ev(app->loop), &app->sigint);
}

static void on_got(vl_future *f, void *ud)
{
    struct worker *w = ud;
    struct app *app = w->app;
    void *item;

    if (vl_future_status(f) != VL_OK) {
        worker_done(w); /* VL_ECLOSED: shut down and drained */
        return;
    }
    /* Take what else is queued, up to the batch size, without waiting: a
     * lone line is inserted at once, and under load batches fill up. */
    w->lines[0] = vl_future_take(f);
    w->n = 1;
    while (w->n < app->batch && vl_queue_get_nowait(app->q, &item) == VL_OK)
        w->lines[w->n++] = item;
    app->in_flight += w->n;
    w->attempt = 0;
    worker_insert(w);
}

static void worker_next(struct worker *w)
{
    vl_future *f = vl_queue_get(w->app->q);

    if (f == NULL || vl_future_then(f, on_got, w) != VL_OK) {
        vl_future_free(f);
        fprintf(stderr, "log_collector: a worker stopped: out of memory\n");
        worker_done(w);
    }
}

/* ---- Shutdown and main --------------------------------------------------- */

static void on_signal(struct ev_loop *ev, ev_signal *sig, int revents)
{
    struct app *app = sig->data;

    (void)ev;
    (void)revents;
    if (app->stopping)
        return;
    app->stopping = 1;
    fprintf(stderr, "log_collector: stopping: %zu lines queued, %zu being inserted\n",
            vl_queue_size(app->q), app->in_flight);
    /* Stop taking new work: no new connections, and each reader stops at
     * its next line. A cancelled read consumes nothing (the client still
     * has those lines unacked and resends them). A reader whose queue put
     * waits keeps waiting: that line was read, so it is inserted too. */
    vl_stream_server_close(app->srv);
    app->srv = NULL;
    for (struct conn *c = app->conns; c != NULL; c = c->next)
        if (c->wait != NULL)
            vl_future_cancel(c->wait);
    if (app->readers == 0)
        vl_queue_shutdown(app->q);
}

static void usage(void)
{
    fprintf(stderr, "usage: log_collector --listen tcp://HOST:PORT --mysql URL"
                    " [--workers N] [--batch M] [--queue Q] [--retries R]\n");
    exit(2);
}

static size_t arg_size(const char *s, size_t lo, size_t hi)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        usage();
    return (size_t)v;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'}, {"mysql", required_argument, NULL, 'm'},
        {"workers", required_argument, NULL, 'w'}, {"batch", required_argument, NULL, 'b'},
        {"queue", required_argument, NULL, 'q'}, {"retries", required_argument, NULL, 'r'},
        {NULL, 0, NULL, 0}};
    struct app app = {0};
    const char *listen_addr = NULL, *url = NULL;
    size_t queue_max = 1024;
    vl_mysql_pool_options po;
    vl_future *f;
    int ch, rc = 0;

    app.nworkers = 4;
    app.batch = 100;
    app.retries = 8;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'l': listen_addr = optarg; break;
        case 'm': url = optarg; break;
        case 'w': app.nworkers = arg_size(optarg, 1, 256); break;
        case 'b': app.batch = arg_size(optarg, 1, 10000); break;
        case 'q': queue_max = arg_size(optarg, 1, 1000000); break;
        case 'r': app.retries = (unsigned)arg_size(optarg, 0, 100); break;
        default: usage();
        }
    }
    if (listen_addr == NULL || url == NULL || optind != argc)
        usage();
    /* Connector/C may write to a socket the server just closed; that must
     * be an error code, not a signal that kills the process. */
    signal(SIGPIPE, SIG_IGN);

    app.loop = vl_loop_new();
    if (app.loop == NULL) {
        fprintf(stderr, "log_collector: out of memory\n");
        return 1;
    }
    /* One connection per worker: a worker runs one statement at a time.
     * While mariadbd is down a request waits up to acquire_timeout_ms for
     * the pool's reconnects, then fails, and the worker's retry takes over. */
    vl_mysql_pool_options_init(&po);
    po.max_size = app.nworkers;
    po.acquire_timeout_ms = 2000;
    app.pool = vl_mysql_pool_new(app.loop, url, &po);
    app.q = vl_queue_new(app.loop, VL_QUEUE_FIFO, queue_max, NULL);
    app.workers = calloc(app.nworkers, sizeof *app.workers);
    if (app.pool == NULL || app.q == NULL || app.workers == NULL) {
        fprintf(stderr, "log_collector: out of memory\n");
        return 1;
    }
    /* The table first: accepting lines we cannot store would only fail. */
    f = vl_mysql_pool_query(app.pool, CREATE_SQL);
    if (f == NULL || vl_loop_run_until(app.loop, f) != VL_OK) {
        fprintf(stderr, "log_collector: create table: %s\n",
                f != NULL ? vl_future_error(f) : "out of memory");
        return 1; /* the process ends: nothing to tidy */
    }
    vl_future_free(f);

    vl_stream_options_init(&app.so);
    app.srv = vl_stream_listen(app.loop, listen_addr, &app.so, on_accept, &app);
    if (app.srv == NULL || vl_stream_server_status(app.srv) != VL_OK) {
        fprintf(stderr, "log_collector: %s\n",
                app.srv != NULL ? vl_stream_server_error(app.srv) : "out of memory");
        return 1;
    }
    for (size_t i = 0; i < app.nworkers; i++) {
        struct worker *w = &app.workers[i];
        w->app = &app;
        w->lines = calloc(app.batch, sizeof *w->lines);
        w->params = calloc(app.batch * 3, sizeof *w->params);
        if (w->lines == NULL || w->params == NULL) {
            fprintf(stderr, "log_collector: out of memory\n");
            return 1;
        }
        app.workers_running++;
        worker_next(w);
    }
    ev_signal_init(&app.sigterm, on_signal, SIGTERM);
    ev_signal_init(&app.sigint, on_signal, SIGINT);
    app.sigterm.data = app.sigint.data = &app;
    ev_signal_start(vl_loop_ev(app.loop), &app.sigterm);
    ev_signal_start(vl_loop_ev(app.loop), &app.sigint);

    /* The port line tells a supervisor (or the test) that we are ready. */
    printf("listening on port %d\n", vl_stream_server_port(app.srv));
    fflush(stdout);

    /* Runs until SIGTERM has drained everything: the listener holds the
     * loop until then, and the signal watchers until the last worker left. */
    if (vl_loop_run(app.loop) != VL_OK)
        rc = 1;
    fprintf(stderr, "log_collector: exit: lines %" PRIu64 " ok %" PRIu64 " err %" PRIu64
            " dropped %" PRIu64 " retries %" PRIu64 "\n", app.lines, app.acked_ok,
            app.acked_err, app.acks_dropped, app.batch_retries);
    if (app.lines != app.acked_ok + app.acked_err)
        rc = 1; /* cannot happen; said loudly if it ever does */
    vl_mysql_pool_free(app.pool);
    vl_queue_free(app.q);
    for (size_t i = 0; i < app.nworkers; i++) {
        free(app.workers[i].lines);
        free(app.workers[i].params);
    }
    free(app.workers);
    vl_loop_free(app.loop);
    return rc;
}
