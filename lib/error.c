/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/error.c - static texts for error codes, and the version. */
#include "internal.h"

#include <stdlib.h>
#include <time.h>

const char *vl_strerror(int code)
{
    switch (code) {
    case VL_OK: return "success";
    case VL_ENOMEM: return "out of memory";
    case VL_EINVAL: return "invalid argument";
    case VL_ECANCELED: return "cancelled";
    case VL_ETIMEDOUT: return "timed out";
    case VL_ECONN: return "connection error";
    case VL_EPROTO: return "protocol error";
    case VL_ESERVER: return "server error";
    case VL_EBUSY: return "busy";
    case VL_ECLOSED: return "closed";
    case VL_ESTATE: return "invalid state";
    case VL_EUNSUPPORTED: return "not supported";
    }
    return "unknown error";
}

const char *vl_version(void)
{
    return VL_VERSION_STRING;
}

/* xorshift64*: jitter for backoff and lifetimes, never for security. The
 * state is per thread: loops of a vl_loop_group draw at once, and a shared
 * state would be a data race (undefined behaviour, if harmless in
 * practice). Each thread seeds from its clock and its stack's address. */
uint64_t vl__rand64(void)
{
    static _Thread_local uint64_t s;
    uint64_t x;

    if (s == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        s = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&ts;
        if (s == 0)
            s = 88172645463325252ull;
    }
    x = s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s = x;
    return x * 2685821657736338717ull;
}
