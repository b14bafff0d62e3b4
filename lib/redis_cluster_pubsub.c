/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/redis_cluster_pubsub.c - sharded pub/sub over a Redis Cluster.
 *
 * The routing layer above lib/redis_pubsub.c. A vl_redis_sub per primary
 * (a "node" here) does the connection, its reconnects, its resubscription
 * and the SSUBSCRIBE confirmations; this file decides which node each shard
 * channel belongs on, and follows the channel when its slot moves.
 *
 * The channel table (an array sorted by name, searched by halving) holds
 * every channel the user wants, each with the node it is placed on (NULL:
 * not placed, waiting for a map that covers its slot), whether that node
 * confirmed it, and the calls of the user that wait for that confirmation
 * ("waiters"). A user call is a `ccall` that counts
 * what it still waits for (waiters, and for an unsubscribe the node futures)
 * and completes its future when the count reaches zero.
 *
 * Commands to nodes go one per slot: SSUBSCRIBE and SUNSUBSCRIBE refuse
 * channels of different slots in one command (CROSSSLOT). Each SSUBSCRIBE's
 * future is followed by a `cop` that names the node by id, never by
 * pointer, because the node may be freed before the future completes.
 *
 * Following the slot. A channel is placed again on the owner of its slot
 * when
 *  - a new map (vl__cluster_watch) names another primary for its slot;
 *  - its node answers SSUBSCRIBE with MOVED: the cluster is told
 *    (vl__cluster_moved) and the channel goes to the new owner at once;
 *  - its node gave the slot away (CLUSTER SETSLOT ... NODE, a failover):
 *    Redis 7 ends the shard subscriptions of that slot with an unasked
 *    "sunsubscribe", which the node's subscriber reports through its ended
 *    callback, keeping its connection. The channel goes to the owner the
 *    map names; when the map still names the old node a refresh is asked
 *    for, and the SSUBSCRIBE sent there meanwhile is answered with the
 *    MOVED that names the new owner;
 *  - its node's subscriber reconnected (its gap callback): the subscriber
 *    has subscribed again to what it held, a slot per command, but a slot
 *    that moved away while it was down is refused with MOVED, which only
 *    our own futures hear of; so every channel of that node is subscribed
 *    again from here too, a slot per command (a second SSUBSCRIBE of a
 *    channel held is merely confirmed again).
 * A channel that was confirmed and then lost keeps the time it was lost
 * (`lost_at`); the gap callback reports it once the channel is confirmed
 * again, wherever that is.
 *
 * A failover: the dead primary's subscriber only ever tries to reconnect.
 * A health timer, armed while any node is in use, asks the cluster to
 * re-read the map while a node's subscriber has been down for a tick
 * (vl_redis_sub_down_since_ms), so that the promotion of a replica is seen
 * soon; the new map then moves the channels, and their gap runs from the
 * moment the node's connection was lost.
 *
 * Safe points. The message and gap callbacks, and the map watcher, may free
 * the subscriber. It is released only when no callback of ours is on the
 * stack (`depth`) and no node future we follow is pending (`ops`): those
 * futures complete with VL_ECANCELED after their node's subscriber is
 * freed, and their continuations still read the subscriber.
 */
#include "redis_cluster_internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* How often the health timer looks at the nodes' connections. */
#define HEALTH_MS 500
/* MOVED replies in a row for one channel before it waits for a refreshed
 * map: two nodes that disagree about a slot must not bounce it forever. */
#define MAX_MOVED 5

typedef struct cnode cnode;
typedef struct cchan cchan;
typedef struct ccall ccall;
typedef struct cwait cwait;

/* A user call: its future, and how many things it still waits for. */
struct ccall {
    ccall *prev, *next;
    vl_redis_cluster_sub *s;
    vl_future *f;     /* NULL once completed or given up; while set, the
                       * call holds the cluster's loop (vl__cluster_hold):
                       * a channel may wait for a map, and a future the
                       * caller waits for must keep vl_loop_run running */
    size_t left;      /* waiters and node futures not yet settled */
    int status;       /* the first failure, VL_OK while none */
    char *msg;        /* its message */
};

/* One call waiting for one channel's confirmation. */
struct cwait {
    cwait *next;
    ccall *call;
};

struct cchan {
    unsigned slot;
    cnode *node;      /* where it is placed; NULL: waiting for a map */
    int confirmed;    /* the node confirmed it */
    int ever;         /* it was confirmed once: losing it is a gap */
    int moved;        /* MOVED replies since it was last confirmed */
    int due;          /* scratch: on the send list */
    uint64_t lost_at; /* when it stopped being subscribed; 0: it is not lost */
    uint64_t op_seq;  /* its last SSUBSCRIBE (cop.seq): only that one's answer counts */
    cwait *waiters;
    size_t len;
    char name[];
};

struct cnode {
    cnode *next;
    vl_redis_cluster_sub *s;
    uint64_t id;
    vl_redis_sub *sub;
    size_t nchan;         /* channels placed on it */
    char addr[];
};

/* A node future we follow: an SSUBSCRIBE of channels of one slot, or an
 * SUNSUBSCRIBE that a user call counts. */
typedef struct cop {
    vl_redis_cluster_sub *s;
    uint64_t node_id;
    uint64_t seq;     /* SSUBSCRIBE: which one (cchan.op_seq) */
    ccall *call;      /* SUNSUBSCRIBE: the call that counts it; else NULL */
    size_t n;
    char *names[];    /* SSUBSCRIBE: copies of the channels */
} cop;

struct vl_redis_cluster_sub {
    vl_redis_cluster *cl;
    vl_loop *loop;
    vl__handle handle;
    int registered;
    vl_redis_cluster_message_fn on_message;
    vl_redis_cluster_gap_fn on_gap;
    void *ud;
    int watching;
    cnode *nodes;
    uint64_t next_node_id;
    uint64_t next_op_seq;
    cchan **chans;    /* sorted by name (name_cmp) */
    size_t nchans, chans_cap;
    ccall *calls;
    vl__timer health;
    uint64_t refreshes; /* the cluster's refreshes at the last map seen */
    size_t ops;       /* node futures whose continuation is still due */
    int depth;        /* our callbacks on the stack */
    int freeing;
    int buried;
};

static void maybe_release(vl_redis_cluster_sub *s);
static void health_arm(vl_redis_cluster_sub *s);
static void health_stop(vl_redis_cluster_sub *s);

/* ---- the channel table ---- */

/* Orders names as memcmp does, a shorter one first when it is a prefix. */
static int name_cmp(const char *p, size_t len, const cchan *c)
{
    size_t m = len < c->len ? len : c->len;
    int r = memcmp(p, c->name, m);

    if (r != 0)
        return r;
    return (len > c->len) - (len < c->len);
}

/* The index of the channel named p (*found 1), or where it would go. */
static size_t chan_pos(const vl_redis_cluster_sub *s, const char *p, size_t len, int *found)
{
    size_t lo = 0, hi = s->nchans;

    *found = 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = name_cmp(p, len, s->chans[mid]);
        if (r == 0) {
            *found = 1;
            return mid;
        }
        if (r < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static cchan *chan_find(const vl_redis_cluster_sub *s, const char *p, size_t len)
{
    int found;
    size_t i = chan_pos(s, p, len, &found);

    return found ? s->chans[i] : NULL;
}

/* The channel's entry, made when missing (not placed); NULL: out of memory. */
static cchan *chan_get(vl_redis_cluster_sub *s, const char *p, size_t len)
{
    int found;
    size_t i = chan_pos(s, p, len, &found);
    cchan *c;

    if (found)
        return s->chans[i];
    if (s->nchans == s->chans_cap) {
        size_t cap = s->chans_cap == 0 ? 16 : s->chans_cap * 2;
        cchan **v = vl__realloc(s->chans, cap * sizeof(*v));
        if (v == NULL)
            return NULL;
        s->chans = v;
        s->chans_cap = cap;
    }
    c = vl__calloc(1, sizeof(*c) + len + 1);
    if (c == NULL)
        return NULL;
    c->len = len;
    memcpy(c->name, p, len);
    c->slot = vl__redis_slot(p, len);
    memmove(s->chans + i + 1, s->chans + i, (s->nchans - i) * sizeof(*s->chans));
    s->chans[i] = c;
    s->nchans++;
    return c;
}

/* Every channel, in an array the caller frees (NULL with *n 0 when there
 * is none or no memory): iterating over a copy lets the callbacks that run
 * meanwhile change the table. */
static cchan **chan_list(const vl_redis_cluster_sub *s, size_t *n)
{
    cchan **v;

    *n = 0;
    if (s->nchans == 0)
        return NULL;
    v = vl__malloc(s->nchans * sizeof(*v));
    if (v == NULL)
        return NULL;
    memcpy(v, s->chans, s->nchans * sizeof(*v));
    *n = s->nchans;
    return v;
}

/* ---- calls ---- */

/* A call lets go of the cluster's loop. While the loop is being freed the
 * cluster may be gone already, and nothing is held any more anyway. */
static void call_unhold(ccall *k)
{
    if (!vl__loop_closing(k->s->loop))
        vl__cluster_hold(k->s->cl, -1);
}

static void call_cancel(void *source, vl_future *f, int status)
{
    ccall *k = source;

    VL__UNUSED(f);
    VL__UNUSED(status);
    k->f = NULL; /* what it waits for still counts down, to free it */
    call_unhold(k);
}

static void call_describe(void *source, char *buf, size_t n)
{
    VL__UNUSED(source);
    snprintf(buf, n, "shard subscription on a Redis Cluster");
}

static const vl__source_ops call_ops = {.cancel = call_cancel, .describe = call_describe};

static ccall *call_new(vl_redis_cluster_sub *s)
{
    ccall *k = vl__calloc(1, sizeof(*k));

    if (k == NULL)
        return NULL;
    k->s = s;
    k->f = vl__future_make(s->loop, &call_ops, k);
    if (k->f == NULL) {
        vl__free(k);
        return NULL;
    }
    k->next = s->calls;
    if (s->calls != NULL)
        s->calls->prev = k;
    s->calls = k;
    vl__cluster_hold(s->cl, +1);
    return k;
}

/* Completes the call's future (once), with its first failure if any. */
static void call_complete(ccall *k, int status, const char *msg)
{
    vl_future *f = k->f;

    if (f == NULL)
        return;
    k->f = NULL;
    call_unhold(k);
    vl__future_set_source(f, NULL, NULL);
    vl__future_complete(f, status, NULL, VL__VAL_NONE, NULL, msg);
}

/* Records a failure of one thing the call waits for: the first one wins. */
static void call_fail(ccall *k, int status, const char *msg)
{
    if (k->status != VL_OK)
        return;
    k->status = status;
    k->msg = vl__strdup(msg != NULL ? msg : vl_strerror(status));
}

/* One thing the call waited for is settled; at zero it completes and goes. */
static void call_settle(ccall *k)
{
    vl_redis_cluster_sub *s = k->s;

    if (--k->left > 0)
        return;
    call_complete(k, k->status, k->msg);
    if (k->prev != NULL)
        k->prev->next = k->next;
    else
        s->calls = k->next;
    if (k->next != NULL)
        k->next->prev = k->prev;
    vl__free(k->msg);
    vl__free(k);
}

/* Settles every waiter of a channel, failing their calls first when status
 * is not VL_OK. */
static void chan_settle(cchan *c, int status, const char *msg)
{
    cwait *w;

    while ((w = c->waiters) != NULL) {
        c->waiters = w->next;
        if (status != VL_OK)
            call_fail(w->call, status, msg);
        call_settle(w->call);
        vl__free(w);
    }
}

/* ---- nodes ---- */

static void node_message(vl_redis_sub *sub, int kind, const char *channel, size_t channel_len,
                         const char *pattern, size_t pattern_len, const vl_redis_reply *payload,
                         void *ud);
static void node_gap(vl_redis_sub *sub, uint64_t down_ms, void *ud);
static void node_ended(vl_redis_sub *sub, int kind, const char *channel, size_t channel_len,
                       void *ud);

static cnode *node_find(const vl_redis_cluster_sub *s, const char *addr)
{
    cnode *n;

    for (n = s->nodes; n != NULL; n = n->next)
        if (strcmp(n->addr, addr) == 0)
            return n;
    return NULL;
}

static cnode *node_by_id(const vl_redis_cluster_sub *s, uint64_t id)
{
    cnode *n;

    for (n = s->nodes; n != NULL; n = n->next)
        if (n->id == id)
            return n;
    return NULL;
}

/* The node of `addr`, its subscriber made (and connecting) when missing;
 * NULL when out of memory. */
static cnode *node_get(vl_redis_cluster_sub *s, const char *url, const char *addr)
{
    cnode *n = node_find(s, addr);
    vl_redis_sub_options o;
    size_t len = strlen(addr);

    if (n != NULL)
        return n;
    n = vl__calloc(1, sizeof(*n) + len + 1);
    if (n == NULL)
        return NULL;
    memcpy(n->addr, addr, len + 1);
    n->s = s;
    n->id = ++s->next_node_id;
    vl_redis_sub_options_init(&o);
    vl__cluster_sub_options(s->cl, &o);
    o.on_message = node_message;
    o.on_gap = node_gap;
    o.on_ended = node_ended;
    o.ud = n;
    n->sub = vl_redis_sub_new(s->loop, url, &o);
    if (n->sub == NULL) {
        vl__free(n);
        return NULL;
    }
    n->next = s->nodes;
    s->nodes = n;
    if (!vl__timer_active(&s->health))
        health_arm(s);
    return n;
}

/* Frees a node's subscriber (legal from inside its callbacks) and the node.
 * The futures of its subscriber complete with VL_ECANCELED later. */
static void node_free(vl_redis_cluster_sub *s, cnode *n)
{
    cnode **pp;

    for (pp = &s->nodes; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == n) {
            *pp = n->next;
            break;
        }
    }
    vl_redis_sub_free(n->sub);
    vl__free(n);
}

/* Frees the nodes no channel is placed on any more. */
static void nodes_gc(vl_redis_cluster_sub *s)
{
    cnode *n = s->nodes, *next;

    for (; n != NULL; n = next) {
        next = n->next;
        if (n->nchan == 0)
            node_free(s, n);
    }
    if (s->nodes == NULL)
        health_stop(s);
}

/* Takes a channel off its node; it stays in the table. A channel that was
 * confirmed there and not lost already is lost from `since`. */
static void chan_unplace(cchan *c, uint64_t since)
{
    if (c->node != NULL) {
        c->node->nchan--;
        c->node = NULL;
    }
    if (c->confirmed && c->lost_at == 0)
        c->lost_at = since != 0 ? since : 1;
    c->confirmed = 0;
}

/* Forgets a channel: its waiters settle (failing with status unless
 * VL_OK), it leaves its node and the table. */
static void chan_remove(vl_redis_cluster_sub *s, cchan *c, int status, const char *msg)
{
    int found;
    size_t i = chan_pos(s, c->name, c->len, &found);

    chan_settle(c, status, msg);
    chan_unplace(c, 0);
    memmove(s->chans + i, s->chans + i + 1, (s->nchans - i - 1) * sizeof(*s->chans));
    s->nchans--;
    vl__free(c);
}

/* Nothing was sent for a channel (out of memory): its waiting calls fail.
 * A channel never confirmed is withdrawn with them, as a refused one is;
 * one that was subscribed before waits unplaced for the next map. */
static void chan_failed(vl_redis_cluster_sub *s, cchan *c, int status, const char *msg)
{
    if (!c->ever) {
        chan_remove(s, c, status, msg);
        return;
    }
    chan_settle(c, status, msg);
    chan_unplace(c, vl_loop_now_ms(s->loop));
}

/* ---- talking to nodes ---- */

static void sub_done(vl_future *f, void *ud);

/* SSUBSCRIBE for chans[0..n) (all of one slot, all on node `n`), followed. */
static void send_sub(vl_redis_cluster_sub *s, cnode *node, cchan **chans, size_t n)
{
    const char **names = vl__malloc(n * sizeof(*names));
    cop *op = vl__calloc(1, sizeof(*op) + n * sizeof(char *));
    vl_future *f = NULL;
    size_t i;

    if (names != NULL && op != NULL) {
        op->s = s;
        op->node_id = node->id;
        for (i = 0; i < n; i++) {
            names[i] = chans[i]->name;
            if ((op->names[i] = vl__strdup(chans[i]->name)) == NULL)
                break;
            op->n++;
        }
        if (op->n == n)
            f = vl_redis_ssubscribe(node->sub, n, names);
    }
    vl__free((void *)names);
    if (f != NULL && vl_future_then(f, sub_done, op) == VL_OK) {
        /* An earlier SSUBSCRIBE of these channels still pending answers
         * for a placement that is over (its continuation runs later than
         * the "sunsubscribe" that ended it, say): it no longer counts. */
        op->seq = ++s->next_op_seq;
        for (i = 0; i < n; i++)
            chans[i]->op_seq = op->seq;
        s->ops++;
        return;
    }
    vl_future_free(f);
    if (op != NULL) {
        for (i = 0; i < op->n; i++)
            vl__free(op->names[i]);
        vl__free(op);
    }
    for (i = 0; i < n; i++)
        chan_failed(s, chans[i], VL_ENOMEM, "out of memory subscribing");
}

static int by_node_slot(const void *a, const void *b)
{
    const cchan *x = *(cchan *const *)a, *y = *(cchan *const *)b;

    if (x->node->id != y->node->id)
        return x->node->id < y->node->id ? -1 : 1;
    if (x->slot != y->slot)
        return x->slot < y->slot ? -1 : 1;
    return 0;
}

/* Places each channel of v[0..n) that is not placed on the owner of its
 * slot, when the map knows one, and sends an SSUBSCRIBE per slot for every
 * placed channel marked `due`. Clears `due`. */
static void place_and_send(vl_redis_cluster_sub *s, cchan **v, size_t n)
{
    size_t i, k = 0, at;

    for (i = 0; i < n; i++) {
        cchan *c = v[i];
        if (c->node == NULL && c->moved < MAX_MOVED) {
            const char *addr = NULL, *url = vl__cluster_slot_url(s->cl, c->slot, &addr);
            cnode *node;
            if (url == NULL || addr == NULL)
                continue; /* the next map will tell */
            node = node_get(s, url, addr);
            if (node == NULL) {
                chan_failed(s, c, VL_ENOMEM, "out of memory connecting to a node");
                continue;
            }
            c->node = node;
            node->nchan++;
            c->due = 1;
        }
        if (c->due && c->node != NULL)
            v[k++] = c;
        c->due = 0;
    }
    if (k > 1)
        qsort(v, k, sizeof(*v), by_node_slot);
    for (at = 0; at < k;) {
        size_t m = 1;
        while (at + m < k && v[at + m]->node == v[at]->node && v[at + m]->slot == v[at]->slot)
            m++;
        send_sub(s, v[at]->node, v + at, m);
        at += m;
    }
    nodes_gc(s); /* a node made for channels that then failed */
}

/* "MOVED 3999 127.0.0.1:6381": the slot and the address; 0 when the text
 * is not a MOVED redirection. */
static int parse_moved(const char *text, unsigned *slot, char *addr, size_t n)
{
    char *end;
    unsigned long v;
    size_t len;

    if (text == NULL || strncmp(text, "MOVED ", 6) != 0)
        return 0;
    v = strtoul(text + 6, &end, 10);
    if (end == text + 6 || *end != ' ' || v >= VL__CLUSTER_SLOTS)
        return 0;
    end++;
    len = strcspn(end, " \r\n");
    if (len == 0 || len >= n)
        return 0;
    memcpy(addr, end, len);
    addr[len] = '\0';
    *slot = (unsigned)v;
    return 1;
}

/* Refusals that a later map may lift: the node cannot serve the slot now
 * (or is still loading its data after a restart). */
static int transient(const char *text)
{
    return text != NULL && (strncmp(text, "CLUSTERDOWN", 11) == 0 ||
                            strncmp(text, "TRYAGAIN", 8) == 0 ||
                            strncmp(text, "LOADING", 7) == 0);
}

/* The cluster's count of completed refreshes. */
static uint64_t refreshes(const vl_redis_cluster *cl)
{
    vl_redis_cluster_stats st;

    vl_redis_cluster_stats_init(&st);
    return vl_redis_cluster_stats_get(cl, &st) == VL_OK ? st.refreshes : 0;
}

/* Asks the cluster to re-read the map; the watcher hears of the result. */
static void ask_refresh(vl_redis_cluster_sub *s)
{
    /* Held to refresh_min_interval_ms, as the cluster's own are. */
    vl__cluster_refresh_soon(s->cl);
}

/* The gap of a channel confirmed again, if it had been lost. Returns 0
 * when the callback freed the subscriber. */
static int report_gap(vl_redis_cluster_sub *s, cchan *c)
{
    uint64_t now = vl_loop_now_ms(s->loop), down;

    if (c->lost_at == 0)
        return 1;
    down = now > c->lost_at ? now - c->lost_at : 0;
    c->lost_at = 0;
    if (s->on_gap == NULL)
        return 1;
    s->depth++;
    s->on_gap(s, c->name, c->len, down, s->ud);
    s->depth--;
    return !s->freeing;
}

/* An SSUBSCRIBE answered OK: its channels still placed on that node are
 * confirmed. */
static void sub_confirmed(vl_redis_cluster_sub *s, cop *op)
{
    size_t i;

    for (i = 0; i < op->n && !s->freeing; i++) {
        cchan *c = chan_find(s, op->names[i], strlen(op->names[i]));
        if (c == NULL || c->node == NULL || c->node->id != op->node_id || c->confirmed ||
            c->op_seq != op->seq)
            continue;
        c->confirmed = 1;
        c->ever = 1;
        c->moved = 0;
        chan_settle(c, VL_OK, NULL);
        if (!report_gap(s, c))
            return;
    }
}

/* An SSUBSCRIBE refused or failed: MOVED sends its channels to the new
 * owner, CLUSTERDOWN and TRYAGAIN leave them for the next map, anything else
 * withdraws them (their calls fail). */
static void sub_refused(vl_redis_cluster_sub *s, cop *op, vl_future *f)
{
    const vl_redis_reply *r = vl_future_redis_reply(f);
    const char *text = vl_redis_reply_type(r) == VL_REDIS_ERROR ? vl_redis_reply_str(r, NULL)
                                                                 : NULL;
    int status = vl_future_status(f), moved = 0, wait = 0;
    cchan **v = vl__malloc(op->n * sizeof(*v));
    unsigned slot;
    char addr[256];
    size_t i, k = 0;

    if (status == VL_ESERVER && parse_moved(text, &slot, addr, sizeof(addr))) {
        const char *owner = NULL;
        vl__cluster_moved(s->cl, slot, addr);
        /* A node the map does not know yet is not taken from a MOVED: the
         * next map must name it. */
        if (vl__cluster_slot_url(s->cl, slot, &owner) == NULL || owner == NULL ||
            strcmp(owner, addr) != 0)
            ask_refresh(s);
        moved = 1;
    } else if (status == VL_ESERVER && transient(text)) {
        wait = 1;
        ask_refresh(s);
    }
    for (i = 0; i < op->n; i++) {
        cchan *c = chan_find(s, op->names[i], strlen(op->names[i]));
        if (c == NULL || c->node == NULL || c->node->id != op->node_id || c->confirmed ||
            c->op_seq != op->seq)
            continue;
        if (moved || wait) {
            chan_unplace(c, vl_loop_now_ms(s->loop));
            if (moved && ++c->moved == MAX_MOVED)
                ask_refresh(s); /* the nodes disagree: only a full map settles it */
            if (v != NULL)
                v[k++] = c;
            continue;
        }
        /* As for one server: a refused name is no longer subscribed to. */
        chan_remove(s, c, status, vl_future_error(f));
    }
    if (moved && v != NULL)
        place_and_send(s, v, k);
    vl__free(v);
    nodes_gc(s);
}

static void free_op(cop *op)
{
    size_t i;

    for (i = 0; i < op->n; i++)
        vl__free(op->names[i]);
    vl__free(op);
}

static void sub_done(vl_future *f, void *ud)
{
    cop *op = ud;
    vl_redis_cluster_sub *s = op->s;
    int status = vl_future_status(f);

    s->ops--;
    /* VL_ECANCELED: we freed that node's subscriber, its channels are
     * elsewhere by now. */
    if (!s->freeing && status != VL_ECANCELED && node_by_id(s, op->node_id) != NULL) {
        s->depth++;
        if (status == VL_OK)
            sub_confirmed(s, op);
        else
            sub_refused(s, op, f);
        s->depth--;
    }
    free_op(op);
    maybe_release(s);
}

static void unsub_done(vl_future *f, void *ud)
{
    cop *op = ud;
    vl_redis_cluster_sub *s = op->s;

    /* Whatever the node said (a MOVED means it no longer holds the slot,
     * VL_ECANCELED that we closed it), the channel is not subscribed there. */
    VL__UNUSED(f);
    s->ops--;
    call_settle(op->call);
    free_op(op);
    maybe_release(s);
}

/* SUNSUBSCRIBE for chans[0..n) (one slot, one node), counted by call k
 * (NULL: nobody waits for it). */
static void send_unsub(vl_redis_cluster_sub *s, cnode *node, cchan **chans, size_t n, ccall *k)
{
    const char **names = vl__malloc(n * sizeof(*names));
    vl_future *f = NULL;
    cop *op = NULL;
    size_t i;

    if (names == NULL)
        return; /* the node keeps them: messages of them still come, harmless */
    for (i = 0; i < n; i++)
        names[i] = chans[i]->name;
    f = vl_redis_sunsubscribe(node->sub, n, names);
    vl__free((void *)names);
    if (f == NULL)
        return;
    if (k != NULL)
        op = vl__calloc(1, sizeof(*op));
    if (op == NULL || vl_future_then(f, unsub_done, op) != VL_OK) {
        vl__free(op);
        vl_future_free(f); /* only the wait is given up */
        return;
    }
    op->s = s;
    op->node_id = node->id;
    op->call = k;
    k->left++;
    s->ops++;
}

/* ---- what the nodes tell ---- */

static void node_message(vl_redis_sub *sub, int kind, const char *channel, size_t channel_len,
                         const char *pattern, size_t pattern_len, const vl_redis_reply *payload,
                         void *ud)
{
    cnode *n = ud;
    vl_redis_cluster_sub *s = n->s;

    VL__UNUSED(sub);
    VL__UNUSED(pattern);
    VL__UNUSED(pattern_len);
    if (s->freeing || kind != VL_REDIS_SUB_SHARD || s->on_message == NULL)
        return;
    /* The node may be freed inside the callback: it is not touched after. */
    s->depth++;
    s->on_message(s, channel, channel_len, payload, s->ud);
    s->depth--;
    maybe_release(s);
}

/* The node's subscriber reconnected and restored what it could: every
 * channel confirmed there is subscribed again, a slot per command, and its
 * gap is reported when that is confirmed (see the top of the file). */
static void node_gap(vl_redis_sub *sub, uint64_t down_ms, void *ud)
{
    cnode *n = ud;
    vl_redis_cluster_sub *s = n->s;
    uint64_t now = vl_loop_now_ms(s->loop), since;
    cchan **v;
    size_t i, k = 0, all;

    VL__UNUSED(sub);
    if (s->freeing)
        return;
    since = now > down_ms ? now - down_ms : 1;
    v = chan_list(s, &all);
    for (i = 0; i < all; i++) {
        cchan *c = v[i];
        if (c->node != n || !c->confirmed)
            continue;
        c->confirmed = 0;
        if (c->lost_at == 0)
            c->lost_at = since;
        c->due = 1;
        v[k++] = c;
    }
    s->depth++;
    place_and_send(s, v, k);
    vl__free(v);
    s->depth--;
    maybe_release(s);
}

/* The node ended a channel's subscription: its slot went elsewhere (see
 * the top of the file). The channel is lost from now and follows it. */
static void node_ended(vl_redis_sub *sub, int kind, const char *channel, size_t channel_len,
                       void *ud)
{
    cnode *n = ud;
    vl_redis_cluster_sub *s = n->s;
    const char *addr = NULL;
    cchan *c;

    VL__UNUSED(sub);
    if (s->freeing || kind != VL_REDIS_SUB_SHARD)
        return;
    c = chan_find(s, channel, channel_len);
    if (c == NULL || c->node != n)
        return; /* unsubscribed meanwhile, or placed elsewhere already */
    s->depth++;
    chan_unplace(c, vl_loop_now_ms(s->loop));
    if (vl__cluster_slot_url(s->cl, c->slot, &addr) == NULL || addr == NULL ||
        strcmp(addr, n->addr) == 0)
        ask_refresh(s);
    /* On the node the map names; the old one answers MOVED with the new. */
    place_and_send(s, &c, 1);
    s->depth--;
    maybe_release(s);
}

/* A new map: every channel whose slot has another owner now moves there. */
static void on_map(vl_redis_cluster *cl, void *ud)
{
    vl_redis_cluster_sub *s = ud;
    uint64_t now, fresh, down;
    cchan **v;
    size_t i, all;

    VL__UNUSED(cl);
    if (s->freeing)
        return;
    now = vl_loop_now_ms(s->loop);
    /* Only a refreshed map lifts the MOVED bound: the maps that our own
     * MOVED replies make must not restart a bounce between two nodes. */
    fresh = refreshes(s->cl);
    if (fresh != s->refreshes)
        s->refreshes = fresh;
    else
        fresh = 0;
    s->depth++;
    v = chan_list(s, &all);
    for (i = 0; i < all; i++) {
        cchan *c = v[i];
        const char *addr = NULL;
        if (fresh)
            c->moved = 0;
        if (c->node == NULL || vl__cluster_slot_url(s->cl, c->slot, &addr) == NULL ||
            addr == NULL || strcmp(addr, c->node->addr) == 0)
            continue;
        /* The old node no longer serves the slot. Down, it must not
         * subscribe to the channel again when it reconnects: the
         * SUNSUBSCRIBE completes at once and takes it off its list. Up, it
         * ends the subscription itself when it hears of the new owner (the
         * unasked "sunsubscribe", which node_ended then ignores); an
         * SUNSUBSCRIBE of ours sent as it hears would cross that, and the
         * MOVED that answers it would find no command to belong to. */
        down = vl_redis_sub_down_since_ms(c->node->sub);
        if (down != 0)
            send_unsub(s, c->node, &c, 1, NULL);
        chan_unplace(c, down != 0 ? down : now);
    }
    if (v != NULL)
        place_and_send(s, v, all);
    vl__free(v);
    nodes_gc(s);
    s->depth--;
    maybe_release(s);
}

/* ---- the health timer (see the top of the file) ---- */

/* The timer runs only while a node is in use, whose subscriber keeps
 * vl_loop_run running anyway (it has subscriptions), so it holds the loop
 * no longer than the subscriber would. */
static void health_arm(vl_redis_cluster_sub *s)
{
    vl__timer_start(&s->health, HEALTH_MS);
}

static void health_stop(vl_redis_cluster_sub *s)
{
    vl__timer_stop(&s->health);
}

static void health_cb(vl__timer *t, void *ud)
{
    vl_redis_cluster_sub *s = ud;
    uint64_t now = vl_loop_now_ms(s->loop);
    int down = 0;
    cnode *n;

    VL__UNUSED(t);
    if (s->freeing)
        return;
    for (n = s->nodes; n != NULL; n = n->next) {
        uint64_t since = vl_redis_sub_down_since_ms(n->sub);
        /* Down for less than a tick: a first connect, perhaps. */
        if (since != 0 && now - since >= HEALTH_MS)
            down = 1;
    }
    if (down)
        ask_refresh(s);
    if (s->nodes != NULL)
        health_arm(s);
}

/* ---- public API ---- */

static void release(vl__handle *h)
{
    vl_redis_cluster_sub *s =
        (vl_redis_cluster_sub *)(void *)((char *)h - offsetof(vl_redis_cluster_sub, handle));

    vl__free(s);
}

static void maybe_release(vl_redis_cluster_sub *s)
{
    if (!s->freeing || s->buried || s->depth > 0 || s->ops > 0)
        return;
    s->buried = 1;
    vl__handle_bury(s->loop, &s->handle, release);
}

static void handle_free(vl__handle *h)
{
    vl_redis_cluster_sub *s =
        (vl_redis_cluster_sub *)(void *)((char *)h - offsetof(vl_redis_cluster_sub, handle));

    s->registered = 0;
    vl_redis_cluster_sub_free(s);
}

vl_redis_cluster_sub *vl_redis_cluster_sub_new(vl_redis_cluster *cl,
                                               vl_redis_cluster_message_fn on_message,
                                               vl_redis_cluster_gap_fn on_gap, void *ud)
{
    vl_redis_cluster_sub *s;

    if (cl == NULL)
        return NULL;
    s = vl__calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->cl = cl;
    s->loop = vl__cluster_loop(cl);
    s->on_message = on_message;
    s->on_gap = on_gap;
    s->ud = ud;
    vl__timer_init(&s->health, s->loop, health_cb, s);
    /* Without a watcher (the cluster has its 8) the MOVED replies and the
     * health timer's refreshes still follow the slots, only later. */
    s->watching = vl__cluster_watch(cl, on_map, s) == VL_OK;
    vl__handle_add(s->loop, &s->handle, handle_free);
    s->registered = 1;
    return s;
}

/* The start of every call: its checks, then its ccall, which holds one
 * share of its own (settled when the call returns). NULL when the call
 * ends here: *f is then its failed future, or NULL when out of memory. */
static ccall *call_begin(vl_redis_cluster_sub *s, const char *verb, size_t n,
                         const char *const *channels, int need_names, vl_future **f)
{
    const char *msg = NULL;
    size_t i;
    ccall *k;
    int st;

    *f = NULL;
    if (s->freeing || vl__loop_closing(s->loop)) {
        *f = vl__future_failed(s->loop, VL_ECLOSED, "%s: subscriber is closed", verb);
        return NULL;
    }
    if ((st = vl__cluster_status(s->cl, &msg)) != VL_OK) {
        *f = vl__future_failed(s->loop, st, "%s", msg != NULL ? msg : vl_strerror(st));
        return NULL;
    }
    if ((need_names && n == 0) || (n > 0 && channels == NULL) || n >= (size_t)INT_MAX) {
        *f = vl__future_failed(s->loop, VL_EINVAL, "%s: %s", verb,
                               n == 0 ? "no channels" : channels == NULL ? "channels is NULL"
                                                                         : "too many channels");
        return NULL;
    }
    for (i = 0; i < n; i++) {
        if (channels[i] == NULL) {
            *f = vl__future_failed(s->loop, VL_EINVAL, "%s: channel %zu is NULL", verb, i);
            return NULL;
        }
    }
    k = call_new(s);
    if (k == NULL)
        return NULL;
    k->left = 1;
    *f = k->f;
    return k;
}

vl_future *vl_redis_cluster_ssubscribe(vl_redis_cluster_sub *s, size_t n,
                                       const char *const *channels)
{
    vl_future *f;
    cchan **v;
    ccall *k;
    size_t i, m = 0;

    if (s == NULL)
        return NULL;
    if ((k = call_begin(s, "SSUBSCRIBE", n, channels, 1, &f)) == NULL)
        return f;
    v = vl__malloc(n * sizeof(*v));
    if (v == NULL)
        call_fail(k, VL_ENOMEM, "out of memory");
    for (i = 0; i < n && v != NULL; i++) {
        cchan *c = chan_get(s, channels[i], strlen(channels[i]));
        cwait *w;
        if (c == NULL) {
            call_fail(k, VL_ENOMEM, "out of memory");
            continue;
        }
        if (c->confirmed)
            continue;
        w = vl__malloc(sizeof(*w));
        if (w == NULL) {
            call_fail(k, VL_ENOMEM, "out of memory");
            if (c->node == NULL && c->waiters == NULL)
                chan_remove(s, c, VL_OK, NULL); /* nobody asked for it after all */
            continue;
        }
        w->call = k;
        w->next = c->waiters;
        c->waiters = w;
        k->left++;
        if (c->node == NULL)
            v[m++] = c; /* placed now if the map knows its slot's owner */
    }
    s->depth++;
    place_and_send(s, v, m);
    s->depth--;
    vl__free(v);
    call_settle(k);
    return f;
}

static int by_node(const void *a, const void *b)
{
    const cchan *x = *(cchan *const *)a, *y = *(cchan *const *)b;
    uint64_t i = x->node != NULL ? x->node->id : 0, j = y->node != NULL ? y->node->id : 0;

    if (i != j)
        return i < j ? -1 : 1;
    if (x->slot != y->slot)
        return x->slot < y->slot ? -1 : 1;
    return 0;
}

vl_future *vl_redis_cluster_sunsubscribe(vl_redis_cluster_sub *s, size_t n,
                                         const char *const *channels)
{
    vl_future *f;
    cchan **v;
    ccall *k;
    size_t i, m = 0, at;

    if (s == NULL)
        return NULL;
    if ((k = call_begin(s, "SUNSUBSCRIBE", n, channels, 0, &f)) == NULL)
        return f;
    if (n == 0) {
        v = chan_list(s, &m);
    } else {
        v = vl__malloc(n * sizeof(*v));
        for (i = 0; i < n && v != NULL; i++) {
            cchan *c = chan_find(s, channels[i], strlen(channels[i]));
            if (c != NULL && !c->due) {
                c->due = 1; /* named twice: once is enough */
                v[m++] = c;
            }
        }
    }
    if (v == NULL && s->nchans > 0)
        call_fail(k, VL_ENOMEM, "out of memory");
    if (m > 1)
        qsort(v, m, sizeof(*v), by_node);
    for (at = 0; at < m;) {
        cnode *node = v[at]->node;
        size_t end = at, group;
        while (end < m && v[end]->node == node)
            end++;
        /* A node left with no channel is closed instead, which ends them. */
        if (node != NULL && node->nchan > end - at) {
            for (i = at; i < end; i += group) {
                group = 1;
                while (i + group < end && v[i + group]->slot == v[i]->slot)
                    group++;
                send_unsub(s, node, v + i, group, k);
            }
        }
        at = end;
    }
    for (i = 0; i < m; i++)
        chan_remove(s, v[i], VL_OK, NULL);
    vl__free(v);
    nodes_gc(s);
    call_settle(k);
    return f;
}

void vl_redis_cluster_sub_free(vl_redis_cluster_sub *s)
{
    ccall *k, *next;
    size_t i;

    if (s == NULL || s->freeing)
        return;
    s->freeing = 1;
    if (s->registered)
        vl__handle_remove(s->loop, &s->handle);
    s->registered = 0;
    health_stop(s);
    /* While the loop is being freed the cluster may be gone already; it
     * calls no watcher then. */
    if (s->watching && !vl__loop_closing(s->loop))
        vl__cluster_unwatch(s->cl, on_map, s);
    s->watching = 0;
    while (s->nodes != NULL)
        node_free(s, s->nodes);
    for (k = s->calls; k != NULL; k = next) {
        next = k->next;
        call_complete(k, VL_ECANCELED, "subscriber freed");
    }
    for (i = 0; i < s->nchans; i++) {
        chan_settle(s->chans[i], VL_ECANCELED, "subscriber freed");
        vl__free(s->chans[i]);
    }
    vl__free(s->chans);
    s->chans = NULL;
    s->nchans = s->chans_cap = 0;
    maybe_release(s);
}
