/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/redis.c - a Redis connection: hiredis's async API on volley's loop.
 *
 * The adapter. hiredis asks for read and write interest through five hooks
 * (ev.addRead ... ev.cleanup); they drive one vl__io watcher. hiredis's own
 * libev adapter is not used because only lib/loop.c may include <ev.h>.
 *
 * The I/O is ours. hiredis connects (redisAsyncConnect and its connect
 * step) and keeps the reply callbacks, the output buffer and the reader;
 * once connected, volley reads and writes the socket itself ("reading and
 * writing" below). Reads go through volley's RESP framer, which hands the
 * reader only as many complete replies as commands are owed, so a reply
 * nobody asked for never reaches hiredis's assert in redisProcessCallbacks,
 * and refuses a reply over a limit before hiredis allocates for it.
 *
 * SIGPIPE. A write to a peer that has closed raises SIGPIPE, whose default
 * action kills the process; a library must neither allow that nor change
 * the process's disposition. Every write of ours is send(MSG_NOSIGNAL).
 * hiredis writes with plain write() only from redisAsyncHandleWrite, which
 * we call only for the connect step, while its output buffer is still empty
 * (the handshake is queued once it returns); should it write there after
 * all, connect_step blocks SIGPIPE in the calling thread for the call and,
 * if a SIGPIPE became pending that was not pending before, consumes it with
 * a zero-timeout sigtimedwait before restoring the mask (as libcurl does).
 *
 * Matching replies. hiredis calls back the reply callbacks in the order the
 * commands were written; each callback gets its entry as private data, so a
 * reply always reaches the entry it belongs to. An entry whose future was
 * cancelled or timed out stays in place with its future pointer cleared:
 * its late reply is read and dropped, never handed to the next command.
 *
 * Safe points. Our hiredis callbacks never run user code: completing a
 * future only queues it on the loop. So hiredis is never on the stack when
 * user code runs, and vl_redis_free can call redisAsyncFree directly. The
 * teardowns decided inside io_cb or flush_cb (a failed handshake step, a
 * protocol error, EOF, a free requested by a pool from inside an event) are
 * recorded and carried out at the end of them (after_hiredis), because
 * hiredis must not free a context from inside its own reply processing.
 *
 * Teardown. Whoever starts it (hiredis on a failed connect, or us on EOF,
 * an I/O error, a protocol error or an overdue reply),
 * hiredis first calls every pending reply callback with a NULL reply, then
 * the cleanup hook, then frees the context. The NULL replies fail their
 * futures; the cleanup hook moves the connection to DOWN and schedules the
 * reconnect.
 *
 * Command timeouts. All commands of a connection have the same timeout, so
 * their deadlines grow in the order they were issued, which is also the
 * order of the lists. One timer serves them all, and a cursor walks the
 * in-flight list once: no per-command timer, no rescan. Blocking commands
 * (BLPOP...) add their own timeout and so break that order: the cursor
 * passes them, and they count only once they are the oldest. When the
 * oldest reply is overdue the connection is closed (nothing behind it can
 * arrive first).
 */
#include "redis_internal.h"
#include "url.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/sds.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

/* hiredis 0.14 exports redisProcessCallbacks (it is what redisAsyncHandleRead
 * calls once it has fed the reader) but does not declare it in async.h. We
 * feed the reader ourselves, through the framer, and then need exactly it. */
void redisProcessCallbacks(redisAsyncContext *ac);

/* K_HELLO is the handshake's "PING <token>": its echo makes a connection
 * READY. K_PING is a keepalive PING of the pool's. */
enum { K_USER = 0, K_AUTH, K_SELECT, K_HELLO, K_PING };
enum { W_NONE = 0, W_WAIT, W_FLIGHT };
enum { S_CONNECTING = VL_REDIS_CONNECTING, S_READY = VL_REDIS_READY, S_DOWN = VL_REDIS_DOWN,
       S_INVALID = VL_REDIS_INVALID };

/* What a command does to the connection state a lease must return clean. */
#define CF_MULTI 1u
#define CF_EXEC 2u    /* EXEC and DISCARD: end MULTI and WATCH */
#define CF_WATCH 4u
#define CF_UNWATCH 8u
#define CF_SELECT 16u
#define CF_CLIENT 32u /* look at the subcommand */
#define CF_DIRTY 64u  /* RESET, AUTH, CLIENT TRACKING, SWAPDB: state no
                       * reply tells us how to undo */

/* Entries kept for reuse per connection: enough for a deep pipeline without
 * allocating per command in steady state, bounded so a burst is returned. */
#define SPARE_MAX 1024

/* Bytes of commands handed to hiredis and not yet written, at most (see
 * "Back-pressure" in volley/redis.h). It also keeps the output buffer below
 * 2 GiB, where hiredis's sdsrange (int offsets) would overflow. */
#define OBUF_MAX (1024ull * 1024 * 1024)

typedef struct rentry rentry;
struct rentry {
    rentry *prev, *next;
    vl_redis *c;
    vl_future *f;      /* NULL for handshake entries and once abandoned */
    char *cmd;         /* W_WAIT: the formatted command, not yet written */
    size_t len;
    uint64_t deadline; /* loop ms; 0: none */
    unsigned char kind;
    unsigned char flags;
    unsigned char where;
    unsigned char block; /* a blocking command (BLPOP...): its deadline is its own */
    char verb[24];       /* the command's name, upper case, for messages */
};

typedef struct rlist {
    rentry *head, *tail;
    size_t n;
} rlist;

/* A resolution in progress. Its callback may run after the connection was
 * freed (the future's callback is owed once), so it goes through this. */
typedef struct rtoken {
    vl_redis *c;
    vl_future *f;
} rtoken;

/* A watcher of the connection and whether we unref'd it (pooled idle). */
typedef struct ctimer {
    vl__timer t;
    int unref;
} ctimer;

struct vl_redis {
    vl_loop *loop;
    vl__handle handle;
    int registered;
    vl__url url;
    int has_url;
    int db;
    int state;
    int invalid_status;
    vl_redis_options opts;
    redisAsyncContext *ac;
    vl__io io;
    vl__defer flush;   /* writes the commands of this iteration before the poll */
    int io_events;
    int io_unref;
    ctimer connect_timer, retry_timer, cmd_timer;
    uint64_t cmd_at;   /* the deadline cmd_timer is armed for */
    rlist wait;        /* user commands waiting for the handshake */
    rlist flight;      /* written to hiredis, reply due */
    rentry *tcur;      /* first in-flight entry the timeout scan has not passed */
    rentry *wcur;      /* first in-flight entry not yet written in full */
    size_t wleft;      /* bytes of wcur still to write */
    size_t nwritten;   /* in-flight entries written in full: replies owed */
    vl__resp resp;     /* the framer of this connection's reply stream */
    vl__reply_build build; /* builds the replies hiredis's reader parses */
    char token[24];    /* the handshake PING's argument, echoed by the server */
    int hs_started;    /* the handshake commands are queued */
    rentry *spare;
    size_t nspare;
    size_t nuser;      /* user entries in wait + flight */
    int handshake_left;
    rtoken *resolving;
    char *err;         /* last error message */
    char *drop_msg;    /* message for the teardown under way (NULL: no memory) */
    int drop_status;
    int drop_set;      /* drop_status is set for the teardown under way */
    unsigned attempts; /* failed attempts since the last handshake */
    int ever_ready;
    int in_hiredis;
    int tearing;       /* inside our own redisAsyncFree */
    int drop_requested;
    int free_requested;
    int closing;
    int weak;          /* pooled: idle means unref'd */
    int held;          /* pooled, but its owner has work waiting on it */
    int in_multi, watching, db_changed, dirty;
    int dying;         /* a teardown is decided or under way: not ready any more */
    unsigned epoch;
    uint64_t connects, reconnects, connect_errors;
    vl__redis_event_fn ev_fn;
    void *ev_ud;
};

static void conn_down(vl_redis *c, int status, const char *msg);
static int classify(const char *cmd, size_t len, unsigned *flags, uint64_t *block, char *name,
                    size_t namelen);
static void request_drop(vl_redis *c, int status, const char *msg);
static void drop_with(vl_redis *c, int status, const char *what, const char *why);
static void start_attempt(vl_redis *c);
static void hold_settle(vl_redis *c);

/* ---- small helpers ---- */

static void set_str(char **dst, const char *s)
{
    char *copy = s != NULL ? vl__strdup(s) : NULL;

    vl__free(*dst);
    *dst = copy;
}

/* Reports to the pool. While the connection is being freed only DONE goes
 * out, so the pool's count of pending commands stays exact. */
static void emit(vl_redis *c, int event, int status)
{
    if (c->ev_fn != NULL && (!c->closing || event == VL__REDIS_EV_DONE))
        c->ev_fn(c, event, status, c->ev_ud);
}

static void list_append(rlist *l, rentry *e)
{
    e->next = NULL;
    e->prev = l->tail;
    if (l->tail != NULL)
        l->tail->next = e;
    else
        l->head = e;
    l->tail = e;
    l->n++;
}

static void list_unlink(rlist *l, rentry *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        l->head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        l->tail = e->prev;
    e->prev = e->next = NULL;
    l->n--;
}

/* ---- holding the loop ----
 * A standalone connection keeps the loop running like any open handle. A
 * pooled one lets go of it while nothing is pending and its pool has nobody
 * waiting (`held`): its watchers are unref'd, and ref'd again before anything changes them (libev wants a
 * watcher ref'd again before it is stopped). A one-shot timer that fires
 * was stopped by libev itself, so its callback re-refs first. */

static void io_ref(vl_redis *c)
{
    if (c->io_unref) {
        vl__loop_ref(c->loop);
        c->io_unref = 0;
    }
}

static void timer_ref(vl_redis *c, ctimer *t)
{
    if (t->unref) {
        vl__loop_ref(c->loop);
        t->unref = 0;
    }
}

static void timer_start(vl_redis *c, ctimer *t, uint64_t ms)
{
    timer_ref(c, t);
    vl__timer_start(&t->t, ms);
}

static void timer_stop(vl_redis *c, ctimer *t)
{
    timer_ref(c, t);
    vl__timer_stop(&t->t);
}

static void io_apply(vl_redis *c)
{
    int fd = c->ac != NULL ? c->ac->c.fd : -1;

    io_ref(c);
    vl__io_set(&c->io, fd, fd >= 0 ? c->io_events : 0);
}

static void hold_settle(vl_redis *c)
{
    ctimer *ts[2];
    int i;

    if (!c->weak || c->closing)
        return;
    ts[0] = &c->connect_timer;
    ts[1] = &c->retry_timer;
    if (c->nuser > 0 || c->held) {
        io_ref(c);
        for (i = 0; i < 2; i++)
            timer_ref(c, ts[i]);
        return;
    }
    if (!c->io_unref && c->io.events != 0 && c->io.fd >= 0) {
        vl__loop_unref(c->loop);
        c->io_unref = 1;
    }
    for (i = 0; i < 2; i++) {
        if (!ts[i]->unref && vl__timer_active(&ts[i]->t)) {
            vl__loop_unref(c->loop);
            ts[i]->unref = 1;
        }
    }
}

/* ---- entries ---- */

static rentry *entry_get(vl_redis *c)
{
    rentry *e = c->spare;

    if (e != NULL) {
        c->spare = e->next;
        c->nspare--;
    } else {
        e = vl__malloc(sizeof(*e));
        if (e == NULL)
            return NULL;
    }
    memset(e, 0, sizeof(*e));
    e->c = c;
    return e;
}

/* Recycles an entry that has left both lists. */
static void entry_put(vl_redis *c, rentry *e)
{
    int user = e->kind == K_USER && e->where != W_NONE;

    if (e->cmd != NULL)
        vl__redis_cmd_free(e->cmd);
    e->cmd = NULL;
    e->where = W_NONE;
    if (c->nspare < SPARE_MAX) {
        e->next = c->spare;
        c->spare = e;
        c->nspare++;
    } else {
        vl__free(e);
    }
    if (user && --c->nuser == 0) {
        timer_stop(c, &c->cmd_timer);
        emit(c, VL__REDIS_EV_IDLE, VL_OK);
    }
}

static void wait_unlink(vl_redis *c, rentry *e)
{
    list_unlink(&c->wait, e);
}

/* `e->len` is the length of its command, which goes to the end of hiredis's
 * output buffer: the write cursor knows when it has left in full. */
static void flight_append(vl_redis *c, rentry *e)
{
    e->where = W_FLIGHT;
    list_append(&c->flight, e);
    if (c->tcur == NULL)
        c->tcur = e;
    if (c->wcur == NULL) {
        c->wcur = e;
        c->wleft = e->len;
    }
}

static void flight_unlink(vl_redis *c, rentry *e)
{
    if (c->tcur == e)
        c->tcur = e->next;
    if (c->wcur == e) {
        c->wcur = e->next;
        c->wleft = e->next != NULL ? e->next->len : 0;
    }
    list_unlink(&c->flight, e);
}

/* `n` more bytes of the output buffer reached the socket: the commands they
 * complete are owed a reply from now on, and not before. */
static void flight_written(vl_redis *c, size_t n)
{
    while (n > 0 && c->wcur != NULL) {
        if (n < c->wleft) {
            c->wleft -= n;
            return;
        }
        n -= c->wleft;
        c->nwritten++;
        c->wcur = c->wcur->next;
        c->wleft = c->wcur != NULL ? c->wcur->len : 0;
    }
}

/* Completes the future of `e` (if any) and forgets it. */
/* A user command's message names the command and the endpoint: "GET on
 * redis://127.0.0.1:6379: <what happened>". Messages that already start
 * with the endpoint get the verb in front only. NULL when out of memory. */
static char *entry_msg(const vl_redis *c, const rentry *e, const char *msg)
{
    size_t dl = strlen(c->url.display);

    if (msg == NULL)
        msg = "failed";
    if (e->verb[0] == '\0' || !c->has_url)
        return vl__strdup(msg);
    if (dl > 0 && strncmp(msg, c->url.display, dl) == 0)
        return vl__asprintf("%s on %s", e->verb, msg);
    if (strncmp(msg, "connect ", 8) == 0 || strstr(msg, c->url.display) != NULL)
        return vl__asprintf("%s: %s", e->verb, msg);
    return vl__asprintf("%s on %s: %s", e->verb, c->url.display, msg);
}

static void entry_fail(vl_redis *c, rentry *e, int status, const char *msg)
{
    vl_future *f = e->f;
    char *m;

    if (f == NULL)
        return;
    e->f = NULL;
    m = entry_msg(c, e, msg);
    vl__future_complete(f, status, NULL, VL__VAL_NONE, NULL, m != NULL ? m : msg);
    vl__free(m);
    emit(c, VL__REDIS_EV_DONE, status);
}

static void free_reply_value(void *v)
{
    vl_redis_reply_free(v);
}

/* Hands the reply hiredis just parsed (built in one block by our object
 * functions) to the future of `e`, which takes it over. */
static void entry_deliver(vl_redis *c, rentry *e, void *reply)
{
    vl_future *f = e->f;
    vl_redis_reply *copy;

    if (f == NULL)
        return;
    e->f = NULL;
    copy = vl__redis_reply_take(reply);
    if (copy == NULL) {
        vl__future_complete(f, VL_ENOMEM, NULL, VL__VAL_NONE, NULL, "out of memory for a reply");
        emit(c, VL__REDIS_EV_DONE, VL_ENOMEM);
    } else if (vl__redis_reply_is_error(copy)) {
        /* The reply keeps the server's own text; the message says where. */
        char *m = entry_msg(c, e, vl__redis_reply_text(copy));
        vl__future_complete(f, VL_ESERVER, copy, VL__VAL_REDIS, free_reply_value,
                            m != NULL ? m : vl__redis_reply_text(copy));
        vl__free(m);
        emit(c, VL__REDIS_EV_DONE, VL_ESERVER);
    } else {
        vl__future_complete(f, VL_OK, copy, VL__VAL_REDIS, free_reply_value, NULL);
        emit(c, VL__REDIS_EV_DONE, VL_OK);
    }
}

/* The cancel hook: the future gave up (cancel, timeout, free). A command
 * still waiting for the handshake is dropped unsent; one handed to hiredis
 * (in its output buffer or on the wire) keeps its entry for the late reply. */
static void entry_cancel(void *source, vl_future *f, int status)
{
    rentry *e = source;
    vl_redis *c = e->c;

    VL__UNUSED(f);
    e->f = NULL;
    if (e->where == W_WAIT) {
        wait_unlink(c, e);
        entry_put(c, e);
    }
    emit(c, VL__REDIS_EV_DONE, status);
    hold_settle(c);
}

static void entry_describe(void *source, char *buf, size_t n)
{
    rentry *e = source;

    snprintf(buf, n, "%s on %s", e->verb[0] ? e->verb : "command", e->c->url.display);
}

static const vl__source_ops entry_ops = {.cancel = entry_cancel, .describe = entry_describe};

/* ---- command timeouts ---- */

/* The first entry of the wait list that is due by `now` (now 0: the one
 * with the earliest deadline), or NULL. The list is in the order commands
 * were issued, so its non-blocking entries are in deadline order: the walk
 * passes the blocking ones (their deadline is their own, or none) and stops
 * at the first non-blocking one with a deadline. */
static rentry *wait_due(const vl_redis *c, uint64_t now)
{
    rentry *e, *first = NULL;

    for (e = c->wait.head; e != NULL; e = e->next) {
        if (e->deadline == 0)
            continue;
        if (now != 0 && e->deadline <= now)
            return e;
        if (now == 0 && (first == NULL || e->deadline < first->deadline))
            first = e;
        if (!e->block)
            break;
    }
    return first;
}

static void arm_cmd_timer(vl_redis *c)
{
    uint64_t next = 0, now = vl_loop_now_ms(c->loop);
    rentry *e, *h = c->flight.head;

    /* The cursor skips what cannot time out alone; blocking commands have
     * deadlines out of order and count only once they are the oldest. */
    while ((e = c->tcur) != NULL &&
           (e->kind != K_USER || e->f == NULL || e->block || e->deadline == 0))
        c->tcur = e->next;
    if (e != NULL)
        next = e->deadline;
    /* The oldest reply due, whatever its kind: a keepalive PING too. */
    if (h != NULL && h->deadline != 0 && (next == 0 || h->deadline < next))
        next = h->deadline;
    e = wait_due(c, 0);
    if (e != NULL && (next == 0 || e->deadline < next))
        next = e->deadline;
    c->cmd_at = next;
    if (next == 0)
        timer_stop(c, &c->cmd_timer);
    else
        timer_start(c, &c->cmd_timer, next > now ? next - now : 0);
}

/* A new entry has `deadline`: arms the timer unless it is armed for an
 * earlier one already (a blocking command's later deadline does not hide
 * it). */
static void arm_for(vl_redis *c, uint64_t deadline)
{
    if (deadline != 0 && (!vl__timer_active(&c->cmd_timer.t) || deadline < c->cmd_at))
        arm_cmd_timer(c);
}

static void cmd_timer_cb(vl__timer *t, void *ud)
{
    vl_redis *c = ud;
    uint64_t now = vl_loop_now_ms(c->loop);
    char msg[256];
    rentry *e;

    VL__UNUSED(t);
    if (c->cmd_timer.unref) { /* libev stopped it and dropped its count */
        vl__loop_ref(c->loop);
        c->cmd_timer.unref = 0;
    }
    snprintf(msg, sizeof(msg), "%s: command timed out after %" PRIu64 " ms", c->url.display,
             c->opts.command_timeout_ms);
    /* From the head each time: failing an entry may change the list. */
    while ((e = wait_due(c, now)) != NULL) {
        wait_unlink(c, e);
        entry_fail(c, e, VL_ETIMEDOUT, msg);
        entry_put(c, e);
    }
    /* The oldest reply is overdue: nothing behind it can arrive first, so
     * the connection is stuck. Close it rather than let everything queued
     * behind it time out too. A keepalive PING counts like a command. */
    e = c->flight.head;
    if (e != NULL && e->deadline != 0 && e->deadline <= now &&
        c->ac != NULL && !c->dying && !c->closing) {
        char *why = vl__asprintf("%s: connection closed: %s was overdue (command "
                                 "timeout %" PRIu64 " ms)",
                                 c->url.display,
                                 e->kind == K_PING ? "the reply to a keepalive PING" : "a reply",
                                 c->opts.command_timeout_ms);
        /* Not ready from here on: failing the entry reports DONE, and a pool
         * must not route a new command to a connection about to close. */
        c->dying = 1;
        entry_fail(c, e, VL_ETIMEDOUT, msg);
        request_drop(c, VL_ECONN, why != NULL ? why : "connection closed: a reply was overdue");
        vl__free(why);
        hold_settle(c);
        return;
    }
    while ((e = c->tcur) != NULL) {
        if (e->kind == K_USER && e->f != NULL && !e->block && e->deadline != 0) {
            if (e->deadline > now)
                break;
            entry_fail(c, e, VL_ETIMEDOUT, msg); /* the reply will be dropped */
        }
        c->tcur = e->next;
    }
    if (c->nuser > 0)
        arm_cmd_timer(c);
    hold_settle(c);
}

/* ---- hiredis callbacks and hooks ---- */

static void reply_cb(redisAsyncContext *ac, void *reply, void *privdata);

/* Text of a teardown hiredis started (EOF, I/O error, failed connect). */
static char *describe_loss(vl_redis *c, const redisAsyncContext *ac)
{
    const char *why = ac->c.errstr[0] != '\0' ? ac->c.errstr : "connection closed";

    if (c->state == S_CONNECTING)
        return vl__asprintf("connect %s: %s", c->url.display, why);
    return vl__asprintf("%s: connection lost: %s", c->url.display, why);
}

static void set_drop(vl_redis *c, int status, const char *msg)
{
    c->drop_set = 1;
    c->drop_status = status;
    set_str(&c->drop_msg, msg);
}

/* Hands `cmd` (len bytes) to hiredis with `e` as its callback's data.
 * hiredis 0.14 answers REDIS_OK even when it had no memory for the
 * callback or for appending the command, and replies would then reach the
 * wrong entries: so check that both happened. Returns 1 when queued; 0 when
 * hiredis refused (the entry left the in-flight list); -1 when it broke
 * the context: `e` has failed with VL_ENOMEM and the connection is being
 * dropped. */
static int queue_cmd(vl_redis *c, rentry *e, char *cmd, size_t len)
{
    redisAsyncContext *ac = c->ac;
    size_t before = sdslen(ac->c.obuf);
    int have_cb;

    e->len = len;
    flight_append(c, e);
    if (redisAsyncFormattedCommand(ac, reply_cb, e, cmd, len) != REDIS_OK) {
        flight_unlink(c, e);
        return 0;
    }
    have_cb = ac->replies.tail != NULL && ac->replies.tail->privdata == e;
    if (have_cb && sdslen(ac->c.obuf) == before + len)
        return 1;
    c->dying = 1; /* before DONE goes out: see cmd_timer_cb */
    entry_fail(c, e, VL_ENOMEM, "out of memory queueing the command");
    if (!have_cb) {
        /* hiredis will never call back for it: it leaves now. */
        flight_unlink(c, e);
        entry_put(c, e);
    }
    drop_with(c, VL_ECONN, "connection closed: ", "out of memory queueing a command");
    return -1;
}

/* Writes `e` to hiredis; takes cmd. On failure the entry fails alone. */
static void submit(vl_redis *c, rentry *e, char *cmd, size_t len)
{
    if (sdslen(c->ac->c.obuf) + (uint64_t)len > OBUF_MAX) {
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "%s: output buffer full: a command of %zu bytes would take the commands "
                 "not yet written past %llu bytes",
                 c->url.display, len, (unsigned long long)OBUF_MAX);
        e->where = W_FLIGHT; /* counted out by entry_put */
        entry_fail(c, e, VL_EBUSY, msg);
        entry_put(c, e);
    } else if (queue_cmd(c, e, cmd, len) == 0) {
        entry_fail(c, e, VL_ECONN, "connection is closing");
        entry_put(c, e);
    }
    vl__redis_cmd_free(cmd);
}

static void become_ready(vl_redis *c)
{
    vl__resp_limits lim;
    rentry *e;

    c->state = S_READY;
    c->attempts = 0;
    /* From here on replies are the user's: their limits apply. Nothing of
     * theirs can be in the framer yet (none of their commands was written). */
    lim.max_bulk_len = c->opts.max_bulk_len;
    lim.max_elements = c->opts.max_elements;
    lim.max_reply_bytes = c->opts.max_reply_bytes;
    lim.max_depth = c->opts.max_depth > VL__RESP_DEPTH_MAX ? VL__RESP_DEPTH_MAX
                                                           : (unsigned)c->opts.max_depth;
    lim.max_reply_mem = c->opts.max_reply_mem;
    vl__resp_set_limits(&c->resp, &lim);
    c->epoch++;
    c->connects++;
    if (c->ever_ready)
        c->reconnects++;
    c->ever_ready = 1;
    c->in_multi = c->watching = c->db_changed = c->dirty = 0;
    timer_stop(c, &c->connect_timer);
    /* Write what waited for the handshake, in the order it was issued. */
    while ((e = c->wait.head) != NULL && c->state == S_READY && !c->dying) {
        char *cmd = e->cmd;
        wait_unlink(c, e);
        e->cmd = NULL;
        submit(c, e, cmd, e->len);
    }
    emit(c, VL__REDIS_EV_READY, VL_OK);
}

/* A drop decided while hiredis may be on the stack waits for the safe point
 * at the end of io_cb; elsewhere it happens now. */
static void request_drop(vl_redis *c, int status, const char *msg)
{
    c->dying = 1;
    if (c->in_hiredis > 0) {
        if (!c->drop_requested && !c->drop_set)
            set_drop(c, status, msg);
        c->drop_requested = 1;
        return;
    }
    conn_down(c, status, msg);
}

/* Keeps the lease-cleanliness flags in step with the replies. */
static void track(vl_redis *c, unsigned flags, const vl_redis_reply *r)
{
    int ok = r != NULL && !vl__redis_reply_is_error(r);

    if ((flags & CF_MULTI) && ok)
        c->in_multi = 1;
    if (flags & CF_EXEC)
        c->in_multi = c->watching = 0;
    if ((flags & CF_WATCH) && ok)
        c->watching = 1;
    if (flags & CF_UNWATCH)
        c->watching = 0;
    if (flags & CF_SELECT)
        c->db_changed = 1;
}

/* An error reply to the handshake PING that says only that PING itself may
 * not run, and so still answers it in turn: -NOPERM (an ACL user without
 * +ping) and "-ERR unknown command" (PING renamed away). The connection is
 * ready then. Every other error (maxclients, LOADING, NOAUTH...) refuses
 * the connection. */
static int ping_refused_alone(const vl_redis_reply *r)
{
    const char *s = vl__redis_reply_text(r);

    return (strncmp(s, "NOPERM", 6) == 0 && (s[6] == ' ' || s[6] == '\0')) ||
           strncmp(s, "ERR unknown command", 19) == 0;
}

/* 1 when `r` answers the handshake PING: the echo of our token, or +PONG
 * from a proxy that answers PING itself without echoing the argument. */
static int ping_answered(const vl_redis *c, const vl_redis_reply *r)
{
    const char *str;
    size_t len;

    str = vl_redis_reply_str(r, &len);
    if (str == NULL)
        return 0;
    if (vl_redis_reply_type(r) == VL_REDIS_STATUS)
        return len == 4 && memcmp(str, "PONG", 4) == 0;
    return vl_redis_reply_type(r) == VL_REDIS_STRING && len == strlen(c->token) &&
           memcmp(str, c->token, len) == 0;
}

static void reply_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    const vl_redis_reply *r = reply; /* our object functions made it */
    rentry *e = privdata;
    vl_redis *c = e->c;

    flight_unlink(c, e);
    if (r != NULL && c->nwritten > 0)
        c->nwritten--;
    if (r == NULL) {
        /* The context is going away; our drop message, or hiredis's reason.
         * Failing the entry reports DONE, and the pool may look for a
         * connection from there: this one must no longer pass for ready. */
        c->dying = 1;
        if (!c->drop_set) {
            char *msg = describe_loss(c, ac);
            set_drop(c, VL_ECONN, msg != NULL ? msg : "connection lost");
            vl__free(msg);
        }
        entry_fail(c, e, c->drop_status, c->drop_msg);
    } else if (e->kind == K_USER) {
        if (e->flags != 0)
            track(c, e->flags, r);
        entry_deliver(c, e, reply);
    } else if (e->kind == K_PING) {
        emit(c, VL__REDIS_EV_PONG, vl__redis_reply_is_error(r) ? VL_ESERVER : VL_OK);
    } else if (c->drop_requested) {
        /* An earlier handshake step failed: this attempt is over. */
    } else if (vl__redis_reply_nomem(r)) {
        /* No memory for the reply: this attempt cannot tell how it went. */
        request_drop(c, VL_ENOMEM, "connect: out of memory");
    } else if (vl__redis_reply_is_error(r) && !(e->kind == K_HELLO && ping_refused_alone(r))) {
        /* A server refusing the connection (maxclients, LOADING, NOAUTH)
         * says so in reply to the handshake: a failed connect. */
        char *msg = vl__asprintf("%s %s: %s",
                                 e->kind == K_AUTH     ? "auth"
                                 : e->kind == K_SELECT ? "select"
                                                       : "connect",
                                 c->url.display, vl__redis_reply_text(r));
        request_drop(c, VL_ECONN, msg != NULL ? msg : "handshake failed");
        vl__free(msg);
    } else if (e->kind == K_HELLO && !vl__redis_reply_is_error(r) && !ping_answered(c, r)) {
        /* Not our token: a reply sent before it was asked for, or a server
         * that does not speak RESP the way Redis does. */
        char *msg = vl__asprintf("connect %s: protocol error: unexpected reply to the "
                                 "handshake PING (replies do not match commands)",
                                 c->url.display);
        request_drop(c, VL_EPROTO, msg != NULL ? msg : "handshake: unexpected reply");
        vl__free(msg);
    } else if (--c->handshake_left == 0 && c->state == S_CONNECTING &&
               (ac->c.flags & REDIS_CONNECTED) && !c->drop_requested) {
        become_ready(c);
    }
    entry_put(c, e);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    /* A failure is handled by the cleanup hook that hiredis calls next; on
     * success io_cb queues the handshake once hiredis has returned, so that
     * volley, not hiredis's write(), writes it. */
    VL__UNUSED(ac);
    VL__UNUSED(status);
}

static void hook_add_read(void *pd)
{
    vl_redis *c = pd;

    c->io_events |= VL__READ;
    io_apply(c);
}

static void hook_del_read(void *pd)
{
    vl_redis *c = pd;

    c->io_events &= ~VL__READ;
    io_apply(c);
}

static void hook_add_write(void *pd)
{
    vl_redis *c = pd;

    /* hiredis asks for writability after every command. On an established
     * connection, write once before the next poll instead (see flush_cb);
     * only a partial write, or the connect handshake, arms the watcher. */
    if (!(c->io_events & VL__WRITE) && c->ac != NULL && (c->ac->c.flags & REDIS_CONNECTED)) {
        vl__defer_queue(c->loop, &c->flush);
        return;
    }
    c->io_events |= VL__WRITE;
    io_apply(c);
}

static void hook_del_write(void *pd)
{
    vl_redis *c = pd;

    c->io_events &= ~VL__WRITE;
    io_apply(c);
}

/* Fails what waited and goes DOWN; schedules the next attempt. The context
 * is gone already (or there never was one). */
static void after_down(vl_redis *c)
{
    int status = c->drop_set ? c->drop_status : VL_ECONN;
    int was_ready = c->state == S_READY;
    const char *text;
    rentry *e;

    /* The teardown's message becomes the connection's last error. */
    if (c->drop_msg != NULL) {
        vl__free(c->err);
        c->err = c->drop_msg;
        c->drop_msg = NULL;
    }
    c->drop_set = 0;
    text = c->err != NULL ? c->err : vl_strerror(status);
    c->state = S_DOWN;
    c->dying = 0;
    c->handshake_left = 0;
    c->in_multi = c->watching = c->db_changed = c->dirty = 0;
    timer_stop(c, &c->connect_timer);
    while ((e = c->wait.head) != NULL) {
        wait_unlink(c, e);
        entry_fail(c, e, status, text);
        entry_put(c, e);
    }
    if (c->closing)
        return;
    if (!was_ready)
        c->connect_errors++;
    if (c->opts.reconnect) {
        uint64_t lo = c->opts.reconnect_min_ms, hi = c->opts.reconnect_max_ms, d;
        unsigned shift = c->attempts < 20 ? c->attempts : 20;
        if (hi < lo)
            hi = lo;
        d = lo << shift;
        if (d > hi || d < lo)
            d = hi;
        /* Jitter: anywhere in the upper half, so clients spread out. */
        d = d / 2 + (d > 1 ? vl__rand64() % (d - d / 2 + 1) : d);
        if (d == 0)
            d = 1; /* reconnect_min_ms 0 must not spin on a dead server */
        c->attempts++;
        timer_start(c, &c->retry_timer, d);
    }
    emit(c, VL__REDIS_EV_DOWN, status);
}

static void hook_cleanup(void *pd)
{
    vl_redis *c = pd;
    redisAsyncContext *ac = c->ac;

    c->io_events = 0;
    io_ref(c);
    vl__io_stop(&c->io);
    if (!c->drop_set && ac != NULL) {
        char *msg = describe_loss(c, ac);
        set_drop(c, VL_ECONN, msg != NULL ? msg : "connection lost");
        vl__free(msg);
    }
    c->ac = NULL;
    c->drop_requested = 0;
    after_down(c);
}

static void after_hiredis(vl_redis *c);

/* ---- reading and writing ----
 *
 * Once connected, volley does the socket I/O itself and hiredis only parses
 * and matches: reads go through the framer (lib/redis_resp.c), which feeds
 * hiredis's reader no more complete replies than commands are owed
 * (written in full and not yet answered), and writes drain hiredis's output
 * buffer with send(MSG_NOSIGNAL). Everything here runs with in_hiredis
 * raised, so a teardown decided meanwhile waits for after_hiredis. */

/* The message for a connection or attempt that ends because of `why`. */
static char *end_text(vl_redis *c, const char *what, const char *why)
{
    if (c->state == S_CONNECTING)
        return vl__asprintf("connect %s: %s%s", c->url.display, what, why);
    return vl__asprintf("%s: %s%s", c->url.display, what, why);
}

static void drop_with(vl_redis *c, int status, const char *what, const char *why)
{
    char *msg = end_text(c, what, why);

    request_drop(c, status, msg != NULL ? msg : why);
    vl__free(msg);
}

/* Bytes arrived that no command is owed: show the start of them. */
static void refuse_unexpected(vl_redis *c, const char *buf, size_t len)
{
    char text[80];
    size_t i, o = 0;

    if (c->state == S_CONNECTING && len > 1 && buf[0] == '-') {
        /* An error line before the handshake was even written is a server
         * refusing the connection (maxclients, LOADING), as hiredis also
         * reads it: a failed connect with the server's text. */
        const char *eol = memchr(buf, '\r', len);
        size_t n = (eol != NULL ? (size_t)(eol - buf) : len) - 1;
        char *why = vl__asprintf("%.*s", (int)(n < 200 ? n : 200), buf + 1);
        drop_with(c, VL_ECONN, "", why != NULL ? why : "the server refused the connection");
        vl__free(why);
        return;
    }
    for (i = 0; i < len && o + 5 < sizeof(text) - 1; i++) {
        unsigned char ch = (unsigned char)buf[i];
        if (ch == '\r' || ch == '\n')
            o += (size_t)snprintf(text + o, sizeof(text) - o, "\\%c", ch == '\r' ? 'r' : 'n');
        else if (ch < 0x20 || ch >= 0x7f || ch == '"')
            o += (size_t)snprintf(text + o, sizeof(text) - o, "\\x%02x", ch);
        else
            text[o++] = (char)ch;
    }
    text[o] = '\0';
    {
        char *why = vl__asprintf("unexpected reply, no command is waiting for one: \"%s%s\"",
                                 text, i < len ? "..." : "");
        drop_with(c, VL_EPROTO, "protocol error: ", why != NULL ? why : "unexpected reply");
        vl__free(why);
    }
}

/* The framer refused the reply being read: the command it answers fails
 * with VL_EPROTO, the connection is closed. */
static void refuse_reply(vl_redis *c)
{
    rentry *e = c->flight.head;
    char *msg;

    if (e == NULL || e->kind != K_USER || c->state != S_READY) {
        drop_with(c, VL_EPROTO, "protocol error: ", c->resp.msg);
        return;
    }
    msg = end_text(c, "protocol error: ", c->resp.msg);
    c->dying = 1; /* before DONE goes out: see cmd_timer_cb */
    entry_fail(c, e, VL_EPROTO, msg != NULL ? msg : c->resp.msg);
    vl__free(msg);
    drop_with(c, VL_ECONN, "connection closed after a protocol error: ", c->resp.msg);
}

static const char *errno_text(int err, char *buf, size_t len)
{
    return strerror_r(err, buf, len);
}

/* One read of the socket (one chunk per event, as hiredis does). Returns 1
 * when bytes were read, 0 otherwise (nothing there, or the end). */
static int conn_read(vl_redis *c)
{
    redisAsyncContext *ac = c->ac;
    char buf[16384], ebuf[96];
    size_t pos = 0, used, replies;
    ssize_t n;

    n = recv(ac->c.fd, buf, sizeof(buf), 0);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            drop_with(c, VL_ECONN, c->state == S_CONNECTING ? "" : "connection lost: ",
                      errno_text(errno, ebuf, sizeof(ebuf)));
        return 0;
    }
    if (n == 0) {
        drop_with(c, VL_ECONN, c->state == S_CONNECTING ? "" : "connection lost: ",
                  vl__resp_mid_reply(&c->resp)
                      ? "server closed the connection in the middle of a reply"
                      : "server closed the connection");
        return 0;
    }
    while (pos < (size_t)n && !c->drop_requested && c->ac == ac) {
        if (c->nwritten == 0) {
            refuse_unexpected(c, buf + pos, (size_t)n - pos);
            break;
        }
        /* One reply at a time: the reader holds nothing after it when it
         * parses, so the reply is built in one block of the size the
         * framer measured, and the start of the next waits its turn. */
        used = vl__resp_scan(&c->resp, buf + pos, (size_t)n - pos, 1, &replies);
        if (used > 0 && redisReaderFeed(ac->c.reader, buf + pos, used) != REDIS_OK) {
            drop_with(c, VL_ENOMEM, "", "out of memory reading a reply");
            break;
        }
        pos += used;
        if (replies > 0) {
            /* One complete reply is in the reader, its callback queued:
             * hiredis cannot run out of callbacks. */
            vl__reply_build_next(&c->build, c->resp.done_nodes, c->resp.done_text);
            redisProcessCallbacks(ac);
            if (c->ac != ac)
                break; /* hiredis gave up the context (out of memory) */
        }
        if (c->resp.error) {
            refuse_reply(c);
            break;
        }
        if (replies == 0)
            break; /* all of it is the start of a reply */
    }
    return 1;
}

static void conn_write_failed(vl_redis *c, int err)
{
    redisAsyncContext *ac = c->ac;
    char ebuf[96];
    int i;

    /* A server that closed on us may have said why first ("-ERR max number
     * of clients reached"): read what it sent before giving up. */
    for (i = 0; i < 16 && !c->drop_requested && c->ac == ac; i++)
        if (!conn_read(c))
            break;
    if (!c->drop_requested && c->ac == ac)
        drop_with(c, VL_ECONN, c->state == S_CONNECTING ? "" : "connection lost: ",
                  errno_text(err, ebuf, sizeof(ebuf)));
}

/* Writes what hiredis's output buffer holds, as redisBufferWrite would,
 * but with MSG_NOSIGNAL: a peer that closed never raises SIGPIPE. */
static void conn_write(vl_redis *c)
{
    redisAsyncContext *ac = c->ac;
    sds ob = ac->c.obuf;
    size_t len = sdslen(ob);
    ssize_t n = 0;

    if (len > 0) {
        n = send(ac->c.fd, ob, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                conn_write_failed(c, errno);
                return;
            }
            n = 0;
        }
        flight_written(c, (size_t)n);
        if ((size_t)n < len) {
            sdsrange(ob, n, -1);
        } else if (sdsalloc(ob) > (1u << 20)) {
            /* Give a burst's buffer back; keep it if no memory for a new one. */
            sds fresh = sdsempty();
            if (fresh != NULL) {
                sdsfree(ob);
                ac->c.obuf = fresh;
            } else {
                sdsclear(ob);
            }
        } else {
            sdsclear(ob);
        }
    }
    if (sdslen(ac->c.obuf) > 0)
        c->io_events |= VL__WRITE;
    else
        c->io_events &= ~VL__WRITE;
    c->io_events |= VL__READ;
    io_apply(c);
}

/* hiredis's connect step. It writes with plain write(), which raises SIGPIPE
 * on a peer that closed; its output buffer is empty here (the handshake is
 * queued only afterwards), but should it ever write, SIGPIPE is blocked for
 * the call and one it raised is consumed before the mask is restored. The
 * process's disposition is never changed, and a SIGPIPE that was already
 * pending is left alone. */
static void connect_step(redisAsyncContext *ac)
{
    static const struct timespec zero = {0, 0};
    sigset_t pipe_set, old, pending;
    int was_pending;

    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigemptyset(&pending);
    sigpending(&pending);
    was_pending = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    redisAsyncHandleWrite(ac);
    if (!was_pending) {
        sigemptyset(&pending);
        sigpending(&pending);
        if (sigismember(&pending, SIGPIPE))
            while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
                ;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void start_handshake(vl_redis *c);

static void io_cb(vl__io *io, int events, void *ud)
{
    vl_redis *c = ud;
    redisAsyncContext *ac = c->ac;

    VL__UNUSED(io);
    if (ac == NULL)
        return;
    c->in_hiredis++;
    if (!(ac->c.flags & REDIS_CONNECTED)) {
        connect_step(ac);
        if (c->ac == ac && (ac->c.flags & REDIS_CONNECTED) && !c->hs_started)
            start_handshake(c);
    } else {
        if (events & VL__READ)
            conn_read(c);
        if ((events & VL__WRITE) && c->ac == ac && !c->drop_requested)
            conn_write(c);
    }
    c->in_hiredis--;
    after_hiredis(c);
}

static void flush_cb(vl__defer *d)
{
    vl_redis *c = (vl_redis *)(void *)((char *)d - offsetof(vl_redis, flush));

    if (c->ac == NULL || !(c->ac->c.flags & REDIS_CONNECTED) || c->drop_requested)
        return;
    c->in_hiredis++;
    conn_write(c);
    c->in_hiredis--;
    after_hiredis(c);
}

/* The safe point after any call into hiredis. */
static void after_hiredis(vl_redis *c)
{
    if (c->drop_requested && c->ac != NULL) {
        c->drop_requested = 0;
        c->tearing = 1;
        redisAsyncFree(c->ac); /* NULL replies, then hook_cleanup */
        c->tearing = 0;
    }
    if (c->free_requested) {
        vl_redis_free(c);
        return;
    }
    hold_settle(c);
}

/* ---- connecting ---- */

static void connect_timer_cb(vl__timer *t, void *ud)
{
    vl_redis *c = ud;
    char *msg;

    VL__UNUSED(t);
    if (c->connect_timer.unref) {
        vl__loop_ref(c->loop);
        c->connect_timer.unref = 0;
    }
    msg = vl__asprintf("connect %s: timed out after %" PRIu64 " ms", c->url.display,
                       c->opts.connect_timeout_ms);
    conn_down(c, VL_ECONN, msg != NULL ? msg : "connect: timed out");
    vl__free(msg);
    hold_settle(c);
}

static void retry_timer_cb(vl__timer *t, void *ud)
{
    vl_redis *c = ud;

    VL__UNUSED(t);
    if (c->retry_timer.unref) {
        vl__loop_ref(c->loop);
        c->retry_timer.unref = 0;
    }
    start_attempt(c);
    hold_settle(c);
}

/* Queues a command of our own (AUTH, SELECT, a keepalive PING) straight to
 * hiredis. It has no future and is not a user command: it neither counts in
 * vl_redis_pending nor holds the loop. */
static int internal_cmd(vl_redis *c, int kind, int argc, const char **argv)
{
    rentry *e = entry_get(c);
    char *cmd = NULL;
    long long len;
    int rc;

    if (e == NULL)
        return VL_ENOMEM;
    len = vl__redis_format_argv(&cmd, argc, argv, NULL);
    if (len < 0) {
        entry_put(c, e);
        return VL_ENOMEM;
    }
    e->kind = (unsigned char)kind;
    /* A keepalive PING's reply is due like a command's: overdue at the head
     * of the replies, it closes the connection (cmd_timer_cb). The
     * handshake's commands have the connect timeout instead. */
    if (kind == K_PING && c->opts.command_timeout_ms > 0)
        e->deadline = vl_loop_now_ms(c->loop) + c->opts.command_timeout_ms;
    rc = queue_cmd(c, e, cmd, (size_t)len);
    vl__redis_cmd_free(cmd);
    if (rc == 0)
        entry_put(c, e);
    return rc > 0 ? VL_OK : rc == 0 ? VL_ECONN : VL_ENOMEM;
}

static int handshake_cmd(vl_redis *c, int kind, int argc, const char **argv)
{
    int rc = internal_cmd(c, kind, argc, argv);

    if (rc == VL_OK)
        c->handshake_left++;
    return rc;
}

/* Keepalive and TCP_USER_TIMEOUT on a TCP socket, so that a peer that
 * vanished without a reset is noticed (see "Dead peers" in volley/redis.h).
 * Best effort: a kernel without one of them still gets the others. */
static void set_tcp_options(vl_redis *c, int fd)
{
    int on = 1;

    if (c->opts.tcp_keepalive_ms > 0) {
        uint64_t secs = (c->opts.tcp_keepalive_ms + 999) / 1000;
        int idle = secs > 32767 ? 32767 : (int)secs, intvl, cnt = 3; /* the kernel's cap */
        if (idle < 1)
            idle = 1;
        intvl = idle / 3 > 0 ? idle / 3 : 1;
        (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
        (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
        (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
        (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    }
    if (c->opts.tcp_user_timeout_ms > 0) {
        unsigned ut = c->opts.tcp_user_timeout_ms > UINT32_MAX ? UINT32_MAX
                                                               : (unsigned)c->opts.tcp_user_timeout_ms;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof(ut));
    }
}

/* Queues AUTH, SELECT and the PING whose echo completes the handshake, once
 * the TCP connect has succeeded. */
static void start_handshake(vl_redis *c)
{
    char dbbuf[24];
    int rc = VL_OK;

    c->hs_started = 1;
    if (c->url.password != NULL) {
        const char *argv[3] = {"AUTH", NULL, NULL};
        if (c->url.user != NULL) {
            argv[1] = c->url.user;
            argv[2] = c->url.password;
            rc = handshake_cmd(c, K_AUTH, 3, argv);
        } else {
            argv[1] = c->url.password;
            rc = handshake_cmd(c, K_AUTH, 2, argv);
        }
    }
    if (rc == VL_OK && c->db != 0) {
        const char *argv[2] = {"SELECT", dbbuf};
        snprintf(dbbuf, sizeof(dbbuf), "%d", c->db);
        rc = handshake_cmd(c, K_SELECT, 2, argv);
    }
    if (rc == VL_OK) {
        const char *argv[2] = {"PING", c->token};
        snprintf(c->token, sizeof(c->token), "volley-%016llx",
                 (unsigned long long)vl__rand64());
        rc = handshake_cmd(c, K_HELLO, 2, argv);
    }
    if (rc != VL_OK)
        request_drop(c, rc, rc == VL_ENOMEM ? "connect: out of memory" : "connect: closed");
}

static void do_connect(vl_redis *c, const char *addr)
{
    redisAsyncContext *ac;
    vl__resp_limits lim;

    if (addr == NULL)
        ac = redisAsyncConnectUnix(c->url.path);
    else
        ac = redisAsyncConnect(addr, c->url.port != 0 ? c->url.port : 6379);
    if (ac == NULL) {
        conn_down(c, VL_ENOMEM, "connect: out of memory");
        return;
    }
    if (ac->err) {
        char *msg = vl__asprintf("connect %s: %s", c->url.display, ac->c.errstr);
        redisAsyncFree(ac); /* no hooks yet: nothing of ours is called */
        conn_down(c, VL_ECONN, msg != NULL ? msg : "connect failed");
        vl__free(msg);
        return;
    }
    if (addr != NULL)
        set_tcp_options(c, ac->c.fd);
    /* The handshake's replies are small (+OK, an error line, our token),
     * whatever the limits for commands are: tight limits of their own keep
     * a hostile server small and never refuse a real one's. */
    lim.max_bulk_len = 512;
    lim.max_elements = 8;
    lim.max_reply_bytes = 4096;
    lim.max_depth = 1;
    lim.max_reply_mem = 8192; /* never below what the others allow */
    vl__resp_init(&c->resp, &lim);
    c->wcur = NULL;
    c->wleft = 0;
    c->nwritten = 0;
    c->hs_started = 0;
    vl__redis_reader_setup(ac->c.reader, &c->build);
    c->ac = ac;
    ac->data = c;
    ac->ev.data = c;
    ac->ev.addRead = hook_add_read;
    ac->ev.delRead = hook_del_read;
    ac->ev.addWrite = hook_add_write;
    ac->ev.delWrite = hook_del_write;
    ac->ev.cleanup = hook_cleanup;
    /* Setting the connect callback arms the write watcher: the first
     * writable event is how a non-blocking connect reports its outcome. */
    redisAsyncSetConnectCallback(ac, on_connect);
}

static void resolved_cb(vl_future *f, void *ud)
{
    rtoken *tok = ud;
    vl_redis *c = tok->c;
    char *msg;

    vl__free(tok);
    if (c == NULL)
        return; /* the connection was freed or gave up meanwhile */
    c->resolving = NULL;
    if (vl_future_status(f) == VL_OK) {
        do_connect(c, vl_future_value(f));
    } else {
        msg = vl__asprintf("connect %s: %s", c->url.display, vl_future_error(f));
        conn_down(c, vl_future_status(f) == VL_ENOMEM ? VL_ENOMEM : VL_ECONN,
                  msg != NULL ? msg : "connect: cannot resolve host");
        vl__free(msg);
    }
    hold_settle(c);
}

static void start_attempt(vl_redis *c)
{
    rtoken *tok;
    vl_future *f;

    c->state = S_CONNECTING;
    c->handshake_left = 0;
    if (c->opts.connect_timeout_ms > 0)
        timer_start(c, &c->connect_timer, c->opts.connect_timeout_ms);
    if (c->url.host[0] == '\0') {
        do_connect(c, NULL);
        return;
    }
    if (vl__host_is_ip(c->url.host)) {
        do_connect(c, c->url.host);
        return;
    }
    tok = vl__calloc(1, sizeof(*tok));
    f = tok != NULL ? vl__resolve(c->loop, c->url.host) : NULL;
    if (f == NULL) {
        vl__free(tok);
        conn_down(c, VL_ENOMEM, "connect: out of memory resolving the host");
        return;
    }
    tok->c = c;
    tok->f = f;
    c->resolving = tok;
    vl_future_then(f, resolved_cb, tok);
}

/* Ends the connection or the attempt under way, failing what is pending
 * with `status` and `msg`. Never called with hiredis on the stack. */
static void conn_down(vl_redis *c, int status, const char *msg)
{
    c->dying = 1;
    set_drop(c, status, msg);
    if (c->resolving != NULL) {
        rtoken *tok = c->resolving;
        c->resolving = NULL;
        tok->c = NULL;
        vl_future_cancel(tok->f); /* its callback frees the token */
    }
    if (c->ac != NULL) {
        c->tearing = 1;
        redisAsyncFree(c->ac); /* NULL replies, then hook_cleanup -> after_down */
        c->tearing = 0;
    } else {
        after_down(c);
    }
}

/* ---- commands ---- */

/* Commands are built in volley's own allocation. The printf form goes
 * through hiredis's formatter (it owns the format language) and is copied
 * once; the argv form, the hot path, is written here directly: hiredis
 * 0.14's redisFormatCommandArgv spends most of its time in sprintf. */
/* ---- the printf-style formatter ----
 * volley's own, so that every conversion C99 defines for integers is
 * understood (hiredis 0.14's refuses %zu, %jd, %td and %hhd) and a bad one
 * is named. Spaces separate arguments; an argument is made of literal bytes
 * and conversions: %s (C string), %b (pointer and size_t length), %% and
 * the numeric conversions d i u x X o c (with hh h l ll z j t) and f F g G
 * e E (with L), with printf's flags, width and precision. */

typedef struct fmt_args {
    char **argv;
    size_t *len;
    size_t *cap;
    int argc, nalloc;
    int open; /* the last argument is still being built */
} fmt_args;

static void fmt_args_free(fmt_args *a)
{
    int i;

    for (i = 0; i < a->argc; i++)
        vl__free(a->argv[i]);
    vl__free(a->argv);
    vl__free(a->len);
    vl__free(a->cap);
}

/* Appends n bytes to the argument being built (starting one if none is).
 * VL_OK or VL_ENOMEM. */
static int fmt_put(fmt_args *a, const char *b, size_t n)
{
    size_t need;
    int i;

    if (!a->open) {
        if (a->argc == a->nalloc) {
            int m = a->nalloc > 0 ? a->nalloc * 2 : 8;
            char **v = vl__realloc(a->argv, (size_t)m * sizeof(*v));
            size_t *l, *c;
            if (v == NULL)
                return VL_ENOMEM;
            a->argv = v;
            l = vl__realloc(a->len, (size_t)m * sizeof(*l));
            if (l == NULL)
                return VL_ENOMEM;
            a->len = l;
            c = vl__realloc(a->cap, (size_t)m * sizeof(*c));
            if (c == NULL)
                return VL_ENOMEM;
            a->cap = c;
            a->nalloc = m;
        }
        a->argv[a->argc] = NULL;
        a->len[a->argc] = a->cap[a->argc] = 0;
        a->argc++;
        a->open = 1;
    }
    i = a->argc - 1;
    need = a->len[i] + n + 1;
    if (need > a->cap[i]) {
        size_t c = a->cap[i] > 0 ? a->cap[i] : 32;
        char *nb;
        while (c < need)
            c *= 2;
        nb = vl__realloc(a->argv[i], c);
        if (nb == NULL)
            return VL_ENOMEM;
        a->argv[i] = nb;
        a->cap[i] = c;
    }
    if (n > 0)
        memcpy(a->argv[i] + a->len[i], b, n);
    a->len[i] += n;
    a->argv[i][a->len[i]] = '\0';
    return VL_OK;
}

/* Formats one numeric conversion `spec` (a printf spec, NUL-terminated)
 * with its argument into buf. Returns the length, or -1 when the length
 * modifier does not fit the conversion. */
static int fmt_number(char *buf, size_t n, const char *spec, const char *mod, char conv,
                      va_list *ap)
{
    if (strchr("diouxXc", conv) != NULL) {
        int sig = conv == 'd' || conv == 'i';
        if (conv == 'c')
            return mod[0] == '\0' ? snprintf(buf, n, spec, va_arg(*ap, int)) : -1;
        if (strcmp(mod, "") == 0 || strcmp(mod, "hh") == 0 || strcmp(mod, "h") == 0)
            return sig ? snprintf(buf, n, spec, va_arg(*ap, int))
                       : snprintf(buf, n, spec, va_arg(*ap, unsigned));
        if (strcmp(mod, "l") == 0)
            return sig ? snprintf(buf, n, spec, va_arg(*ap, long))
                       : snprintf(buf, n, spec, va_arg(*ap, unsigned long));
        if (strcmp(mod, "ll") == 0)
            return sig ? snprintf(buf, n, spec, va_arg(*ap, long long))
                       : snprintf(buf, n, spec, va_arg(*ap, unsigned long long));
        if (strcmp(mod, "z") == 0)
            return sig ? snprintf(buf, n, spec, va_arg(*ap, ssize_t))
                       : snprintf(buf, n, spec, va_arg(*ap, size_t));
        if (strcmp(mod, "j") == 0)
            return sig ? snprintf(buf, n, spec, va_arg(*ap, intmax_t))
                       : snprintf(buf, n, spec, va_arg(*ap, uintmax_t));
        if (strcmp(mod, "t") == 0)
            return snprintf(buf, n, spec, va_arg(*ap, ptrdiff_t));
        return -1;
    }
    if (mod[0] == '\0' || strcmp(mod, "l") == 0)
        return snprintf(buf, n, spec, va_arg(*ap, double));
    if (strcmp(mod, "L") == 0)
        return snprintf(buf, n, spec, va_arg(*ap, long double));
    return -1;
}

long long vl__redis_formatv(char **cmd, const char *fmt, va_list ap, char *why, size_t whyn)
{
    fmt_args a;
    const char *p;
    va_list aq;
    long long len = -1;
    int rc = VL_OK;

    memset(&a, 0, sizeof(a));
    *cmd = NULL;
    va_copy(aq, ap);
    for (p = fmt; *p != '\0' && rc == VL_OK; p++) {
        const char *start = p;
        char spec[48], mod[3], num[512];
        size_t k = 0;
        int w;

        if (*p == ' ') {
            a.open = 0;
            continue;
        }
        if (*p != '%') {
            rc = fmt_put(&a, p, 1);
            continue;
        }
        p++;
        if (*p == '%') {
            rc = fmt_put(&a, "%", 1);
            continue;
        }
        if (*p == 's') {
            const char *str = va_arg(aq, const char *);
            if (str == NULL) {
                snprintf(why, whyn, "format: NULL string for '%%s' at byte %zu",
                         (size_t)(start - fmt));
                rc = VL_EINVAL;
            } else {
                rc = fmt_put(&a, str, strlen(str));
            }
            continue;
        }
        if (*p == 'b') {
            const char *b = va_arg(aq, const char *);
            size_t bl = va_arg(aq, size_t);
            if (b == NULL && bl > 0) {
                snprintf(why, whyn, "format: NULL pointer for '%%b' at byte %zu",
                         (size_t)(start - fmt));
                rc = VL_EINVAL;
            } else {
                rc = fmt_put(&a, b != NULL ? b : "", bl);
            }
            continue;
        }
        spec[k++] = '%';
        while (*p != '\0' && strchr("#0- +", *p) != NULL && k < 8)
            spec[k++] = *p++;
        while (*p >= '0' && *p <= '9' && k < 16)
            spec[k++] = *p++;
        if (*p == '.') {
            spec[k++] = *p++;
            while (*p >= '0' && *p <= '9' && k < 24)
                spec[k++] = *p++;
        }
        mod[0] = mod[1] = mod[2] = '\0';
        if ((p[0] == 'h' && p[1] == 'h') || (p[0] == 'l' && p[1] == 'l')) {
            mod[0] = p[0];
            mod[1] = p[1];
            p += 2;
        } else if (*p != '\0' && strchr("hlzjtL", *p) != NULL) {
            mod[0] = *p++;
        }
        w = -1;
        if (*p != '\0' && strchr("diouxXcfFgGeE", *p) != NULL) {
            memcpy(spec + k, mod, strlen(mod));
            k += strlen(mod);
            spec[k++] = *p;
            spec[k] = '\0';
            w = fmt_number(num, sizeof(num), spec, mod, *p, &aq);
        }
        if (w < 0 || (size_t)w >= sizeof(num)) {
            size_t clen = (size_t)(p - start) + (*p != '\0' ? 1 : 0);
            snprintf(why, whyn, "format: unsupported conversion '%.*s' at byte %zu",
                     (int)(clen > 16 ? 16 : clen), start, (size_t)(start - fmt));
            rc = VL_EINVAL;
            break;
        }
        rc = fmt_put(&a, num, (size_t)w);
    }
    va_end(aq);
    if (rc == VL_OK && a.argc == 0) {
        snprintf(why, whyn, "empty command");
        rc = VL_EINVAL;
    }
    if (rc == VL_OK) {
        len = vl__redis_format_argv(cmd, a.argc, (const char **)a.argv, a.len);
        if (len < 0)
            rc = VL_ENOMEM;
    }
    fmt_args_free(&a);
    if (rc == VL_ENOMEM)
        return -2;
    return rc == VL_OK ? len : -1;
}

/* Writes the decimal form of v ending just before `end`; returns its start. */
static char *put_uint(char *end, size_t v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return end;
}

static size_t digits(size_t v)
{
    size_t n = 1;

    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

long long vl__redis_format_argv(char **cmd, int argc, const char **argv, const size_t *argvlen)
{
    size_t total, i, len;
    char *p, num[24];

    /* "*N\r\n" then "$L\r\n<arg>\r\n" per argument. */
    total = 1 + digits((size_t)argc) + 2;
    for (i = 0; i < (size_t)argc; i++) {
        len = argvlen != NULL ? argvlen[i] : strlen(argv[i]);
        total += 1 + digits(len) + 2 + len + 2;
    }
    p = *cmd = vl__malloc(total + 1);
    if (p == NULL)
        return -1;
    *p++ = '*';
    {
        char *s = put_uint(num + sizeof(num), (size_t)argc);
        size_t n = (size_t)(num + sizeof(num) - s);
        memcpy(p, s, n);
        p += n;
    }
    *p++ = '\r';
    *p++ = '\n';
    for (i = 0; i < (size_t)argc; i++) {
        char *s;
        size_t n;
        len = argvlen != NULL ? argvlen[i] : strlen(argv[i]);
        *p++ = '$';
        s = put_uint(num + sizeof(num), len);
        n = (size_t)(num + sizeof(num) - s);
        memcpy(p, s, n);
        p += n;
        *p++ = '\r';
        *p++ = '\n';
        memcpy(p, argv[i], len);
        p += len;
        *p++ = '\r';
        *p++ = '\n';
    }
    *p = '\0';
    return (long long)total;
}

void vl__redis_verb(const char *cmd, size_t len, char *buf, size_t n)
{
    unsigned flags;
    uint64_t block;
    char name[24];
    size_t i;

    name[0] = '\0';
    if (cmd != NULL)
        (void)classify(cmd, len, &flags, &block, name, sizeof(name));
    for (i = 0; name[i] != '\0' && i + 1 < n; i++)
        buf[i] = (char)toupper((unsigned char)name[i]);
    if (n > 0)
        buf[i < n ? i : n - 1] = '\0';
}

vl_future *vl__redis_format_failed(vl_loop *loop, long long len, const char *why)
{
    if (len == -2)
        return NULL; /* out of memory building the command */
    return vl__future_failed(loop, VL_EINVAL, "%s", why);
}

void vl__redis_cmd_free(char *cmd)
{
    vl__free(cmd);
}

/* Reads the bulk string at *p ("$L\r\n<bytes>\r\n") and moves *p past
 * it. Returns its bytes (not NUL-terminated), NULL when malformed. */
static const char *next_arg(const char **p, const char *end, size_t *n)
{
    const char *q = *p, *arg;
    size_t len = 0;

    if (q >= end || *q != '$')
        return NULL;
    q++;
    while (q < end && *q >= '0' && *q <= '9')
        len = len * 10 + (size_t)(*q++ - '0');
    if ((size_t)(end - q) < 2)
        return NULL;
    q += 2; /* \r\n */
    if (len > (size_t)(end - q))
        return NULL;
    arg = q;
    q += len;
    *p = (size_t)(end - q) >= 2 ? q + 2 : end;
    *n = len;
    return arg;
}

static int arg_is(const char *arg, size_t n, const char *word)
{
    return arg != NULL && strlen(word) == n && strncasecmp(arg, word, n) == 0;
}

/* Reads the command out of "*N\r\n$L\r\nNAME\r\n...". Returns VL_OK and
 * the state flags, VL_EINVAL for an empty command, VL_EUNSUPPORTED for the
 * commands that would break reply matching: pub/sub and MONITOR change the
 * reply stream, CLIENT REPLY OFF|SKIP suppresses replies, and HELLO can
 * switch to RESP3, which hiredis 0.14 cannot parse. `name` gets the command
 * name (with its subcommand for CLIENT REPLY) for messages. */
/* How a blocking command says how long it may block. */
enum { B_NONE = 0, B_LAST_S, B_FIRST_S, B_LAST_MS, B_OPTION_MS };

/* A timeout argument in seconds (may have a fraction) or ms, as ms; 0 or
 * anything unreadable (the server refuses it at once) counts as 0. */
static uint64_t timeout_arg(const char *arg, size_t n, int ms)
{
    uint64_t whole = 0, frac = 0, scale = 1;
    size_t i = 0;

    if (arg == NULL)
        return 0;
    for (; i < n && arg[i] >= '0' && arg[i] <= '9' && whole < 1000000000000ull; i++)
        whole = whole * 10 + (uint64_t)(arg[i] - '0');
    if (i < n && arg[i] == '.' && !ms)
        for (i++; i < n && arg[i] >= '0' && arg[i] <= '9'; i++)
            if (scale < 1000) {
                frac = frac * 10 + (uint64_t)(arg[i] - '0');
                scale *= 10;
            }
    if (i != n)
        return 0;
    return ms ? whole : whole * 1000 + frac * (1000 / scale);
}

/* The time a blocking command may block, in ms: 0 when it does not block,
 * UINT64_MAX when it may block forever (a timeout of 0). `p` is just past
 * the command name, `argc` counts it. */
static uint64_t block_time(int how, const char *p, const char *end, size_t argc)
{
    const char *arg = NULL, *a;
    size_t n = 0, an, i;
    uint64_t t;

    if (how == B_FIRST_S) {
        arg = argc >= 2 ? next_arg(&p, end, &n) : NULL;
    } else if (how == B_OPTION_MS) {
        /* XREAD [COUNT n] [BLOCK ms] ... STREAMS ...; absent: no blocking. */
        for (i = 1; i < argc && (a = next_arg(&p, end, &an)) != NULL; i++) {
            if (arg_is(a, an, "STREAMS"))
                return 0;
            if (arg_is(a, an, "BLOCK")) {
                arg = i + 1 < argc ? next_arg(&p, end, &n) : NULL;
                break;
            }
        }
        if (arg == NULL)
            return 0;
    } else {
        for (i = 1; i < argc && (a = next_arg(&p, end, &an)) != NULL; i++) {
            arg = a;
            n = an;
        }
    }
    t = timeout_arg(arg, n, how == B_LAST_MS || how == B_OPTION_MS);
    return t == 0 ? UINT64_MAX : t;
}

static int classify(const char *cmd, size_t len, unsigned *flags, uint64_t *block, char *name,
                    size_t namelen)
{
    /* K keeps each name's length next to it: most commands (GET, SET...)
     * match no entry, and comparing the length and first letter first
     * turns them away without a strlen or strcasecmp per entry. */
#define K(s, f, b) {s, sizeof(s) - 1, f, b}
    static const struct {
        const char *name;
        size_t len;
        unsigned flags; /* ~0u: refused */
        int block;
    } known[] = {
        K("MULTI", CF_MULTI, B_NONE), K("EXEC", CF_EXEC, B_NONE), K("DISCARD", CF_EXEC, B_NONE),
        K("WATCH", CF_WATCH, B_NONE), K("UNWATCH", CF_UNWATCH, B_NONE),
        K("SELECT", CF_SELECT, B_NONE), K("SUBSCRIBE", ~0u, B_NONE),
        K("PSUBSCRIBE", ~0u, B_NONE), K("UNSUBSCRIBE", ~0u, B_NONE),
        K("PUNSUBSCRIBE", ~0u, B_NONE), K("MONITOR", ~0u, B_NONE), K("SSUBSCRIBE", ~0u, B_NONE),
        K("HELLO", ~0u, B_NONE), K("CLIENT", CF_CLIENT, B_NONE), K("RESET", CF_DIRTY, B_NONE),
        K("AUTH", CF_DIRTY, B_NONE), K("SWAPDB", CF_DIRTY, B_NONE), K("BLPOP", 0, B_LAST_S),
        K("BRPOP", 0, B_LAST_S), K("BRPOPLPUSH", 0, B_LAST_S), K("BLMOVE", 0, B_LAST_S),
        K("BZPOPMIN", 0, B_LAST_S), K("BZPOPMAX", 0, B_LAST_S), K("BLMPOP", 0, B_FIRST_S),
        K("BZMPOP", 0, B_FIRST_S), K("WAIT", 0, B_LAST_MS), K("WAITAOF", 0, B_LAST_MS),
        K("XREAD", 0, B_OPTION_MS), K("XREADGROUP", 0, B_OPTION_MS),
    };
#undef K
    const char *p = cmd, *end = cmd + len, *s, *arg;
    size_t n = 0, i, argc = 0;

    *flags = 0;
    *block = 0;
    name[0] = '\0';
    if (len < 4 || *p != '*' || p[1] == '0' || p[1] == '-')
        return VL_EINVAL;
    for (p++; p < end && *p >= '0' && *p <= '9'; p++)
        argc = argc * 10 + (size_t)(*p - '0');
    s = memchr(cmd, '\n', len);
    if (s == NULL)
        return VL_EINVAL;
    p = s + 1;
    arg = next_arg(&p, end, &n);
    if (arg == NULL)
        return VL_EINVAL;
    if (n >= namelen)
        return VL_OK; /* longer than any command we care about */
    memcpy(name, arg, n);
    name[n] = '\0';
    for (i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        if (known[i].len != n || (name[0] & ~0x20) != known[i].name[0])
            continue;
        if (strcasecmp(name, known[i].name) == 0) {
            if (known[i].flags == ~0u)
                return VL_EUNSUPPORTED;
            *flags = known[i].flags;
            if (known[i].block != B_NONE)
                *block = block_time(known[i].block, p, end, argc);
            break;
        }
    }
    if (*flags & CF_CLIENT) {
        /* Only some subcommands matter; CLIENT itself is no state. */
        *flags &= ~CF_CLIENT;
        arg = argc >= 2 ? next_arg(&p, end, &n) : NULL;
        if (arg_is(arg, n, "REPLY")) {
            arg = argc >= 3 ? next_arg(&p, end, &n) : NULL;
            if (!arg_is(arg, n, "ON")) {
                snprintf(name, namelen, "CLIENT REPLY");
                return VL_EUNSUPPORTED;
            }
        } else if (arg_is(arg, n, "TRACKING")) {
            *flags |= CF_DIRTY;
            snprintf(name, namelen, "CLIENT TRACKING");
        }
    }
    return VL_OK;
}

/* Fails a command before it got an entry. The failure is reported done like
 * any other, whether the future was handed in or made here: a pool counts
 * the command as pending before it calls vl__redis_send, and DONE is what
 * counts it out. Only when no future could be made (out of memory) is
 * nothing reported: NULL tells the caller to undo its count itself. */
static vl_future *fail_with(vl_redis *c, vl_future *f, int status, const char *msg)
{
    if (f == NULL) {
        f = vl__future_failed(c->loop, status, "%s", msg);
        if (f == NULL)
            return NULL;
    } else {
        vl__future_set_source(f, NULL, NULL);
        vl__future_complete(f, status, NULL, VL__VAL_NONE, NULL, msg);
    }
    emit(c, VL__REDIS_EV_DONE, status);
    return f;
}

static vl_future *send_cmd(vl_redis *c, vl_future *f, char *cmd, size_t len, int shared,
                           int ready);

vl_future *vl__redis_send(vl_redis *c, vl_future *f, char *cmd, size_t len, int shared)
{
    return send_cmd(c, f, cmd, len, shared, 0);
}

vl_future *vl_redis_ready(vl_redis *c)
{
    static const char *argv[1] = {"PING"};
    char *cmd = NULL;
    long long len;

    if (c == NULL)
        return NULL;
    len = vl__redis_format_argv(&cmd, 1, argv, NULL);
    if (len < 0)
        return NULL;
    return send_cmd(c, NULL, cmd, (size_t)len, 0, 1);
}

static vl_future *send_cmd(vl_redis *c, vl_future *f, char *cmd, size_t len, int shared,
                           int ready)
{
    unsigned flags;
    uint64_t block, deadline;
    char name[24], msg[96];
    rentry *e;
    int rc;

    if (c->state == S_INVALID) {
        vl__redis_cmd_free(cmd);
        return fail_with(c, f, c->invalid_status, c->err);
    }
    rc = classify(cmd, len, &flags, &block, name, sizeof(name));
    if (rc != VL_OK) {
        vl__redis_cmd_free(cmd);
        if (rc == VL_EINVAL)
            return fail_with(c, f, rc, "empty command");
        snprintf(msg, sizeof(msg), "%s is not supported on a command connection", name);
        return fail_with(c, f, rc, msg);
    }
    if (shared && flags != 0) {
        /* MULTI, WATCH, SELECT... would change the connection for every
         * other caller of the pool; they need a connection of their own. */
        vl__redis_cmd_free(cmd);
        snprintf(msg, sizeof(msg), "%s needs a lease (vl_redis_pool_lease)", name);
        return fail_with(c, f, VL_EUNSUPPORTED, msg);
    }
    if (c->closing || c->tearing || c->dying || vl__loop_closing(c->loop)) {
        vl__redis_cmd_free(cmd);
        return fail_with(c, f, c->closing ? VL_ECLOSED : VL_ECONN,
                         c->closing ? "connection is closed" : "connection is closing");
    }
    if (c->state == S_DOWN) {
        /* Fail fast between attempts: see "Reconnection" in volley/redis.h. */
        vl__redis_cmd_free(cmd);
        return fail_with(c, f, VL_ECONN, c->err != NULL ? c->err : "not connected");
    }
    e = entry_get(c);
    if (e == NULL) {
        vl__redis_cmd_free(cmd);
        return f != NULL ? fail_with(c, f, VL_ENOMEM, "out of memory") : NULL;
    }
    if (f == NULL) {
        f = vl__future_make(c->loop, &entry_ops, e);
        if (f == NULL) {
            entry_put(c, e);
            vl__redis_cmd_free(cmd);
            return NULL;
        }
    } else {
        vl__future_set_source(f, &entry_ops, e);
    }
    e->f = f;
    e->kind = K_USER;
    VL__UNUSED(ready); /* the PING's reply is its value, like any command's */
    e->flags = (unsigned char)flags;
    {
        size_t i;
        for (i = 0; name[i] != '\0' && i < sizeof(e->verb) - 1; i++)
            e->verb[i] = (char)toupper((unsigned char)name[i]);
        e->verb[i] = '\0';
    }
    /* Dirty from the moment it is issued, whatever the reply: RESET drops
     * the URL's database, AUTH may switch the user, and neither can be
     * undone from here. */
    if (flags & CF_DIRTY)
        c->dirty = 1;
    /* A blocking command's own timeout is added; blocking forever is
     * exempt (see "Command timeouts" in volley/redis.h). */
    e->block = block != 0;
    if (c->opts.command_timeout_ms > 0 && block != UINT64_MAX)
        e->deadline = vl_loop_now_ms(c->loop) + c->opts.command_timeout_ms + block;
    c->nuser++;
    deadline = e->deadline; /* submit may recycle e */
    if (c->state == S_READY) {
        submit(c, e, cmd, len);
    } else {
        e->cmd = cmd;
        e->len = len;
        e->where = W_WAIT;
        list_append(&c->wait, e);
    }
    arm_for(c, deadline);
    hold_settle(c);
    return f;
}

vl_future *vl_redis_commandv(vl_redis *c, const char *fmt, va_list ap)
{
    char *cmd = NULL;
    char why[128];
    long long len;

    if (c == NULL)
        return NULL;
    if (c->state == S_INVALID)
        return vl__future_failed(c->loop, c->invalid_status, "%s", c->err);
    if (fmt == NULL)
        return vl__future_failed(c->loop, VL_EINVAL, "no command");
    len = vl__redis_formatv(&cmd, fmt, ap, why, sizeof(why));
    if (len < 0)
        return vl__redis_format_failed(c->loop, len, why);
    return vl__redis_send(c, NULL, cmd, (size_t)len, 0);
}

vl_future *vl_redis_command(vl_redis *c, const char *fmt, ...)
{
    va_list ap;
    vl_future *f;

    va_start(ap, fmt);
    f = vl_redis_commandv(c, fmt, ap);
    va_end(ap);
    return f;
}

vl_future *vl_redis_command_argv(vl_redis *c, int argc, const char **argv, const size_t *argvlen)
{
    char *cmd = NULL;
    long long len;
    int i;

    if (c == NULL)
        return NULL;
    if (c->state == S_INVALID)
        return vl__future_failed(c->loop, c->invalid_status, "%s", c->err);
    if (argc <= 0 || argv == NULL)
        return vl__future_failed(c->loop, VL_EINVAL, "empty command");
    for (i = 0; i < argc; i++)
        if (argv[i] == NULL)
            return vl__future_failed(c->loop, VL_EINVAL, "argument %d is NULL", i);
    len = vl__redis_format_argv(&cmd, argc, argv, argvlen);
    if (len < 0)
        return NULL; /* the only failure of the argv formatter */
    return vl__redis_send(c, NULL, cmd, (size_t)len, 0);
}

/* ---- lifecycle ---- */

static const size_t opts_ends[] = {
    VL__END(vl_redis_options, struct_size),
    VL__END(vl_redis_options, connect_timeout_ms),
    VL__END(vl_redis_options, command_timeout_ms),
    VL__END(vl_redis_options, reconnect_min_ms),
    VL__END(vl_redis_options, reconnect_max_ms),
    VL__END(vl_redis_options, reconnect),
    VL__END(vl_redis_options, max_bulk_len),
    VL__END(vl_redis_options, max_elements),
    VL__END(vl_redis_options, max_reply_bytes),
    VL__END(vl_redis_options, max_depth),
    VL__END(vl_redis_options, tcp_keepalive_ms),
    VL__END(vl_redis_options, tcp_user_timeout_ms),
    VL__END(vl_redis_options, max_reply_mem),
};
/* No padding at the end: a field appended later must start past the end of
 * every older struct, never inside its padding. */
_Static_assert(sizeof(vl_redis_options) == VL__END(vl_redis_options, max_reply_mem),
               "vl_redis_options ends with padding");
static const vl__opts_desc opts_desc = {"vl_redis_options", sizeof(vl_redis_options), opts_ends,
                                        sizeof(opts_ends) / sizeof(opts_ends[0])};

static void opts_defaults(vl_redis_options *o)
{
    memset(o, 0, sizeof(*o));
    o->struct_size = sizeof(*o);
    o->connect_timeout_ms = 5000;
    o->command_timeout_ms = 10000;
    o->reconnect_min_ms = 100;
    o->reconnect_max_ms = 5000;
    o->reconnect = 1;
    o->max_bulk_len = 512u * 1024 * 1024;
    o->max_elements = 16u * 1024 * 1024;
    o->max_reply_bytes = 1024u * 1024 * 1024;
    o->max_depth = VL__RESP_DEPTH_MAX;
    o->tcp_keepalive_ms = 15000;
    o->tcp_user_timeout_ms = 30000;
    o->max_reply_mem = 1024u * 1024 * 1024;
}

void vl_redis_options_init_sized(vl_redis_options *o, size_t struct_size)
{
    vl_redis_options d;

    opts_defaults(&d);
    vl__opts_init(o, struct_size, &d, &opts_desc);
}

int vl__redis_options_read(vl_redis_options *dst, const vl_redis_options *src, char *why,
                           size_t whyn)
{
    opts_defaults(dst);
    return vl__opts_copy(dst, src, &opts_desc, why, whyn);
}

/* Checks the URL; on error fills c->err and c->invalid_status. */
static int setup_url(vl_redis *c, const char *url)
{
    char why[160];
    const char *dbs = NULL;
    int rc;

    if (url == NULL) {
        c->invalid_status = VL_EINVAL;
        set_str(&c->err, "bad Redis URL: no URL");
        return c->err != NULL ? VL_EINVAL : VL_ENOMEM;
    }
    rc = vl__url_parse(url, &c->url, why, sizeof(why));
    if (rc == VL_ENOMEM)
        return VL_ENOMEM;
    if (rc == VL_OK) {
        c->has_url = 1;
        if (strcmp(c->url.scheme, "rediss") == 0) {
            rc = VL_EUNSUPPORTED;
            snprintf(why, sizeof(why), "rediss:// (TLS) is not supported by this build");
        } else if (strcmp(c->url.scheme, "unix") == 0) {
            if (c->url.host[0] != '\0' || c->url.path == NULL || c->url.path[0] == '\0') {
                rc = VL_EINVAL;
                snprintf(why, sizeof(why), "unix URL needs a socket path: unix:///path?db=N");
            }
            dbs = vl__url_param(&c->url, "db");
        } else if (strcmp(c->url.scheme, "redis") == 0) {
            if (c->url.host[0] == '\0') {
                rc = VL_EINVAL;
                snprintf(why, sizeof(why), "URL has no host");
            }
            dbs = c->url.path != NULL && c->url.path[0] != '\0' ? c->url.path
                                                                 : vl__url_param(&c->url, "db");
        } else {
            rc = VL_EINVAL;
            snprintf(why, sizeof(why), "unsupported scheme '%.32s' (expected redis:// or unix://)",
                     c->url.scheme);
        }
        if (rc == VL_OK && dbs != NULL && dbs[0] != '\0') {
            char *end;
            long db = strtol(dbs, &end, 10);
            if (*end != '\0' || db < 0 || db > 1000000 || dbs[0] < '0' || dbs[0] > '9') {
                rc = VL_EINVAL;
                snprintf(why, sizeof(why), "bad database number in URL (expected /N)");
            } else {
                c->db = (int)db;
            }
        }
    }
    if (rc == VL_OK)
        return VL_OK;
    c->invalid_status = rc;
    c->err = vl__asprintf("bad Redis URL: %s", why);
    return c->err != NULL ? rc : VL_ENOMEM;
}

static void conn_release(vl__handle *h)
{
    vl_redis *c = (vl_redis *)(void *)((char *)h - offsetof(vl_redis, handle));

    vl__free(c->drop_msg);
    vl__free(c->err);
    vl__url_clear(&c->url);
    vl__free(c);
}

static void handle_free(vl__handle *h)
{
    vl_redis *c = (vl_redis *)(void *)((char *)h - offsetof(vl_redis, handle));

    c->registered = 0;
    vl_redis_free(c);
}

static vl_redis *conn_make(vl_loop *loop, const char *url, const vl_redis_options *opts)
{
    vl_redis *c;
    char why[160];
    int rc, orc;

    if (loop == NULL)
        return NULL;
    c = vl__calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->loop = loop;
    orc = vl__redis_options_read(&c->opts, opts, why, sizeof(why));
    vl__io_init(&c->io, loop, -1, io_cb, c);
    c->flush.cb = flush_cb;
    vl__timer_init(&c->connect_timer.t, loop, connect_timer_cb, c);
    vl__timer_init(&c->retry_timer.t, loop, retry_timer_cb, c);
    vl__timer_init(&c->cmd_timer.t, loop, cmd_timer_cb, c);
    rc = setup_url(c, url);
    if (rc != VL_ENOMEM && orc != VL_OK) {
        /* Options the library cannot read: nothing may run on them. */
        vl__free(c->err);
        c->err = vl__strdup(why);
        rc = c->err != NULL ? orc : VL_ENOMEM;
        c->invalid_status = orc;
    }
    if (rc == VL_ENOMEM) {
        vl__url_clear(&c->url);
        vl__free(c->err);
        vl__free(c);
        return NULL;
    }
    if (rc != VL_OK) {
        c->state = S_INVALID;
    } else if (vl__loop_closing(loop)) {
        c->state = S_INVALID;
        c->invalid_status = VL_ECLOSED;
        set_str(&c->err, "loop is closing");
        if (c->err == NULL) {
            vl__url_clear(&c->url);
            vl__free(c);
            return NULL;
        }
    }
    return c;
}

vl_redis *vl_redis_new(vl_loop *loop, const char *url, const vl_redis_options *opts)
{
    vl_redis *c = conn_make(loop, url, opts);

    if (c == NULL)
        return NULL;
    /* The loop-alive rule (volley/loop.h): like a pooled connection, it
     * keeps the loop running only while a command of it is pending. */
    c->weak = 1;
    if (!vl__loop_closing(loop)) {
        vl__handle_add(loop, &c->handle, handle_free);
        c->registered = 1;
    }
    if (c->state != S_INVALID) {
        start_attempt(c);
        hold_settle(c);
    }
    return c;
}

vl_redis *vl__redis_new_pooled(vl_loop *loop, const char *url, const vl_redis_options *opts,
                               vl__redis_event_fn fn, void *ud)
{
    vl_redis *c = conn_make(loop, url, opts);

    if (c == NULL)
        return NULL;
    c->weak = 1;
    c->ev_fn = fn;
    c->ev_ud = ud;
    if (c->state != S_INVALID) {
        start_attempt(c);
        hold_settle(c);
    }
    return c;
}

void vl_redis_free(vl_redis *c)
{
    rentry *e;

    if (c == NULL)
        return;
    if (c->in_hiredis > 0 || c->tearing) {
        c->free_requested = 1; /* io_cb frees it once hiredis has returned */
        return;
    }
    if (c->closing)
        return;
    c->closing = 1;
    if (c->registered)
        vl__handle_remove(c->loop, &c->handle);
    c->registered = 0;
    io_ref(c);
    timer_ref(c, &c->connect_timer);
    timer_ref(c, &c->retry_timer);
    timer_ref(c, &c->cmd_timer);
    if (c->state != S_INVALID)
        conn_down(c, VL_ECANCELED, "connection freed");
    vl__timer_stop(&c->connect_timer.t);
    vl__timer_stop(&c->retry_timer.t);
    vl__timer_stop(&c->cmd_timer.t);
    vl__io_stop(&c->io);
    vl__defer_cancel(c->loop, &c->flush);
    while ((e = c->spare) != NULL) {
        c->spare = e->next;
        vl__free(e);
    }
    /* While the loop is being freed, callbacks may still pass c to
     * vl_redis_free (a no-op now): keep the memory until they ran. */
    vl__handle_bury(c->loop, &c->handle, conn_release);
}

const char *vl_redis_error(const vl_redis *c)
{
    return c != NULL && c->err != NULL ? c->err : "";
}

int vl_redis_state(const vl_redis *c)
{
    if (c == NULL)
        return VL_REDIS_INVALID;
    /* A connection being torn down is not ready any more, although its
     * state changes only once hiredis has failed every pending reply: a
     * pool asking from inside that teardown must not pick it. */
    return c->dying ? VL_REDIS_DOWN : c->state;
}

size_t vl_redis_pending(const vl_redis *c)
{
    return c != NULL ? c->nuser : 0;
}

int vl__redis_clean(const vl_redis *c, unsigned epoch)
{
    return c->state == S_READY && c->epoch == epoch && c->nuser == 0 && c->flight.n == 0 &&
           c->wait.n == 0 && !c->in_multi && !c->watching && !c->db_changed && !c->dirty &&
           !c->closing && !c->dying;
}

int vl__redis_live(const vl_redis *c, unsigned epoch)
{
    return c->state == S_READY && c->epoch == epoch && !c->closing && !c->dying;
}

unsigned vl__redis_epoch(const vl_redis *c)
{
    return c->epoch;
}

void vl__redis_counters(const vl_redis *c, uint64_t *connects, uint64_t *reconnects,
                        uint64_t *errors)
{
    *connects = c->connects;
    *reconnects = c->reconnects;
    *errors = c->connect_errors;
}

void vl__redis_hold(vl_redis *c, int on)
{
    c->held = on != 0;
    hold_settle(c);
}

int vl__redis_ping(vl_redis *c)
{
    static const char *argv[1] = {"PING"};
    int rc;

    if (c->state != S_READY || c->ac == NULL || c->closing || c->tearing || c->dying)
        return VL_ECONN;
    rc = internal_cmd(c, K_PING, 1, argv);
    /* The timer runs only while user commands are pending (an idle pooled
     * connection must not hold the loop); their arrival arms it for the
     * PING's deadline too, since it is the oldest reply then. */
    if (rc == VL_OK && c->nuser > 0 && c->flight.tail != NULL)
        arm_for(c, c->flight.tail->deadline);
    hold_settle(c);
    return rc;
}

void vl__redis_drop(vl_redis *c, const char *msg)
{
    if (c->closing || c->tearing || c->dying || (c->state != S_READY && c->state != S_CONNECTING))
        return;
    request_drop(c, VL_ECONN, msg);
    if (c->in_hiredis == 0)
        hold_settle(c);
}

void vl__redis_detach(vl_redis *c)
{
    c->ev_fn = NULL;
    c->ev_ud = NULL;
}

int vl__redis_url_error(vl_loop *loop, const char *url, char **msg)
{
    vl_redis *c = conn_make(loop, url, NULL);
    int rc;

    *msg = NULL;
    if (c == NULL)
        return VL_ENOMEM;
    rc = c->state == S_INVALID ? c->invalid_status : VL_OK;
    if (rc != VL_OK) {
        *msg = c->err;
        c->err = NULL;
    }
    vl_redis_free(c);
    return rc;
}
