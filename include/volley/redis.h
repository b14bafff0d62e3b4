/* SPDX-License-Identifier: BSD-3-Clause */
/* volley/redis.h - Redis connections, replies and pools.
 *
 * volley's own connection engine (RESP2; TLS with OpenSSL): it owns the
 * socket, and hiredis is not used for Redis connections. Every call below
 * belongs to the loop's thread (see volley/loop.h); every command returns a
 * vl_future * that follows the rules of volley/future.h: NULL only when out
 * of memory, and the callback runs exactly once, from the loop.
 *
 * ---- Endpoints --------------------------------------------------------------
 *
 *   redis://[[user]:password@]host[:port][/db][?name=N]  port 6379, db 0
 *   rediss://...same...[?cacert=F&capath=D&cert=F&key=F&sni=H&insecure=1]
 *   unix:///path/to.sock[?db=N][&name=N]              unix:// may carry :pw@ too
 *
 *   redis+cluster://, redis+sentinel://           see volley/redis_cluster.h
 *
 * readonly=1 sends READONLY in the handshake (a connection to a Redis
 * Cluster replica that may then serve reads of its primary's slots).
 *
 * Every part is percent-decoded. A host name is resolved to all of its
 * addresses (IPv4 first), and each is tried in turn within the connect
 * timeout. name= sends "CLIENT SETNAME name" in the handshake, so operators
 * find the connection in CLIENT LIST (printable ASCII, no spaces). An
 * unknown parameter is refused (VL_EINVAL), so a typo never silently drops
 * a setting.
 *
 * TLS (rediss://). The TLS handshake runs on the loop without blocking,
 * within the connect timeout, before AUTH. The server's certificate is
 * verified by default: against the system CA store, or cacert= (a PEM
 * file) and capath= (a hashed directory); its name (or IP address) must be
 * the URL's host, or sni= when given, which is also sent as SNI. cert= and
 * key= give a client certificate (key= may be left out when cert= holds
 * both). insecure=1 turns verification off: an explicit opt-out for tests
 * (the CLI warns when it is used). A wrong CA, an expired certificate, a
 * host-name mismatch or a plain server fail the connect with VL_ECONN and
 * OpenSSL's reason ("TLS: certificate verify failed: certificate has
 * expired"); a CA file that cannot be read is a bad URL (VL_EINVAL). The
 * context (the loaded CAs and client certificate) is made when a
 * connection or pool is created, on the calling thread; a pool's
 * connections share one. A password makes the connection send
 * "AUTH password" (or "AUTH user password" when a user is given) and a db
 * other than 0 makes it send "SELECT db", both before any command of yours.
 * Every handshake ends with "PING <token>", whose answer proves that the
 * server accepted the connection and that its replies line up with our
 * commands. The connection is READY once that PING is answered with:
 *   - the echo of the token (what Redis answers);
 *   - "+PONG" (a proxy that answers PING itself, ignoring the argument);
 *   - an error that says only that PING may not run, and so still answers
 *     it in turn: "-NOPERM ..." (an ACL user without +ping, such as
 *     "ACL SETUSER app on >pw ~* +get +set") or "-ERR unknown command ..."
 *     (PING renamed away with rename-command).
 * Any other error reply there ("-ERR max number of clients reached",
 * "-LOADING", "-NOAUTH", "-MASTERDOWN"...) is a server refusing the
 * connection: the connect fails (VL_ECONN with the server's text) instead
 * of your first command. Any other reply (such as one the server sent
 * before it was asked anything) is a protocol error (VL_EPROTO).
 * The handshake's replies are held to small limits of their own (strings of
 * 512 bytes, 4 KiB per reply, no nesting), whatever the reply limits for
 * your commands are (see "Reply limits").
 *
 * Signals. A server that closes the connection while volley writes to it
 * must not kill the process with SIGPIPE, and a library must not change
 * the process's signal disposition either. Every write is
 * send(MSG_NOSIGNAL), over TLS too (through a BIO of volley's own).
 * Commands issued meanwhile wait and are written only once the handshake has
 * succeeded, so a failed SELECT can never send them to the wrong database.
 * Host names are resolved on a worker thread (vl_loop_run_in_thread), so the
 * loop never blocks in getaddrinfo. Messages name the endpoint in its
 * printable form, e.g. "connect redis://127.0.0.1:20001: Connection refused";
 * no message ever contains the password.
 *
 * ---- Errors -----------------------------------------------------------------
 *
 *   VL_EINVAL       malformed URL, NULL or empty command, an unsupported
 *                   printf conversion (named in the message), options
 *                   with a struct_size this library does not know
 *   VL_EUNSUPPORTED the commands that change the reply
 *                   stream, which are not offered on a command connection:
 *                   SUBSCRIBE/PSUBSCRIBE/SSUBSCRIBE/UNSUBSCRIBE/PUNSUBSCRIBE/
 *                   MONITOR, CLIENT REPLY OFF|SKIP (replies go missing) and
 *                   HELLO (RESP3 is not spoken here); CLIENT REPLY ON is
 *                   accepted
 *   VL_ECONN        name resolution, connect, AUTH, SELECT or the handshake
 *                   PING failed (an error reply there, such as "-ERR max
 *                   number of clients reached", "-NOAUTH" or "-LOADING", is
 *                   a failed connect with the server's text; "-NOPERM" and
 *                   "-ERR unknown command" to the PING are not, see
 *                   above), the connect
 *                   timeout passed, or the connection was lost or closed
 *                   (after a protocol error or an overdue reply)
 *   VL_ETIMEDOUT    the command timeout (or a vl_future_timeout) passed
 *   VL_EPROTO       the server broke the protocol or a reply limit (see
 *                   "Reply limits"): malformed reply, reply nobody asked
 *                   for, wrong answer to the handshake PING
 *   VL_ESERVER      the server replied with an error ("-ERR ..."). That is
 *                   data: the message is the server's text and the reply (of
 *                   type VL_REDIS_ERROR) stays readable in the future
 *   VL_EBUSY        the connection's output buffer is full (see
 *                   "Back-pressure"); pools also use it (see "Pools")
 *   VL_ECANCELED    the future was cancelled, or its connection/pool freed
 *   VL_ENOMEM       out of memory (only ever for that one future)
 *
 * ---- Reconnection -----------------------------------------------------------
 *
 * A connection is opened at once by vl_redis_new and reopened whenever it is
 * lost, after a backoff that starts at reconnect_min_ms, doubles with each
 * failed attempt up to reconnect_max_ms, and is drawn at random from the
 * upper half of that range (jitter) so that many clients do not reconnect in
 * step. A successful handshake resets the backoff.
 *
 *  - Commands issued while a connection attempt is under way (resolving,
 *    connecting, AUTH/SELECT) wait for it, each within its own command
 *    timeout; if the attempt fails they fail with VL_ECONN and its message.
 *  - Commands issued while the connection is down, between two attempts,
 *    FAIL FAST with VL_ECONN and the message of the last failure. They are
 *    never queued for a later attempt.
 *  - When the connection drops, every command in flight fails with VL_ECONN:
 *    a command that may have reached the server is never retried.
 *  - After a reconnect the database of the URL is selected again; a SELECT
 *    you issued yourself is not replayed.
 *
 * ---- Cancellation and timeouts ----------------------------------------------
 *
 * A command that is cancelled, or given up by a vl_future_timeout of yours,
 * fails alone: the connection stays up, and the reply that arrives later is
 * read and dropped, never given to another command. (The connection's own
 * command_timeout_ms closes the connection when the oldest reply is
 * overdue: see "Command timeouts".) Only a command still waiting for the handshake (issued
 * while the connection was connecting, or in AUTH/SELECT) is not sent at
 * all when cancelled. A command issued on a ready connection goes into its
 * output buffer at once and is written before the loop next polls (at once
 * when 64 KiB are waiting), so cancelling it,
 * even before the loop ran, does not stop it: the server still runs it, and
 * only its reply is dropped. Do not count on a cancel to undo a write.
 */
#ifndef VOLLEY_REDIS_H
#define VOLLEY_REDIS_H

#include <stdarg.h>

#include "common.h"
#include "future.h"
#include "loop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vl_redis vl_redis;
typedef struct vl_redis_reply vl_redis_reply;
typedef struct vl_redis_pool vl_redis_pool;
typedef struct vl_redis_lease vl_redis_lease;

/* ==== Replies ================================================================
 *
 * A reply is one allocation: the element tree and every string live in a
 * single block. Inside a future's callback the reply is borrowed from the
 * future (valid until the callback returns, or until the future is freed for
 * a future you own). Keep it with vl_future_take(f) and free it with
 * vl_redis_reply_free. Elements are borrowed from their root reply and are
 * never freed on their own. */

enum {
    VL_REDIS_STRING = 1,  /* bulk string, binary-safe */
    VL_REDIS_ARRAY = 2,   /* multi-bulk, may nest */
    VL_REDIS_INTEGER = 3,
    VL_REDIS_NIL = 4,     /* null bulk string or null array */
    VL_REDIS_STATUS = 5,  /* "+OK" */
    VL_REDIS_ERROR = 6    /* "-ERR ..." */
};

/* The reply of a completed Redis command future, or NULL (still pending,
 * failed without a reply, value taken, or not a Redis future). Borrowed. */
VL_EXPORT const vl_redis_reply *vl_future_redis_reply(const vl_future *f);

/* The type of `r`, one of VL_REDIS_STRING ... VL_REDIS_ERROR (0 when r is NULL). */
VL_EXPORT int vl_redis_reply_type(const vl_redis_reply *r);

/* Typed reads. vl_redis_reply_integer stores the integer of an INTEGER
 * reply in *out; vl_redis_reply_double the number of an INTEGER reply, or
 * of a STRING reply that is exactly a floating-point number (RESP2 sends
 * INCRBYFLOAT and ZSCORE results so). Both return VL_OK, or VL_EINVAL for
 * any other type or text (or r/out NULL), leaving *out untouched: a type
 * mismatch is never read as 0. */
VL_EXPORT int vl_redis_reply_integer(const vl_redis_reply *r, long long *out);
VL_EXPORT int vl_redis_reply_double(const vl_redis_reply *r, double *out);

/* A map view of a flat key/value ARRAY reply (HGETALL, CONFIG GET, XINFO
 * ...: an even number of elements whose keys are strings). _map_count is
 * the number of pairs (0 when r is not such an array); _map_key and
 * _map_value give pair i (NULL when out of range); _map_get the value of
 * the first pair whose key is keylen bytes equal to key, or NULL (a linear
 * scan). Every pointer is borrowed from the root reply. */
VL_EXPORT size_t vl_redis_reply_map_count(const vl_redis_reply *r);
VL_EXPORT const vl_redis_reply *vl_redis_reply_map_key(const vl_redis_reply *r, size_t i);
VL_EXPORT const vl_redis_reply *vl_redis_reply_map_value(const vl_redis_reply *r, size_t i);
VL_EXPORT const vl_redis_reply *vl_redis_reply_map_get(const vl_redis_reply *r, const char *key,
                                                       size_t keylen);

/* The bytes of a STRING, STATUS or ERROR reply, NUL-terminated for
 * convenience (but may contain NUL bytes: use `len`). Borrowed from the root
 * reply. NULL for the other types; *len (if len is not NULL) gets the length,
 * or 0. */
VL_EXPORT const char *vl_redis_reply_str(const vl_redis_reply *r, size_t *len);

/* The number of elements of an ARRAY reply; 0 for the other types. */
VL_EXPORT size_t vl_redis_reply_count(const vl_redis_reply *r);

/* Element i of an ARRAY reply (borrowed from the root), or NULL when out of
 * range or not an array. */
VL_EXPORT const vl_redis_reply *vl_redis_reply_element(const vl_redis_reply *r, size_t i);

/* Frees a reply taken with vl_future_take. Only a root may be passed, never
 * an element. NULL is a no-op. */
VL_EXPORT void vl_redis_reply_free(vl_redis_reply *r);

/* ==== Connections ============================================================ */

/* Options of a connection. ABI rule (the same for every options struct of
 * volley): always start from vl_redis_options_init(&o), which fills every
 * field with its default and sets struct_size to the size of the struct
 * your program was compiled with; then change the fields you need. New
 * fields are only ever appended at the end, so a program built against an
 * older header keeps working: the fields it does not know take their
 * defaults. A struct_size the library does not know (0: never initialised;
 * larger than its own: built against a newer header) makes the connection
 * invalid: every command fails with VL_EINVAL ("options: struct_size N
 * unknown to this volley (built against a newer header?)").
 * Times are uint64_t milliseconds and 0 turns the limit off; counts are
 * size_t, bytes uint64_t, booleans int 0/1. */
typedef struct vl_redis_options {
    size_t struct_size;          /* set by vl_redis_options_init */
    uint64_t connect_timeout_ms; /* resolve + connect + TLS + AUTH/SELECT/PING; 5000. 0: off */
    uint64_t command_timeout_ms; /* per command, from the call on; 10000. 0: off.
                                  * See "Command timeouts" below */
    uint64_t reconnect_min_ms;   /* first backoff; 100 */
    uint64_t reconnect_max_ms;   /* backoff ceiling; 5000 */
    int reconnect;               /* 1 (default): reopen a lost connection; 0: stay down */
    /* Reply limits, see "Reply limits" below. 0: no limit. */
    uint64_t max_bulk_len;       /* bytes of one bulk string; 512 MiB */
    size_t max_elements;         /* elements of one array; 16777216 (16 Mi) */
    uint64_t max_reply_bytes;    /* bytes of one whole reply on the wire; 1 GiB
                                  * (max_reply_mem, at the end, bounds its
                                  * size in memory) */
    size_t max_depth;            /* nested arrays (1: flat); 8, also the most
                                  * that the reply parser nests (0: 8) */
    /* TCP only (not unix://), see "Dead peers" below. */
    uint64_t tcp_keepalive_ms;   /* idle time before keepalive probes; 15000. 0: off */
    uint64_t tcp_user_timeout_ms; /* TCP_USER_TIMEOUT; 30000. 0: the kernel's */
    uint64_t max_reply_mem;      /* bytes one reply takes in memory once built
                                  * (see "Reply limits"); 1 GiB. 0: no limit */
} vl_redis_options;

/* ---- Command timeouts -------------------------------------------------------
 *
 * The default of 10 s is far above what any command takes on a healthy
 * server (Redis runs one command at a time: one that took 10 s would stall
 * every client of that server), and short enough that a stalled or vanished
 * server never hangs its callers. A command's deadline starts when it is
 * issued, also while it waits for the handshake.
 *
 * Replies come back in order, so when the OLDEST reply due on a connection
 * (a pool's keepalive PING included: see "Lifetimes", its deadline is the
 * command timeout too) is overdue, nothing behind it can arrive first: the
 * connection is closed
 * at once. That command fails with VL_ETIMEDOUT ("command timed out after N
 * ms"), every other command in flight on it with VL_ECONN ("connection
 * closed: a reply was overdue"), and it reconnects by itself (see
 * "Reconnection"). A command that times out while older ones are still
 * unanswered fails alone, and its late reply is dropped.
 *
 * Blocking commands wait on purpose: BLPOP, BRPOP, BRPOPLPUSH, BLMOVE,
 * BZPOPMIN, BZPOPMAX, BLMPOP and BZMPOP get their own timeout argument
 * (seconds) added to the deadline, WAIT and WAITAOF theirs (ms), XREAD and
 * XREADGROUP their BLOCK ms. A timeout of 0 there ("block forever") exempts
 * the command from the deadline: it waits as long as you asked. Commands
 * pipelined behind a blocking one on the same connection keep their own
 * deadlines and fail alone, except that the connection is only closed for
 * the oldest reply.
 *
 * ---- Reply limits -----------------------------------------------------------
 *
 * Replies are checked as they are read, before anything is allocated for
 * them: a bulk header longer than max_bulk_len (Redis's own
 * proto-max-bulk-len, so no real server stores a longer string), an array
 * header with more than max_elements elements, arrays nested deeper than
 * max_depth, or a reply passing max_reply_bytes, is refused as soon as the
 * header (or byte) that breaks the limit arrives: "*777777770\r\n" never
 * allocates. Malformed replies (a bad type byte, a bad number) are refused
 * the same way. The command whose reply it is fails with VL_EPROTO and a
 * message naming the endpoint, the limit and its value (e.g. "redis://h:1:
 * protocol error: bulk string of 2000000000+ bytes exceeds max_bulk_len
 * 536870912"); that connection is closed (the other commands in flight on
 * it fail with VL_ECONN) and reconnects; other connections are unaffected.
 *
 * Memory. While it is read, a reply costs its bytes on the wire (the read
 * buffer, at most max_reply_bytes) plus its own block, built once it is
 * complete: one node per item (sizeof of an internal struct, 40 bytes on
 * 64-bit systems) and every string with a NUL. A node is far bigger than
 * the smallest item on the wire ("+\r\n" is 3 bytes, so 45 MB of them
 * would build 640 MB), so the block is bounded on its own by
 * max_reply_mem, counted as the reply arrives: an array header counts a
 * node for each of its elements at once, and a reply whose block would pass
 * the limit is refused like any other (with max_reply_mem 268435456:
 * "array of 16000000 elements takes the reply past max_reply_mem
 * 268435456 (40 bytes per item)"). A server
 * can thus make one connection use at most about max_reply_bytes +
 * max_reply_mem (2 GiB with the defaults) for a reply.
 * A reply that arrives when no command is waiting for one (before the
 * first, or one more than were sent) is refused likewise with VL_EPROTO
 * ("unexpected reply") and never reaches a command. (RESP has no request
 * ids: a server that answers one command twice while a second is pipelined
 * behind it cannot be told from a correct one.)
 *
 * ---- Dead peers ---------------------------------------------------------------
 *
 * A server host that vanishes without a reset leaves nothing to read: the
 * command timeout notices it while commands are pending, and TCP notices it
 * otherwise: SO_KEEPALIVE with TCP_KEEPIDLE tcp_keepalive_ms, TCP_KEEPINTVL
 * a third of it and TCP_KEEPCNT 3 (an idle dead peer is noticed after about
 * twice tcp_keepalive_ms), and TCP_USER_TIMEOUT tcp_user_timeout_ms (data
 * unacknowledged that long ends the connection). A lost connection fails its
 * commands with VL_ECONN and reconnects.
 *
 * ---- Back-pressure --------------------------------------------------------------
 *
 * Commands are written as fast as the socket takes them; what it has not
 * taken yet waits in the connection's output buffer, which holds at most
 * 1 GiB. A command that would take it past that fails at once with VL_EBUSY
 * ("output buffer full: ...") and is not sent; the connection stays up, and
 * commands fit again as the server reads. (No real server takes a bigger
 * one: Redis refuses bulk strings over 512 MB and queries over 1 GB.)
 * Commands issued during the handshake are held to it when they are
 * written, once the connection is ready. */

/* Zeroes the first struct_size bytes of `o`, fills the defaults above of
 * every field that lies wholly within them and stores struct_size. Call it
 * through vl_redis_options_init(&o), which passes sizeof(o). NULL is a
 * no-op. */
VL_EXPORT void vl_redis_options_init_sized(vl_redis_options *o, size_t struct_size);
#define vl_redis_options_init(o) vl_redis_options_init_sized((o), sizeof(*(o)))

enum {
    VL_REDIS_CONNECTING = 1, /* resolving, connecting, or in AUTH/SELECT */
    VL_REDIS_READY = 2,      /* commands are written at once */
    VL_REDIS_DOWN = 3,       /* between attempts (or going down): commands fail fast */
    VL_REDIS_INVALID = 4     /* bad URL: every command fails with its error */
};

/* Makes a connection to `url` on `loop` and starts connecting at once. `url`
 * and `opts` are copied; `opts` may be NULL for the defaults.
 *
 * Returns NULL only when out of memory (or loop is NULL). A malformed or
 * unsupported URL still gives a connection, in state VL_REDIS_INVALID, whose
 * every command fails with VL_EINVAL and a
 * message saying what is wrong; vl_redis_error() tells the same at once.
 *
 * `opts` follows the ABI rule of vl_redis_options; a struct_size it does
 * not know also gives an INVALID connection (VL_EINVAL).
 *
 * The connection belongs to the loop: vl_loop_free frees it if you have not.
 * It keeps vl_loop_run running only while a command of it is pending (the
 * loop-alive rule of volley/loop.h): an idle connection, its reconnects
 * and a connect nobody waits for let vl_loop_run return. */
VL_EXPORT vl_redis *vl_redis_new(vl_loop *loop, const char *url, const vl_redis_options *opts);

/* Sends a command built printf-style. Spaces separate arguments; within an
 * argument, "%s" is a C string, "%b" binary bytes (pointer, then size_t
 * length), "%%" a '%', and the numeric conversions d i u x X o c, with the
 * C99 length modifiers hh h l ll z j t, and f F g G e E (with L) are
 * formatted as printf would (flags, width and precision included): "SET %s
 * %zu" takes a size_t. Any other conversion fails the future with VL_EINVAL
 * and a message naming it and its offset ("format: unsupported conversion
 * '%q' at byte 4"); so does a NULL "%s". Pipelining is free: issue many
 * commands without waiting; replies come back in order.
 *
 * Returns a future whose value is the vl_redis_reply (also on VL_ESERVER),
 * or NULL when out of memory or c is NULL (rule 1). Every other failure
 * arrives through the future, with a message naming the command and the
 * endpoint ("GET on redis://127.0.0.1:6379: WRONGTYPE ..."; the reply keeps
 * the server's own text). The arguments are copied before the call
 * returns. */
VL_EXPORT vl_future *vl_redis_command(vl_redis *c, const char *fmt, ...);
VL_EXPORT vl_future *vl_redis_commandv(vl_redis *c, const char *fmt, va_list ap);

/* Sends argv[0..argc) as one command. argvlen may be NULL when every
 * argument is a C string; otherwise argvlen[i] is the length of argv[i],
 * which may contain any bytes (binary-safe). The same future as above. */
VL_EXPORT vl_future *vl_redis_command_argv(vl_redis *c, int argc, const char **argv,
                                           const size_t *argvlen);

/* Closes and frees the connection now. Every pending future (in flight or
 * waiting) completes with VL_ECANCELED; their callbacks run from the loop
 * later, as always. Legal from inside any volley callback (rule 5): your
 * code never runs inside the connection's I/O handling, and a free a pool
 * requests from inside it is deferred to the end of it.
 * NULL is a no-op. */
VL_EXPORT void vl_redis_free(vl_redis *c);

/* The last detailed error of the connection (connect, auth, lost
 * connection...), "" when there was none. Borrowed: valid until the next
 * call on c. Never contains the password. */
VL_EXPORT const char *vl_redis_error(const vl_redis *c);

/* Readiness, the same as vl_mysql_ready: a future that completes with VL_OK
 * once the connection is up (past AUTH/SELECT) and has answered a PING of
 * its own, or fails as a command issued now would: VL_ECONN and the
 * attempt's message when the connection attempt under way fails (or at once
 * between attempts), VL_EINVAL for a bad URL. It queues like a command (its
 * command timeout applies) and keeps vl_loop_run running while it waits.
 * Its value is the PING's reply ("PONG"), of no interest; the caller owns
 * the future. NULL only when out of memory or c is NULL. */
VL_EXPORT vl_future *vl_redis_ready(vl_redis *c);

/* The state of the connection: VL_REDIS_CONNECTING, _READY, _DOWN or _INVALID. */
VL_EXPORT int vl_redis_state(const vl_redis *c);

/* Commands issued and not yet completed (in flight or waiting), including
 * the ones cancelled or timed out whose late reply is still due. */
VL_EXPORT size_t vl_redis_pending(const vl_redis *c);

/* ==== Pools ==================================================================
 *
 * A pool keeps up to max_size connections to one endpoint and spreads
 * commands over them (pipelining on each): a command goes where the last
 * one went while that connection is less than 16 commands ahead of the
 * pool's average (the commands one callback issues leave in one write),
 * and otherwise to the
 * less busy of two connections taken in turn, which approximates "fewest
 * commands in flight" at a constant cost per command; while the pool is
 * still growing, to the connection with the fewest. It opens min_idle connections at once and
 * more when every connection is busy. A lost connection reconnects by
 * itself, with the policy above, while the pool routes around it; when no
 * connection is up, commands fail fast with VL_ECONN, and when every
 * connection is leased out (and max_size reached) with VL_EBUSY.
 *
 * Idle pooled connections do not keep vl_loop_run running; pending commands,
 * waiting requests (for room, a lease or vl_redis_pool_ready) and connection
 * attempts with work waiting do. A lease or readiness request waiting with
 * no deadline (acquire_timeout_ms 0) keeps it running through the pool's
 * connections, connecting or not, until it completes.
 *
 * ---- Lifetimes (HikariCP's) ------------------------------------------------
 *
 * Three options (idle_timeout_ms 600000, max_lifetime_ms 1800000 and
 * keepalive_ms 0 by default, as for MySQL pools) are enforced by one housekeeping
 * timer per pool that ticks every quarter of the smallest of them (at most
 * every 30 s), so each is kept to within a quarter of its value. The timer
 * never keeps vl_loop_run running: an idle pool still lets it return, and
 * housekeeping happens while the loop runs.
 *
 *  - idle_timeout_ms: a connection that has been ready with nothing pending
 *    and no lease for that long is closed, as long as more than min_idle
 *    connections stay open. Counted in closed_idle.
 *  - max_lifetime_ms: a connection that has lived that long (less a random
 *    0-2.5%, so connections opened together do not expire together) retires
 *    gracefully: no new command is routed to it and no lease handed out on
 *    it, it is closed once every command pending on it has completed (a
 *    leased one when the lease is released), and a replacement is opened
 *    when fewer than min_idle connections would be left. A retiring
 *    connection does not count against max_size. Counted in closed_lifetime.
 *  - keepalive_ms: a connection idle for that long (and every keepalive_ms
 *    while it stays idle) is sent a PING of the pool's own, so that a dead
 *    peer is noticed. The PING is not a pool command: it is not counted in
 *    `requests` or `pending` and does not keep the loop running. If it fails,
 *    or is still unanswered keepalive_ms later, the connection is dropped as
 *    lost (whatever was sent after the PING fails with VL_ECONN) and
 *    reconnects by itself, with the policy above. Once pool commands were
 *    sent after it, its reply is due like theirs: command_timeout_ms after
 *    it was sent, the PING being the oldest reply due closes the connection
 *    as an overdue reply does (see "Command timeouts"), and the commands
 *    behind it fail at once with VL_ECONN ("the reply to a keepalive PING
 *    was overdue") instead of timing out one by one. Counted in closed_broken,
 *    with every other loss of a ready connection; keepalives counts the
 *    PINGs sent. Keepalive PINGs do not reset the idle_timeout_ms clock.
 *
 * ---- Fairness --------------------------------------------------------------
 *
 * A lease needs a connection with nothing pending, which a steady stream of
 * pool commands would never leave. So when a lease request waits and no
 * connection can be opened for it, the pool stops routing pool commands to
 * one connection (the one with the fewest pending), lets it drain and hands
 * it straight to the oldest lease request; lease requests are served in
 * order. Pool commands go to the other connections meanwhile; with
 * max_size 1 they fail with VL_EBUSY until the lease is released, as they do
 * while every connection is leased. */

/* Back-pressure, the same model as vl_mysql_pool_options: at most
 * max_pending pool and lease commands are pending on the connections; a
 * command past it becomes a waiter. Waiters (commands waiting for room,
 * lease requests) wait in order, each up to acquire_timeout_ms (then
 * VL_ETIMEDOUT). By default any number may wait (max_waiters SIZE_MAX):
 * the deadline bounds the queue, not a count. With a smaller max_waiters
 * one more fails at once with VL_EBUSY; with max_waiters 0 nothing waits. The ABI rule of
 * vl_redis_options applies. */
typedef struct vl_redis_pool_options {
    size_t struct_size;          /* set by vl_redis_pool_options_init */
    size_t max_size;             /* connections at most; 8. Fewer than a MySQL
                                  * pool's 10: commands are pipelined on each
                                  * connection, so a few carry the load */
    size_t min_idle;             /* connections opened at once and kept; 1 */
    uint64_t acquire_timeout_ms; /* wait for room or for a lease; 5000. 0: no limit */
    size_t max_waiters;          /* requests that may wait; SIZE_MAX (no count
                                  * bound: acquire_timeout_ms bounds each
                                  * wait), as asyncio pools queue. 0: none */
    size_t max_pending;          /* cap on pool + lease commands pending on the
                                  * connections (in flight or waiting for a
                                  * handshake); 0: no cap */
    uint64_t connect_timeout_ms; /* as in vl_redis_options; 5000 */
    uint64_t command_timeout_ms; /* as in vl_redis_options; 10000 */
    uint64_t reconnect_min_ms;   /* as in vl_redis_options; 100 */
    uint64_t reconnect_max_ms;   /* as in vl_redis_options; 5000 */
    uint64_t idle_timeout_ms;    /* close a connection idle that long, down to
                                  * min_idle; 600000. 0: off. See "Lifetimes" */
    uint64_t max_lifetime_ms;    /* retire a connection that old; 1800000. 0: off */
    uint64_t keepalive_ms;       /* PING a connection idle that long; 0 (off) */
    uint64_t max_bulk_len;       /* as in vl_redis_options; 512 MiB */
    size_t max_elements;         /* as in vl_redis_options; 16777216 */
    uint64_t max_reply_bytes;    /* as in vl_redis_options; 1 GiB */
    size_t max_depth;            /* as in vl_redis_options; 8 */
    uint64_t tcp_keepalive_ms;   /* as in vl_redis_options; 15000 */
    uint64_t tcp_user_timeout_ms; /* as in vl_redis_options; 30000 */
    uint64_t max_reply_mem;      /* as in vl_redis_options; 1 GiB */
} vl_redis_pool_options;

/* As vl_redis_options_init_sized; call it as vl_redis_pool_options_init(&o). */
VL_EXPORT void vl_redis_pool_options_init_sized(vl_redis_pool_options *o, size_t struct_size);
#define vl_redis_pool_options_init(o) vl_redis_pool_options_init_sized((o), sizeof(*(o)))

/* Makes a pool for `url` (copied) and opens min_idle connections. `opts`
 * may be NULL for the defaults. Returns NULL only when out of memory (or
 * loop is NULL); a bad URL, or options with a struct_size the library does
 * not know, makes a pool whose every command fails with VL_EINVAL. The pool
 * belongs to the loop, which frees it if you have not. */
VL_EXPORT vl_redis_pool *vl_redis_pool_new(vl_loop *loop, const char *url,
                                           const vl_redis_pool_options *opts);

/* Readiness (a warm-up barrier): returns a future that completes with VL_OK
 * once min_idle connections of the pool are up (connected and past
 * AUTH/SELECT), or with VL_ECONN and the message of the last connection
 * error once the first attempt of every one of them has failed (and none
 * has been up since). While some are up and the others failed, it waits for
 * their reconnects: bound it with vl_future_timeout if you must. If the
 * connections are up already, it is completed on return, and its callback
 * still runs from the loop (rule 2); min_idle 0 is up at once. A pool with
 * a bad URL fails it at once with the URL's status (VL_EINVAL...). Freeing
 * the pool completes it with VL_ECANCELED. Waiting keeps vl_loop_run
 * running. It has no value; the caller owns the future (rule 3). Returns
 * NULL only when out of memory or p is NULL. */
VL_EXPORT vl_future *vl_redis_pool_ready(vl_redis_pool *p);

/* A command on some connection of the pool; the future is the one of
 * vl_redis_command. Past max_pending it waits (in order) up to
 * acquire_timeout_ms and then fails with VL_ETIMEDOUT; when max_waiters
 * requests wait already, it fails at once with VL_EBUSY. The commands that change the state of the
 * connection they run on (MULTI, EXEC, DISCARD, WATCH, UNWATCH, SELECT,
 * RESET, AUTH, CLIENT TRACKING, SWAPDB) would change it for every other
 * caller of the pool: they fail with VL_EUNSUPPORTED ("MULTI needs a
 * lease"); run them on a lease. Returns NULL only when out of memory. */
VL_EXPORT vl_future *vl_redis_pool_command(vl_redis_pool *p, const char *fmt, ...);
VL_EXPORT vl_future *vl_redis_pool_commandv(vl_redis_pool *p, const char *fmt, va_list ap);
VL_EXPORT vl_future *vl_redis_pool_command_argv(vl_redis_pool *p, int argc, const char **argv,
                                                const size_t *argvlen);

/* ---- Leases: one connection for you alone ---------------------------------
 *
 * For MULTI/EXEC, WATCH and blocking commands (BLPOP...), which need every
 * command on the same connection with nobody else's in between.
 *
 * vl_redis_pool_lease returns a future whose value is a vl_redis_lease *. It
 * completes when a connection is ready with nothing pending (the pool opens
 * one if it may, or else drains one: see "Fairness" above), or fails with
 * VL_ETIMEDOUT after acquire_timeout_ms (never with 0: it waits, and keeps
 * vl_loop_run running, until it gets one), or at once with VL_ECONN when
 * all max_size connections are down, or with VL_EBUSY when it would have to
 * wait and max_waiters requests wait already. Requests are served in order. Take the
 * lease with vl_future_take; a lease left in the future is released when
 * the future is freed.
 *
 * Release rule: vl_redis_lease_release gives the connection back to the pool
 * only if it is provably clean: no command pending (not even a cancelled
 * one whose reply is still due), not inside MULTI, no WATCH outstanding
 * (EXEC, DISCARD or UNWATCH clear it), no SELECT, RESET, AUTH, CLIENT
 * TRACKING or SWAPDB issued through the lease (whatever their reply), and
 * the connection was not lost and reopened meanwhile. Otherwise the
 * connection is closed (its pending futures complete with VL_ECANCELED) and
 * the pool opens a fresh one when needed. Pub/sub is refused on leases, so a
 * lease never holds a subscription. */

VL_EXPORT vl_future *vl_redis_pool_lease(vl_redis_pool *p);

/* Commands on the lease's connection, as vl_redis_command. Once the pool was
 * freed they fail with VL_ECLOSED. Once the connection was lost they fail
 * with VL_ECONN ("the lease's connection was lost"), even after it has
 * reconnected by itself: the server forgot the lease's WATCH, MULTI and
 * SELECT, so the lease never carries on over a new connection. Release it
 * and take a new one. NULL only when out of memory or l is NULL. (After
 * vl_redis_lease_release, `l` no longer exists.) */
VL_EXPORT vl_future *vl_redis_lease_command(vl_redis_lease *l, const char *fmt, ...);
VL_EXPORT vl_future *vl_redis_lease_commandv(vl_redis_lease *l, const char *fmt, va_list ap);
VL_EXPORT vl_future *vl_redis_lease_command_argv(vl_redis_lease *l, int argc,
                                                 const char **argv, const size_t *argvlen);

/* Ends the lease and frees `l` (the pointer is invalid afterwards). Returns
 * 1 when the connection was clean: it went back to the pool, or, if it
 * outlived max_lifetime_ms meanwhile, was closed as retired. Returns 0 when
 * it was closed as dirty (or the pool is gone). NULL is a no-op returning 0. */
VL_EXPORT int vl_redis_lease_release(vl_redis_lease *l);

/* Where the pool's new connections go: "host:port" of its URL (the
 * printable URL for unix://), or for a redis+sentinel:// pool the master
 * the sentinels named last and ROLE confirmed (role=replica: the replicas,
 * "host:port,host:port"), "" while none is known yet or the URL is bad.
 * Borrowed until the pool next changes it (a failover) or is freed. Never
 * contains a password. NULL when p is NULL. */
VL_EXPORT const char *vl_redis_pool_endpoint(const vl_redis_pool *p);

/* ---- Stats and teardown ---------------------------------------------------- */

/* Fills `out` (a vl_pool_stats of volley/common.h, prepared with
 * vl_pool_stats_init) with a snapshot of the pool: only the fields within
 * out->struct_size are written. For a Redis pool, `pending` counts pool
 * and lease commands in flight or waiting on a connection, `leased` the
 * leases held, `closed_dirty` leases whose connection was closed on
 * release, `closed_broken` ready connections lost (server hang-up, I/O
 * error, failed or unanswered keepalive PING). Returns VL_OK, or VL_EINVAL
 * when p or out is NULL or out->struct_size is unknown (nothing written). */
VL_EXPORT int vl_redis_pool_stats_get(const vl_redis_pool *p, vl_pool_stats *out);

/* Frees the pool now: requests waiting in the pool, commands pending on its
 * connections and lease requests complete with VL_ECANCELED. Leases you
 * hold stay valid until you release them, but their commands fail with
 * VL_ECLOSED. Legal from inside a callback. NULL is a no-op. */
VL_EXPORT void vl_redis_pool_free(vl_redis_pool *p);

#ifdef __cplusplus
}
#endif
#endif
