/* SPDX-License-Identifier: BSD-3-Clause */
/* volley/common.h - error codes, version and the allocator.
 *
 * Error codes are plain ints: VL_OK is 0 and every failure is negative. The
 * numbers are part of the ABI: a code is never renumbered and a retired code
 * is never reused. vl_strerror() gives a short static text for each one; the
 * detailed message ("connect 127.0.0.1:6390: Connection refused") belongs to
 * the object that failed (a future, a connection, a pool), never to a global.
 */
#ifndef VOLLEY_COMMON_H
#define VOLLEY_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && defined(VL_BUILDING)
#define VL_EXPORT __attribute__((visibility("default")))
#else
#define VL_EXPORT
#endif

#define VL_VERSION_MAJOR 0
#define VL_VERSION_MINOR 2
#define VL_VERSION_PATCH 0
#define VL_VERSION_STRING "0.2.0"
/* One number for #if checks: VL_VERSION_NUM >= VL_VERSION_AT(0, 2, 0). */
#define VL_VERSION_AT(major, minor, patch) (((major) << 16) | ((minor) << 8) | (patch))
#define VL_VERSION_NUM VL_VERSION_AT(VL_VERSION_MAJOR, VL_VERSION_MINOR, VL_VERSION_PATCH)

enum {
    VL_OK = 0,
    VL_ENOMEM = -1,     /* an allocation failed */
    VL_EINVAL = -2,     /* a bad argument: NULL, malformed URL, out of range */
    VL_ECANCELED = -3,  /* cancelled by the caller, or its owner was freed */
    VL_ETIMEDOUT = -4,  /* a deadline passed */
    VL_ECONN = -5,      /* connect, DNS, authentication or a lost connection */
    VL_EPROTO = -6,     /* the peer broke the protocol */
    VL_ESERVER = -7,    /* the server replied with an error (data, not transport) */
    VL_EBUSY = -8,      /* a bound was reached: queue full, too many in flight */
    VL_ECLOSED = -9,    /* the object was closed or is closing */
    VL_ESTATE = -10,    /* the call does not fit the object's state */
    VL_EUNSUPPORTED = -11 /* the feature is not available in this build */
};

/* Frees a value a future or promise carries (a Redis reply, a MySQL result,
 * a user value). */
typedef void (*vl_free_fn)(void *value);

/* Returns a static, never-NULL description of an error code. */
VL_EXPORT const char *vl_strerror(int code);

/* Returns the library version as "MAJOR.MINOR.PATCH" (static storage). */
VL_EXPORT const char *vl_version(void);

/* The allocator. Every allocation volley makes itself goes through these three
 * functions (hiredis 0.14, libev and Connector/C keep their own). Install one
 * before any other volley call, from one thread; it is process-wide like
 * sqlite3_config(SQLITE_CONFIG_MALLOC). Passing NULL restores malloc/realloc/free.
 * realloc_fn(NULL, n) must behave like malloc_fn(n). Returns VL_OK, or VL_EINVAL
 * when a function is missing. */
typedef struct vl_allocator {
    void *(*malloc_fn)(size_t size, void *ud);
    void *(*realloc_fn)(void *ptr, size_t size, void *ud);
    void (*free_fn)(void *ptr, void *ud);
    void *ud;
} vl_allocator;

VL_EXPORT int vl_allocator_set(const vl_allocator *a);

/* ---- Pool statistics (Redis and MySQL pools alike) ----------------------
 *
 * A snapshot filled by vl_redis_pool_stats_get or vl_mysql_pool_stats_get.
 * Like the options structs, it only ever grows at its end: prepare it with
 * vl_pool_stats_init(&s), which records the size your program was built
 * with, and the library writes only the fields within it. Counters (uint64_t)
 * count since the pool was made; gauges (size_t) are the present. */
typedef struct vl_pool_stats {
    size_t struct_size;        /* set by vl_pool_stats_init */
    size_t open;               /* connections held, whatever their state */
    size_t ready;              /* of those, connected and usable */
    size_t busy;               /* ready with work pending, or leased */
    size_t idle;               /* ready, nothing pending, not leased */
    size_t leased;             /* Redis leases, MySQL transactions held */
    size_t pending;            /* requests running on a connection */
    size_t waiters;            /* requests waiting in the pool */
    uint64_t requests;         /* commands, statements, leases requested */
    uint64_t errors;           /* of those, failed with anything but VL_ESERVER */
    uint64_t rejected;         /* failed with VL_EBUSY: max_waiters reached */
    uint64_t timeouts;         /* failed with VL_ETIMEDOUT (waiting or running) */
    uint64_t wait_count;       /* requests that had to wait in the pool */
    uint64_t wait_total_ms;    /* their total time waiting */
    uint64_t connects;         /* connections made (handshake succeeded) */
    uint64_t reconnects;       /* of those, a Redis connection reopening by
                                * itself; 0 for MySQL, whose pool replaces a
                                * lost connection with a new one instead */
    uint64_t connect_failures; /* connection attempts that failed */
    uint64_t closed_idle;      /* closed after idle_timeout_ms */
    uint64_t closed_lifetime;  /* retired after max_lifetime_ms */
    uint64_t closed_dirty;     /* closed on release: not provably clean */
    uint64_t closed_broken;    /* lost: hang-up, I/O error, failed keepalive */
    uint64_t keepalives;       /* keepalive pings sent */
} vl_pool_stats;

/* Zeroes the first struct_size bytes of `s` and stores struct_size. Call
 * it as vl_pool_stats_init(&s). NULL is a no-op. */
VL_EXPORT void vl_pool_stats_init_sized(vl_pool_stats *s, size_t struct_size);
#define vl_pool_stats_init(s) vl_pool_stats_init_sized((s), sizeof(*(s)))

#ifdef __cplusplus
}
#endif
#endif
