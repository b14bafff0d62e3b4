/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/redis_cluster_internal.h - what lib/redis_cluster.c (the slot map and
 * routing) shares with lib/redis_keys.c (which keys a command has),
 * lib/redis_cluster_pubsub.c (sharded pub/sub) and lib/fanout.c
 * (vl_redis_cluster_each); not installed.
 */
#ifndef VOLLEY_REDIS_CLUSTER_INTERNAL_H
#define VOLLEY_REDIS_CLUSTER_INTERNAL_H

#include "redis_internal.h"

#define VL__CLUSTER_SLOTS 16384

/* ---- keys and slots (lib/redis_keys.c) ----
 * Pure functions: no allocation, no I/O, testable without a server. */

/* CRC16/XMODEM of key[0..len) modulo 16384, of the hash tag when there is
 * one (the bytes between the first '{' and the first '}' after it, when
 * not empty). */
unsigned vl__redis_slot(const char *key, size_t len);

enum {
    VL__ROUTE_KEY = 0,       /* slot is the slot of every key */
    VL__ROUTE_NOKEY = 1,     /* a command with no key (PING, INFO, SCAN...) */
    VL__ROUTE_CROSSSLOT = 2, /* keys in different slots */
    VL__ROUTE_UNKNOWN = 3,   /* a command the rules do not know */
    VL__ROUTE_ARITY = 4,     /* too few arguments for its rule */
    VL__ROUTE_STATEFUL = 5   /* MULTI, WATCH, SELECT...: needs a lease */
};

typedef struct vl__route {
    int kind;         /* VL__ROUTE_* */
    unsigned slot;    /* for VL__ROUTE_KEY */
    int readonly;     /* 1 for a command that only reads (replica reads) */
    int nkeys;        /* keys found */
    int key_arg;      /* argv index of the first key (-1: none) */
    int other_arg;    /* CROSSSLOT: argv index of a key in another slot */
} vl__route;

/* Finds the keys of argv[0..argc) (lens may be NULL: C strings) by the
 * rules of volley/redis_cluster.h "Keys" and fills *out. For any kind
 * other than VL__ROUTE_KEY, writes the message the caller's future fails
 * with into why ("MSET: keys in different slots (CROSSSLOT): a and b",
 * keys printed redis-cli-quoted and cut at 64 bytes). Returns out->kind. */
int vl__redis_route(int argc, const char *const *argv, const size_t *lens, vl__route *out,
                    char *why, size_t whyn);

/* Splits a command formatted by vl__redis_formatv / vl__redis_format_argv
 * (a RESP array of bulk strings) into argv/lens that point into `cmd`
 * (no copy). At most `max` arguments; returns the count, or -1 when the
 * buffer is not such an array or has more than `max`. */
int vl__redis_cmd_split(const char *cmd, size_t len, const char **argv, size_t *lens, int max);

/* ---- the cluster, for its subscriber and its fan-out (lib/redis_cluster.c) ---- */

/* The loop of the cluster. */
vl_loop *vl__cluster_loop(const vl_redis_cluster *cl);

/* The URL to connect to the primary of `slot`, with the cluster's
 * credentials and TLS parameters (never print it), and its printable
 * "host:port" in *addr (if addr is not NULL). NULL when the map does not
 * cover the slot. Both borrowed until the map next changes. */
const char *vl__cluster_slot_url(const vl_redis_cluster *cl, unsigned slot, const char **addr);

/* Called after every refresh (also one that found the map unchanged: a
 * watcher retries what waited for it) and every MOVED that patched the map,
 * from the loop, never inside a call of the watcher. At most 8 watchers. */
typedef void (*vl__cluster_map_fn)(vl_redis_cluster *cl, void *ud);
int vl__cluster_watch(vl_redis_cluster *cl, vl__cluster_map_fn fn, void *ud);
void vl__cluster_unwatch(vl_redis_cluster *cl, vl__cluster_map_fn fn, void *ud);

/* A MOVED seen outside the cluster's own commands (by its subscriber):
 * moves `slot` to addr ("host:port") and schedules a refresh. */
void vl__cluster_moved(vl_redis_cluster *cl, unsigned slot, const char *addr);

/* Options for a subscriber connection to a node, from the cluster's. */
void vl__cluster_sub_options(const vl_redis_cluster *cl, vl_redis_sub_options *o);

/* The targets of vl_redis_cluster_each: for `which` (VL_REDIS_CLUSTER_*),
 * up to `max` nodes in map order, each its pool (replicas' pools use
 * READONLY connections) and its "host:port". Returns how many there are
 * (may exceed max), 0 with no map. Borrowed until the map next changes:
 * take what you need before returning to the loop. */
size_t vl__cluster_targets(vl_redis_cluster *cl, int which, vl_redis_pool **pools,
                           const char **addrs, size_t max);

/* Asks for a refresh of the map, held to refresh_min_interval_ms (joins
 * one under way); for the subscriber, whose own requests must not bypass
 * the floor as vl_redis_cluster_refresh does. */
void vl__cluster_refresh_soon(vl_redis_cluster *cl);

/* Keeps vl_loop_run running through the cluster's topology connections
 * (delta +1) while a caller of the cluster's (the subscriber) waits for a
 * map, and lets go again (-1); counted, like the cluster's own waiting
 * requests. */
void vl__cluster_hold(vl_redis_cluster *cl, int delta);

/* The cluster's URL status: VL_OK, or the status every future fails with
 * (VL_EINVAL) and its message. */
int vl__cluster_status(const vl_redis_cluster *cl, const char **msg);

#endif
