/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/fanout.c - one command or query on many endpoints at once.
 *
 * Each host gets its own one-shot connection (no reconnect) and its own
 * deadline, started when the host starts, so a stopped or dead host costs
 * only its own timeout. At most `concurrency` hosts run at once; as one
 * finishes the next starts. The fan-out object outlives its future when it is
 * cancelled: the hosts still running are cancelled and their callbacks (which
 * always come, rule 2) find the object and free it once the last one is back.
 *
 * vl_redis_cluster_each is a fan-out too, over the pools of a cluster's
 * nodes instead of connections of its own: every node's command is issued
 * at once, through the node's pool, and bounded by that pool's command
 * timeout, so a stopped node costs only its own deadline.
 */
#include "internal.h"
#include "redis_cluster_internal.h"
#include "url.h"
#include "volley/fanout.h"
#include "volley/mysql.h"
#include "volley/redis.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* KIND_CLUSTER is a fan-out object's only: its result is a Redis one. */
enum { KIND_REDIS = 1, KIND_MYSQL = 2, KIND_CLUSTER = 3 };

typedef struct fo_host {
    char *url;        /* with the password filled in; wiped when freed */
    char *display;    /* printable: no password */
    int status;
    char *msg;
    double start_ms;
    double latency_ms;
    void *value;      /* the vl_mysql_result */
    vl_free_fn value_free;
    vl_redis_reply **replies; /* one per command of a Redis batch */
    unsigned my_errno;
    char sqlstate[6];
    int done;
    void *conn;       /* vl_redis / vl_mysql while running */
    vl_future *op;    /* the host's operation while running (consumed) */
    struct fanout *fo;
} fo_host;

struct vl_fanout_result {
    size_t n;
    int kind;
    size_t ncmds;     /* commands per host (Redis) */
    fo_host *h;
};

typedef struct fo_cmd {
    int argc;
    char **argv;
    size_t *argvlen;
} fo_cmd;

typedef struct fanout {
    vl_loop *loop;
    vl_future *f;        /* NULL once cancelled or completed */
    vl_fanout_result *r; /* owned until handed to the future */
    int kind;
    fo_cmd *cmds;        /* Redis: the batch, copied */
    size_t ncmds;
    char *sql;
    vl_fanout_options o;
    int in_host_cb;      /* on_host is running: a cancel must not free us */
    size_t next;         /* next host to start */
    size_t running;
    size_t remaining;
} fanout;

static double mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static const size_t opts_ends[] = {
    VL__END(vl_fanout_options, struct_size),
    VL__END(vl_fanout_options, connect_timeout_ms),
    VL__END(vl_fanout_options, timeout_ms),
    VL__END(vl_fanout_options, concurrency),
    VL__END(vl_fanout_options, password),
    VL__END(vl_fanout_options, on_host),
    VL__END(vl_fanout_options, ud),
};
/* No padding at the end: a field appended later must start past the end of
 * every older struct. */
_Static_assert(sizeof(vl_fanout_options) == VL__END(vl_fanout_options, ud),
               "vl_fanout_options ends with padding");
static const vl__opts_desc opts_desc = {"vl_fanout_options", sizeof(vl_fanout_options), opts_ends,
                                        sizeof(opts_ends) / sizeof(opts_ends[0])};

static void opts_defaults(vl_fanout_options *o)
{
    memset(o, 0, sizeof(*o));
    o->struct_size = sizeof(*o);
    o->connect_timeout_ms = 5000;
    o->timeout_ms = 10000;
    o->concurrency = 64;
}

void vl_fanout_options_init_sized(vl_fanout_options *o, size_t struct_size)
{
    vl_fanout_options d;

    opts_defaults(&d);
    vl__opts_init(o, struct_size, &d, &opts_desc);
}

void vl_fanout_result_free(vl_fanout_result *r)
{
    size_t i;

    if (r == NULL)
        return;
    for (i = 0; i < r->n; i++) {
        fo_host *h = &r->h[i];
        if (h->url != NULL) {
            memset(h->url, 0, strlen(h->url));
            vl__free(h->url);
        }
        vl__free(h->display);
        vl__free(h->msg);
        if (h->value != NULL && h->value_free != NULL)
            h->value_free(h->value);
        if (h->replies != NULL) {
            size_t k;
            for (k = 0; k < r->ncmds; k++)
                vl_redis_reply_free(h->replies[k]);
            vl__free(h->replies);
        }
    }
    vl__free(r->h);
    vl__free(r);
}

static void fanout_free(fanout *fo)
{
    int i;

    vl_fanout_result_free(fo->r);
    size_t k;

    for (k = 0; fo->cmds != NULL && k < fo->ncmds; k++) {
        for (i = 0; fo->cmds[k].argv != NULL && i < fo->cmds[k].argc; i++)
            vl__free(fo->cmds[k].argv[i]);
        vl__free(fo->cmds[k].argv);
        vl__free(fo->cmds[k].argvlen);
    }
    vl__free(fo->cmds);
    vl__free(fo->sql);
    vl__free(fo);
}

static void start_hosts(fanout *fo);

static void mysql_result_free(void *p)
{
    vl_mysql_result_free(p);
}

static void conn_free(int kind, void *conn)
{
    if (conn == NULL)
        return;
    if (kind == KIND_REDIS)
        vl_redis_free(conn);
    else
        vl_mysql_free(conn);
}

static void finish(fanout *fo)
{
    vl_future *f = fo->f;
    vl_fanout_result *r = fo->r;

    fo->f = NULL;
    fo->r = NULL;
    /* Freeing the loop cancelled every host: the fan-out itself reports it
     * too (rule 4), with the per-host results still readable. */
    if (vl__loop_closing(fo->loop))
        vl__future_complete(f, VL_ECANCELED, r, VL__VAL_FANOUT,
                            (vl_free_fn)vl_fanout_result_free, "loop freed");
    else
        vl__future_complete(f, VL_OK, r, VL__VAL_FANOUT, (vl_free_fn)vl_fanout_result_free,
                            NULL);
}

static void host_done(vl_future *f, void *ud)
{
    fo_host *h = ud;
    fanout *fo = h->fo;
    int st = vl_future_status(f);

    conn_free(fo->kind, h->conn); /* legal inside a callback (rule 5) */
    h->conn = NULL;
    h->op = NULL;
    fo->running--;
    if (fo->f == NULL) {
        /* Cancelled: the result is gone; free the fan-out with the last host. */
        if (fo->running == 0)
            fanout_free(fo);
        return;
    }
    h->done = 1;
    h->status = st;
    h->latency_ms = mono_ms() - h->start_ms;
    if (fo->r->kind == KIND_REDIS) {
        /* Every reply that came back stays readable. */
        size_t k, n = vl_future_count(f);
        h->replies = vl__calloc(fo->ncmds, sizeof(*h->replies));
        for (k = 0; k < n; k++) {
            vl_future *kf = vl_future_child(f, k);
            if (h->replies != NULL && vl_future_redis_reply(kf) != NULL)
                h->replies[k] = vl_future_take(kf);
        }
        /* The gather's status says what happened (a timeout or a lost
         * connection wins over a server error that came first in time);
         * the message is that of the first command, in batch order, that
         * failed that way. */
        for (k = 0; k < n && st != VL_OK; k++) {
            vl_future *kf = vl_future_child(f, k);
            if (vl_future_status(kf) == st) {
                const char *m = vl_future_error(kf);
                h->msg = fo->ncmds > 1 ? vl__asprintf("command %zu: %s", k + 1, m)
                                       : vl__strdup(m);
                break;
            }
        }
    }
    if (st != VL_OK && h->msg == NULL) {
        const char *m = vl_future_error(f);
        h->msg = vl__strdup(m[0] ? m : vl_strerror(st));
    }
    if (fo->kind == KIND_MYSQL) {
        if (st != VL_OK) {
            const char *ss = vl_future_mysql_sqlstate(f);
            h->my_errno = vl_future_mysql_errno(f);
            snprintf(h->sqlstate, sizeof(h->sqlstate), "%s", ss ? ss : "");
        }
        if (vl_future_mysql_result(f) != NULL) {
            h->value = vl_future_take(f);
            h->value_free = mysql_result_free;
        }
    }
    fo->remaining--;
    if (fo->o.on_host != NULL) {
        fo->in_host_cb = 1;
        fo->o.on_host(fo->r, (size_t)(h - fo->r->h), fo->o.ud);
        fo->in_host_cb = 0;
    }
    if (fo->f == NULL) {
        /* on_host cancelled the fan-out: the last host back frees it. */
        if (fo->running == 0)
            fanout_free(fo);
        return;
    }
    if (fo->remaining == 0) {
        finish(fo);
        if (fo->running == 0)
            fanout_free(fo);
        return;
    }
    start_hosts(fo);
}

/* Hands host h's operation to host_done, under timeout_ms (0: none). NULL
 * is out of memory for this host: it fails alone, from the loop. */
static void host_wait(fanout *fo, fo_host *h, vl_future *op, uint64_t timeout_ms)
{
    if (op == NULL) {
        conn_free(fo->kind, h->conn);
        h->conn = NULL;
        op = vl__future_failed(fo->loop, VL_ENOMEM, "out of memory");
        if (op == NULL) {
            h->done = 1;
            h->status = VL_ENOMEM;
            fo->remaining--;
            return;
        }
    }
    h->op = op;
    fo->running++;
    vl_future_then(vl_future_timeout(op, timeout_ms), host_done, h);
}

static void start_one(fanout *fo, fo_host *h)
{
    vl_future *op = NULL;

    h->start_ms = mono_ms();
    if (fo->kind == KIND_REDIS) {
        vl_redis_options ro;
        vl_redis_options_init(&ro);
        ro.reconnect = 0;
        ro.connect_timeout_ms = fo->o.connect_timeout_ms;
        h->conn = vl_redis_new(fo->loop, h->url, &ro);
        if (h->conn != NULL) {
            /* The batch is pipelined on the host's one connection and
             * gathered, so the host's deadline covers all of it. */
            vl_future *ops[VL_FANOUT_MAX_BATCH];
            size_t k;
            for (k = 0; k < fo->ncmds; k++) {
                ops[k] = vl_redis_command_argv(h->conn, fo->cmds[k].argc,
                                               (const char **)fo->cmds[k].argv,
                                               fo->cmds[k].argvlen);
                if (ops[k] == NULL) {
                    while (k-- > 0)
                        vl_future_free(ops[k]);
                    break;
                }
            }
            if (k == fo->ncmds)
                op = vl_future_all(fo->loop, ops, fo->ncmds);
        }
    } else {
        vl_mysql_options mo;
        vl_mysql_options_init(&mo);
        mo.connect_timeout_ms = fo->o.connect_timeout_ms;
        h->conn = vl_mysql_new(fo->loop, h->url, &mo);
        if (h->conn != NULL)
            op = vl_mysql_query(h->conn, fo->sql);
    }
    host_wait(fo, h, op, fo->o.timeout_ms);
}

static void start_hosts(fanout *fo)
{
    size_t cap = fo->o.concurrency ? fo->o.concurrency : fo->r->n;

    while (fo->next < fo->r->n && fo->running < cap)
        start_one(fo, &fo->r->h[fo->next++]);
    if (fo->remaining == 0 && fo->f != NULL) /* every start failed at once */
        finish(fo);
}

static void fanout_cancel(void *source, vl_future *f, int status)
{
    fanout *fo = source;
    size_t i;

    VL__UNUSED(f);
    VL__UNUSED(status);
    fo->f = NULL;
    if (fo->running == 0 && !fo->in_host_cb) {
        fanout_free(fo);
        return;
    }
    /* Their callbacks still come and free the fan-out with the last one. */
    for (i = 0; i < fo->next; i++) {
        fo_host *h = &fo->r->h[i];
        if (h->conn != NULL)
            conn_free(fo->kind, h->conn), h->conn = NULL;
        if (h->op != NULL)
            vl_future_cancel(h->op); /* a cluster node's; its callback still comes */
    }
}

static void fanout_describe(void *source, char *buf, size_t n)
{
    const fanout *fo = source;

    snprintf(buf, n, "%s fan-out to %zu hosts (%zu pending)",
             fo->kind == KIND_MYSQL ? "MySQL" : fo->kind == KIND_CLUSTER ? "Redis Cluster" : "Redis",
             fo->r->n, fo->remaining);
}

static const vl__source_ops fanout_ops = {.cancel = fanout_cancel, .describe = fanout_describe};

/* Percent-encodes into a new string (for a password put into a URL). */
static char *pct_encode(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    char *d = vl__malloc(strlen(s) * 3 + 1), *p = d;

    if (d == NULL)
        return NULL;
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~') {
            *p++ = (char)c;
        } else {
            *p++ = '%';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 15];
        }
    }
    *p = '\0';
    return d;
}

/* Checks one URL and gives it the default password when it has none. */
static int prepare_host(fanout *fo, size_t i, const char *url, const char *password,
                        char *err, size_t errlen)
{
    fo_host *h = &fo->r->h[i];
    vl__url u;
    int rc = vl__url_parse(url, &u, err, errlen);
    int ok_scheme;

    if (rc != VL_OK)
        return rc;
    if (fo->kind == KIND_REDIS)
        ok_scheme = strcmp(u.scheme, "redis") == 0 || strcmp(u.scheme, "rediss") == 0 ||
                    strcmp(u.scheme, "unix") == 0;
    else
        ok_scheme = strcmp(u.scheme, "mysql") == 0 || strcmp(u.scheme, "mariadb") == 0 ||
                    strcmp(u.scheme, "unix") == 0;
    if (!ok_scheme) {
        snprintf(err, errlen, "%s URL expected, got %s://", fo->kind == KIND_REDIS ? "a Redis"
                 : "a MySQL", u.scheme);
        vl__url_clear(&u);
        return VL_EINVAL;
    }
    h->display = vl__strdup(u.display);
    if (password != NULL && u.password == NULL) {
        /* scheme://[user]:pw@rest, where rest follows the old userinfo. */
        const char *rest = strstr(url, "://") + 3;
        const char *at = strchr(rest, '@');
        const char *slash = rest + strcspn(rest, "/?");
        char *enc = pct_encode(password);
        if (at != NULL && at < slash) {
            h->url = enc ? vl__asprintf("%.*s:%s%s", (int)(at - url), url, enc, at) : NULL;
        } else {
            h->url = enc ? vl__asprintf("%.*s:%s@%s", (int)(rest - url), url, enc, rest) : NULL;
        }
        if (enc != NULL) {
            memset(enc, 0, strlen(enc));
            vl__free(enc);
        }
    } else {
        h->url = vl__strdup(url);
    }
    vl__url_clear(&u);
    if (h->display == NULL || h->url == NULL) {
        snprintf(err, errlen, "out of memory");
        return VL_ENOMEM;
    }
    h->fo = fo;
    h->status = VL_ESTATE;
    return VL_OK;
}

static int copy_cmd(fo_cmd *d, const vl_redis_cmd *c)
{
    int k;

    d->argc = c->argc;
    d->argv = vl__calloc((size_t)c->argc, sizeof(char *));
    d->argvlen = vl__calloc((size_t)c->argc, sizeof(size_t));
    if (d->argv == NULL || d->argvlen == NULL)
        return VL_ENOMEM;
    for (k = 0; k < c->argc; k++) {
        size_t len = c->argvlen != NULL ? c->argvlen[k] : strlen(c->argv[k]);
        d->argv[k] = vl__strndup(c->argv[k], len);
        if (d->argv[k] == NULL)
            return VL_ENOMEM;
        d->argvlen[k] = len;
    }
    return VL_OK;
}

static vl_future *fanout_start(vl_loop *loop, int kind, const char *const *urls, size_t n,
                               const vl_redis_cmd *cmds, size_t ncmds, const char *sql,
                               const vl_fanout_options *o)
{
    fanout *fo;
    vl_future *f;
    size_t i;
    char err[256];
    const char *pw;

    if (loop == NULL)
        return NULL;
    if (urls == NULL || n == 0)
        return vl__future_failed(loop, VL_EINVAL, "fan-out: no endpoints");
    if (kind == KIND_REDIS) {
        if (cmds == NULL || ncmds == 0)
            return vl__future_failed(loop, VL_EINVAL, "fan-out: no command");
        if (ncmds > VL_FANOUT_MAX_BATCH)
            return vl__future_failed(loop, VL_EINVAL, "fan-out: more than %d commands in a batch",
                                     VL_FANOUT_MAX_BATCH);
        for (i = 0; i < ncmds; i++) {
            int k;
            if (cmds[i].argc <= 0 || cmds[i].argv == NULL)
                return vl__future_failed(loop, VL_EINVAL, "fan-out: command %zu is empty", i + 1);
            for (k = 0; k < cmds[i].argc; k++)
                if (cmds[i].argv[k] == NULL)
                    return vl__future_failed(loop, VL_EINVAL,
                                             "fan-out: command %zu: argument %d is NULL", i + 1, k);
        }
    }
    if (kind == KIND_MYSQL && (sql == NULL || sql[0] == '\0'))
        return vl__future_failed(loop, VL_EINVAL, "fan-out: no SQL");
    fo = vl__calloc(1, sizeof(*fo));
    if (fo == NULL)
        return NULL;
    fo->loop = loop;
    fo->kind = kind;
    opts_defaults(&fo->o);
    if (vl__opts_copy(&fo->o, o, &opts_desc, err, sizeof(err)) != VL_OK) {
        vl__free(fo);
        return vl__future_failed(loop, VL_EINVAL, "fan-out: %s", err);
    }
    /* The password as the caller's struct gave it (NULL when it is too old
     * to have one), copied into the URLs below and never kept. */
    pw = fo->o.password;
    fo->o.password = NULL;
    fo->r = vl__calloc(1, sizeof(*fo->r));
    if (fo->r == NULL)
        goto nomem;
    fo->r->kind = kind;
    fo->r->ncmds = kind == KIND_REDIS ? ncmds : 0;
    fo->r->h = vl__calloc(n, sizeof(fo_host));
    if (fo->r->h == NULL)
        goto nomem;
    fo->r->n = n;
    for (i = 0; i < n; i++) {
        int rc = urls[i] != NULL ? prepare_host(fo, i, urls[i], pw, err,
                                                sizeof(err))
                                 : (snprintf(err, sizeof(err), "NULL URL"), VL_EINVAL);
        if (rc == VL_ENOMEM)
            goto nomem;
        if (rc != VL_OK) {
            fanout_free(fo);
            return vl__future_failed(loop, rc, "host %zu: %s", i + 1, err);
        }
    }
    if (kind == KIND_REDIS) {
        fo->cmds = vl__calloc(ncmds, sizeof(*fo->cmds));
        if (fo->cmds == NULL)
            goto nomem;
        fo->ncmds = ncmds;
        for (i = 0; i < ncmds; i++)
            if (copy_cmd(&fo->cmds[i], &cmds[i]) != VL_OK)
                goto nomem;
    } else {
        fo->sql = vl__strdup(sql);
        if (fo->sql == NULL)
            goto nomem;
    }
    f = vl__future_make(loop, &fanout_ops, fo);
    if (f == NULL)
        goto nomem;
    fo->f = f;
    fo->remaining = n;
    start_hosts(fo);
    return f;
nomem:
    fanout_free(fo);
    return NULL;
}

vl_future *vl_fanout_redis(vl_loop *loop, const char *const *urls, size_t n, int argc,
                           const char *const *argv, const size_t *argvlen,
                           const vl_fanout_options *o)
{
    vl_redis_cmd cmd;

    cmd.argc = argc;
    cmd.argv = argv;
    cmd.argvlen = argvlen;
    return fanout_start(loop, KIND_REDIS, urls, n, &cmd, 1, NULL, o);
}

vl_future *vl_fanout_redis_batch(vl_loop *loop, const char *const *urls, size_t n,
                                 const vl_redis_cmd *cmds, size_t ncmds,
                                 const vl_fanout_options *o)
{
    return fanout_start(loop, KIND_REDIS, urls, n, cmds, ncmds, NULL, o);
}

vl_future *vl_fanout_mysql(vl_loop *loop, const char *const *urls, size_t n, const char *sql,
                           const vl_fanout_options *o)
{
    return fanout_start(loop, KIND_MYSQL, urls, n, NULL, 0, sql, o);
}

const vl_fanout_result *vl_future_fanout(const vl_future *f)
{
    if (f == NULL || vl__future_vtype(f) != VL__VAL_FANOUT)
        return NULL;
    return vl_future_value(f);
}

size_t vl_fanout_count(const vl_fanout_result *r)
{
    return r != NULL ? r->n : 0;
}

const char *vl_fanout_host(const vl_fanout_result *r, size_t i)
{
    return r != NULL && i < r->n ? r->h[i].display : NULL;
}

int vl_fanout_status(const vl_fanout_result *r, size_t i)
{
    return r != NULL && i < r->n ? r->h[i].status : VL_EINVAL;
}

const char *vl_fanout_error(const vl_fanout_result *r, size_t i)
{
    if (r == NULL || i >= r->n || r->h[i].status == VL_OK)
        return "";
    return r->h[i].msg != NULL ? r->h[i].msg : vl_strerror(r->h[i].status);
}

double vl_fanout_latency_ms(const vl_fanout_result *r, size_t i)
{
    return r != NULL && i < r->n ? r->h[i].latency_ms : 0.0;
}

const vl_redis_reply *vl_fanout_redis_reply(const vl_fanout_result *r, size_t i)
{
    return vl_fanout_redis_reply_at(r, i, 0);
}

const vl_redis_reply *vl_fanout_redis_reply_at(const vl_fanout_result *r, size_t i, size_t cmd)
{
    if (r == NULL || i >= r->n || r->kind != KIND_REDIS || cmd >= r->ncmds ||
        r->h[i].replies == NULL)
        return NULL;
    return r->h[i].replies[cmd];
}

size_t vl_fanout_batch_size(const vl_fanout_result *r)
{
    return r != NULL ? r->ncmds : 0;
}

const vl_mysql_result *vl_fanout_mysql_result(const vl_fanout_result *r, size_t i)
{
    return r != NULL && i < r->n && r->kind == KIND_MYSQL ? r->h[i].value : NULL;
}

unsigned vl_fanout_mysql_errno(const vl_fanout_result *r, size_t i)
{
    return r != NULL && i < r->n ? r->h[i].my_errno : 0;
}

const char *vl_fanout_mysql_sqlstate(const vl_fanout_result *r, size_t i)
{
    return r != NULL && i < r->n ? r->h[i].sqlstate : "";
}

/* ---- a cluster's nodes ---- */

/* Starts node i's command on its pool. The pool is borrowed from the map
 * only until the loop runs again, so every node's command is issued here, at
 * once: no node waits for another, and none needs its pool later. */
static void start_node(fanout *fo, fo_host *h, vl_redis_pool *pool, int argc, const char **argv,
                       const size_t *argvlen)
{
    vl_future *cmd, *op = NULL;

    h->start_ms = mono_ms();
    /* The pool's command timeout is the node's deadline; a gather of one
     * gives host_done the children it reads a Redis host's replies from. */
    cmd = vl_redis_pool_command_argv(pool, argc, argv, argvlen);
    if (cmd != NULL)
        op = vl_future_all(fo->loop, &cmd, 1);
    host_wait(fo, h, op, 0);
}

vl_future *vl_redis_cluster_each(vl_redis_cluster *cl, int which, int argc, const char **argv,
                                 const size_t *argvlen)
{
    enum { ON_STACK = 16 };
    vl_redis_pool *pools_s[ON_STACK], **pools = pools_s;
    const char *addrs_s[ON_STACK], **addrs = addrs_s;
    const char *msg = NULL;
    vl_loop *loop;
    fanout *fo = NULL;
    vl_future *f = NULL;
    size_t i, n;
    int k, rc;

    if (cl == NULL)
        return NULL;
    loop = vl__cluster_loop(cl);
    if (which != VL_REDIS_CLUSTER_PRIMARIES && which != VL_REDIS_CLUSTER_NODES)
        return vl__future_failed(loop, VL_EINVAL, "cluster fan-out: which is %d, not "
                                 "VL_REDIS_CLUSTER_PRIMARIES or VL_REDIS_CLUSTER_NODES", which);
    if (argc <= 0 || argv == NULL)
        return vl__future_failed(loop, VL_EINVAL, "cluster fan-out: no command");
    for (k = 0; k < argc; k++)
        if (argv[k] == NULL)
            return vl__future_failed(loop, VL_EINVAL, "cluster fan-out: argument %d is NULL", k);
    rc = vl__cluster_status(cl, &msg);
    if (rc != VL_OK)
        return vl__future_failed(loop, rc, "%s", msg != NULL ? msg : vl_strerror(rc));
    n = vl__cluster_targets(cl, which, pools, addrs, ON_STACK);
    if (n == 0) {
        const char *why = vl_redis_cluster_error(cl);

        return vl__future_failed(loop, VL_ECONN, "cluster fan-out: no map of the cluster yet%s%s",
                                 why[0] != '\0' ? ": " : "", why);
    }
    if (n > ON_STACK) {
        pools = vl__calloc(n, sizeof(*pools));
        addrs = vl__calloc(n, sizeof(*addrs));
        if (pools == NULL || addrs == NULL)
            goto nomem;
        /* The same map, as nothing ran in between: the same count. */
        n = vl__cluster_targets(cl, which, pools, addrs, n);
    }
    fo = vl__calloc(1, sizeof(*fo));
    if (fo == NULL)
        goto nomem;
    fo->loop = loop;
    fo->kind = KIND_CLUSTER;
    opts_defaults(&fo->o);
    fo->r = vl__calloc(1, sizeof(*fo->r));
    if (fo->r == NULL)
        goto nomem;
    fo->r->kind = KIND_REDIS;
    fo->r->ncmds = 1;
    fo->ncmds = 1; /* host_done keeps one reply per host; no copy of it in cmds */
    fo->r->h = vl__calloc(n, sizeof(fo_host));
    if (fo->r->h == NULL)
        goto nomem;
    fo->r->n = n;
    for (i = 0; i < n; i++) {
        fo_host *h = &fo->r->h[i];

        h->display = vl__strdup(addrs[i]);
        if (h->display == NULL)
            goto nomem;
        h->fo = fo;
        h->status = VL_ESTATE;
    }
    f = vl__future_make(loop, &fanout_ops, fo);
    if (f == NULL)
        goto nomem;
    fo->f = f;
    fo->remaining = n;
    fo->next = n;
    for (i = 0; i < n; i++)
        start_node(fo, &fo->r->h[i], pools[i], argc, argv, argvlen);
    if (fo->remaining == 0) { /* every node ran out of memory at once */
        finish(fo);
        fanout_free(fo);
    }
    goto out;
nomem:
    if (fo != NULL)
        fanout_free(fo);
out:
    if (pools != pools_s)
        vl__free(pools);
    if (addrs != addrs_s)
        vl__free(addrs);
    return f;
}
