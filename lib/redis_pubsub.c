/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/redis_pubsub.c - a Redis subscriber on a push connection.
 *
 * The subscriber drives one push connection of lib/redis.c (see "push
 * connections" in lib/redis_internal.h): the engine connects, authenticates
 * and reconnects, reports READY and DOWN, and hands every reply the server
 * sends after a handshake to on_push, whole. Everything pub/sub knows lives
 * here.
 *
 * Two sets of state. The name table holds, for every (kind, name), whether
 * the user wants it (set by the calls, in call order) and whether the server
 * of the present connection has confirmed it (set by the confirmations, in
 * the server's order). "Wanted" is what a reconnect subscribes to again;
 * "confirmed" is what an UNSUBSCRIBE with no names will be answered with,
 * which is how its end is recognised. Each name also keeps the sequence
 * number of the last call that changed it, so that a refused SUBSCRIBE
 * withdraws only the names no later call asked for again.
 *
 * Commands. Every command written is a request on the `flight` list, in
 * the order written; Redis answers in that order, one reply per name of a
 * (P|S)(UN)SUBSCRIBE, one per PING and CLIENT ID, and one error reply for a
 * command it refuses, so each reply that is not a message belongs to the
 * head of the list. Requests made while the connection is down wait on the
 * `waiting` list. A request is the source of its future; one whose future
 * gave up (cancel, deadline) stays on `flight` until its replies are in,
 * and internal requests (CLIENT ID, PING, the resubscription batches) have
 * no future at all.
 *
 * After a handshake (READY): CLIENT ID first, since a subscribed RESP2
 * connection may send nothing but (P|S)(UN)SUBSCRIBE, PING, QUIT and RESET;
 * then the batches for every wanted name that no waiting request carries;
 * then the waiting requests, each its own command, so that each future is
 * answered by its own confirmations (and its own error). Those commands
 * are the "restore"; when the last of them is answered the gap, if the
 * previous connection was lost with subscriptions, is reported.
 *
 * When the connection is lost, in-flight subscribe requests go back to the
 * head of `waiting` (sent again on the next connection, completed once);
 * in-flight unsubscribes complete with VL_OK, since the server forgot the
 * subscriptions with the connection; "confirmed" is cleared.
 *
 * Safe points. on_push runs with the engine on the stack, and the message
 * and gap callbacks run from it, so the user may free the subscriber there:
 * vl_redis_sub_free then tears everything down at once (the engine defers
 * the connection's own free) but releases the subscriber's memory only when
 * the outermost push or event handler returns (`depth`).
 */
#include "redis_cluster_internal.h"
#include "url.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { OP_SUB = 1, OP_UNSUB, OP_UNSUB_ALL, OP_PING, OP_CLIENT_ID };

/* A resubscription batch stays below both: a few commands for thousands of
 * names, none of them a huge query for the server to buffer. */
#define BATCH_NAMES 1000
#define BATCH_BYTES (1u << 20)

typedef struct sname {
    const char *p;
    size_t len;
} sname;

typedef struct sreq sreq;
struct sreq {
    sreq *prev, *next;
    vl_redis_sub *s;
    vl_future *f;         /* NULL: internal, or its future gave up */
    int op, kind;
    int in_flight;        /* on `flight` (1) or `waiting` (0) */
    int restore;          /* written by a handshake's restore */
    uint64_t seq;         /* order of the call (or the batch) */
    size_t n, at;         /* names, and the next one due for confirmation */
    sname *names;         /* in the same allocation, NUL-terminated each */
    vl_redis_reply *last; /* the last confirmation so far */
    vl_redis_reply *err;  /* the first refusal of one of its commands */
};

typedef struct slist {
    sreq *head, *tail;
} slist;

typedef struct sent sent;
struct sent {
    sent *next;           /* hash chain */
    uint64_t hash;
    uint64_t last_seq;    /* the last call that changed `wanted` */
    size_t len;
    int kind;
    int wanted;           /* the user wants it (subscribed again on reconnect) */
    int confirmed;        /* the present connection's server holds it */
    int covered;          /* scratch: a waiting request carries it */
    char name[];
};

struct vl_redis_sub {
    vl_loop *loop;
    vl__handle handle;
    int registered;
    vl_redis_sub_options o;
    vl_redis_options copts;
    char *url;            /* as given: may hold a password, never printed */
    char *display;        /* printable, without the password */
    int invalid_status;   /* VL_OK, or what every call fails with */
    char *invalid_msg;
    vl_redis *c;
    int up;               /* READY, and its replies are being followed */
    int gone;             /* lost with reconnect 0: down for good */
    char *err;            /* the last error; NULL: none */
    slist waiting, flight;
    sent **tab;
    size_t tab_cap, tab_n;
    size_t wanted_n[4], confirmed_n[4]; /* per kind */
    size_t wanted_total;
    size_t nfut;          /* requests whose future is pending */
    int holding;
    uint64_t seq;
    long long client_id;
    int have_id;
    size_t restore_left;
    int gap_pending;
    uint64_t gap_since;
    uint64_t down_since;  /* when it was last without a READY connection; 0: READY */
    vl__timer ka;         /* keepalive; unref'd while armed (ka_unref) */
    int ka_unref;
    int ping_out;
    uint64_t ping_sent, last_rx;
    int depth;            /* push and event handlers on the stack */
    int freeing;
    int release_due;      /* freed with depth > 0: release when it drops */
};

/* ---- options ---- */

static const size_t opts_ends[] = {
    VL__END(vl_redis_sub_options, struct_size),
    VL__END(vl_redis_sub_options, on_message),
    VL__END(vl_redis_sub_options, on_gap),
    VL__END(vl_redis_sub_options, ud),
    VL__END(vl_redis_sub_options, keepalive_ms),
    VL__END(vl_redis_sub_options, connect_timeout_ms),
    VL__END(vl_redis_sub_options, reconnect_min_ms),
    VL__END(vl_redis_sub_options, reconnect_max_ms),
    VL__END(vl_redis_sub_options, reconnect),
    VL__END(vl_redis_sub_options, max_bulk_len),
    VL__END(vl_redis_sub_options, max_elements),
    VL__END(vl_redis_sub_options, max_reply_bytes),
    VL__END(vl_redis_sub_options, max_depth),
    VL__END(vl_redis_sub_options, tcp_keepalive_ms),
    VL__END(vl_redis_sub_options, tcp_user_timeout_ms),
    VL__END(vl_redis_sub_options, max_reply_mem),
    VL__END(vl_redis_sub_options, on_ended),
};
/* No padding at the end: a field appended later must start past the end of
 * every older struct, never inside its padding. */
_Static_assert(sizeof(vl_redis_sub_options) == VL__END(vl_redis_sub_options, on_ended),
               "vl_redis_sub_options ends with padding");
static const vl__opts_desc opts_desc = {"vl_redis_sub_options", sizeof(vl_redis_sub_options),
                                        opts_ends, sizeof(opts_ends) / sizeof(opts_ends[0])};

static void opts_defaults(vl_redis_sub_options *o)
{
    /* The connection's own defaults, so the two cannot drift apart. */
    vl_redis_options c;

    vl_redis_options_init(&c);
    memset(o, 0, sizeof(*o));
    o->struct_size = sizeof(*o);
    o->keepalive_ms = 0;
    o->reconnect = 1;
    VL__REDIS_COPY_CONN_FIELDS(o, &c);
}

void vl_redis_sub_options_init_sized(vl_redis_sub_options *o, size_t struct_size)
{
    vl_redis_sub_options d;

    opts_defaults(&d);
    vl__opts_init(o, struct_size, &d, &opts_desc);
}

/* ---- names and messages ---- */

static const char *const sub_verbs[4] = {"", "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE"};
static const char *const unsub_verbs[4] = {"", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE"};
/* The first element of a confirmation, as Redis sends it. */
static const char *const sub_words[4] = {"", "subscribe", "psubscribe", "ssubscribe"};
static const char *const unsub_words[4] = {"", "unsubscribe", "punsubscribe", "sunsubscribe"};

static const char *op_verb(int op, int kind)
{
    switch (op) {
    case OP_SUB:
        return sub_verbs[kind];
    case OP_UNSUB:
    case OP_UNSUB_ALL:
        return unsub_verbs[kind];
    case OP_PING:
        return "PING";
    default:
        return "CLIENT ID";
    }
}

/* A name for a message: at most 40 bytes, unprintable ones as \xNN. */
static void quote(const char *p, size_t len, char *buf, size_t n)
{
    size_t i, o = 0;

    for (i = 0; i < len && i < 40 && o + 5 < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '\'' && ch != '\\')
            buf[o++] = (char)ch;
        else
            o += (size_t)snprintf(buf + o, n - o, "\\x%02x", ch);
    }
    if (i < len && o + 4 < n) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o < n ? o : n - 1] = '\0';
}

static void set_err(vl_redis_sub *s, const char *msg)
{
    char *m = vl__strdup(msg);

    if (m == NULL)
        return; /* keep the older message rather than none */
    vl__free(s->err);
    s->err = m;
}

/* ---- the name table ---- */

static uint64_t name_hash(int kind, const char *p, size_t len)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)kind;
    size_t i;

    for (i = 0; i < len; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static sent *tab_find(const vl_redis_sub *s, int kind, const char *p, size_t len)
{
    uint64_t h;
    sent *e;

    if (s->tab_cap == 0)
        return NULL;
    h = name_hash(kind, p, len);
    for (e = s->tab[h % s->tab_cap]; e != NULL; e = e->next)
        if (e->hash == h && e->kind == kind && e->len == len && memcmp(e->name, p, len) == 0)
            return e;
    return NULL;
}

static int tab_grow(vl_redis_sub *s)
{
    size_t cap = s->tab_cap == 0 ? 64 : s->tab_cap * 2, i;
    sent **t = vl__calloc(cap, sizeof(*t));

    if (t == NULL)
        return VL_ENOMEM;
    for (i = 0; i < s->tab_cap; i++) {
        sent *e = s->tab[i], *next;
        for (; e != NULL; e = next) {
            next = e->next;
            e->next = t[e->hash % cap];
            t[e->hash % cap] = e;
        }
    }
    vl__free(s->tab);
    s->tab = t;
    s->tab_cap = cap;
    return VL_OK;
}

/* The entry of (kind, name), made when missing; NULL when out of memory. */
static sent *tab_get(vl_redis_sub *s, int kind, const char *p, size_t len)
{
    sent *e = tab_find(s, kind, p, len);

    if (e != NULL)
        return e;
    if (s->tab_n >= s->tab_cap && tab_grow(s) != VL_OK)
        return NULL;
    e = vl__calloc(1, sizeof(*e) + len + 1);
    if (e == NULL)
        return NULL;
    e->hash = name_hash(kind, p, len);
    e->kind = kind;
    e->len = len;
    memcpy(e->name, p, len);
    e->next = s->tab[e->hash % s->tab_cap];
    s->tab[e->hash % s->tab_cap] = e;
    s->tab_n++;
    return e;
}

/* Forgets an entry nobody wants and no server holds. */
static void tab_gc(vl_redis_sub *s, sent *e)
{
    sent **pp;

    if (e->wanted || e->confirmed)
        return;
    for (pp = &s->tab[e->hash % s->tab_cap]; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == e) {
            *pp = e->next;
            s->tab_n--;
            vl__free(e);
            return;
        }
    }
}

static void set_wanted(vl_redis_sub *s, sent *e, int on, uint64_t seq)
{
    e->last_seq = seq;
    if (e->wanted == on)
        return;
    e->wanted = on;
    if (on) {
        s->wanted_n[e->kind]++;
        s->wanted_total++;
    } else {
        s->wanted_n[e->kind]--;
        s->wanted_total--;
    }
}

static void set_confirmed(vl_redis_sub *s, sent *e, int on)
{
    if (e->confirmed == on)
        return;
    e->confirmed = on;
    if (on)
        s->confirmed_n[e->kind]++;
    else
        s->confirmed_n[e->kind]--;
}

/* Calls fn on every entry; fn may free the entry it is given. */
static void tab_each(vl_redis_sub *s, void (*fn)(vl_redis_sub *s, sent *e, void *arg), void *arg)
{
    size_t i;

    for (i = 0; i < s->tab_cap; i++) {
        sent *e = s->tab[i], *next;
        for (; e != NULL; e = next) {
            next = e->next;
            fn(s, e, arg);
        }
    }
}

static void tab_free(vl_redis_sub *s)
{
    size_t i;

    for (i = 0; i < s->tab_cap; i++) {
        sent *e = s->tab[i], *next;
        for (; e != NULL; e = next) {
            next = e->next;
            vl__free(e);
        }
    }
    vl__free(s->tab);
    s->tab = NULL;
    s->tab_cap = s->tab_n = 0;
}

/* ---- requests ---- */

static void l_unlink(slist *l, sreq *r)
{
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->prev = r->next = NULL;
}

static void l_append(slist *l, sreq *r)
{
    r->next = NULL;
    r->prev = l->tail;
    if (l->tail != NULL)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
}

static void l_prepend(slist *l, sreq *r)
{
    r->prev = NULL;
    r->next = l->head;
    if (l->head != NULL)
        l->head->prev = r;
    else
        l->tail = r;
    l->head = r;
}

/* Orders shard channels by slot and, within a slot, as they were given:
 * their copies lie in call order in one allocation. */
static int by_slot(const void *a, const void *b)
{
    const sname *x = a, *y = b;
    unsigned i = vl__redis_slot(x->p, x->len), j = vl__redis_slot(y->p, y->len);

    if (i != j)
        return i < j ? -1 : 1;
    return (x->p > y->p) - (x->p < y->p);
}

/* A request with copies of names[0..n) (lens NULL: C strings). The shard
 * channels of a (un)subscribe are ordered by slot, so that each slot's
 * names are one command (part_end) and the confirmations come in that
 * order. */
static sreq *req_new(vl_redis_sub *s, int op, int kind, size_t n, const char *const *names,
                     const size_t *lens)
{
    size_t i, bytes = 0, head = sizeof(sreq) + n * sizeof(sname);
    sreq *r;
    char *at;

    for (i = 0; i < n; i++) {
        size_t len = lens != NULL ? lens[i] : strlen(names[i]);
        if (len > SIZE_MAX / 2 - bytes - head)
            return NULL;
        bytes += len + 1;
    }
    r = vl__calloc(1, head + bytes);
    if (r == NULL)
        return NULL;
    r->s = s;
    r->op = op;
    r->kind = kind;
    r->n = n;
    r->names = (sname *)(void *)(r + 1);
    at = (char *)r + head;
    for (i = 0; i < n; i++) {
        size_t len = lens != NULL ? lens[i] : strlen(names[i]);
        memcpy(at, names[i], len);
        at[len] = '\0';
        r->names[i].p = at;
        r->names[i].len = len;
        at += len + 1;
    }
    if (kind == VL_REDIS_SUB_SHARD && (op == OP_SUB || op == OP_UNSUB) && n > 1)
        qsort(r->names, n, sizeof(*r->names), by_slot);
    return r;
}

static void req_free(sreq *r)
{
    vl_redis_reply_free(r->last);
    vl_redis_reply_free(r->err);
    vl__free(r);
}

static void free_reply_value(void *v)
{
    vl_redis_reply_free(v);
}

static void hold_update(vl_redis_sub *s)
{
    int want = !s->freeing && !s->gone && s->c != NULL && (s->wanted_total > 0 || s->nfut > 0);

    if (want == s->holding)
        return;
    s->holding = want;
    vl__redis_hold(s->c, want);
}

/* Completes the request's future, if it still has one, with `value` (a
 * reply, taken) or none. The request itself stays the caller's. */
static void req_complete(sreq *r, int status, vl_redis_reply *value, const char *msg)
{
    vl_future *f = r->f;

    if (f == NULL) {
        vl_redis_reply_free(value);
        return;
    }
    r->f = NULL;
    r->s->nfut--;
    vl__future_set_source(f, NULL, NULL);
    if (value != NULL)
        vl__future_complete(f, status, value, VL__VAL_REDIS, free_reply_value, msg);
    else
        vl__future_complete(f, status, NULL, VL__VAL_NONE, NULL, msg);
}

static void req_cancel(void *source, vl_future *f, int status)
{
    sreq *r = source;
    vl_redis_sub *s = r->s;

    VL__UNUSED(f);
    VL__UNUSED(status);
    r->f = NULL;
    s->nfut--;
    /* A request on the wire keeps its place for the replies still due; a
     * waiting one is simply dropped. Its names stay wanted either way:
     * giving up the wait is not an unsubscribe. */
    if (!r->in_flight) {
        l_unlink(&s->waiting, r);
        req_free(r);
    }
    hold_update(s);
}

static void req_describe(void *source, char *buf, size_t n)
{
    sreq *r = source;

    snprintf(buf, n, "%s on %s", op_verb(r->op, r->kind), r->s->display);
}

static const vl__source_ops req_ops = {.cancel = req_cancel, .describe = req_describe};

/* ---- the connection ---- */

static void lost(vl_redis_sub *s);
static void ka_stop(vl_redis_sub *s);
static void ka_arm(vl_redis_sub *s, uint64_t ms);

/* The loop's clock, never 0, which down_since keeps for "up". */
static uint64_t now_nonzero(vl_loop *loop)
{
    uint64_t now = vl_loop_now_ms(loop);

    return now != 0 ? now : 1;
}

/* Ends the connection for a reason of ours; it reconnects by itself. */
static void drop(vl_redis_sub *s, const char *why)
{
    char msg[320];

    snprintf(msg, sizeof(msg), "%s: %s", s->display, why);
    set_err(s, msg);
    lost(s);
    vl__redis_drop(s->c, msg); /* reports DOWN, now or later: up is 0 already */
}

static void proto_error(vl_redis_sub *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void proto_error(vl_redis_sub *s, const char *fmt, ...)
{
    char why[256], full[280];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    snprintf(full, sizeof(full), "protocol error: %s", why);
    drop(s, full);
}

/* The end of the command that carries names[at]: a shard request is one
 * command per slot, since a cluster node refuses shard channels of several
 * slots in one (CROSSSLOT); any other request is one command. */
static size_t part_end(const sreq *r, size_t at)
{
    unsigned slot;

    if (r->kind != VL_REDIS_SUB_SHARD || (r->op != OP_SUB && r->op != OP_UNSUB) || at >= r->n)
        return r->n;
    slot = vl__redis_slot(r->names[at].p, r->names[at].len);
    while (++at < r->n && vl__redis_slot(r->names[at].p, r->names[at].len) == slot)
        ;
    return at;
}

/* Formats the command of r->names[from..to) (or PING, CLIENT ID, an
 * unsubscribe from all) into *cmd. Its length, or -1 when out of memory. */
static long long format_part(const sreq *r, size_t from, size_t to, char **cmd)
{
    const char *argv_small[16];
    size_t lens_small[16];
    const char **argv = argv_small;
    size_t *lens = lens_small, i, argc;
    long long len;

    argc = r->op == OP_PING ? 1 : r->op == OP_CLIENT_ID ? 2 : to - from + 1;
    if (argc > (size_t)INT_MAX)
        return -1;
    if (argc > 16) {
        argv = vl__malloc(argc * sizeof(*argv));
        lens = vl__malloc(argc * sizeof(*lens));
        if (argv == NULL || lens == NULL) {
            vl__free((void *)argv);
            vl__free(lens);
            return -1;
        }
    }
    if (r->op == OP_CLIENT_ID) {
        argv[0] = "CLIENT";
        argv[1] = "ID";
        lens[1] = 2;
    } else {
        argv[0] = op_verb(r->op, r->kind);
        for (i = from; i < to; i++) {
            argv[i - from + 1] = r->names[i].p;
            lens[i - from + 1] = r->names[i].len;
        }
    }
    lens[0] = strlen(argv[0]);
    len = vl__redis_format_argv(cmd, (int)argc, argv, lens);
    if (argv != argv_small) {
        vl__free((void *)argv);
        vl__free(lens);
    }
    return len;
}

/* Writes `r` (one command, or one per slot: part_end) in one write and
 * puts it on `flight`. VL_OK; VL_ECONN when the connection turned out not
 * to be ready (r untouched, not listed); VL_EBUSY when its output buffer is
 * full; VL_ENOMEM. */
static int req_send(vl_redis_sub *s, sreq *r)
{
    char *all = NULL, *cmd, *grown;
    size_t at = 0, end, all_len = 0, all_cap = 0;
    long long len;
    int rc;

    do {
        end = part_end(r, at);
        len = format_part(r, at, end, &cmd);
        if (len < 0) {
            vl__free(all);
            return VL_ENOMEM;
        }
        if (all == NULL) {
            all = cmd;
            all_len = all_cap = (size_t)len;
            at = end;
            continue;
        }
        if (all_len + (size_t)len > all_cap) {
            /* Doubling: a batch of a thousand slots is not copied a thousand times. */
            size_t cap = all_cap * 2 > all_len + (size_t)len ? all_cap * 2 : all_len + (size_t)len;
            grown = vl__realloc(all, cap);
            if (grown == NULL) {
                vl__redis_cmd_free(cmd);
                vl__free(all);
                return VL_ENOMEM;
            }
            all = grown;
            all_cap = cap;
        }
        memcpy(all + all_len, cmd, (size_t)len);
        vl__redis_cmd_free(cmd);
        all_len += (size_t)len;
        at = end;
    } while (at < r->n);
    rc = vl__redis_push_write(s->c, all, all_len);
    if (rc != VL_OK)
        return rc == VL_ECONN || rc == VL_EBUSY ? rc : VL_ENOMEM;
    r->in_flight = 1;
    r->at = 0;
    l_append(&s->flight, r);
    return VL_OK;
}

/* Why a command could not be written, for messages. */
static const char *send_failure(int rc)
{
    return rc == VL_EBUSY ? "output buffer full" : "out of memory";
}

/* Sends an internal command (CLIENT ID, PING). VL_OK, or the connection
 * was lost or dropped meanwhile. */
static int send_internal(vl_redis_sub *s, int op)
{
    sreq *r = req_new(s, op, 0, 0, NULL, NULL);
    int rc;

    if (r == NULL) {
        drop(s, "out of memory");
        return VL_ENOMEM;
    }
    r->seq = ++s->seq;
    rc = req_send(s, r);
    if (rc == VL_OK)
        return VL_OK;
    req_free(r);
    if (rc == VL_ECONN)
        lost(s);
    else
        drop(s, send_failure(rc));
    return rc;
}

/* A refused or failed SUBSCRIBE of names[from..to): those that no later
 * call asked for and that the server does not hold are no longer wanted,
 * so a reconnect does not ask for them again. */
static void withdraw_range(vl_redis_sub *s, sreq *r, size_t from, size_t to)
{
    size_t i;

    if (r->op != OP_SUB)
        return;
    for (i = from; i < to; i++) {
        sent *e = tab_find(s, r->kind, r->names[i].p, r->names[i].len);
        if (e != NULL && !e->confirmed && e->last_seq <= r->seq) {
            set_wanted(s, e, 0, e->last_seq);
            tab_gc(s, e);
        }
    }
}

static void withdraw(vl_redis_sub *s, sreq *r)
{
    withdraw_range(s, r, 0, r->n);
}

static void restored(vl_redis_sub *s)
{
    uint64_t down;

    if (!s->gap_pending)
        return;
    s->gap_pending = 0;
    down = vl_loop_now_ms(s->loop) - s->gap_since;
    if (s->o.on_gap != NULL)
        s->o.on_gap(s, down, s->o.ud);
}

/* Completes a request one of whose commands the server refused with
 * `err_reply` (taken): VL_ESERVER and the server's text. The names of that
 * command were withdrawn when the refusal came (head_refused). The request
 * stays the caller's. */
static void req_refused(vl_redis_sub *s, sreq *r, vl_redis_reply *err_reply)
{
    char *m = vl__asprintf("%s on %s: %s", op_verb(r->op, r->kind), s->display,
                           vl__redis_reply_text(err_reply));

    if (r->f == NULL && r->op == OP_SUB && m != NULL)
        set_err(s, m); /* a resubscription refused: nobody else hears of it */
    req_complete(r, VL_ESERVER, err_reply, m != NULL ? m : vl__redis_reply_text(err_reply));
    vl__free(m);
}

/* The head of `flight` got its last reply: it completes with VL_OK and its
 * last confirmation, or VL_ESERVER with the first refusal of its commands. */
static void head_done(vl_redis_sub *s, sreq *r)
{
    int restore = r->restore;

    l_unlink(&s->flight, r);
    r->in_flight = 0;
    if (r->err == NULL) {
        vl_redis_reply *v = r->last;
        r->last = NULL;
        req_complete(r, VL_OK, v, NULL);
    } else {
        vl_redis_reply *e = r->err;
        r->err = NULL;
        req_refused(s, r, e);
    }
    req_free(r);
    hold_update(s);
    if (restore && s->restore_left > 0 && --s->restore_left == 0)
        restored(s);
}

/* An error reply for the head of `flight`: the refusal of its command that
 * is due (taken). The request is done when that was its last command. */
static void head_refused(vl_redis_sub *s, sreq *h, vl_redis_reply **rp)
{
    size_t end = part_end(h, h->at);

    withdraw_range(s, h, h->at, end);
    h->at = end;
    if (h->err == NULL) {
        h->err = *rp;
        *rp = NULL;
    }
    if (h->at >= h->n)
        head_done(s, h);
}

/* Sends every wanted name of `kind` that no waiting request carries, in
 * batches. Returns the commands written, or -1 when the connection was
 * lost or dropped meanwhile. */
static long send_batches(vl_redis_sub *s, int kind)
{
    size_t cap = s->wanted_n[kind], n = 0, at, i;
    const char **names;
    size_t *lens;
    long sent_n = 0;

    if (cap == 0)
        return 0;
    names = vl__malloc(cap * sizeof(*names));
    lens = vl__malloc(cap * sizeof(*lens));
    if (names == NULL || lens == NULL)
        goto nomem;
    for (i = 0; i < s->tab_cap; i++) {
        const sent *e;
        for (e = s->tab[i]; e != NULL; e = e->next) {
            if (e->wanted && !e->covered && e->kind == kind && n < cap) {
                names[n] = e->name;
                lens[n] = e->len;
                n++;
            }
        }
    }
    for (at = 0; at < n;) {
        size_t k = 0, bytes = 0;
        sreq *r;
        int rc;
        while (at + k < n && k < BATCH_NAMES && bytes < BATCH_BYTES)
            bytes += lens[at + k++];
        /* The entries may go while the batch is on the wire: it keeps copies. */
        r = req_new(s, OP_SUB, kind, k, names + at, lens + at);
        if (r == NULL)
            goto nomem;
        r->seq = ++s->seq;
        r->restore = 1;
        rc = req_send(s, r);
        if (rc != VL_OK) {
            req_free(r);
            if (rc != VL_ECONN) {
                drop(s, send_failure(rc));
            } else {
                lost(s);
            }
            sent_n = -1;
            break;
        }
        sent_n++;
        at += k;
    }
    vl__free((void *)names);
    vl__free(lens);
    return sent_n;
nomem:
    vl__free((void *)names);
    vl__free(lens);
    drop(s, "out of memory subscribing again");
    return -1;
}

static void mark_covered(vl_redis_sub *s, int on)
{
    sreq *r;
    size_t i;

    for (r = s->waiting.head; r != NULL; r = r->next) {
        for (i = 0; i < r->n; i++) {
            sent *e = tab_find(s, r->kind, r->names[i].p, r->names[i].len);
            if (e != NULL)
                e->covered = on;
        }
    }
}

/* Drops the names of a waiting request that are no longer wanted (an
 * unsubscribe came after it while the connection was down). */
static void req_filter(vl_redis_sub *s, sreq *r)
{
    size_t i, k = 0;

    for (i = 0; i < r->n; i++) {
        sent *e = tab_find(s, r->kind, r->names[i].p, r->names[i].len);
        if (e != NULL && e->wanted)
            r->names[k++] = r->names[i];
    }
    r->n = k;
}

/* After a handshake: CLIENT ID, the batches, the waiting requests. */
static void on_ready(vl_redis_sub *s)
{
    long sent_n = 0, b;
    int kind;
    sreq *r;

    s->up = 1;
    s->down_since = 0;
    s->have_id = 0;
    s->ping_out = 0;
    s->restore_left = 0;
    s->last_rx = vl_loop_now_ms(s->loop);
    if (send_internal(s, OP_CLIENT_ID) != VL_OK)
        return;
    mark_covered(s, 1);
    for (kind = VL_REDIS_SUB_CHANNEL; kind <= VL_REDIS_SUB_SHARD && s->up; kind++) {
        b = send_batches(s, kind);
        if (b < 0)
            break;
        sent_n += b;
    }
    mark_covered(s, 0);
    while (s->up && (r = s->waiting.head) != NULL) {
        int rc;
        l_unlink(&s->waiting, r);
        req_filter(s, r);
        if (r->n == 0) {
            /* Every name of it was unsubscribed from since. */
            req_complete(r, VL_OK, NULL, NULL);
            req_free(r);
            continue;
        }
        r->restore = 1;
        rc = req_send(s, r);
        if (rc == VL_OK) {
            sent_n++;
            continue;
        }
        r->restore = 0;
        if (rc == VL_ECONN) {
            l_prepend(&s->waiting, r);
            lost(s);
            break;
        }
        withdraw(s, r);
        req_complete(r, rc, NULL, send_failure(rc));
        req_free(r);
    }
    if (!s->up)
        return;
    s->restore_left = (size_t)sent_n;
    if (sent_n == 0)
        s->gap_pending = 0; /* nothing was subscribed: nothing was missed */
    if (s->o.keepalive_ms > 0)
        ka_arm(s, s->o.keepalive_ms);
    hold_update(s);
}

static void unconfirm_each(vl_redis_sub *s, sent *e, void *arg)
{
    VL__UNUSED(arg);
    set_confirmed(s, e, 0);
    e->covered = 0;
    tab_gc(s, e);
}

/* The connection is gone (DOWN, or a write found it not ready): what was
 * on the wire is settled; subscribe requests wait for the next one. */
static void lost(vl_redis_sub *s)
{
    slist again = {NULL, NULL};
    sreq *r;

    if (!s->up)
        return;
    s->up = 0;
    s->down_since = now_nonzero(s->loop);
    s->have_id = 0;
    s->ping_out = 0;
    s->restore_left = 0;
    ka_stop(s);
    if (s->wanted_total > 0 && !s->gap_pending) {
        s->gap_pending = 1;
        s->gap_since = vl_loop_now_ms(s->loop);
    }
    while ((r = s->flight.head) != NULL) {
        l_unlink(&s->flight, r);
        r->in_flight = 0;
        r->restore = 0;
        r->at = 0;
        vl_redis_reply_free(r->last);
        r->last = NULL;
        if (r->err != NULL) {
            /* One of its commands was refused already: it fails so. What
             * the others asked for is wanted, and subscribed to again. */
            vl_redis_reply *e = r->err;
            r->err = NULL;
            req_refused(s, r, e);
            req_free(r);
            continue;
        }
        if (r->f != NULL && r->op == OP_SUB) {
            l_append(&again, r);
            continue;
        }
        /* An unsubscribe is done: the server forgot everything. Internal
         * requests and abandoned ones just go. */
        req_complete(r, VL_OK, NULL, NULL);
        req_free(r);
    }
    while ((r = again.tail) != NULL) {
        l_unlink(&again, r);
        l_prepend(&s->waiting, r);
    }
    tab_each(s, unconfirm_each, NULL);
    hold_update(s);
}

/* Fails every request with a future: freed (VL_ECANCELED) or down for good
 * (VL_ECONN). */
static void fail_all(vl_redis_sub *s, int status, const char *msg)
{
    slist *lists[2] = {&s->waiting, &s->flight};
    sreq *r;
    int i;

    for (i = 0; i < 2; i++) {
        while ((r = lists[i]->head) != NULL) {
            l_unlink(lists[i], r);
            req_complete(r, status, NULL, msg);
            req_free(r);
        }
    }
}

static void release(vl__handle *h);

/* The end of a push or event handler: a free requested inside it happens
 * once the outermost one returns. */
static void leave(vl_redis_sub *s)
{
    if (--s->depth == 0 && s->release_due) {
        s->release_due = 0;
        vl__handle_bury(s->loop, &s->handle, release);
    }
}

static void on_event(vl_redis *c, int event, int status, void *ud)
{
    vl_redis_sub *s = ud;

    VL__UNUSED(status);
    if (s->c == NULL)
        s->c = c; /* an event from inside vl__redis_new_push */
    if (s->freeing)
        return;
    s->depth++;
    if (event == VL__REDIS_EV_READY && !s->gone) {
        lost(s); /* a READY without a DOWN before it: start over all the same */
        on_ready(s);
    } else if (event == VL__REDIS_EV_DOWN) {
        const char *e = vl_redis_error(c);
        if (e != NULL && e[0] != '\0')
            set_err(s, e);
        lost(s);
        if (!s->o.reconnect && !s->gone) {
            s->gone = 1;
            fail_all(s, VL_ECONN, s->err != NULL ? s->err : "connection lost");
            hold_update(s);
        }
    }
    leave(s);
}

/* ---- replies ---- */

static int str_is(const vl_redis_reply *r, const char *want)
{
    size_t len;
    const char *p;

    if (vl_redis_reply_type(r) != VL_REDIS_STRING)
        return 0;
    p = vl_redis_reply_str(r, &len);
    return len == strlen(want) && memcmp(p, want, len) == 0;
}

/* The kind of a confirmation word; 0 when it is none. */
static int confirm_kind(const vl_redis_reply *w, int *unsub)
{
    int k;

    for (k = VL_REDIS_SUB_CHANNEL; k <= VL_REDIS_SUB_SHARD; k++) {
        if (str_is(w, sub_words[k])) {
            *unsub = 0;
            return k;
        }
        if (str_is(w, unsub_words[k])) {
            *unsub = 1;
            return k;
        }
    }
    return 0;
}

/* A message: delivered, whatever the subscriptions are by now. */
static void deliver(vl_redis_sub *s, int kind, const vl_redis_reply *r)
{
    const vl_redis_reply *ch, *pat = NULL, *payload;
    size_t chlen, patlen = 0;
    const char *chp, *patp = NULL;
    int pt;

    if (kind == VL_REDIS_SUB_PATTERN) {
        pat = vl_redis_reply_element(r, 1);
        ch = vl_redis_reply_element(r, 2);
        payload = vl_redis_reply_element(r, 3);
    } else {
        ch = vl_redis_reply_element(r, 1);
        payload = vl_redis_reply_element(r, 2);
    }
    pt = vl_redis_reply_type(payload);
    if (vl_redis_reply_type(ch) != VL_REDIS_STRING ||
        (pat != NULL && vl_redis_reply_type(pat) != VL_REDIS_STRING) ||
        !(pt == VL_REDIS_STRING ||
          (kind == VL_REDIS_SUB_CHANNEL && (pt == VL_REDIS_ARRAY || pt == VL_REDIS_NIL)))) {
        proto_error(s, "malformed %s", kind == VL_REDIS_SUB_PATTERN ? "pmessage"
                                       : kind == VL_REDIS_SUB_SHARD ? "smessage"
                                                                    : "message");
        return;
    }
    chp = vl_redis_reply_str(ch, &chlen);
    if (pat != NULL)
        patp = vl_redis_reply_str(pat, &patlen);
    if (s->o.on_message != NULL)
        s->o.on_message(s, kind, chp, chlen, patp, patlen, payload, s->o.ud);
}

/* Whether the head of `flight` waits for a "sunsubscribe" of that name. */
static int awaited(const sreq *h, const char *p, size_t len)
{
    if (h == NULL || h->kind != VL_REDIS_SUB_SHARD)
        return 0;
    if (h->op == OP_UNSUB_ALL)
        return 1;
    return h->op == OP_UNSUB && h->at < h->n && h->names[h->at].len == len &&
           memcmp(h->names[h->at].p, p, len) == 0;
}

/* A "sunsubscribe" nobody asked for: Redis 7 ends the shard subscriptions
 * of a slot its node gives away (CLUSTER SETSLOT ... NODE, a failover).
 * A shard channel the server held is forgotten (not subscribed to again
 * after a reconnect) and the user told; the connection stays. Returns 0
 * when the name was not held, which is a protocol error. */
static int ended(vl_redis_sub *s, const char *p, size_t len)
{
    sent *e = tab_find(s, VL_REDIS_SUB_SHARD, p, len);

    if (e == NULL || !e->confirmed)
        return 0;
    set_confirmed(s, e, 0);
    set_wanted(s, e, 0, ++s->seq);
    tab_gc(s, e);
    hold_update(s);
    /* p lies in the reply, which outlives the callback. */
    if (s->o.on_ended != NULL)
        s->o.on_ended(s, VL_REDIS_SUB_SHARD, p, len, s->o.ud);
    return 1;
}

/* A (P|S)(UN)SUBSCRIBE confirmation, for the head of `flight`, or the end
 * of a shard subscription that the server decided (ended). Takes *rp when
 * it keeps the reply. */
static void confirm(vl_redis_sub *s, int kind, int unsub, vl_redis_reply **rp)
{
    const vl_redis_reply *r = *rp, *name = vl_redis_reply_element(r, 1);
    sreq *h = s->flight.head;
    const char *p = NULL;
    size_t len = 0;
    long long count;
    char q[200];
    int done, nt = vl_redis_reply_type(name);
    const char *word = unsub ? unsub_words[kind] : sub_words[kind];

    if (vl_redis_reply_integer(vl_redis_reply_element(r, 2), &count) != VL_OK || count < 0 ||
        !(nt == VL_REDIS_STRING || (unsub && nt == VL_REDIS_NIL))) {
        proto_error(s, "malformed %s confirmation", word);
        return;
    }
    if (nt == VL_REDIS_STRING)
        p = vl_redis_reply_str(name, &len);
    if (kind == VL_REDIS_SUB_SHARD && unsub && p != NULL && !awaited(h, p, len) &&
        ended(s, p, len))
        return;
    quote(p != NULL ? p : "", len, q, sizeof(q));
    if (h == NULL || h->kind != kind || (h->op == OP_SUB) == unsub ||
        (h->op != OP_SUB && h->op != OP_UNSUB && h->op != OP_UNSUB_ALL)) {
        proto_error(s, "%s confirmation of '%s' when %s was due", word, q,
                    h == NULL ? "no reply" : op_verb(h->op, h->kind));
        return;
    }
    if (h->op == OP_UNSUB_ALL) {
        sent *e = p != NULL ? tab_find(s, kind, p, len) : NULL;
        if (p == NULL ? s->confirmed_n[kind] != 0 : e == NULL || !e->confirmed) {
            proto_error(s, "%s confirmation of '%s', which was not subscribed", word,
                        p != NULL ? q : "(nil)");
            return;
        }
        if (e != NULL) {
            set_confirmed(s, e, 0);
            tab_gc(s, e);
        }
        done = s->confirmed_n[kind] == 0;
    } else {
        const sname *want = &h->names[h->at];
        sent *e;
        if (p == NULL || want->len != len || memcmp(want->p, p, len) != 0) {
            proto_error(s, "%s confirmation of '%s' when another name was due", word, q);
            return;
        }
        if (!unsub) {
            e = tab_get(s, kind, p, len);
            if (e == NULL) {
                drop(s, "out of memory");
                return;
            }
            set_confirmed(s, e, 1);
        } else if ((e = tab_find(s, kind, p, len)) != NULL) {
            set_confirmed(s, e, 0);
            tab_gc(s, e);
        }
        done = ++h->at == h->n;
    }
    vl_redis_reply_free(h->last);
    h->last = *rp;
    *rp = NULL;
    if (done)
        head_done(s, h);
}

static void pong(vl_redis_sub *s)
{
    sreq *h = s->flight.head;

    s->ping_out = 0;
    l_unlink(&s->flight, h);
    req_free(h);
}

/* One reply of the server. Takes *rp when it keeps it. */
static void on_reply(vl_redis_sub *s, vl_redis_reply **rp)
{
    const vl_redis_reply *r = *rp, *w;
    sreq *h = s->flight.head;
    int type = vl_redis_reply_type(r), kind, unsub = 0;
    size_t n;

    s->last_rx = vl_loop_now_ms(s->loop);
    if (r == NULL) { /* the engine drops the connection itself then */
        drop(s, "out of memory for a reply");
        return;
    }
    if (type == VL_REDIS_ERROR) {
        if (h == NULL) {
            proto_error(s, "error reply when none was due: %s", vl__redis_reply_text(r));
        } else if (h->op == OP_PING) {
            pong(s); /* an answer all the same: the server is there */
        } else if (h->op == OP_CLIENT_ID) {
            char m[400];
            snprintf(m, sizeof(m), "CLIENT ID on %s: %s", s->display, vl__redis_reply_text(r));
            set_err(s, m);
            l_unlink(&s->flight, h);
            req_free(h);
        } else {
            head_refused(s, h, rp);
        }
        return;
    }
    if (type == VL_REDIS_INTEGER && h != NULL && h->op == OP_CLIENT_ID) {
        vl_redis_reply_integer(r, &s->client_id);
        s->have_id = 1;
        l_unlink(&s->flight, h);
        req_free(h);
        return;
    }
    if (type == VL_REDIS_STATUS && h != NULL && h->op == OP_PING &&
        strcasecmp(vl_redis_reply_str(r, NULL), "PONG") == 0) {
        pong(s);
        return;
    }
    if (type != VL_REDIS_ARRAY) {
        proto_error(s, "%s reply when %s was due",
                    type == VL_REDIS_STRING    ? "string"
                    : type == VL_REDIS_INTEGER ? "integer"
                    : type == VL_REDIS_STATUS  ? "status"
                                               : "nil",
                    h == NULL ? "none" : op_verb(h->op, h->kind));
        return;
    }
    n = vl_redis_reply_count(r);
    w = vl_redis_reply_element(r, 0);
    if (n == 3 && str_is(w, "message")) {
        deliver(s, VL_REDIS_SUB_CHANNEL, r);
    } else if (n == 4 && str_is(w, "pmessage")) {
        deliver(s, VL_REDIS_SUB_PATTERN, r);
    } else if (n == 3 && str_is(w, "smessage")) {
        deliver(s, VL_REDIS_SUB_SHARD, r);
    } else if (n == 3 && (kind = confirm_kind(w, &unsub)) != 0) {
        confirm(s, kind, unsub, rp);
    } else if (n == 2 && str_is(w, "pong") &&
               vl_redis_reply_type(vl_redis_reply_element(r, 1)) == VL_REDIS_STRING) {
        if (h == NULL || h->op != OP_PING)
            proto_error(s, "pong when %s was due", h == NULL ? "no reply" : op_verb(h->op, h->kind));
        else
            pong(s);
    } else if (str_is(w, "message") || str_is(w, "pmessage") || str_is(w, "smessage") ||
               str_is(w, "pong") || confirm_kind(w, &unsub) != 0) {
        proto_error(s, "malformed '%s' reply: %zu elements", vl_redis_reply_str(w, NULL), n);
    } else {
        char q[200];
        size_t len = 0;
        const char *p = vl_redis_reply_str(w, &len);
        quote(p != NULL ? p : "", len, q, sizeof(q));
        proto_error(s, "not a pub/sub reply: array of %zu starting with %s '%s'", n,
                    vl_redis_reply_type(w) == VL_REDIS_STRING ? "string" : "a non-string", q);
    }
}

static void on_push(vl_redis *c, vl_redis_reply *r, void *ud)
{
    vl_redis_sub *s = ud;

    if (s->c == NULL)
        s->c = c;
    s->depth++;
    /* After a protocol error, until the engine reports DOWN, replies of the
     * broken stream are not looked at. */
    if (!s->freeing && s->up)
        on_reply(s, &r);
    vl_redis_reply_free(r);
    leave(s);
}

/* ---- keepalive ---- */

/* The keepalive timer never keeps vl_loop_run running by itself. */
static void ka_arm(vl_redis_sub *s, uint64_t ms)
{
    vl__timer_start(&s->ka, ms);
    if (!s->ka_unref) {
        vl__loop_unref(s->loop);
        s->ka_unref = 1;
    }
}

static void ka_stop(vl_redis_sub *s)
{
    if (s->ka_unref) { /* libev wants an unref'd watcher ref'd before it stops */
        vl__loop_ref(s->loop);
        s->ka_unref = 0;
    }
    vl__timer_stop(&s->ka);
}

static void ka_cb(vl__timer *t, void *ud)
{
    vl_redis_sub *s = ud;
    uint64_t now = vl_loop_now_ms(s->loop), k = s->o.keepalive_ms;
    char why[96];

    VL__UNUSED(t);
    if (s->ka_unref) { /* libev stopped it and dropped its count */
        vl__loop_ref(s->loop);
        s->ka_unref = 0;
    }
    if (!s->up || s->freeing)
        return;
    if (s->ping_out) {
        if (now - s->ping_sent >= k) {
            snprintf(why, sizeof(why), "keepalive ping unanswered after %" PRIu64 " ms", k);
            drop(s, why);
            return;
        }
        ka_arm(s, s->ping_sent + k - now);
        return;
    }
    if (now - s->last_rx >= k) {
        if (send_internal(s, OP_PING) != VL_OK)
            return;
        s->ping_out = 1;
        s->ping_sent = now;
        ka_arm(s, k);
        return;
    }
    ka_arm(s, s->last_rx + k - now);
}

/* ---- public API ---- */

static void release(vl__handle *h)
{
    vl_redis_sub *s = (vl_redis_sub *)(void *)((char *)h - offsetof(vl_redis_sub, handle));

    vl__free(s->url);
    vl__free(s->display);
    vl__free(s->invalid_msg);
    vl__free(s->err);
    vl__free(s);
}

static void handle_free(vl__handle *h)
{
    vl_redis_sub *s = (vl_redis_sub *)(void *)((char *)h - offsetof(vl_redis_sub, handle));

    s->registered = 0;
    vl_redis_sub_free(s);
}

vl_redis_sub *vl_redis_sub_new(vl_loop *loop, const char *url, const vl_redis_sub_options *opts)
{
    vl_redis_sub *s;
    char owhy[160];
    int orc;

    if (loop == NULL)
        return NULL;
    s = vl__calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->loop = loop;
    s->down_since = now_nonzero(loop);
    opts_defaults(&s->o);
    orc = vl__opts_copy(&s->o, opts, &opts_desc, owhy, sizeof(owhy));
    vl_redis_options_init(&s->copts);
    VL__REDIS_COPY_CONN_FIELDS(&s->copts, &s->o);
    s->copts.command_timeout_ms = 0; /* nothing of a push connection is timed */
    s->copts.reconnect = s->o.reconnect;
    vl__timer_init(&s->ka, loop, ka_cb, s);
    s->url = vl__strdup(url != NULL ? url : "");
    if (s->url == NULL)
        goto nomem;
    if (orc != VL_OK) {
        s->invalid_status = orc;
        s->invalid_msg = vl__strdup(owhy);
        if (s->invalid_msg == NULL)
            goto nomem;
    } else {
        s->invalid_status = vl__redis_url_error(loop, s->url, &s->invalid_msg);
    }
    if (s->invalid_status == VL_ENOMEM)
        goto nomem;
    if (s->invalid_status == VL_OK) {
        vl__url u;
        char why[160];
        if (vl__url_parse(s->url, &u, why, sizeof(why)) != VL_OK)
            goto nomem; /* it parsed a moment ago: only memory can fail */
        s->display = vl__strdup(u.display);
        vl__url_clear(&u);
    } else {
        s->display = vl__strdup("redis subscriber");
    }
    if (s->display == NULL)
        goto nomem;
    if (s->invalid_status == VL_OK) {
        vl_redis *c = vl__redis_new_push(loop, s->url, &s->copts, on_event, on_push, s);
        if (c == NULL)
            goto nomem;
        s->c = c;
    }
    vl__handle_add(loop, &s->handle, handle_free);
    s->registered = 1;
    return s;
nomem:
    if (s->c != NULL) {
        vl__redis_detach(s->c);
        vl_redis_free(s->c);
    }
    vl__free(s->url);
    vl__free(s->display);
    vl__free(s->invalid_msg);
    vl__free(s->err);
    vl__free(s);
    return NULL;
}

/* Marks the names of a new request in the table. VL_OK or VL_ENOMEM (then
 * nothing changed). */
static int mark(vl_redis_sub *s, sreq *r)
{
    size_t i;

    if (r->op == OP_SUB) {
        /* Every entry first, so that running out of memory changes nothing. */
        for (i = 0; i < r->n; i++) {
            if (tab_get(s, r->kind, r->names[i].p, r->names[i].len) == NULL) {
                size_t k;
                for (k = 0; k < i; k++) {
                    sent *e = tab_find(s, r->kind, r->names[k].p, r->names[k].len);
                    if (e != NULL)
                        tab_gc(s, e);
                }
                return VL_ENOMEM;
            }
        }
        for (i = 0; i < r->n; i++)
            set_wanted(s, tab_find(s, r->kind, r->names[i].p, r->names[i].len), 1, r->seq);
    } else if (r->op == OP_UNSUB) {
        for (i = 0; i < r->n; i++) {
            sent *e = tab_find(s, r->kind, r->names[i].p, r->names[i].len);
            if (e != NULL) {
                set_wanted(s, e, 0, r->seq);
                tab_gc(s, e);
            }
        }
    } else {
        size_t b;
        for (b = 0; b < s->tab_cap; b++) {
            sent *e = s->tab[b], *next;
            for (; e != NULL; e = next) {
                next = e->next;
                if (e->kind == r->kind) {
                    set_wanted(s, e, 0, r->seq);
                    tab_gc(s, e);
                }
            }
        }
    }
    return VL_OK;
}

static vl_future *call(vl_redis_sub *s, int op, int kind, size_t n, const char *const *names)
{
    vl_future *f;
    sreq *r;
    size_t i;
    int rc;

    if (s == NULL)
        return NULL;
    if (s->freeing || vl__loop_closing(s->loop))
        return vl__future_failed(s->loop, VL_ECLOSED, "%s: subscriber is closed", s->display);
    if (s->invalid_status != VL_OK)
        return vl__future_failed(s->loop, s->invalid_status, "%s", s->invalid_msg);
    if (s->gone)
        return vl__future_failed(s->loop, VL_ECONN, "%s",
                                 s->err != NULL ? s->err : "connection lost");
    if (op == OP_SUB && n == 0)
        return vl__future_failed(s->loop, VL_EINVAL, "%s: no names", op_verb(op, kind));
    if (n > 0 && names == NULL)
        return vl__future_failed(s->loop, VL_EINVAL, "%s: names is NULL", op_verb(op, kind));
    if (n >= (size_t)INT_MAX)
        return vl__future_failed(s->loop, VL_EINVAL, "%s: %zu names are too many",
                                 op_verb(op, kind), n);
    for (i = 0; i < n; i++)
        if (names[i] == NULL)
            return vl__future_failed(s->loop, VL_EINVAL, "%s: name %zu is NULL",
                                     op_verb(op, kind), i);
    if (op == OP_UNSUB && n == 0)
        op = OP_UNSUB_ALL;
    r = req_new(s, op, kind, n, names, NULL);
    if (r == NULL)
        return NULL;
    f = vl__future_make(s->loop, &req_ops, r);
    if (f == NULL) {
        req_free(r);
        return NULL;
    }
    r->f = f;
    r->seq = ++s->seq;
    s->nfut++;
    if (mark(s, r) != VL_OK) {
        req_complete(r, VL_ENOMEM, NULL, "out of memory");
        req_free(r);
        return f;
    }
    if (s->up) {
        rc = req_send(s, r);
        if (rc == VL_OK) {
            hold_update(s);
            return f;
        }
        if (rc != VL_ECONN) {
            withdraw(s, r);
            req_complete(r, rc, NULL, send_failure(rc));
            req_free(r);
            hold_update(s);
            return f;
        }
        if (op == OP_SUB)
            l_append(&s->waiting, r);
        lost(s);
        if (op == OP_SUB)
            return f;
    } else if (op == OP_SUB) {
        l_append(&s->waiting, r);
        hold_update(s);
        return f;
    }
    /* An unsubscribe with no connection: the server holds nothing. */
    req_complete(r, VL_OK, NULL, NULL);
    req_free(r);
    hold_update(s);
    return f;
}

vl_future *vl_redis_subscribe(vl_redis_sub *s, size_t n, const char *const *names)
{
    return call(s, OP_SUB, VL_REDIS_SUB_CHANNEL, n, names);
}

vl_future *vl_redis_psubscribe(vl_redis_sub *s, size_t n, const char *const *names)
{
    return call(s, OP_SUB, VL_REDIS_SUB_PATTERN, n, names);
}

vl_future *vl_redis_ssubscribe(vl_redis_sub *s, size_t n, const char *const *names)
{
    return call(s, OP_SUB, VL_REDIS_SUB_SHARD, n, names);
}

vl_future *vl_redis_unsubscribe(vl_redis_sub *s, size_t n, const char *const *names)
{
    return call(s, OP_UNSUB, VL_REDIS_SUB_CHANNEL, n, names);
}

vl_future *vl_redis_punsubscribe(vl_redis_sub *s, size_t n, const char *const *names)
{
    return call(s, OP_UNSUB, VL_REDIS_SUB_PATTERN, n, names);
}

vl_future *vl_redis_sunsubscribe(vl_redis_sub *s, size_t n, const char *const *names)
{
    return call(s, OP_UNSUB, VL_REDIS_SUB_SHARD, n, names);
}

int vl_redis_sub_client_id(const vl_redis_sub *s, long long *out)
{
    if (s == NULL || out == NULL)
        return VL_EINVAL;
    if (!s->up || !s->have_id)
        return VL_ESTATE;
    *out = s->client_id;
    return VL_OK;
}

int vl_redis_sub_state(const vl_redis_sub *s)
{
    if (s == NULL)
        return 0;
    if (s->invalid_status != VL_OK)
        return VL_REDIS_INVALID;
    if (s->up)
        return VL_REDIS_READY;
    if (s->gone || s->c == NULL)
        return VL_REDIS_DOWN;
    return vl_redis_state(s->c) == VL_REDIS_CONNECTING ? VL_REDIS_CONNECTING : VL_REDIS_DOWN;
}

uint64_t vl_redis_sub_down_since_ms(const vl_redis_sub *s)
{
    if (s == NULL || s->invalid_status != VL_OK || s->up)
        return 0;
    return s->down_since;
}

const char *vl_redis_sub_error(const vl_redis_sub *s)
{
    if (s == NULL)
        return "";
    if (s->invalid_status != VL_OK)
        return s->invalid_msg;
    return s->err != NULL ? s->err : "";
}

void vl_redis_sub_free(vl_redis_sub *s)
{
    if (s == NULL || s->freeing)
        return;
    s->freeing = 1;
    if (s->registered)
        vl__handle_remove(s->loop, &s->handle);
    s->registered = 0;
    ka_stop(s);
    if (s->c != NULL) {
        /* Inside one of its own callbacks the engine defers this itself. */
        vl__redis_detach(s->c);
        vl_redis_free(s->c);
        s->c = NULL;
    }
    s->holding = 0;
    fail_all(s, VL_ECANCELED, "subscriber freed");
    tab_free(s);
    memset(s->url, 0, strlen(s->url));
    if (s->depth > 0)
        s->release_due = 1; /* leave() releases it */
    else
        vl__handle_bury(s->loop, &s->handle, release);
}
