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
#define VL_VERSION_MINOR 1
#define VL_VERSION_PATCH 0
#define VL_VERSION_STRING "0.1.0"
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

#ifdef __cplusplus
}
#endif
#endif
