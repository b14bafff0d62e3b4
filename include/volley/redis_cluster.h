/* SPDX-License-Identifier: BSD-3-Clause */
/* volley/redis_cluster.h - Redis Cluster and Redis Sentinel: following a
 * service that outgrew one Redis server.
 *
 * ==== Redis Cluster =========================================================
 *
 * A vl_redis_cluster is one handle over a Redis Cluster: the 16384 hash
 * slots, a vl_redis_pool (volley/redis.h) per node, and the slot map that
 * says which node serves which slot. A command goes to the primary (or, for
 * reads, a replica: see "Replica reads") of the slot of its key, computed
 * as the cluster specification says: CRC16 (XMODEM) of the key modulo
 * 16384, or of the part between the first '{' and the next '}' when that
 * part is not empty (a hash tag: "{user1000}.following" and
 * "{user1000}.followers" share a slot).
 *
 *   redis+cluster://[[user]:password@]host:port[,host:port...][?params]
 *   rediss+cluster://...same...[&cacert=F&capath=D&cert=F&key=F&sni=H]
 *
 * The hosts are seeds: any reachable one tells the topology (CLUSTER SHARDS,
 * CLUSTER SLOTS when the server is older than 7.0). Every node gets the
 * credentials and the TLS parameters of the URL. These parameters belong
 * to the cluster:
 *   read_from=primary|prefer_replica|replica|nearest   see "Replica reads"
 *   name=N               CLIENT SETNAME on every connection
 * Any other parameter is refused (VL_EINVAL), as for redis:// URLs.
 *
 * ---- Keys ------------------------------------------------------------------
 *
 * The key of a command is found by rules per command, those of COMMAND's key
 * specifications for the common commands: the first argument for most
 * (GET, SET, HSET, LPUSH, ZADD, XADD, EXPIRE...); every argument for DEL,
 * EXISTS, MGET, TOUCH, UNLINK, WATCH, SINTER...; every other one for MSET,
 * MSETNX; the keys after numkeys for EVAL, EVALSHA, FCALL, ZUNION,
 * SINTERCARD, LMPOP...; the source and destination for RENAME, LMOVE,
 * SMOVE, COPY...; the keys before the timeout for BLPOP, BRPOP, BZPOPMIN;
 * the keys after STREAMS for XREAD and XREADGROUP. A command whose keys lie
 * in different slots fails at once with VL_EINVAL ("MSET: keys in different
 * slots (CROSSSLOT): a and b"), before anything is sent. A command with no
 * key that acts on one node's data (PING, INFO, DBSIZE, CONFIG, SCAN, KEYS,
 * FLUSHALL, CLUSTER ...) fails with VL_EINVAL ("INFO has no key: use
 * vl_redis_cluster_each or vl_redis_cluster_command_key"); a command the
 * rules do not know fails likewise ("FOO: unknown command: route it with
 * vl_redis_cluster_command_key"). Commands that change the connection's
 * state (MULTI, WATCH, SELECT...) fail as on a pool (VL_EUNSUPPORTED): use
 * vl_redis_cluster_lease.
 *
 * ---- Redirections ----------------------------------------------------------
 *
 *  - MOVED slot host:port: the slot is moved in the map at once, the command
 *    goes to that node, and one background refresh of the whole map is
 *    scheduled (single-flight: one at a time, at most one per
 *    refresh_min_interval_ms, each bounded by refresh_timeout_ms; it never
 *    blocks the loop).
 *  - ASK slot host:port: "ASKING" and that one command are sent to that
 *    node on one connection, back to back; the map is not changed.
 *  - TRYAGAIN (a multi-key command during a slot's migration) and
 *    CLUSTERDOWN (the cluster cannot serve the slot now): both are refusals
 *    before execution, so the command is sent again after a backoff
 *    (retry_backoff_ms, doubled each time) at most max_retries times, then
 *    it fails with VL_ESERVER and the server's text. Nothing else is ever
 *    retried: a command that may have run (the connection was lost after it
 *    was written, a timeout) fails with VL_ECONN or VL_ETIMEDOUT, and it is
 *    the caller's to judge.
 *  - A command is redirected at most max_redirects times (MOVED and ASK
 *    together), then fails with VL_ESERVER ("too many redirections (5):
 *    last MOVED 3999 127.0.0.1:7001").
 *  - A command that fails with VL_ECONN (the node's connections are down
 *    or were lost) triggers a refresh too, so that a failover is followed
 *    without waiting for the periodic refresh. The command itself is not
 *    sent again: it fails with VL_ECONN (see above).
 *
 * Failover. When a primary dies, its slots fail with VL_ECONN (fast: its
 * pool has no connection up) until the cluster has promoted a replica:
 * cluster-node-timeout for the others to mark it failed, plus the
 * replica's election (about a second with Redis's defaults), and then at
 * most refresh_min_interval_ms until the refresh that the failing commands
 * ask for reads the new map. With node-timeout 1000 ms the tests see the
 * promotion followed some 2 to 3 s after the kill. A manual CLUSTER
 * FAILOVER is followed through the MOVED replies of the old primary,
 * without errors.
 *
 * Every command's future completes exactly once, whatever the redirections:
 * its value is the reply of the node that answered last (an error reply
 * keeps VL_ESERVER as on a single server), and its deadline
 * (command_timeout_ms) runs from the call, across every redirection and
 * retry. Blocking commands (BLPOP, BRPOP, BRPOPLPUSH, BLMOVE, BZPOPMIN,
 * BZPOPMAX, BLMPOP, BZMPOP, WAIT, WAITAOF, XREAD and XREADGROUP with
 * BLOCK) are the exception: each time one is sent, the connection's own
 * deadline applies, their timeout added (see "Command timeouts" in
 * volley/redis.h), and before the first map they wait without one. They
 * hold a node pool's connection while they wait: a lease
 * (vl_redis_cluster_lease) keeps them off the others' way.
 *
 * ---- Topology ----------------------------------------------------------------
 *
 * The map is refreshed every refresh_interval_ms (on by default), after a
 * MOVED, after a CLUSTERDOWN, and when a command fails because its node's
 * connections are down; the refresh asks the nodes it knows (primaries
 * first), then the seeds, in turn, each on a connection of the cluster's
 * own (not a pool's, and it never keeps vl_loop_run running), and takes the
 * first complete answer; each node gets half of refresh_timeout_ms before
 * the next is asked. A shard without slots is left out (a failed primary
 * that lost its slots, a node not yet given any). Until the first map,
 * commands wait (each up to its deadline); when every seed failed to
 * answer they fail with VL_ECONN and the reason, as readiness does, and
 * the discovery is tried again every refresh_min_interval_ms. Nodes that
 * left the map are closed once the commands routed to them have completed
 * (they are not cut off). A node that stopped
 * answering costs only the commands routed to it: each node has its own
 * pool, connections and deadlines. Reconnects follow the pools' backoff
 * (reconnect_min_ms doubling to reconnect_max_ms, with jitter), so a node
 * that left causes no reconnect storm. A refresh while the map is being
 * used never stalls the loop: answers are parsed as they arrive and the new
 * map replaces the old one in one step.
 *
 * ---- Replica reads -------------------------------------------------------------
 *
 * read_from (option or URL parameter) picks the node of a read-only command
 * (GET, MGET, HGETALL, EXISTS, ZRANGE, XREAD without GROUP... those the rules
 * mark read-only; every other command goes to the primary):
 *   VL_REDIS_READ_PRIMARY          the primary (default)
 *   VL_REDIS_READ_PREFER_REPLICA   a replica of the slot that is up, else the
 *                                  primary
 *   VL_REDIS_READ_REPLICA          a replica only (VL_ECONN if none is up)
 *   VL_REDIS_READ_NEAREST          the node of the slot (primary or replica)
 *                                  with the lowest measured round trip
 * Connections to replicas send READONLY in their handshake (their pools use
 * readonly=1: a primary that is demoted gets a new pool once nothing of
 * the cluster's is pending on its old one). Replicas replicate
 * asynchronously: a read there may not see a write just made.
 * read_from=nearest measures each node's round trip with a PING of the
 * cluster's own every second, on its topology connection.
 *
 * ==== Redis Sentinel ========================================================
 *
 *   redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/master[/db][?params]
 *
 * is accepted by vl_redis_pool_new (volley/redis.h) only. The hosts are
 * sentinels (port 26379 by default); `master` is the name they watch. The
 * pool asks them in turn, on the loop and never blocking, for the master's
 * address (SENTINEL get-master-addr-by-name), checks it with ROLE on a
 * connection of its own, and only then opens its connections there. Each
 * step is bounded by connect_timeout_ms (connect and answer), so a dead or
 * silent sentinel costs one such deadline and the next one is asked. The
 * user, password and db of the URL, and every parameter but the two below
 * (name=...), are the data servers', as in a redis:// URL; TLS is not
 * offered for Sentinel pools (a TLS parameter is refused, VL_EINVAL).
 *
 * The pool subscribes to +switch-master on one sentinel (when that
 * connection is lost, the next sentinel after a backoff, and once
 * subscribed again it asks, since a switch may have been published
 * meanwhile). From the moment a +switch-master for the pool's master
 * arrives, nothing new goes to the old master: commands and leases issued
 * then wait, as before the first answer, until a round has verified the
 * new master (the sentinel that published the switch is asked first, the
 * announced old master is refused whoever names it, and ROLE must say
 * "master"); one that waits acquire_timeout_ms fails with VL_ECONN ("the
 * master moved from A to B, not confirmed within 5000 ms: ..."). The pool
 * holds rather than trusting the announced address at once: one
 * sentinel's word is not a verified master, and holding costs one round
 * (an ask and a ROLE). Then every connection to the old master retires:
 * commands already written there complete and it closes once drained (a
 * connection not up yet fails the commands waiting for its handshake with
 * VL_ECONN, so that none reaches the old master later); new connections
 * open to the new one. A lease on a connection to the old master fails
 * every command from then on with VL_ECONN ("the master moved from A to
 * B: release the lease"), without sending it: what it wrote there would
 * be lost when the old master resyncs as a replica. Releasing such a
 * lease closes its connection (it counts in closed_dirty and
 * vl_redis_lease_release returns 0).
 * A lost connection, an error reply that says the server is no master
 * (READONLY, MASTERDOWN; other errors, WRONGTYPE say, do not) or a ROLE
 * that does not say "master" also make it ask again: one round at a time,
 * at most one per second. A
 * round that finds nothing (no sentinel answers, or a server named
 * disagrees about its role while a failover is under way) keeps the
 * present target and is followed by another 1 s later, then at doubling
 * intervals up to reconnect_max_ms, until one succeeds. Parameters:
 *   role=master|replica  replica: the pool's connections go to the
 *                        replicas the sentinels list as up (flags without
 *                        s_down, o_down, disconnected) whose ROLE says
 *                        "slave", spread over them in turn; writes there
 *                        fail with the replica's READONLY reply. The list
 *                        is asked again on +sdown, -sdown, +slave,
 *                        +switch-master and lost connections
 *   sentinel_password=P  AUTH for the sentinels (never printed)
 * Until the first answer nothing is opened and commands, leases and
 * readiness requests wait; a command or lease waits up to
 * acquire_timeout_ms, then fails with VL_ECONN and what the sentinels said
 * ("no master known within 5000 ms: none of 3 sentinels named a master for
 * 'mymaster': sentinel 127.0.0.1:26379: no master named 'mymaster'; ...").
 * vl_redis_pool_ready fails so once a whole round of sentinels named none;
 * rounds go on meanwhile, as above. Messages name
 * endpoints as "host:port" or the printable URL, never a password.
 * vl_redis_pool_endpoint tells where the pool points. vl_redis_new refuses
 * a redis+sentinel:// URL (VL_EINVAL "a Sentinel endpoint needs a pool").
 */
#ifndef VOLLEY_REDIS_CLUSTER_H
#define VOLLEY_REDIS_CLUSTER_H

#include "fanout.h"
#include "pubsub.h"
#include "redis.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vl_redis_cluster vl_redis_cluster;
typedef struct vl_redis_cluster_sub vl_redis_cluster_sub;

enum {
    VL_REDIS_READ_PRIMARY = 0,
    VL_REDIS_READ_PREFER_REPLICA = 1,
    VL_REDIS_READ_REPLICA = 2,
    VL_REDIS_READ_NEAREST = 3
};

/* Options of a cluster; the ABI rule of vl_redis_options applies. The
 * per-node fields mean what they mean in vl_redis_pool_options, for each
 * node's pool. */
typedef struct vl_redis_cluster_options {
    size_t struct_size;             /* set by vl_redis_cluster_options_init */
    int read_from;                  /* VL_REDIS_READ_*; VL_REDIS_READ_PRIMARY */
    size_t node_max_size;           /* connections per node; 4 */
    uint64_t connect_timeout_ms;    /* 5000 */
    uint64_t command_timeout_ms;    /* from the call, across redirections; 10000 */
    uint64_t acquire_timeout_ms;    /* as for a pool; 5000 */
    uint64_t reconnect_min_ms;      /* 100 */
    uint64_t reconnect_max_ms;      /* 5000 */
    uint64_t refresh_interval_ms;   /* periodic topology refresh; 30000. 0: off */
    uint64_t refresh_min_interval_ms; /* at most one refresh per (the periodic
                                       * one too; vl_redis_cluster_refresh
                                       * is not held back); 1000 */
    uint64_t refresh_timeout_ms;    /* one refresh, all nodes asked; 2000 */
    size_t max_redirects;           /* MOVED + ASK per command; 5 */
    size_t max_retries;             /* TRYAGAIN / CLUSTERDOWN per command; 3 */
    uint64_t retry_backoff_ms;      /* first retry's wait, doubled; 50 */
} vl_redis_cluster_options;

VL_EXPORT void vl_redis_cluster_options_init_sized(vl_redis_cluster_options *o,
                                                   size_t struct_size);
#define vl_redis_cluster_options_init(o) vl_redis_cluster_options_init_sized((o), sizeof(*(o)))

/* Makes a cluster handle from seed URL(s) (see above; a plain redis:// or
 * rediss:// URL is one seed too) and starts discovering the topology at
 * once. `url` and `opts` are copied; `opts` may be NULL. Returns NULL only
 * when out of memory or loop is NULL; a bad URL or options give a handle
 * whose every future fails with VL_EINVAL (vl_redis_cluster_error says
 * why). The cluster belongs to the loop, which frees it if you have not.
 * Like a pool it keeps vl_loop_run running only while a command or a
 * request of yours is pending. Commands issued before the first map is
 * known wait for it (each within its own deadline). */
VL_EXPORT vl_redis_cluster *vl_redis_cluster_new(vl_loop *loop, const char *url,
                                                 const vl_redis_cluster_options *opts);

/* Readiness: completes with VL_OK once the map covers all 16384 slots and
 * a connection to every primary is up; with VL_ECONN once every seed and
 * known node failed to answer (message: the last error, such as
 * "127.0.0.1:7000: malformed CLUSTER SHARDS answer" or a connect error),
 * a map leaves slots uncovered ("slots 0-5460 not served"), or a primary's
 * pool failed its readiness ("cluster: a primary is down: ..."); with
 * VL_ENOMEM when a primary's first connection could not be made for want
 * of memory. The same rules as vl_redis_pool_ready otherwise. NULL only
 * when out of memory. */
VL_EXPORT vl_future *vl_redis_cluster_ready(vl_redis_cluster *cl);

/* A command routed by its key (see "Keys"). The future is the one of
 * vl_redis_command. Arguments are copied. NULL only when out of memory. */
VL_EXPORT vl_future *vl_redis_cluster_command(vl_redis_cluster *cl, const char *fmt, ...);
VL_EXPORT vl_future *vl_redis_cluster_commandv(vl_redis_cluster *cl, const char *fmt,
                                               va_list ap);
VL_EXPORT vl_future *vl_redis_cluster_command_argv(vl_redis_cluster *cl, int argc,
                                                   const char **argv, const size_t *argvlen);

/* A command routed by the slot of `key` (keylen bytes, hash tags apply),
 * whatever its arguments: for commands the rules do not know, or scripts
 * whose keys you know. The command is sent to the primary (read_from does
 * not apply: volley cannot know that it only reads). */
VL_EXPORT vl_future *vl_redis_cluster_command_key(vl_redis_cluster *cl, const char *key,
                                                  size_t keylen, int argc, const char **argv,
                                                  const size_t *argvlen);

/* A batch: cmds[0..n) routed each by its keys, pipelined per node, and
 * returned as one future that completes when all have; its children
 * (vl_future_count / vl_future_child, as for vl_future_all) are the
 * commands' futures in the caller's order. A redirection re-sends only the
 * command it concerns. A command refused up front (CROSSSLOT, no key) fails
 * alone. The future fails itself only with VL_EINVAL for n 0 or a NULL
 * argument. Arguments are copied. */
VL_EXPORT vl_future *vl_redis_cluster_batch(vl_redis_cluster *cl, const vl_redis_cmd *cmds,
                                            size_t n);

/* A lease (volley/redis.h) on the primary of the slot of `key`: for
 * MULTI/EXEC and WATCH over keys of that slot. The lease is a node pool's
 * and is released with vl_redis_lease_release; commands on it are not
 * redirected (a MOVED reply is yours). */
VL_EXPORT vl_future *vl_redis_cluster_lease(vl_redis_cluster *cl, const char *key,
                                            size_t keylen);

enum {
    VL_REDIS_CLUSTER_PRIMARIES = 1, /* every primary */
    VL_REDIS_CLUSTER_NODES = 2      /* every node, replicas too */
};

/* Fan-out across the cluster: one command (INFO, DBSIZE, CONFIG GET, SCAN,
 * FLUSHALL...) on every primary or every node of the present map, through
 * the nodes' pools (replicas get READONLY connections). The future's value
 * is a vl_fanout_result (volley/fanout.h), one host per node, named
 * "host:port" without credentials, in the map's order (primaries by their
 * first slot, each followed by its replicas). It completes with VL_OK when
 * every node has answered or failed on its own; it fails with VL_EINVAL for
 * a bad argument and VL_ECONN when no map is known. */
VL_EXPORT vl_future *vl_redis_cluster_each(vl_redis_cluster *cl, int which, int argc,
                                           const char **argv, const size_t *argvlen);

/* Re-reads the topology now (single-flight: joins a refresh under way).
 * Completes with VL_OK when a new map is in place, VL_ECONN when no node
 * answered. The caller owns the future. */
VL_EXPORT vl_future *vl_redis_cluster_refresh(vl_redis_cluster *cl);

/* The slot of a key (0..16383), hash tags applied. */
VL_EXPORT unsigned vl_redis_cluster_slot(const char *key, size_t keylen);

/* ---- The map, for operators ---------------------------------------------- */

enum { VL_REDIS_ROLE_PRIMARY = 1, VL_REDIS_ROLE_REPLICA = 2 };

/* One node of the present map. The ABI rule of vl_pool_stats applies
 * (start from vl_redis_node_info_init). */
typedef struct vl_redis_node_info {
    size_t struct_size;
    char addr[64];          /* "host:port" (a longer one is cut here only) */
    char id[41];            /* the node id, "" when unknown */
    int role;               /* VL_REDIS_ROLE_* */
    size_t primary;         /* for a replica: index of its primary */
    size_t slots;           /* slots it serves (its primary's, for a replica) */
    int state;              /* its pool's best connection: VL_REDIS_READY,
                             * _CONNECTING or _DOWN */
    double rtt_ms;          /* last measured round trip; 0 when none */
    uint64_t requests;      /* commands routed to it */
} vl_redis_node_info;

VL_EXPORT void vl_redis_node_info_init_sized(vl_redis_node_info *o, size_t struct_size);
#define vl_redis_node_info_init(o) vl_redis_node_info_init_sized((o), sizeof(*(o)))

/* Nodes in the present map (0 before the first). */
VL_EXPORT size_t vl_redis_cluster_nodes(const vl_redis_cluster *cl);
/* Node i, in the order of vl_redis_cluster_each. VL_OK, or VL_EINVAL when
 * out of range or out->struct_size is unknown. */
VL_EXPORT int vl_redis_cluster_node(const vl_redis_cluster *cl, size_t i,
                                    vl_redis_node_info *out);

/* Counters since the cluster was made. The ABI rule of vl_pool_stats. */
typedef struct vl_redis_cluster_stats {
    size_t struct_size;
    uint64_t commands;      /* commands issued */
    uint64_t moved;         /* MOVED replies followed */
    uint64_t ask;           /* ASK replies followed */
    uint64_t retries;       /* TRYAGAIN / CLUSTERDOWN retries */
    uint64_t refreshes;     /* topology refreshes completed */
    uint64_t refresh_errors; /* refreshes that found no node to answer */
    uint64_t connects;      /* connection attempts to nodes, every pool */
    uint64_t connect_errors; /* of which failed */
    uint64_t map_epoch;     /* changes whenever a new map replaces the old */
} vl_redis_cluster_stats;

VL_EXPORT void vl_redis_cluster_stats_init_sized(vl_redis_cluster_stats *o, size_t struct_size);
#define vl_redis_cluster_stats_init(o) vl_redis_cluster_stats_init_sized((o), sizeof(*(o)))
VL_EXPORT int vl_redis_cluster_stats_get(const vl_redis_cluster *cl, vl_redis_cluster_stats *out);

/* The last detailed error ("" when none). Borrowed until the next call on cl.
 * Never contains a password. */
VL_EXPORT const char *vl_redis_cluster_error(const vl_redis_cluster *cl);

/* Frees the cluster now: every pending future completes with VL_ECANCELED
 * (leases you hold behave as a freed pool's). Legal from inside a callback.
 * NULL is a no-op. */
VL_EXPORT void vl_redis_cluster_free(vl_redis_cluster *cl);

/* ---- Sharded pub/sub ----------------------------------------------------------
 *
 * A cluster subscriber keeps one subscriber (volley/pubsub.h) per primary
 * that owns the slot of one of its shard channels, made when a channel
 * needs it and freed when no channel does any more, and SSUBSCRIBEs each
 * channel on the primary of its slot (the slot of the channel's name, hash
 * tags applied, as for keys), one command per slot. Each node's subscriber
 * connects, reconnects and subscribes again as volley/pubsub.h says, with
 * the cluster's connect and reconnect options. Publish with SPUBLISH through
 * vl_redis_cluster_command: it goes to the same primary.
 *
 * Following the slot. A channel is subscribed again on the slot's new
 * owner when
 *  - a new map of the cluster names another primary for its slot (a
 *    refresh, or a MOVED seen by any command);
 *  - its node answers SSUBSCRIBE with MOVED (the map is corrected at once);
 *  - its node's connection was lost and came back: every channel of that
 *    node is subscribed again, so one whose slot left meanwhile follows the
 *    MOVED answer;
 *  - its node gives the slot away: Redis 7 then ends the slot's shard
 *    subscriptions by sending "sunsubscribe" unasked; the node's subscriber
 *    reports that (volley/pubsub.h, "Shard channels") and the channel is
 *    subscribed on the slot's new owner at once, without a reconnect: its
 *    gap runs from that moment;
 *  - its primary failed: while a node's subscriber is down the cluster is
 *    asked for its map every 500 ms (no more often than
 *    refresh_min_interval_ms allows), so a replica's promotion is seen
 *    within about a second of its taking effect.
 * Messages published to a channel while it was not subscribed anywhere are
 * lost: Redis keeps no backlog. Once such a channel is confirmed again, the
 * gap callback runs once for it with how long it was without its
 * subscription: from the loss of the node's connection, the map change or
 * the MOVED (for a failed primary: from the loss of its subscriber's
 * connection, vl_redis_sub_down_since_ms) to the confirmation on its new
 * node. A channel that was never confirmed has no gap. A CLUSTERDOWN, TRYAGAIN or LOADING
 * answer keeps the channel waiting for the next map (a refresh is asked
 * for); after 5 MOVED answers in a row it waits for the next refreshed
 * map; any other refusal ("-NOPERM", "-ERR ...") withdraws it, as on one
 * server.
 *
 * Messages. The message callback runs once per message any node delivers,
 * in each node's order; during a move a message sent on the old node before
 * it gave the slot away may still arrive. `channel` and `payload` are
 * borrowed until the callback returns (copy what you keep). */

/* A message on a shard channel (channel_len bytes, binary-safe and
 * NUL-terminated). Runs from the loop; may call anything,
 * vl_redis_cluster_sub_free(s) included. */
typedef void (*vl_redis_cluster_message_fn)(vl_redis_cluster_sub *s, const char *channel,
                                            size_t channel_len, const vl_redis_reply *payload,
                                            void *ud);
/* The channel is subscribed again after `down_ms` milliseconds without its
 * subscription (see above). Runs from the loop; may call anything,
 * vl_redis_cluster_sub_free(s) included. */
typedef void (*vl_redis_cluster_gap_fn)(vl_redis_cluster_sub *s, const char *channel,
                                        size_t channel_len, uint64_t down_ms, void *ud);

/* Makes a sharded subscriber on the cluster, which must outlive it (free
 * the subscriber first). Both callbacks may be NULL; `ud` is given to both.
 * It makes no connection until a channel needs one. It belongs to the
 * cluster's loop and thread; the loop frees it if you have not. NULL only
 * when out of memory or cl is NULL. */
VL_EXPORT vl_redis_cluster_sub *vl_redis_cluster_sub_new(vl_redis_cluster *cl,
                                                         vl_redis_cluster_message_fn on_message,
                                                         vl_redis_cluster_gap_fn on_gap,
                                                         void *ud);
/* Subscribes to the n shard channels channels[0..n) (C strings, copied
 * before the call returns), each on the primary of its slot; they stay
 * subscribed, following their slots, until you unsubscribe.
 *
 * Returns a future that completes once every channel is confirmed by its
 * node (at once, from the loop, for channels already confirmed), with
 * VL_OK and no value; a channel that moves before its confirmation is
 * waited for on its new node. Calls made before the cluster knows its map
 * wait for it. It fails with VL_EINVAL when n is 0 or a name is NULL
 * (nothing subscribed), with the cluster's own status for a cluster with a
 * bad URL, VL_ESERVER and the node's text when a node refused a channel
 * (that channel is withdrawn; the others stay), VL_ECLOSED while the loop
 * is being freed or when called inside a callback after
 * vl_redis_cluster_sub_free, VL_ECANCELED when the subscriber is freed
 * first. It never times out by itself: bound it with
 * vl_future_timeout; cancelling it only stops the wait. The caller owns the
 * future. NULL only when out of memory or s is NULL. Legal from inside any
 * callback. */
VL_EXPORT vl_future *vl_redis_cluster_ssubscribe(vl_redis_cluster_sub *s, size_t n,
                                                 const char *const *channels);
/* Unsubscribes from channels[0..n), or with n 0 (channels may be NULL) from
 * every channel; names not subscribed to are ignored. Nothing of them is
 * subscribed to again, and a subscribe future still waiting for one of
 * them counts it as done. Returns a future that completes with VL_OK and
 * no value once every node that keeps other channels confirmed its
 * SUNSUBSCRIBE (a node left with none is disconnected instead, which ends
 * them at once); VL_EINVAL for a NULL name. The caller owns the future.
 * NULL only when out of memory or s is NULL. Legal from inside any
 * callback. */
VL_EXPORT vl_future *vl_redis_cluster_sunsubscribe(vl_redis_cluster_sub *s, size_t n,
                                                   const char *const *channels);
/* Frees the subscriber now: its nodes' connections close, every pending
 * future of it completes with VL_ECANCELED (from the loop, later), and no
 * message or gap callback runs any more. Legal from inside any callback,
 * its own included: the memory goes once that callback has returned. NULL
 * is a no-op. */
VL_EXPORT void vl_redis_cluster_sub_free(vl_redis_cluster_sub *s);

#ifdef __cplusplus
}
#endif
#endif
