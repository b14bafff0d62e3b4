/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/redis_sentinel.c - where a redis+sentinel:// pool's connections go.
 *
 * Discovery. One round asks the sentinels in turn, starting with the one
 * that answered last, on a plain connection each (no reconnect; its
 * connect and command deadlines are connect_timeout_ms, so a dead or
 * silent sentinel costs one deadline, never a hang): "SENTINEL
 * get-master-addr-by-name NAME", or for role=replica "SENTINEL replicas
 * NAME", keeping the replicas whose flags say neither s_down, o_down nor
 * disconnected. The addresses named are then checked, each on a
 * connection of its own with the data connections' credentials: ROLE must
 * say "master" (or "slave"). Only then is the pool pointed there
 * (vl__redis_pool_retarget). A sentinel whose answer fails any of this
 * costs the round nothing but a step: the next one is asked. When none
 * gives a usable answer the round failed; while the pool has no target
 * yet, another round follows a second later.
 *
 * Rounds are single-flight (a request for one while one runs makes one
 * more run after it) and start at most once a second, except after a
 * +switch-master, which is news the sentinels publish only once.
 *
 * A +switch-master for our master (master mode) holds the pool at once
 * (vl__redis_pool_moving): nothing new goes to the old master while the
 * round that follows verifies the new one. That round asks the sentinel
 * that published the switch first, and refuses the announced old master
 * wherever it is named (a sentinel that has not heard of the switch yet,
 * or a round that began before it): until the sentinels demote it, the
 * old master still answers ROLE with "master". The alternative, pointing
 * the pool at the announced address at once and checking ROLE on each new
 * connection's first use, would route on one sentinel's word alone and
 * put a check in every connection's handshake; holding costs the waiters
 * one round (an ask and a ROLE, bounded by acquire_timeout_ms).
 *
 * Subscription. One push connection to a sentinel SUBSCRIBEs to
 * +switch-master (and, for replicas, +sdown, -sdown and +slave). When it
 * is lost it is not reopened to the same sentinel: after a backoff
 * (reconnect_min_ms doubling to reconnect_max_ms) the next sentinel is
 * tried, and once subscribed again a round runs, since a switch may have
 * been published meanwhile.
 *
 * Lifetime. Every command's callback holds a reference. The pool lets go
 * with vl__sentinel_free, from anywhere, its callbacks included: the
 * connections are freed at once (their futures complete with VL_ECANCELED
 * and their callbacks, run later from the loop, find `pool` NULL), and the
 * memory goes with the last reference.
 *
 * Passwords. The URLs of the sentinels (sentinel_password) and of the
 * servers (the URL's user and password) are kept whole and wiped when
 * freed; every message names an endpoint by "host:port" or by a
 * connection's printable URL.
 */
#include "redis_internal.h"
#include "url.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SCHEME "redis+sentinel://"
#define MAX_SENTINELS 32
#define MAX_REPLICAS 64
#define MIN_INTERVAL_MS 1000 /* between two rounds, unless a switch came */

enum { D_IDLE = 0, D_ASKING, D_CHECKING };

/* A timer that may or may not hold the loop (libev's ref counting: an
 * unref'd watcher is ref'd again before it stops, and libev stops a
 * one-shot timer before calling it). */
typedef struct wtimer {
    vl__timer t;
    int unref;
} wtimer;

struct vl__sentinel {
    vl_loop *loop;
    vl_redis_pool *pool;    /* NULL once the pool let go */
    int refs;               /* callbacks still due */
    char *name;             /* the master's name, as the sentinels know it */
    int replica;            /* role=replica */
    char **surls;           /* per sentinel: redis:// URL (sentinel_password) */
    char **seps;            /* per sentinel: "host:port" */
    size_t nsent;
    char *data_pre;         /* "redis://user:pw@" of the servers */
    char *data_post;        /* "/db?params" of the servers, or "" */
    vl_redis_options qopts; /* one-shot connections: no reconnect, short */
    vl_redis_options subopts;
    /* discovery */
    int state;
    unsigned gen;           /* changes with every round */
    size_t cur, tried;      /* the sentinel asked, and how many were */
    size_t good;            /* the sentinel that answered last */
    vl_redis *conn;         /* to the sentinel being asked */
    char **cand;            /* addresses being checked ("host:port") */
    vl_redis **cconn;       /* their connections */
    int *cok;               /* ROLE said what we want */
    size_t ncand, cleft;
    int again, again_now;   /* another round wanted after this one */
    int started;
    uint64_t last_start;
    int failed;             /* the last round found nothing */
    uint64_t retry_ms;      /* wait before the round after a failed one */
    int hold;               /* somebody waits in the pool */
    char *err;              /* the last failed round's message */
    char *round;            /* this round's failures so far */
    wtimer timer;
    /* subscription */
    vl_redis *sub;
    size_t sub_i;
    int sub_was_up;
    int subscribed;         /* the server confirmed the SUBSCRIBE */
    int sub_lost;           /* DOWN came (and freed it) inside its making */
    uint64_t sub_backoff;
    wtimer sub_timer;
    uint64_t discoveries, switches, news;
    char *switch_from;      /* announced old master, until a round verified the new one */
};

typedef struct dstep {
    vl__sentinel *s;
    unsigned gen;
    size_t i;
} dstep;

static void ask(vl__sentinel *s);
static void sub_open(vl__sentinel *s, size_t i);

/* ---- timers ---- */

static void wt_fired(vl__sentinel *s, wtimer *w)
{
    if (w->unref) { /* libev stopped it and dropped its count */
        vl__loop_ref(s->loop);
        w->unref = 0;
    }
}

static void wt_weak(vl__sentinel *s, wtimer *w, int weak)
{
    if (!vl__timer_active(&w->t))
        return;
    if (weak && !w->unref) {
        vl__loop_unref(s->loop);
        w->unref = 1;
    } else if (!weak && w->unref) {
        vl__loop_ref(s->loop);
        w->unref = 0;
    }
}

static void wt_start(vl__sentinel *s, wtimer *w, uint64_t ms, int weak)
{
    vl__timer_start(&w->t, ms);
    wt_weak(s, w, weak);
}

static void wt_stop(vl__sentinel *s, wtimer *w)
{
    if (w->unref) {
        vl__loop_ref(s->loop);
        w->unref = 0;
    }
    vl__timer_stop(&w->t);
}

/* ---- strings ---- */

static void wipe_free(char *p)
{
    if (p != NULL) {
        memset(p, 0, strlen(p));
        vl__free(p);
    }
}

static void list_free(char **l, size_t n, int secret)
{
    size_t i;

    for (i = 0; l != NULL && i < n; i++) {
        if (secret)
            wipe_free(l[i]);
        else
            vl__free(l[i]);
    }
    vl__free(l);
}

/* Appends percent-encoded `v` (all but RFC 3986's unreserved characters)
 * to the growing string *out; 0 when out of memory (*out freed). */
static int add_enc(char **out, const char *v)
{
    size_t n = strlen(*out), i, k = 0;
    char *p = vl__realloc(*out, n + strlen(v) * 3 + 1);

    if (p == NULL) {
        wipe_free(*out);
        *out = NULL;
        return 0;
    }
    for (i = 0; v[i] != '\0'; i++) {
        unsigned char c = (unsigned char)v[i];
        if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
            p[n + k++] = (char)c;
        } else {
            snprintf(p + n + k, 4, "%%%02X", c);
            k += 3;
        }
    }
    p[n + k] = '\0';
    *out = p;
    return 1;
}

static int add_str(char **out, const char *v)
{
    size_t n = strlen(*out);
    char *p = vl__realloc(*out, n + strlen(v) + 1);

    if (p == NULL) {
        wipe_free(*out);
        *out = NULL;
        return 0;
    }
    memcpy(p + n, v, strlen(v) + 1);
    *out = p;
    return 1;
}

/* "host:port", an IPv6 host in brackets. */
static char *hostport(const char *host, long port)
{
    return vl__asprintf(strchr(host, ':') != NULL ? "[%s]:%ld" : "%s:%ld", host, port);
}

/* The URL of the server at `ep` ("host:port"), with the pool's credentials,
 * db and parameters. Secret: wipe_free it. */
static char *data_url(const vl__sentinel *s, const char *ep)
{
    return vl__asprintf("%s%s%s", s->data_pre, ep, s->data_post);
}

/* Adds "sentinel host:port: why" to the round's failures. */
static void note(vl__sentinel *s, size_t i, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void note(vl__sentinel *s, size_t i, const char *fmt, ...)
{
    char why[384], *p;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    p = vl__asprintf("%s%ssentinel %s: %s", s->round != NULL ? s->round : "",
                     s->round != NULL ? "; " : "", s->seps[i], why);
    if (p != NULL) {
        vl__free(s->round);
        s->round = p;
    }
}

/* ---- the URL ---- */

int vl__sentinel_url(const char *url)
{
    return url != NULL && strncasecmp(url, SCHEME, strlen(SCHEME)) == 0;
}

static int bad(char **msg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(char **msg, const char *fmt, ...)
{
    char why[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    *msg = vl__asprintf("bad Redis Sentinel URL: %s", why);
    return *msg != NULL ? VL_EINVAL : VL_ENOMEM;
}

/* The sentinels' endpoints, from the hosts of the URL. */
static int read_hosts(vl__sentinel *s, char **urls, size_t n, const char *spw, char **msg)
{
    size_t i;

    s->surls = vl__calloc(n, sizeof(*s->surls));
    s->seps = vl__calloc(n, sizeof(*s->seps));
    if (s->surls == NULL || s->seps == NULL)
        return VL_ENOMEM;
    for (i = 0; i < n; i++) {
        char why[160];
        vl__url u;
        int rc = vl__url_parse(urls[i], &u, why, sizeof(why));
        if (rc == VL_OK && u.host[0] == '\0') {
            vl__url_clear(&u);
            return bad(msg, "a sentinel has no host");
        }
        if (rc != VL_OK)
            return rc == VL_ENOMEM ? rc : bad(msg, "%s", why);
        s->seps[i] = hostport(u.host, u.port != 0 ? u.port : 26379);
        s->surls[i] = vl__strdup("redis://");
        if (s->surls[i] != NULL && spw != NULL)
            (void)(add_str(&s->surls[i], ":") && add_enc(&s->surls[i], spw) &&
                   add_str(&s->surls[i], "@"));
        if (s->surls[i] != NULL && s->seps[i] != NULL)
            (void)add_str(&s->surls[i], s->seps[i]);
        vl__url_clear(&u);
        s->nsent++;
        if (s->surls[i] == NULL || s->seps[i] == NULL)
            return VL_ENOMEM;
    }
    return VL_OK;
}

/* Master name, db, role, sentinel_password and the servers' URL parts,
 * from the first host's URL (they all share them). */
static int read_url(vl__sentinel *s, vl_loop *loop, const vl__url *u, char **urls, size_t n,
                    char **display, char **msg)
{
    const char *path = u->path != NULL ? u->path : "", *slash = strchr(path, '/');
    const char *role = vl__url_param(u, "role"), *spw = vl__url_param(u, "sentinel_password");
    char *post, *check, *why = NULL;
    size_t i;
    int rc;

    s->name = slash != NULL ? vl__strndup(path, (size_t)(slash - path)) : vl__strdup(path);
    if (s->name == NULL)
        return VL_ENOMEM;
    if (s->name[0] == '\0')
        return bad(msg, "no master name (redis+sentinel://host:port/NAME)");
    if (role != NULL && strcmp(role, "master") != 0 && strcmp(role, "replica") != 0)
        return bad(msg, "role must be master or replica");
    s->replica = role != NULL && strcmp(role, "replica") == 0;
    rc = read_hosts(s, urls, n, spw, msg);
    if (rc != VL_OK)
        return rc;
    /* The servers: redis://user:pw@HOST/db?every other parameter. */
    s->data_pre = vl__strdup("redis://");
    if (s->data_pre != NULL && (u->user != NULL || u->password != NULL)) {
        if (u->user != NULL)
            (void)add_enc(&s->data_pre, u->user);
        if (s->data_pre != NULL && u->password != NULL)
            (void)(add_str(&s->data_pre, ":") && add_enc(&s->data_pre, u->password));
        if (s->data_pre != NULL)
            (void)add_str(&s->data_pre, "@");
    }
    post = vl__strdup("");
    if (post != NULL && slash != NULL)
        (void)(add_str(&post, "/") && add_enc(&post, slash + 1));
    for (i = 0; post != NULL && i < u->nparams; i++) {
        if (strcmp(u->keys[i], "role") == 0 || strcmp(u->keys[i], "sentinel_password") == 0)
            continue;
        (void)(add_str(&post, strchr(post, '?') != NULL ? "&" : "?") &&
               add_enc(&post, u->keys[i]) && add_str(&post, "=") &&
               add_enc(&post, u->values[i]));
    }
    s->data_post = post;
    if (s->data_pre == NULL || s->data_post == NULL)
        return VL_ENOMEM;
    /* What the servers' URL would be refused for, it is now. */
    check = data_url(s, "127.0.0.1:6379");
    if (check == NULL)
        return VL_ENOMEM;
    rc = vl__redis_url_error(loop, check, &why);
    wipe_free(check);
    if (rc != VL_OK) {
        *msg = why;
        return rc;
    }
    *display = vl__strdup(SCHEME);
    for (i = 0; *display != NULL && i < s->nsent; i++)
        (void)((i == 0 || add_str(display, ",")) && add_str(display, s->seps[i]));
    if (*display != NULL)
        (void)(add_str(display, "/") && add_str(display, path));
    return *display != NULL ? VL_OK : VL_ENOMEM;
}

static void release(vl__sentinel *s)
{
    list_free(s->surls, s->nsent, 1);
    list_free(s->seps, s->nsent, 0);
    vl__free(s->name);
    wipe_free(s->data_pre);
    vl__free(s->data_post);
    vl__free(s->err);
    vl__free(s->round);
    vl__free(s->switch_from);
    vl__free(s);
}

static void timer_cb(vl__timer *t, void *ud);
static void sub_timer_cb(vl__timer *t, void *ud);

int vl__sentinel_new(vl_redis_pool *p, vl_loop *loop, const char *url,
                     const vl_redis_options *copts, vl__sentinel **out, char **display,
                     char **msg)
{
    vl__sentinel *s;
    char why[160], **urls = NULL;
    size_t n = 0;
    vl__url u;
    int rc;

    *out = NULL;
    *display = *msg = NULL;
    rc = vl__url_split_hosts(url, MAX_SENTINELS, &urls, &n, why, sizeof(why));
    if (rc != VL_OK)
        return rc == VL_ENOMEM ? rc : bad(msg, "%s", why);
    rc = vl__url_parse(urls[0], &u, why, sizeof(why));
    if (rc != VL_OK) {
        vl__url_list_free(urls, n);
        return rc == VL_ENOMEM ? rc : bad(msg, "%s", why);
    }
    s = vl__calloc(1, sizeof(*s));
    if (s == NULL) {
        rc = VL_ENOMEM;
    } else {
        s->loop = loop;
        s->pool = p;
        rc = read_url(s, loop, &u, urls, n, display, msg);
    }
    vl__url_clear(&u);
    vl__url_list_free(urls, n);
    if (rc != VL_OK) {
        if (s != NULL)
            release(s);
        vl__free(*display);
        *display = NULL;
        return rc;
    }
    /* Each step is one connect and one reply: connect_timeout_ms bounds
     * both, so one silent sentinel delays a round by that much only. */
    s->qopts = *copts;
    s->qopts.reconnect = 0;
    if (copts->connect_timeout_ms > 0)
        s->qopts.command_timeout_ms = copts->connect_timeout_ms;
    s->subopts = *copts;
    s->subopts.reconnect = 0;
    vl__timer_init(&s->timer.t, loop, timer_cb, s);
    vl__timer_init(&s->sub_timer.t, loop, sub_timer_cb, s);
    /* The first round starts from the loop: the pool is not complete yet. */
    wt_start(s, &s->timer, 0, 1);
    *out = s;
    return VL_OK;
}

/* ---- discovery ---- */

static void close_conn(vl_redis **c)
{
    if (*c != NULL) {
        vl_redis_free(*c);
        *c = NULL;
    }
}

static void drop_candidates(vl__sentinel *s)
{
    size_t i;

    for (i = 0; s->cconn != NULL && i < s->ncand; i++)
        close_conn(&s->cconn[i]);
    list_free(s->cand, s->ncand, 0);
    vl__free(s->cconn);
    vl__free(s->cok);
    s->cand = NULL;
    s->cconn = NULL;
    s->cok = NULL;
    s->ncand = s->cleft = 0;
}

/* The step's owner, or NULL when the step is stale or the pool let go
 * (which may free the owner: it was the last reference). */
static vl__sentinel *step_take(void *ud, size_t *i)
{
    dstep *st = ud;
    vl__sentinel *s = st->s;
    int stale = st->gen != s->gen;

    *i = st->i;
    vl__free(st);
    s->refs--;
    if (s->pool == NULL) {
        if (s->refs == 0)
            release(s);
        return NULL;
    }
    return stale ? NULL : s;
}

/* Sends argv on c; cb gets a dstep for step i. VL_OK or VL_ENOMEM. */
static int send_step(vl__sentinel *s, vl_redis *c, int argc, const char **argv, vl_future_cb cb,
                     size_t i)
{
    char *cmd;
    long long len = vl__redis_format_argv(&cmd, argc, argv, NULL);
    dstep *st;
    vl_future *f;

    if (len < 0)
        return VL_ENOMEM;
    st = vl__calloc(1, sizeof(*st));
    if (st == NULL) {
        vl__redis_cmd_free(cmd);
        return VL_ENOMEM;
    }
    f = vl__redis_send(c, NULL, cmd, (size_t)len, 0);
    if (f == NULL) {
        vl__free(st);
        return VL_ENOMEM;
    }
    st->s = s;
    st->gen = s->gen;
    st->i = i;
    s->refs++;
    vl_future_then(f, cb, st);
    return VL_OK;
}

/* Asks for another round: now, after a +switch-master; otherwise at most
 * once per MIN_INTERVAL_MS. One round at a time: asked during one, it
 * follows that one. */
static void schedule(vl__sentinel *s, int now_too)
{
    uint64_t now = vl_loop_now_ms(s->loop), delay = 0;

    if (s->pool == NULL)
        return;
    if (s->state != D_IDLE) {
        s->again = 1;
        s->again_now |= now_too;
        return;
    }
    if (vl__timer_active(&s->timer.t) && !now_too)
        return;
    if (!now_too && s->started && s->last_start + MIN_INTERVAL_MS > now)
        delay = s->last_start + MIN_INTERVAL_MS - now;
    wt_start(s, &s->timer, delay, !s->hold);
}

/* After a round: the one asked for meanwhile, or after a failed round
 * another, 1 s later and then doubling up to reconnect_max_ms (at least
 * 1 s): what fails a round (no sentinel up, no master known yet, a server
 * that disagrees about its role while a failover is under way, a replica
 * still syncing) usually passes, and nothing may announce it. */
static void round_end(vl__sentinel *s, int ok)
{
    uint64_t cap = s->qopts.reconnect_max_ms > MIN_INTERVAL_MS ? s->qopts.reconnect_max_ms
                                                                : MIN_INTERVAL_MS;
    int again = s->again, now_too = s->again_now;

    s->state = D_IDLE;
    s->again = s->again_now = 0;
    vl__free(s->round);
    s->round = NULL;
    if (ok)
        s->retry_ms = 0;
    else
        s->retry_ms = s->retry_ms == 0 ? MIN_INTERVAL_MS
                      : s->retry_ms * 2 > cap ? cap : s->retry_ms * 2;
    if (again)
        schedule(s, now_too);
    else if (!ok && s->pool != NULL)
        wt_start(s, &s->timer, s->retry_ms, !s->hold);
}

static void round_failed(vl__sentinel *s)
{
    char *m = vl__asprintf("none of %zu sentinels named a %s for '%s': %s", s->nsent,
                           s->replica ? "replica that is up" : "master", s->name,
                           s->round != NULL ? s->round : "no answer");

    if (m != NULL) {
        vl__free(s->err);
        s->err = m;
    }
    /* Readiness fails only for a pool with no target: one with a target
     * keeps it. */
    s->failed = vl_redis_pool_endpoint(s->pool)[0] == '\0';
    vl__redis_pool_no_target(s->pool);
    round_end(s, 0);
}

static void next_sentinel(vl__sentinel *s)
{
    s->cur = (s->cur + 1) % s->nsent;
    s->tried++;
    ask(s);
}

static void succeed(vl__sentinel *s)
{
    char *urls[MAX_REPLICAS], *eps[MAX_REPLICAS], *before;
    size_t i, n = 0;
    int rc = VL_OK;

    for (i = 0; i < s->ncand && n < MAX_REPLICAS; i++) {
        if (!s->cok[i])
            continue;
        urls[n] = data_url(s, s->cand[i]);
        eps[n] = s->cand[i];
        if (urls[n] == NULL)
            rc = VL_ENOMEM;
        n++;
    }
    before = vl__strdup(vl_redis_pool_endpoint(s->pool));
    if (rc == VL_OK && before != NULL)
        rc = vl__redis_pool_retarget(s->pool, urls, eps, n);
    for (i = 0; i < n; i++)
        wipe_free(urls[i]);
    if (rc != VL_OK || before == NULL) {
        vl__free(before);
        note(s, s->cur, "out of memory");
        drop_candidates(s);
        next_sentinel(s);
        return;
    }
    s->discoveries++;
    if (before[0] != '\0' && strcmp(before, vl_redis_pool_endpoint(s->pool)) != 0)
        s->switches++;
    vl__free(before);
    drop_candidates(s);
    s->good = s->cur;
    s->failed = 0;
    vl__free(s->switch_from);
    s->switch_from = NULL;
    if (s->sub == NULL && !vl__timer_active(&s->sub_timer.t))
        sub_open(s, s->good);
    round_end(s, 1);
}

/* Every check answered: a target if any passed, else the next sentinel. */
static void checked(vl__sentinel *s)
{
    size_t i;

    for (i = 0; i < s->ncand; i++)
        if (s->cok[i]) {
            succeed(s);
            return;
        }
    drop_candidates(s);
    next_sentinel(s);
}

static void role_cb(vl_future *f, void *ud)
{
    const vl_redis_reply *r, *e0;
    const char *want, *got;
    vl__sentinel *s;
    size_t j;

    s = step_take(ud, &j);
    if (s == NULL || j >= s->ncand)
        return;
    close_conn(&s->cconn[j]);
    want = s->replica ? "slave" : "master";
    r = vl_future_redis_reply(f);
    e0 = vl_redis_reply_element(r, 0);
    got = vl_redis_reply_type(e0) == VL_REDIS_STRING ? vl_redis_reply_str(e0, NULL) : NULL;
    if (vl_future_status(f) != VL_OK)
        note(s, s->cur, "%s named: %s", s->cand[j], vl_future_error(f));
    else if (got == NULL || strcmp(got, want) != 0) {
        note(s, s->cur, "%s named, but its ROLE is %.32s, not %s", s->cand[j],
             got != NULL ? got : "unreadable", want);
    }
    else if (s->switch_from != NULL && strcmp(s->cand[j], s->switch_from) == 0)
        /* Named by a round that started before the switch was announced. */
        note(s, s->cur, "%s named, but it was announced as the old master", s->cand[j]);
    else
        s->cok[j] = 1;
    if (--s->cleft == 0)
        checked(s);
}

/* Checks the candidates with ROLE, on a connection each. */
static void check(vl__sentinel *s)
{
    const char *argv[1] = {"ROLE"};
    size_t j;

    s->state = D_CHECKING;
    s->cconn = vl__calloc(s->ncand, sizeof(*s->cconn));
    s->cok = vl__calloc(s->ncand, sizeof(*s->cok));
    if (s->cconn == NULL || s->cok == NULL) {
        note(s, s->cur, "out of memory");
        drop_candidates(s);
        next_sentinel(s);
        return;
    }
    s->cleft = s->ncand;
    for (j = 0; j < s->ncand; j++) {
        char *url = data_url(s, s->cand[j]);
        if (url != NULL)
            s->cconn[j] = vl__redis_new_pooled(s->loop, url, &s->qopts, NULL, NULL, NULL);
        wipe_free(url);
        if (s->cconn[j] != NULL && send_step(s, s->cconn[j], 1, argv, role_cb, j) == VL_OK)
            continue;
        close_conn(&s->cconn[j]);
        note(s, s->cur, "out of memory");
        s->cleft--;
    }
    if (s->cleft == 0)
        checked(s);
}

/* An address a sentinel sent: printable, no separator of a URL. */
static char *addr_of(const vl_redis_reply *host, const vl_redis_reply *port)
{
    size_t hl, pl, i;
    const char *h = vl_redis_reply_str(host, &hl), *pt = vl_redis_reply_str(port, &pl);
    char *end;
    long pn;

    if (vl_redis_reply_type(host) != VL_REDIS_STRING || vl_redis_reply_type(port) !=
        VL_REDIS_STRING || hl == 0 || hl > 255 || pl == 0 || pl > 5)
        return NULL;
    for (i = 0; i < hl; i++)
        if (!isalnum((unsigned char)h[i]) && h[i] != '.' && h[i] != '-' && h[i] != ':' &&
            h[i] != '_')
            return NULL;
    pn = strtol(pt, &end, 10);
    if (*end != '\0' || pn < 1 || pn > 65535 || !isdigit((unsigned char)pt[0]))
        return NULL;
    return hostport(h, pn);
}

/* 1 when a replica's flags (a comma-separated list) say it is up. */
static int replica_up(const vl_redis_reply *flags)
{
    const char *f = vl_redis_reply_str(flags, NULL);

    return f != NULL && strstr(f, "s_down") == NULL && strstr(f, "o_down") == NULL &&
           strstr(f, "disconnected") == NULL;
}

static int add_cand(vl__sentinel *s, char *a)
{
    char **more;

    if (a == NULL)
        return 0;
    more = vl__realloc(s->cand, (s->ncand + 1) * sizeof(*more));
    if (more == NULL) {
        vl__free(a);
        return 0;
    }
    s->cand = more;
    s->cand[s->ncand++] = a;
    return 1;
}

static void asked_cb(vl_future *f, void *ud)
{
    const vl_redis_reply *r;
    vl__sentinel *s;
    size_t i, k;
    char *a;

    s = step_take(ud, &i);
    if (s == NULL)
        return;
    close_conn(&s->conn);
    r = vl_future_redis_reply(f);
    if (vl_future_status(f) != VL_OK) {
        note(s, i, "%s", vl_future_error(f));
    } else if (!s->replica) {
        if (vl_redis_reply_type(r) == VL_REDIS_NIL)
            note(s, i, "no master named '%s'", s->name);
        else if (vl_redis_reply_count(r) != 2 ||
                 (a = addr_of(vl_redis_reply_element(r, 0), vl_redis_reply_element(r, 1))) ==
                     NULL)
            note(s, i, "unreadable answer to SENTINEL get-master-addr-by-name");
        else if (s->switch_from != NULL && strcmp(a, s->switch_from) == 0) {
            /* A sentinel that has not heard of the switch yet: the old
             * master may still say "master" to ROLE until the sentinels
             * demote it, so its word cannot be taken. */
            note(s, i, "still names %s, announced as the old master", a);
            vl__free(a);
        } else if (!add_cand(s, a))
            note(s, i, "out of memory");
    } else {
        for (k = 0; k < vl_redis_reply_count(r) && s->ncand < MAX_REPLICAS; k++) {
            const vl_redis_reply *m = vl_redis_reply_element(r, k);
            if (replica_up(vl_redis_reply_map_get(m, "flags", 5)))
                (void)add_cand(s, addr_of(vl_redis_reply_map_get(m, "ip", 2),
                                          vl_redis_reply_map_get(m, "port", 4)));
        }
        if (s->ncand == 0)
            note(s, i, "no replica of '%s' is up", s->name);
    }
    if (s->ncand == 0) {
        next_sentinel(s);
        return;
    }
    check(s);
}

static void ask(vl__sentinel *s)
{
    const char *argv[3];

    argv[0] = "SENTINEL";
    argv[1] = s->replica ? "replicas" : "get-master-addr-by-name";
    argv[2] = s->name;
    s->state = D_ASKING;
    while (s->tried < s->nsent) {
        s->conn = vl__redis_new_pooled(s->loop, s->surls[s->cur], &s->qopts, NULL, NULL, NULL);
        if (s->conn != NULL && send_step(s, s->conn, 3, argv, asked_cb, s->cur) == VL_OK)
            return;
        close_conn(&s->conn);
        note(s, s->cur, "out of memory");
        s->cur = (s->cur + 1) % s->nsent;
        s->tried++;
    }
    round_failed(s);
}

static void timer_cb(vl__timer *t, void *ud)
{
    vl__sentinel *s = ud;

    VL__UNUSED(t);
    wt_fired(s, &s->timer);
    if (s->state != D_IDLE)
        return;
    s->gen++;
    s->tried = 0;
    /* After a +switch-master, the sentinel that published it knows the
     * new master for sure: it is asked first. */
    s->cur = s->switch_from != NULL && s->sub != NULL ? s->sub_i : s->good;
    s->again = s->again_now = 0;
    s->started = 1;
    s->last_start = vl_loop_now_ms(s->loop);
    ask(s);
}

/* ---- the subscription ---- */

/* "+switch-master NAME oldip oldport newip newport", from after NAME: the
 * pool stops sending to the old master now, rather than after the round
 * that verifies the new one. An unreadable message only asks again. */
static void switch_news(vl__sentinel *s, const char *rest)
{
    char oh[256], op[8], nh[256], np[8], *from, *to;
    long opn, npn;

    if (s->pool == NULL || sscanf(rest, "%255s %7s %255s %7s", oh, op, nh, np) != 4)
        return;
    opn = strtol(op, NULL, 10);
    npn = strtol(np, NULL, 10);
    if (opn < 1 || opn > 65535 || npn < 1 || npn > 65535)
        return;
    from = hostport(oh, opn);
    to = hostport(nh, npn);
    if (from != NULL && to != NULL) {
        s->news++;
        vl__free(s->switch_from);
        s->switch_from = from;
        from = NULL;
        vl__redis_pool_moving(s->pool, s->switch_from, to);
    }
    vl__free(from);
    vl__free(to);
}

static void sub_push(vl_redis *c, vl_redis_reply *r, void *ud)
{
    vl__sentinel *s = ud;
    const vl_redis_reply *kind = vl_redis_reply_element(r, 0);
    const char *k = vl_redis_reply_str(kind, NULL);
    const char *ch = vl_redis_reply_str(vl_redis_reply_element(r, 1), NULL);
    const char *msg = vl_redis_reply_str(vl_redis_reply_element(r, 2), NULL);
    size_t nl = strlen(s->name);

    VL__UNUSED(c);
    if (k != NULL && strcmp(k, "subscribe") == 0)
        s->subscribed = 1;
    if (k != NULL && ch != NULL && msg != NULL && strcmp(k, "message") == 0) {
        /* "+switch-master NAME oldip oldport newip newport": act now. For
         * replicas, "+sdown slave ip:port ip port @ NAME mip mport", -sdown
         * and +slave change which are up: ask again, within the rate. */
        if (strcmp(ch, "+switch-master") == 0 && strncmp(msg, s->name, nl) == 0 &&
            msg[nl] == ' ') {
            if (!s->replica)
                switch_news(s, msg + nl + 1);
            schedule(s, 1);
        } else if (s->replica) {
            const char *at = strstr(msg, " @ ");
            if (at != NULL && strncmp(at + 3, s->name, nl) == 0 && at[3 + nl] == ' ')
                schedule(s, 0);
        }
    }
    vl_redis_reply_free(r);
}

static void sub_event(vl_redis *c, int event, int status, void *ud)
{
    vl__sentinel *s = ud;

    VL__UNUSED(status);
    if (event == VL__REDIS_EV_READY) {
        const char *argv[5] = {"SUBSCRIBE", "+switch-master", "+sdown", "-sdown", "+slave"};
        char *cmd;
        long long len = vl__redis_format_argv(&cmd, s->replica ? 5 : 2, argv, NULL);
        if (len < 0 || vl__redis_push_write(c, cmd, (size_t)len) != VL_OK) {
            vl__redis_drop(c, "sentinel subscription: could not subscribe");
            return;
        }
        s->sub_backoff = 0;
        /* A switch published while we were not subscribed is not sent
         * again: ask. */
        if (s->sub_was_up)
            schedule(s, 0);
        s->sub_was_up = 1;
    } else if (event == VL__REDIS_EV_DOWN) {
        uint64_t lo = s->subopts.reconnect_min_ms, hi = s->subopts.reconnect_max_ms;
        vl__redis_detach(c);
        vl_redis_free(c); /* deferred to the end of this event */
        s->sub = NULL;
        s->sub_lost = 1;
        s->subscribed = 0;
        s->sub_backoff = s->sub_backoff == 0 ? (lo > 0 ? lo : 100) : s->sub_backoff * 2;
        if (hi > 0 && s->sub_backoff > hi)
            s->sub_backoff = hi;
        wt_start(s, &s->sub_timer, s->sub_backoff, 1);
    }
}

static void sub_open(vl__sentinel *s, size_t i)
{
    vl_redis *c;

    s->sub_i = i;
    s->sub_lost = 0;
    c = vl__redis_new_push(s->loop, s->surls[i], &s->subopts, sub_event, sub_push, s);
    /* A first attempt that failed at once reported DOWN from inside the
     * call, and sub_event freed the connection and armed the retry. */
    if (s->sub_lost)
        return;
    s->sub = c;
    if (c == NULL) /* out of memory: later */
        wt_start(s, &s->sub_timer, s->subopts.reconnect_max_ms, 1);
}

static void sub_timer_cb(vl__timer *t, void *ud)
{
    vl__sentinel *s = ud;

    VL__UNUSED(t);
    wt_fired(s, &s->sub_timer);
    if (s->sub == NULL)
        sub_open(s, (s->sub_i + 1) % s->nsent);
}

/* ---- the pool's calls ---- */

void vl__sentinel_trouble(vl__sentinel *s, int why)
{
    if (s == NULL || (why == VL__SENTINEL_ERROR_REPLY && s->replica))
        return;
    schedule(s, 0);
}

void vl__sentinel_hold(vl__sentinel *s, int on)
{
    if (s == NULL || s->hold == on)
        return;
    s->hold = on;
    wt_weak(s, &s->timer, !on);
}

const char *vl__sentinel_error(const vl__sentinel *s)
{
    /* Before a first round ended, what the one under way met so far. */
    if (s == NULL)
        return "";
    return s->err != NULL ? s->err : s->round != NULL ? s->round : "";
}

int vl__sentinel_failed(const vl__sentinel *s)
{
    return s != NULL && s->failed;
}

const char *vl__sentinel_role(const vl__sentinel *s)
{
    return s != NULL && s->replica ? "replica" : "master";
}

void vl__sentinel_counts(const vl__sentinel *s, uint64_t *discoveries, uint64_t *switches)
{
    *discoveries = s->discoveries;
    *switches = s->switches;
}

uint64_t vl__sentinel_news(const vl__sentinel *s)
{
    return s != NULL ? s->news : 0;
}

const char *vl__sentinel_subscribed(const vl__sentinel *s)
{
    return s != NULL && s->sub != NULL && s->subscribed ? s->seps[s->sub_i] : "";
}

void vl__sentinel_free(vl__sentinel *s)
{
    if (s == NULL || s->pool == NULL)
        return;
    s->pool = NULL;
    wt_stop(s, &s->timer);
    wt_stop(s, &s->sub_timer);
    close_conn(&s->conn);
    drop_candidates(s);
    if (s->sub != NULL) {
        vl__redis_detach(s->sub);
        close_conn(&s->sub);
    }
    if (s->refs == 0)
        release(s);
}
