/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/stream.c - byte streams over TCP and unix sockets: a listening
 * server, a client connect, and per stream one read, one drain and one
 * close future at a time over a bounded read buffer and a bounded output
 * buffer. The contract is include/volley/stream.h.
 *
 * Reads are satisfied only from the read buffer, by try_read(), which runs
 * after every change that could complete the pending read (bytes arrived,
 * EOF, a failure, a new read). It consumes bytes only when it completes the
 * read with VL_OK, so a cancelled or failed read loses nothing. The socket
 * is read only while the buffer is below its bound (read_bound()), which
 * is the whole of the read-side back-pressure: the kernel's buffers fill
 * and the peer's writes stall.
 *
 * Safe points: nothing here calls user code synchronously except the
 * accept callback, and futures' callbacks are queued by
 * vl__future_complete. A stream can still be freed under our feet (a
 * connect future that cannot keep its value frees it at once), so the I/O
 * callback counts `busy` and a free inside it only marks the stream; the
 * memory goes when the callback returns.
 *
 * TLS (tls://) goes through lib/tls.c, the layer rediss:// uses: a client's
 * context is made from the URL at connect, a server's once at listen, and
 * the handshake is a state of the watcher (hs) before the stream is given
 * out. The buffers hold plaintext; what the session decrypted ahead is read
 * by a 0 ms timer (rtimer), since the socket will not signal it.
 */
#include "internal.h"
#include "tls.h"
#include "url.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

struct vl_stream_buf {
    size_t len;
    char data[];
};

enum { R_NONE, R_LINE, R_EXACT, R_UNTIL_EOF, R_ANY };

typedef struct resolve_tok {
    vl_stream *s; /* NULL once the stream gave up on the answer */
    vl_future *f;
} resolve_tok;

struct vl_stream {
    vl__handle h;
    vl_loop *loop;
    vl_stream_options o;
    char *name; /* the address, for messages */
    int fd;
    vl__io io;
    int unref;  /* the I/O watcher is unref'd (nothing pending) */
    int busy;   /* inside io_cb */
    int freed;  /* vl_stream_free ran */
    int released;
    /* input */
    char *ib;
    size_t ib_off, ib_len, ib_cap;
    int eof;
    int nomem;  /* the read buffer could not grow: wait for the next read */
    int err;    /* VL_ECONN after a failure, VL_ECLOSED after abort */
    char *errmsg;
    vl_future *rf;
    int rkind;
    size_t rarg;
    /* output */
    char *ob;
    size_t ob_off, ob_len, ob_cap;
    vl__defer defer; /* the send of this iteration's writes */
    vl_future *df;
    vl_future *cf; /* close */
    int out_due;   /* the write watcher completes a drain or close */
    /* connect */
    vl_future *connf;
    vl__timer ctimer;
    resolve_tok *tok;
    char *addrs, *addr_next; /* '\n'-separated numeric addresses */
    char *addr_err;
    int port;
    char *path;
    /* TLS (tls://): the session over fd once it exists; hs is what a
     * pending handshake waits for (VL__TLS_WANT_*), 0 when none is. */
    vl__tls_ctx *tls_ctx; /* a client's, until the session holds it */
    char *tls_host;       /* what the server's certificate must name */
    vl__tls *sess;
    int hs;
    int tls_rw;           /* a TLS read waits for the socket to be writable */
    int tls_wr;           /* a TLS write waits for it to be readable */
    int tls_blocked;      /* the last TLS read waited for the socket */
    vl__timer rtimer;     /* reads what the session holds, which the socket
                           * will not signal (0 ms: after the next poll, so
                           * that a read it completes ends the iteration) */
    vl_stream_server *srv; /* accepted, handshake pending: who gets it */
    vl_stream *hs_prev, *hs_next;
};

struct vl_stream_server {
    vl__handle h;
    vl_loop *loop;
    vl_stream_options o;
    char *name;
    char *path; /* unix socket file to remove on close */
    int fd;
    int port;
    vl__io io;
    vl__timer pause;
    int unref;
    int busy;
    int closed;
    int status;
    char *errmsg;
    vl_stream_accept_fn on_accept;
    void *ud;
    vl__tls_ctx *tls_ctx; /* tls://: made once, at listen */
    vl_stream *hs_list;   /* accepted streams still in their handshake */
    uint64_t hs_failures;
    char *hs_error;       /* the last failed handshake's reason */
};

/* ---- options ---- */

static const size_t opts_ends[] = {
    VL__END(vl_stream_options, struct_size),
    VL__END(vl_stream_options, connect_timeout_ms),
    VL__END(vl_stream_options, read_buffer_max),
    VL__END(vl_stream_options, write_buffer_max),
    VL__END(vl_stream_options, write_low_water),
    VL__END(vl_stream_options, backlog),
    VL__END(vl_stream_options, server_holds_loop),
    VL__END(vl_stream_options, handshake_timeout_ms),
};
_Static_assert(sizeof(vl_stream_options) == VL__END(vl_stream_options, handshake_timeout_ms),
               "vl_stream_options ends with padding");
static const vl__opts_desc opts_desc = {"vl_stream_options", sizeof(vl_stream_options), opts_ends,
                                        sizeof(opts_ends) / sizeof(opts_ends[0])};

static void opts_defaults(vl_stream_options *o)
{
    memset(o, 0, sizeof(*o));
    o->struct_size = sizeof(*o);
    o->connect_timeout_ms = 5000;
    o->read_buffer_max = 256u * 1024;
    o->write_buffer_max = 1024u * 1024;
    o->write_low_water = 64u * 1024;
    o->backlog = 511;
    o->server_holds_loop = 1;
    o->handshake_timeout_ms = 10000;
}

void vl_stream_options_init_sized(vl_stream_options *o, size_t struct_size)
{
    vl_stream_options d;

    opts_defaults(&d);
    vl__opts_init(o, struct_size, &d, &opts_desc);
}

/* The caller's options over the defaults, checked. */
static int opts_read(vl_stream_options *out, const vl_stream_options *in, char *why, size_t n)
{
    opts_defaults(out);
    if (vl__opts_copy(out, in, &opts_desc, why, n) != VL_OK)
        return VL_EINVAL;
    if (out->read_buffer_max == 0 || out->write_buffer_max == 0 ||
        out->write_low_water >= out->write_buffer_max || out->backlog <= 0) {
        snprintf(why, n, "options: read_buffer_max and write_buffer_max must be > 0, "
                         "write_low_water < write_buffer_max, backlog > 0");
        return VL_EINVAL;
    }
    return VL_OK;
}

/* ---- addresses ---- */

typedef struct saddr {
    struct sockaddr_storage ss;
    socklen_t len;
} saddr;

/* Fills `a` from a numeric host (or a unix path when host is NULL). */
static int saddr_make(saddr *a, const char *host, int port, const char *path)
{
    memset(a, 0, sizeof(*a));
    if (host == NULL) {
        struct sockaddr_un *su = (struct sockaddr_un *)(void *)&a->ss;
        if (strlen(path) >= sizeof(su->sun_path))
            return VL_EINVAL;
        su->sun_family = AF_UNIX;
        memcpy(su->sun_path, path, strlen(path) + 1);
        a->len = (socklen_t)sizeof(*su);
        return VL_OK;
    }
    {
        struct sockaddr_in *s4 = (struct sockaddr_in *)(void *)&a->ss;
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)(void *)&a->ss;
        if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
            s4->sin_family = AF_INET;
            s4->sin_port = htons((uint16_t)port);
            a->len = (socklen_t)sizeof(*s4);
            return VL_OK;
        }
        if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
            s6->sin6_family = AF_INET6;
            s6->sin6_port = htons((uint16_t)port);
            a->len = (socklen_t)sizeof(*s6);
            return VL_OK;
        }
    }
    return VL_EINVAL;
}

/* Parses "tcp://host:port", "tls://host:port?..." (*tls set; the query is
 * left to vl__tls_ctx_from_url) or "unix:///path". */
static int addr_parse(const char *addr, vl__url *u, int *tls, char *why, size_t n)
{
    int rc;

    memset(u, 0, sizeof(*u));
    if (addr == NULL) {
        snprintf(why, n, "address is NULL");
        return VL_EINVAL;
    }
    /* The URL parser wants ports 1-65535; port 0 (the kernel's pick for a
     * listener) is taken off before it and given back after. */
    {
        const char *auth = strstr(addr, "://"), *end;
        size_t alen;
        if (auth != NULL) {
            auth += 3;
            end = auth + strcspn(auth, "/?#");
            alen = (size_t)(end - auth);
            if (alen > 2 && auth[alen - 2] == ':' && auth[alen - 1] == '0' &&
                (auth[alen - 3] == ']' || memchr(auth, '[', alen) == NULL)) {
                char *copy = vl__malloc(strlen(addr) + 1);
                if (copy == NULL)
                    return VL_ENOMEM;
                memcpy(copy, addr, (size_t)(end - addr) - 2);
                strcpy(copy + (end - addr) - 2, end);
                rc = vl__url_parse(copy, u, why, n);
                vl__free(copy);
                goto parsed;
            }
        }
    }
    rc = vl__url_parse(addr, u, why, n);
parsed:
    if (rc != VL_OK)
        return rc;
    *tls = strcmp(u->scheme, "tls") == 0;
    if (*tls) {
        if (u->host[0] == '\0' || (u->path != NULL && u->path[0] != '\0')) {
            snprintf(why, n, "%s: expected tls://host:port", u->display);
            return VL_EINVAL;
        }
        return VL_OK;
    }
    if (strcmp(u->scheme, "unix") == 0) {
        if (u->host[0] != '\0' || u->path == NULL || u->path[0] == '\0') {
            snprintf(why, n, "%s: unix:// needs a path and no host", u->display);
            return VL_EINVAL;
        }
    } else if (strcmp(u->scheme, "tcp") != 0 || u->host[0] == '\0' ||
               (u->path != NULL && u->path[0] != '\0')) {
        snprintf(why, n, "%s: expected tcp://host:port, tls://host:port or unix:///path",
                 u->display);
        return VL_EINVAL;
    }
    if (u->nparams > 0) {
        snprintf(why, n, "%s: unknown parameter %s", u->display, u->keys[0]);
        return VL_EINVAL;
    }
    return VL_OK;
}

static const char *errno_text(int err, char *buf, size_t len)
{
    return strerror_r(err, buf, len);
}

static void set_str(char **dst, const char *src)
{
    vl__free(*dst);
    *dst = src != NULL ? vl__strdup(src) : NULL;
}

/* ---- streams: holding the loop and the watcher ---- */

static size_t read_bound(const vl_stream *s)
{
    size_t b = s->o.read_buffer_max, need = 0;

    if (s->rf != NULL) {
        switch (s->rkind) {
        case R_EXACT: need = s->rarg; break;
        case R_LINE: need = s->rarg + 2; break;
        case R_UNTIL_EOF: need = s->rarg + 1; break;
        default: break;
        }
    }
    return need > b ? need : b;
}

static int holds_loop(const vl_stream *s)
{
    return s->rf != NULL || s->df != NULL || s->cf != NULL || s->connf != NULL || s->ob_len > 0 ||
           (s->srv != NULL && s->o.server_holds_loop);
}

static void rtimer_cb(vl__timer *t, void *ud);

/* The one place the watcher changes: libev wants an unref'd watcher ref'd
 * again before it is stopped or changed. */
static void io_update(vl_stream *s)
{
    int ev = 0;

    if (s->fd >= 0) {
        if (s->hs != 0) {
            ev = s->hs == VL__TLS_WANT_WRITE ? VL__WRITE : VL__READ;
        } else if (s->connf != NULL) {
            ev = VL__WRITE;
        } else {
            if (s->cf == NULL && !s->eof && !s->err && !s->nomem && s->ib_len < read_bound(s)) {
                ev |= VL__READ | (s->tls_rw ? VL__WRITE : 0);
                /* Decrypted bytes (or whole records read ahead) wait in
                 * the session; the socket will not say so. */
                if (s->sess != NULL && !s->tls_blocked && vl__tls_pending(s->sess) > 0 &&
                    !vl__timer_active(&s->rtimer))
                    vl__timer_start(&s->rtimer, 0);
            }
            if (s->ob_len > 0 && !s->defer.queued)
                ev |= s->tls_wr ? VL__READ : VL__WRITE;
            if (s->out_due)
                ev |= VL__WRITE;
        }
    }
    if (s->unref) {
        vl__loop_ref(s->loop);
        s->unref = 0;
    }
    if (ev == 0)
        vl__io_stop(&s->io);
    else
        vl__io_set(&s->io, s->fd, ev);
    if (ev != 0 && !holds_loop(s)) {
        vl__loop_unref(s->loop);
        s->unref = 1;
    }
}

static void close_fd(vl_stream *s)
{
    if (s->unref) {
        vl__loop_ref(s->loop);
        s->unref = 0;
    }
    vl__io_stop(&s->io);
    /* close_notify (one attempt) goes before the socket does. */
    vl__tls_free(s->sess);
    s->sess = NULL;
    s->hs = s->tls_rw = s->tls_wr = 0;
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

/* The message of a failed stream (its copy may have failed for memory). */
static const char *err_text(const vl_stream *s)
{
    return s->errmsg != NULL ? s->errmsg : vl_strerror(s->err);
}

/* ---- futures ---- */

static void describe(vl_stream *s, const char *what, char *buf, size_t n)
{
    snprintf(buf, n, "%s on %s", what, s->name != NULL ? s->name : "a stream");
}

/* The one cancel hook: a read or drain is forgotten (rule 3: nothing was
 * consumed); giving up on a connect or a close frees the stream, which
 * nobody else holds then. */
static void op_cancel(void *src, vl_future *f, int status)
{
    vl_stream *s = src;

    VL__UNUSED(status);
    if (s->rf == f || s->df == f) {
        if (s->rf == f) {
            s->rf = NULL;
            s->nomem = 0;
        } else {
            s->df = NULL;
        }
        io_update(s);
        return;
    }
    if (s->connf == f)
        s->connf = NULL;
    if (s->cf == f)
        s->cf = NULL;
    vl_stream_free(s);
}

static void read_describe(void *src, char *buf, size_t n)
{
    describe(src, "stream read", buf, n);
}

static void drain_describe(void *src, char *buf, size_t n)
{
    describe(src, "stream drain", buf, n);
}

static void connect_describe(void *src, char *buf, size_t n)
{
    describe(src, "connect", buf, n);
}

static void close_describe(void *src, char *buf, size_t n)
{
    describe(src, "stream close", buf, n);
}

static const vl__source_ops read_ops = {op_cancel, read_describe};
static const vl__source_ops drain_ops = {op_cancel, drain_describe};
static const vl__source_ops connect_ops = {op_cancel, connect_describe};
static const vl__source_ops close_ops = {op_cancel, close_describe};

/* Completes *slot (if pending) and forgets it. */
static void finish(vl_future **slot, int status, const char *msg)
{
    vl_future *f = *slot;

    if (f == NULL)
        return;
    *slot = NULL;
    vl__future_complete(f, status, NULL, VL__VAL_NONE, NULL, msg);
}

/* The handle is the first member: its address is the object's. */
static void handle_release(vl__handle *h)
{
    vl__free(h);
}

static void release(vl_stream *s)
{
    if (s->released)
        return;
    s->released = 1;
    vl__handle_bury(s->loop, &s->h, handle_release);
}

static void stream_free_value(void *v)
{
    vl_stream_free(v);
}

static void buf_free_value(void *v)
{
    vl_stream_buf_free(v);
}

static void handle_free(vl__handle *h)
{
    vl_stream_free((vl_stream *)(void *)h);
}

/* ---- reading ---- */

static void consume(vl_stream *s, size_t n)
{
    s->ib_off += n;
    s->ib_len -= n;
    if (s->ib_len == 0) {
        s->ib_off = 0;
        if (s->ib_cap > s->o.read_buffer_max) {
            /* Grown for one large read: give it back. */
            vl__free(s->ib);
            s->ib = NULL;
            s->ib_cap = 0;
        }
    }
}

/* Completes the pending read with n bytes from the buffer, then consumes
 * `take` (n plus a line's terminator). */
static void read_done(vl_stream *s, size_t n, size_t take)
{
    vl_stream_buf *b = vl__malloc(sizeof(*b) + n + 1);

    if (b == NULL) {
        finish(&s->rf, VL_ENOMEM, "out of memory for a stream read's buffer");
        return;
    }
    b->len = n;
    if (n > 0)
        memcpy(b->data, s->ib + s->ib_off, n);
    b->data[n] = '\0';
    consume(s, take);
    {
        vl_future *f = s->rf;
        s->rf = NULL;
        vl__future_complete(f, VL_OK, b, VL__VAL_USER, buf_free_value, NULL);
    }
}

/* The failure of a read that the buffer cannot satisfy. */
static void read_fail_end(vl_stream *s)
{
    if (s->err)
        finish(&s->rf, s->err, s->errmsg);
}

static void try_line(vl_stream *s)
{
    const char *p = s->ib + s->ib_off, *nl = s->ib_len > 0 ? memchr(p, '\n', s->ib_len) : NULL;
    size_t max = s->rarg;

    if (nl != NULL) {
        size_t len = (size_t)(nl - p);
        size_t content = len > 0 && p[len - 1] == '\r' ? len - 1 : len;
        if (content > max) {
            vl__future_fail(s->rf, VL_EPROTO, "line longer than %zu bytes", max);
            s->rf = NULL;
        } else {
            read_done(s, content, len + 1);
        }
        return;
    }
    /* No "\n" yet: even a "\r" last leaves max_len + 1 bytes of line. */
    if (s->ib_len >= max + 2 || (s->eof && s->ib_len > max)) {
        vl__future_fail(s->rf, VL_EPROTO, "line longer than %zu bytes", max);
        s->rf = NULL;
    } else if (s->eof && s->ib_len > 0) {
        read_done(s, s->ib_len, s->ib_len);
    } else if (s->eof) {
        finish(&s->rf, VL_ECLOSED, "end of stream");
    } else {
        read_fail_end(s);
    }
}

/* Completes the pending read if the buffer (and EOF, and failures) can. */
static void try_read(vl_stream *s)
{
    if (s->rf == NULL)
        return;
    switch (s->rkind) {
    case R_LINE:
        try_line(s);
        break;
    case R_EXACT:
        if (s->ib_len >= s->rarg)
            read_done(s, s->rarg, s->rarg);
        else if (s->eof) {
            vl__future_fail(s->rf, VL_ECLOSED, "end of stream after %zu of %zu bytes", s->ib_len,
                            s->rarg);
            s->rf = NULL;
        } else
            read_fail_end(s);
        break;
    case R_UNTIL_EOF:
        if (s->ib_len > s->rarg) {
            vl__future_fail(s->rf, VL_EPROTO, "more than %zu bytes before the end of stream",
                            s->rarg);
            s->rf = NULL;
        } else if (s->eof)
            read_done(s, s->ib_len, s->ib_len);
        else
            read_fail_end(s);
        break;
    default:
        if (s->ib_len > 0) {
            size_t n = s->ib_len < s->rarg ? s->ib_len : s->rarg;
            read_done(s, n, n);
        } else if (s->eof)
            read_done(s, 0, 0);
        else
            read_fail_end(s);
        break;
    }
}

/* A failure (reset, I/O error, abort): the socket goes, output is dropped,
 * and every pending future learns it; buffered input stays readable. */
static void stream_fail(vl_stream *s, int status, const char *msg)
{
    if (s->err)
        return;
    s->err = status;
    set_str(&s->errmsg, msg);
    close_fd(s);
    s->ob_len = s->ob_off = 0;
    try_read(s);
    finish(&s->df, status, msg);
    if (s->cf != NULL) {
        finish(&s->cf, status, msg);
        vl_stream_free(s);
    }
}

static void stream_fail_errno(vl_stream *s, const char *what, int e)
{
    char ebuf[128];
    char *msg = vl__asprintf("%s %s: %s", what, s->name, errno_text(e, ebuf, sizeof(ebuf)));

    stream_fail(s, VL_ECONN, msg != NULL ? msg : "connection lost");
    vl__free(msg);
}

/* Room for at least one more byte in the read buffer, up to `bound`. */
static size_t ib_room(vl_stream *s, size_t bound)
{
    size_t want;
    char *nb;

    if (s->ib_off > 0 && s->ib_off + s->ib_len == s->ib_cap) {
        memmove(s->ib, s->ib + s->ib_off, s->ib_len);
        s->ib_off = 0;
    }
    if (s->ib_off + s->ib_len < s->ib_cap)
        return s->ib_cap - s->ib_off - s->ib_len;
    want = s->ib_cap < 16384 ? 16384 : s->ib_cap * 2;
    if (want > bound)
        want = bound;
    if (want <= s->ib_cap)
        return 0;
    nb = vl__realloc(s->ib, want);
    if (nb == NULL)
        return 0;
    s->ib = nb;
    s->ib_cap = want;
    return want - s->ib_off - s->ib_len;
}

/* One TLS read into the buffer's room: 0 to go on, 1 to stop (waiting for
 * the socket, EOF, or the stream failed). */
static int tls_read(vl_stream *s, size_t room)
{
    char why[256];
    int want = 0;
    ssize_t n = vl__tls_read(s->sess, s->ib + s->ib_off + s->ib_len, room, &want, why,
                             sizeof(why));

    s->tls_rw = n == -1 && want == VL__TLS_WANT_WRITE;
    s->tls_blocked = n == -1;
    if (n > 0) {
        s->ib_len += (size_t)n;
        return 0;
    }
    if (n == 0) {
        s->eof = 1;
    } else if (n == -2) {
        char *msg = vl__asprintf("read %s: %s", s->name, why);
        stream_fail(s, VL_ECONN, msg != NULL ? msg : why);
        vl__free(msg);
    }
    return 1;
}

static void do_read(vl_stream *s)
{
    int rounds;

    for (rounds = 0; rounds < 8 && s->fd >= 0 && !s->eof; rounds++) {
        size_t bound = read_bound(s), room;
        ssize_t n;

        if (s->ib_len >= bound)
            break;
        room = ib_room(s, bound);
        if (room == 0) {
            s->nomem = 1;
            finish(&s->rf, VL_ENOMEM, "out of memory for the stream's read buffer");
            break;
        }
        if (room > bound - s->ib_len)
            room = bound - s->ib_len;
        if (s->sess != NULL) {
            if (tls_read(s, room) != 0)
                break;
            continue;
        }
        n = recv(s->fd, s->ib + s->ib_off + s->ib_len, room, 0);
        if (n > 0) {
            s->ib_len += (size_t)n;
            continue;
        }
        if (n == 0) {
            s->eof = 1;
            break;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            stream_fail_errno(s, "read", errno);
        break;
    }
    try_read(s);
}

/* ---- writing ---- */

/* 1 when a drain or close waits only for the output that is gone now. */
static int output_due(const vl_stream *s)
{
    return (s->df != NULL && s->ob_len <= s->o.write_low_water) ||
           (s->cf != NULL && s->ob_len == 0 && !s->err);
}

static void after_output(vl_stream *s)
{
    s->out_due = 0;
    if (s->ob_len <= s->o.write_low_water)
        finish(&s->df, VL_OK, NULL);
    if (s->ob_len == 0 && s->cf != NULL && !s->err) {
        close_fd(s);
        finish(&s->cf, VL_OK, NULL);
        vl_stream_free(s);
    }
}

/* One TLS write of the buffer's head (the session's rule: what a write
 * that waited was given stays first and unchanged, which the buffer keeps
 * by only ever appending and moving): 0 to go on, 1 when it waits for the
 * socket, -1 when the stream failed. */
static int tls_write(vl_stream *s)
{
    char why[256];
    int want = 0;
    ssize_t n = vl__tls_write(s->sess, s->ob + s->ob_off, s->ob_len, &want, why, sizeof(why));

    s->tls_wr = n == -1 && want == VL__TLS_WANT_READ;
    if (n > 0) {
        s->ob_off += (size_t)n;
        s->ob_len -= (size_t)n;
        return 0;
    }
    if (n == -1)
        return 1;
    {
        char *msg = vl__asprintf("write %s: %s", s->name, why);
        stream_fail(s, VL_ECONN, msg != NULL ? msg : why);
        vl__free(msg);
    }
    return -1;
}

/* Sends what the buffer holds. 0, or -1 when the stream failed. */
static int flush(vl_stream *s)
{
    while (s->ob_len > 0 && s->fd >= 0) {
        ssize_t n;
        if (s->sess != NULL) {
            int rc = tls_write(s);
            if (rc < 0)
                return -1;
            if (rc > 0)
                break;
            continue;
        }
        n = send(s->fd, s->ob + s->ob_off, s->ob_len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            s->ob_off += (size_t)n;
            s->ob_len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        stream_fail_errno(s, "write", n < 0 ? errno : EPIPE);
        return -1;
    }
    if (s->ob_len == 0)
        s->ob_off = 0;
    return 0;
}

/* Writes issued during one loop iteration go out together, in one send
 * before the loop next waits (the prepare phase), as lib/redis.c does:
 * a server answering many lines of one read pays one syscall, not one per
 * line. What the socket does not take then waits for the write watcher. */
/* The end of a callback that ran with busy counted: the memory of a
 * stream freed meanwhile goes now, a live one gets its watcher updated. */
static void cb_done(vl_stream *s)
{
    s->busy--;
    if (s->freed) {
        if (s->busy == 0)
            release(s);
        return;
    }
    io_update(s);
}

static void flush_deferred(vl__defer *d)
{
    vl_stream *s = (vl_stream *)(void *)((char *)d - offsetof(vl_stream, defer));

    /* A drain or close that this flush completes does so from the write
     * watcher, after the poll: completed in this (prepare) phase, its
     * continuation would run before a poll that nothing then wakes. */
    s->busy++;
    if (s->fd >= 0 && flush(s) == 0 && output_due(s))
        s->out_due = 1;
    cb_done(s);
}

/* Reads what the TLS session holds (io_update starts it). */
static void rtimer_cb(vl__timer *t, void *ud)
{
    vl_stream *s = ud;

    VL__UNUSED(t);
    s->busy++;
    if (s->fd >= 0 && s->cf == NULL)
        do_read(s);
    cb_done(s);
}

int vl_stream_write(vl_stream *s, const void *data, size_t len)
{
    if (s == NULL || s->freed || (data == NULL && len > 0))
        return VL_EINVAL;
    if (s->err)
        return s->err;
    if (s->cf != NULL)
        return VL_ECLOSED;
    if (len == 0)
        return VL_OK;
    if (len > s->o.write_buffer_max)
        return VL_EINVAL;
    if (s->ob_len + len > s->o.write_buffer_max)
        return VL_EBUSY;
    /* Room first, so that nothing is sent that could not be queued. */
    if (s->ob_off + s->ob_len + len > s->ob_cap) {
        if (s->ob_off > 0) {
            memmove(s->ob, s->ob + s->ob_off, s->ob_len);
            s->ob_off = 0;
        }
        if (s->ob_len + len > s->ob_cap) {
            size_t want = s->ob_cap < 16384 ? 16384 : s->ob_cap * 2;
            char *nb;
            if (want < s->ob_len + len)
                want = s->ob_len + len;
            if (want > s->o.write_buffer_max)
                want = s->o.write_buffer_max;
            nb = vl__realloc(s->ob, want);
            if (nb == NULL)
                return VL_ENOMEM;
            s->ob = nb;
            s->ob_cap = want;
        }
    }
    memcpy(s->ob + s->ob_off + s->ob_len, data, len);
    s->ob_len += len;
    if (!s->defer.queued && !(s->io.events & VL__WRITE)) {
        s->defer.cb = flush_deferred;
        vl__defer_queue(s->loop, &s->defer);
    }
    return VL_OK;
}

size_t vl_stream_write_buffered(const vl_stream *s)
{
    return s != NULL ? s->ob_len : 0;
}

size_t vl_stream_read_buffered(const vl_stream *s)
{
    return s != NULL ? s->ib_len : 0;
}

/* ---- connecting ---- */

static void set_tcp(int fd)
{
    int on = 1;

    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
}

static void connect_fail(vl_stream *s, int status, const char *reason)
{
    vl_future *f = s->connf;

    s->connf = NULL;
    vl__future_fail(f, status, "connect %s: %s", s->name, reason);
    vl_stream_free(s);
}

static void hs_step(vl_stream *s);

/* The connection is up (and its TLS handshake done): the future gets it. */
static void stream_up(vl_stream *s)
{
    vl_future *f = s->connf;

    vl__timer_stop(&s->ctimer);
    s->connf = NULL;
    io_update(s);
    /* The future owns the stream until taken; if it cannot keep it, it
     * frees it right here (busy keeps the memory until io_cb returns). */
    vl__future_complete(f, VL_OK, s, VL__VAL_USER, stream_free_value, NULL);
}

/* TCP is up: a TLS stream starts its handshake, within the same
 * connect_timeout_ms. */
static void connect_up(vl_stream *s)
{
    if (s->tls_ctx == NULL) {
        stream_up(s);
        return;
    }
    s->sess = vl__tls_new(s->tls_ctx, s->fd, s->tls_host);
    if (s->sess == NULL) {
        connect_fail(s, VL_ENOMEM, "out of memory for the TLS session");
        return;
    }
    s->hs = VL__TLS_WANT_WRITE;
    hs_step(s);
}

static void hs_accepted(vl_stream *s, int rc, const char *why);

/* One step of a client's or an accepted stream's TLS handshake. */
static void hs_step(vl_stream *s)
{
    char why[256];
    int rc = vl__tls_handshake(s->sess, why, sizeof(why));

    if (rc == VL__TLS_WANT_READ || rc == VL__TLS_WANT_WRITE) {
        s->hs = rc;
        io_update(s);
        return;
    }
    s->hs = 0;
    if (s->srv != NULL)
        hs_accepted(s, rc, why);
    else if (rc == VL_OK)
        stream_up(s);
    else
        connect_fail(s, rc == VL_ENOMEM ? VL_ENOMEM : VL_ECONN, why);
}

static void hs_unlink(vl_stream *s)
{
    if (s->srv == NULL)
        return;
    if (s->hs_prev != NULL)
        s->hs_prev->hs_next = s->hs_next;
    else
        s->srv->hs_list = s->hs_next;
    if (s->hs_next != NULL)
        s->hs_next->hs_prev = s->hs_prev;
    s->hs_prev = s->hs_next = NULL;
    s->srv = NULL;
}

static void server_release(vl_stream_server *srv);

/* A failed handshake of an accepted connection is nobody's business but
 * the operator's: counted, its reason kept, the connection closed. */
static void hs_refused(vl_stream_server *srv, vl_stream *s, const char *why)
{
    char *msg = vl__asprintf("%s: %s", s->name, why);

    srv->hs_failures++;
    vl__free(srv->hs_error);
    srv->hs_error = msg;
    vl_stream_free(s);
}

/* An accepted stream's handshake ended: on_accept gets it only now. */
static void hs_accepted(vl_stream *s, int rc, const char *why)
{
    vl_stream_server *srv = s->srv;

    hs_unlink(s);
    vl__timer_stop(&s->ctimer);
    if (rc != VL_OK) {
        hs_refused(srv, s, why);
        return;
    }
    io_update(s);
    srv->busy++;
    srv->on_accept(srv, s, srv->ud);
    srv->busy--;
    if (srv->closed && srv->busy == 0)
        server_release(srv);
}

/* An accepted connection on a tls:// server: its handshake first. */
static void hs_begin(vl_stream_server *srv, vl_stream *s)
{
    s->sess = vl__tls_new(srv->tls_ctx, s->fd, NULL);
    if (s->sess == NULL) {
        hs_refused(srv, s, "out of memory for the TLS session");
        return;
    }
    s->srv = srv;
    s->hs_next = srv->hs_list;
    if (srv->hs_list != NULL)
        srv->hs_list->hs_prev = s;
    srv->hs_list = s;
    s->hs = VL__TLS_WANT_READ;
    if (s->o.handshake_timeout_ms > 0)
        vl__timer_start(&s->ctimer, s->o.handshake_timeout_ms);
    hs_step(s);
}

/* Tries the next addresses until one connects or is connecting. */
static void try_connect(vl_stream *s)
{
    char ebuf[128];

    for (;;) {
        const char *host = NULL;
        saddr a;
        int fd;

        if (s->path == NULL) {
            char *nl;
            if (s->addr_next == NULL)
                break;
            host = s->addr_next;
            nl = strchr(s->addr_next, '\n');
            s->addr_next = nl != NULL ? nl + 1 : NULL;
            if (nl != NULL)
                *nl = '\0';
        }
        if (saddr_make(&a, host, s->port, s->path) != VL_OK) {
            set_str(&s->addr_err, host == NULL ? "socket path too long" : "bad address");
            if (host == NULL)
                break;
            continue;
        }
        fd = socket(a.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            set_str(&s->addr_err, errno_text(errno, ebuf, sizeof(ebuf)));
            if (host == NULL)
                break;
            continue;
        }
        if (host != NULL)
            set_tcp(fd);
        s->fd = fd;
        if (connect(fd, (struct sockaddr *)(void *)&a.ss, a.len) == 0) {
            connect_up(s);
            return;
        }
        if (errno == EINPROGRESS) {
            io_update(s);
            return;
        }
        set_str(&s->addr_err, errno_text(errno, ebuf, sizeof(ebuf)));
        close(fd);
        s->fd = -1;
        if (host == NULL)
            break;
    }
    connect_fail(s, VL_ECONN, s->addr_err != NULL ? s->addr_err : "cannot connect");
}

static void connect_done(vl_stream *s)
{
    int err = 0;
    socklen_t el = sizeof(err);
    char ebuf[128];

    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
        err = errno;
    if (err == 0) {
        connect_up(s);
        return;
    }
    set_str(&s->addr_err, errno_text(err, ebuf, sizeof(ebuf)));
    close_fd(s);
    try_connect(s);
}

static void io_cb(vl__io *io, int events, void *ud)
{
    vl_stream *s = ud;

    VL__UNUSED(io);
    s->busy++;
    if (s->hs != 0) {
        hs_step(s);
    } else if (s->connf != NULL) {
        connect_done(s);
    } else {
        /* A TLS write may wait for the socket to be readable, a TLS read
         * for it to be writable. */
        int wr = (events & VL__WRITE) || ((events & VL__READ) && s->tls_wr);
        int rd = ((events & VL__READ) || ((events & VL__WRITE) && s->tls_rw)) && s->cf == NULL;
        if (wr && s->fd >= 0 && flush(s) == 0)
            after_output(s);
        if (rd && s->fd >= 0 && !s->freed)
            do_read(s);
    }
    cb_done(s);
}

static void ctimer_cb(vl__timer *t, void *ud)
{
    vl_stream *s = ud;
    char msg[64];

    VL__UNUSED(t);
    if (s->srv != NULL) {
        snprintf(msg, sizeof(msg), "TLS handshake timed out after %" PRIu64 " ms",
                 s->o.handshake_timeout_ms);
        hs_accepted(s, VL_ETIMEDOUT, msg);
        return;
    }
    if (s->connf == NULL)
        return;
    snprintf(msg, sizeof(msg), "timed out after %" PRIu64 " ms", s->o.connect_timeout_ms);
    close_fd(s);
    connect_fail(s, VL_ETIMEDOUT, msg);
}

static void resolved_cb(vl_future *f, void *ud)
{
    resolve_tok *tok = ud;
    vl_stream *s = tok->s;

    vl__free(tok);
    if (s == NULL)
        return;
    s->tok = NULL;
    if (vl_future_status(f) != VL_OK) {
        connect_fail(s, vl_future_status(f) == VL_ENOMEM ? VL_ENOMEM : VL_ECONN,
                     vl_future_error(f));
        return;
    }
    s->addrs = vl_future_take(f);
    s->addr_next = s->addrs;
    try_connect(s);
}

static vl_stream *stream_new(vl_loop *loop, const vl_stream_options *o, int fd)
{
    vl_stream *s = vl__calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
    s->loop = loop;
    s->o = *o;
    s->fd = fd;
    vl__io_init(&s->io, loop, fd, io_cb, s);
    vl__timer_init(&s->ctimer, loop, ctimer_cb, s);
    vl__timer_init(&s->rtimer, loop, rtimer_cb, s);
    vl__handle_add(loop, &s->h, handle_free);
    return s;
}

vl_future *vl_stream_connect(vl_loop *loop, const char *addr, const vl_stream_options *o)
{
    vl_stream_options opts;
    char why[640];
    vl__tls_ctx *tls_ctx = NULL;
    vl__url u;
    vl_stream *s;
    int rc, tls = 0;

    if (loop == NULL)
        return NULL;
    if (vl__loop_closing(loop))
        return vl__future_failed(loop, VL_ECLOSED, "connect: the loop is being freed");
    if (opts_read(&opts, o, why, sizeof(why)) != VL_OK)
        return vl__future_failed(loop, VL_EINVAL, "connect: %s", why);
    rc = addr_parse(addr, &u, &tls, why, sizeof(why));
    if (rc == VL_OK && u.path == NULL && (u.port <= 0 || u.port > 65535)) {
        snprintf(why, sizeof(why), "%s: no port", u.display);
        rc = VL_EINVAL;
    }
    if (rc == VL_OK && tls) {
        char twhy[256];
        /* The files are read here, once per connect, as rediss:// does per
         * connection that has no pool to share a context with. */
        rc = vl__tls_ctx_from_url(&tls_ctx, &u, 0, twhy, sizeof(twhy));
        if (rc != VL_OK)
            snprintf(why, sizeof(why), "%s: %s", u.display, twhy);
    }
    if (rc != VL_OK) {
        vl__url_clear(&u);
        return rc == VL_ENOMEM ? NULL : vl__future_failed(loop, rc, "connect: %s", why);
    }
    s = stream_new(loop, &opts, -1);
    if (s == NULL) {
        vl__tls_ctx_free(tls_ctx);
        vl__url_clear(&u);
        return NULL;
    }
    s->tls_ctx = tls_ctx;
    if (tls)
        s->tls_host = vl__strdup(u.host);
    s->name = vl__strdup(u.display);
    s->port = u.port;
    if (u.host[0] == '\0')
        s->path = vl__strdup(u.path);
    s->connf = vl__future_make(loop, &connect_ops, s);
    if (s->name == NULL || s->connf == NULL || (u.host[0] == '\0' && s->path == NULL) ||
        (tls && s->tls_host == NULL)) {
        vl_future *f = s->connf;
        s->connf = NULL;
        if (f != NULL) {
            vl__future_set_source(f, NULL, NULL); /* never made: nothing to cancel */
            vl_future_free(f);
        }
        vl_stream_free(s);
        vl__url_clear(&u);
        return NULL;
    }
    {
        vl_future *f = s->connf;
        if (opts.connect_timeout_ms > 0)
            vl__timer_start(&s->ctimer, opts.connect_timeout_ms);
        if (s->path != NULL || vl__host_is_ip(u.host)) {
            if (s->path == NULL) {
                s->addrs = vl__strdup(u.host);
                s->addr_next = s->addrs;
            }
            if (s->path == NULL && s->addrs == NULL)
                connect_fail(s, VL_ENOMEM, "out of memory");
            else
                try_connect(s);
        } else {
            resolve_tok *tok = vl__calloc(1, sizeof(*tok));
            vl_future *rf = tok != NULL ? vl__resolve_all(loop, u.host) : NULL;
            if (rf == NULL) {
                vl__free(tok);
                connect_fail(s, VL_ENOMEM, "out of memory resolving the host");
            } else {
                tok->s = s;
                tok->f = rf;
                s->tok = tok;
                vl_future_then(rf, resolved_cb, tok);
            }
        }
        vl__url_clear(&u);
        return f;
    }
}

/* ---- reads ---- */

static vl_future *read_start(vl_stream *s, int kind, size_t arg)
{
    vl_future *f;

    if (s == NULL || s->freed)
        return NULL;
    if (arg > SIZE_MAX / 4)
        arg = SIZE_MAX / 4; /* the bounds add to it; memory runs out first */
    if (s->rf != NULL)
        return vl__future_failed(s->loop, VL_EBUSY, "%s: another read is pending", s->name);
    if (s->err == VL_ECLOSED)
        return vl__future_failed(s->loop, VL_ECLOSED, "%s", err_text(s));
    f = vl__future_make(s->loop, &read_ops, s);
    if (f == NULL)
        return NULL;
    s->rf = f;
    s->rkind = kind;
    s->rarg = arg;
    s->nomem = 0;
    /* Completing here only queues the callback (rule 1). */
    try_read(s);
    io_update(s);
    return f;
}

vl_future *vl_stream_read_line(vl_stream *s, size_t max_len)
{
    return read_start(s, R_LINE, max_len > 0 ? max_len : s != NULL ? s->o.read_buffer_max : 0);
}

vl_future *vl_stream_read_exactly(vl_stream *s, size_t n)
{
    return read_start(s, R_EXACT, n);
}

vl_future *vl_stream_read_until_eof(vl_stream *s, size_t max)
{
    return read_start(s, R_UNTIL_EOF, max > 0 ? max : s != NULL ? s->o.read_buffer_max : 0);
}

vl_future *vl_stream_read(vl_stream *s, size_t max)
{
    return read_start(s, R_ANY, max > 0 ? max : s != NULL ? s->o.read_buffer_max : 0);
}

const char *vl_stream_buf_data(const vl_stream_buf *b)
{
    return b != NULL ? b->data : NULL;
}

size_t vl_stream_buf_len(const vl_stream_buf *b)
{
    return b != NULL ? b->len : 0;
}

void vl_stream_buf_free(vl_stream_buf *b)
{
    vl__free(b);
}

/* ---- drain, close, abort, free ---- */

vl_future *vl_stream_drain(vl_stream *s)
{
    vl_future *f;

    if (s == NULL || s->freed)
        return NULL;
    if (s->df != NULL)
        return vl__future_failed(s->loop, VL_EBUSY, "%s: another drain is pending", s->name);
    if (s->err)
        return vl__future_failed(s->loop, s->err, "%s", err_text(s));
    f = vl__future_make(s->loop, &drain_ops, s);
    if (f == NULL)
        return NULL;
    s->df = f;
    after_output(s);
    io_update(s);
    return f;
}

vl_future *vl_stream_close(vl_stream *s)
{
    vl_future *f;

    if (s == NULL || s->freed)
        return NULL;
    if (s->err) {
        f = vl__future_failed(s->loop, s->err, "%s", err_text(s));
        vl_stream_free(s);
        return f;
    }
    f = vl__future_make(s->loop, &close_ops, s);
    if (f == NULL) {
        vl_stream_free(s);
        return NULL;
    }
    finish(&s->rf, VL_ECLOSED, "stream closed");
    s->cf = f;
    if (s->ob_len == 0) {
        after_output(s); /* closes and frees s */
        return f;
    }
    io_update(s);
    return f;
}

void vl_stream_abort(vl_stream *s)
{
    struct linger lg = {1, 0};

    if (s == NULL || s->freed || s->err || s->connf != NULL)
        return;
    if (s->fd >= 0)
        (void)setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    s->ib_len = s->ib_off = 0;
    /* A reset tells the peer nothing, close_notify included. */
    vl__tls_discard(s->sess);
    s->sess = NULL;
    stream_fail(s, VL_ECLOSED, "stream aborted");
}

void vl_stream_free(vl_stream *s)
{
    if (s == NULL || s->freed)
        return;
    s->freed = 1;
    finish(&s->rf, VL_ECANCELED, "stream freed");
    finish(&s->df, VL_ECANCELED, "stream freed");
    finish(&s->cf, VL_ECANCELED, "stream freed");
    finish(&s->connf, VL_ECANCELED, "stream freed");
    if (s->tok != NULL) {
        /* resolved_cb frees the token once the cancelled future runs it. */
        s->tok->s = NULL;
        vl_future_cancel(s->tok->f);
        s->tok = NULL;
    }
    hs_unlink(s);
    vl__timer_stop(&s->ctimer);
    vl__defer_cancel(s->loop, &s->defer);
    vl__timer_stop(&s->rtimer);
    close_fd(s);
    vl__tls_ctx_free(s->tls_ctx);
    vl__free(s->tls_host);
    s->tls_ctx = NULL;
    s->tls_host = NULL;
    vl__free(s->ib);
    vl__free(s->ob);
    vl__free(s->name);
    vl__free(s->errmsg);
    vl__free(s->addrs);
    vl__free(s->addr_err);
    vl__free(s->path);
    s->ib = s->ob = s->name = s->errmsg = s->addrs = s->addr_err = s->path = NULL;
    s->ib_len = s->ob_len = 0;
    vl__handle_remove(s->loop, &s->h);
    if (s->busy == 0)
        release(s);
}

/* ---- servers ---- */

static void server_io_update(vl_stream_server *srv, int on)
{
    if (srv->unref) {
        vl__loop_ref(srv->loop);
        srv->unref = 0;
    }
    if (!on || srv->fd < 0) {
        vl__io_stop(&srv->io);
        return;
    }
    vl__io_set(&srv->io, srv->fd, VL__READ);
    if (!srv->o.server_holds_loop) {
        vl__loop_unref(srv->loop);
        srv->unref = 1;
    }
}

/* A name for an accepted stream's messages: its peer's address. */
static char *peer_name(int fd, const vl_stream_server *srv)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[INET6_ADDRSTRLEN];

    if (getpeername(fd, (struct sockaddr *)(void *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)(void *)&ss;
            if (inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host)) != NULL)
                return vl__asprintf("tcp://%s:%d", host, ntohs(a->sin_port));
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)(void *)&ss;
            if (inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host)) != NULL)
                return vl__asprintf("tcp://[%s]:%d", host, ntohs(a->sin6_port));
        }
    }
    return vl__asprintf("%s (accepted)", srv->name);
}

static void server_release(vl_stream_server *srv)
{
    vl__handle_bury(srv->loop, &srv->h, handle_release);
}

static void accept_cb(vl__io *io, int events, void *ud)
{
    vl_stream_server *srv = ud;
    int i;

    VL__UNUSED(io);
    VL__UNUSED(events);
    srv->busy++;
    for (i = 0; i < 64 && !srv->closed; i++) {
        int fd = accept4(srv->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        vl_stream *s;

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* The pending connection stays queued; try again later
                 * rather than spin on a listener that stays readable. */
                server_io_update(srv, 0);
                vl__timer_start(&srv->pause, 100);
                if (!srv->o.server_holds_loop) {
                    vl__loop_unref(srv->loop);
                    srv->unref = 2;
                }
            }
            break;
        }
        if (srv->path == NULL)
            set_tcp(fd);
        s = stream_new(srv->loop, &srv->o, fd);
        if (s != NULL)
            s->name = peer_name(fd, srv);
        if (s == NULL || s->name == NULL) {
            if (s != NULL)
                vl_stream_free(s); /* closes fd */
            else
                close(fd);
            continue;
        }
        if (srv->tls_ctx != NULL) {
            hs_begin(srv, s);
            continue;
        }
        io_update(s);
        srv->on_accept(srv, s, srv->ud);
    }
    srv->busy--;
    if (srv->closed && srv->busy == 0)
        server_release(srv);
}

static void pause_cb(vl__timer *t, void *ud)
{
    vl_stream_server *srv = ud;

    VL__UNUSED(t);
    if (srv->unref == 2) {
        /* A fired timer was stopped by libev, which dropped its count. */
        vl__loop_ref(srv->loop);
        srv->unref = 0;
    }
    server_io_update(srv, 1);
}

static void server_handle_free(vl__handle *h)
{
    vl_stream_server_close((vl_stream_server *)(void *)h);
}

static int server_open(vl_stream_server *srv, const vl__url *u, char *why, size_t n)
{
    char ebuf[128];
    saddr a;
    int on = 1, fd;

    if (saddr_make(&a, u->host[0] != '\0' ? u->host : NULL, u->port, u->path) != VL_OK) {
        snprintf(why, n, "%s: %s", u->display,
                 u->host[0] != '\0' ? "a listener needs a numeric address"
                                    : "socket path too long");
        return VL_EINVAL;
    }
    if (u->host[0] == '\0') {
        struct stat st;
        if (lstat(u->path, &st) == 0 && S_ISSOCK(st.st_mode))
            (void)unlink(u->path); /* a stale socket file of an earlier run */
    }
    fd = socket(a.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(why, n, "listen %s: %s", u->display, errno_text(errno, ebuf, sizeof(ebuf)));
        return VL_ECONN;
    }
    if (u->host[0] != '\0')
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (bind(fd, (struct sockaddr *)(void *)&a.ss, a.len) != 0 ||
        listen(fd, srv->o.backlog) != 0) {
        snprintf(why, n, "listen %s: %s", u->display, errno_text(errno, ebuf, sizeof(ebuf)));
        close(fd);
        return VL_ECONN;
    }
    if (u->host[0] != '\0') {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        if (getsockname(fd, (struct sockaddr *)(void *)&ss, &sl) == 0)
            srv->port = ntohs(ss.ss_family == AF_INET
                                  ? ((struct sockaddr_in *)(void *)&ss)->sin_port
                                  : ((struct sockaddr_in6 *)(void *)&ss)->sin6_port);
    }
    srv->fd = fd;
    return VL_OK;
}

vl_stream_server *vl_stream_listen(vl_loop *loop, const char *addr, const vl_stream_options *o,
                                   vl_stream_accept_fn on_accept, void *ud)
{
    vl_stream_server *srv;
    char why[640] = "";
    vl__url u;
    int rc, tls = 0;

    if (loop == NULL || on_accept == NULL)
        return NULL;
    srv = vl__calloc(1, sizeof(*srv));
    if (srv == NULL)
        return NULL;
    srv->loop = loop;
    srv->fd = -1;
    srv->on_accept = on_accept;
    srv->ud = ud;
    vl__io_init(&srv->io, loop, -1, accept_cb, srv);
    vl__timer_init(&srv->pause, loop, pause_cb, srv);
    memset(&u, 0, sizeof(u));
    rc = opts_read(&srv->o, o, why, sizeof(why));
    if (rc == VL_OK)
        rc = addr_parse(addr, &u, &tls, why, sizeof(why));
    if (rc == VL_OK && tls) {
        char twhy[256];
        /* One context for the server's life: its files are read now, so a
         * missing or bad one fails the listen, not every handshake. */
        rc = vl__tls_ctx_from_url(&srv->tls_ctx, &u, 1, twhy, sizeof(twhy));
        if (rc != VL_OK)
            snprintf(why, sizeof(why), "listen %s: %s", u.display, twhy);
    }
    if (rc == VL_OK && vl__loop_closing(loop)) {
        snprintf(why, sizeof(why), "listen: the loop is being freed");
        rc = VL_ECLOSED;
    }
    if (rc == VL_OK) {
        srv->name = vl__strdup(u.display);
        if (u.host[0] == '\0')
            srv->path = vl__strdup(u.path);
        if (srv->name == NULL || (u.host[0] == '\0' && srv->path == NULL))
            rc = VL_ENOMEM;
    }
    if (rc == VL_OK)
        rc = server_open(srv, &u, why, sizeof(why));
    vl__url_clear(&u);
    if (rc != VL_OK) {
        vl__tls_ctx_free(srv->tls_ctx);
        srv->tls_ctx = NULL;
    }
    if (rc == VL_ENOMEM) {
        vl__free(srv->name);
        vl__free(srv->path);
        vl__free(srv);
        return NULL;
    }
    vl__handle_add(loop, &srv->h, server_handle_free);
    srv->status = rc;
    if (rc != VL_OK) {
        vl__free(srv->path);
        srv->path = NULL; /* not ours to remove */
        srv->errmsg = vl__strdup(why);
        return srv;
    }
    server_io_update(srv, 1);
    return srv;
}

int vl_stream_server_status(const vl_stream_server *srv)
{
    return srv != NULL ? srv->status : VL_EINVAL;
}

const char *vl_stream_server_error(const vl_stream_server *srv)
{
    return srv != NULL && srv->errmsg != NULL ? srv->errmsg : "";
}

uint64_t vl_stream_server_handshake_failures(const vl_stream_server *srv)
{
    return srv != NULL ? srv->hs_failures : 0;
}

const char *vl_stream_server_handshake_error(const vl_stream_server *srv)
{
    return srv != NULL && srv->hs_error != NULL ? srv->hs_error : "";
}

int vl_stream_server_port(const vl_stream_server *srv)
{
    return srv != NULL && srv->status == VL_OK ? srv->port : 0;
}

void vl_stream_server_close(vl_stream_server *srv)
{
    if (srv == NULL || srv->closed)
        return;
    srv->closed = 1;
    if (srv->unref) {
        vl__loop_ref(srv->loop);
        srv->unref = 0;
    }
    vl__io_stop(&srv->io);
    vl__timer_stop(&srv->pause);
    /* Connections still in their handshake were never handed out. */
    while (srv->hs_list != NULL)
        vl_stream_free(srv->hs_list);
    vl__tls_ctx_free(srv->tls_ctx);
    vl__free(srv->hs_error);
    srv->tls_ctx = NULL;
    srv->hs_error = NULL;
    if (srv->fd >= 0) {
        close(srv->fd);
        if (srv->path != NULL)
            (void)unlink(srv->path);
    }
    srv->fd = -1;
    vl__free(srv->name);
    vl__free(srv->path);
    vl__free(srv->errmsg);
    srv->name = srv->path = srv->errmsg = NULL;
    vl__handle_remove(srv->loop, &srv->h);
    if (srv->busy == 0)
        server_release(srv);
}
