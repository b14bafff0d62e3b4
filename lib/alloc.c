/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/alloc.c - the one allocator every volley allocation goes through.
 *
 * Tests install an allocator that fails the Nth call and check that volley
 * reports VL_ENOMEM without crashing or leaking; that is why nothing in lib/
 * calls malloc directly.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *default_malloc(size_t n, void *ud)
{
    VL__UNUSED(ud);
    return malloc(n);
}

static void *default_realloc(void *p, size_t n, void *ud)
{
    VL__UNUSED(ud);
    return realloc(p, n);
}

static void default_free(void *p, void *ud)
{
    VL__UNUSED(ud);
    free(p);
}

/* Process-wide by design (like sqlite3_config): set once before use. */
static vl_allocator allocator = {default_malloc, default_realloc, default_free, NULL};

int vl_allocator_set(const vl_allocator *a)
{
    if (a == NULL) {
        allocator.malloc_fn = default_malloc;
        allocator.realloc_fn = default_realloc;
        allocator.free_fn = default_free;
        allocator.ud = NULL;
        return VL_OK;
    }
    if (a->malloc_fn == NULL || a->realloc_fn == NULL || a->free_fn == NULL)
        return VL_EINVAL;
    allocator = *a;
    return VL_OK;
}

void *vl__malloc(size_t n)
{
    return allocator.malloc_fn(n ? n : 1, allocator.ud);
}

void *vl__calloc(size_t n, size_t size)
{
    void *p;

    if (size != 0 && n > SIZE_MAX / size)
        return NULL;
    p = vl__malloc(n * size);
    if (p != NULL)
        memset(p, 0, n * size);
    return p;
}

void *vl__realloc(void *p, size_t n)
{
    return allocator.realloc_fn(p, n ? n : 1, allocator.ud);
}

void vl__free(void *p)
{
    if (p != NULL)
        allocator.free_fn(p, allocator.ud);
}

char *vl__strndup(const char *s, size_t n)
{
    char *d = vl__malloc(n + 1);

    if (d == NULL)
        return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *vl__strdup(const char *s)
{
    return vl__strndup(s, strlen(s));
}

char *vl__vasprintf(const char *fmt, va_list ap)
{
    va_list cp;
    int n;
    char *s;

    va_copy(cp, ap);
    n = vsnprintf(NULL, 0, fmt, cp);
    va_end(cp);
    if (n < 0)
        return NULL;
    s = vl__malloc((size_t)n + 1);
    if (s != NULL)
        vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

char *vl__asprintf(const char *fmt, ...)
{
    va_list ap;
    char *s;

    va_start(ap, fmt);
    s = vl__vasprintf(fmt, ap);
    va_end(ap);
    return s;
}
