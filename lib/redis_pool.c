/* lib/redis_pool.c - a pool of Redis connections to one endpoint.
 *
 * Routing. Once the pool has all its connections, a command goes to the
 * less busy of two connections taken in turn (the "power of two choices"):
 * O(1) per command, and a slow connection, whose pending count grows, is
 * chosen less. A scan over every connection, picking the one with the fewest
 * commands pending, is the fallback while the pool grows or when a candidate
 * is down or leased. When even the best connection is busy the pool opens
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
 * Re-entrancy. Connection events can arrive while hiredis is on the stack,
 * and admitting a waiting request can itself complete a future and report
 * another event. pump() therefore never recurses: a nested call only asks
 * the running one to go round again.
 */
#include "redis_internal.h"
#include "url.h"

#include <string.h>

typedef struct pslot pslot;
typedef struct pwait pwait;

struct pslot {
    vl_redis_pool *p;
    vl_redis *c;
    vl_redis_lease *lease; /* non-NULL while leased out */
};

struct pwait {
    pwait *prev, *next;
    vl_redis_pool *p;
    vl_future *f;
    char *cmd;          /* a command waiting for room; NULL for a lease */
    size_t len;
    uint64_t deadline;  /* loop ms; 0: no deadline */
    int is_lease;
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
    int invalid_status; /* VL_OK, or what every command fails with */
    char *invalid_msg;
    pslot **slots;      /* max_size entries */
    unsigned nslots;
    unsigned cursor;    /* where the next two routing candidates start */
    pqueue cmds;        /* commands waiting for room */
    pqueue leases;      /* lease requests */
    vl__timer timer;
    size_t pending;
    int pumping, pump_again;
    int closing;
    vl_redis_stats st;  /* the counters; gauges are computed on demand */
    uint64_t gone_connects, gone_reconnects, gone_errors; /* of closed connections */
};

static void pump(vl_redis_pool *p);

void vl_redis_pool_options_init(vl_redis_pool_options *o)
{
    if (o == NULL)
        return;
    memset(o, 0, sizeof(*o));
    o->max_size = 8;
    o->min_idle = 1;
    o->acquire_timeout_ms = 5000;
    o->connect_timeout_ms = 5000;
    o->command_timeout_ms = 0;
    o->reconnect_min_ms = 100;
    o->reconnect_max_ms = 5000;
    o->max_pending = 0;
    o->on_full = VL_REDIS_POOL_FAIL;
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

static void wait_drop(vl_redis_pool *p, pwait *w)
{
    q_unlink(w->is_lease ? &p->leases : &p->cmds, w);
    vl__redis_cmd_free(w->cmd);
    vl__free(w);
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

static void timer_cb(vl__timer *t, void *ud)
{
    vl_redis_pool *p = ud;
    uint64_t now = vl_loop_now_ms(p->loop);
    pwait *w;

    VL__UNUSED(t);
    while ((w = p->cmds.head) != NULL && w->deadline != 0 && w->deadline <= now) {
        vl_future *f = w->f;
        wait_drop(p, w);
        count_result(p, VL_ETIMEDOUT);
        vl__future_set_source(f, NULL, NULL);
        vl__future_fail(f, VL_ETIMEDOUT, "pool %s: no room within %u ms (max_pending %zu)",
                        p->display, (unsigned)p->o.acquire_timeout_ms, p->o.max_pending);
    }
    while ((w = p->leases.head) != NULL && w->deadline != 0 && w->deadline <= now) {
        vl_future *f = w->f;
        wait_drop(p, w);
        count_result(p, VL_ETIMEDOUT);
        vl__future_set_source(f, NULL, NULL);
        vl__future_fail(f, VL_ETIMEDOUT, "pool %s: no connection free for a lease within %u ms",
                        p->display, (unsigned)p->o.acquire_timeout_ms);
    }
    arm_timer(p);
}

static void wait_cancel(void *source, vl_future *f, int status)
{
    pwait *w = source;
    vl_redis_pool *p = w->p;

    VL__UNUSED(f);
    count_result(p, status);
    wait_drop(p, w);
    arm_timer(p);
}

static const vl__source_ops wait_ops = {wait_cancel};

static vl_future *wait_add(vl_redis_pool *p, char *cmd, size_t len, int is_lease)
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
    w->is_lease = is_lease;
    if (p->o.acquire_timeout_ms > 0)
        w->deadline = vl_loop_now_ms(p->loop) + p->o.acquire_timeout_ms;
    q_append(is_lease ? &p->leases : &p->cmds, w);
    if (w->deadline != 0 && !vl__timer_active(&p->timer))
        arm_timer(p);
    return f;
}

/* ---- connections ---- */

static void pool_event(vl_redis *c, int event, int status, void *ud)
{
    pslot *s = ud;
    vl_redis_pool *p = s->p;

    VL__UNUSED(c);
    switch (event) {
    case VL__REDIS_EV_DONE:
        p->pending--;
        count_result(p, status);
        break;
    case VL__REDIS_EV_DOWN:
        break;
    default:
        break;
    }
    if (!p->closing)
        pump(p);
}

static pslot *slot_open(vl_redis_pool *p)
{
    pslot *s;

    if (p->nslots >= p->o.max_size || p->closing)
        return NULL;
    s = vl__calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->p = p;
    p->slots[p->nslots++] = s;
    s->c = vl__redis_new_pooled(p->loop, p->url, &p->copts, pool_event, s);
    if (s->c == NULL) {
        p->nslots--;
        vl__free(s);
        return NULL;
    }
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
    vl__free(s);
}

/* The connection for the next command, or NULL when every one is down. */
static pslot *pick(vl_redis_pool *p)
{
    pslot *ready = NULL, *connecting = NULL;
    size_t rp = 0, cp = 0;
    unsigned i;

    if (p->nslots >= 2 && p->nslots == p->o.max_size) {
        pslot *a = p->slots[p->cursor % p->nslots];
        pslot *b = p->slots[(p->cursor + 1) % p->nslots];
        p->cursor++;
        if (a->lease == NULL && b->lease == NULL && vl_redis_state(a->c) == VL_REDIS_READY &&
            vl_redis_state(b->c) == VL_REDIS_READY)
            return vl_redis_pending(b->c) < vl_redis_pending(a->c) ? b : a;
    }
    for (i = 0; i < p->nslots; i++) {
        pslot *s = p->slots[i];
        size_t n;
        int st;
        if (s->lease != NULL)
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
    if (connecting == NULL && (ready == NULL || rp > 0) && p->nslots < p->o.max_size) {
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
        unsigned i, leased = 0;
        int status = VL_ECONN;
        char *why;
        for (i = 0; i < p->nslots; i++)
            leased += p->slots[i]->lease != NULL;
        if (leased == p->nslots && leased > 0) {
            status = VL_EBUSY;
            why = vl__asprintf("pool %s: all %u connections are leased", p->display, leased);
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
    out = vl__redis_send(s->c, f, cmd, len);
    if (out == NULL)
        p->pending--; /* out of memory before anything was counted out */
    return out;
}

static void lease_value_free(void *v)
{
    vl_redis_lease_release(v);
}

/* A ready connection with nothing pending and no lease, or NULL. */
static pslot *idle_slot(vl_redis_pool *p)
{
    unsigned i;

    for (i = 0; i < p->nslots; i++) {
        pslot *s = p->slots[i];
        if (s->lease == NULL && vl__redis_clean(s->c, vl__redis_epoch(s->c)))
            return s;
    }
    return NULL;
}

static int any_connecting(vl_redis_pool *p)
{
    unsigned i;

    for (i = 0; i < p->nslots; i++)
        if (p->slots[i]->lease == NULL && vl_redis_state(p->slots[i]->c) == VL_REDIS_CONNECTING)
            return 1;
    return 0;
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
    l->loop = p->loop;
    l->p = p;
    l->s = s;
    l->epoch = vl__redis_epoch(s->c);
    s->lease = l;
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
        while ((w = p->cmds.head) != NULL && !p->closing &&
               (p->o.max_pending == 0 || p->pending < p->o.max_pending)) {
            vl_future *f = w->f;
            char *cmd = w->cmd;
            size_t len = w->len;
            w->cmd = NULL;
            wait_drop(p, w);
            route(p, f, cmd, len);
        }
        while (p->leases.head != NULL && !p->closing) {
            pslot *s = idle_slot(p);
            if (s == NULL) {
                if (!any_connecting(p))
                    slot_open(p);
                break;
            }
            lease_give(p, p->leases.head, s);
        }
    } while (p->pump_again && !p->closing);
    p->pumping = 0;
    if (!p->closing)
        arm_timer(p);
}

/* ---- public API ---- */

static void pool_handle_free(vl__handle *h)
{
    vl_redis_pool *p = (vl_redis_pool *)(void *)((char *)h - offsetof(vl_redis_pool, handle));

    p->registered = 0;
    vl_redis_pool_free(p);
}

vl_redis_pool *vl_redis_pool_new(vl_loop *loop, const char *url, const vl_redis_pool_options *opts)
{
    vl_redis_pool *p;
    unsigned i;

    if (loop == NULL)
        return NULL;
    p = vl__calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->loop = loop;
    if (opts != NULL)
        p->o = *opts;
    else
        vl_redis_pool_options_init(&p->o);
    if (p->o.max_size == 0)
        p->o.max_size = 1;
    if (p->o.min_idle > p->o.max_size)
        p->o.min_idle = p->o.max_size;
    vl_redis_options_init(&p->copts);
    p->copts.connect_timeout_ms = p->o.connect_timeout_ms;
    p->copts.command_timeout_ms = p->o.command_timeout_ms;
    p->copts.reconnect_min_ms = p->o.reconnect_min_ms;
    p->copts.reconnect_max_ms = p->o.reconnect_max_ms;
    vl__timer_init(&p->timer, loop, timer_cb, p);
    p->slots = vl__calloc(p->o.max_size, sizeof(*p->slots));
    p->url = vl__strdup(url != NULL ? url : "");
    if (p->slots == NULL || p->url == NULL)
        goto nomem;
    p->invalid_status = vl__redis_url_error(loop, url, &p->invalid_msg);
    if (p->invalid_status == VL_ENOMEM)
        goto nomem;
    if (p->invalid_status == VL_OK) {
        vl__url u;
        char why[160];
        if (vl__url_parse(url, &u, why, sizeof(why)) != VL_OK)
            goto nomem; /* it parsed a moment ago: only memory can fail */
        p->display = vl__strdup(u.display);
        vl__url_clear(&u);
    } else {
        p->display = vl__strdup("redis pool");
    }
    if (p->display == NULL)
        goto nomem;
    vl__handle_add(loop, &p->handle, pool_handle_free);
    p->registered = 1;
    if (p->invalid_status == VL_OK)
        for (i = 0; i < p->o.min_idle; i++)
            slot_open(p);
    return p;
nomem:
    vl__free(p->slots);
    vl__free(p->url);
    vl__free(p->display);
    vl__free(p->invalid_msg);
    vl__free(p);
    return NULL;
}

/* Takes cmd. The checks every pool command goes through first. */
static vl_future *pool_submit(vl_redis_pool *p, char *cmd, size_t len)
{
    p->st.commands++;
    if (p->invalid_status != VL_OK || p->closing) {
        int status = p->closing ? VL_ECLOSED : p->invalid_status;
        vl__redis_cmd_free(cmd);
        count_result(p, status);
        return vl__future_failed(p->loop, status, "%s",
                                 p->closing ? "pool is closed" : p->invalid_msg);
    }
    /* Room is judged in order: while others wait, a newcomer waits too. */
    if (p->cmds.n > 0 || (p->o.max_pending > 0 && p->pending >= p->o.max_pending)) {
        if (p->o.on_full != VL_REDIS_POOL_WAIT) {
            vl__redis_cmd_free(cmd);
            p->st.rejected++;
            count_result(p, VL_EBUSY);
            return vl__future_failed(p->loop, VL_EBUSY,
                                     "pool %s is full: %zu commands pending (max_pending %zu)",
                                     p->display, p->pending, p->o.max_pending);
        }
        return wait_add(p, cmd, len, 0);
    }
    return route(p, NULL, cmd, len);
}

vl_future *vl_redis_pool_commandv(vl_redis_pool *p, const char *fmt, va_list ap)
{
    char *cmd = NULL;
    long long len;

    if (p == NULL)
        return NULL;
    if (fmt == NULL)
        return vl__future_failed(p->loop, VL_EINVAL, "no command");
    len = vl__redis_formatv(&cmd, fmt, ap);
    if (len == -2)
        return NULL; /* out of memory copying the command */
    if (len < 0)
        return vl__future_failed(p->loop, VL_EINVAL, "cannot format the command (bad format string)");
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
    f = wait_add(p, NULL, 0, 1);
    if (f != NULL)
        pump(p);
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

    p->st.commands++;
    p->pending++;
    f = vl__redis_send(l->s->c, NULL, cmd, len);
    if (f == NULL)
        p->pending--;
    return f;
}


vl_future *vl_redis_lease_commandv(vl_redis_lease *l, const char *fmt, va_list ap)
{
    char *cmd = NULL;
    long long len;

    if (l == NULL)
        return NULL;
    if (l->p == NULL)
        return lease_closed(l->loop);
    if (fmt == NULL)
        return vl__future_failed(l->p->loop, VL_EINVAL, "no command");
    len = vl__redis_formatv(&cmd, fmt, ap);
    if (len == -2)
        return NULL; /* out of memory copying the command */
    if (len < 0)
        return vl__future_failed(l->p->loop, VL_EINVAL,
                                 "cannot format the command (bad format string)");
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

    if (l == NULL)
        return 0;
    p = l->p;
    s = l->s;
    if (p == NULL) {
        vl__free(l);
        return 0;
    }
    s->lease = NULL;
    if (vl__redis_clean(s->c, l->epoch)) {
        vl__free(l);
        pump(p);
        return 1;
    }
    vl__free(l);
    /* Not provably clean: close it rather than hand its state to someone. */
    p->st.dirty_closes++;
    slot_close(p, s);
    while (p->nslots < p->o.min_idle && slot_open(p) != NULL)
        ;
    pump(p);
    return 0;
}

int vl_redis_pool_stats(const vl_redis_pool *p, vl_redis_stats *out)
{
    unsigned i;

    if (p == NULL || out == NULL)
        return VL_EINVAL;
    *out = p->st;
    out->open = p->nslots;
    out->ready = out->busy = out->idle = out->leased = 0;
    out->connects = p->gone_connects;
    out->reconnects = p->gone_reconnects;
    out->connect_errors = p->gone_errors;
    for (i = 0; i < p->nslots; i++) {
        const pslot *s = p->slots[i];
        uint64_t a, b, e;
        vl__redis_counters(s->c, &a, &b, &e);
        out->connects += a;
        out->reconnects += b;
        out->connect_errors += e;
        if (s->lease != NULL)
            out->leased++;
        if (vl_redis_state(s->c) != VL_REDIS_READY)
            continue;
        out->ready++;
        if (s->lease != NULL || vl_redis_pending(s->c) > 0)
            out->busy++;
        else
            out->idle++;
    }
    out->pending = p->pending;
    out->queued = p->cmds.n + p->leases.n;
    return VL_OK;
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
    while ((w = p->cmds.head) != NULL || (w = p->leases.head) != NULL) {
        vl_future *f = w->f;
        wait_drop(p, w);
        vl__future_set_source(f, NULL, NULL);
        vl__future_fail(f, VL_ECANCELED, "pool freed");
    }
    while (p->nslots > 0)
        slot_close(p, p->slots[p->nslots - 1]);
    vl__free(p->slots);
    memset(p->url, 0, strlen(p->url));
    vl__free(p->url);
    vl__free(p->display);
    vl__free(p->invalid_msg);
    vl__free(p);
}
