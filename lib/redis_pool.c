/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/redis_pool.c - a pool of Redis connections to one endpoint.
 *
 * Routing. Once the pool has all its connections, a command goes to the
 * less busy of two connections taken in turn (the "power of two choices"):
 * O(1) per command, and a slow connection, whose pending count grows, is
 * chosen less. When one of the two is down or out of routing (leased,
 * draining for a lease, retiring) the other one takes it. A scan over every
 * connection, picking the one with the fewest commands pending, is the
 * fallback while the pool grows or when neither candidate will do. When even the best connection is busy the pool opens
 * one more, one at a time, up to max_size. A connection that is down
 * reconnects by itself (lib/redis.c) and is skipped meanwhile.
 *
 * Counting. Every pool and lease command that reaches a connection counts
 * in `pending` until the connection reports it done (VL__REDIS_EV_DONE),
 * whatever ends it: a reply, an error, a timeout, a cancel or a free. That
 * one count drives max_pending.
 *
 * Waiting. Requests that cannot run yet (no room under max_pending in WAIT
 * mode, or no connection free for a lease) wait in FIFO queues. All of them
 * share acquire_timeout_ms, so their deadlines grow in queue order and one
 * timer, armed for the head, serves both queues.
 *
 * Fairness. Regular commands would keep every connection busy forever, so
 * a lease could wait behind them without end. While a lease waits and no
 * connection can be opened for it, one connection (the one with the fewest
 * commands pending) is "draining": routing skips it, and once its last
 * reply is in it goes straight to the oldest lease request. Routing only
 * ever reads a flag of the two candidates; the number of lease requests is
 * a counter of the queue.
 *
 * Holding the loop. Pooled connections do not keep the loop running while
 * idle. A lease or readiness request, though, may wait on a connection that
 * is connecting or draining without a command of its own on it, so while
 * such a request waits the pool holds its connections (vl__redis_hold).
 *
 * Housekeeping. One timer per pool, armed only when idle_timeout_ms,
 * max_lifetime_ms or keepalive_ms is set, walks the connections every
 * quarter of the smallest of them: it closes connections idle too long
 * (never below min_idle), retires the ones past their lifetime, pings the
 * quiet ones and drops those whose ping went unanswered, then opens
 * connections up to min_idle again. It is unref'd, like idle connections,
 * so it never keeps vl_loop_run running. A retiring connection takes no new
 * commands; the timer closes it once nothing is pending on it (the
 * connection's IDLE event only asks for an early tick, because the pool
 * must not free a connection from inside its event). A retiring connection
 * does not count against max_size, so its replacement can open at once.
 *
 * Targets. A pool opens its connections to its URL. A redis+sentinel://
 * pool has no URL of its own: lib/redis_sentinel.c finds one (or, for
 * replicas, several, which new connections take in turn) and sets it with
 * vl__redis_pool_retarget. Before the first, nothing is opened and every
 * request waits in the queues, where acquire_timeout_ms ends it with the
 * sentinels' error. A new target retires every connection to a server
 * that is no longer one, on the max_lifetime_ms path (housekeeping then
 * runs even without lifetimes, for them); a lost connection and an error
 * reply tell the discovery, which decides whether to ask again. Between a
 * +switch-master and the round that verifies the new master
 * (vl__redis_pool_moving, then vl__redis_pool_retarget) the pool is
 * "held": requests wait as before a first target, so none reaches the old
 * master once its demotion is announced. A lease on a connection to a
 * server the pool has moved away from (or, while held, to any but the
 * announced new master) fails every command with VL_ECONN, since what it
 * writes there would be lost, and its release closes the connection.
 *
 * Re-entrancy. Connection events can arrive while hiredis is on the stack,
 * and admitting a waiting request can itself complete a future and report
 * another event. pump() therefore never recurses: a nested call only asks
 * the running one to go round again.
 */
#include "redis_internal.h"
#include "url.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

typedef struct pslot pslot;
typedef struct pwait pwait;

struct pslot {
    vl_redis_pool *p;
    vl_redis *c;
    vl_redis_lease *lease; /* non-NULL while leased out */
    int off;               /* routing skips it: leased, draining or retiring */
    int draining;          /* reserved for the oldest lease request */
    int retiring;          /* past max_lifetime_ms: closed once drained */
    int up;                /* ready since its last handshake */
    int touched;           /* a command completed since the last IDLE event */
    uint64_t expires;      /* loop ms when it retires; 0: never */
    uint64_t idle_since;   /* loop ms of its last IDLE event (or handshake) */
    uint64_t alive_at;     /* loop ms it was last known alive (idle or pong) */
    uint64_t ping_at;      /* loop ms a keepalive PING went out; 0: none due */
    int moved;             /* retired because the pool's target moved */
    char *ep;              /* the target it connects to, for a Sentinel pool */
};

enum { W_CMD = 0, W_LEASE, W_READY };

struct pwait {
    pwait *prev, *next;
    vl_redis_pool *p;
    vl_future *f;
    char *cmd;          /* a command waiting for room; NULL otherwise */
    size_t len;
    uint64_t deadline;  /* loop ms; 0: no deadline */
    uint64_t enq_ms;    /* loop ms it started waiting */
    int waited;         /* it had to wait: counted in wait_count */
    int kind;           /* W_CMD, W_LEASE or W_READY */
};

typedef struct pqueue {
    pwait *head, *tail;
    size_t n;
} pqueue;

struct vl_redis_lease {
    vl_loop *loop;
    vl_redis_pool *p; /* NULL once the pool is gone */
    pslot *s;
    unsigned epoch;
};

struct vl_redis_pool {
    vl_loop *loop;
    vl__handle handle;
    int registered;
    vl_redis_pool_options o;
    vl_redis_options copts;
    char *url;          /* as given: may hold a password, never printed */
    char *display;      /* printable, without the password */
    char *endpoint;     /* "host:port" of the target(s), see vl_redis_pool_endpoint */
    vl__sentinel *sentinel; /* a redis+sentinel:// pool's discovery; NULL otherwise */
    char **turls;       /* a Sentinel pool's targets: URLs (with the password) */
    char **teps;        /* and their "host:port" */
    size_t ntargets;    /* 0: no target yet, requests wait */
    size_t tnext;       /* the target the next connection opens to */
    char *moving_from;  /* announced old master, until a round verified the new one */
    char *moving_to;    /* announced new master; both NULL when not moving */
    int invalid_status; /* VL_OK, or what every command fails with */
    char *invalid_msg;
    pslot **slots;      /* 2 * max_size entries: retiring ones come on top */
    unsigned nslots;
    unsigned nretiring; /* of nslots */
    size_t cap;         /* entries of slots */
    pslot *draining;    /* the connection reserved for a lease request */
    unsigned cursor;    /* where the next two routing candidates start */
    pslot *last;        /* where the last command went (see pick) */
    pqueue cmds;        /* commands waiting for room */
    pqueue leases;      /* lease requests */
    pqueue readies;     /* vl_redis_pool_ready requests */
    int holding;        /* the connections hold the loop for a waiter */
    vl__timer timer;
    vl__timer hk;       /* housekeeping; unref'd while armed (hk_unref) */
    int hk_unref;
    uint64_t hk_period; /* ms; 0: no housekeeping */
    size_t pending;
    int pumping, pump_again;
    int closing;
    vl_pool_stats st;   /* the counters; gauges are computed on demand */
    uint64_t gone_connects, gone_reconnects, gone_errors; /* of closed connections */
};

static void pump(vl_redis_pool *p);
static void hk_arm(vl_redis_pool *p, uint64_t ms);

/* A Sentinel pool before its first answer: requests wait, nothing opens. */
static int no_target(const vl_redis_pool *p)
{
    return p->sentinel != NULL && p->ntargets == 0;
}

/* A Sentinel pool that may not route now: before its first target, or
 * between a +switch-master and the round that verified the new master.
 * Requests wait meanwhile. */
static int held(const vl_redis_pool *p)
{
    return no_target(p) || p->moving_from != NULL;
}

/* A lease's connection goes to a server the pool no longer targets (or,
 * while the master is moving, to one but the announced new master). */
static int lease_moved(const vl_redis_pool *p, const pslot *s)
{
    return s->moved ||
           (p->moving_to != NULL && (s->ep == NULL || strcmp(s->ep, p->moving_to) != 0));
}

/* A Sentinel pool's discovery keeps vl_loop_run running while somebody
 * waits in the pool (for a target, room, a lease or readiness), as the
 * pool's connections do for a lease or readiness request. */
static void sentinel_hold(vl_redis_pool *p)
{
    if (p->sentinel != NULL)
        vl__sentinel_hold(p->sentinel,
                          !p->closing && p->cmds.n + p->leases.n + p->readies.n > 0);
}

static const size_t opts_ends[] = {
    VL__END(vl_redis_pool_options, struct_size),
    VL__END(vl_redis_pool_options, max_size),
    VL__END(vl_redis_pool_options, min_idle),
    VL__END(vl_redis_pool_options, acquire_timeout_ms),
    VL__END(vl_redis_pool_options, max_waiters),
    VL__END(vl_redis_pool_options, max_pending),
    VL__END(vl_redis_pool_options, connect_timeout_ms),
    VL__END(vl_redis_pool_options, command_timeout_ms),
    VL__END(vl_redis_pool_options, reconnect_min_ms),
    VL__END(vl_redis_pool_options, reconnect_max_ms),
    VL__END(vl_redis_pool_options, idle_timeout_ms),
    VL__END(vl_redis_pool_options, max_lifetime_ms),
    VL__END(vl_redis_pool_options, keepalive_ms),
    VL__END(vl_redis_pool_options, max_bulk_len),
    VL__END(vl_redis_pool_options, max_elements),
    VL__END(vl_redis_pool_options, max_reply_bytes),
    VL__END(vl_redis_pool_options, max_depth),
    VL__END(vl_redis_pool_options, tcp_keepalive_ms),
    VL__END(vl_redis_pool_options, tcp_user_timeout_ms),
    VL__END(vl_redis_pool_options, max_reply_mem),
};
/* No padding at the end: see lib/redis.c. */
_Static_assert(sizeof(vl_redis_pool_options) ==
                   VL__END(vl_redis_pool_options, max_reply_mem),
               "vl_redis_pool_options ends with padding");
static const vl__opts_desc opts_desc = {"vl_redis_pool_options", sizeof(vl_redis_pool_options),
                                        opts_ends, sizeof(opts_ends) / sizeof(opts_ends[0])};

static void opts_defaults(vl_redis_pool_options *o)
{
    /* The connection's own defaults, so the two cannot drift apart. */
    vl_redis_options c;

    vl_redis_options_init(&c);
    memset(o, 0, sizeof(*o));
    o->struct_size = sizeof(*o);
    o->max_size = 8;
    o->min_idle = 1;
    o->acquire_timeout_ms = 5000;
    o->max_waiters = SIZE_MAX; /* bounded by acquire_timeout_ms, not by count */
    o->max_pending = 0;
    VL__REDIS_COPY_CONN_FIELDS(o, &c);
    o->command_timeout_ms = c.command_timeout_ms;
    o->idle_timeout_ms = 600000;
    o->max_lifetime_ms = 1800000;
    o->keepalive_ms = 0;
}

void vl_redis_pool_options_init_sized(vl_redis_pool_options *o, size_t struct_size)
{
    vl_redis_pool_options d;

    opts_defaults(&d);
    vl__opts_init(o, struct_size, &d, &opts_desc);
}

static void count_result(vl_redis_pool *p, int status)
{
    if (status == VL_OK || status == VL_ESERVER)
        return;
    p->st.errors++;
    if (status == VL_ETIMEDOUT)
        p->st.timeouts++;
}

/* ---- queues ---- */

static void q_append(pqueue *q, pwait *w)
{
    w->next = NULL;
    w->prev = q->tail;
    if (q->tail != NULL)
        q->tail->next = w;
    else
        q->head = w;
    q->tail = w;
    q->n++;
}

static void q_unlink(pqueue *q, pwait *w)
{
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        q->head = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    else
        q->tail = w->prev;
    w->prev = w->next = NULL;
    q->n--;
}

static pqueue *q_of(vl_redis_pool *p, int kind)
{
    return kind == W_LEASE ? &p->leases : kind == W_READY ? &p->readies : &p->cmds;
}

/* The routing flag of a slot, from its reasons. */
static void slot_route(pslot *s)
{
    s->off = s->lease != NULL || s->draining || s->retiring;
}

static void undrain(vl_redis_pool *p)
{
    pslot *s = p->draining;

    if (s == NULL)
        return;
    p->draining = NULL;
    s->draining = 0;
    slot_route(s);
}

/* After the lease or readiness queue changed: hold the loop through the
 * connections while somebody waits on them, and stop reserving a connection
 * nobody waits for. O(connections), and only when the answer changes. */
static void waiters_changed(vl_redis_pool *p)
{
    int want = !p->closing && (p->leases.n > 0 || p->readies.n > 0);
    unsigned i;

    if (p->leases.n == 0)
        undrain(p);
    if (want == p->holding)
        return;
    p->holding = want;
    for (i = 0; i < p->nslots; i++)
        vl__redis_hold(p->slots[i]->c, want);
}

static void wait_drop(vl_redis_pool *p, pwait *w)
{
    int kind = w->kind;

    if (w->waited && !p->closing) {
        p->st.wait_count++;
        p->st.wait_total_ms += vl_loop_now_ms(p->loop) - w->enq_ms;
    }
    q_unlink(q_of(p, kind), w);
    vl__redis_cmd_free(w->cmd);
    vl__free(w);
    if (kind != W_CMD)
        waiters_changed(p);
    sentinel_hold(p);
}

static void arm_timer(vl_redis_pool *p)
{
    uint64_t next = 0, now = vl_loop_now_ms(p->loop);

    if (p->cmds.head != NULL && p->cmds.head->deadline != 0)
        next = p->cmds.head->deadline;
    if (p->leases.head != NULL && p->leases.head->deadline != 0 &&
        (next == 0 || p->leases.head->deadline < next))
        next = p->leases.head->deadline;
    if (next == 0)
        vl__timer_stop(&p->timer);
    else
        vl__timer_start(&p->timer, next > now ? next - now : 0);
}

/* A request that waited its acquire_timeout_ms for a Sentinel pool's
 * first target fails with VL_ECONN and what the sentinels said: nothing
 * could be reached, which a timeout would hide. 1 when it did. */
static int no_target_fail(vl_redis_pool *p, vl_future *f)
{
    if (!held(p))
        return 0;
    count_result(p, VL_ECONN);
    vl__future_set_source(f, NULL, NULL);
    if (no_target(p))
        vl__future_fail(f, VL_ECONN, "pool %s: no %s known within %" PRIu64 " ms: %s",
                        p->display, vl__sentinel_role(p->sentinel), p->o.acquire_timeout_ms,
                        vl__sentinel_error(p->sentinel));
    else
        vl__future_fail(f, VL_ECONN,
                        "pool %s: the master moved from %s to %s, not confirmed within %" PRIu64
                        " ms: %s",
                        p->display, p->moving_from, p->moving_to, p->o.acquire_timeout_ms,
                        vl__sentinel_error(p->sentinel));
    return 1;
}

static void timer_cb(vl__timer *t, void *ud)
{
    vl_redis_pool *p = ud;
    uint64_t now = vl_loop_now_ms(p->loop);
    pwait *w;

    VL__UNUSED(t);
    while ((w = p->cmds.head) != NULL && w->deadline != 0 && w->deadline <= now) {
        vl_future *f = w->f;
        wait_drop(p, w);
        if (no_target_fail(p, f))
            continue;
        count_result(p, VL_ETIMEDOUT);
        vl__future_set_source(f, NULL, NULL);
        vl__future_fail(f, VL_ETIMEDOUT,
                        "pool %s: no room within %" PRIu64 " ms (max_pending %zu)", p->display,
                        p->o.acquire_timeout_ms, p->o.max_pending);
    }
    while ((w = p->leases.head) != NULL && w->deadline != 0 && w->deadline <= now) {
        vl_future *f = w->f;
        wait_drop(p, w);
        if (no_target_fail(p, f))
            continue;
        count_result(p, VL_ETIMEDOUT);
        vl__future_set_source(f, NULL, NULL);
        vl__future_fail(f, VL_ETIMEDOUT,
                        "pool %s: no connection free for a lease within %" PRIu64 " ms",
                        p->display, p->o.acquire_timeout_ms);
    }
    arm_timer(p);
}

static void wait_cancel(void *source, vl_future *f, int status)
{
    pwait *w = source;
    vl_redis_pool *p = w->p;

    VL__UNUSED(f);
    if (w->kind != W_READY)
        count_result(p, status);
    wait_drop(p, w);
    arm_timer(p);
}

static void wait_describe(void *source, char *buf, size_t n)
{
    pwait *w = source;
    char verb[24];

    if (w->kind == W_CMD) {
        vl__redis_verb(w->cmd, w->len, verb, sizeof(verb));
        snprintf(buf, n, "%s waiting for room in pool %s", verb[0] ? verb : "command",
                 w->p->display);
    } else if (w->kind == W_LEASE) {
        snprintf(buf, n, "lease of pool %s", w->p->display);
    } else {
        snprintf(buf, n, "readiness of pool %s", w->p->display);
    }
}

static const vl__source_ops wait_ops = {.cancel = wait_cancel, .describe = wait_describe};

static vl_future *wait_add(vl_redis_pool *p, char *cmd, size_t len, int kind)
{
    pwait *w = vl__calloc(1, sizeof(*w));
    vl_future *f;

    if (w == NULL) {
        vl__redis_cmd_free(cmd);
        return NULL;
    }
    f = vl__future_make(p->loop, &wait_ops, w);
    if (f == NULL) {
        vl__redis_cmd_free(cmd);
        vl__free(w);
        return NULL;
    }
    w->p = p;
    w->f = f;
    w->cmd = cmd;
    w->len = len;
    w->kind = kind;
    w->enq_ms = vl_loop_now_ms(p->loop);
    if (p->o.acquire_timeout_ms > 0 && kind != W_READY)
        w->deadline = vl_loop_now_ms(p->loop) + p->o.acquire_timeout_ms;
    q_append(q_of(p, kind), w);
    if (kind != W_CMD)
        waiters_changed(p);
    sentinel_hold(p);
    if (w->deadline != 0 && !vl__timer_active(&p->timer))
        arm_timer(p);
    return f;
}

/* ---- connections ---- */

static void check_ready(vl_redis_pool *p);

static void pool_event(vl_redis *c, int event, int status, void *ud)
{
    pslot *s = ud;
    vl_redis_pool *p = s->p;
    char msg[256];

    if (s->c == NULL)
        s->c = c; /* an event from inside vl__redis_new_pooled (slot_open) */
    switch (event) {
    case VL__REDIS_EV_DONE:
        p->pending--;
        s->touched = 1;
        count_result(p, status);
        break;
    case VL__REDIS_EV_NOT_MASTER:
        /* READONLY or MASTERDOWN: the master may have moved; the sentinels
         * are asked again (at most once a second). Any other error reply
         * (WRONGTYPE, a script's error) says nothing of where it is. */
        if (p->sentinel != NULL && !s->retiring)
            vl__sentinel_trouble(p->sentinel, VL__SENTINEL_ERROR_REPLY);
        break;
    case VL__REDIS_EV_READY:
        s->up = 1;
        s->ping_at = 0;
        s->idle_since = s->alive_at = vl_loop_now_ms(p->loop);
        if (p->readies.n > 0)
            check_ready(p);
        break;
    case VL__REDIS_EV_DOWN:
        if (s->up)
            p->st.closed_broken++;
        s->up = 0;
        s->ping_at = 0;
        if (p->sentinel != NULL && !s->retiring && !p->closing)
            vl__sentinel_trouble(p->sentinel, VL__SENTINEL_LOST);
        if (p->readies.n > 0)
            check_ready(p);
        break;
    case VL__REDIS_EV_IDLE:
        if (s->touched) {
            s->touched = 0;
            s->idle_since = s->alive_at = vl_loop_now_ms(p->loop);
        }
        /* A retiring connection is closed by the housekeeping timer: not
         * from here, where its own code is still on the stack. */
        if (s->retiring && s->lease == NULL && !p->closing)
            hk_arm(p, 0);
        break;
    case VL__REDIS_EV_PONG:
        s->ping_at = 0;
        if (status == VL_OK) {
            s->alive_at = vl_loop_now_ms(p->loop);
        } else {
            snprintf(msg, sizeof(msg), "%s: keepalive ping failed", p->display);
            vl__redis_drop(c, msg); /* it reconnects by itself */
        }
        break;
    default:
        break;
    }
    if (!p->closing)
        pump(p);
}

/* Connections that count against max_size: all but the retiring ones. */
static unsigned live_slots(const vl_redis_pool *p)
{
    return p->nslots - p->nretiring;
}

static pslot *slot_open(vl_redis_pool *p)
{
    const char *url = p->url;
    pslot *s;
    uint64_t now;

    if (live_slots(p) >= p->o.max_size || p->closing || held(p))
        return NULL;
    if (p->nslots >= p->cap) {
        /* Only a Sentinel pool gets here: connections to a master that
         * moved retire on top of max_size, and another move may come
         * before they drained. */
        pslot **more = vl__realloc(p->slots, p->cap * 2 * sizeof(*more));
        if (more == NULL)
            return NULL;
        p->slots = more;
        p->cap *= 2;
    }
    s = vl__calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    if (p->sentinel != NULL) {
        /* Spread over the targets (replicas); a master is the only one. */
        size_t t = p->tnext++ % p->ntargets;
        url = p->turls[t];
        s->ep = vl__strdup(p->teps[t]);
        if (s->ep == NULL) {
            vl__free(s);
            return NULL;
        }
    }
    s->p = p;
    now = vl_loop_now_ms(p->loop);
    s->idle_since = s->alive_at = now;
    if (p->o.max_lifetime_ms > 0) {
        /* Up to 2.5% early, so connections opened together (min_idle at
         * start, a burst of growth) do not all retire in the same tick. */
        uint64_t life = p->o.max_lifetime_ms, spread = life / 40;
        s->expires = now + life - (spread > 0 ? vl__rand64() % (spread + 1) : 0);
    }
    p->slots[p->nslots++] = s;
    /* The TLS context of a connection already open is shared, between
     * connections of one URL only (a Sentinel pool's targets differ). */
    s->c = vl__redis_new_pooled(p->loop, url, &p->copts, pool_event, s,
                                p->nslots > 1 && p->sentinel == NULL ? p->slots[0]->c : NULL);
    if (s->c == NULL) {
        p->nslots--;
        vl__free(s->ep);
        vl__free(s);
        return NULL;
    }
    if (p->holding)
        vl__redis_hold(s->c, 1);
    return s;
}

/* Frees a connection and forgets its slot; its pending commands complete
 * with VL_ECANCELED (and are counted out through DONE). */
static void slot_close(vl_redis_pool *p, pslot *s)
{
    uint64_t a, b, e;
    unsigned i;

    for (i = 0; i < p->nslots; i++) {
        if (p->slots[i] == s) {
            p->slots[i] = p->slots[--p->nslots];
            break;
        }
    }
    if (s->retiring)
        p->nretiring--;
    if (p->draining == s)
        p->draining = NULL;
    if (p->last == s)
        p->last = NULL;
    vl__redis_counters(s->c, &a, &b, &e);
    p->gone_connects += a;
    p->gone_reconnects += b;
    p->gone_errors += e;
    if (s->lease != NULL) {
        s->lease->p = NULL;
        s->lease->s = NULL;
    }
    if (p->closing)
        vl__redis_detach(s->c);
    vl_redis_free(s->c);
    vl__free(s->ep);
    vl__free(s);
}

/* Opens connections until min_idle count against max_size again. */
static int top_up(vl_redis_pool *p)
{
    int opened = 0;

    while (p->invalid_status == VL_OK && live_slots(p) < p->o.min_idle && slot_open(p) != NULL)
        opened = 1;
    return opened;
}

/* The connection for the next command, or NULL when every one is down. */
static pslot *pick_spread(vl_redis_pool *p);

/* Where a command goes. Commands stay on the connection the last one went
 * to while it is less than STICKY_BATCH commands ahead of the pool's
 * average: the commands a callback issues then leave in one write on one
 * connection instead of one write on each of many (a write, and the reads
 * it causes, cost more than the command), while no connection gets more
 * than a batch ahead of the others. Past that, the spread below decides. */
#define STICKY_BATCH 16

static pslot *pick(vl_redis_pool *p)
{
    pslot *s = p->last;
    size_t bound = STICKY_BATCH;

    /* While the pool may still grow, the batch alone bounds it, so a busy
     * connection still makes the pool open another (pick_spread). */
    if (live_slots(p) >= p->o.max_size && p->nslots > 0)
        bound += p->pending / p->nslots;
    if (s != NULL && !s->off && vl_redis_state(s->c) == VL_REDIS_READY &&
        vl_redis_pending(s->c) < bound)
        return s;
    s = pick_spread(p);
    p->last = s;
    return s;
}

static pslot *pick_spread(vl_redis_pool *p)
{
    pslot *ready = NULL, *connecting = NULL;
    size_t rp = 0, cp = 0;
    unsigned i;

    if (p->nslots >= 2 && live_slots(p) >= p->o.max_size) {
        pslot *a = p->slots[p->cursor % p->nslots];
        pslot *b = p->slots[(p->cursor + 1) % p->nslots];
        int ua = !a->off && vl_redis_state(a->c) == VL_REDIS_READY;
        int ub = !b->off && vl_redis_state(b->c) == VL_REDIS_READY;
        p->cursor++;
        if (ua && ub)
            return vl_redis_pending(b->c) < vl_redis_pending(a->c) ? b : a;
        /* One is leased, reserved for a lease, retiring or down: the other
         * one then, still at a constant cost. */
        if (ua || ub)
            return ua ? a : b;
    }
    for (i = 0; i < p->nslots; i++) {
        pslot *s = p->slots[i];
        size_t n;
        int st;
        if (s->off)
            continue;
        st = vl_redis_state(s->c);
        n = vl_redis_pending(s->c);
        if (st == VL_REDIS_READY && (ready == NULL || n < rp)) {
            ready = s;
            rp = n;
        } else if (st == VL_REDIS_CONNECTING && (connecting == NULL || n < cp)) {
            connecting = s;
            cp = n;
        }
    }
    /* Grow one connection at a time while the best one is busy. */
    if (connecting == NULL && (ready == NULL || rp > 0) && live_slots(p) < p->o.max_size) {
        pslot *s = slot_open(p);
        if (ready == NULL && s != NULL && vl_redis_state(s->c) == VL_REDIS_CONNECTING)
            return s;
    }
    return ready != NULL ? ready : connecting;
}

/* The last error of any connection, for fail-fast messages. */
static const char *last_error(vl_redis_pool *p)
{
    unsigned i;

    if (no_target(p))
        return vl__sentinel_error(p->sentinel);
    for (i = 0; i < p->nslots; i++)
        if (vl_redis_error(p->slots[i]->c)[0] != '\0')
            return vl_redis_error(p->slots[i]->c);
    return "no connection is up";
}

/* Sends a formatted command through the pool, with `f` (NULL: a new one). */
static vl_future *route(vl_redis_pool *p, vl_future *f, char *cmd, size_t len)
{
    pslot *s = pick(p);
    vl_future *out;

    if (s == NULL) {
        unsigned i, off = 0;
        int status = VL_ECONN;
        char *why;
        for (i = 0; i < p->nslots; i++)
            off += p->slots[i]->off != 0;
        if (off == p->nslots && off > 0) {
            status = VL_EBUSY;
            why = vl__asprintf("pool %s: all %u connections are leased, reserved for a "
                               "waiting lease or retiring",
                               p->display, off);
        } else {
            why = vl__strdup(last_error(p));
        }
        vl__redis_cmd_free(cmd);
        count_result(p, status);
        if (f == NULL) {
            f = vl__future_failed(p->loop, status, "%s", why != NULL ? why : vl_strerror(status));
        } else {
            vl__future_set_source(f, NULL, NULL);
            vl__future_complete(f, status, NULL, VL__VAL_NONE, NULL, why);
        }
        vl__free(why);
        return f;
    }
    p->pending++;
    out = vl__redis_send(s->c, f, cmd, len, 1);
    if (out == NULL)
        p->pending--; /* out of memory before anything was counted out */
    return out;
}

static void lease_value_free(void *v)
{
    vl_redis_lease_release(v);
}

/* A ready connection with nothing pending, no lease and not retiring, or
 * NULL. */
static pslot *idle_slot(vl_redis_pool *p)
{
    unsigned i;

    for (i = 0; i < p->nslots; i++) {
        pslot *s = p->slots[i];
        if (s->lease == NULL && !s->retiring && vl__redis_clean(s->c, vl__redis_epoch(s->c)))
            return s;
    }
    return NULL;
}

static int any_connecting(vl_redis_pool *p)
{
    unsigned i;

    for (i = 0; i < p->nslots; i++) {
        pslot *s = p->slots[i];
        if (s->lease == NULL && !s->retiring && vl_redis_state(s->c) == VL_REDIS_CONNECTING)
            return 1;
    }
    return 0;
}

/* Reserves the ready connection with the fewest commands pending for the
 * oldest lease request: routing skips it from now on, so it drains. */
static void drain_one(vl_redis_pool *p)
{
    pslot *best = NULL;
    size_t bp = 0;
    unsigned i;

    for (i = 0; i < p->nslots; i++) {
        pslot *s = p->slots[i];
        size_t n = vl_redis_pending(s->c);
        if (s->off || vl_redis_state(s->c) != VL_REDIS_READY)
            continue;
        if (best == NULL || n < bp) {
            best = s;
            bp = n;
        }
    }
    if (best == NULL)
        return;
    best->draining = 1;
    slot_route(best);
    p->draining = best;
}

static void lease_give(vl_redis_pool *p, pwait *w, pslot *s)
{
    vl_future *f = w->f;
    vl_redis_lease *l = vl__calloc(1, sizeof(*l));

    wait_drop(p, w);
    vl__future_set_source(f, NULL, NULL);
    if (l == NULL) {
        count_result(p, VL_ENOMEM);
        vl__future_fail(f, VL_ENOMEM, "out of memory making a lease");
        return;
    }
    if (p->draining == s)
        undrain(p);
    l->loop = p->loop;
    l->p = p;
    l->s = s;
    l->epoch = vl__redis_epoch(s->c);
    s->lease = l;
    slot_route(s);
    vl__future_complete(f, VL_OK, l, VL__VAL_USER, lease_value_free, NULL);
}

/* Admits what waits, as far as room and connections allow. */
static void pump(vl_redis_pool *p)
{
    if (p->pumping) {
        p->pump_again = 1;
        return;
    }
    p->pumping = 1;
    do {
        pwait *w;
        p->pump_again = 0;
        while ((w = p->cmds.head) != NULL && !p->closing && !held(p) &&
               (p->o.max_pending == 0 || p->pending < p->o.max_pending)) {
            vl_future *f = w->f;
            char *cmd = w->cmd;
            size_t len = w->len;
            w->cmd = NULL;
            wait_drop(p, w);
            route(p, f, cmd, len);
        }
        while (p->leases.head != NULL && !p->closing && !held(p)) {
            pslot *s = idle_slot(p);
            if (s == NULL) {
                /* Wait for a connection being opened; open one if there is
                 * room; otherwise take one out of routing (see Fairness). */
                if (!any_connecting(p) && slot_open(p) == NULL && p->draining == NULL)
                    drain_one(p);
                break;
            }
            lease_give(p, p->leases.head, s);
        }
    } while (p->pump_again && !p->closing);
    p->pumping = 0;
    if (!p->closing)
        arm_timer(p);
}

/* ---- readiness ---- */

/* 1 once min_idle connections are up, -1 when the first attempt of every
 * connection failed (and none has been up since), 0 meanwhile. */
static int ready_state(vl_redis_pool *p)
{
    unsigned i, up = 0, live = 0, failed = 0;

    /* Before its first target a Sentinel pool waits for the sentinels,
     * and fails once a whole round of them named none. */
    if (no_target(p))
        return vl__sentinel_failed(p->sentinel) ? -1 : 0;
    for (i = 0; i < p->nslots; i++) {
        pslot *s = p->slots[i];
        uint64_t a, b, e;
        if (s->retiring)
            continue;
        live++;
        if (vl_redis_state(s->c) == VL_REDIS_READY) {
            up++;
            continue;
        }
        vl__redis_counters(s->c, &a, &b, &e);
        if (a == 0 && e > 0)
            failed++;
    }
    if (up >= p->o.min_idle)
        return 1;
    return live > 0 && failed == live ? -1 : 0;
}

static void check_ready(vl_redis_pool *p)
{
    int st = ready_state(p);
    const char *why;
    pwait *w;

    if (st == 0)
        return;
    why = st > 0 ? NULL : last_error(p);
    while ((w = p->readies.head) != NULL) {
        vl_future *f = w->f;
        wait_drop(p, w);
        vl__future_set_source(f, NULL, NULL);
        vl__future_complete(f, st > 0 ? VL_OK : VL_ECONN, NULL, VL__VAL_NONE, NULL, why);
    }
}

/* ---- housekeeping ---- */

/* (Re)arms the housekeeping timer `ms` from now. It stays unref'd while
 * armed: an idle pool must not keep vl_loop_run running. */
static void hk_arm(vl_redis_pool *p, uint64_t ms)
{
    /* Without lifetimes it still runs for connections that retired
     * because a Sentinel pool's master moved. */
    if ((p->hk_period == 0 && p->nretiring == 0) || p->closing)
        return;
    vl__timer_start(&p->hk, ms);
    if (!p->hk_unref) {
        vl__loop_unref(p->loop);
        p->hk_unref = 1;
    }
}

/* Retires a connection past max_lifetime_ms: no new commands from now on. */
static void retire(vl_redis_pool *p, pslot *s)
{
    if (p->draining == s)
        undrain(p);
    s->retiring = 1;
    p->nretiring++;
    slot_route(s);
}

static void housekeep(vl_redis_pool *p)
{
    uint64_t now = vl_loop_now_ms(p->loop);
    unsigned i = 0;
    int changed = 0;
    char msg[256];

    while (i < p->nslots) {
        pslot *s = p->slots[i];
        vl_redis *c = s->c;
        size_t n = vl_redis_pending(c);

        if (s->expires != 0 && now >= s->expires && !s->retiring) {
            retire(p, s);
            changed = 1;
        }
        if (s->retiring) {
            /* Closed once drained; a leased one when it is released. */
            if (s->lease == NULL && n == 0) {
                if (!s->moved)
                    p->st.closed_lifetime++;
                slot_close(p, s);
                changed = 1;
                continue;
            }
            i++;
            continue;
        }
        /* An unanswered keepalive PING drops the connection whether or not
         * pool commands were sent after it: they wait behind it. */
        if (p->o.keepalive_ms > 0 && s->ping_at != 0 && now - s->ping_at >= p->o.keepalive_ms &&
            vl_redis_state(c) == VL_REDIS_READY) {
            snprintf(msg, sizeof(msg), "%s: keepalive ping unanswered after %u ms", p->display,
                     (unsigned)p->o.keepalive_ms);
            s->ping_at = 0;
            vl__redis_drop(c, msg); /* reports DOWN; it reconnects by itself */
            changed = 1;
            i++;
            continue;
        }
        if (s->lease != NULL || s->draining || n > 0 || vl_redis_state(c) != VL_REDIS_READY) {
            i++;
            continue;
        }
        /* Idle: ready, nothing of ours pending, nobody's lease. */
        if (p->o.idle_timeout_ms > 0 && now - s->idle_since >= p->o.idle_timeout_ms &&
            live_slots(p) > p->o.min_idle) {
            p->st.closed_idle++;
            slot_close(p, s);
            changed = 1;
            continue;
        }
        if (p->o.keepalive_ms > 0 && s->ping_at == 0 && now - s->alive_at >= p->o.keepalive_ms &&
            vl__redis_ping(c) == VL_OK) {
            s->ping_at = now;
            p->st.keepalives++;
        }
        i++;
    }
    if (top_up(p))
        changed = 1;
    if (changed)
        pump(p);
}

static void hk_cb(vl__timer *t, void *ud)
{
    vl_redis_pool *p = ud;

    VL__UNUSED(t);
    if (p->hk_unref) { /* libev stopped it and dropped its count */
        vl__loop_ref(p->loop);
        p->hk_unref = 0;
    }
    housekeep(p);
    /* A retiring connection that is down and idle sends no IDLE event:
     * without lifetimes, the timer comes back for it once a second. */
    hk_arm(p, p->hk_period > 0 ? p->hk_period : 1000);
}

/* ---- targets (Redis Sentinel) ---- */

static void targets_free(vl_redis_pool *p)
{
    size_t i;

    for (i = 0; i < p->ntargets; i++) {
        memset(p->turls[i], 0, strlen(p->turls[i])); /* it may hold a password */
        vl__free(p->turls[i]);
        vl__free(p->teps[i]);
    }
    vl__free(p->turls);
    vl__free(p->teps);
    p->turls = p->teps = NULL;
    p->ntargets = 0;
}

static int target_has(char *const *eps, size_t n, const char *ep)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (ep != NULL && strcmp(eps[i], ep) == 0)
            return 1;
    return 0;
}

/* The new master is verified (or the move is moot): routing resumes. 1
 * when the pool was moving. */
static int moving_end(vl_redis_pool *p)
{
    if (p->moving_from == NULL)
        return 0;
    vl__free(p->moving_from);
    vl__free(p->moving_to);
    p->moving_from = p->moving_to = NULL;
    return 1;
}

void vl__redis_pool_moving(vl_redis_pool *p, const char *from, const char *to)
{
    char *f, *t;

    /* News of the move the pool already made (another sentinel telling
     * it again) changes nothing. */
    if (p->closing || (p->ntargets == 1 && strcmp(p->teps[0], to) == 0))
        return;
    f = vl__strdup(from);
    t = vl__strdup(to);
    if (f == NULL || t == NULL) {
        /* Out of memory: the round that follows still moves the pool. */
        vl__free(f);
        vl__free(t);
        return;
    }
    moving_end(p);
    p->moving_from = f;
    p->moving_to = t;
    p->last = NULL;
}

int vl__redis_pool_retarget(vl_redis_pool *p, char *const *urls, char *const *eps, size_t n)
{
    char **nu, **ne, *endpoint;
    size_t i, len = 1;
    unsigned k;
    int moved = 0;

    if (p->closing || n == 0)
        return VL_EINVAL;
    for (i = 0; i < n; i++)
        len += strlen(eps[i]) + 1;
    /* The same answer again (a check that found nothing moved): the
     * endpoint string stays, as vl_redis_pool_endpoint promises. */
    if (n == p->ntargets) {
        for (i = 0; i < n && strcmp(eps[i], p->teps[i]) == 0 && strcmp(urls[i], p->turls[i]) == 0;
             i++)
            ;
        if (i == n) {
            if (moving_end(p))
                pump(p);
            return VL_OK;
        }
    }
    nu = vl__calloc(n, sizeof(*nu));
    ne = vl__calloc(n, sizeof(*ne));
    endpoint = vl__malloc(len);
    for (i = 0; nu != NULL && ne != NULL && i < n; i++) {
        nu[i] = vl__strdup(urls[i]);
        ne[i] = vl__strdup(eps[i]);
    }
    if (nu == NULL || ne == NULL || endpoint == NULL || nu[n - 1] == NULL || ne[n - 1] == NULL) {
        for (i = 0; nu != NULL && ne != NULL && i < n; i++) {
            vl__free(nu[i]);
            vl__free(ne[i]);
        }
        vl__free(nu);
        vl__free(ne);
        vl__free(endpoint);
        return VL_ENOMEM;
    }
    endpoint[0] = '\0';
    for (i = 0; i < n; i++) {
        if (i > 0)
            strcat(endpoint, ",");
        strcat(endpoint, eps[i]);
    }
    targets_free(p);
    p->turls = nu;
    p->teps = ne;
    p->ntargets = n;
    vl__free(p->endpoint);
    p->endpoint = endpoint;
    (void)moving_end(p);
    /* Every connection to a server that is no longer a target retires at
     * once: routing skips it from now on, what it has in flight completes,
     * and housekeeping closes it once drained (the max_lifetime_ms path).
     * One not up yet has written nothing: its waiting commands fail now
     * rather than reach the old server once it answers. */
    for (k = 0; k < p->nslots; k++) {
        pslot *s = p->slots[k];
        if (s->retiring || target_has(ne, n, s->ep))
            continue;
        retire(p, s);
        s->moved = 1;
        moved = 1;
        if (s->lease == NULL && vl_redis_state(s->c) != VL_REDIS_READY) {
            char msg[256];
            snprintf(msg, sizeof(msg), "pool %s: the target moved to %s", p->display,
                     endpoint);
            vl__redis_drop(s->c, msg);
        }
    }
    p->last = NULL;
    top_up(p);
    if (moved)
        hk_arm(p, 0);
    if (p->readies.n > 0)
        check_ready(p);
    pump(p);
    return VL_OK;
}

void vl__redis_pool_no_target(vl_redis_pool *p)
{
    if (!p->closing && p->readies.n > 0)
        check_ready(p);
}

const char *vl_redis_pool_endpoint(const vl_redis_pool *p)
{
    if (p == NULL)
        return NULL;
    return p->endpoint != NULL ? p->endpoint : "";
}

void vl__redis_pool_sentinel_counts(const vl_redis_pool *p, uint64_t *discoveries,
                                    uint64_t *switches)
{
    *discoveries = *switches = 0;
    if (p != NULL && p->sentinel != NULL)
        vl__sentinel_counts(p->sentinel, discoveries, switches);
}

uint64_t vl__redis_pool_sentinel_news(const vl_redis_pool *p)
{
    return p != NULL ? vl__sentinel_news(p->sentinel) : 0;
}

const char *vl__redis_pool_sentinel_subscribed(const vl_redis_pool *p)
{
    return p != NULL ? vl__sentinel_subscribed(p->sentinel) : "";
}

/* ---- public API ---- */

static void pool_release(vl__handle *h)
{
    vl_redis_pool *p = (vl_redis_pool *)(void *)((char *)h - offsetof(vl_redis_pool, handle));

    vl__free(p->slots);
    vl__free(p->url);
    vl__free(p->display);
    vl__free(p->endpoint);
    vl__free(p->invalid_msg);
    vl__free(p);
}

static void pool_handle_free(vl__handle *h)
{
    vl_redis_pool *p = (vl_redis_pool *)(void *)((char *)h - offsetof(vl_redis_pool, handle));

    p->registered = 0;
    vl_redis_pool_free(p);
}

vl_redis_pool *vl_redis_pool_new(vl_loop *loop, const char *url, const vl_redis_pool_options *opts)
{
    vl_redis_pool *p;
    char owhy[160];
    unsigned i;
    int orc;

    if (loop == NULL)
        return NULL;
    p = vl__calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->loop = loop;
    opts_defaults(&p->o);
    orc = vl__opts_copy(&p->o, opts, &opts_desc, owhy, sizeof(owhy));
    if (p->o.max_size == 0)
        p->o.max_size = 1;
    /* The slot table holds 2 * max_size: keep that and the counts sane. */
    if (p->o.max_size > 65536)
        p->o.max_size = 65536;
    if (p->o.min_idle > p->o.max_size)
        p->o.min_idle = p->o.max_size;
    vl_redis_options_init(&p->copts);
    VL__REDIS_COPY_CONN_FIELDS(&p->copts, &p->o);
    p->copts.command_timeout_ms = p->o.command_timeout_ms;
    vl__timer_init(&p->timer, loop, timer_cb, p);
    vl__timer_init(&p->hk, loop, hk_cb, p);
    p->cap = (size_t)p->o.max_size * 2;
    p->slots = vl__calloc(p->cap, sizeof(*p->slots));
    p->url = vl__strdup(url != NULL ? url : "");
    if (p->slots == NULL || p->url == NULL)
        goto nomem;
    if (orc != VL_OK) {
        p->invalid_status = orc;
        p->invalid_msg = vl__strdup(owhy);
        if (p->invalid_msg == NULL)
            goto nomem;
    } else if (vl__sentinel_url(url)) {
        /* Discovery starts from the loop, once the pool is complete. */
        p->invalid_status = vl__sentinel_new(p, loop, url, &p->copts, &p->sentinel,
                                             &p->display, &p->invalid_msg);
    } else {
        p->invalid_status = vl__redis_url_error(loop, url, &p->invalid_msg);
    }
    if (p->invalid_status == VL_ENOMEM)
        goto nomem;
    if (p->sentinel != NULL) {
        p->endpoint = vl__strdup("");
    } else if (p->invalid_status == VL_OK) {
        vl__url u;
        char why[160];
        if (vl__url_parse(url, &u, why, sizeof(why)) != VL_OK)
            goto nomem; /* it parsed a moment ago: only memory can fail */
        p->display = vl__strdup(u.display);
        if (u.host[0] == '\0')
            p->endpoint = vl__strdup(u.display); /* unix:// has no host:port */
        else
            p->endpoint = vl__asprintf(strchr(u.host, ':') != NULL ? "[%s]:%d" : "%s:%d",
                                       u.host, u.port != 0 ? u.port : 6379);
        vl__url_clear(&u);
    } else {
        vl__free(p->display); /* a Sentinel URL's, if it got that far */
        p->display = vl__strdup("redis pool");
        p->endpoint = vl__strdup("");
    }
    if (p->display == NULL || p->endpoint == NULL)
        goto nomem;
    vl__handle_add(loop, &p->handle, pool_handle_free);
    p->registered = 1;
    if (p->invalid_status == VL_OK) {
        uint64_t period = 0, v[3];
        v[0] = p->o.idle_timeout_ms;
        v[1] = p->o.max_lifetime_ms;
        v[2] = p->o.keepalive_ms;
        for (i = 0; i < 3; i++)
            if (v[i] > 0 && (period == 0 || v[i] < period))
                period = v[i];
        /* A quarter of the shortest: each is enforced within 25% of its
         * value, at most 30 s late. */
        if (period > 0) {
            period /= 4;
            p->hk_period = period < 1 ? 1 : period > 30000 ? 30000 : period;
        }
        for (i = 0; i < p->o.min_idle; i++)
            slot_open(p);
        hk_arm(p, p->hk_period);
    }
    return p;
nomem:
    vl__sentinel_free(p->sentinel);
    vl__free(p->slots);
    vl__free(p->url);
    vl__free(p->display);
    vl__free(p->endpoint);
    vl__free(p->invalid_msg);
    vl__free(p);
    return NULL;
}

/* Takes cmd. The checks every pool command goes through first. */
static vl_future *pool_submit(vl_redis_pool *p, char *cmd, size_t len)
{
    p->st.requests++;
    if (p->invalid_status != VL_OK || p->closing) {
        int status = p->closing ? VL_ECLOSED : p->invalid_status;
        vl__redis_cmd_free(cmd);
        count_result(p, status);
        return vl__future_failed(p->loop, status, "%s",
                                 p->closing ? "pool is closed" : p->invalid_msg);
    }
    /* Room is judged in order: while others wait, a newcomer waits too;
     * before a Sentinel pool knows where to go, everyone does. */
    if (p->cmds.n > 0 || held(p) ||
        (p->o.max_pending > 0 && p->pending >= p->o.max_pending)) {
        if (p->cmds.n + p->leases.n >= p->o.max_waiters) {
            vl__redis_cmd_free(cmd);
            p->st.rejected++;
            count_result(p, VL_EBUSY);
            return vl__future_failed(p->loop, VL_EBUSY,
                                     "pool %s is full: %zu commands pending (max_pending %zu), "
                                     "%zu waiting (max_waiters %zu)",
                                     p->display, p->pending, p->o.max_pending,
                                     p->cmds.n + p->leases.n, p->o.max_waiters);
        }
        {
            vl_future *f = wait_add(p, cmd, len, W_CMD);
            if (f != NULL)
                p->cmds.tail->waited = 1;
            return f;
        }
    }
    return route(p, NULL, cmd, len);
}

vl_future *vl_redis_pool_commandv(vl_redis_pool *p, const char *fmt, va_list ap)
{
    char *cmd = NULL;
    char why[128];
    long long len;

    if (p == NULL)
        return NULL;
    if (fmt == NULL)
        return vl__future_failed(p->loop, VL_EINVAL, "no command");
    len = vl__redis_formatv(&cmd, fmt, ap, why, sizeof(why));
    if (len == -1) {
        p->st.requests++; /* a command that failed, as one refused later would */
        count_result(p, VL_EINVAL);
    }
    if (len < 0)
        return vl__redis_format_failed(p->loop, len, why);
    return pool_submit(p, cmd, (size_t)len);
}

vl_future *vl_redis_pool_command(vl_redis_pool *p, const char *fmt, ...)
{
    va_list ap;
    vl_future *f;

    va_start(ap, fmt);
    f = vl_redis_pool_commandv(p, fmt, ap);
    va_end(ap);
    return f;
}

/* Formats argv, or says why not (NULL *cmd and a failed future). */
static vl_future *format_argv(vl_loop *loop, char **cmd, long long *len, int argc,
                              const char **argv, const size_t *argvlen)
{
    int i;

    *cmd = NULL;
    if (argc <= 0 || argv == NULL)
        return vl__future_failed(loop, VL_EINVAL, "empty command");
    for (i = 0; i < argc; i++)
        if (argv[i] == NULL)
            return vl__future_failed(loop, VL_EINVAL, "argument %d is NULL", i);
    *len = vl__redis_format_argv(cmd, argc, argv, argvlen);
    return NULL;
}

vl_future *vl_redis_pool_command_argv(vl_redis_pool *p, int argc, const char **argv,
                                      const size_t *argvlen)
{
    char *cmd;
    long long len = -1;
    vl_future *err;

    if (p == NULL)
        return NULL;
    /* The hot path: nothing waits and a ready connection takes it, straight
     * into its output buffer (what route does, without a copy). */
    if (argc > 0 && argv != NULL && p->invalid_status == VL_OK && !p->closing &&
        p->cmds.n == 0 && p->moving_from == NULL &&
        (p->o.max_pending == 0 || p->pending < p->o.max_pending)) {
        int i;
        for (i = 0; i < argc && argv[i] != NULL; i++)
            ;
        if (i == argc) {
            pslot *s = pick(p);
            if (s != NULL && vl_redis_state(s->c) == VL_REDIS_READY) {
                vl_future *out;
                p->st.requests++;
                p->pending++;
                out = vl__redis_send_argv(s->c, NULL, argc, argv, argvlen, 1);
                if (out == NULL)
                    p->pending--; /* out of memory before anything was counted out */
                return out;
            }
        }
    }
    err = format_argv(p->loop, &cmd, &len, argc, argv, argvlen);
    if (err != NULL)
        return err;
    if (len < 0)
        return NULL;
    return pool_submit(p, cmd, (size_t)len);
}

vl_future *vl_redis_pool_lease(vl_redis_pool *p)
{
    vl_future *f;
    unsigned i, down = 0;

    if (p == NULL)
        return NULL;
    if (p->invalid_status != VL_OK || p->closing)
        return vl__future_failed(p->loop, p->closing ? VL_ECLOSED : p->invalid_status, "%s",
                                 p->closing ? "pool is closed" : p->invalid_msg);
    for (i = 0; i < p->nslots; i++)
        if (vl_redis_state(p->slots[i]->c) == VL_REDIS_DOWN)
            down++;
    if (p->nslots == p->o.max_size && down == p->nslots)
        return vl__future_failed(p->loop, VL_ECONN, "%s", last_error(p));
    f = wait_add(p, NULL, 0, W_LEASE);
    if (f == NULL)
        return NULL;
    pump(p);
    /* Still queued: it has to wait, which max_waiters may forbid. Lease
     * requests are served in order, so an unserved newcomer is the tail. */
    if (p->leases.tail != NULL && p->leases.tail->f == f &&
        p->cmds.n + p->leases.n > p->o.max_waiters) {
        wait_drop(p, p->leases.tail);
        arm_timer(p);
        p->st.rejected++;
        count_result(p, VL_EBUSY);
        vl__future_set_source(f, NULL, NULL);
        vl__future_fail(f, VL_EBUSY, "pool %s: no connection free for a lease and %zu waiting "
                        "(max_waiters %zu)", p->display, p->cmds.n + p->leases.n,
                        p->o.max_waiters);
    } else if (p->leases.tail != NULL && p->leases.tail->f == f) {
        p->leases.tail->waited = 1;
    }
    return f;
}

vl_future *vl_redis_pool_ready(vl_redis_pool *p)
{
    vl_future *f;
    int st;

    if (p == NULL)
        return NULL;
    if (p->invalid_status != VL_OK || p->closing)
        return vl__future_failed(p->loop, p->closing ? VL_ECLOSED : p->invalid_status, "%s",
                                 p->closing ? "pool is closed" : p->invalid_msg);
    st = ready_state(p);
    if (st < 0)
        return vl__future_failed(p->loop, VL_ECONN, "%s", last_error(p));
    if (st == 0)
        return wait_add(p, NULL, 0, W_READY);
    /* Already up: completed now, its callback still runs from the loop. */
    f = vl__future_make(p->loop, NULL, NULL);
    if (f != NULL)
        vl__future_complete(f, VL_OK, NULL, VL__VAL_NONE, NULL, NULL);
    return f;
}

static vl_future *lease_closed(vl_loop *loop)
{
    return vl__future_failed(loop, VL_ECLOSED, "lease was released or its pool freed");
}

static vl_future *lease_send(vl_redis_lease *l, char *cmd, size_t len)
{
    vl_redis_pool *p = l->p;
    vl_future *f;

    p->st.requests++;
    /* Once the connection was lost, even if it is back already, the server
     * forgot the lease's WATCH, MULTI or SELECT: carrying on would run the
     * next commands outside the transaction the caller set up. */
    if (p->sentinel != NULL && lease_moved(p, l->s)) {
        vl__redis_cmd_free(cmd);
        count_result(p, VL_ECONN);
        return vl__future_failed(p->loop, VL_ECONN,
                                 "pool %s: the %s moved from %s to %s: release the lease",
                                 p->display, vl__sentinel_role(p->sentinel),
                                 l->s->ep != NULL ? l->s->ep : "?",
                                 p->moving_to != NULL ? p->moving_to : vl_redis_pool_endpoint(p));
    }
    if (!vl__redis_live(l->s->c, l->epoch)) {
        vl__redis_cmd_free(cmd);
        count_result(p, VL_ECONN);
        return vl__future_failed(p->loop, VL_ECONN, "pool %s: the lease's connection was lost",
                                 p->display);
    }
    p->pending++;
    f = vl__redis_send(l->s->c, NULL, cmd, len, 0);
    if (f == NULL)
        p->pending--;
    return f;
}


vl_future *vl_redis_lease_commandv(vl_redis_lease *l, const char *fmt, va_list ap)
{
    char *cmd = NULL;
    char why[128];
    long long len;

    if (l == NULL)
        return NULL;
    if (l->p == NULL)
        return lease_closed(l->loop);
    if (fmt == NULL)
        return vl__future_failed(l->p->loop, VL_EINVAL, "no command");
    len = vl__redis_formatv(&cmd, fmt, ap, why, sizeof(why));
    if (len == -1) {
        l->p->st.requests++;
        count_result(l->p, VL_EINVAL);
    }
    if (len < 0)
        return vl__redis_format_failed(l->p->loop, len, why);
    return lease_send(l, cmd, (size_t)len);
}

vl_future *vl_redis_lease_command(vl_redis_lease *l, const char *fmt, ...)
{
    va_list ap;
    vl_future *f;

    va_start(ap, fmt);
    f = vl_redis_lease_commandv(l, fmt, ap);
    va_end(ap);
    return f;
}

vl_future *vl_redis_lease_command_argv(vl_redis_lease *l, int argc, const char **argv,
                                       const size_t *argvlen)
{
    char *cmd;
    long long len = -1;
    vl_future *err;

    if (l == NULL)
        return NULL;
    if (l->p == NULL)
        return lease_closed(l->loop);
    err = format_argv(l->p->loop, &cmd, &len, argc, argv, argvlen);
    if (err != NULL)
        return err;
    if (len < 0)
        return NULL;
    return lease_send(l, cmd, (size_t)len);
}

int vl_redis_lease_release(vl_redis_lease *l)
{
    vl_redis_pool *p;
    pslot *s;
    int clean;

    if (l == NULL)
        return 0;
    p = l->p;
    s = l->s;
    if (p == NULL) {
        vl__free(l);
        return 0;
    }
    s->lease = NULL;
    slot_route(s);
    /* A lease on a connection to a master that moved is never clean: what
     * it wrote there since may be lost, and its caller was told so. */
    clean = vl__redis_clean(s->c, l->epoch) && !(p->sentinel != NULL && lease_moved(p, s));
    vl__free(l);
    if (clean && !s->retiring) {
        s->idle_since = s->alive_at = vl_loop_now_ms(p->loop);
        s->touched = 0;
        pump(p);
        return 1;
    }
    if (clean) {
        if (!s->moved)
            p->st.closed_lifetime++; /* it outlived max_lifetime_ms while leased */
    } else {
        /* Not provably clean: close it rather than hand its state to someone. */
        p->st.closed_dirty++;
    }
    slot_close(p, s);
    top_up(p);
    pump(p);
    return clean;
}

int vl_redis_pool_stats_get(const vl_redis_pool *p, vl_pool_stats *out)
{
    vl_pool_stats st;
    unsigned i;

    if (p == NULL || out == NULL)
        return VL_EINVAL;
    st = p->st;
    st.open = p->nslots;
    st.ready = st.busy = st.idle = st.leased = 0;
    st.connects = p->gone_connects;
    st.reconnects = p->gone_reconnects;
    st.connect_failures = p->gone_errors;
    for (i = 0; i < p->nslots; i++) {
        const pslot *s = p->slots[i];
        uint64_t a, b, e;
        vl__redis_counters(s->c, &a, &b, &e);
        st.connects += a;
        st.reconnects += b;
        st.connect_failures += e;
        if (s->lease != NULL)
            st.leased++;
        if (vl_redis_state(s->c) != VL_REDIS_READY)
            continue;
        st.ready++;
        if (s->lease != NULL || vl_redis_pending(s->c) > 0)
            st.busy++;
        else
            st.idle++;
    }
    st.pending = p->pending;
    st.waiters = p->cmds.n + p->leases.n;
    return vl__pool_stats_out(out, &st);
}

void vl_redis_pool_free(vl_redis_pool *p)
{
    pwait *w;

    if (p == NULL || p->closing)
        return;
    p->closing = 1;
    if (p->registered)
        vl__handle_remove(p->loop, &p->handle);
    p->registered = 0;
    vl__timer_stop(&p->timer);
    if (p->hk_unref) { /* libev wants an unref'd watcher ref'd before it stops */
        vl__loop_ref(p->loop);
        p->hk_unref = 0;
    }
    vl__timer_stop(&p->hk);
    while ((w = p->cmds.head) != NULL || (w = p->leases.head) != NULL ||
           (w = p->readies.head) != NULL) {
        vl_future *f = w->f;
        wait_drop(p, w);
        vl__future_set_source(f, NULL, NULL);
        vl__future_fail(f, VL_ECANCELED, "pool freed");
    }
    vl__sentinel_free(p->sentinel);
    p->sentinel = NULL;
    while (p->nslots > 0)
        slot_close(p, p->slots[p->nslots - 1]);
    targets_free(p);
    moving_end(p);
    memset(p->url, 0, strlen(p->url));
    /* While the loop is being freed, callbacks may still pass p to
     * vl_redis_pool_free (a no-op now): keep the memory until they ran. */
    vl__handle_bury(p->loop, &p->handle, pool_release);
}
