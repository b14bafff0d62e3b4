/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/mysql.c - MySQL/MariaDB connections: the whole Connector/C
 * non-blocking state machine. No other file calls mysql_* functions.
 *
 * Each connection has one vl__io and one vl__timer. An operation advances by
 * calling a mysql_*_start function; when it returns a MYSQL_WAIT_* mask the
 * connection arms its watchers for exactly that (re-reading the socket with
 * mysql_get_socket every time while connecting, since Connector/C may
 * change it then) and, once ready, calls the matching mysql_*_cont. Calls
 * that never touch the socket (fetching and freeing a prepared statement's
 * stored rows) are made plainly. The current
 * position is c->mstate; drive() runs step() until the operation waits or the
 * queue is empty.
 *
 * The protocol is not multiplexed, so operations queue FIFO on the
 * connection and only the head one talks to the server.
 *
 * Safe points: the only user code that runs inside drive() is a stream's
 * batch callback. A vl_mysql_free from there sets free_pending, and the
 * connection is torn down when drive() returns. Everything else that might
 * free or cancel (future callbacks, deadlines) runs from the loop, outside
 * drive().
 *
 * TLS: Connector/C 3.3 shakes hands with blocking calls, so a TLS connect
 * runs as one blocking mysql_real_connect on a worker thread
 * (S_CONNECTING_TLS, "connecting through TLS" below) and the loop adopts the
 * connected handle. From then on OpenSSL reads and writes on a socket made
 * non-blocking: its WANT_READ/WANT_WRITE suspend Connector/C's non-blocking
 * calls with MYSQL_WAIT_READ/WRITE, which the watchers serve as for any
 * connection.
 *
 * Closing: mysql_close() on a connection that is mid-operation or lost would
 * try to write COM_QUIT through the normal (blocking) path. Shutting the
 * socket down first makes that write fail at once, so closing never blocks.
 * Prepared statements are freed after mysql_close(), which has detached them
 * from the connection, so freeing them sends nothing.
 */
#include "mysql_bind.h"
#include "url.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <errmsg.h>
#include <mysqld_error.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

enum { OP_READY, OP_QUERY, OP_EXEC, OP_PING, OP_RESET, OP_INITDB };

/* Where a connection is in its life. */
enum { ST_RESOLVING, ST_CONNECTING, ST_OPEN, ST_CLOSED };

/* What the state machine waits for or does next (see step()). Each state
 * that talks to the server makes one Connector/C call: `started` says
 * whether its _start form ran already, so the next turn calls _cont. Only
 * mstate() assigns c->mstate. */
typedef enum {
    S_IDLE,           /* nothing to do (an open connection is watched for a hang-up) */
    S_CONNECTING,     /* mysql_real_connect */
    S_CONNECTING_TLS, /* a worker thread runs the blocking TLS connect */
    S_NEXT_OP,        /* take the next queued op, if any */
    S_QUERYING,       /* mysql_real_query: the SQL out, the first reply in */
    S_READING_RESULT, /* a reply is read: counts, or a result set to fetch */
    S_FETCHING,       /* mysql_fetch_row */
    S_NEXT_RESULT,    /* mysql_next_result (multi-statements, CALL) */
    S_PREPARING,      /* mysql_stmt_prepare (unless the cache has it) */
    S_EXECUTING,      /* mysql_stmt_execute */
    S_STORING,        /* mysql_stmt_store_result */
    S_STMT_FETCHING,  /* mysql_stmt_fetch (of stored rows: never waits) */
    S_STMT_FREEING,   /* mysql_stmt_free_result (of stored rows: never waits) */
    S_PINGING,        /* mysql_ping */
    S_RESETTING,      /* mysql_reset_connection */
    S_SELECTING_DB,   /* mysql_select_db, after a reset */
    S_COUNT
} mstate_t;

static const char *const state_names[S_COUNT] = {
    "IDLE",          "CONNECTING",   "CONNECTING_TLS", "NEXT_OP",   "QUERYING",
    "READING_RESULT", "FETCHING",    "NEXT_RESULT",    "PREPARING", "EXECUTING",
    "STORING",       "STMT_FETCHING", "STMT_FREEING",  "PINGING",   "RESETTING",
    "SELECTING_DB"};

/* What a phase function tells the dispatcher. */
enum { GO_ON = 0, WAIT = 1 };

#define STMT_CACHE_MAX 64

/* What a pooled connection runs first, at connect and after every reset: the
 * server then flags any session change (the clean-return rule), and reports
 * the current database, which Connector/C keeps in MYSQL.db. */
#define POOLED_SESSION_SQL                                                                     \
    "SET SESSION session_track_state_change=1, session_track_system_variables='*',"          \
    " session_track_schema=1"
/* What a connection with ?track_gtid=1 runs first, at connect and after a
 * reset: the server then reports @@last_gtid with every commit's OK packet
 * (vl_mysql_result_gtid). The variables tracked already stay tracked:
 * Connector/C follows character_set_client through them. Pooled
 * connections track every variable anyway. */
#define TRACK_GTID_SQL                                                                         \
    "SET SESSION session_track_system_variables="                                              \
    "CONCAT_WS(',', @@session_track_system_variables, 'last_gtid')"
#define DEFAULT_BATCH 1000
/* The most bytes of rows a bulk execution sends in one round trip: well
 * under MariaDB's smallest max_allowed_packet default (16 MiB), so a big
 * bulk never meets the server's limit. */
#define BULK_BUDGET ((size_t)4 << 20)

/* Connector/C's packet limit while connecting. A greeting is about 100
 * bytes; what a server that is not MySQL sends first ("HTTP/1.1", "-ERR",
 * "SSH-", a TLS alert) reads as a length prefix of 64 KiB or more, which
 * Connector/C would otherwise wait for until the connect deadline. */
#define HANDSHAKE_MAX_PACKET ((size_t)64 * 1024)
/* The protocol's own packet maximum. */
#define PROTOCOL_MAX_PACKET (1ul << 30)
/* Slack over max_row_bytes for Connector/C's packet limit: the length
 * prefixes of a row's cells (at most 9 bytes each). */
#define ROW_PACKET_SLACK ((size_t)64 * 1024)

/* What a result column was when a statement's bindings were made: the
 * parts Connector/C updates when the server prepared it again. */
struct colsig {
    int type;
    unsigned flags, charsetnr, decimals;
};

typedef struct stmt_entry {
    struct stmt_entry *next;
    char *sql;
    size_t len;
    MYSQL_STMT *stmt;
    int arrayed;             /* STMT_ATTR_ARRAY_SIZE is set (a bulk ran) */
    int locks;               /* pooled: its SQL may take a named lock (GET_LOCK) */
    /* What every execution reuses: the result's columns (read once, after
     * the first execution that returned rows), their bindings, and the
     * parameter bindings. */
    MYSQL_RES *meta;
    MYSQL_FIELD *fields;
    unsigned nfields;
    vl__mrow row;
    struct colsig *sig;      /* what the columns were when bound (nfields) */
    vl__mcolset *colset;     /* the columns as results describe them */
    int row_bound;           /* mysql_stmt_bind_result is up to date */
    int stale;               /* the server prepared it again: dropped after use */
    vl__mpbind pb;           /* the parameters' bindings and their storage */
} stmt_entry;

/* Short SQL is kept in the op itself, with no allocation of its own. */
#define OP_SQL_INLINE 120
/* How many finished ops a connection keeps for reuse. */
#define SPARE_OPS_MAX 16

typedef struct op op;
struct op {
    op *next;
    vl_mysql *c;
    vl_future *f;            /* NULL once abandoned */
    int kind;
    char *sql;               /* sql_inline, or allocated */
    size_t len;
    /* bulk execution: p holds bulk_rows rows of ncols parameters */
    size_t bulk_rows, ncols;
    size_t bulk_done;        /* rows executed so far */
    size_t bulk_chunk;       /* rows in the round trip in flight */
    uint64_t bulk_affected, bulk_insert_id;
    unsigned bulk_warnings;
    vl__mbulk bulk;
    int p_borrowed;          /* p holds the caller's parameters (exec_submit) */
    int internal;            /* restores session setup after a reset */
    int locks;               /* may take a named lock (GET_LOCK) */
    /* streams */
    int stream;
    size_t batch_rows;
    vl_mysql_batch_cb cb;
    void *ud;
    vl_mysql_result *batch;
    uint64_t streamed;
    int rows_started;
    /* the result being built */
    vl_mysql_result *res;
    vl_mysql_result *set;
    int err;                 /* a failure noted while the reply is drained */
    const char *err_msg;
    int discard;             /* read and drop the rest of the reply */
    uint64_t bytes;          /* cell bytes of the result (or stream batch) so far */
    /* binary protocol state */
    uint64_t stored_left;    /* stored rows not fetched yet */
    stmt_entry *st;
    int st_preparing;        /* st is being prepared: the op owns it, no cache */
    MYSQL_BIND *pbind;       /* bulk: the round trip's bindings */
    /* Storage for small SQL and parameters. Last, so a reused op is cleared
     * only up to here (see op_alloc). */
    char sql_inline[OP_SQL_INLINE];
    vl__mparams p;           /* prepared statements: the copied parameters */
};

struct vl_mysql {
    vl_loop *loop;
    MYSQL *my;
    vl__io io;
    vl__timer timer;
    vl__handle handle;
    int registered;          /* a handle the loop frees (not pooled) */
    int pooled;
    int state;               /* ST_* */
    mstate_t mstate;         /* S_*: set by mstate() only */
    int started;             /* the state's _start call ran: _cont next */
    int trace;               /* VOLLEY_MYSQL_TRACE: print each state change */
    int io_unref;            /* the idle watch does not keep the loop alive */
    int timer_unref;         /* the timer does not keep the loop alive */
    int held;                /* pooled: the pool has a request waiting on it */
    int kick;                /* the timer is a zero-delay start, not a wait */
    int waiting;             /* the MYSQL_WAIT_* mask being waited for */
    int sock;                /* the socket once open (sock_watch) */
    int in_drive;
    int free_pending;
    int freed;               /* vl_mysql_free ran; the memory may be buried */
    vl__mysql_config cfg;    /* the URL and options */
    char *addr;              /* the host's numeric address, once resolved */
    uint64_t deadline_ms;    /* end of the connect phase (loop clock) */
    uint64_t io_deadline_ms; /* a statement's reply overdue from then on; 0 = none */
    uint64_t timer_due_ms;   /* when the running timer fires (loop clock) */
    uint64_t cc_timeout_due_ms; /* when Connector/C's MYSQL_WAIT_TIMEOUT ends */
    unsigned char greet[5];  /* the first bytes the server sent, peeked */
    int greet_n;
    /* why the connection is not usable */
    int fail_status;
    char *last_err;          /* vl_mysql_error: the last failure of any kind */
    unsigned fail_errno;
    char fail_sqlstate[6];
    char *fail_msg;
    int ever_open;
    int lost_unreported;     /* lost while idle: the next statement says so */
    /* operations */
    op *cur;
    op *qhead, *qtail;
    op *spare;               /* finished ops kept for reuse */
    size_t nspare;
    /* results of the current Connector/C call */
    int iret;
    my_bool bret;
    MYSQL *mret;
    MYSQL_RES *res;
    MYSQL_ROW row;
    /* the name resolution or TLS connect in flight */
    struct ticket *ticket;
    struct tls_job *tls_job; /* a TLS connect's outcome, back from the worker */
    stmt_entry *stmts;
    size_t nstmts;
    int dirty;
    vl__mysql_hook hook;
    void *hook_ud;
    /* The pool's "a statement finished" hook, run from the loop (a defer)
     * after the statement's future completed. */
    vl__mysql_done_hook done_hook;
    void *done_ud;
    vl__defer done_defer;
    int done_queued;
    int done_status;
};

typedef struct ticket {
    vl_mysql *c;             /* NULL once the connection is gone */
    vl_future *job;          /* a TLS connect's job, cancelled when dropped */
} ticket;

/* The connection gives up the resolution or TLS connect in flight: its
 * outcome is dropped when it comes (the future frees it). A TLS job's future
 * is cancelled at once, so that nothing waits for it any more; the worker
 * still finishes the connect, and its handle is closed then. */
static void ticket_drop(vl_mysql *c)
{
    ticket *t = c->ticket;

    if (t == NULL)
        return;
    t->c = NULL;
    c->ticket = NULL;
    if (t->job != NULL)
        vl_future_cancel(t->job);
}

static void drive(vl_mysql *c, int ready);
static size_t session_sqls(const vl_mysql *c, const char *sqls[3]);
static void conn_break(vl_mysql *c, int status, const char *reason);
static void conn_destroy(vl_mysql *c);
static int protocol_error(unsigned err);
static int packet_refused(const MYSQL *my, unsigned err);
static void tls_job_free(void *ud);
static int mentions_get_lock(const char *sql, size_t len);

/* ---- small helpers ---- */

static __attribute__((noinline, cold)) void trace_state(const vl_mysql *c, mstate_t to)
{
    fprintf(stderr, "volley mysql %s: %s -> %s\n", c->cfg.display != NULL ? c->cfg.display : "?",
            state_names[c->mstate], state_names[to]);
}

/* Runs on every step of every statement: kept to a test and two stores. */
static inline void mstate(vl_mysql *c, mstate_t to)
{
    if (__builtin_expect(c->trace, 0) && to != c->mstate)
        trace_state(c, to);
    c->mstate = to;
    c->started = 0;
}

/* The connection's server status flags (SERVER_STATUS_*), 0 when closed.
 * Read several times per statement (the clean-return rule), so straight
 * from MYSQL.server_status, which is what
 * mariadb_get_infov(MARIADB_CONNECTION_SERVER_STATUS) returns, without
 * its variadic call. */
static unsigned server_status(const vl_mysql *c)
{
    return c->my != NULL ? c->my->server_status : 0;
}

/* Arms the io watcher; `unref` keeps it from holding the loop open. */
static void io_arm(vl_mysql *c, int fd, int events, int unref)
{
    if (unref && c->io_unref && fd == c->io.fd && events == c->io.events && events != 0 &&
        fd >= 0)
        return; /* armed so already: an idle connection's watch, once per statement */
    if (c->io_unref) {
        vl__loop_ref(c->loop);
        c->io_unref = 0;
    }
    vl__io_set(&c->io, fd, events);
    if (unref && events != 0 && fd >= 0) {
        vl__loop_unref(c->loop);
        c->io_unref = 1;
    }
}

/* The loop-alive rule (volley/loop.h): a connect keeps vl_loop_run running
 * only while a future waits for it, a user's statement or vl_mysql_ready
 * (for a pooled connection: while its pool has a request waiting). A
 * connect nobody waits for, such as one whose ready future's deadline
 * passed, runs on but lets the loop return. */
static int connect_weak(const vl_mysql *c)
{
    if (c->state != ST_CONNECTING && c->state != ST_RESOLVING)
        return 0;
    return c->pooled ? !c->held : c->qhead == NULL && c->cur == NULL;
}

static void timer_ref(vl_mysql *c)
{
    if (c->timer_unref) {
        vl__loop_ref(c->loop);
        c->timer_unref = 0;
    }
}

static void mtimer_start(vl_mysql *c, uint64_t ms)
{
    c->timer_due_ms = vl_loop_now_ms(c->loop) + ms;
    timer_ref(c);
    vl__timer_start(&c->timer, ms);
    if (connect_weak(c)) {
        vl__loop_unref(c->loop);
        c->timer_unref = 1;
    }
}

static void mtimer_stop(vl_mysql *c)
{
    timer_ref(c); /* libev wants an unref'd watcher ref'd before it stops */
    vl__timer_stop(&c->timer);
}

/* Applies connect_weak to the watchers armed now, after it may have
 * changed (a statement queued or cancelled while connecting). */
static void settle(vl_mysql *c)
{
    int weak = connect_weak(c);

    if (c->state != ST_CONNECTING && c->state != ST_RESOLVING)
        return;
    if (c->ticket != NULL && c->ticket->job != NULL)
        vl__loop_job_weak(c->ticket->job, weak);
    if (c->io.events != 0 && c->io_unref != weak)
        io_arm(c, c->io.fd, c->io.events, weak);
    if (!weak) {
        timer_ref(c);
    } else if (!c->timer_unref && vl__timer_active(&c->timer)) {
        vl__loop_unref(c->loop);
        c->timer_unref = 1;
    }
}

static void io_off(vl_mysql *c)
{
    io_arm(c, c->io.fd, 0, 0);
    vl__io_stop(&c->io);
}

static int sock_of(vl_mysql *c)
{
    return c->my != NULL ? (int)mysql_get_socket(c->my) : -1;
}

/* The socket to watch. An open connection's socket never changes (no
 * reconnect, no change of user), so it is read once, when connected;
 * while connecting, Connector/C may replace it, so it is read every time.
 * Only for arming the watcher: whether Connector/C closed the socket after
 * an error is asked of it (fatal_error), and closing uses its own answer
 * too (close_handle). */
static int sock_watch(vl_mysql *c)
{
    return c->state == ST_OPEN && c->my != NULL ? c->sock : sock_of(c);
}

/* Notes a session change the server reported (session_track_state_change),
 * for the pool's clean-return rule; other connections have no use for it. */
static void note_status(vl_mysql *c)
{
    if (!c->pooled || (c->cur != NULL && c->cur->internal))
        return;
    if (server_status(c) & SERVER_SESSION_STATE_CHANGED)
        c->dirty = 1;
}

/* ---- the statement cache ---- */

/* Closes the statement (COM_STMT_CLOSE has no reply: it writes a few
 * bytes and returns; on a closed connection it sends nothing) and frees
 * the entry. */
static void stmt_free(stmt_entry *e)
{
    mysql_stmt_close(e->stmt);
    if (e->meta != NULL)
        mysql_free_result(e->meta);
    vl__free(e->sig);
    vl__mcolset_unref(e->colset);
    vl__mrow_clear(&e->row);
    vl__mpbind_clear(&e->pb);
    vl__free(e->sql);
    vl__free(e);
}

static void stmts_free_all(vl_mysql *c)
{
    while (c->stmts != NULL) {
        stmt_entry *e = c->stmts;
        c->stmts = e->next;
        stmt_free(e);
    }
    c->nstmts = 0;
}

static void stmt_evict(vl_mysql *c, stmt_entry *e)
{
    stmt_entry **pp;

    for (pp = &c->stmts; *pp != NULL; pp = &(*pp)->next)
        if (*pp == e) {
            *pp = e->next;
            c->nstmts--;
            break;
        }
    stmt_free(e);
}

static stmt_entry *stmt_find(vl_mysql *c, const char *sql, size_t len)
{
    stmt_entry **pp, *e;

    for (pp = &c->stmts; (e = *pp) != NULL; pp = &e->next)
        if (e->len == len && memcmp(e->sql, sql, len) == 0) {
            /* Move to the front: the list is kept most-recently-used first. */
            *pp = e->next;
            e->next = c->stmts;
            c->stmts = e;
            return e;
        }
    return NULL;
}

/* ---- operations ---- */

static void op_free(op *o)
{
    if (o->st_preparing && o->st != NULL) {
        /* The connection broke while the statement was being prepared (a
         * deadline, the read timeout, a lost server): it never reached the
         * cache. The connection is closed by now, which detached the
         * statement, so closing it sends nothing. */
        stmt_free(o->st);
        o->st = NULL;
    }
    if (o->batch != NULL)
        vl_mysql_result_free(o->batch);
    if (o->res != NULL)
        vl_mysql_result_free(o->res);
    if (o->pbind != NULL)
        vl__free(o->pbind);
    if (o->p.params != NULL && !o->p_borrowed)
        vl__mparams_clear(&o->p);
    if (o->bulk.types != NULL)
        vl__mbulk_clear(&o->bulk);
    if (o->sql != o->sql_inline)
        vl__free(o->sql);
    /* A connection keeps a few finished ops: most statements then cost no
     * allocation of their own. A freed connection keeps none. */
    if (o->c != NULL && !o->c->freed && o->c->nspare < SPARE_OPS_MAX) {
        o->next = o->c->spare;
        o->c->spare = o;
        o->c->nspare++;
        return;
    }
    vl__free(o);
}

static void spare_ops_free(vl_mysql *c)
{
    while (c->spare != NULL) {
        op *o = c->spare;
        c->spare = o->next;
        vl__free(o);
    }
    c->nspare = 0;
}

/* Drops an op that was never submitted (out of memory while copying). */
static void op_discard(op *o)
{
    vl_future *f = o->f;

    o->f = NULL;
    vl__future_set_source(f, NULL, NULL);
    vl_future_free(f);
    op_free(o);
}

static void done_run(vl__defer *d)
{
    vl_mysql *c = (vl_mysql *)(void *)((char *)d - offsetof(vl_mysql, done_defer));

    c->done_queued = 0;
    if (c->done_hook != NULL)
        c->done_hook(c, c->done_ud, c->done_status);
}

/* Tells the pool that a statement of its finished. A statement that ended
 * well or with the server's refusal (the connection stays usable) tells it
 * at once, from the state machine (a safe point: a free from the hook
 * waits for drive() to return), so the connection is back in the pool
 * before the statement's callback runs, as a caller expects. Any other end
 * tells it from the loop, once the connection has been closed (an error
 * breaks it only after its statement completed). */
static void done_notify(vl_mysql *c, int kind, int status)
{
    if (kind != OP_QUERY && kind != OP_EXEC)
        return; /* the pool's own: connect, reset, ping */
    if (c->in_drive > 0 && c->state == ST_OPEN &&
        (status == VL_OK || status == VL_ESERVER || status == VL_EINVAL)) {
        c->done_hook(c, c->done_ud, status);
        return;
    }
    c->done_status = status;
    if (!c->done_queued) {
        c->done_queued = 1;
        c->done_defer.cb = done_run;
        vl__defer_queue(c->loop, &c->done_defer);
    }
}

/* Completes the op's future (value taken, freed if nobody waits) and frees
 * the op. */
static void op_complete(op *o, int status, vl_mysql_result *value, const char *msg)
{
    if (o->c != NULL && o->c->done_hook != NULL && !o->internal && !o->c->freed)
        done_notify(o->c, o->kind, status);
    /* A cancel is the caller's doing, not a failure of the connection (and
     * a freed connection's ops are cancelled after its strings are gone). */
    if (status != VL_OK && status != VL_ECANCELED && o->c != NULL && !o->c->freed) {
        char *copy = vl__strdup(msg != NULL ? msg : vl_strerror(status));
        if (copy != NULL) {
            vl__free(o->c->last_err);
            o->c->last_err = copy;
        }
    }
    if (value != NULL && value == o->res)
        o->res = NULL;
    if (o->f != NULL) {
        vl_future *f = o->f;
        o->f = NULL;
        vl__future_complete(f, status, value, VL__VAL_MYSQL, value ? vl__mres_free_value : NULL,
                            msg);
    } else if (value != NULL) {
        vl_mysql_result_free(value);
    }
    op_free(o);
}

/* A failure value carrying errno/SQLSTATE/message; NULL when out of memory
 * or when there is nothing to carry. */
static vl_mysql_result *error_value(op *o, unsigned err, const char *sqlstate, const char *msg)
{
    vl_mysql_result *r = o != NULL && o->res != NULL ? o->res : NULL;

    if (err == 0)
        return r;
    if (r == NULL)
        r = vl__mres_new();
    if (r != NULL)
        vl__mres_error(r, err, sqlstate, msg);
    return r;
}

/* Fails `o` with the connection's stored failure. */
static void op_fail_closed(vl_mysql *c, op *o)
{
    vl_mysql_result *v = error_value(o, c->fail_errno, c->fail_sqlstate, c->fail_msg);
    int status = c->fail_status;

    if (c->lost_unreported && status == VL_ECLOSED) {
        /* The first statement after a loss noticed while idle reports the
         * loss itself; later ones only that the connection is closed. */
        c->lost_unreported = 0;
        status = VL_ECONN;
    }
    op_complete(o, status, v, c->fail_msg);
}

static void op_cancel(void *source, vl_future *f, int status)
{
    op *o = source;
    vl_mysql *c = o->c;
    op **pp;

    VL__UNUSED(f);
    o->f = NULL;
    if (c->cur != o) {
        /* Still queued: nothing was sent, so it just leaves the queue. */
        for (pp = &c->qhead; *pp != NULL; pp = &(*pp)->next)
            if (*pp == o) {
                *pp = o->next;
                break;
            }
        c->qtail = NULL;
        for (op *q = c->qhead; q != NULL; q = q->next)
            c->qtail = q;
        if (c->done_hook != NULL && !o->internal)
            done_notify(c, o->kind, status);
        op_free(o);
        settle(c);
        return;
    }
    if (o->stream && o->rows_started) {
        /* Rows are flowing: read and drop the rest, the connection stays
         * clean. */
        o->discard = 1;
        return;
    }
    /* The statement was sent and its reply can no longer be matched to
     * anything: the connection cannot be trusted any more. */
    conn_break(c, VL_ECLOSED,
               status == VL_ETIMEDOUT ? "closed after a statement's deadline passed"
                                      : "closed after an in-flight statement was cancelled");
}

/* What an op is, for messages: the SQL's first word in upper case
 * ("SELECT"), or the command ("PING"). The server-side limit's prefix
 * (SET STATEMENT ... FOR) is skipped, so the statement itself is named. */
static void op_verb(const op *o, char *buf, size_t n)
{
    const char *p = o->sql, *end = o->sql != NULL ? o->sql + o->len : NULL;
    size_t i = 0;

    if (n == 0)
        return;
    switch (o->kind) {
    case OP_READY:
        snprintf(buf, n, "connect");
        return;
    case OP_PING:
        snprintf(buf, n, "PING");
        return;
    case OP_RESET:
        snprintf(buf, n, "RESET");
        return;
    case OP_INITDB:
        snprintf(buf, n, "INIT_DB");
        return;
    default:
        break;
    }
    if (p != NULL && o->len > 14 && strncasecmp(p, "SET STATEMENT ", 14) == 0) {
        const char *f = p + 14;
        while (f + 5 <= end && strncasecmp(f, " FOR ", 5) != 0)
            f++;
        if (f + 5 <= end)
            p = f + 5;
    }
    while (p != NULL && p < end && (isspace((unsigned char)*p) || *p == '('))
        p++;
    while (p != NULL && p < end && isalpha((unsigned char)*p) && i + 1 < n && i < 15)
        buf[i++] = (char)toupper((unsigned char)*p++);
    buf[i] = '\0';
    if (i == 0)
        snprintf(buf, n, "statement");
}

static void op_describe(void *source, char *buf, size_t n)
{
    op *o = source;
    char verb[20];

    op_verb(o, verb, sizeof(verb));
    snprintf(buf, n, "%s on %s", verb, o->c->cfg.display);
}

static const vl__source_ops op_ops = {.cancel = op_cancel, .describe = op_describe};

/* A zeroed op: a spare one when the connection kept any. NULL on ENOMEM. */
static op *op_alloc(vl_mysql *c, int kind)
{
    op *o = c->spare;

    if (o != NULL) {
        c->spare = o->next;
        c->nspare--;
        memset(o, 0, offsetof(op, sql_inline));
        o->p.params = NULL;
        o->p.n = 0;
        o->p.data = NULL;
    } else if ((o = vl__calloc(1, sizeof(*o))) == NULL) {
        return NULL;
    }
    o->c = c;
    o->kind = kind;
    return o;
}

/* Copies the op's SQL (len bytes, NUL-terminated) into it. VL_OK or
 * VL_ENOMEM. */
static int op_set_sql(op *o, const char *sql, size_t len)
{
    o->sql = len < OP_SQL_INLINE ? o->sql_inline : vl__malloc(len + 1);
    if (o->sql == NULL)
        return VL_ENOMEM;
    memcpy(o->sql, sql, len);
    o->sql[len] = '\0';
    o->len = len;
    return VL_OK;
}

static op *op_new(vl_mysql *c, int kind)
{
    op *o = op_alloc(c, kind);

    if (o == NULL)
        return NULL;
    o->f = vl__future_make(c->loop, &op_ops, o);
    if (o->f == NULL) {
        op_free(o);
        return NULL;
    }
    return o;
}

/* Queues an op, or fails it at once if the connection is unusable. Returns
 * its future. */
static vl_future *op_submit(vl_mysql *c, op *o)
{
    vl_future *f = o->f;

    if (c->freed) {
        /* Only reachable while the loop is being freed: the memory is kept
         * until every callback has run (vl__handle_bury). */
        vl__future_set_source(f, NULL, NULL);
        o->f = NULL;
        op_free(o);
        vl__future_fail(f, VL_ECLOSED, "connection freed");
        return f;
    }
    if (c->state == ST_CLOSED || vl__loop_closing(c->loop)) {
        if (vl__loop_closing(c->loop) && c->state != ST_CLOSED) {
            vl__future_set_source(f, NULL, NULL);
            o->f = NULL;
            op_free(o);
            vl__future_fail(f, VL_ECLOSED, "%s: loop is closing", c->cfg.display);
            return f;
        }
        vl__future_set_source(f, NULL, NULL);
        op_fail_closed(c, o);
        return f;
    }
    if (c->qtail != NULL)
        c->qtail->next = o;
    else
        c->qhead = o;
    c->qtail = o;
    settle(c);
    /* With a start already scheduled on the timer (a stream is queued), the
     * timer starts this one too, in order. */
    if (c->state == ST_OPEN && c->cur == NULL && !c->in_drive && !c->kick) {
        if (o->stream) {
            /* A stream's batch callback must not run inside this call: start
             * from the loop instead. */
            if (!c->kick && (!vl__timer_active(&c->timer) || c->timer_unref)) {
                c->kick = 1;
                mtimer_start(c, 0);
            }
        } else {
            mstate(c, S_NEXT_OP);
            drive(c, 0);
        }
    }
    return f;
}

/* ---- watchers ---- */

static void arm_at(vl_mysql *c, int st, uint64_t now);

static void arm(vl_mysql *c, int st)
{
    arm_at(c, st, vl_loop_now_ms(c->loop));
}

/* arm, at the loop clock's `now` (read once per wait: it is read for each
 * deadline). */
static void arm_at(vl_mysql *c, int st, uint64_t now)
{
    int ev = 0;
    uint64_t ms = 0;
    int use_timer = 0;

    c->waiting = st;
    if (st & (MYSQL_WAIT_READ | MYSQL_WAIT_EXCEPT))
        ev |= VL__READ;
    if (st & MYSQL_WAIT_WRITE)
        ev |= VL__WRITE;
    io_arm(c, sock_watch(c), ev, connect_weak(c));
    if (st & MYSQL_WAIT_TIMEOUT) {
        ms = mysql_get_timeout_value_ms(c->my);
        c->cc_timeout_due_ms = now + ms;
        use_timer = 1;
    }
    if (c->state == ST_CONNECTING && c->deadline_ms != 0) {
        uint64_t left = c->deadline_ms > now ? c->deadline_ms - now : 0;
        if (!use_timer || left < ms)
            ms = left;
        use_timer = 1;
    }
    if (c->io_deadline_ms != 0) {
        uint64_t left = c->io_deadline_ms > now ? c->io_deadline_ms - now : 0;
        if (!use_timer || left < ms)
            ms = left;
        use_timer = 1;
    }
    /* A running timer that fires no later than this wait's deadline is left
     * alone: on_timer finds the deadline not reached and waits the rest.
     * Restarting it for every wait of every statement would cost more than
     * the rest of the wait. Connector/C's own timeouts (MYSQL_WAIT_TIMEOUT)
     * must not fire early, and a zero-delay start (kick) is not a deadline:
     * those restart it. */
    if (use_timer && !(st & MYSQL_WAIT_TIMEOUT) && !c->kick && c->state == ST_OPEN &&
        vl__timer_active(&c->timer) && c->timer_due_ms <= now + ms) {
        timer_ref(c); /* one left running while idle holds the loop again */
        return;
    }
    c->kick = 0;
    if (use_timer)
        mtimer_start(c, ms);
    else
        mtimer_stop(c);
}

/* 1 when the Connector/C call is waiting (watchers armed for the
 * MYSQL_WAIT_* mask `st`; its _cont form runs next). Each wait of a
 * statement on the server restarts its read timeout: the limit is on
 * silence, not on the length of a result. A re-arm from the timer keeps the
 * deadline (see on_timer). */
static int wait_on(vl_mysql *c, int st)
{
    uint64_t now;

    if (st == 0)
        return 0;
    now = vl_loop_now_ms(c->loop);
    c->started = 1;
    c->io_deadline_ms = c->state == ST_OPEN && c->cur != NULL && c->cfg.read_timeout_ms != 0
                            ? now + c->cfg.read_timeout_ms
                            : 0;
    arm_at(c, st, now);
    return 1;
}

static void on_io(vl__io *io, int events, void *ud)
{
    vl_mysql *c = ud;
    int ready = 0;

    VL__UNUSED(io);
    if (c->state == ST_OPEN && c->cur == NULL && c->mstate == S_IDLE) {
        /* An idle connection became readable: the server hung up (EOF) or
         * sent an error before closing (wait_timeout). Either way it is
         * gone. */
        c->lost_unreported = 1;
        conn_break(c, VL_ECLOSED, "lost: the server closed it while idle");
        return;
    }
    if (events & VL__READ)
        ready |= MYSQL_WAIT_READ;
    if (events & VL__WRITE)
        ready |= MYSQL_WAIT_WRITE;
    /* The timer keeps running: the next wait re-arms it if it must (arm),
     * and an idle or closed connection stops it. */
    if (c->waiting & MYSQL_WAIT_TIMEOUT)
        mtimer_stop(c);
    drive(c, ready);
}

static void fail_connect(vl_mysql *c, int status, unsigned err, const char *sqlstate,
                         const char *msg);

static void on_timer(vl__timer *t, void *ud)
{
    vl_mysql *c = ud;
    uint64_t now = vl_loop_now_ms(c->loop);

    VL__UNUSED(t);
    if (c->timer_unref) { /* libev stopped it and dropped its count */
        vl__loop_ref(c->loop);
        c->timer_unref = 0;
    }
    if (c->kick) {
        c->kick = 0;
        if (c->state == ST_OPEN && c->cur == NULL && c->mstate == S_IDLE) {
            mstate(c, S_NEXT_OP);
            drive(c, 0);
        }
        return;
    }
    if ((c->state == ST_CONNECTING || c->state == ST_RESOLVING) && c->deadline_ms != 0 &&
        now >= c->deadline_ms) {
        char *m = vl__asprintf("connect %s: timed out after %" PRIu64 " ms", c->cfg.display,
                               c->cfg.connect_timeout_ms);
        fail_connect(c, VL_ETIMEDOUT, 0, NULL, m != NULL ? m : "connect timed out");
        vl__free(m);
        return;
    }
    if (c->state == ST_OPEN && c->io_deadline_ms != 0 && now >= c->io_deadline_ms) {
        /* The server owes a reply and has sent nothing for read_timeout_ms:
         * stalled mid-result, stopped, or gone without a reset. */
        char *m = vl__asprintf("timed out: nothing from the server for %" PRIu64
                               " ms (read_timeout_ms)",
                               c->cfg.read_timeout_ms);
        conn_break(c, VL_ETIMEDOUT, m != NULL ? m : "timed out (read_timeout_ms)");
        vl__free(m);
        return;
    }
    /* Connector/C's own wait is over only when its time came: a timer that
     * libev's cached clock fires a little early, or one armed for a
     * shorter deadline of ours, must not tell it otherwise. */
    if (c->waiting & MYSQL_WAIT_TIMEOUT) {
        uint64_t ms;
        if (now >= c->cc_timeout_due_ms) {
            drive(c, MYSQL_WAIT_TIMEOUT);
            return;
        }
        /* Wait the rest of it (arm would start Connector/C's whole wait
         * again), or less if one of our deadlines comes first. */
        ms = c->cc_timeout_due_ms - now;
        if (c->deadline_ms > now && (c->state == ST_CONNECTING || c->state == ST_RESOLVING) &&
            c->deadline_ms - now < ms)
            ms = c->deadline_ms - now;
        if (c->io_deadline_ms > now && c->io_deadline_ms - now < ms)
            ms = c->io_deadline_ms - now;
        mtimer_start(c, ms);
    } else if (c->waiting)
        arm(c, c->waiting); /* the connect deadline was re-checked; wait on */
    else if ((c->state == ST_CONNECTING || c->state == ST_RESOLVING) && c->deadline_ms != 0)
        /* Resolving, or a worker is connecting (TLS): nothing to wait for on
         * the loop but the deadline, which libev's cached clock can fire a
         * little early. */
        mtimer_start(c, c->deadline_ms > now ? c->deadline_ms - now : 0);
}

/* ---- closing ---- */

/* Closes the Connector/C handle without ever blocking (see the top). */
static void close_handle(vl_mysql *c, int clean)
{
    int fd = sock_of(c);

    io_off(c);
    mtimer_stop(c);
    c->kick = 0;
    c->waiting = 0;
    c->io_deadline_ms = 0;
    if (c->res != NULL) {
        /* An unfinished unbuffered result: detach it so freeing it does not
         * try to read the rest from the socket. */
        c->res->handle = NULL;
        mysql_free_result(c->res);
        c->res = NULL;
    }
    if (c->my != NULL) {
        if (!clean && fd >= 0)
            shutdown(fd, SHUT_RDWR);
        mysql_close(c->my);
        c->my = NULL;
    }
    if (c->tls_job != NULL) {
        tls_job_free(c->tls_job);
        c->tls_job = NULL;
    }
    stmts_free_all(c);
}

static void set_failure(vl_mysql *c, int status, unsigned err, const char *sqlstate,
                        const char *msg)
{
    c->fail_status = status;
    c->fail_errno = err;
    snprintf(c->fail_sqlstate, sizeof(c->fail_sqlstate), "%s", sqlstate ? sqlstate : "");
    vl__free(c->last_err);
    c->last_err = NULL;
    vl__free(c->fail_msg);
    c->fail_msg = vl__strdup(msg != NULL ? msg : vl_strerror(status));
    if (status != VL_ECANCELED && c->fail_msg != NULL) {
        char *copy = vl__strdup(c->fail_msg);
        if (copy != NULL) {
            vl__free(c->last_err);
            c->last_err = copy;
        }
    }
}

/* Fails every queued op with the stored failure. */
static void fail_queue(vl_mysql *c)
{
    while (c->qhead != NULL) {
        op *o = c->qhead;
        c->qhead = o->next;
        if (c->qhead == NULL)
            c->qtail = NULL;
        if (o->f != NULL)
            vl__future_set_source(o->f, NULL, NULL);
        op_fail_closed(c, o);
    }
}

static void fail_connect(vl_mysql *c, int status, unsigned err, const char *sqlstate,
                         const char *msg)
{
    c->state = ST_CLOSED;
    mstate(c, S_IDLE);
    ticket_drop(c);
    set_failure(c, status, err, sqlstate, msg);
    close_handle(c, 0);
    fail_queue(c);
    if (c->hook != NULL)
        c->hook(c, c->hook_ud);
}

/* The connection cannot be used any more: close it, fail the op in flight
 * (if still there) with `status` and the queue with VL_ECLOSED. */
static void conn_break(vl_mysql *c, int status, const char *reason)
{
    char *m;
    op *o = c->cur;

    if (c->state == ST_CLOSED)
        return;
    c->state = ST_CLOSED;
    mstate(c, S_IDLE);
    c->cur = NULL;
    m = vl__asprintf("%s: connection %s", c->cfg.display, reason);
    set_failure(c, VL_ECLOSED, 0, NULL, m != NULL ? m : reason);
    vl__free(m);
    close_handle(c, 0);
    if (o != NULL) {
        if (o->f != NULL)
            vl__future_set_source(o->f, NULL, NULL);
        op_complete(o, status, NULL, c->fail_msg);
    }
    fail_queue(c);
    if (c->hook != NULL)
        c->hook(c, c->hook_ud);
}

/* ---- connecting ---- */

/* The TLS options of a handle (see "TLS" in volley/mysql.h). Connector/C 3.3
 * goes on in clear text when a server does not offer TLS unless it was told
 * to verify the certificate or to check a fingerprint; an empty fingerprint
 * asks for that refusal, before any login is sent, and checks nothing
 * itself. The worker checks again once connected (tls_work). The host name
 * is given as written, so "localhost" must not turn into the unix socket. */
static int tls_options(const vl_mysql *c, MYSQL *my)
{
    const vl__mysql_config *cfg = &c->cfg;
    /* Connector/C checks the chain whenever it has CAs: required, which
     * checks nothing, does not give them. */
    const char *ca = cfg->tls != VL__MYSQL_TLS_REQUIRED ? cfg->ssl_ca : NULL;
    const char *capath = cfg->tls != VL__MYSQL_TLS_REQUIRED ? cfg->ssl_capath : NULL;
    const struct {
        enum mysql_option opt;
        const char *value;
    } strs[] = {
        {MYSQL_OPT_SSL_CA, ca},                  {MYSQL_OPT_SSL_CAPATH, capath},
        {MYSQL_OPT_SSL_CERT, cfg->ssl_cert},     {MYSQL_OPT_SSL_KEY, cfg->ssl_key},
        {MYSQL_OPT_SSL_CIPHER, cfg->ssl_cipher}, {MARIADB_OPT_TLS_VERSION, cfg->tls_version},
    };
    my_bool enforce = 1, verify = cfg->tls == VL__MYSQL_TLS_VERIFY_IDENTITY;
    unsigned int tcp = MYSQL_PROTOCOL_TCP;
    size_t i;
    int bad = 0;

    bad |= mysql_optionsv(my, MYSQL_OPT_SSL_ENFORCE, &enforce);
    bad |= mysql_optionsv(my, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &verify);
    if (!verify)
        bad |= mysql_optionsv(my, MARIADB_OPT_TLS_PEER_FP, "");
    bad |= mysql_optionsv(my, MYSQL_OPT_PROTOCOL, &tcp);
    for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        if (strs[i].value != NULL)
            bad |= mysql_optionsv(my, strs[i].opt, strs[i].value);
    return bad;
}

/* A new Connector/C handle with every option of the connection: NULL when
 * out of memory. Both connects use it: the non-blocking one on the loop and
 * the TLS one on a worker. */
static MYSQL *handle_new(const vl_mysql *c)
{
    unsigned int secs;
    /* Each option reads its argument with its own type (Connector/C 3.3,
     * mysql_optionsv): LOCAL_INFILE an unsigned int, RECONNECT a my_bool,
     * CONNECT_TIMEOUT an unsigned int, MAX_ALLOWED_PACKET a size_t. A
     * my_bool given for an unsigned int leaves three bytes of stack to
     * decide whether the server may read the client's files. */
    unsigned int no_local_infile = 0;
    my_bool no_reconnect = 0;
    size_t handshake_packet = HANDSHAKE_MAX_PACKET;
    const char *sqls[3];
    size_t i, n;
    int bad = 0;
    MYSQL *my = mysql_init(NULL);

    if (my == NULL)
        return NULL;
    /* Each of these can fail only for want of memory. Without the
     * non-blocking context mysql_real_connect_start would dereference NULL
     * (and every statement's _start after a TLS connect); without the init
     * commands a pooled session could not be tracked. */
    bad |= mysql_options(my, MYSQL_OPT_NONBLOCK, 0);
    bad |= mysql_options(my, MYSQL_SET_CHARSET_NAME, c->cfg.charset);
    bad |= mysql_options(my, MYSQL_OPT_LOCAL_INFILE, &no_local_infile);
    bad |= mysql_options(my, MYSQL_OPT_RECONNECT, &no_reconnect);
    bad |= mysql_options(my, MYSQL_OPT_MAX_ALLOWED_PACKET, &handshake_packet);
    if (c->cfg.connect_timeout_ms != 0) {
        /* Connector/C also bounds each read and write of the handshake by
         * it, and sets the read and write timeouts back to theirs (unset:
         * none) once connected. */
        secs = (unsigned int)((c->cfg.connect_timeout_ms + 999) / 1000);
        bad |= mysql_options(my, MYSQL_OPT_CONNECT_TIMEOUT, &secs);
    }
    for (i = 0, n = session_sqls(c, sqls); i < n; i++)
        bad |= mysql_options(my, MYSQL_INIT_COMMAND, sqls[i]);
    if (c->cfg.tls != VL__MYSQL_TLS_OFF)
        bad |= tls_options(c, my);
    if (bad) {
        mysql_close(my);
        return NULL;
    }
    return my;
}

/* Starts the connect phase: on the loop without TLS, on a worker with. */
static void start_connect(vl_mysql *c)
{
    c->state = ST_CONNECTING;
    if (c->cfg.tls != VL__MYSQL_TLS_OFF) {
        mstate(c, S_CONNECTING_TLS);
        drive(c, 0);
        return;
    }
    c->my = handle_new(c);
    if (c->my == NULL) {
        fail_connect(c, VL_ENOMEM, 0, NULL, "out of memory (mysql_options)");
        return;
    }
    mstate(c, S_CONNECTING);
    drive(c, 0);
}

/* ---- connecting through TLS ----
 *
 * Connector/C 3.3 cannot shake hands without blocking: its TCP connect
 * leaves the socket in blocking mode, and SSL_connect then waits in recv().
 * So the whole connect runs as one blocking mysql_real_connect on a worker
 * thread (vl__loop_run_in_thread_owned), which owns a tls_job: the handle
 * and copies of what the connect reads. The job is made with the C
 * library's allocator, since the worker may free it after the loop is gone.
 * The connection holds a ticket as for the name resolution: a connection
 * freed or failed (its deadline) meanwhile drops the ticket, and the job's
 * handle is closed when the worker is done with it (tls_job_free, as the
 * future's free function or the executor's when the job never ran). A
 * connected handle comes back through c->tls_job to ph_connecting_tls. */

typedef struct tls_job {
    MYSQL *my;
    char *host, *user, *password, *db;
    unsigned port;
    unsigned long flags;
    /* the outcome, written by the worker */
    int ok;
    int proto;         /* the peer does not speak MySQL (a protocol error) */
    unsigned err;
    char sqlstate[6];
    char text[512];
} tls_job;

static void wipe_free(char *s)
{
    if (s != NULL) {
        memset(s, 0, strlen(s));
        free(s);
    }
}

/* Frees a job and closes its handle without blocking: a handle nobody
 * adopted has its socket shut down first, as close_handle does. Runs on
 * whichever thread drops the job. */
static void tls_job_free(void *ud)
{
    tls_job *j = ud;

    if (j->my != NULL) {
        int fd = (int)mysql_get_socket(j->my);
        if (fd >= 0)
            shutdown(fd, SHUT_RDWR);
        mysql_close(j->my);
    }
    free(j->host);
    free(j->user);
    wipe_free(j->password);
    free(j->db);
    free(j);
}

/* strdup, NULL for NULL; 0 on success. */
static int dup_opt(char **dst, const char *s)
{
    *dst = s != NULL ? strdup(s) : NULL;
    return s != NULL && *dst == NULL ? -1 : 0;
}

static tls_job *tls_job_new(const vl_mysql *c)
{
    tls_job *j = calloc(1, sizeof(*j));

    if (j == NULL)
        return NULL;
    j->my = handle_new(c);
    j->port = (unsigned)c->cfg.port;
    j->flags = CLIENT_MULTI_RESULTS | (c->cfg.multi ? CLIENT_MULTI_STATEMENTS : 0);
    if (j->my == NULL || dup_opt(&j->host, c->cfg.host) != 0 ||
        dup_opt(&j->user, c->cfg.user) != 0 || dup_opt(&j->password, c->cfg.password) != 0 ||
        dup_opt(&j->db, c->cfg.db) != 0) {
        tls_job_free(j);
        return NULL;
    }
    return j;
}

/* Notes why the connect failed, as Connector/C said it. */
static void tls_job_error(tls_job *j, unsigned err, const char *sqlstate, const char *text)
{
    j->err = err;
    snprintf(j->sqlstate, sizeof(j->sqlstate), "%s", sqlstate);
    snprintf(j->text, sizeof(j->text), "%s", text);
}

/* The worker's part: touches only the job. The host name goes to
 * Connector/C as written: it resolves it here, and checks the server's
 * certificate against it (ssl-mode=verify-identity). */
static void *tls_work(void *ud)
{
    tls_job *j = ud;
    MYSQL *my = j->my;
    int fd, fl;

    if (mysql_real_connect(my, j->host, j->user, j->password, j->db, j->port, NULL, j->flags) ==
        NULL) {
        tls_job_error(j, mysql_errno(my), mysql_sqlstate(my), mysql_error(my));
        j->proto = protocol_error(j->err) || packet_refused(my, j->err);
    } else if (mysql_get_ssl_cipher(my) == NULL) {
        /* tls_options makes Connector/C refuse a server without TLS before
         * it logs in; should a version not, the session still never runs. */
        tls_job_error(j, CR_SSL_CONNECTION_ERROR, "HY000",
                      "TLS is required, but the server does not support it");
    } else if ((fd = (int)mysql_get_socket(my)) < 0 || (fl = fcntl(fd, F_GETFL)) < 0 ||
               fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        tls_job_error(j, CR_UNKNOWN_ERROR, "HY000", "cannot make the socket non-blocking");
    } else {
        /* Non-blocking from now on, so that OpenSSL's reads and writes
         * return WANT_READ/WANT_WRITE and Connector/C's non-blocking calls
         * suspend on them (see "TLS" in volley/mysql.h). */
        j->ok = 1;
    }
    wipe_free(j->password);
    j->password = NULL;
    return j;
}

/* The worker finished with the job (or it never ran). */
static void tls_done(vl_future *f, void *ud)
{
    ticket *t = ud;
    vl_mysql *c = t->c;

    vl__free(t);
    if (c == NULL)
        return; /* dropped: the future, or the executor, frees the job */
    c->ticket = NULL;
    if (vl_future_status(f) != VL_OK) {
        /* No worker could start, or the loop is being freed. */
        char *m = vl__asprintf("connect %s: %s", c->cfg.display, vl_future_error(f));
        fail_connect(c, vl_future_status(f), 0, NULL, m != NULL ? m : vl_future_error(f));
        vl__free(m);
        return;
    }
    c->tls_job = vl_future_take(f);
    drive(c, 0);
}

/* Hands the connect to a worker. */
static void tls_start(vl_mysql *c)
{
    tls_job *j = tls_job_new(c);
    ticket *t = j != NULL ? vl__calloc(1, sizeof(*t)) : NULL;
    vl_future *f = t != NULL ? vl__loop_run_in_thread_owned(c->loop, tls_work, j, tls_job_free,
                                                            tls_job_free)
                             : NULL;

    if (f == NULL) {
        vl__free(t);
        if (j != NULL)
            tls_job_free(j);
        fail_connect(c, VL_ENOMEM, 0, NULL, "out of memory (TLS connect)");
        return;
    }
    t->c = c;
    t->job = f;
    c->ticket = t;
    vl__loop_job_weak(f, connect_weak(c)); /* the loop-alive rule, as for a plain connect */
    vl_future_then(f, tls_done, t);
}

static void resolved(vl_future *f, void *ud)
{
    ticket *t = ud;
    vl_mysql *c = t->c;
    char *addr;

    vl__free(t);
    if (c == NULL)
        return;
    c->ticket = NULL;
    if (vl_future_status(f) != VL_OK) {
        char *m = vl__asprintf("connect %s: %s", c->cfg.display, vl_future_error(f));
        fail_connect(c, vl_future_status(f) == VL_ENOMEM ? VL_ENOMEM : VL_ECONN, 0, NULL,
                     m != NULL ? m : vl_future_error(f));
        vl__free(m);
        return;
    }
    addr = vl_future_take(f);
    vl__free(c->addr);
    c->addr = addr;
    start_connect(c);
}

/* ---- the state machine ---- */

static int copy_columns(vl_mysql_result *set, MYSQL_FIELD *fields, unsigned n)
{
    unsigned i, flags;

    if (vl__mres_set_columns(set, n) != VL_OK)
        return VL_ENOMEM;
    for (i = 0; i < n; i++) {
        int type = vl__mconv_type(fields[i].type, fields[i].flags, fields[i].charsetnr, &flags);
        if (vl__mres_column(set, i, fields[i].name, fields[i].name_length, type, flags) != VL_OK)
            return VL_ENOMEM;
    }
    return VL_OK;
}

/* Notes a failure to report once the reply is fully read. */
static void op_note(op *o, int err, const char *msg)
{
    if (o->err == 0) {
        o->err = err;
        o->err_msg = msg;
    }
    o->discard = 1;
}

/* Connector/C errors that mean the server broke the protocol: garbage, a
 * wrong version byte, a malformed or oversized packet, an unexpected reply
 * (among them a LOAD DATA LOCAL INFILE request, which is always refused). */
static int protocol_error(unsigned err)
{
    switch (err) {
    case CR_UNKNOWN_ERROR:
    case CR_VERSION_ERROR:
    case CR_SERVER_HANDSHAKE_ERR:
    case CR_COMMANDS_OUT_OF_SYNC:
    case CR_NET_PACKET_TOO_LARGE:
    case CR_MALFORMED_PACKET:
        return 1;
    default:
        return 0;
    }
}

/* Remembers the first bytes the server sends, without consuming them, as
 * long as Connector/C has not parsed a greeting. If the connect then fails,
 * they tell a peer that does not speak MySQL (a protocol error) from a
 * MySQL server that hung up (a lost connection): Connector/C reports both as
 * error 2013. */
static void greet_peek(vl_mysql *c)
{
    ssize_t n;
    int fd = sock_of(c);

    struct sockaddr_storage peer;
    socklen_t plen = sizeof(peer);

    const char *version = NULL;

    mariadb_get_infov(c->my, MARIADB_CONNECTION_SERVER_VERSION, &version);
    if (c->greet_n > 0 || fd < 0 || version != NULL)
        return;
    /* Only once connected: a recv on a socket whose connect failed would
     * consume the pending error that Connector/C is about to read. */
    if (getpeername(fd, (struct sockaddr *)&peer, &plen) != 0)
        return;
    n = recv(fd, c->greet, sizeof(c->greet), MSG_PEEK | MSG_DONTWAIT);
    if (n > 0)
        c->greet_n = (int)n;
}

/* 1 when the peeked bytes cannot start a handshake packet: sequence 0, a
 * length below HANDSHAKE_MAX_PACKET, protocol version 10 (or an error
 * packet, 0xff, as a server refusing the host sends). */
static int greet_bad(const vl_mysql *c)
{
    const unsigned char *b = c->greet;
    size_t len;

    if (c->greet_n < 4)
        return 0;
    len = (size_t)b[0] | (size_t)b[1] << 8 | (size_t)b[2] << 16;
    if (b[3] != 0 || len == 0 || len >= HANDSHAKE_MAX_PACKET)
        return 1;
    return c->greet_n >= 5 && b[4] != 10 && b[4] != 0xff;
}

/* Connector/C's packet limit once connected: a row packet is the row's
 * cells plus their length prefixes. */
static unsigned long row_packet_limit(const vl_mysql *c)
{
    uint64_t lim = c->cfg.max_row_bytes;

    if (lim == 0 || lim >= PROTOCOL_MAX_PACKET - ROW_PACKET_SLACK)
        return PROTOCOL_MAX_PACKET;
    return (unsigned long)(lim + ROW_PACKET_SLACK);
}

/* Is this error the end of the connection? */
static int fatal_error(vl_mysql *c, unsigned err)
{
    return err >= CR_MIN_ERROR || err == ER_CONNECTION_KILLED || err == ER_SERVER_SHUTDOWN ||
           sock_of(c) < 0;
}

/* The statement failed with a Connector/C or server error. */
static void op_error(vl_mysql *c, op *o, unsigned err, const char *sqlstate, const char *text)
{
    int fatal = fatal_error(c, err);
    int proto = protocol_error(err);
    int status = proto ? VL_EPROTO : fatal ? VL_ECONN : err == ER_STATEMENT_TIMEOUT ? VL_ETIMEDOUT : VL_ESERVER;
    char verb[20];
    char *m = (op_verb(o, verb, sizeof(verb)),
               vl__asprintf("%s on %s: %sERROR %u (%s): %s", verb, c->cfg.display,
                           err == CR_NET_PACKET_TOO_LARGE
                               ? "a packet from the server exceeds max_row_bytes: "
                               : proto ? "the server broke the protocol: " : "",
                           err, sqlstate, text));
    vl_mysql_result *v;

    if (o->res == NULL)
        o->res = vl__mres_new_in(c->loop);
    v = error_value(o, err, sqlstate, text);
    c->cur = NULL;
    mstate(c, S_NEXT_OP);
    if (o->internal)
        fatal = 1; /* the session could not be set up again */
    op_complete(o, status, v, m != NULL ? m : text);
    if (fatal) {
        char *why = vl__asprintf("lost (%s)", m != NULL ? m : text);
        conn_break(c, VL_ECLOSED, why != NULL ? why : "lost");
        vl__free(why);
    }
    vl__free(m);
}

/* Connector/C 3.3 refuses a packet beyond its limit without buffering it,
 * but then reports a lost connection (2013): ma_net_safe_read compares the
 * code with ER_ rather than CR_NET_PACKET_TOO_LARGE. Its NET says which it
 * was: error 1 comes only from a packet buffer that could not grow, a read
 * failure is error 2. */
static int packet_refused(const MYSQL *my, unsigned err)
{
    return err == CR_SERVER_LOST && my != NULL && my->net.error == 1;
}

/* Fails the op with what Connector/C reported, corrected where it misleads:
 * a packet it refused for its size reads as a lost connection, and a reply
 * it could not make sense of (a garbage column count, for one) comes with
 * no code at all. */
static void op_error_from(vl_mysql *c, op *o, unsigned err, const char *state, const char *text)
{
    char buf[512];

    if (packet_refused(c->my, err)) {
        snprintf(buf, sizeof(buf), "a packet of more than %lu bytes was refused",
                 c->my->net.max_packet_size);
        op_error(c, o, CR_NET_PACKET_TOO_LARGE, state, buf);
    } else if (err == 0) {
        op_error(c, o, CR_UNKNOWN_ERROR, "HY000",
                 "a malformed reply (Connector/C gave no reason)");
    } else {
        op_error(c, o, err, state, text);
    }
}

static void op_error_my(vl_mysql *c, op *o)
{
    op_error_from(c, o, mysql_errno(c->my), mysql_sqlstate(c->my), mysql_error(c->my));
}

static void op_error_stmt(vl_mysql *c, op *o, MYSQL_STMT *s)
{
    if (mysql_stmt_errno(s) == 0) /* the statement's error may be the connection's */
        op_error_my(c, o);
    else
        op_error_from(c, o, mysql_stmt_errno(s), mysql_stmt_sqlstate(s), mysql_stmt_error(s));
}

/* The op finished its reply: complete it with its result or noted error. */
static void op_finish(vl_mysql *c, op *o)
{
    c->cur = NULL;
    mstate(c, S_NEXT_OP);
    if (o->f == NULL) {
        op_free(o);
        return;
    }
    if (o->err != 0) {
        char verb[20];
        char *m = (op_verb(o, verb, sizeof(verb)),
                   vl__asprintf("%s on %s: %s", verb, c->cfg.display,
                                o->err_msg ? o->err_msg : vl_strerror(o->err)));
        vl_mysql_result *r = o->res;
        o->res = NULL;
        vl_mysql_result_free(r);
        op_complete(o, o->err, NULL, m != NULL ? m : vl_strerror(o->err));
        vl__free(m);
        return;
    }
    if (o->res == NULL) {
        o->res = vl__mres_new_in(c->loop);
        if (o->res == NULL) {
            op_complete(o, VL_ENOMEM, NULL, "out of memory");
            return;
        }
    }
    op_complete(o, VL_OK, o->res, NULL);
}

/* Closes the connection for a result past a limit: a row of `row` bytes
 * past max_row_bytes, or (row 0) the whole result past max_result_bytes.
 * Out of line, so that the phases that check the limits for every row
 * carry no message buffer. */
static __attribute__((noinline, cold)) void limit_break(vl_mysql *c, uint64_t row)
{
    char why[160];

    if (row != 0)
        snprintf(why, sizeof(why),
                 "closed: a result row of %" PRIu64 " bytes exceeds max_row_bytes (%" PRIu64 ")",
                 row, c->cfg.max_row_bytes);
    else
        snprintf(why, sizeof(why), "closed: the result exceeds max_result_bytes (%" PRIu64 ")",
                 c->cfg.max_result_bytes);
    conn_break(c, VL_EPROTO, why);
}

/* Counts a row of `row` cell bytes against the connection's limits. 0 when
 * within them; otherwise 1, the connection closed (limit_break). */
static int over_limit(vl_mysql *c, op *o, uint64_t row)
{
    if (c->cfg.max_row_bytes != 0 && row > c->cfg.max_row_bytes) {
        limit_break(c, row);
        return 1;
    }
    o->bytes += row;
    if (c->cfg.max_result_bytes != 0 && o->bytes > c->cfg.max_result_bytes) {
        limit_break(c, 0);
        return 1;
    }
    return 0;
}

/* What Connector/C holds for a prepared statement's stored result so far:
 * mysql_stmt_store_result buffers every row before volley sees one, so the
 * limit is checked on its arena between reads. Its blocks grow linearly, so
 * there are only about sqrt(n) of them to walk. */
static uint64_t stored_bytes(MYSQL_STMT *s)
{
    const MA_USED_MEM *b;
    uint64_t n = 0;

    for (b = s->result.alloc.used; b != NULL; b = b->next)
        n += b->size;
    for (b = s->result.alloc.free; b != NULL; b = b->next)
        n += b->size;
    return n;
}

/* Delivers the stream batch gathered so far. Returns 0 when the connection
 * must not be touched any more (freed or closed from the callback). */
static int stream_deliver(vl_mysql *c, op *o)
{
    vl_mysql_result *b = o->batch;

    o->batch = NULL;
    if (b == NULL)
        return 1;
    if (o->f != NULL && !o->discard && vl__mres_finish(b) == VL_OK)
        o->cb(b, o->ud);
    vl_mysql_result_free(b);
    o->bytes = 0; /* the result limit bounds each batch of a stream */
    return !c->free_pending && c->state == ST_OPEN;
}

/* Stores one text-protocol row. Returns 1 when it breaks a limit (the
 * connection is closed then), 0 otherwise. */
static int store_text_row(vl_mysql *c, op *o)
{
    unsigned long *lens = mysql_fetch_lengths(c->res);
    unsigned i, n = mysql_num_fields(c->res);
    vl_mysql_result *dst;
    vl__mcell *cells;
    uint64_t row = 0;

    o->rows_started = 1;
    if (o->discard)
        return 0;
    for (i = 0; i < n; i++)
        row += lens[i];
    if (over_limit(c, o, row))
        return 1;
    if (o->stream) {
        o->streamed++;
        if (o->batch == NULL) {
            o->batch = vl__mres_new_in(c->loop);
            if (o->batch == NULL || vl__mres_add(o->batch) == NULL ||
                vl__mres_copy_columns(o->batch, o->set) != VL_OK) {
                op_note(o, VL_ENOMEM, "out of memory reading a row");
                return 0;
            }
        }
        dst = o->batch;
    } else {
        dst = o->set;
    }
    cells = vl__mres_row(dst);
    if (cells == NULL) {
        op_note(o, VL_ENOMEM, "out of memory reading a row");
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (c->row[i] == NULL)
            continue;
        if (vl__mres_cell(dst, &cells[i], c->row[i], lens[i]) != VL_OK) {
            op_note(o, VL_ENOMEM, "out of memory reading a row");
            return 0;
        }
    }
    return 0;
}

/* Which SQL to send: the statement, or the statement under a server-side
 * time limit. Returns a new string or NULL (ENOMEM). */
static char *wrap_timeout(const char *sql, size_t len, uint64_t ms, size_t *outlen)
{
    char head[96];
    int hn = snprintf(head, sizeof(head), "SET STATEMENT max_statement_time=%" PRIu64 ".%03u FOR ",
                      ms / 1000, (unsigned)(ms % 1000));
    char *s = vl__malloc((size_t)hn + len + 1);

    if (s == NULL)
        return NULL;
    memcpy(s, head, (size_t)hn);
    memcpy(s + hn, sql, len);
    s[(size_t)hn + len] = '\0';
    *outlen = (size_t)hn + len;
    return s;
}

/* 1 when the session's current database is not the URL's: USE ran.
 * Connector/C keeps its idea of the schema up to date from the server's
 * session tracking (session_track_schema, which pooled connections turn
 * on). */
static int schema_changed(const vl_mysql *c)
{
    const char *now = NULL;

    if (c->my != NULL)
        mariadb_get_infov(c->my, MARIADB_CONNECTION_SCHEMA, &now);

    if (c->cfg.db == NULL || c->cfg.db[0] == '\0')
        return now != NULL && now[0] != '\0';
    return now == NULL || strcmp(now, c->cfg.db) != 0;
}

/* The statements that set a session up, in order, at connect and after a
 * reset: volley's own (session tracking), then the caller's init_sql.
 * Returns their count (at most 3). */
static size_t session_sqls(const vl_mysql *c, const char *sqls[3])
{
    size_t n = 0;

    if (c->pooled)
        sqls[n++] = POOLED_SESSION_SQL;
    else if (c->cfg.track_gtid)
        sqls[n++] = TRACK_GTID_SQL;
    if (c->cfg.init_sql != NULL && c->cfg.init_sql[0] != '\0')
        sqls[n++] = c->cfg.init_sql;
    return n;
}

/* Reads the GTID the statement just committed from the OK packet's session
 * tracking (system variable last_gtid), onto its result. */
static void note_gtid(vl_mysql *c, op *o)
{
    const char *d;
    size_t n;
    int is_gtid;

    if ((!c->pooled && !c->cfg.track_gtid) || o->set == NULL ||
        mysql_session_track_get_first(c->my, SESSION_TRACK_SYSTEM_VARIABLES, &d, &n) != 0)
        return;
    do { /* name, value, name, value... */
        is_gtid = n == 9 && memcmp(d, "last_gtid", 9) == 0;
        if (mysql_session_track_get_next(c->my, SESSION_TRACK_SYSTEM_VARIABLES, &d, &n) != 0)
            return;
        if (is_gtid && n > 0 && vl__mres_gtid(o->set, d, n) != VL_OK)
            op_note(o, VL_ENOMEM, "out of memory");
    } while (!is_gtid &&
             mysql_session_track_get_next(c->my, SESSION_TRACK_SYSTEM_VARIABLES, &d, &n) == 0);
}

/* Queues an internal op (no future) at the head of the queue. */
static int push_internal(vl_mysql *c, int kind, const char *sql)
{
    op *o = op_alloc(c, kind);

    if (o == NULL)
        return VL_ENOMEM;
    o->internal = 1;
    o->discard = 1;
    o->batch_rows = DEFAULT_BATCH;
    if (sql != NULL && op_set_sql(o, sql, strlen(sql)) != VL_OK) {
        op_free(o);
        return VL_ENOMEM;
    }
    o->next = c->qhead;
    c->qhead = o;
    if (c->qtail == NULL)
        c->qtail = o;
    return VL_OK;
}

/* COM_RESET_CONNECTION also undoes what the connect's init commands set, and
 * keeps the current database: select the URL's database again (COM_INIT_DB,
 * the name never pasted into SQL), then run the init commands, ahead of
 * anything queued. */
static int restore_session(vl_mysql *c)
{
    const char *sqls[3];
    size_t i, n = session_sqls(c, sqls);

    for (i = n; i-- > 0;)
        if (push_internal(c, OP_QUERY, sqls[i]) != VL_OK)
            return VL_ENOMEM;
    if (schema_changed(c) && push_internal(c, OP_INITDB, NULL) != VL_OK)
        return VL_ENOMEM;
    return VL_OK;
}

/* ---- the state machine ----
 *
 * step() is a short dispatcher: each state has one phase function, which
 * returns WAIT to leave the dispatcher (its call is waiting for I/O, or the
 * connection has nothing more to do) or GO_ON once it changed the state.
 * The shape is libcurl's multi_runsingle. Only mstate() changes the state;
 * with VOLLEY_MYSQL_TRACE=1 in the environment it prints every change to
 * stderr (endpoints by display name: never a password). */

/* The connect failed with Connector/C's error: VL_EPROTO when the peer does
 * not speak MySQL (`proto`), VL_ECONN otherwise. A certificate that names
 * another host reads in Connector/C's words as a failed "validation": the
 * message says which check it was. */
static void connect_failed(vl_mysql *c, unsigned err, const char *state, const char *text,
                           int proto)
{
    int name = err == CR_SSL_CONNECTION_ERROR &&
               strstr(text, "Validation of SSL server certificate failed") != NULL;
    int clear = err == ER_ACCESS_DENIED_ERROR && c->cfg.tls == VL__MYSQL_TLS_OFF;
    char *m = vl__asprintf(
        "connect %s: %sERROR %u (%s): %s%s%s%s%s", c->cfg.display,
        proto ? "the server's greeting is not a MySQL handshake: " : "", err, state, text,
        name ? " (the certificate does not name the host '" : "", name ? c->cfg.host : "",
        name ? "' as written in the URL)" : "",
        clear ? " (this connection does not use TLS: an account created with REQUIRE SSL "
                "is refused the same way)"
              : "");

    fail_connect(c, proto ? VL_EPROTO : VL_ECONN, err, state, m != NULL ? m : text);
    vl__free(m);
}

/* Connected: from now on Connector/C accepts packets up to the row limit
 * (MYSQL_OPT_MAX_ALLOWED_PACKET only takes effect at connect, and no
 * accessor sets the live limit). */
static int connected(vl_mysql *c)
{
    c->my->net.max_packet_size = row_packet_limit(c);
    c->my->options.max_allowed_packet = c->my->net.max_packet_size;
    c->sock = sock_of(c);
    c->state = ST_OPEN;
    c->ever_open = 1;
    c->dirty = 0;
    mtimer_stop(c);
    mstate(c, S_NEXT_OP);
    return GO_ON;
}

static int ph_connecting(vl_mysql *c, int ready)
{
    int st;
    const char *sock = c->cfg.socket_path;

    if (c->started) {
        greet_peek(c);
        st = mysql_real_connect_cont(&c->mret, c->my, ready);
    } else {
        st = mysql_real_connect_start(
            &c->mret, c->my, sock ? NULL : c->addr, c->cfg.user, c->cfg.password, c->cfg.db,
            sock ? 0 : (unsigned)c->cfg.port, sock,
            CLIENT_MULTI_RESULTS | (c->cfg.multi ? CLIENT_MULTI_STATEMENTS : 0));
    }
    if (wait_on(c, st))
        return WAIT;
    if (c->mret == NULL) {
        char text[512], state[6];
        unsigned err = mysql_errno(c->my);
        snprintf(text, sizeof(text), "%s", mysql_error(c->my));
        snprintf(state, sizeof(state), "%s", mysql_sqlstate(c->my));
        connect_failed(c, err, state, text,
                       protocol_error(err) || packet_refused(c->my, err) || greet_bad(c));
        return WAIT;
    }
    return connected(c);
}

/* The TLS connect (see "connecting through TLS"): the first turn hands it to
 * a worker; the next, once tls_done brought the job back, adopts the
 * handle. Nothing here waits for the socket. */
static int ph_connecting_tls(vl_mysql *c)
{
    tls_job *j = c->tls_job;

    if (!c->started) {
        c->started = 1;
        tls_start(c);
        return WAIT;
    }
    if (j == NULL)
        return WAIT; /* the worker is still connecting */
    c->tls_job = NULL;
    if (!j->ok) {
        connect_failed(c, j->err, j->sqlstate, j->text, j->proto);
        tls_job_free(j);
        return WAIT;
    }
    c->my = j->my;
    j->my = NULL;
    tls_job_free(j);
    return connected(c);
}

static int ph_next_op(vl_mysql *c)
{
    op *o = c->qhead;

    if (c->state != ST_OPEN)
        return WAIT;
    if (o == NULL) {
        /* Idle: watch for a hang-up without keeping the loop alive. A
         * statement's read-timeout timer is left running, unref'd so that
         * it does not keep the loop alive either: if it fires first, it
         * finds nothing due (on_timer); if a statement comes first, its
         * wait takes it over (arm). Stopping it here and starting it again
         * at the next statement cost more than the rest of the timer work
         * of the statement. A zero-delay start (kick) is no deadline: it
         * goes. */
        mstate(c, S_IDLE);
        c->waiting = 0;
        c->io_deadline_ms = 0;
        if (c->kick) {
            c->kick = 0;
            mtimer_stop(c);
        } else if (vl__timer_active(&c->timer) && !c->timer_unref) {
            vl__loop_unref(c->loop);
            c->timer_unref = 1;
        }
        io_arm(c, sock_watch(c), VL__READ, 1);
        return WAIT;
    }
    c->qhead = o->next;
    if (c->qhead == NULL)
        c->qtail = NULL;
    o->next = NULL;
    c->cur = o;
    if (o->locks)
        c->dirty = 1; /* only a reset releases a named lock */
    switch (o->kind) {
    case OP_READY:
        op_finish(c, o);
        break;
    case OP_QUERY:
        mstate(c, S_QUERYING);
        break;
    case OP_EXEC:
        mstate(c, S_PREPARING);
        break;
    case OP_PING:
        mstate(c, S_PINGING);
        break;
    case OP_INITDB:
        mstate(c, S_SELECTING_DB);
        break;
    default:
        mstate(c, S_RESETTING);
        break;
    }
    return GO_ON;
}

/* ---- text protocol ---- */

static int ph_querying(vl_mysql *c, op *o, int ready)
{
    int st = c->started
                 ? mysql_real_query_cont(&c->iret, c->my, ready)
                 : mysql_real_query_start(&c->iret, c->my, o->sql, (unsigned long)o->len);

    if (wait_on(c, st))
        return WAIT;
    if (c->iret != 0)
        op_error_my(c, o);
    else
        mstate(c, S_READING_RESULT);
    return GO_ON;
}

/* A statement's result is complete: the op is done, or the next result of
 * a multi-statement call follows. */
static void result_done(vl_mysql *c, op *o)
{
    if (!mysql_more_results(c->my)) {
        op_finish(c, o);
        return;
    }
    if (o->stream)
        op_note(o, VL_EINVAL, "a stream reads one result set; the SQL returned more");
    mstate(c, S_NEXT_RESULT);
}

static int ph_reading_result(vl_mysql *c, op *o)
{
    note_status(c);
    o->set = NULL;
    if (!o->discard) {
        if (o->res == NULL)
            o->res = vl__mres_new_in(c->loop);
        o->set = o->res != NULL ? vl__mres_add(o->res) : NULL;
        if (o->set == NULL)
            op_note(o, VL_ENOMEM, "out of memory");
    }
    if (mysql_field_count(c->my) == 0) {
        if (o->set != NULL)
            vl__mres_counts(o->set, mysql_affected_rows(c->my), mysql_insert_id(c->my),
                            mysql_warning_count(c->my));
        note_gtid(c, o);
        result_done(c, o);
        return GO_ON;
    }
    c->res = mysql_use_result(c->my);
    if (c->res == NULL) {
        op_error_my(c, o);
        return GO_ON;
    }
    if (o->set != NULL &&
        copy_columns(o->set, mysql_fetch_fields(c->res), mysql_num_fields(c->res)) != VL_OK)
        op_note(o, VL_ENOMEM, "out of memory");
    mstate(c, S_FETCHING);
    return GO_ON;
}

/* The rows ended (c->row NULL): an error, or the end of the result set. */
static int rows_ended(vl_mysql *c, op *o)
{
    unsigned err = mysql_errno(c->my);

    if (err != 0) {
        /* MYSQL.status has no accessor. */
        if (c->my->status == MYSQL_STATUS_USE_RESULT && !fatal_error(c, err)) {
            /* Connector/C did not finish the result: the connection's
             * protocol state is unknown, treat it as lost. */
            op_error(c, o, CR_SERVER_LOST, "HY000", mysql_error(c->my));
            return GO_ON;
        }
        c->res->handle = NULL; /* detached: freeing it reads nothing */
        mysql_free_result(c->res);
        c->res = NULL;
        op_error_my(c, o);
        return GO_ON;
    }
    note_status(c);
    if (o->set != NULL) {
        if (vl__mres_finish(o->set) != VL_OK)
            op_note(o, VL_ENOMEM, "out of memory");
        vl__mres_counts(o->set, o->stream ? o->streamed : vl_mysql_result_rows(o->set),
                        mysql_insert_id(c->my), mysql_warning_count(c->my));
    }
    mysql_free_result(c->res); /* every row was read: no I/O */
    c->res = NULL;
    if (o->stream && !stream_deliver(c, o))
        return WAIT;
    result_done(c, o);
    return GO_ON;
}

static int ph_fetching(vl_mysql *c, op *o, int ready)
{
    int st = c->started ? mysql_fetch_row_cont(&c->row, c->res, ready)
                        : mysql_fetch_row_start(&c->row, c->res);

    if (wait_on(c, st))
        return WAIT;
    if (c->row == NULL)
        return rows_ended(c, o);
    if (store_text_row(c, o))
        return WAIT;
    if (o->stream && o->batch != NULL && vl_mysql_result_rows(o->batch) >= o->batch_rows &&
        !stream_deliver(c, o))
        return WAIT;
    mstate(c, S_FETCHING); /* the next row */
    return GO_ON;
}

static int ph_next_result(vl_mysql *c, op *o, int ready)
{
    int st = c->started ? mysql_next_result_cont(&c->iret, c->my, ready)
                        : mysql_next_result_start(&c->iret, c->my);

    if (wait_on(c, st))
        return WAIT;
    if (c->iret > 0)
        op_error_my(c, o);
    else if (c->iret < 0)
        op_finish(c, o);
    else
        mstate(c, S_READING_RESULT);
    return GO_ON;
}

/* ---- binary protocol ---- */

/* A new statement entry for the op's SQL, owned by the op while it is
 * being prepared. 0, or -1 when out of memory (the op is then finished). */
static int stmt_begin(vl_mysql *c, op *o)
{
    o->st = vl__calloc(1, sizeof(*o->st));
    if (o->st != NULL) {
        o->st->sql = vl__strndup(o->sql, o->len);
        o->st->len = o->len;
        o->st->locks = c->pooled && mentions_get_lock(o->sql, o->len);
        o->st->stmt = o->st->sql != NULL ? mysql_stmt_init(c->my) : NULL;
    }
    if (o->st == NULL || o->st->stmt == NULL) {
        if (o->st != NULL)
            vl__free(o->st->sql);
        vl__free(o->st);
        o->st = NULL;
        op_note(o, VL_ENOMEM, "out of memory preparing a statement");
        op_finish(c, o);
        return -1;
    }
    o->st_preparing = 1;
    return 0;
}

/* The prepared statement joins the cache, most recent first. */
static void stmt_cache(vl_mysql *c, stmt_entry *e)
{
    while (c->nstmts >= STMT_CACHE_MAX) {
        stmt_entry *last = c->stmts;
        while (last->next != NULL)
            last = last->next;
        stmt_evict(c, last);
    }
    e->next = c->stmts;
    c->stmts = e;
    c->nstmts++;
}

static int ph_preparing(vl_mysql *c, op *o, int ready)
{
    int st;

    if (!c->started) {
        if (o->st == NULL) /* exec_submit may have found it already */
            o->st = stmt_find(c, o->sql, o->len);
        if (o->st != NULL) {
            if (o->st->locks)
                c->dirty = 1; /* only a reset releases a named lock */
            mstate(c, S_EXECUTING);
            return GO_ON;
        }
        if (stmt_begin(c, o) != 0)
            return GO_ON;
        if (o->st->locks)
            c->dirty = 1;
        st = mysql_stmt_prepare_start(&c->iret, o->st->stmt, o->sql, (unsigned long)o->len);
    } else {
        st = mysql_stmt_prepare_cont(&c->iret, o->st->stmt, ready);
    }
    if (wait_on(c, st))
        return WAIT;
    o->st_preparing = 0;
    if (c->iret != 0) {
        stmt_entry *e = o->st;
        o->st = NULL;
        op_error_stmt(c, o, e->stmt);
        stmt_free(e);
        return GO_ON;
    }
    stmt_cache(c, o->st);
    mstate(c, S_EXECUTING);
    return GO_ON;
}

/* Fails the op before anything was sent for it. Always -1. */
static int stmt_refuse(vl_mysql *c, op *o, int status, const char *why)
{
    op_note(o, status, why);
    op_finish(c, o);
    return -1;
}

/* Binds the next round trip of a bulk execution: the rows from bulk_done
 * on that fit BULK_BUDGET. 0, or -1 when the op failed (and is finished). */
static int stmt_bind_bulk(vl_mysql *c, op *o)
{
    MYSQL_STMT *s = o->st->stmt;
    unsigned long ext = 0;
    unsigned int n;

    mariadb_get_infov(c->my, MARIADB_CONNECTION_EXTENDED_SERVER_CAPABILITIES, &ext);
    if (!(ext & (MARIADB_CLIENT_STMT_BULK_OPERATIONS >> 32)))
        return stmt_refuse(c, o, VL_EUNSUPPORTED,
                           "the server has no bulk operations (MariaDB 10.2 or later)");
    if (o->bulk.types == NULL &&
        vl__mbulk_build(&o->bulk, &o->p, o->ncols, o->bulk_rows) != VL_OK)
        return stmt_refuse(c, o, VL_ENOMEM, "out of memory");
    if (o->pbind == NULL && (o->pbind = vl__calloc(o->ncols, sizeof(MYSQL_BIND))) == NULL)
        return stmt_refuse(c, o, VL_ENOMEM, "out of memory");
    memset(o->pbind, 0, o->ncols * sizeof(MYSQL_BIND));
    o->bulk_chunk = vl__mbulk_chunk(&o->bulk, o->bulk_done, BULK_BUDGET);
    /* Rows a statement returns (INSERT ... RETURNING) are read after the
     * round trip that produced them, which only one round trip can do. */
    if (o->bulk_done == 0 && o->bulk_chunk < o->bulk_rows && mysql_stmt_field_count(s) != 0)
        return stmt_refuse(c, o, VL_EINVAL,
                           "a bulk statement that returns rows (RETURNING) must fit one round "
                           "trip (4 MiB of rows); split the call");
    vl__mbulk_bind(&o->bulk, o->bulk_done, o->pbind);
    n = (unsigned int)o->bulk_chunk;
    o->st->arrayed = 1;
    o->st->pb.bound = 0; /* Connector/C holds the bulk's bindings from now on */
    if (mysql_stmt_attr_set(s, STMT_ATTR_ARRAY_SIZE, &n) || mysql_stmt_bind_param(s, o->pbind))
        return stmt_refuse(c, o, VL_EINVAL, "cannot bind the parameters");
    return 0;
}

/* Binds the op's parameters to its prepared statement. 0, or -1 when the
 * op failed (and is finished). */
static int stmt_bind(vl_mysql *c, op *o)
{
    MYSQL_STMT *s = o->st->stmt;
    size_t want = o->bulk_rows != 0 ? o->ncols : o->p.n;
    int rc;

    if (mysql_stmt_param_count(s) != want) {
        char *m = vl__asprintf("the statement has %lu parameter markers, %zu given",
                               mysql_stmt_param_count(s), want);
        c->cur = NULL;
        mstate(c, S_NEXT_OP);
        op_complete(o, VL_EINVAL, NULL, m != NULL ? m : "parameter count mismatch");
        vl__free(m);
        return -1;
    }
    if (o->bulk_rows != 0)
        return stmt_bind_bulk(c, o);
    if (o->st->arrayed) {
        unsigned int one_row = 0; /* 0: not an array execution */
        mysql_stmt_attr_set(s, STMT_ATTR_ARRAY_SIZE, &one_row);
        o->st->arrayed = 0;
        o->st->pb.bound = 0; /* the bulk's own bindings replaced ours */
    }
    if (o->p.n == 0)
        return 0;
    /* The statement keeps its bindings, which point at its own storage:
     * each execution writes its values there, and binds again only when a
     * type or a buffer changed (see vl__mpbind). */
    rc = vl__mpbind_set(&o->st->pb, &o->p);
    if (rc < 0) {
        op_note(o, rc, rc == VL_ENOMEM ? "out of memory" : "bad parameter type");
        op_finish(c, o);
        return -1;
    }
    if (rc > 0) {
        o->st->pb.bound = 0;
        if (mysql_stmt_bind_param(s, o->st->pb.bind)) {
            op_note(o, VL_EINVAL, "cannot bind the parameters");
            op_finish(c, o);
            return -1;
        }
        o->st->pb.bound = 1;
    }
    if (o->p_borrowed) {
        /* The values are in the statement's storage now: the caller's
         * array is not read again (and is gone once the call returns). */
        o->p.params = NULL;
        o->p.n = 0;
        o->p_borrowed = 0;
    }
    return 0;
}

static int ph_executing(vl_mysql *c, op *o, int ready)
{
    MYSQL_STMT *s;
    int st;

    if (!c->started) {
        if (stmt_bind(c, o) != 0)
            return GO_ON;
        st = mysql_stmt_execute_start(&c->iret, o->st->stmt);
    } else {
        st = mysql_stmt_execute_cont(&c->iret, o->st->stmt, ready);
    }
    if (wait_on(c, st))
        return WAIT;
    s = o->st->stmt;
    if (c->iret != 0) {
        stmt_entry *e = o->st;
        o->st = NULL;
        op_error_stmt(c, o, s);
        /* A statement that failed to execute is prepared again next time:
         * the error may be ER_NEED_REPREPARE. */
        if (c->state == ST_OPEN)
            stmt_evict(c, e);
        return GO_ON;
    }
    if (o->bulk_rows != 0) {
        note_status(c);
        o->bulk_affected += mysql_stmt_affected_rows(s);
        if (o->bulk_done == 0)
            o->bulk_insert_id = mysql_stmt_insert_id(s);
        o->bulk_warnings += mysql_warning_count(c->my);
        o->bulk_done += o->bulk_chunk;
        if (o->bulk_done < o->bulk_rows) {
            mstate(c, S_EXECUTING); /* the next round trip */
            return GO_ON;
        }
    }
    o->res = vl__mres_new_in(c->loop);
    o->set = o->res != NULL ? vl__mres_add(o->res) : NULL;
    if (o->set == NULL)
        op_note(o, VL_ENOMEM, "out of memory");
    if (mysql_stmt_field_count(s) == 0) {
        if (o->set != NULL && o->bulk_rows != 0)
            vl__mres_counts(o->set, o->bulk_affected, o->bulk_insert_id, o->bulk_warnings);
        else if (o->set != NULL)
            vl__mres_counts(o->set, mysql_stmt_affected_rows(s), mysql_stmt_insert_id(s),
                            mysql_warning_count(c->my));
        note_status(c); /* with rows, the status comes with their end */
        note_gtid(c, o);
        op_finish(c, o);
        return GO_ON;
    }
    mstate(c, S_STORING);
    return GO_ON;
}

static void colsig_of(struct colsig *g, const MYSQL_FIELD *f)
{
    memset(g, 0, sizeof(*g));
    g->type = f->type;
    g->flags = f->flags;
    g->charsetnr = f->charsetnr;
    g->decimals = f->decimals;
}

/* The result columns a prepared statement had when its bindings were made
 * are still the ones its execution just reported. The server prepares a
 * statement again by itself after a schema change (ALTER TABLE) and sends
 * the new columns with the result; Connector/C then updates their types,
 * flags, character sets and decimals in the statement's `fields` (which
 * mysql_stmt_result_metadata only points at), never their names: the names
 * are taken from the connection then (stmt_columns). */
static int stmt_columns_unchanged(const stmt_entry *e)
{
    const MYSQL_FIELD *now = e->stmt->fields;
    unsigned i;

    if (mysql_stmt_field_count(e->stmt) != e->nfields || now == NULL || e->sig == NULL)
        return 0;
    for (i = 0; i < e->nfields; i++) {
        const struct colsig *g = &e->sig[i];
        if ((int)now[i].type != g->type || now[i].flags != g->flags ||
            now[i].charsetnr != g->charsetnr || now[i].decimals != g->decimals)
            return 0;
    }
    return 1;
}

/* Drops the columns and bindings kept for a statement (made again at its
 * next result). Results made before keep their own column set. */
static void stmt_forget_columns(stmt_entry *e)
{
    mysql_free_result(e->meta);
    e->meta = NULL;
    e->fields = NULL;
    e->nfields = 0;
    vl__free(e->sig);
    e->sig = NULL;
    vl__mrow_clear(&e->row);
    vl__mcolset_unref(e->colset);
    e->colset = NULL;
    e->row_bound = 0;
}

/* The statement's result bindings, made at its first result and kept (the
 * columns of a prepared statement do not change), bound again when a
 * buffer grew. VL_OK or VL_ENOMEM. */
static int stmt_bind_result(stmt_entry *e)
{
    if (e->meta != NULL && !stmt_columns_unchanged(e)) {
        stmt_forget_columns(e);
        e->stale = 1;
    }
    if (e->meta == NULL) {
        e->meta = mysql_stmt_result_metadata(e->stmt);
        if (e->meta == NULL)
            return VL_ENOMEM;
        e->fields = mysql_fetch_fields(e->meta);
        e->nfields = mysql_num_fields(e->meta);
        e->sig = vl__calloc(e->nfields ? e->nfields : 1, sizeof(*e->sig));
        if (e->sig == NULL || vl__mrow_bind(&e->row, e->fields, e->nfields) != VL_OK) {
            stmt_forget_columns(e);
            return VL_ENOMEM;
        }
        for (unsigned i = 0; i < e->nfields; i++)
            colsig_of(&e->sig[i], &e->fields[i]);
    }
    if (!e->row_bound) {
        if (mysql_stmt_bind_result(e->stmt, e->row.bind))
            return VL_ENOMEM;
        e->row_bound = 1;
    }
    return VL_OK;
}

/* Describes the statement's columns on a result: converted once, at its
 * first result, then shared. VL_OK or VL_ENOMEM. */
static int stmt_columns(vl_mysql *c, stmt_entry *e, vl_mysql_result *set)
{
    if (e->stale) {
        /* Connector/C updates a re-prepared statement's column types but
         * not their names: the result's columns as the server sent them
         * are the connection's. The statement is prepared afresh next
         * time. */
        MYSQL_FIELD *now = c->my->field_count == e->nfields ? c->my->fields : NULL;
        return copy_columns(set, now != NULL ? now : e->fields, e->nfields);
    }
    if (e->colset == NULL) {
        if (copy_columns(set, e->fields, e->nfields) != VL_OK)
            return VL_ENOMEM;
        e->colset = vl__mcolset_new(set); /* if NULL, the next result tries again */
        return VL_OK;
    }
    vl__mres_use_columns(set, e->colset);
    return VL_OK;
}

/* A fetch reported truncation: the string columns whose value did not fit
 * get a bigger buffer and are fetched again (from the stored result: no
 * I/O). VL_OK, VL_ENOMEM, or VL_EPROTO when something else was truncated. */
static int refetch_truncated(stmt_entry *e)
{
    size_t i;

    for (i = 0; i < e->nfields; i++) {
        vl__mrow *r = &e->row;
        if (!r->errs[i] || r->nulls[i])
            continue;
        if (r->bufs[i] == NULL || r->lens[i] < r->bind[i].buffer_length)
            return VL_EPROTO; /* a number or a time: cannot happen */
        if (vl__mrow_grow(r, i, (size_t)r->lens[i] + 1) != VL_OK)
            return VL_ENOMEM;
        e->row_bound = 0;
        if (mysql_stmt_fetch_column(e->stmt, &r->bind[i], (unsigned)i, 0) != 0)
            return VL_EPROTO;
    }
    return VL_OK;
}

static int ph_storing(vl_mysql *c, op *o, int ready)
{
    MYSQL_STMT *s = o->st->stmt;
    int st = c->started ? mysql_stmt_store_result_cont(&c->iret, s, ready)
                        : mysql_stmt_store_result_start(&c->iret, s);

    if (st != 0 && c->cfg.max_result_bytes != 0 && stored_bytes(s) > c->cfg.max_result_bytes) {
        limit_break(c, 0);
        return WAIT;
    }
    if (wait_on(c, st))
        return WAIT;
    if (c->iret != 0) {
        stmt_entry *e = o->st;
        o->st = NULL;
        op_error_stmt(c, o, e->stmt);
        if (c->state == ST_OPEN)
            stmt_evict(c, e);
        return GO_ON;
    }
    note_status(c);
    if (stmt_bind_result(o->st) != VL_OK) {
        op_note(o, VL_ENOMEM, "out of memory binding the result");
        mstate(c, S_STMT_FREEING);
        return GO_ON;
    }
    if (o->set != NULL && stmt_columns(c, o->st, o->set) != VL_OK)
        op_note(o, VL_ENOMEM, "out of memory");
    o->stored_left = (uint64_t)mysql_stmt_num_rows(s);
    mstate(c, S_STMT_FETCHING);
    return GO_ON;
}

/* The rows were stored (ph_storing): Connector/C's fetch from a stored
 * result reads its memory and never the socket, and freeing a stored
 * result sends nothing (mysql->status is READY after the store), so these
 * two phases make the plain calls. Their non-blocking forms would only run
 * the same code on a coroutine stack, at a few hundred instructions per
 * row. */
static int ph_stmt_fetching(vl_mysql *c, op *o)
{
    stmt_entry *e = o->st;

    /* Once the rows the store counted are read, the fetch that would say
     * MYSQL_NO_DATA is not made (as the raw Connector/C loop of the bench
     * does not make it): the stored rows stay Connector/C's until the next
     * execution, which frees them, and nothing is left to read from the
     * server. */
    if (o->stored_left == 0) {
        mstate(c, S_STMT_FREEING);
        return GO_ON;
    }
    o->stored_left--;
    c->iret = mysql_stmt_fetch(e->stmt);
    if (c->iret != 0 && c->iret != MYSQL_DATA_TRUNCATED) {
        if (c->iret != MYSQL_NO_DATA)
            op_note(o, VL_EPROTO, mysql_stmt_error(e->stmt));
        mstate(c, S_STMT_FREEING);
        return GO_ON;
    }
    if (c->iret == MYSQL_DATA_TRUNCATED && !o->discard) {
        int rc = refetch_truncated(e);
        if (rc != VL_OK)
            op_note(o, rc, rc == VL_ENOMEM ? "out of memory reading a row"
                                           : "a value was truncated");
    }
    if (!o->discard) {
        if (over_limit(c, o, vl__mrow_bytes(&e->row)))
            return WAIT;
        if (vl__mrow_store(&e->row, e->fields, o->set) != VL_OK)
            op_note(o, VL_ENOMEM, "out of memory reading a row");
    }
    if (!e->row_bound && stmt_bind_result(e) != VL_OK) {
        /* Connector/C would fetch the next row into a buffer that moved. */
        conn_break(c, VL_ENOMEM, "closed: out of memory binding a result");
        return WAIT;
    }
    mstate(c, S_STMT_FETCHING); /* the next row */
    return GO_ON;
}

static int ph_stmt_freeing(vl_mysql *c, op *o)
{
    c->bret = mysql_stmt_free_result(o->st->stmt);
    if (o->set != NULL) {
        if (vl__mres_finish(o->set) != VL_OK)
            op_note(o, VL_ENOMEM, "out of memory");
        vl__mres_counts(o->set, vl_mysql_result_rows(o->set), 0, mysql_warning_count(c->my));
    }
    /* A statement whose rows could not be read is prepared afresh next
     * time, whatever went wrong. */
    if (((o->err != 0 && o->err != VL_ENOMEM) || o->st->stale) && c->state == ST_OPEN) {
        stmt_evict(c, o->st);
        o->st = NULL;
    }
    op_finish(c, o);
    return GO_ON;
}

/* ---- ping, reset, select db ---- */

static int ph_pinging(vl_mysql *c, op *o, int ready)
{
    int st = c->started ? mysql_ping_cont(&c->iret, c->my, ready)
                        : mysql_ping_start(&c->iret, c->my);

    if (wait_on(c, st))
        return WAIT;
    if (c->iret != 0)
        op_error_my(c, o);
    else
        op_finish(c, o);
    return GO_ON;
}

static int ph_resetting(vl_mysql *c, op *o, int ready)
{
    int st;

    if (!c->started) {
        /* The server drops prepared statements on reset: close ours first
         * (COM_STMT_CLOSE has no reply). */
        stmts_free_all(c);
        st = mysql_reset_connection_start(&c->iret, c->my);
    } else {
        st = mysql_reset_connection_cont(&c->iret, c->my, ready);
    }
    if (wait_on(c, st))
        return WAIT;
    if (c->iret != 0) {
        op_error_my(c, o);
        return GO_ON;
    }
    c->dirty = 0;
    if (schema_changed(c) && (c->cfg.db == NULL || c->cfg.db[0] == '\0')) {
        /* USE ran, and there is no database to go back to. */
        op_note(o, VL_ECLOSED, "its database changed and cannot be unset");
        op_finish(c, o);
        conn_break(c, VL_ECLOSED, "closed: its database changed and cannot be unset");
        return WAIT;
    }
    if (restore_session(c) != VL_OK) {
        op_note(o, VL_ENOMEM, "out of memory restoring the session");
        op_finish(c, o);
        conn_break(c, VL_ECLOSED, "closed: its session could not be restored");
        return WAIT;
    }
    op_finish(c, o);
    return GO_ON;
}

static int ph_selecting_db(vl_mysql *c, op *o, int ready)
{
    int st = c->started ? mysql_select_db_cont(&c->iret, c->my, ready)
                        : mysql_select_db_start(&c->iret, c->my, c->cfg.db);

    if (wait_on(c, st))
        return WAIT;
    if (c->iret != 0)
        op_error_my(c, o); /* internal: the connection is closed */
    else
        op_finish(c, o);
    return GO_ON;
}

/* Runs phases until one waits. `ready` (the MYSQL_WAIT_* events that woke
 * the connection) goes to the first phase only: later ones start fresh. */
static void step(vl_mysql *c, int ready)
{
    int r = GO_ON;

    while (r == GO_ON) {
        op *o = c->cur;
        switch (c->mstate) {
        case S_CONNECTING:      r = ph_connecting(c, ready); break;
        case S_CONNECTING_TLS:  r = ph_connecting_tls(c); break;
        case S_NEXT_OP:         r = ph_next_op(c); break;
        case S_QUERYING:        r = ph_querying(c, o, ready); break;
        case S_READING_RESULT:  r = ph_reading_result(c, o); break;
        case S_FETCHING:        r = ph_fetching(c, o, ready); break;
        case S_NEXT_RESULT:     r = ph_next_result(c, o, ready); break;
        case S_PREPARING:       r = ph_preparing(c, o, ready); break;
        case S_EXECUTING:       r = ph_executing(c, o, ready); break;
        case S_STORING:         r = ph_storing(c, o, ready); break;
        case S_STMT_FETCHING:   r = ph_stmt_fetching(c, o); break;
        case S_STMT_FREEING:    r = ph_stmt_freeing(c, o); break;
        case S_PINGING:         r = ph_pinging(c, o, ready); break;
        case S_RESETTING:       r = ph_resetting(c, o, ready); break;
        case S_SELECTING_DB:    r = ph_selecting_db(c, o, ready); break;
        default:                r = WAIT; break; /* S_IDLE */
        }
        ready = 0;
    }
}

static void drive(vl_mysql *c, int ready)
{
    c->in_drive++;
    step(c, ready);
    c->in_drive--;
    if (c->in_drive == 0 && c->free_pending)
        conn_destroy(c);
}

/* ---- public: lifecycle ---- */

static void handle_free(vl__handle *h)
{
    vl_mysql *c = (vl_mysql *)(void *)((char *)h - offsetof(vl_mysql, handle));

    c->registered = 0;
    vl_mysql_free(c);
}

static void conn_release(vl__handle *h)
{
    vl__free((char *)h - offsetof(vl_mysql, handle));
}

/* VOLLEY_MYSQL_TRACE=1 in the environment traces every connection's state
 * changes (see mstate). Read once per connection: cheap, and a running
 * program can be traced without rebuilding it. */
static int trace_wanted(void)
{
    const char *v = getenv("VOLLEY_MYSQL_TRACE");

    return v != NULL && v[0] != '\0' && strcmp(v, "0") != 0;
}

/* Reads the URL and options into c->cfg: VL_OK, VL_ENOMEM, or the refusal
 * recorded as the connection's failure. */
static int configure(vl_mysql *c, const char *url, const vl_mysql_options *opts)
{
    char *msg = NULL;
    int rc = vl__mysql_config_parse(&c->cfg, url, opts, &msg);

    if (rc != VL_OK && rc != VL_ENOMEM)
        set_failure(c, rc, 0, NULL, msg);
    vl__free(msg);
    return rc;
}

static vl_mysql *conn_new(vl_loop *loop, const char *url, const vl_mysql_options *opts,
                          int pooled)
{
    vl_mysql *c;
    int rc;

    if (loop == NULL)
        return NULL;
    c = vl__calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->loop = loop;
    c->pooled = pooled;
    c->trace = trace_wanted();
    vl__io_init(&c->io, loop, -1, on_io, c);
    vl__timer_init(&c->timer, loop, on_timer, c);
    rc = configure(c, url, opts);
    if (rc == VL_ENOMEM) {
        conn_destroy(c);
        return NULL;
    }
    if (!pooled) {
        vl__handle_add(loop, &c->handle, handle_free);
        c->registered = 1;
    }
    if (rc != VL_OK) {
        c->state = ST_CLOSED;
        return c;
    }
    if (vl__loop_closing(loop)) {
        c->state = ST_CLOSED;
        set_failure(c, VL_ECLOSED, 0, NULL, "loop is closing");
        return c;
    }
    if (c->cfg.connect_timeout_ms != 0) {
        c->deadline_ms = vl_loop_now_ms(loop) + c->cfg.connect_timeout_ms;
        mtimer_start(c, c->cfg.connect_timeout_ms);
    }
    /* A TLS connect resolves the name on its worker: the certificate is
     * checked against the name, never the address. */
    if (c->cfg.socket_path != NULL || c->cfg.tls != VL__MYSQL_TLS_OFF) {
        start_connect(c);
        return c;
    }
    c->state = ST_RESOLVING;
    {
        ticket *t = vl__calloc(1, sizeof(*t));
        vl_future *rf = t != NULL ? vl__resolve(loop, c->cfg.host) : NULL;
        if (rf == NULL) {
            vl__free(t);
            c->state = ST_CLOSED;
            conn_destroy(c);
            return NULL;
        }
        t->c = c;
        c->ticket = t;
        vl_future_then(rf, resolved, t);
    }
    return c;
}

vl_mysql *vl_mysql_new(vl_loop *loop, const char *url, const vl_mysql_options *opts)
{
    return conn_new(loop, url, opts, 0);
}

vl_mysql *vl__mysql_new_pooled(vl_loop *loop, const char *url, const vl_mysql_options *opts)
{
    return conn_new(loop, url, opts, 1);
}

static void conn_destroy(vl_mysql *c)
{
    op *o;

    if (c->registered) {
        vl__handle_remove(c->loop, &c->handle);
        c->registered = 0;
    }
    ticket_drop(c);
    c->hook = NULL;
    vl__mysql_set_done_hook(c, NULL, NULL);
    o = c->cur;
    c->cur = NULL;
    close_handle(c, c->state == ST_OPEN && o == NULL);
    c->state = ST_CLOSED;
    set_failure(c, VL_ECANCELED, 0, NULL, "connection freed");
    if (o != NULL) {
        if (o->f != NULL)
            vl__future_set_source(o->f, NULL, NULL);
        op_complete(o, VL_ECANCELED, NULL, "connection freed");
    }
    fail_queue(c);
    mtimer_stop(c);
    io_off(c);
    vl__mysql_config_clear(&c->cfg);
    vl__free(c->addr);
    vl__free(c->fail_msg);
    c->addr = c->fail_msg = NULL;
    c->freed = 1;
    spare_ops_free(c);
    /* While the loop is being freed, callbacks that still hold `c` run after
     * this: keep the memory until they have (a later vl_mysql_free is then a
     * no-op and every call fails with VL_ECLOSED). */
    vl__handle_bury(c->loop, &c->handle, conn_release);
}

void vl_mysql_free(vl_mysql *c)
{
    if (c == NULL || c->freed)
        return;
    if (c->in_drive) {
        c->free_pending = 1;
        return;
    }
    conn_destroy(c);
}

const char *vl_mysql_error(const vl_mysql *c)
{
    return c != NULL && c->last_err != NULL ? c->last_err : "";
}

const char *vl_mysql_display(const vl_mysql *c)
{
    return c != NULL && c->cfg.display != NULL ? c->cfg.display : "";
}

int vl_mysql_is_open(const vl_mysql *c)
{
    return c != NULL && c->state == ST_OPEN;
}

/* ---- public: operations ---- */

vl_future *vl_mysql_ready(vl_mysql *c)
{
    op *o;

    if (c == NULL)
        return NULL;
    o = op_new(c, OP_READY);
    return o != NULL ? op_submit(c, o) : NULL;
}

/* Whether SQL text may take a named lock. GET_LOCK sets no session-state
 * flag, so a pooled connection that ran it is reset (which releases every
 * named lock) before reuse. A mention in a comment or a string costs one
 * needless reset; a lock taken out of sight (a stored routine, a trigger,
 * PREPARE of built SQL) is not seen: see the clean-return rule in
 * volley/mysql.h. */
static int mentions_get_lock(const char *sql, size_t len)
{
    const char *p = sql, *end = sql + len, *u;

    /* Runs on every pooled statement: jump from '_' to '_' (rare in SQL)
     * and compare the letters around it, ASCII-case-insensitively. */
    while ((u = memchr(p, '_', (size_t)(end - p))) != NULL) {
        if (u - sql >= 3 && end - u >= 5 && (u[-3] | 0x20) == 'g' && (u[-2] | 0x20) == 'e' &&
            (u[-1] | 0x20) == 't' && (u[1] | 0x20) == 'l' && (u[2] | 0x20) == 'o' &&
            (u[3] | 0x20) == 'c' && (u[4] | 0x20) == 'k')
            return 1;
        p = u + 1;
    }
    return 0;
}

/* Gives a new op its SQL (under a server-side time limit when timeout_ms
 * is not 0) and its copied parameters: n of them (checked, their string
 * bytes adding up to total), or for a bulk execution nrows rows of n.
 * VL_OK or VL_ENOMEM. */
static int op_fill(op *o, const char *sql, uint64_t timeout_ms, const vl_mysql_param *params,
                   size_t n, size_t total, size_t nrows)
{
    size_t len = strlen(sql);

    if (timeout_ms != 0)
        o->sql = wrap_timeout(sql, len, timeout_ms, &o->len);
    else if (op_set_sql(o, sql, len) != VL_OK)
        o->sql = NULL;
    if (o->sql == NULL)
        return VL_ENOMEM;
    /* A prepared statement's SQL is looked at once, when it is prepared
     * (stmt_begin). */
    o->locks = o->c->pooled && o->kind == OP_QUERY && mentions_get_lock(sql, len);
    o->batch_rows = DEFAULT_BATCH;
    o->bulk_rows = nrows;
    o->ncols = nrows != 0 ? n : 0;
    if (params != NULL && vl__mparams_copy(&o->p, params, nrows != 0 ? nrows * n : n, total) !=
                              VL_OK)
        return VL_ENOMEM;
    return VL_OK;
}

int vl__mysql_submit_into(vl_mysql *c, vl_future *f, int kind, const char *sql,
                          const vl_mysql_param *params, size_t n, size_t nrows)
{
    size_t count = kind == VL__MYSQL_BULK ? n * nrows : n, total = 0, bad;
    const char *why;
    op *o;

    if (kind != VL__MYSQL_QUERY &&
        vl__mysql_check_params(params, count, &total, &bad, &why) != VL_OK)
        return VL_EINVAL; /* the caller checked them */
    o = op_alloc(c, kind == VL__MYSQL_QUERY ? OP_QUERY : OP_EXEC);
    if (o == NULL)
        return VL_ENOMEM;
    if (op_fill(o, sql, kind == VL__MYSQL_QUERY ? c->cfg.query_timeout_ms : 0, params, n, total,
                kind == VL__MYSQL_BULK ? nrows : 0) != VL_OK) {
        op_free(o);
        return VL_ENOMEM;
    }
    o->f = f;
    vl__future_set_source(f, &op_ops, o);
    op_submit(c, o);
    return VL_OK;
}

static vl_future *query_op(vl_mysql *c, const char *sql, uint64_t timeout_ms, int stream,
                           size_t batch_rows, vl_mysql_batch_cb cb, void *ud)
{
    op *o;

    if (c == NULL)
        return NULL;
    if (c->freed)
        return vl__future_failed(c->loop, VL_ECLOSED, "connection freed");
    if (sql == NULL || (stream && cb == NULL))
        return vl__future_failed(c->loop, VL_EINVAL, "%s: no SQL or no callback", c->cfg.display);
    o = op_new(c, OP_QUERY);
    if (o == NULL)
        return NULL;
    if (op_fill(o, sql, timeout_ms != 0 ? timeout_ms : c->cfg.query_timeout_ms, NULL, 0, 0, 0) !=
        VL_OK) {
        op_discard(o);
        return NULL;
    }
    o->stream = stream;
    o->batch_rows = batch_rows ? batch_rows : DEFAULT_BATCH;
    o->cb = cb;
    o->ud = ud;
    return op_submit(c, o);
}

vl_future *vl_mysql_query(vl_mysql *c, const char *sql)
{
    return query_op(c, sql, 0, 0, 0, NULL, NULL);
}

vl_future *vl_mysql_query_timeout(vl_mysql *c, const char *sql, uint64_t timeout_ms)
{
    return query_op(c, sql, timeout_ms, 0, 0, NULL, NULL);
}

vl_future *vl_mysql_query_stream(vl_mysql *c, const char *sql, size_t batch_rows,
                                 vl_mysql_batch_cb cb, void *ud)
{
    return query_op(c, sql, 0, 1, batch_rows, cb, ud);
}

/* Queues a prepared statement with its parameters (checked already, their
 * string bytes adding up to `total`): n of them, or for a bulk execution
 * nrows rows of n. */
static vl_future *exec_submit(vl_mysql *c, const char *sql, const vl_mysql_param *params,
                              size_t n, size_t total, size_t nrows)
{
    op *o = op_new(c, OP_EXEC);

    if (o == NULL)
        return NULL;
    if (op_fill(o, sql, 0, NULL, n, total, nrows) != VL_OK) {
        op_discard(o);
        return NULL;
    }
    /* The common case, a cached statement on an idle connection, is bound
     * inside this call (op_submit runs it at once: ph_next_op, ph_preparing
     * with the entry found here, then stmt_bind, with nothing in between
     * that could change the cache), so it reads the caller's parameters
     * where they are instead of a copy. Any other statement copies them. */
    if (nrows == 0 && n > 0 && !c->freed && c->state == ST_OPEN && !vl__loop_closing(c->loop) &&
        c->qhead == NULL && c->cur == NULL && !c->in_drive && !c->kick &&
        (o->st = stmt_find(c, o->sql, o->len)) != NULL) {
        o->p.params = (vl_mysql_param *)(uintptr_t)params;
        o->p.n = n;
        o->p_borrowed = 1;
    } else if (params != NULL &&
               vl__mparams_copy(&o->p, params, nrows != 0 ? nrows * n : n, total) != VL_OK) {
        op_discard(o);
        return NULL;
    }
    return op_submit(c, o);
}

vl_future *vl__mysql_run_checked(vl_mysql *c, int kind, const char *sql,
                                 const vl_mysql_param *params, size_t n, size_t nrows,
                                 size_t total)
{
    if (kind == VL__MYSQL_QUERY)
        return vl_mysql_query(c, sql);
    if (c->freed)
        return vl__future_failed(c->loop, VL_ECLOSED, "connection freed");
    return exec_submit(c, sql, params, n, total, kind == VL__MYSQL_BULK ? nrows : 0);
}

vl_future *vl_mysql_execute(vl_mysql *c, const char *sql, const vl_mysql_param *params, size_t n)
{
    size_t total = 0, bad = 0;
    const char *why = NULL;

    if (c == NULL)
        return NULL;
    if (c->freed)
        return vl__future_failed(c->loop, VL_ECLOSED, "connection freed");
    if (sql == NULL || (n > 0 && params == NULL))
        return vl__future_failed(c->loop, VL_EINVAL, "%s: no SQL or no parameters",
                                 c->cfg.display);
    if (vl__mysql_check_params(params, n, &total, &bad, &why) != VL_OK)
        return vl__future_failed(c->loop, VL_EINVAL, "%s: parameter %zu %s", c->cfg.display,
                                 bad, why);
    return exec_submit(c, sql, params, n, total, 0);
}

vl_future *vl_mysql_execute_bulk(vl_mysql *c, const char *sql, const vl_mysql_param *params,
                                 size_t ncols, size_t nrows)
{
    size_t total = 0, row = 0, col = 0;
    char why[160];

    if (c == NULL)
        return NULL;
    if (c->freed)
        return vl__future_failed(c->loop, VL_ECLOSED, "connection freed");
    if (sql == NULL || params == NULL || ncols == 0 || nrows == 0 || nrows > SIZE_MAX / ncols ||
        nrows * ncols > SIZE_MAX / sizeof(vl_mysql_param))
        return vl__future_failed(c->loop, VL_EINVAL,
                                 "%s: bulk execution needs SQL and at least one row and column",
                                 c->cfg.display);
    if (vl__mbulk_check(params, ncols, nrows, &total, &row, &col, why, sizeof(why)) != VL_OK)
        return vl__future_failed(c->loop, VL_EINVAL, "%s: bulk row %zu column %zu %s",
                                 c->cfg.display, row, col, why);
    return exec_submit(c, sql, params, ncols, total, nrows);
}

vl_future *vl_mysql_ping(vl_mysql *c)
{
    op *o;

    if (c == NULL)
        return NULL;
    o = op_new(c, OP_PING);
    return o != NULL ? op_submit(c, o) : NULL;
}

vl_future *vl__mysql_reset(vl_mysql *c)
{
    op *o = op_new(c, OP_RESET);

    return o != NULL ? op_submit(c, o) : NULL;
}

long vl_mysql_escape(vl_mysql *c, char *dst, size_t dstcap, const char *src, size_t len)
{
    if (c == NULL || dst == NULL || (src == NULL && len > 0))
        return VL_EINVAL;
    if (len > (SIZE_MAX - 1) / 2 || dstcap < 2 * len + 1 || len > ULONG_MAX / 2)
        return VL_EINVAL;
    if (c->state != ST_OPEN || c->my == NULL)
        return VL_ESTATE;
    return (long)mysql_real_escape_string(c->my, dst, src != NULL ? src : "",
                                          (unsigned long)len);
}

/* ---- pool hooks ---- */

void vl__mysql_set_hook(vl_mysql *c, vl__mysql_hook fn, void *ud)
{
    c->hook = fn;
    c->hook_ud = ud;
}

void vl__mysql_set_done_hook(vl_mysql *c, vl__mysql_done_hook fn, void *ud)
{
    c->done_hook = fn;
    c->done_ud = ud;
    if (fn == NULL && c->done_queued) {
        vl__defer_cancel(c->loop, &c->done_defer);
        c->done_queued = 0;
    }
}

unsigned vl__mysql_in_use(const vl_mysql *c)
{
    unsigned s = 0;
    const op *o;

    if (c->state != ST_OPEN)
        s |= VL__MYSQL_BROKEN;
    if (c->cur != NULL && !c->cur->internal)
        s |= VL__MYSQL_BUSY;
    for (o = c->qhead; o != NULL; o = o->next)
        if (!o->internal)
            s |= VL__MYSQL_BUSY;
    return s;
}

unsigned vl__mysql_state(const vl_mysql *c)
{
    unsigned s = vl__mysql_in_use(c);

    if (server_status(c) & SERVER_STATUS_IN_TRANS)
        s |= VL__MYSQL_IN_TRANS;
    /* A pooled session tracks its schema (POOLED_SESSION_SQL): a USE shows
     * as a session change, which note_status has seen. Others are asked. */
    if (c->dirty || (!c->pooled && c->my != NULL && schema_changed(c)))
        s |= VL__MYSQL_DIRTY;
    return s;
}

void vl__mysql_hold(vl_mysql *c, int on)
{
    c->held = on != 0;
    settle(c);
}

int vl__mysql_probe_idle(vl_mysql *c, int poll_socket)
{
    struct pollfd pfd;
    vl__mysql_hook hook;

    if (c->state != ST_OPEN)
        return 0;
    if (c->cur != NULL || c->qhead != NULL || !poll_socket)
        return 1; /* restoring its session after a reset: in use, not idle */
    pfd.fd = sock_of(c);
    pfd.events = POLLIN;
    pfd.revents = 0;
    if (pfd.fd < 0)
        return 0;
    if (poll(&pfd, 1, 0) == 0)
        return 1;
    /* Readable while idle: the server hung up and the loop has not noticed
     * yet. The caller closes it; no hook call. */
    hook = c->hook;
    c->hook = NULL;
    c->lost_unreported = 1;
    conn_break(c, VL_ECLOSED, "lost: the server closed it while idle");
    c->hook = hook;
    return 0;
}

int vl__mysql_check_url(vl_loop *loop, const char *url, const vl_mysql_options *opts, char **msg)
{
    vl_mysql *c = vl__calloc(1, sizeof(*c));
    int rc;

    *msg = NULL;
    if (c == NULL)
        return VL_ENOMEM;
    c->loop = loop;
    c->state = ST_CLOSED;
    vl__io_init(&c->io, loop, -1, on_io, c);
    vl__timer_init(&c->timer, loop, on_timer, c);
    rc = configure(c, url, opts);
    if (rc != VL_OK && rc != VL_ENOMEM) {
        *msg = vl__strdup(c->fail_msg != NULL ? c->fail_msg : vl_strerror(rc));
        if (*msg == NULL)
            rc = VL_ENOMEM;
    }
    conn_destroy(c);
    return rc;
}
