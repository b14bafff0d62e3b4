/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/mysql_cluster.c - a primary and its replicas, or a Galera cluster,
 * behind one handle: routing, health checks, circuit breakers, failover and
 * read-your-writes. See volley/mysql_cluster.h for the contract.
 *
 * It is built on the pools' public API: each host has a vl_mysql_pool, and
 * every request of the cluster (creq) is one pool request at a time (a
 * GTID wait, then the statement). A host's health check runs on a
 * connection of its own (a pooled-style connection, which does not hold
 * the loop while it connects unless the cluster has somebody waiting), so
 * that a dead host's pool backoff never delays the check, and the check
 * never queues behind the users' statements.
 *
 * Lifetimes: the cluster may be freed while pool requests and checks are
 * still owed their callbacks. Those callbacks hold only their own context
 * (a creq, a check), which the free detaches (its cluster or host pointer
 * set to NULL); each context is freed by its own callback, so the cluster's
 * memory can go at once.
 */
#include "mysql_internal.h"
#include "url.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { BR_CLOSED, BR_OPEN, BR_HALF_OPEN };
enum { K_QUERY, K_EXEC, K_BEGIN, K_COMMIT };
enum { PH_NONE, PH_WAITING, PH_GTID, PH_RUN };

#define MAX_DOMAINS 16
#define GTID_WAIT_SQL "SELECT MASTER_GTID_WAIT(?, ?)"
#define ER_READ_ONLY 1290 /* ER_OPTION_PREVENTS_STATEMENT: --read-only */

typedef struct host host;
typedef struct creq creq;

/* A check in flight; `h` is NULL once the cluster let go of it. */
typedef struct check {
    host *h;
} check;

struct host {
    vl_mysql_cluster *cl;
    size_t idx;
    char *url;          /* holds the password: wiped when freed */
    char *display;
    vl_mysql_pool *pool;
    int candidate;      /* may become the primary */
    /* What the checks said. */
    int seen;           /* a check completed, either way */
    int up;             /* the last check succeeded */
    int read_only;      /* -1 unknown */
    int is_replica;     /* SHOW SLAVE STATUS had a row */
    int sql_running;
    int io_running;
    int64_t lag_ms;     /* -1 unknown */
    int synced;         /* Galera: ready, Synced, in the primary component */
    /* The circuit breaker. */
    int breaker;
    unsigned failures;
    /* Checking. */
    vl_mysql *cc;
    check *chk;
    vl__timer timer;
    int timer_unref;
    size_t outstanding;
    vl_mysql_host_stats st; /* counters only */
    char *last_error;
};

struct creq {
    creq *prev, *next;      /* the cluster's waiting or active list */
    vl_mysql_cluster *cl;   /* NULL once detached by the free */
    vl_future *f;           /* the caller's; NULL once completed or abandoned */
    int kind;
    int phase;
    int read;
    int evicted;            /* its inner request was taken back from its host */
    int deadline_passed;
    int fresh;              /* must see the cluster's writes */
    unsigned flags;
    char *sql;
    vl_mysql_param *params;
    size_t n;
    char *pdata;
    vl_mysql_tx *tx;        /* K_COMMIT until started */
    char *gtid;             /* positions a fresh read waits for */
    uint64_t tried;         /* hosts that failed it, one bit each */
    host *h;
    vl_future *inner;
    vl__timer timer;        /* while waiting */
    uint64_t deadline_ms;   /* when waiting must end; 0 before the first wait */
};

/* A vl_mysql_cluster_ready or _refresh future. */
typedef struct waiter {
    struct waiter *prev, *next;
    vl_mysql_cluster *cl;
    vl_future *f;
    int refresh;
} waiter;

typedef struct gtid_pos {
    unsigned long domain, server;
    unsigned long long seq;
} gtid_pos;

struct vl_mysql_cluster {
    vl_loop *loop;
    vl__handle handle;
    int freed;
    vl_mysql_cluster_options o;
    int fail_status;        /* a bad URL or option: every request fails */
    char *fail_msg;
    host *hosts;
    size_t nhosts;
    host *primary;
    int known;              /* every host was checked once */
    size_t checks_in_flight;
    creq *wait_head, *wait_tail;
    size_t nwaiting;
    creq *active;
    waiter *waiters;
    int holding;
    gtid_pos gtids[MAX_DOMAINS];
    size_t ngtids;
    char gtid_text[MAX_DOMAINS * 64];
    unsigned rr;            /* tie-break between equally loaded replicas */
};

static void check_start(host *h, int probe);
static void recompute(vl_mysql_cluster *cl);
static void req_route(creq *r);
static void holds_update(vl_mysql_cluster *cl);

/* ---- options ---- */

static const size_t opts_ends[] = {
    VL__END(vl_mysql_cluster_options, struct_size),
    VL__END(vl_mysql_cluster_options, pool),
    VL__END(vl_mysql_cluster_options, check_interval_ms),
    VL__END(vl_mysql_cluster_options, check_timeout_ms),
    VL__END(vl_mysql_cluster_options, max_lag_ms),
    VL__END(vl_mysql_cluster_options, breaker_open_ms),
    VL__END(vl_mysql_cluster_options, breaker_failures),
    VL__END(vl_mysql_cluster_options, read_fallback),
    VL__END(vl_mysql_cluster_options, read_your_writes),
    VL__END(vl_mysql_cluster_options, galera),
    VL__END(vl_mysql_cluster_options, gtid_wait_ms),
    VL__END(vl_mysql_cluster_options, primaries),
    VL__END(vl_mysql_cluster_options, primary_wait_ms),
};
/* No padding at the end: a smaller struct_size must end on a field. */
_Static_assert(sizeof(vl_mysql_cluster_options) ==
                   VL__END(vl_mysql_cluster_options, primary_wait_ms),
               "vl_mysql_cluster_options ends with padding");
static const vl__opts_desc opts_desc = {"vl_mysql_cluster_options",
                                        sizeof(vl_mysql_cluster_options), opts_ends,
                                        sizeof(opts_ends) / sizeof(opts_ends[0])};

static void opts_defaults(vl_mysql_cluster_options *o)
{
    memset(o, 0, sizeof(*o));
    o->struct_size = sizeof(*o);
    o->check_interval_ms = 1000;
    o->check_timeout_ms = 2000;
    o->max_lag_ms = 5000;
    o->breaker_open_ms = 2000;
    o->breaker_failures = 3;
    o->read_fallback = 1;
    o->gtid_wait_ms = 1000;
    o->primaries = 1;
}

void vl_mysql_cluster_options_init_sized(vl_mysql_cluster_options *o, size_t struct_size)
{
    vl_mysql_cluster_options d;

    opts_defaults(&d);
    vl__opts_init(o, struct_size, &d, &opts_desc);
}

static const size_t stats_ends[] = {
    VL__END(vl_mysql_host_stats, struct_size),   VL__END(vl_mysql_host_stats, display),
    VL__END(vl_mysql_host_stats, state),         VL__END(vl_mysql_host_stats, primary),
    VL__END(vl_mysql_host_stats, candidate),     VL__END(vl_mysql_host_stats, read_only),
    VL__END(vl_mysql_host_stats, lag_ms),        VL__END(vl_mysql_host_stats, outstanding),
    VL__END(vl_mysql_host_stats, failures),      VL__END(vl_mysql_host_stats, requests),
    VL__END(vl_mysql_host_stats, errors),        VL__END(vl_mysql_host_stats, checks),
    VL__END(vl_mysql_host_stats, probes),        VL__END(vl_mysql_host_stats, opens),
    VL__END(vl_mysql_host_stats, gtid_waits),    VL__END(vl_mysql_host_stats, gtid_timeouts),
    VL__END(vl_mysql_host_stats, last_error),
};
static const vl__opts_desc stats_desc = {"vl_mysql_host_stats", sizeof(vl_mysql_host_stats),
                                         stats_ends, sizeof(stats_ends) / sizeof(stats_ends[0])};

void vl_mysql_host_stats_init_sized(vl_mysql_host_stats *s, size_t struct_size)
{
    vl_mysql_host_stats zero;

    memset(&zero, 0, sizeof(zero));
    vl__opts_init(s, struct_size, &zero, &stats_desc);
}

/* ---- what a host is ---- */

static int routable(const host *h)
{
    return h->breaker == BR_CLOSED && h->up;
}

static int lagging(const host *h)
{
    const vl_mysql_cluster *cl = h->cl;

    if (!h->is_replica)
        return 0;
    return !h->sql_running || !h->io_running || h->lag_ms < 0 ||
           (cl->o.max_lag_ms != 0 && (uint64_t)h->lag_ms > cl->o.max_lag_ms);
}

static int host_state(const host *h)
{
    const vl_mysql_cluster *cl = h->cl;

    if (h->breaker == BR_OPEN)
        return VL_MYSQL_HOST_OPEN;
    if (h->breaker == BR_HALF_OPEN)
        return VL_MYSQL_HOST_HALF_OPEN;
    if (!h->up)
        return h->seen ? VL_MYSQL_HOST_DOWN : VL_MYSQL_HOST_UNKNOWN;
    if (cl->o.galera)
        return h->synced ? VL_MYSQL_HOST_HEALTHY : VL_MYSQL_HOST_DRAINED;
    if (h == cl->primary)
        return VL_MYSQL_HOST_HEALTHY;
    if (lagging(h))
        return VL_MYSQL_HOST_LAGGING;
    if (h->candidate && !h->is_replica && h->read_only == 1)
        return VL_MYSQL_HOST_READ_ONLY;
    return VL_MYSQL_HOST_HEALTHY;
}

static const char *state_name(int s)
{
    static const char *const names[] = {"unknown", "healthy", "lagging",   "down",
                                        "open",    "half-open", "read-only", "drained"};

    return s >= 0 && (size_t)s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

/* Why no host fits: every host's state and last error, for messages. */
static void describe_hosts(const vl_mysql_cluster *cl, char *buf, size_t n)
{
    size_t i, used = 0;

    buf[0] = '\0';
    for (i = 0; i < cl->nhosts && used + 1 < n; i++) {
        const host *h = &cl->hosts[i];
        int s = host_state(h);
        int w = snprintf(buf + used, n - used, "%s%s: %s", i ? "; " : "", h->display,
                         state_name(s));
        if (w < 0)
            break;
        used += (size_t)w < n - used ? (size_t)w : n - used - 1;
        if (s == VL_MYSQL_HOST_READ_ONLY || (s == VL_MYSQL_HOST_HEALTHY && h->read_only == 1 &&
                                             h->candidate && cl->primary == NULL)) {
            w = snprintf(buf + used, n - used, " (read_only)");
        } else if (s != VL_MYSQL_HOST_HEALTHY && h->last_error != NULL && h->last_error[0]) {
            w = snprintf(buf + used, n - used, " (%s)", h->last_error);
        } else
            w = 0;
        if (w < 0)
            break;
        used += (size_t)w < n - used ? (size_t)w : n - used - 1;
    }
}

static void set_error(host *h, const char *msg)
{
    char *copy = vl__strdup(msg != NULL ? msg : "");

    if (copy != NULL) {
        vl__free(h->last_error);
        h->last_error = copy;
    }
}

/* ---- the host timer: never holds the loop ---- */

static void timer_set(host *h, uint64_t ms)
{
    if (h->timer_unref) {
        vl__loop_ref(h->cl->loop);
        h->timer_unref = 0;
    }
    vl__timer_start(&h->timer, ms);
    vl__loop_unref(h->cl->loop);
    h->timer_unref = 1;
}

static void timer_stop(host *h)
{
    if (h->timer_unref) {
        vl__loop_ref(h->cl->loop);
        h->timer_unref = 0;
    }
    vl__timer_stop(&h->timer);
}

static void host_tick(vl__timer *t, void *ud)
{
    host *h = ud;

    VL__UNUSED(t);
    if (h->timer_unref) {
        /* libev stopped the one-shot timer: undo the unref. */
        vl__loop_ref(h->cl->loop);
        h->timer_unref = 0;
    }
    if (h->breaker == BR_OPEN) {
        h->breaker = BR_HALF_OPEN;
        check_start(h, 1);
    } else {
        check_start(h, 0);
    }
}

/* ---- requests: lists ---- */

static void active_add(vl_mysql_cluster *cl, creq *r)
{
    r->prev = NULL;
    r->next = cl->active;
    if (cl->active != NULL)
        cl->active->prev = r;
    cl->active = r;
}

static void active_remove(vl_mysql_cluster *cl, creq *r)
{
    if (r->prev != NULL)
        r->prev->next = r->next;
    else if (cl->active == r)
        cl->active = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

static void wait_remove(vl_mysql_cluster *cl, creq *r)
{
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        cl->wait_head = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    else
        cl->wait_tail = r->prev;
    r->prev = r->next = NULL;
    r->phase = PH_NONE;
    vl__timer_stop(&r->timer);
    cl->nwaiting--;
    holds_update(cl);
}

static void req_free(creq *r)
{
    vl__timer_stop(&r->timer);
    vl__free(r->sql);
    vl__free(r->params);
    vl__free(r->pdata);
    vl__free(r->gtid);
    if (r->tx != NULL)
        vl_mysql_tx_free(r->tx);
    vl__free(r);
}

static void tx_value_free(void *v)
{
    vl_mysql_tx_free(v);
}

static void result_value_free(void *v)
{
    vl_mysql_result_free(v);
}

/* Completes the caller's future and frees the request. */
static void req_finish(creq *r, int status, void *value, vl_free_fn free_fn, const char *msg)
{
    vl_future *f = r->f;

    r->f = NULL;
    if (f != NULL) {
        vl__future_set_source(f, NULL, NULL);
        vl__future_complete(f, status, value, value != NULL ? VL__VAL_MYSQL : VL__VAL_NONE,
                            free_fn, msg);
    } else if (value != NULL && free_fn != NULL) {
        free_fn(value);
    }
    req_free(r);
}

static void req_fail(creq *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void req_fail(creq *r, int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    req_finish(r, status, NULL, NULL, msg);
}

/* ---- read-your-writes positions ---- */

static void gtid_text_build(vl_mysql_cluster *cl)
{
    size_t i, used = 0;

    cl->gtid_text[0] = '\0';
    for (i = 0; i < cl->ngtids; i++) {
        int w = snprintf(cl->gtid_text + used, sizeof(cl->gtid_text) - used, "%s%lu-%lu-%llu",
                         i ? "," : "", cl->gtids[i].domain, cl->gtids[i].server,
                         cl->gtids[i].seq);
        if (w < 0 || (size_t)w >= sizeof(cl->gtid_text) - used)
            break;
        used += (size_t)w;
    }
}

/* Remembers "D-S-N[,D-S-N...]": the highest sequence number per domain
 * (sequence numbers grow within a domain whichever server wrote them). */
static void gtid_note(vl_mysql_cluster *cl, const char *g)
{
    int changed = 0;

    while (g != NULL && *g != '\0') {
        char *end;
        unsigned long d, s;
        unsigned long long n;
        size_t i;

        d = strtoul(g, &end, 10);
        if (*end != '-')
            return;
        s = strtoul(end + 1, &end, 10);
        if (*end != '-')
            return;
        n = strtoull(end + 1, &end, 10);
        if (*end != '\0' && *end != ',')
            return;
        for (i = 0; i < cl->ngtids && cl->gtids[i].domain != d; i++)
            ;
        if (i == cl->ngtids && i < MAX_DOMAINS) {
            cl->gtids[i].domain = d;
            cl->gtids[i].seq = 0;
            cl->ngtids++;
        }
        if (i < cl->ngtids && n >= cl->gtids[i].seq) {
            cl->gtids[i].server = s;
            cl->gtids[i].seq = n;
            changed = 1;
        }
        g = *end == ',' ? end + 1 : NULL;
    }
    if (changed)
        gtid_text_build(cl);
}

/* ---- routing ---- */

static uint64_t bit(const host *h)
{
    return (uint64_t)1 << h->idx;
}

/* 1 when the read would run on `h` only after a GTID wait. */
static int needs_wait(const creq *r, const host *h)
{
    return r->gtid != NULL && h != h->cl->primary && !h->cl->o.galera;
}

/* The healthy replica (Galera: node) with the fewest outstanding requests
 * that has not failed this read yet, or NULL. */
static host *pick_replica(vl_mysql_cluster *cl, const creq *r)
{
    host *best = NULL;
    size_t i, start = cl->nhosts ? cl->rr % cl->nhosts : 0;
    int pass;

    for (pass = 0; pass < 2 && best == NULL; pass++) {
        /* The second pass: with no primary reachable either, a replica cut
         * off from it (IO thread down, SQL thread running) is the freshest
         * data there is. */
        if (pass == 1 && (cl->o.galera || (cl->primary != NULL && routable(cl->primary))))
            break;
        for (i = 0; i < cl->nhosts; i++) {
            host *h = &cl->hosts[(start + i) % cl->nhosts];
            int ok;
            if ((r->tried & bit(h)) || !routable(h))
                continue;
            if (cl->o.galera)
                ok = h->synced;
            else if (h == cl->primary)
                ok = 0;
            else if (pass == 0)
                ok = host_state(h) == VL_MYSQL_HOST_HEALTHY;
            else
                ok = h->is_replica && h->sql_running && !h->io_running;
            if (ok && (best == NULL || h->outstanding < best->outstanding))
                best = h;
        }
    }
    if (best != NULL)
        cl->rr++; /* the next tie goes to the next host */
    return best;
}

/* A host for a read, or NULL (see volley/mysql_cluster.h). */
static host *pick_read(vl_mysql_cluster *cl, const creq *r)
{
    host *h;

    /* Galera: the other nodes may still be applying what the writer
     * certified, so a fresh read goes to the writer itself. */
    if (cl->o.galera && r->fresh && cl->primary != NULL && routable(cl->primary) &&
        !(r->tried & bit(cl->primary)))
        return cl->primary;
    h = pick_replica(cl, r);
    if (h != NULL)
        return h;
    if (cl->o.galera || cl->primary == NULL || (r->tried & bit(cl->primary)))
        return NULL;
    /* The primary: always fresh. A fresh read that every replica failed
     * ends there whatever read_fallback says. */
    if (r->gtid != NULL && r->tried != 0)
        return cl->primary;
    if (!cl->o.read_fallback || (r->flags & VL_MYSQL_READ_NO_PRIMARY))
        return NULL;
    return cl->primary;
}

static void req_done(vl_future *inner, void *ud);

static void req_start(creq *r, host *h, int phase)
{
    vl_mysql_cluster *cl = r->cl;
    vl_future *inner = NULL;

    r->h = h;
    r->phase = phase;
    if (phase == PH_GTID) {
        vl_mysql_param ps[2];
        ps[0] = vl_mysql_p_str(r->gtid);
        ps[1] = vl_mysql_p_double((double)cl->o.gtid_wait_ms / 1000.0);
        inner = vl_mysql_pool_execute(h->pool, GTID_WAIT_SQL, ps, 2);
        h->st.gtid_waits++;
    } else {
        switch (r->kind) {
        case K_QUERY:
            inner = vl_mysql_pool_query(h->pool, r->sql);
            break;
        case K_EXEC:
            inner = vl_mysql_pool_execute(h->pool, r->sql, r->params, r->n);
            break;
        case K_BEGIN:
            inner = vl_mysql_pool_begin(h->pool);
            break;
        default:
            inner = vl_mysql_tx_commit(r->tx);
            if (inner != NULL)
                r->tx = NULL; /* consumed; otherwise req_free rolls it back */
            break;
        }
    }
    if (inner == NULL) {
        req_fail(r, VL_ENOMEM, "out of memory");
        return;
    }
    r->inner = inner;
    if (h != NULL) {
        h->outstanding++;
        h->st.requests++;
    }
    active_add(cl, r);
    vl_future_then(inner, req_done, r);
}

static void req_wait(creq *r)
{
    vl_mysql_cluster *cl = r->cl;
    uint64_t now = vl_loop_now_ms(cl->loop);

    if (r->deadline_ms == 0) {
        /* Before every host was checked once: until that round ends, which
         * the checks' own bounds make at most two check timeouts; then up
         * to primary_wait_ms for a primary. The deadline is set once, so
         * that the checks' rounds never extend it. */
        uint64_t ms = cl->o.primary_wait_ms;
        if (!cl->known)
            ms += 2 * (cl->o.check_timeout_ms ? cl->o.check_timeout_ms : 5000) + 100;
        r->deadline_ms = now + ms;
    }
    r->phase = PH_WAITING;
    r->prev = cl->wait_tail;
    r->next = NULL;
    if (cl->wait_tail != NULL)
        cl->wait_tail->next = r;
    else
        cl->wait_head = r;
    cl->wait_tail = r;
    cl->nwaiting++;
    vl__timer_start(&r->timer, r->deadline_ms > now ? r->deadline_ms - now : 0);
    holds_update(cl);
}

static void req_wait_expired(vl__timer *t, void *ud)
{
    creq *r = ud;

    VL__UNUSED(t);
    wait_remove(r->cl, r);
    r->deadline_passed = 1;
    req_route(r);
}

/* Sends the request where it belongs now, makes it wait, or fails it. */
static void req_route(creq *r)
{
    vl_mysql_cluster *cl = r->cl;
    char why[768];
    host *h;

    if (r->kind == K_COMMIT) {
        req_start(r, NULL, PH_RUN);
        return;
    }
    if (!cl->known && !r->deadline_passed) {
        req_wait(r);
        return;
    }
    if (r->read) {
        h = pick_read(cl, r);
        if (h == NULL) {
            describe_hosts(cl, why, sizeof(why));
            req_fail(r, VL_ECONN, "cluster: no healthy %s for a read (%s)",
                     cl->o.galera ? "node" : "replica", why);
            return;
        }
        req_start(r, h, needs_wait(r, h) ? PH_GTID : PH_RUN);
        return;
    }
    h = cl->primary;
    if (h == NULL) {
        if (cl->o.primary_wait_ms != 0 && !r->deadline_passed) {
            req_wait(r);
            return;
        }
        describe_hosts(cl, why, sizeof(why));
        if (cl->o.primary_wait_ms != 0)
            req_fail(r, VL_ETIMEDOUT, "cluster: no writable %s after %" PRIu64 " ms (%s)",
                     cl->o.galera ? "node" : "primary", cl->o.primary_wait_ms, why);
        else
            req_fail(r, VL_ECONN, "cluster: no writable %s (%s)",
                     cl->o.galera ? "node" : "primary", why);
        return;
    }
    req_start(r, h, PH_RUN);
}

static void dispatch_waiters(vl_mysql_cluster *cl)
{
    creq *list = cl->wait_head, *r;

    /* Taken off the list first: routing may make a request wait again. */
    cl->wait_head = cl->wait_tail = NULL;
    while ((r = list) != NULL) {
        list = r->next;
        r->prev = r->next = NULL;
        cl->nwaiting--;
        vl__timer_stop(&r->timer);
        r->phase = PH_NONE;
        req_route(r); /* may wait again, up to its first deadline */
    }
    holds_update(cl);
}

/* ---- breaker and failure accounting ---- */

/* Takes back the requests a host holds: cancelled there, and routed
 * again (reads) or failed (writes) by req_done. */
static void evict(host *h)
{
    creq *r;

    for (r = h->cl->active; r != NULL; r = r->next)
        if (r->h == h && r->inner != NULL && !r->evicted && vl_future_cancel(r->inner) == 1)
            r->evicted = 1;
}

static void breaker_open(host *h)
{
    vl_mysql_cluster *cl = h->cl;

    h->breaker = BR_OPEN;
    h->up = 0;
    h->st.opens++;
    if (h->chk == NULL && h->cc != NULL) {
        vl_mysql_free(h->cc);
        h->cc = NULL;
    }
    evict(h);
    timer_set(h, cl->o.breaker_open_ms);
}

/* A transport failure on `h` (a check's or a request's). */
static void host_failed(host *h, const char *msg, int from_check)
{
    vl_mysql_cluster *cl = h->cl;

    h->failures++;
    h->st.errors++;
    set_error(h, msg);
    if (h->breaker == BR_CLOSED && h->failures >= cl->o.breaker_failures) {
        breaker_open(h);
        return;
    }
    if (!from_check && h->breaker == BR_CLOSED)
        check_start(h, 0); /* find out now, not at the next interval */
}

/* ---- checks ---- */

static const char *cell(const vl_mysql_result *r, size_t row, const char *col)
{
    long i = vl_mysql_result_column_index(r, col);

    return i < 0 ? NULL : vl_mysql_result_value(r, row, (size_t)i, NULL);
}

static void parse_replica(host *h, const vl_mysql_result *r)
{
    size_t i, rows = vl_mysql_result_rows(r);

    h->is_replica = rows > 0;
    h->sql_running = h->io_running = 1;
    h->lag_ms = 0;
    /* Several rows with multi-source replication: the worst one counts. */
    for (i = 0; i < rows; i++) {
        const char *sql = cell(r, i, "Slave_SQL_Running");
        const char *io = cell(r, i, "Slave_IO_Running");
        const char *sbm = cell(r, i, "Seconds_Behind_Master");
        char *end;
        long long s;
        if (sql == NULL || strcmp(sql, "Yes") != 0)
            h->sql_running = 0;
        if (io == NULL || strcmp(io, "Yes") != 0)
            h->io_running = 0;
        if (sbm == NULL) {
            h->lag_ms = -1;
            continue;
        }
        s = strtoll(sbm, &end, 10);
        if (*end != '\0' || s < 0)
            h->lag_ms = -1;
        else if (h->lag_ms >= 0 && s * 1000 > h->lag_ms)
            h->lag_ms = s * 1000;
    }
}

static void parse_galera(host *h, const vl_mysql_result *r)
{
    size_t i, rows = vl_mysql_result_rows(r);
    const char *ready = NULL, *state = NULL, *status = NULL;
    char why[160];

    for (i = 0; i < rows; i++) {
        const char *k = vl_mysql_result_value(r, i, 0, NULL);
        const char *v = vl_mysql_result_value(r, i, 1, NULL);
        if (k == NULL || v == NULL)
            continue;
        if (strcmp(k, "wsrep_ready") == 0)
            ready = v;
        else if (strcmp(k, "wsrep_local_state") == 0)
            state = v;
        else if (strcmp(k, "wsrep_cluster_status") == 0)
            status = v;
    }
    h->synced = ready != NULL && strcmp(ready, "ON") == 0 && state != NULL &&
                strcmp(state, "4") == 0 && status != NULL && strcmp(status, "Primary") == 0;
    h->is_replica = 0;
    h->lag_ms = 0;
    if (!h->synced) {
        snprintf(why, sizeof(why), "wsrep_ready %s, wsrep_local_state %s, wsrep_cluster_status %s",
                 ready ? ready : "?", state ? state : "?", status ? status : "?");
        set_error(h, why);
    }
}

static void check_done(vl_future *all, void *ud)
{
    check *chk = ud;
    host *h = chk->h;
    vl_mysql_cluster *cl;
    int status = vl_future_status(all);

    vl__free(chk);
    if (h == NULL)
        return; /* the cluster was freed */
    cl = h->cl;
    h->chk = NULL;
    cl->checks_in_flight--;
    h->seen = 1;
    if (status == VL_OK || status == VL_ESERVER) {
        /* The server answered. A statement it refused (SHOW SLAVE STATUS
         * without the privilege) leaves that part unknown: no replica
         * status, or read_only unknown. */
        vl_future *c0 = vl_future_child(all, 0), *c1 = vl_future_child(all, 1);
        const vl_mysql_result *r0 = vl_future_mysql_result(c0);
        const vl_mysql_result *r1 = vl_future_mysql_result(c1);
        int64_t ro = -1;
        if (vl_future_status(c1) != VL_OK || vl_mysql_result_int64(r1, 0, 0, &ro) != VL_OK)
            ro = -1;
        h->read_only = (int)ro;
        if (vl_future_status(c0) != VL_OK) {
            set_error(h, vl_future_error(c0));
            h->is_replica = 0;
            h->lag_ms = 0;
            h->synced = 0;
        } else if (cl->o.galera) {
            parse_galera(h, r0);
        } else {
            parse_replica(h, r0);
        }
        if (h->breaker != BR_OPEN) {
            /* A check that began before the breaker opened proves
             * nothing about the probe to come. */
            h->breaker = BR_CLOSED;
            h->failures = 0;
            h->up = 1;
        }
    } else {
        int lost = status == VL_ECONN || status == VL_ECLOSED;
        h->up = 0;
        if (h->cc != NULL) {
            vl_mysql_free(h->cc);
            h->cc = NULL;
        }
        if (h->breaker == BR_HALF_OPEN) {
            set_error(h, vl_future_error(all));
            h->failures++;
            h->st.errors++;
            breaker_open(h);
        } else if (h->breaker == BR_CLOSED) {
            host_failed(h, vl_future_error(all), 1);
            if (lost && h->breaker == BR_CLOSED)
                evict(h);
        }
    }
    if (h->breaker != BR_OPEN)
        timer_set(h, cl->o.check_interval_ms);
    recompute(cl);
}

static void check_start(host *h, int probe)
{
    vl_mysql_cluster *cl = h->cl;
    vl_future *fs[2], *all;
    check *chk;

    if (h->chk != NULL || cl->freed)
        return;
    timer_stop(h);
    if (h->cc != NULL && (!vl_mysql_is_open(h->cc) || !vl__mysql_probe_idle(h->cc, 1))) {
        /* Hung up since the last check (a restart): a new connection, so
         * that the restart does not count as a failure. */
        vl_mysql_free(h->cc);
        h->cc = NULL;
    }
    if (h->cc == NULL) {
        vl_mysql_options o;
        vl_mysql_options_init(&o);
        o.connect_timeout_ms = cl->o.check_timeout_ms;
        o.read_timeout_ms = cl->o.check_timeout_ms;
        h->cc = vl__mysql_new_pooled(cl->loop, h->url, &o);
        if (h->cc != NULL)
            vl__mysql_hold(h->cc, cl->holding);
    }
    chk = vl__calloc(1, sizeof(*chk));
    fs[0] = h->cc != NULL ? vl_mysql_query(h->cc, cl->o.galera ? "SHOW STATUS LIKE 'wsrep%'"
                                                                : "SHOW SLAVE STATUS")
                          : NULL;
    fs[1] = h->cc != NULL ? vl_mysql_query(h->cc, "SELECT @@read_only") : NULL;
    if (chk == NULL || fs[0] == NULL || fs[1] == NULL) {
        /* Out of memory: try again at the next interval. */
        vl__free(chk);
        vl_future_free(fs[0]);
        vl_future_free(fs[1]);
        if (h->breaker == BR_HALF_OPEN)
            h->breaker = BR_OPEN;
        timer_set(h, h->breaker == BR_OPEN ? cl->o.breaker_open_ms : cl->o.check_interval_ms);
        return;
    }
    all = vl_future_all(cl->loop, fs, 2);
    if (all == NULL) {
        vl__free(chk);
        timer_set(h, cl->o.check_interval_ms);
        return;
    }
    chk->h = h;
    h->chk = chk;
    cl->checks_in_flight++;
    h->st.checks++;
    if (probe)
        h->st.probes++;
    vl_future_then(all, check_done, chk);
}

/* ---- topology ---- */

static int writable(const host *h)
{
    return h->candidate && routable(h) && h->read_only == 0 && (!h->cl->o.galera || h->synced);
}

static void elect(vl_mysql_cluster *cl)
{
    size_t i;

    if (cl->primary != NULL && writable(cl->primary))
        return; /* sticky */
    cl->primary = NULL;
    for (i = 0; i < cl->nhosts && cl->primary == NULL; i++)
        if (writable(&cl->hosts[i]))
            cl->primary = &cl->hosts[i];
}

static void waiter_unlink(vl_mysql_cluster *cl, waiter *w)
{
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        cl->waiters = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    vl__free(w);
    holds_update(cl);
}

/* The answer of vl_mysql_cluster_ready once known. */
static int ready_ok(const vl_mysql_cluster *cl)
{
    size_t i;
    int candidates = 0;

    for (i = 0; i < cl->nhosts; i++)
        candidates |= cl->hosts[i].candidate;
    if (candidates)
        return cl->primary != NULL;
    for (i = 0; i < cl->nhosts; i++)
        if (routable(&cl->hosts[i]))
            return 1;
    return 0;
}

static void waiter_complete(vl_mysql_cluster *cl, waiter *w)
{
    vl_future *f = w->f;
    int refresh = w->refresh;
    char why[768];

    waiter_unlink(cl, w);
    vl__future_set_source(f, NULL, NULL);
    if (refresh || ready_ok(cl)) {
        vl__future_complete(f, VL_OK, NULL, VL__VAL_NONE, NULL, NULL);
    } else {
        describe_hosts(cl, why, sizeof(why));
        vl__future_fail(f, VL_ECONN, "cluster: no %s (%s)",
                        cl->o.galera ? "healthy node" : "writable primary", why);
    }
}

static void waiters_check(vl_mysql_cluster *cl)
{
    waiter *w, *nx;

    for (w = cl->waiters; w != NULL; w = nx) {
        nx = w->next;
        if ((w->refresh && cl->checks_in_flight == 0) || (!w->refresh && cl->known))
            waiter_complete(cl, w);
    }
}

static void recompute(vl_mysql_cluster *cl)
{
    size_t i;

    if (!cl->known) {
        cl->known = 1;
        for (i = 0; i < cl->nhosts; i++)
            if (!cl->hosts[i].seen && cl->hosts[i].breaker == BR_CLOSED)
                cl->known = 0;
    }
    /* No election before every host answered once: the first candidate
     * in order must win, not the first to answer (the choice sticks). */
    if (cl->known)
        elect(cl);
    dispatch_waiters(cl);
    waiters_check(cl);
}

/* Check connections keep vl_loop_run running while they connect only when
 * somebody waits for what the checks will say. */
static void holds_update(vl_mysql_cluster *cl)
{
    int want = !cl->freed && (cl->nwaiting > 0 || cl->waiters != NULL);
    size_t i;

    if (want == cl->holding)
        return;
    cl->holding = want;
    for (i = 0; i < cl->nhosts; i++)
        if (cl->hosts[i].cc != NULL)
            vl__mysql_hold(cl->hosts[i].cc, want);
}

/* ---- request completion ---- */

static void req_done(vl_future *inner, void *ud)
{
    creq *r = ud;
    vl_mysql_cluster *cl = r->cl;
    host *h = r->h;
    int status = vl_future_status(inner);
    void *value = vl_future_take(inner);
    int is_tx = r->kind == K_BEGIN && r->phase == PH_RUN && status == VL_OK && value != NULL;
    vl_free_fn vfree = is_tx ? tx_value_free : result_value_free;
    int evicted = r->evicted;

    r->inner = NULL;
    r->evicted = 0;
    if (cl == NULL) {
        /* Detached by the free: the caller already has VL_ECANCELED. */
        if (value != NULL)
            vfree(value);
        req_free(r);
        return;
    }
    active_remove(cl, r);
    if (h != NULL) {
        h->outstanding--;
        if (!evicted && (status == VL_ECONN || status == VL_ECLOSED))
            host_failed(h, vl_future_error(inner), 0);
        else if (status == VL_OK && h->breaker == BR_CLOSED && h->up)
            h->failures = 0;
        else if (status == VL_ESERVER && vl_future_mysql_errno(inner) == ER_READ_ONLY &&
                 h->breaker == BR_CLOSED)
            check_start(h, 0); /* the primary went read-only: look again */
    }
    if (r->f == NULL) { /* the caller gave up */
        if (value != NULL)
            vfree(value);
        req_free(r);
        return;
    }
    if (evicted) {
        if (value != NULL)
            vfree(value);
        if (r->read || r->phase == PH_GTID) {
            r->tried |= bit(h);
            req_route(r);
        } else {
            req_fail(r, VL_ECONN,
                     "cluster: %s went down with the request in flight or queued there; "
                     "its outcome is unknown",
                     h->display);
        }
        return;
    }
    if (r->phase == PH_GTID) {
        const char *v = status == VL_OK ? vl_mysql_result_value(value, 0, 0, NULL) : NULL;
        if (v != NULL && strcmp(v, "0") == 0) {
            if (value != NULL)
                vfree(value);
            req_start(r, h, PH_RUN);
            return;
        }
        /* -1 (timed out), NULL or an error: this replica is not there yet. */
        h->st.gtid_timeouts++;
        if (value != NULL)
            vfree(value);
        r->tried |= bit(h);
        req_route(r);
        return;
    }
    if (r->read && (status == VL_ECONN || status == VL_ECLOSED)) {
        r->tried |= bit(h);
        if (pick_read(cl, r) != NULL) {
            if (value != NULL)
                vfree(value);
            req_route(r);
            return;
        }
    }
    if (status == VL_OK && !r->read && r->kind != K_BEGIN)
        gtid_note(cl, vl_mysql_result_gtid(value));
    {
        char *msg = status != VL_OK ? vl__strdup(vl_future_error(inner)) : NULL;
        req_finish(r, status, value, vfree, msg);
        vl__free(msg);
    }
}

/* ---- the caller's futures ---- */

static void req_cancel(void *source, vl_future *f, int status)
{
    creq *r = source;

    VL__UNUSED(f);
    VL__UNUSED(status);
    r->f = NULL;
    if (r->phase == PH_WAITING) {
        wait_remove(r->cl, r);
        req_free(r);
        return;
    }
    if (r->inner != NULL)
        vl_future_cancel(r->inner); /* req_done frees it */
}

static void req_describe(void *source, char *buf, size_t n)
{
    creq *r = source;
    const char *what = r->kind == K_BEGIN ? "BEGIN" : r->kind == K_COMMIT ? "COMMIT"
                     : r->read                 ? "read"
                                               : "write";

    if (r->h != NULL && r->cl != NULL)
        snprintf(buf, n, "cluster %s on %s", what, r->h->display);
    else
        snprintf(buf, n, "cluster %s waiting for a host", what);
}

static const vl__source_ops req_ops = {.cancel = req_cancel, .describe = req_describe};

static vl_future *req_new(vl_mysql_cluster *cl, int kind, int read, const char *sql,
                          const vl_mysql_param *params, size_t n, unsigned flags,
                          vl_mysql_tx *tx)
{
    creq *r;
    size_t total = 0, bad = 0;
    const char *why = NULL;

    if (cl == NULL)
        return NULL;
    if (tx != NULL && (cl->freed || cl->fail_status != VL_OK || vl__loop_closing(cl->loop))) {
        /* Failed up front: the transaction is consumed all the same, as
         * by vl_mysql_tx_commit (rolled back). */
        vl_mysql_tx_free(tx);
        tx = NULL;
    }
    if (cl->freed)
        return vl__future_failed(cl->loop, VL_ECLOSED, "cluster freed");
    if (cl->fail_status != VL_OK)
        return vl__future_failed(cl->loop, cl->fail_status, "%s", cl->fail_msg);
    if (vl__loop_closing(cl->loop))
        return vl__future_failed(cl->loop, VL_ECLOSED, "loop is closing");
    if (kind == K_COMMIT && tx == NULL)
        return vl__future_failed(cl->loop, VL_EINVAL, "no transaction");
    if ((kind == K_QUERY || kind == K_EXEC) && sql == NULL)
        return vl__future_failed(cl->loop, VL_EINVAL, "no SQL");
    if (n > 0 && params == NULL)
        return vl__future_failed(cl->loop, VL_EINVAL, "no parameters");
    if (flags & ~(VL_MYSQL_READ_FRESH | VL_MYSQL_READ_STALE | VL_MYSQL_READ_NO_PRIMARY))
        return vl__future_failed(cl->loop, VL_EINVAL, "unknown read flags 0x%x", flags);
    if (vl__mysql_check_params(params, n, &total, &bad, &why) != VL_OK)
        return vl__future_failed(cl->loop, VL_EINVAL, "parameter %zu %s", bad, why);
    r = vl__calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->cl = cl;
    r->kind = kind;
    r->read = read;
    r->flags = flags;
    vl__timer_init(&r->timer, cl->loop, req_wait_expired, r);
    r->sql = sql != NULL ? vl__strdup(sql) : NULL;
    r->params = n > 0 ? vl__calloc(n, sizeof(*params)) : NULL;
    r->pdata = total > 0 ? vl__malloc(total) : NULL;
    r->fresh = read && ((flags & VL_MYSQL_READ_FRESH) ||
                        (cl->o.read_your_writes && !(flags & VL_MYSQL_READ_STALE)));
    if (r->fresh && cl->ngtids > 0 && !cl->o.galera)
        r->gtid = vl__strdup(cl->gtid_text);
    r->f = vl__future_make(cl->loop, &req_ops, r);
    if ((sql != NULL && r->sql == NULL) || (n > 0 && r->params == NULL) ||
        (total > 0 && r->pdata == NULL) ||
        (r->fresh && cl->ngtids > 0 && !cl->o.galera && r->gtid == NULL) || r->f == NULL) {
        if (r->f != NULL) {
            vl__future_set_source(r->f, NULL, NULL);
            vl_future_free(r->f);
        }
        req_free(r);
        return NULL;
    }
    /* The parameters are copied now (the caller's buffers may go away). */
    r->n = n;
    vl__mysql_params_copy(r->params, r->pdata, params, n);
    r->tx = tx;
    {
        vl_future *f = r->f;
        req_route(r);
        return f;
    }
}

vl_future *vl_mysql_cluster_query(vl_mysql_cluster *c, const char *sql)
{
    return req_new(c, K_QUERY, 0, sql, NULL, 0, 0, NULL);
}

vl_future *vl_mysql_cluster_execute(vl_mysql_cluster *c, const char *sql,
                                    const vl_mysql_param *params, size_t n)
{
    return req_new(c, K_EXEC, 0, sql, params, n, 0, NULL);
}

vl_future *vl_mysql_cluster_read(vl_mysql_cluster *c, const char *sql, unsigned flags)
{
    return req_new(c, K_QUERY, 1, sql, NULL, 0, flags, NULL);
}

vl_future *vl_mysql_cluster_read_execute(vl_mysql_cluster *c, const char *sql,
                                         const vl_mysql_param *params, size_t n, unsigned flags)
{
    return req_new(c, K_EXEC, 1, sql, params, n, flags, NULL);
}

vl_future *vl_mysql_cluster_begin(vl_mysql_cluster *c)
{
    return req_new(c, K_BEGIN, 0, NULL, NULL, 0, 0, NULL);
}

vl_future *vl_mysql_cluster_commit(vl_mysql_cluster *c, vl_mysql_tx *tx)
{
    return req_new(c, K_COMMIT, 0, NULL, NULL, 0, 0, tx);
}

static void waiter_cancel(void *source, vl_future *f, int status)
{
    waiter *w = source;

    VL__UNUSED(f);
    VL__UNUSED(status);
    waiter_unlink(w->cl, w);
}

static void waiter_describe(void *source, char *buf, size_t n)
{
    waiter *w = source;

    snprintf(buf, n, "cluster %s", w->refresh ? "refresh" : "readiness");
}

static const vl__source_ops waiter_ops = {.cancel = waiter_cancel, .describe = waiter_describe};

static vl_future *waiter_new(vl_mysql_cluster *cl, int refresh)
{
    waiter *w;
    vl_future *f;
    size_t i;

    if (cl == NULL)
        return NULL;
    if (cl->freed)
        return vl__future_failed(cl->loop, VL_ECLOSED, "cluster freed");
    if (cl->fail_status != VL_OK)
        return vl__future_failed(cl->loop, cl->fail_status, "%s", cl->fail_msg);
    w = vl__calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    f = vl__future_make(cl->loop, &waiter_ops, w);
    if (f == NULL) {
        vl__free(w);
        return NULL;
    }
    w->cl = cl;
    w->f = f;
    w->refresh = refresh;
    w->next = cl->waiters;
    if (cl->waiters != NULL)
        cl->waiters->prev = w;
    cl->waiters = w;
    holds_update(cl);
    if (refresh)
        for (i = 0; i < cl->nhosts; i++)
            if (cl->hosts[i].breaker == BR_CLOSED)
                check_start(&cl->hosts[i], 0);
    /* Known now: completed now, its callback still runs from the loop. */
    waiters_check(cl);
    return f;
}

vl_future *vl_mysql_cluster_ready(vl_mysql_cluster *c)
{
    return waiter_new(c, 0);
}

vl_future *vl_mysql_cluster_refresh(vl_mysql_cluster *c)
{
    return waiter_new(c, 1);
}

/* ---- stats ---- */

size_t vl_mysql_cluster_hosts(const vl_mysql_cluster *c)
{
    return c != NULL ? c->nhosts : 0;
}

int vl_mysql_cluster_host_stats(const vl_mysql_cluster *c, size_t i, vl_mysql_host_stats *out)
{
    vl_mysql_host_stats s;
    const host *h;
    char why[128];

    if (c == NULL || out == NULL || i >= c->nhosts ||
        vl__opts_check(out, &stats_desc, why, sizeof(why)) != VL_OK)
        return VL_EINVAL;
    h = &c->hosts[i];
    s = h->st;
    s.display = h->display;
    s.state = host_state(h);
    s.primary = h == c->primary;
    s.candidate = h->candidate;
    s.read_only = h->read_only;
    s.lag_ms = h->is_replica ? h->lag_ms : 0;
    s.outstanding = h->outstanding;
    s.failures = h->failures;
    s.last_error = h->last_error != NULL ? h->last_error : "";
    memcpy((char *)out + sizeof(size_t), (const char *)&s + sizeof(size_t),
           vl__opts_prefix(&stats_desc, out->struct_size) - sizeof(size_t));
    return VL_OK;
}

const char *vl_mysql_cluster_gtid(const vl_mysql_cluster *c)
{
    return c != NULL ? c->gtid_text : "";
}

/* ---- lifecycle ---- */

static void cluster_release(vl__handle *hd)
{
    vl_mysql_cluster *cl =
        (vl_mysql_cluster *)(void *)((char *)hd - offsetof(vl_mysql_cluster, handle));

    vl__free(cl->hosts);
    vl__free(cl);
}

static void cluster_handle_free(vl__handle *hd)
{
    vl_mysql_cluster_free(
        (vl_mysql_cluster *)(void *)((char *)hd - offsetof(vl_mysql_cluster, handle)));
}

void vl_mysql_cluster_free(vl_mysql_cluster *c)
{
    creq *r;
    size_t i;

    if (c == NULL || c->freed)
        return;
    c->freed = 1;
    vl__handle_remove(c->loop, &c->handle);
    for (i = 0; i < c->nhosts; i++) {
        host *h = &c->hosts[i];
        timer_stop(h);
        if (h->chk != NULL) {
            h->chk->h = NULL; /* its callback only frees it */
            h->chk = NULL;
        }
        if (h->cc != NULL) {
            vl__mysql_hold(h->cc, 0);
            vl_mysql_free(h->cc);
            h->cc = NULL;
        }
    }
    while (c->waiters != NULL) {
        vl_future *f = c->waiters->f;
        waiter_unlink(c, c->waiters);
        vl__future_set_source(f, NULL, NULL);
        vl__future_fail(f, VL_ECANCELED, "cluster freed");
    }
    while ((r = c->wait_head) != NULL) {
        wait_remove(c, r);
        req_fail(r, VL_ECANCELED, "cluster freed");
    }
    /* Running requests: the caller hears now; the pools' cancellations
     * reach req_done later, which then only frees the request. */
    while ((r = c->active) != NULL) {
        active_remove(c, r);
        r->cl = NULL;
        if (r->f != NULL) {
            vl_future *f = r->f;
            r->f = NULL;
            vl__future_set_source(f, NULL, NULL);
            vl__future_fail(f, VL_ECANCELED, "cluster freed");
        }
    }
    for (i = 0; i < c->nhosts; i++) {
        host *h = &c->hosts[i];
        vl_mysql_pool_free(h->pool);
        h->pool = NULL;
        if (h->url != NULL)
            memset(h->url, 0, strlen(h->url));
        vl__free(h->url);
        vl__free(h->display);
        vl__free(h->last_error);
        h->url = h->display = h->last_error = NULL;
    }
    vl__free(c->fail_msg);
    c->fail_msg = NULL;
    vl__handle_bury(c->loop, &c->handle, cluster_release);
}

/* A cluster parameter's value: VL_OK, or VL_EINVAL with the message. */
static int param_u64(const vl__url *u, const char *key, uint64_t *out, char *why, size_t n)
{
    const char *v = vl__url_param(u, key);
    char *end;
    unsigned long long x;

    if (v == NULL)
        return VL_OK;
    x = strtoull(v, &end, 10);
    if (*v == '\0' || *end != '\0' || *v == '-') {
        snprintf(why, n, "cluster URL: bad value for %s (a number expected)", key);
        return VL_EINVAL;
    }
    *out = x;
    return VL_OK;
}

static const char *const cluster_keys[] = {"primaries", "galera", "max_lag_ms",
                                           "read_your_writes"};

/* Reads the cluster's own parameters from the first host's URL. */
static int url_params(vl_mysql_cluster *cl, const char *url, char *why, size_t n)
{
    vl__url u;
    uint64_t v;
    int rc;

    rc = vl__url_parse(url, &u, why, n);
    if (rc != VL_OK)
        return rc;
    v = cl->o.primaries;
    if ((rc = param_u64(&u, "primaries", &v, why, n)) == VL_OK)
        cl->o.primaries = (size_t)v;
    v = (uint64_t)cl->o.galera;
    if (rc == VL_OK && (rc = param_u64(&u, "galera", &v, why, n)) == VL_OK)
        cl->o.galera = v != 0;
    v = cl->o.max_lag_ms;
    if (rc == VL_OK && (rc = param_u64(&u, "max_lag_ms", &v, why, n)) == VL_OK)
        cl->o.max_lag_ms = v;
    v = (uint64_t)cl->o.read_your_writes;
    if (rc == VL_OK && (rc = param_u64(&u, "read_your_writes", &v, why, n)) == VL_OK)
        cl->o.read_your_writes = v != 0;
    vl__url_clear(&u);
    return rc;
}

/* The start of both constructors: NULL when out of memory or loop is
 * NULL; otherwise the cluster, with *rc telling whether the options were
 * understood (VL_EINVAL with why). */
static vl_mysql_cluster *cluster_alloc(vl_loop *loop, const vl_mysql_cluster_options *opts,
                                       int *rc, char *why, size_t n)
{
    vl_mysql_cluster *cl = loop != NULL ? vl__calloc(1, sizeof(*cl)) : NULL;

    if (cl == NULL)
        return NULL;
    cl->loop = loop;
    opts_defaults(&cl->o);
    *rc = vl__opts_copy(&cl->o, opts, &opts_desc, why, n);
    if (cl->o.check_interval_ms == 0)
        cl->o.check_interval_ms = 1000;
    if (cl->o.breaker_failures == 0)
        cl->o.breaker_failures = 1;
    if (cl->o.primaries == 0)
        cl->o.primaries = 1;
    /* Registered before its pools, so that vl_loop_free frees the cluster
     * first (handles go in order), while its pools still stand. */
    vl__handle_add(loop, &cl->handle, cluster_handle_free);
    return cl;
}

/* Makes the hosts from their URLs (each already without the cluster's
 * parameters). Returns VL_OK, VL_ENOMEM, or VL_EINVAL with why. */
static int hosts_make(vl_mysql_cluster *cl, char **urls, size_t n, size_t ncand,
                      const vl_mysql_pool_options *popts, char *why, size_t whyn)
{
    size_t i;

    cl->hosts = vl__calloc(n, sizeof(*cl->hosts));
    if (cl->hosts == NULL)
        return VL_ENOMEM;
    for (i = 0; i < n; i++) {
        host *h = &cl->hosts[i];
        char *msg = NULL;
        vl__url u;
        int rc = vl__mysql_check_url(cl->loop, urls[i], NULL, &msg);
        if (rc != VL_OK) {
            if (msg != NULL)
                snprintf(why, whyn, "cluster host %zu: %s", i + 1, msg);
            vl__free(msg);
            return rc;
        }
        rc = vl__url_parse(urls[i], &u, why, whyn);
        if (rc != VL_OK)
            return rc;
        h->display = vl__strdup(u.display);
        vl__url_clear(&u);
        h->url = vl__strdup(urls[i]);
        if (h->display == NULL || h->url == NULL) {
            vl__free(h->display);
            vl__free(h->url);
            h->display = h->url = NULL;
            return VL_ENOMEM;
        }
        h->cl = cl;
        h->idx = i;
        h->candidate = i < ncand;
        h->read_only = -1;
        h->lag_ms = -1;
        vl__timer_init(&h->timer, cl->loop, host_tick, h);
        cl->nhosts = i + 1;
    }
    for (i = 0; i < n; i++) {
        cl->hosts[i].pool = vl_mysql_pool_new(cl->loop, cl->hosts[i].url, popts);
        if (cl->hosts[i].pool == NULL)
            return VL_ENOMEM;
    }
    return VL_OK;
}

/* The end of both constructors: a failure is either out of memory (NULL)
 * or the cluster's failed state. */
static vl_mysql_cluster *cluster_start(vl_mysql_cluster *cl, int rc, const char *why)
{
    size_t i;

    cl->o.pool = NULL; /* borrowed for the constructor only */
    if (rc == VL_ENOMEM) {
        vl_mysql_cluster_free(cl);
        return NULL;
    }
    if (rc != VL_OK) {
        /* No hosts to route to: every call fails with the reason. */
        for (i = 0; i < cl->nhosts; i++) {
            vl_mysql_pool_free(cl->hosts[i].pool);
            cl->hosts[i].pool = NULL;
        }
        cl->fail_status = rc;
        cl->fail_msg = vl__strdup(why);
        if (cl->fail_msg == NULL) {
            vl_mysql_cluster_free(cl);
            return NULL;
        }
        for (i = 0; i < cl->nhosts; i++) {
            host *h = &cl->hosts[i];
            if (h->url != NULL)
                memset(h->url, 0, strlen(h->url));
            vl__free(h->url);
            vl__free(h->display);
            h->url = h->display = NULL;
        }
        cl->nhosts = 0;
        return cl;
    }
    for (i = 0; i < cl->nhosts; i++)
        check_start(&cl->hosts[i], 0);
    return cl;
}

vl_mysql_cluster *vl_mysql_cluster_new(vl_loop *loop, const char *url,
                                       const vl_mysql_cluster_options *opts)
{
    vl_mysql_cluster *cl;
    char why[256] = "out of memory";
    char **urls = NULL;
    size_t n = 0, i;
    int rc;

    cl = cluster_alloc(loop, opts, &rc, why, sizeof(why));
    if (cl == NULL)
        return NULL;
    if (rc == VL_OK && url == NULL) {
        snprintf(why, sizeof(why), "cluster: no URL");
        rc = VL_EINVAL;
    }
    if (rc == VL_OK)
        rc = vl__url_split_hosts(url, VL_MYSQL_CLUSTER_MAX_HOSTS, &urls, &n, why, sizeof(why));
    if (rc == VL_OK)
        rc = url_params(cl, urls[0], why, sizeof(why));
    for (i = 0; rc == VL_OK && i < n; i++) {
        char *bare = vl__url_drop_params(urls[i], cluster_keys,
                                         sizeof(cluster_keys) / sizeof(cluster_keys[0]));
        if (bare == NULL) {
            rc = VL_ENOMEM;
            break;
        }
        memset(urls[i], 0, strlen(urls[i]));
        vl__free(urls[i]);
        urls[i] = bare;
    }
    if (rc == VL_OK)
        rc = hosts_make(cl, urls, n, cl->o.galera ? n : cl->o.primaries, cl->o.pool, why,
                        sizeof(why));
    vl__url_list_free(urls, n);
    return cluster_start(cl, rc, why);
}

vl_mysql_cluster *vl_mysql_cluster_new_hosts(vl_loop *loop, const char *const *primaries,
                                             size_t np, const char *const *replicas, size_t nr,
                                             const vl_mysql_cluster_options *opts)
{
    vl_mysql_cluster *cl;
    char why[256] = "out of memory";
    char **urls = NULL;
    size_t i;
    int rc;

    cl = cluster_alloc(loop, opts, &rc, why, sizeof(why));
    if (cl == NULL)
        return NULL;
    if (rc == VL_OK && (np + nr == 0 || np + nr > VL_MYSQL_CLUSTER_MAX_HOSTS ||
                        (np > 0 && primaries == NULL) || (nr > 0 && replicas == NULL))) {
        snprintf(why, sizeof(why), "cluster: %zu hosts given (1 to %d allowed)", np + nr,
                 VL_MYSQL_CLUSTER_MAX_HOSTS);
        rc = VL_EINVAL;
    }
    if (rc == VL_OK) {
        urls = vl__calloc(np + nr, sizeof(*urls));
        if (urls == NULL)
            rc = VL_ENOMEM;
    }
    for (i = 0; rc == VL_OK && i < np + nr; i++) {
        const char *u = i < np ? primaries[i] : replicas[i - np];
        if (u == NULL) {
            snprintf(why, sizeof(why), "cluster host %zu: no URL", i + 1);
            rc = VL_EINVAL;
            break;
        }
        urls[i] = vl__strdup(u);
        if (urls[i] == NULL)
            rc = VL_ENOMEM;
    }
    if (rc == VL_OK)
        rc = hosts_make(cl, urls, np + nr, np, cl->o.pool, why, sizeof(why));
    vl__url_list_free(urls, urls != NULL ? np + nr : 0);
    return cluster_start(cl, rc, why);
}
