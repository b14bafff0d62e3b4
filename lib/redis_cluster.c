/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/redis_cluster.c - Redis Cluster: the slot map, routing by key,
 * redirections and topology refreshes. See volley/redis_cluster.h for the
 * contract.
 *
 * It is built on the pools' public API: each node of the map has a
 * vl_redis_pool, and every command of the cluster (a creq) is one pool
 * command at a time; a MOVED, ASK, TRYAGAIN or CLUSTERDOWN reply sends it
 * again, and the caller's future (made here, with the creq as its source)
 * completes once, with the last node's reply moved into it.
 *
 * Two more connections per node, each made on demand:
 *  - `ctl`, a push connection (lib/redis_internal.h): the topology queries
 *    (CLUSTER SHARDS, CLUSTER SLOTS) and the round-trip PINGs of
 *    read_from=nearest go there, answered in order. A push connection
 *    holds the loop only when told to, so a background refresh never keeps
 *    vl_loop_run running; command timeouts do not apply to it, the
 *    refresh's own timers bound it.
 *  - `ask`, a plain connection for "ASKING" and the redirected command,
 *    which must follow each other on one connection: two commands issued
 *    in a row on one vl_redis are adjacent on the wire.
 *
 * Lifetimes: a node that left the map keeps its memory, pool and
 * connections until the commands routed to it completed (`outstanding`),
 * then goes at the next safe point (the cluster's defer). The cluster may
 * be freed while pool futures still owe their callbacks: each creq is then
 * detached (cl NULL) and freed by its own callback.
 */
#include "redis_cluster_internal.h"
#include "url.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_WATCHERS 8
#define CTL_MAX 8          /* queries in flight on one ctl connection */
#define PING_PERIOD_MS 1000 /* read_from=nearest: round trips measured so often */
#define REASON_MAX 640 /* "host:port: why", for messages */
#define HOST_MAX 256 /* a DNS name (253) or an IPv6 literal, with its NUL */
#define ADDR_MAX (HOST_MAX + 8) /* "[host]:port" */
#define MAP_NODES_MAX 1000 /* Redis Cluster's own suggested limit */

enum { Q_PING = 1, Q_SHARDS, Q_SLOTS };
enum { PH_NONE, PH_WAIT_MAP, PH_BACKOFF, PH_INNER };
enum { K_CMD, K_LEASE };
enum { W_READY, W_REFRESH };

typedef struct node node;
typedef struct creq creq;
typedef struct waiter waiter;

/* The cluster's lists (live requests, requests waiting for a map, ready
 * and refresh waiters) are rings through a head of their own: adding and
 * removing never look at the head. An element off every list points to
 * itself, so removing it again is harmless. */
typedef struct ring {
    struct ring *prev, *next;
} ring;

#define RING_OF(p, type, member) ((type *)(void *)((char *)(p) - offsetof(type, member)))

static void ring_init(ring *e)
{
    e->prev = e->next = e;
}

static int ring_empty(const ring *h)
{
    return h->next == h;
}

static void ring_push(ring *h, ring *e)
{
    e->prev = h->prev;
    e->next = h;
    h->prev->next = e;
    h->prev = e;
}

static void ring_del(ring *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
    ring_init(e);
}

/* A timer that never holds the loop (periodic refreshes, pings). */
typedef struct utimer {
    vl__timer t;
    vl_loop *loop;
    int unref;
} utimer;

struct node {
    vl_redis_cluster *cl;
    char addr[ADDR_MAX];     /* "host:port", "[::1]:port" */
    char host[HOST_MAX];
    int port;
    char id[41];
    char *url;               /* holds the password: wiped when freed */
    int role;                /* VL_REDIS_ROLE_* in the present map; 0: not in it */
    size_t shard;            /* its shard in the present map */
    vl_redis_pool *pool;
    int readonly_pool;       /* its pool was made with readonly=1 */
    vl_redis *ask;
    vl_redis *ctl;
    unsigned char q[CTL_MAX]; /* kinds of the queries in flight on ctl */
    uint64_t qt[CTL_MAX];     /* when each was sent */
    uint64_t qg[CTL_MAX];     /* each topology query's number (cl->ask_gen) */
    size_t qhead, qn;
    int asked;               /* the refresh asked this node (sent SHARDS/SLOTS) */
    size_t outstanding;      /* commands routed to it and not completed */
    int down;                /* its last command failed with VL_ECONN */
    double rtt_ms;
    uint64_t requests;
    int mark;                /* seen in the map being installed */
};

typedef struct shard {
    node *primary;
    node **replicas;
    size_t nrep;
    size_t nslots;
    unsigned first;
    unsigned rr;
} shard;

typedef struct cmap {
    shard *shards;
    size_t n;
    node **order;            /* primaries by first slot, each with its replicas */
    size_t norder;
    int order_stale;         /* map_order ran out of memory: order is older */
    int16_t slot[VL__CLUSTER_SLOTS]; /* shard index, -1: not served */
} cmap;

struct creq {
    ring link;               /* on the cluster's live requests */
    ring wlink;              /* on the requests waiting for a map */
    vl_redis_cluster *cl;    /* NULL once detached by the free */
    vl_future *f;            /* the caller's; NULL once completed or abandoned */
    vl_future *inner;
    node *n;                 /* where inner went */
    int kind;
    int phase;
    int readonly;
    int primary_only;
    int asking;              /* the next send goes through ASKING */
    unsigned slot;
    int argc;
    const char **argv;
    size_t *lens;
    size_t redirects, retries;
    uint64_t deadline;       /* 0: none */
    unsigned sends;          /* times sent to a node */
    vl__timer timer;
    node *target;            /* a redirection's node for the next send */
    char last[ADDR_MAX + 32]; /* the last redirection, for messages */
};

struct waiter {
    ring link;
    vl_redis_cluster *cl;
    vl_future *f;
    int kind;
};

/* The readiness probe: one vl_future_all over the primaries' pool
 * readiness, shared by every ready waiter. */
typedef struct probe {
    vl_redis_cluster *cl;    /* NULL once the cluster let go of it */
} probe;

typedef struct watcher {
    vl__cluster_map_fn fn;
    void *ud;
} watcher;

/* A map as parsed from an answer, before it is installed. */
typedef struct tnode {
    char host[HOST_MAX];
    int port;
    char id[41];
    int failed;              /* a primary the cluster marked as failed */
} tnode;

typedef struct tshard {
    tnode *nodes;            /* [0] the primary */
    size_t n, cap;
} tshard;

typedef struct tmap {
    tshard *sh;
    size_t n, cap;
    int16_t slot[VL__CLUSTER_SLOTS];
} tmap;

struct vl_redis_cluster {
    vl_loop *loop;
    vl__handle handle;
    int freed;
    int busy;                /* inside the watchers' calls */
    int release_pending;     /* freed during them */
    vl_redis_cluster_options o;
    int fail_status;
    char *fail_msg;
    int tls;
    char *url_pre;           /* "redis://user:pw@" (wiped when freed) */
    char *url_post;          /* "/path?query" without the cluster's parameters */
    char (*seeds)[ADDR_MAX];
    size_t nseeds;
    node **nodes;
    size_t nnodes, capnodes;
    cmap *map;
    ring active;             /* creq.link */
    ring waiting;            /* creq.wlink, in order */
    size_t nwaiting;
    ring waiters;            /* waiter.link */
    probe *probe;
    int holding;
    int ext_holds;           /* vl__cluster_hold: the subscriber waits for a map */
    /* Refresh. */
    int refreshing;
    int ending;              /* inside refresh_end */
    uint64_t ask_gen;        /* the number of the topology query awaited */
    char ref_why[REASON_MAX]; /* why the node being asked gave no map */
    char (*cands)[ADDR_MAX];
    size_t ncands, cand_idx;
    node *ref_node;
    uint64_t ref_deadline;
    uint64_t last_refresh;   /* when the last one ended; 0: never */
    int discovery_failed;    /* the last refresh failed and there is no map */
    uint64_t due;            /* when ref_timer fires; 0: not armed */
    utimer ref_timer;        /* periodic, or a refresh held back by the min interval */
    utimer step_timer;       /* the node being asked took too long */
    utimer ping_timer;
    vl__defer defer;         /* watchers' calls and nodes' teardown */
    int notify_due;
    watcher watchers[MAX_WATCHERS];
    size_t nwatchers;
    vl_redis_cluster_stats st;
    uint64_t gone_connects, gone_errors;
    char err[REASON_MAX + 128];
};

static void refresh_want(vl_redis_cluster *cl, int now);
static void refresh_next(vl_redis_cluster *cl);
static void req_route(creq *r);
static void dispatch_waiting(vl_redis_cluster *cl);
static void ready_check(vl_redis_cluster *cl);
static void holds_update(vl_redis_cluster *cl);
static void later(vl_redis_cluster *cl);
static void wait_remove(vl_redis_cluster *cl, creq *r);

/* ---- options ---- */

static const size_t opts_ends[] = {
    VL__END(vl_redis_cluster_options, struct_size),
    VL__END(vl_redis_cluster_options, read_from),
    VL__END(vl_redis_cluster_options, node_max_size),
    VL__END(vl_redis_cluster_options, connect_timeout_ms),
    VL__END(vl_redis_cluster_options, command_timeout_ms),
    VL__END(vl_redis_cluster_options, acquire_timeout_ms),
    VL__END(vl_redis_cluster_options, reconnect_min_ms),
    VL__END(vl_redis_cluster_options, reconnect_max_ms),
    VL__END(vl_redis_cluster_options, refresh_interval_ms),
    VL__END(vl_redis_cluster_options, refresh_min_interval_ms),
    VL__END(vl_redis_cluster_options, refresh_timeout_ms),
    VL__END(vl_redis_cluster_options, max_redirects),
    VL__END(vl_redis_cluster_options, max_retries),
    VL__END(vl_redis_cluster_options, retry_backoff_ms),
};
_Static_assert(sizeof(vl_redis_cluster_options) ==
                   VL__END(vl_redis_cluster_options, retry_backoff_ms),
               "vl_redis_cluster_options ends with padding");
static const vl__opts_desc opts_desc = {"vl_redis_cluster_options",
                                        sizeof(vl_redis_cluster_options), opts_ends,
                                        sizeof(opts_ends) / sizeof(opts_ends[0])};

static void opts_defaults(vl_redis_cluster_options *o)
{
    memset(o, 0, sizeof(*o));
    o->struct_size = sizeof(*o);
    o->read_from = VL_REDIS_READ_PRIMARY;
    o->node_max_size = 4;
    o->connect_timeout_ms = 5000;
    o->command_timeout_ms = 10000;
    o->acquire_timeout_ms = 5000;
    o->reconnect_min_ms = 100;
    o->reconnect_max_ms = 5000;
    o->refresh_interval_ms = 30000;
    o->refresh_min_interval_ms = 1000;
    o->refresh_timeout_ms = 2000;
    o->max_redirects = 5;
    o->max_retries = 3;
    o->retry_backoff_ms = 50;
}

void vl_redis_cluster_options_init_sized(vl_redis_cluster_options *o, size_t struct_size)
{
    vl_redis_cluster_options d;

    opts_defaults(&d);
    vl__opts_init(o, struct_size, &d, &opts_desc);
}

static const size_t info_ends[] = {
    VL__END(vl_redis_node_info, struct_size), VL__END(vl_redis_node_info, addr),
    VL__END(vl_redis_node_info, id),          VL__END(vl_redis_node_info, role),
    VL__END(vl_redis_node_info, primary),     VL__END(vl_redis_node_info, slots),
    VL__END(vl_redis_node_info, state),       VL__END(vl_redis_node_info, rtt_ms),
    VL__END(vl_redis_node_info, requests),
};
static const vl__opts_desc info_desc = {"vl_redis_node_info", sizeof(vl_redis_node_info),
                                        info_ends, sizeof(info_ends) / sizeof(info_ends[0])};

void vl_redis_node_info_init_sized(vl_redis_node_info *o, size_t struct_size)
{
    vl_redis_node_info d;

    memset(&d, 0, sizeof(d));
    d.struct_size = sizeof(d);
    vl__opts_init(o, struct_size, &d, &info_desc);
}

static const size_t stats_ends[] = {
    VL__END(vl_redis_cluster_stats, struct_size),
    VL__END(vl_redis_cluster_stats, commands),
    VL__END(vl_redis_cluster_stats, moved),
    VL__END(vl_redis_cluster_stats, ask),
    VL__END(vl_redis_cluster_stats, retries),
    VL__END(vl_redis_cluster_stats, refreshes),
    VL__END(vl_redis_cluster_stats, refresh_errors),
    VL__END(vl_redis_cluster_stats, connects),
    VL__END(vl_redis_cluster_stats, connect_errors),
    VL__END(vl_redis_cluster_stats, map_epoch),
};
static const vl__opts_desc stats_desc = {"vl_redis_cluster_stats",
                                         sizeof(vl_redis_cluster_stats), stats_ends,
                                         sizeof(stats_ends) / sizeof(stats_ends[0])};

void vl_redis_cluster_stats_init_sized(vl_redis_cluster_stats *o, size_t struct_size)
{
    vl_redis_cluster_stats d;

    memset(&d, 0, sizeof(d));
    d.struct_size = sizeof(d);
    vl__opts_init(o, struct_size, &d, &stats_desc);
}

/* ---- timers that do not hold the loop ---- */

static void ut_init(utimer *u, vl_loop *loop, vl__timer_cb cb, void *ud)
{
    vl__timer_init(&u->t, loop, cb, ud);
    u->loop = loop;
    u->unref = 0;
}

static void ut_stop(utimer *u)
{
    if (u->unref) { /* libev wants an unref'd watcher ref'd before it stops */
        vl__loop_ref(u->loop);
        u->unref = 0;
    }
    vl__timer_stop(&u->t);
}

static void ut_start(utimer *u, uint64_t ms)
{
    ut_stop(u);
    vl__timer_start(&u->t, ms);
    vl__loop_unref(u->loop);
    u->unref = 1;
}

/* The first thing every utimer callback does: libev stopped the one-shot
 * timer, so its unref is undone. */
static void ut_fired(utimer *u)
{
    if (u->unref) {
        vl__loop_ref(u->loop);
        u->unref = 0;
    }
}

/* ---- nodes ---- */

/* Makes room for one more element in arr (n used of *cap, each `size`
 * bytes), doubling it. Returns the array (perhaps moved), or NULL when
 * out of memory (arr unchanged and still the caller's). */
static void *grow(void *arr, size_t *cap, size_t n, size_t size)
{
    size_t ncap;
    void *np;

    if (n < *cap)
        return arr;
    ncap = *cap ? *cap * 2 : 4;
    np = vl__realloc(arr, ncap * size);
    if (np != NULL)
        *cap = ncap;
    return np;
}

static void set_error(vl_redis_cluster *cl, const char *msg)
{
    snprintf(cl->err, sizeof(cl->err), "%s", msg);
}

static void addr_make(char *buf, size_t n, const char *host, int port)
{
    if (strchr(host, ':') != NULL)
        snprintf(buf, n, "[%s]:%d", host, port);
    else
        snprintf(buf, n, "%s:%d", host, port);
}

static node *node_find(vl_redis_cluster *cl, const char *addr)
{
    size_t i;

    for (i = 0; i < cl->nnodes; i++)
        if (strcmp(cl->nodes[i]->addr, addr) == 0)
            return cl->nodes[i];
    return NULL;
}

static char *node_url(const vl_redis_cluster *cl, const char *addr, int readonly)
{
    const char *sep = strchr(cl->url_post, '?') != NULL ? "&" : "?";

    return vl__asprintf("%s%s%s%s", cl->url_pre, addr, cl->url_post,
                        readonly ? (sep[0] == '&' ? "&readonly=1" : "?readonly=1") : "");
}

/* The node of host:port, made (outside the map, without a pool) when it is
 * new. NULL when out of memory. */
static node *node_get(vl_redis_cluster *cl, const char *host, int port)
{
    char addr[ADDR_MAX];
    node *n, **nn;

    addr_make(addr, sizeof(addr), host, port);
    n = node_find(cl, addr);
    if (n != NULL)
        return n;
    nn = grow(cl->nodes, &cl->capnodes, cl->nnodes, sizeof(*cl->nodes));
    if (nn == NULL)
        return NULL;
    cl->nodes = nn;
    n = vl__calloc(1, sizeof(*n));
    if (n == NULL)
        return NULL;
    n->cl = cl;
    snprintf(n->addr, sizeof(n->addr), "%s", addr);
    snprintf(n->host, sizeof(n->host), "%s", host);
    n->port = port;
    n->url = node_url(cl, addr, 0);
    if (n->url == NULL) {
        vl__free(n);
        return NULL;
    }
    cl->nodes[cl->nnodes++] = n;
    return n;
}

/* The node of "host:port" (a redirection's address; an empty host means
 * the host of `from`, as Redis says when it does not know its own). */
static node *node_of_addr(vl_redis_cluster *cl, const char *addr, const node *from, int *bad)
{
    char host[HOST_MAX];
    const char *colon = strrchr(addr, ':');
    size_t hl;
    long port;
    char *end;

    *bad = 1;
    if (colon == NULL)
        return NULL;
    port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port <= 0 || port > 65535)
        return NULL;
    hl = (size_t)(colon - addr);
    if (hl > 0 && addr[0] == '[' && addr[hl - 1] == ']') {
        addr++;
        hl -= 2;
    }
    if (hl >= sizeof(host))
        return NULL;
    if (hl == 0 && from != NULL)
        snprintf(host, sizeof(host), "%s", from->host);
    else {
        memcpy(host, addr, hl);
        host[hl] = '\0';
    }
    if (host[0] == '\0')
        return NULL;
    *bad = 0;
    return node_get(cl, host, (int)port); /* NULL: out of memory */
}

static int node_pool(node *n, int readonly)
{
    vl_redis_cluster *cl = n->cl;
    vl_redis_pool_options po;
    char *url;

    if (n->pool != NULL)
        return VL_OK;
    vl_redis_pool_options_init(&po);
    po.max_size = cl->o.node_max_size;
    po.connect_timeout_ms = cl->o.connect_timeout_ms;
    po.command_timeout_ms = cl->o.command_timeout_ms;
    po.acquire_timeout_ms = cl->o.acquire_timeout_ms;
    po.reconnect_min_ms = cl->o.reconnect_min_ms;
    po.reconnect_max_ms = cl->o.reconnect_max_ms;
    url = readonly ? node_url(cl, n->addr, 1) : n->url;
    if (url == NULL)
        return VL_ENOMEM;
    n->pool = vl_redis_pool_new(cl->loop, url, &po);
    if (url != n->url) {
        memset(url, 0, strlen(url));
        vl__free(url);
    }
    if (n->pool == NULL)
        return VL_ENOMEM;
    n->readonly_pool = readonly;
    return VL_OK;
}

static void node_counters(const node *n, uint64_t *connects, uint64_t *errors)
{
    vl_pool_stats ps;

    *connects = *errors = 0;
    if (n->pool == NULL)
        return;
    vl_pool_stats_init(&ps);
    if (vl_redis_pool_stats_get(n->pool, &ps) != VL_OK)
        return;
    *connects = ps.connects + ps.connect_failures;
    *errors = ps.connect_failures;
}

static int node_state(const node *n)
{
    vl_pool_stats ps;

    if (n->pool == NULL)
        return VL_REDIS_DOWN;
    vl_pool_stats_init(&ps);
    if (vl_redis_pool_stats_get(n->pool, &ps) != VL_OK)
        return VL_REDIS_DOWN;
    if (ps.ready > 0)
        return VL_REDIS_READY;
    return ps.connect_failures > 0 || n->down ? VL_REDIS_DOWN : VL_REDIS_CONNECTING;
}

/* Frees the node's pool (nothing of ours pending on it), keeping its
 * counters. */
static void node_pool_drop(node *n)
{
    uint64_t a, e;

    node_counters(n, &a, &e);
    n->cl->gone_connects += a;
    n->cl->gone_errors += e;
    vl_redis_pool_free(n->pool);
    n->pool = NULL;
}

/* 1 when the node's pool holds no connection at all, not even one
 * connecting: its first could not be made. */
static int pool_unopened(const node *n)
{
    vl_pool_stats ps;

    if (n->pool == NULL)
        return 1;
    vl_pool_stats_init(&ps);
    return vl_redis_pool_stats_get(n->pool, &ps) == VL_OK && ps.open == 0;
}

static void node_close(node *n)
{
    node_pool_drop(n);
    if (n->ctl != NULL) {
        vl__redis_detach(n->ctl);
        vl_redis_free(n->ctl);
        n->ctl = NULL;
    }
    if (n->ask != NULL) {
        vl__redis_detach(n->ask);
        vl_redis_free(n->ask);
        n->ask = NULL;
    }
    if (n->url != NULL) {
        memset(n->url, 0, strlen(n->url));
        vl__free(n->url);
        n->url = NULL;
    }
    vl__free(n);
}

/* 1 when nothing uses the node's pool: no command of the cluster's, and
 * none of anybody else's (a fan-out's commands, a lease) pending on it. */
static int node_idle(const node *n)
{
    vl_pool_stats ps;

    if (n->outstanding > 0)
        return 0;
    if (n->pool == NULL)
        return 1;
    vl_pool_stats_init(&ps);
    return vl_redis_pool_stats_get(n->pool, &ps) == VL_OK && ps.pending == 0 && ps.leased == 0 &&
           ps.waiters == 0;
}

/* Frees the nodes outside the map that nothing uses any more. */
static void nodes_collect(vl_redis_cluster *cl)
{
    size_t i = 0;

    while (i < cl->nnodes) {
        node *n = cl->nodes[i];
        if (n->role == 0 && node_idle(n) && n != cl->ref_node) {
            cl->nodes[i] = cl->nodes[--cl->nnodes];
            node_close(n);
        } else {
            i++;
        }
    }
}

/* ---- the ctl connection: topology queries and pings ---- */

static void ctl_event(vl_redis *c, int event, int status, void *ud);
static void ctl_push(vl_redis *c, vl_redis_reply *r, void *ud);

/* The options of the cluster's own connections to a node (ctl, ask). */
static void conn_options(const vl_redis_cluster *cl, vl_redis_options *o)
{
    vl_redis_options_init(o);
    o->connect_timeout_ms = cl->o.connect_timeout_ms;
    o->command_timeout_ms = cl->o.command_timeout_ms;
    o->reconnect_min_ms = cl->o.reconnect_min_ms;
    o->reconnect_max_ms = cl->o.reconnect_max_ms;
}

static int ctl_ensure(node *n)
{
    vl_redis_cluster *cl = n->cl;
    vl_redis_options o;

    if (n->ctl != NULL)
        return VL_OK;
    conn_options(cl, &o);
    n->qn = n->qhead = 0;
    n->ctl = vl__redis_new_push(cl->loop, n->url, &o, ctl_event, ctl_push, n);
    if (n->ctl == NULL)
        return VL_ENOMEM;
    vl__redis_hold(n->ctl, cl->holding);
    return VL_OK;
}

/* Writes a query on a ready ctl connection. VL_OK or why not. */
static int ctl_send(node *n, int kind)
{
    static const char *const shards[] = {"CLUSTER", "SHARDS"};
    static const char *const slots[] = {"CLUSTER", "SLOTS"};
    static const char *const ping[] = {"PING"};
    const char *const *argv = kind == Q_SHARDS ? shards : kind == Q_SLOTS ? slots : ping;
    int argc = kind == Q_PING ? 1 : 2;
    char *cmd = NULL;
    long long len;
    int rc;

    if (n->qn == CTL_MAX)
        return VL_EBUSY;
    len = vl__redis_format_argv(&cmd, argc, (const char **)argv, NULL);
    if (len < 0)
        return VL_ENOMEM;
    rc = vl__redis_push_write(n->ctl, cmd, (size_t)len);
    if (rc != VL_OK)
        return rc;
    n->q[(n->qhead + n->qn) % CTL_MAX] = (unsigned char)kind;
    n->qt[(n->qhead + n->qn) % CTL_MAX] = vl_loop_now_ms(n->cl->loop);
    /* A topology query gets a number: only the answer to the one the
     * refresh waits for is taken, a late one to a query given up is
     * dropped. */
    n->qg[(n->qhead + n->qn) % CTL_MAX] = kind == Q_PING ? 0 : ++n->cl->ask_gen;
    n->qn++;
    return VL_OK;
}

/* ---- parsing answers ---- */

static void tmap_clear(tmap *t)
{
    size_t i;

    for (i = 0; i < t->n; i++)
        vl__free(t->sh[i].nodes);
    vl__free(t->sh);
    vl__free(t);
}

static tmap *tmap_new(void)
{
    tmap *t = vl__calloc(1, sizeof(*t));

    if (t != NULL)
        memset(t->slot, 0xff, sizeof(t->slot));
    return t;
}

/* Adds a node to shard s (the first is its primary). VL_OK or VL_ENOMEM. */
static int tshard_add(tshard *s, const char *host, size_t hl, long long port, const char *id,
                      size_t idl)
{
    tnode *tn;

    tn = grow(s->nodes, &s->cap, s->n, sizeof(*s->nodes));
    if (tn == NULL)
        return VL_ENOMEM;
    s->nodes = tn;
    if (hl >= HOST_MAX)
        return VL_EPROTO; /* never shortened: a cut name is another host */
    tn = &s->nodes[s->n++];
    memset(tn, 0, sizeof(*tn));
    memcpy(tn->host, host, hl);
    tn->port = (int)port;
    if (id != NULL) {
        if (idl >= sizeof(tn->id))
            idl = sizeof(tn->id) - 1;
        memcpy(tn->id, id, idl);
    }
    return VL_OK;
}

static tshard *tmap_shard(tmap *t)
{
    tshard *ns = grow(t->sh, &t->cap, t->n, sizeof(*t->sh));

    if (ns == NULL)
        return NULL;
    t->sh = ns;
    memset(&t->sh[t->n], 0, sizeof(t->sh[0]));
    return &t->sh[t->n++];
}

static int slot_range(tmap *t, long long a, long long b, size_t shard_idx)
{
    long long s;

    if (a < 0 || b < a || b >= VL__CLUSTER_SLOTS || shard_idx > INT16_MAX)
        return VL_EPROTO;
    for (s = a; s <= b; s++)
        t->slot[s] = (int16_t)shard_idx;
    return VL_OK;
}

static const char *str_of(const vl_redis_reply *r, size_t *len)
{
    const char *s = vl_redis_reply_str(r, len);

    if (s == NULL && len != NULL)
        *len = 0;
    return s;
}

static int field_is(const vl_redis_reply *r, const char *want)
{
    size_t n;
    const char *s = str_of(r, &n);

    return s != NULL && n == strlen(want) && memcmp(s, want, n) == 0;
}

/* One node map of CLUSTER SHARDS into shard s, primary first. The host is
 * the node's endpoint, or its ip when the endpoint is unknown ("?"). A
 * replica seen before its primary keeps place 0 free (port 0) for it. */
static int shards_node(const vl_redis_cluster *cl, const vl_redis_reply *m, tshard *s,
                       const node *from)
{
    const vl_redis_reply *ep = vl_redis_reply_map_get(m, "endpoint", 8);
    const vl_redis_reply *ip = vl_redis_reply_map_get(m, "ip", 2);
    const vl_redis_reply *role = vl_redis_reply_map_get(m, "role", 4);
    const vl_redis_reply *health = vl_redis_reply_map_get(m, "health", 6);
    const vl_redis_reply *id = vl_redis_reply_map_get(m, "id", 2);
    const vl_redis_reply *pr = cl->tls ? vl_redis_reply_map_get(m, "tls-port", 8) : NULL;
    const char *host, *ids;
    size_t hl, idl;
    long long port = 0;
    int primary = field_is(role, "master"), rc;

    if (pr == NULL)
        pr = vl_redis_reply_map_get(m, "port", 4);
    if (vl_redis_reply_integer(pr, &port) != VL_OK || port <= 0 || port > 65535)
        return VL_EPROTO;
    host = str_of(ep, &hl);
    if (host == NULL || hl == 0 || (hl == 1 && host[0] == '?'))
        host = str_of(ip, &hl);
    if (host == NULL || hl == 0) {
        host = from->host;
        hl = strlen(host);
    }
    ids = str_of(id, &idl);
    if (!primary && !field_is(health, "online"))
        return VL_OK; /* a replica that cannot serve reads now */
    if (s->n == 0 && (rc = tshard_add(s, "", 0, 0, NULL, 0)) != VL_OK)
        return rc;
    if (primary) {
        tnode *p = &s->nodes[0];
        int failed = !field_is(health, "online");
        /* Two primaries in a shard: one of them failed (newer servers keep
         * a failed primary in its shard). The one that is up serves. */
        if (p->port != 0 && (failed || !p->failed))
            return VL_OK;
        if (hl >= sizeof(p->host))
            return VL_EPROTO; /* never shortened: a cut name is another host */
        memset(p, 0, sizeof(*p));
        p->failed = failed;
        memcpy(p->host, host, hl);
        p->port = (int)port;
        if (ids != NULL)
            memcpy(p->id, ids, idl < sizeof(p->id) ? idl : sizeof(p->id) - 1);
        return VL_OK;
    }
    return tshard_add(s, host, hl, port, ids, idl);
}

static int parse_shards(const vl_redis_cluster *cl, const vl_redis_reply *r, tmap *t,
                        const node *from)
{
    size_t i, j;

    if (vl_redis_reply_type(r) != VL_REDIS_ARRAY)
        return VL_EPROTO;
    for (i = 0; i < vl_redis_reply_count(r); i++) {
        const vl_redis_reply *sh = vl_redis_reply_element(r, i);
        const vl_redis_reply *slots = vl_redis_reply_map_get(sh, "slots", 5);
        const vl_redis_reply *nodes = vl_redis_reply_map_get(sh, "nodes", 5);
        size_t idx = t->n;
        tshard *s;
        int rc;

        if (vl_redis_reply_type(slots) != VL_REDIS_ARRAY ||
            vl_redis_reply_type(nodes) != VL_REDIS_ARRAY || vl_redis_reply_count(slots) % 2)
            return VL_EPROTO;
        if (vl_redis_reply_count(slots) == 0)
            continue; /* a shard without slots serves nothing */
        s = tmap_shard(t);
        if (s == NULL)
            return VL_ENOMEM;
        for (j = 0; j < vl_redis_reply_count(nodes); j++) {
            rc = shards_node(cl, vl_redis_reply_element(nodes, j), s, from);
            if (rc != VL_OK)
                return rc;
        }
        if (s->n == 0 || s->nodes[0].port == 0)
            return VL_EPROTO; /* no primary */
        for (j = 0; j + 1 < vl_redis_reply_count(slots); j += 2) {
            long long a, b;
            if (vl_redis_reply_integer(vl_redis_reply_element(slots, j), &a) != VL_OK ||
                vl_redis_reply_integer(vl_redis_reply_element(slots, j + 1), &b) != VL_OK)
                return VL_EPROTO;
            rc = slot_range(t, a, b, idx);
            if (rc != VL_OK)
                return rc;
        }
    }
    return VL_OK;
}

/* One [ip, port, id, ...] of CLUSTER SLOTS. */
static int slots_node(const vl_redis_reply *e, const char **host, size_t *hl, long long *port,
                      const char **id, size_t *idl, const node *from)
{
    if (vl_redis_reply_type(e) != VL_REDIS_ARRAY || vl_redis_reply_count(e) < 2)
        return VL_EPROTO;
    *host = str_of(vl_redis_reply_element(e, 0), hl);
    if (*host == NULL || *hl == 0 || (*hl == 1 && (*host)[0] == '?')) {
        *host = from->host;
        *hl = strlen(*host);
    }
    if (vl_redis_reply_integer(vl_redis_reply_element(e, 1), port) != VL_OK || *port <= 0 ||
        *port > 65535)
        return VL_EPROTO;
    *id = str_of(vl_redis_reply_element(e, 2), idl);
    return VL_OK;
}

static int parse_slots(const vl_redis_reply *r, tmap *t, const node *from)
{
    size_t i, j;

    if (vl_redis_reply_type(r) != VL_REDIS_ARRAY)
        return VL_EPROTO;
    for (i = 0; i < vl_redis_reply_count(r); i++) {
        const vl_redis_reply *e = vl_redis_reply_element(r, i);
        const char *host, *id;
        size_t hl, idl, idx;
        long long a, b, port;
        tshard *s = NULL;
        int rc;

        if (vl_redis_reply_type(e) != VL_REDIS_ARRAY || vl_redis_reply_count(e) < 3 ||
            vl_redis_reply_integer(vl_redis_reply_element(e, 0), &a) != VL_OK ||
            vl_redis_reply_integer(vl_redis_reply_element(e, 1), &b) != VL_OK)
            return VL_EPROTO;
        rc = slots_node(vl_redis_reply_element(e, 2), &host, &hl, &port, &id, &idl, from);
        if (rc != VL_OK)
            return rc;
        /* Ranges of one primary come as separate entries: one shard. */
        for (idx = 0; idx < t->n; idx++)
            if (t->sh[idx].nodes[0].port == port && strlen(t->sh[idx].nodes[0].host) == hl &&
                memcmp(t->sh[idx].nodes[0].host, host, hl) == 0) {
                s = &t->sh[idx];
                break;
            }
        if (s == NULL) {
            idx = t->n;
            s = tmap_shard(t);
            if (s == NULL)
                return VL_ENOMEM;
            rc = tshard_add(s, host, hl, port, id, idl);
            for (j = 3; rc == VL_OK && j < vl_redis_reply_count(e); j++) {
                rc = slots_node(vl_redis_reply_element(e, j), &host, &hl, &port, &id, &idl,
                                from);
                if (rc == VL_OK)
                    rc = tshard_add(s, host, hl, port, id, idl);
            }
            if (rc != VL_OK)
                return rc;
        }
        rc = slot_range(t, a, b, idx);
        if (rc != VL_OK)
            return rc;
    }
    return VL_OK;
}

/* ---- the map ---- */

static void map_free(cmap *m)
{
    size_t i;

    if (m == NULL)
        return;
    for (i = 0; i < m->n; i++)
        vl__free(m->shards[i].replicas);
    vl__free(m->shards);
    vl__free(m->order);
    vl__free(m);
}

static int shard_cmp(const void *a, const void *b)
{
    const shard *x = *(const shard *const *)a, *y = *(const shard *const *)b;

    return x->first < y->first ? -1 : x->first > y->first;
}

/* Recomputes each shard's first slot and count and the node order. */
static int map_order(cmap *m)
{
    shard **sorted;
    node **order;
    size_t i, j, k = 0, total = 0;
    unsigned s;

    for (i = 0; i < m->n; i++) {
        m->shards[i].nslots = 0;
        m->shards[i].first = VL__CLUSTER_SLOTS;
        total += 1 + m->shards[i].nrep;
    }
    for (s = 0; s < VL__CLUSTER_SLOTS; s++) {
        if (m->slot[s] < 0)
            continue;
        shard *sh = &m->shards[m->slot[s]];
        if (sh->nslots++ == 0)
            sh->first = s;
    }
    sorted = vl__calloc(m->n ? m->n : 1, sizeof(*sorted));
    order = vl__calloc(total ? total : 1, sizeof(*order));
    if (sorted == NULL || order == NULL) {
        vl__free(sorted);
        vl__free(order);
        return VL_ENOMEM;
    }
    for (i = 0; i < m->n; i++)
        sorted[i] = &m->shards[i];
    qsort(sorted, m->n, sizeof(*sorted), shard_cmp);
    for (i = 0; i < m->n; i++) {
        if (sorted[i]->nslots == 0)
            continue;
        order[k++] = sorted[i]->primary;
        for (j = 0; j < sorted[i]->nrep; j++)
            order[k++] = sorted[i]->replicas[j];
    }
    vl__free(sorted);
    vl__free(m->order);
    m->order = order;
    m->norder = k;
    m->order_stale = 0;
    return VL_OK;
}

/* A pool for every node of m: plain for primaries, READONLY for replicas
 * (a demoted primary's plain connections are dropped once it is idle).
 * VL_OK or VL_ENOMEM. */
static int map_pools(const cmap *m)
{
    size_t i, j;

    for (i = 0; i < m->n; i++) {
        if (node_pool(m->shards[i].primary, 0) != VL_OK)
            return VL_ENOMEM;
        for (j = 0; j < m->shards[i].nrep; j++) {
            node *n = m->shards[i].replicas[j];
            if (n->pool != NULL && !n->readonly_pool && node_idle(n))
                node_pool_drop(n);
            if (node_pool(n, 1) != VL_OK)
                return VL_ENOMEM;
        }
    }
    return VL_OK;
}

/* 1 when the parsed map is the one in place: the same slots, served by the
 * same shards in the same order, each with the same nodes (and ids). */
static int map_same(vl_redis_cluster *cl, const tmap *t)
{
    const cmap *m = cl->map;
    char addr[ADDR_MAX];
    size_t i, j;

    if (m == NULL || m->n != t->n || memcmp(m->slot, t->slot, sizeof(m->slot)) != 0)
        return 0;
    for (i = 0; i < t->n; i++) {
        const tshard *ts = &t->sh[i];
        const shard *sh = &m->shards[i];
        if (ts->n != 1 + sh->nrep)
            return 0;
        for (j = 0; j < ts->n; j++) {
            const node *n = j == 0 ? sh->primary : sh->replicas[j - 1];
            addr_make(addr, sizeof(addr), ts->nodes[j].host, ts->nodes[j].port);
            if (strcmp(n->addr, addr) != 0 ||
                (ts->nodes[j].id[0] != '\0' && strcmp(n->id, ts->nodes[j].id) != 0))
                return 0;
        }
    }
    return 1;
}

/* Puts a parsed map in place in one step. VL_OK or VL_ENOMEM (the old map
 * stays). A map the same as the one in place changes nothing (no new
 * epoch): the periodic refresh of a stable cluster costs its parse and one
 * comparison, not a rebuild. */
static int map_install(vl_redis_cluster *cl, const tmap *t)
{
    cmap *m;
    size_t i, j, total = 0;
    int rc = VL_ENOMEM;

    for (i = 0; i < t->n; i++)
        total += t->sh[i].n;
    if (total > MAP_NODES_MAX)
        return VL_EPROTO;
    if (map_same(cl, t)) {
        /* A pool dropped since (a failed first connection) is made again,
         * a demoted primary busy at the last install gets its READONLY
         * connections now that it is idle. */
        m = cl->map;
        if (map_pools(m) != VL_OK)
            return VL_ENOMEM;
        if (m->order_stale)
            (void)map_order(m); /* out of memory again: the old order serves */
        cl->discovery_failed = 0;
        if (cl->o.read_from == VL_REDIS_READ_NEAREST)
            for (i = 0; i < m->norder; i++)
                ctl_ensure(m->order[i]); /* retried: out of memory before */
        /* The watchers still hear of the refresh (a subscriber retries a
         * channel that waited for one). */
        cl->notify_due = 1;
        later(cl);
        return VL_OK;
    }
    for (i = 0; i < cl->nnodes; i++)
        cl->nodes[i]->mark = 0;
    m = vl__calloc(1, sizeof(*m));
    if (m == NULL)
        return VL_ENOMEM;
    memcpy(m->slot, t->slot, sizeof(m->slot));
    m->shards = vl__calloc(t->n ? t->n : 1, sizeof(*m->shards));
    if (m->shards == NULL)
        goto nomem;
    m->n = t->n;
    for (i = 0; i < t->n; i++) {
        const tshard *ts = &t->sh[i];
        shard *s = &m->shards[i];
        s->replicas = ts->n > 1 ? vl__calloc(ts->n - 1, sizeof(node *)) : NULL;
        if (ts->n > 1 && s->replicas == NULL)
            goto nomem;
        for (j = 0; j < ts->n; j++) {
            node *n = node_get(cl, ts->nodes[j].host, ts->nodes[j].port);
            if (n == NULL)
                goto nomem;
            if (n->mark) {
                rc = VL_EPROTO; /* one node in two places */
                goto nomem;
            }
            n->mark = 1;
            if (ts->nodes[j].id[0] != '\0')
                snprintf(n->id, sizeof(n->id), "%s", ts->nodes[j].id);
            if (j == 0)
                s->primary = n;
            else
                s->replicas[s->nrep++] = n;
        }
    }
    if (map_order(m) != VL_OK || map_pools(m) != VL_OK)
        goto nomem;
    /* The swap: roles follow the new map. */
    for (i = 0; i < cl->nnodes; i++)
        cl->nodes[i]->role = 0;
    for (i = 0; i < m->n; i++) {
        m->shards[i].primary->role = VL_REDIS_ROLE_PRIMARY;
        m->shards[i].primary->shard = i;
        for (j = 0; j < m->shards[i].nrep; j++) {
            m->shards[i].replicas[j]->role = VL_REDIS_ROLE_REPLICA;
            m->shards[i].replicas[j]->shard = i;
        }
    }
    map_free(cl->map);
    cl->map = m;
    cl->st.map_epoch++;
    cl->discovery_failed = 0;
    if (cl->o.read_from == VL_REDIS_READ_NEAREST)
        for (i = 0; i < m->norder; i++)
            ctl_ensure(m->order[i]); /* for the pings; out of memory: no rtt */
    cl->notify_due = 1;
    later(cl);
    return VL_OK;
nomem:
    map_free(m);
    return rc;
}

/* A MOVED: `slot` is served by `n` from now on. */
static void map_move(vl_redis_cluster *cl, unsigned slot, node *n)
{
    cmap *m = cl->map;
    size_t i;
    int reorder = 0;
    int16_t old;

    if (m == NULL || slot >= VL__CLUSTER_SLOTS)
        return;
    for (i = 0; i < m->n; i++)
        if (m->shards[i].primary == n)
            break;
    if (i == m->n) {
        shard *ns;
        if (m->n >= MAP_NODES_MAX)
            return; /* the command still goes there; the refresh will tell */
        ns = vl__realloc(m->shards, (m->n + 1) * sizeof(*ns));
        if (ns == NULL)
            return;
        m->shards = ns;
        memset(&m->shards[m->n], 0, sizeof(m->shards[0]));
        if (node_pool(n, 0) != VL_OK)
            return;
        m->shards[m->n].primary = n;
        if (n->role == VL_REDIS_ROLE_REPLICA) {
            /* It was a replica (promoted): it leaves its old shard. */
            shard *was = &m->shards[n->shard];
            size_t j;
            for (j = 0; j < was->nrep; j++)
                if (was->replicas[j] == n) {
                    was->replicas[j] = was->replicas[--was->nrep];
                    break;
                }
        }
        n->role = VL_REDIS_ROLE_PRIMARY;
        n->shard = m->n;
        m->n++;
        reorder = 1;
    }
    old = m->slot[slot];
    if (old == (int16_t)i)
        return;
    m->slot[slot] = (int16_t)i;
    /* The counts follow at once; the order (by first slot) only when a
     * shard's first slot may have changed: a storm of MOVED replies costs
     * no full scan each. */
    if (old >= 0 && (--m->shards[old].nslots == 0 || m->shards[old].first == slot))
        reorder = 1;
    if (m->shards[i].nslots++ == 0 || slot < m->shards[i].first)
        reorder = 1;
    if (reorder)
        m->order_stale = map_order(m) != VL_OK; /* the old order stays, still valid */
    cl->st.map_epoch++;
    cl->notify_due = 1;
    later(cl);
}

/* "slots 0-5460, 10923 not served", or "" when the map covers them all. */
static void uncovered(const cmap *m, char *buf, size_t n)
{
    size_t used = 0;
    unsigned s = 0;

    buf[0] = '\0';
    while (s < VL__CLUSTER_SLOTS) {
        unsigned e;
        if (m->slot[s] >= 0) {
            s++;
            continue;
        }
        for (e = s; e + 1 < VL__CLUSTER_SLOTS && m->slot[e + 1] < 0; e++)
            ;
        if (used + 24 < n) {
            int w = e == s ? snprintf(buf + used, n - used, "%s%u", used ? ", " : "slots ", s)
                           : snprintf(buf + used, n - used, "%s%u-%u", used ? ", " : "slots ",
                                      s, e);
            used += (size_t)w;
        }
        s = e + 1;
    }
    if (used > 0 && used + 12 < n)
        snprintf(buf + used, n - used, " not served");
}

/* ---- refresh ---- */

static void cands_add(vl_redis_cluster *cl, const char *addr, size_t cap)
{
    size_t i;

    for (i = 0; i < cl->ncands; i++)
        if (strcmp(cl->cands[i], addr) == 0)
            return;
    if (cl->ncands < cap)
        snprintf(cl->cands[cl->ncands++], ADDR_MAX, "%s", addr);
}

static void waiter_finish(vl_redis_cluster *cl, waiter *w, int status, const char *msg);

/* Completes every waiter of `kind` (W_READY, W_REFRESH; -1: all). */
static void waiters_finish(vl_redis_cluster *cl, int kind, int status, const char *msg)
{
    ring *e, *next;

    for (e = cl->waiters.next; e != &cl->waiters; e = next) {
        waiter *w = RING_OF(e, waiter, link);
        next = e->next;
        if (kind < 0 || w->kind == kind)
            waiter_finish(cl, w, status, msg);
    }
}

static void ref_arm(vl_redis_cluster *cl, uint64_t ms)
{
    uint64_t now = vl_loop_now_ms(cl->loop);

    if (cl->due != 0 && cl->due <= now + ms)
        return; /* sooner already */
    cl->due = now + ms;
    ut_start(&cl->ref_timer, ms);
}

static void refresh_end(vl_redis_cluster *cl, int ok, const char *msg)
{
    cl->ending = 1;
    cl->refreshing = 0;
    cl->ref_node = NULL;
    ut_stop(&cl->step_timer);
    cl->last_refresh = vl_loop_now_ms(cl->loop);
    if (cl->last_refresh == 0)
        cl->last_refresh = 1;
    if (ok) {
        cl->st.refreshes++;
        waiters_finish(cl, W_REFRESH, VL_OK, NULL);
    } else {
        char m[REASON_MAX + 64];
        snprintf(m, sizeof(m), "cluster: no node answered the topology query (%s)", msg);
        cl->st.refresh_errors++;
        set_error(cl, m);
        waiters_finish(cl, W_REFRESH, VL_ECONN, m);
        if (cl->map == NULL) {
            cl->discovery_failed = 1;
            while (!ring_empty(&cl->waiting)) {
                creq *r = RING_OF(cl->waiting.next, creq, wlink);
                wait_remove(cl, r);
                req_route(r); /* fails it: no map, discovery failed */
            }
        }
    }
    ready_check(cl);
    cl->ending = 0;
    {
        /* A refresh wanted meanwhile (armed at the min interval) stays;
         * otherwise the periodic one, or the next try without a map. */
        uint64_t next = cl->map == NULL ? (cl->o.refresh_min_interval_ms > 0
                                               ? cl->o.refresh_min_interval_ms
                                               : 1000)
                                        : cl->o.refresh_interval_ms;
        /* The periodic refresh too keeps to the floor. */
        if (next > 0 && next < cl->o.refresh_min_interval_ms)
            next = cl->o.refresh_min_interval_ms;
        if (next > 0)
            ref_arm(cl, next);
    }
    later(cl);
}

static void refresh_begin(vl_redis_cluster *cl)
{
    size_t cap = cl->nnodes + cl->nseeds, i;

    if (cl->refreshing || cl->freed)
        return;
    vl__free(cl->cands);
    cl->cands = vl__calloc(cap ? cap : 1, ADDR_MAX);
    cl->ncands = cl->cand_idx = 0;
    if (cl->cands == NULL) {
        refresh_end(cl, 0, "out of memory");
        return;
    }
    /* The nodes of the map that are up (primaries first), then the
     * others, then the seeds: a dead node is asked last, so that it
     * costs the refresh nothing while another can answer. */
    if (cl->map != NULL) {
        int pass;
        for (pass = 0; pass < 3; pass++)
            for (i = 0; i < cl->map->norder; i++) {
                const node *n = cl->map->order[i];
                int up = node_state(n) == VL_REDIS_READY;
                if ((pass == 0 && up && n->role == VL_REDIS_ROLE_PRIMARY) ||
                    (pass == 1 && up) || pass == 2)
                    cands_add(cl, n->addr, cap);
            }
    }
    for (i = 0; i < cl->nseeds; i++)
        cands_add(cl, cl->seeds[i], cap);
    cl->refreshing = 1;
    cl->ref_deadline = vl_loop_now_ms(cl->loop) + cl->o.refresh_timeout_ms;
    refresh_next(cl);
}

/* Asks the next candidate; ends the refresh when none is left. */
static void refresh_next(vl_redis_cluster *cl)
{
    uint64_t now = vl_loop_now_ms(cl->loop);
    char last[REASON_MAX] = "no node to ask";

    if (cl->ref_node != NULL) {
        /* Why the node asked last gave no map: what its answer lacked,
         * else what its connection says. */
        const node *n = cl->ref_node;
        snprintf(last, sizeof(last), "%s: %.360s", n->addr,
                 cl->ref_why[0] != '\0'                               ? cl->ref_why
                 : n->ctl != NULL && vl_redis_error(n->ctl)[0] != '\0' ? vl_redis_error(n->ctl)
                                                                       : "no answer");
        cl->ref_node->asked = 0;
    }
    cl->ref_node = NULL;
    cl->ref_why[0] = '\0';
    while (cl->cand_idx < cl->ncands) {
        const char *addr = cl->cands[cl->cand_idx++];
        node *n = node_find(cl, addr);
        uint64_t step;
        if (n == NULL) {
            /* A seed: "host:port" as the URL gave it. */
            int bad;
            n = node_of_addr(cl, addr, NULL, &bad);
            if (n == NULL)
                continue;
        }
        if (ctl_ensure(n) != VL_OK)
            continue;
        if (vl_redis_state(n->ctl) == VL_REDIS_DOWN ||
            vl_redis_state(n->ctl) == VL_REDIS_INVALID) {
            snprintf(last, sizeof(last), "%s: %s", n->addr, vl_redis_error(n->ctl));
            continue; /* between two attempts: the next one */
        }
        cl->ref_node = n;
        n->asked = 0;
        if (vl_redis_state(n->ctl) == VL_REDIS_READY) {
            if (ctl_send(n, Q_SHARDS) != VL_OK) {
                cl->ref_node = NULL;
                continue;
            }
            n->asked = 1;
        }
        /* Each node gets a share of the refresh's time, so that one that
         * hangs leaves room to ask the others. */
        step = cl->o.refresh_timeout_ms / 2;
        if (step < 100)
            step = 100;
        if (cl->o.refresh_timeout_ms > 0 && now + step > cl->ref_deadline)
            step = cl->ref_deadline > now ? cl->ref_deadline - now : 0;
        ut_start(&cl->step_timer, step);
        return;
    }
    refresh_end(cl, 0, last);
}

static void step_expired(vl__timer *t, void *ud)
{
    vl_redis_cluster *cl = ud;

    VL__UNUSED(t);
    ut_fired(&cl->step_timer);
    if (!cl->refreshing)
        return;
    if (cl->o.refresh_timeout_ms > 0 && vl_loop_now_ms(cl->loop) >= cl->ref_deadline) {
        char m[REASON_MAX];
        snprintf(m, sizeof(m), "%s: no answer within refresh_timeout_ms %" PRIu64,
                 cl->ref_node != NULL ? cl->ref_node->addr : "?", cl->o.refresh_timeout_ms);
        if (cl->ref_node != NULL)
            cl->ref_node->asked = 0;
        refresh_end(cl, 0, m);
        return;
    }
    refresh_next(cl);
}

static void ref_timer_cb(vl__timer *t, void *ud)
{
    vl_redis_cluster *cl = ud;

    VL__UNUSED(t);
    ut_fired(&cl->ref_timer);
    cl->due = 0;
    refresh_begin(cl);
}

/* A refresh is wanted: now when `now` or the min interval allows it, else
 * as soon as it does. Joins one under way. */
static void refresh_want(vl_redis_cluster *cl, int now)
{
    uint64_t t = vl_loop_now_ms(cl->loop);
    uint64_t min = cl->o.refresh_min_interval_ms;

    if (cl->refreshing || cl->freed || cl->fail_status != VL_OK)
        return;
    if (cl->ending) {
        ref_arm(cl, min > 0 ? min : 1); /* never a new refresh inside the end of one */
        return;
    }
    if (now || cl->last_refresh == 0 || t >= cl->last_refresh + min) {
        refresh_begin(cl);
        return;
    }
    ref_arm(cl, cl->last_refresh + min - t);
}

/* An answer to a topology query from n (the node being asked). */
static void topology_answer(node *n, int kind, vl_redis_reply *r)
{
    vl_redis_cluster *cl = n->cl;
    tmap *t;
    int rc;

    n->asked = 0;
    if (vl_redis_reply_type(r) == VL_REDIS_ERROR) {
        if (kind == Q_SHARDS && ctl_send(n, Q_SLOTS) == VL_OK) {
            n->asked = 1; /* older than 7.0: CLUSTER SLOTS */
            return;
        }
        snprintf(cl->ref_why, sizeof(cl->ref_why), "%s", vl__redis_reply_text(r));
        refresh_next(cl);
        return;
    }
    t = tmap_new();
    if (t == NULL) {
        snprintf(cl->ref_why, sizeof(cl->ref_why), "out of memory for the map");
        refresh_next(cl);
        return;
    }
    rc = kind == Q_SHARDS ? parse_shards(cl, r, t, n) : parse_slots(r, t, n);
    if (rc == VL_OK && t->n == 0)
        rc = VL_EPROTO; /* a node that serves nothing (not in a cluster yet) */
    if (rc == VL_OK)
        rc = map_install(cl, t);
    tmap_clear(t);
    if (rc != VL_OK) {
        snprintf(cl->ref_why, sizeof(cl->ref_why), "%s",
                 rc == VL_ENOMEM ? "out of memory for the map"
                                 : kind == Q_SHARDS ? "malformed CLUSTER SHARDS answer"
                                                    : "malformed CLUSTER SLOTS answer");
        refresh_next(cl);
        return;
    }
    refresh_end(cl, 1, NULL);
    dispatch_waiting(cl);
}

static void ctl_push(vl_redis *c, vl_redis_reply *r, void *ud)
{
    node *n = ud;
    vl_redis_cluster *cl = n->cl;
    int kind;
    uint64_t sent, gen;

    VL__UNUSED(c);
    if (n->qn == 0) {
        vl_redis_reply_free(r); /* nothing asked: a stray push, dropped */
        return;
    }
    kind = n->q[n->qhead];
    sent = n->qt[n->qhead];
    gen = n->qg[n->qhead];
    n->qhead = (n->qhead + 1) % CTL_MAX;
    n->qn--;
    if (kind == Q_PING) {
        if (vl_redis_reply_type(r) != VL_REDIS_ERROR)
            n->rtt_ms = (double)(vl_loop_now_ms(cl->loop) - sent);
        if (n->rtt_ms <= 0)
            n->rtt_ms = 0.01; /* measured, under a millisecond */
    } else if (cl->refreshing && cl->ref_node == n && n->asked && gen == cl->ask_gen) {
        topology_answer(n, kind, r);
    }
    vl_redis_reply_free(r);
}

static void ctl_event(vl_redis *c, int event, int status, void *ud)
{
    node *n = ud;
    vl_redis_cluster *cl = n->cl;

    VL__UNUSED(status);
    if (n->ctl == NULL)
        n->ctl = c; /* an event from inside vl__redis_new_push */
    if (event == VL__REDIS_EV_DOWN) {
        n->qn = n->qhead = 0;
        if (cl->refreshing && cl->ref_node == n)
            refresh_next(cl);
    } else if (event == VL__REDIS_EV_READY) {
        n->qn = n->qhead = 0;
        if (cl->refreshing && cl->ref_node == n && !n->asked) {
            if (ctl_send(n, Q_SHARDS) == VL_OK)
                n->asked = 1;
            else
                refresh_next(cl);
        }
    }
}

static void ping_cb(vl__timer *t, void *ud)
{
    vl_redis_cluster *cl = ud;
    size_t i;

    VL__UNUSED(t);
    ut_fired(&cl->ping_timer);
    if (cl->map != NULL)
        for (i = 0; i < cl->map->norder; i++) {
            node *n = cl->map->order[i];
            size_t k;
            int pinging = 0;
            if (n->ctl == NULL || vl_redis_state(n->ctl) != VL_REDIS_READY)
                continue;
            for (k = 0; k < n->qn; k++)
                if (n->q[(n->qhead + k) % CTL_MAX] == Q_PING)
                    pinging = 1;
            if (!pinging)
                ctl_send(n, Q_PING); /* full or failed: measured next time */
        }
    ut_start(&cl->ping_timer, PING_PERIOD_MS);
}

/* ---- the safe point: watchers and teardown of nodes that left ---- */

static void release(vl__handle *hd);

static void defer_cb(vl__defer *d)
{
    vl_redis_cluster *cl =
        (vl_redis_cluster *)(void *)((char *)d - offsetof(vl_redis_cluster, defer));
    watcher ws[MAX_WATCHERS];
    size_t i, n;

    nodes_collect(cl);
    if (!cl->notify_due)
        return;
    cl->notify_due = 0;
    n = cl->nwatchers;
    memcpy(ws, cl->watchers, n * sizeof(ws[0]));
    cl->busy++;
    for (i = 0; i < n && !cl->freed; i++) {
        size_t j;
        int still = 0;
        for (j = 0; j < cl->nwatchers; j++)
            if (cl->watchers[j].fn == ws[i].fn && cl->watchers[j].ud == ws[i].ud)
                still = 1;
        if (still)
            ws[i].fn(cl, ws[i].ud);
    }
    cl->busy--;
    if (cl->freed && cl->release_pending) {
        cl->release_pending = 0;
        vl__handle_bury(cl->loop, &cl->handle, release);
    }
}

static void later(vl_redis_cluster *cl)
{
    if (!cl->freed)
        vl__defer_queue(cl->loop, &cl->defer);
}

/* ---- requests ---- */

static void wait_remove(vl_redis_cluster *cl, creq *r)
{
    ring_del(&r->wlink);
    cl->nwaiting--;
    r->phase = PH_NONE;
    holds_update(cl);
}

/* Frees a request that has no inner future pending. */
static void req_free(creq *r)
{
    vl__timer_stop(&r->timer);
    ring_del(&r->link);
    ring_del(&r->wlink);
    vl__free(r); /* the arguments with it */
}

static void lease_free_value(void *v)
{
    vl_redis_lease_release(v);
}

/* Completes the caller's future (if it still waits) and frees the request
 * unless its inner future is still owed a callback. */
static void req_finish(creq *r, int status, void *value, const char *msg)
{
    vl_future *f = r->f;
    vl_free_fn ff = r->kind == K_LEASE ? lease_free_value : NULL;

    r->f = NULL;
    vl__timer_stop(&r->timer);
    if (f != NULL) {
        vl__future_set_source(f, NULL, NULL);
        if (r->kind == K_LEASE)
            vl__future_complete(f, status, value, value != NULL ? VL__VAL_USER : VL__VAL_NONE,
                                ff, msg);
        else
            vl__future_complete(f, status, value, value != NULL ? VL__VAL_REDIS : VL__VAL_NONE,
                                (vl_free_fn)vl_redis_reply_free, msg);
    } else if (value != NULL) {
        if (r->kind == K_LEASE)
            vl_redis_lease_release(value);
        else
            vl_redis_reply_free(value);
    }
    if (r->inner == NULL)
        req_free(r);
}

static void req_fail(creq *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void req_fail(creq *r, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    req_finish(r, status, NULL, msg);
}

static void verb_of(const creq *r, char *buf, size_t n)
{
    size_t i, len = r->lens[0] < n - 1 ? r->lens[0] : n - 1;

    for (i = 0; i < len; i++) {
        char c = r->argv[0][i];
        buf[i] = (c >= 'a' && c <= 'z') ? (char)(c - 32) : (c < 32 || c > 126) ? '?' : c;
    }
    buf[len] = '\0';
}

/* Arms the request's timer: its deadline, or sooner for a backoff. */
static void req_arm(creq *r, uint64_t backoff_ms)
{
    uint64_t now = vl_loop_now_ms(r->cl->loop);
    uint64_t ms = UINT64_MAX;

    if (r->deadline != 0)
        ms = r->deadline > now ? r->deadline - now : 0;
    if (backoff_ms > 0 && backoff_ms < ms)
        ms = backoff_ms;
    if (ms == UINT64_MAX)
        vl__timer_stop(&r->timer);
    else
        vl__timer_start(&r->timer, ms);
}

static void req_timed_out(creq *r)
{
    char verb[32];

    verb_of(r, verb, sizeof(verb));
    if (r->last[0] != '\0')
        req_fail(r, VL_ETIMEDOUT,
                 "%s on cluster: command timed out after %" PRIu64 " ms (last redirection: %s)",
                 verb, r->cl->o.command_timeout_ms, r->last);
    else
        req_fail(r, VL_ETIMEDOUT, "%s on cluster: command timed out after %" PRIu64 " ms", verb,
                 r->cl->o.command_timeout_ms);
}

static void req_timer_cb(vl__timer *t, void *ud)
{
    creq *r = ud;
    vl_redis_cluster *cl = r->cl;
    uint64_t now = vl_loop_now_ms(cl->loop);

    VL__UNUSED(t);
    if (r->deadline != 0 && now >= r->deadline) {
        if (r->phase == PH_WAIT_MAP)
            wait_remove(cl, r);
        if (r->inner != NULL) {
            vl_future *in = r->inner;
            r->phase = PH_NONE;
            req_timed_out(r);  /* r stays until the inner's callback */
            vl_future_cancel(in);
            return;
        }
        r->phase = PH_NONE;
        req_timed_out(r);
        return;
    }
    if (r->phase == PH_BACKOFF) {
        r->phase = PH_NONE;
        req_route(r);
    }
}

static void req_done(vl_future *inner, void *ud);

static void asking_done(vl_future *f, void *ud)
{
    VL__UNUSED(f);
    VL__UNUSED(ud);
}

static void ask_event(vl_redis *c, int event, int status, void *ud)
{
    VL__UNUSED(c);
    VL__UNUSED(event);
    VL__UNUSED(status);
    VL__UNUSED(ud);
}

/* Sends the request to n: through its pool, or after "ASKING" on its ask
 * connection. */
static void req_send(creq *r, node *n)
{
    vl_redis_cluster *cl = r->cl;
    vl_future *inner;

    if (r->kind == K_LEASE) {
        inner = vl_redis_pool_lease(n->pool);
    } else if (r->asking) {
        static const char *const asking[] = {"ASKING"};
        vl_future *a;
        if (n->ask == NULL) {
            vl_redis_options o;
            conn_options(cl, &o);
            n->ask = vl__redis_new_pooled(cl->loop, n->url, &o, ask_event, n, NULL);
            if (n->ask == NULL) {
                req_fail(r, VL_ENOMEM, "out of memory");
                return;
            }
        }
        /* Back to back on one connection: nothing can come between. */
        a = vl_redis_command_argv(n->ask, 1, (const char **)asking, NULL);
        if (a == NULL) {
            req_fail(r, VL_ENOMEM, "out of memory");
            return;
        }
        vl_future_then(a, asking_done, NULL);
        inner = vl_redis_command_argv(n->ask, r->argc, r->argv, r->lens);
    } else {
        inner = vl_redis_pool_command_argv(n->pool, r->argc, r->argv, r->lens);
    }
    r->asking = 0;
    if (inner == NULL) {
        req_fail(r, VL_ENOMEM, "out of memory");
        return;
    }
    r->inner = inner;
    r->n = n;
    r->phase = PH_INNER;
    if (r->sends++ > 0)
        req_arm(r, 0); /* the deadline from the call, which the pool does not know */
    n->outstanding++;
    n->requests++;
    vl_future_then(inner, req_done, r);
}

/* The node a read of shard s goes to, by read_from. NULL: none (replica). */
static node *pick(vl_redis_cluster *cl, shard *s, const creq *r)
{
    size_t i;
    int pass;

    if (!r->readonly || r->primary_only || cl->o.read_from == VL_REDIS_READ_PRIMARY)
        return s->primary;
    if (cl->o.read_from == VL_REDIS_READ_NEAREST) {
        node *best = s->primary;
        double brtt = node_state(best) == VL_REDIS_READY && best->rtt_ms > 0 ? best->rtt_ms : 1e18;
        for (i = 0; i < s->nrep; i++) {
            node *n = s->replicas[i];
            if (node_state(n) == VL_REDIS_READY && n->rtt_ms > 0 && n->rtt_ms < brtt) {
                best = n;
                brtt = n->rtt_ms;
            }
        }
        return best;
    }
    /* A replica that is up, in turn; with read_from=replica only, one
     * still connecting (it may come up) before none. */
    for (pass = 0; pass < 2; pass++)
        for (i = 0; i < s->nrep; i++) {
            node *n = s->replicas[(s->rr + i) % s->nrep];
            int st = node_state(n);
            if (st == VL_REDIS_READY ||
                (pass == 1 && cl->o.read_from == VL_REDIS_READ_REPLICA && st != VL_REDIS_DOWN)) {
                s->rr = (unsigned)((s->rr + i + 1) % s->nrep);
                return n;
            }
        }
    return cl->o.read_from == VL_REDIS_READ_PREFER_REPLICA ? s->primary : NULL;
}

static void req_wait(creq *r)
{
    vl_redis_cluster *cl = r->cl;

    r->phase = PH_WAIT_MAP;
    ring_push(&cl->waiting, &r->wlink);
    cl->nwaiting++;
    req_arm(r, 0);
    holds_update(cl);
}

/* Sends the request where the map says, makes it wait for a map, or
 * fails it. */
static void req_route(creq *r)
{
    vl_redis_cluster *cl = r->cl;
    node *n = r->target;
    char verb[32];

    if (r->deadline != 0 && vl_loop_now_ms(cl->loop) >= r->deadline) {
        req_timed_out(r);
        return;
    }
    r->target = NULL;
    if (n != NULL && (n->pool != NULL || r->asking)) {
        req_send(r, n);
        return;
    }
    if (cl->map == NULL) {
        if (cl->discovery_failed && !cl->refreshing) {
            refresh_want(cl, 0);
            verb_of(r, verb, sizeof(verb));
            req_fail(r, VL_ECONN, "%s on cluster: no slot map: %s", verb, cl->err);
            return;
        }
        req_wait(r);
        if (!cl->refreshing)
            refresh_want(cl, 0);
        return;
    }
    if (cl->map->slot[r->slot] < 0) {
        refresh_want(cl, 0);
        verb_of(r, verb, sizeof(verb));
        req_fail(r, VL_ECONN, "%s on cluster: slot %u is not served by any node of the map",
                 verb, r->slot);
        return;
    }
    n = pick(cl, &cl->map->shards[cl->map->slot[r->slot]], r);
    if (n == NULL) {
        verb_of(r, verb, sizeof(verb));
        req_fail(r, VL_ECONN, "%s on cluster: no replica of slot %u is up", verb, r->slot);
        return;
    }
    req_send(r, n);
}

static void dispatch_waiting(vl_redis_cluster *cl)
{
    ring list;

    /* Taken off first: routing may make a request wait again. */
    if (ring_empty(&cl->waiting))
        return;
    list = cl->waiting;
    list.next->prev = list.prev->next = &list;
    ring_init(&cl->waiting);
    while (!ring_empty(&list)) {
        creq *r = RING_OF(list.next, creq, wlink);
        ring_del(&r->wlink);
        cl->nwaiting--;
        r->phase = PH_NONE;
        req_arm(r, 0);
        req_route(r);
    }
    holds_update(cl);
}

/* "MOVED 3999 127.0.0.1:7001" into slot and address; 1 when it is one. */
static int redirect_parse(const char *text, const char *word, unsigned *slot, char *addr,
                          size_t n)
{
    size_t wl = strlen(word);
    char *end;
    unsigned long s;
    const char *a;

    if (strncmp(text, word, wl) != 0 || text[wl] != ' ')
        return 0;
    s = strtoul(text + wl + 1, &end, 10);
    if (end == text + wl + 1 || *end != ' ' || s >= VL__CLUSTER_SLOTS)
        return 0;
    a = end + 1;
    if (strlen(a) >= n || strchr(a, ' ') != NULL)
        return 0;
    snprintf(addr, n, "%s", a);
    *slot = (unsigned)s;
    return 1;
}

/* A MOVED or ASK reply: sends the request where it says. 1 when handled
 * (the request went on or failed), 0 when the reply is not one. */
static int req_redirect(creq *r, const char *text, node *from)
{
    vl_redis_cluster *cl = r->cl;
    char addr[ADDR_MAX];
    unsigned slot;
    int moved = redirect_parse(text, "MOVED", &slot, addr, sizeof(addr));
    int ask = !moved && redirect_parse(text, "ASK", &slot, addr, sizeof(addr));
    int bad;
    node *n;

    if (!moved && !ask)
        return 0;
    snprintf(r->last, sizeof(r->last), "%s %u %s", moved ? "MOVED" : "ASK", slot, addr);
    if (++r->redirects > cl->o.max_redirects)
        return 0; /* the reply is the caller's, with a message of its own */
    n = node_of_addr(cl, addr, from, &bad);
    if (n == NULL && bad)
        return 0; /* an address nobody can connect to: the reply is the caller's */
    if (n == NULL) {
        req_fail(r, VL_ENOMEM, "out of memory");
        return 1;
    }
    if (moved) {
        cl->st.moved++;
        map_move(cl, slot, n);
        if (n->pool == NULL && node_pool(n, 0) != VL_OK) {
            req_fail(r, VL_ENOMEM, "out of memory");
            return 1;
        }
        refresh_want(cl, 0);
    } else {
        cl->st.ask++;
        r->asking = 1; /* a node outside the map needs only its ask connection */
    }
    r->target = n;
    req_route(r);
    return 1;
}

static void req_done(vl_future *inner, void *ud)
{
    creq *r = ud;
    vl_redis_cluster *cl = r->cl;
    node *n = r->n;
    int status = vl_future_status(inner);
    const vl_redis_reply *rep = vl_future_redis_reply(inner);

    r->inner = NULL;
    r->n = NULL;
    if (cl == NULL) {
        req_free(r); /* detached by the free: the caller has VL_ECANCELED */
        return;
    }
    n->outstanding--;
    if (n->role == 0 && n->outstanding == 0)
        later(cl);
    if (r->f == NULL) { /* the caller gave up, or the deadline passed */
        req_free(r);
        return;
    }
    r->phase = PH_NONE;
    if (status == VL_ECONN) {
        n->down = 1;
        refresh_want(cl, 0); /* a failover is followed without waiting */
    } else if (status == VL_OK || status == VL_ESERVER) {
        n->down = 0;
    }
    if (status == VL_ESERVER && rep != NULL && vl_redis_reply_type(rep) == VL_REDIS_ERROR) {
        const char *text = vl__redis_reply_text(rep);
        if (req_redirect(r, text, n))
            return;
        if (r->redirects > cl->o.max_redirects) {
            char verb[32];
            verb_of(r, verb, sizeof(verb));
            req_fail(r, VL_ESERVER, "%s on cluster: too many redirections (%zu): last %s", verb,
                     cl->o.max_redirects, r->last);
            return;
        }
        if ((strncmp(text, "TRYAGAIN", 8) == 0 || strncmp(text, "CLUSTERDOWN", 11) == 0) &&
            r->retries < cl->o.max_retries) {
            uint64_t wait = cl->o.retry_backoff_ms;
            size_t k;
            /* Doubled per retry, up to 10 s (and never shifted past 64 bits). */
            for (k = 0; k < r->retries && wait < 10000; k++)
                wait *= 2;
            if (wait > 10000)
                wait = 10000;
            r->retries++;
            cl->st.retries++;
            if (strncmp(text, "CLUSTERDOWN", 11) == 0)
                refresh_want(cl, 0);
            r->phase = PH_BACKOFF;
            req_arm(r, wait > 0 ? wait : 1);
            return;
        }
    }
    {
        char *msg = status != VL_OK ? vl__strdup(vl_future_error(inner)) : NULL;
        void *value = vl_future_take(inner);
        req_finish(r, status, value, msg);
        vl__free(msg);
    }
}

static void req_cancel(void *source, vl_future *f, int status)
{
    creq *r = source;

    VL__UNUSED(f);
    VL__UNUSED(status);
    r->f = NULL;
    vl__timer_stop(&r->timer);
    if (r->phase == PH_WAIT_MAP)
        wait_remove(r->cl, r);
    if (r->inner != NULL) {
        vl_future_cancel(r->inner); /* req_done frees r */
        return;
    }
    req_free(r);
}

static void req_describe(void *source, char *buf, size_t n)
{
    creq *r = source;
    char verb[32];

    verb_of(r, verb, sizeof(verb));
    if (r->n != NULL)
        snprintf(buf, n, "%s on cluster node %s", verb, r->n->addr);
    else
        snprintf(buf, n, "%s on cluster (slot %u)", verb, r->slot);
}

static const vl__source_ops req_ops = {.cancel = req_cancel, .describe = req_describe};

/* The checks every call goes through first: NULL when the request may be
 * made, else a failed future. */
static vl_future *refused(vl_redis_cluster *cl)
{
    if (cl->freed)
        return vl__future_failed(cl->loop, VL_ECLOSED, "cluster freed");
    if (cl->fail_status != VL_OK)
        return vl__future_failed(cl->loop, cl->fail_status, "%s", cl->fail_msg);
    if (vl__loop_closing(cl->loop))
        return vl__future_failed(cl->loop, VL_ECLOSED, "loop is closing");
    return NULL;
}

/* 1 for a command that waits on purpose (BLPOP..., XREAD BLOCK, WAIT):
 * the connection gives it a deadline of its own, its timeout added (see
 * "Command timeouts" in volley/redis.h), which the cluster's deadline
 * must not cut short. */
static int blocking(int argc, const char **argv, const size_t *lens)
{
    static const char *const names[] = {"BLPOP",   "BRPOP",    "BRPOPLPUSH", "BLMOVE",
                                        "BZPOPMIN", "BZPOPMAX", "BLMPOP",     "BZMPOP",
                                        "WAIT",    "WAITAOF"};
    size_t i, l0;
    int k;

    /* Every one of them starts with B, W or X: the common commands leave
     * at the first byte. */
    switch (argv[0][0]) {
    case 'B': case 'b': case 'W': case 'w': case 'X': case 'x':
        break;
    default:
        return 0;
    }
    l0 = lens != NULL ? lens[0] : strlen(argv[0]);
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strlen(names[i]) == l0 && strncasecmp(argv[0], names[i], l0) == 0)
            return 1;
    if ((l0 == 5 && strncasecmp(argv[0], "XREAD", 5) == 0) ||
        (l0 == 10 && strncasecmp(argv[0], "XREADGROUP", 10) == 0))
        for (k = 1; k < argc; k++) {
            size_t l = lens != NULL ? lens[k] : strlen(argv[k]);
            if (l == 5 && strncasecmp(argv[k], "BLOCK", 5) == 0)
                return 1;
            if (l == 7 && strncasecmp(argv[k], "STREAMS", 7) == 0)
                break;
        }
    return 0;
}

/* Makes a request for slot (argv copied) and routes it. */
static vl_future *req_new(vl_redis_cluster *cl, int kind, unsigned slot, int readonly,
                          int primary_only, int argc, const char **argv, const size_t *lens)
{
    size_t total = 0, i;
    char *data;
    vl_future *f;
    creq *r;

    for (i = 0; i < (size_t)argc; i++)
        total += (lens != NULL ? lens[i] : strlen(argv[i])) + 1;
    /* One allocation: the request, then its copy of the arguments (kept
     * for a redirection), which sizeof(creq) leaves aligned. */
    r = vl__malloc(sizeof(*r) + (size_t)argc * (sizeof(char *) + sizeof(size_t)) + total);
    if (r == NULL)
        return NULL;
    /* Zeroed up to the message buffer, which a redirection fills. */
    memset(r, 0, offsetof(creq, last));
    r->last[0] = '\0';
    r->argv = (const char **)(void *)(r + 1);
    r->lens = (size_t *)(void *)(r->argv + argc);
    data = (char *)(r->lens + argc);
    for (i = 0; i < (size_t)argc; i++) {
        size_t l = lens != NULL ? lens[i] : strlen(argv[i]);
        memcpy(data, argv[i], l);
        data[l] = '\0';
        r->argv[i] = data;
        r->lens[i] = l;
        data += l + 1;
    }
    r->argc = argc;
    r->cl = cl;
    ring_init(&r->link);
    ring_init(&r->wlink);
    r->kind = kind;
    r->slot = slot;
    r->readonly = readonly;
    r->primary_only = primary_only;
    vl__timer_init(&r->timer, cl->loop, req_timer_cb, r);
    f = r->f = vl__future_make(cl->loop, &req_ops, r);
    if (f == NULL) {
        vl__free(r);
        return NULL;
    }
    if (cl->o.command_timeout_ms > 0 && (kind != K_CMD || !blocking(argc, argv, lens)))
        r->deadline = vl_loop_now_ms(cl->loop) + cl->o.command_timeout_ms;
    ring_push(&cl->active, &r->link);
    cl->st.commands++;
    /* No timer yet: a first send goes to a pool whose own command timeout
     * (the same command_timeout_ms, from now) bounds it. The timer runs
     * only for what the pool does not see: waiting for a map, a backoff,
     * and the sends after a redirection, with the time left. */
    req_route(r);
    return f;
}

/* refused(), and the checks of a command's arguments. */
static vl_future *bad_command(vl_redis_cluster *cl, int argc, const char **argv)
{
    vl_future *bad = refused(cl);
    int i;

    if (bad != NULL)
        return bad;
    if (argc <= 0 || argv == NULL)
        return vl__future_failed(cl->loop, VL_EINVAL, "empty command");
    for (i = 0; i < argc; i++)
        if (argv[i] == NULL)
            return vl__future_failed(cl->loop, VL_EINVAL, "argument %d is NULL", i);
    return NULL;
}

vl_future *vl_redis_cluster_command_argv(vl_redis_cluster *cl, int argc, const char **argv,
                                         const size_t *argvlen)
{
    vl__route rt;
    char why[256];
    vl_future *bad;
    int kind;

    if (cl == NULL)
        return NULL;
    if ((bad = bad_command(cl, argc, argv)) != NULL)
        return bad;
    why[0] = '\0';
    kind = vl__redis_route(argc, argv, argvlen, &rt, why, sizeof(why));
    if (kind != VL__ROUTE_KEY)
        return vl__future_failed(cl->loop,
                                 kind == VL__ROUTE_STATEFUL ? VL_EUNSUPPORTED : VL_EINVAL, "%s",
                                 why[0] ? why : "command cannot be routed");
    return req_new(cl, K_CMD, rt.slot, rt.readonly, 0, argc, argv, argvlen);
}

vl_future *vl_redis_cluster_commandv(vl_redis_cluster *cl, const char *fmt, va_list ap)
{
    char *cmd = NULL;
    char why[128];
    long long len;
    const char **argv;
    size_t *lens;
    long argc;
    vl_future *f;

    if (cl == NULL)
        return NULL;
    if (fmt == NULL)
        return vl__future_failed(cl->loop, VL_EINVAL, "no command");
    len = vl__redis_formatv(&cmd, fmt, ap, why, sizeof(why));
    if (len < 0)
        return vl__redis_format_failed(cl->loop, len, why);
    /* The formatted command is "*N\r\n...": N arguments. */
    argc = len > 1 && cmd[0] == '*' ? strtol(cmd + 1, NULL, 10) : 0;
    if (argc <= 0 || argc > len) {
        vl__redis_cmd_free(cmd);
        return vl__future_failed(cl->loop, VL_EINVAL, "empty command");
    }
    argv = vl__malloc((size_t)argc * (sizeof(*argv) + sizeof(*lens)));
    if (argv == NULL) {
        vl__redis_cmd_free(cmd);
        return NULL;
    }
    lens = (size_t *)(void *)(argv + argc);
    if (vl__redis_cmd_split(cmd, (size_t)len, argv, lens, (int)argc) != (int)argc) {
        vl__free(argv);
        vl__redis_cmd_free(cmd);
        return vl__future_failed(cl->loop, VL_EINVAL, "empty command");
    }
    f = vl_redis_cluster_command_argv(cl, (int)argc, argv, lens);
    vl__free(argv);
    vl__redis_cmd_free(cmd);
    return f;
}

vl_future *vl_redis_cluster_command(vl_redis_cluster *cl, const char *fmt, ...)
{
    va_list ap;
    vl_future *f;

    va_start(ap, fmt);
    f = vl_redis_cluster_commandv(cl, fmt, ap);
    va_end(ap);
    return f;
}

vl_future *vl_redis_cluster_command_key(vl_redis_cluster *cl, const char *key, size_t keylen,
                                        int argc, const char **argv, const size_t *argvlen)
{
    vl_future *bad;

    if (cl == NULL)
        return NULL;
    if ((bad = bad_command(cl, argc, argv)) != NULL)
        return bad;
    if (key == NULL)
        return vl__future_failed(cl->loop, VL_EINVAL, "no key");
    return req_new(cl, K_CMD, vl__redis_slot(key, keylen), 0, 1, argc, argv, argvlen);
}

vl_future *vl_redis_cluster_batch(vl_redis_cluster *cl, const vl_redis_cmd *cmds, size_t n)
{
    vl_future **fs, *all;
    size_t i;

    if (cl == NULL)
        return NULL;
    if (n == 0 || cmds == NULL)
        return vl__future_failed(cl->loop, VL_EINVAL, n == 0 ? "empty batch" : "no commands");
    fs = vl__calloc(n, sizeof(*fs));
    if (fs == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        fs[i] = vl_redis_cluster_command_argv(cl, cmds[i].argc, (const char **)cmds[i].argv,
                                              cmds[i].argvlen);
        if (fs[i] == NULL) {
            while (i-- > 0)
                vl_future_free(fs[i]);
            vl__free(fs);
            return NULL;
        }
    }
    all = vl_future_all(cl->loop, fs, n);
    vl__free(fs);
    return all;
}

vl_future *vl_redis_cluster_lease(vl_redis_cluster *cl, const char *key, size_t keylen)
{
    static const char *const lease[] = {"LEASE"};
    vl_future *bad;

    if (cl == NULL)
        return NULL;
    if ((bad = refused(cl)) != NULL)
        return bad;
    if (key == NULL)
        return vl__future_failed(cl->loop, VL_EINVAL, "no key");
    return req_new(cl, K_LEASE, vl__redis_slot(key, keylen), 0, 1, 1, (const char **)lease,
                   NULL);
}

/* ---- readiness and refresh futures ---- */

static void waiter_unlink(vl_redis_cluster *cl, waiter *w)
{
    ring_del(&w->link);
    holds_update(cl);
}

static void waiter_finish(vl_redis_cluster *cl, waiter *w, int status, const char *msg)
{
    vl_future *f = w->f;

    waiter_unlink(cl, w);
    vl__future_set_source(f, NULL, NULL);
    if (status == VL_OK)
        vl__future_complete(f, VL_OK, NULL, VL__VAL_NONE, NULL, NULL);
    else
        vl__future_fail(f, status, "%s", msg);
    vl__free(w);
}

static void probe_done(vl_future *all, void *ud)
{
    probe *p = ud;
    vl_redis_cluster *cl = p->cl;
    size_t i;
    const char *err = NULL;

    vl__free(p);
    if (cl == NULL)
        return;
    cl->probe = NULL;
    for (i = 0; i < vl_future_count(all); i++) {
        vl_future *c = vl_future_child(all, i);
        if (vl_future_status(c) == VL_ECONN)
            err = vl_future_error(c);
    }
    if (err != NULL) {
        char m[320];
        snprintf(m, sizeof(m), "cluster: a primary is down: %s", err);
        set_error(cl, m);
        waiters_finish(cl, W_READY, VL_ECONN, m);
        return;
    }
    ready_check(cl);
}

/* Completes the ready waiters that can be told now; starts a probe of the
 * primaries' pools for the others. */
static void ready_check(vl_redis_cluster *cl)
{
    char why[REASON_MAX + 128];
    int any = 0, status = VL_OK;
    size_t i, np = 0;
    vl_future **fs;
    vl_future *all;
    probe *p;
    ring *e;

    for (e = cl->waiters.next; e != &cl->waiters; e = e->next)
        if (RING_OF(e, waiter, link)->kind == W_READY)
            any = 1;
    if (!any || cl->probe != NULL)
        return;
    why[0] = '\0';
    if (cl->map == NULL) {
        if (!cl->discovery_failed)
            return; /* the refresh under way will tell */
        status = VL_ECONN;
        snprintf(why, sizeof(why), "%s", cl->err);
    } else {
        uncovered(cl->map, why, sizeof(why));
        if (why[0] != '\0') {
            status = VL_ECONN;
        } else {
            int all_up = 1;
            for (i = 0; i < cl->map->n && status == VL_OK; i++) {
                node *n = cl->map->shards[i].primary;
                if (cl->map->shards[i].nslots == 0 || node_state(n) == VL_REDIS_READY)
                    continue;
                all_up = 0;
                if (pool_unopened(n)) {
                    /* Its first connection could not even be made (out
                     * of memory): a pool never opens it later, so the
                     * pool is made again, or readiness fails. */
                    if (node_idle(n)) {
                        node_pool_drop(n);
                        node_pool(n, 0);
                    }
                    if (n->pool == NULL || pool_unopened(n)) {
                        status = VL_ENOMEM;
                        snprintf(why, sizeof(why), "out of memory opening a connection to %s",
                                 n->addr);
                    }
                }
            }
            if (!all_up && status == VL_OK) {
                /* Ask the pools; check again when they answered. */
                fs = vl__calloc(cl->map->n, sizeof(*fs));
                p = vl__calloc(1, sizeof(*p));
                for (i = 0; fs != NULL && p != NULL && i < cl->map->n; i++)
                    if (cl->map->shards[i].nslots > 0) {
                        fs[np] = vl_redis_pool_ready(cl->map->shards[i].primary->pool);
                        if (fs[np] != NULL)
                            np++;
                    }
                all = fs != NULL && p != NULL ? vl_future_all(cl->loop, fs, np) : NULL;
                vl__free(fs);
                if (all == NULL) {
                    vl__free(p);
                    status = VL_ENOMEM;
                    snprintf(why, sizeof(why), "out of memory");
                } else {
                    p->cl = cl;
                    cl->probe = p;
                    vl_future_then(all, probe_done, p);
                    return;
                }
            }
        }
    }
    waiters_finish(cl, W_READY, status, why);
}

static void waiter_cancel(void *source, vl_future *f, int status)
{
    waiter *w = source;

    VL__UNUSED(f);
    VL__UNUSED(status);
    waiter_unlink(w->cl, w);
    vl__free(w);
}

static void waiter_describe(void *source, char *buf, size_t n)
{
    waiter *w = source;

    snprintf(buf, n, "cluster %s", w->kind == W_READY ? "readiness" : "refresh");
}

static const vl__source_ops waiter_ops = {.cancel = waiter_cancel, .describe = waiter_describe};

static vl_future *waiter_new(vl_redis_cluster *cl, int kind)
{
    waiter *w;
    vl_future *f, *bad;

    if (cl == NULL)
        return NULL;
    if ((bad = refused(cl)) != NULL)
        return bad;
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
    w->kind = kind;
    ring_push(&cl->waiters, &w->link);
    holds_update(cl);
    if (kind == W_READY)
        ready_check(cl);
    else
        refresh_want(cl, 1);
    return f;
}

vl_future *vl_redis_cluster_ready(vl_redis_cluster *cl)
{
    return waiter_new(cl, W_READY);
}

vl_future *vl_redis_cluster_refresh(vl_redis_cluster *cl)
{
    return waiter_new(cl, W_REFRESH);
}

/* The ctl connections keep vl_loop_run running while they connect or wait
 * for an answer only when somebody waits for what they will say. */
static void holds_update(vl_redis_cluster *cl)
{
    int want = !cl->freed && (cl->nwaiting > 0 || !ring_empty(&cl->waiters) || cl->ext_holds > 0);
    size_t i;

    if (want == cl->holding)
        return;
    cl->holding = want;
    for (i = 0; i < cl->nnodes; i++)
        if (cl->nodes[i]->ctl != NULL)
            vl__redis_hold(cl->nodes[i]->ctl, want);
}

/* ---- the map, for operators ---- */

size_t vl_redis_cluster_nodes(const vl_redis_cluster *cl)
{
    return cl != NULL && cl->map != NULL ? cl->map->norder : 0;
}

int vl_redis_cluster_node(const vl_redis_cluster *cl, size_t i, vl_redis_node_info *out)
{
    vl_redis_node_info full;
    const node *n;
    char why[160];
    size_t k;

    if (cl == NULL || out == NULL || cl->map == NULL || i >= cl->map->norder)
        return VL_EINVAL;
    if (vl__opts_check(out, &info_desc, why, sizeof(why)) != VL_OK)
        return VL_EINVAL;
    n = cl->map->order[i];
    memset(&full, 0, sizeof(full));
    full.struct_size = out->struct_size;
    snprintf(full.addr, sizeof(full.addr), "%.63s", n->addr); /* cut for display only */
    snprintf(full.id, sizeof(full.id), "%s", n->id);
    full.role = n->role;
    for (k = 0; k < cl->map->norder; k++)
        if (cl->map->order[k] == cl->map->shards[n->shard].primary)
            full.primary = k;
    full.slots = cl->map->shards[n->shard].nslots;
    full.state = node_state(n);
    full.rtt_ms = n->rtt_ms;
    full.requests = n->requests;
    memcpy(out, &full, vl__opts_prefix(&info_desc, out->struct_size));
    return VL_OK;
}

int vl_redis_cluster_stats_get(const vl_redis_cluster *cl, vl_redis_cluster_stats *out)
{
    vl_redis_cluster_stats full;
    char why[160];
    size_t i;

    if (cl == NULL || out == NULL)
        return VL_EINVAL;
    if (vl__opts_check(out, &stats_desc, why, sizeof(why)) != VL_OK)
        return VL_EINVAL;
    full = cl->st;
    full.struct_size = out->struct_size;
    full.connects = cl->gone_connects;
    full.connect_errors = cl->gone_errors;
    for (i = 0; i < cl->nnodes; i++) {
        uint64_t a, e;
        node_counters(cl->nodes[i], &a, &e);
        full.connects += a;
        full.connect_errors += e;
    }
    memcpy(out, &full, vl__opts_prefix(&stats_desc, out->struct_size));
    return VL_OK;
}

const char *vl_redis_cluster_error(const vl_redis_cluster *cl)
{
    if (cl == NULL)
        return "";
    if (cl->fail_status != VL_OK && cl->fail_msg != NULL)
        return cl->fail_msg;
    return cl->err;
}

/* ---- for the subscriber and the fan-out ---- */

vl_loop *vl__cluster_loop(const vl_redis_cluster *cl)
{
    return cl->loop;
}

const char *vl__cluster_slot_url(const vl_redis_cluster *cl, unsigned slot, const char **addr)
{
    const node *n;

    if (cl->map == NULL || slot >= VL__CLUSTER_SLOTS || cl->map->slot[slot] < 0)
        return NULL;
    n = cl->map->shards[cl->map->slot[slot]].primary;
    if (addr != NULL)
        *addr = n->addr;
    return n->url;
}

int vl__cluster_watch(vl_redis_cluster *cl, vl__cluster_map_fn fn, void *ud)
{
    if (cl->nwatchers == MAX_WATCHERS)
        return VL_EBUSY;
    cl->watchers[cl->nwatchers].fn = fn;
    cl->watchers[cl->nwatchers].ud = ud;
    cl->nwatchers++;
    return VL_OK;
}

void vl__cluster_unwatch(vl_redis_cluster *cl, vl__cluster_map_fn fn, void *ud)
{
    size_t i;

    for (i = 0; i < cl->nwatchers; i++)
        if (cl->watchers[i].fn == fn && cl->watchers[i].ud == ud) {
            memmove(&cl->watchers[i], &cl->watchers[i + 1],
                    (cl->nwatchers - i - 1) * sizeof(cl->watchers[0]));
            cl->nwatchers--;
            return;
        }
}

void vl__cluster_moved(vl_redis_cluster *cl, unsigned slot, const char *addr)
{
    node *n;
    int bad;

    if (cl->freed || addr == NULL)
        return;
    n = node_of_addr(cl, addr, NULL, &bad);
    if (n == NULL)
        return;
    map_move(cl, slot, n);
    refresh_want(cl, 0);
    later(cl); /* a node made for nothing goes again */
}

void vl__cluster_sub_options(const vl_redis_cluster *cl, vl_redis_sub_options *o)
{
    if (o->struct_size == 0)
        vl_redis_sub_options_init(o);
    o->connect_timeout_ms = cl->o.connect_timeout_ms;
    o->reconnect_min_ms = cl->o.reconnect_min_ms;
    o->reconnect_max_ms = cl->o.reconnect_max_ms;
}

size_t vl__cluster_targets(vl_redis_cluster *cl, int which, vl_redis_pool **pools,
                           const char **addrs, size_t max)
{
    size_t i, k = 0;

    if (cl->map == NULL)
        return 0;
    for (i = 0; i < cl->map->norder; i++) {
        node *n = cl->map->order[i];
        if (which == VL_REDIS_CLUSTER_PRIMARIES && n->role != VL_REDIS_ROLE_PRIMARY)
            continue;
        if (k < max) {
            if (pools != NULL)
                pools[k] = n->pool;
            if (addrs != NULL)
                addrs[k] = n->addr;
        }
        k++;
    }
    return k;
}

void vl__cluster_refresh_soon(vl_redis_cluster *cl)
{
    refresh_want(cl, 0);
}

void vl__cluster_hold(vl_redis_cluster *cl, int delta)
{
    cl->ext_holds += delta;
    if (cl->ext_holds < 0)
        cl->ext_holds = 0;
    holds_update(cl);
}

int vl__cluster_status(const vl_redis_cluster *cl, const char **msg)
{
    if (msg != NULL)
        *msg = cl->fail_status != VL_OK ? cl->fail_msg : "";
    return cl->fail_status;
}

/* ---- lifecycle ---- */

static void release(vl__handle *hd)
{
    vl_redis_cluster *cl =
        (vl_redis_cluster *)(void *)((char *)hd - offsetof(vl_redis_cluster, handle));

    vl__free(cl);
}

static void handle_free(vl__handle *hd)
{
    vl_redis_cluster_free(
        (vl_redis_cluster *)(void *)((char *)hd - offsetof(vl_redis_cluster, handle)));
}

void vl_redis_cluster_free(vl_redis_cluster *cl)
{
    creq *r;
    size_t i;

    if (cl == NULL || cl->freed)
        return;
    cl->freed = 1;
    vl__handle_remove(cl->loop, &cl->handle);
    vl__defer_cancel(cl->loop, &cl->defer);
    ut_stop(&cl->ref_timer);
    ut_stop(&cl->step_timer);
    ut_stop(&cl->ping_timer);
    if (cl->probe != NULL) {
        cl->probe->cl = NULL; /* its callback only frees it */
        cl->probe = NULL;
    }
    waiters_finish(cl, -1, VL_ECANCELED, "cluster freed");
    while (!ring_empty(&cl->waiting)) {
        r = RING_OF(cl->waiting.next, creq, wlink);
        wait_remove(cl, r);
        req_fail(r, VL_ECANCELED, "cluster freed");
    }
    /* The rest: the caller hears now; the inner futures' cancellations
     * reach req_done later, which then only frees the request. */
    while (!ring_empty(&cl->active)) {
        r = RING_OF(cl->active.next, creq, link);
        ring_del(&r->link);
        vl__timer_stop(&r->timer);
        r->cl = NULL;
        if (r->f != NULL) {
            vl_future *f = r->f;
            r->f = NULL;
            vl__future_set_source(f, NULL, NULL);
            vl__future_fail(f, VL_ECANCELED, "cluster freed");
        }
        if (r->inner == NULL)
            req_free(r);
    }
    for (i = 0; i < cl->nnodes; i++)
        node_close(cl->nodes[i]);
    vl__free(cl->nodes);
    cl->nodes = NULL;
    cl->nnodes = 0;
    map_free(cl->map);
    cl->map = NULL;
    vl__free(cl->cands);
    vl__free(cl->seeds);
    if (cl->url_pre != NULL)
        memset(cl->url_pre, 0, strlen(cl->url_pre));
    vl__free(cl->url_pre);
    vl__free(cl->url_post);
    vl__free(cl->fail_msg);
    cl->fail_msg = NULL;
    if (cl->busy > 0) {
        cl->release_pending = 1; /* the watchers' loop still holds cl */
        return;
    }
    vl__handle_bury(cl->loop, &cl->handle, release);
}

static const char *const cluster_keys[] = {"read_from"};

/* The cluster's own parameters, from the URL. */
static int url_params(vl_redis_cluster *cl, const char *fixed, const char *raw, char *why,
                      size_t n)
{
    vl__url u;
    const char *v;
    int rc = vl__url_parse(raw, &u, why, n);

    if (rc != VL_OK)
        return rc;
    v = vl__url_param(&u, "read_from");
    if (v != NULL) {
        if (strcmp(v, "primary") == 0)
            cl->o.read_from = VL_REDIS_READ_PRIMARY;
        else if (strcmp(v, "prefer_replica") == 0)
            cl->o.read_from = VL_REDIS_READ_PREFER_REPLICA;
        else if (strcmp(v, "replica") == 0)
            cl->o.read_from = VL_REDIS_READ_REPLICA;
        else if (strcmp(v, "nearest") == 0)
            cl->o.read_from = VL_REDIS_READ_NEAREST;
        else {
            snprintf(why, n,
                     "cluster URL: bad value for read_from (primary, prefer_replica, replica "
                     "or nearest)");
            rc = VL_EINVAL;
        }
    }
    vl__url_clear(&u);
    if (rc == VL_OK && (rc = vl__url_parse(fixed, &u, why, n)) == VL_OK) {
        if (u.path != NULL && u.path[0] != '\0' && strcmp(u.path, "0") != 0) {
            snprintf(why, n, "cluster URL: a Redis Cluster has only database 0");
            rc = VL_EINVAL;
        }
        vl__url_clear(&u);
    }
    return rc;
}

/* "redis+cluster://" becomes "redis://" (and rediss likewise); a plain
 * redis:// or rediss:// URL stays. NULL for another scheme (*bad set) or
 * out of memory. */
static char *scheme_fix(const char *url, int *tls, int *bad)
{
    static const struct {
        const char *from, *to;
        int tls;
    } map[] = {{"redis+cluster://", "redis://", 0},
               {"rediss+cluster://", "rediss://", 1},
               {"redis://", "redis://", 0},
               {"rediss://", "rediss://", 1}};
    size_t i;

    *bad = 0;
    for (i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        size_t l = strlen(map[i].from);
        if (strncasecmp(url, map[i].from, l) == 0) {
            *tls = map[i].tls;
            return vl__asprintf("%s%s", map[i].to, url + l);
        }
    }
    *bad = 1;
    return NULL;
}

/* Splits a one-host URL around its host:port: the part before (scheme and
 * user info) and after (path and query). */
static int url_cut(vl_redis_cluster *cl, const char *url)
{
    const char *p = strstr(url, "://") + 3;
    const char *q = strchr(p, '?');
    const char *at = NULL, *h, *e;

    if (q == NULL)
        q = p + strlen(p);
    for (h = p; h < q; h++)
        if (*h == '@')
            at = h;
    h = at != NULL ? at + 1 : p;
    e = h;
    if (*e == '[')
        e = strchr(e, ']') != NULL ? strchr(e, ']') : e;
    e += strcspn(e, "/?");
    cl->url_pre = vl__strndup(url, (size_t)(h - url));
    cl->url_post = vl__strdup(e);
    return cl->url_pre != NULL && cl->url_post != NULL ? VL_OK : VL_ENOMEM;
}

/* Reads the URL into seeds and the node URL template. */
static int url_setup(vl_redis_cluster *cl, const char *url, char *why, size_t whyn)
{
    char **urls = NULL;
    size_t n = 0, i;
    int rc, tls = 0, bad;

    if (url == NULL) {
        snprintf(why, whyn, "cluster: no URL");
        return VL_EINVAL;
    }
    rc = vl__url_split_hosts(url, 64, &urls, &n, why, whyn);
    if (rc != VL_OK)
        return rc;
    cl->seeds = vl__calloc(n, ADDR_MAX);
    if (cl->seeds == NULL)
        rc = VL_ENOMEM;
    for (i = 0; rc == VL_OK && i < n; i++) {
        char *bare = vl__url_drop_params(urls[i], cluster_keys, 1);
        char *fixed = bare != NULL ? scheme_fix(bare, &tls, &bad) : NULL;
        char *msg = NULL;
        vl__url u;
        if (bare != NULL)
            memset(bare, 0, strlen(bare));
        vl__free(bare);
        if (fixed == NULL) {
            if (bare != NULL && bad)
                snprintf(why, whyn,
                         "cluster URL: the scheme must be redis+cluster://, rediss+cluster://, "
                         "redis:// or rediss://");
            rc = bare != NULL && bad ? VL_EINVAL : VL_ENOMEM;
            break;
        }
        if (i == 0)
            rc = url_params(cl, fixed, urls[0], why, whyn);
        if (rc == VL_OK) {
            rc = vl__redis_url_error(cl->loop, fixed, &msg);
            if (rc != VL_OK)
                snprintf(why, whyn, "cluster seed %zu: %s", i + 1,
                         msg != NULL ? msg : "bad URL");
            vl__free(msg);
        }
        if (rc == VL_OK && (rc = vl__url_parse(fixed, &u, why, whyn)) == VL_OK) {
            if (u.host[0] == '\0') {
                snprintf(why, whyn, "cluster seed %zu: a cluster node needs a host and port",
                         i + 1);
                rc = VL_EINVAL;
            } else {
                addr_make(cl->seeds[i], ADDR_MAX, u.host, u.port ? u.port : 6379);
                cl->nseeds = i + 1;
            }
            vl__url_clear(&u);
        }
        if (rc == VL_OK && i == 0) {
            cl->tls = tls;
            rc = url_cut(cl, fixed);
        }
        memset(fixed, 0, strlen(fixed));
        vl__free(fixed);
    }
    vl__url_list_free(urls, n);
    return rc;
}

vl_redis_cluster *vl_redis_cluster_new(vl_loop *loop, const char *url,
                                       const vl_redis_cluster_options *opts)
{
    vl_redis_cluster *cl;
    char why[256] = "out of memory";
    int rc;

    if (loop == NULL)
        return NULL;
    cl = vl__calloc(1, sizeof(*cl));
    if (cl == NULL)
        return NULL;
    cl->loop = loop;
    ring_init(&cl->active);
    ring_init(&cl->waiting);
    ring_init(&cl->waiters);
    opts_defaults(&cl->o);
    ut_init(&cl->ref_timer, loop, ref_timer_cb, cl);
    ut_init(&cl->step_timer, loop, step_expired, cl);
    ut_init(&cl->ping_timer, loop, ping_cb, cl);
    cl->defer.cb = defer_cb;
    /* Registered before its pools, so that vl_loop_free frees the cluster
     * first (handles go in order), while its pools still stand. */
    vl__handle_add(loop, &cl->handle, handle_free);
    rc = vl__opts_copy(&cl->o, opts, &opts_desc, why, sizeof(why));
    if (rc == VL_OK && (cl->o.read_from < VL_REDIS_READ_PRIMARY ||
                        cl->o.read_from > VL_REDIS_READ_NEAREST)) {
        snprintf(why, sizeof(why), "options: read_from %d unknown", cl->o.read_from);
        rc = VL_EINVAL;
    }
    if (cl->o.node_max_size == 0)
        cl->o.node_max_size = 1;
    if (rc == VL_OK)
        rc = url_setup(cl, url, why, sizeof(why));
    if (rc == VL_ENOMEM) {
        vl_redis_cluster_free(cl);
        return NULL;
    }
    if (rc != VL_OK) {
        cl->fail_status = rc;
        cl->fail_msg = vl__strdup(why);
        if (cl->fail_msg == NULL) {
            vl_redis_cluster_free(cl);
            return NULL;
        }
        return cl;
    }
    if (cl->o.read_from == VL_REDIS_READ_NEAREST)
        ut_start(&cl->ping_timer, PING_PERIOD_MS);
    refresh_begin(cl);
    return cl;
}
