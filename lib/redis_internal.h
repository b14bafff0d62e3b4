/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/redis_internal.h - what lib/redis.c shares with lib/redis_reply.c and
 * lib/redis_pool.c; not installed.
 *
 * A pool drives its connections through these calls: it formats a command
 * once (so a request that has to wait in the pool keeps its own copy of the
 * arguments), then hands the formatted buffer and an existing future to the
 * connection it picked. The connection reports what the pool needs to know
 * through one event callback, which may run inside the connection's I/O:
 * the pool must not free the reporting connection from it (vl_redis_free
 * defers itself there anyway) and must not recurse without bound.
 */
#ifndef VOLLEY_REDIS_INTERNAL_H
#define VOLLEY_REDIS_INTERNAL_H

#include "internal.h"

struct redisReply;

/* ---- the RESP framer (lib/redis_resp.c) ----
 * Scans reply bytes before any reply is built: where each top-level reply
 * ends, and whether it stays within the limits. Allocates nothing. */

/* Arrays nest at most eight deep (as hiredis 0.14's reader, the fuzz
 * oracle, allows). */
#define VL__RESP_DEPTH_MAX 8

typedef struct vl__resp_limits {
    uint64_t max_bulk_len;    /* bytes of one bulk string; 0: no limit */
    uint64_t max_elements;    /* elements of one array; 0: hiredis's INT_MAX */
    uint64_t max_reply_bytes; /* bytes of one top-level reply; 0: no limit */
    unsigned max_depth;       /* nested arrays; 0 or above 8: 8 */
    uint64_t max_reply_mem;   /* bytes its vl_redis_reply block takes (a node
                               * per item, strings with a NUL); 0: no limit */
} vl__resp_limits;

typedef struct vl__resp {
    vl__resp_limits lim;
    int state;
    int type;               /* type byte of the item being read */
    int neg;                /* its number had a '-' */
    unsigned ndig;          /* digits of it so far */
    unsigned depth;         /* arrays open around the next item */
    uint64_t num;
    uint64_t bulk_left;     /* payload bytes of the bulk still to come */
    uint64_t reply_bytes;   /* bytes of the reply being read, so far */
    uint64_t left[VL__RESP_DEPTH_MAX]; /* elements still due per open array */
    uint64_t nodes, text;   /* the reply being read: items (every element an
                             * array header promised included), string
                             * bytes + NULs */
    uint64_t node_size;     /* bytes of one vl_redis_reply node */
    uint64_t done_nodes, done_text; /* the same for the last complete reply */
    int error;              /* sticky: the stream is broken */
    char msg[128];          /* what broke it, for messages */
} vl__resp;

void vl__resp_init(vl__resp *p, const vl__resp_limits *lim);
/* Changes the limits from the next byte on (`lim` NULL: none). */
void vl__resp_set_limits(vl__resp *p, const vl__resp_limits *lim);
/* Scans buf[0..len) and stops after `max_replies` complete top-level
 * replies, or at the end. Returns the bytes that may be parsed and
 * sets *replies to the complete replies among them. On a malformed stream or
 * a limit broken, p->error and p->msg are set: the bytes and replies returned
 * are then those before the reply that broke it (still good); every later
 * call returns 0. */
size_t vl__resp_scan(vl__resp *p, const char *buf, size_t len, size_t max_replies,
                     size_t *replies);
/* 1 while a reply has been started and not finished. */
int vl__resp_mid_reply(const vl__resp *p);

/* ---- building replies (lib/redis_reply.c) ---- */

/* Builds the reply in buf[0..len), one complete top-level reply the framer
 * accepted, whose block has `nodes` items and `text` string bytes (with a
 * NUL each): vl__resp's done_nodes and done_text. The bytes are not checked
 * again. NULL when out of memory. */
vl_redis_reply *vl__reply_parse(const char *buf, size_t len, uint64_t nodes, uint64_t text);
/* Bytes of one node of a reply's block: what each item costs in memory
 * besides its string. */
size_t vl__redis_reply_node_size(void);
/* 1 for an ERROR reply. */
int vl__redis_reply_is_error(const vl_redis_reply *r);
/* The reply's text (for VL_ESERVER messages). */
const char *vl__redis_reply_text(const vl_redis_reply *r);

/* Formats a command into a buffer from volley's allocator (freed with
 * vl__redis_cmd_free). Returns the length; formatv returns -1 for a bad
 * format string (the message, naming the conversion and its byte offset,
 * in why) and -2 when out of memory; format_argv returns -1 when out of
 * memory. */
long long vl__redis_formatv(char **cmd, const char *fmt, va_list ap, char *why, size_t whyn);
long long vl__redis_format_argv(char **cmd, int argc, const char **argv, const size_t *argvlen);
void vl__redis_cmd_free(char *cmd);
/* The name of a formatted command, upper case, into buf ("" when it has
 * none). For messages. */
void vl__redis_verb(const char *cmd, size_t len, char *buf, size_t n);
/* What a printf-style call returns when vl__redis_formatv failed with
 * `len`: NULL when out of memory, else a future failed with VL_EINVAL. */
vl_future *vl__redis_format_failed(vl_loop *loop, long long len, const char *why);

/* Sends a formatted command; takes `cmd` whatever happens. With f NULL a new
 * future is made (NULL only when out of memory); otherwise `f` (pending, its
 * source about to move to the connection) is used and returned, and failures
 * complete it. Whenever a future is returned, the connection reports
 * VL__REDIS_EV_DONE for it exactly once, even when it failed before anything
 * was sent (a refused command, a closing connection); when NULL is returned
 * it reports nothing. `shared` (a pool command, on a connection other
 * callers share) refuses with VL_EUNSUPPORTED the commands that change the
 * connection's state: MULTI, EXEC, DISCARD, WATCH, UNWATCH, SELECT, RESET,
 * AUTH, CLIENT TRACKING, SWAPDB. */
vl_future *vl__redis_send(vl_redis *c, vl_future *f, char *cmd, size_t len, int shared);

/* The same for a command in argv form (argc > 0, no NULL argument): a
 * ready connection formats it straight into its output buffer. Returns
 * like vl__redis_send; NULL also when out of memory formatting it. */
vl_future *vl__redis_send_argv(vl_redis *c, vl_future *f, int argc, const char **argv,
                               const size_t *argvlen, int shared);

/* Events a connection reports to its owner. */
enum {
    VL__REDIS_EV_READY = 1, /* the handshake succeeded */
    VL__REDIS_EV_DOWN,      /* the connection or an attempt failed */
    VL__REDIS_EV_DONE,      /* a command future completed with `status` */
    VL__REDIS_EV_IDLE,      /* no user command pending any more */
    VL__REDIS_EV_PONG,      /* a vl__redis_ping was answered: status VL_OK
                             * or VL_ESERVER (a lost connection reports DOWN
                             * instead) */
    VL__REDIS_EV_NOT_MASTER /* a user command's error reply said the server
                             * is no master (READONLY, MASTERDOWN): right
                             * before that command's DONE */
};
typedef void (*vl__redis_event_fn)(vl_redis *c, int event, int status, void *ud);

/* The connection settings a pool's and a subscriber's options repeat from
 * vl_redis_options, under the same names: copied from `src` to `dst`,
 * whichever of those structs each is. */
#define VL__REDIS_COPY_CONN_FIELDS(dst, src)                                                 \
    do {                                                                                   \
        (dst)->connect_timeout_ms = (src)->connect_timeout_ms;                             \
        (dst)->reconnect_min_ms = (src)->reconnect_min_ms;                                 \
        (dst)->reconnect_max_ms = (src)->reconnect_max_ms;                                 \
        (dst)->max_bulk_len = (src)->max_bulk_len;                                         \
        (dst)->max_elements = (src)->max_elements;                                         \
        (dst)->max_reply_bytes = (src)->max_reply_bytes;                                   \
        (dst)->max_depth = (src)->max_depth;                                               \
        (dst)->tcp_keepalive_ms = (src)->tcp_keepalive_ms;                                 \
        (dst)->tcp_user_timeout_ms = (src)->tcp_user_timeout_ms;                           \
        (dst)->max_reply_mem = (src)->max_reply_mem;                                       \
    } while (0)

/* Reads a caller's options (NULL: the defaults) into `dst`, as every
 * function taking vl_redis_options does: VL_OK, or VL_EINVAL with the
 * message in why. */
int vl__redis_options_read(vl_redis_options *dst, const vl_redis_options *src, char *why,
                           size_t whyn);

/* Makes a pooled connection: it reports events to `fn` and, while nothing
 * is pending on it, does not keep the loop running. It is not registered
 * as a loop handle: the pool frees it. `share` (NULL: none) is another
 * connection made from the same URL: a rediss:// connection then shares
 * its TLS context (the loaded CAs and client certificate). */
vl_redis *vl__redis_new_pooled(vl_loop *loop, const char *url, const vl_redis_options *opts,
                               vl__redis_event_fn fn, void *ud, const vl_redis *share);

/* Keeps the loop running on behalf of the owner (on != 0), whether or not
 * anything is pending: its pool has a request waiting that this connection
 * may serve once it connects or drains. */
void vl__redis_hold(vl_redis *c, int on);
/* Writes a PING of the connection's own (keepalive): not a user command, so
 * it neither counts in vl_redis_pending nor holds the loop. The answer is
 * reported as VL__REDIS_EV_PONG. VL_OK, or VL_ECONN when the connection is
 * not ready, VL_ENOMEM. */
int vl__redis_ping(vl_redis *c);
/* Ends the connection as if the server had hung up (its commands fail with
 * VL_ECONN and `msg`); it reconnects by itself. Safe from inside an event:
 * the teardown then waits for the end of it. */
void vl__redis_drop(vl_redis *c, const char *msg);

/* ---- push connections (lib/redis_pubsub.c) ----
 * A push connection connects, authenticates, selects and reconnects like
 * any other (the same options, backoff and events: READY after each
 * successful handshake, DOWN when it ends), but once ready no reply is
 * matched to a command: every reply the server sends goes to `push`, in
 * order, whole (never NULL: without memory for a reply the connection is
 * dropped instead), within the reply limits of its options. A subscriber is
 * built on one: it writes SUBSCRIBE and friends with vl__redis_push_write
 * and reads the confirmations and messages as they come. `push` takes the
 * reply (free it with vl_redis_reply_free) and may call anything on the
 * connection, vl__redis_drop included; freeing it from there is deferred
 * to a safe point like every free inside an event. Command timeouts do not
 * apply; keepalive (TCP) does. Like a pooled connection it holds the loop
 * only while vl__redis_hold says so. */
typedef void (*vl__redis_push_fn)(vl_redis *c, vl_redis_reply *r, void *ud);
vl_redis *vl__redis_new_push(vl_loop *loop, const char *url, const vl_redis_options *opts,
                             vl__redis_event_fn fn, vl__redis_push_fn push, void *ud);
/* Writes a formatted command on a ready push connection; takes `cmd`
 * whatever happens. VL_OK; VL_ECONN when it is not ready (the command is
 * dropped: write it again after READY); VL_EBUSY when the output buffer is
 * full (see "Back-pressure" in volley/redis.h); VL_ENOMEM. */
int vl__redis_push_write(vl_redis *c, char *cmd, size_t len);

/* Stops reporting events (before the owner goes away). */
void vl__redis_detach(vl_redis *c);
/* VL_OK when `url` is a usable Redis URL; otherwise the status a command
 * would fail with, and the message in *msg (vl__free it). */
int vl__redis_url_error(vl_loop *loop, const char *url, char **msg);

/* 1 when `c` may go back to a pool: ready, nothing pending, not inside MULTI,
 * no WATCH, no SELECT, RESET, AUTH, CLIENT TRACKING or SWAPDB by the user,
 * and still the connection of `epoch`. */
int vl__redis_clean(const vl_redis *c, unsigned epoch);
/* 1 while `c` is still the connection of `epoch` and ready: a lease's
 * commands need that, since a reconnect lost its WATCH, MULTI or SELECT. */
int vl__redis_live(const vl_redis *c, unsigned epoch);
/* Changes on every successful handshake. */
unsigned vl__redis_epoch(const vl_redis *c);
/* Counters of handshakes that succeeded, of reconnects among them, and of
 * attempts that failed. */
void vl__redis_counters(const vl_redis *c, uint64_t *connects, uint64_t *reconnects,
                        uint64_t *errors);

/* ---- Redis Sentinel (lib/redis_sentinel.c, lib/redis_pool.c) ----
 * A redis+sentinel:// pool is an ordinary pool whose target, the URL its
 * new connections open to, is set by its discovery: the sentinels are
 * asked on the loop, never blocking, and the answer checked with ROLE.
 * Until the first target the pool opens nothing and its requests wait. */
typedef struct vl__sentinel vl__sentinel;

/* 1 when `url` is a redis+sentinel:// URL. */
int vl__sentinel_url(const char *url);
/* Reads a redis+sentinel:// URL for pool `p` (connection settings `copts`,
 * copied) and arms the first discovery, which starts from the loop. VL_OK
 * with *out and the pool's printable name in *display (no password;
 * vl__free it); VL_ENOMEM; or VL_EINVAL with the reason in *msg (vl__free
 * it), *out NULL. */
int vl__sentinel_new(vl_redis_pool *p, vl_loop *loop, const char *url,
                     const vl_redis_options *copts, vl__sentinel **out, char **display,
                     char **msg);
/* The pool lets go (freed, or never made): stops everything; callbacks
 * still due find nothing to call. NULL is a no-op. */
void vl__sentinel_free(vl__sentinel *s);
/* Why the pool asks again. */
enum { VL__SENTINEL_LOST = 1, VL__SENTINEL_ERROR_REPLY = 2 };
/* Something the pool saw may mean that the target moved (a connection
 * lost, a READONLY or MASTERDOWN reply in master mode): ask the sentinels
 * again, at most
 * once a second and one discovery at a time. Only arms a timer: safe from
 * inside a connection's event. */
void vl__sentinel_trouble(vl__sentinel *s, int why);
/* Keeps vl_loop_run running while on (somebody waits in the pool). */
void vl__sentinel_hold(vl__sentinel *s, int on);
/* The last discovery error ("" when none), borrowed until the next
 * discovery step. Never contains a password. */
const char *vl__sentinel_error(const vl__sentinel *s);
/* 1 after a whole round of sentinels named no usable target, until one
 * does. */
int vl__sentinel_failed(const vl__sentinel *s);
/* "master" or "replica": what the pool asked for, for messages. */
const char *vl__sentinel_role(const vl__sentinel *s);
/* Discoveries that set a target, and of those the ones that moved it. */
void vl__sentinel_counts(const vl__sentinel *s, uint64_t *discoveries, uint64_t *switches);
/* +switch-master announcements for our master received so far. */
uint64_t vl__sentinel_news(const vl__sentinel *s);
/* "host:port" of the sentinel whose +switch-master the pool is subscribed
 * to now, "" while none (for tests). Borrowed from s. */
const char *vl__sentinel_subscribed(const vl__sentinel *s);

/* The pool's side. Points its new connections at urls[0..n) (redis://
 * URLs, may hold a password; spread over them in turn), printable as
 * eps[0..n) ("host:port"); all copied. Every connection to a server not in
 * eps retires at once (no new command is routed to it, what it has in
 * flight completes, then it closes), and waiting requests go to the new
 * target. Called from the loop, never from inside one of the pool's
 * connection events. VL_OK, VL_ENOMEM (nothing changed) or VL_EINVAL. */
int vl__redis_pool_retarget(vl_redis_pool *p, char *const *urls, char *const *eps, size_t n);
/* A sentinel announced that the master moved from `from` to `to` (both
 * "host:port", copied). Until a round of discovery has verified the new
 * master (vl__redis_pool_retarget), no new command or lease is routed:
 * they wait as when the pool had no target, up to acquire_timeout_ms, and
 * a lease on a connection to any server but `to` fails every command with
 * VL_ECONN. Nothing completes inside the call. */
void vl__redis_pool_moving(vl_redis_pool *p, const char *from, const char *to);
/* A round of discovery found nothing: readiness requests of a pool with
 * no target yet fail with VL_ECONN and vl__sentinel_error. */
void vl__redis_pool_no_target(vl_redis_pool *p);
/* vl__sentinel_counts of the pool's discovery, zeros for another pool
 * (for tests). */
void vl__redis_pool_sentinel_counts(const vl_redis_pool *p, uint64_t *discoveries,
                                    uint64_t *switches);
/* +switch-master announcements for the pool's master received so far
 * (0 for another pool), for tests: a command issued once this grew never
 * reaches the old master. */
uint64_t vl__redis_pool_sentinel_news(const vl_redis_pool *p);
/* vl__sentinel_subscribed of the pool's discovery, "" for another pool. */
const char *vl__redis_pool_sentinel_subscribed(const vl_redis_pool *p);

#endif
