/* SPDX-License-Identifier: BSD-3-Clause */
/* volley/pubsub.h - Redis pub/sub: a subscriber of its own that reconnects.
 *
 * A vl_redis_sub is one connection that does nothing but receive: it
 * subscribes to channels (SUBSCRIBE), patterns (PSUBSCRIBE) and shard
 * channels (SSUBSCRIBE), hands every message to your message callback, and
 * when the connection is lost it reconnects by itself, subscribes again to
 * everything you asked for and then tells you, through the gap callback,
 * that messages may have been missed meanwhile. It speaks RESP2, and the
 * endpoints, AUTH, SELECT, handshake and backoff are those of volley/redis.h.
 *
 * Publishing is an ordinary command: send PUBLISH (or SPUBLISH) with
 * vl_redis_command or vl_redis_pool_command on another connection. The
 * subscriber itself sends nothing but its own commands (see "What goes on
 * the wire"), so no reply of yours can ever be mistaken for a message.
 *
 * Every call below belongs to the loop's thread (volley/loop.h), and every
 * call that returns a future follows volley/future.h: NULL only when out of
 * memory or when the subscriber is NULL; every other failure arrives through
 * the future, whose callback runs exactly once, from the loop.
 *
 * ---- Messages ------------------------------------------------------------
 *
 * The message callback runs from the loop, once per message, in the order
 * the server sent them: messages of one channel arrive in the order they
 * were published. A message that matches both a channel you subscribed to
 * and a pattern arrives twice, once of each kind, as Redis sends it. Every
 * pointer it is given (channel, pattern, payload) is borrowed and valid
 * only until the callback returns: copy what you keep. Channel and pattern
 * are binary-safe (use the lengths) and NUL-terminated for convenience.
 *
 * The payload is a vl_redis_reply of volley/redis.h: a STRING for
 * everything PUBLISH sends (binary-safe: read it with vl_redis_reply_str
 * and its length), a STRING for keyspace notifications too. The one
 * exception is client-side caching: an invalidation message on channel
 * "__redis__:invalidate" carries an ARRAY of the keys invalidated, or NIL
 * when the server flushed everything (FLUSHDB, FLUSHALL).
 *
 * Messages are delivered whatever your subscriptions are by then: one sent
 * before the server processed an UNSUBSCRIBE of yours still arrives.
 *
 * ---- Confirmations -------------------------------------------------------
 *
 * Redis confirms every name of a (P|S)SUBSCRIBE and (P|S)UNSUBSCRIBE with a
 * reply of its own, in order, e.g. ["subscribe", "news", 2], whose number
 * is how many subscriptions the connection holds then (channels and
 * patterns together; shard channels are counted apart). A future of
 * vl_redis_subscribe and friends completes with VL_OK once every name in it
 * is confirmed; its value is the last confirmation, a borrowed
 * vl_redis_reply (vl_future_redis_reply) that you may take. An UNSUBSCRIBE
 * with no names unsubscribes from every channel: Redis confirms each
 * channel it held, or sends one confirmation with a NIL name when there
 * were none, and the future completes with the last of them.
 *
 * A server error reply (an ACL user without the right to a channel gets
 * "-NOPERM ...", for the whole command) fails that future with VL_ESERVER
 * and the server's text; the reply stays readable, and the names that were
 * refused are no longer subscribed to again after a reconnect.
 *
 * ---- Reconnection and the gap --------------------------------------------
 *
 * Calls made while the connection is down (or before it first came up) are
 * remembered. After every handshake the subscriber sends CLIENT ID, then
 * SUBSCRIBE, PSUBSCRIBE and SSUBSCRIBE for everything subscribed to (a few
 * names per command, batched; shard channels one command per slot, see
 * "Shard channels"), then the subscribe calls that were waiting.
 * A subscribe future whose command was written but not yet confirmed when
 * the connection was lost is sent again on the next connection, and
 * completes on that confirmation: it neither fails nor completes twice.
 * An unsubscribe needs no server while the connection is down (the server
 * forgot the subscriptions with the connection): it completes at once with
 * VL_OK and no value, and the names are not subscribed to again.
 *
 * Messages published while the connection is down are lost: Redis keeps no
 * backlog for pub/sub. So after every reconnect that restored at least one
 * subscription, once its every name is confirmed, the gap callback runs
 * once with how long the subscriber was without its subscriptions (from
 * the loss of the connection to the last confirmation). Refresh whatever
 * you derive from the messages there (a client-side cache: flush it).
 * The first connection never reports a gap. vl_redis_sub_down_since_ms
 * tells, while the connection is down, since when.
 *
 * ---- Shard channels ------------------------------------------------------
 *
 * A Redis Cluster node refuses one SSUBSCRIBE or SUNSUBSCRIBE naming shard
 * channels of different slots (CROSSSLOT). So every SSUBSCRIBE and
 * SUNSUBSCRIBE the subscriber writes, its own resubscription's and those
 * of vl_redis_ssubscribe and vl_redis_sunsubscribe alike, names the
 * channels of one slot (the slot of the name, hash tags applied, as
 * vl_redis_cluster_slot of volley/redis_cluster.h): a call with names of
 * several slots writes one command per slot, all at once, and its future
 * completes when every name is confirmed, or fails with the first refusal
 * among them (VL_ESERVER: "-MOVED ..." from a node that does not own that
 * slot), the names of the other slots subscribed all the same. A server
 * that is not a cluster accepts either.
 *
 * A node that gives a slot away (CLUSTER SETSLOT ... NODE, a failover)
 * ends the shard subscriptions of that slot by sending ["sunsubscribe",
 * channel, count] unasked. That ends that one subscription: the channel is
 * forgotten, as after vl_redis_sunsubscribe (it is not subscribed to again
 * after a reconnect), the ended callback runs with it, and the connection
 * stays as it is (its client id too). Subscribe to the channel on its
 * slot's new owner to follow it; volley/redis_cluster.h's sharded
 * subscriber does.
 *
 * ---- What goes on the wire -----------------------------------------------
 *
 * In RESP2 a subscribed connection may only send (P|S)(UN)SUBSCRIBE, PING,
 * QUIT and RESET. The subscriber therefore sends CLIENT ID first after
 * every handshake, before it subscribes, and keeps the answer: that is
 * vl_redis_sub_client_id, the id that "CLIENT TRACKING on REDIRECT <id>"
 * on a data connection needs so that its invalidation messages reach this
 * subscriber (subscribe to "__redis__:invalidate"). The id changes with
 * every reconnect: issue CLIENT TRACKING again from the gap callback.
 * Keyspace notifications ("CONFIG SET notify-keyspace-events KEA") arrive
 * through vl_redis_psubscribe("__keyspace@0__:*") like any pattern.
 *
 * With keepalive_ms set, a PING is sent once the server has sent nothing
 * for keepalive_ms; subscribed, Redis answers it with ["pong", ""]. If the
 * answer has not come keepalive_ms later, the connection is dropped (it
 * reconnects, and the gap is reported). TCP keepalive (tcp_keepalive_ms)
 * applies as on every connection.
 *
 * A reply that is not a well-formed pub/sub reply (an unknown kind, a wrong
 * number of elements, a confirmation of a name that was not asked for, a
 * reply when none is due; a "sunsubscribe" unasked of a shard channel the
 * server held is not one: see "Shard channels") is a protocol error: the connection is dropped,
 * vl_redis_sub_error names what was wrong, and the subscriber reconnects.
 * Never an abort.
 *
 * ---- Errors --------------------------------------------------------------
 *
 *   VL_EINVAL    malformed URL, options with a struct_size this library
 *                does not know, no names (n == 0 for a subscribe), a NULL
 *                name; a subscriber with a bad URL or options fails every
 *                call so, with the reason
 *   VL_ESERVER   the server refused the command (see "Confirmations")
 *   VL_ECONN     the connection was lost and reconnect is 0: pending and
 *                later calls fail so
 *   VL_EBUSY     the connection's output buffer is full (1 GiB unread by
 *                the server, as in volley/redis.h): that call is not sent
 *   VL_ECANCELED the future was cancelled, or the subscriber freed
 *   VL_ECLOSED   the loop is being freed
 *   VL_ENOMEM    out of memory (only ever for that one future)
 *
 * Calls never time out by themselves while the server is unreachable: they
 * wait for the next connection. Bound one with vl_future_timeout.
 */
#ifndef VOLLEY_PUBSUB_H
#define VOLLEY_PUBSUB_H

#include "common.h"
#include "future.h"
#include "loop.h"
#include "redis.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vl_redis_sub vl_redis_sub;

/* Kinds of subscription, and of message: a channel (SUBSCRIBE, "message"),
 * a pattern (PSUBSCRIBE, "pmessage") and a shard channel (SSUBSCRIBE,
 * "smessage"). */
enum {
    VL_REDIS_SUB_CHANNEL = 1,
    VL_REDIS_SUB_PATTERN = 2,
    VL_REDIS_SUB_SHARD = 3
};

/* The message callback: `kind` is VL_REDIS_SUB_CHANNEL, _PATTERN or _SHARD;
 * `channel` (channel_len bytes) is the channel the message was published
 * to; `pattern` (pattern_len bytes) the pattern that matched it for a
 * _PATTERN message, NULL and 0 otherwise; `payload` the message (see
 * "Messages"). All borrowed until the callback returns. It runs from the
 * loop; it may call anything, vl_redis_sub_free(s) included. */
typedef void (*vl_redis_sub_message_fn)(vl_redis_sub *s, int kind, const char *channel,
                                        size_t channel_len, const char *pattern,
                                        size_t pattern_len, const vl_redis_reply *payload,
                                        void *ud);

/* The gap callback: the subscriptions were restored after a reconnect, and
 * messages published during the last `down_ms` milliseconds may have been
 * lost. It runs from the loop; it may call anything, vl_redis_sub_free(s)
 * included. */
typedef void (*vl_redis_sub_gap_fn)(vl_redis_sub *s, uint64_t down_ms, void *ud);

/* The ended callback: the server ended a subscription of `kind` to
 * `channel` (channel_len bytes, binary-safe and NUL-terminated; borrowed
 * until the callback returns) without being asked, and it is no longer
 * subscribed to (see "Shard channels": Redis does it for VL_REDIS_SUB_SHARD
 * only). It runs from the loop; it may call anything, vl_redis_sub_free(s)
 * included. */
typedef void (*vl_redis_sub_ended_fn)(vl_redis_sub *s, int kind, const char *channel,
                                      size_t channel_len, void *ud);

/* Options of a subscriber. The ABI rule of vl_redis_options holds: always
 * start from vl_redis_sub_options_init(&o), which fills the defaults and
 * sets struct_size; new fields are only ever appended at the end, so the
 * fields a program built against an older header does not know take their
 * defaults. A struct_size the library does not know makes the subscriber
 * invalid (every call fails with VL_EINVAL). The connection fields mean
 * what they mean in vl_redis_options, with the same defaults; there is no
 * command timeout (a subscriber waits for messages on purpose: bound a call
 * with vl_future_timeout). */
typedef struct vl_redis_sub_options {
    size_t struct_size;          /* set by vl_redis_sub_options_init */
    vl_redis_sub_message_fn on_message; /* NULL (default): messages are dropped */
    vl_redis_sub_gap_fn on_gap;  /* NULL (default): gaps are not reported */
    void *ud;                    /* given to every callback; NULL */
    uint64_t keepalive_ms;       /* PING after that long without a reply, drop the
                                  * connection when unanswered as long again; 0 (off),
                                  * as for the pools */
    uint64_t connect_timeout_ms; /* as in vl_redis_options; 5000 */
    uint64_t reconnect_min_ms;   /* as in vl_redis_options; 100 */
    uint64_t reconnect_max_ms;   /* as in vl_redis_options; 5000 */
    int reconnect;               /* 1 (default): reconnect and resubscribe; 0: once
                                  * lost, stay down and fail every call with VL_ECONN */
    uint64_t max_bulk_len;       /* as in vl_redis_options; 512 MiB: one payload */
    size_t max_elements;         /* as in vl_redis_options; 16777216 */
    uint64_t max_reply_bytes;    /* as in vl_redis_options; 1 GiB */
    size_t max_depth;            /* as in vl_redis_options; 8 */
    uint64_t tcp_keepalive_ms;   /* as in vl_redis_options; 15000 */
    uint64_t tcp_user_timeout_ms; /* as in vl_redis_options; 30000 */
    uint64_t max_reply_mem;      /* as in vl_redis_options; 1 GiB */
    vl_redis_sub_ended_fn on_ended; /* NULL (default): an ended subscription is only
                                  * forgotten */
} vl_redis_sub_options;

/* Zeroes the first struct_size bytes of `o`, fills the defaults above of
 * every field that lies wholly within them and stores struct_size. Call it
 * through vl_redis_sub_options_init(&o), which passes sizeof(o). NULL is a
 * no-op. */
VL_EXPORT void vl_redis_sub_options_init_sized(vl_redis_sub_options *o, size_t struct_size);
#define vl_redis_sub_options_init(o) vl_redis_sub_options_init_sized((o), sizeof(*(o)))

/* Makes a subscriber on `loop` and starts connecting at once. `url` is
 * one of the endpoints of volley/redis.h. `url` and `opts` are copied; `opts` may be
 * NULL for the defaults (then no callbacks).
 *
 * Returns NULL only when out of memory or loop is NULL. A malformed URL, or
 * options with a struct_size the library does not know, still gives a
 * subscriber, in state VL_REDIS_INVALID, whose every call fails with
 * VL_EINVAL and the reason, which
 * vl_redis_sub_error tells at once.
 *
 * The subscriber belongs to the loop: vl_loop_free frees it if you have not.
 * It keeps vl_loop_run running while it has a subscription or a future
 * pending (a subscriber is there to wait for messages), through reconnects
 * too; one with neither, or one down for good (reconnect 0), lets
 * vl_loop_run return. */
VL_EXPORT vl_redis_sub *vl_redis_sub_new(vl_loop *loop, const char *url,
                                         const vl_redis_sub_options *opts);

/* Subscribes to channels, patterns or shard channels. vl_redis_subscribe
 * takes the n channels in names[0..n), vl_redis_psubscribe n glob-style
 * patterns (as PSUBSCRIBE: "news.*") and vl_redis_ssubscribe n shard
 * channels (one command per slot: see "Shard channels"); the names are C
 * strings, copied before the call returns. They
 * stay subscribed to across reconnects until you unsubscribe.
 *
 * Returns a future that completes with VL_OK once the server confirmed
 * every name, its value the last confirmation (see "Confirmations");
 * VL_ESERVER when the server refused the command; VL_EINVAL when n is 0 or
 * a name is NULL (nothing is subscribed then). Called while the connection
 * is down, the command waits for the next handshake. The caller owns the
 * future (rule 3). Cancelling it, or its deadline, only stops the wait:
 * the subscription stays (unsubscribe to end it). NULL only when out of
 * memory or s is NULL. Legal from inside any callback. */
VL_EXPORT vl_future *vl_redis_subscribe(vl_redis_sub *s, size_t n, const char *const *names);
VL_EXPORT vl_future *vl_redis_psubscribe(vl_redis_sub *s, size_t n, const char *const *names);
VL_EXPORT vl_future *vl_redis_ssubscribe(vl_redis_sub *s, size_t n, const char *const *names);

/* Unsubscribes from channels, patterns or shard channels: the n names in
 * names[0..n) or, with n == 0 (names may then be NULL), all of that kind.
 * Nothing of them is subscribed to again after a reconnect.
 *
 * Returns a future that completes with VL_OK once the server confirmed
 * every name (for n == 0: every subscription it held, see
 * "Confirmations"), its value the last confirmation; while the connection
 * is down, at once with VL_OK and no value (the server forgot them with the
 * connection). VL_EINVAL for a NULL name. The caller owns the future. NULL
 * only when out of memory or s is NULL. Legal from inside any callback. */
VL_EXPORT vl_future *vl_redis_unsubscribe(vl_redis_sub *s, size_t n, const char *const *names);
VL_EXPORT vl_future *vl_redis_punsubscribe(vl_redis_sub *s, size_t n,
                                           const char *const *names);
VL_EXPORT vl_future *vl_redis_sunsubscribe(vl_redis_sub *s, size_t n,
                                           const char *const *names);

/* The client id of the subscriber's present connection (CLIENT ID), for
 * "CLIENT TRACKING on REDIRECT <id>": stored in *out. It is known before
 * any subscribe future of that connection completes and before the gap
 * callback runs, and changes with every reconnect. Returns VL_OK; VL_ESTATE
 * while it is not known (connecting, down, or the server refused CLIENT ID:
 * see vl_redis_sub_error), *out untouched; VL_EINVAL when s or out is NULL. */
VL_EXPORT int vl_redis_sub_client_id(const vl_redis_sub *s, long long *out);

/* The state of the subscriber's connection, as vl_redis_state:
 * VL_REDIS_CONNECTING, VL_REDIS_READY (past the handshake), VL_REDIS_DOWN or
 * VL_REDIS_INVALID; 0 when s is NULL. */
VL_EXPORT int vl_redis_sub_state(const vl_redis_sub *s);

/* Since when the subscriber has been without a ready connection: the
 * vl_loop_now_ms time at which it lost its last one, or at which it was
 * made when it never had one; 0 while the connection is READY, for a
 * subscriber in state VL_REDIS_INVALID and when s is NULL. The time a gap
 * (see "Reconnection and the gap") will count from, unless a connection
 * came up meanwhile and was lost again before restoring everything. */
VL_EXPORT uint64_t vl_redis_sub_down_since_ms(const vl_redis_sub *s);

/* The last detailed error of the subscriber (a lost connection, a protocol
 * error, a refused resubscription, a bad URL), "" when there was none.
 * Borrowed: valid until the next call on s. Never contains the password. */
VL_EXPORT const char *vl_redis_sub_error(const vl_redis_sub *s);

/* Frees the subscriber. It closes the connection now: every pending future
 * completes with VL_ECANCELED (its callback runs from the loop later, as
 * always), and no message or gap callback runs any more. Legal from inside
 * any callback, its own message and gap callbacks included (rule 5): the
 * memory is released once that callback has returned. NULL is a no-op. */
VL_EXPORT void vl_redis_sub_free(vl_redis_sub *s);

#ifdef __cplusplus
}
#endif
#endif
