/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/redis_reply.c - Redis replies: one allocation per reply.
 *
 * A reply is built as one vl_redis_reply block (a node per item, then
 * every string) so that it can outlive the callback, be taken out of its
 * future, and be freed with one vl__free. The connection builds it only
 * once the framer (lib/redis_resp.c) has seen the whole reply: the bytes
 * are then known to be well formed and within the limits, and the framer
 * has counted the block's nodes and string bytes, so the parser here
 * allocates once and checks nothing twice.
 *
 * Why not hiredis's reader. It was fed the same bytes after the framer
 * and built the same block through its object functions, but it copies
 * the input into its own buffer, parses every number with strtoll and
 * walks a task stack per item: with it, reading a pipelined GET reply cost
 * about 600 instructions; with the framer and this parser, about 120
 * (callgrind, bench/README.md). tests/fuzz/fuzz_redis_reply.c keeps
 * hiredis's reader as the oracle: both must build the same replies from
 * whatever the framer accepts.
 */
#include "redis_internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct vl_redis_reply {
    int type;
    unsigned char flags;     /* none yet */
    long long integer;
    size_t len;              /* bytes of str, or number of elements */
    char *str;               /* STRING, STATUS, ERROR: NUL-terminated */
    vl_redis_reply *element; /* ARRAY: `len` nodes, contiguous */
};

/* Parses a number the framer has checked: optional '-', digits, "\r\n". */
static const char *parse_num(const char *s, long long *out)
{
    unsigned long long u = 0;
    int neg = 0;

    if (*s == '-') {
        neg = 1;
        s++;
    }
    while (*s != '\r')
        u = u * 10 + (unsigned long long)(*s++ - '0');
    *out = neg ? (long long)(0ull - u) : (long long)u;
    return s + 2;
}

/* The end of a status or error line: the first "\r\n" (a lone '\r' is
 * text, as the framer counts it). */
static const char *line_end(const char *s, const char *end)
{
    const char *q;

    while ((q = memchr(s, '\r', (size_t)(end - s))) != NULL && q + 1 < end && q[1] != '\n')
        s = q + 1;
    return q != NULL ? q : end;
}

vl_redis_reply *vl__reply_parse(const char *buf, size_t len, uint64_t nodes, uint64_t text)
{
    struct {
        vl_redis_reply *arr;
        size_t i;
    } stack[VL__RESP_DEPTH_MAX + 1];
    const char *s = buf, *end = buf + len;
    vl_redis_reply *root, *next, *d;
    unsigned depth = 0;
    size_t n = nodes > 0 ? (size_t)nodes : 1;
    char *tp;
    long long v;

    if (nodes > SIZE_MAX / sizeof(*root) || text > SIZE_MAX - n * sizeof(*root))
        return NULL;
    root = vl__malloc(n * sizeof(*root) + (size_t)text);
    if (root == NULL)
        return NULL;
    next = root + 1;
    tp = (char *)(root + n);
    d = root;
    for (;;) {
        char t = *s++;
        const char *q;

        d->integer = 0;
        d->str = NULL;
        d->element = NULL;
        d->len = 0;
        d->flags = 0;
        switch (t) {
        case '+':
        case '-':
            q = line_end(s, end);
            d->type = t == '+' ? VL_REDIS_STATUS : VL_REDIS_ERROR;
            d->len = (size_t)(q - s);
            d->str = tp;
            memcpy(tp, s, d->len);
            tp[d->len] = '\0';
            tp += d->len + 1;
            s = q + 2;
            break;
        case ':':
            s = parse_num(s, &v);
            d->type = VL_REDIS_INTEGER;
            d->integer = v;
            break;
        case '$':
            s = parse_num(s, &v);
            if (v < 0) {
                d->type = VL_REDIS_NIL;
                break;
            }
            d->type = VL_REDIS_STRING;
            d->len = (size_t)v;
            d->str = tp;
            memcpy(tp, s, d->len);
            tp[d->len] = '\0';
            tp += d->len + 1;
            s += d->len + 2;
            break;
        default: /* '*': the framer lets nothing else through */
            s = parse_num(s, &v);
            if (v < 0) {
                d->type = VL_REDIS_NIL;
                break;
            }
            d->type = VL_REDIS_ARRAY;
            d->len = (size_t)v;
            d->element = next;
            next += d->len;
            if (v > 0 && depth < VL__RESP_DEPTH_MAX) {
                stack[depth].arr = d;
                stack[depth].i = 0;
                depth++;
                d = d->element;
                continue;
            }
            break;
        }
        /* An item is complete: move to the next element of the innermost
         * array that has one left. */
        while (depth > 0) {
            if (++stack[depth - 1].i < stack[depth - 1].arr->len) {
                d = &stack[depth - 1].arr->element[stack[depth - 1].i];
                break;
            }
            depth--;
        }
        if (depth == 0)
            return root;
    }
}

size_t vl__redis_reply_node_size(void)
{
    return sizeof(vl_redis_reply);
}

int vl__redis_reply_is_error(const vl_redis_reply *r)
{
    return r != NULL && r->type == VL_REDIS_ERROR;
}

const char *vl__redis_reply_text(const vl_redis_reply *r)
{
    return r != NULL && r->str != NULL ? r->str : "";
}

const vl_redis_reply *vl_future_redis_reply(const vl_future *f)
{
    if (f == NULL || !vl_future_done(f) || vl__future_vtype(f) != VL__VAL_REDIS)
        return NULL;
    return vl_future_value(f);
}

int vl_redis_reply_type(const vl_redis_reply *r)
{
    return r != NULL ? r->type : 0;
}

int vl_redis_reply_integer(const vl_redis_reply *r, long long *out)
{
    if (r == NULL || out == NULL || r->type != VL_REDIS_INTEGER)
        return VL_EINVAL;
    *out = r->integer;
    return VL_OK;
}

int vl_redis_reply_double(const vl_redis_reply *r, double *out)
{
    char *end;
    double d;

    if (r == NULL || out == NULL)
        return VL_EINVAL;
    if (r->type == VL_REDIS_INTEGER) {
        *out = (double)r->integer;
        return VL_OK;
    }
    /* RESP2 sends doubles (INCRBYFLOAT, ZSCORE) as bulk strings. */
    if (r->type != VL_REDIS_STRING || r->len == 0 || r->len > 64 || isspace((unsigned char)r->str[0]))
        return VL_EINVAL;
    errno = 0;
    d = strtod(r->str, &end);
    if (end != r->str + r->len || errno == ERANGE)
        return VL_EINVAL;
    *out = d;
    return VL_OK;
}

/* A flat key/value array: an even number of elements, every key a string. */
static int is_map(const vl_redis_reply *r)
{
    size_t i;

    if (r == NULL || r->type != VL_REDIS_ARRAY || r->len % 2 != 0)
        return 0;
    for (i = 0; i < r->len; i += 2)
        if (r->element[i].type != VL_REDIS_STRING && r->element[i].type != VL_REDIS_STATUS)
            return 0;
    return 1;
}

size_t vl_redis_reply_map_count(const vl_redis_reply *r)
{
    return is_map(r) ? r->len / 2 : 0;
}

const vl_redis_reply *vl_redis_reply_map_key(const vl_redis_reply *r, size_t i)
{
    return is_map(r) && i < r->len / 2 ? &r->element[2 * i] : NULL;
}

const vl_redis_reply *vl_redis_reply_map_value(const vl_redis_reply *r, size_t i)
{
    return is_map(r) && i < r->len / 2 ? &r->element[2 * i + 1] : NULL;
}

const vl_redis_reply *vl_redis_reply_map_get(const vl_redis_reply *r, const char *key,
                                             size_t keylen)
{
    size_t i;

    if (!is_map(r) || key == NULL)
        return NULL;
    for (i = 0; i < r->len; i += 2) {
        const vl_redis_reply *k = &r->element[i];
        if (k->len == keylen && memcmp(k->str, key, keylen) == 0)
            return &r->element[i + 1];
    }
    return NULL;
}

const char *vl_redis_reply_str(const vl_redis_reply *r, size_t *len)
{
    if (r == NULL || r->str == NULL) {
        if (len != NULL)
            *len = 0;
        return NULL;
    }
    if (len != NULL)
        *len = r->len;
    return r->str;
}

size_t vl_redis_reply_count(const vl_redis_reply *r)
{
    return r != NULL && r->type == VL_REDIS_ARRAY ? r->len : 0;
}

const vl_redis_reply *vl_redis_reply_element(const vl_redis_reply *r, size_t i)
{
    if (r == NULL || r->type != VL_REDIS_ARRAY || i >= r->len)
        return NULL;
    return &r->element[i];
}

void vl_redis_reply_free(vl_redis_reply *r)
{
    vl__free(r);
}
