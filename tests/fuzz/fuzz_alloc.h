/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/fuzz/fuzz_alloc.h - a counting allocator for the fuzz targets.
 *
 * Installed with vl_allocator_set, it counts volley's allocation calls and
 * live blocks, and can fail the Nth call, so that a target can check that a
 * parse leaks nothing and that every allocation failure is handled. A fuzz
 * target runs one input at a time on one thread, so plain statics do.
 * Include it from the target's one .c file.
 */
#ifndef VOLLEY_FUZZ_ALLOC_H
#define VOLLEY_FUZZ_ALLOC_H

#include <stdlib.h>

#include <volley.h>

static long fz_calls, fz_fail_at, fz_live;

static void *fz_malloc(size_t n, void *ud)
{
    void *p;

    (void)ud;
    if (++fz_calls == fz_fail_at)
        return NULL;
    p = malloc(n ? n : 1);
    if (p != NULL)
        fz_live++;
    return p;
}

static void *fz_realloc(void *ptr, size_t n, void *ud)
{
    if (ptr == NULL)
        return fz_malloc(n, ud);
    if (++fz_calls == fz_fail_at)
        return NULL;
    return realloc(ptr, n ? n : 1);
}

static void fz_free(void *ptr, void *ud)
{
    (void)ud;
    if (ptr != NULL) {
        fz_live--;
        free(ptr);
    }
}

/* Installs the counting allocator with its counts at zero; the fail_at'th
 * allocation call from now on fails (0: none does). */
static void fz_alloc_reset(long fail_at)
{
    static const vl_allocator counting = {fz_malloc, fz_realloc, fz_free, NULL};

    fz_calls = fz_live = 0;
    fz_fail_at = fail_at;
    vl_allocator_set(&counting);
}

#endif
