/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/redis.c - a Redis connection: volley's own connection engine.
 *
 * The engine. volley owns the socket from the first syscall: a
 * non-blocking connect to each resolved address in turn (within the
 * connect timeout), TLS when the URL says rediss:// (lib/tls.c), the
 * handshake (AUTH, SELECT, CLIENT SETNAME, READONLY and a PING whose echo
 * makes the connection READY), then commands. One vl__io watcher follows
 * the socket; libev stays behind lib/loop.c. hiredis is not used here at
 * all: the RESP framer (lib/redis_resp.c) and parser (lib/redis_reply.c)
 * read replies, and commands are formatted below.
 *
 * Writing. A command is appended to the connection's output buffer at
 * once, and the buffer is written once per loop iteration, before the poll
 * (the flush defer): commands issued in one callback leave in one send().
 * A buffer that grows past OBUF_EAGER is written at once instead, so a
 * burst never holds more than that in memory before it meets the socket.
 * Only a partial write arms the write watcher. Every write is
 * send(MSG_NOSIGNAL) (or TLS through its own BIO, which does the same): a
 * peer that closed never raises SIGPIPE, and the process's signal
 * disposition is never touched.
 *
 * Reading. One recv per readable event into the input buffer; the framer
 * scans each byte once and says where each reply ends and whether it stays
 * within the limits; each complete reply is then parsed into one block and
 * matched to the oldest command owed a reply (the in-flight list is in the
 * order commands were written). A reply nobody is owed (before any
 * request, or one too many) is a protocol error that closes this
 * connection only. A reply over a limit is refused as soon as its header
 * breaks the limit, before anything is allocated for it. The bytes of a
 * reply not yet complete stay in the buffer; it grows for a big reply and
 * shrinks again once the connection is idle.
 *
 * Matching replies. An entry whose future was cancelled or timed out stays
 * in place with its future pointer cleared: its late reply is read and
 * dropped, never handed to the next command.
 *
 * Safe points. Completing a future only queues it on the loop, so user
 * code never runs inside the engine; the pool's event callback does (a
 * pool may route a waiting request to this connection, or free it). Every
 * entry point from the loop (io, flush, timers, resolution) raises `busy`;
 * a teardown or a free requested meanwhile is recorded and carried out at
 * the end of it (settle), never under the feet of a read in progress.
 *
 * Teardown. close_transport fails every command in flight with the
 * teardown's status and message, closes the socket and resets the buffers;
 * after_down then fails what waited for the handshake, moves to DOWN and
 * schedules the next attempt.
 *
 * Command timeouts. All commands of a connection have the same timeout, so
 * their deadlines grow in the order they were issued, which is also the
 * order of the lists. One timer serves them all, and a cursor walks the
 * in-flight list once: no per-command timer, no rescan. Blocking commands
 * (BLPOP...) add their own timeout and so break that order: the cursor
 * passes them, and they count only once they are the oldest. When the
 * oldest reply is overdue the connection is closed (nothing behind it can
 * arrive first).
 *
 * Push connections (the subscriber's, lib/redis_pubsub.c) run the same
 * engine; once READY their replies are not matched to commands but handed
 * to the owner's push function, in order.
 */
#include "redis_internal.h"
#include "tls.h"
#include "url.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* K_HELLO is the handshake's "PING <token>": its echo makes a connection
 * READY. K_PING is a keepalive PING of the pool's. K_NAME is CLIENT
 * SETNAME. K_READONLY is READONLY (?readonly=1), for a cluster replica. */
enum { K_USER = 0, K_AUTH, K_SELECT, K_HELLO, K_PING, K_NAME, K_READONLY };
enum { W_NONE = 0, W_WAIT, W_FLIGHT };
enum { S_CONNECTING = VL_REDIS_CONNECTING, S_READY = VL_REDIS_READY, S_DOWN = VL_REDIS_DOWN,
       S_INVALID = VL_REDIS_INVALID };
/* Where an attempt is, while CONNECTING. */
enum { P_NONE = 0, P_RESOLVE, P_TCP, P_TLS, P_HANDSHAKE };

/* What a command does to the connection state a lease must return clean. */
#define CF_MULTI 1u
#define CF_EXEC 2u    /* EXEC and DISCARD: end MULTI and WATCH */
#define CF_WATCH 4u
#define CF_UNWATCH 8u
#define CF_SELECT 16u
#define CF_CLIENT 32u /* look at the subcommand */
#define CF_DIRTY 64u  /* RESET, AUTH, CLIENT TRACKING, SWAPDB: state no
                       * reply tells us how to undo */


/* Entries are allocated this many at a time, in one block: an entry costs
 * its own size and no allocator header. Blocks are freed with the
 * connection. */
#define ENTRY_SLAB 64

/* Bytes of commands issued and not yet written, at most (see
 * "Back-pressure" in volley/redis.h). */
#define OBUF_MAX (1024ull * 1024 * 1024)
/* An output buffer this full is written at once rather than at the end of
 * the loop iteration. */
#define OBUF_EAGER (64u * 1024)
/* Input buffer: the least free space a read gets, and more with more
 * replies owed (IBUF_PER_REPLY each, up to IBUF_READ_MAX): a deep
 * pipeline's replies then come in few reads, while an idle or shallow
 * connection keeps a small buffer. */
#define IBUF_MIN (16u * 1024)
#define IBUF_PER_REPLY 32u
#define IBUF_READ_MAX (64u * 1024)
/* Buffers bigger than this are given back once they are empty. */
#define BUF_KEEP (256u * 1024)
/* Reads in one event of a TLS connection with decrypted bytes pending, and
 * records written in one go. */
#define TLS_READS_MAX 64
#define TLS_WRITES_MAX 64

typedef struct rentry rentry;
struct rentry {
    rentry *prev, *next;
    vl_future *f;      /* NULL for handshake entries and once abandoned */
    char *cmd;         /* W_WAIT: the formatted command, not yet written */
    uint64_t deadline; /* loop ms; 0: none */
    uint32_t len;      /* bytes of the command (at most OBUF_MAX) */
    unsigned char kind : 4;
    unsigned char where : 2;
    unsigned char block : 1; /* a blocking command (BLPOP...): its deadline is its own */
    unsigned char flags;
    unsigned char verb;  /* the command's name in the connection's verbs; 0: none */
    unsigned char slot;  /* its place in its slab, which knows the connection */
};
/* Every command in flight costs one entry (and one future): 48 bytes. */
_Static_assert(sizeof(rentry) <= 48, "rentry grew");

/* Distinct command names a connection remembers for its messages ("GET on
 * redis://...: command timed out"): an entry keeps a one-byte index. A
 * connection running more distinct commands than this names the rest
 * "command". */
#define VERBS_MAX 48

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

/* A block of entries (ENTRY_SLAB of them follow it). An entry finds its
 * connection through its slab (entry_conn), so it needs no pointer of its
 * own to it. */
typedef struct eslab {
    struct eslab *next;
    vl_redis *c;
} eslab;
_Static_assert(ENTRY_SLAB <= 256, "an entry's slot is one byte");

struct vl_redis {
    vl_loop *loop;
    vl__handle handle;
    int registered;
    vl__url url;
    int has_url;
    int db;
    int state;
    int phase;         /* P_*: where an attempt is */
    int invalid_status;
    vl_redis_options opts;
    int fd;
    vl__io io;
    vl__defer flush;   /* writes the commands of this iteration before the poll */
    vl__defer more;    /* a TLS read with decrypted bytes still pending */
    vl__turn turn;     /* waiting for its share of an iteration (loop.c) */
    int drain;         /* take every reply now, whatever the budget */
    int io_events;
    int io_unref;
    ctimer connect_timer, retry_timer, cmd_timer;
    ctimer addr_timer; /* one address's share of the connect timeout */
    uint64_t attempt_end; /* loop ms the connect timeout ends at; 0: none */
    uint64_t cmd_at;   /* the deadline cmd_timer is armed for */
    rlist wait;        /* user commands waiting for the handshake */
    rlist flight;      /* in the output buffer or written, reply due */
    rentry *tcur;      /* first in-flight entry the timeout scan has not passed */
    rentry *wcur;      /* first in-flight entry not yet written in full */
    size_t wleft;      /* bytes of wcur still to write */
    size_t nwritten;   /* in-flight entries written in full: replies owed */
    char *ob;          /* output buffer: ob[ob_off..ob_len) not written yet */
    size_t ob_off, ob_len, ob_cap;
    int wblocked;      /* a write was partial: the watcher waits for room */
    char *ib;          /* input buffer: ib[ib_at..ib_len) read, not consumed;
                        * the framer has seen ib[..ib_scan) */
    size_t ib_at, ib_scan, ib_len, ib_cap;
    vl__resp resp;     /* the framer of this connection's reply stream */
    char token[24];    /* the handshake PING's argument, echoed by the server */
    char *name;        /* CLIENT SETNAME in the handshake (?name=); NULL: none */
    int readonly;      /* READONLY in the handshake (?readonly=1) */
    char *addrs;       /* resolved addresses, '\n' between them */
    char *addr_next;   /* the next address to try; NULL: none left */
    char *addr_err;    /* why the last address failed */
    int tls;           /* rediss:// */
    vl__tls_ctx *tls_ctx;
    vl__tls *sess;
    int tls_rw;        /* a TLS read waits for the socket to be writable */
    int tls_wr;        /* a TLS write waits for it to be readable */
    int tls_hs;        /* what the TLS handshake waits for (VL__TLS_WANT_*) */
    rentry *spare;
    char verbs[VERBS_MAX][20]; /* verbs[0] is "" */
    unsigned char nverbs, last_verb;
    eslab *slabs;
    size_t nuser;      /* user entries in wait + flight */
    int handshake_left;
    rtoken *resolving;
    char *err;         /* last error message */
    char *drop_msg;    /* message for the teardown under way (NULL: no memory) */
    int drop_status;
    int drop_set;      /* drop_status is set for the teardown under way */
    unsigned attempts; /* failed attempts since the last handshake */
    int ever_ready;
    int busy;          /* inside the engine: teardowns and frees wait (settle) */
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
    vl__redis_push_fn push_fn; /* a push connection's owner */
    void *ev_ud;
};

static void conn_down(vl_redis *c, int status, const char *msg);
static int classify(const char *cmd, size_t len, unsigned *flags, uint64_t *block, char *name,
                    size_t namelen);
static void request_drop(vl_redis *c, int status, const char *msg);
static void drop_with(vl_redis *c, int status, const char *what, const char *why);
static void start_attempt(vl_redis *c);
static void hold_settle(vl_redis *c);
static void settle(vl_redis *c);
static void io_update(vl_redis *c);
static void take_waiting(vl_redis *c);

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

/* A one-shot timer that fired was stopped by libev, which dropped its
 * count: take back the unref. */
static void timer_fired(vl_redis *c, ctimer *t)
{
    if (t->unref) {
        vl__loop_ref(c->loop);
        t->unref = 0;
    }
}

static void hold_settle(vl_redis *c)
{
    ctimer *ts[3];
    int i;

    if (!c->weak || c->closing)
        return;
    /* The common case, a busy connection already holding the loop. */
    if ((c->nuser > 0 || c->held) && !c->io_unref && !c->connect_timer.unref &&
        !c->retry_timer.unref && !c->addr_timer.unref)
        return;
    ts[0] = &c->connect_timer;
    ts[1] = &c->retry_timer;
    ts[2] = &c->addr_timer;
    if (c->nuser > 0 || c->held) {
        io_ref(c);
        for (i = 0; i < 3; i++)
            timer_ref(c, ts[i]);
        return;
    }
    if (!c->io_unref && c->io.events != 0 && c->io.fd >= 0) {
        vl__loop_unref(c->loop);
        c->io_unref = 1;
    }
    for (i = 0; i < 3; i++) {
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

    if (e == NULL) {
        /* A slab of them: no allocator header per entry. */
        eslab *s = vl__malloc(sizeof(eslab) + ENTRY_SLAB * sizeof(rentry));
        rentry *es;
        int i;
        if (s == NULL)
            return NULL;
        s->next = c->slabs;
        s->c = c;
        c->slabs = s;
        es = (rentry *)(void *)(s + 1);
        for (i = ENTRY_SLAB - 1; i >= 0; i--) {
            es[i].next = c->spare;
            es[i].slot = (unsigned char)i;
            c->spare = &es[i];
        }
        e = c->spare;
    }
    c->spare = e->next;
    {
        unsigned char slot = e->slot;
        memset(e, 0, sizeof(*e));
        e->slot = slot;
    }
    return e;
}

static vl_redis *entry_conn(const rentry *e)
{
    const eslab *s = (const eslab *)(const void *)(e - e->slot) - 1;

    return s->c;
}

/* Recycles an entry that has left both lists. */
static void entry_put(vl_redis *c, rentry *e)
{
    int user = e->kind == K_USER && e->where != W_NONE;

    if (e->cmd != NULL)
        vl__redis_cmd_free(e->cmd);
    e->cmd = NULL;
    e->where = W_NONE;
    e->next = c->spare;
    c->spare = e;
    if (user && --c->nuser == 0) {
        timer_stop(c, &c->cmd_timer);
        emit(c, VL__REDIS_EV_IDLE, VL_OK);
    }
}

static void wait_unlink(vl_redis *c, rentry *e)
{
    list_unlink(&c->wait, e);
}

/* `e->len` is the length of its command, which went to the end of the
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

/* The name of e's command, upper case, or "". */
static const char *verb_of(const vl_redis *c, const rentry *e)
{
    return c->verbs[e->verb];
}

/* The index of `name` (upper-cased) among the connection's verbs, added if
 * new; 0 when there is no room. */
static unsigned char verb_id(vl_redis *c, const char *name)
{
    char up[20];
    size_t i;

    if (c->last_verb != 0) { /* the same command as the last: no copy */
        const char *v = c->verbs[c->last_verb];
        for (i = 0; v[i] != '\0' && (name[i] & ~0x20) == v[i]; i++)
            ;
        if (v[i] == '\0' && name[i] == '\0')
            return c->last_verb;
    }
    for (i = 0; name[i] != '\0' && i < sizeof(up) - 1; i++)
        up[i] = (char)toupper((unsigned char)name[i]);
    up[i] = '\0';
    if (up[0] == '\0')
        return 0;
    for (i = 1; i < c->nverbs; i++)
        if (strcmp(c->verbs[i], up) == 0)
            return c->last_verb = (unsigned char)i;
    if (c->nverbs == 0)
        c->nverbs = 1; /* verbs[0] stays "" */
    if (c->nverbs >= VERBS_MAX)
        return 0;
    memcpy(c->verbs[c->nverbs], up, sizeof(up));
    c->last_verb = c->nverbs;
    return c->nverbs++;
}

/* A user command's message names the command and the endpoint: "GET on
 * redis://127.0.0.1:6379: <what happened>". Messages that already start
 * with the endpoint get the verb in front only. NULL when out of memory. */
static char *entry_msg(const vl_redis *c, const rentry *e, const char *msg)
{
    size_t dl = strlen(c->url.display);

    if (msg == NULL)
        msg = "failed";
    const char *verb = verb_of(c, e);

    if (verb[0] == '\0' || !c->has_url)
        return vl__strdup(msg);
    if (dl > 0 && strncmp(msg, c->url.display, dl) == 0)
        return vl__asprintf("%s on %s", verb, msg);
    if (strncmp(msg, "connect ", 8) == 0 || strstr(msg, c->url.display) != NULL)
        return vl__asprintf("%s: %s", verb, msg);
    return vl__asprintf("%s on %s: %s", verb, c->url.display, msg);
}

/* Completes the future of `e` (if any) with a failure and forgets it. */
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

/* Hands `r` (NULL: no memory for it) to the future of `e`, which takes it
 * over; without a future (abandoned) the reply is freed. */
static void entry_deliver(vl_redis *c, rentry *e, vl_redis_reply *r)
{
    vl_future *f = e->f;

    if (f == NULL) {
        vl_redis_reply_free(r);
        return;
    }
    e->f = NULL;
    if (r == NULL) {
        vl__future_complete(f, VL_ENOMEM, NULL, VL__VAL_NONE, NULL, "out of memory for a reply");
        emit(c, VL__REDIS_EV_DONE, VL_ENOMEM);
    } else if (vl__redis_reply_is_error(r)) {
        /* The reply keeps the server's own text; the message says where. */
        const char *text = vl__redis_reply_text(r);
        int not_master = strncmp(text, "READONLY", 8) == 0 || strncmp(text, "MASTERDOWN", 10) == 0;
        char *m = entry_msg(c, e, text);
        vl__future_complete(f, VL_ESERVER, r, VL__VAL_REDIS, free_reply_value,
                            m != NULL ? m : text);
        vl__free(m);
        if (not_master)
            emit(c, VL__REDIS_EV_NOT_MASTER, VL_ESERVER);
        emit(c, VL__REDIS_EV_DONE, VL_ESERVER);
    } else {
        vl__future_complete(f, VL_OK, r, VL__VAL_REDIS, free_reply_value, NULL);
        emit(c, VL__REDIS_EV_DONE, VL_OK);
    }
}

/* The cancel hook: the future gave up (cancel, timeout, free). A command
 * still waiting for the handshake is dropped unsent; one in the output
 * buffer or on the wire keeps its entry for the late reply. */
static void entry_cancel(void *source, vl_future *f, int status)
{
    rentry *e = source;
    vl_redis *c = entry_conn(e);

    VL__UNUSED(f);
    c->busy++; /* the pool hears DONE: what it asks waits for settle */
    e->f = NULL;
    if (e->where == W_WAIT) {
        wait_unlink(c, e);
        entry_put(c, e);
    }
    emit(c, VL__REDIS_EV_DONE, status);
    c->busy--;
    settle(c);
}

static void entry_describe(void *source, char *buf, size_t n)
{
    rentry *e = source;
    vl_redis *c = entry_conn(e);
    const char *verb = verb_of(c, e);

    snprintf(buf, n, "%s on %s", verb[0] ? verb : "command", c->url.display);
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

/* "HOST: command timed out after N ms", in buf. */
static const char *timeout_text(const vl_redis *c, char *buf, size_t n)
{
    snprintf(buf, n, "%s: command timed out after %" PRIu64 " ms", c->url.display,
             c->opts.command_timeout_ms);
    return buf;
}

static void cmd_timer_cb(vl__timer *t, void *ud)
{
    vl_redis *c = ud;
    uint64_t now = vl_loop_now_ms(c->loop);
    char msg[256];
    rentry *e;

    VL__UNUSED(t);
    timer_fired(c, &c->cmd_timer);
    c->busy++;
    take_waiting(c); /* a reply that came in time is never judged late */
    timeout_text(c, msg, sizeof(msg));
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
        c->fd >= 0 && !c->dying && !c->closing) {
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
        c->busy--;
        settle(c);
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
    c->busy--;
    settle(c);
}

/* ---- teardown ---- */

static void set_drop(vl_redis *c, int status, const char *msg)
{
    c->drop_set = 1;
    c->drop_status = status;
    set_str(&c->drop_msg, msg);
}

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

/* A teardown decided inside the engine waits for the end of the entry point
 * (settle); elsewhere it happens now. The first reason given wins. */
static void request_drop(vl_redis *c, int status, const char *msg)
{
    c->dying = 1;
    if (c->busy > 0) {
        if (!c->drop_requested && !c->drop_set)
            set_drop(c, status, msg);
        c->drop_requested = 1;
        return;
    }
    conn_down(c, status, msg);
}

/* Empties the output buffer, giving a burst's big one back. */
static void ob_empty(vl_redis *c)
{
    c->ob_off = c->ob_len = 0;
    if (c->ob_cap > BUF_KEEP) {
        vl__free(c->ob);
        c->ob = NULL;
        c->ob_cap = 0;
    }
}

/* Empties the input buffer, giving a big reply's one back. */
static void ib_empty(vl_redis *c)
{
    c->ib_at = c->ib_scan = c->ib_len = 0;
    if (c->ib_cap > BUF_KEEP) {
        vl__free(c->ib);
        c->ib = NULL;
        c->ib_cap = 0;
    }
}

static void buf_reset(vl_redis *c)
{
    ob_empty(c);
    ib_empty(c);
}

/* Closes the socket and fails every command in flight with the teardown's
 * status and message. */
static void close_transport(vl_redis *c)
{
    rentry *e;

    c->io_events = 0;
    io_ref(c);
    vl__io_stop(&c->io);
    vl__defer_cancel(c->loop, &c->flush);
    vl__defer_cancel(c->loop, &c->more);
    vl__turn_cancel(c->loop, &c->turn);
    if (c->sess != NULL) {
        vl__tls_free(c->sess);
        c->sess = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    c->phase = P_NONE;
    c->tls_rw = c->tls_wr = c->tls_hs = 0;
    c->wblocked = 0;
    timer_stop(c, &c->addr_timer);
    while ((e = c->flight.head) != NULL) {
        flight_unlink(c, e);
        entry_fail(c, e, c->drop_status, c->drop_msg != NULL ? c->drop_msg : "connection lost");
        entry_put(c, e);
    }
    c->wcur = c->tcur = NULL;
    c->wleft = 0;
    c->nwritten = 0;
    buf_reset(c);
}

/* Fails what waited and goes DOWN; schedules the next attempt. The socket
 * is closed already (or there never was one). */
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

/* Ends the connection or the attempt under way, failing what is pending
 * with the teardown's status and message (`msg` NULL: those already set by
 * request_drop). The pool hears of it through DONE and DOWN; whatever it
 * asks meanwhile waits for settle. */
static void conn_down(vl_redis *c, int status, const char *msg)
{
    c->busy++;
    c->dying = 1;
    if (msg != NULL || !c->drop_set)
        set_drop(c, status, msg != NULL ? msg : "connection closed");
    c->drop_requested = 0;
    if (c->resolving != NULL) {
        rtoken *tok = c->resolving;
        c->resolving = NULL;
        tok->c = NULL;
        vl_future_cancel(tok->f); /* its callback frees the token */
    }
    close_transport(c);
    after_down(c);
    c->busy--;
}

/* The end of every entry point from the loop: a teardown, then a free,
 * requested meanwhile. */
static void settle(vl_redis *c)
{
    if (c->busy > 0)
        return;
    if (c->drop_requested)
        conn_down(c, c->drop_status, NULL);
    if (c->free_requested) {
        vl_redis_free(c);
        return;
    }
    hold_settle(c);
}

/* ---- replies ---- */

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

static void become_ready(vl_redis *c);

/* 1 when `r` is the status reply +OK. */
static int reply_is_ok(const vl_redis_reply *r)
{
    const char *str;
    size_t len;

    if (vl_redis_reply_type(r) != VL_REDIS_STATUS)
        return 0;
    str = vl_redis_reply_str(r, &len);
    return str != NULL && len == 2 && memcmp(str, "OK", 2) == 0;
}

/* The reply to one of our own commands: a handshake step or a keepalive. */
static void own_reply(vl_redis *c, const rentry *e, const vl_redis_reply *r)
{
    if (e->kind == K_PING) {
        emit(c, VL__REDIS_EV_PONG, r == NULL || vl__redis_reply_is_error(r) ? VL_ESERVER : VL_OK);
    } else if (c->drop_requested || c->dying) {
        /* An earlier handshake step failed: this attempt is over. */
    } else if (r == NULL) {
        /* No memory for the reply: this attempt cannot tell how it went. */
        request_drop(c, VL_ENOMEM, "connect: out of memory");
    } else if (vl__redis_reply_is_error(r) && !(e->kind == K_HELLO && ping_refused_alone(r))) {
        /* A server refusing the connection (maxclients, LOADING, NOAUTH)
         * says so in reply to the handshake: a failed connect. */
        char *msg = vl__asprintf("%s %s: %s",
                                 e->kind == K_AUTH       ? "auth"
                                 : e->kind == K_SELECT   ? "select"
                                 : e->kind == K_NAME     ? "client setname"
                                 : e->kind == K_READONLY ? "readonly"
                                                         : "connect",
                                 c->url.display, vl__redis_reply_text(r));
        request_drop(c, VL_ECONN, msg != NULL ? msg : "handshake failed");
        vl__free(msg);
    } else if (e->kind == K_READONLY && !reply_is_ok(r)) {
        /* Only +OK says that reads of the primary's slots may be served
         * here; anything else leaves the connection redirecting them. */
        char *msg = vl__asprintf("readonly %s: unexpected reply to READONLY (expected +OK)",
                                 c->url.display);
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
    } else if (--c->handshake_left == 0 && c->state == S_CONNECTING) {
        become_ready(c);
    }
}

/* One complete reply (NULL: no memory for it) goes where it is owed. */
static void on_reply(vl_redis *c, vl_redis_reply *r)
{
    rentry *e;

    if (c->push_fn != NULL && c->state == S_READY) {
        if (r == NULL)
            drop_with(c, VL_ENOMEM, "connection closed: ", "out of memory for a reply");
        else
            c->push_fn(c, r, c->ev_ud);
        return;
    }
    e = c->flight.head; /* the caller made sure a reply is owed */
    flight_unlink(c, e);
    c->nwritten--;
    if (e->kind == K_USER) {
        if (e->flags != 0)
            track(c, e->flags, r);
        entry_deliver(c, e, r);
    } else {
        own_reply(c, e, r);
        vl_redis_reply_free(r);
    }
    entry_put(c, e);
}

/* Bytes arrived that no command is owed: show the start of them. */
static void refuse_unexpected(vl_redis *c, const char *buf, size_t len)
{
    char text[80];
    size_t i, o = 0;

    if (c->state == S_CONNECTING && len > 1 && buf[0] == '-') {
        /* An error line before the handshake was even written is a server
         * refusing the connection (maxclients, LOADING): a failed connect
         * with the server's text. */
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

/* Frames, parses and hands over every complete reply in the input buffer,
 * each for a unit of the loop's budget (vl__turn_take). Returns 1 when the
 * budget ran out first: the connection's turn, queued, takes the rest.
 * ib[ib_at..ib_scan) is the start of a reply the framer has seen;
 * ib[ib_scan..ib_len) is new. */
static int take_replies(vl_redis *c)
{
    size_t used, replies;

    while (c->ib_scan < c->ib_len && !c->drop_requested && !c->free_requested) {
        int push = c->push_fn != NULL && c->state == S_READY;
        if (!c->drain && !vl__turn_take(c->loop, &c->turn))
            return 1;
        if (!push && c->nwritten == 0) {
            refuse_unexpected(c, c->ib + c->ib_scan, c->ib_len - c->ib_scan);
            return 0;
        }
        /* One reply at a time: each is parsed once whole, from the bytes
         * the framer has just passed. */
        used = vl__resp_scan(&c->resp, c->ib + c->ib_scan, c->ib_len - c->ib_scan, 1, &replies);
        c->ib_scan += used;
        if (replies > 0) {
            vl_redis_reply *r = vl__reply_parse(c->ib + c->ib_at, c->ib_scan - c->ib_at,
                                                c->resp.done_nodes, c->resp.done_text);
            c->ib_at = c->ib_scan;
            on_reply(c, r);
        }
        if (c->resp.error) {
            if (!c->drop_requested)
                refuse_reply(c);
            return 0;
        }
        if (replies == 0)
            break; /* the rest is the start of a reply */
    }
    if (c->ib_at == c->ib_len)
        ib_empty(c);
    return 0;
}

/* ---- reading and writing ---- */

static const char *errno_text(int err, char *buf, size_t len)
{
    return strerror_r(err, buf, len);
}

/* Room for a read (see IBUF_MIN) after ib_len. */
static int ib_room(vl_redis *c)
{
    size_t cap, want = IBUF_MIN;
    char *nb;

    if (c->nwritten > IBUF_MIN / IBUF_PER_REPLY)
        want = c->nwritten < IBUF_READ_MAX / IBUF_PER_REPLY ? c->nwritten * IBUF_PER_REPLY
                                                            : IBUF_READ_MAX;
    if (c->ib_cap - c->ib_len >= want)
        return 0;
    if (c->ib_at > 0) { /* the start of a reply moves to the front */
        memmove(c->ib, c->ib + c->ib_at, c->ib_len - c->ib_at);
        c->ib_len -= c->ib_at;
        c->ib_scan -= c->ib_at;
        c->ib_at = 0;
        if (c->ib_cap - c->ib_len >= want)
            return 0;
    }
    cap = c->ib_cap < want ? want : c->ib_cap * 2;
    if (cap - c->ib_len < want)
        cap = c->ib_len + want;
    /* A bulk string whose length is known gets its room at once. */
    if (c->resp.bulk_left > 0 && c->resp.bulk_left < SIZE_MAX / 2 &&
        c->ib_len + (size_t)c->resp.bulk_left + IBUF_MIN > cap)
        cap = c->ib_len + (size_t)c->resp.bulk_left + IBUF_MIN;
    nb = vl__realloc(c->ib, cap);
    if (nb == NULL)
        return -1;
    c->ib = nb;
    c->ib_cap = cap;
    return 0;
}

/* One read of the socket (one chunk per event, as the kernel wakes us per
 * chunk anyway); a TLS session may hold decrypted bytes the socket will not
 * announce, so those are read on. Returns 1 when bytes were read. */
static int conn_read(vl_redis *c)
{
    char ebuf[160];
    int reads, yielded;

    for (reads = 0;; reads++) {
        ssize_t n;
        int want = 0;
        if (ib_room(c) != 0) {
            drop_with(c, VL_ENOMEM, "", "out of memory reading a reply");
            return reads > 0;
        }
        if (c->sess != NULL) {
            n = vl__tls_read(c->sess, c->ib + c->ib_len, c->ib_cap - c->ib_len, &want, ebuf,
                             sizeof(ebuf));
            c->tls_rw = n == -1 && want == VL__TLS_WANT_WRITE;
            if (n == -1)
                return reads > 0;
            if (n == -2) {
                drop_with(c, VL_ECONN, c->state == S_CONNECTING ? "" : "connection lost: ", ebuf);
                return reads > 0;
            }
        } else {
            n = recv(c->fd, c->ib + c->ib_len, c->ib_cap - c->ib_len, 0);
            if (n < 0) {
                if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                    drop_with(c, VL_ECONN, c->state == S_CONNECTING ? "" : "connection lost: ",
                              errno_text(errno, ebuf, sizeof(ebuf)));
                return reads > 0;
            }
        }
        if (n == 0) {
            drop_with(c, VL_ECONN, c->state == S_CONNECTING ? "" : "connection lost: ",
                      vl__resp_mid_reply(&c->resp)
                          ? "server closed the connection in the middle of a reply"
                          : "server closed the connection");
            return reads > 0;
        }
        c->ib_len += (size_t)n;
        yielded = take_replies(c);
        /* A TLS read returns one record; the session may hold more, read
         * ahead from the socket, which will not announce them: read on
         * until the session says it would block (or the turn ends). */
        if (c->drop_requested || c->free_requested || c->sess == NULL || yielded)
            return 1;
        if (reads + 1 >= TLS_READS_MAX) {
            if (vl__tls_pending(c->sess) > 0)
                vl__defer_queue(c->loop, &c->more); /* the others get their turn */
            return 1;
        }
    }
}

static void conn_write_failed(vl_redis *c, const char *why)
{
    int i, was = c->drain;

    /* A server that closed on us may have said why first ("-ERR max number
     * of clients reached"): read what it sent before giving up, and take
     * every reply that came before it, budget or not. */
    c->drain = 1;
    (void)take_replies(c); /* drain: never yields */
    for (i = 0; i < 16 && !c->drop_requested && c->fd >= 0 && c->sess == NULL; i++)
        if (!conn_read(c))
            break; /* (a TLS session that failed a write reads nothing more) */
    c->drain = was;
    if (c->drop_requested)
        return;
    if (c->sess != NULL && c->phase == P_HANDSHAKE && vl__url_param(&c->url, "cert") == NULL) {
        /* A TLS 1.3 server that wants a client certificate says so only
         * after the client's handshake is over, in an alert that a reset
         * may have swallowed: say what it most likely was. */
        char *m = vl__asprintf("%s (the server may require a client certificate: cert= and "
                               "key=)",
                               why);
        drop_with(c, VL_ECONN, "", m != NULL ? m : why);
        vl__free(m);
        return;
    }
    drop_with(c, VL_ECONN, c->state == S_CONNECTING ? "" : "connection lost: ", why);
}

/* Writes what the output buffer holds, in one send (MSG_NOSIGNAL: a peer
 * that closed never raises SIGPIPE). */
static void conn_write(vl_redis *c)
{
    size_t len = c->ob_len - c->ob_off;
    char ebuf[160];
    ssize_t n;

    if (len == 0 || c->fd < 0 || c->phase == P_TCP || c->phase == P_TLS || c->drop_requested)
        return;
    if (c->sess != NULL) {
        /* One record per call: go on while the socket takes them. */
        size_t sent = 0;
        int records = 0;
        do {
            int want = 0;
            n = vl__tls_write(c->sess, c->ob + c->ob_off + sent, len - sent, &want, ebuf,
                              sizeof(ebuf));
            c->tls_wr = n == -1 && want == VL__TLS_WANT_READ;
            if (n == -2) {
                flight_written(c, sent);
                c->ob_off += sent;
                conn_write_failed(c, ebuf);
                return;
            }
            if (n > 0)
                sent += (size_t)n;
        } while (n > 0 && sent < len && ++records < TLS_WRITES_MAX);
        n = (ssize_t)sent;
    } else {
        n = send(c->fd, c->ob + c->ob_off, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                conn_write_failed(c, errno_text(errno, ebuf, sizeof(ebuf)));
                return;
            }
            n = 0;
        }
    }
    flight_written(c, (size_t)n);
    c->ob_off += (size_t)n;
    if (c->ob_off == c->ob_len) {
        ob_empty(c);
        c->wblocked = 0;
    } else {
        c->wblocked = !c->tls_wr; /* wait for the socket (a TLS write waiting
                                   * for a read retries on the next read) */
    }
    io_update(c);
}

/* The watcher follows what the connection waits for: the outcome of a
 * TCP connect, a TLS handshake step, replies (always, once connected: a
 * hang-up is noticed while idle too), and room to write after a partial
 * write. */
static void io_update(vl_redis *c)
{
    int ev = 0;

    if (c->fd >= 0) {
        if (c->phase == P_TCP)
            ev = VL__WRITE;
        else if (c->phase == P_TLS)
            ev = c->tls_hs == VL__TLS_WANT_WRITE ? VL__WRITE : VL__READ;
        else
            ev = VL__READ | (c->wblocked || c->tls_rw ? VL__WRITE : 0);
    }
    if (ev == c->io_events && (ev == 0 || c->io.fd == c->fd))
        return;
    c->io_events = ev;
    io_ref(c);
    vl__io_set(&c->io, c->fd, ev);
}

/* Room for n more bytes after ob_len. VL_OK or VL_ENOMEM. */
static int ob_reserve(vl_redis *c, size_t n)
{
    if (c->ob_cap - c->ob_len < n) {
        size_t cap;
        char *nb;
        if (c->ob_off > 0) { /* what was written goes */
            memmove(c->ob, c->ob + c->ob_off, c->ob_len - c->ob_off);
            c->ob_len -= c->ob_off;
            c->ob_off = 0;
        }
        if (c->ob_cap - c->ob_len < n) {
            cap = c->ob_cap < 4096 ? 4096 : c->ob_cap;
            while (cap - c->ob_len < n)
                cap *= 2;
            nb = vl__realloc(c->ob, cap);
            if (nb == NULL)
                return VL_ENOMEM;
            c->ob = nb;
            c->ob_cap = cap;
        }
    }
    return VL_OK;
}

/* Appends to the output buffer. VL_OK or VL_ENOMEM (nothing appended). */
static int ob_append(vl_redis *c, const char *p, size_t n)
{
    if (ob_reserve(c, n) != VL_OK)
        return VL_ENOMEM;
    memcpy(c->ob + c->ob_len, p, n);
    c->ob_len += n;
    return VL_OK;
}

/* New bytes are in the output buffer: they leave before the next poll, or
 * now when the buffer is big already (the caller settles afterwards). */
static void want_flush(vl_redis *c)
{
    if (c->wblocked || c->phase == P_TCP || c->phase == P_TLS)
        return; /* the watcher writes once the socket is ready */
    if (c->ob_len - c->ob_off >= OBUF_EAGER) {
        c->busy++;
        conn_write(c);
        c->busy--;
        return;
    }
    vl__defer_queue(c->loop, &c->flush);
}

/* Appends `cmd` to the output buffer with `e` in flight for its reply.
 * VL_OK; VL_ENOMEM when there was no memory for it (nothing changed). */
static int queue_cmd(vl_redis *c, rentry *e, const char *cmd, size_t len)
{
    if (ob_append(c, cmd, len) != VL_OK)
        return VL_ENOMEM;
    e->len = len;
    flight_append(c, e);
    want_flush(c);
    return VL_OK;
}

/* Queues `e` for writing; takes cmd (`in_ob`: cmd was formatted in place
 * at the end of the output buffer, and only has to be counted in). On
 * failure the entry fails alone. */
static void submit(vl_redis *c, rentry *e, char *cmd, size_t len, int in_ob)
{
    if (in_ob) {
        c->ob_len += len;
        e->len = len;
        flight_append(c, e);
        want_flush(c);
        return;
    }
    if ((uint64_t)(c->ob_len - c->ob_off) + len > OBUF_MAX) {
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "%s: output buffer full: a command of %zu bytes would take the commands "
                 "not yet written past %llu bytes",
                 c->url.display, len, (unsigned long long)OBUF_MAX);
        e->where = W_FLIGHT; /* counted out by entry_put */
        entry_fail(c, e, VL_EBUSY, msg);
        entry_put(c, e);
    } else if (queue_cmd(c, e, cmd, len) != VL_OK) {
        e->where = W_FLIGHT;
        entry_fail(c, e, VL_ENOMEM, "out of memory queueing the command");
        entry_put(c, e);
    }
    vl__redis_cmd_free(cmd);
}

static void become_ready(vl_redis *c)
{
    vl__resp_limits lim;
    uint64_t now;
    rentry *e;

    c->state = S_READY;
    c->phase = P_NONE;
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
    /* Write what waited for the handshake, in the order it was issued; a
     * command whose time ran out meanwhile (its timer had not fired yet)
     * fails as timed out, never sent. */
    now = vl_loop_now_ms(c->loop);
    while ((e = c->wait.head) != NULL && c->state == S_READY && !c->dying) {
        char *cmd = e->cmd;
        wait_unlink(c, e);
        if (e->deadline != 0 && e->deadline <= now) {
            char msg[256];
            entry_fail(c, e, VL_ETIMEDOUT, timeout_text(c, msg, sizeof(msg)));
            entry_put(c, e);
            continue;
        }
        e->cmd = NULL;
        submit(c, e, cmd, e->len, 0);
    }
    if (!c->dying)
        emit(c, VL__REDIS_EV_READY, VL_OK);
}

static void io_cb(vl__io *io, int events, void *ud);

static void flush_cb(vl__defer *d)
{
    vl_redis *c = (vl_redis *)(void *)((char *)d - offsetof(vl_redis, flush));

    c->busy++;
    conn_write(c);
    c->busy--;
    settle(c);
}

static void more_cb(vl__defer *d)
{
    vl_redis *c = (vl_redis *)(void *)((char *)d - offsetof(vl_redis, more));

    if (c->fd < 0 || c->sess == NULL || c->turn.queued)
        return; /* (a queued turn reads on when it runs) */
    c->busy++;
    conn_read(c);
    io_update(c);
    c->busy--;
    settle(c);
}

/* A TLS write that waited for the socket to be readable goes on, as io_cb
 * does on a readable event (which io_update may have just dropped). */
static void tls_write_after_read(vl_redis *c)
{
    if (c->tls_wr && c->fd >= 0 && !c->drop_requested && !c->free_requested)
        conn_write(c);
}

/* A deadline fired: what already arrived (the replies left in ib while the
 * connection waits for its turn, then what the socket holds, perhaps in the
 * very poll that found the deadline due: libev runs timers before I/O) is
 * taken first, whatever the budget, so that no reply that came in time is
 * judged late. */
static void take_waiting(vl_redis *c)
{
    int was = c->drain, reads;

    /* (Connecting or in the TLS handshake, nothing is read here.) */
    if (c->fd < 0 || (c->phase != P_NONE && c->phase != P_HANDSHAKE))
        return;
    vl__turn_cancel(c->loop, &c->turn); /* its work, if queued, is done here */
    c->drain = 1;
    (void)take_replies(c); /* drain: never yields */
    /* Until the socket is empty (bounded: a server that never stops
     * sending is read again at the connection's next turn). */
    for (reads = 0; reads < 64 && c->fd >= 0 && !c->drop_requested && !c->free_requested;
         reads++)
        if (!conn_read(c))
            break;
    c->drain = was;
    tls_write_after_read(c);
    if (c->fd >= 0)
        io_update(c);
}

/* The connection's turn came: the replies left in ib first, then what the
 * socket has, as the readable event it waited for would have. */
static void turn_cb(vl__turn *t)
{
    vl_redis *c = (vl_redis *)(void *)((char *)t - offsetof(vl_redis, turn));

    if (c->fd < 0)
        return;
    c->busy++;
    if (!take_replies(c) && c->fd >= 0 && !c->drop_requested && !c->free_requested)
        conn_read(c);
    tls_write_after_read(c);
    if (c->fd >= 0)
        io_update(c);
    c->busy--;
    settle(c);
}

/* ---- connecting ---- */

/* Queues a command of our own (AUTH, SELECT, CLIENT SETNAME, the handshake
 * or a keepalive PING). It has no future and is not a user command: it
 * neither counts in vl_redis_pending nor holds the loop. */
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
    if (rc != VL_OK)
        entry_put(c, e);
    return rc;
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

    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
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

/* Queues AUTH, SELECT, CLIENT SETNAME, READONLY and the PING whose echo
 * completes the handshake, once the transport (TCP, and TLS) is up. */
static void start_handshake(vl_redis *c)
{
    char dbbuf[24];
    int rc = VL_OK;

    c->phase = P_HANDSHAKE;
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
    if (rc == VL_OK && c->name != NULL) {
        const char *argv[3] = {"CLIENT", "SETNAME", c->name};
        rc = handshake_cmd(c, K_NAME, 3, argv);
    }
    if (rc == VL_OK && c->readonly) {
        const char *argv[1] = {"READONLY"};
        rc = handshake_cmd(c, K_READONLY, 1, argv);
    }
    if (rc == VL_OK) {
        const char *argv[2] = {"PING", c->token};
        snprintf(c->token, sizeof(c->token), "volley-%016llx",
                 (unsigned long long)vl__rand64());
        rc = handshake_cmd(c, K_HELLO, 2, argv);
    }
    if (rc != VL_OK)
        request_drop(c, rc, rc == VL_ENOMEM ? "connect: out of memory" : "connect: closed");
    io_update(c);
}

/* A TLS handshake step; the handshake proper follows once it is done. */
static void tls_step(vl_redis *c)
{
    char why[256];
    int rc = vl__tls_handshake(c->sess, why, sizeof(why));

    if (rc == VL_OK) {
        c->tls_hs = 0;
        start_handshake(c);
        return;
    }
    if (rc == VL__TLS_WANT_READ || rc == VL__TLS_WANT_WRITE) {
        c->tls_hs = rc;
        io_update(c);
        return;
    }
    drop_with(c, rc == VL_ENOMEM ? VL_ENOMEM : VL_ECONN, "", why); /* "TLS: ..." */
}

/* The TCP (or unix socket) connect succeeded. */
static void transport_up(vl_redis *c)
{
    if (!c->tls) {
        start_handshake(c);
        return;
    }
    c->sess = vl__tls_new(c->tls_ctx, c->fd, c->url.host);
    if (c->sess == NULL) {
        drop_with(c, VL_ENOMEM, "", "out of memory for the TLS session");
        return;
    }
    c->phase = P_TLS;
    tls_step(c);
}

/* Starts a non-blocking connect to `addr` (NULL: the URL's unix socket).
 * Returns 1 when connected already, 0 when in progress, -1 when it failed
 * (the reason in addr_err). */
static int open_socket(vl_redis *c, const char *addr)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    char ebuf[128];
    int fd, family;

    memset(&ss, 0, sizeof(ss));
    if (addr == NULL) {
        struct sockaddr_un *su = (struct sockaddr_un *)(void *)&ss;
        if (strlen(c->url.path) >= sizeof(su->sun_path)) {
            set_str(&c->addr_err, "socket path too long");
            return -1;
        }
        su->sun_family = AF_UNIX;
        memcpy(su->sun_path, c->url.path, strlen(c->url.path) + 1);
        sl = (socklen_t)sizeof(*su);
        family = AF_UNIX;
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)(void *)&ss;
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)(void *)&ss;
        uint16_t port = htons((uint16_t)(c->url.port != 0 ? c->url.port : 6379));
        if (inet_pton(AF_INET, addr, &s4->sin_addr) == 1) {
            s4->sin_family = AF_INET;
            s4->sin_port = port;
            sl = (socklen_t)sizeof(*s4);
        } else if (inet_pton(AF_INET6, addr, &s6->sin6_addr) == 1) {
            s6->sin6_family = AF_INET6;
            s6->sin6_port = port;
            sl = (socklen_t)sizeof(*s6);
        } else {
            set_str(&c->addr_err, "bad address");
            return -1;
        }
        family = ss.ss_family;
    }
    fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        set_str(&c->addr_err, errno_text(errno, ebuf, sizeof(ebuf)));
        return -1;
    }
    if (family != AF_UNIX)
        set_tcp_options(c, fd);
    c->fd = fd;
    if (connect(fd, (struct sockaddr *)(void *)&ss, sl) == 0)
        return 1;
    if (errno == EINPROGRESS)
        return 0;
    set_str(&c->addr_err, errno_text(errno, ebuf, sizeof(ebuf)));
    close(fd);
    c->fd = -1;
    return -1;
}

/* Tries the next addresses until one connects or is connecting. */
static void try_connect(vl_redis *c)
{
    for (;;) {
        char *addr = NULL;
        int rc;
        if (c->url.host[0] != '\0') {
            char *nl;
            if (c->addr_next == NULL)
                break;
            addr = c->addr_next;
            nl = strchr(addr, '\n');
            c->addr_next = nl != NULL ? nl + 1 : NULL;
            if (nl != NULL)
                *nl = '\0';
        }
        rc = open_socket(c, addr);
        if (rc >= 0) {
            c->phase = P_TCP;
            io_update(c);
            if (rc == 1) {
                transport_up(c);
            } else if (c->addr_next != NULL && c->attempt_end != 0) {
                /* More addresses wait: this one gets its share of what is
                 * left of the connect timeout, so one that drops packets
                 * does not use up the time of the others. */
                uint64_t now = vl_loop_now_ms(c->loop), left = 1, n = 1;
                const char *p;
                for (p = c->addr_next; p != NULL; p = strchr(p + 1, '\n'))
                    n++;
                if (c->attempt_end > now)
                    left = (c->attempt_end - now) / n;
                timer_start(c, &c->addr_timer, left > 0 ? left : 1);
            }
            return;
        }
        if (addr == NULL)
            break; /* a unix socket has one address */
    }
    drop_with(c, VL_ECONN, "", c->addr_err != NULL ? c->addr_err : "cannot connect");
}

/* The outcome of a non-blocking TCP connect. */
static void tcp_done(vl_redis *c)
{
    int err = 0;
    socklen_t el = sizeof(err);
    char ebuf[128];

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
        err = errno;
    timer_stop(c, &c->addr_timer);
    if (err == 0) {
        transport_up(c);
        return;
    }
    set_str(&c->addr_err, errno_text(err, ebuf, sizeof(ebuf)));
    close(c->fd);
    c->fd = -1;
    c->phase = P_NONE;
    io_update(c);
    try_connect(c);
}

static void io_cb(vl__io *io, int events, void *ud)
{
    vl_redis *c = ud;

    VL__UNUSED(io);
    if (c->fd < 0)
        return;
    c->busy++;
    if (c->phase == P_TCP) {
        tcp_done(c);
    } else if (c->phase == P_TLS) {
        tls_step(c);
    } else {
        /* Under load the read waits for the connection's turn (turn_cb). */
        if (((events & VL__READ) || ((events & VL__WRITE) && c->tls_rw)) &&
            vl__turn_ask(c->loop, &c->turn))
            conn_read(c);
        if (((events & VL__WRITE) || ((events & VL__READ) && c->tls_wr)) && c->fd >= 0 &&
            !c->drop_requested)
            conn_write(c);
        io_update(c);
    }
    c->busy--;
    settle(c);
}

/* One address took its share of the connect timeout: the next one. */
static void addr_timer_cb(vl__timer *t, void *ud)
{
    vl_redis *c = ud;

    VL__UNUSED(t);
    timer_fired(c, &c->addr_timer);
    if (c->phase != P_TCP || c->fd < 0)
        return;
    c->busy++;
    set_str(&c->addr_err, "timed out");
    close(c->fd);
    c->fd = -1;
    c->phase = P_NONE;
    io_update(c);
    try_connect(c);
    c->busy--;
    settle(c);
}

static void connect_timer_cb(vl__timer *t, void *ud)
{
    vl_redis *c = ud;
    char *msg;
    int dying;

    VL__UNUSED(t);
    timer_fired(c, &c->connect_timer);
    c->busy++;
    dying = c->dying;
    take_waiting(c); /* the handshake's replies may have come in time */
    if (c->state == S_READY || (c->dying && !dying)) { /* ready, or failed on its own */
        c->busy--;
        settle(c);
        return;
    }
    msg = vl__asprintf("connect %s: timed out after %" PRIu64 " ms%s", c->url.display,
                       c->opts.connect_timeout_ms,
                       c->phase == P_TLS ? " (in the TLS handshake)" : "");
    conn_down(c, VL_ECONN, msg != NULL ? msg : "connect: timed out");
    c->busy--;
    vl__free(msg);
    settle(c);
}

static void retry_timer_cb(vl__timer *t, void *ud)
{
    vl_redis *c = ud;

    VL__UNUSED(t);
    timer_fired(c, &c->retry_timer);
    c->busy++;
    start_attempt(c);
    c->busy--;
    settle(c);
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
    c->busy++;
    if (vl_future_status(f) == VL_OK) {
        vl__free(c->addrs);
        c->addrs = vl_future_take(f);
        c->addr_next = c->addrs;
        try_connect(c);
    } else {
        msg = vl__asprintf("connect %s: %s", c->url.display, vl_future_error(f));
        request_drop(c, vl_future_status(f) == VL_ENOMEM ? VL_ENOMEM : VL_ECONN,
                     msg != NULL ? msg : "connect: cannot resolve host");
        vl__free(msg);
    }
    c->busy--;
    settle(c);
}

/* A new attempt: resolve (off the loop, unless the host is an address),
 * then connect to each address in turn, all within the connect timeout. */
static void start_attempt(vl_redis *c)
{
    rtoken *tok;
    vl_future *f;

    c->state = S_CONNECTING;
    c->phase = P_RESOLVE;
    c->handshake_left = 0;
    set_str(&c->addr_err, NULL);
    /* The handshake's replies are small (+OK, an error line, our token),
     * whatever the limits for commands are: tight limits of their own keep
     * a hostile server small and never refuse a real one's. */
    {
        vl__resp_limits lim;
        lim.max_bulk_len = 512;
        lim.max_elements = 8;
        lim.max_reply_bytes = 4096;
        lim.max_depth = 1;
        lim.max_reply_mem = 8192;
        vl__resp_init(&c->resp, &lim);
    }
    c->attempt_end = 0;
    if (c->opts.connect_timeout_ms > 0) {
        timer_start(c, &c->connect_timer, c->opts.connect_timeout_ms);
        c->attempt_end = vl_loop_now_ms(c->loop) + c->opts.connect_timeout_ms;
    }
    if (c->url.host[0] == '\0' || vl__host_is_ip(c->url.host)) {
        set_str(&c->addrs, c->url.host[0] != '\0' ? c->url.host : NULL);
        if (c->url.host[0] != '\0' && c->addrs == NULL) {
            request_drop(c, VL_ENOMEM, "connect: out of memory");
            return;
        }
        c->addr_next = c->addrs;
        try_connect(c);
        return;
    }
    tok = vl__calloc(1, sizeof(*tok));
    f = tok != NULL ? vl__resolve_all(c->loop, c->url.host) : NULL;
    if (f == NULL) {
        vl__free(tok);
        request_drop(c, VL_ENOMEM, "connect: out of memory resolving the host");
        return;
    }
    tok->c = c;
    tok->f = f;
    c->resolving = tok;
    vl_future_then(f, resolved_cb, tok);
}

/* ---- commands ---- */

/* Commands are formatted here, in volley's own allocation or, for the argv
 * form on a ready connection, straight into its output buffer. */
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

/* Bytes of the argv form of a command. */
/* At least the bytes of the argv form of a command (numbers counted at 20
 * digits), so that formatting into that much room cannot overrun; SIZE_MAX
 * when that does not fit in a size_t (with room for a NUL), which no
 * buffer can take. */
static size_t argv_bound(int argc, const char **argv, const size_t *argvlen)
{
    size_t total = 1 + 20 + 2, i, len, add;

    for (i = 0; i < (size_t)argc; i++) {
        len = argvlen != NULL ? argvlen[i] : strlen(argv[i]);
        if (len > SIZE_MAX - 64)
            return SIZE_MAX;
        add = 1 + 20 + 2 + len + 2;
        if (total > SIZE_MAX - 1 - add)
            return SIZE_MAX;
        total += add;
    }
    return total;
}

/* Writes v in decimal at p; returns the end. Lengths below 100 (nearly
 * every key and small value) take no loop. */
static char *put_num(char *p, size_t v)
{
    char num[24], *s;
    size_t n;

    if (v < 10) {
        *p++ = (char)('0' + v);
        return p;
    }
    if (v < 100) {
        *p++ = (char)('0' + v / 10);
        *p++ = (char)('0' + v % 10);
        return p;
    }
    s = put_uint(num + sizeof(num), v);
    n = (size_t)(num + sizeof(num) - s);
    memcpy(p, s, n);
    return p + n;
}

/* Writes "*N\r\n" then "$L\r\n<arg>\r\n" per argument, and a NUL, at p
 * (argv_bound + 1 bytes of room). Returns the command's length. */
static size_t format_argv_at(char *p, int argc, const char **argv, const size_t *argvlen)
{
    char *start = p;
    size_t i, len;

    *p++ = '*';
    p = put_num(p, (size_t)argc);
    *p++ = '\r';
    *p++ = '\n';
    for (i = 0; i < (size_t)argc; i++) {
        len = argvlen != NULL ? argvlen[i] : strlen(argv[i]);
        *p++ = '$';
        p = put_num(p, len);
        *p++ = '\r';
        *p++ = '\n';
        memcpy(p, argv[i], len);
        p += len;
        *p++ = '\r';
        *p++ = '\n';
    }
    *p = '\0';
    return (size_t)(p - start);
}

long long vl__redis_format_argv(char **cmd, int argc, const char **argv, const size_t *argvlen)
{
    size_t bound = argv_bound(argc, argv, argvlen);

    *cmd = bound < SIZE_MAX && bound <= (size_t)LLONG_MAX ? vl__malloc(bound + 1) : NULL;
    if (*cmd == NULL)
        return -1;
    return (long long)format_argv_at(*cmd, argc, argv, argvlen);
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

/* The lengths and first letters of the names in classify's table. */
#define KNOWN_LENS ((1u << 4) | (1u << 5) | (1u << 6) | (1u << 7) | (1u << 8) | (1u << 9) | \
                    (1u << 10) | (1u << 11) | (1u << 12))
#define KL(c) (1u << ((c) - 'A'))
#define KNOWN_FIRST (KL('A') | KL('B') | KL('C') | KL('D') | KL('E') | KL('H') | KL('M') | \
                     KL('P') | KL('R') | KL('S') | KL('U') | KL('W') | KL('X'))

/* 1 when `name` (n bytes) can be no command of classify's table: it has a
 * length or a first letter none of them has (GET, SET, HGETALL...). */
static int plain_name(const char *name, size_t n)
{
    int up = n > 0 ? name[0] & ~0x20 : 0;

    return n > 0 && n < 24 &&
           (up < 'A' || up > 'Z' || !((KNOWN_LENS >> n) & 1u) || !((KNOWN_FIRST >> (up - 'A')) & 1u));
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
    /* Most commands (GET, SET, HGETALL...) have a length or a first letter
     * no entry has: two bit tests turn them away before the table. */
    if (plain_name(name, n))
        return VL_OK;
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
                           int in_ob, const char *plain, size_t plainlen);

vl_future *vl__redis_send(vl_redis *c, vl_future *f, char *cmd, size_t len, int shared)
{
    return send_cmd(c, f, cmd, len, shared, 0, NULL, 0);
}

vl_future *vl__redis_send_argv(vl_redis *c, vl_future *f, int argc, const char **argv,
                               const size_t *argvlen, int shared)
{
    char *cmd = NULL;
    long long len;

    /* The hot path: a ready connection with nothing waiting for the
     * handshake takes the command straight into its output buffer, with no
     * copy of its own. Anything else goes the general way. */
    if (c->state == S_READY && !c->dying && !c->closing && c->wait.n == 0 &&
        !vl__loop_closing(c->loop)) {
        size_t total = argv_bound(argc, argv, argvlen);
        if (total <= OBUF_MAX && (uint64_t)(c->ob_len - c->ob_off) + total <= OBUF_MAX &&
            ob_reserve(c, total + 1) == VL_OK) {
            /* send_cmd reaches submit for it (the connection is ready),
             * and nothing appends to the buffer before: the bytes after
             * ob_len stay this command's until counted in. */
            size_t n0 = argvlen != NULL ? argvlen[0] : strlen(argv[0]);
            total = format_argv_at(c->ob + c->ob_len, argc, argv, argvlen);
            /* A name no special command has needs no classify. */
            return send_cmd(c, f, c->ob + c->ob_len, total, shared, 1,
                            plain_name(argv[0], n0) ? argv[0] : NULL, n0);
        }
    }
    len = vl__redis_format_argv(&cmd, argc, argv, argvlen);
    if (len < 0)
        return f != NULL ? fail_with(c, f, VL_ENOMEM, "out of memory") : NULL;
    return send_cmd(c, f, cmd, (size_t)len, shared, 0, NULL, 0);
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
    return send_cmd(c, NULL, cmd, (size_t)len, 0, 0, NULL, 0);
}

/* Frees a command handed to send_cmd, unless it lives in the output buffer
 * (where it is simply not counted in). */
static void cmd_drop(char *cmd, int in_ob)
{
    if (!in_ob)
        vl__redis_cmd_free(cmd);
}

/* `plain` (plainlen bytes) is the command's name when the caller knows it
 * to be one classify would pass without flags (plain_name); NULL: look. */
static vl_future *send_cmd_body(vl_redis *c, vl_future *f, char *cmd, size_t len, int shared,
                                int in_ob, const char *plain, size_t plainlen)
{
    unsigned flags;
    uint64_t block, deadline;
    char name[24], msg[96];
    rentry *e;
    int rc;

    if (c->state == S_INVALID) {
        cmd_drop(cmd, in_ob);
        return fail_with(c, f, c->invalid_status, c->err);
    }
    if ((uint64_t)len > OBUF_MAX) {
        char big[160];
        cmd_drop(cmd, in_ob);
        snprintf(big, sizeof(big), "%s: a command of %zu bytes is over the output buffer's %llu",
                 c->url.display, len, (unsigned long long)OBUF_MAX);
        return fail_with(c, f, VL_EBUSY, big);
    }
    if (plain != NULL) {
        memcpy(name, plain, plainlen); /* plain_name: below 24 bytes */
        name[plainlen] = '\0';
        flags = 0;
        block = 0;
        rc = VL_OK;
    } else {
        rc = classify(cmd, len, &flags, &block, name, sizeof(name));
    }
    if (rc != VL_OK) {
        cmd_drop(cmd, in_ob);
        if (rc == VL_EINVAL)
            return fail_with(c, f, rc, "empty command");
        snprintf(msg, sizeof(msg), "%s is not supported on a command connection", name);
        return fail_with(c, f, rc, msg);
    }
    if (shared && flags != 0) {
        /* MULTI, WATCH, SELECT... would change the connection for every
         * other caller of the pool; they need a connection of their own. */
        cmd_drop(cmd, in_ob);
        snprintf(msg, sizeof(msg), "%s needs a lease (vl_redis_pool_lease)", name);
        return fail_with(c, f, VL_EUNSUPPORTED, msg);
    }
    if (c->closing || c->dying || vl__loop_closing(c->loop)) {
        cmd_drop(cmd, in_ob);
        return fail_with(c, f, c->closing ? VL_ECLOSED : VL_ECONN,
                         c->closing ? "connection is closed" : "connection is closing");
    }
    if (c->state == S_DOWN) {
        /* Fail fast between attempts: see "Reconnection" in volley/redis.h. */
        cmd_drop(cmd, in_ob);
        return fail_with(c, f, VL_ECONN, c->err != NULL ? c->err : "not connected");
    }
    e = entry_get(c);
    if (e == NULL) {
        cmd_drop(cmd, in_ob);
        return f != NULL ? fail_with(c, f, VL_ENOMEM, "out of memory") : NULL;
    }
    if (f == NULL) {
        f = vl__future_make(c->loop, &entry_ops, e);
        if (f == NULL) {
            entry_put(c, e);
            cmd_drop(cmd, in_ob);
            return NULL;
        }
    } else {
        vl__future_set_source(f, &entry_ops, e);
    }
    e->f = f;
    e->kind = K_USER;
    e->flags = (unsigned char)flags;
    e->verb = verb_id(c, name);
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
    /* While become_ready is still writing what waited (a DONE it reported
     * brought this one), this one waits its turn behind them. */
    if (c->state == S_READY && c->wait.n == 0) {
        submit(c, e, cmd, len, in_ob);
    } else {
        e->cmd = cmd;
        e->len = (uint32_t)len;
        e->where = W_WAIT;
        list_append(&c->wait, e);
    }
    arm_for(c, deadline);
    return f;
}

/* Sends a command. The pool hears DONE from inside (a command refused at
 * once): whatever it asks of the connection meanwhile waits for settle. */
static vl_future *send_cmd(vl_redis *c, vl_future *f, char *cmd, size_t len, int shared,
                           int in_ob, const char *plain, size_t plainlen)
{
    vl_future *out;

    c->busy++;
    out = send_cmd_body(c, f, cmd, len, shared, in_ob, plain, plainlen);
    c->busy--;
    settle(c);
    return out;
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
    return vl__redis_send_argv(c, NULL, argc, argv, argvlen, 0);
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

/* The URL's query parameters that volley knows; any other is refused, so a
 * typo ("?cacer=") never silently turns verification back to defaults. */
static const char *const url_params[] = {"db",   "name", "readonly", "cacert", "capath",
                                         "cert", "key",  "insecure", "sni",    NULL};

static int tls_param(const char *k)
{
    return strcmp(k, "db") != 0 && strcmp(k, "name") != 0 && strcmp(k, "readonly") != 0;
}

/* The TLS parameters of a rediss:// URL, into a context: that of `share`
 * (a connection made from the same URL) when it has one, since loading the
 * CAs is file work best done once per endpoint, not once per connection. */
static int setup_tls(vl_redis *c, const vl_redis *share, char *why, size_t whyn)
{
    vl__tls_config cfg;
    const char *ins = vl__url_param(&c->url, "insecure");

    memset(&cfg, 0, sizeof(cfg));
    cfg.cacert = vl__url_param(&c->url, "cacert");
    cfg.capath = vl__url_param(&c->url, "capath");
    cfg.cert = vl__url_param(&c->url, "cert");
    cfg.key = vl__url_param(&c->url, "key");
    cfg.servername = vl__url_param(&c->url, "sni");
    if (ins != NULL && strcmp(ins, "1") != 0 && strcmp(ins, "0") != 0) {
        snprintf(why, whyn, "insecure must be 0 or 1");
        return VL_EINVAL;
    }
    cfg.insecure = ins != NULL && strcmp(ins, "1") == 0;
    if (cfg.key != NULL && cfg.cert == NULL) {
        snprintf(why, whyn, "key= needs cert=");
        return VL_EINVAL;
    }
    c->tls = 1;
    if (share != NULL && share->tls_ctx != NULL) {
        vl__tls_ctx_ref(share->tls_ctx);
        c->tls_ctx = share->tls_ctx;
        return VL_OK;
    }
    return vl__tls_ctx_new(&c->tls_ctx, &cfg, why, whyn);
}

/* Checks the URL; on error fills c->err and c->invalid_status. */
static int setup_url(vl_redis *c, const char *url, const vl_redis *share)
{
    char why[256];
    const char *dbs = NULL, *name, *ro;
    size_t i, k;
    int rc;

    if (url == NULL) {
        c->invalid_status = VL_EINVAL;
        set_str(&c->err, "bad Redis URL: no URL");
        return c->err != NULL ? VL_EINVAL : VL_ENOMEM;
    }
    /* The scale-out schemes name many servers: one connection cannot follow
     * them. Say where they belong rather than "unsupported scheme". */
    if (vl__sentinel_url(url) || strncmp(url, "redis+cluster://", 16) == 0 ||
        strncmp(url, "rediss+cluster://", 17) == 0) {
        c->invalid_status = VL_EINVAL;
        set_str(&c->err, vl__sentinel_url(url)
                             ? "bad Redis URL: a Sentinel endpoint needs a pool (vl_redis_pool_new)"
                             : "bad Redis URL: a Redis Cluster endpoint needs "
                               "vl_redis_cluster_new");
        return c->err != NULL ? VL_EINVAL : VL_ENOMEM;
    }
    rc = vl__url_parse(url, &c->url, why, sizeof(why));
    if (rc == VL_ENOMEM)
        return VL_ENOMEM;
    if (rc == VL_OK) {
        int tls = strcmp(c->url.scheme, "rediss") == 0;
        c->has_url = 1;
        if (strcmp(c->url.scheme, "unix") == 0) {
            if (c->url.host[0] != '\0' || c->url.path == NULL || c->url.path[0] == '\0') {
                rc = VL_EINVAL;
                snprintf(why, sizeof(why), "unix URL needs a socket path: unix:///path?db=N");
            }
            dbs = vl__url_param(&c->url, "db");
        } else if (strcmp(c->url.scheme, "redis") == 0 || tls) {
            if (c->url.host[0] == '\0') {
                rc = VL_EINVAL;
                snprintf(why, sizeof(why), "URL has no host");
            }
            dbs = c->url.path != NULL && c->url.path[0] != '\0' ? c->url.path
                                                                 : vl__url_param(&c->url, "db");
        } else {
            rc = VL_EINVAL;
            snprintf(why, sizeof(why),
                     "unsupported scheme '%.32s' (expected redis://, rediss:// or unix://)",
                     c->url.scheme);
        }
        for (i = 0; rc == VL_OK && i < c->url.nparams; i++) {
            for (k = 0; url_params[k] != NULL; k++)
                if (strcmp(c->url.keys[i], url_params[k]) == 0)
                    break;
            if (url_params[k] == NULL) {
                rc = VL_EINVAL;
                snprintf(why, sizeof(why), "unknown URL parameter '%.40s'", c->url.keys[i]);
            } else if (!tls && tls_param(c->url.keys[i])) {
                rc = VL_EINVAL;
                snprintf(why, sizeof(why), "'%.40s' is a TLS parameter: it needs rediss://",
                         c->url.keys[i]);
            }
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
        name = vl__url_param(&c->url, "name");
        if (rc == VL_OK && name != NULL) {
            /* Redis refuses spaces and newlines in a client name. */
            for (i = 0; name[i] != '\0'; i++)
                if ((unsigned char)name[i] <= ' ' || (unsigned char)name[i] >= 0x7f)
                    break;
            if (name[0] == '\0' || name[i] != '\0') {
                rc = VL_EINVAL;
                snprintf(why, sizeof(why),
                         "name= must be printable ASCII without spaces (CLIENT SETNAME)");
            } else if ((c->name = vl__strdup(name)) == NULL) {
                return VL_ENOMEM;
            }
        }
        ro = vl__url_param(&c->url, "readonly");
        if (rc == VL_OK && ro != NULL) {
            if (strcmp(ro, "1") != 0 && strcmp(ro, "0") != 0) {
                rc = VL_EINVAL;
                snprintf(why, sizeof(why), "readonly must be 0 or 1");
            } else {
                c->readonly = ro[0] == '1';
            }
        }
        if (rc == VL_OK && tls) {
            rc = setup_tls(c, share, why, sizeof(why));
            if (rc == VL_ENOMEM)
                return VL_ENOMEM;
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
    vl__free(c->name);
    vl__free(c->addrs);
    vl__free(c->addr_err);
    vl__tls_ctx_free(c->tls_ctx);
    vl__url_clear(&c->url);
    vl__free(c);
}

static void handle_free(vl__handle *h)
{
    vl_redis *c = (vl_redis *)(void *)((char *)h - offsetof(vl_redis, handle));

    c->registered = 0;
    vl_redis_free(c);
}

static vl_redis *conn_make(vl_loop *loop, const char *url, const vl_redis_options *opts,
                           const vl_redis *share)
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
    c->fd = -1;
    vl__io_init(&c->io, loop, -1, io_cb, c);
    c->flush.cb = flush_cb;
    c->more.cb = more_cb;
    c->turn.cb = turn_cb;
    vl__timer_init(&c->connect_timer.t, loop, connect_timer_cb, c);
    vl__timer_init(&c->retry_timer.t, loop, retry_timer_cb, c);
    vl__timer_init(&c->cmd_timer.t, loop, cmd_timer_cb, c);
    vl__timer_init(&c->addr_timer.t, loop, addr_timer_cb, c);
    rc = setup_url(c, url, share);
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
    vl_redis *c = conn_make(loop, url, opts, NULL);

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
        settle(c);
    }
    return c;
}

vl_redis *vl__redis_new_pooled(vl_loop *loop, const char *url, const vl_redis_options *opts,
                               vl__redis_event_fn fn, void *ud, const vl_redis *share)
{
    vl_redis *c = conn_make(loop, url, opts, share);

    if (c == NULL)
        return NULL;
    c->weak = 1;
    c->ev_fn = fn;
    c->ev_ud = ud;
    if (c->state != S_INVALID) {
        start_attempt(c);
        settle(c);
    }
    return c;
}

void vl_redis_free(vl_redis *c)
{
    eslab *s;

    if (c == NULL)
        return;
    if (c->busy > 0) {
        c->free_requested = 1; /* settle frees it at the end of the engine's call */
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
    timer_ref(c, &c->addr_timer);
    if (c->state != S_INVALID)
        conn_down(c, VL_ECANCELED, "connection freed");
    vl__timer_stop(&c->connect_timer.t);
    vl__timer_stop(&c->retry_timer.t);
    vl__timer_stop(&c->cmd_timer.t);
    vl__timer_stop(&c->addr_timer.t);
    vl__io_stop(&c->io);
    vl__defer_cancel(c->loop, &c->flush);
    vl__turn_cancel(c->loop, &c->turn);
    c->spare = NULL;
    while ((s = c->slabs) != NULL) {
        c->slabs = s->next;
        vl__free(s);
    }
    vl__free(c->ob);
    vl__free(c->ib);
    c->ob = c->ib = NULL;
    c->ob_cap = c->ib_cap = 0;
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

    if (c->state != S_READY || c->fd < 0 || c->closing || c->dying)
        return VL_ECONN;
    rc = internal_cmd(c, K_PING, 1, argv);
    /* The timer runs only while user commands are pending (an idle pooled
     * connection must not hold the loop); their arrival arms it for the
     * PING's deadline too, since it is the oldest reply then. */
    if (rc == VL_OK && c->nuser > 0 && c->flight.tail != NULL)
        arm_for(c, c->flight.tail->deadline);
    settle(c);
    return rc;
}

void vl__redis_drop(vl_redis *c, const char *msg)
{
    if (c->closing || c->dying || (c->state != S_READY && c->state != S_CONNECTING))
        return;
    request_drop(c, VL_ECONN, msg);
    settle(c);
}

vl_redis *vl__redis_new_push(vl_loop *loop, const char *url, const vl_redis_options *opts,
                             vl__redis_event_fn fn, vl__redis_push_fn push, void *ud)
{
    vl_redis *c = conn_make(loop, url, opts, NULL);

    if (c == NULL)
        return NULL;
    c->weak = 1;
    c->ev_fn = fn;
    c->push_fn = push;
    c->ev_ud = ud;
    if (c->state != S_INVALID) {
        start_attempt(c);
        settle(c);
    }
    return c;
}

int vl__redis_push_write(vl_redis *c, char *cmd, size_t len)
{
    int rc;

    if (c->state != S_READY || c->fd < 0 || c->closing || c->dying) {
        vl__redis_cmd_free(cmd);
        return VL_ECONN;
    }
    if ((uint64_t)(c->ob_len - c->ob_off) + len > OBUF_MAX) {
        vl__redis_cmd_free(cmd);
        return VL_EBUSY;
    }
    rc = ob_append(c, cmd, len);
    vl__redis_cmd_free(cmd);
    if (rc == VL_OK)
        want_flush(c);
    settle(c);
    return rc;
}

void vl__redis_detach(vl_redis *c)
{
    c->ev_fn = NULL;
    c->push_fn = NULL;
    c->ev_ud = NULL;
}

int vl__redis_url_error(vl_loop *loop, const char *url, char **msg)
{
    vl_redis *c = conn_make(loop, url, NULL, NULL);
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
